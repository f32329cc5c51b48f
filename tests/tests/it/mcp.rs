//! The MCP catalog end to end: a real MCP server (rmcp, streamable HTTP, on
//! loopback), registered over the API, its tools listed, cached and called by
//! the worker in a turn; the outbound guard refusing loopback, `localhost`,
//! `[::1]` and redirects with listeners that record any connection. Every
//! address contacted here is a loopback address.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use turnstone_core::crypto::{KeyRing, Secret};
use turnstone_core::ids::OrgId;
use turnstone_tests::mcp_server::{ConnectionRecorder, McpServer};
use turnstone_tests::{Client, Stack, StackOptions};

const TOKEN: &str = "mcp-secret-token-5e1f";

async fn register(api: &Client, name: &str, url: &str, token: Option<&str>) -> Value {
    let mut body = json!({"name": name, "url": url});
    if let Some(t) = token {
        body["headers"] = json!({"Authorization": format!("Bearer {t}")});
    }
    api.post("/v1/mcp-servers", body).await.expect(201)
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// The turn's events of one type.
fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

async fn session_with(api: &Client, caps: &[&str]) -> String {
    api.session(caps).await
}

#[tokio::test]
async fn an_agent_calls_an_mcp_servers_tools_in_a_turn() {
    // Arrange: a server requiring a bearer token, registered with it.
    let stack = Stack::start_with(StackOptions {
        worker: |c| {
            c.mcp.call_timeout = Duration::from_millis(500);
            c.mcp.max_result_bytes = 1000;
        },
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let server = McpServer::start_with_token(Some(TOKEN)).await;
    let created = register(&api, "test", &server.url, Some(TOKEN)).await;
    let mcp = id(&created);
    assert!(mcp.starts_with("mcp_"));
    assert_eq!(created["headers"], json!(["Authorization"]), "names only: {created}");
    assert_eq!(created["status"], "active");
    assert!(created["tools_fetched_at"].is_null());

    // Act: refresh lists the tools and caches them.
    let listed = api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect(200);
    let names: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|t| t["model_name"].as_str().unwrap()).collect();
    assert!(names.contains(&"mcp__test__echo") && names.contains(&"mcp__test__slow"), "{listed}");
    let cached = api.get(&format!("/v1/mcp-servers/{mcp}/tools")).await.expect(200);
    assert_eq!(cached["data"], listed["data"]);
    assert_eq!(cached["data"][0]["hash"].as_str().unwrap().len(), 64);
    assert!(!api.get(&format!("/v1/mcp-servers/{mcp}")).await.expect(200)["tools_fetched_at"].is_null());

    // Act: a turn calls each kind of tool.
    let ses = session_with(&api, &["math", &format!("mcp:{mcp}")]).await;
    api.say(&ses, r#"!tool mcp__test__echo {"text":"hello from mcp"}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 1).await;

    // Assert: the tool ran remotely; started and completed name the server.
    let done = of(&events, "tool.completed");
    assert_eq!(done.len(), 1, "{events:#?}");
    assert_eq!(done[0]["data"]["result"], "hello from mcp");
    assert_eq!(done[0]["data"]["mcp_server_id"], mcp.as_str());
    assert_eq!(of(&events, "tool.started")[0]["data"]["mcp_server_id"], mcp.as_str());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).filter(|t| *t != "session.idled").collect();
    assert_eq!(types, turnstone_tests::TOOL_TURN, "one tool turn, in order");
    let inits = server.initializations();
    let calls = server.calls();
    assert_eq!(calls, 1);

    // An error result is a tool error the model reads.
    api.say(&ses, "!tool mcp__test__fail {}").await;
    let events = api.wait_for(&ses, "turn.completed", 2).await;
    let done = of(&events, "tool.completed");
    assert_eq!(done[1]["data"]["is_error"], true);
    assert!(done[1]["data"]["error"].as_str().unwrap().contains("failed on purpose"), "{:#?}", done[1]);

    // An oversized result is truncated with a note.
    api.say(&ses, r#"!tool mcp__test__big {"bytes": 5000}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 3).await;
    let big = of(&events, "tool.completed")[2]["data"]["result"].as_str().unwrap().to_owned();
    assert!(big.len() < 1200 && big.contains("[truncated: the result was 5000 bytes; the limit is 1000]"), "{big}");

    // A call past its timeout is a tool error; the turn goes on.
    api.say(&ses, r#"!tool mcp__test__slow {"ms": 3000}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 4).await;
    let slow = of(&events, "tool.completed")[3];
    assert_eq!(slow["data"]["is_error"], true);
    assert!(slow["data"]["error"].as_str().unwrap().contains("did not answer within"), "{slow:#?}");

    // Warm: four turns, no new initialize after the worker's first.
    assert_eq!(server.initializations(), inits, "the worker reused its MCP session");
    assert_eq!(server.counters.unauthorized.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The token never appears in any response or event.
    let everything = format!(
        "{}{}{}{:?}",
        api.get("/v1/mcp-servers").await.expect(200),
        api.get(&format!("/v1/mcp-servers/{mcp}")).await.expect(200),
        api.get(&format!("/v1/mcp-servers/{mcp}/tools")).await.expect(200),
        api.events(&ses).await
    );
    assert!(!everything.contains(TOKEN), "the header value leaked");
}

#[tokio::test]
async fn tool_policies_hold_deny_and_approve_mcp_tools_by_their_model_names() {
    // Arrange: every tool of the server asks, `fail` is denied outright (the exact name wins).
    let stack = Stack::start().await;
    let api = stack.client();
    let server = McpServer::start().await;
    let mcp = id(&register(&api, "test", &server.url, None).await);
    api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect(200);
    let policies = json!({"mcp__test__*": "ask", "mcp__test__fail": "deny"});
    let agent = api
        .post("/v1/agents", json!({"name": "careful", "capabilities": [format!("mcp:{mcp}")], "tool_policies": policies}))
        .await
        .expect(201);
    let ses = api.post("/v1/sessions", json!({"agent_id": agent["id"]})).await.expect(201)["id"].as_str().unwrap().to_owned();

    // Act: a denied tool never reaches the server, and the turn goes on without waiting.
    api.say(&ses, "!tool mcp__test__fail {}").await;
    let events = api.wait_for(&ses, "turn.completed", 1).await;
    assert!(of(&events, "turn.waiting").is_empty(), "{events:#?}");
    let denied = of(&events, "tool.completed")[0];
    assert_eq!(denied["data"]["is_error"], true);
    assert!(denied["data"]["error"].as_str().unwrap().contains("denied"), "{denied:#?}");
    assert_eq!(server.calls(), 0, "a denied MCP tool is not called");

    // Act: an asked tool parks the turn; nothing is called until someone decides.
    api.say(&ses, r#"!tool mcp__test__echo {"text": "held"}"#).await;
    let events = api.wait_for(&ses, "turn.waiting", 1).await;
    let asked = of(&events, "tool.approval_requested")[0]["data"].clone();
    assert_eq!(asked["name"], "mcp__test__echo", "{asked:#}");
    assert_eq!(server.calls(), 0, "nothing runs before the approval");
    let url = format!("/v1/sessions/{ses}/approvals/{}", asked["approval_id"].as_str().unwrap());
    api.post(&url, json!({"decision": "approve", "arguments_sha256": asked["arguments_sha256"]})).await.expect(200);
    let events = api.wait_for(&ses, "turn.completed", 2).await;

    // Assert: the approved call ran once on the server with its held arguments, named by its server.
    let ran = of(&events, "tool.completed")[1];
    assert_eq!(ran["data"]["result"], "held", "{ran:#?}");
    assert_eq!(ran["data"]["mcp_server_id"], mcp.as_str());
    assert_eq!(server.calls(), 1);

    // A denial by a person: the server is not called and the model reads why.
    api.say(&ses, r#"!tool mcp__test__add {"a": 1, "b": 2}"#).await;
    let events = api.wait_for(&ses, "turn.waiting", 2).await;
    let asked = of(&events, "tool.approval_requested")[1]["data"].clone();
    let url = format!("/v1/sessions/{ses}/approvals/{}", asked["approval_id"].as_str().unwrap());
    api.post(&url, json!({"decision": "deny", "reason": "no sums", "arguments_sha256": asked["arguments_sha256"]}))
        .await
        .expect(200);
    let events = api.wait_for(&ses, "turn.completed", 3).await;
    assert_eq!(of(&events, "tool.completed")[2]["data"]["error"], r#"{"error":"denied","reason":"no sums"}"#);
    assert_eq!(server.calls(), 1, "the denied call never reached the server");
}

#[tokio::test]
async fn a_changed_tool_list_gets_new_hashes_and_a_disabled_server_offers_nothing() {
    let stack = Stack::start().await;
    let api = stack.client();
    let server = McpServer::start().await;
    let mcp = id(&register(&api, "changing", &server.url, None).await);
    let first = api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect(200);
    server.change_tools();
    let second = api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect(200);
    let hash = |list: &Value, name: &str| {
        list["data"].as_array().unwrap().iter().find(|t| t["name"] == name).map(|t| t["hash"].as_str().unwrap().to_owned())
    };
    assert_ne!(hash(&first, "echo"), hash(&second, "echo"), "a changed definition gets a new hash");
    assert_eq!(hash(&first, "add"), hash(&second, "add"), "an unchanged one keeps its hash");
    assert!(hash(&first, "extra").is_none() && hash(&second, "extra").is_some());

    // allowed_tools limits what agents see; status disabled hides the server.
    let updated = api.patch(&format!("/v1/mcp-servers/{mcp}"), json!({"allowed_tools": ["add"]})).await.expect(200);
    assert_eq!(updated["allowed_tools"], json!(["add"]));
    let tools = api.get(&format!("/v1/mcp-servers/{mcp}/tools")).await.expect(200);
    let allowed: Vec<&str> =
        tools["data"].as_array().unwrap().iter().filter(|t| t["allowed"] == true).map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(allowed, ["add"]);
    let ses = api.session(&[&format!("mcp:{mcp}")]).await;
    api.say(&ses, r#"!tool mcp__changing__echo {"text":"x"}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 1).await;
    let done = of(&events, "tool.completed");
    assert_eq!(done[0]["data"]["is_error"], true, "echo is not allowed: {done:#?}");
    api.say(&ses, r#"!tool mcp__changing__add {"a": 2, "b": 3}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 2).await;
    assert_eq!(of(&events, "tool.completed")[1]["data"]["result"], "5");
}

#[tokio::test]
async fn an_unreachable_server_answers_502_without_its_secrets() {
    let stack = Stack::start().await;
    let api = stack.client();
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = id(&register(&api, "closed", &format!("http://127.0.0.1:{port}/mcp"), Some(TOKEN)).await);
    let p = api.post(&format!("/v1/mcp-servers/{closed}/refresh"), json!({})).await.expect_problem(502, "mcp_unreachable");
    assert!(!p.to_string().contains(TOKEN), "{p}");

    // The server refuses a wrong token: 502 again, saying why, not what was sent.
    let server = McpServer::start_with_token(Some("the-right-one")).await;
    let wrong = id(&register(&api, "wrong-token", &server.url, Some(TOKEN)).await);
    let p = api.post(&format!("/v1/mcp-servers/{wrong}/refresh"), json!({})).await.expect_problem(502, "mcp_unreachable");
    assert!(!p.to_string().contains(TOKEN), "{p}");
    assert!(server.counters.unauthorized.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // Bad input changes nothing and never echoes a header value.
    let bad =
        api.post("/v1/mcp-servers", json!({"name": "x", "url": server.url, "headers": {"X-Key": format!(" {TOKEN}")}})).await;
    assert_eq!(bad.status, 400);
    assert!(!bad.body.to_string().contains(TOKEN), "{}", bad.body);
    api.post("/v1/mcp-servers", json!({"name": "Bad_Name", "url": server.url})).await.expect(400);
    api.post("/v1/mcp-servers", json!({"name": "x", "url": "ftp://x/"})).await.expect_problem(400, "invalid_mcp_url");
    api.post("/v1/mcp-servers", json!({"name": "closed", "url": server.url})).await.expect_problem(409, "mcp_server_name_taken");
    api.post("/v1/agents", json!({"name": "a", "capabilities": ["mcp:mcp_0190b5e3a1c47d2e8f0a1b2c3d4e5f60"]}))
        .await
        .expect_problem(400, "unknown_capability");
    // Moving a server with headers needs new headers.
    api.patch(&format!("/v1/mcp-servers/{wrong}"), json!({"url": "http://127.0.0.1:9/mcp"}))
        .await
        .expect_problem(400, "mcp_headers_required");
}

#[tokio::test]
async fn the_guard_refuses_loopback_and_localhost_without_an_allow_list() {
    // Arrange: no allow-list; every target is a loopback listener recording connections.
    let stack = Stack::start_with(StackOptions { allow_private_networks: Default::default(), ..Default::default() }).await;
    let api = stack.client();
    let v4 = ConnectionRecorder::bind("127.0.0.1:0", None).await.expect("bind 127.0.0.1");
    let mut targets =
        vec![format!("http://127.0.0.1:{}/mcp", v4.addr.port()), format!("http://localhost:{}/mcp", v4.addr.port())];
    let v6 = ConnectionRecorder::bind("[::1]:0", None).await;
    if let Some(v6) = &v6 {
        targets.push(format!("http://[::1]:{}/mcp", v6.addr.port()));
    }
    for (i, url) in targets.iter().enumerate() {
        let mcp = id(&register(&api, &format!("target-{i}"), url, Some(TOKEN)).await);
        // Act
        let p = api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect_problem(502, "mcp_unreachable");
        // Assert
        assert!(p["detail"].as_str().unwrap().contains("loopback"), "{url}: {p}");
        assert!(!p.to_string().contains(TOKEN));
    }
    // An agent using a refused server: the worker refuses too, and the turn goes on without its tools.
    let mcp = id(&api.get("/v1/mcp-servers").await.expect(200)["data"][0]);
    let ses = api.session(&[&format!("mcp:{mcp}")]).await;
    api.say(&ses, r#"!tool mcp__target-0__echo {"text":"x"}"#).await;
    let events = api.wait_for(&ses, "session.idled", 1).await;
    assert!(of(&events, "tool.completed").iter().all(|e| e["data"]["is_error"] == true), "{events:#?}");

    assert_eq!(v4.connections(), 0, "a refused target saw a connection");
    assert_eq!(v6.map_or(0, |v| v.connections()), 0, "a refused [::1] target saw a connection");
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed() {
    // Only 127.0.0.1 is allowed; it redirects to 127.0.0.2, which must see no connection.
    let stack = Stack::start_with(StackOptions {
        allow_private_networks: turnstone_mcp::AllowList::parse("127.0.0.1/32").unwrap(),
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let target = ConnectionRecorder::bind("127.0.0.2:0", None).await.expect("bind 127.0.0.2");
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:{}/mcp\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        target.addr.port()
    );
    let redirector = ConnectionRecorder::bind("127.0.0.1:0", Some(redirect)).await.expect("bind 127.0.0.1");
    let mcp = id(&register(&api, "redirects", &format!("http://127.0.0.1:{}/mcp", redirector.addr.port()), None).await);

    api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect_problem(502, "mcp_unreachable");

    assert!(redirector.connections() >= 1, "the allowed address was contacted");
    assert_eq!(target.connections(), 0, "the redirect was followed");
}

/// Creates a second org with its own API key directly in the database.
async fn second_org(stack: &Stack, pool: &PgPool) -> (OrgId, Client) {
    let org = turnstone_core::orgs::create_org(pool, "other").await.expect("create org").id;
    let key = turnstone_tests::api_key();
    let mut tx = turnstone_core::db::begin_org(pool, org).await.unwrap();
    turnstone_core::orgs::insert_api_key(&mut tx, org, &Secret::new(key.clone()), "k", None).await.expect("insert key");
    tx.commit().await.unwrap();
    (org, stack.client().with_key(&key))
}

#[tokio::test]
async fn another_orgs_mcp_servers_answer_404_and_rotation_reseals_headers() {
    let stack = Stack::start().await;
    let pool = PgPool::connect(&stack.db.url).await.expect("connect");
    let a = stack.client();
    let server = McpServer::start_with_token(Some(TOKEN)).await;
    let mcp = id(&register(&a, "walled", &server.url, Some(TOKEN)).await);
    let before = a.get(&format!("/v1/mcp-servers/{mcp}")).await.expect(200);
    let (_, b) = second_org(&stack, &pool).await;

    let probes = vec![
        b.get(&format!("/v1/mcp-servers/{mcp}")).await,
        b.patch(&format!("/v1/mcp-servers/{mcp}"), json!({"status": "disabled"})).await,
        b.delete(&format!("/v1/mcp-servers/{mcp}")).await,
        b.get(&format!("/v1/mcp-servers/{mcp}/tools")).await,
        b.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await,
    ];
    for (i, r) in probes.into_iter().enumerate() {
        assert_eq!(r.status, 404, "probe #{i}: {}", r.body);
    }
    b.post("/v1/agents", json!({"name": "x", "capabilities": [format!("mcp:{mcp}")]}))
        .await
        .expect_problem(400, "unknown_capability");
    assert!(b.get("/v1/mcp-servers").await.expect(200)["data"].as_array().unwrap().is_empty());
    assert_eq!(a.get(&format!("/v1/mcp-servers/{mcp}")).await.expect(200), before, "B changed nothing");
    assert_eq!(server.calls() + server.counters.lists.load(std::sync::atomic::Ordering::SeqCst), 0, "B reached nothing");

    // Rotation re-seals the headers under the new data key; they still open.
    let org: OrgId = sqlx::query_scalar("SELECT org_id FROM mcp_servers").fetch_one(&pool).await.unwrap();
    let ring = KeyRing::parse(&stack.master_key).unwrap();
    let sealed_before: Vec<u8> = sqlx::query_scalar("SELECT headers_ciphertext FROM mcp_servers").fetch_one(&pool).await.unwrap();
    let rotated = turnstone_core::keychain::rotate_org_key(&pool, &ring, org).await.unwrap();
    assert!(rotated.secrets >= 1);
    let sealed_after: Vec<u8> = sqlx::query_scalar("SELECT headers_ciphertext FROM mcp_servers").fetch_one(&pool).await.unwrap();
    assert_ne!(sealed_before, sealed_after);
    assert!(!String::from_utf8_lossy(&sealed_after).contains(TOKEN));
    a.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect(200);
    a.delete(&format!("/v1/mcp-servers/{mcp}")).await;
    a.get(&format!("/v1/mcp-servers/{mcp}")).await.expect(404);
}

/// `@modelcontextprotocol/server-everything` (npm, installed by `scripts/test`) in streamable-HTTP
/// mode as a child process on a loopback port.
struct Everything {
    child: tokio::process::Child,
    url: String,
}

impl Everything {
    /// `None` (the test is skipped) when `TURNSTONE_MCP_EVERYTHING` is missing, except under CI.
    async fn start() -> Option<Everything> {
        let entry = std::path::PathBuf::from(std::env::var_os("TURNSTONE_MCP_EVERYTHING").unwrap_or_default());
        if !entry.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "server-everything not found ({}); scripts/test installs it",
                entry.display()
            );
            eprintln!("skipped: server-everything not installed (scripts/test installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = tokio::process::Command::new("node")
            .arg(&entry)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs server-everything");
        let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "server-everything did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Everything { child, url: format!("http://127.0.0.1:{port}/mcp") })
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn the_reference_server_everything_interoperates() {
    let Some(everything) = Everything::start().await else { return };
    let stack = Stack::start().await;
    let api = stack.client();
    let mcp = id(&register(&api, "everything", &everything.url, None).await);

    let tools = api.post(&format!("/v1/mcp-servers/{mcp}/refresh"), json!({})).await.expect(200);
    let names: Vec<&str> = tools["data"].as_array().unwrap().iter().map(|t| t["model_name"].as_str().unwrap()).collect();
    assert!(names.contains(&"mcp__everything__echo") && names.contains(&"mcp__everything__get-sum"), "{names:?}");

    let ses = api.session(&[&format!("mcp:{mcp}")]).await;
    api.say(&ses, r#"!tool mcp__everything__get-sum {"a": 2, "b": 3}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 1).await;
    let done = of(&events, "tool.completed");
    assert_eq!(done[0]["data"]["result"], "The sum of 2 and 3 is 5.", "{done:#?}");
    api.say(&ses, r#"!tool mcp__everything__echo {"message": "interop"}"#).await;
    let events = api.wait_for(&ses, "turn.completed", 2).await;
    assert_eq!(of(&events, "tool.completed")[1]["data"]["result"], "Echo: interop");
}

#[tokio::test]
async fn an_org_providers_internal_base_url_is_refused_and_the_operators_is_trusted() {
    // Arrange: no allow-list. The operator's provider (the simulator, on loopback) is trusted.
    let stack = Stack::start_with(StackOptions { allow_private_networks: Default::default(), ..Default::default() }).await;
    let api = stack.client();
    let ses = api.session(&["math"]).await;
    api.say(&ses, "hello").await;
    api.wait_for(&ses, "turn.completed", 1).await;

    // Act: org providers pointed at a loopback listener, by address and by name.
    let target = ConnectionRecorder::bind("127.0.0.1:0", None).await.expect("bind 127.0.0.1");
    let port = target.addr.port();
    for (i, base) in [format!("http://127.0.0.1:{port}/v1"), format!("http://localhost:{port}/v1")].iter().enumerate() {
        let prv = api.post("/v1/providers", json!({"name": format!("internal-{i}"), "base_url": base})).await.expect(201);
        let mdl = api.post("/v1/models", json!({"provider_id": id(&prv), "name": "m"})).await.expect(201);
        let agent = api.post("/v1/agents", json!({"name": "a", "model_id": id(&mdl)})).await.expect(201);
        let ses = id(&api.post("/v1/sessions", json!({"agent_id": id(&agent)})).await.expect(201));
        api.say(&ses, "hello").await;
        // Assert: the turn fails before any connection, saying why.
        let events = api.wait_for(&ses, "turn.failed", 1).await;
        let failed = of(&events, "turn.failed")[0];
        assert_eq!(failed["data"]["error_code"], "provider_address_refused", "{base}: {failed:#?}");
        assert!(failed["data"]["message"].as_str().unwrap().contains("loopback"), "{failed:#?}");
    }
    // Re-pointed by the org, the operator's `default` provider is org-supplied: checked too.
    let default = id(&api.get("/v1/providers").await.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .unwrap()
        .clone());
    api.patch(&format!("/v1/providers/{default}"), json!({"base_url": format!("http://127.0.0.1:{port}/v1")})).await.expect(200);
    let ses = api.session(&[]).await;
    api.say(&ses, "hello").await;
    let events = api.wait_for(&ses, "turn.failed", 1).await;
    assert_eq!(of(&events, "turn.failed")[0]["data"]["error_code"], "provider_address_refused");
    assert_eq!(target.connections(), 0, "a refused provider address saw a connection");
}

#[tokio::test]
async fn the_readme_mcp_walkthrough_calls_the_reference_server() {
    // Arrange
    let Some(everything) = Everything::start().await else { return };
    let stack = Stack::start().await;

    // Act: the README's walkthrough, pointed at the reference server.
    let stdout =
        turnstone_tests::readme::run(&stack, &turnstone_tests::readme::block("mcp"), &[("MCP_URL", &everything.url)]).await;

    // Assert: the tool list came back, and the last line is the remote tool's result.
    assert!(stdout.contains("\"model_name\":\"mcp__everything__get-sum\""), "{stdout}");
    let completed = stdout.lines().last().expect("the tool.completed events are printed last");
    assert!(completed.contains("The sum of 2 and 3 is 5.") && completed.contains("\"mcp_server_id\":\"mcp_"), "{completed}");
    assert!(!stdout.contains("your-mcp-token"), "the header value is never returned");
}
