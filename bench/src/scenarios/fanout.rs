//! `sse_fanout`: N concurrent SSE clients on one API process while turns run.
//! Reports the API's PostgreSQL connections (its own sockets to the server port,
//! from `/proc`), its RSS per idle SSE connection (VmRSS delta / N), and
//! insert → client delivery latency (client `Utc::now()` − event `ts`, where
//! `ts` is `now()` of the appending transaction, i.e. its start).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::Ctx;
use crate::scenarios::turns::{open_sse, run_turn};
use crate::stack::{Deployment, Options, pg_connections_of, proc_kb};
use crate::stats::{Samples, r2};

pub async fn run(ctx: &Ctx) -> Value {
    let n = ctx.pick(1_000usize, 10_000);
    let sessions = 20usize;
    let window = Duration::from_secs(ctx.pick(8, 20));
    let d = Deployment::start(
        ctx,
        Options {
            workers: 1,
            // No cycling during the run; heartbeats as shipped.
            api_env: vec![("TURNSTONE_SSE_MAX_CONNECTION_SECS", "3600".into())],
            ..Options::default()
        },
    )
    .await;
    let api_pid = d.api.pid();
    let port = ctx.pg_port();
    let mut ids = Vec::new();
    for _ in 0..sessions {
        ids.push(d.session().await);
    }
    // One warm-up turn per session, so lazily-initialised state is not counted as per-connection cost.
    for s in &ids {
        let mut sse = open_sse(&d.client, s).await;
        run_turn(&d.client, &mut sse, s, "warm up").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = proc_kb(api_pid, "VmRSS");
    let conns0 = pg_connections_of(api_pid, port);

    // Open N clients, 200 at a time; each records delivery latency while `measuring`.
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(tokio::sync::Notify::new());
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http");
    let client = turnstone_tests::Client { http, ..d.client.clone() };
    let t_open = Instant::now();
    let readers: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let session = ids[i % sessions].clone();
            async move { open_sse(&client, &session).await }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let open_s = t_open.elapsed().as_secs_f64();
    let mut tasks = Vec::new();
    for mut sse in readers {
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Samples::default();
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => return lat,
                    f = sse.next() => {
                        let Some(f) = f else { return lat };
                        if f.id.is_some() && measuring.load(Ordering::Relaxed)
                            && let Some(ts) = f.data["ts"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        {
                            lat.push((chrono::Utc::now() - ts.to_utc()).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc_kb(api_pid, "VmRSS");
    let conns_idle = pg_connections_of(api_pid, port);

    // Turns: one closed-loop driver per session, for the window.
    measuring.store(true, Ordering::Relaxed);
    let driving = Arc::new(AtomicBool::new(true));
    let mut drivers = Vec::new();
    for s in ids.clone() {
        let (client, driving) = (d.client.clone(), driving.clone());
        drivers.push(tokio::spawn(async move {
            let mut sse = open_sse(&client, &s).await;
            let mut turns = 0u64;
            while driving.load(Ordering::Relaxed) {
                run_turn(&client, &mut sse, &s, "hello").await;
                turns += 1;
            }
            turns
        }));
    }
    let t0 = Instant::now();
    let (mut conns_peak, mut rss_peak) = (conns_idle, rss_idle);
    while t0.elapsed() < window {
        conns_peak = conns_peak.max(pg_connections_of(api_pid, port));
        rss_peak = rss_peak.max(proc_kb(api_pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    driving.store(false, Ordering::Relaxed);
    let mut turns = 0;
    for dr in drivers {
        turns += dr.await.unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    measuring.store(false, Ordering::Relaxed);
    let db_total: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_one(&d.admin)
        .await
        .unwrap_or(-1);
    stop.notify_waiters();
    let mut lat = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            lat.0.extend(s.0);
        }
    }
    let per_conn_kb = (rss_idle as f64 - rss0 as f64) / n as f64;
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "api db connections constant in N", conns_peak <= conns0.max(16) + 1);
    super::target(&mut targets, "<= 16 KB per idle connection", per_conn_kb <= 16.0);
    super::target(&mut targets, "delivery p99 <= 20 ms", lat.pct(99.0) <= 20.0);
    json!({
        "name": "sse_fanout",
        "clients": n, "sessions": sessions, "window_s": window.as_secs(),
        "open_clients_s": r2(open_s),
        "turns_during_window": turns,
        "api_db_connections": { "before_clients": conns0, "idle_with_clients": conns_idle, "peak_during_turns": conns_peak, "pool_max": 16 },
        "db_connections_all_processes_end": db_total,
        "api_rss_kb": { "before": rss0, "idle_with_clients": rss_idle, "peak": rss_peak },
        "api_rss_per_idle_connection_kb": r2(per_conn_kb),
        "delivery": lat.summary(),
        "deliveries_expected_approx": "turns x ~7 stored events x clients/session",
        "targets": targets,
    })
}
