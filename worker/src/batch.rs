//! Batches what a worker's turns ask of the database at the same moment into
//! one transaction: every turn's handler sends its request to a [`Batcher`],
//! which takes every request waiting at that moment (up to a maximum) and
//! hands them to its batch function together.
//!
//! Nothing waits for company: on an idle system a request is a batch of one
//! and runs at once (latency is unchanged). Batches form only while the
//! database is busy — a few batches run at a time and requests pile up behind
//! them — so a burst of 1,000 turns costs tens of transactions, not thousands.

use std::sync::Arc;
use turnstone_core::ids::OrgId;

use tokio::sync::{Semaphore, mpsc, oneshot};
use turnstone_core::Error;

/// A request waiting in a batch, and where its answer goes.
struct Pending<Req, Resp> {
    request: Req,
    reply: oneshot::Sender<Resp>,
}

/// The handle requests go through; cheap to clone. The batching task ends
/// when every handle is dropped. Its channel is unbounded because each turn
/// waits for its answer before it asks again: at most one request per turn
/// in flight, so the worker's concurrency bounds it.
pub struct Batcher<Req, Resp> {
    requests: mpsc::UnboundedSender<Pending<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self { requests: self.requests.clone() }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Spawns the task that forms batches of at most `max` requests and runs
    /// up to `parallel` of them at once through `run`, which answers each
    /// request of its batch, in order (a missing answer is `None` to its caller).
    pub fn spawn<F, Fut>(max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (requests, mut rx) = mpsc::unbounded_channel::<Pending<Req, Resp>>();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(parallel.max(1)));
            while let Some(first) = rx.recv().await {
                let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
                // Whatever arrived while every slot was busy joins this batch.
                let mut batch = vec![first];
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<Req>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
                let done = run(requests);
                tokio::spawn(async move {
                    for (reply, answer) in replies.into_iter().zip(done.await) {
                        let _ = reply.send(answer);
                    }
                    drop(slot);
                });
            }
        });
        Self { requests }
    }

    /// Sends a request and waits for its answer; `None` if the batching task
    /// is gone or dropped the request unanswered.
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Pending { request, reply }).ok()?;
        answer.await.ok()
    }
}

/// Groups indices by org, keeping their order (row-level security scopes a transaction to one org).
pub fn by_org(items: &[usize], org_of: impl Fn(usize) -> OrgId) -> Vec<(OrgId, Vec<usize>)> {
    let mut groups: Vec<(OrgId, Vec<usize>)> = Vec::new();
    for &i in items {
        let org = org_of(i);
        match groups.iter_mut().find(|(o, _)| *o == org) {
            Some((_, g)) => g.push(i),
            None => groups.push((org, vec![i])),
        }
    }
    groups
}

/// `n` answers sharing one batch's error.
pub fn shared_error<T>(n: usize, e: Error) -> Vec<Result<T, Error>> {
    tracing::warn!(error = %e, requests = n, "batched turn transaction failed");
    let e = Arc::new(e);
    (0..n).map(|_| Err(Error::Batched(e.clone()))).collect()
}
