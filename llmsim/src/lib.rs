//! A deterministic, OpenAI-compatible chat-completions server for tests and local development.
//!
//! Turnstone's workers reach every LLM through async-openai over HTTP. To test
//! that path for real — streaming, tool calls, latency, provider failures —
//! without a network or a model, this crate serves OpenAI's wire format and
//! decides each answer from the **last user message** alone:
//!
//! | last user message          | answer                                                                 |
//! |----------------------------|------------------------------------------------------------------------|
//! | `!tool NAME {json}`        | one call to `NAME` with that JSON as `arguments` (`finish_reason: tool_calls`); once a `tool` message follows the user message: `tool NAME returned: <last tool content>` |
//! | `!sleep MS [rest]`         | waits `MS` ms, then answers as for `rest` (or echoes the whole message) |
//! | `!fail STATUS [TIMES]`     | HTTP `STATUS` with `{"error":{…}}`; with `TIMES`, only the first `TIMES` requests with this exact text fail, later ones echo. 429 and 503 carry `retry-after-ms: 50` and `Retry-After: 1` |
//! | anything else              | `echo: <text>`, streamed in at least three chunks                      |
//!
//! Before any of that, a prompt is held to the rules real APIs enforce (`shape.rs`): a tool
//! result directly follows the call it answers, every call has exactly one, and the last
//! message is the user's or a tool's. Otherwise: 400, as OpenAI answers.
//!
//! Usage is deterministic: prompt tokens = ⌈characters of all messages / 4⌉,
//! completion tokens = words of the answer (⌈characters / 4⌉ of name and
//! arguments for a tool call). Streams send `usage` in a final chunk only when
//! `stream_options.include_usage` is true; whole completions always carry it.
//!
//! Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /v1/models/{id}`
//! (echoes any id), `GET /health`.
//!
//! The crate must not depend on any other Turnstone crate, keep state beyond
//! the per-instance `!fail` counters, or answer non-deterministically.
//!
//! # Layout
//! - `lib.rs` — [`Config`], [`run`] (serve on a bound listener until shutdown; its own hyper
//!   accept loop so a client disconnect drops the answer in progress) and [`spawn`] (tests).
//! - `script.rs` — parses the `!tool` / `!sleep` / `!fail` commands.
//! - `wire.rs` — the OpenAI request fields read and the JSON objects written.
//! - `shape.rs` — the prompt-shape rules real APIs enforce (a 400 otherwise): tool results
//!   directly after their call, one per call, and a last message from the user or a tool.
//! - `chat.rs` — the chat-completions handler: script → answer → completion or SSE stream.
//! - `main.rs` — the thin `turnstone-llmsim` binary (`TURNSTONE_LLMSIM_ADDR`, default `127.0.0.1:8090`).
//! - `tests/http.rs` — the simulator over real HTTP: framing, scripts, errors, disconnects.

mod chat;
mod script;
mod shape;
mod wire;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::{TokioIo, TokioTimer};
use poem::{
    Addr, Endpoint, EndpointExt, Response, Route,
    endpoint::BoxEndpoint,
    get, handler,
    http::uri::Scheme,
    middleware::Tracing,
    post,
    web::{LocalAddr, Path, RemoteAddr},
};
use serde_json::json;

pub use script::Script;

/// How the simulator behaves, independent of any request.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Extra delay before every chat answer (`TURNSTONE_LLMSIM_LATENCY_MS`,
    /// default 0): models a slow provider without scripting each message.
    pub latency_ms: u64,
    /// Delay between streamed chunks (`TURNSTONE_LLMSIM_CHUNK_DELAY_MS`,
    /// default 0): makes token deltas observable one by one.
    pub chunk_delay_ms: u64,
}

