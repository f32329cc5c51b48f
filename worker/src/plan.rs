//! Derives a turn's next step, and the model's prompt, from the event log alone.
//!
//! This is what makes a turn resumable: a worker that (re)starts a turn reads
//! the committed events and continues at the first step that has no result.

use serde::Deserialize;
use serde_json::Value;
use turnstone_core::events::{Event, types};
use turnstone_core::ids::TurnId;
use turnstone_core::tools::{self, Policy};
use turnstone_core::turns::{TurnContext, WaitKind};

use crate::llm::{ChatMessage, ToolCall};

/// The next thing a turn must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Call the model for iteration `iteration` (1-based).
    CallModel { iteration: i32 },
    /// Run a tool the model asked for in `iteration` (`denied`: its policy
    /// is `deny`; the model gets the error without the tool running).
    RunTool { iteration: i32, call: ToolCall, denied: bool },
    /// Nothing of `iteration` can run until people answer: wait for these
    /// calls (client tools and approvals), holding nothing.
    Wait { iteration: i32, calls: Vec<(ToolCall, WaitKind)> },
    /// The model answered without tool calls: seal the turn.
    Seal,
}

/// `data.message.<field>`. Not `Value::pointer`: it allocates two strings per
/// path segment to unescape it, and the prompt reads every message of the
/// history at each step (1–2 % of all CPU under `turn_throughput`, perf).
fn message_field<'a>(e: &'a Event, field: &str) -> Option<&'a Value> {
    e.data.get("message").and_then(|m| m.get(field))
}

fn tool_calls(e: &Event) -> Vec<ToolCall> {
    message_field(e, "tool_calls").and_then(|v| Vec::<ToolCall>::deserialize(v).ok()).unwrap_or_default()
}

fn iteration(e: &Event) -> i32 {
    e.data.get("iteration").and_then(Value::as_i64).unwrap_or(0) as i32
}

/// The message's text parts joined by newlines, as [`turnstone_core::turns::content_text`]
/// joins [`ContentPart`](turnstone_core::turns::ContentPart)s, read straight from the stored JSON: the prompt reads
/// every message of the history at each step, and deserializing the parts (an
/// internally tagged enum, which serde buffers before it reads the tag) cost
/// a string and a map per part. Parts of another type are skipped.
fn text_of(e: &Event) -> String {
    let Some(Value::Array(parts)) = message_field(e, "content") else { return String::new() };
    let mut texts = parts.iter().filter_map(|p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
        (Some("text"), Some(Value::String(t))) => Some(t.as_str()),
        _ => None,
    });
    let mut out = texts.next().map(str::to_owned).unwrap_or_default();
    for t in texts {
        out.push('\n');
        out.push_str(t);
    }
    out
}

fn is_result_of(e: &Event, iteration_no: i32, call_id: &str) -> bool {
    e.kind == types::TOOL_COMPLETED
        && iteration(e) == iteration_no
        && e.data.get("tool_call_id").and_then(Value::as_str) == Some(call_id)
}

/// Whether the log holds an approval of `call_id` of `iteration`.
fn approved(mine: &[&Event], iteration_no: i32, call_id: &str) -> bool {
    mine.iter().any(|e| {
        e.kind == types::TOOL_APPROVAL_RESOLVED
            && iteration(e) == iteration_no
            && e.data.get("tool_call_id").and_then(Value::as_str) == Some(call_id)
            && e.data.get("decision").and_then(Value::as_str) == Some("approve")
    })
}

/// The first step of `turn_id` whose result is not in the log.
///
/// Of a model call's tool calls, those that can run now come first, in the
/// order asked: auto tools, approved ones (with the arguments the model
/// sent, which the approval's hash covers) and denied ones (an error, at
/// once). Then the turn waits for every call still open: client tools (the
/// client posts their results) and `ask` tools without a decision.
pub fn next_step(ctx: &TurnContext, turn_id: TurnId) -> Step {
    let mine: Vec<&Event> = ctx.history.iter().map(|e| e.as_ref()).filter(|e| e.turn_id == Some(turn_id)).collect();
    let Some(last) = mine.iter().rev().find(|e| e.kind == types::OUTPUT_MESSAGE_COMPLETED) else {
        return Step::CallModel { iteration: 1 };
    };
    let it = iteration(last);
    let calls = tool_calls(last);
    if calls.is_empty() {
        return Step::Seal;
    }
    let mut waits = Vec::new();
    for call in calls {
        if mine.iter().any(|e| is_result_of(e, it, &call.id)) {
            continue;
        }
        if ctx.client_tools.iter().any(|t| t.name == call.name) {
            waits.push((call, WaitKind::ClientTool));
            continue;
        }
        match tools::policy_for(&ctx.tool_policies, &call.name) {
            Policy::Auto => return Step::RunTool { iteration: it, call, denied: false },
            Policy::Deny => return Step::RunTool { iteration: it, call, denied: true },
            Policy::Ask if approved(&mine, it, &call.id) => return Step::RunTool { iteration: it, call, denied: false },
            Policy::Ask => waits.push((call, WaitKind::Approval)),
        }
    }
    if !waits.is_empty() {
        return Step::Wait { iteration: it, calls: waits };
    }
    Step::CallModel { iteration: it + 1 }
}

