// The console's only way to the server: the documented REST routes and the SSE stream, with the
// key in an Authorization header, never in a URL. The key lives in sessionStorage (this tab only).

const STORE = "turnstone.console.auth";

/** The signed-in credential: `{token, kind}` with kind `key` (an org API key) or `operator`. */
export const auth = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE));
    } catch {
      return null;
    }
  },
  set(value) {
    sessionStorage.setItem(STORE, JSON.stringify(value));
  },
  clear() {
    sessionStorage.removeItem(STORE);
  },
};

/** An RFC 9457 problem the API answered with (or `network_error` when it did not answer). */
export class Problem extends Error {
  constructor(status, code, detail, body) {
    super(`${code}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function problemOf(resp) {
  const body = parse(await resp.text());
  return new Problem(resp.status, body?.code ?? `http_${resp.status}`, body?.detail ?? resp.statusText, body);
}

/** A fresh `Idempotency-Key`: a retried form submission creates one thing, not two. */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** One JSON call; resolves to the parsed body, rejects with a `Problem`. */
export async function call(method, path, body, { token, signal } = {}) {
  const headers = { Accept: "application/json" };
  const credential = token ?? auth.get()?.token;
  if (credential) headers.Authorization = `Bearer ${credential}`;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    if (method === "POST") headers["Idempotency-Key"] = idempotencyKey();
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Problem(0, "network_error", `the API did not answer (${e.message})`);
  }
  if (!resp.ok) throw await problemOf(resp);
  const text = await resp.text();
  return text ? parse(text) : null;
}

export const get = (path, opts) => call("GET", path, undefined, opts);
export const post = (path, body, opts) => call("POST", path, body ?? {}, opts);
export const patch = (path, body, opts) => call("PATCH", path, body, opts);
export const put = (path, body, opts) => call("PUT", path, body, opts);
export const del = (path, opts) => call("DELETE", path, undefined, opts);

/**
 * A call whose body or answer is bytes (a file's content), not JSON: resolves to the `Response`
 * (read it with `.blob()`, `.arrayBuffer()`), rejects with a `Problem`. The key is a header here too.
 */
export async function bytes(method, path, { body, headers = {}, signal } = {}) {
  const all = { ...headers };
  const credential = auth.get()?.token;
  if (credential) all.Authorization = `Bearer ${credential}`;
  let resp;
  try {
    resp = await fetch(path, { method, headers: all, body, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Problem(0, "network_error", `the API did not answer (${e.message})`);
  }
  if (!resp.ok) throw await problemOf(resp);
  return resp;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Every page of a cursor-paginated list (`limit`, `after`, `next_cursor`), up to `max` items. */
export async function all(path, max = 1000) {
  const out = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=200${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    out.push(...page.data);
    if (!page.next_cursor || out.length >= max) return out;
    after = page.next_cursor;
  }
}

/** Parses a `text/event-stream` body into `{event, id, data}` frames (comments skipped). */
async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (name === "event") event = v;
        else if (name === "id") id = v;
        else if (name === "data") data.push(v);
      }
      if (data.length === 0) continue;
      const text = data.join("\n");
      yield { event, id, data: parse(text) ?? text };
    }
  }
}

/**
 * Follows a session's SSE stream with `fetch` and a stream reader (so the key travels in a
 * header), resuming with `Last-Event-ID` after the server cycles the connection or the network
 * drops it: every stored event arrives once, in order. Handlers: `onEvent(event)` for stored
 * events, `onDelta(frame)` for live token deltas, `onState(state, problem?)` with `live`,
 * `reconnecting` or `refused`. Returns `{stop()}`.
 */
export function follow(sessionId, { lastEventId = null, onEvent, onDelta, onState }) {
  const controller = new AbortController();
  let last = lastEventId;
  let stopped = false;
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  (async () => {
    let backoff = 500;
    while (!stopped) {
      try {
        const headers = { Accept: "text/event-stream", Authorization: `Bearer ${auth.get()?.token ?? ""}` };
        if (last) headers["Last-Event-ID"] = last;
        const resp = await fetch(`/v1/sessions/${encodeURIComponent(sessionId)}/sse`, { headers, signal: controller.signal });
        if (!resp.ok) {
          const problem = await problemOf(resp);
          onState?.("refused", problem);
          // A refused key or an unknown session will not get better by retrying.
          if (resp.status !== 429 && resp.status < 500) return;
        } else {
          onState?.("live");
          backoff = 500;
          for await (const frame of frames(resp.body)) {
            if (frame.event === "disconnecting") backoff = frame.data?.retry_ms ?? backoff;
            if (frame.event === "connected" || frame.event === "disconnecting") continue;
            if (frame.event === "output.message.delta") {
              onDelta?.(frame.data);
              continue;
            }
            if (frame.id) last = frame.id;
            onEvent?.(frame.data);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      if (stopped) return;
      onState?.("reconnecting");
      await pause(backoff);
      backoff = Math.min(Math.max(backoff, 500) * 2, 10000);
    }
  })();
  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}
