//! `concurrency`: 1,000 turns in flight at once on one worker process
//! (TURNSTONE_WORKER_CONCURRENCY=1000) with a 2-second simulated LLM latency.
//! The target's wall time runs from spawning the worker, with the 1,000 turns
//! already queued, to the last `completed` turn row (polled every 25 ms): the
//! turns are in flight at once, so the ideal is the LLM latency. A second
//! phase POSTs 1,000 more while the worker runs (the measure before
//! 2026-11-25 night): there the API's POST rate on these 2 CPUs adds to it.
//! The worker's peak RSS is its VmHWM; its database connections are the
//! backends its connections name it in (`pg_stat_activity.application_name`),
//! counted in the same poll (the only worker here).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::Ctx;
use crate::stack::{CpuUse, Deployment, Options, WORKER_CONNECTIONS, proc_kb};
use crate::stats::r2;

pub async fn run(ctx: &Ctx) -> Value {
    let n = 1000usize;
    let latency_ms = 2000;
    let mut d = Deployment::start(
        ctx,
        Options {
            sim_latency_ms: latency_ms,
            workers: 0,
            worker_env: vec![("TURNSTONE_WORKER_CONCURRENCY", n.to_string())],
            ..Options::default()
        },
    )
    .await;
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

    // Phase 1, the target: 1,000 turns queued at once (POSTed while no worker
    // runs), then one worker process started; wall = its spawn -> the last
    // turn completed. Process start-up counts against it.
    let t_post = Instant::now();
    post_with(&d.client, &sessions).await;
    let post_only = t_post.elapsed().as_secs_f64();
    let _ = sqlx::query("SELECT pg_stat_statements_reset()").execute(&d.admin).await;
    let cpu_before = CpuUse::now(&d);
    let t0 = Instant::now();
    d.add_worker().await;
    let registered = t0.elapsed().as_secs_f64();
    let worker_pid = d.workers[0].pid();
    let rss_before = proc_kb(worker_pid, "VmRSS");
    let in_flight = wait_completed(&d, t0, n as i64).await;
    let cpu = CpuUse::now(&d).since(&cpu_before);
    // Where phase 1's time went, on the database's clock: how long starting all
    // turns took, the first start to the first finish, and how long finishing took.
    let (start_spread, first_run, finish_spread): (f64, f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM max(started_at) - min(started_at))::float8,
                extract(epoch FROM min(finished_at) - min(started_at))::float8,
                extract(epoch FROM max(finished_at) - min(finished_at))::float8
           FROM turns WHERE status = 'completed'",
    )
    .fetch_one(&d.admin)
    .await
    .expect("spreads");
    let statements = top_by_time(&d).await;
    // Completions per 100 ms after the first start: shows whether finishing is
    // one burst or stalls (a timer, a queue) between bursts.
    let finished_per_100ms: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT (extract(epoch FROM finished_at - (SELECT min(started_at) FROM turns)) * 10)::int4 AS b, count(*)
           FROM turns WHERE status = 'completed' GROUP BY b ORDER BY b",
    )
    .fetch_all(&d.admin)
    .await
    .expect("finish histogram");

    // Phase 2, for comparison with earlier runs: the same sessions get 1,000
    // more messages POSTed while the worker runs; wall = first POST -> last completed.
    let t1 = Instant::now();
    let posting = {
        let (c, sessions) = (d.client.clone(), sessions.clone());
        tokio::spawn(async move {
            post_with(&c, &sessions).await;
            Instant::now()
        })
    };
    let with_posting = wait_completed(&d, t1, 2 * n as i64).await;
    let posted_at = posting.await.expect("posting");

    let wall = in_flight.wall;
    let hwm = proc_kb(worker_pid, "VmHWM");
    let peak_conns = in_flight.peak_conns.max(with_posting.peak_conns);
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "wall <= 2.5 s", wall <= 2.5);
    super::target(&mut targets, "bounded worker pool (<= 10 conns)", peak_conns <= 10);
    json!({
        "name": "concurrency",
        "definition": "wall_s: 1,000 turns queued at once (POSTed with no worker running), one worker process spawned; spawn -> last turn completed (polled every 25 ms). with_posting: 1,000 more POSTed while it runs; first POST -> last completed",
        "turns": n, "llm_latency_ms": latency_ms, "worker_concurrency": n,
        "wall_s": r2(wall),
        "worker_registered_s": r2(registered),
        "db_clock": { "start_spread_s": r2(start_spread), "first_start_to_first_finish_s": r2(first_run), "finish_spread_s": r2(finish_spread) },
        "finished_per_100ms_after_first_start": finished_per_100ms.iter().map(|(b, n)| json!([b, n])).collect::<Vec<_>>(),
        "first_completed_s": in_flight.first_completed.map(r2),
        "post_1000_without_worker_s": r2(post_only),
        "top_statements_by_time": statements,
        "cpu_s": cpu,
        "with_posting": {
            "wall_s": r2(with_posting.wall),
            "post_all_s": r2(posted_at.duration_since(t1).as_secs_f64()),
            "after_last_post_s": r2(with_posting.wall - posted_at.duration_since(t1).as_secs_f64()),
            "first_completed_s": with_posting.first_completed.map(r2),
        },
        "peak_turns_running": in_flight.peak_running.max(with_posting.peak_running),
        "worker_rss_kb": { "before": rss_before, "peak_vmhwm": hwm },
        "worker_db_connections_peak": peak_conns,
        "worker_pool_max": 10,
        "db_connections_all_processes_peak": in_flight.peak_db_total.max(with_posting.peak_db_total),
        "targets": targets,
    })
}

