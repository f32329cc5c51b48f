//! Test harness for Turnstone's integration tests: a fresh PostgreSQL database
//! per test, the LLM simulator, the API and workers — in-process (fast) or as
//! real child processes (for kill tests) — and small HTTP/SSE clients.
//!
//! It must never mock the database, the queue or SSE: everything here talks to
//! real servers over real sockets.
//!
//! # Layout
//! - [`TestDb`]: create-on-new, drop-on-drop databases from `TURNSTONE_TEST_DATABASE_URL`.
//! - [`Stack`]: simulator + API + N workers in this process, wired to one `TestDb`.
//! - [`Client`]: JSON calls with an API key, returning status and body.
//! - [`SseReader`]: a live `text/event-stream` as frames (parsed by `eventsource-stream`).
//! - [`procs`]: the same binaries as child processes.
//! - [`pooler`]: a real PgBouncer in transaction mode in front of the test database.
//! - [`recorder`]: an OpenAI-compatible endpoint that records what workers send the model.
//! - [`readme`]: the README's walkthroughs, run as written.
//! - [`mcp_server`]: a real MCP server (rmcp, streamable HTTP) and a connection recorder for the outbound guard.

pub mod mcp_server;
pub mod pooler;
pub mod procs;
pub mod readme;
pub mod recorder;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use turnstone_core::crypto::{KeyRing, Secret};

/// The stored event types of a turn that calls one tool, in order (no `session.idled`).
pub const TOOL_TURN: [&str; 10] = [
    "input.message",
    "session.activated",
    "turn.started",
    "reason.started",
    "output.message.completed",
    "tool.started",
    "tool.completed",
    "reason.started",
    "output.message.completed",
    "turn.completed",
];

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The admin URL tests create databases from.
pub fn admin_url() -> String {
    std::env::var("TURNSTONE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::new_on(&admin_url()).await
    }

    /// A database on another server (e.g. a private cluster a test restarts).
    pub async fn new_on(admin: &str) -> TestDb {
        let admin = admin.to_owned();
        let name = format!("turnstone_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect_with_url(&admin).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = match admin.rfind('/') {
            Some(i) if !admin[i + 1..].contains('@') => format!("{}/{}", &admin[..i], name),
            _ => format!("{admin}/{name}"),
        };
        TestDb { name, url, admin }
    }
}

impl TestDb {
    /// This database's URL, connecting as the admin user but acting as `role`
    /// (`SET ROLE` at connect), so privileges and row-level security apply.
    pub fn as_role(&self, role: &str) -> String {
        format!("{}?options=-c%20role%3D{role}", self.url)
    }
}

trait ConnectUrl {
    async fn connect_with_url(url: &str) -> sqlx::PgConnection;
}

impl ConnectUrl for sqlx::PgConnection {
    async fn connect_with_url(url: &str) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(url).await.expect("connect to the test PostgreSQL (TURNSTONE_TEST_DATABASE_URL)")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // For a post-mortem with psql (a benchmark's data, a failing test's rows).
        if std::env::var_os("TURNSTONE_TEST_KEEP_DB").is_some_and(|v| v == "1") {
            eprintln!("kept database {}", self.name);
            return;
        }
        let (name, admin) = (self.name.clone(), self.admin.clone());
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                use sqlx::Connection;
                let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else { return };
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await;
            });
        })
        .join();
    }
}

/// Waits (with the test deadline) until `cond` holds; `what` names it in the failure.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_until`] for a condition that must be awaited (a query, a request).
pub async fn wait_for_condition<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh random master key spec.
/// A fresh migrated database with the bootstrap org (no API key, a provider
/// nobody listens on), for tests that drive `turnstone_core` directly.
/// Returns the database, its owner's pool (bypasses row-level security: for
/// inspection) and the org's id.
pub async fn org_database() -> (TestDb, sqlx::PgPool, turnstone_core::ids::OrgId) {
    use turnstone_core::{db, orgs};
    let tdb = TestDb::new().await;
    let owner = db::connect(&tdb.url, 2).await.expect("connect");
    db::migrate(&owner).await.expect("migrate");
    let keys = KeyRing::parse(&master_key()).expect("key ring");
    let boot = orgs::Bootstrap {
        api_key: None,
        provider_base_url: "http://127.0.0.1:9/v1".into(),
        provider_api_key: None,
        model_name: "m".into(),
    };
    let org = orgs::bootstrap(&owner, &keys, &boot).await.expect("bootstrap").org_id;
    (tdb, owner, org)
}

