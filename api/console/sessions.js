// Sessions: the list (status, agent, title, last activity), filtered by status and agent,
// with statuses kept live by re-reading the list while the page is open; and a new-session form.

import { get, post, query, all } from "./api.js";
import { h, fill, field, when, badge } from "./dom.js";

const STATUSES = ["idle", "queued", "running", "cancelling"];
/** How often the visible rows are re-read (there is no org-wide stream to follow). */
const REFRESH_MS = 2000;

export async function list(main, { query: q }, { navigate, showProblem }) {
  const status = q.get("status") ?? "";
  const agentId = q.get("agent_id") ?? "";
  const agents = await all("/v1/agents");
  const agentName = new Map(agents.map((a) => [a.id, a.name]));

  const statusSelect = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
  );
  const agentSelect = h(
    "select",
    { name: "agent_id" },
    h("option", { value: "" }, "any"),
    agents.map((a) => h("option", { value: a.id, selected: a.id === agentId }, a.name)),
  );
  const filters = h("form", { class: "toolbar", role: "search", "aria-label": "Filter sessions" }, field("Status", statusSelect), field("Agent", agentSelect));
  const apply = () => navigate(`/console/sessions${query({ status: statusSelect.value, agent_id: agentSelect.value })}`, { replace: true });
  statusSelect.addEventListener("change", apply);
  agentSelect.addEventListener("change", apply);
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });

  const body = h("tbody");
  const empty = h("p", { class: "muted" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let rows = [];
  let cursor = null;

  const row = (s) =>
    h(
      "tr",
      { "data-session": s.id },
      h("td", {}, h("a", { href: `/console/sessions/${s.id}` }, s.title ?? s.id)),
      h("td", {}, badge(s.status)),
      h("td", {}, h("a", { href: `/console/agents/${s.agent_id}` }, agentName.get(s.agent_id) ?? s.agent_id)),
      h("td", {}, when(s.updated_at)),
      h("td", { class: "num" }, String(s.last_sequence)),
    );
  const draw = () => {
    const shown = rows.filter((s) => !status || s.status === status);
    fill(body, shown.map(row));
    empty.textContent = shown.length ? "" : status ? `No ${status} session among the ${rows.length} loaded.` : "No sessions yet.";
    more.hidden = !cursor;
  };
  const load = async () => {
    const page = await get(`/v1/sessions${query({ limit: 100, after: cursor, agent_id: agentId })}`);
    rows.push(...page.data);
    cursor = page.next_cursor;
    draw();
  };
  more.addEventListener("click", () => load().catch(showProblem));

  const create = newSessionForm(agents, navigate, showProblem);
  fill(
    main,
    h("h1", {}, "Sessions"),
    create,
    filters,
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { "aria-label": "Sessions" },
        h("thead", {}, h("tr", {}, ["Title", "Status", "Agent", "Last activity", "Events"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    empty,
    more,
  );
  await load();

  // Live statuses: re-read the rows loaded so far and update them in place.
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const page = await get(`/v1/sessions${query({ limit: Math.min(Math.max(rows.length, 1), 200), agent_id: agentId })}`);
      const fresh = new Map(page.data.map((s) => [s.id, s]));
      const known = new Set(rows.map((s) => s.id));
      rows = [...page.data.filter((s) => !known.has(s.id)), ...rows.map((s) => fresh.get(s.id) ?? s)];
      draw();
    } catch (e) {
      showProblem(e);
    } finally {
      busy = false;
    }
  }, REFRESH_MS);
  return () => clearInterval(timer);
}

function newSessionForm(agents, navigate, showProblem) {
  const agent = h(
    "select",
    { name: "agent_id", required: true },
    agents.map((a) => h("option", { value: a.id }, a.name)),
  );
  const title = h("input", { name: "title", maxlength: 200, placeholder: "optional" });
  const form = h(
    "form",
    { class: "card inline", "aria-label": "New session" },
    h("h2", {}, "New session"),
    agents.length ? [field("Agent", agent), field("Title", title), h("button", { type: "submit" }, "Start session")] : h("p", {}, "Create an agent first: ", h("a", { href: "/console/agents/new" }, "new agent"), "."),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const body = { agent_id: agent.value };
      if (title.value.trim()) body.title = title.value.trim();
      const created = await post("/v1/sessions", body);
      navigate(`/console/sessions/${created.id}`);
    } catch (err) {
      showProblem(err);
    }
  });
  return form;
}
