//! Starts turns in batches ([`crate::batch`]): the turns asking to start at
//! the same moment are grouped by org, taken in one transaction each
//! ([`turns::start_many`]), and their contexts read in one more
//! ([`turns::load_contexts`]).

use std::sync::Arc;
use turnstone_core::ids::{OrgId, TurnId};

use sqlx::PgPool;
use turnstone_core::Error;
use turnstone_core::history::ConversationCache;
use turnstone_core::turns::{self, Start, Started, TurnTask};

use crate::batch::{Batcher, by_org, shared_error};

/// Most turns started by one transaction (the statements' arrays are bounded with it).
pub const MAX_BATCH: usize = 128;
/// Batches in flight at once: one can run while the next forms.
pub const PARALLEL: usize = 2;

/// The handle turn handlers start turns through; cheap to clone.
#[derive(Clone)]
pub struct Starter(Batcher<TurnTask, Result<Start, Error>>);

impl Starter {
    pub fn spawn(pool: PgPool, max_stalled_starts: i32, history: Arc<ConversationCache>) -> Self {
        Self(Batcher::spawn(MAX_BATCH, PARALLEL, move |tasks| {
            let (pool, history) = (pool.clone(), history.clone());
            async move { start_all(&pool, max_stalled_starts, &history, tasks).await }
        }))
    }

    /// Starts (or retakes) one turn and reads its context, as [`turns::start`] does.
    pub async fn start(&self, task: TurnTask) -> Result<Start, Error> {
        self.0.call(task).await.unwrap_or_else(|| Err(Error::Queue("the turn starter stopped".into())))
    }
}

/// Starts a batch of turn tasks; one answer per task, in order. One round
/// per set of distinct turns (a duplicate task of a turn starts after the
/// first, exactly as if it had come later), each round one group per org.
pub async fn start_all(
    pool: &PgPool,
    max_stalled_starts: i32,
    history: &ConversationCache,
    tasks: Vec<TurnTask>,
) -> Vec<Result<Start, Error>> {
    let mut answers: Vec<Option<Result<Start, Error>>> = tasks.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..tasks.len()).collect();
    while !pending.is_empty() {
        let (mut round, mut later) = (Vec::new(), Vec::new());
        for i in pending {
            if round.iter().any(|&j: &usize| tasks[j].turn_id == tasks[i].turn_id) {
                later.push(i);
            } else {
                round.push(i);
            }
        }
        for (org, group) in by_org(&round, |i| tasks[i].org_id) {
            let ids: Vec<TurnId> = group.iter().map(|&i| tasks[i].turn_id).collect();
            for (i, answer) in group.into_iter().zip(start_group(pool, org, max_stalled_starts, history, &ids).await) {
                answers[i] = Some(answer);
            }
        }
        pending = later;
    }
    answers.into_iter().map(|a| a.expect("every task is answered")).collect()
}

/// Starts one org's distinct turns and reads their contexts; one answer per id.
async fn start_group(
    pool: &PgPool,
    org_id: OrgId,
    max_stalled_starts: i32,
    history: &ConversationCache,
    ids: &[TurnId],
) -> Vec<Result<Start, Error>> {
    let started = match turns::start_many(pool, org_id, ids, max_stalled_starts).await {
        Ok(s) => s,
        Err(e) => return shared_error(ids.len(), e),
    };
    crate::turn::crash_point("after_batch_start");
    let leases: Vec<turns::Lease> =
        started.iter().filter_map(|s| if let Started::Run(l) = s { Some(l.clone()) } else { None }).collect();
    let mut contexts = match turns::load_contexts(pool, org_id, &leases, history).await {
        Ok(c) => c.into_iter(),
        // The turns are started: their handlers retry and retake them (a new attempt), as after a crash.
        Err(e) => return shared_error(ids.len(), e),
    };
    started
        .into_iter()
        .map(|s| match s {
            Started::Run(lease) => contexts.next().expect("a context per lease").map(|c| Start::Run(lease, c)),
            Started::Sealed => Ok(Start::Sealed),
        })
        .collect()
}
