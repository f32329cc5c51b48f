//! Follows a session's event stream (`GET /v1/sessions/{id}/sse`) across reconnects: every stored
//! event once, in order, plus live deltas while connected.
//!
//! The stream is opened through the generated client and parsed by `eventsource-stream`. After a
//! `disconnecting` frame it waits the frame's `retry_ms`; after a dropped connection, or a read
//! that saw no bytes for twice the heartbeat interval, it reconnects at once (then with growing
//! pauses while the API cannot be reached). Each reconnect sends `Last-Event-ID`: the id of the
//! last stored event it yielded, so nothing is skipped and nothing repeats.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::api::{self, Client};
use crate::failure::Failure;

/// The server's heartbeat interval; a read waits twice this long for a byte.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The longest pause between attempts to reach an unreachable API.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the stream yields.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A stored event (the Event object: `id`, `type`, `sequence`, `turn_id`, `data`, …).
    Event(Value),
    /// A live `output.message.delta` (never stored, no id; lost while disconnected).
    Delta(Value),
    /// The connection ended and is being reopened: stored events resume where they left off,
    /// deltas sent meanwhile are lost. `cycled` when the server announced it (`disconnecting`).
    Reconnecting { why: String, cycled: bool },
}

#[derive(Debug)]
enum ReadError {
    Body(String),
    Idle,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Body(e) => write!(f, "{e}"),
            ReadError::Idle => write!(f, "no heartbeat for {}s", (2 * HEARTBEAT).as_secs()),
        }
    }
}

type Events =
    Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<ReadError>>> + Send>>;

/// A resuming reader of one session's stream.
pub struct EventStream {
    client: Client,
    session: String,
    /// The last stored event yielded: the resume point.
    last_id: Option<String>,
    open: Option<Events>,
    /// Wait before the next connect (set by `disconnecting` and by failures).
    pause: Duration,
    /// Consecutive failed connects (backoff; the first connect failing is fatal).
    failures: u32,
    connected_once: bool,
}

impl EventStream {
    /// Starts after the stored event `since` (`evt_…`), or at the session's first event.
    pub fn new(client: Client, session: String, since: Option<String>) -> EventStream {
        EventStream { client, session, last_id: since, open: None, pause: Duration::ZERO, failures: 0, connected_once: false }
    }

    /// The next frame. Fails when the API refuses the stream (a problem: the key was revoked, no
    /// such session) or cannot be reached on the first attempt.
    pub async fn next(&mut self) -> Result<Frame, Failure> {
        loop {
            let Some(events) = self.open.as_mut() else {
                if !self.pause.is_zero() {
                    tokio::time::sleep(self.pause).await;
                }
                match self.connect().await {
                    Ok(events) => {
                        self.open = Some(events);
                        self.connected_once = true;
                        self.failures = 0;
                        self.pause = Duration::ZERO;
                        continue;
                    }
                    Err(Failure::Connect(e)) if self.connected_once => {
                        self.failures += 1;
                        self.pause = (Duration::from_millis(250) * 2u32.pow(self.failures.min(5))).min(MAX_BACKOFF);
                        return Ok(Frame::Reconnecting { why: e, cycled: false });
                    }
                    Err(e) => return Err(e),
                }
            };
            match events.next().await {
                Some(Ok(event)) => match event.event.as_str() {
                    "connected" => {}
                    "disconnecting" => {
                        let retry =
                            serde_json::from_str::<Value>(&event.data).ok().and_then(|d| d["retry_ms"].as_u64()).unwrap_or(1000);
                        self.pause = Duration::from_millis(retry);
                        self.open = None;
                        return Ok(Frame::Reconnecting { why: "the server cycled the stream".into(), cycled: true });
                    }
                    "output.message.delta" => {
                        if let Ok(data) = serde_json::from_str(&event.data) {
                            return Ok(Frame::Delta(data));
                        }
                    }
                    _ if !event.id.is_empty() => {
                        let data: Value = serde_json::from_str(&event.data).map_err(|e| Failure::Api {
                            status: 200,
                            code: "invalid_response".into(),
                            detail: format!("event {} is not JSON: {e}", event.id),
                        })?;
                        self.last_id = Some(event.id);
                        return Ok(Frame::Event(data));
                    }
                    _ => {}
                },
                Some(Err(e)) => {
                    self.open = None;
                    return Ok(Frame::Reconnecting { why: e.to_string(), cycled: false });
                }
                None => {
                    self.open = None;
                    return Ok(Frame::Reconnecting { why: "the stream ended".into(), cycled: false });
                }
            }
        }
    }

    /// Whether a connection is open now (deltas sent now are received).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Opens the connection if none is open.
    pub async fn open(&mut self) -> Result<(), Failure> {
        if self.open.is_none() {
            self.open = Some(self.connect().await?);
            self.connected_once = true;
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Events, Failure> {
        let response = api::call(self.client.stream_events(&self.session, None, self.last_id.as_deref())).await?.into_inner();
        // A timeout on every read of bytes (heartbeats are bytes too): a silent connection is dead.
        let bytes = futures::stream::unfold(Some(response), |state| async move {
            let mut body = state?;
            match tokio::time::timeout(2 * HEARTBEAT, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(e))) => Some((Err(ReadError::Body(e.to_string())), None)),
                Ok(None) => None,
                Err(_) => Some((Err(ReadError::Idle), None)),
            }
        });
        Ok(Box::pin(bytes.eventsource()))
    }
}
