//! The SSE pump of one client: replay the log after the client's cursor, then
//! forward what its session's reader broadcasts (see [`crate::fanout`]) —
//! stored events in sequence order, each once, and live deltas as they come.
//! A gap in the broadcast (the client joined late or lagged) is filled by
//! reading the log itself.

use futures::StreamExt;
use futures::stream::BoxStream;
use rand::Rng;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use turnstone_core::events::types;
use turnstone_core::ids::{self, Kind};
use turnstone_core::orgs::{self, Principal};
use uuid::Uuid;

use crate::AppState;
use crate::fanout::{self, Signal};
use crate::wire::StreamFrame;

/// Starts the pump for one client and returns its frame stream.
/// Holds `permit` (one of the process's stream slots) until the stream ends.
pub fn open(
    state: AppState,
    principal: Principal,
    session_id: Uuid,
    after_sequence: i64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> BoxStream<'static, StreamFrame> {
    let (tx, rx) = mpsc::channel(16);
    // Subscribe before the first read, so nothing committed in between is missed.
    let sub = state.hub.subscribe(principal.org_id, session_id);
    tokio::spawn(async move {
        let _permit = permit;
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
    send(tx, StreamFrame::new("connected", None, json!({ "session_id": session, "after_sequence": cursor }))).await?;
    let jitter = rand::rng().random_range(0.8..1.2);
    let cycle_at = tokio::time::Instant::now() + state.config.sse_max_connection.mul_f64(jitter);
    let mut shutdown = state.shutdown.clone();
    cursor = catch_up(state, org_id, session_id, cursor, tx).await?;
    loop {
        let key_check = state.config.sse_key_check.mul_f64(rand::rng().random_range(0.9..1.1));
        tokio::select! {
            signal = sub.rx.recv() => match signal {
                Ok(Signal::Events(batch)) => {
                    if batch.first().is_some_and(|r| r.sequence > cursor + 1) {
                        cursor = catch_up(state, org_id, session_id, cursor, tx).await?;
                    }
                    for r in batch.iter() {
                        if r.sequence > cursor {
                            send(tx, r.frame.clone()).await?;
                            cursor = r.sequence;
                        }
                    }
                }
                Ok(Signal::Delta(d)) => {
                    let data = json!({
                        "type": types::OUTPUT_MESSAGE_DELTA,
                        "ts": d.ts,
                        "session_id": session,
                        "turn_id": ids::format(Kind::Turn, d.turn_id),
                        "data": { "delta": d.text, "iteration": d.iteration },
                    });
                    send(tx, StreamFrame::new(types::OUTPUT_MESSAGE_DELTA, None, data)).await?;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => cursor = catch_up(state, org_id, session_id, cursor, tx).await?,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep(key_check) => {
                // A key revoked or expired (or its org disabled) while streaming:
                // end the stream; the client's reconnect then gets a 401.
                if matches!(orgs::key_active(&state.pool, principal).await, Ok(false)) {
                    return disconnect(tx).await;
                }
            }
            _ = tokio::time::sleep_until(cycle_at) => return disconnect(tx).await,
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return disconnect(tx).await,
            _ = tx.closed() => return Err(End::ClientGone),
        }
    }
}

/// Sends every stored event after `cursor`, read from the log; returns the new cursor.
async fn catch_up(
    state: &AppState,
    org_id: Uuid,
    session_id: Uuid,
    mut cursor: i64,
    tx: &mpsc::Sender<StreamFrame>,
) -> Result<i64, End> {
    loop {
        let batch = match fanout::read_after(&state.pool, org_id, session_id, cursor).await {
            Ok(b) => b,
            // The database is away: keep the stream; the reader's next batch shows the gap again.
            Err(e) if e.is_unavailable() => return Ok(cursor),
            Err(e) => return Err(e.into()),
        };
        let n = batch.len();
        for r in batch {
            cursor = r.sequence;
            send(tx, r.frame).await?;
        }
        if n < fanout::BATCH as usize {
            return Ok(cursor);
        }
    }
}

async fn disconnect(tx: &mpsc::Sender<StreamFrame>) -> Result<(), End> {
    let retry_ms = rand::rng().random_range(500..1500);
    send(tx, StreamFrame::new("disconnecting", None, json!({ "retry_ms": retry_ms }))).await
}

/// Turns a frame into the SSE wire form.
pub fn to_sse_event(f: StreamFrame) -> poem::web::sse::Event {
    let data = match &f.text {
        Some(text) => text.to_string(),
        None => f.data.to_string(),
    };
    let e = poem::web::sse::Event::message(data).event_type(f.frame);
    match f.id {
        Some(id) => e.id(id),
        None => e,
    }
}
