//! Through a real PgBouncer in transaction mode, with fewer server connections
//! than the API's and a worker's pools together, as the production login
//! roles and without prepared statements: a tool turn, many concurrent turns,
//! a cancel, a killed worker and an SSE resume all behave as they do on a
//! direct connection. LISTEN and migrations stay on direct connections.

use serde_json::{Value, json};
use turnstone_tests::pooler::POOL_SIZE;
use turnstone_tests::{Stack, StackOptions, TOOL_TURN, procs, sequences};

const TOOL: &str = r#"!tool math {"expression":"6*7"}"#;

async fn pooled(workers: usize) -> Stack {
    Stack::start_with(StackOptions {
        workers,
        via_pgbouncer: true,
        sim: turnstone_llmsim::Config { latency_ms: 0, chunk_delay_ms: 10 },
        ..Default::default()
    })
    .await
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).filter(|k| *k != "session.idled").collect()
}

/// Backends the login role holds on the server, LISTEN connections aside (those are direct).
async fn server_backends(stack: &Stack, role: &str) -> i64 {
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2")
        .bind(&stack.db.name)
        .bind(role)
        .fetch_one(&owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn many_concurrent_turns_complete_through_a_smaller_server_pool() {
    // Arrange: the API's pool (8) and the worker's (6) share POOL_SIZE server connections per role.
    let stack = pooled(1).await;
    let api = stack.client();
    let mut sessions = Vec::new();
    for _ in 0..12 {
        sessions.push(api.session(&["math"]).await);
    }

    // Act: twelve tool turns at once, and a second message queued behind each.
    let posts = sessions.iter().map(|s| {
        let api = api.clone();
        async move {
            api.say(s, TOOL).await;
            api.say(s, "and then?").await;
        }
    });
    futures::future::join_all(posts).await;

    // Assert: every turn ran once, in order, with a gap-free log.
    for s in &sessions {
        let events = api.wait_for(s, "turn.completed", 2).await;
        let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free");
        let k = kinds(&events);
        assert_eq!(k.iter().filter(|k| **k == "tool.completed").count(), 1, "{k:?}");
        assert_eq!(k.iter().filter(|k| **k == "turn.completed").count(), 2, "{k:?}");
        let page = api.get(&format!("/v1/sessions/{s}/messages")).await.expect(200);
        let texts: Vec<&str> =
            page["data"].as_array().unwrap().iter().map(|m| m["content"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(texts, [TOOL, "", "tool math returned: 42", "and then?", "echo: and then?"]);
    }
    for role in ["turnstone_api_login", "turnstone_worker_login"] {
        let n = server_backends(&stack, role).await;
        assert!(n <= i64::from(POOL_SIZE), "{role} holds {n} server connections, the pooler allows {POOL_SIZE}");
    }
}

#[tokio::test]
async fn a_cancel_reaches_the_running_turn_through_the_pooler() {
    let stack = pooled(1).await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "!sleep 30000 never answered").await;
    api.wait_for(&session, "reason.started", 1).await;
    turnstone_tests::wait_until("the model call started", || stack.sim.in_flight() == 1).await;

    api.post(&format!("/v1/sessions/{session}/cancel"), json!({})).await.expect(202);

    let events = api.wait_for(&session, "session.idled", 1).await;
    assert_eq!(kinds(&events), ["input.message", "session.activated", "turn.started", "reason.started", "turn.cancelled"]);
    turnstone_tests::wait_until("the aborted stream was closed", || stack.sim.in_flight() == 0).await;
}

#[tokio::test]
async fn a_killed_worker_loses_nothing_through_the_pooler() {
    let stack = pooled(0).await;
    let api = stack.client();
    let session = api.session(&["math"]).await;
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "after_tool_commit".to_owned())]);
    api.say(&session, TOOL).await;
    assert_eq!(doomed.wait().await, None, "the worker died by signal");

    let _rescuer = procs::worker(&stack, &[]);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_eq!(kinds(&events), TOOL_TURN, "complete, ordered, no duplicates");
    let answer = events.iter().rev().find(|e| e["type"] == "output.message.completed").unwrap();
    assert_eq!(answer["data"]["message"]["content"][0]["text"], "tool math returned: 42");
}

#[tokio::test]
async fn an_sse_stream_resumes_with_last_event_id_through_the_pooler() {
    let stack = pooled(1).await;
    let api = stack.client();
    let session = api.session(&["math"]).await;
    let mut first = api.sse(&session, "", None).await;
    assert_eq!(first.next().await.unwrap().event, "connected");
    api.say(&session, TOOL).await;
    let seen = first.until("tool.started").await;
    drop(first);
    let last_id = seen.iter().rev().find_map(|f| f.id.clone()).unwrap();

    let mut second = api.sse(&session, "", Some(&last_id)).await;
    assert_eq!(second.next().await.unwrap().event, "connected");
    let rest = second.until("turn.completed").await;

    let mut all = sequences(&seen);
    all.extend(sequences(&rest));
    assert_eq!(all, (1..=*all.last().unwrap()).collect::<Vec<_>>(), "every stored event once, in order");
}