pub fn master_key() -> String {
    KeyRing::generate_spec("test")
}

/// An API key in the issued format.
pub fn api_key() -> String {
    turnstone_core::orgs::generate_api_key().expose_secret().to_owned()
}

/// Options for [`Stack::start`].
#[derive(Clone)]
pub struct StackOptions {
    pub workers: usize,
    pub sim: turnstone_llmsim::Config,
    /// `OPENAI_API_KEY` for the default provider (to test it never leaks).
    pub provider_api_key: Option<String>,
    pub sse_max_connection: Duration,
    pub worker: fn(&mut turnstone_worker::Config),
    /// Create the database on this server instead of `TURNSTONE_TEST_DATABASE_URL`.
    pub admin_url: Option<String>,
    /// `TURNSTONE_SSE_MAX_STREAMS` of the API.
    pub sse_max_streams: usize,
    /// SSE heartbeat interval (a closed client is noticed on the next writes).
    pub sse_heartbeat: Duration,
    /// `TURNSTONE_AUTH_CACHE_SECS` of the API.
    pub auth_cache: Duration,
    /// Reach PostgreSQL through a PgBouncer in transaction mode ([`pooler`]), as
    /// the login roles, without prepared statements; LISTEN and migrations direct.
    pub via_pgbouncer: bool,
    /// `TURNSTONE_ALLOW_PRIVATE_NETWORKS` of the API and workers: loopback by default,
    /// so tests can reach their own MCP servers; empty to see the guard refuse them.
    pub allow_private_networks: turnstone_mcp::AllowList,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            workers: 1,
            sim: turnstone_llmsim::Config::default(),
            provider_api_key: None,
            sse_max_connection: Duration::from_secs(300),
            worker: |_| {},
            admin_url: None,
            sse_max_streams: 1000,
            sse_heartbeat: Duration::from_secs(15),
            auth_cache: Duration::from_secs(10),
            via_pgbouncer: false,
            allow_private_networks: turnstone_mcp::AllowList::loopback(),
        }
    }
}

