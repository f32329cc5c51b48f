// One session: a header (status, agent, cancel) over tabs. Every tab shares the session's one
// SSE stream, read from the newest event on (so a session of any length opens at once).
// Tabs are a table: a tab is one more entry.

import { get, post, follow, query, Problem } from "./api.js";
import { h, fill, field, when, json, badge, partsText } from "./dom.js";
import { files, kv } from "./storage.js";
import { pending } from "./pending.js";

/** The tabs: path segment, label, and the function that draws it into the panel. */
const TABS = [
  { id: "chat", label: "Chat", draw: chat },
  { id: "events", label: "Events", draw: events },
  { id: "files", label: "Files", draw: files },
  { id: "kv", label: "Key-value", draw: kv },
  { id: "pending", label: "Pending", draw: pending },
];

/** Events per timeline page (the events route allows up to 1000). */
const PAGE = 200;

const ACTIVE = new Set(["queued", "running", "cancelling", "waiting"]);

export async function render(main, { id, tab }, ctx) {
  const current = TABS.find((t) => t.id === tab);
  if (!current) throw new Problem(404, "not_found", `this session has no tab "${tab}"`);
  const session = await get(`/v1/sessions/${encodeURIComponent(id)}`);
  // The agent's name, and the newest stored event: the stream starts after it.
  const [agent, newest] = await Promise.all([
    get(`/v1/agents/${session.agent_id}`).catch(() => null),
    session.last_sequence > 0 ? get(`/v1/sessions/${id}/events?after_sequence=${session.last_sequence - 1}&limit=1`).then((p) => p.data[0] ?? null) : null,
  ]);

  const statusBadge = h("span", {}, badge(session.status));
  const streamState = h("span", { class: "muted", "aria-live": "polite" }, "connecting…");
  // The API cancels the turn that runs; messages queued behind it still run (as posted).
  const cancel = h("button", { type: "button", class: "danger", title: "Cancels the running turn; messages queued behind it still run" }, "Cancel turn");
  const setStatus = (s) => {
    session.status = s;
    fill(statusBadge, badge(s));
    cancel.disabled = !ACTIVE.has(s);
  };
  setStatus(session.status);
  cancel.addEventListener("click", async () => {
    try {
      const r = await post(`/v1/sessions/${id}/cancel`);
      // The stream may have told the end already (`session.idled` before this answer).
      if (r.state === "cancelled") setStatus("idle");
      else if (ACTIVE.has(session.status)) setStatus("cancelling");
    } catch (e) {
      ctx.showProblem(e);
    }
  });

  const panel = h("section", { id: "panel", "aria-label": current.label });
  fill(
    main,
    h("h1", {}, session.title ?? "Session"),
    h(
      "dl",
      { class: "meta" },
      h("dt", {}, "Id"), h("dd", {}, h("code", {}, session.id)),
      h("dt", {}, "Status"), h("dd", {}, statusBadge),
      h("dt", {}, "Agent"), h("dd", {}, h("a", { href: `/console/agents/${session.agent_id}` }, agent?.name ?? session.agent_id)),
      h("dt", {}, "Created"), h("dd", {}, when(session.created_at)),
      h("dt", {}, "Stream"), h("dd", {}, streamState),
    ),
    h("div", { class: "toolbar" }, cancel),
    h(
      "nav",
      { class: "tabs", "aria-label": "Session views" },
      h("ul", {}, TABS.map((t) => h("li", {}, h("a", { href: `/console/sessions/${id}${t.id === "chat" ? "" : `/${t.id}`}`, "aria-current": t.id === tab ? "page" : null }, t.label)))),
    ),
    panel,
  );

  // Every stored event updates the status, then goes to the tab.
  const view = await current.draw(panel, { session, newest }, ctx);
  const stream = follow(id, {
    lastEventId: newest?.id,
    onEvent: (event) => {
      if (event.type === "session.activated") setStatus("running");
      if (event.type === "session.idled") setStatus("idle");
      if (event.type === "turn.waiting") setStatus("waiting");
      if (event.type === "turn.resumed") setStatus("queued");
      view.onEvent?.(event);
    },
    onDelta: (frame) => view.onDelta?.(frame),
    onState: (state, problem) => {
      streamState.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : "refused";
      if (problem) ctx.showProblem(problem);
    },
  });
  return () => {
    stream.stop();
    view.stop?.();
  };
}

/** The stored events the chat shows (the same list for its history and for the live stream). */
const CHAT_TYPES = [
  "input.message",
  "output.message.completed",
  "tool.started",
  "tool.call_requested",
  "tool.approval_requested",
  "tool.approval_resolved",
  "tool.completed",
  "turn.failed",
  "turn.cancelled",
];

/** The types as a query: the parameter repeated, one value each (an enum in the contract). */
const CHAT_QUERY = CHAT_TYPES.map((t) => `types=${encodeURIComponent(t)}`).join("&");

