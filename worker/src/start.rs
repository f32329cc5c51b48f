//! Starts turns in batches. Every turn handler asks the [`Starter`] to start
//! its turn; the starter takes every request waiting at that moment (at most
//! [`MAX_BATCH`]), groups them by org, and for each group takes the turns in
//! one transaction ([`turns::start_many`]) and reads their contexts in one more
//! ([`turns::load_contexts`]).
//!
//! Nothing waits for company: on an idle system a request is a batch of one
//! and starts at once (pickup latency is unchanged). Batches form only while
//! the database is busy — [`PARALLEL`] batches run at a time and requests pile
//! up behind them — so a burst of 1,000 claimed turns costs tens of
//! transactions instead of two thousand.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use turnstone_core::Error;
use turnstone_core::turns::{self, Start, Started, TurnTask};
use uuid::Uuid;

/// Most turns started by one transaction (and statements' arrays bounded with it).
pub const MAX_BATCH: usize = 128;
/// Batches in flight at once: one can run while the next forms.
pub const PARALLEL: usize = 2;

/// One handler's request and where its answer goes.
struct Request {
    task: TurnTask,
    reply: oneshot::Sender<Result<Start, Error>>,
}

/// The handle handlers start turns through; cheap to clone.
#[derive(Clone)]
pub struct Starter {
    requests: mpsc::UnboundedSender<Request>,
}

impl Starter {
    /// Spawns the task that forms and runs batches; it ends when every handle is dropped.
    pub fn spawn(pool: PgPool, max_stalled_starts: i32) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(batches(pool, max_stalled_starts, rx));
        Self { requests }
    }

    /// Starts (or retakes) one turn and reads its context, as [`turns::start`] does.
    pub async fn start(&self, task: TurnTask) -> Result<Start, Error> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { task, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Queue("the turn starter stopped".into())
}

/// Forms batches from what is waiting whenever a batch slot is free.
async fn batches(pool: PgPool, max_stalled_starts: i32, mut rx: mpsc::UnboundedReceiver<Request>) {
    let slots = Arc::new(Semaphore::new(PARALLEL));
    while let Some(first) = rx.recv().await {
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        // Whatever arrived while the slot was busy joins this batch.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            run_batch(&pool, max_stalled_starts, batch).await;
            drop(slot);
        });
    }
}

/// Runs a batch: one round per set of distinct turns (a duplicate task of a
/// turn in the same batch starts after the first, exactly as if it had come
/// later), each round one group per org.
async fn run_batch(pool: &PgPool, max_stalled_starts: i32, mut pending: Vec<Request>) {
    while !pending.is_empty() {
        let mut round: Vec<Request> = Vec::with_capacity(pending.len());
        let mut later = Vec::new();
        for r in pending {
            if round.iter().any(|q| q.task.turn_id == r.task.turn_id) {
                later.push(r);
            } else {
                round.push(r);
            }
        }
        while !round.is_empty() {
            let org = round[0].task.org_id;
            let (group, rest): (Vec<_>, Vec<_>) = round.into_iter().partition(|r| r.task.org_id == org);
            run_group(pool, org, max_stalled_starts, group).await;
            round = rest;
        }
        pending = later;
    }
}

/// Starts one org's distinct turns and answers each request.
async fn run_group(pool: &PgPool, org_id: Uuid, max_stalled_starts: i32, group: Vec<Request>) {
    let ids: Vec<Uuid> = group.iter().map(|r| r.task.turn_id).collect();
    let started = match turns::start_many(pool, org_id, &ids, max_stalled_starts).await {
        Ok(s) => s,
        Err(e) => return fail_all(group, e),
    };
    crate::turn::crash_point("after_batch_start");
    let mut runs = Vec::new();
    let mut leases = Vec::new();
    for (request, started) in group.into_iter().zip(started) {
        match started {
            Started::Run(lease) => {
                leases.push(lease);
                runs.push(request);
            }
            Started::Finished => {
                let _ = request.reply.send(Ok(Start::Finished));
            }
        }
    }
    match turns::load_contexts(pool, org_id, &leases).await {
        Ok(contexts) => {
            for ((request, lease), context) in runs.into_iter().zip(leases).zip(contexts) {
                let _ = request.reply.send(Ok(Start::Run(lease, context)));
            }
        }
        // The turns are started: their handlers retry and retake them (a new attempt), as after a crash.
        Err(e) => fail_all(runs, e),
    }
}

fn fail_all(requests: Vec<Request>, e: Error) {
    tracing::warn!(error = %e, turns = requests.len(), "batched turn start failed");
    let e = Arc::new(e);
    for r in requests {
        let _ = r.reply.send(Err(Error::Batched(e.clone())));
    }
}
