//! The whole path: POST a message → worker → LLM simulator → event log → SSE.

use serde_json::json;
use turnstone_tests::{Stack, sequences};

#[tokio::test]
async fn quickstart_tool_turn_streams_to_completion() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&["math", "current_time"]).await;
    let mut sse = api.sse(&session, "", None).await;
    assert_eq!(sse.next().await.unwrap().event, "connected");

    let accepted = api.say(&session, r#"!tool math {"expression":"6*7"}"#).await;
    assert!(accepted["message_id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(accepted["turn_status"], "queued");

    let frames = sse.until("turn.completed").await;
    let kinds: Vec<&str> = frames.iter().filter(|f| f.id.is_some()).map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, turnstone_tests::TOOL_TURN);
    assert_eq!(sequences(&frames), (1..=10).collect::<Vec<_>>());
    let tool = frames.iter().find(|f| f.event == "tool.completed").unwrap();
    assert_eq!(tool.data["data"]["result"], "42");
    let done = frames.last().unwrap();
    assert_eq!(done.data["data"]["iterations"], 2);
    assert!(done.data["data"]["usage"]["input_tokens"].as_i64().unwrap() > 0);
    assert!(done.data["data"]["usage"]["output_tokens"].as_i64().unwrap() > 0);
    assert!(done.data["data"]["duration_ms"].as_i64().is_some());
    assert_eq!(sse.until("session.idled").await.len(), 1);

    // Messages are projections of the log.
    let messages = api.get(&format!("/v1/sessions/{session}/messages")).await.expect(200);
    let roles: Vec<&str> = messages["data"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "assistant"]);
    assert_eq!(messages["data"][2]["content"][0]["text"], "tool math returned: 42");
    assert_eq!(messages["data"][1]["tool_calls"][0]["name"], "math");
    let s = api.get(&format!("/v1/sessions/{session}")).await.expect(200);
    assert_eq!(s["status"], "idle");
    assert_eq!(s["last_sequence"], 11);
}

#[tokio::test]
async fn back_to_back_messages_run_as_ordered_non_overlapping_turns() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 2, ..Default::default() }).await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let first = api.say(&session, "!sleep 300 first").await;
    let second = api.say(&session, "second").await;
    let third = api.say(&session, "third").await;
    assert_eq!(first["turn_status"], "queued");
    assert_eq!(second["turn_status"], "pending");
    assert_eq!(third["turn_status"], "pending");

    let events = api.wait_for(&session, "turn.completed", 3).await;
    // Each turn's events lie strictly between its start and completion, turns in posting order.
    let order: Vec<String> = [&first, &second, &third].iter().map(|a| a["turn_id"].as_str().unwrap().to_owned()).collect();
    let mut current: Option<String> = None;
    let mut finished = Vec::new();
    for e in &events {
        let turn = e["turn_id"].as_str().map(str::to_owned);
        match e["type"].as_str().unwrap() {
            "turn.started" => {
                assert!(current.is_none(), "a turn started while another ran: {events:#?}");
                current = turn;
            }
            "turn.completed" => {
                assert_eq!(current, turn);
                finished.push(current.take().unwrap());
            }
            "input.message" | "session.activated" | "session.idled" => {}
            _ => assert_eq!(current, turn, "event outside its turn: {e}"),
        }
    }
    assert_eq!(finished, order);
    let texts: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "output.message.completed")
        .map(|e| e["data"]["message"]["content"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["echo: !sleep 300 first", "echo: second", "echo: third"]);
}

#[tokio::test]
async fn provider_failures_fail_the_turn_or_retry() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;

    api.say(&session, "!fail 400").await;
    let events = api.wait_for(&session, "turn.failed", 1).await;
    let failed = events.iter().find(|e| e["type"] == "turn.failed").unwrap();
    assert_eq!(failed["data"]["error_code"], "provider_bad_request");
    assert!(events.iter().all(|e| e["type"] != "output.message.completed"));
    api.wait_for(&session, "session.idled", 1).await;

    // A retryable failure is retried inside the step, then the turn completes.
    api.say(&session, "!fail 429 2").await;
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let out: Vec<_> = events.iter().filter(|e| e["type"] == "output.message.completed").collect();
    assert_eq!(out.len(), 1, "exactly one output despite retries");
    assert_eq!(out[0]["data"]["message"]["content"][0]["text"], "echo: !fail 429 2");

    // The session is usable after a failure and keeps one idle at the end.
    let s = api.get(&format!("/v1/sessions/{session}")).await.expect(200);
    assert_eq!(s["status"], "idle");
}