/** A (re)loaded chat shows the chat events among this many of the newest events. */
const CHAT_WINDOW = 2000;

const argsText = (args) => (typeof args === "string" ? args : JSON.stringify(args ?? {}));

/** A message's tool calls, as a list under its bubble. */
function calls(toolCalls) {
  return Array.isArray(toolCalls) && toolCalls.length
    ? h("ul", { class: "calls" }, toolCalls.map((c) => h("li", {}, h("code", {}, `${c.name ?? c.function?.name ?? "tool"}(${argsText(c.arguments ?? c.function?.arguments)})`))))
    : null;
}

/**
 * The chat line of one stored event — `{role, text, extra?}`, or null for events the chat does
 * not show. The one renderer of both the history read when the page opens and the live stream,
 * so a reload shows what the live view showed.
 */
export function chatLine(event) {
  const d = event.data ?? {};
  switch (event.type) {
    case "input.message":
      return { role: "user", text: partsText(d.message?.content) };
    case "output.message.completed":
      return { role: "assistant", text: partsText(d.message?.content), extra: calls(d.message?.tool_calls) };
    case "tool.started":
      return { role: "tool", text: `→ ${d.name}(${argsText(d.arguments)})` };
    case "tool.completed":
      return {
        role: "tool",
        text: `← ${d.name}${d.is_error ? ` (error): ${typeof d.error === "string" ? d.error : JSON.stringify(d.error)}` : `: ${JSON.stringify(d.result)}`}${d.by && d.by !== "worker" ? ` (by ${d.by})` : ""}`,
      };
    case "tool.call_requested":
      return { role: "tool", text: (d.calls ?? []).map((c) => `… waiting for the client: ${c.name}(${argsText(c.arguments)})`).join("\n") };
    case "tool.approval_requested":
      return { role: "tool", text: `… waiting for an approval: ${d.name}(${argsText(d.arguments)})` };
    case "tool.approval_resolved":
      return { role: "tool", text: `${d.decision === "approve" ? "✓ approved" : d.decision === "deny" ? "✗ denied" : `✗ ${d.decision}`}: ${d.tool_call_id}${d.reason ? ` (${d.reason})` : ""}` };
    case "turn.failed":
      return { role: "system", text: `turn failed: ${d.error_code ?? ""} ${d.message ?? ""}`.trim() };
    case "turn.cancelled":
      return { role: "system", text: "turn cancelled" };
  }
  return null;
}

/** The chat: the conversation so far, live token deltas, and a message box. */
async function chat(panel, { session }, { showProblem }) {
  const id = session.id;
  const log = h("ol", { class: "chat", "aria-label": "Conversation" });
  const live = h("div", { class: "bubble assistant live", "aria-live": "polite", hidden: true });
  // Each stored event is shown once (the history and the stream may both hold it).
  const shown = new Set();
  const show = (event) => {
    if (shown.has(event.sequence)) return;
    shown.add(event.sequence);
    const line = chatLine(event);
    if (!line) return;
    log.append(h("li", { class: `bubble ${line.role}`, "data-sequence": event.sequence }, h("span", { class: "role" }, line.role), h("div", { class: "text" }, line.text), line.extra ?? null));
    log.lastElementChild.scrollIntoView?.({ block: "nearest" });
  };

  // The history: the chat events among the newest CHAT_WINDOW of the log, in sequence order (as
  // the stream delivered them). At most two pages, so the time does not grow with the log.
  const from = Math.max(0, (session.last_sequence ?? 0) - CHAT_WINDOW);
  let after = from;
  for (let pages = 0; pages < CHAT_WINDOW / 1000; pages++) {
    const page = await get(`/v1/sessions/${id}/events?${CHAT_QUERY}&after_sequence=${after}&limit=1000`);
    page.data.forEach(show);
    if (page.next_after_sequence === null || page.data.length === 0) break;
    after = page.next_after_sequence;
  }
  if (from > 0) log.prepend(h("li", { class: "muted" }, `Lines of the newest ${CHAT_WINDOW} events; earlier ones are on the `, h("a", { href: `/console/sessions/${id}/events?from=0` }, "events"), " tab."));

  const text = h("textarea", { name: "message", rows: 3, required: true, maxlength: 100000, placeholder: "Write a message (Ctrl+Enter sends)" });
  const send = h("button", { type: "submit" }, "Send");
  const form = h("form", { class: "composer", "aria-label": "Send a message" }, field("Message", text), send);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = text.value;
    if (!value.trim()) return;
    send.disabled = true;
    try {
      await post(`/v1/sessions/${id}/messages`, { content: [{ type: "text", text: value }] });
      text.value = "";
    } catch (err) {
      showProblem(err);
    } finally {
      send.disabled = false;
      text.focus();
    }
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  fill(panel, log, live, form);

  return {
    onDelta(frame) {
      live.hidden = false;
      live.textContent += frame.data?.delta ?? "";
    },
    onEvent(event) {
      // The final message or the turn's end replaces the streamed text.
      if (["output.message.completed", "turn.completed", "turn.failed", "turn.cancelled"].includes(event.type)) {
        live.hidden = true;
        live.textContent = "";
      }
      show(event);
    },
  };
}

