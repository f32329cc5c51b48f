// The org's API keys: listed by prefix, created (the key is shown once), revoked.

import { post, del, all } from "./api.js";
import { h, fill, field, table, when } from "./dom.js";

export async function render(main, _params, { navigate, showProblem }) {
  const keys = await all("/v1/api-keys");
  const name = h("input", { name: "name", maxlength: 200, placeholder: "ci" });
  const expires = h("input", { name: "expires_at", type: "datetime-local" });
  const created = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card", "aria-label": "New API key" }, h("h2", {}, "Create a key"), field("Name", name), field("Expires", expires, "optional; empty = never"), h("button", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const body = { name: name.value.trim() };
      if (expires.value) body.expires_at = new Date(expires.value).toISOString();
      const key = await post("/v1/api-keys", body);
      await render(main, _params, { navigate, showProblem });
      main.querySelector("h1").after(shownOnce(key));
    } catch (err) {
      showProblem(err);
    }
  });
  const revoke = (k) => {
    const b = h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.name || k.display_prefix}` }, "Revoke");
    b.addEventListener("click", async () => {
      if (b.dataset.confirm !== "1") {
        b.dataset.confirm = "1";
        b.textContent = "Click again to revoke";
        return;
      }
      try {
        await del(`/v1/api-keys/${k.id}`);
        navigate("/console/keys", { replace: true });
      } catch (err) {
        showProblem(err);
      }
    });
    return b;
  };
  fill(
    main,
    h("h1", {}, "API keys"),
    created,
    table(
      "API keys",
      ["Name", "Prefix", "Created", "Expires", "Last used", "State"],
      keys.map((k) =>
        h("tr", {}, h("td", {}, k.name || h("span", { class: "muted" }, "—")), h("td", {}, h("code", {}, k.display_prefix)), h("td", {}, when(k.created_at)), h("td", {}, when(k.expires_at)), h("td", {}, when(k.last_used_at)), h("td", {}, k.revoked_at ? ["revoked ", when(k.revoked_at)] : revoke(k))),
      ),
    ),
    form,
  );
}

/** A new key, shown this once. */
export function shownOnce(key) {
  const value = h("code", { class: "secret" }, key.key);
  const copy = h("button", { type: "button" }, "Copy");
  copy.addEventListener("click", () => navigator.clipboard?.writeText(key.key).then(() => (copy.textContent = "Copied")));
  return h("div", { class: "notice", role: "status" }, h("p", {}, h("strong", {}, "New key — shown once. "), "Copy it now: it cannot be shown again."), value, " ", copy);
}
