//! Sessions, their messages, event log, stream frames and cancellation.

use super::*;
use turnstone_core::ids::TypedId;
use turnstone_core::sessions;

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
    /// Client tools added to the agent's for this session (names may not repeat the agent's).
    #[oai(default, validator(max_items = 64))]
    pub client_tools: Vec<ClientTool>,
}

impl Example for SessionCreate {
    fn example() -> Self {
        // The agent id is a placeholder: use the `id` that `POST /v1/agents` answered.
        example(json!({"agent_id": "agt_0190b5e3a1c47d2e8f0a1b2c3d4e5f60", "title": "First chat", "tags": ["team:support"]}))
    }
}

/// `idle`: no turn; `queued`: a turn waits for a worker; `running`: a worker runs a turn;
/// `cancelling`: cancellation was requested and the worker is stopping the turn;
/// `waiting`: the turn waits for client tool results or approvals (`GET …/pending`), holding no worker.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Idle,
    Queued,
    Running,
    Cancelling,
    Waiting,
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
    /// Client tools the session added to its agent's.
    pub client_tools: Vec<ClientTool>,
    /// Sequence number of the newest event.
    pub last_sequence: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<sessions::Session> for Session {
    fn from(s: sessions::Session) -> Self {
        Session {
            id: s.id.wire(),
            agent_id: s.agent_id.wire(),
            model_id: s.model_id.map(TypedId::wire).into(),
            title: s.title.into(),
            tags: s.tags,
            status: match s.status.as_str() {
                "queued" => SessionStatus::Queued,
                "running" => SessionStatus::Running,
                "cancelling" => SessionStatus::Cancelling,
                "waiting" => SessionStatus::Waiting,
                _ => SessionStatus::Idle,
            },
            client_tools: s.client_tools.0.into_iter().map(Into::into).collect(),
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

// Messages.

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

/// A tool call an assistant message made.
#[derive(Debug, Object, serde::Deserialize)]
pub struct ToolCall {
    /// The model's id for the call; the `tool.completed` event of its result has it as `tool_call_id`.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them: JSON text, not parsed.
    pub arguments: String,
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
    pub tool_calls: Nullable<Vec<ToolCall>>,
    /// `trn_…` of the turn the message belongs to, or `null`.
    pub turn_id: Nullable<String>,
    pub sequence: i64,
    pub created_at: DateTime<Utc>,
}

impl From<events::Event> for Message {
    fn from(e: events::Event) -> Self {
        let msg = e.data.get("message").cloned().unwrap_or(Value::Null);
        Message {
            id: e.id.wire(),
            role: msg.get("role").and_then(Value::as_str).unwrap_or("user").to_owned(),
            content: msg.get("content").cloned().unwrap_or(Value::Array(vec![])),
            tool_calls: msg
                .get("tool_calls")
                .and_then(|t| serde_json::from_value::<Vec<ToolCall>>(t.clone()).ok())
                .filter(|calls| !calls.is_empty())
                .into(),
            turn_id: e.turn_id.map(TypedId::wire).into(),
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

// Events.

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
            id: e.id.wire(),
            kind: e.kind,
            ts: e.ts,
            session_id: e.session_id.wire(),
            sequence: e.sequence,
            turn_id: e.turn_id.map(TypedId::wire).into(),
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

// Cancellation.

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
