// The operator's pages (signed in with the operator token): organisations, their quotas,
// disabling one, and issuing an org's API key.

import { get, post, patch, all } from "./api.js";
import { h, fill, field, table, when } from "./dom.js";
import { shownOnce } from "./keys.js";

const QUOTAS = [
  ["max_agents", "Max agents"],
  ["max_sessions", "Max sessions"],
  ["max_concurrent_turns", "Max concurrent turns"],
  ["rate_limit_per_minute", "Requests per minute per key (0 = unlimited)"],
];

export async function list(main, _params, { navigate, showProblem }) {
  const orgs = await all("/v1/orgs");
  const name = h("input", { name: "name", required: true, maxlength: 200 });
  const form = h("form", { class: "card inline", "aria-label": "New organisation" }, field("Name", name), h("button", { type: "submit" }, "Create organisation"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const org = await post("/v1/orgs", { name: name.value.trim() });
      navigate(`/console/orgs/${org.id}`);
    } catch (err) {
      showProblem(err);
    }
  });
  fill(
    main,
    h("h1", {}, "Organisations"),
    table(
      "Organisations",
      ["Name", "State", ...QUOTAS.map(([, l]) => l.replace(/ \(.*/, "")), "Created"],
      orgs.map((o) => h("tr", {}, h("td", {}, h("a", { href: `/console/orgs/${o.id}` }, o.name)), h("td", {}, o.disabled ? "disabled" : "active"), QUOTAS.map(([k]) => h("td", { class: "num" }, String(o[k]))), h("td", {}, when(o.created_at)))),
    ),
    form,
  );
}

export async function edit(main, { id }, { navigate, showProblem }) {
  const org = await get(`/v1/orgs/${encodeURIComponent(id)}`);
  const name = h("input", { name: "name", required: true, maxlength: 200, value: org.name });
  const disabled = h("input", { type: "checkbox", name: "disabled", checked: org.disabled, id: "org-disabled" });
  const inputs = QUOTAS.map(([k, label]) => [k, field(label, h("input", { name: k, type: "number", min: 0, value: org[k] }))]);
  const form = h(
    "form",
    { class: "card", "aria-label": "Edit organisation" },
    field("Name", name),
    h("label", { for: "org-disabled" }, disabled, " disabled (its keys stop working on the next request)"),
    inputs.map(([, f]) => f),
    h("button", { type: "submit" }, "Save"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), disabled: disabled.checked };
    for (const [k, f] of inputs) body[k] = Number(f.querySelector("input").value);
    try {
      await patch(`/v1/orgs/${org.id}`, body);
      navigate(`/console/orgs/${org.id}`, { replace: true });
    } catch (err) {
      showProblem(err);
    }
  });
  const keyName = h("input", { name: "name", maxlength: 200, placeholder: "admin" });
  const keyForm = h("form", { class: "card inline", "aria-label": "New API key for this organisation" }, field("Key name", keyName), h("button", { type: "submit" }, "Issue API key"));
  const issued = h("div");
  keyForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      fill(issued, shownOnce(await post(`/v1/orgs/${org.id}/api-keys`, { name: keyName.value.trim() })));
    } catch (err) {
      showProblem(err);
    }
  });
  fill(main, h("h1", {}, org.name), h("p", { class: "muted" }, h("code", {}, org.id), " — created ", when(org.created_at)), form, h("h2", {}, "API keys"), keyForm, issued);
}
