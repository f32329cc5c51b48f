//! Agents: prompt, default model, capabilities, tags.

use super::*;
use turnstone_core::agents;
use turnstone_core::ids::TypedId;

/// Cap on LLM calls per turn.
pub type MaxIterations = Bounded<i32, 1, { limits::MAX_ITERATIONS as i64 }>;
/// Wall-clock cap on one turn, in seconds.
pub type MaxTurnSecs = Bounded<i32, 1, { limits::MAX_TURN_SECS as i64 }>;

/// A new agent.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct AgentCreate {
    /// Not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
    #[oai(default, validator(max_length = 100000))]
    pub system_prompt: FreeText,
    /// `mdl_…`; when absent the org default model is used.
    pub model_id: Option<Id<rules::Model>>,
    /// Names from `GET /v1/capabilities`, each at most once.
    #[oai(default, validator(max_items = 32, max_length = 64))]
    pub capabilities: CapabilityNames,
    /// Distinct tags.
    #[oai(default, validator(max_items = 32, max_length = 64))]
    pub tags: Tags,
    /// Cap on LLM calls per turn (default 10).
    pub max_iterations: Option<MaxIterations>,
    /// Wall-clock cap on one turn in seconds (default 600); time spent waiting for people does not count.
    pub max_turn_secs: Option<MaxTurnSecs>,
    /// Tools the client runs; the turn waits for their results (`POST …/tool-results`).
    #[oai(default, validator(max_items = 64))]
    pub client_tools: Vec<ClientTool>,
    /// Tool name or glob → `auto` (default), `ask` (wait for an approval) or `deny`. At most 64.
    #[oai(default, validator(max_properties = 64))]
    pub tool_policies: ToolPolicies,
    /// Seconds an approval may wait (default 900, at most 7 days); past that the call is denied.
    pub approval_timeout_secs: Option<WaitSecs>,
}

impl Example for AgentCreate {
    fn example() -> Self {
        example(json!({
            "name": "helper",
            "system_prompt": "You are a helpful assistant.",
            "capabilities": ["math", "current_time"],
            "tags": ["team:support"],
            "client_tools": [{"name": "lookup_order", "description": "Looks an order up by id.",
                              "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
                              "timeout_secs": 300}],
            "tool_policies": {"refund_*": "ask"},
        }))
    }
}

/// Changes to an agent; absent fields are unchanged.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct AgentUpdate {
    /// Not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Name>,
    #[oai(validator(max_length = 100000))]
    pub system_prompt: Option<FreeText>,
    /// `mdl_…`; an empty string clears the agent's model.
    pub model_id: Option<IdOrEmpty<rules::Model>>,
    /// Names from `GET /v1/capabilities`, each at most once.
    #[oai(validator(max_items = 32, max_length = 64))]
    pub capabilities: Option<CapabilityNames>,
    /// Distinct tags.
    #[oai(validator(max_items = 32, max_length = 64))]
    pub tags: Option<Tags>,
    /// Cap on LLM calls per turn.
    pub max_iterations: Option<MaxIterations>,
    /// Wall-clock cap on one turn in seconds.
    pub max_turn_secs: Option<MaxTurnSecs>,
    /// Replaces the client tools.
    #[oai(validator(max_items = 64))]
    pub client_tools: Option<Vec<ClientTool>>,
    /// Replaces the tool policies.
    #[oai(validator(max_properties = 64))]
    pub tool_policies: Option<ToolPolicies>,
    /// Seconds an approval may wait.
    pub approval_timeout_secs: Option<WaitSecs>,
}

impl Example for AgentUpdate {
    fn example() -> Self {
        example(json!({"system_prompt": "You are a concise assistant.", "max_iterations": 5}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// `agt_…`
    pub id: String,
    pub name: String,
    pub system_prompt: String,
    /// `mdl_…`, or `null`: the org default model is used.
    pub model_id: Nullable<String>,
    pub capabilities: Vec<String>,
    pub tags: Vec<String>,
    pub max_iterations: i32,
    pub max_turn_secs: i32,
    pub client_tools: Vec<ClientTool>,
    pub tool_policies: ToolPolicies,
    pub approval_timeout_secs: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the agent was archived (DELETE); `null` while it is active.
    pub archived_at: Nullable<DateTime<Utc>>,
}

impl From<agents::Agent> for Agent {
    fn from(a: agents::Agent) -> Self {
        Agent {
            id: a.id.wire(),
            name: a.name,
            system_prompt: a.system_prompt,
            model_id: a.model_id.map(TypedId::wire).into(),
            capabilities: a.capabilities,
            tags: a.tags,
            max_iterations: a.max_iterations,
            max_turn_secs: a.max_turn_secs,
            client_tools: a.client_tools.0.into_iter().map(Into::into).collect(),
            tool_policies: wire_policies(a.tool_policies.0),
            approval_timeout_secs: a.approval_timeout_secs,
            created_at: a.created_at,
            updated_at: a.updated_at,
            archived_at: a.archived_at.into(),
        }
    }
}

#[derive(Debug, Object)]
pub struct AgentList {
    pub data: Vec<Agent>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}
