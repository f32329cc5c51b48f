// Building DOM nodes. Text from the API is only ever set as text (never parsed as HTML).

/** An element: `h("a", {href, class, onclick}, child, …)`; children are nodes, strings or arrays. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value") el.value = value;
    else if (name === "checked") el.checked = Boolean(value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let ids = 0;
/** A labelled form field: the label names the control, the hint describes it. */
export function field(label, control, hint) {
  control.id ||= `f${++ids}`;
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "muted" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

/** A table with a caption-like label, column headings and rows of cells. */
export function table(label, headings, rows) {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { "aria-label": label },
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

/** A timestamp as local time, with the exact value in a tooltip. */
export function when(ts) {
  if (!ts) return h("span", { class: "muted" }, "—");
  const d = new Date(ts);
  return h("time", { datetime: ts, title: ts }, d.toLocaleString());
}

/** Pretty JSON in a <pre>. */
export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** A status badge (`idle`, `running`, …) styled by its value. */
export function badge(text) {
  return h("span", { class: `badge badge-${String(text).replace(/[^a-z_-]/gi, "")}` }, text);
}

/** The text of message content parts (`[{type: "text", text}]`). */
export function partsText(content) {
  if (!Array.isArray(content)) return typeof content === "string" ? content : JSON.stringify(content);
  return content.map((p) => (p && p.type === "text" ? p.text : JSON.stringify(p))).join("\n");
}
