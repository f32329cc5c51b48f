//! One LISTEN connection per API process, fanned out in-process to SSE streams.
//!
//! The listener forwards `turnstone_events` wake-ups (ids only) and
//! `turnstone_deltas` payloads to per-session broadcast channels. After the
//! connection drops and comes back, every subscriber gets [`Signal::Resync`]
//! and re-reads the log, so a notification missed during the gap loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use turnstone_core::events::{Appended, DELTAS_CHANNEL, Delta, EVENTS_CHANNEL};
use uuid::Uuid;

/// What a subscriber is told.
#[derive(Debug, Clone)]
pub enum Signal {
    /// Events up to this sequence are committed: re-read the log.
    Appended(i64),
    /// A live token delta (never stored).
    Delta(Arc<Delta>),
    /// Notifications may have been missed: re-read the log.
    Resync,
}

/// Per-session channels; a channel is dropped when its last subscriber leaves.
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<Uuid, broadcast::Sender<Signal>>>,
}

/// A subscription that unregisters its session channel when the last one drops.
pub struct Subscription {
    hub: Arc<Hub>,
    session_id: Uuid,
    pub rx: broadcast::Receiver<Signal>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.hub.sessions.lock().expect("hub lock");
        if let Some(tx) = map.get(&self.session_id) {
            // This receiver is still alive while we run, so 1 means "only us".
            if tx.receiver_count() <= 1 {
                map.remove(&self.session_id);
            }
        }
    }
}

impl Hub {
    pub fn subscribe(self: &Arc<Self>, session_id: Uuid) -> Subscription {
        let mut map = self.sessions.lock().expect("hub lock");
        let rx = map.entry(session_id).or_insert_with(|| broadcast::channel(256).0).subscribe();
        Subscription { hub: self.clone(), session_id, rx }
    }

    /// Number of sessions with at least one subscriber (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().expect("hub lock").len()
    }

    fn send(&self, session_id: Uuid, signal: Signal) {
        if let Some(tx) = self.sessions.lock().expect("hub lock").get(&session_id) {
            let _ = tx.send(signal);
        }
    }

    fn resync_all(&self) {
        for tx in self.sessions.lock().expect("hub lock").values() {
            let _ = tx.send(Signal::Resync);
        }
    }

    /// Runs the LISTEN loop until `shutdown` resolves, reconnecting with backoff.
    pub async fn run(self: Arc<Self>, pool: PgPool, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let listener = tokio::select! {
                _ = &mut shutdown => return,
                l = connect(&pool) => l,
            };
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Anything committed while we were not listening is found by re-reading.
            self.resync_all();
            loop {
                let next = tokio::select! {
                    _ = &mut shutdown => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) => self.dispatch(n.channel(), n.payload()),
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection error; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    fn dispatch(&self, channel: &str, payload: &str) {
        if channel == EVENTS_CHANNEL {
            match serde_json::from_str::<Appended>(payload) {
                Ok(a) => self.send(a.session_id, Signal::Appended(a.last_sequence)),
                Err(e) => tracing::warn!(error = %e, "ignoring malformed event notification"),
            }
        } else if channel == DELTAS_CHANNEL {
            match serde_json::from_str::<Delta>(payload) {
                Ok(d) => self.send(d.session_id, Signal::Delta(Arc::new(d))),
                Err(e) => tracing::warn!(error = %e, "ignoring malformed delta notification"),
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([EVENTS_CHANNEL, DELTAS_CHANNEL]).await?;
    Ok(listener)
}
