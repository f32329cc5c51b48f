//! Seals turns in batches ([`crate::batch`]): the turns ending at the same
//! moment are grouped by org and sealed in one transaction each
//! ([`turns::seal_many`]): their last steps, terminal events, sessions'
//! hand-over and queue tasks.

use sqlx::PgPool;
use turnstone_core::Error;
use turnstone_core::turns::{self, Seal};

use crate::batch::{Batcher, by_org, shared_error};

/// Most turns sealed by one transaction.
pub const MAX_BATCH: usize = 128;
/// Batches in flight at once.
pub const PARALLEL: usize = 2;

/// The handle turn handlers seal turns through; cheap to clone.
#[derive(Clone)]
pub struct Sealer(Batcher<Seal, Result<(), Error>>);

impl Sealer {
    pub fn spawn(pool: PgPool) -> Self {
        Self(Batcher::spawn(MAX_BATCH, PARALLEL, move |seals| {
            let pool = pool.clone();
            async move { seal_all(&pool, seals).await }
        }))
    }

    /// Seals one turn as [`turns::commit_and_seal`] does: `Err(LeaseLost)`
    /// (nothing written) unless the seal's lease still holds the turn.
    pub async fn seal(&self, seal: Seal) -> Result<(), Error> {
        self.0.call(seal).await.unwrap_or_else(|| Err(Error::Queue("the turn sealer stopped".into())))
    }
}

/// Seals a batch, one transaction per org; one answer per seal, in order.
/// A transaction that fails for a reason other than the database being
/// unavailable (say, one turn's step was already committed) is retried one
/// seal at a time, so one turn's trouble stays its own.
pub async fn seal_all(pool: &PgPool, seals: Vec<Seal>) -> Vec<Result<(), Error>> {
    let mut answers: Vec<Option<Result<(), Error>>> = seals.iter().map(|_| None).collect();
    let all: Vec<usize> = (0..seals.len()).collect();
    for (org, group) in by_org(&all, |i| seals[i].lease.org_id) {
        let batch: Vec<Seal> = group.iter().map(|&i| seals[i].clone()).collect();
        match turns::seal_many(pool, org, batch).await {
            Ok(sealed) => {
                for (i, sealed) in group.into_iter().zip(sealed) {
                    answers[i] = Some(if sealed { Ok(()) } else { Err(Error::LeaseLost) });
                }
            }
            Err(e) if group.len() > 1 && !e.is_unavailable() => {
                tracing::info!(error = %e, seals = group.len(), "batched seal failed; sealing one by one");
                for i in group {
                    answers[i] = Some(match turns::seal_many(pool, org, vec![seals[i].clone()]).await {
                        Ok(sealed) if sealed == [true] => Ok(()),
                        Ok(_) => Err(Error::LeaseLost),
                        Err(e) => Err(e),
                    });
                }
            }
            Err(e) => {
                for (i, answer) in group.iter().zip(shared_error(group.len(), e)) {
                    answers[*i] = Some(answer);
                }
            }
        }
    }
    answers.into_iter().map(|a| a.expect("every seal is answered")).collect()
}
