//! Answering a waiting turn: a client tool's result (`tool-results`) and a decision on an
//! approval (`approvals/{id}`, for the exact arguments shown: their `arguments_sha256`). `chat`
//! asks for these inline; `sessions pending|approve|deny|tool-result` do it by hand.

use serde_json::{Value, json};

use crate::api::{Client, arg, call, types};
use crate::failure::Failure;
use crate::output::{self, Format};

const PENDING: &[&str] = &["type", "tool_call_id", "approval_id", "name", "arguments", "deadline_at"];

/// Posts one client tool's result.
pub async fn post_result(
    c: &Client,
    session: &str,
    call_id: &str,
    output: &str,
    is_error: bool,
) -> Result<types::ToolResultsAccepted, Failure> {
    let body: types::ToolResultsCreate =
        serde_json::from_value(json!({"results": [{"tool_call_id": call_id, "output": output, "is_error": is_error}]}))
            .map_err(|e| Failure::usage(format!("tool result: {e}")))?;
    call(c.post_tool_results(&arg("session id", session)?, None, &body)).await
}

/// Posts a decision on an approval, for the arguments whose hash is `sha256`.
pub async fn decide(
    c: &Client,
    session: &str,
    approval_id: &str,
    approve: bool,
    reason: Option<&str>,
    sha256: &str,
) -> Result<types::ApprovalResolved, Failure> {
    let decision = if approve { "approve" } else { "deny" };
    let body: types::ApprovalDecisionCreate =
        serde_json::from_value(json!({"decision": decision, "reason": reason, "arguments_sha256": sha256}))
            .map_err(|e| Failure::usage(format!("decision: {e}")))?;
    call(c.decide_approval(&arg("session id", session)?, &arg("approval id", approval_id)?, None, &body)).await
}

/// A tool call's arguments as shown: a string bare, other JSON compact.
pub fn arguments(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn pending(c: &Client, o: Format, session: &str) -> Result<(), Failure> {
    output::print_as(o, &call(c.list_pending(&arg("session id", session)?)).await?, PENDING, "tool_call_id")
}

/// `sessions approve|deny`: the decision holds for the arguments `pending` lists now.
pub async fn approve(
    c: &Client,
    o: Format,
    session: &str,
    approval_id: &str,
    yes: bool,
    reason: Option<&str>,
) -> Result<(), Failure> {
    let pending = call(c.list_pending(&arg("session id", session)?)).await?;
    let Some(item) = pending.data.iter().find(|p| p.approval_id.as_deref() == Some(approval_id)) else {
        return Err(Failure::Api {
            status: 404,
            code: "not_found".into(),
            detail: format!("session {session} has no pending approval {approval_id}"),
        });
    };
    output::print_as(o, &decide(c, session, approval_id, yes, reason, &item.arguments_sha256).await?, &[], "approval_id")
}

pub async fn tool_result(c: &Client, o: Format, session: &str, call_id: &str, out: &str, is_error: bool) -> Result<(), Failure> {
    output::print_as(o, &post_result(c, session, call_id, out, is_error).await?, &[], "accepted")
}