/// The MCP client of a test stack: the options' allow-list, a 5 s call timeout, and names
/// resolved without DNS (`localhost` only), so no test query leaves the machine.
fn mcp_config(opts: &StackOptions) -> turnstone_mcp::McpConfig {
    let localhost = vec![("localhost".to_owned(), vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])];
    turnstone_mcp::McpConfig {
        guard: turnstone_mcp::Guard::new(opts.allow_private_networks.clone()).with_hosts_only(localhost),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Simulator, API and workers running in this process against one fresh database.
pub struct Stack {
    pub db: TestDb,
    pub sim: turnstone_llmsim::Running,
    pub base: String,
    pub key: String,
    pub master_key: String,
    /// `TURNSTONE_OPERATOR_TOKEN` of this stack's API.
    pub operator_token: String,
    /// The pooler between the processes and the database, when [`StackOptions::via_pgbouncer`].
    pub pgbouncer: Option<pooler::PgBouncer>,
    api_stop: Option<oneshot::Sender<()>>,
    api_done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    worker_stops: Vec<oneshot::Sender<()>>,
    /// The MCP client configuration the API and workers share.
    pub mcp: turnstone_mcp::McpConfig,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(opts: StackOptions) -> Stack {
        let db = match &opts.admin_url {
            Some(admin) => TestDb::new_on(admin).await,
            None => TestDb::new().await,
        };
        let sim = turnstone_llmsim::spawn(opts.sim.clone()).await.expect("simulator");
        let key = api_key();
        let master_key = master_key();
        let operator_token = format!("op-{}", uuid::Uuid::now_v7().simple());
        let keys = KeyRing::parse(&master_key).expect("key ring");
        let pgbouncer = match opts.via_pgbouncer {
            true => {
                // The login roles join group roles the migrations create.
                let owner = turnstone_core::db::connect(&db.url, 1).await.expect("owner connection");
                turnstone_core::db::migrate(&owner).await.expect("migrate");
                owner.close().await;
                Some(pooler::PgBouncer::start(&db.url).await)
            }
            false => None,
        };
        let config = turnstone_api::Config {
            // Requests run as the least-privileged API role, so row-level security is always on.
            database_url: match &pgbouncer {
                Some(b) => b.url("turnstone_api_login", &db.name),
                None => db.as_role("turnstone_api"),
            },
            migrate_database_url: Some(db.url.clone()),
            listen_database_url: pgbouncer.as_ref().map(|_| db.as_role("turnstone_api")),
            prepared_statements: pgbouncer.is_none(),
            db_max_connections: 8,
            keys: keys.clone(),
            operator_token: Some(Secret::new(operator_token.clone())),
            bootstrap: turnstone_core::orgs::Bootstrap {
                api_key: Some(Secret::new(key.clone())),
                provider_base_url: sim.base_url(),
                provider_api_key: opts.provider_api_key.clone().map(Secret::new),
                model_name: "sim-1".into(),
            },
            sse_heartbeat: opts.sse_heartbeat,
            sse_max_connection: opts.sse_max_connection,
            sse_fallback_poll: Duration::from_secs(5),
            sse_key_check: Duration::from_secs(1),
            sse_max_streams: opts.sse_max_streams,
            auth_cache: opts.auth_cache,
            mcp: mcp_config(&opts),
        };
        let listener = turnstone_api::listener::bind("127.0.0.1:0").await.expect("bind");
        let (api_stop, stopped) = oneshot::channel::<()>();
        let app = turnstone_api::Application::build(config, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("api builds");
        let base = format!("http://{}", app.local_addr);
        let api_done = tokio::spawn(app.wait());
        let mut stack = Stack {
            pgbouncer,
            db,
            sim,
            base,
            key,
            master_key,
            operator_token,
            api_stop: Some(api_stop),
            api_done: Some(api_done),
            worker_stops: vec![],
            mcp: Default::default(),
        };
        stack.mcp = mcp_config(&opts);
        for _ in 0..opts.workers {
            stack.add_worker(opts.worker).await;
        }
        stack
    }

    /// Starts one more in-process worker.
    pub async fn add_worker(&mut self, tune: fn(&mut turnstone_worker::Config)) {
        let (url, listen_url, prepared) = self.worker_urls();
        let mut config = turnstone_worker::Config::new(url, KeyRing::parse(&self.master_key).expect("key ring"));
        config.listen_database_url = listen_url;
        config.prepared_statements = prepared;
        config.poll_interval = Duration::from_millis(200);
        config.llm_backoff = Duration::from_millis(20);
        config.db_max_connections = 6;
        config.mcp = self.mcp.clone();
        tune(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(e) = turnstone_worker::run(config, async move {
                let _ = stopped.await;
            })
            .await
            {
                eprintln!("worker stopped with error: {e}");
            }
        });
        self.worker_stops.push(stop);
    }

    /// A worker's `DATABASE_URL`, `TURNSTONE_LISTEN_DATABASE_URL` and
    /// `TURNSTONE_DB_PREPARED_STATEMENTS` for this stack.
    pub fn worker_urls(&self) -> (String, Option<String>, bool) {
        match &self.pgbouncer {
            Some(b) => (b.url("turnstone_worker_login", &self.db.name), Some(self.db.as_role("turnstone_worker")), false),
            None => (self.db.as_role("turnstone_worker"), None, true),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base, &self.key)
    }

    /// A client holding the operator token.
    pub fn operator(&self) -> Client {
        Client::new(&self.base, &self.operator_token)
    }

    /// Stops the API (graceful drain) and waits for it.
    pub async fn stop_api(&mut self) {
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.api_done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for stop in self.worker_stops.drain(..) {
            let _ = stop.send(());
        }
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A JSON API client bound to one key.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

/// Status, content type and parsed body of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    /// The `Retry-After` header, when present.
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts a problem+json error with this status and code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "problem content type; body: {}", self.body);
        assert_eq!(self.body["code"], code, "problem code; body: {}", self.body);
        assert_eq!(self.body["status"], status, "problem status field");
        self.body
    }
}

impl Client {
    pub fn new(base: &str, key: &str) -> Client {
        Client { base: base.to_owned(), key: key.to_owned(), http: reqwest::Client::new() }
    }

