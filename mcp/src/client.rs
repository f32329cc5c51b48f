//! MCP over streamable HTTP through `rmcp`: warm sessions per server, tool
//! listing, and tool calls with a timeout and a result-size cap.
//!
//! A [`Sessions`] keeps one initialised MCP session per server (keyed by the
//! server's id and a fingerprint of its URL and headers, so an edited server
//! gets a new session). Losing it costs one `initialize` handshake, nothing
//! else: the process stays stateless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{RunningService, ServiceExt};
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransport, StreamableHttpClientTransportConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use turnstone_core::crypto::Secret;

use crate::guard::{Guard, Refused};

/// Knobs of the MCP client (see README, configuration).
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// `TURNSTONE_MCP_CALL_TIMEOUT_SECS` (60): bound on one tool call.
    pub call_timeout: Duration,
    /// Bound on connecting and the `initialize` handshake, and on listing tools.
    pub connect_timeout: Duration,
    /// `TURNSTONE_MCP_MAX_RESULT_KB` (256): a rendered result longer than this is truncated with a note.
    pub max_result_bytes: usize,
    /// `TURNSTONE_ALLOW_PRIVATE_NETWORKS`: address blocks reachable despite their class.
    pub guard: Guard,
    /// `TURNSTONE_MCP_TOOLS_TTL_SECS` (600): a cached tool list older than this is refreshed when a turn needs it.
    pub tools_ttl: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_result_bytes: 256 * 1024,
            guard: Guard::default(),
            tools_ttl: Duration::from_secs(600),
        }
    }
}

impl McpConfig {
    /// Reads `TURNSTONE_MCP_CALL_TIMEOUT_SECS`, `TURNSTONE_MCP_MAX_RESULT_KB`, `TURNSTONE_MCP_TOOLS_TTL_SECS`
    /// and `TURNSTONE_ALLOW_PRIVATE_NETWORKS`.
    pub fn from_env() -> Result<Self, turnstone_core::env::ConfigError> {
        use turnstone_core::env::{ConfigError, positive, seconds, var};
        let allow = match var("TURNSTONE_ALLOW_PRIVATE_NETWORKS") {
            Some(list) => crate::guard::AllowList::parse(&list)
                .map_err(|why| ConfigError::Invalid { name: "TURNSTONE_ALLOW_PRIVATE_NETWORKS", why })?,
            None => Default::default(),
        };
        Ok(McpConfig {
            call_timeout: seconds("TURNSTONE_MCP_CALL_TIMEOUT_SECS", 60.0)?,
            connect_timeout: Duration::from_secs(10),
            max_result_bytes: positive("TURNSTONE_MCP_MAX_RESULT_KB", 256usize)? * 1024,
            guard: Guard::new(allow),
            tools_ttl: seconds("TURNSTONE_MCP_TOOLS_TTL_SECS", 600.0)?,
        })
    }
}

/// Where a server is and what to send it. Header values are secrets.
#[derive(Clone)]
pub struct Endpoint {
    /// The server's id, the key of its warm session.
    pub server_id: uuid::Uuid,
    pub url: String,
    pub headers: Vec<(String, Secret)>,
}

impl Endpoint {
    /// A hash of the URL and headers: a changed server gets a new session.
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.url.as_bytes());
        for (k, v) in &self.headers {
            h.update([0]);
            h.update(k.as_bytes());
            h.update([1]);
            h.update(v.expose_secret().as_bytes());
        }
        h.finalize().into()
    }

    /// Removes every header value from a message (errors may quote what was sent).
    fn redact(&self, mut message: String) -> String {
        for (_, v) in &self.headers {
            let v = v.expose_secret();
            if !v.is_empty() {
                message = message.replace(v, "[redacted]");
            }
        }
        message
    }
}

/// Why a server could not be used. Messages never hold a header value.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The guard refused the destination.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// Connecting, the handshake or the request failed.
    #[error("{0}")]
    Unreachable(String),
    /// The call took longer than its timeout.
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
}

