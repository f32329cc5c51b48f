//! The wire format: poem-openapi objects and their conversions from core types.
//! Ids gain their prefixes here and nowhere else.
//!
//! Rules of the contract (docs/decisions/0016): a response property is always present,
//! and `null` when it has no value ([`Nullable`]); a request property may be left out
//! (`Option`); the schema states each input rule core enforces ([`rules`]); every request
//! object carries an example that works as sent. Doc comments here become the public
//! descriptions: internal notes go in `//` comments.

mod nullable;
pub mod rules;

use chrono::{DateTime, Utc};
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{Enum, Object};
use serde_json::{Value, json};
use turnstone_core::ids::{self, Kind};
use turnstone_core::{agents, capabilities, events, limits, providers, sessions, turns};
use uuid::Uuid;

use crate::error::ApiError;
pub use crate::text::Text;
pub use nullable::Nullable;
pub use rules::{
    AfterSequence, Bounded, CapabilityNames, EventType, EventsLimit, FreeText, Id, IdOrEmpty, IdempotencyKey, Name, PageLimit,
    ProviderKey, Tag, Tags,
};

/// Parses a request object from its JSON example: the examples are written as JSON, as a
/// client sends them, and a test proves each one is accepted as sent.
fn example<T: poem_openapi::types::ParseFromJSON>(value: Value) -> T {
    T::parse_from_json(Some(value)).unwrap_or_else(|e| panic!("a request example does not parse: {}", e.into_message()))
}

/// Parses a prefixed id from a path or body, mapping a bad one to 400 `invalid_id`.
pub fn parse_id(kind: Kind, s: &str) -> Result<Uuid, ApiError> {
    ids::parse(kind, s).map_err(ApiError::from)
}

pub fn parse_opt_id(kind: Kind, s: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    s.map(|s| parse_id(kind, s)).transpose()
}

/// A process is alive.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The database is reachable and migrations are applied.
#[derive(Debug, Object)]
pub struct Ready {
    /// `ready`.
    pub status: String,
}

/// What a problem `code` means.
#[derive(Debug, Object)]
pub struct ProblemTypeDoc {
    /// The stable code, as in a problem's `code`.
    pub code: String,
    /// The HTTP status it answers with.
    pub status: u16,
    pub meaning: String,
}

impl From<&crate::error::ProblemType> for ProblemTypeDoc {
    fn from(p: &crate::error::ProblemType) -> Self {
        ProblemTypeDoc { code: p.code.into(), status: p.status, meaning: p.meaning.into() }
    }
}

#[derive(Debug, Object)]
pub struct ProblemTypeList {
    pub data: Vec<ProblemTypeDoc>,
}

// ---------------------------------------------------------------- providers

/// A new provider: an OpenAI-compatible endpoint and, optionally, its API key.
// `api_key` is a `ProviderKey`, whose `Debug` prints `[redacted]`: the key is never logged.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ProviderCreate {
    /// Unique per org; not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`: http(s), a host, no
    /// credentials, query or fragment.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub base_url: Text,
    /// Sent to the provider as `Authorization: Bearer <api_key>`, so visible ASCII only.
    /// Stored encrypted; never returned.
    #[oai(validator(max_length = 4096))]
    pub api_key: Option<ProviderKey>,
}

