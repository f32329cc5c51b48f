//! Turns survive their workers: SIGKILL at every step boundary, random kills,
//! SIGTERM drains, and cancellation — with real worker processes.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use serde_json::Value;
use turnstone_tests::procs;
use turnstone_tests::{Client, Stack, StackOptions, TOOL_TURN};

/// The API in-process, no in-process workers: workers are child processes.
async fn stack() -> Stack {
    Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await
}

/// Asserts the log is gap-free and every step result appears once per turn.
fn assert_clean_log(events: &[Value]) {
    let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free sequence");
    let mut seen = HashMap::new();
    for e in events {
        let kind = e["type"].as_str().unwrap();
        let key = match kind {
            "output.message.completed" | "reason.started" => format!("{kind}:{}", e["data"]["iteration"]),
            "tool.started" | "tool.completed" => format!("{kind}:{}:{}", e["data"]["iteration"], e["data"]["tool_call_id"]),
            "turn.started" | "turn.completed" | "turn.failed" | "turn.cancelled" => "terminal-or-start:".to_owned() + kind,
            _ => continue,
        };
        let turn = e["turn_id"].as_str().unwrap_or_default().to_owned();
        *seen.entry((turn, key.clone())).or_insert(0) += 1;
    }
    for ((turn, key), n) in seen {
        assert_eq!(n, 1, "{key} appears {n} times in turn {turn}: {events:#?}");
    }
}

async fn crash_at(point: &str) {
    let stack = stack().await;
    let api = stack.client();
    let session = api.session(&["math"]).await;
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", point.to_owned())]);
    api.say(&session, r#"!tool math {"expression":"6*7"}"#).await;
    let code = doomed.wait().await;
    assert_eq!(code, None, "the worker died by signal at {point}");

    let _rescuer = procs::worker(&stack, &[]);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).filter(|k| *k != "session.idled").collect();
    assert_eq!(kinds, TOOL_TURN, "crash at {point}: complete, ordered, no duplicates");
    assert_clean_log(&events);
    let answer = events.iter().rev().find(|e| e["type"] == "output.message.completed").unwrap();
    assert_eq!(answer["data"]["message"]["content"][0]["text"], "tool math returned: 42");
    api.wait_for(&session, "session.idled", 1).await;
}

#[tokio::test]
async fn crash_before_llm_commit() {
    crash_at("before_llm_commit").await;
}

#[tokio::test]
async fn crash_after_llm_commit() {
    crash_at("after_llm_commit").await;
}

#[tokio::test]
async fn crash_before_tool_commit() {
    crash_at("before_tool_commit").await;
}

#[tokio::test]
async fn crash_after_tool_commit() {
    crash_at("after_tool_commit").await;
}

#[tokio::test]
async fn crash_before_seal() {
    crash_at("before_seal").await;
}

#[tokio::test]
async fn a_crash_loop_is_stopped_by_the_progress_guard() {
    let stack = stack().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "doomed").await;
    // Every worker dies before committing its (final) model step: no progress, ever.
    for _ in 0..6 {
        let mut w = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "before_seal".into())]);
        let events = api.events(&session).await;
        if events.iter().any(|e| e["type"] == "turn.failed") {
            break;
        }
        tokio::select! {
            _ = w.wait() => {}
            _ = api.wait_for(&session, "turn.failed", 1) => break,
        }
    }
    let events = api.wait_for(&session, "turn.failed", 1).await;
    let failed = events.iter().find(|e| e["type"] == "turn.failed").unwrap();
    assert_eq!(failed["data"]["error_code"], "no_progress");
    assert_clean_log(&events);
    api.wait_for(&session, "session.idled", 1).await;
}

