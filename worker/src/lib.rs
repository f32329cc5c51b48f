//! Turnstone's workers: claim turn tasks from PostgreSQL and run the agent loop
//! (LLM calls through async-openai, tools from the capability registry),
//! appending every result to the event log.
//!
//! Workers hold no state: a turn's progress lives in the event log, so any
//! worker can resume any turn. They must not serve HTTP to clients and must not
//! talk to the control plane except through the database.
//!
//! The runtime is apalis on Turnstone's own PostgreSQL backend ([`queue`]):
//! batched claims with `FOR UPDATE SKIP LOCKED`, wake-ups from LISTEN/NOTIFY
//! with a polling fallback, batched acknowledgements, and heartbeats that let a
//! live worker reclaim a dead one's tasks.
//!
//! # Layout
//! - [`config`]: configuration from the environment.
//! - [`cancel`]: cancellation signals from PostgreSQL to in-flight turns.
//! - [`llm`]: the OpenAI-compatible streaming client.
//! - [`plan`]: next step and prompt, derived from the event log.
//! - [`queue`]: the apalis backend over the `task_queue` table.
//! - [`batch`]: requests of concurrent turns gathered into one transaction.
//! - [`start`], [`seal`]: turn starts and seals, batched.
//! - [`turn`]: the step loop with fenced, keyed commits.

pub mod batch;
pub mod cancel;
pub mod config;
pub mod llm;
pub mod plan;
pub mod queue;
pub mod seal;
pub mod start;
pub mod turn;

use std::sync::Arc;

use apalis::prelude::*;
use sqlx::PgPool;
use turnstone_core::db;
use turnstone_core::turns::{QUEUE, TurnTask};

pub use config::Config;

/// What every turn handler shares.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// Where LISTEN connections come from (`db::listen_pool`).
    pub listen_pool: PgPool,
    pub config: Arc<Config>,
    pub cancels: Arc<cancel::Cancels>,
    /// Flips to `true` when the drain deadline passes: in-flight model calls stop.
    pub abort: tokio::sync::watch::Receiver<bool>,
    /// Shared by every model call of this worker (connection pool, TLS roots).
    pub http: openai_reqwest::Client,
    /// Starts turns in batches (see [`start`]).
    pub starter: start::Starter,
    /// Seals turns in batches (see [`seal`]).
    pub sealer: seal::Sealer,
}

/// The apalis handler: runs one turn. An `Err` (database trouble) sends the
/// task back to the queue for a retry; the turn then resumes where its log ends.
/// A sealed turn's task row was completed by the sealing transaction itself
/// ([`queue::Handled::Acknowledged`]: no separate acknowledgement).
async fn handle_turn(
    task: TurnTask,
    ctx: Data<Context>,
    claim: Option<Data<turnstone_core::queue::Held>>,
    worker: WorkerContext,
) -> Result<queue::Handled, BoxDynError> {
    let queue_task = claim.map(|held| turnstone_core::turns::QueueTask { held: *held, worker: worker.name().to_owned() });
    if task.wait {
        // A waiting turn's deadline timer: expire what is due; it either
        // resumes (run it now, with this task) or waits on (re-armed).
        match turnstone_core::turns::expire(&ctx.pool, task.org_id, task.turn_id, queue_task.as_ref()).await {
            Ok(turnstone_core::turns::Expiry::Parked) => return Ok(queue::Handled::Acknowledged),
            Ok(turnstone_core::turns::Expiry::Run) => {}
            Err(e) => {
                tracing::warn!(turn_id = %task.turn_id, error = %e, "could not expire a wait; will retry");
                return Err(Box::new(e));
            }
        }
    }
    match turn::run(&ctx, task, queue_task).await {
        Ok(turn::TurnEnd::Released) => {
            // The process is about to hand this task back (see `run`); finishing
            // the handler would mark it done, so it waits for the exit instead.
            std::future::pending::<()>().await;
            Ok(queue::Handled::Done)
        }
        Ok(turn::TurnEnd::Sealed | turn::TurnEnd::Parked) => Ok(queue::Handled::Acknowledged),
        Ok(end) => {
            tracing::debug!(turn_id = %task.turn_id, ?end, "turn task done");
            Ok(queue::Handled::Done)
        }
        Err(e) => {
            tracing::warn!(turn_id = %task.turn_id, error = %e, "turn interrupted; will retry");
            // Give a restarting database a moment before the retry.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            Err(Box::new(e))
        }
    }
}

