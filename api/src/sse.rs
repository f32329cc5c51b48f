//! The SSE stream of one client: replay the log after the client's cursor,
//! then forward what its session's reader broadcasts (see [`crate::fanout`]) —
//! stored events in sequence order, each once, and live deltas as they come.
//! A gap in the broadcast (the client joined late or lagged) is filled by
//! reading the log itself.
//!
//! The stream is the body of the `GET …/sse` response ([`FrameStream`]), which
//! hyper writes over HTTP/1.1 or HTTP/2 like any other body: frames in their
//! wire form as `Bytes`, a stored event's rendered once by its session's reader
//! and shared by every stream. It is polled by the connection's own task: no
//! task and no channel per client. Its idle state is the [`Pump`] plus a boxed
//! future only while it waits (docs/benchmarks.md, `sse_fanout`).

use std::collections::VecDeque;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use poem::{Body, IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use rand::Rng;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::time::Instant;
use turnstone_core::events::types;
use turnstone_core::ids::{EventId, SessionId, TypedId};
use turnstone_core::orgs::{self, Principal};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::fanout::{self, Signal, Subscription};
use crate::wire::{StreamFrame, parse_id};

/// A comment frame: keeps proxies and clients from timing an idle stream out.
const HEARTBEAT: Bytes = Bytes::from_static(b":\n\n");

/// Everything a stream request is checked for once its key is known: the
/// session exists in the caller's org, the resume id (`Last-Event-ID` wins over
/// `since_id`) is one of its events, and the process has a stream slot left.
/// Returns the session, the sequence to resume after and the slot.
pub async fn prepare(
    state: &AppState,
    principal: Principal,
    session_id: &str,
    last_event_id: Option<String>,
    since_id: Option<String>,
) -> Result<(SessionId, i64, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let org = principal.org_id;
    let session = parse_id::<SessionId>(session_id)?;
    let mut tx = state.org_tx(org).await?;
    turnstone_core::sessions::get_session(&mut tx, org, session).await?;
    let cursor_id = last_event_id.filter(|s| !s.is_empty()).or(since_id);
    let after = match cursor_id {
        None => 0,
        Some(id) => {
            let event = parse_id::<EventId>(&id)?;
            turnstone_core::events::sequence_of(&mut tx, org, session, event).await.map_err(|e| match e {
                turnstone_core::Error::NotFound(_) => {
                    ApiError::bad_request("unknown_event_id", "the resume event id is not an event of this session")
                }
                other => other.into(),
            })?
        }
    };
    drop(tx);
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::TooManyRequests(
            poem_openapi::payload::Json(Problem::new(
                poem::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                "this API process serves its maximum of open streams; retry shortly",
            )),
            5,
        )
    })?;
    Ok((session, after, permit))
}

/// Opens one client's stream. Holds `permit` (one of the process's stream
/// slots) until the stream is dropped.
pub fn open(
    state: AppState,
    principal: Principal,
    session_id: SessionId,
    after_sequence: i64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> FrameStream {
    // Subscribe before the first read, so nothing committed in between is missed.
    let sub = state.hub.subscribe(principal.org_id, session_id);
    let session = session_id.wire();
    let connected = own_frame("connected", json!({ "session_id": session, "after_sequence": after_sequence }));
    let now = Instant::now();
    let pump = Pump {
        cycle_at: now + state.config.sse_max_connection.mul_f64(rand::rng().random_range(0.8..1.2)),
        next_key_check: now + key_check_interval(&state),
        next_heartbeat: now + state.config.sse_heartbeat,
        shutdown: state.shutdown.clone(),
        state,
        principal,
        session_id,
        session,
        cursor: after_sequence,
        sub,
        outbox: VecDeque::from([connected]),
        catching_up: true,
        ended: false,
        _permit: permit,
    };
    let frames = futures::stream::unfold(pump, |mut pump| async move {
        loop {
            if let Some(frame) = pump.outbox.pop_front() {
                // A heartbeat follows the last frame of any kind.
                pump.next_heartbeat = Instant::now() + pump.state.config.sse_heartbeat;
                return Some((frame, pump));
            }
            if pump.ended {
                return None;
            }
            // Boxed: the database and timer futures live on the heap only while the stream waits.
            if let Err(e) = Box::pin(pump.fill()).await {
                tracing::debug!(error = %e, session_id = %pump.session_id, "SSE stream ended");
                return None;
            }
        }
    });
    FrameStream(frames.boxed())
}

/// A `text/event-stream` response body: SSE frames in their wire form. See
/// the `StreamFrame` schema for what they hold; the contract describes it as
/// poem-openapi's `EventStream` of them does.
pub struct FrameStream(BoxStream<'static, Bytes>);

impl Payload for FrameStream {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(StreamFrame::schema_ref())),
            ..MetaSchema::new_with_format("array", "event-stream")
        }))
    }

    fn register(registry: &mut Registry) {
        StreamFrame::register(registry);
    }
}

impl IntoResponse for FrameStream {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            // Proxies (nginx) must pass frames on as they come.
            .header("X-Accel-Buffering", "no")
            .header("Cache-Control", "no-cache")
            .body(Body::from_bytes_stream(self.0.map(Ok::<_, std::io::Error>)))
    }
}

