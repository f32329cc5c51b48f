//! The SSE pump of one client: replay the log after the client's cursor, then
//! follow wake-ups from the process's one LISTEN connection, re-reading the log
//! on each (and on a slow fallback timer), forwarding live deltas as they come.
//! Frames are in sequence order and each stored event is sent once.

use futures::StreamExt;
use futures::stream::BoxStream;
use rand::Rng;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use turnstone_core::events::{self, EventFilter, types};
use turnstone_core::ids::{self, Kind};
use turnstone_core::orgs::{self, Principal};
use uuid::Uuid;

use crate::AppState;
use crate::fanout::Signal;
use crate::wire::{Event, StreamFrame};

/// Stored events read per query while catching up.
const BATCH: u32 = 500;

/// Starts the pump for one client and returns its frame stream.
pub fn open(state: AppState, principal: Principal, session_id: Uuid, after_sequence: i64) -> BoxStream<'static, StreamFrame> {
    let (tx, rx) = mpsc::channel(64);
    // Subscribe before the first read, so nothing committed in between is missed.
    let sub = state.hub.subscribe(session_id);
    tokio::spawn(async move {
        if let Err(e) = pump(&state, principal, session_id, after_sequence, sub, &tx).await {
            tracing::debug!(error = %e, %session_id, "SSE stream ended");
        }
    });
    ReceiverStream::new(rx).boxed()
}

#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client went away")]
    ClientGone,
    #[error(transparent)]
    Core(#[from] turnstone_core::Error),
}

async fn send(tx: &mpsc::Sender<StreamFrame>, frame: StreamFrame) -> Result<(), End> {
    tx.send(frame).await.map_err(|_| End::ClientGone)
}

async fn pump(
    state: &AppState,
    principal: Principal,
    session_id: Uuid,
    mut cursor: i64,
    mut sub: crate::fanout::Subscription,
    tx: &mpsc::Sender<StreamFrame>,
) -> Result<(), End> {
    let org_id = principal.org_id;
    let session = ids::format(Kind::Session, session_id);
    send(tx, StreamFrame { frame: "connected".into(), id: None, data: json!({ "session_id": session, "after_sequence": cursor }) }).await?;
    let jitter = rand::rng().random_range(0.8..1.2);
    let cycle_at = tokio::time::Instant::now() + state.config.sse_max_connection.mul_f64(jitter);
    let mut shutdown = state.shutdown.clone();
    let mut need_read = true;
    loop {
        if need_read {
            cursor = catch_up(state, org_id, session_id, cursor, tx).await?;
            need_read = false;
        }
        let poll = state.config.sse_fallback_poll.mul_f64(rand::rng().random_range(0.9..1.1));
        tokio::select! {
            signal = sub.rx.recv() => match signal {
                Ok(Signal::Appended(last)) => need_read = last > cursor,
                Ok(Signal::Delta(d)) => {
                    let data = json!({
                        "type": types::OUTPUT_MESSAGE_DELTA,
                        "ts": d.ts,
                        "session_id": session,
                        "turn_id": ids::format(Kind::Turn, d.turn_id),
                        "data": { "delta": d.text, "iteration": d.iteration },
                    });
                    send(tx, StreamFrame { frame: types::OUTPUT_MESSAGE_DELTA.into(), id: None, data }).await?;
                }
                Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => need_read = true,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep(poll) => {
                // A key revoked or expired (or its org disabled) while streaming:
                // end the stream; the client's reconnect then gets a 401.
                if matches!(orgs::key_active(&state.pool, principal).await, Ok(false)) {
                    return disconnect(tx).await;
                }
                need_read = true;
            }
            _ = tokio::time::sleep_until(cycle_at) => return disconnect(tx).await,
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return disconnect(tx).await,
            _ = tx.closed() => return Err(End::ClientGone),
        }
    }
}

/// Sends every stored event after `cursor`; returns the new cursor.
async fn catch_up(state: &AppState, org_id: Uuid, session_id: Uuid, mut cursor: i64, tx: &mpsc::Sender<StreamFrame>) -> Result<i64, End> {
    loop {
        let filter = EventFilter { after_sequence: cursor, types: Vec::new(), limit: BATCH };
        let read = async {
            let mut tx = turnstone_core::db::begin_org(&state.pool, org_id).await?;
            events::list(&mut tx, org_id, session_id, &filter).await
        };
        let batch = match read.await {
            Ok(b) => b,
            // The database is away: keep the stream, the next wake-up or poll retries.
            Err(e) if e.is_unavailable() => return Ok(cursor),
            Err(e) => return Err(e.into()),
        };
        let n = batch.len();
        for e in batch {
            cursor = e.sequence;
            let event = Event::from(e);
            let frame = StreamFrame {
                frame: event.kind.clone(),
                id: Some(event.id.clone()),
                data: serde_json::to_value(EventJson(&event)).unwrap_or_default(),
            };
            send(tx, frame).await?;
        }
        if n < BATCH as usize {
            return Ok(cursor);
        }
    }
}

async fn disconnect(tx: &mpsc::Sender<StreamFrame>) -> Result<(), End> {
    let retry_ms = rand::rng().random_range(500..1500);
    send(tx, StreamFrame { frame: "disconnecting".into(), id: None, data: json!({ "retry_ms": retry_ms }) }).await
}

/// Serialises the wire Event exactly as the REST list shows it.
struct EventJson<'a>(&'a Event);

impl serde::Serialize for EventJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use poem_openapi::types::ToJSON;
        self.0.to_json().serialize(s)
    }
}

/// Turns a frame into the SSE wire form.
pub fn to_sse_event(f: StreamFrame) -> poem::web::sse::Event {
    let e = poem::web::sse::Event::message(f.data.to_string()).event_type(f.frame);
    match f.id {
        Some(id) => e.id(id),
        None => e,
    }
}