    pub fn with_key(&self, key: &str) -> Client {
        Client { key: key.to_owned(), ..self.clone() }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.bearer_auth(&self.key).send().await.expect("request sent");
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await.expect("body read");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, content_type, retry_after, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// Creates an agent with the given capabilities; returns its id.
    pub async fn agent(&self, capabilities: &[&str]) -> String {
        let body = self
            .post("/v1/agents", json!({"name": "test agent", "system_prompt": "Be brief.", "capabilities": capabilities}))
            .await
            .expect(201);
        body["id"].as_str().expect("agent id").to_owned()
    }

    /// Creates a session with a fresh agent; returns the session id.
    pub async fn session(&self, capabilities: &[&str]) -> String {
        let agent = self.agent(capabilities).await;
        let body = self.post("/v1/sessions", json!({"agent_id": agent})).await.expect(201);
        body["id"].as_str().expect("session id").to_owned()
    }

    /// Posts a text message; returns the 202 body.
    pub async fn say(&self, session: &str, text: &str) -> Value {
        self.post(&format!("/v1/sessions/{session}/messages"), json!({"content": [{"type": "text", "text": text}]}))
            .await
            .expect(202)
    }

    /// All events of a session, in order.
    pub async fn events(&self, session: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(&format!("/v1/sessions/{session}/events?limit=1000&after_sequence={after}")).await.expect(200);
            let data = page["data"].as_array().expect("data").clone();
            let n = data.len();
            out.extend(data);
            match page["next_after_sequence"].as_i64() {
                Some(next) if n > 0 => after = next,
                _ => return out,
            }
        }
    }

    /// Waits (polling the log, with a deadline) until `count` events of `kind` exist.
    pub async fn wait_for(&self, session: &str, kind: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let events = self.events(session).await;
            if events.iter().filter(|e| e["type"] == kind).count() >= count {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {count} {kind} in {session}; log: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens the SSE stream of a session.
    pub async fn sse(&self, session: &str, query: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = self.http.get(format!("{}/v1/sessions/{session}/sse{query}", self.base)).bearer_auth(&self.key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("sse request");
        assert_eq!(resp.status().as_u16(), 200, "sse status");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        SseReader::from_response(resp)
    }
}

/// One parsed SSE frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The frame's `event:` field, `message` when it has none.
    pub event: String,
    /// The `id:` this frame set, `None` when it left the last event id as it was
    /// (the server sets one on stored events only, never on deltas or its own frames).
    pub id: Option<String>,
    /// The `data:` field as JSON, or as a string when it is not JSON.
    pub data: Value,
}

type Events =
    eventsource_stream::EventStream<std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>>;

/// Reads frames from a live SSE response; `eventsource-stream` does the parsing.
pub struct SseReader {
    events: Events,
    /// The last event id before the frame being read, to tell which frames set one.
    last_id: String,
}

impl SseReader {
    pub fn from_response(resp: reqwest::Response) -> SseReader {
        use eventsource_stream::Eventsource;
        let bytes: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> = Box::pin(resp.bytes_stream());
        SseReader { events: bytes.eventsource(), last_id: String::new() }
    }

    /// The next frame (comments such as heartbeats are skipped), or `None` at
    /// the end of the stream or on a transport or encoding error.
    pub async fn next(&mut self) -> Option<Frame> {
        let event = tokio::time::timeout(DEADLINE, self.events.next()).await.expect("SSE frame within the deadline")?.ok()?;
        // The parser reports the last event id, as a browser's `lastEventId` does: a
        // frame without `id:` repeats the one before. Event ids are unique, so a
        // frame set an id exactly when the reported one changed.
        let id = (event.id != self.last_id && !event.id.is_empty()).then(|| event.id.clone());
        self.last_id = event.id;
        let data = serde_json::from_str(&event.data).unwrap_or(Value::String(event.data));
        Some(Frame { event: event.event, id, data })
    }

    /// Reads frames until one of type `kind` arrives; returns all read, in order.
    pub async fn until(&mut self, kind: &str) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next().await {
            let done = f.event == kind;
            out.push(f);
            if done {
                return out;
            }
        }
        panic!("stream ended before {kind}; got {out:#?}");
    }
}

/// The sequence numbers of stored-event frames.
pub fn sequences(frames: &[Frame]) -> Vec<i64> {
    frames.iter().filter(|f| f.id.is_some()).map(|f| f.data["sequence"].as_i64().expect("sequence")).collect()
}
