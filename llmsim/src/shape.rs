//! The prompt-shape rules real chat APIs enforce, checked before any answer,
//! so that every test driving the simulator also guards the conversation a
//! worker sends. OpenAI answers 400 to each of these; so does the simulator.

use std::collections::HashSet;

use serde_json::Value;

use crate::wire::Message;

/// Why `messages` is not a conversation a real API would accept, if it is not:
/// - a `tool` message that does not directly follow (possibly after other
///   `tool` messages) the assistant message whose `tool_calls` it answers;
/// - an assistant tool call with no result;
/// - two results for one call;
/// - a last message that is neither `user` nor `tool`.
pub fn check(messages: &[Message]) -> Result<(), String> {
    // The calls of the assistant message the current run of `tool` messages answers.
    let mut open: Option<(usize, Vec<String>, HashSet<String>)> = None;
    for (i, m) in messages.iter().enumerate() {
        if m.role == "tool" {
            let Some((_, calls, answered)) = open.as_mut() else {
                return Err(format!(
                    "messages[{i}]: messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
                ));
            };
            let id = m.tool_call_id.as_deref().unwrap_or_default();
            if !calls.iter().any(|c| c == id) {
                return Err(format!("messages[{i}]: tool_call_id {id:?} answers no call of the preceding assistant message"));
            }
            if !answered.insert(id.to_owned()) {
                return Err(format!("messages[{i}]: tool_call_id {id:?} is answered twice"));
            }
            continue;
        }
        close(open.take())?;
        if m.role == "assistant" {
            let calls = call_ids(m.tool_calls.as_ref());
            if !calls.is_empty() {
                open = Some((i, calls, HashSet::new()));
            }
        }
    }
    close(open)?;
    match messages.last().map(|m| m.role.as_str()) {
        Some("user" | "tool") => Ok(()),
        Some(role) => Err(format!("the last message must have role 'user' or 'tool', not {role:?}")),
        None => Err("messages must not be empty".to_owned()),
    }
}

/// Fails when the assistant message at `index` left a call unanswered.
fn close(open: Option<(usize, Vec<String>, HashSet<String>)>) -> Result<(), String> {
    let Some((index, calls, answered)) = open else { return Ok(()) };
    match calls.iter().find(|c| !answered.contains(*c)) {
        Some(missing) => Err(format!(
            "messages[{index}]: an assistant message with 'tool_calls' must be followed by tool messages responding to \
             each 'tool_call_id'; {missing:?} has none"
        )),
        None => Ok(()),
    }
}

fn call_ids(tool_calls: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(calls)) = tool_calls else { return Vec::new() };
    calls.iter().filter_map(|c| c.get("id").and_then(Value::as_str)).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_json(messages: Value) -> Result<(), String> {
        check(&serde_json::from_value::<Vec<Message>>(messages).unwrap())
    }

    fn call(id: &str) -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    }

    fn result(id: &str) -> Value {
        json!({"role": "tool", "tool_call_id": id, "content": "ok"})
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn a_well_formed_conversation_passes() {
        let two_calls = json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        let ok = json!([{"role": "system", "content": "s"}, user("u1"), two_calls, result("b"), result("a"),
                        {"role": "assistant", "content": "done"}, user("u2")]);
        assert_eq!(check_json(ok), Ok(()));
        assert_eq!(check_json(json!([user("u"), call("a"), result("a")])), Ok(()));
    }

    #[test]
    fn each_broken_shape_is_refused() {
        let refused = |messages: Value, needle: &str| {
            let err = check_json(messages.clone()).expect_err(&format!("refused: {messages}"));
            assert!(err.contains(needle), "{err:?} mentions {needle:?}");
        };
        // A queued user message between a call and its result.
        refused(json!([user("u1"), call("a"), user("u2"), result("a")]), "must be followed by tool messages");
        refused(json!([user("u1"), result("a")]), "must be a response to a preceding message");
        refused(json!([user("u1"), call("a"), result("b")]), "answers no call");
        refused(json!([user("u1"), call("a"), result("a"), result("a")]), "answered twice");
        refused(json!([user("u1"), call("a")]), "must be followed by tool messages");
        refused(json!([user("u1"), call("a"), result("a"), {"role": "assistant", "content": "x"}]), "last message");
        refused(
            json!([user("u1"), call("a"), {"role": "assistant", "content": "x"}, result("a")]),
            "must be followed by tool messages",
        );
    }
}
