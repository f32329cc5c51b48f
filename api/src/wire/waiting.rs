//! Turns that wait for people: client tools, tool policies, results, approvals and what a session waits for.

use super::*;
use std::collections::BTreeMap;
use turnstone_core::tools;

/// Seconds a call may wait (1 s to 7 days).
pub type WaitSecs = Bounded<i32, 1, { limits::MAX_WAIT_SECS as i64 }>;

/// A tool the client runs: when the model calls it, the turn waits (holding
/// no worker) for `POST …/tool-results`, at most `timeout_secs`; past that the
/// model gets the error result `{"error":"timeout"}`.
#[derive(Debug, Object, Clone, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
pub struct ClientTool {
    /// Letters, digits, `_` and `-`; not the name of a capability tool, nor of another client tool.
    #[oai(validator(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// What the tool does, for the model.
    #[oai(default, validator(max_length = 1024, pattern = "^[^\\u0000]*$"))]
    pub description: String,
    /// JSON Schema (an object) of the arguments, at most 16 KiB serialised.
    pub parameters: BTreeMap<String, Value>,
    /// Seconds to wait for the result (default 300, at most 7 days).
    #[oai(default = "default_timeout")]
    pub timeout_secs: i32,
}

fn default_timeout() -> i32 {
    limits::DEFAULT_CLIENT_TOOL_TIMEOUT_SECS
}

impl ClientTool {
    pub fn core(&self) -> tools::ClientTool {
        tools::ClientTool {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: Value::Object(self.parameters.clone().into_iter().collect()),
            timeout_secs: self.timeout_secs,
        }
    }

    pub fn cores(list: &[ClientTool]) -> Vec<tools::ClientTool> {
        list.iter().map(ClientTool::core).collect()
    }
}

impl From<tools::ClientTool> for ClientTool {
    fn from(t: tools::ClientTool) -> Self {
        let parameters = match t.parameters {
            Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        ClientTool { name: t.name, description: t.description, parameters, timeout_secs: t.timeout_secs }
    }
}

/// `auto`: run the tool; `ask`: wait for a person's approval, then run it with
/// the arguments they approved; `deny`: never run it (the model gets `{"error":"denied"}`).
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ToolPolicy {
    Auto,
    Ask,
    Deny,
}

impl From<ToolPolicy> for tools::Policy {
    fn from(p: ToolPolicy) -> Self {
        match p {
            ToolPolicy::Auto => tools::Policy::Auto,
            ToolPolicy::Ask => tools::Policy::Ask,
            ToolPolicy::Deny => tools::Policy::Deny,
        }
    }
}

impl From<tools::Policy> for ToolPolicy {
    fn from(p: tools::Policy) -> Self {
        match p {
            tools::Policy::Auto => ToolPolicy::Auto,
            tools::Policy::Ask => ToolPolicy::Ask,
            tools::Policy::Deny => ToolPolicy::Deny,
        }
    }
}

/// Tool name or glob (`*`, `?`) → policy; an exact name wins, then the longest glob; `auto` when none matches.
pub type ToolPolicies = BTreeMap<String, ToolPolicy>;

pub fn core_policies(p: &ToolPolicies) -> tools::Policies {
    p.iter().map(|(k, v)| (k.clone(), (*v).into())).collect()
}

pub fn wire_policies(p: tools::Policies) -> ToolPolicies {
    p.into_iter().map(|(k, v)| (k, v.into())).collect()
}

/// One client tool's result.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct ToolResultInput {
    /// The `tool_call_id` of a pending call (`tool.call_requested`, `GET …/pending`).
    #[oai(validator(min_length = 1, max_length = 256))]
    pub tool_call_id: FreeText,
    /// What the tool returned (or its error, with `is_error`), at most 256 KiB.
    #[oai(validator(max_length = 262144))]
    pub output: FreeText,
    /// The output is an error message.
    #[oai(default)]
    pub is_error: bool,
}

/// Results of client tool calls; some of a turn's calls may be answered now and the rest later.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields, example)]
pub struct ToolResultsCreate {
    #[oai(validator(min_items = 1, max_items = 64))]
    pub results: Vec<ToolResultInput>,
}

impl Example for ToolResultsCreate {
    fn example() -> Self {
        example(json!({"results": [{"tool_call_id": "call_1", "output": "{\"status\":\"shipped\"}", "is_error": false}]}))
    }
}

/// The results were stored (`tool.completed`, `by: "client"`).
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct ToolResultsAccepted {
    /// The `tool_call_id`s stored, in the order posted.
    pub accepted: Vec<String>,
    /// Nothing is pending any more: the turn resumed (`turn.resumed`) in the same transaction.
    pub resumed: bool,
}

/// `approve` runs the held call with its stored arguments; `deny` gives the model `{"error":"denied","reason":…}`.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Deny,
}

/// A decision on a pending approval.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ApprovalDecisionCreate {
    pub decision: ApprovalDecision,
    /// Why; given to the model with a denial.
    #[oai(validator(max_length = 2000))]
    pub reason: Option<FreeText>,
    /// The `arguments_sha256` of the call being decided (`tool.approval_requested`):
    /// the decision holds for exactly those arguments (409 `arguments_changed` otherwise).
    #[oai(validator(pattern = "^[0-9a-fA-F]{64}$"))]
    pub arguments_sha256: String,
}

impl Example for ApprovalDecisionCreate {
    fn example() -> Self {
        example(json!({"decision": "approve", "reason": "refund under the limit",
                       "arguments_sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}))
    }
}

/// A decision was recorded (`tool.approval_resolved`).
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct ApprovalResolved {
    /// `apr_…`
    pub approval_id: String,
    pub tool_call_id: String,
    pub decision: ApprovalDecision,
    /// Nothing is pending any more: the turn resumed (`turn.resumed`) in the same transaction.
    pub resumed: bool,
}

/// `tool_call`: a client tool's result is awaited; `approval`: a person's decision.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum PendingKind {
    ToolCall,
    Approval,
}

/// One thing the session waits for.
#[derive(Debug, Object)]
pub struct PendingItem {
    #[oai(rename = "type")]
    pub kind: PendingKind,
    /// `apr_…` for an approval; `null` for a tool call.
    pub approval_id: Nullable<String>,
    pub tool_call_id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments the model sent (a JSON value; a string when they are not JSON).
    pub arguments: Value,
    /// SHA-256 (hex) of the canonical JSON (sorted keys) of `arguments`.
    pub arguments_sha256: String,
    /// `trn_…` of the waiting turn.
    pub turn_id: String,
    /// Past this, the call resolves as an error (`timeout`, or `denied` for an approval).
    pub deadline_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<turns::Pending> for PendingItem {
    fn from(p: turns::Pending) -> Self {
        let approval = p.kind == "approval";
        PendingItem {
            kind: if approval { PendingKind::Approval } else { PendingKind::ToolCall },
            approval_id: approval.then(|| p.id.wire()).into(),
            arguments: tools::arguments_json(&p.arguments),
            tool_call_id: p.tool_call_id,
            name: p.name,
            arguments_sha256: p.arguments_sha256,
            turn_id: p.turn_id.wire(),
            deadline_at: p.deadline_at,
            created_at: p.created_at,
        }
    }
}

/// Everything the session waits for, oldest first: a client that reconnects needs nothing else.
#[derive(Debug, Object)]
pub struct PendingList {
    pub data: Vec<PendingItem>,
}
