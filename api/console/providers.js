// Providers (OpenAI-compatible endpoints; the key is entered, never shown) and models.

import { post, patch, del, all } from "./api.js";
import { h, fill, field, table, when } from "./dom.js";

export async function render(main, _params, ctx) {
  const { navigate, showProblem } = ctx;
  const [providers, models] = await Promise.all([all("/v1/providers"), all("/v1/models")]);
  const providerName = new Map(providers.map((p) => [p.id, p.name]));
  const reload = () => navigate("/console/providers", { replace: true });
  const act = (fn) => async (e) => {
    e?.preventDefault?.();
    try {
      await fn(e);
      reload();
    } catch (err) {
      showProblem(err);
    }
  };

  const keyButton = (p) => {
    const input = h("input", { type: "password", autocomplete: "off", "aria-label": `New API key for ${p.name}`, required: true });
    const form = h("form", { class: "inline" }, input, h("button", { type: "submit" }, "Replace key"));
    form.addEventListener("submit", act(() => patch(`/v1/providers/${p.id}`, { api_key: input.value })));
    return form;
  };
  const remove = (label, path) => {
    const b = h("button", { type: "button", class: "danger", "aria-label": label }, "Delete");
    const really = act(() => del(path));
    b.addEventListener("click", (e) => {
      if (b.dataset.confirm === "1") return really(e);
      b.dataset.confirm = "1";
      b.textContent = "Click again to delete";
    });
    return b;
  };

  const pName = h("input", { name: "name", required: true, maxlength: 200 });
  const pUrl = h("input", { name: "base_url", type: "url", required: true, placeholder: "https://api.openai.com/v1" });
  const pKey = h("input", { name: "api_key", type: "password", autocomplete: "off" });
  const addProvider = h("form", { class: "card", "aria-label": "New provider" }, h("h3", {}, "Add a provider"), field("Name", pName), field("Base URL", pUrl), field("API key", pKey, "stored encrypted; never shown again"), h("button", { type: "submit" }, "Add provider"));
  addProvider.addEventListener("submit", act(() => {
    const body = { name: pName.value.trim(), base_url: pUrl.value.trim() };
    if (pKey.value) body.api_key = pKey.value;
    return post("/v1/providers", body);
  }));

  const mProvider = h("select", { name: "provider_id", required: true }, providers.map((p) => h("option", { value: p.id }, p.name)));
  const mName = h("input", { name: "name", required: true, maxlength: 200, placeholder: "gpt-4o-mini" });
  const mDefault = h("input", { type: "checkbox", name: "is_default", id: "model-default" });
  const addModel = h("form", { class: "card", "aria-label": "New model" }, h("h3", {}, "Add a model"), field("Provider", mProvider), field("Model name", mName), h("div", { class: "field" }, h("label", { for: "model-default" }, mDefault, " the org's default model")), h("button", { type: "submit" }, "Add model"));
  addModel.addEventListener("submit", act(() => post("/v1/models", { provider_id: mProvider.value, name: mName.value.trim(), is_default: mDefault.checked })));

  fill(
    main,
    h("h1", {}, "Providers and models"),
    h("h2", {}, "Providers"),
    table(
      "Providers",
      ["Name", "Base URL", "API key", "Created", ""],
      providers.map((p) => h("tr", {}, h("td", {}, p.name), h("td", {}, h("code", {}, p.base_url)), h("td", {}, p.has_api_key ? "set" : "none", keyButton(p)), h("td", {}, when(p.created_at)), h("td", {}, remove(`Delete provider ${p.name}`, `/v1/providers/${p.id}`)))),
    ),
    addProvider,
    h("h2", {}, "Models"),
    table(
      "Models",
      ["Name", "Provider", "Default", "Created", ""],
      models.map((m) => h("tr", {}, h("td", {}, m.name), h("td", {}, providerName.get(m.provider_id) ?? m.provider_id), h("td", {}, m.is_default ? "yes" : ""), h("td", {}, when(m.created_at)), h("td", {}, remove(`Delete model ${m.name}`, `/v1/models/${m.id}`)))),
    ),
    providers.length ? addModel : h("p", { class: "muted" }, "Add a provider before its models."),
  );
}