/**
 * The events timeline: one page of the log at a time (by sequence), a type filter, and a JSON
 * inspector per event. On the newest page, events from the stream are appended as they come.
 */
async function events(panel, { session, newest }, { navigate, showProblem }) {
  const id = session.id;
  const params = new URLSearchParams(location.search);
  const types = params.get("types") ?? "";
  const last = newest?.sequence ?? 0;
  // Default: the newest page. `from` is the sequence the page starts after.
  let from = params.has("from") ? Math.max(0, Number(params.get("from")) || 0) : Math.max(0, last - PAGE);

  const typesInput = h("input", { name: "types", value: types, list: "event-types", placeholder: "e.g. turn.completed,tool.started", spellcheck: "false" });
  const fromInput = h("input", { name: "from", type: "number", min: 0, value: String(from) });
  const known = ["input.message", "session.activated", "session.idled", "turn.started", "reason.started", "output.message.completed", "tool.started", "tool.completed", "turn.completed", "turn.failed", "turn.cancelled", "tool.call_requested", "tool.approval_requested", "tool.approval_resolved", "turn.waiting", "turn.resumed"];
  const filter = h(
    "form",
    { class: "toolbar", role: "search", "aria-label": "Filter events" },
    field("Types", typesInput, "comma-separated; empty = all"),
    field("After sequence", fromInput),
    h("datalist", { id: "event-types" }, known.map((t) => h("option", { value: t }))),
    h("button", { type: "submit" }, "Apply"),
  );
  const go = (f, t = typesInput.value.trim()) => navigate(`/console/sessions/${id}/events${query({ types: t, from: f })}`, { replace: true });
  filter.addEventListener("submit", (e) => {
    e.preventDefault();
    go(Math.max(0, Number(fromInput.value) || 0));
  });

  const body = h("tbody");
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const older = h("button", { type: "button" }, "Older");
  const newer = h("button", { type: "button" }, "Newer");
  const oldest = h("button", { type: "button" }, "Oldest");
  const latest = h("button", { type: "button" }, "Newest");
  const pager = h("div", { class: "toolbar pager" }, oldest, older, newer, latest);
  fill(
    panel,
    filter,
    summary,
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "events", "aria-label": "Events" },
        h("thead", {}, h("tr", {}, ["#", "Type", "Turn", "Time", "Data"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    pager,
  );

  const wanted = new Set(types.split(",").map((t) => t.trim()).filter(Boolean));
  const row = (e) => {
    const inspector = h("details", {}, h("summary", {}, "inspect"));
    inspector.addEventListener("toggle", () => {
      if (inspector.open && inspector.children.length === 1) inspector.append(json(e));
    }, { once: false });
    return h(
      "tr",
      { "data-sequence": e.sequence },
      h("td", { class: "num" }, String(e.sequence)),
      h("td", {}, h("code", {}, e.type)),
      h("td", {}, e.turn_id ? h("code", { title: e.turn_id }, e.turn_id.slice(-8)) : ""),
      h("td", {}, when(e.ts)),
      h("td", {}, inspector),
    );
  };

  const page = await get(`/v1/sessions/${id}/events${query({ types, after_sequence: from, limit: PAGE })}`);
  body.append(...page.data.map(row));
  let shownLast = page.data.at(-1)?.sequence ?? from;
  // This page reaches the end of the log (a full page may end exactly there).
  const tail = page.next_after_sequence === null || (!wanted.size && shownLast >= last);
  const describe = () => {
    const first = body.firstElementChild?.dataset.sequence;
    summary.textContent = first
      ? `Events #${first}–#${shownLast} of ${Math.max(last, shownLast)}${wanted.size ? ` (types: ${[...wanted].join(", ")})` : ""}${tail ? "; live" : ""}`
      : `No events after #${from}${wanted.size ? ` of types ${[...wanted].join(", ")}` : ""}${tail ? "; live" : ""}.`;
    older.disabled = from === 0;
    oldest.disabled = from === 0;
    newer.disabled = tail;
  };
  describe();
  older.addEventListener("click", () => go(Math.max(0, from - PAGE)));
  oldest.addEventListener("click", () => go(0));
  newer.addEventListener("click", () => go(page.next_after_sequence ?? shownLast));
  latest.addEventListener("click", () => go(Math.max(0, Math.max(last, shownLast) - PAGE)));

  return {
    onEvent(event) {
      if (!tail || event.sequence <= shownLast) return;
      shownLast = event.sequence;
      if (wanted.size && !wanted.has(event.type)) return describe();
      body.append(row(event));
      describe();
    },
  };
}
