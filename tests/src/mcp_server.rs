//! A real MCP server for the tests, built with `rmcp`'s streamable-HTTP server
//! and served by hyper on 127.0.0.1 (port 0): text results (`echo`, `add`), an
//! error result (`fail`), a slow tool (`slow`), an oversized result (`big`), a
//! tool list that changes when [`McpServer::change_tools`] is called, and an
//! optional required bearer header. It counts what it receives.
//!
//! Also [`ConnectionRecorder`]: a listener that only records connections, for
//! the outbound guard's tests (a refused target must never see one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What the server has seen.
#[derive(Default)]
pub struct Counters {
    /// HTTP requests without an `Mcp-Session-Id`: `initialize` handshakes.
    pub initializations: AtomicUsize,
    /// `tools/call` requests, by any tool.
    pub calls: AtomicUsize,
    /// `tools/list` requests.
    pub lists: AtomicUsize,
    /// Requests refused for a missing or wrong bearer token.
    pub unauthorized: AtomicUsize,
    /// Bumped by [`McpServer::change_tools`]: version 1 adds `extra` and rewords `echo`.
    pub tools_version: AtomicUsize,
}

#[derive(Clone)]
struct Handler(Arc<Counters>);

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(v.as_object().cloned().expect("object schema"))
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.0.lists.fetch_add(1, Ordering::SeqCst);
        let v = self.0.tools_version.load(Ordering::SeqCst);
        let text = schema(json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}));
        let mut tools = vec![
            Tool::new("echo", if v == 0 { "Echoes its text." } else { "Echoes its text back." }, text.clone()),
            Tool::new(
                "add",
                "Adds two numbers.",
                schema(json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})),
            ),
            Tool::new("fail", "Always answers with an error result.", schema(json!({"type": "object"}))),
            Tool::new(
                "slow",
                "Answers after `ms` milliseconds.",
                schema(json!({"type": "object", "properties": {"ms": {"type": "integer"}}})),
            ),
            Tool::new(
                "big",
                "Answers with `bytes` bytes of text.",
                schema(json!({"type": "object", "properties": {"bytes": {"type": "integer"}}})),
            ),
        ];
        if v > 0 {
            tools.push(Tool::new("extra", "Appears after a change.", schema(json!({"type": "object"}))));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let n = |k: &str| args.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let result = match request.name.as_ref() {
            "echo" => CallToolResult::success(vec![ContentBlock::text(args["text"].as_str().unwrap_or_default().to_owned())]),
            "add" => CallToolResult::success(vec![ContentBlock::text(format!("{}", n("a") + n("b")))]),
            "fail" => CallToolResult::error(vec![ContentBlock::text("the tool failed on purpose")]),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(n("ms") as u64)).await;
                CallToolResult::success(vec![ContentBlock::text("finally")])
            }
            "big" => CallToolResult::success(vec![ContentBlock::text("x".repeat(n("bytes") as usize))]),
            "extra" => CallToolResult::success(vec![ContentBlock::text("extra")]),
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(result.into())
    }
}

/// A running MCP server; stops when dropped.
pub struct McpServer {
    /// `http://127.0.0.1:<port>/mcp`
    pub url: String,
    pub counters: Arc<Counters>,
    stop: CancellationToken,
}

impl McpServer {
    /// A server that requires no header.
    pub async fn start() -> McpServer {
        Self::start_with_token(None).await
    }

    /// A server that answers 401 unless `Authorization: Bearer <token>` is sent.
    pub async fn start_with_token(token: Option<&str>) -> McpServer {
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let config = StreamableHttpServerConfig::default().with_cancellation_token(stop.clone());
        let handler = Handler(counters.clone());
        let service: StreamableHttpService<Handler, LocalSessionManager> =
            StreamableHttpService::new(move || Ok(handler.clone()), Default::default(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind MCP server");
        let addr = listener.local_addr().expect("addr");
        let expected = token.map(|t| format!("Bearer {t}"));
        let (c, s) = (counters.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = s.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                // As a production server should: with Nagle on, each response on a kept-alive
                // connection waited ~40 ms for the client's delayed ACK (docs/benchmarks.md, `mcp`).
                let _ = stream.set_nodelay(true);
                let (service, expected, c) = (service.clone(), expected.clone(), c.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (service, expected, c) = (service.clone(), expected.clone(), c.clone());
                        async move {
                            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                            if expected.is_some() && auth != expected {
                                c.unauthorized.fetch_add(1, Ordering::SeqCst);
                                let body = Full::new(Bytes::from_static(b"unauthorized")).map_err(|never| match never {}).boxed();
                                return Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder().status(401).body(body).expect("response"),
                                );
                            }
                            if req.method() == hyper::Method::POST && !req.headers().contains_key("mcp-session-id") {
                                c.initializations.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(service.handle(req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        McpServer { url: format!("http://{addr}/mcp"), counters, stop }
    }

    /// Changes the tool list: `echo`'s description changes and `extra` appears.
    pub fn change_tools(&self) {
        self.counters.tools_version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.counters.calls.load(Ordering::SeqCst)
    }

    pub fn initializations(&self) -> usize {
        self.counters.initializations.load(Ordering::SeqCst)
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listener that records every connection it accepts and answers each
/// with `response` (raw HTTP), or closes it when there is none.
pub struct ConnectionRecorder {
    pub addr: std::net::SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectionRecorder {
    /// Binds `addr` (e.g. `127.0.0.2:0`, `[::1]:0`); `None` when the address cannot be bound here.
    pub async fn bind(addr: &str, response: Option<String>) -> Option<ConnectionRecorder> {
        let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                if let Some(r) = &response {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(r.as_bytes()).await;
                }
            }
        });
        Some(ConnectionRecorder { addr, connections, task })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
