//! Sessions (`/v1/sessions`), their messages, event log and SSE stream.

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::events::{self, EventFilter, types};
use turnstone_core::ids::{ModelId, OrgId, SessionId, TypedId};
use turnstone_core::sessions::{self, SessionInput};
use turnstone_core::{conversation, limits, turns};

use super::{Tag, page_limit};
use crate::AppState;
use crate::auth::{ApiKey, StreamAuth};
use crate::error::ApiError;
use crate::idempotency::create_once;
use crate::wire::rules::{self, AtMost, Id, Ruled};
use crate::wire::{
    AfterSequence, CancelAccepted, CancelState, Event, EventList, EventType, EventsLimit, IdempotencyKey, Message,
    MessageAccepted, MessageCreate, MessageList, MessageOrder, PageLimit, Session, SessionCreate, SessionList, TurnStatus,
};

pub struct SessionsApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum SessionCreated {
    #[oai(status = 201)]
    Created(Json<Session>),
}

#[derive(ApiResponse)]
enum MessagePosted {
    /// The message and its turn are committed; the turn runs asynchronously.
    #[oai(status = 202)]
    Accepted(Json<MessageAccepted>),
}

#[derive(ApiResponse)]
enum CancelResponse {
    /// The turn had not started and is now cancelled.
    #[oai(status = 200)]
    Cancelled(Json<CancelAccepted>),
    /// The running turn's worker was told to stop: `turn.cancelled` follows at its next step,
    /// unless the model's final answer was already in, when `turn.completed` follows instead.
    #[oai(status = 202)]
    Cancelling(Json<CancelAccepted>),
}

#[derive(ApiResponse)]
enum SseResponse {
    /// A `text/event-stream`; see the StreamFrame schema for the frames.
    #[oai(status = 200)]
    Stream(crate::sse::FrameStream),
}

/// Splits `types` values, accepting both repeated parameters and commas.
fn parse_types(raw: Vec<EventType>) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for t in raw.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty()) {
        if !types::PERSISTED.contains(&t) {
            return Err(ApiError::bad_request("unknown_event_type", format!("unknown event type {t:?}")));
        }
        if out.len() >= 32 {
            return Err(ApiError::bad_request("too_many_event_types", "at most 32 event types"));
        }
        out.push(t.to_owned());
    }
    Ok(out)
}

