//! Invariant 9: bad input gets a clear RFC 9457 error with a stable code, never a 5xx, and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};
use turnstone_tests::{Client, Reply, Stack};

/// Sends raw bytes with a content type (the key is attached by [`Client::send`]).
async fn raw(api: &Client, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    api.send(api.http.request(method, format!("{}{path}", api.base)).header("content-type", content_type).body(body)).await
}

/// POST with an `Idempotency-Key`.
async fn post_keyed(api: &Client, path: &str, key: &str, body: &Value) -> Reply {
    api.send(api.http.post(format!("{}{path}", api.base)).header("Idempotency-Key", key).json(body)).await
}

/// Asserts a 400 problem+json with some non-empty code; returns the code.
#[track_caller]
fn expect_400(reply: Reply) -> String {
    assert_eq!(reply.status, 400, "expected 400; body: {}", reply.body);
    assert_eq!(reply.content_type, "application/problem+json", "problem content type; body: {}", reply.body);
    assert_eq!(reply.body["status"], 400);
    let code = reply.body["code"].as_str().unwrap_or_default().to_owned();
    assert!(!code.is_empty(), "a stable code; body: {}", reply.body);
    assert!(
        reply.body["detail"].is_string() && reply.body["title"].is_string() && reply.body["type"].is_string(),
        "RFC 9457 fields: {}",
        reply.body
    );
    code
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().expect("data").iter().map(|x| x["id"].as_str().expect("id").to_owned()).collect()
}

async fn agent_ids(api: &Client) -> Vec<String> {
    ids(&api.get("/v1/agents?include_archived=true&limit=200").await.expect(200))
}

async fn session_ids(api: &Client) -> Vec<String> {
    ids(&api.get("/v1/sessions?limit=200").await.expect(200))
}

