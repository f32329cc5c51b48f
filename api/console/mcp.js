// MCP servers: the org's catalog (add one with its headers, whose values are write-only),
// enable or disable, delete, refresh its tool list, and one server's cached tools with their
// input schemas. A refresh the server does not answer is a 502 `mcp_unreachable`, shown as such.

import { get, post, patch, del, all } from "./api.js";
import { h, fill, field, table, when, json, badge } from "./dom.js";

/** A delete button that asks for a second click. */
function removeButton(label, onConfirm) {
  const b = h("button", { type: "button", class: "danger", "aria-label": label }, "Delete");
  b.addEventListener("click", (e) => {
    if (b.dataset.confirm === "1") return onConfirm(e);
    b.dataset.confirm = "1";
    b.textContent = "Click again to delete";
  });
  return b;
}

/**
 * The actions every server has, on the list and on its own page. Each one calls `done(notice,
 * gone)` when it worked (`gone`: the server was deleted); a failure shows its problem.
 */
function actions(server, { done, showProblem }) {
  const buttons = [];
  const run = (fn, gone = false) => async () => {
    buttons.forEach((b) => (b.disabled = true));
    try {
      const notice = await fn();
      await done(notice, gone);
    } catch (err) {
      showProblem(err);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  };
  const refresh = h("button", { type: "button", "aria-label": `Refresh ${server.name}` }, "Refresh");
  refresh.addEventListener("click", run(async () => {
    const tools = await post(`/v1/mcp-servers/${server.id}/refresh`);
    return `${server.name}: ${tools.data.length} tool${tools.data.length === 1 ? "" : "s"} fetched.`;
  }));
  const next = server.status === "active" ? "disabled" : "active";
  const verb = next === "disabled" ? "Disable" : "Enable";
  const toggle = h("button", { type: "button", "aria-label": `${verb} ${server.name}` }, verb);
  toggle.addEventListener("click", run(async () => {
    await patch(`/v1/mcp-servers/${server.id}`, { status: next });
    return `${server.name} is ${next}.`;
  }));
  const remove = removeButton(`Delete ${server.name}`, run(async () => {
    await del(`/v1/mcp-servers/${server.id}`);
    return `${server.name} was deleted.`;
  }, true));
  buttons.push(refresh, toggle, remove);
  return h("span", { class: "confirm" }, buttons);
}

/** A notice left by the last action, shown once after the page is drawn again. */
let lastNotice = null;
const noticeNode = () => {
  const text = lastNotice;
  lastNotice = null;
  return text ? h("p", { class: "notice", role: "status" }, text) : null;
};

export async function list(main, _params, { navigate, showProblem }) {
  const servers = await all("/v1/mcp-servers");
  const done = (notice) => {
    lastNotice = notice;
    navigate("/console/mcp-servers", { replace: true });
  };

  // Headers: name/value rows; the values go to the server once and are never shown back.
  const headerRows = h("div", { class: "rows" });
  const addHeader = () => {
    const n = headerRows.children.length + 1;
    const name = h("input", { name: "header_name", maxlength: 256, placeholder: "Authorization", "aria-label": `Header ${n} name`, spellcheck: "false" });
    const value = h("input", { name: "header_value", type: "password", autocomplete: "off", maxlength: 4096, "aria-label": `Header ${n} value` });
    const drop = h("button", { type: "button", class: "link", "aria-label": `Remove header ${n}` }, "Remove");
    const row = h("div", { class: "toolbar pair" }, name, value, drop);
    drop.addEventListener("click", () => row.remove());
    headerRows.append(row);
    name.focus();
  };
  const moreHeaders = h("button", { type: "button" }, "Add header");
  moreHeaders.addEventListener("click", addHeader);

  const name = h("input", { name: "name", required: true, maxlength: 32, pattern: "[a-z0-9]([a-z0-9\\-]*[a-z0-9])?", spellcheck: "false", placeholder: "everything" });
  const url = h("input", { name: "url", type: "url", required: true, maxlength: 2048, spellcheck: "false" });
  const allowed = h("input", { name: "allowed_tools", placeholder: "echo, search", spellcheck: "false" });
  const form = h(
    "form",
    { class: "card", "aria-label": "New MCP server" },
    h("h2", {}, "Add a server"),
    field("Name", name, "lower-case letters, digits and -; the model sees its tools as mcp__<name>__<tool>"),
    field("URL", url, "the server's streamable-HTTP endpoint, e.g. …/mcp"),
    h("fieldset", {}, h("legend", {}, "Headers"), h("small", { class: "muted" }, "Sent with every request; stored encrypted; only their names are shown again."), headerRows, moreHeaders),
    field("Allowed tools", allowed, "comma-separated tool names; empty: every tool"),
    h("button", { type: "submit" }, "Add server"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), url: url.value.trim() };
    const headers = {};
    for (const row of headerRows.children) {
      const [n, v] = row.querySelectorAll("input");
      if (n.value.trim()) headers[n.value.trim()] = v.value;
    }
    if (Object.keys(headers).length) body.headers = headers;
    const tools = allowed.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tools.length) body.allowed_tools = tools;
    try {
      const created = await post("/v1/mcp-servers", body);
      done(`${created.name} was added; refresh it to fetch its tools.`);
    } catch (err) {
      showProblem(err);
    }
  });

  fill(
    main,
    h("h1", {}, "MCP servers"),
    noticeNode(),
    table(
      "MCP servers",
      ["Name", "URL", "Status", "Headers", "Tools fetched", ""],
      servers.map((s) =>
        h(
          "tr",
          { "data-id": s.id },
          h("td", {}, h("a", { href: `/console/mcp-servers/${s.id}` }, s.name)),
          h("td", {}, h("code", {}, s.url)),
          h("td", {}, badge(s.status)),
          h("td", {}, s.headers.length ? s.headers.map((n) => h("code", {}, n)).flatMap((c, i) => (i ? [", ", c] : [c])) : h("span", { class: "muted" }, "none")),
          h("td", {}, when(s.tools_fetched_at)),
          h("td", { class: "actions" }, actions(s, { done, showProblem })),
        ),
      ),
    ),
    servers.length ? null : h("p", { class: "muted" }, "No MCP servers yet."),
    form,
  );
}

