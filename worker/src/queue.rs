//! The apalis backend over Turnstone's own task table (`core::queue`).
//!
//! apalis stays the worker runtime (concurrency, the service stack, graceful
//! stop); this backend replaces apalis-postgres, whose claim, per-task lock and
//! acknowledgement path ran at a third of a hand-written `SKIP LOCKED` loop
//! (docs/benchmarks.md). Three small tasks drive the table, so claiming,
//! acknowledging and heart-beating never wait for one another:
//!
//! - the **claimer** claims up to `min(batch, free slots)` tasks in one
//!   statement whenever it is woken (NOTIFY on [`queue::CHANNEL`], a finished
//!   task freeing a slot, or the poll interval) and claims again at once while
//!   batches come back full. It never holds more tasks than the worker can run.
//! - the **acknowledger** takes finished tasks from [`AckLayer`] and completes
//!   them together: one `DELETE` for every success and one `UPDATE` for every
//!   failure that piled up while the previous statement ran. A statement that
//!   fails is retried; the outcome is never dropped.
//! - the **heartbeat** refreshes this worker's `queue_workers` row and
//!   reclaims the tasks of workers that stopped heart-beating.
//!
//! The acknowledger outlives the backend until every outcome is written; call
//! [`QueueHandle::finish`] before handing the worker's tasks back.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{BoxDynError, Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::{Backend, BackendConfig, finalize::Ephemeral};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use turnstone_core::queue::{self, Failure, Held};

/// How a [`PgQueue`] claims.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `task_queue.queue`.
    pub queue: String,
    /// This worker's unique name (`task_queue.lock_by`, `queue_workers.name`).
    pub worker: String,
    /// Most tasks held at once (claimed and not yet finished).
    pub concurrency: usize,
    /// Most tasks per claim statement.
    pub batch: usize,
    /// Fallback poll when no NOTIFY arrives.
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    /// A worker silent this long is dead; its tasks are reclaimed.
    pub reclaim_after: Duration,
}

/// What the claimer, the acknowledger and the layer share.
struct Shared {
    config: QueueConfig,
    pool: PgPool,
    /// Where the LISTEN connection comes from.
    listen_pool: PgPool,
    /// Claimed and not yet finished.
    held: AtomicUsize,
    /// Claim now: a NOTIFY arrived, or a slot freed up while `starved`.
    wake: Notify,
    /// The last claim may have left due tasks behind for want of free slots
    /// (it claimed none, or as many as it asked for): a freed slot must claim
    /// again. Otherwise the queue had nothing more when last claimed, and a
    /// new task comes with its own NOTIFY — waking on every finished task
    /// cost an empty claim per task (a round trip, on the database's CPU).
    starved: AtomicBool,
    /// The backend of this worker's LISTEN connection, once recorded; its
    /// heartbeat writes it back if another worker wrongly found it gone.
    listening: std::sync::Mutex<Option<queue::Listening>>,
}

/// A finished task, on its way to the acknowledger.
enum Outcome {
    Done(Held),
    Failed(Failure),
}

/// The backend handed to `WorkerBuilder::backend`.
pub struct PgQueue<Args> {
    shared: Arc<Shared>,
    claimed: mpsc::Receiver<Task<Args>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    /// Flips to stop claiming (drain).
    stop: watch::Sender<bool>,
    drivers: Vec<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<Args>,
}

/// Outlives the backend: waits for the acknowledger to write every outcome.
pub struct QueueHandle {
    acknowledger: JoinHandle<()>,
}

impl QueueHandle {
    /// Waits (at most `limit`) until every finished task's outcome is written.
    /// Returns once the worker that owned the backend has been dropped.
    pub async fn finish(self, limit: Duration) {
        if tokio::time::timeout(limit, self.acknowledger).await.is_err() {
            tracing::warn!("task outcomes not all written; those tasks will be handed back and run again");
        }
    }
}