/// POSTs one message to every session, 64 at a time.
async fn post_with(c: &turnstone_tests::Client, sessions: &[String]) {
    futures::stream::iter(sessions.iter().cloned())
        .map(|s| {
            let c = c.clone();
            async move { c.say(&s, "hello").await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

/// What a phase saw while waiting for its turns.
struct Phase {
    /// Seconds from the phase's start to the last completion.
    wall: f64,
    first_completed: Option<f64>,
    peak_running: i64,
    peak_conns: i64,
    peak_db_total: i64,
}

/// Polls until `total` turns are completed (every 25 ms), tracking peaks.
async fn wait_completed(d: &Deployment, t0: Instant, total: i64) -> Phase {
    let (mut peak_running, mut peak_conns, mut peak_db_total) = (0i64, 0i64, 0i64);
    let deadline = Instant::now() + Duration::from_secs(180);
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM turns WHERE status = 'completed'")
        .fetch_one(&d.admin)
        .await
        .expect("count turns");
    let mut first_completed = None;
    loop {
        let (completed, running, all, worker): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'running'),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE $1)
               FROM turns",
        )
        .bind(WORKER_CONNECTIONS)
        .fetch_one(&d.admin)
        .await
        .expect("poll turns");
        peak_running = peak_running.max(running);
        peak_db_total = peak_db_total.max(all);
        peak_conns = peak_conns.max(worker);
        if completed > before && first_completed.is_none() {
            first_completed = Some(t0.elapsed().as_secs_f64());
        }
        if completed >= total {
            return Phase { wall: t0.elapsed().as_secs_f64(), first_completed, peak_running, peak_conns, peak_db_total };
        }
        assert!(Instant::now() < deadline, "only {completed}/{total} turns completed in 180 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Where the database's time went during phase 1: the statements with the
/// most execution time (pg_stat_statements, when preloaded), per turn.
async fn top_by_time(d: &Deployment) -> Value {
    let rows = crate::stack::statements(d, true, 90, 8).await;
    Value::Array(rows.into_iter().map(|(q, calls, total)| json!({ "calls": calls, "total_ms": r2(total), "query": q })).collect())
}