/// Waits until the control plane has applied migrations (workers never migrate).
async fn wait_for_schema(pool: &PgPool, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    loop {
        match db::migrations_applied(pool).await {
            Ok(true) => return true,
            Ok(false) => tracing::info!("waiting for migrations"),
            Err(e) => tracing::info!(error = %e, "waiting for the database"),
        }
        tokio::select! {
            _ = &mut *shutdown => return false,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

/// Runs a worker until `shutdown` resolves. Then it drains: it stops claiming,
/// lets in-flight turns run for up to `config.drain`, then stops them, hands
/// their tasks back to the queue for other workers, and returns.
///
/// apalis stops a worker when its backend fails (say, PostgreSQL restarts), so
/// this supervises it: each failure ends one *incarnation*, whose tasks are
/// handed back, and a new one (a new `apalis.workers` id) starts once the
/// database answers again.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxDynError> {
    db::set_prepared_statements(config.prepared_statements);
    let pool = db::connect_worker(&config.database_url, config.db_max_connections, &config.name)?;
    let listen_pool = db::listen_pool(
        config.listen_database_url.as_deref().unwrap_or(&config.database_url),
        &db::worker_application_name(&config.name),
    )?;
    // The events this worker appends ride in their notifications, signed (see `events::sign_notifications`).
    turnstone_core::events::sign_notifications(config.keys.notify_key());
    let mut shutdown = Box::pin(shutdown);
    if !wait_for_schema(&pool, &mut shutdown).await {
        return Ok(());
    }
    let (abort_tx, abort) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cancels = Arc::new(cancel::Cancels::default());
    // Cancellations are listened for until the process is done, drain included: a
    // turn cancelled while its worker drains stops at once instead of at the deadline.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let listening = tokio::spawn(cancels.clone().run(pool.clone(), listen_pool.clone(), async move {
        let _ = done_rx.wait_for(|d| *d).await;
    }));
    let drain = config.drain;
    let base_name = config.name.clone();
    let http = llm::http_client()?;
    let history = Arc::new(turnstone_core::history::ConversationCache::new(config.history_cache_bytes));
    let starter = start::Starter::spawn(pool.clone(), config.max_stalled_starts, history);
    let sealer = seal::Sealer::spawn(pool.clone());
    let ctx = Context { pool: pool.clone(), listen_pool, config: Arc::new(config), cancels, abort, http, starter, sealer };
    for incarnation in 0u32.. {
        let name = if incarnation == 0 { base_name.clone() } else { format!("{base_name}-{incarnation}") };
        // Boxed so that dropping it really drops the apalis worker (and its LISTEN connection).
        let mut running = Box::pin(incarnate(&ctx, &name, stop_rx.clone()));
        tokio::select! {
            r = &mut running => {
                let e = match r {
                    Ok(()) => "the worker stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(worker = %name, error = %e, "worker incarnation ended; restarting");
            }
            _ = &mut shutdown => {
                tracing::info!(deadline_secs = drain.as_secs_f64(), "draining: no new claims, turns in flight may finish");
                let _ = stop_tx.send(true);
                if tokio::time::timeout(drain, &mut running).await.is_err() {
                    tracing::warn!("drain deadline passed: stopping turns in flight and releasing them");
                    let _ = abort_tx.send(true);
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut running).await;
                }
                // Dropping the worker drops its LISTEN connection and any turn still running here.
                drop(running);
                release(&pool, &name).await;
                break;
            }
        }
        drop(running);
        // Hand this incarnation's tasks back as soon as the database answers.
        while !release(&pool, &name).await {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
        if !wait_for_schema(&pool, &mut shutdown).await {
            return Ok(());
        }
    }
    let _ = done_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), listening).await;
    // Bounded: a connection stuck in a dead handler must not hold the exit.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), pool.close()).await;
    Ok(())
}

/// Hands `name`'s tasks back and removes its worker row; false if the
/// database did not answer (the tasks are then reclaimed after the heartbeat timeout).
async fn release(pool: &PgPool, name: &str) -> bool {
    match turnstone_core::queue::release_worker(pool, name).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "handed tasks back to the queue"),
        Err(e) => {
            tracing::warn!(error = %e, "could not release tasks; they will be reclaimed after the heartbeat timeout");
            return false;
        }
    }
    if let Err(e) = turnstone_core::queue::deregister(pool, name).await {
        tracing::debug!(error = %e, "could not remove the worker row; the next heartbeat of another worker will");
    }
    true
}

/// One apalis worker on the `turns` queue, running until `stop` flips.
async fn incarnate(ctx: &Context, name: &str, stop: tokio::sync::watch::Receiver<bool>) -> Result<(), BoxDynError> {
    let config = &ctx.config;
    let queue_config = queue::QueueConfig {
        queue: QUEUE.to_owned(),
        worker: name.to_owned(),
        concurrency: config.concurrency,
        batch: config.concurrency.min(64),
        poll_interval: config.poll_interval,
        heartbeat: config.heartbeat,
        reclaim_after: config.reclaim_after,
    };
    let (backend, handle) =
        queue::PgQueue::<TurnTask>::start_listening_on(ctx.pool.clone(), ctx.listen_pool.clone(), queue_config, stop.clone());
    tracing::info!(worker = %name, concurrency = config.concurrency, "turnstone-worker claiming turns");
    let worker = WorkerBuilder::new(name).backend(backend).data(ctx.clone()).concurrency(config.concurrency).build(handle_turn);
    let mut stop = stop;
    let result = worker
        .run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        })
        .await;
    // The worker (and with it the backend) is gone: let the last outcomes land before any hand-back.
    handle.finish(std::time::Duration::from_secs(5)).await;
    result?;
    Ok(())
}
