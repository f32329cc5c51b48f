//! SSE protocol: resume without gap or duplicate, live deltas that are never
//! stored, connection cycling with `disconnecting`, drain on API shutdown.

use std::time::Duration;
use turnstone_core::ids::{OrgId, SessionId, TurnId, TypedId};

use turnstone_tests::{Stack, StackOptions, sequences};

#[tokio::test]
async fn resume_with_last_event_id_has_no_gap_and_no_duplicate() {
    let stack = Stack::start_with(StackOptions {
        sim: turnstone_llmsim::Config { latency_ms: 0, chunk_delay_ms: 30 },
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let session = api.session(&["math"]).await;
    let mut first = api.sse(&session, "", None).await;
    assert_eq!(first.next().await.unwrap().event, "connected");
    api.say(&session, r#"!tool math {"expression":"2*21"}"#).await;

    // Read part of the turn, then drop the connection mid-turn.
    let seen = first.until("tool.started").await;
    drop(first);
    let last_id = seen.iter().rev().find_map(|f| f.id.clone()).unwrap();

    let mut second = api.sse(&session, "", Some(&last_id)).await;
    let connected = second.next().await.unwrap();
    assert_eq!(connected.event, "connected");
    let rest = second.until("turn.completed").await;

    let mut all = sequences(&seen);
    all.extend(sequences(&rest));
    let expected: Vec<i64> = (1..=*all.last().unwrap()).collect();
    assert_eq!(all, expected, "every stored event exactly once, in order, across the reconnect");

    // since_id resumes the same way; Last-Event-ID wins over since_id.
    let mut third = api.sse(&session, &format!("?since_id={last_id}"), None).await;
    third.next().await.unwrap();
    let again = third.until("turn.completed").await;
    assert_eq!(sequences(&again), sequences(&rest));
    let first_id = seen.iter().find_map(|f| f.id.clone()).unwrap();
    let mut fourth = api.sse(&session, &format!("?since_id={first_id}"), Some(&last_id)).await;
    fourth.next().await.unwrap();
    assert_eq!(sequences(&fourth.until("turn.completed").await), sequences(&rest));
}

#[tokio::test]
async fn deltas_stream_live_but_are_never_stored() {
    let stack = Stack::start_with(StackOptions {
        sim: turnstone_llmsim::Config { latency_ms: 0, chunk_delay_ms: 40 },
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut sse = api.sse(&session, "", None).await;
    sse.next().await.unwrap();
    api.say(&session, "one two three four five six").await;
    let frames = sse.until("output.message.completed").await;
    let deltas: Vec<_> = frames.iter().filter(|f| f.event == "output.message.delta").collect();
    assert!(deltas.len() >= 2, "several live deltas: {frames:#?}");
    assert!(deltas.iter().all(|d| d.id.is_none()), "deltas carry no id, so Last-Event-ID never points at one");
    let text: String = deltas.iter().map(|d| d.data["data"]["delta"].as_str().unwrap()).collect();
    assert_eq!(text, "echo: one two three four five six");
    let stored = api.events(&session).await;
    assert!(stored.iter().all(|e| e["type"] != "output.message.delta"));
}

#[tokio::test]
async fn connections_are_cycled_with_disconnecting() {
    let stack = Stack::start_with(StackOptions { sse_max_connection: Duration::from_millis(500), ..Default::default() }).await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "hello").await;
    api.wait_for(&session, "session.idled", 1).await;
    let mut sse = api.sse(&session, "", None).await;
    let frames = sse.until("disconnecting").await;
    let retry = frames.last().unwrap().data["retry_ms"].as_u64().unwrap();
    assert!((500..1500).contains(&retry));
    assert_eq!(sequences(&frames), (1..=7).collect::<Vec<_>>(), "a whole turn: 7 events");
    assert!(sse.next().await.is_none(), "the server closes the stream after disconnecting");
}

#[tokio::test]
async fn api_shutdown_tells_streams_to_reconnect() {
    let mut stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut sse = api.sse(&session, "", None).await;
    sse.next().await.unwrap();
    let stop = tokio::spawn(async move {
        stack.stop_api().await;
        stack
    });
    let frames = sse.until("disconnecting").await;
    assert_eq!(frames.last().unwrap().event, "disconnecting");
    let _stack = stop.await.unwrap();
}

#[tokio::test]
async fn browsers_can_pass_the_key_as_access_token() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "hi").await;
    api.wait_for(&session, "session.idled", 1).await;
    // What an EventSource does: no Authorization header, the key in the URL.
    let anonymous = api.with_key("");
    let url = format!("{}/v1/sessions/{session}/sse?access_token={}", api.base, api.key);
    let resp = anonymous.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut sse = turnstone_tests::SseReader::from_response(resp);
    let frames = sse.until("session.idled").await;
    assert_eq!(sequences(&frames), (1..=7).collect::<Vec<_>>());
    // A wrong token is a 401 problem, and other operations do not accept the query form.
    let bad = anonymous
        .http
        .get(format!("{}/v1/sessions/{session}/sse?access_token=ts_live_nope_nope_nope_nope", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let agents = anonymous.http.get(format!("{}/v1/agents?access_token={}", api.base, api.key)).send().await.unwrap();
    assert_eq!(agents.status().as_u16(), 401);
}

#[tokio::test]
async fn a_process_caps_its_open_streams() {
    // A short heartbeat: the server notices a client that went away on its next writes.
    let stack = Stack::start_with(StackOptions {
        sse_max_streams: 2,
        sse_heartbeat: std::time::Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut first = api.sse(&session, "", None).await;
    let mut second = api.sse(&session, "", None).await;
    first.next().await.unwrap();
    second.next().await.unwrap();
    let refused = api.send(api.http.get(format!("{}/v1/sessions/{session}/sse", api.base))).await;
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    refused.expect_problem(429, "too_many_streams");
    // A closed stream frees its slot (once the server notices, at the latest on a heartbeat).
    drop(first);
    let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
    loop {
        let r = api.http.get(format!("{}/v1/sessions/{session}/sse", api.base)).bearer_auth(&api.key).send().await.unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stream_gets_every_event_when_its_session_reader_starts_late() {
    // The whole turn commits before the session's reader starts (nextest runs each test in
    // its own process, so the variable reaches only this test's in-process API).
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var("TURNSTONE_TEST_READER_DELAY_MS", "800") };
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut sse = api.sse(&session, "", None).await;
    assert_eq!(sse.next().await.unwrap().event, "connected");
    api.say(&session, "hello").await;
    api.wait_for(&session, "session.idled", 1).await;
    let frames = tokio::time::timeout(Duration::from_secs(10), sse.until("session.idled"))
        .await
        .expect("the stream heard nothing: events committed before its reader started were lost");
    let stored = api.events(&session).await;
    assert_eq!(turnstone_tests::sequences(&frames), (1..=stored.len() as i64).collect::<Vec<_>>(), "each event once, in order");
}

#[tokio::test]
async fn notifications_carry_the_events_that_fit_and_ids_alone_otherwise() {
    use turnstone_core::events::{self, EVENTS_CHANNEL, MAX_NOTIFY_BYTES, NewEvent, types};
    // The stack's API signs this process's notifications with the stack's master key.
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let session_id = SessionId::parse(&session).unwrap();
    let pool = sqlx::PgPool::connect(&stack.db.url).await.unwrap();
    let org_id: OrgId =
        sqlx::query_scalar("SELECT org_id FROM sessions WHERE id = $1").bind(session_id).fetch_one(&pool).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen(EVENTS_CHANNEL).await.unwrap();

    let mut append = async |text: String| {
        let mut tx = pool.begin().await.unwrap();
        let data = serde_json::json!({ "message": { "role": "user", "content": [{ "type": "text", "text": text }] } });
        let rows =
            events::append(&mut tx, org_id, session_id, None, vec![NewEvent::new(types::INPUT_MESSAGE, data)]).await.unwrap();
        tx.commit().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await.expect("a notification").unwrap();
        assert!(n.payload().len() <= MAX_NOTIFY_BYTES, "payload of {} bytes", n.payload().len());
        (rows, n.payload().to_owned())
    };
    let (rows, small) = append("small".into()).await;
    let parsed = events::parse_appended(&small).expect("a well-formed payload");
    assert_eq!((parsed.session_id, parsed.last_sequence), (session_id, rows[0].sequence));
    let carried = parsed.events.expect("a small event rides in the payload, signed");
    assert_eq!(serde_json::to_value(&carried).unwrap(), serde_json::to_value(&rows).unwrap(), "exactly the stored rows");

    // The same events with a signature that does not match are not trusted.
    let forged = format!("{}{}", "0".repeat(64), &small[64..]);
    assert!(events::parse_appended(&forged).unwrap().events.is_none());
    assert!(events::parse_appended(&small[64..]).unwrap().events.is_none(), "unsigned events are ignored");

    let (rows, big) = append("x".repeat(MAX_NOTIFY_BYTES)).await;
    let parsed = events::parse_appended(&big).expect("a well-formed payload");
    assert_eq!((parsed.session_id, parsed.last_sequence), (session_id, rows[0].sequence));
    assert!(parsed.events.is_none(), "too big for a payload: ids only");
}

/// Any role connected to the database can NOTIFY: a forged notification that
/// carries a fake event must not reach a stream, nor hide the real event that
/// takes its sequence.
#[tokio::test]
async fn a_forged_event_notification_reaches_no_stream() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let session_id = SessionId::parse(&session).unwrap();
    let mut live = api.sse(&session, "", None).await;
    assert_eq!(live.next().await.unwrap().event, "connected");
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    let fake = serde_json::json!({
        "s": session_id, "q": 1,
        "e": [{ "id": uuid::Uuid::now_v7(), "session_id": session_id, "sequence": 1, "type": "input.message",
                "turn_id": null, "data": { "message": { "role": "user", "content": [{ "type": "text", "text": "forged" }] } },
                "ts": "2026-01-01T00:00:00Z" }]
    })
    .to_string();
    for payload in [fake.clone(), format!("{}{fake}", "ab".repeat(32))] {
        sqlx::query("SELECT pg_notify('turnstone_events', $1)").bind(payload).execute(&owner).await.unwrap();
    }
    // And fake live typing.
    let delta = serde_json::to_string(&turnstone_core::events::Delta {
        session_id,
        turn_id: TurnId::new(),
        iteration: 1,
        text: "forged typing".into(),
        ts: chrono::Utc::now(),
    })
    .unwrap();
    for payload in [delta.clone(), format!("{}{delta}", "cd".repeat(32))] {
        sqlx::query("SELECT pg_notify('turnstone_deltas', $1)").bind(payload).execute(&owner).await.unwrap();
    }
    api.say(&session, "hello").await;
    let frames = live.until("session.idled").await;
    assert!(!frames.iter().any(|f| f.data.to_string().contains("forged")), "a forged event or delta was streamed");
    let stored: Vec<_> = frames.into_iter().filter(|f| f.id.is_some()).map(|f| f.data).collect();
    assert_eq!(stored, api.events(&session).await, "every stored event once, as the log has it");
}

#[tokio::test]
async fn live_frames_equal_the_log_whether_events_ride_in_the_notification_or_not() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let mut live = api.sse(&session, "", None).await;
    assert_eq!(live.next().await.unwrap().event, "connected");
    api.say(&session, "small").await;
    let mut frames = live.until("session.idled").await;
    // The simulator echoes: input and reply are both too big for a payload, so read from the log.
    api.say(&session, &"big ".repeat(turnstone_core::events::MAX_NOTIFY_BYTES / 2)).await;
    frames.extend(live.until("session.idled").await);
    let stored: Vec<_> = frames.into_iter().filter(|f| f.id.is_some()).map(|f| f.data).collect();
    assert_eq!(stored, api.events(&session).await, "every event once, as the log renders it");
}

/// hyper serves HTTP/2 cleartext with prior knowledge (h2c) beside HTTP/1.1:
/// a JSON route and a session's stream over it, and a stream the client
/// cancels (an RST_STREAM, the connection stays) gives its slot back.
#[tokio::test]
async fn json_routes_and_streams_are_served_over_h2c() {
    let stack = Stack::start_with(StackOptions { sse_max_streams: 1, ..Default::default() }).await;
    let http = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let api = turnstone_tests::Client { http, ..stack.client() };
    let agents = api.http.get(format!("{}/v1/agents", api.base)).bearer_auth(&api.key).send().await.unwrap();
    assert_eq!((agents.version(), agents.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    assert!(agents.json::<serde_json::Value>().await.unwrap()["data"].is_array());
    let session = api.session(&[]).await;

    let resp = api.http.get(format!("{}/v1/sessions/{session}/sse", api.base)).bearer_auth(&api.key).send().await.unwrap();
    assert_eq!((resp.version(), resp.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let mut sse = turnstone_tests::SseReader::from_response(resp);
    assert_eq!(sse.next().await.unwrap().event, "connected");
    api.say(&session, "hello").await;
    let frames = sse.until("session.idled").await;
    let stored: Vec<_> = frames.into_iter().filter(|f| f.id.is_some()).map(|f| f.data).collect();
    assert_eq!(stored, api.events(&session).await, "every event of the turn once, as the log has it");

    // The one stream slot is taken; cancelling the stream frees it.
    let refused = api.send(api.http.get(format!("{}/v1/sessions/{session}/sse", api.base))).await;
    refused.expect_problem(429, "too_many_streams");
    drop(sse);
    let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
    loop {
        let r = api.http.get(format!("{}/v1/sessions/{session}/sse", api.base)).bearer_auth(&api.key).send().await.unwrap();
        if r.status().as_u16() == 200 {
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the cancelled stream's slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An idle stream carries a comment every heartbeat, over HTTP/1.1 and h2c alike,
/// with the headers that keep proxies from buffering or caching it.
#[tokio::test]
async fn idle_streams_carry_heartbeats_over_http1_and_h2c() {
    use futures::StreamExt;
    let stack = Stack::start_with(StackOptions { sse_heartbeat: Duration::from_millis(100), ..Default::default() }).await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (http, version) in [(reqwest::Client::new(), reqwest::Version::HTTP_11), (h2, reqwest::Version::HTTP_2)] {
        let resp = http.get(format!("{}/v1/sessions/{session}/sse", api.base)).bearer_auth(&api.key).send().await.unwrap();
        assert_eq!((resp.version(), resp.status().as_u16()), (version, 200));
        let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(
            (header("content-type"), header("cache-control"), header("x-accel-buffering")),
            ("text/event-stream".into(), "no-cache".into(), "no".into())
        );
        let mut body = resp.bytes_stream();
        let mut raw = String::new();
        let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
        // `connected`, then two heartbeats in a row: the stream stays open while nothing happens.
        while !raw.contains("\n\n:\n\n:\n\n") {
            let chunk = tokio::time::timeout_at(deadline, body.next()).await.expect("heartbeats within the deadline");
            raw.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open").unwrap()));
        }
        assert!(raw.starts_with("event: connected\ndata: {"), "{raw}");
    }
}
