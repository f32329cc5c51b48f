//! `queue_throughput`: no-op tasks per second through the task queue alone —
//! Turnstone's own queue driven by an apalis worker (`turnstone_worker::queue`,
//! configured like `turnstone-worker`) — against a minimal hand-written
//! `FOR UPDATE SKIP LOCKED` claim/complete loop on a scratch table, in the same
//! run, with the same pool size and the same claim batch. apalis-postgres (the
//! backend it replaced, configured as the worker used it) runs too, for the record.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::{PostgresStorage, Pubsub};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use turnstone_tests::TestDb;
use turnstone_worker::queue::{PgQueue, QueueConfig};

use crate::Ctx;
use crate::stats::r2;

const QUEUE: &str = "bench_noop";
/// `turnstone-worker` defaults: 10 pooled connections, concurrency 32, claim batch min(32, 64).
const POOL: u32 = 10;
const CONCURRENCY: usize = 32;
const BATCH: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    n: u64,
}

async fn noop(_task: Noop) -> Result<(), BoxDynError> {
    Ok(())
}

pub async fn run(ctx: &Ctx) -> Value {
    let n = ctx.pick(20_000u64, 100_000);
    let db = TestDb::new_on(&ctx.admin_url).await;
    let pool = PgPoolOptions::new().max_connections(POOL).connect(&db.url).await.expect("pool");
    turnstone_core::db::migrate(&pool).await.expect("migrations");
    PostgresStorage::<()>::setup(&pool).await.expect("apalis schema");

    // Turnstone's queue: enqueue everything first (500 per statement), then drain with an apalis worker.
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut tx = pool.begin().await.expect("tx");
        let payloads: Vec<Value> = chunk.iter().map(|&n| json!({ "n": n })).collect();
        turnstone_core::queue::enqueue_many(&mut tx, QUEUE, &payloads, 25).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }
    let ours_enqueue_s = t.elapsed().as_secs_f64();
    let ours_s = drain_ours(&pool, n).await;

    // apalis-postgres: the same, with push_tasks.
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut tx = pool.begin().await.expect("tx");
        let tasks = chunk
            .iter()
            .map(|&n| apalis_core::task::builder::TaskBuilder::new(serde_json::to_vec(&Noop { n }).expect("json")).build())
            .collect();
        apalis_postgres::queries::push_tasks(&mut *tx, QUEUE, tasks).await.expect("push");
        tx.commit().await.expect("commit");
    }
    let enqueue_s = t.elapsed().as_secs_f64();
    let apalis_s = drain_apalis(&pool, n).await;

    // Hand-written loop on a scratch table: per-task completion, then batched completion.
    // Its own connections: once, after apalis-postgres (the only contender here that opens
    // transactions) was stopped with a timeout, a connection of the shared pool was still
    // inside an open transaction; the loop's claim on it never committed and every
    // completion waited on its row locks for good.
    let hand_pool = PgPoolOptions::new().max_connections(POOL).connect(&db.url).await.expect("pool");
    let hand_s = hand_loop(&hand_pool, n, false).await;
    let hand_batched_s = hand_loop(&hand_pool, n, true).await;

    let ours_tps = n as f64 / ours_s;
    let apalis_tps = n as f64 / apalis_s;
    let hand_tps = n as f64 / hand_s;
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "turnstone queue >= 1.0 x hand-written loop", ours_tps >= hand_tps);
    json!({
        "name": "queue_throughput",
        "tasks": n,
        "pool_connections": POOL, "concurrency": CONCURRENCY, "claim_batch": BATCH,
        "turnstone_tasks_per_s": r2(ours_tps),
        "turnstone_enqueue_tasks_per_s": r2(n as f64 / ours_enqueue_s),
        "apalis_postgres_tasks_per_s": r2(apalis_tps),
        "apalis_postgres_enqueue_tasks_per_s": r2(n as f64 / enqueue_s),
        "hand_loop_tasks_per_s": r2(hand_tps),
        "hand_loop_batched_ack_tasks_per_s": r2(n as f64 / hand_batched_s),
        "ratio_turnstone_to_hand_loop": r2(ours_tps / hand_tps),
        "ratio_turnstone_to_hand_loop_batched_ack": r2(ours_tps * hand_batched_s / n as f64),
        "ratio_apalis_postgres_to_hand_loop": r2(apalis_tps / hand_tps),
        "ratio_turnstone_to_pg_baseline": ctx.baseline_tps.map(|b| (ours_tps / b * 10000.0).round() / 10000.0),
        "targets": targets,
    })
}

