//! `pickup`, `turn_overhead` and `turn_throughput`: turns through the real API,
//! queue and worker, observed on SSE the way a client sees them.
//!
//! Definitions (all times are client-side `Instant`s unless marked DB):
//! - POST: from just before `POST …/messages` is sent.
//! - pickup → `turn.started` on SSE: until that frame is parsed by the client.
//! - pickup → handler start (DB): `turns.started_at − input.message.ts`. Both are
//!   `now()` of their transactions (the POST's, and the first statement of
//!   `turns::start`, which is the first thing the worker's handler does), so both
//!   come from the database clock.
//! - turn overhead: POST → `turn.completed` frame parsed by the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use turnstone_core::ids::TurnId;

use serde_json::{Value, json};
use turnstone_tests::{Client, SseReader};

use crate::Ctx;
use crate::stack::{Deployment, Options, turn_of};
use crate::stats::{Samples, r2};

/// Client-side timings of one turn.
pub struct Timing {
    pub turn_id: TurnId,
    pub post_ms: f64,
    pub started_ms: f64,
    pub completed_ms: f64,
    /// Wall clock (the machine's, which the database's `now()` also reads) just
    /// before the POST was sent, and when `turn.started` was parsed.
    pub posted_at: chrono::DateTime<chrono::Utc>,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// Posts `text` and reads `sse` (already past `connected`) until this turn's `turn.completed`.
pub async fn run_turn(client: &Client, sse: &mut SseReader, session: &str, text: &str) -> Timing {
    let posted_at = chrono::Utc::now();
    let t0 = Instant::now();
    let accepted = client.say(session, text).await;
    let post_ms = ms(t0);
    let turn_id = turn_of(&accepted);
    let turn_str = accepted["turn_id"].as_str().unwrap_or_default().to_owned();
    let (mut started_ms, mut started_at) = (f64::NAN, posted_at);
    loop {
        let Some(f) = sse.next().await else { panic!("SSE ended during turn {turn_str}") };
        if f.data["turn_id"].as_str() != Some(turn_str.as_str()) {
            continue;
        }
        match f.event.as_str() {
            "turn.started" => (started_ms, started_at) = (ms(t0), chrono::Utc::now()),
            "turn.completed" => {
                return Timing { turn_id, post_ms, started_ms, completed_ms: ms(t0), posted_at, started_at };
            }
            "turn.failed" | "turn.cancelled" => panic!("turn {turn_str} ended {}: {}", f.event, f.data),
            _ => {}
        }
    }
}

pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// An SSE stream positioned after its `connected` frame.
pub async fn open_sse(client: &Client, session: &str) -> SseReader {
    let mut sse = client.sse(session, "", None).await;
    let first = sse.next().await.expect("connected frame");
    assert_eq!(first.event, "connected");
    sse
}

/// `turns.started_at − input.message.ts` in ms, per turn (DB clock).
async fn db_pickup(d: &Deployment, turns: &[TurnId]) -> Samples {
    Samples(db_marks(d, turns).await.into_iter().map(|(_, post_tx, start_tx)| (start_tx - post_tx) / 1000.0).collect())
}

/// Per turn: its id, the POST transaction's start and the worker's start
/// transaction's start (DB clock, microseconds since the epoch).
async fn db_marks(d: &Deployment, turns: &[TurnId]) -> Vec<(TurnId, f64, f64)> {
    sqlx::query_as(
        "SELECT t.id, (extract(epoch FROM e.ts) * 1e6)::float8, (extract(epoch FROM t.started_at) * 1e6)::float8
           FROM turns t JOIN events e ON e.id = t.input_event_id WHERE t.id = ANY($1)",
    )
    .bind(turns)
    .fetch_all(&d.admin)
    .await
    .expect("db marks")
}

/// Session rotation: a realistic conversation length, so the log a worker re-reads stays bounded.
const TURNS_PER_SESSION: usize = 20;

pub async fn pickup(ctx: &Ctx) -> Value {
    let n = ctx.pick(300, 1000);
    let d = Deployment::start(ctx, Options::default()).await;
    let (mut post, mut sse_started, mut ids) = (Samples::default(), Samples::default(), Vec::new());
    let mut walls = std::collections::HashMap::new();
    let mut session = String::new();
    let mut sse = None;
    let mut claims0 = None;
    for i in 0..n + 10 {
        if i % TURNS_PER_SESSION == 0 {
            session = d.session().await;
            sse = Some(open_sse(&d.client, &session).await);
        }
        if i == 10 {
            claims0 = crate::stack::claims(&d).await;
        }
        let t = run_turn(&d.client, sse.as_mut().expect("sse"), &session, "hello").await;
        if i < 10 {
            continue; // warm-up
        }
        post.push(t.post_ms);
        sse_started.push(t.started_ms);
        ids.push(t.turn_id);
        walls.insert(t.turn_id, (t.posted_at, t.started_at));
    }
    // pg_stat_statements counts a call when it ends: the last turn's claims are in.
    let claims = crate::stack::claims(&d).await.zip(claims0).map(|(b, a)| r2((b - a) as f64 / n as f64));
    let handler = db_pickup(&d, &ids).await;
    // Where the time goes, on the one clock client and database share.
    let (mut ingress, mut delivery) = (Samples::default(), Samples::default());
    for (turn, post_tx, start_tx) in db_marks(&d, &ids).await {
        let (posted, started) = walls[&turn];
        ingress.push((post_tx - posted.timestamp_micros() as f64) / 1000.0);
        delivery.push((started.timestamp_micros() as f64 - start_tx) / 1000.0);
    }
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "sse p50 <= 3 ms", sse_started.pct(50.0) <= 3.0);
    super::target(&mut targets, "sse p99 <= 10 ms", sse_started.pct(99.0) <= 10.0);
    json!({
        "name": "pickup",
        "turns": n,
        "post_to_sse_turn_started": sse_started.summary(),
        "post_to_handler_start_db": handler.summary(),
        "post_round_trip": post.summary(),
        "claims_per_turn": claims,
        "split_send_to_post_tx": ingress.summary(),
        "split_start_tx_to_sse": delivery.summary(),
        "definition": "client POST send -> turn.started parsed from SSE; handler start = turns.started_at - input.message.ts (DB clock); split_*: send -> POST transaction start -> (handler start) -> turn.started parsed, on the shared wall clock",
        "targets": targets,
    })
}