/// A path-shaped id of this kind that exists nowhere.
fn absent(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn malformed_agent_bodies_are_400_and_create_nothing() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let post = |body: &'static str| raw(&api, Method::POST, "/v1/agents", "application/json", body.as_bytes().to_vec());

    // Syntax and schema errors rejected before the handler runs.
    post(r#"{"name": "x""#).await.expect_problem(400, "invalid_body");
    post("").await.expect_problem(400, "invalid_body");
    post(r#"{"name": "x", "colour": "red"}"#).await.expect_problem(400, "invalid_body");
    post(r#"{"system_prompt": "no name"}"#).await.expect_problem(400, "invalid_body");
    post(r#"{"name": ["x"]}"#).await.expect_problem(400, "invalid_body");
    post(r#"{"name": null}"#).await.expect_problem(400, "invalid_body");
    post(r#"[{"name": "x"}]"#).await.expect_problem(400, "invalid_body");
    post(r#"{"name": "x", "max_iterations": "5"}"#).await.expect_problem(400, "invalid_body");
    post(r#"{"name": "x", "max_iterations": 1e30}"#).await.expect_problem(400, "invalid_body");
    post(r#"{"name": "x", "max_iterations": 99999999999999999999999999}"#).await.expect_problem(400, "invalid_body");
    post(r#"{"name": "x", "max_iterations": 1.5}"#).await.expect_problem(400, "invalid_body");
    raw(&api, Method::POST, "/v1/agents", "text/plain", br#"{"name": "x"}"#.to_vec())
        .await
        .expect_problem(415, "unsupported_media_type");
    raw(&api, Method::POST, "/v1/agents", "application/x-www-form-urlencoded", b"name=x".to_vec())
        .await
        .expect_problem(415, "unsupported_media_type");

    // Invalid UTF-8 inside a JSON string.
    let mut bad_utf8 = br#"{"name": ""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    bad_utf8.extend_from_slice(br#""}"#);
    expect_400(raw(&api, Method::POST, "/v1/agents", "application/json", bad_utf8).await);

    // 10 000 nested arrays must not overflow a stack or become a 5xx.
    let deep = format!(r#"{{"name": "x", "tags": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    expect_400(raw(&api, Method::POST, "/v1/agents", "application/json", deep.into_bytes()).await);
    let deep_unknown = format!(r#"{{"name": "x", "extra": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    expect_400(raw(&api, Method::POST, "/v1/agents", "application/json", deep_unknown.into_bytes()).await);

    // Validation of well-formed bodies.
    let rejected = [
        (json!({"name": "x".repeat(201)}), None),
        (json!({"name": ""}), None),
        (json!({"name": "   "}), Some("invalid_field")),
        (json!({"name": "x", "system_prompt": "p".repeat(100_001)}), None),
        (json!({"name": "x", "tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}), None),
        (json!({"name": "x", "tags": ["has space"]}), Some("invalid_tag")),
        // Over-long tags fail the documented schema limit (maxLength 64) before the tag rules.
        (json!({"name": "x", "tags": ["t".repeat(65)]}), Some("invalid_body")),
        (json!({"name": "x", "tags": ["dup", "dup"]}), Some("invalid_tag")),
        (json!({"name": "x", "capabilities": ["shell_everything"]}), Some("unknown_capability")),
        (json!({"name": "x", "capabilities": ["math", "math"]}), Some("unknown_capability")),
        (json!({"name": "x", "max_iterations": 0}), Some("invalid_max_iterations")),
        (json!({"name": "x", "max_iterations": 101}), Some("invalid_max_iterations")),
        (json!({"name": "x", "model_id": "ses_0190a0a0a0a0a0a0a0a0a0a0a0a0a0a0"}), Some("invalid_id")),
        (json!({"name": "x", "model_id": "mdl_nothex"}), Some("invalid_id")),
    ];
    for (body, code) in rejected {
        let reply = api.post("/v1/agents", body.clone()).await;
        let got = expect_400(reply);
        if let Some(code) = code {
            assert_eq!(got, code, "for body {}", &body.to_string()[..body.to_string().len().min(200)]);
        }
    }
    // A well-formed model id that does not exist.
    api.post("/v1/agents", json!({"name": "x", "model_id": absent("mdl")})).await.expect_problem(404, "not_found");

    // Nothing was created by any of the above.
    assert_eq!(agent_ids(&api).await, Vec::<String>::new());
}

/// poem-openapi's `String` accepts JSON numbers and booleans and stringifies
/// them; a wrongly typed field must be a 400 like any other type mismatch.
#[tokio::test]
async fn numbers_and_booleans_are_not_accepted_as_strings() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let agents_before = agent_ids(&api).await;

    api.post("/v1/agents", json!({"name": 42})).await.expect_problem(400, "invalid_body");
    api.post("/v1/agents", json!({"name": true})).await.expect_problem(400, "invalid_body");
    api.post("/v1/agents", json!({"name": "x", "tags": [1, 2]})).await.expect_problem(400, "invalid_body");
    api.post("/v1/agents", json!({"name": "x", "system_prompt": 3.5})).await.expect_problem(400, "invalid_body");
    api.post("/v1/providers", json!({"name": "p", "base_url": "https://x/v1", "api_key": 12345}))
        .await
        .expect_problem(400, "invalid_body");
    api.post(&format!("/v1/sessions/{session}/messages"), json!({"content": [{"type": "text", "text": 5}]}))
        .await
        .expect_problem(400, "invalid_body");

    assert_eq!(agent_ids(&api).await, agents_before);
    assert_eq!(ids(&api.get("/v1/providers").await.expect(200)).len(), 1, "only the bootstrap provider");
    assert_eq!(api.events(&session).await, Vec::<Value>::new());
}

/// A provider key is sent as `Authorization: Bearer <key>`: one that cannot be a header value
/// would make every turn using it fail, so it is refused up front, and its value never echoed.
#[tokio::test]
async fn provider_keys_that_cannot_be_sent_as_a_header_are_400() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let base_url = stack.sim.base_url();
    let unsendable = ["abc\u{1}def", "sk-live\r\nX-Injected: 1", "sk live", "sk-\u{e9}t\u{e9}", "", "sk-\u{7f}"];

    for key in unsendable {
        let reply = api.post("/v1/providers", json!({"name": "p", "base_url": base_url, "api_key": key})).await;
        let body = reply.expect_problem(400, "invalid_api_key");
        assert!(key.is_empty() || !body["detail"].as_str().unwrap().contains(key), "the key is not echoed: {body}");
    }
    assert_eq!(ids(&api.get("/v1/providers").await.expect(200)).len(), 1, "only the bootstrap provider");

    let created =
        api.post("/v1/providers", json!({"name": "p", "base_url": base_url, "api_key": "sk-good_Key.1~"})).await.expect(201);
    let path = format!("/v1/providers/{}", created["id"].as_str().unwrap());
    for key in unsendable {
        api.patch(&path, json!({"api_key": key, "name": "renamed"})).await.expect_problem(400, "invalid_api_key");
    }
    let unchanged = api.get(&path).await.expect(200);
    assert_eq!((&unchanged["name"], &unchanged["has_api_key"]), (&json!("p"), &json!(true)), "a rejected PATCH changes nothing");
}

#[tokio::test]
async fn oversized_bodies_are_413_and_create_nothing() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let agents_before = agent_ids(&api).await;

    let big = json!({"name": "x", "system_prompt": "p".repeat(1024 * 1024 + 10)});
    api.post("/v1/agents", big).await.expect_problem(413, "payload_too_large");
    let big_message = json!({"content": [{"type": "text", "text": "m".repeat(1024 * 1024 + 10)}]});
    api.post(&format!("/v1/sessions/{session}/messages"), big_message).await.expect_problem(413, "payload_too_large");
    // Also on PATCH, and when the body is not even JSON.
    let agent = &agents_before[0];
    api.patch(&format!("/v1/agents/{agent}"), json!({"system_prompt": "p".repeat(2 * 1024 * 1024)}))
        .await
        .expect_problem(413, "payload_too_large");
    raw(&api, Method::POST, "/v1/agents", "application/json", vec![b' '; 3 * 1024 * 1024])
        .await
        .expect_problem(413, "payload_too_large");

    assert_eq!(agent_ids(&api).await, agents_before);
    assert_eq!(api.events(&session).await, Vec::<Value>::new());
    let a = api.get(&format!("/v1/agents/{agent}")).await.expect(200);
    assert_eq!(a["system_prompt"], "Be brief.");

    // Just under the limit (ten maximal parts, about 1.0 MB) is accepted.
    let parts: Vec<Value> = (0..10).map(|_| json!({"type": "text", "text": "m".repeat(100_000)})).collect();
    api.post(&format!("/v1/sessions/{session}/messages"), json!({"content": parts})).await.expect(202);
}

#[tokio::test]
async fn bad_messages_are_rejected_and_leave_the_log_unchanged() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "first").await;
    let before = api.wait_for(&session, "session.idled", 1).await;
    let path = format!("/v1/sessions/{session}/messages");

    let rejected = [
        (json!({"content": []}), None),
        (json!({}), None),
        (json!({"content": "just a string"}), None),
        (json!({"content": [{"type": "image", "url": "http://x"}]}), None),
        (json!({"content": [{"type": "text"}]}), None),
        (json!({"content": [{"type": "text", "text": ""}]}), None),
        (json!({"content": [{"type": "text", "text": "hi", "bold": true}]}), None),
        (json!({"content": [{"type": "text", "text": "hi"}], "priority": 1}), None),
        (json!({"content": [{"type": "text", "text": "x".repeat(100_001)}]}), None),
        (json!({"content": (0..33).map(|_| json!({"type": "text", "text": "x"})).collect::<Vec<_>>()}), None),
        (
            json!({"content": [{"type": "text", "text": "hi"}], "controls": {"model_id": "agt_0190a0a0a0a0a0a0a0a0a0a0a0a0a0a0"}}),
            Some("invalid_id"),
        ),
        (json!({"content": [{"type": "text", "text": "hi"}], "controls": {"temperature": 2}}), Some("invalid_body")),
    ];
    for (body, code) in rejected {
        let got = expect_400(api.post(&path, body.clone()).await);
        if let Some(code) = code {
            assert_eq!(got, code, "for body {body}");
        }
    }
    raw(&api, Method::POST, &path, "text/plain", b"hello".to_vec()).await.expect_problem(415, "unsupported_media_type");
    raw(&api, Method::POST, &path, "application/json", b"{\"content\": [".to_vec()).await.expect_problem(400, "invalid_body");
    let mut bad_utf8 = br#"{"content": [{"type": "text", "text": ""#.to_vec();
    bad_utf8.extend_from_slice(&[0xc0, 0xaf, 0xed, 0xa0, 0x80]);
    bad_utf8.extend_from_slice(br#""}]}"#);
    expect_400(raw(&api, Method::POST, &path, "application/json", bad_utf8).await);
    let deep = format!(r#"{{"content": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    expect_400(raw(&api, Method::POST, &path, "application/json", deep.into_bytes()).await);
    // A well-formed model override that does not exist is a 404, and also stores nothing.
    api.post(&path, json!({"content": [{"type": "text", "text": "hi"}], "controls": {"model_id": absent("mdl")}}))
        .await
        .expect_problem(404, "not_found");
    // Messages to a session that does not exist / with a wrong prefix.
    api.post(&format!("/v1/sessions/{}/messages", absent("ses")), json!({"content": [{"type": "text", "text": "hi"}]}))
        .await
        .expect_problem(404, "not_found");
    api.post(&format!("/v1/sessions/{}/messages", absent("agt")), json!({"content": [{"type": "text", "text": "hi"}]}))
        .await
        .expect_problem(400, "invalid_id");

    assert_eq!(api.events(&session).await, before, "rejected messages must not touch the log");
    let s = api.get(&format!("/v1/sessions/{session}")).await.expect(200);
    assert_eq!(s["status"], "idle");
    assert_eq!(s["last_sequence"], before.len());
    let messages = api.get(&path).await.expect(200);
    assert_eq!(messages["data"].as_array().unwrap().len(), 2, "one user and one assistant message: {messages}");
}

#[tokio::test]
async fn ids_are_checked_for_prefix_then_existence() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let agent = api.agent(&[]).await;
    let sessions_before = session_ids(&api).await;

    // Wrong prefix, wrong length, not hex — in the path.
    let wrong_paths = [
        format!("/v1/agents/{}", absent("ses")),
        "/v1/agents/agt_123".to_owned(),
        format!("/v1/agents/agt_{}", "z".repeat(32)),
        format!("/v1/agents/{}", agent.replace("agt_", "AGT_")),
        format!("/v1/sessions/{agent}"),
        format!("/v1/sessions/{agent}/events"),
        format!("/v1/sessions/{agent}/messages"),
        format!("/v1/providers/{}", absent("mdl")),
        format!("/v1/models/{}", absent("prv")),
    ];
    for path in &wrong_paths {
        api.get(path).await.expect_problem(400, "invalid_id");
    }
    api.delete(&format!("/v1/agents/{}", absent("ses"))).await.expect_problem(400, "invalid_id");
    api.patch(&format!("/v1/agents/{}", absent("ses")), json!({"name": "y"})).await.expect_problem(400, "invalid_id");

    // Wrong prefix in the body: an agent id given as a session id.
    let as_session = agent.replacen("agt_", "ses_", 1);
    api.post("/v1/sessions", json!({"agent_id": as_session})).await.expect_problem(400, "invalid_id");
    api.post("/v1/sessions", json!({"agent_id": agent, "model_id": agent})).await.expect_problem(400, "invalid_id");
    api.post("/v1/models", json!({"provider_id": agent, "name": "m"})).await.expect_problem(400, "invalid_id");
    // Wrong prefix in a query cursor.
    api.get(&format!("/v1/agents?after={}", absent("ses"))).await.expect_problem(400, "invalid_id");
    api.get(&format!("/v1/sessions?agent_id={}", absent("ses"))).await.expect_problem(400, "invalid_id");

    // Well-formed ids that exist nowhere.
    for path in [
        format!("/v1/agents/{}", absent("agt")),
        format!("/v1/sessions/{}", absent("ses")),
        format!("/v1/sessions/{}/events", absent("ses")),
        format!("/v1/sessions/{}/messages", absent("ses")),
        format!("/v1/sessions/{}/sse", absent("ses")),
        format!("/v1/providers/{}", absent("prv")),
        format!("/v1/models/{}", absent("mdl")),
    ] {
        api.get(&path).await.expect_problem(404, "not_found");
    }
    api.delete(&format!("/v1/agents/{}", absent("agt"))).await.expect_problem(404, "not_found");
    api.delete(&format!("/v1/providers/{}", absent("prv"))).await.expect_problem(404, "not_found");
    api.patch(&format!("/v1/agents/{}", absent("agt")), json!({"name": "y"})).await.expect_problem(404, "not_found");
    api.post("/v1/sessions", json!({"agent_id": absent("agt")})).await.expect_problem(404, "not_found");
    api.post("/v1/sessions", json!({"agent_id": agent, "model_id": absent("mdl")})).await.expect_problem(404, "not_found");
    api.post("/v1/models", json!({"provider_id": absent("prv"), "name": "m"})).await.expect_problem(404, "not_found");

    // Session bodies are validated too.
    api.post("/v1/sessions", json!({"agent_id": agent, "title": "t".repeat(501)})).await.expect_problem(400, "invalid_body");
    api.post("/v1/sessions", json!({"agent_id": agent, "tags": ["no spaces please"]})).await.expect_problem(400, "invalid_tag");
    api.post("/v1/sessions", json!({"agent_id": agent, "owner": "me"})).await.expect_problem(400, "invalid_body");
    api.post("/v1/sessions", json!({})).await.expect_problem(400, "invalid_body");

    assert_eq!(session_ids(&api).await, sessions_before);
    assert_eq!(agent_ids(&api).await, vec![agent.clone()]);
    let a = api.get(&format!("/v1/agents/{agent}")).await.expect(200);
    assert_eq!(a["name"], "test agent");
    assert!(a["archived_at"].is_null());
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let other = api.session(&[]).await;
    api.say(&other, "hello").await;
    let other_events = api.wait_for(&other, "session.idled", 1).await;

    let messages = format!("/v1/sessions/{session}/messages");
    for list in ["/v1/agents", "/v1/sessions", "/v1/providers", "/v1/models", messages.as_str()] {
        api.get(&format!("{list}?limit=0")).await.expect_problem(400, "invalid_limit");
        api.get(&format!("{list}?limit=201")).await.expect_problem(400, "invalid_limit");
        api.get(&format!("{list}?limit=100000")).await.expect_problem(400, "invalid_limit");
        expect_400(api.get(&format!("{list}?limit=-1")).await);
        expect_400(api.get(&format!("{list}?limit=abc")).await);
        expect_400(api.get(&format!("{list}?limit=99999999999999999999")).await);
        api.get(&format!("{list}?limit=200")).await.expect(200);
    }
    let events = format!("/v1/sessions/{session}/events");
    api.get(&format!("{events}?limit=0")).await.expect_problem(400, "invalid_limit");
    api.get(&format!("{events}?limit=100000")).await.expect_problem(400, "invalid_limit");
    api.get(&format!("{events}?limit=1000")).await.expect(200);
    api.get(&format!("{events}?after_sequence=-1")).await.expect_problem(400, "invalid_after_sequence");
    api.get(&format!("/v1/sessions/{session}/messages?after_sequence=-5")).await.expect_problem(400, "invalid_after_sequence");
    expect_400(api.get(&format!("{events}?after_sequence=1e30")).await);
    expect_400(api.get(&format!("{events}?after_sequence=99999999999999999999999")).await);
    api.get(&format!("{events}?types=turn.exploded")).await.expect_problem(400, "unknown_event_type");
    api.get(&format!("{events}?types=turn.completed,nope")).await.expect_problem(400, "unknown_event_type");
    api.get(&format!("{events}?types=output.message.delta")).await.expect_problem(400, "unknown_event_type");
    api.get(&format!("{events}?types=turn.completed&types=input.message")).await.expect(200);
    expect_400(api.get("/v1/agents?include_archived=maybe").await);
    api.get(&format!("/v1/agents?tag={}", "t".repeat(65))).await.expect_problem(400, "invalid_tag");

    // SSE: resuming from an event of another session, or from a non-event id.
    let foreign = other_events[0]["id"].as_str().unwrap();
    let sse = format!("/v1/sessions/{session}/sse");
    api.get(&format!("{sse}?since_id={foreign}")).await.expect_problem(400, "unknown_event_id");
    api.get(&format!("{sse}?since_id={}", absent("evt"))).await.expect_problem(400, "unknown_event_id");
    api.get(&format!("{sse}?since_id={session}")).await.expect_problem(400, "invalid_id");
    let with_header = api.http.get(format!("{}{sse}", api.base)).header("Last-Event-ID", foreign);
    api.send(with_header).await.expect_problem(400, "unknown_event_id");

    // Nothing above touched either log.
    assert_eq!(api.events(&session).await, Vec::<Value>::new());
    assert_eq!(api.events(&other).await, other_events);
}

#[tokio::test]
async fn unknown_routes_methods_and_keys_are_problems() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();

    api.get("/v1/nope").await.expect_problem(404, "route_not_found");
    api.get("/v2/agents").await.expect_problem(404, "route_not_found");
    api.post("/v1/agents/too/deep", json!({})).await.expect_problem(404, "route_not_found");
    api.send(api.http.put(format!("{}/v1/agents", api.base)).json(&json!({"name": "x"})))
        .await
        .expect_problem(405, "method_not_allowed");

    // No key, an unknown key, a malformed key, the wrong scheme.
    let http = reqwest::Client::new();
    let no_key = http.get(format!("{}/v1/agents", api.base)).send().await.unwrap();
    assert_eq!(no_key.status().as_u16(), 401);
    assert_eq!(no_key.headers()["content-type"], "application/problem+json");
    let body: Value = no_key.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    let no_key_post = http.post(format!("{}/v1/agents", api.base)).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(no_key_post.status().as_u16(), 401);
    let basic = http.get(format!("{}/v1/agents", api.base)).basic_auth("user", Some("pw")).send().await.unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    for key in [
        turnstone_tests::api_key(),
        "sk-not-ours".to_owned(),
        "ts_".to_owned(),
        "ts_live_".to_owned() + &"a".repeat(300),
        String::new(),
    ] {
        let bad = api.with_key(&key);
        bad.get("/v1/agents").await.expect_problem(401, "unauthorized");
        bad.post("/v1/agents", json!({"name": "x"})).await.expect_problem(401, "unauthorized");
    }
    // Authentication is checked before the body: a bad body with a bad key is still a 401.
    api.with_key("nope").post("/v1/agents", json!({"colour": "red"})).await.expect_problem(401, "unauthorized");

    assert_eq!(agent_ids(&api).await, Vec::<String>::new());
    // The open endpoints need no key.
    assert_eq!(http.get(format!("{}/health", api.base)).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn idempotency_key_replays_creations_and_rejects_reuse() {
    let stack = Stack::start().await;
    let api = stack.client();
    let body = json!({"name": "idem", "system_prompt": "Be brief.", "tags": ["a"]});

    // Same key, same body: one agent.
    let first = post_keyed(&api, "/v1/agents", "agent-key-1", &body).await.expect(201);
    let second = post_keyed(&api, "/v1/agents", "agent-key-1", &body).await.expect(201);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first, second, "the replay is the stored first response");
    assert_eq!(agent_ids(&api).await, vec![first["id"].as_str().unwrap().to_owned()]);

    // Same key, different body: 422, and nothing new.
    post_keyed(&api, "/v1/agents", "agent-key-1", &json!({"name": "other"})).await.expect_problem(422, "idempotency_key_reused");
    // Same key on another operation is also a different request.
    post_keyed(&api, "/v1/sessions", "agent-key-1", &json!({"agent_id": first["id"]}))
        .await
        .expect_problem(422, "idempotency_key_reused");
    // Invalid keys.
    post_keyed(&api, "/v1/agents", &"k".repeat(256), &body).await.expect_problem(400, "invalid_idempotency_key");
    post_keyed(&api, "/v1/agents", "", &body).await.expect_problem(400, "invalid_idempotency_key");
    post_keyed(&api, "/v1/agents", "has space", &body).await.expect_problem(400, "invalid_idempotency_key");
    post_keyed(&api, "/v1/agents", &"k".repeat(255), &json!({"name": "max key"})).await.expect(201);
    // A rejected body with a key does not burn the key.
    post_keyed(&api, "/v1/agents", "agent-key-2", &json!({"name": "x", "capabilities": ["nope"]}))
        .await
        .expect_problem(400, "unknown_capability");
    let retried = post_keyed(&api, "/v1/agents", "agent-key-2", &json!({"name": "x"})).await.expect(201);
    assert_eq!(agent_ids(&api).await.len(), 3);
    assert!(agent_ids(&api).await.contains(&retried["id"].as_str().unwrap().to_owned()));

    // Messages: same key twice is one message and one turn.
    let session = api.post("/v1/sessions", json!({"agent_id": first["id"]})).await.expect(201)["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/sessions/{session}/messages");
    let msg = json!({"content": [{"type": "text", "text": "once"}]});
    let m1 = post_keyed(&api, &path, "msg-key-1", &msg).await.expect(202);
    let m2 = post_keyed(&api, &path, "msg-key-1", &msg).await.expect(202);
    assert_eq!(m1["message_id"], m2["message_id"]);
    assert_eq!(m1["turn_id"], m2["turn_id"]);
    post_keyed(&api, &path, "msg-key-1", &json!({"content": [{"type": "text", "text": "twice"}]}))
        .await
        .expect_problem(422, "idempotency_key_reused");
    let events = api.wait_for(&session, "session.idled", 1).await;
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("input.message"), 1, "log: {events:#?}");
    assert_eq!(count("turn.started"), 1);
    assert_eq!(count("turn.completed"), 1);
    // A replay after the turn finished still answers with the original acceptance.
    let m3 = post_keyed(&api, &path, "msg-key-1", &msg).await.expect(202);
    assert_eq!(m3["message_id"], m1["message_id"]);
    assert_eq!(api.events(&session).await, events);
    // The same message key on another session is a different request.
    let other = api.post("/v1/sessions", json!({"agent_id": first["id"]})).await.expect(201)["id"].as_str().unwrap().to_owned();
    post_keyed(&api, &format!("/v1/sessions/{other}/messages"), "msg-key-1", &msg)
        .await
        .expect_problem(422, "idempotency_key_reused");
    assert_eq!(api.events(&other).await, Vec::<Value>::new());
}

#[tokio::test]
async fn agents_paginate_update_and_archive() {
    let stack = Stack::start_with(turnstone_tests::StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let mut created = Vec::new();
    for i in 0..5 {
        let a = api.post("/v1/agents", json!({"name": format!("agent {i}"), "tags": [format!("n{i}"), "all"]})).await.expect(201);
        created.push(a["id"].as_str().unwrap().to_owned());
    }

    // Page through with limit=2: all five exactly once, newest first.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/v1/agents?limit=2".to_owned();
    loop {
        let page = api.get(&path).await.expect(200);
        pages += 1;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2);
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/agents?limit=2&after={cursor}"),
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);
    // An exact fit has no next page.
    let all = api.get("/v1/agents?limit=5").await.expect(200);
    assert_eq!(ids(&all), newest_first);
    assert!(all["next_cursor"].is_null(), "no cursor on the last page: {all}");
    // Tag filter.
    assert_eq!(ids(&api.get("/v1/agents?tag=n3").await.expect(200)), vec![created[3].clone()]);
    assert_eq!(ids(&api.get("/v1/agents?tag=all").await.expect(200)).len(), 5);

    // PATCH changes only the given fields.
    let target = &created[2];
    let before = api.get(&format!("/v1/agents/{target}")).await.expect(200);
    let patched = api
        .patch(&format!("/v1/agents/{target}"), json!({"name": "renamed", "capabilities": ["math"], "max_iterations": 3}))
        .await
        .expect(200);
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["capabilities"], json!(["math"]));
    assert_eq!(patched["max_iterations"], 3);
    assert_eq!(patched["tags"], before["tags"]);
    assert_eq!(patched["created_at"], before["created_at"]);
    assert_eq!(api.get(&format!("/v1/agents/{target}")).await.expect(200), patched);
    // A bad PATCH changes nothing.
    api.patch(&format!("/v1/agents/{target}"), json!({"capabilities": ["nope"]})).await.expect_problem(400, "unknown_capability");
    api.patch(&format!("/v1/agents/{target}"), json!({"name": ""})).await.expect_problem(400, "invalid_body");
    api.patch(&format!("/v1/agents/{target}"), json!({"nick": "x"})).await.expect_problem(400, "invalid_body");
    api.patch(&format!("/v1/agents/{target}"), json!({"max_iterations": 1000}))
        .await
        .expect_problem(400, "invalid_max_iterations");
    assert_eq!(api.get(&format!("/v1/agents/{target}")).await.expect(200), patched);

    // DELETE archives: hidden from the list unless asked, still readable, no new sessions.
    let archived = api.delete(&format!("/v1/agents/{target}")).await.expect(200);
    assert!(archived["archived_at"].is_string());
    let listed = ids(&api.get("/v1/agents").await.expect(200));
    assert_eq!(listed.len(), 4);
    assert!(!listed.contains(target));
    let with_archived = ids(&api.get("/v1/agents?include_archived=true").await.expect(200));
    assert_eq!(with_archived, newest_first);
    assert_eq!(api.get(&format!("/v1/agents/{target}")).await.expect(200)["archived_at"], archived["archived_at"]);
    api.post("/v1/sessions", json!({"agent_id": target})).await.expect_problem(409, "agent_archived");
    api.patch(&format!("/v1/agents/{target}"), json!({"name": "revived"})).await.expect_problem(409, "agent_archived");
    assert_eq!(session_ids(&api).await, Vec::<String>::new());
    // Archiving twice is a no-op that still answers.
    let again = api.delete(&format!("/v1/agents/{target}")).await.expect(200);
    assert_eq!(again["archived_at"], archived["archived_at"]);
    // Other agents still start sessions.
    api.post("/v1/sessions", json!({"agent_id": created[0]})).await.expect(201);
}

#[tokio::test]
async fn idempotency_keys_survive_races_and_expire_after_a_day() {
    let stack = Stack::start().await;
    let api = stack.client();
    // Eight simultaneous first uses of one key: one agent, one answer.
    let body = json!({"name": "raced"});
    let replies = futures::future::join_all((0..8).map(|_| post_keyed(&api, "/v1/agents", "race-key", &body))).await;
    let ids: Vec<Value> = replies.into_iter().map(|r| r.expect(201)["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(agent_ids(&api).await.len(), 1);

    // A day later the key is free again: a new request creates anew (and replaces the old record).
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'race-key'")
        .execute(&owner)
        .await
        .unwrap();
    let fresh = post_keyed(&api, "/v1/agents", "race-key", &json!({"name": "next day"})).await.expect(201);
    assert_ne!(fresh["id"], ids[0]);
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&owner).await.unwrap();
    assert_eq!(records, 1, "the expired record was replaced, not duplicated");
}