/// Runs a no-op apalis worker on Turnstone's queue (worker defaults) until all `n` are done.
async fn drain_ours(pool: &PgPool, n: u64) -> f64 {
    let config = QueueConfig {
        queue: QUEUE.into(),
        worker: "bench-noop-ours".into(),
        concurrency: CONCURRENCY,
        batch: BATCH,
        poll_interval: Duration::from_millis(250),
        heartbeat: Duration::from_secs(5),
        reclaim_after: Duration::from_secs(30),
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let (backend, handle) = PgQueue::<Noop>::start(pool.clone(), config, stop.clone());
    let worker = WorkerBuilder::new("bench-noop-ours").backend(backend).concurrency(CONCURRENCY).build(noop);
    let run = tokio::spawn(async move {
        let mut stop = stop;
        let _ = worker
            .run_until(async move {
                let _ = stop.wait_for(|s| *s).await;
                Ok::<(), std::io::Error>(())
            })
            .await;
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM task_queue WHERE queue = $1")
            .bind(QUEUE)
            .fetch_one(pool)
            .await
            .expect("count");
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "turnstone queue drained only {}/{n} in 300 s", n as i64 - left);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
    handle.finish(Duration::from_secs(5)).await;
    secs
}

/// Runs a no-op worker on apalis-postgres, configured as `turnstone-worker` used it
/// (Pubsub + 250 ms poll, no per-task lock), until all `n` are done.
async fn drain_apalis(pool: &PgPool, n: u64) -> f64 {
    let config = apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(BATCH)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(6)
        .lock_tasks(false);
    let strategy = Strategy::new().stream(Pubsub::new(pool.clone(), QUEUE.to_owned())).interval(Duration::from_millis(250));
    let backend = PostgresStorage::<Noop>::new(pool).with_config(config).poll_with_strategy(strategy);
    let worker = WorkerBuilder::new("bench-noop").backend(backend).concurrency(CONCURRENCY).build(noop);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let handle = tokio::spawn(async move {
        let _ = worker
            .run_until(async move {
                let _ = stop_rx.await;
                Ok::<(), std::io::Error>(())
            })
            .await;
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND done_at IS NOT NULL")
            .bind(QUEUE)
            .fetch_one(pool)
            .await
            .expect("count");
        if done as u64 >= n {
            break;
        }
        assert!(Instant::now() < deadline, "apalis drained only {done}/{n} in 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    secs
}

/// `POOL` claimers, each: claim up to `BATCH` pending rows with SKIP LOCKED, run a
/// no-op per row, complete them one statement per row (or one per batch).
async fn hand_loop(pool: &PgPool, n: u64, batched_ack: bool) -> f64 {
    sqlx::query("DROP TABLE IF EXISTS bench_queue").execute(pool).await.expect("drop");
    sqlx::query(
        "CREATE TABLE bench_queue (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'pending', payload jsonb NOT NULL,
                                   lock_by text, lock_at timestamptz, done_at timestamptz)",
    )
    .execute(pool)
    .await
    .expect("create");
    sqlx::query("CREATE INDEX bench_queue_pending ON bench_queue (id) WHERE status = 'pending'")
        .execute(pool)
        .await
        .expect("index");
    sqlx::query("INSERT INTO bench_queue (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, $1) g")
        .bind(n as i64)
        .execute(pool)
        .await
        .expect("fill");
    let start = Instant::now();
    let claimers: Vec<_> = (0..POOL)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let me = format!("hand-{i}");
                loop {
                    let claimed: Vec<(i64, Value)> = sqlx::query_as(
                        "UPDATE bench_queue q SET status = 'running', lock_by = $1, lock_at = now()
                           FROM (SELECT id FROM bench_queue WHERE status = 'pending' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) c
                          WHERE q.id = c.id RETURNING q.id, q.payload",
                    )
                    .bind(&me)
                    .bind(BATCH as i64)
                    .fetch_all(&pool)
                    .await
                    .expect("claim");
                    if claimed.is_empty() {
                        return;
                    }
                    let ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
                    if batched_ack {
                        sqlx::query("UPDATE bench_queue SET status = 'done', done_at = now() WHERE id = ANY($1) AND lock_by = $2")
                            .bind(&ids)
                            .bind(&me)
                            .execute(&pool)
                            .await
                            .expect("complete");
                    } else {
                        for id in ids {
                            sqlx::query("UPDATE bench_queue SET status = 'done', done_at = now() WHERE id = $1 AND lock_by = $2")
                                .bind(id)
                                .bind(&me)
                                .execute(&pool)
                                .await
                                .expect("complete");
                        }
                    }
                }
            })
        })
        .collect();
    for c in claimers {
        c.await.expect("claimer");
    }
    let secs = start.elapsed().as_secs_f64();
    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bench_queue WHERE status = 'done'").fetch_one(pool).await.expect("count");
    assert_eq!(done as u64, n, "hand loop completed every task");
    secs
}