/// How many tool calls of the turn's latest model output still lack a result.
pub fn open_tool_calls(ctx: &TurnContext, turn_id: TurnId) -> usize {
    let mine: Vec<&Event> = ctx.history.iter().map(|e| e.as_ref()).filter(|e| e.turn_id == Some(turn_id)).collect();
    let Some(last) = mine.iter().rev().find(|e| e.kind == types::OUTPUT_MESSAGE_COMPLETED) else { return 0 };
    let it = iteration(last);
    tool_calls(last).iter().filter(|c| !mine.iter().any(|e| is_result_of(e, it, &c.id))).count()
}

/// The conversation as the model sees it. A tool call that never got a result
/// (its turn failed) gets a placeholder, because providers reject dangling calls.
pub fn prompt(ctx: &TurnContext, system_prompt: String) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(ctx.history.len() + 1);
    if !system_prompt.is_empty() {
        out.push(ChatMessage::System(system_prompt));
    }
    let mut open: Vec<(Option<TurnId>, i32, String)> = Vec::new();
    let close_open = |out: &mut Vec<ChatMessage>, open: &mut Vec<(Option<TurnId>, i32, String)>| {
        for (_, _, id) in open.drain(..) {
            out.push(ChatMessage::Tool { tool_call_id: id, content: "error: not executed, the turn ended first".into() });
        }
    };
    for e in &ctx.history {
        match e.kind.as_str() {
            types::INPUT_MESSAGE => {
                close_open(&mut out, &mut open);
                out.push(ChatMessage::User(text_of(e)));
            }
            types::OUTPUT_MESSAGE_COMPLETED => {
                close_open(&mut out, &mut open);
                let calls = tool_calls(e);
                let turn = e.turn_id;
                open.extend(calls.iter().map(|c| (turn, iteration(e), c.id.clone())));
                out.push(ChatMessage::Assistant { content: text_of(e), tool_calls: calls });
            }
            types::TOOL_COMPLETED => {
                let id = e.data.get("tool_call_id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let turn = e.turn_id;
                open.retain(|(t, i, c)| !(*t == turn && *i == iteration(e) && *c == id));
                let content = match (e.data.get("result").and_then(Value::as_str), e.data.get("error").and_then(Value::as_str)) {
                    (Some(r), _) => r.to_owned(),
                    (None, Some(err)) => format!("error: {err}"),
                    (None, None) => String::new(),
                };
                out.push(ChatMessage::Tool { tool_call_id: id, content });
            }
            _ => {}
        }
    }
    close_open(&mut out, &mut open);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use turnstone_core::ids::{EventId, SessionId, TypedId};
    use turnstone_core::turns::ContentPart;

    fn ev(seq: i64, kind: &str, turn: TurnId, data: Value) -> Event {
        Event {
            id: EventId::new(),
            session_id: SessionId::new(),
            sequence: seq,
            kind: kind.into(),
            turn_id: Some(turn),
            data,
            ts: chrono::Utc::now(),
        }
    }

    fn ctx(history: Vec<Event>) -> TurnContext {
        TurnContext {
            system_prompt: String::new(),
            capabilities: vec![],
            max_iterations: 10,
            max_turn_secs: 600,
            cancel_requested: false,
            waited_secs: 0.0,
            client_tools: vec![],
            tool_policies: Default::default(),
            approval_timeout_secs: 900,
            model_id: None,
            history: history.into_iter().map(std::sync::Arc::new).collect(),
            endpoint: None,
        }
    }

    #[test]
    fn resumes_at_the_first_uncommitted_step() {
        let t = TurnId::new();
        let user = ev(1, types::INPUT_MESSAGE, t, json!({"message":{"role":"user","content":[{"type":"text","text":"hi"}]}}));
        assert_eq!(next_step(&ctx(vec![user.clone()]), t), Step::CallModel { iteration: 1 });

        let call = json!({"id":"c1","name":"math","arguments":"{\"expression\":\"6*7\"}"});
        let out = ev(
            3,
            types::OUTPUT_MESSAGE_COMPLETED,
            t,
            json!({"iteration":1,"message":{"role":"assistant","content":[{"type":"text","text":""}],"tool_calls":[call]}}),
        );
        let step = next_step(&ctx(vec![user.clone(), out.clone()]), t);
        assert!(matches!(step, Step::RunTool { iteration: 1, ref call, denied: false } if call.id == "c1"));

        let res = ev(5, types::TOOL_COMPLETED, t, json!({"iteration":1,"tool_call_id":"c1","name":"math","result":"42"}));
        assert_eq!(next_step(&ctx(vec![user.clone(), out.clone(), res.clone()]), t), Step::CallModel { iteration: 2 });

        let fin = ev(
            7,
            types::OUTPUT_MESSAGE_COMPLETED,
            t,
            json!({"iteration":2,"message":{"role":"assistant","content":[{"type":"text","text":"42"}],"tool_calls":[]}}),
        );
        let all = vec![user, out, res, fin];
        assert_eq!(next_step(&ctx(all.clone()), t), Step::Seal);
        let p = prompt(&ctx(all), "sys".into());
        assert_eq!(p.len(), 5);
        assert!(matches!(&p[3], ChatMessage::Tool { content, .. } if content == "42"));
    }

    #[test]
    fn a_mixed_batch_runs_what_it_can_then_waits_for_the_rest() {
        use turnstone_core::tools::{ClientTool, Policy};
        let t = TurnId::new();
        let calls = json!([
            {"id":"a","name":"lookup_order","arguments":"{}"},
            {"id":"b","name":"math","arguments":"{\"expression\":\"1+1\"}"},
            {"id":"c","name":"refund","arguments":"{\"amount\":5}"},
            {"id":"d","name":"drop_table","arguments":"{}"}
        ]);
        let out = ev(
            2,
            types::OUTPUT_MESSAGE_COMPLETED,
            t,
            json!({"iteration":1,"message":{"role":"assistant","content":[],"tool_calls":calls}}),
        );
        let mut c = ctx(vec![out.clone()]);
        c.client_tools = vec![ClientTool {
            name: "lookup_order".into(),
            description: String::new(),
            parameters: json!({}),
            timeout_secs: 300,
        }];
        c.tool_policies = [("refund".to_string(), Policy::Ask), ("drop_*".into(), Policy::Deny)].into();
        assert!(matches!(next_step(&c, t), Step::RunTool { ref call, denied: false, .. } if call.id == "b"), "auto first");
        let res = |seq, id: &str| ev(seq, types::TOOL_COMPLETED, t, json!({"iteration":1,"tool_call_id":id,"result":"x"}));
        c.history.push(Arc::new(res(3, "b")));
        assert!(matches!(next_step(&c, t), Step::RunTool { ref call, denied: true, .. } if call.id == "d"), "deny at once");
        c.history.push(Arc::new(res(4, "d")));
        let Step::Wait { iteration: 1, calls } = next_step(&c, t) else { panic!("waits") };
        let waits: Vec<(&str, WaitKind)> = calls.iter().map(|(c, k)| (c.id.as_str(), *k)).collect();
        assert_eq!(waits, vec![("a", WaitKind::ClientTool), ("c", WaitKind::Approval)]);
        c.history.push(Arc::new(res(5, "a")));
        c.history.push(Arc::new(ev(
            6,
            types::TOOL_APPROVAL_RESOLVED,
            t,
            json!({"iteration":1,"tool_call_id":"c","decision":"approve"}),
        )));
        assert!(
            matches!(next_step(&c, t), Step::RunTool { ref call, denied: false, .. } if call.id == "c"),
            "approved runs, no model call"
        );
        c.history.push(Arc::new(res(7, "c")));
        assert_eq!(next_step(&c, t), Step::CallModel { iteration: 2 });
    }

    #[test]
    fn message_text_is_read_as_content_text_joins_it() {
        let t = TurnId::new();
        let parts = vec![ContentPart::Text { text: "one".into() }, ContentPart::Text { text: "two\nlines".into() }];
        let stored = ev(1, types::INPUT_MESSAGE, t, json!({ "message": { "role": "user", "content": parts } }));
        assert_eq!(text_of(&stored), turnstone_core::turns::content_text(&parts));
        assert_eq!(text_of(&stored), "one\ntwo\nlines");
        let single = ev(2, types::INPUT_MESSAGE, t, json!({ "message": { "content": [{ "type": "text", "text": "x" }] } }));
        assert_eq!(text_of(&single), "x");
        let unknown = ev(
            3,
            types::INPUT_MESSAGE,
            t,
            json!({ "message": { "content": [{ "type": "image", "url": "u" }, { "type": "text", "text": "y" }] } }),
        );
        assert_eq!(text_of(&unknown), "y", "a part of another type is skipped");
        let none = ev(4, types::INPUT_MESSAGE, t, json!({ "message": {} }));
        assert_eq!(text_of(&none), "");
    }

    #[test]
    fn dangling_tool_calls_of_failed_turns_get_placeholders() {
        let t = TurnId::new();
        let call = json!({"id":"c1","name":"math","arguments":"{}"});
        let out = ev(
            2,
            types::OUTPUT_MESSAGE_COMPLETED,
            t,
            json!({"iteration":1,"message":{"role":"assistant","content":[],"tool_calls":[call]}}),
        );
        let next = ev(
            4,
            types::INPUT_MESSAGE,
            TurnId::new(),
            json!({"message":{"role":"user","content":[{"type":"text","text":"again"}]}}),
        );
        let p = prompt(&ctx(vec![out, next]), String::new());
        assert!(matches!(&p[1], ChatMessage::Tool { tool_call_id, .. } if tool_call_id == "c1"));
        assert!(matches!(&p[2], ChatMessage::User(t) if t == "again"));
    }
}
