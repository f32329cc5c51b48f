//! Drives the simulator over real HTTP: wire format, scripts, errors and disconnects.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use turnstone_llmsim::{Config, Running};

async fn simulator() -> Running {
    turnstone_llmsim::spawn(Config::default()).await.expect("start simulator")
}

async fn post(sim: &Running, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("{}/chat/completions", sim.base_url())).json(&body).send().await.expect("send")
}

/// Waits until the simulator has no request in flight, failing after a deadline.
async fn wait_idle(sim: &Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sim.in_flight() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "simulator still busy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn disconnect_stops_a_sleeping_request() {
    // Arrange
    let sim = simulator().await;
    let body = json!({"model": "sim-1", "messages": [{"role": "user", "content": "!sleep 30000"}]}).to_string();
    let mut socket = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sim.in_flight() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Act
    drop(socket);

    // Assert
    wait_idle(&sim).await;
}

/// Parses an SSE body into its `data:` payloads.
fn sse_data(body: &str) -> Vec<String> {
    assert!(body.ends_with("data: [DONE]\n\n"), "stream must end with [DONE]: {body:?}");
    body.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| frame.strip_prefix("data: ").expect("data frame").to_owned())
        .collect()
}

#[tokio::test]
async fn health_and_models() {
    let sim = simulator().await;
    let client = reqwest::Client::new();

    let health = client.get(format!("http://{}/health", sim.addr())).send().await.unwrap();
    let models: Value = client.get(format!("{}/models", sim.base_url())).send().await.unwrap().json().await.unwrap();
    let model: Value = client.get(format!("{}/models/any-name", sim.base_url())).send().await.unwrap().json().await.unwrap();

    assert_eq!(health.status(), 200);
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "sim-1"));
    assert_eq!(model["id"], "any-name");
}

#[tokio::test]
async fn non_stream_echo_has_usage() {
    let sim = simulator().await;

    let response = post(&sim, json!({"model": "sim-1", "messages": [{"role": "user", "content": "hi there"}]})).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "sim-1");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 5);
}

#[tokio::test]
async fn stream_follows_openai_framing() {
    let sim = simulator().await;

    let response = post(
        &sim,
        json!({"model": "sim-1", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}]}),
    )
    .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str())).collect();
    assert_eq!(text, "echo: one two three");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish["usage"].is_null());
}

#[tokio::test]
async fn streamed_tool_call_is_fragmented_by_index() {
    let sim = simulator().await;

    let response = post(
        &sim,
        json!({"model": "sim-1", "stream": true,
               "messages": [{"role": "user", "content": "!tool math {\"expression\":\"6*7\"}"}]}),
    )
    .await;

    let data = sse_data(&response.text().await.unwrap());
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let fragments: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert!(fragments.len() >= 3, "{fragments:?}");
    assert!(fragments[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(fragments[0]["function"]["name"], "math");
    assert!(fragments.iter().all(|f| f["index"] == 0));
    let arguments: String = fragments.iter().filter_map(|f| f["function"]["arguments"].as_str()).collect();
    assert_eq!(arguments, r#"{"expression":"6*7"}"#);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "usage only when asked for");
}

#[tokio::test]
async fn scripted_failures_count_down_and_carry_retry_hints() {
    let sim = simulator().await;
    let body = json!({"model": "sim-1", "messages": [{"role": "user", "content": "!fail 429 2"}]});

    let first = post(&sim, body.clone()).await;
    let second = post(&sim, body.clone()).await;
    let third = post(&sim, body).await;

    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after-ms"], "50");
    assert_eq!(first.headers()["retry-after"], "1");
    let error: Value = first.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert_eq!(second.status(), 429);
    assert_eq!(third.status(), 200);
    let answer: Value = third.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: !fail 429 2");
}

#[tokio::test]
async fn bad_bodies_get_openai_errors() {
    let sim = simulator().await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", sim.base_url());

    let not_json = client.post(&url).body("{oops").send().await.unwrap();
    let no_messages = post(&sim, json!({"model": "sim-1", "messages": []})).await;
    let no_user = post(&sim, json!({"model": "sim-1", "messages": [{"role": "system", "content": "x"}]})).await;

    for response in [not_json, no_messages, no_user] {
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().is_some());
    }
}