impl Config {
    /// Reads the `TURNSTONE_LLMSIM_*` variables; unset means 0.
    pub fn from_env() -> Result<Config, String> {
        Ok(Config {
            latency_ms: env_ms("TURNSTONE_LLMSIM_LATENCY_MS")?,
            chunk_delay_ms: env_ms("TURNSTONE_LLMSIM_CHUNK_DELAY_MS")?,
        })
    }
}

fn env_ms(name: &str) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|_| format!("{name} must be a whole number of milliseconds, got {v:?}"))
        }
        _ => Ok(0),
    }
}

/// How long in-flight answers may take to finish after shutdown is signalled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the simulator on `listener` until `shutdown` completes, then
/// drains in-flight answers for up to five seconds.
///
/// Taking a bound listener lets callers bind port 0 and read the port first.
pub async fn run(listener: tokio::net::TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    serve(listener, Arc::new(chat::Sim::new(config)), shutdown).await
}

/// The accept loop. It drives hyper directly instead of `poem::Server`
/// because poem re-polls a connection after hyper reports the client gone,
/// which keeps running the abandoned handler (a `!sleep 30000` would go on for
/// 30 s). Here a finished connection is dropped, and its handler with it.
async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<chat::Sim>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local_addr = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let app: Arc<BoxEndpoint<'static, Response>> = Arc::new(routes(sim).boxed());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // Streamed chunks are small writes: with Nagle on, each waited for the
        // client's delayed ACK of the one before.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let local_addr = local_addr.clone();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                let request =
                    poem::Request::from((request, local_addr.clone(), RemoteAddr(Addr::SocketAddr(peer)), Scheme::HTTP));
                async move { Ok::<_, Infallible>(hyper::Response::from(app.get_response(request).await)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended");
                    }
                    return;
                }
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(remaining = connections.len(), "shutdown grace elapsed; aborting answers");
    }
    Ok(())
}

fn routes(sim: Arc<chat::Sim>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/v1/chat/completions", post(chat::chat_completions))
        .at("/v1/models", get(list_models))
        .at("/v1/models/:id", get(get_model))
        .at("/health", get(health))
        .data(sim)
        .with(Tracing)
        .map_to_response()
}

/// A simulator running on its own task, for tests. Dropping it shuts the server down.
pub struct Running {
    addr: SocketAddr,
    sim: Arc<chat::Sim>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    /// The bound address (`127.0.0.1:<ephemeral port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL clients should use, e.g. `http://127.0.0.1:40123/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat requests being answered right now (a stream counts until its last chunk or disconnect).
    pub fn in_flight(&self) -> usize {
        self.sim.in_flight()
    }
}

/// Pending connections the kernel may queue before `accept` (it caps this at
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128: a worker opening
/// a thousand model streams at once overflowed that queue, and every dropped
/// SYN cost its turn a one-second retransmit (docs/benchmarks.md, `concurrency`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (the first address it resolves to) with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr} resolves to no address")))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Starts a simulator on `127.0.0.1:0` in the current runtime.
pub async fn spawn(config: Config) -> std::io::Result<Running> {
    let listener = bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(chat::Sim::new(config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_sim = sim.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(error) = serve(listener, server_sim, shutdown).await {
            tracing::error!(%error, "llm simulator stopped");
        }
    });
    Ok(Running { addr, sim, _stop: stop })
}

/// The models the simulator advertises; chat requests accept any model name.
const MODELS: [&str; 2] = ["sim-1", "sim-2"];

fn model_json(id: &str) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "turnstone-llmsim" })
}

#[handler]
fn list_models() -> Response {
    let data: Vec<_> = MODELS.iter().map(|id| model_json(id)).collect();
    json_response(json!({ "object": "list", "data": data }))
}

#[handler]
fn get_model(Path(id): Path<String>) -> Response {
    json_response(model_json(&id))
}

#[handler]
fn health() -> Response {
    json_response(json!({ "status": "ok" }))
}

fn json_response(body: serde_json::Value) -> Response {
    Response::builder().content_type("application/json").body(body.to_string())
}
