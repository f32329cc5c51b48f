//! Turnstone's control plane: the REST API (poem + poem-openapi), API-key
//! authentication and the SSE event streams.
//!
//! The control plane writes messages, turns and tasks into PostgreSQL and reads
//! the event log back; it never runs an agent loop and never talks to a worker
//! except through the database. It must not contain SQL (that lives in
//! `turnstone-core`) and is the only crate that knows the wire format.
//!
//! # Layout
//! - [`config`]: configuration from the environment.
//! - [`error`]: the one mapping from failures to problem+json responses.
//! - [`auth`]: bearer API keys.
//! - [`wire`]: request/response objects and conversions from core types.
//! - [`text`]: the strict string type request bodies use.
//! - [`routes`]: the operations, one module per tag.
//! - [`idempotency`]: `Idempotency-Key` replay for creating POSTs.
//! - [`fanout`]: the process's one LISTEN connection, fanned out to streams.
//! - [`sse`]: one client's SSE stream, the body of its response.
//! - [`console`]: the operator console page and its embedded assets.
//! - [`listener`]: the accept loop: hyper (HTTP/1.1 and h2c) around the endpoint.

pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod fanout;
pub mod idempotency;
pub mod listener;
pub mod routes;
pub mod sse;
pub mod text;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;
use turnstone_core::ids::OrgId;

use poem::endpoint::BoxEndpoint;
use poem::http::Method;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;
use sqlx::PgPool;
use tokio::sync::watch;
use turnstone_core::crypto::KeyRing;
use turnstone_core::{db, limits, orgs};

pub use config::Config;

/// Shared by every handler and stream of one API process.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    pub hub: Arc<fanout::Hub>,
    pub config: Config,
    /// Flips to `true` when the process drains: SSE streams say `disconnecting` and end.
    pub shutdown: watch::Receiver<bool>,
    /// One permit per open SSE stream (`sse_max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Recent successful key checks; the hub's LISTEN connection invalidates them.
    pub auth_cache: Arc<auth::AuthCache>,
}

impl AppState {
    /// A transaction scoped to one org (row-level security); every tenant read and write runs in one.
    pub async fn org_tx(&self, org_id: OrgId) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, error::ApiError> {
        Ok(db::begin_org(&self.pool, org_id).await?)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

type Apis = (
    routes::system::SystemApi,
    routes::orgs::OrgsApi,
    routes::providers::ProvidersApi,
    routes::agents::AgentsApi,
    routes::sessions::SessionsApi,
    routes::waiting::WaitingApi,
    routes::files::FilesApi,
    routes::kv::KvApi,
    routes::capabilities::CapabilitiesApi,
);

fn apis(state: &AppState) -> Apis {
    (
        routes::system::SystemApi { state: state.clone() },
        routes::orgs::OrgsApi { state: state.clone() },
        routes::providers::ProvidersApi { state: state.clone() },
        routes::agents::AgentsApi { state: state.clone() },
        routes::sessions::SessionsApi { state: state.clone() },
        routes::waiting::WaitingApi { state: state.clone() },
        routes::files::FilesApi { state: state.clone() },
        routes::kv::KvApi { state: state.clone() },
        routes::capabilities::CapabilitiesApi,
    )
}

fn service(apis: Apis) -> OpenApiService<Apis, ()> {
    OpenApiService::new(apis, "Turnstone API", env!("CARGO_PKG_VERSION"))
        .description(
            "Durable AI-agent runtime. Every error is RFC 9457 application/problem+json with a stable `code`. \
             Ids are prefixed (`agt_`, `ses_`, `evt_`…); lists use cursor pagination (`limit`, `after`).",
        )
        .server("/")
        .license(poem_openapi::LicenseObject::new("Apache-2.0").url("https://www.apache.org/licenses/LICENSE-2.0"))
}

/// The OpenAPI document, generated in memory (the committed `openapi/openapi.json`
/// must equal this; a test checks it).
pub fn openapi_json() -> String {
    // The document does not depend on state; render it from an inert one
    // (a lazy pool needs a runtime to exist, not to run).
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let _guard = rt.enter();
    service(apis(&inert_state())).spec()
}

/// A state whose pool never connects; only used to render the document.
fn inert_state() -> AppState {
    let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://localhost/none").expect("lazy pool");
    let (_tx, rx) = watch::channel(false);
    let auth_cache = Arc::new(auth::AuthCache::new(Duration::ZERO));
    AppState(Arc::new(Inner {
        pool: pool.clone(),
        hub: Arc::new(fanout::Hub::new(pool.clone(), pool.clone(), Duration::from_secs(5), auth_cache.clone())),
        auth_cache,
        config: Config {
            database_url: String::new(),
            migrate_database_url: None,
            listen_database_url: None,
            prepared_statements: true,
            db_max_connections: 1,
            keys: KeyRing::parse(&KeyRing::generate_spec("inert")).expect("generated key"),
            operator_token: None,
            bootstrap: orgs::Bootstrap {
                api_key: None,
                provider_base_url: String::new(),
                provider_api_key: None,
                model_name: String::new(),
            },
            sse_heartbeat: Duration::from_secs(15),
            sse_max_connection: Duration::from_secs(300),
            sse_fallback_poll: Duration::from_secs(5),
            sse_key_check: Duration::from_secs(30),
            sse_max_streams: 1,
            auth_cache: Duration::ZERO,
        },
        shutdown: rx,
        streams: Arc::new(tokio::sync::Semaphore::new(1)),
    }))
}

/// Builds the HTTP endpoint: API, docs, body limits and problem+json errors.
pub fn endpoint(state: AppState) -> BoxEndpoint<'static> {
    let service = service(apis(&state));
    let docs = service.swagger_ui();
    let spec = service.spec_endpoint();
    Route::new()
        .nest("/", service)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/console", poem::get(console::page))
        .at("/console/assets/:name", poem::get(console::asset))
        .at("/console/*rest", poem::get(console::page))
        .at("/viewer", poem::get(console::viewer))
        .data(state)
        .around(|ep, req| async move { Ok(bounded_body(ep, req).await) })
        .boxed()
}

/// Buffers request bodies up to the limit (413 beyond it; a file's content is bounded by its own handler) and renders every
/// error as problem+json, inside one span per request (method and path only:
/// the query may hold an `access_token`, so it is never logged).
async fn bounded_body<E: Endpoint>(ep: std::sync::Arc<E>, req: Request) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), status = tracing::field::Empty);
    let started = std::time::Instant::now();
    let resp = handle(ep, req).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    tracing::debug!(parent: &span, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "request done");
    resp
}

