// A full turn through the TypeScript SDK against a live API (driven by the Rust test
// sdk::the_typescript_sdk_runs_a_turn_and_streams_it): an agent and a session, two messages, the
// reply streamed with streamEvents across server-cycled connections, the messages read back, a
// resume from an event id, and a problem raised as TurnstoneError.
//
//   node test/turn.mjs <base URL> <API key>
import assert from "node:assert/strict";

import { TurnstoneError, createTurnstoneClient, streamEvents, unwrap } from "../dist/index.js";

const [baseUrl, apiKey] = process.argv.slice(2);
const client = createTurnstoneClient(baseUrl, apiKey);

const agent = unwrap(await client.POST("/v1/agents", { body: { name: "ts-sdk", capabilities: ["math"] } }));
assert.ok(agent.id.startsWith("agt_"));
const session = unwrap(await client.POST("/v1/sessions", { body: { agent_id: agent.id } }));

const say = async (text) =>
  unwrap(
    await client.POST("/v1/sessions/{session_id}/messages", {
      params: { path: { session_id: session.id } },
      body: { content: [{ type: "text", text }] },
    }),
  );

// Reads the stream until `count` turns completed; returns the stored events and the delta text.
async function follow(stream, count) {
  const events = [];
  let deltas = "";
  let completed = 0;
  for await (const item of stream) {
    if (item.kind === "delta") {
      deltas += item.delta.data.delta;
      continue;
    }
    events.push(item.event);
    if (item.event.type === "turn.completed" && ++completed === count) return { events, deltas };
  }
  throw new Error("the stream ended");
}

const stop = new AbortController();
const stream = streamEvents(baseUrl, apiKey, session.id, { signal: stop.signal });
const first = await say('!tool math {"expression":"6*7"}');
const second = await say("!sleep 1500 slow and steady");
const { events } = await follow(stream, 2);
stop.abort();

const sequences = events.map((e) => e.sequence);
assert.deepEqual(sequences, sequences.map((_, i) => i + 1), "every stored event once, in order, across reconnects");
const answers = events.filter((e) => e.type === "output.message.completed").map((e) => e.data.message.content[0].text);
assert.deepEqual(answers, ["", "tool math returned: 42", "echo: !sleep 1500 slow and steady"]);
assert.equal(events.find((e) => e.type === "tool.completed").data.result, "42");
assert.deepEqual(
  events.filter((e) => e.type === "turn.completed").map((e) => e.turn_id),
  [first.turn_id, second.turn_id],
);

// The messages, read back through the generated types.
const messages = unwrap(
  await client.GET("/v1/sessions/{session_id}/messages", { params: { path: { session_id: session.id } } }),
);
assert.equal(messages.data.length, 5);
assert.deepEqual(messages.data[1].tool_calls.map((c) => c.name), ["math"]);
assert.equal(messages.data.at(-1).content[0].text, "echo: !sleep 1500 slow and steady");

// Resuming from an event id yields what follows it, nothing before.
const resumed = streamEvents(baseUrl, apiKey, session.id, { sinceId: events[4].id });
const next = await resumed.next();
assert.equal(next.value.event.sequence, 6);
await resumed.return(undefined);

// A problem becomes a TurnstoneError with the problem's code.
await assert.rejects(
  async () => unwrap(await client.GET("/v1/agents/{agent_id}", { params: { path: { agent_id: `agt_${"0".repeat(32)}` } } })),
  (e) => e instanceof TurnstoneError && e.code === "not_found" && e.status === 404,
);
await assert.rejects(
  async () => {
    for await (const _ of streamEvents(baseUrl, "ts_live_wrong_key_0000000000", session.id)) break;
  },
  (e) => e instanceof TurnstoneError && e.code === "unauthorized",
);

console.log("sdk-typescript: a turn streamed across reconnects, messages read back, problems raised");