/// A tool's result as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub text: String,
    /// The server marked the result `isError`: a tool error the model can read.
    pub is_error: bool,
}

type Client = RunningService<RoleClient, ClientConfig>;

struct Warm {
    fingerprint: [u8; 32],
    client: Client,
}

/// A process's MCP sessions, one per server, kept across turns.
pub struct Sessions {
    config: McpConfig,
    http: reqwest::Client,
    warm: Mutex<HashMap<uuid::Uuid, Arc<Warm>>>,
}

impl Sessions {
    pub fn new(config: McpConfig) -> Result<Sessions, String> {
        let http = config.guard.http_client(config.connect_timeout)?;
        Ok(Sessions { config, http, warm: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &McpConfig {
        &self.config
    }

    /// Connects and runs the `initialize` handshake (protocol version negotiation, session id).
    async fn connect(&self, ep: &Endpoint) -> Result<Client, McpError> {
        self.config.guard.check_url(&ep.url).await?;
        let mut headers = HashMap::new();
        for (name, value) in &ep.headers {
            let name = http::HeaderName::try_from(name.as_str())
                .map_err(|_| McpError::Unreachable(format!("header name {name:?} is not valid")))?;
            let mut value = http::HeaderValue::try_from(value.expose_secret())
                .map_err(|_| McpError::Unreachable(format!("the value of header {name} is not valid")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let config = StreamableHttpClientTransportConfig::with_uri(ep.url.as_str())
            .custom_headers(headers)
            .reinit_on_expired_session(true);
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let started = Instant::now();
        let client = tokio::time::timeout(self.config.connect_timeout, ClientConfig::default().serve(transport))
            .await
            .map_err(|_| McpError::Timeout(self.config.connect_timeout))?
            .map_err(|e| McpError::Unreachable(ep.redact(describe(&e))))?;
        tracing::debug!(server_id = %ep.server_id, ms = started.elapsed().as_millis() as u64, "MCP session initialised");
        Ok(client)
    }

    /// The warm session of a server, connecting when there is none (or its server changed, or it closed).
    async fn session(&self, ep: &Endpoint) -> Result<Arc<Warm>, McpError> {
        let fingerprint = ep.fingerprint();
        if let Some(w) = self.warm.lock().await.get(&ep.server_id)
            && w.fingerprint == fingerprint
            && !w.client.is_closed()
        {
            return Ok(w.clone());
        }
        let warm = Arc::new(Warm { fingerprint, client: self.connect(ep).await? });
        self.warm.lock().await.insert(ep.server_id, warm.clone());
        Ok(warm)
    }

    /// Drops a server's session (after a transport failure, or when it is deleted).
    pub async fn forget(&self, server_id: uuid::Uuid) {
        self.warm.lock().await.remove(&server_id);
    }

    /// Whether a warm session for this server exists (tests, benchmarks).
    pub async fn is_warm(&self, server_id: uuid::Uuid) -> bool {
        self.warm.lock().await.contains_key(&server_id)
    }

    /// Lists every tool of the server, as the JSON the server sent (all pages).
    pub async fn list_tools(&self, ep: &Endpoint) -> Result<Vec<Value>, McpError> {
        let warm = self.session(ep).await?;
        let listed = tokio::time::timeout(self.config.connect_timeout, warm.client.peer().list_all_tools()).await;
        match listed {
            Err(_) => Err(McpError::Timeout(self.config.connect_timeout)),
            Ok(Err(e)) => {
                self.forget(ep.server_id).await;
                Err(McpError::Unreachable(ep.redact(format!("listing tools failed: {}", describe(&e)))))
            }
            Ok(Ok(tools)) => Ok(tools.iter().filter_map(|t| serde_json::to_value(t).ok()).collect()),
        }
    }

    /// Calls a tool. A protocol or transport failure is an `Err`; a result the
    /// server marks `isError` is an `Ok` with `is_error` (the model reads it).
    pub async fn call(
        &self,
        ep: &Endpoint,
        tool: &str,
        arguments: Option<serde_json::Map<String, Value>>,
    ) -> Result<ToolResult, McpError> {
        let warm = self.session(ep).await?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments;
        // Dropping the call at the timeout sends the server a cancellation.
        let called = tokio::time::timeout(self.config.call_timeout, warm.client.peer().call_tool(params)).await;
        let result = match called {
            Err(_) => return Err(McpError::Timeout(self.config.call_timeout)),
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                return Ok(ToolResult {
                    text: cap(ep.redact(format!("MCP error {}: {}", e.code.0, e.message)), self.config.max_result_bytes),
                    is_error: true,
                });
            }
            Ok(Err(e)) => {
                self.forget(ep.server_id).await;
                return Err(McpError::Unreachable(ep.redact(describe(&e))));
            }
            Ok(Ok(r)) => r,
        };
        let value = serde_json::to_value(&result).unwrap_or(Value::Null);
        Ok(ToolResult { text: cap(render(&value), self.config.max_result_bytes), is_error: result.is_error == Some(true) })
    }
}

/// An error's message with its sources, one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Renders a `CallToolResult` for the model: text as is; an image or audio as a
/// note of its type and size (the bytes are not sent); an embedded resource as
/// its URI and text (a binary one as a note); a resource link as its URI; with
/// no content, the structured content as JSON. Parts are joined by blank lines.
pub fn render(result: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in result.get("content").and_then(Value::as_array).into_iter().flatten() {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let part = match s("type") {
            "text" => s("text").to_owned(),
            kind @ ("image" | "audio") => {
                format!("[{kind}: {}, {} bytes of base64 not shown]", s("mimeType"), s("data").len())
            }
            "resource" => {
                let r = c.get("resource").cloned().unwrap_or(Value::Null);
                let uri = r.get("uri").and_then(Value::as_str).unwrap_or_default();
                match r.get("text").and_then(Value::as_str) {
                    Some(text) => format!("[resource {uri}]\n{text}"),
                    None => format!(
                        "[resource {uri}: {}, binary, not shown]",
                        r.get("mimeType").and_then(Value::as_str).unwrap_or("application/octet-stream")
                    ),
                }
            }
            "resource_link" => format!("[resource link {}: {}]", s("uri"), s("name")),
            other => format!("[{other} content not shown]"),
        };
        parts.push(part);
    }
    if parts.is_empty()
        && let Some(structured) = result.get("structuredContent")
    {
        parts.push(structured.to_string());
    }
    parts.join("\n\n")
}

/// Truncates at a character boundary to `max` bytes, saying so.
pub fn cap(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[truncated: the result was {} bytes; the limit is {max}]", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contents_render_for_the_model() {
        let r = json!({"content": [
            {"type": "text", "text": "hello"},
            {"type": "image", "mimeType": "image/png", "data": "aGVsbG8="},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
            {"type": "resource", "resource": {"uri": "file:///b.bin", "blob": "AAAA", "mimeType": "application/zip"}},
            {"type": "resource_link", "uri": "file:///c", "name": "c"}
        ]});
        assert_eq!(
            render(&r),
            "hello\n\n[image: image/png, 8 bytes of base64 not shown]\n\n[resource file:///a.txt]\ninside\n\n\
             [resource file:///b.bin: application/zip, binary, not shown]\n\n[resource link file:///c: c]"
        );
        assert_eq!(render(&json!({"content": [], "structuredContent": {"sum": 3}})), r#"{"sum":3}"#);
    }

    #[test]
    fn long_results_are_truncated_with_a_note() {
        assert_eq!(cap("short".into(), 10), "short");
        let out = cap("é".repeat(10), 5);
        assert!(out.starts_with("éé\n[truncated: the result was 20 bytes; the limit is 5]"), "{out}");
    }

    #[test]
    fn redaction_removes_header_values() {
        let ep = Endpoint {
            server_id: uuid::Uuid::nil(),
            url: "http://x/".into(),
            headers: vec![("Authorization".into(), Secret::new("Bearer s3cret".to_owned()))],
        };
        assert_eq!(ep.redact("sent Bearer s3cret, got 401".into()), "sent [redacted], got 401");
    }
}