/// One stream's state between frames.
struct Pump {
    state: AppState,
    principal: Principal,
    session_id: SessionId,
    /// The session's wire id.
    session: String,
    /// The last stored event sent.
    cursor: i64,
    sub: Subscription,
    /// Frames ready to send, in wire form (at most one log batch).
    outbox: VecDeque<Bytes>,
    /// The log may hold events after `cursor` that the broadcast will not bring.
    catching_up: bool,
    cycle_at: Instant,
    next_key_check: Instant,
    /// A heartbeat is due if nothing else was sent by then.
    next_heartbeat: Instant,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// `disconnecting` is queued (or the hub closed): nothing follows.
    ended: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What ended a wait.
enum Wake {
    Signal(Result<Signal, broadcast::error::RecvError>),
    /// The earliest of the cycle, the key check and the heartbeat is due.
    Timer,
    Shutdown,
}

fn key_check_interval(state: &AppState) -> std::time::Duration {
    state.config.sse_key_check.mul_f64(rand::rng().random_range(0.9..1.1))
}

impl Pump {
    /// Waits for the next frames and queues them.
    async fn fill(&mut self) -> Result<(), turnstone_core::Error> {
        if self.catching_up {
            // Database futures boxed: a waiting stream's boxed `fill` is only as large as its wait.
            let batch =
                match Box::pin(fanout::read_after(&self.state.pool, self.principal.org_id, self.session_id, self.cursor)).await {
                    Ok(b) => b,
                    // The database is away: keep the stream; the next batch's gap, or the `Resync`
                    // sent when the LISTEN connection is back, starts the catch-up again.
                    Err(e) if e.is_unavailable() => {
                        self.catching_up = false;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
            self.catching_up = batch.len() >= fanout::BATCH as usize;
            for r in batch {
                self.cursor = r.sequence;
                self.outbox.push_back(r.wire);
            }
            return Ok(());
        }
        // One timer for the three deadlines: a waiting stream holds one timer entry.
        let due = self.cycle_at.min(self.next_key_check).min(self.next_heartbeat);
        let wake = tokio::select! {
            signal = self.sub.recv() => Wake::Signal(signal),
            _ = tokio::time::sleep_until(due) => Wake::Timer,
            _ = self.shutdown.wait_for(|stop| *stop) => Wake::Shutdown,
        };
        match wake {
            Wake::Signal(Ok(Signal::Events(batch))) => {
                if batch.first().is_some_and(|r| r.sequence > self.cursor + 1) {
                    // A gap: the log has everything in this batch and before it.
                    self.catching_up = true;
                } else {
                    for r in batch.iter() {
                        if r.sequence > self.cursor {
                            self.outbox.push_back(r.wire.clone());
                            self.cursor = r.sequence;
                        }
                    }
                }
            }
            Wake::Signal(Ok(Signal::Delta(d))) => {
                let data = json!({
                    "type": types::OUTPUT_MESSAGE_DELTA,
                    "ts": d.ts,
                    "session_id": self.session,
                    "turn_id": d.turn_id.wire(),
                    "data": { "delta": d.text, "iteration": d.iteration },
                });
                self.outbox.push_back(own_frame(types::OUTPUT_MESSAGE_DELTA, data));
            }
            Wake::Signal(Ok(Signal::Resync)) | Wake::Signal(Err(broadcast::error::RecvError::Lagged(_))) => {
                self.catching_up = true
            }
            Wake::Signal(Err(broadcast::error::RecvError::Closed)) => self.ended = true,
            Wake::Timer => {
                let now = Instant::now();
                if now >= self.cycle_at {
                    self.disconnect();
                    return Ok(());
                }
                if now >= self.next_key_check {
                    self.next_key_check = now + key_check_interval(&self.state);
                    // A key revoked or expired (or its org disabled) while streaming:
                    // end the stream; the client's reconnect then gets a 401.
                    if matches!(Box::pin(orgs::key_active(&self.state.pool, self.principal)).await, Ok(false)) {
                        self.disconnect();
                        return Ok(());
                    }
                }
                if now >= self.next_heartbeat {
                    self.outbox.push_back(HEARTBEAT);
                }
            }
            Wake::Shutdown => self.disconnect(),
        }
        Ok(())
    }

    /// Queues `disconnecting` (with a jittered reconnect delay) as the last frame.
    fn disconnect(&mut self) {
        let retry_ms = rand::rng().random_range(500..1500);
        self.outbox.push_back(own_frame("disconnecting", json!({ "retry_ms": retry_ms })));
        self.ended = true;
    }
}

/// A frame of this stream alone (no id: `connected`, deltas, `disconnecting`).
fn own_frame(frame: &str, data: serde_json::Value) -> Bytes {
    wire_bytes(frame, None, &data.to_string())
}

/// A frame in the SSE wire form: `id:` (when there is one), `event:`, one
/// `data:` line per line of `data`, and a blank line.
pub fn wire_bytes(frame: &str, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + frame.len() + 48);
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if !frame.is_empty() && frame != "message" {
        out.push_str("event: ");
        out.push_str(frame);
        out.push('\n');
    }
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}
