//! The wire format: poem-openapi objects and their conversions from core types.
//! Ids gain their prefixes here and nowhere else.

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use turnstone_core::ids::{self, Kind};
use turnstone_core::{agents, capabilities, events, providers, sessions, turns};
use uuid::Uuid;

use crate::error::ApiError;
pub use crate::text::Text;

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

// ---------------------------------------------------------------- providers

/// `Debug` is written by hand: `api_key` must never be printed.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ProviderCreate {
    /// Unique per org.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Text,
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub base_url: Text,
    /// Stored encrypted; never returned.
    #[oai(validator(max_length = 4096))]
    pub api_key: Option<Text>,
}

/// Changes to a provider; absent fields are unchanged. Changing `base_url` of a
/// provider that holds a key needs `api_key` too (a new key, or `null` to drop it).
/// `Debug` is written by hand: `api_key` must never be printed.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ProviderUpdate {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Text>,
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub base_url: Option<Text>,
    /// A new key (stored encrypted), or `null` to remove the stored one.
    #[oai(validator(max_length = 4096))]
    pub api_key: poem_openapi::types::MaybeUndefined<Text>,
}

impl std::fmt::Debug for ProviderUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderUpdate").field("name", &self.name).field("base_url", &self.base_url).finish_non_exhaustive()
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
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ModelCreate {
    /// `prv_…`
    pub provider_id: Text,
    /// The upstream model name sent to the provider, e.g. `gpt-4o-mini`.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Text,
    /// Make this the org's default model.
    #[oai(default)]
    pub is_default: bool,
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
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- agents

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct AgentCreate {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Text,
    #[oai(default, validator(max_length = 100000))]
    pub system_prompt: Text,
    /// `mdl_…`; when absent the org default model is used.
    pub model_id: Option<Text>,
    /// Names from `GET /v1/capabilities`.
    #[oai(default, validator(max_items = 32, max_length = 64))]
    pub capabilities: Vec<Text>,
    /// At most 32 tags of 1-64 characters `[A-Za-z0-9_.:-]`.
    #[oai(default, validator(max_items = 32, max_length = 64))]
    pub tags: Vec<Text>,
    /// Cap on LLM calls per turn (1-100, default 10).
    pub max_iterations: Option<i32>,
    /// Wall-clock cap on one turn in seconds (1-86400, default 600).
    pub max_turn_secs: Option<i32>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct AgentUpdate {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Text>,
    #[oai(validator(max_length = 100000))]
    pub system_prompt: Option<Text>,
    /// `mdl_…`; an empty string clears the agent's model.
    pub model_id: Option<Text>,
    #[oai(validator(max_items = 32, max_length = 64))]
    pub capabilities: Option<Vec<Text>>,
    #[oai(validator(max_items = 32, max_length = 64))]
    pub tags: Option<Vec<Text>>,
    pub max_iterations: Option<i32>,
    pub max_turn_secs: Option<i32>,
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// `agt_…`
    pub id: String,
    pub name: String,
    pub system_prompt: String,
    pub model_id: Option<String>,
    pub capabilities: Vec<String>,
    pub tags: Vec<String>,
    pub max_iterations: i32,
    pub max_turn_secs: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the agent was archived (DELETE).
    pub archived_at: Option<DateTime<Utc>>,
}

impl From<agents::Agent> for Agent {
    fn from(a: agents::Agent) -> Self {
        Agent {
            id: ids::format(Kind::Agent, a.id),
            name: a.name,
            system_prompt: a.system_prompt,
            model_id: a.model_id.map(|m| ids::format(Kind::Model, m)),
            capabilities: a.capabilities,
            tags: a.tags,
            max_iterations: a.max_iterations,
            max_turn_secs: a.max_turn_secs,
            created_at: a.created_at,
            updated_at: a.updated_at,
            archived_at: a.archived_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AgentList {
    pub data: Vec<Agent>,
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- sessions

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SessionCreate {
    /// `agt_…`
    pub agent_id: Text,
    /// `mdl_…`, overrides the agent's model for this session.
    pub model_id: Option<Text>,
    #[oai(validator(max_length = 500))]
    pub title: Option<Text>,
    #[oai(default, validator(max_items = 32, max_length = 64))]
    pub tags: Vec<Text>,
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
    pub agent_id: String,
    pub model_id: Option<String>,
    pub title: Option<String>,
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
            model_id: s.model_id.map(|m| ids::format(Kind::Model, m)),
            title: s.title,
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
    pub next_cursor: Option<String>,
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
    pub text: Text,
}

/// Per-message controls.
#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct MessageControls {
    /// `mdl_…`, overrides session and agent for this turn.
    pub model_id: Option<Text>,
}

#[derive(Debug, Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct MessageCreate {
    #[oai(validator(min_items = 1, max_items = 32))]
    pub content: Vec<ContentPart>,
    pub controls: Option<MessageControls>,
}

impl MessageCreate {
    pub fn core_content(&self) -> Vec<turns::ContentPart> {
        self.content.iter().map(|p| turns::ContentPart::Text { text: p.text.0.clone() }).collect()
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
    pub content: Value,
    /// Tool calls the assistant made (assistant messages only).
    pub tool_calls: Option<Value>,
    pub turn_id: Option<String>,
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
            tool_calls: msg.get("tool_calls").cloned().filter(|t| t.as_array().is_some_and(|a| !a.is_empty())),
            turn_id: e.turn_id.map(|t| ids::format(Kind::Turn, t)),
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
    /// Pass as `after_sequence` for the next page; absent on the last page.
    pub next_after_sequence: Option<i64>,
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
    pub turn_id: Option<String>,
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
            turn_id: e.turn_id.map(|t| ids::format(Kind::Turn, t)),
            data: e.data,
        }
    }
}

#[derive(Debug, Object)]
pub struct EventList {
    pub data: Vec<Event>,
    pub next_after_sequence: Option<i64>,
}

/// One SSE frame: `event:` is `frame`, `id:` is `id` (stored events only), `data:` is `data`.
/// Frames: `connected`, every stored event type (data = the Event object),
/// `output.message.delta` (live only, no id), `disconnecting` (data `{"retry_ms":…}`).
#[derive(Debug, Object, Clone)]
pub struct StreamFrame {
    pub frame: String,
    pub id: Option<String>,
    pub data: Value,
    /// `data` already serialised, shared by every stream of a session (the
    /// fan-out renders a stored event once, not once per client).
    #[oai(skip)]
    pub text: Option<std::sync::Arc<str>>,
    /// The whole SSE frame (`id:`/`event:`/`data:` lines), rendered once for
    /// the streams the API's own listener writes (`crate::listener`).
    #[oai(skip)]
    pub wire: Option<bytes::Bytes>,
}

impl StreamFrame {
    /// A frame built for one stream.
    pub fn new(frame: impl Into<String>, id: Option<String>, data: Value) -> Self {
        StreamFrame { frame: frame.into(), id, data, text: None, wire: None }
    }

    /// A frame rendered once and shared: `data` is kept only as text and as the wire form.
    pub fn shared(frame: impl Into<String>, id: Option<String>, data: &Value) -> Self {
        let (frame, text): (String, String) = (frame.into(), data.to_string());
        let wire = crate::sse::wire_bytes(&frame, id.as_deref(), &text);
        StreamFrame { frame, id, data: Value::Null, text: Some(text.into()), wire: Some(wire) }
    }
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

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct OrgCreate {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Text,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct OrgUpdate {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Text>,
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
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object, Default)]
#[oai(deny_unknown_fields)]
pub struct ApiKeyCreate {
    #[oai(default, validator(max_length = 200))]
    pub name: Text,
    /// The key stops working at this time.
    pub expires_at: Option<DateTime<Utc>>,
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
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<turnstone_core::orgs::ApiKey> for ApiKey {
    fn from(k: turnstone_core::orgs::ApiKey) -> Self {
        ApiKey {
            id: ids::format(Kind::ApiKey, k.id),
            name: k.name,
            display_prefix: k.display_prefix,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A new key: `key` is shown this once and stored only as a hash.
/// `Debug` is written by hand: `key` must never be printed.
#[derive(Object, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyCreated {
    /// `key_…`
    pub id: String,
    /// The secret, `ts_live_…`. Store it now: it cannot be shown again. Absent when an
    /// `Idempotency-Key` retry replays the creation (the secret is never stored, not even for replays).
    #[serde(skip_serializing, default)]
    pub key: Option<String>,
    pub name: String,
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
    pub next_cursor: Option<String>,
}

impl std::fmt::Debug for ProviderCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCreate")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}
