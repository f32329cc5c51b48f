// What a waiting session waits for: the Pending tab of the session page. Client tool calls get a
// result box; approvals get Approve / Deny, posted with the held call's `arguments_sha256` so a
// decision holds for exactly the arguments shown. The list is re-read whenever the session's
// stream reports a change in what is pending (`turn.waiting`, `turn.resumed`, `tool.*`).

import { get, post } from "./api.js";
import { h, fill, field, when, json } from "./dom.js";

/** Events after which the pending list may differ. */
const CHANGES = (type) => type === "turn.waiting" || type === "turn.resumed" || type.startsWith("tool.");

export async function pending(panel, { session }, { showProblem }) {
  const id = session.id;
  const list = h("div", { "aria-live": "polite" });
  fill(panel, h("h2", {}, "Pending"), list);

  /** Posts, then re-reads; the buttons stay disabled while the request runs. */
  const act = async (buttons, path, body) => {
    buttons.forEach((b) => (b.disabled = true));
    try {
      await post(path, body);
      await reload();
    } catch (e) {
      showProblem(e);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  };

  const approval = (item) => {
    const reason = h("input", { name: "reason", maxlength: 2000 });
    const approve = h("button", { type: "button", "aria-label": `Approve ${item.name}` }, "Approve");
    const deny = h("button", { type: "button", class: "danger", "aria-label": `Deny ${item.name}` }, "Deny");
    const url = `/v1/sessions/${id}/approvals/${encodeURIComponent(item.approval_id)}`;
    const decide = (decision) => {
      const body = { decision, arguments_sha256: item.arguments_sha256 };
      if (decision === "deny" && reason.value.trim()) body.reason = reason.value.trim();
      return act([approve, deny], url, body);
    };
    approve.addEventListener("click", () => decide("approve"));
    deny.addEventListener("click", () => decide("deny"));
    return h("div", { class: "toolbar" }, approve, field("Reason (for a denial)", reason, "optional; given to the model"), deny);
  };

  const toolCall = (item) => {
    const output = h("textarea", { name: "output", rows: 3, maxlength: 262144 });
    const isError = h("input", { type: "checkbox", name: "is_error" });
    isError.id = `err-${item.tool_call_id}`;
    const submit = h("button", { type: "submit" }, "Submit result");
    const form = h(
      "form",
      { "aria-label": `Result of ${item.name}` },
      field("Result", output),
      h("div", { class: "toolbar" }, h("label", { for: isError.id }, isError, " is error"), submit),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      act([submit], `/v1/sessions/${id}/tool-results`, { results: [{ tool_call_id: item.tool_call_id, output: output.value, is_error: isError.checked }] });
    });
    return form;
  };

  const card = (item) =>
    h(
      "article",
      { class: "card pending", "data-tool-call-id": item.tool_call_id },
      h("h3", {}, h("code", {}, item.name), " ", h("span", { class: "muted" }, item.type === "approval" ? "approval" : "client tool call")),
      h("dl", { class: "meta" }, h("dt", {}, "Call"), h("dd", {}, h("code", {}, item.tool_call_id)), h("dt", {}, "Deadline"), h("dd", {}, when(item.deadline_at))),
      h("div", { class: "field" }, h("span", { class: "muted" }, "Arguments"), json(item.arguments)),
      item.type === "approval" ? approval(item) : toolCall(item),
    );

  // Reads coalesce: asks that arrive during a read fold into one more read.
  let running = null;
  let again = false;
  async function reload() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          const { data } = await get(`/v1/sessions/${id}/pending`);
          fill(list, data.length ? data.map(card) : h("p", { class: "muted" }, "Nothing is pending."));
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
  }
  await reload();

  return {
    onEvent(event) {
      if (CHANGES(event.type)) reload();
    },
  };
}
