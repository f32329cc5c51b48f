//! `queue_throughput`: no-op tasks per second through the task queue alone
//! (apalis-postgres, configured like `turnstone-worker`), against a minimal
//! hand-written `FOR UPDATE SKIP LOCKED` claim/complete loop on a scratch table,
//! in the same run, with the same pool size and the same claim batch.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::{PostgresStorage, Pubsub};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use turnstone_tests::TestDb;

use crate::Ctx;
use crate::stats::r2;

const QUEUE: &str = "bench_noop";
/// `turnstone-worker` defaults: 10 pooled connections, concurrency 32, claim batch min(32, 16).
const POOL: u32 = 10;
const CONCURRENCY: usize = 32;
const BATCH: usize = 16;

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
    PostgresStorage::<()>::setup(&pool).await.expect("apalis schema");

    // apalis: enqueue everything first (push_tasks, 500 per transaction), then drain.
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
    let hand_s = hand_loop(&pool, n, false).await;
    let hand_batched_s = hand_loop(&pool, n, true).await;

    let apalis_tps = n as f64 / apalis_s;
    let hand_tps = n as f64 / hand_s;
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "apalis >= 1.0 x hand-written loop", apalis_tps >= hand_tps);
    json!({
        "name": "queue_throughput",
        "tasks": n,
        "pool_connections": POOL, "concurrency": CONCURRENCY, "claim_batch": BATCH,
        "apalis_tasks_per_s": r2(apalis_tps),
        "apalis_enqueue_tasks_per_s": r2(n as f64 / enqueue_s),
        "hand_loop_tasks_per_s": r2(hand_tps),
        "hand_loop_batched_ack_tasks_per_s": r2(n as f64 / hand_batched_s),
        "ratio_apalis_to_hand_loop": r2(apalis_tps / hand_tps),
        "ratio_apalis_to_pg_baseline": ctx.baseline_tps.map(|b| (apalis_tps / b * 10000.0).round() / 10000.0),
        "targets": targets,
    })
}

/// Runs a no-op apalis worker (Pubsub + 1 s interval poll, like turnstone-worker) until all `n` are done.
async fn drain_apalis(pool: &PgPool, n: u64) -> f64 {
    let config = apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(BATCH)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(6);
    let strategy = Strategy::new().stream(Pubsub::new(pool.clone(), QUEUE.to_owned())).interval(Duration::from_millis(1000));
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
