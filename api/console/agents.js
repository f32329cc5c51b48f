// Agents: the list, and one form to create or edit an agent — prompt, model, capabilities
// (picked from the capability registry, each with its tools' schemas), tags and limits.

import { get, post, patch, del, all } from "./api.js";
import { h, fill, field, table, when, json } from "./dom.js";

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

export async function edit(main, { id }, { navigate, showProblem }) {
  const creating = id === "new";
  const [agent, capabilities, models] = await Promise.all([
    creating ? null : get(`/v1/agents/${encodeURIComponent(id)}`),
    get("/v1/capabilities"),
    all("/v1/models"),
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
  const chosen = new Set(agent?.capabilities ?? []);
  const boxes = capabilities.data.map((c) => {
    const box = h("input", { type: "checkbox", name: "capabilities", value: c.name, checked: chosen.has(c.name), id: `cap-${c.name}` });
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

  const form = h(
    "form",
    { class: "card", "aria-label": creating ? "New agent" : "Edit agent" },
    field("Name", name),
    field("System prompt", prompt),
    field("Model", model),
    h("fieldset", {}, h("legend", {}, "Capabilities"), h("ul", { class: "plain" }, boxes.map((b) => b.node))),
    field("Tags", tags, "comma-separated; letters, digits and _ . : -"),
    h("div", { class: "row" }, field("Max iterations per turn", iterations), field("Max seconds per turn", turnSecs)),
    h("button", { type: "submit" }, creating ? "Create agent" : "Save changes"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      name: name.value.trim(),
      system_prompt: prompt.value,
      capabilities: boxes.filter((b) => b.box.checked).map((b) => b.box.value),
      tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean),
      max_iterations: Number(iterations.value),
      max_turn_secs: Number(turnSecs.value),
    };
    if (model.value) body.model_id = model.value;
    else if (!creating) body.model_id = null;
    try {
      const saved = creating ? await post("/v1/agents", body) : await patch(`/v1/agents/${agent.id}`, body);
      navigate(`/console/agents/${saved.id}`, { replace: creating });
      if (!creating) document.getElementById("main").prepend(h("p", { class: "notice", role: "status" }, "Saved."));
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
    form,
    agent && !agent.archived_at ? h("div", { class: "toolbar" }, archive) : null,
  );
  name.focus();
}
