// Agents: the list, and one form to create or edit an agent — prompt, model, capabilities
// (picked from the capability registry, each with its tools' schemas, and from the org's MCP
// servers), tool policies, client tools, tags and limits.

import { get, post, patch, del, all, Problem } from "./api.js";
import { h, fill, append, field, table, when, json, badge } from "./dom.js";

export async function list(main, { query: q }, { navigate, showProblem }) {
  const archived = q.get("archived") === "1";
  const [agents, models] = await Promise.all([all(`/v1/agents${archived ? "?include_archived=true" : ""}`), all("/v1/models")]);
  const modelName = new Map(models.map((m) => [m.id, m.name]));
  const toggle = h("input", { type: "checkbox", checked: archived, id: "show-archived" });
  toggle.addEventListener("change", () => navigate(`/console/agents${toggle.checked ? "?archived=1" : ""}`, { replace: true }));
  fill(
    main,
    h("h1", {}, "Agents"),
    h("div", { class: "toolbar" }, h("a", { class: "button", href: "/console/agents/new" }, "New agent"), h("label", { for: "show-archived" }, toggle, " show archived")),
    table(
      "Agents",
      ["Name", "Model", "Capabilities", "Tags", "Updated"],
      agents.map((a) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `/console/agents/${a.id}` }, a.name), a.archived_at ? h("span", { class: "muted" }, " (archived)") : null),
          h("td", {}, a.model_id ? modelName.get(a.model_id) ?? a.model_id : h("span", { class: "muted" }, "org default")),
          h("td", {}, a.capabilities.join(", ")),
          h("td", {}, a.tags.join(", ")),
          h("td", {}, when(a.updated_at)),
        ),
      ),
    ),
    agents.length ? null : h("p", { class: "muted" }, "No agents yet."),
  );
}

/** The agent just created or saved: its page says so once. */
let justSaved = null;

