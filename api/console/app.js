// The console's shell: sign-in, navigation, the client-side router and the problem banner.
// Each page is a module exporting `render(main, params, ctx)`, which may return a cleanup
// function (run when the user leaves the page: streams stop, timers clear).

import { auth, get, Problem } from "./api.js";
import { h, fill, field } from "./dom.js";
import * as sessions from "./sessions.js";
import * as session from "./session.js";
import * as agents from "./agents.js";
import * as providers from "./providers.js";
import * as keys from "./keys.js";
import * as mcp from "./mcp.js";
import * as operator from "./operator.js";

/** Routes: a path pattern (`:name` captures one segment), the page and who may see it. */
const ROUTES = [
  { path: "/console/sessions", page: sessions.list, who: "key" },
  { path: "/console/sessions/:id", page: session.render, who: "key", params: { tab: "chat" } },
  { path: "/console/sessions/:id/:tab", page: session.render, who: "key" },
  { path: "/console/agents", page: agents.list, who: "key" },
  { path: "/console/agents/:id", page: agents.edit, who: "key" },
  { path: "/console/providers", page: providers.render, who: "key" },
  { path: "/console/mcp-servers", page: mcp.list, who: "key" },
  { path: "/console/mcp-servers/:id", page: mcp.show, who: "key" },
  { path: "/console/keys", page: keys.render, who: "key" },
  { path: "/console/orgs", page: operator.list, who: "operator" },
  { path: "/console/orgs/:id", page: operator.edit, who: "operator" },
];

/** The navigation of each kind of credential. */
const NAV = {
  key: [
    ["/console/sessions", "Sessions"],
    ["/console/agents", "Agents"],
    ["/console/providers", "Providers & models"],
    ["/console/mcp-servers", "MCP servers"],
    ["/console/keys", "API keys"],
  ],
  operator: [["/console/orgs", "Organisations"]],
};

const main = document.getElementById("main");
const banner = document.getElementById("problem");
let cleanup = null;

/** Shows an error: a problem's `code` and `detail`, or any other failure's message. */
export function showProblem(error) {
  if (error?.name === "AbortError") return;
  const problem = error instanceof Problem ? error : new Problem(0, "client_error", String(error?.message ?? error));
  fill(
    banner,
    h("strong", { class: "code" }, problem.code),
    " ",
    h("span", { class: "detail" }, problem.detail),
    problem.status ? h("span", { class: "muted" }, ` (HTTP ${problem.status})`) : null,
    h("button", { type: "button", class: "link", "aria-label": "Dismiss the error", onclick: clearProblem }, "Dismiss"),
  );
  banner.hidden = false;
}

export function clearProblem() {
  banner.hidden = true;
  banner.replaceChildren();
}

/** Goes to a console path without reloading the page. */
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

const ctx = { navigate, showProblem, clearProblem };

function match(path) {
  const parts = path.replace(/\/+$/, "").split("/");
  for (const r of ROUTES) {
    const pattern = r.path.split("/");
    if (pattern.length !== parts.length) continue;
    const params = { ...(r.params ?? {}) };
    if (pattern.every((p, i) => (p.startsWith(":") ? ((params[p.slice(1)] = decodeURIComponent(parts[i])), true) : p === parts[i]))) {
      return { route: r, params };
    }
  }
  return null;
}

function renderNav(who) {
  const nav = document.getElementById("nav");
  const current = location.pathname;
  fill(
    nav,
    h(
      "ul",
      {},
      (NAV[who] ?? []).map(([href, label]) =>
        h("li", {}, h("a", { href, "aria-current": current.startsWith(href) ? "page" : null }, label)),
      ),
    ),
  );
  document.getElementById("who").textContent = who === "operator" ? "operator" : who === "key" ? "org key" : "";
  document.getElementById("signout").hidden = !who;
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  clearProblem();
  const signedIn = auth.get();
  renderNav(signedIn?.kind);
  if (!signedIn) return signIn();
  const home = signedIn.kind === "operator" ? "/console/orgs" : "/console/sessions";
  const found = match(location.pathname);
  if (!found) return navigate(home, { replace: true });
  if (found.route.who !== signedIn.kind) {
    fill(
      main,
      h("h1", {}, "Not available"),
      h("p", {}, signedIn.kind === "operator" ? "This page needs an org API key; you are signed in with the operator token." : "This page needs the operator token; you are signed in with an org API key."),
      h("p", {}, h("a", { href: home }, "Go to your start page")),
    );
    return;
  }
  fill(main);
  try {
    const params = { ...found.params, query: new URLSearchParams(location.search) };
    const result = await found.route.page(main, params, ctx);
    if (typeof result === "function") cleanup = result;
  } catch (e) {
    if (e?.name === "AbortError") return;
    fill(main, h("h1", {}, "This page could not be shown"), h("p", { class: "muted" }, "The API answered with the problem above."));
    showProblem(e);
  }
  // After an in-page navigation, focus goes to the new page's heading (screen readers announce it),
  // unless the page put it somewhere itself.
  const heading = main.querySelector("h1");
  heading?.setAttribute("tabindex", "-1");
  if (!main.contains(document.activeElement)) heading?.focus({ preventScroll: true });
}

/** Sign-in: the key is checked with one read before it is kept. */
function signIn() {
  const token = h("input", { type: "password", name: "token", required: true, autocomplete: "off", spellcheck: "false" });
  const kindKey = h("input", { type: "radio", name: "kind", value: "key", checked: true, id: "kind-key" });
  const kindOp = h("input", { type: "radio", name: "kind", value: "operator", id: "kind-operator" });
  const form = h(
    "form",
    { class: "card narrow" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an org API key (ts_…) or the operator token. It stays in this tab (sessionStorage) and is sent as a Bearer header."),
    field("Key or token", token),
    h(
      "fieldset",
      {},
      h("legend", {}, "It is"),
      h("label", { for: "kind-key" }, kindKey, " an org API key"),
      h("label", { for: "kind-operator" }, kindOp, " the operator token"),
    ),
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const kind = kindOp.checked ? "operator" : "key";
    const value = token.value.trim();
    try {
      await get(kind === "operator" ? "/v1/orgs?limit=1" : "/v1/sessions?limit=1", { token: value });
      auth.set({ token: value, kind });
      const back = location.pathname.startsWith("/console/") ? location.pathname + location.search : null;
      navigate(back && match(location.pathname)?.route.who === kind ? back : kind === "operator" ? "/console/orgs" : "/console/sessions", { replace: true });
    } catch (err) {
      showProblem(err);
    }
  });
  fill(main, form);
  token.focus();
}

document.getElementById("signout").addEventListener("click", () => {
  auth.clear();
  navigate("/console", { replace: true });
});

// Same-origin console links navigate in place; modified clicks (new tab…) are left to the browser.
document.addEventListener("click", (e) => {
  const a = e.target.closest?.("a[href]");
  if (!a || a.hasAttribute("download") || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/console") || a.target) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", route);
route();
