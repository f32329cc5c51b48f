//! `waiting`: turns that wait for a client tool's result, at scale, on one
//! worker process of concurrency 32: every session parks (the worker holds
//! none of them), then the results resume them.
//!
//! Definitions (client-side `Instant`s):
//! - pickup: POST `…/messages` sent → `turn.started` parsed from SSE (a
//!   tool-less turn, sequential, in this run: the baseline).
//! - resume → `turn.resumed`: POST `…/tool-results` sent → `turn.resumed`
//!   parsed from SSE (the API commits it with the result).
//! - resume → worker: POST sent → the resumed turn's first worker event
//!   (`reason.started` of its next model call) parsed from SSE: the task made
//!   due in that transaction, claimed and started by the worker.
//! - rows per waiting turn: rows of `turns` (waiting), `task_queue` and
//!   unresolved `pending_calls`, divided by the waiting turns (events are
//!   the log, counted apart).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::turns::{ms, open_sse, run_turn};
use crate::Ctx;
use crate::stack::{Deployment, Options};
use crate::stats::{Samples, r2};

const LOOKUP: &str = r#"!tool lookup_order {"order_id": "A1"}"#;

async fn count(d: &Deployment, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&d.admin).await.expect("count")
}

/// Waits (at most `limit`) until `sql` counts `n`.
async fn until_count(d: &Deployment, sql: &str, n: i64, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let c = count(d, sql).await;
        if c >= n {
            return;
        }
        assert!(t0.elapsed() < limit, "only {c} of {n} after {limit:?}: {sql}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(ctx: &Ctx) -> Value {
    let sessions = ctx.pick(200, 1000);
    let sampled = ctx.pick(100, 200);
    let d = Deployment::start(ctx, Options::default()).await;
    let api = &d.client;

    // The baseline, in this run: sequential tool-less pickups.
    let mut pickup = Samples::default();
    let mut sse = None;
    let mut session = String::new();
    for i in 0..sampled + 10 {
        if i % 20 == 0 {
            session = d.session().await;
            sse = Some(open_sse(api, &session).await);
        }
        let t = run_turn(api, sse.as_mut().expect("sse"), &session, "hello").await;
        if i >= 10 {
            pickup.push(t.started_ms);
        }
    }

    // Park `sessions` turns at once on the one worker.
    let agent = api
        .post(
            "/v1/agents",
            json!({"name": "waiting bench", "client_tools": [{"name": "lookup_order", "parameters": {"type": "object"},
                                                              "timeout_secs": 3600}]}),
        )
        .await
        .expect(201)["id"]
        .clone();
    let mut ids = Vec::with_capacity(sessions);
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(64) {
        let made = futures::future::join_all(chunk.iter().map(|_| api.post("/v1/sessions", json!({"agent_id": agent})))).await;
        ids.extend(made.into_iter().map(|r| r.expect(201)["id"].as_str().unwrap().to_owned()));
    }
    let t_park = Instant::now();
    for chunk in ids.chunks(64) {
        futures::future::join_all(chunk.iter().map(|s| api.say(s, LOOKUP))).await;
    }
    until_count(&d, "SELECT count(*) FROM turns WHERE status = 'waiting'", sessions as i64, Duration::from_secs(600)).await;
    let park_wall_s = t_park.elapsed().as_secs_f64();
    let held = count(&d, "SELECT count(*) FROM task_queue WHERE status = 'running'").await;
    let waiting = count(&d, "SELECT count(*) FROM turns WHERE status = 'waiting'").await;
    let rows = count(
        &d,
        "SELECT (SELECT count(*) FROM turns WHERE status = 'waiting') + (SELECT count(*) FROM task_queue)
              + (SELECT count(*) FROM pending_calls WHERE resolved_at IS NULL)",
    )
    .await;
    let events_per_turn =
        count(&d, "SELECT count(*) FROM events e JOIN turns t ON t.id = e.turn_id WHERE t.status = 'waiting'").await;
    let bytes = count(
        &d,
        "SELECT (SELECT sum(pg_column_size(t.*)) FROM turns t WHERE status = 'waiting')::int8
              + (SELECT coalesce(sum(pg_column_size(q.*)), 0) FROM task_queue q)::int8
              + (SELECT coalesce(sum(pg_column_size(p.*)), 0) FROM pending_calls p WHERE resolved_at IS NULL)::int8",
    )
    .await;

    // Resume a sample one by one, watched on SSE.
    let (mut resumed, mut picked) = (Samples::default(), Samples::default());
    for s in &ids[..sampled] {
        let mut sse = open_sse(api, s).await;
        let pending = api.get(&format!("/v1/sessions/{s}/pending")).await.expect(200);
        let call = pending["data"][0]["tool_call_id"].clone();
        let t0 = Instant::now();
        api.post(&format!("/v1/sessions/{s}/tool-results"), json!({"results": [{"tool_call_id": call, "output": "shipped"}]}))
            .await
            .expect(200);
        loop {
            let f = sse.next().await.expect("SSE open");
            match f.event.as_str() {
                "turn.resumed" => resumed.push(ms(t0)),
                "reason.started" if f.data["data"]["iteration"] == 2 => picked.push(ms(t0)),
                "turn.completed" => break,
                "turn.failed" | "turn.cancelled" => panic!("{s}: {}", f.data),
                _ => {}
            }
        }
    }

    // Resolve the rest at once (32 clients) and time them to completion.
    let done_sql = "SELECT count(*) FROM turns WHERE status = 'completed'";
    let done_before = count(&d, done_sql).await;
    let rest = &ids[sampled..];
    let t_all = Instant::now();
    for chunk in rest.chunks(32) {
        futures::future::join_all(chunk.iter().map(|s| async move {
            let pending = api.get(&format!("/v1/sessions/{s}/pending")).await.expect(200);
            let call = pending["data"][0]["tool_call_id"].clone();
            api.post(&format!("/v1/sessions/{s}/tool-results"), json!({"results": [{"tool_call_id": call, "output": "ok"}]}))
                .await
                .expect(200);
        }))
        .await;
    }
    until_count(&d, done_sql, done_before + rest.len() as i64, Duration::from_secs(600)).await;
    let resume_all_s = t_all.elapsed().as_secs_f64();

    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "every session parks", waiting == sessions as i64);
    super::target(&mut targets, "no worker holds a waiting turn", held == 0);
    super::target(&mut targets, "resume p50 <= 1.5 x pickup p50", resumed.pct(50.0) <= 1.5 * pickup.pct(50.0));
    json!({
        "name": "waiting",
        "sessions": sessions,
        "worker_concurrency": 32,
        "park_all_wall_s": r2(park_wall_s),
        "waiting_turns": waiting,
        "tasks_held_while_waiting": held,
        "rows_per_waiting_turn": r2(rows as f64 / waiting.max(1) as f64),
        "row_bytes_per_waiting_turn": r2(bytes as f64 / waiting.max(1) as f64),
        "events_per_waiting_turn": r2(events_per_turn as f64 / waiting.max(1) as f64),
        "pickup_post_to_sse_turn_started": pickup.summary(),
        "resume_post_to_sse_turn_resumed": resumed.summary(),
        "resume_post_to_sse_worker_reason_started": picked.summary(),
        "resume_rest_wall_s": r2(resume_all_s),
        "resume_rest_turns": rest.len(),
        "definition": "pickup: POST message -> turn.started on SSE; resume: POST tool-results -> turn.resumed on SSE (committed with the result) and -> the worker's next reason.started; rows: waiting turns + task_queue + unresolved pending_calls per waiting turn",
        "targets": targets,
    })
}