fn parse_after_sequence(v: Option<impl Into<i64>>) -> Result<i64, ApiError> {
    match v.map(Into::into) {
        Some(n) if n < 0 => Err(ApiError::bad_request("invalid_after_sequence", "after_sequence must be >= 0")),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Sessions")]
impl SessionsApi {
    /// Start a session with an agent.
    #[oai(path = "/sessions", method = "post", operation_id = "createSession")]
    async fn create(
        &self,
        auth: ApiKey,
        body: Json<SessionCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<SessionCreated, ApiError> {
        let org = auth.0.org_id;
        let request = format!("createSession:{}", body.0.to_json_string());
        let b = body.0;
        let input = SessionInput {
            agent_id: b.agent_id.id()?,
            model_id: Id::opt(&b.model_id)?,
            title: b.title.map(Into::into),
            tags: crate::text::strings(b.tags.0),
            client_tools: crate::wire::ClientTool::cores(&b.client_tools),
        };
        let session = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move { Ok(Session::from(sessions::create_session(c, org, input).await?)) })
        })
        .await?;
        Ok(SessionCreated::Created(Json(session)))
    }

    /// List sessions, newest first.
    #[oai(path = "/sessions", method = "get", operation_id = "listSessions")]
    async fn list(
        &self,
        auth: ApiKey,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::Session>>>,
        /// Only sessions of this agent.
        agent_id: Query<Option<Id<rules::Agent>>>,
    ) -> Result<Json<SessionList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let agent = Id::opt(&agent_id.0)?;
        let page =
            sessions::list_sessions(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, after, limit, agent).await?;
        Ok(Json(SessionList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Get one session, with its status.
    #[oai(path = "/sessions/:session_id", method = "get", operation_id = "getSession")]
    async fn get(&self, auth: ApiKey, session_id: Path<Id<rules::Session>>) -> Result<Json<Session>, ApiError> {
        let id = session_id.0.id()?;
        Ok(Json(sessions::get_session(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, id).await?.into()))
    }

    /// Post a user message: stores it and enqueues its turn in one transaction.
    /// While a turn runs, later messages queue behind it and run in order.
    #[oai(path = "/sessions/:session_id/messages", method = "post", operation_id = "postMessage")]
    async fn post_message(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        body: Json<MessageCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<MessagePosted, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let model_id = body.0.controls.as_ref().map(|c| Id::opt(&c.model_id)).transpose()?.flatten();
        let content = body.0.core_content();
        let accepted = match idempotency_key.0.as_deref() {
            // A transaction of its own in one round trip (`turns::post_message`): no `BEGIN`, no `COMMIT`.
            None => {
                let mut conn = turnstone_core::db::autocommit(&self.state.pool).await?;
                let accepted = post_turn(&mut conn, org, session, content, model_id).await?;
                conn.commit().await?;
                accepted
            }
            Some(key) => {
                let request = format!("postMessage:{}:{}", &*session_id.0, body.0.to_json_string());
                create_once(&self.state, org, Some(key), &request, move |c| {
                    Box::pin(post_turn(c, org, session, content, model_id))
                })
                .await?
            }
        };
        Ok(MessagePosted::Accepted(Json(accepted)))
    }

    /// Cancel the session's running (or queued) turn. The in-flight model call is
    /// aborted and `turn.cancelled` appended; queued messages behind it still run,
    /// unless `all=true` cancels them too. An idle session is a 409 (`session_idle`).
    #[oai(path = "/sessions/:session_id/cancel", method = "post", operation_id = "cancelTurn")]
    async fn cancel(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// Also cancel messages queued behind the running turn.
        #[oai(default)]
        all: Query<bool>,
    ) -> Result<CancelResponse, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let mut tx = self.state.org_tx(org).await?;
        let c = turns::cancel(&mut tx, org, session, all.0).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        let body = CancelAccepted {
            turn_id: c.turn_id.wire(),
            state: if c.state == "cancelled" { CancelState::Cancelled } else { CancelState::Cancelling },
            pending_cancelled: c.pending_cancelled.into_iter().map(TypedId::wire).collect(),
        };
        Ok(match body.state {
            CancelState::Cancelled => CancelResponse::Cancelled(Json(body)),
            CancelState::Cancelling => CancelResponse::Cancelling(Json(body)),
        })
    }

    /// List the session's messages (user inputs and assistant outputs).
    ///
    /// By default in conversation order: each turn's input, then that turn's
    /// outputs, as the model saw them; a message posted while a turn ran comes
    /// after that turn's answer. `order=arrival` lists them in sequence order
    /// instead, which only ever grows at its end (for polling).
    #[oai(path = "/sessions/:session_id/messages", method = "get", operation_id = "listMessages")]
    async fn list_messages(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// Only messages after the one with this sequence number, in the chosen order.
        after_sequence: Query<Option<AfterSequence>>,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// `conversation` (default) or `arrival`.
        order: Query<Option<MessageOrder>>,
    ) -> Result<Json<MessageList>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = parse_after_sequence(after_sequence.0)?;
        let order = match order.0.unwrap_or_default() {
            MessageOrder::Conversation => conversation::Order::Conversation,
            MessageOrder::Arrival => conversation::Order::Arrival,
        };
        let mut tx = self.state.org_tx(org).await?;
        sessions::get_session(&mut tx, org, session).await?;
        let rows = conversation::messages(&mut tx, org, session, after, limit, order).await?;
        let next = (rows.len() == limit as usize).then(|| rows.last().map(|e| e.sequence)).flatten();
        Ok(Json(MessageList { data: rows.into_iter().map(Message::from).collect(), next_after_sequence: next.into() }))
    }

    /// List the session's events in sequence order.
    #[oai(path = "/sessions/:session_id/events", method = "get", operation_id = "listEvents")]
    async fn list_events(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// Only these types: repeat the parameter (or separate with commas); at most 32.
        types: Query<Option<Ruled<Vec<EventType>, AtMost<32>>>>,
        /// Only events after this sequence number.
        after_sequence: Query<Option<AfterSequence>>,
        /// Page size (default 50).
        limit: Query<Option<EventsLimit>>,
    ) -> Result<Json<EventList>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let filter = EventFilter {
            after_sequence: parse_after_sequence(after_sequence.0)?,
            types: parse_types(types.0.map(|t| t.0).unwrap_or_default())?,
            limit: page_limit(limit.0, limits::MAX_EVENTS_LIMIT)?,
        };
        let mut tx = self.state.org_tx(org).await?;
        sessions::get_session(&mut tx, org, session).await?;
        let rows = events::list(&mut tx, org, session, &filter).await?;
        let next = (rows.len() == filter.limit as usize).then(|| rows.last().map(|e| e.sequence)).flatten();
        Ok(Json(EventList { data: rows.into_iter().map(Event::from).collect(), next_after_sequence: next.into() }))
    }

    /// Stream the session's events as Server-Sent Events.
    ///
    /// First frame `connected`; then every stored event after the cursor
    /// (`id:` = event id, `event:` = type, `data:` = the Event), live
    /// `output.message.delta` frames (no id, never stored), comment heartbeats,
    /// and `disconnecting` with `retry_ms` before the server cycles the
    /// connection. Resume with `Last-Event-ID` (wins) or `since_id`. Browsers'
    /// `EventSource` may pass the key as `?access_token=` instead of the header.
    #[oai(path = "/sessions/:session_id/sse", method = "get", operation_id = "streamEvents")]
    async fn sse(
        &self,
        auth: StreamAuth,
        session_id: Path<String>,
        /// Resume after this event id (`evt_…`).
        since_id: Query<Option<String>>,
        /// Sent by browsers on reconnect; takes precedence over `since_id`.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
    ) -> Result<SseResponse, ApiError> {
        let principal = auth.principal();
        let (session, after, permit) =
            crate::sse::prepare(&self.state, principal, &session_id.0, last_event_id.0, since_id.0).await?;
        Ok(SseResponse::Stream(crate::sse::open(self.state.clone(), principal, session, after, permit)))
    }
}

/// Posts a message (`turns::post_message`) on `c` and answers as the API does.
async fn post_turn(
    c: &mut sqlx::PgConnection,
    org: OrgId,
    session: SessionId,
    content: Vec<turns::ContentPart>,
    model_id: Option<ModelId>,
) -> Result<MessageAccepted, ApiError> {
    let posted = turns::post_message(c, org, session, content, model_id).await?;
    Ok(MessageAccepted {
        message_id: posted.message.id.wire(),
        turn_id: posted.turn_id.wire(),
        sequence: posted.message.sequence,
        turn_status: if posted.turn_status == "queued" { TurnStatus::Queued } else { TurnStatus::Pending },
    })
}