pub async fn overhead(ctx: &Ctx) -> Value {
    let n = ctx.pick(200, 1000);
    let history = ctx.pick(120, 300);
    let d = Deployment::start(ctx, Options::default()).await;
    let mut out = json!({ "name": "turn_overhead", "turns_each": n });
    for (label, text) in [("toolless", "hello"), ("one_tool", "!tool math {\"expression\":\"6*7\"}")] {
        let mut s = Samples::default();
        let mut session = String::new();
        let mut sse = None;
        for i in 0..n + 10 {
            if i % TURNS_PER_SESSION == 0 {
                session = d.session().await;
                sse = Some(open_sse(&d.client, &session).await);
            }
            let t = run_turn(&d.client, sse.as_mut().expect("sse"), &session, text).await;
            if i >= 10 {
                s.push(t.completed_ms);
            }
        }
        out[label] = s.summary();
    }
    // The same tool-less turn in one ever-growing session: the worker re-reads the whole log per step.
    let session = d.session().await;
    let mut sse = open_sse(&d.client, &session).await;
    let (mut first, mut last) = (Samples::default(), Samples::default());
    for i in 0..history {
        let t = run_turn(&d.client, &mut sse, &session, "hello").await;
        if (5..25).contains(&i) {
            first.push(t.completed_ms);
        } else if i >= history - 20 {
            last.push(t.completed_ms);
        }
    }
    out["one_session_growth"] = json!({
        "turns": history,
        "turns_5_to_24_p50_ms": r2(first.pct(50.0)),
        "last_20_p50_ms": r2(last.pct(50.0)),
        "events_in_log_at_end": d.client.events(&session).await.len(),
    });
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "toolless p50 <= 15 ms", out["toolless"]["p50_ms"].as_f64().unwrap_or(f64::MAX) <= 15.0);
    out["targets"] = Value::Object(targets);
    out
}