impl<Args: DeserializeOwned + Send + 'static> PgQueue<Args> {
    /// Starts claiming for `config.worker`. `stop` flipping to `true` stops new claims.
    pub fn start(pool: PgPool, config: QueueConfig, stop_signal: watch::Receiver<bool>) -> (Self, QueueHandle) {
        Self::start_listening_on(pool.clone(), pool, config, stop_signal)
    }

    /// [`PgQueue::start`], with its LISTEN connection taken from `listen_pool`
    /// (`db::listen_pool`: a session of its own, not a transaction pooler's).
    pub fn start_listening_on(
        pool: PgPool,
        listen_pool: PgPool,
        config: QueueConfig,
        mut stop_signal: watch::Receiver<bool>,
    ) -> (Self, QueueHandle) {
        let shared = Arc::new(Shared {
            config,
            pool,
            listen_pool,
            held: AtomicUsize::new(0),
            wake: Notify::new(),
            starved: AtomicBool::new(false),
            listening: std::sync::Mutex::new(None),
        });
        let (claimed_tx, claimed) = mpsc::channel(shared.config.concurrency.max(1));
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        // The caller's stop signal and `poll_close` both end claiming.
        let forward = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = stop_signal.wait_for(|s| *s).await;
                let _ = stop.send(true);
            })
        };
        let drivers = vec![
            forward,
            tokio::spawn(claimer(shared.clone(), claimed_tx, stop_rx.clone())),
            tokio::spawn(listener(shared.clone(), stop_rx.clone())),
            tokio::spawn(retire(shared.clone(), stop_rx.clone())),
            tokio::spawn(heartbeat(shared.clone(), stop_rx.clone())),
        ];
        let acknowledger = tokio::spawn(acknowledger(shared.clone(), outcomes_rx));
        let backend = Self { shared, claimed, outcomes, stop, drivers, closing: None, _args: PhantomData };
        (backend, QueueHandle { acknowledger })
    }
}

impl<Args> Drop for PgQueue<Args> {
    fn drop(&mut self) {
        for d in &self.drivers {
            d.abort();
        }
    }
}

impl<Args: Send + 'static> Backend for PgQueue<Args> {
    type Task = Task<Args>;
    type Error = turnstone_core::Error;

    fn poll_ready(&mut self, _: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// `None` once claiming has stopped and every claimed task was handed out:
    /// the worker then finishes what it runs and stops.
    fn poll_next(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.claimed.poll_recv(cx).map(|t| t.map(Ok))
    }

    /// Stops claiming and hands back tasks claimed but never started.
    fn poll_close(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            let _ = self.stop.send(true);
            self.claimed.close();
            let mut unstarted = Vec::new();
            while let Ok(task) = self.claimed.try_recv() {
                unstarted.extend(held(&task));
            }
            self.shared.held.fetch_sub(unstarted.len(), Ordering::Relaxed);
            let shared = self.shared.clone();
            self.closing = Some(Box::pin(async move {
                if let Err(e) = queue::unclaim(&shared.pool, &shared.config.worker, &unstarted).await {
                    tracing::warn!(error = %e, "could not hand back unstarted tasks; they go back when this worker is released");
                }
            }));
        }
        self.closing.as_mut().expect("set above").as_mut().poll(cx).map(Ok)
    }
}

impl<Args: Send + 'static> BackendConfig for PgQueue<Args> {
    type Args = Args;
    type Id = i64;
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = AckLayer;

    fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> AckLayer {
        AckLayer { shared: self.shared.clone(), outcomes: self.outcomes.clone() }
    }
}

/// The claim a task was handed out under (set by the claimer in the task's data).
fn held<Args>(task: &Task<Args>) -> Option<Held> {
    task.ctx().data().get::<Held>().copied()
}

/// The delay before a failed task runs again: 100 ms doubling per attempt, at most 10 s.
pub fn retry_delay(attempts: usize) -> Duration {
    Duration::from_millis(100u64 << attempts.saturating_sub(1).min(7)).min(Duration::from_secs(10))
}

