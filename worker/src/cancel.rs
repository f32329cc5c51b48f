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
use turnstone_core::ids::{OrgId, TurnId, TypedId};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use turnstone_core::turns::{self, CANCEL_CHANNEL};
use uuid::Uuid;

/// The in-flight turns of this process and their cancel signals.
#[derive(Default)]
pub struct Cancels {
    /// turn id → (org id, signal)
    turns: Mutex<HashMap<TurnId, (OrgId, watch::Sender<bool>)>>,
}

/// A registered turn; unregisters on drop.
pub struct CancelGuard {
    cancels: Arc<Cancels>,
    turn_id: TurnId,
    rx: watch::Receiver<bool>,
}

impl CancelGuard {
    /// Resolves once cancellation of this turn was requested.
    pub async fn cancelled(&mut self) {
        let _ = self.rx.wait_for(|c| *c).await;
    }

    /// Whether cancellation was requested, without waiting.
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.cancels.turns.lock().expect("cancels lock").remove(&self.turn_id);
    }
}

impl Cancels {
    pub fn register(self: &Arc<Self>, org_id: OrgId, turn_id: TurnId) -> CancelGuard {
        let (tx, rx) = watch::channel(false);
        self.turns.lock().expect("cancels lock").insert(turn_id, (org_id, tx));
        CancelGuard { cancels: self.clone(), turn_id, rx }
    }

    fn fire(&self, turn_id: TurnId) {
        if let Some((_, tx)) = self.turns.lock().expect("cancels lock").get(&turn_id) {
            let _ = tx.send(true);
        }
    }

    /// In-flight turn ids grouped by org (each org is read in its own scoped transaction).
    fn in_flight(&self) -> HashMap<OrgId, Vec<TurnId>> {
        let mut by_org: HashMap<OrgId, Vec<TurnId>> = HashMap::new();
        for (turn, (org, _)) in self.turns.lock().expect("cancels lock").iter() {
            by_org.entry(*org).or_default().push(*turn);
        }
        by_org
    }

    /// Re-reads the durable flag of every in-flight turn.
    async fn check_flags(&self, pool: &PgPool) {
        for (org, ids) in self.in_flight() {
            match turns::cancel_requested(pool, org, &ids).await {
                Ok(hit) => hit.into_iter().for_each(|t| self.fire(t)),
                Err(e) => tracing::debug!(error = %e, "cancel flag check failed"),
            }
        }
    }

    /// Listens for cancellations until `shutdown` resolves.
    /// LISTENs on a connection from `listen_pool` (`db::listen_pool`); reads the flags through `pool`.
    pub async fn run(self: Arc<Self>, pool: PgPool, listen_pool: PgPool, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backstop = tokio::time::interval(Duration::from_secs(1));
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = match PgListener::connect_with(&listen_pool).await {
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
                            self.fire(TurnId::from_uuid(turn_id));
                        }
                    }
                    Ok(None) | Err(_) => listener = None,
                },
            }
        }
    }
}
