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
  const cancel = h("button", { type: "button", class: "danger" }, "Cancel turn");
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

/** The chat: the conversation so far, live token deltas, and a message box. */
async function chat(panel, { session }, { showProblem }) {
  const id = session.id;
  const log = h("ol", { class: "chat", "aria-label": "Conversation" });
  const live = h("div", { class: "bubble assistant live", "aria-live": "polite", hidden: true });
  const shown = new Set();
  const bubble = (role, text, seq, extra) => {
    if (seq !== undefined) {
      if (shown.has(seq)) return;
      shown.add(seq);
    }
    log.append(h("li", { class: `bubble ${role}`, "data-sequence": seq ?? null }, h("span", { class: "role" }, role), h("div", { class: "text" }, text), extra ?? null));
    log.lastElementChild.scrollIntoView?.({ block: "nearest" });
  };
  const toolLine = (text, seq) => bubble("tool", text, seq);
  const calls = (toolCalls) =>
    Array.isArray(toolCalls) && toolCalls.length
      ? h("ul", { class: "calls" }, toolCalls.map((c) => h("li", {}, h("code", {}, `${c.name ?? c.function?.name ?? "tool"}(${typeof c.arguments === "string" ? c.arguments : JSON.stringify(c.arguments ?? c.function?.arguments ?? {})})`))))
      : null;

  // The conversation in turn order (the latest 1000 messages at most).
  let after = 0;
  for (let pages = 0; pages < 5; pages++) {
    const page = await get(`/v1/sessions/${id}/messages?limit=200&after_sequence=${after}`);
    for (const m of page.data) bubble(m.role, partsText(m.content), m.sequence, calls(m.tool_calls));
    if (page.next_after_sequence === null || page.data.length === 0) break;
    after = page.next_after_sequence;
  }

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
      const d = event.data ?? {};
      switch (event.type) {
        case "input.message":
          return bubble("user", partsText(d.message?.content), event.sequence);
        case "output.message.completed":
          live.hidden = true;
          live.textContent = "";
          return bubble("assistant", partsText(d.message?.content), event.sequence, calls(d.message?.tool_calls));
        case "tool.started":
          return toolLine(`→ ${d.name}(${typeof d.arguments === "string" ? d.arguments : JSON.stringify(d.arguments ?? {})})`, event.sequence);
        case "tool.completed":
          return toolLine(`← ${d.name}: ${JSON.stringify(d.is_error ? d.error : d.result)}`, event.sequence);
        case "turn.failed":
          return bubble("system", `turn failed: ${d.error_code ?? ""} ${d.message ?? ""}`.trim(), event.sequence);
        case "turn.cancelled":
          live.hidden = true;
          live.textContent = "";
          return bubble("system", "turn cancelled", event.sequence);
      }
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