/// Claims while there are free slots and due tasks; sleeps until woken otherwise.
async fn claimer<Args: DeserializeOwned>(shared: Arc<Shared>, out: mpsc::Sender<Task<Args>>, mut stop: watch::Receiver<bool>) {
    let c = &shared.config;
    // Register before the first claim: a claimed task's worker row must exist (see `queue::heartbeat`).
    // Then hand back whatever an earlier process of the same name (a fixed
    // TURNSTONE_WORKER_NAME, restarted within the reclaim time) still holds: no
    // other worker would reclaim it while this name heart-beats.
    loop {
        let ready = async {
            queue::register(&shared.pool, &c.queue, &c.worker, c.heartbeat).await?;
            queue::release_worker(&shared.pool, &c.worker).await
        };
        match ready.await {
            Ok(0) => break,
            Ok(n) => {
                tracing::info!(released = n, "handed back tasks an earlier process of this name held");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "could not register the worker; retrying"),
        }
        if !pause(&mut stop, Duration::from_millis(500)).await {
            return;
        }
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let free = c.concurrency.saturating_sub(shared.held.load(Ordering::Relaxed));
        let want = free.min(c.batch);
        if want == 0 {
            // Starved first, then look again: a task finishing in between either
            // sees the flag (and wakes this loop) or is seen here.
            shared.starved.store(true, Ordering::SeqCst);
            if shared.held.load(Ordering::SeqCst) < c.concurrency {
                continue;
            }
        } else {
            match queue::claim(&shared.pool, &c.queue, &c.worker, want).await {
                Ok(rows) => {
                    let full = rows.len() == want;
                    // Fewer than asked: nothing else was due. As many: there may be more, and
                    // the loop claims again at once (or, out of slots, marks itself starved).
                    shared.starved.store(full, Ordering::SeqCst);
                    shared.held.fetch_add(rows.len(), Ordering::Relaxed);
                    for row in rows {
                        let claim = row.held();
                        match serde_json::from_value::<Args>(row.payload) {
                            Ok(args) => {
                                let task = TaskBuilder::new(args)
                                    .task_id(TaskId::Int(row.id as u64))
                                    // The claim token: handlers and the acknowledger answer for this claim only.
                                    .data(claim)
                                    // apalis counts the run itself when it starts it.
                                    .attempt((row.attempts - 1).max(0) as usize)
                                    .build();
                                if out.send(task).await.is_err() {
                                    return; // the backend is gone; the release hands the rest back
                                }
                            }
                            Err(e) => {
                                shared.held.fetch_sub(1, Ordering::Relaxed);
                                tracing::error!(task_id = row.id, error = %e, "undecodable task payload");
                                let failure = Failure {
                                    held: claim,
                                    error: format!("undecodable payload: {e}"),
                                    retry_in: Duration::from_secs(60),
                                };
                                if let Err(e) = queue::fail(&shared.pool, &c.worker, &[failure]).await {
                                    tracing::warn!(error = %e, "could not record the undecodable task");
                                }
                            }
                        }
                    }
                    if full {
                        continue; // more may be due
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying");
                    if !pause(&mut stop, Duration::from_millis(500)).await {
                        return;
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(c.poll_interval) => {}
        }
    }
}

/// Sleeps `wait` unless `stop` flips first; false when it did.
async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Wakes the claimer on NOTIFY for this queue (and after every reconnect, when
/// notifications may have been missed). Listens on the channel every worker
/// hears and on this worker's own, on which an enqueue wakes it alone; such a
/// wake-up this worker cannot take — no free slot, or it stopped claiming —
/// is passed on to every worker.
async fn listener(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let c = &shared.config;
    loop {
        let mut listener = match PgListener::connect_with(&shared.listen_pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "queue listener could not connect; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let own = match queue::worker_channel(&shared.pool, &c.worker).await {
            Ok(own) => own,
            Err(e) => {
                tracing::debug!(error = %e, "could not name this worker's channel; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([queue::CHANNEL, own.as_str()]).await {
            tracing::debug!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if !register_listener(&shared, &mut listener, &stop).await {
            continue;
        }
        shared.wake.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.payload() == c.queue => {
                    let full = shared.held.load(Ordering::SeqCst) >= c.concurrency;
                    let stopped = *stop.borrow();
                    if n.channel() == own
                        && (full || stopped)
                        && let Err(e) = queue::wake_all(&shared.pool, &c.queue).await
                    {
                        tracing::debug!(error = %e, "could not pass a wake-up on; other workers' polls cover it");
                    }
                    shared.wake.notify_one();
                }
                Ok(Some(_)) => {}
                // Reconnected (sqlx does it before returning): anything may have been missed,
                // and the listening backend changed.
                Ok(None) => {
                    shared.wake.notify_one();
                    if !register_listener(&shared, &mut listener, &stop).await {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "queue listener lost its connection");
                    *shared.listening.lock().expect("not poisoned") = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

/// Records the backend that carries this worker's LISTEN (see
/// `queue::register_listener`). False, after a pause, when that failed: the
/// caller reconnects and tries again (a row left with an older backend's pid
/// would have other workers stop waking this one), and until then the
/// heartbeat has no listener to write back.
async fn register_listener(shared: &Shared, listener: &mut PgListener, stop: &watch::Receiver<bool>) -> bool {
    let c = &shared.config;
    let accepting = !*stop.borrow();
    match queue::register_listener(&mut *listener, &c.queue, &c.worker, c.heartbeat, accepting).await {
        Ok(l) => {
            *shared.listening.lock().expect("not poisoned") = Some(l);
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not record the listening connection; reconnecting");
            *shared.listening.lock().expect("not poisoned") = None;
            tokio::time::sleep(Duration::from_millis(500)).await;
            false
        }
    }
}

/// Once claiming stops, enqueues stop picking this worker to wake (a wake-up
/// that still arrives is passed on by the listener).
async fn retire(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_ok()
        && let Err(e) = queue::stop_accepting(&shared.pool, &shared.config.worker).await
    {
        tracing::debug!(error = %e, "could not stop accepting wake-ups; the listener passes them on");
    }
}

async fn heartbeat(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let c = &shared.config;
    let mut tick = tokio::time::interval(c.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match queue::heartbeat(&shared.pool, &c.queue, &c.worker, c.heartbeat, c.reclaim_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reclaimed = n, "reclaimed the tasks of a dead worker"),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        let listening = *shared.listening.lock().expect("not poisoned");
        let accepting = !*stop.borrow();
        if let Some(l) = listening
            && let Err(e) = queue::reassert_listener(&shared.pool, &c.worker, l, accepting).await
        {
            tracing::debug!(error = %e, "could not reassert the listening connection");
        }
    }
}

/// Writes outcomes in batches until every sender (the backend, the layer's
/// services) is gone and nothing is left to write.
async fn acknowledger(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Outcome>) {
    let worker = &shared.config.worker;
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    let mut open = true;
    loop {
        if done.is_empty() && failed.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(o) => push(o, &mut done, &mut failed),
                None => return,
            }
        }
        while let Ok(o) = rx.try_recv() {
            push(o, &mut done, &mut failed);
        }
        let written = async {
            queue::complete(&shared.pool, worker, &done).await?;
            done.clear();
            queue::fail(&shared.pool, worker, &failed).await?;
            failed.clear();
            Ok::<_, turnstone_core::Error>(())
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not write task outcomes; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        open = !rx.is_closed() || !rx.is_empty();
    }
}

fn push(o: Outcome, done: &mut Vec<Held>, failed: &mut Vec<Failure>) {
    match o {
        Outcome::Done(held) => done.push(held),
        Outcome::Failed(f) => failed.push(f),
    }
}

/// What a handler may answer to say its task needs no acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Finished; the acknowledger completes the task.
    Done,
    /// Finished, and the handler completed its task row in its own last
    /// transaction (`queue::complete_in`): nothing is left to write.
    Acknowledged,
}

/// Reports every finished task to the acknowledger (unless its handler
/// answered [`Handled::Acknowledged`]) and frees its slot.
#[derive(Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl<S> tower::Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService { inner, shared: self.shared.clone(), outcomes: self.outcomes.clone() }
    }
}

#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl<S, Args> tower::Service<Task<Args>> for AckService<S>
where
    S: tower::Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let claim = held(&task);
        let fut = self.inner.call(task);
        let (shared, outcomes) = (self.shared.clone(), self.outcomes.clone());
        Box::pin(async move {
            let res = fut.await.map_err(Into::into);
            if let Some(claim) = claim {
                let outcome = match &res {
                    Ok(r) if (r as &dyn Any).downcast_ref::<Handled>() == Some(&Handled::Acknowledged) => None,
                    Ok(_) => Some(Outcome::Done(claim)),
                    Err(e) => Some(Outcome::Failed(Failure {
                        held: claim,
                        error: e.to_string(),
                        retry_in: retry_delay(claim.attempts.max(0) as usize),
                    })),
                };
                if let Some(outcome) = outcome {
                    let _ = outcomes.send(outcome);
                }
                shared.held.fetch_sub(1, Ordering::SeqCst);
                if shared.starved.swap(false, Ordering::SeqCst) {
                    shared.wake.notify_one();
                }
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retry_delay_doubles_and_caps() {
        assert_eq!(retry_delay(0), Duration::from_millis(100));
        assert_eq!(retry_delay(1), Duration::from_millis(100));
        assert_eq!(retry_delay(2), Duration::from_millis(200));
        assert_eq!(retry_delay(4), Duration::from_millis(800));
        assert_eq!(retry_delay(50), Duration::from_secs(10));
    }
}
