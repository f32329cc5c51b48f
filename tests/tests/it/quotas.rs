//! Per-org quotas and the per-key rate limit, set by the operator, enforced in PostgreSQL.

use serde_json::json;
use turnstone_tests::Stack;

async fn default_org(stack: &Stack) -> String {
    let orgs = stack.operator().get("/v1/orgs").await.expect(200);
    orgs["data"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn agent_and_session_quotas_are_enforced() {
    let stack = Stack::start().await;
    let api = stack.client();
    let org = default_org(&stack).await;
    let o = stack.operator().patch(&format!("/v1/orgs/{org}"), json!({"max_agents": 1, "max_sessions": 1})).await.expect(200);
    assert_eq!(o["max_agents"], 1);
    let first = api.agent(&[]).await;
    api.post("/v1/agents", json!({"name": "two"})).await.expect_problem(403, "quota_exceeded");
    // Archiving frees the slot; nothing was created by the refused request.
    api.delete(&format!("/v1/agents/{first}")).await.expect(200);
    let second = api.agent(&[]).await;
    api.post("/v1/sessions", json!({"agent_id": second})).await.expect(201);
    api.post("/v1/sessions", json!({"agent_id": second})).await.expect_problem(403, "quota_exceeded");
    assert_eq!(api.get("/v1/sessions").await.expect(200)["data"].as_array().unwrap().len(), 1);
    stack.operator().patch(&format!("/v1/orgs/{org}"), json!({"max_agents": -1})).await.expect_problem(400, "invalid_body");
}

#[tokio::test]
async fn concurrent_turns_are_capped_but_queues_still_grow() {
    let stack = Stack::start().await;
    let api = stack.client();
    let org = default_org(&stack).await;
    stack.operator().patch(&format!("/v1/orgs/{org}"), json!({"max_concurrent_turns": 1})).await.expect(200);
    let busy = api.session(&[]).await;
    let other = api.session(&[]).await;
    api.say(&busy, "!sleep 30000 busy").await;
    let refused = api.post(&format!("/v1/sessions/{other}/messages"), json!({"content": [{"type": "text", "text": "hi"}]})).await;
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    refused.expect_problem(429, "too_many_concurrent_turns");
    assert!(api.events(&other).await.is_empty(), "the refused message changed nothing");
    // Queueing behind the running turn is never refused.
    api.say(&busy, "next").await;
    api.wait_for(&busy, "reason.started", 1).await;
    api.post(&format!("/v1/sessions/{busy}/cancel"), json!({})).await.expect(202);
    api.wait_for(&busy, "turn.completed", 1).await;
    api.wait_for(&busy, "session.idled", 1).await;
    api.say(&other, "now there is room").await;
    api.wait_for(&other, "turn.completed", 1).await;
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() {
    let stack = Stack::start().await;
    let api = stack.client();
    let org = default_org(&stack).await;
    stack.operator().patch(&format!("/v1/orgs/{org}"), json!({"rate_limit_per_minute": 3})).await.expect(200);
    let other = api.post("/v1/api-keys", json!({"name": "other"})).await.expect(201);
    let mut limited = None;
    for _ in 0..6 {
        let r = api.get("/v1/agents").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let limited = limited.expect("the fourth request within a minute is limited");
    let secs: u32 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs));
    limited.expect_problem(429, "rate_limited");
    // The limit is per key: another key of the org still works.
    api.with_key(other["key"].as_str().unwrap()).get("/v1/agents").await.expect(200);
}