async fn handle<E: Endpoint>(ep: std::sync::Arc<E>, mut req: Request) -> Response {
    // A file's content streams to its handler, which bounds it by the org's per-file limit.
    let file_content = *req.method() == Method::PUT && req.uri().path().ends_with("/files/content");
    if file_content && !req.headers().contains_key(poem::http::header::CONTENT_TYPE) {
        // Bytes of no declared type are `application/octet-stream` (RFC 9110, 8.3).
        req.headers_mut()
            .insert(poem::http::header::CONTENT_TYPE, poem::http::HeaderValue::from_static("application/octet-stream"));
    }
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) && !file_content {
        match req.take_body().into_bytes_limit(limits::MAX_BODY_BYTES).await {
            Ok(bytes) => req.set_body(Body::from_bytes(bytes)),
            Err(e) => return error::problem_from_poem_error(e.into()),
        }
    }
    match ep.call(req).await {
        Ok(resp) => resp.into_response(),
        Err(e) => error::problem_from_poem_error(e),
    }
}

/// A running control plane: bound address and a handle to stop it.
pub struct Application {
    pub local_addr: std::net::SocketAddr,
    pub generated_key: Option<turnstone_core::crypto::Secret>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Application {
    /// Connects, migrates, bootstraps the default org and binds; does not serve yet.
    pub async fn build(
        config: Config,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, turnstone_core::Error> {
        db::set_prepared_statements(config.prepared_statements);
        let outcome = {
            // Schema changes and bootstrap need the owner; requests do not.
            let owner_url = config.migrate_database_url.as_deref().unwrap_or(&config.database_url);
            let owner = db::connect(owner_url, 2).await?;
            db::migrate(&owner).await?;
            let outcome = orgs::bootstrap(&owner, &config.keys, &config.bootstrap).await?;
            owner.close().await;
            outcome
        };
        let pool = db::connect(&config.database_url, config.db_max_connections).await?;
        turnstone_core::events::sign_notifications(config.keys.notify_key());
        if db::bypasses_row_security(&pool).await? {
            tracing::warn!(
                "DATABASE_URL connects as a superuser or BYPASSRLS role: row-level security is off; \
                 use a role like turnstone_api (docs/security.md)"
            );
        }
        let listen_pool = db::listen_pool(config.listen_database_url.as_deref().unwrap_or(&config.database_url), "turnstone")?;
        let local_addr = listener.local_addr().map_err(|e| turnstone_core::Error::Queue(e.to_string()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let auth_cache = Arc::new(auth::AuthCache::new(config.auth_cache));
        let state = AppState(Arc::new(Inner {
            pool: pool.clone(),
            hub: Arc::new(fanout::Hub::new(pool.clone(), listen_pool, config.sse_fallback_poll, auth_cache.clone())),
            auth_cache,
            streams: Arc::new(tokio::sync::Semaphore::new(config.sse_max_streams)),
            config,
            shutdown: stop_rx,
        }));
        let (listen_stop_tx, listen_stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(state.hub.clone().run(async move {
            let _ = listen_stop_rx.await;
        }));
        let app = endpoint(state);
        let server = tokio::spawn(async move {
            let result = listener::serve(listener, app, shutdown, stop_tx, Duration::from_secs(10)).await;
            let _ = listen_stop_tx.send(());
            pool.close().await;
            result
        });
        Ok(Application { local_addr, generated_key: outcome.generated_key, server })
    }

    /// Serves until the shutdown future given to [`Application::build`] resolves.
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await.map_err(std::io::Error::other)?
    }
}
