// A session's files and key-value store: the Files and Key-value tabs of the session page.
// File contents travel like every other call, with the key in a header: a download is fetched,
// then handed to the browser as a Blob URL (never a URL that carries the key). Both tabs re-read
// what they show when the session's stream reports a change (`file.*` and `kv.*` events name
// paths and keys, never contents); the console's own writes re-read at once.

import { get, put, del, bytes, query, Problem } from "./api.js";
import { h, fill, field, when, json } from "./dom.js";

/** Entries per page of a directory listing, and keys per page of the store (the routes allow 200). */
const FILE_PAGE = 100;
const KV_PAGE = 50;
/** The largest file shown as text in the page; bigger ones are downloaded. */
const VIEW_MAX = 1 << 20;

/** `/notes/a.md` → `a.md`; `/` → `/`. */
const baseName = (path) => path.slice(path.lastIndexOf("/") + 1) || "/";
const join = (dir, name) => (dir === "/" ? `/${name}` : `${dir}/${name}`);
const size = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

/**
 * Runs `load` now and whenever asked again; asks that arrive while it runs fold into one more run,
 * so a burst of events costs at most two reads.
 */
function reloader(load, showProblem) {
  let running = null;
  let again = false;
  return async function reload() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await load();
        } catch (e) {
          showProblem(e);
        }
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
}

/**
 * The page's own writes, by the event each will put on the stream (`kv.set user:name`): that echo
 * needs no re-read. Noted before the request is sent (the event may beat the answer), dropped if
 * the request fails.
 */
function ownWrites() {
  const pending = new Map();
  return {
    note(sig) {
      pending.set(sig, (pending.get(sig) ?? 0) + 1);
    },
    drop(sig) {
      const n = (pending.get(sig) ?? 0) - 1;
      if (n > 0) pending.set(sig, n);
      else pending.delete(sig);
    },
    /** Whether `sig` is one of ours (and forgets it). */
    take(sig) {
      if (!pending.has(sig)) return false;
      this.drop(sig);
      return true;
    },
  };
}

/** Runs `request` as an own write announced by `sig`. */
async function asOwn(own, sig, request) {
  own.note(sig);
  try {
    return await request();
  } catch (e) {
    own.drop(sig);
    throw e;
  }
}

/**
 * A delete in two steps: "Delete" turns into "Confirm delete" and "Keep"; only the confirmation
 * calls `action`. `what` names the item in the buttons' accessible names.
 */
function twoStepDelete(what, action, showProblem) {
  const start = h("button", { type: "button", class: "danger", "aria-label": `Delete ${what}` }, "Delete");
  const box = h("span", { class: "confirm" }, start);
  start.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger", "aria-label": `Confirm delete ${what}` }, "Confirm delete");
    const no = h("button", { type: "button", "aria-label": `Keep ${what}` }, "Keep");
    no.addEventListener("click", () => {
      fill(box, start);
      start.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = no.disabled = true;
      try {
        await action();
      } catch (e) {
        showProblem(e);
        fill(box, start);
      }
    });
    fill(box, yes, no);
    yes.focus();
  });
  return box;
}

/** The directory a `?dir=` names, without a trailing slash (`/` for the root). */
function dirOf(value) {
  const d = (value ?? "/").replace(/\/+$/, "");
  return d.startsWith("/") ? d : "/";
}

/**
 * The Files tab: one directory at a time (its subdirectories link deeper, `?dir=` keeps the place
 * across a reload), a text viewer, downloads, an upload form and two-step deletes.
 */
