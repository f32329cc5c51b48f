//! Turnstone's workers: claim turn tasks from PostgreSQL and run the agent loop
//! (LLM calls through async-openai, tools from the capability registry),
//! appending every result to the event log.
//!
//! Workers hold no state: a turn's progress lives in the event log, so any
//! worker can resume any turn. They must not serve HTTP to clients and must not
//! talk to the control plane except through the database.
//!
//! The runtime is apalis on its PostgreSQL backend: claims use
//! `FOR UPDATE SKIP LOCKED`; wake-ups come from LISTEN/NOTIFY with a polling
//! fallback; heartbeats let a live worker re-enqueue a dead one's tasks.
//!
//! # Layout
//! - [`config`]: configuration from the environment.
//! - [`llm`]: the OpenAI-compatible streaming client.
//! - [`plan`]: next step and prompt, derived from the event log.
//! - [`turn`]: the step loop with fenced, keyed commits.

pub mod config;
pub mod llm;
pub mod plan;
pub mod turn;

use std::sync::Arc;

use apalis::prelude::*;
use apalis_postgres::{PostgresStorage, Pubsub};
use sqlx::PgPool;
use turnstone_core::db;
use turnstone_core::turns::{QUEUE, TurnTask};

pub use config::Config;

/// What every turn handler shares.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    pub config: Arc<Config>,
}

/// The apalis handler: runs one turn. An `Err` (database trouble) makes
/// apalis retry the task; the turn then resumes where its log ends.
async fn handle(task: TurnTask, ctx: Data<Context>) -> Result<(), BoxDynError> {
    match turn::run(&ctx, task.turn_id).await {
        Ok(end) => {
            tracing::debug!(turn_id = %task.turn_id, ?end, "turn task done");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(turn_id = %task.turn_id, error = %e, "turn interrupted; will retry");
            // Give a restarting database a moment before apalis retries.
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

/// Runs a worker until `shutdown` resolves; then stops claiming and lets the
/// turns in flight finish.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxDynError> {
    let pool = db::connect(&config.database_url, config.db_max_connections).await?;
    let mut shutdown = Box::pin(shutdown);
    if !wait_for_schema(&pool, &mut shutdown).await {
        return Ok(());
    }
    let missed = (config.reclaim_after.as_secs_f64() / config.heartbeat.as_secs_f64()).ceil().max(1.0) as usize;
    let storage_config = apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(config.concurrency.min(16))
        .heartbeat_interval(config.heartbeat)
        .missed_heartbeats(missed);
    let strategy = Strategy::new().stream(Pubsub::new(pool.clone(), QUEUE.to_owned())).interval(config.poll_interval);
    let backend = PostgresStorage::<TurnTask>::new(&pool).with_config(storage_config).poll_with_strategy(strategy);
    let name = config.name.clone();
    let concurrency = config.concurrency;
    let ctx = Context { pool: pool.clone(), config: Arc::new(config) };
    tracing::info!(worker = %name, concurrency, "turnstone-worker claiming turns");
    let worker = WorkerBuilder::new(name.as_str()).backend(backend).data(ctx).concurrency(concurrency).build(handle);
    worker.run_until(async move { shutdown.await; Ok::<(), std::io::Error>(()) }).await?;
    pool.close().await;
    Ok(())
}