pub async fn throughput(ctx: &Ctx) -> Value {
    let sessions = ctx.clients;
    let warmup = Duration::from_secs(ctx.pick(2, 5));
    let window = Duration::from_secs(ctx.pick(10, 30));
    // PostgreSQL publishes a backend's transaction counts at most once a second while it is
    // busy and 10 s after it goes idle, so the counters are read only after the load has
    // paused for longer than that: nothing from before the window leaks into it, and
    // nothing of the window is missing at its end.
    let settle = Duration::from_secs(11);
    // TURNSTONE_BENCH_WORKERS: how claims and throughput change with more worker processes.
    let workers = std::env::var("TURNSTONE_BENCH_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2usize);
    let d = Deployment::start(ctx, Options { workers, ..Options::default() }).await;
    let paused = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let in_window = Arc::new(AtomicU64::new(0));
    let counted = Arc::new(AtomicU64::new(0));
    let mut drivers = Vec::new();
    for _ in 0..sessions {
        let session = d.session().await;
        let client = d.client.clone();
        let (paused, counting, stop, in_window, counted) =
            (paused.clone(), counting.clone(), stop.clone(), in_window.clone(), counted.clone());
        drivers.push(tokio::spawn(async move {
            let mut sse = open_sse(&client, &session).await;
            let mut lat = Samples::default();
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let t = run_turn(&client, &mut sse, &session, "hello").await;
                if counting.load(Ordering::Relaxed) {
                    in_window.fetch_add(1, Ordering::Relaxed);
                    lat.push(t.completed_ms);
                }
                // Every turn started after the first counter read counts, including the
                // ones finishing after the window: their commits are in the second read.
                counted.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(warmup).await;
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    let has_pgss = sqlx::query("SELECT pg_stat_statements_reset()").execute(&d.admin).await.is_ok();
    let (c0, r0) = d.xacts().await;
    let cpu0 = crate::stack::CpuUse::now(&d);
    counted.store(0, Ordering::Relaxed);
    counting.store(true, Ordering::Relaxed);
    paused.store(false, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = crate::stack::CpuUse::now(&d).since(&cpu0);
    let done = in_window.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Samples::default();
    for dr in drivers {
        if let Ok(s) = dr.await {
            lat.0.extend(s.0);
        }
    }
    let all_turns = counted.load(Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    let (c1, r1) = d.xacts().await;
    let top = if has_pgss { top_statements(&d, all_turns).await } else { Value::Null };
    let claims_per_turn = crate::stack::claims(&d).await.filter(|_| has_pgss).map(|c| r2(c as f64 / all_turns.max(1) as f64));
    let statements_per_turn =
        crate::stack::toplevel_statements(&d).await.filter(|_| has_pgss).map(|c| r2(c as f64 / all_turns.max(1) as f64));
    let tps = done as f64 / elapsed;
    let commits_per_turn = (c1 - c0) as f64 / all_turns.max(1) as f64;
    let ratio = ctx.baseline_tps.map(|b| tps / b);
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "turns/s >= 0.2 x pg_baseline", ratio.is_some_and(|r| r >= 0.2));
    super::target(&mut targets, "commits per turn <= 5", commits_per_turn <= 5.0);
    json!({
        "name": "turn_throughput",
        "sessions": sessions, "workers": workers, "window_s": r2(elapsed),
        "turns_completed": done,
        "turns_per_s": r2(tps),
        "ratio_to_pg_baseline": ratio.map(|r| (r * 10000.0).round() / 10000.0),
        "turns_counted_for_commits": all_turns,
        "commits_per_turn": r2(commits_per_turn),
        "rollbacks_per_turn": r2((r1 - r0) as f64 / all_turns.max(1) as f64),
        "claims_per_turn": claims_per_turn,
        "statements_per_turn": statements_per_turn,
        "post_to_completed_under_load": lat.summary(),
        "top_statements_per_turn": top,
        "cpu_s_in_window": cpu,
        "targets": targets,
    })
}

/// The statements with the most calls per completed turn during the window (pg_stat_statements).
async fn top_statements(d: &Deployment, turns: u64) -> Value {
    let rows = crate::stack::statements(d, false, 110, 15).await;
    let t = turns.max(1) as f64;
    Value::Array(
        rows.into_iter()
            .map(|(q, calls, total)| json!({ "calls_per_turn": r2(calls as f64 / t), "mean_ms": r2(total / calls.max(1) as f64), "query": q }))
            .collect(),
    )
}