export async function files(panel, { session }, { showProblem }) {
  const id = session.id;
  const base = `/v1/sessions/${id}/files`;
  const contentUrl = (path) => `${base}/content${query({ path })}`;
  const dir = dirOf(new URLSearchParams(location.search).get("dir"));
  const dirLink = (d) => `/console/sessions/${id}/files${d === "/" ? "" : query({ dir: d })}`;

  // Where we are: the root, then each directory down to this one.
  const parts = dir === "/" ? [] : dir.slice(1).split("/");
  const crumbs = [["/", "/"], ...parts.map((p, i) => [p, `/${parts.slice(0, i + 1).join("/")}`])];
  const trail = h(
    "nav",
    { class: "crumbs", "aria-label": "Directory" },
    h("ol", {}, crumbs.map(([label, d]) => h("li", {}, h("a", { href: dirLink(d), "aria-current": d === dir ? "page" : null }, label)))),
  );

  const body = h("tbody");
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "More");
  const viewer = h("section", { class: "card viewer", "aria-label": "File contents", hidden: true });
  let entries = [];
  let cursor = null;
  let viewing = null;
  const own = ownWrites();

  const download = async (path) => {
    const blob = await (await bytes("GET", contentUrl(path))).blob();
    const href = URL.createObjectURL(blob);
    const a = h("a", { href, download: baseName(path), hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // The browser has the blob once the download starts; the URL is dropped soon after.
    setTimeout(() => URL.revokeObjectURL(href), 60_000);
  };
  const downloadButton = (path) =>
    h("button", { type: "button", "aria-label": `Download ${path}`, onclick: () => download(path).catch(showProblem) }, "Download");

  const view = async (entry) => {
    viewing = entry.path;
    const close = h("button", { type: "button", class: "link", "aria-label": `Close ${entry.path}` }, "Close");
    close.addEventListener("click", () => {
      viewing = null;
      viewer.hidden = true;
    });
    const contents = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "loading…"));
    const meta = h("p", { class: "muted" }, `${size(entry.size)}, etag ${entry.etag ?? "?"}`);
    fill(viewer, h("div", { class: "viewer-head" }, h("h2", {}, entry.path), downloadButton(entry.path), close), meta, contents);
    viewer.hidden = false;
    if (entry.size > VIEW_MAX) {
      return fill(contents, h("p", {}, `Too large to show here (${size(entry.size)}); download it.`));
    }
    const resp = await bytes("GET", contentUrl(entry.path));
    const buffer = await resp.arrayBuffer();
    meta.textContent = `${resp.headers.get("content-type") ?? "?"}, ${size(buffer.byteLength)}, etag ${(resp.headers.get("etag") ?? entry.etag ?? "?").replaceAll('"', "")}`;
    let text = null;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(buffer);
      if (text.includes("\0")) text = null;
    } catch {
      text = null;
    }
    if (viewing !== entry.path) return;
    // Shown as text in a <pre>, never rendered: an uploaded HTML file stays inert.
    fill(contents, text === null ? h("p", {}, "A binary file: download it to see it.") : h("pre", { class: "file" }, text));
  };

  const row = (e) => {
    const name = baseName(e.path);
    if (e.type === "directory") {
      return h(
        "tr",
        { "data-path": e.path },
        h("td", {}, h("a", { href: dirLink(e.path) }, `${name}/`)),
        h("td", { class: "num" }, `${size(e.size)} in ${e.files} file${e.files === 1 ? "" : "s"}`),
        h("td", {}, when(e.updated_at)),
        h("td", { class: "actions" }, twoStepDelete(`${e.path}/`, () => remove(e.path, true), showProblem)),
      );
    }
    return h(
      "tr",
      { "data-path": e.path },
      h("td", {}, h("button", { type: "button", class: "link", "aria-label": `View ${e.path}`, onclick: () => view(e).catch(showProblem) }, name)),
      h("td", { class: "num" }, size(e.size)),
      h("td", {}, when(e.updated_at)),
      h("td", { class: "actions" }, downloadButton(e.path), " ", twoStepDelete(e.path, () => remove(e.path, false), showProblem)),
    );
  };

  const describe = () => {
    const count = entries.length;
    summary.textContent = count ? `${count} entr${count === 1 ? "y" : "ies"} in ${dir}${cursor ? " (more below)" : ""}` : `No files in ${dir}.`;
    more.hidden = !cursor;
  };
  const page = async (after) => {
    const p = await get(`${base}${query({ dir, limit: FILE_PAGE, after })}`);
    cursor = p.next_cursor;
    return p.data;
  };
  // A reload reads the first page again; only a change redraws it (dropping what was paged in
  // below), so an echo of the console's own write leaves a half-done delete alone.
  let shown = null;
  const reload = reloader(async () => {
    const first = await page(null);
    const seen = JSON.stringify(first.map((e) => [e.path, e.etag, e.size, e.files, e.updated_at]));
    if (seen === shown) return;
    shown = seen;
    entries = first;
    fill(body, entries.map(row));
    describe();
  }, showProblem);
  more.addEventListener("click", async () => {
    try {
      const next = await page(cursor);
      entries.push(...next);
      body.append(...next.map(row));
      describe();
    } catch (e) {
      showProblem(e);
    }
  });
  const remove = async (path, recursive) => {
    await asOwn(own, `file.deleted ${path}`, () => del(`${base}${query({ path, recursive: recursive ? "true" : "" })}`));
    if (viewing === path || (recursive && viewing?.startsWith(`${path}/`))) {
      viewing = null;
      viewer.hidden = true;
    }
    await reload();
  };

  // Upload: the file's bytes as the body, its type as Content-Type; create-only unless asked.
  const file = h("input", { type: "file", name: "file", required: true });
  const target = h("input", { name: "path", placeholder: join(dir, "name.txt"), spellcheck: "false", maxlength: 1024 });
  const replace = h("input", { type: "checkbox", name: "replace", id: "upload-replace" });
  const uploaded = h("p", { class: "muted", "aria-live": "polite" });
  const send = h("button", { type: "submit" }, "Upload");
  const form = h(
    "form",
    { class: "card", "aria-label": "Upload a file" },
    h("h2", {}, "Upload a file"),
    field("File", file),
    field("Path", target, `where to store it; empty = ${join(dir, "<file name>")}`),
    h("label", { for: "upload-replace" }, replace, " Replace the file if it exists"),
    h("div", { class: "toolbar" }, send),
    uploaded,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) return;
    const path = target.value.trim() || join(dir, chosen.name);
    const headers = { "Content-Type": chosen.type || "application/octet-stream" };
    if (!replace.checked) headers["If-None-Match"] = "*";
    send.disabled = true;
    try {
      const meta = await asOwn(own, `file.written ${path}`, async () => (await bytes("PUT", contentUrl(path), { body: chosen, headers })).json());
      uploaded.textContent = `Uploaded ${meta.path} (${size(meta.size)}).`;
      form.reset();
      await reload();
    } catch (err) {
      showProblem(err);
    } finally {
      send.disabled = false;
    }
  });

  fill(
    panel,
    trail,
    summary,
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "files", "aria-label": "Files" },
        h("thead", {}, h("tr", {}, ["Name", "Size", "Updated", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    h("div", { class: "toolbar pager" }, more),
    viewer,
    form,
  );
  await reload();

  return {
    onEvent(event) {
      if (!event.type?.startsWith("file.")) return;
      const d = event.data ?? {};
      if (own.take(`${event.type} ${d.path}`)) return;
      // The file on screen changed or went away: show the news, not stale text.
      if (viewing && (d.path === viewing || d.from === viewing)) {
        if (event.type === "file.written") {
          const entry = { path: viewing, size: d.size ?? 0, etag: d.etag };
          view(entry).catch(showProblem);
        } else {
          fill(viewer, h("p", {}, event.type === "file.moved" ? `${viewing} was moved to ${d.to}.` : `${viewing} was deleted.`));
          viewing = null;
        }
      }
      reload();
    },
  };
}

/**
 * The Key-value tab: keys by prefix, a page at a time (`?prefix=&after=` keep the place; Back
 * goes to the page before), each value's JSON on demand, a form to set one (JSON, optional TTL)
 * and two-step deletes.
 */
export async function kv(panel, { session }, { navigate, showProblem }) {
  const id = session.id;
  const base = `/v1/sessions/${id}/kv`;
  const params = new URLSearchParams(location.search);
  const prefix = params.get("prefix") ?? "";
  const after = params.get("after") ?? "";
  const here = (p, a) => `/console/sessions/${id}/kv${query({ prefix: p, after: a })}`;

  const prefixInput = h("input", { name: "prefix", value: prefix, maxlength: 256, placeholder: "e.g. user:", spellcheck: "false" });
  const filter = h("form", { class: "toolbar", role: "search", "aria-label": "Filter keys" }, field("Prefix", prefixInput), h("button", { type: "submit" }, "Apply"));
  filter.addEventListener("submit", (e) => {
    e.preventDefault();
    navigate(here(prefixInput.value.trim(), ""), { replace: true });
  });

  const body = h("tbody");
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const first = h("button", { type: "button", disabled: !after }, "First page");
  const next = h("button", { type: "button", disabled: true }, "Next page");
  let cursor = null;
  const own = ownWrites();
  first.addEventListener("click", () => navigate(here(prefix, "")));
  next.addEventListener("click", () => cursor && navigate(here(prefix, cursor)));

  // The set form; "Edit" on a row fills it with that key's value.
  const key = h("input", { name: "key", required: true, maxlength: 256, spellcheck: "false", placeholder: "user:name" });
  const value = h("textarea", { name: "value", rows: 4, required: true, spellcheck: "false", placeholder: '{"name": "Ada"}' });
  const ttl = h("input", { name: "ttl_secs", type: "number", min: 1, max: 31622400, step: 1 });
  const saved = h("p", { class: "muted", "aria-live": "polite" });
  const setButton = h("button", { type: "submit" }, "Set key");
  const form = h(
    "form",
    { class: "card", "aria-label": "Set a key" },
    h("h2", {}, "Set a key"),
    field("Key", key, "letters, digits and . _ : -"),
    field("Value (JSON)", value),
    field("TTL (seconds)", ttl, "optional; empty = never expires"),
    h("div", { class: "toolbar" }, setButton),
    saved,
  );

  const row = (entry) => {
    const preview = JSON.stringify(entry.value);
    const inspector = h("details", {}, h("summary", {}, preview.length > 60 ? `${preview.slice(0, 60)}…` : preview));
    inspector.addEventListener("toggle", () => {
      if (inspector.open && inspector.children.length === 1) inspector.append(json(entry.value));
    });
    const edit = h("button", { type: "button", class: "link", "aria-label": `Edit ${entry.key}` }, "Edit");
    edit.addEventListener("click", () => {
      key.value = entry.key;
      value.value = JSON.stringify(entry.value, null, 2);
      ttl.value = "";
      value.focus();
    });
    return h(
      "tr",
      { "data-key": entry.key },
      h("td", {}, h("code", {}, entry.key)),
      h("td", { class: "value" }, inspector),
      h("td", { class: "num" }, String(entry.version)),
      h("td", {}, entry.expires_at ? when(entry.expires_at) : h("span", { class: "muted" }, "never")),
      h("td", {}, when(entry.updated_at)),
      h(
        "td",
        { class: "actions" },
        edit,
        " ",
        twoStepDelete(entry.key, async () => {
          await asOwn(own, `kv.deleted ${entry.key}`, () => del(`${base}/${encodeURIComponent(entry.key)}`));
          await reload();
        }, showProblem),
      ),
    );
  };

  // Only a change redraws the rows (the stream echoes the console's own writes), and values
  // open in the inspector stay open.
  let shown = null;
  const reload = reloader(async () => {
    const page = await get(`${base}${query({ prefix, after, limit: KV_PAGE })}`);
    cursor = page.next_cursor;
    const seen = JSON.stringify(page.data.map((e) => [e.key, e.version, e.expires_at]));
    if (seen === shown) return;
    shown = seen;
    const open = new Set([...body.querySelectorAll("tr:has(details[open])")].map((tr) => tr.dataset.key));
    fill(body, page.data.map(row));
    for (const tr of body.rows) if (open.has(tr.dataset.key)) tr.querySelector("details").open = true;
    const scope = prefix ? ` starting with “${prefix}”` : "";
    summary.textContent = page.data.length ? `${page.data.length} key${page.data.length === 1 ? "" : "s"}${scope}${after ? ` after “${after}”` : ""}` : `No keys${scope}${after ? ` after “${after}”` : ""}.`;
    next.disabled = !cursor;
  }, showProblem);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(value.value);
    } catch (err) {
      return showProblem(new Problem(0, "invalid_json", `the value is not JSON: ${err.message}`));
    }
    const body = { value: parsed };
    if (ttl.value) body.ttl_secs = Number(ttl.value);
    setButton.disabled = true;
    try {
      const name = key.value.trim();
      const entry = await asOwn(own, `kv.set ${name}`, () => put(`${base}/${encodeURIComponent(name)}`, body));
      saved.textContent = `Set ${entry.key} (version ${entry.version}).`;
      form.reset();
      await reload();
    } catch (err) {
      showProblem(err);
    } finally {
      setButton.disabled = false;
    }
  });

  fill(
    panel,
    filter,
    summary,
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "kv", "aria-label": "Keys" },
        h("thead", {}, h("tr", {}, ["Key", "Value", "Version", "Expires", "Updated", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    h("div", { class: "toolbar pager" }, first, next),
    form,
  );
  await reload();

  return {
    onEvent(event) {
      if (event.type !== "kv.set" && event.type !== "kv.deleted") return;
      if (!own.take(`${event.type} ${event.data?.key}`)) reload();
    },
  };
}