/** One server: its settings and its cached tools (name the model sees, description, schema, hash). */
export async function show(main, { id }, { navigate, showProblem }) {
  const [server, tools] = await Promise.all([
    get(`/v1/mcp-servers/${encodeURIComponent(id)}`),
    get(`/v1/mcp-servers/${encodeURIComponent(id)}/tools`),
  ]);
  const done = (notice, gone) => {
    lastNotice = notice;
    navigate(gone ? "/console/mcp-servers" : `/console/mcp-servers/${server.id}`, { replace: true });
  };
  const rows = tools.data.map((t) => {
    const inspector = h("details", {}, h("summary", {}, "input schema"));
    inspector.addEventListener("toggle", () => {
      if (inspector.open && inspector.children.length === 1) inspector.append(json(t.input_schema));
    });
    return h(
      "tr",
      { "data-tool": t.name },
      h("td", {}, h("code", {}, t.model_name), t.allowed ? null : h("span", { class: "muted" }, " (not allowed)")),
      h("td", {}, t.description ?? h("span", { class: "muted" }, "—")),
      h("td", {}, inspector),
      h("td", {}, h("code", { title: t.hash }, t.hash.slice(0, 12))),
    );
  });
  fill(
    main,
    h("h1", {}, server.name),
    noticeNode(),
    h(
      "dl",
      { class: "meta" },
      h("dt", {}, "Id"), h("dd", {}, h("code", {}, server.id)),
      h("dt", {}, "URL"), h("dd", {}, h("code", {}, server.url)),
      h("dt", {}, "Status"), h("dd", {}, badge(server.status)),
      h("dt", {}, "Headers"), h("dd", {}, server.headers.length ? server.headers.join(", ") : "none"),
      h("dt", {}, "Allowed tools"), h("dd", {}, server.allowed_tools ? server.allowed_tools.join(", ") || "none" : "all"),
      h("dt", {}, "Capability"), h("dd", {}, h("code", {}, `mcp:${server.id}`)),
      h("dt", {}, "Tools fetched"), h("dd", {}, when(tools.fetched_at)),
    ),
    h("div", { class: "toolbar" }, actions(server, { done, showProblem }), h("a", { href: "/console/mcp-servers" }, "All servers")),
    h("h2", {}, "Tools"),
    tools.fetched_at
      ? table(`Tools of ${server.name}`, ["Model name", "Description", "Schema", "Hash"], rows)
      : h("p", { class: "muted" }, "The tools were never fetched: refresh the server."),
  );
}
