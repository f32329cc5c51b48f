//! PostgreSQL restarts under load: the API answers 503 meanwhile, then the
//! LISTEN connection, the workers and the SSE clients recover by themselves,
//! and no acknowledged message or stored event is lost or duplicated.

use std::time::Duration;

use serde_json::{Value, json};
use turnstone_tests::procs::Cluster;
use turnstone_tests::{Client, Frame, Stack, StackOptions};

const SESSIONS: usize = 3;
const MESSAGES: usize = 6;

/// Posts with an Idempotency-Key, retrying 503s and connection errors with the same key.
async fn post_reliably(api: &Client, session: &str, text: &str, key: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let req = api
            .http
            .post(format!("{}/v1/sessions/{session}/messages", api.base))
            .bearer_auth(&api.key)
            .header("Idempotency-Key", key)
            .json(&json!({"content": [{"type": "text", "text": text}]}));
        match req.send().await {
            Ok(r) if r.status().as_u16() == 202 => return r.json().await.unwrap(),
            Ok(r) => {
                let status = r.status().as_u16();
                assert_eq!(status, 503, "only 503 is acceptable while the database is away: {:?}", r.text().await);
            }
            Err(_) => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "post never succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows a session's stream across disconnects until `turns` turns completed;
/// returns the stored-event frames seen, in order.
async fn follow(api: Client, session: String, turns: usize) -> Vec<Frame> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut seen: Vec<Frame> = Vec::new();
    loop {
        let last = seen.last().and_then(|f| f.id.clone());
        let mut req = api.http.get(format!("{}/v1/sessions/{session}/sse", api.base)).bearer_auth(&api.key);
        if let Some(id) = &last {
            req = req.header("Last-Event-ID", id);
        }
        if let Ok(resp) = req.send().await
            && resp.status().as_u16() == 200
        {
            let mut reader = turnstone_tests::SseReader::from_response(resp);
            while let Some(f) = reader.next().await {
                if f.id.is_some() {
                    seen.push(f);
                }
                if seen.iter().filter(|f| f.event == "turn.completed").count() >= turns {
                    return seen;
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "stream of {session} never caught up; saw {} events", seen.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn postgres_restart_under_load_loses_nothing() {
    let cluster = Cluster::start();
    let stack = Stack::start_with(StackOptions {
        admin_url: Some(cluster.admin_url()),
        sim: turnstone_llmsim::Config { latency_ms: 30, chunk_delay_ms: 5 },
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(api.session(&[]).await);
    }
    let readers: Vec<_> = sessions.iter().map(|s| tokio::spawn(follow(api.clone(), s.clone(), MESSAGES))).collect();

    let posters: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (api, s) = (api.clone(), s.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..MESSAGES {
                    let r = post_reliably(&api, &s, &format!("message {i}"), &format!("{s}-{i}")).await;
                    acked.push(r["message_id"].as_str().unwrap().to_owned());
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                acked
            })
        })
        .collect();

    // Restart the database while messages, turns and streams are in flight.
    api.wait_for(&sessions[0], "turn.completed", 1).await;
    cluster.down();
    let down = api.get(&format!("/v1/sessions/{}", sessions[0])).await;
    assert_eq!(down.status, 503, "{:?}", down.body);
    assert_eq!(down.content_type, "application/problem+json");
    assert_eq!(down.body["code"], "database_unavailable");
    assert_eq!(down.retry_after.as_deref(), Some("2"), "503 says when to retry");
    cluster.up();

    for (s, poster) in sessions.iter().zip(posters) {
        let acked = poster.await.unwrap();
        let events = api.wait_for(s, "turn.completed", MESSAGES).await;
        let inputs: Vec<&str> =
            events.iter().filter(|e| e["type"] == "input.message").map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(inputs, acked.iter().map(String::as_str).collect::<Vec<_>>(), "every acknowledged message, once, in order");
        let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
        assert_eq!(events.iter().filter(|e| e["type"] == "output.message.completed").count(), MESSAGES);
    }
    for reader in readers {
        let frames = reader.await.unwrap();
        let seqs = turnstone_tests::sequences(&frames);
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "each stored event exactly once, in order, across reconnects"
        );
    }
}