/// A count read as the database owner.
async fn admin_count(stack: &Stack, sql: &'static str) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.db.url).await.unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

/// A worker dies right after a batched start committed, before any of the
/// batch's turns ran a step: another worker retakes every one of them, and
/// each turn is started (`turn.started`) and answered exactly once.
#[tokio::test]
async fn a_crash_right_after_a_batched_start_loses_none_of_its_turns() {
    let stack = stack().await;
    let api = stack.client();
    let mut sessions = Vec::new();
    for i in 0..8 {
        let s = api.session(&["math"]).await;
        api.say(&s, &format!(r#"!tool math {{"expression":"{i}*7"}}"#)).await;
        sessions.push(s);
    }
    // All eight are queued before it starts: one claim, and its turns start together.
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "after_batch_start".into())]);
    assert_eq!(doomed.wait().await, None, "the worker died by signal after its first batch committed");
    let started = admin_count(&stack, "SELECT count(*) FROM turns WHERE attempt > 0").await;
    assert!(started >= 1, "the batch committed before the crash");
    let _rescuer = procs::worker(&stack, &[]);
    for (i, s) in sessions.iter().enumerate() {
        let events = api.wait_for(s, "turn.completed", 1).await;
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).filter(|k| *k != "session.idled").collect();
        assert_eq!(kinds, TOOL_TURN, "complete, ordered, no duplicates");
        assert_clean_log(&events);
        let answer = events.iter().rev().find(|e| e["type"] == "output.message.completed").unwrap();
        assert_eq!(answer["data"]["message"]["content"][0]["text"], format!("tool math returned: {}", i * 7));
    }
    let retaken = admin_count(&stack, "SELECT count(*) FROM turns WHERE attempt > 1").await;
    assert_eq!(retaken, started, "every turn the dead worker started was retaken once");
}

/// Many turns, a worker SIGKILLed at random moments in a loop, then one worker
/// left to finish: every turn ends exactly once and every session idles.
/// Seed with TURNSTONE_CHAOS_SEED to reproduce a run.
#[tokio::test]
async fn random_kills_lose_nothing() {
    let seed = std::env::var("TURNSTONE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("TURNSTONE_CHAOS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stack = stack().await;
    let api = stack.client();
    let mut sessions = Vec::new();
    for i in 0..6 {
        let s = api.session(&["math"]).await;
        api.say(&s, &format!("!sleep {} first {i}", rng.random_range(50..300))).await;
        api.say(&s, &format!(r#"!tool math {{"expression":"{i}*7"}}"#)).await;
        sessions.push(s);
    }
    for _ in 0..5 {
        let mut w = procs::worker(&stack, &[]);
        tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(100..700))).await;
        w.signal("KILL");
        w.wait().await;
    }
    let _survivor = procs::worker(&stack, &[]);
    for s in &sessions {
        let events = wait_idle_with_two_turns(&api, s).await;
        assert_clean_log(&events);
        let terminal = events.iter().filter(|e| e["type"] == "turn.completed" || e["type"] == "turn.failed").count();
        assert_eq!(terminal, 2, "exactly one terminal event per turn in {s}");
        if let Some(f) = events.iter().find(|e| e["type"] == "turn.failed") {
            assert_eq!(f["data"]["error_code"], "no_progress", "only the crash-loop guard may fail a turn here");
        }
    }
}

async fn wait_idle_with_two_turns(api: &Client, session: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let events = api.events(session).await;
        let terminal = events.iter().filter(|e| matches!(e["type"].as_str(), Some("turn.completed" | "turn.failed"))).count();
        let status = api.get(&format!("/v1/sessions/{session}")).await.expect(200)["status"].clone();
        if terminal >= 2 && status == "idle" {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "session {session} did not settle: {status} {events:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_the_turn_in_flight_finish() {
    let stack = stack().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut w = procs::worker(&stack, &[]);
    api.say(&session, "!sleep 800 slow").await;
    api.wait_for(&session, "reason.started", 1).await;
    w.signal("TERM");
    assert_eq!(w.wait().await, Some(0), "a drained worker exits 0");
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_clean_log(&events);
}

#[tokio::test]
async fn a_turn_cancelled_while_its_worker_drains_stops_at_once() {
    let stack = stack().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut w = procs::worker(&stack, &[("TURNSTONE_WORKER_DRAIN_SECS", "30".into())]);
    api.say(&session, "!sleep 30000 never answered").await;
    api.wait_for(&session, "reason.started", 1).await;
    turnstone_tests::wait_until("the model call started", || stack.sim.in_flight() == 1).await;
    assert_eq!(admin_count(&stack, "SELECT count(*) FROM queue_workers WHERE accepting").await, 1);
    w.signal("TERM");
    // Draining: the worker no longer claims (nor is picked to be woken), but still hears cancellations.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while admin_count(&stack, "SELECT count(*) FROM queue_workers WHERE accepting").await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "a draining worker still accepts wake-ups");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(admin_count(&stack, "SELECT count(*) FROM queue_workers").await, 1, "its row stays while it drains");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    api.post(&format!("/v1/sessions/{session}/cancel"), serde_json::json!({})).await.expect(202);
    let events = tokio::time::timeout(std::time::Duration::from_secs(10), api.wait_for(&session, "turn.cancelled", 1))
        .await
        .expect("the cancellation waited for the drain deadline");
    assert_clean_log(&events);
    // Its last turn ended, so the drain is over long before its 30 s deadline.
    assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(10), w.wait()).await.expect("exits after the turn"), Some(0));
}

