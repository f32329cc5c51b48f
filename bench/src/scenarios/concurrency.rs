//! `concurrency`: 1,000 turns in flight at once on one worker process
//! (TURNSTONE_WORKER_CONCURRENCY=1000) with a 2-second simulated LLM latency.
//! Wall time runs from the first POST to the last `completed` turn row (polled
//! every 25 ms); the worker's peak RSS is its VmHWM; its database connections
//! are its own sockets to the server port.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::Ctx;
use crate::stack::{Deployment, Options, pg_connections_of, proc_kb};
use crate::stats::r2;

pub async fn run(ctx: &Ctx) -> Value {
    let n = 1000usize;
    let latency_ms = 2000;
    let d = Deployment::start(
        ctx,
        Options {
            sim_latency_ms: latency_ms,
            workers: 1,
            worker_env: vec![("TURNSTONE_WORKER_CONCURRENCY", n.to_string())],
            ..Options::default()
        },
    )
    .await;
    let worker_pid = d.workers[0].pid();
    let port = ctx.pg_port();
    let agent = d.client.agent(&["math"]).await;
    let sessions: Vec<String> = futures::stream::iter(0..n)
        .map(|_| {
            let (c, agent) = (d.client.clone(), agent.clone());
            async move {
                c.post("/v1/sessions", json!({ "agent_id": agent })).await.expect(201)["id"].as_str().expect("id").to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let rss_before = proc_kb(worker_pid, "VmRSS");
    let t0 = Instant::now();
    let posting = {
        let c = d.client.clone();
        tokio::spawn(async move {
            futures::stream::iter(sessions)
                .map(|s| {
                    let c = c.clone();
                    async move { c.say(&s, "hello").await }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await;
            Instant::now()
        })
    };
    let (mut peak_running, mut peak_conns, mut peak_db_total) = (0i64, 0usize, 0i64);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut first_completed = None;
    let done_at = loop {
        let (completed, running, total): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'running'),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())
               FROM turns",
        )
        .fetch_one(&d.admin)
        .await
        .expect("poll turns");
        peak_running = peak_running.max(running);
        peak_db_total = peak_db_total.max(total);
        peak_conns = peak_conns.max(pg_connections_of(worker_pid, port));
        if completed > 0 && first_completed.is_none() {
            first_completed = Some(t0.elapsed());
        }
        if completed as usize >= n {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "only {completed}/{n} turns completed in 180 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let posted_at = posting.await.expect("posting");
    let wall = done_at.duration_since(t0).as_secs_f64();
    let hwm = proc_kb(worker_pid, "VmHWM");
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "wall <= 2.5 s", wall <= 2.5);
    super::target(&mut targets, "bounded worker pool (<= 10 conns)", peak_conns <= 10);
    json!({
        "name": "concurrency",
        "turns": n, "llm_latency_ms": latency_ms, "worker_concurrency": n,
        "wall_s": r2(wall),
        "post_all_s": r2(posted_at.duration_since(t0).as_secs_f64()),
        "after_last_post_s": r2(done_at.duration_since(posted_at).as_secs_f64()),
        "first_completed_s": first_completed.map(|d| r2(d.as_secs_f64())),
        "peak_turns_running": peak_running,
        "worker_rss_kb": { "before": rss_before, "peak_vmhwm": hwm },
        "worker_db_connections_peak": peak_conns,
        "worker_pool_max": 10,
        "db_connections_all_processes_peak": peak_db_total,
        "targets": targets,
    })
}