#[tokio::test]
async fn tool_errors_go_back_to_the_model() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&["math"]).await;
    api.say(&session, r#"!tool math {"expression":"1/0"}"#).await;
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let tool = events.iter().find(|e| e["type"] == "tool.completed").unwrap();
    assert_eq!(tool["data"]["is_error"], true);
    assert_eq!(tool["data"]["error"], "division by zero");
    let last = events.iter().rev().find(|e| e["type"] == "output.message.completed").unwrap();
    assert_eq!(last["data"]["message"]["content"][0]["text"], "tool math returned: error: division by zero");

    // A tool the agent did not enable is an error result too, not a crash.
    let plain = api.session(&[]).await;
    api.say(&plain, r#"!tool math {"expression":"1+1"}"#).await;
    let events = api.wait_for(&plain, "turn.completed", 1).await;
    let tool = events.iter().find(|e| e["type"] == "tool.completed").unwrap();
    assert_eq!(tool["data"]["is_error"], true);
}

#[tokio::test]
async fn iteration_cap_fails_the_turn() {
    let stack = Stack::start().await;
    let api = stack.client();
    let agent =
        api.post("/v1/agents", json!({"name": "capped", "capabilities": ["math"], "max_iterations": 1})).await.expect(201);
    let session = api.post("/v1/sessions", json!({"agent_id": agent["id"]})).await.expect(201);
    let session = session["id"].as_str().unwrap();
    api.say(session, r#"!tool math {"expression":"2+2"}"#).await;
    let events = api.wait_for(session, "turn.failed", 1).await;
    let failed = events.iter().find(|e| e["type"] == "turn.failed").unwrap();
    assert_eq!(failed["data"]["error_code"], "iteration_limit");
    assert_eq!(events.iter().filter(|e| e["type"] == "tool.completed").count(), 1);
}

#[tokio::test]
async fn turn_time_cap_fails_a_slow_turn() {
    let stack = Stack::start().await;
    let api = stack.client();
    let agent = api.post("/v1/agents", json!({"name": "hasty", "max_turn_secs": 1})).await.expect(201);
    let session = api.post("/v1/sessions", json!({"agent_id": agent["id"]})).await.expect(201);
    let session = session["id"].as_str().unwrap();
    api.say(session, "!sleep 30000 too slow").await;
    let events = api.wait_for(session, "turn.failed", 1).await;
    let failed = events.iter().find(|e| e["type"] == "turn.failed").unwrap();
    assert_eq!(failed["data"]["error_code"], "turn_timeout");
    turnstone_tests::wait_until("the model call was dropped", || stack.sim.in_flight() == 0).await;
    api.post("/v1/agents", json!({"name": "bad", "max_turn_secs": 0})).await.expect_problem(400, "invalid_max_turn_secs");
}

/// A worker rebuilds a turn from the session's conversation — earlier turns'
/// messages and tool results — and every event of the turn itself
/// (`events::for_turn_contexts`), not from the whole log.
#[tokio::test]
async fn a_turn_is_rebuilt_from_the_conversation_and_its_own_events() {
    use turnstone_core::events::{CONVERSATION, types};
    use turnstone_core::ids::{TurnId, TypedId};
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&["math"]).await;
    api.say(&session, r#"!tool math {"expression":"6*7"}"#).await;
    api.wait_for(&session, "turn.completed", 1).await;
    let second = api.say(&session, &"b".repeat(400)).await;
    let events = api.wait_for(&session, "turn.completed", 2).await;

    // What a worker loads for the second turn: all of it, and only the conversation of the first.
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    let turn_id = TurnId::parse(second["turn_id"].as_str().unwrap()).unwrap();
    let lease: turnstone_core::turns::Lease = sqlx::query_as(
        "SELECT id AS turn_id, org_id, session_id, attempt, input_sequence, model_id, started_at FROM turns WHERE id = $1",
    )
    .bind(turn_id)
    .fetch_one(&owner)
    .await
    .unwrap();
    let context = turnstone_core::turns::load_context(&owner, &lease).await.unwrap();
    let loaded: Vec<i64> = context.history.iter().map(|e| e.sequence).collect();
    let expected: Vec<i64> = events
        .iter()
        .filter(|e| e["turn_id"] == second["turn_id"] || CONVERSATION.contains(&e["type"].as_str().unwrap()))
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(loaded, expected);
    assert!(context.history.iter().any(|e| e.kind == types::TOOL_COMPLETED), "the first turn's tool result is kept");
    let first_started = context.history.iter().filter(|e| e.kind == types::TURN_STARTED && e.turn_id != Some(turn_id)).count();
    assert_eq!(first_started, 0, "lifecycle markers of other turns are not");

    // And the model saw it: the second turn's prompt is the first turn's last prompt plus its reply
    // and the new message (the simulator counts a token per 4 characters).
    let outputs: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "output.message.completed").collect();
    let (reply, answer) = (outputs[outputs.len() - 2], outputs[outputs.len() - 1]);
    let prompt = |e: &serde_json::Value| e["data"]["usage"]["input_tokens"].as_i64().unwrap();
    let reply_chars = reply["data"]["message"]["content"][0]["text"].as_str().unwrap().chars().count() as i64;
    let growth = prompt(answer) - prompt(reply);
    assert!((growth - (reply_chars + 400) / 4).abs() <= 2, "prompt grew by {growth} tokens for {reply_chars} + 400 characters");
}

/// With no model on the message, session or agent, and no org default, the
/// turn fails `no_model` (the endpoint is read with the turn's context).
#[tokio::test]
async fn a_turn_without_a_model_fails_no_model() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    sqlx::query("UPDATE models SET is_default = false").execute(&owner).await.unwrap();
    api.say(&session, "hello").await;
    let events = api.wait_for(&session, "turn.failed", 1).await;
    let failed = events.iter().find(|e| e["type"] == "turn.failed").unwrap();
    assert_eq!(failed["data"]["error_code"], "no_model", "{failed}");
    assert!(!events.iter().any(|e| e["type"] == "output.message.completed"), "no model was called");
}