export async function edit(main, { id }, { navigate, showProblem }) {
  const creating = id === "new";
  const [agent, capabilities, models, servers] = await Promise.all([
    creating ? null : get(`/v1/agents/${encodeURIComponent(id)}`),
    get("/v1/capabilities"),
    all("/v1/models"),
    all("/v1/mcp-servers"),
  ]);
  const name = h("input", { name: "name", required: true, maxlength: 200, value: agent?.name ?? "" });
  const prompt = h("textarea", { name: "system_prompt", rows: 6, maxlength: 100000 }, agent?.system_prompt ?? "");
  const model = h(
    "select",
    { name: "model_id" },
    h("option", { value: "" }, "org default"),
    models.map((m) => h("option", { value: m.id, selected: agent?.model_id === m.id }, `${m.name}${m.is_default ? " (default)" : ""}`)),
  );
  const tags = h("input", { name: "tags", value: (agent?.tags ?? []).join(", "), placeholder: "team:support, beta", spellcheck: "false" });
  const iterations = h("input", { name: "max_iterations", type: "number", min: 1, max: 100, value: agent?.max_iterations ?? 10 });
  const turnSecs = h("input", { name: "max_turn_secs", type: "number", min: 1, max: 86400, value: agent?.max_turn_secs ?? 600 });
  const approvalSecs = h("input", { name: "approval_timeout_secs", type: "number", min: 1, max: 604800, value: agent?.approval_timeout_secs ?? 900 });
  const chosen = new Set(agent?.capabilities ?? []);
  const checkbox = (value, boxId) => h("input", { type: "checkbox", name: "capabilities", value, checked: chosen.has(value), id: boxId });
  const boxes = capabilities.data.map((c) => {
    const box = checkbox(c.name, `cap-${c.name}`);
    return {
      box,
      node: h(
        "li",
        { class: "capability" },
        h("label", { for: box.id }, box, " ", h("strong", {}, c.name), " — ", c.description),
        h(
          "details",
          {},
          h("summary", {}, `${c.tools.length} tool${c.tools.length === 1 ? "" : "s"}`),
          c.tools.map((t) => h("div", { class: "tool" }, h("code", {}, t.name), " ", t.description, json(t.parameters))),
        ),
      ),
    };
  });
  // The org's MCP servers, as `mcp:<id>` capabilities; a server's cached tools load when opened.
  // A chosen server that was since deleted stays listed, so saving does not drop it silently.
  const known = new Set(servers.map((s) => `mcp:${s.id}`));
  const gone = [...chosen].filter((c) => c.startsWith("mcp:") && !known.has(c)).map((c) => ({ id: c.slice(4), name: "(deleted server)", url: "", status: "missing" }));
  const mcpBoxes = [...servers, ...gone].map((s) => {
    const box = checkbox(`mcp:${s.id}`, `cap-mcp-${s.name}`);
    const tools = h("details", {}, h("summary", {}, "tools"));
    tools.addEventListener("toggle", async () => {
      if (!tools.open || tools.children.length > 1) return;
      try {
        const list = await get(`/v1/mcp-servers/${s.id}/tools`);
        append(
          tools,
          list.fetched_at ? list.data.map((t) => h("div", { class: "tool" }, h("code", {}, t.model_name), " ", t.description ?? "", json(t.input_schema))) : h("p", { class: "muted" }, "Never fetched: refresh the server on its page."),
        );
      } catch (err) {
        showProblem(err);
      }
    });
    return {
      box,
      node: h(
        "li",
        { class: "capability" },
        h("label", { for: box.id }, box, " ", h("strong", {}, s.name), " ", badge(s.status), " ", h("code", { class: "muted" }, `mcp:${s.id}`)),
        s.status === "missing" ? null : tools,
      ),
    };
  });

  // Tool policies: a tool name or glob, and what happens when the model calls a matching tool.
  const policyRows = h("div", { class: "rows", role: "list" });
  const addPolicy = (pattern = "", policy = "ask") => {
    const pat = h("input", { name: "policy_pattern", required: true, maxlength: 128, value: pattern, placeholder: "mcp__github__*", spellcheck: "false", "aria-label": "Tool pattern" });
    const choice = h("select", { name: "policy", "aria-label": "Policy" }, ["auto", "ask", "deny"].map((p) => h("option", { value: p, selected: p === policy }, p)));
    const drop = h("button", { type: "button", class: "link", "aria-label": "Remove this policy" }, "Remove");
    const row = h("div", { class: "toolbar pair", role: "listitem" }, pat, choice, drop);
    drop.addEventListener("click", () => row.remove());
    policyRows.append(row);
    return pat;
  };
  for (const [pattern, policy] of Object.entries(agent?.tool_policies ?? {})) addPolicy(pattern, policy);
  const morePolicies = h("button", { type: "button" }, "Add policy");
  morePolicies.addEventListener("click", () => addPolicy().focus());

  // Client tools: run by the client; the turn waits for `POST …/tool-results`.
  const toolRows = h("div", { class: "rows" });
  let toolCount = 0;
  const addTool = (tool = {}) => {
    const n = ++toolCount;
    const tName = h("input", { name: "client_tool_name", required: true, maxlength: 64, pattern: "[A-Za-z0-9_\\-]+", value: tool.name ?? "", spellcheck: "false" });
    const tDesc = h("input", { name: "client_tool_description", maxlength: 1024, value: tool.description ?? "" });
    const tParams = h("textarea", { name: "client_tool_parameters", rows: 4, spellcheck: "false" }, JSON.stringify(tool.parameters ?? { type: "object", properties: {} }, null, 2));
    const tTimeout = h("input", { name: "client_tool_timeout_secs", type: "number", min: 1, max: 604800, value: tool.timeout_secs ?? 300 });
    const drop = h("button", { type: "button", class: "link" }, "Remove this tool");
    const set = h(
      "fieldset",
      { class: "client-tool" },
      h("legend", {}, `Client tool ${n}`),
      field("Tool name", tName, "letters, digits, _ and -"),
      field("Description", tDesc),
      field("Parameters (JSON Schema)", tParams),
      field("Timeout (seconds)", tTimeout),
      drop,
    );
    drop.addEventListener("click", () => set.remove());
    set.read = () => {
      let parameters;
      try {
        parameters = JSON.parse(tParams.value);
      } catch (e) {
        tParams.focus();
        throw new Problem(0, "invalid_json", `the parameters of client tool ${n} are not JSON (${e.message})`);
      }
      return { name: tName.value.trim(), description: tDesc.value, parameters, timeout_secs: Number(tTimeout.value) };
    };
    toolRows.append(set);
    return tName;
  };
  for (const t of agent?.client_tools ?? []) addTool(t);
  const moreTools = h("button", { type: "button" }, "Add client tool");
  moreTools.addEventListener("click", () => addTool().focus());

  const form = h(
    "form",
    { class: "card", "aria-label": creating ? "New agent" : "Edit agent" },
    field("Name", name),
    field("System prompt", prompt),
    field("Model", model),
    h("fieldset", {}, h("legend", {}, "Capabilities"), h("ul", { class: "plain" }, boxes.map((b) => b.node))),
    h(
      "fieldset",
      {},
      h("legend", {}, "MCP servers"),
      mcpBoxes.length ? h("ul", { class: "plain" }, mcpBoxes.map((b) => b.node)) : h("p", { class: "muted" }, "No MCP servers: ", h("a", { href: "/console/mcp-servers" }, "add one"), "."),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Tool policies"),
      h("small", { class: "muted" }, "A tool name or glob (*) → auto (run), ask (wait for an approval) or deny. Unmatched tools run."),
      policyRows,
      morePolicies,
    ),
    h("fieldset", {}, h("legend", {}, "Client tools"), h("small", { class: "muted" }, "Tools your client runs: the turn waits for their results."), toolRows, moreTools),
    field("Tags", tags, "comma-separated; letters, digits and _ . : -"),
    h("div", { class: "row" }, field("Max iterations per turn", iterations), field("Max seconds per turn", turnSecs), field("Approval timeout (seconds)", approvalSecs)),
    h("button", { type: "submit" }, creating ? "Create agent" : "Save changes"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const tool_policies = {};
      for (const row of policyRows.children) {
        const pattern = row.querySelector("input").value.trim();
        if (pattern) tool_policies[pattern] = row.querySelector("select").value;
      }
      const body = {
        name: name.value.trim(),
        system_prompt: prompt.value,
        capabilities: [...boxes, ...mcpBoxes].filter((b) => b.box.checked).map((b) => b.box.value),
        tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean),
        max_iterations: Number(iterations.value),
        max_turn_secs: Number(turnSecs.value),
        approval_timeout_secs: Number(approvalSecs.value),
        tool_policies,
        client_tools: [...toolRows.children].map((set) => set.read()),
      };
      if (model.value) body.model_id = model.value;
      else if (!creating) body.model_id = "";
      const saved = creating ? await post("/v1/agents", body) : await patch(`/v1/agents/${agent.id}`, body);
      justSaved = saved.id;
      navigate(`/console/agents/${saved.id}`, { replace: creating });
    } catch (err) {
      showProblem(err);
    }
  });

  const archive = h("button", { type: "button", class: "danger" }, "Archive agent");
  archive.addEventListener("click", async () => {
    if (archive.dataset.confirm !== "1") {
      archive.dataset.confirm = "1";
      archive.textContent = "Click again to archive";
      return;
    }
    try {
      await del(`/v1/agents/${agent.id}`);
      navigate("/console/agents");
    } catch (err) {
      showProblem(err);
    }
  });

  fill(
    main,
    h("h1", {}, creating ? "New agent" : agent.name),
    agent ? h("p", { class: "muted" }, h("code", {}, agent.id), agent.archived_at ? " — archived " : " — ", agent.archived_at ? when(agent.archived_at) : h("a", { href: `/console/sessions?agent_id=${agent.id}` }, "its sessions")) : null,
    justSaved === agent?.id ? h("p", { class: "notice", role: "status" }, "Saved.") : null,
    form,
    agent && !agent.archived_at ? h("div", { class: "toolbar" }, archive) : null,
  );
  justSaved = null;
  name.focus();
}