#[tokio::test]
async fn sigterm_past_the_deadline_hands_the_turn_over() {
    let stack = stack().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut w = procs::worker(&stack, &[("TURNSTONE_WORKER_DRAIN_SECS", "0.3".into())]);
    api.say(&session, "!sleep 2000 very slow").await;
    api.wait_for(&session, "reason.started", 1).await;
    w.signal("TERM");
    assert_eq!(w.wait().await, Some(0), "exits 0 after the drain deadline");
    let _next = procs::worker(&stack, &[]);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_clean_log(&events);
    assert_eq!(events.iter().filter(|e| e["type"] == "output.message.completed").count(), 1);
}

/// A remote tool is at-least-once: a worker killed after the MCP server ran the
/// tool but before its `tool.completed` committed leaves the call to be run
/// again by the next worker; the log still holds each step once.
#[tokio::test]
async fn a_crash_before_an_mcp_result_commits_runs_the_call_again() {
    let stack = stack().await;
    let api = stack.client();
    let server = turnstone_tests::mcp_server::McpServer::start().await;
    let mcp = api.post("/v1/mcp-servers", serde_json::json!({"name": "kill", "url": server.url})).await.expect(201);
    let session = api.session(&[&format!("mcp:{}", mcp["id"].as_str().unwrap())]).await;
    let allow = ("TURNSTONE_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8".to_owned());
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "before_tool_commit".into()), allow.clone()]);
    api.say(&session, r#"!tool mcp__kill__echo {"text":"twice"}"#).await;
    assert_eq!(doomed.wait().await, None, "the worker died by signal before the result committed");
    assert_eq!(server.calls(), 1);

    let _rescuer = procs::worker(&stack, &[allow]);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).filter(|k| *k != "session.idled").collect();
    assert_eq!(kinds, TOOL_TURN, "complete, ordered, no duplicate events");
    assert_clean_log(&events);
    assert_eq!(server.calls(), 2, "the call ran again: at-least-once for remote tools");
    let done = events.iter().find(|e| e["type"] == "tool.completed").unwrap();
    assert_eq!(done["data"]["result"], "twice");
}

/// sqlx 0.9.0 raised a connection's transaction depth only after `BEGIN`'s round trip, so a
/// future dropped during it (a client that disconnected: poem drops the handler) left the
/// backend inside a transaction nothing would end, and the pool handed that connection on. The
/// next request's one-round-trip write (`POST …/messages` answers 202 after it) ran inside that
/// transaction, visible to it alone, and was lost when the connection next rolled back. The
/// browser walk caught it under load; sqlx 0.9.1 claims the depth first, so the drop rolls back.
#[tokio::test]
async fn a_transaction_cancelled_while_it_begins_never_swallows_a_later_write() {
    // Arrange: a migrated database, a pool of one connection (each use reuses it), a probe table.
    let db = turnstone_tests::TestDb::new().await;
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    turnstone_core::db::migrate(&admin).await.unwrap();
    sqlx::query("CREATE TABLE cancel_probe (i int PRIMARY KEY)").execute(&admin).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&db.url).await.unwrap();
    let org = <turnstone_core::ids::OrgId as turnstone_core::ids::TypedId>::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut cut_short = 0;
    for i in 0..300 {
        // Act: the org idiom's `BEGIN`, dropped after 0–300 µs; then a write outside any transaction.
        let wait = std::time::Duration::from_micros(rng.random_range(0..300));
        if tokio::time::timeout(wait, turnstone_core::db::begin_org(&pool, org)).await.is_err() {
            cut_short += 1;
        }
        sqlx::query("INSERT INTO cancel_probe VALUES ($1)").bind(i).execute(&pool).await.unwrap();

        // Assert: another connection sees the write at once; it was not made inside a leaked transaction.
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM cancel_probe WHERE i = $1").bind(i).fetch_one(&admin).await.unwrap();
        assert_eq!(seen, 1, "write {i} ran inside a transaction a cancelled BEGIN left open ({cut_short} BEGINs cut short)");
    }
    assert!(cut_short > 0, "no BEGIN was cut short: the race was not run");
}
