//! Invariant 6, end to end: with the real binaries logging at debug, no provider key, operator token or API-key secret appears in any response, SSE frame, event row, log line or ciphertext.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use turnstone_tests::{Client, DEADLINE, Reply, TestDb, procs};

/// A real binary with stdout and stderr captured in one file; killed when dropped.
struct Captured {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Captured {
    fn spawn(name: &'static str, dir: &Path, envs: &[(&str, String)]) -> Captured {
        let path = procs::bin_dir().join(name);
        assert!(path.exists(), "{} is not built; run `cargo build --bins` (scripts/test does)", path.display());
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new(path)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            // As chatty as the binaries can be: a secret in any log line is a leak.
            .env("RUST_LOG", "debug")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn");
        Captured { name, child, log }
    }

    /// SIGTERM, then wait (polling, with the deadline) for the exit.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} did not exit after SIGTERM", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().to_string()
}

/// Polls `url` until it answers 200, or fails with the process's log.
async fn wait_ok(url: &str, proc: &mut Captured) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().as_u16() == 200
        {
            return;
        }
        if let Some(status) = proc.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited ({status}) before {url} answered; log:\n{}",
                proc.name,
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every response body and SSE frame the test saw, with where it came from.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    /// Records the reply and asserts its status.
    #[track_caller]
    fn expect(&mut self, what: impl Into<String>, reply: Reply, status: u16) -> Value {
        let what = what.into();
        self.add(what.clone(), format!("{} {} {}", reply.status, reply.content_type, reply.body));
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        reply.body
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().expect("data").iter().map(id).collect()
}

/// The part of an API key that is never shown after creation (the first 12 characters are its display prefix).
fn secret_part(key: &str) -> String {
    key[12..].to_owned()
}

/// `text` without ANSI colour sequences (which could split a secret in a log line).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of `text` that contain `needle`, for the failure message.
fn hits_in(needle: &str, text: &str) -> Vec<String> {
    text.lines().enumerate().filter(|(_, l)| l.contains(needle)).map(|(i, l)| format!("line {}: {:.300}", i + 1, l)).collect()
}

#[tokio::test]
async fn no_secret_reaches_a_response_event_row_log_or_ciphertext() {
    // Arrange: the three real binaries, chatty logs captured, canaries in every credential.
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("turnstone-leaks-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("leaks: process logs in {}", dir.display());
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let default_key = format!("sk-LEAKCANARY-default-{tag}");
    let second_key = "sk-LEAKCANARY-second".to_owned();
    let operator_token = format!("op-LEAKCANARY-operator-{tag}");
    let bootstrap_key = turnstone_tests::api_key();
    let master_key = turnstone_tests::master_key();

    let sim_addr = free_addr();
    let mut sim = Captured::spawn("turnstone-llmsim", &dir, &[("TURNSTONE_LLMSIM_ADDR", sim_addr.clone())]);
    wait_ok(&format!("http://{sim_addr}/health"), &mut sim).await;
    let sim_url = format!("http://{sim_addr}/v1");
    let api_addr = free_addr();
    let mut api_proc = Captured::spawn(
        "turnstone-api",
        &dir,
        &[
            ("DATABASE_URL", db.as_role("turnstone_api")),
            ("TURNSTONE_MIGRATE_DATABASE_URL", db.url.clone()),
            ("TURNSTONE_MASTER_KEY", master_key.clone()),
            ("TURNSTONE_BOOTSTRAP_API_KEY", bootstrap_key.clone()),
            ("TURNSTONE_API_ADDR", api_addr.clone()),
            ("OPENAI_BASE_URL", sim_url.clone()),
            ("OPENAI_API_KEY", default_key.clone()),
            ("TURNSTONE_DEFAULT_MODEL", "sim-1".into()),
            ("TURNSTONE_OPERATOR_TOKEN", operator_token.clone()),
        ],
    );
    let base = format!("http://{api_addr}");
    wait_ok(&format!("{base}/ready"), &mut api_proc).await;
    let mut worker = Captured::spawn("turnstone-worker", &dir, &procs::worker_env(&db.url, &master_key));

    let api = Client::new(&base, &bootstrap_key);
    let operator = Client::new(&base, &operator_token);
    let mut seen = Seen::default();
    let mut api_keys = vec![bootstrap_key.clone()];
    // Responses allowed to carry one API key: the one that shows a new key once.
    let mut key_shown_in: Vec<(usize, String)> = Vec::new();

    // Act: a second provider holding a key, a model and agents on both providers.
    let provider = seen.expect(
        "POST /v1/providers",
        api.post("/v1/providers", json!({"name": "second", "base_url": sim_url, "api_key": second_key})).await,
        201,
    );
    assert_eq!(provider["has_api_key"], true);
    let model =
        seen.expect("POST /v1/models", api.post("/v1/models", json!({"provider_id": id(&provider), "name": "sim-1"})).await, 201);
    let default_agent =
        seen.expect("POST /v1/agents", api.post("/v1/agents", json!({"name": "default", "capabilities": ["math"]})).await, 201);
    let second_agent = seen.expect(
        "POST /v1/agents (second)",
        api.post("/v1/agents", json!({"name": "second", "capabilities": ["math"], "model_id": id(&model)})).await,
        201,
    );
    // Error bodies around a secret must not echo it.
    for (what, body) in [
        ("duplicate provider", json!({"name": "second", "base_url": sim_url, "api_key": second_key})),
        ("bad base_url", json!({"name": "x", "base_url": "ftp://x", "api_key": second_key})),
        ("credentials in URL", json!({"name": "y", "base_url": format!("https://u:{second_key}@example.com/v1")})),
        ("oversized key", json!({"name": "z", "base_url": sim_url, "api_key": second_key.repeat(300)})),
        ("unknown field", json!({"name": "w", "base_url": sim_url, "api_key": second_key, "secret": second_key})),
    ] {
        let reply = api.post("/v1/providers", body).await;
        let status = reply.status;
        assert!((400..500).contains(&status), "{what}: {status}");
        seen.expect(format!("POST /v1/providers ({what})"), reply, status);
    }

    // A full tool turn on each provider and a failing call, watched live over SSE.
    let mut sessions = Vec::new();
    for (name, agent) in [("default", &default_agent), ("second", &second_agent)] {
        let ses = id(&seen.expect(
            format!("POST /v1/sessions ({name})"),
            api.post("/v1/sessions", json!({"agent_id": id(agent)})).await,
            201,
        ));
        let mut sse = api.sse(&ses, "", None).await;
        let mut frames = vec![sse.next().await.expect("connected frame")];
        seen.expect(
            format!("POST messages ({name} tool turn)"),
            api.post(
                &format!("/v1/sessions/{ses}/messages"),
                json!({"content": [{"type": "text", "text": r#"!tool math {"expression":"6*7"}"#}]}),
            )
            .await,
            202,
        );
        frames.extend(sse.until("session.idled").await);
        assert!(frames.iter().any(|f| f.event == "tool.completed"), "{name}: the tool ran: {frames:#?}");
        assert!(frames.iter().any(|f| f.event == "turn.completed"), "{name}: the turn completed: {frames:#?}");
        if name == "default" {
            seen.expect(
                "POST messages (!fail 401)",
                api.post(&format!("/v1/sessions/{ses}/messages"), json!({"content": [{"type": "text", "text": "!fail 401"}]}))
                    .await,
                202,
            );
            let failed = sse.until("session.idled").await;
            assert!(failed.iter().any(|f| f.event == "turn.failed"), "the provider's 401 fails the turn: {failed:#?}");
            frames.extend(failed);
        }
        for f in &frames {
            seen.add(format!("SSE frame of {name} session"), format!("{} {:?} {}", f.event, f.id, f.data));
        }
        sessions.push(ses);
    }

    // A turn that waits on the second provider: a client tool, then an approval, resolved over the API.
    let waiter = seen.expect(
        "POST /v1/agents (waiter)",
        api.post(
            "/v1/agents",
            json!({"name": "waiter", "capabilities": ["math"], "model_id": id(&model), "tool_policies": {"math": "ask"},
                   "client_tools": [{"name": "lookup_order", "parameters": {"type": "object"}}]}),
        )
        .await,
        201,
    );
    let wses =
        id(&seen.expect("POST /v1/sessions (waiter)", api.post("/v1/sessions", json!({"agent_id": id(&waiter)})).await, 201));
    let mut sse = api.sse(&wses, "", None).await;
    let mut frames = vec![sse.next().await.expect("connected frame")];
    let say = |text: &str| json!({"content": [{"type": "text", "text": text}]});
    seen.expect(
        "POST messages (client tool)",
        api.post(&format!("/v1/sessions/{wses}/messages"), say(r#"!tool lookup_order {"order_id":"A1"}"#)).await,
        202,
    );
    frames.extend(sse.until("turn.waiting").await);
    let pending = seen.expect("GET pending (tool call)", api.get(&format!("/v1/sessions/{wses}/pending")).await, 200);
    let results = json!({"results": [{"tool_call_id": pending["data"][0]["tool_call_id"], "output": "shipped"}]});
    seen.expect("POST tool-results", api.post(&format!("/v1/sessions/{wses}/tool-results"), results).await, 200);
    frames.extend(sse.until("turn.completed").await);
    seen.expect(
        "POST messages (approval)",
        api.post(&format!("/v1/sessions/{wses}/messages"), say(r#"!tool math {"expression":"2*3"}"#)).await,
        202,
    );
    frames.extend(sse.until("turn.waiting").await);
    let pending = seen.expect("GET pending (approval)", api.get(&format!("/v1/sessions/{wses}/pending")).await, 200);
    let decision = json!({"decision": "approve", "arguments_sha256": pending["data"][0]["arguments_sha256"]});
    let approval = pending["data"][0]["approval_id"].as_str().expect("an approval").to_owned();
    seen.expect("POST approvals", api.post(&format!("/v1/sessions/{wses}/approvals/{approval}"), decision).await, 200);
    frames.extend(sse.until("turn.completed").await);
    for f in &frames {
        seen.add("SSE frame of the waiting session", format!("{} {:?} {}", f.event, f.id, f.data));
    }
    sessions.push(wses);
    // Session storage: a file and a key written, read, listed and searched.
    let ses = &sessions[0];
    let put = api.http.put(format!("{}/v1/sessions/{ses}/files/content?path=/notes/a.txt", api.base)).body("plain notes\n");
    seen.expect("PUT files/content", api.send(put).await, 201);
    seen.expect("GET files/content", api.get(&format!("/v1/sessions/{ses}/files/content?path=/notes/a.txt")).await, 200);
    seen.expect(
        "POST files/search",
        api.post(&format!("/v1/sessions/{ses}/files/search"), json!({"pattern": "notes"})).await,
        200,
    );
    seen.expect(
        "POST files/copy",
        api.post(&format!("/v1/sessions/{ses}/files/copy"), json!({"from": "/notes/a.txt", "to": "/b.txt"})).await,
        201,
    );
    let put = api.http.put(format!("{}/v1/sessions/{ses}/kv/note", api.base)).json(&json!({"value": {"n": 1}}));
    seen.expect("PUT kv", api.send(put).await, 201);

    // API keys: create, use, revoke, use again; the operator issues one for another org.
    let created = api.post("/v1/api-keys", json!({"name": "leak scan"})).await;
    let created = seen.expect("POST /v1/api-keys", created, 201);
    let new_key = created["key"].as_str().expect("the key is shown once").to_owned();
    key_shown_in.push((seen.0.len() - 1, new_key.clone()));
    api_keys.push(new_key.clone());
    seen.expect("GET /v1/agents (new key)", api.with_key(&new_key).get("/v1/agents").await, 200);
    seen.expect("DELETE /v1/api-keys", api.delete(&format!("/v1/api-keys/{}", id(&created))).await, 200);
    seen.expect("GET /v1/agents (revoked key)", api.with_key(&new_key).get("/v1/agents").await, 401);
    seen.expect("GET /v1/orgs (org key as operator)", api.get("/v1/orgs").await, 401);
    seen.expect(
        "GET /v1/orgs (wrong operator token)",
        operator.with_key(&format!("{operator_token}x")).get("/v1/orgs").await,
        401,
    );
    let org = seen.expect("POST /v1/orgs", operator.post("/v1/orgs", json!({"name": "second org"})).await, 201);
    let org_key = seen.expect(
        "POST /v1/orgs/{id}/api-keys",
        operator.post(&format!("/v1/orgs/{}/api-keys", id(&org)), json!({"name": "k"})).await,
        201,
    );
    let org_key = org_key["key"].as_str().expect("org key").to_owned();
    key_shown_in.push((seen.0.len() - 1, org_key.clone()));
    api_keys.push(org_key.clone());
    seen.expect("GET /v1/agents (second org)", api.with_key(&org_key).get("/v1/agents").await, 200);
    seen.expect("GET /v1/orgs", operator.get("/v1/orgs").await, 200);
    seen.expect("GET /v1/orgs/{id}", operator.get(&format!("/v1/orgs/{}", id(&org))).await, 200);

    // Every list and get endpoint, the event lists, and a replayed SSE stream.
    let mut paths: Vec<String> =
        ["/health", "/ready", "/openapi.json", "/v1/capabilities", "/v1/api-keys", "/v1/sessions?limit=200"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for list in ["/v1/providers", "/v1/models", "/v1/agents"] {
        let page = seen.expect(format!("GET {list}"), api.get(&format!("{list}?limit=200")).await, 200);
        paths.extend(ids(&page).into_iter().map(|x| format!("{list}/{x}")));
    }
    paths.push("/v1/agents?include_archived=true&limit=200".into());
    for ses in &sessions {
        paths.push(format!("/v1/sessions/{ses}"));
        paths.push(format!("/v1/sessions/{ses}/messages?limit=200"));
        paths.push(format!("/v1/sessions/{ses}/events?limit=1000"));
        paths.push(format!("/v1/sessions/{ses}/events?types=tool.completed,turn.failed,turn.completed"));
        paths.push(format!("/v1/sessions/{ses}/pending"));
        paths.push(format!("/v1/sessions/{ses}/files?recursive=true"));
        paths.push(format!("/v1/sessions/{ses}/kv"));
    }
    paths.push(format!("/v1/sessions/{}/kv/note", sessions[0]));
    paths.push(format!("/v1/sessions/{}/files?dir=/notes", sessions[0]));
    for path in &paths {
        seen.expect(format!("GET {path}"), api.get(path).await, 200);
    }
    for ses in &sessions {
        let mut sse = api.sse(ses, "", None).await;
        for f in sse.until("turn.completed").await {
            seen.add(format!("replayed SSE frame of {ses}"), format!("{} {:?} {}", f.event, f.id, f.data));
        }
    }
    assert!(seen.0.len() > 40, "the scan covers many responses: {}", seen.0.len());

    // Stop everything (graceful), so the logs are complete.
    for p in [&mut worker, &mut api_proc, &mut sim] {
        let status = p.terminate().await;
        println!("leaks: {} exited with {status}", p.name);
    }

    // Assert: no canary anywhere.
    let mut needles: Vec<(String, String)> = vec![
        ("the default provider key".into(), default_key.clone()),
        ("the second provider key".into(), second_key.clone()),
        ("the operator token".into(), operator_token.clone()),
        ("a canary".into(), "LEAKCANARY".into()),
    ];
    for k in &api_keys {
        needles.push((format!("API key {}…", &k[..12]), secret_part(k)));
    }
    let mut leaks: Vec<String> = Vec::new();

    for (i, (what, text)) in seen.0.iter().enumerate() {
        for (name, needle) in &needles {
            let shown_once = key_shown_in.iter().any(|(at, key)| *at == i && secret_part(key) == *needle);
            if shown_once {
                assert_eq!(text.matches(needle.as_str()).count(), 1, "{what} shows its new key exactly once");
                continue;
            }
            if text.contains(needle.as_str()) {
                leaks.push(format!("{name} in response/frame `{what}`: {:.300}", text));
            }
        }
    }

    let owner = PgPool::connect(&db.url).await.expect("connect as owner");
    let events: Vec<(String, String)> = sqlx::query_as("SELECT id::text, e::text FROM events e ORDER BY session_id, sequence")
        .fetch_all(&owner)
        .await
        .expect("events");
    assert!(events.len() >= 20, "the turns wrote events: {}", events.len());
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables
          WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&owner)
    .await
    .expect("tables");
    for (event, row) in &events {
        for (name, needle) in &needles {
            if row.contains(needle.as_str()) {
                leaks.push(format!("{name} in events row {event}: {row:.300}"));
            }
        }
    }
    // Every other row too, in clear or as hex-encoded bytes.
    for table in &tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT t::text FROM {table} t")))
            .fetch_all(&owner)
            .await
            .expect("scan table");
        for row in &rows {
            for (name, needle) in &needles {
                if row.contains(needle.as_str()) || row.contains(&hex(needle)) {
                    leaks.push(format!("{name} in a row of {table}: {row:.300}"));
                }
            }
        }
    }
    let sealed: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as("SELECT name, api_key_ciphertext FROM providers ORDER BY name")
        .fetch_all(&owner)
        .await
        .expect("providers");
    assert_eq!(
        sealed.iter().filter(|(_, c)| c.is_some()).count(),
        2,
        "both providers hold a sealed key: {:?}",
        sealed.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (name, bytes) in &sealed {
        for (what, needle) in &needles {
            if bytes.as_ref().is_some_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
                leaks.push(format!("{what} in clear in the ciphertext of provider {name}"));
            }
        }
    }
    owner.close().await;

    let mut log_lines = 0;
    for p in [&worker, &api_proc, &sim] {
        let text = strip_ansi(&String::from_utf8_lossy(&std::fs::read(&p.log).expect("read log")));
        log_lines += text.lines().count();
        for (name, needle) in &needles {
            for hit in hits_in(needle, &text) {
                leaks.push(format!("{name} in {} {hit}", p.log.display()));
            }
        }
    }
    let api_log = std::fs::read_to_string(&api_proc.log).unwrap_or_default();
    assert!(api_log.contains("DEBUG"), "the API really logged at debug level");
    assert!(std::fs::metadata(&worker.log).map(|m| m.len()).unwrap_or(0) > 0, "the worker logged");
    println!(
        "leaks: scanned {} responses/frames, {} event rows, {} tables, {log_lines} log lines",
        seen.0.len(),
        events.len(),
        tables.len()
    );

    assert!(leaks.is_empty(), "{} secret leak(s) (logs kept in {}):\n{}", leaks.len(), dir.display(), leaks.join("\n"));
    if std::env::var_os("TURNSTONE_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
