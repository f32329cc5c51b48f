//! Cancellation of running turns, delivered through PostgreSQL only.
//!
//! The API sets the durable flag and NOTIFYs `turnstone_cancel`. Each worker
//! process holds one LISTEN connection and flips the watch of the matching
//! in-flight turn; every second it also re-checks the flag of its in-flight
//! turns, so a NOTIFY missed during a reconnect delays a cancel by a second
//! at most and never loses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use turnstone_core::turns::{self, CANCEL_CHANNEL};
use uuid::Uuid;

/// The in-flight turns of this process and their cancel signals.
#[derive(Default)]
pub struct Cancels {
    turns: Mutex<HashMap<Uuid, watch::Sender<bool>>>,
}

/// A registered turn; unregisters on drop.
pub struct CancelGuard {
    cancels: Arc<Cancels>,
    turn_id: Uuid,
    rx: watch::Receiver<bool>,
}

impl CancelGuard {
    /// Resolves once cancellation of this turn was requested.
    pub async fn cancelled(&mut self) {
        let _ = self.rx.wait_for(|c| *c).await;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.cancels.turns.lock().expect("cancels lock").remove(&self.turn_id);
    }
}

impl Cancels {
    pub fn register(self: &Arc<Self>, turn_id: Uuid) -> CancelGuard {
        let (tx, rx) = watch::channel(false);
        self.turns.lock().expect("cancels lock").insert(turn_id, tx);
        CancelGuard { cancels: self.clone(), turn_id, rx }
    }

    fn fire(&self, turn_id: Uuid) {
        if let Some(tx) = self.turns.lock().expect("cancels lock").get(&turn_id) {
            let _ = tx.send(true);
        }
    }

    fn in_flight(&self) -> Vec<Uuid> {
        self.turns.lock().expect("cancels lock").keys().copied().collect()
    }

    /// Re-reads the durable flag of every in-flight turn.
    async fn check_flags(&self, pool: &PgPool) {
        let ids = self.in_flight();
        if ids.is_empty() {
            return;
        }
        match turns::cancel_requested(pool, &ids).await {
            Ok(hit) => hit.into_iter().for_each(|t| self.fire(t)),
            Err(e) => tracing::debug!(error = %e, "cancel flag check failed"),
        }
    }

    /// Listens for cancellations until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, pool: PgPool, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backstop = tokio::time::interval(Duration::from_secs(1));
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = match PgListener::connect_with(&pool).await {
                    Ok(mut l) => match l.listen(CANCEL_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, "cancel LISTEN failed");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "cancel LISTEN connection failed");
                        None
                    }
                };
                self.check_flags(&pool).await;
            }
            let next = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = backstop.tick() => self.check_flags(&pool).await,
                n = next => match n {
                    Ok(Some(n)) => {
                        if let Ok(turn_id) = n.payload().parse::<Uuid>() {
                            self.fire(turn_id);
                        }
                    }
                    Ok(None) | Err(_) => listener = None,
                },
            }
        }
    }
}