impl Example for ProviderCreate {
    fn example() -> Self {
        example(json!({"name": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-your-provider-key"}))
    }
}

/// Changes to a provider; absent fields are unchanged. Changing `base_url` of a
/// provider that holds a key needs `api_key` too (a new key, or `null` to drop it).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ProviderUpdate {
    /// Unique per org; not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Name>,
    /// OpenAI-compatible base URL: http(s), a host, no credentials, query or fragment.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub base_url: Option<Text>,
    /// A new key (visible ASCII, stored encrypted), or `null` to remove the stored one.
    #[oai(nullable, validator(max_length = 4096))]
    pub api_key: MaybeUndefined<ProviderKey>,
}

impl Example for ProviderUpdate {
    fn example() -> Self {
        example(json!({"name": "openai-eu"}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Provider {
    /// `prv_…`
    pub id: String,
    pub name: String,
    pub base_url: String,
    /// Whether an API key is stored (the key itself is never returned).
    pub has_api_key: bool,
    pub created_at: DateTime<Utc>,
}

impl From<providers::Provider> for Provider {
    fn from(p: providers::Provider) -> Self {
        Provider {
            id: ids::format(Kind::Provider, p.id),
            name: p.name,
            base_url: p.base_url,
            has_api_key: p.has_api_key,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ProviderList {
    pub data: Vec<Provider>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A new model of a provider.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ModelCreate {
    /// `prv_…` of one of the org's providers.
    pub provider_id: Id<rules::Provider>,
    /// The upstream model name sent to the provider, e.g. `gpt-4o-mini`.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
    /// Make this the org's default model.
    #[oai(default)]
    pub is_default: bool,
}

impl Example for ModelCreate {
    fn example() -> Self {
        // The provider id is a placeholder: use one from `GET /v1/providers`.
        example(json!({"provider_id": "prv_0190b5e3a1c47d2e8f0a1b2c3d4e5f60", "name": "gpt-4o-mini", "is_default": false}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Model {
    /// `mdl_…`
    pub id: String,
    /// `prv_…`
    pub provider_id: String,
    pub name: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

impl From<providers::Model> for Model {
    fn from(m: providers::Model) -> Self {
        Model {
            id: ids::format(Kind::Model, m.id),
            provider_id: ids::format(Kind::Provider, m.provider_id),
            name: m.name,
            is_default: m.is_default,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ModelList {
    pub data: Vec<Model>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

// ---------------------------------------------------------------- agents

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
    /// Wall-clock cap on one turn in seconds (default 600).
    pub max_turn_secs: Option<MaxTurnSecs>,
}

impl Example for AgentCreate {
    fn example() -> Self {
        example(json!({
            "name": "helper",
            "system_prompt": "You are a helpful assistant.",
            "capabilities": ["math", "current_time"],
            "tags": ["team:support"],
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the agent was archived (DELETE); `null` while it is active.
    pub archived_at: Nullable<DateTime<Utc>>,
}

impl From<agents::Agent> for Agent {
    fn from(a: agents::Agent) -> Self {
        Agent {
            id: ids::format(Kind::Agent, a.id),
            name: a.name,
            system_prompt: a.system_prompt,
            model_id: a.model_id.map(|m| ids::format(Kind::Model, m)).into(),
            capabilities: a.capabilities,
            tags: a.tags,
            max_iterations: a.max_iterations,
            max_turn_secs: a.max_turn_secs,
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

// ---------------------------------------------------------------- sessions

/// A new session with an agent.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct SessionCreate {
    /// `agt_…` of an active agent.
    pub agent_id: Id<rules::Agent>,
    /// `mdl_…`, overrides the agent's model for this session.
    pub model_id: Option<Id<rules::Model>>,
    #[oai(validator(max_length = 500))]
    pub title: Option<FreeText>,
    /// Distinct tags.
    #[oai(default, validator(max_items = 32, max_length = 64))]
    pub tags: Tags,
}

impl Example for SessionCreate {
    fn example() -> Self {
        // The agent id is a placeholder: use the `id` that `POST /v1/agents` answered.
        example(json!({"agent_id": "agt_0190b5e3a1c47d2e8f0a1b2c3d4e5f60", "title": "First chat", "tags": ["team:support"]}))
    }
}

/// `idle`: no turn; `queued`: a turn waits for a worker; `running`: a worker runs a turn;
/// `cancelling`: cancellation was requested and the worker is stopping the turn.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Idle,
    Queued,
    Running,
    Cancelling,
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// `ses_…`
    pub id: String,
    /// `agt_…`
    pub agent_id: String,
    /// `mdl_…` overriding the agent's model, or `null`.
    pub model_id: Nullable<String>,
    /// `null` when the session has no title.
    pub title: Nullable<String>,
    pub tags: Vec<String>,
    pub status: SessionStatus,
    /// Sequence number of the newest event.
    pub last_sequence: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<sessions::Session> for Session {
    fn from(s: sessions::Session) -> Self {
        Session {
            id: ids::format(Kind::Session, s.id),
            agent_id: ids::format(Kind::Agent, s.agent_id),
            model_id: s.model_id.map(|m| ids::format(Kind::Model, m)).into(),
            title: s.title.into(),
            tags: s.tags,
            status: match s.status.as_str() {
                "queued" => SessionStatus::Queued,
                "running" => SessionStatus::Running,
                "cancelling" => SessionStatus::Cancelling,
                _ => SessionStatus::Idle,
            },
            last_sequence: s.last_sequence,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct SessionList {
    pub data: Vec<Session>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

// ---------------------------------------------------------------- messages

#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum ContentType {
    Text,
}

/// One part of a message. Only `text` parts exist today.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct ContentPart {
    #[oai(rename = "type")]
    pub kind: ContentType,
    #[oai(validator(min_length = 1, max_length = 100000))]
    pub text: FreeText,
}

/// Per-message controls.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct MessageControls {
    /// `mdl_…`, overrides session and agent for this turn.
    pub model_id: Option<Id<rules::Model>>,
}

/// A user message.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct MessageCreate {
    #[oai(validator(min_items = 1, max_items = 32))]
    pub content: Vec<ContentPart>,
    pub controls: Option<MessageControls>,
}

impl Example for MessageCreate {
    fn example() -> Self {
        example(json!({"content": [{"type": "text", "text": "What is 6*7?"}]}))
    }
}

impl MessageCreate {
    pub fn core_content(&self) -> Vec<turns::ContentPart> {
        self.content.iter().map(|p| turns::ContentPart::Text { text: p.text.to_string() }).collect()
    }
}

/// `queued`: enqueued for a worker now; `pending`: waits behind the running turn.
#[derive(Debug, Enum, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    Queued,
    Pending,
}

/// A message was durably stored and its turn enqueued.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct MessageAccepted {
    /// `evt_…` of the `input.message` event; also the message id.
    pub message_id: String,
    /// `trn_…`
    pub turn_id: String,
    pub sequence: i64,
    pub turn_status: TurnStatus,
}

/// A message: a projection of an `input.message` or `output.message.completed` event.
#[derive(Debug, Object)]
pub struct Message {
    /// `evt_…` of the event this message projects.
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The message's parts, e.g. `[{"type": "text", "text": "…"}]`.
    pub content: Value,
    /// Tool calls the assistant made; `null` when it made none (and for user messages).
    pub tool_calls: Nullable<Value>,
    /// `trn_…` of the turn the message belongs to, or `null`.
    pub turn_id: Nullable<String>,
    pub sequence: i64,
    pub created_at: DateTime<Utc>,
}

impl From<events::Event> for Message {
    fn from(e: events::Event) -> Self {
        let msg = e.data.get("message").cloned().unwrap_or(Value::Null);
        Message {
            id: ids::format(Kind::Event, e.id),
            role: msg.get("role").and_then(Value::as_str).unwrap_or("user").to_owned(),
            content: msg.get("content").cloned().unwrap_or(Value::Array(vec![])),
            tool_calls: msg.get("tool_calls").cloned().filter(|t| t.as_array().is_some_and(|a| !a.is_empty())).into(),
            turn_id: e.turn_id.map(|t| ids::format(Kind::Turn, t)).into(),
            sequence: e.sequence,
            created_at: e.ts,
        }
    }
}

/// The order of `GET …/messages`.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, Default)]
#[oai(rename_all = "snake_case")]
pub enum MessageOrder {
    /// Each turn's input, then that turn's outputs: the conversation the model saw.
    #[default]
    Conversation,
    /// The order the log received them (sequence order): a message queued while
    /// a turn ran comes before that turn's answer.
    Arrival,
}

#[derive(Debug, Object)]
pub struct MessageList {
    pub data: Vec<Message>,
    /// Pass as `after_sequence` for the next page; `null` on the last page.
    pub next_after_sequence: Nullable<i64>,
}

// ---------------------------------------------------------------- events

/// One event of a session's append-only log.
#[derive(Debug, Object, Clone)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// Dot-named type, e.g. `turn.completed`.
    #[oai(rename = "type")]
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub session_id: String,
    /// Per-session, starts at 1, gap-free, strictly increasing.
    pub sequence: i64,
    /// `trn_…` of the turn the event belongs to; `null` for session-level events.
    pub turn_id: Nullable<String>,
    /// The type's payload (an object; its members depend on `type`).
    pub data: Value,
}

impl From<events::Event> for Event {
    fn from(e: events::Event) -> Self {
        Event {
            id: ids::format(Kind::Event, e.id),
            kind: e.kind,
            ts: e.ts,
            session_id: ids::format(Kind::Session, e.session_id),
            sequence: e.sequence,
            turn_id: e.turn_id.map(|t| ids::format(Kind::Turn, t)).into(),
            data: e.data,
        }
    }
}

#[derive(Debug, Object)]
pub struct EventList {
    pub data: Vec<Event>,
    /// Pass as `after_sequence` for the next page; `null` on the last page.
    pub next_after_sequence: Nullable<i64>,
}

/// One SSE frame: `event:` is `frame`, `id:` is `id` (stored events only), `data:` is `data`.
/// Frames: `connected`, every stored event type (data = the Event object),
/// `output.message.delta` (live only, no id), `disconnecting` (data `{"retry_ms":…}`).
#[derive(Debug, Object)]
pub struct StreamFrame {
    pub frame: String,
    pub id: Option<String>,
    pub data: Value,
}

// ---------------------------------------------------------------- capabilities

#[derive(Debug, Object)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's arguments.
    pub parameters: Value,
}

#[derive(Debug, Object)]
pub struct Capability {
    pub name: String,
    pub description: String,
    pub tools: Vec<Tool>,
}

impl From<&capabilities::Capability> for Capability {
    fn from(c: &capabilities::Capability) -> Self {
        Capability {
            name: c.name.into(),
            description: c.description.into(),
            tools: c
                .tools
                .iter()
                .map(|t| Tool { name: t.name.into(), description: t.description.into(), parameters: (t.parameters)() })
                .collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct CapabilityList {
    pub data: Vec<Capability>,
}

/// `cancelled`: the turn had not started and is sealed; `cancelling`: its worker is stopping it.
#[derive(Debug, Enum, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    Cancelled,
    Cancelling,
}

/// What a cancel request did.
#[derive(Debug, Object)]
pub struct CancelAccepted {
    /// `trn_…` of the turn that was active.
    pub turn_id: String,
    pub state: CancelState,
    /// Pending turns cancelled as well (`all=true`).
    pub pending_cancelled: Vec<String>,
}

// ---------------------------------------------------------------- orgs and keys

/// A new organisation.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct OrgCreate {
    /// Not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
}

impl Example for OrgCreate {
    fn example() -> Self {
        example(json!({"name": "acme"}))
    }
}

/// Changes to an organisation; absent fields are unchanged.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct OrgUpdate {
    /// Not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Name>,
    /// A disabled org's keys stop working on the next request.
    pub disabled: Option<bool>,
    /// Quota: active (non-archived) agents.
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub max_agents: Option<i32>,
    /// Quota: sessions.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub max_sessions: Option<i32>,
    /// Quota: sessions with a turn queued or running at once.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000")))]
    pub max_concurrent_turns: Option<i32>,
    /// Requests per minute per API key; 0 = unlimited.
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub rate_limit_per_minute: Option<i32>,
}

impl Example for OrgUpdate {
    fn example() -> Self {
        example(json!({"max_concurrent_turns": 20, "rate_limit_per_minute": 600}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Org {
    /// `org_…`
    pub id: String,
    pub name: String,
    pub disabled: bool,
    pub max_agents: i32,
    pub max_sessions: i32,
    pub max_concurrent_turns: i32,
    pub rate_limit_per_minute: i32,
    pub created_at: DateTime<Utc>,
}

impl From<turnstone_core::orgs::Org> for Org {
    fn from(o: turnstone_core::orgs::Org) -> Self {
        Org {
            id: ids::format(Kind::Org, o.id),
            name: o.name,
            disabled: o.disabled,
            max_agents: o.max_agents,
            max_sessions: o.max_sessions,
            max_concurrent_turns: o.max_concurrent_turns,
            rate_limit_per_minute: o.rate_limit_per_minute,
            created_at: o.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct OrgList {
    pub data: Vec<Org>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A new API key.
#[derive(Debug, Object, Default)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ApiKeyCreate {
    /// A label for people; no NUL characters.
    #[oai(default, validator(max_length = 200))]
    pub name: FreeText,
    /// The key stops working at this time (in the future); absent: it never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Example for ApiKeyCreate {
    fn example() -> Self {
        example(json!({"name": "ci"}))
    }
}

/// An API key's metadata; the secret is only ever shown at creation.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it (`ts_live_AbCd`).
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key stops working; `null`: never.
    pub expires_at: Nullable<DateTime<Utc>>,
    /// When the key was revoked; `null` while it is not.
    pub revoked_at: Nullable<DateTime<Utc>>,
    /// Roughly when the key last authenticated a request; `null` if never.
    pub last_used_at: Nullable<DateTime<Utc>>,
}

impl From<turnstone_core::orgs::ApiKey> for ApiKey {
    fn from(k: turnstone_core::orgs::ApiKey) -> Self {
        ApiKey {
            id: ids::format(Kind::ApiKey, k.id),
            name: k.name,
            display_prefix: k.display_prefix,
            created_at: k.created_at,
            expires_at: k.expires_at.into(),
            revoked_at: k.revoked_at.into(),
            last_used_at: k.last_used_at.into(),
        }
    }
}

/// A new key: `key` is shown this once and stored only as a hash.
// `Debug` is written by hand below: `key` must never be printed. `key` is not serialised
// for the `Idempotency-Key` record, so a replay answers `null`.
#[derive(Object, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyCreated {
    /// `key_…`
    pub id: String,
    /// The secret, `ts_live_…`. Store it now: it cannot be shown again. `null` when an
    /// `Idempotency-Key` retry replays the creation (the secret is never stored, not even for replays).
    #[serde(skip_serializing, default)]
    pub key: Nullable<String>,
    pub name: String,
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key stops working; `null`: never.
    pub expires_at: Nullable<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}
