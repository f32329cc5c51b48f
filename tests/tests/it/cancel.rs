//! Cancellation travels through PostgreSQL, aborts the model stream, and leaves a clean log.

use serde_json::json;
use turnstone_tests::Stack;

#[tokio::test]
async fn cancel_aborts_a_slow_stream_and_queued_messages_still_run() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "!sleep 30000 never answered").await;
    api.say(&session, "after").await;
    api.wait_for(&session, "reason.started", 1).await;
    // `reason.started` commits just before the call: wait until the model is really answering.
    turnstone_tests::wait_until("the model call started", || stack.sim.in_flight() == 1).await;

    let r = api.post(&format!("/v1/sessions/{session}/cancel"), json!({})).await.expect(202);
    assert_eq!(r["state"], "cancelling");
    let events = api.wait_for(&session, "turn.cancelled", 1).await;
    // The 30 s model call was dropped, not awaited.
    assert!(events.iter().all(|e| e["data"]["message"]["content"][0]["text"] != "echo: !sleep 30000 never answered"));
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // The second message may land before or after the first turn starts; it always precedes its own turn.
    let inputs: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == "input.message").collect();
    let starts: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == "turn.started").collect();
    assert_eq!((inputs.len(), starts.len()), (2, 2), "{kinds:?}");
    assert!(inputs[0] == 0 && inputs[1] < starts[1], "{kinds:?}");
    let rest: Vec<&str> = kinds.iter().copied().filter(|k| *k != "input.message").collect();
    assert_eq!(
        rest,
        [
            "session.activated",
            "turn.started",
            "reason.started",
            "turn.cancelled",
            "turn.started",
            "reason.started",
            "output.message.completed",
            "turn.completed",
            "session.idled"
        ]
    );
    turnstone_tests::wait_until("the aborted stream was closed", || stack.sim.in_flight() == 0).await;
    api.post(&format!("/v1/sessions/{session}/cancel"), json!({})).await.expect_problem(409, "session_idle");
}

#[tokio::test]
async fn cancel_all_drops_the_queue_too() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "!sleep 30000 one").await;
    api.say(&session, "two").await;
    api.say(&session, "three").await;
    api.wait_for(&session, "reason.started", 1).await;
    let r = api.post(&format!("/v1/sessions/{session}/cancel?all=true"), json!({})).await.expect(202);
    assert_eq!(r["pending_cancelled"].as_array().unwrap().len(), 2);
    let events = api.wait_for(&session, "session.idled", 1).await;
    assert_eq!(events.iter().filter(|e| e["type"] == "turn.cancelled").count(), 3);
    assert!(events.iter().all(|e| e["type"] != "turn.completed"));
    let s = api.get(&format!("/v1/sessions/{session}")).await.expect(200);
    assert_eq!(s["status"], "idle");
}
