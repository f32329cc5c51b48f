//! The worker's LLM client: one streamed chat completion against any OpenAI-compatible endpoint.
//!
//! [`stream_chat`] sends the conversation through async-openai, forwards each
//! text fragment to a callback as it arrives, assembles tool-call fragments by
//! `index`, and returns the whole reply with its token usage. Failures come
//! back as an [`LlmError`] with the provider's HTTP status and retry hint, a
//! stable [`LlmError::code`] and a retry verdict ([`LlmError::is_retryable`]).
//!
//! Two choices shape this file:
//! - **No hidden retries.** async-openai's default client retries 429/5xx up to
//!   three times with backoff. A turn step must decide retries itself (and
//!   record them), so the client runs on a plain `ReqwestService` through
//!   async-openai's `middleware` hook, wrapped in `failures::StatusAware`.
//! - **Status and headers survive.** async-openai turns an error response into
//!   `ApiError` with the status but drops the headers (no `Retry-After`), and
//!   keeps 5xx bodies unparsed. `StatusAware` ([`failures`]) reads every non-2xx
//!   response itself and keeps its status, retry hint and message.
//!
//! Secrets: the API key is sent only as the `Authorization` header; it is
//! redacted from `Debug` output and scrubbed from every error message.

mod failures;

use std::{collections::BTreeMap, fmt, time::Duration};

use async_openai::{
    Client,
    config::OpenAIConfig,
    middleware::ReqwestService,
    types::chat::{
        ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
        ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
        ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage, ChatCompletionRequestToolMessageContent,
        ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent, ChatCompletionStreamOptions,
        ChatCompletionTool, ChatCompletionTools, CreateChatCompletionRequest, FinishReason, FunctionCall, FunctionObject,
    },
};
use futures::StreamExt;
use openai_reqwest as reqwest;
use serde::{Deserialize, Serialize};

use failures::{StatusAware, from_openai};

/// Where and how to reach one model.
#[derive(Clone)]
pub struct LlmEndpoint {
    /// OpenAI-compatible base URL including the version segment, e.g. `http://127.0.0.1:8090/v1`.
    pub base_url: String,
    /// Bearer token; `None` sends an empty one (local servers usually ignore it).
    /// Never taken from the process environment: a provider only gets its own key.
    pub api_key: Option<String>,
    pub model: String,
    /// Bound on the whole call, stream included: a stalled provider cannot hold a turn forever.
    pub timeout: Duration,
    /// The process's shared HTTP client (see [`http_client`]).
    pub http: reqwest::Client,
}

impl fmt::Debug for LlmEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmEndpoint")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One message of the conversation sent to the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ChatMessage {
    System(String),
    User(String),
    Assistant { content: String, tool_calls: Vec<ToolCall> },
    Tool { tool_call_id: String, content: String },
}

/// A function call the model asked for; `arguments` is the model's JSON text, unvalidated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A function the model may call; `parameters` is a JSON Schema object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Tokens the provider reported for one call (zero if it reported none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The model's complete answer to one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LlmReply {
    /// All text fragments joined (empty when the model only called tools).
    pub content: String,
    /// In `index` order.
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// OpenAI's `finish_reason` in snake_case: `stop`, `length`, `tool_calls`, `content_filter`, `function_call`.
    pub finish_reason: Option<String>,
}

/// Why a call failed. Messages never contain the API key.
#[derive(thiserror::Error, Debug)]
pub enum LlmError {
    /// The provider answered with a non-2xx status.
    #[error("provider answered HTTP {status}: {message}")]
    Status {
        status: u16,
        /// From `retry-after-ms` (OpenAI) or else `Retry-After` in seconds; HTTP-date values are ignored.
        retry_after: Option<Duration>,
        message: String,
    },
    /// The call, stream included, took longer than [`LlmEndpoint::timeout`].
    #[error("provider did not finish within the timeout")]
    Timeout,
    /// No connection, or it broke before the reply was complete.
    #[error("provider unreachable: {0}")]
    Connect(String),
    /// The provider answered something that is not a valid chat-completions reply.
    #[error("provider protocol error: {0}")]
    Protocol(String),
    /// The endpoint itself is unusable (for example an API key that cannot be sent as a header).
    #[error("provider endpoint misconfigured: {0}")]
    InvalidEndpoint(String),
}

impl LlmError {
    /// A stable snake_case code for events and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Status { status, .. } => match status {
                401 | 403 => "provider_unauthorized",
                404 => "provider_not_found",
                408 => "provider_timeout",
                409 => "provider_conflict",
                429 => "provider_rate_limited",
                500..=599 => "provider_unavailable",
                400..=499 => "provider_bad_request",
                _ => "provider_protocol_error",
            },
            LlmError::Timeout => "provider_timeout",
            LlmError::Connect(_) => "provider_unreachable",
            LlmError::Protocol(_) => "provider_protocol_error",
            LlmError::InvalidEndpoint(_) => "provider_misconfigured",
        }
    }

    /// Whether the same request may succeed later: 408, 409, 429, 5xx, timeouts and connection failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..=599),
            LlmError::Timeout | LlmError::Connect(_) => true,
            LlmError::Protocol(_) | LlmError::InvalidEndpoint(_) => false,
        }
    }

    /// The provider's requested wait before retrying, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Removes `secret` from every message (providers may echo a bad key back).
    fn scrubbed(self, secret: Option<&str>) -> LlmError {
        let Some(secret) = secret.filter(|s| s.len() >= 4) else { return self };
        let scrub = |m: String| m.replace(secret, "<redacted>");
        match self {
            LlmError::Status { status, retry_after, message } => {
                LlmError::Status { status, retry_after, message: scrub(message) }
            }
            LlmError::Connect(m) => LlmError::Connect(scrub(m)),
            LlmError::Protocol(m) => LlmError::Protocol(scrub(m)),
            LlmError::InvalidEndpoint(m) => LlmError::InvalidEndpoint(scrub(m)),
            LlmError::Timeout => LlmError::Timeout,
        }
    }
}

/// Streams one chat completion, calling `on_delta` with each text fragment as it arrives.
///
/// Asks for usage in the final chunk (`stream_options.include_usage`). The
/// whole call is bounded by `endpoint.timeout`. Dropping the returned future
/// closes the HTTP connection: async-openai's stream reader task watches its
/// channel and exits as soon as this side is gone.
pub async fn stream_chat(
    endpoint: &LlmEndpoint,
    messages: &[ChatMessage],
    tools: &[ToolSpec],
    on_delta: &mut (dyn FnMut(&str) + Send),
) -> Result<LlmReply, LlmError> {
    let secret = endpoint.api_key.as_deref();
    let call = async {
        let client = client_for(endpoint)?;
        let request = build_request(endpoint, messages, tools);
        read_stream(&client, request, on_delta).await
    };
    match tokio::time::timeout(endpoint.timeout, call).await {
        Ok(result) => result.map_err(|e| e.scrubbed(secret)),
        Err(_) => Err(LlmError::Timeout),
    }
}

/// The HTTP client every model call of a worker shares: one TLS root store and
/// one pool of kept-alive provider connections per process. (Built per call
/// before, loading the system's root certificates each time was a third of a
/// worker's CPU under load — docs/benchmarks.md.) Make it inside the runtime
/// that uses it: pooled connections belong to that runtime.
pub fn http_client() -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| LlmError::InvalidEndpoint(format!("HTTP client: {}", e.without_url())))
}

/// A client without async-openai's built-in retries, reporting HTTP failures through `StatusAware`.
fn client_for(endpoint: &LlmEndpoint) -> Result<Client<OpenAIConfig>, LlmError> {
    let key = endpoint.api_key.as_deref().unwrap_or("");
    // async-openai builds the header with `.parse().unwrap()`: reject what would panic there.
    if key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(LlmError::InvalidEndpoint("API key contains control characters".to_owned()));
    }
    let http = endpoint.http.clone();
    // Every field is set explicitly: `OpenAIConfig::new()` reads OPENAI_API_KEY,
    // OPENAI_ORG_ID and OPENAI_PROJECT_ID from the environment, which must never
    // reach a provider the key was not meant for.
    let config = OpenAIConfig::new()
        .with_api_base(endpoint.base_url.trim_end_matches('/'))
        .with_api_key(key)
        .with_org_id("")
        .with_project_id("");
    Ok(Client::build(http.clone(), config).with_http_service(StatusAware { inner: ReqwestService::new(http) }))
}

fn build_request(endpoint: &LlmEndpoint, messages: &[ChatMessage], tools: &[ToolSpec]) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        model: endpoint.model.clone(),
        messages: messages.iter().map(to_openai_message).collect(),
        stream: Some(true),
        stream_options: Some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None }),
        tools: (!tools.is_empty()).then(|| tools.iter().map(to_openai_tool).collect()),
        ..Default::default()
    }
}

fn to_openai_message(message: &ChatMessage) -> ChatCompletionRequestMessage {
    match message {
        ChatMessage::System(text) => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: ChatCompletionRequestSystemMessageContent::Text(text.clone()),
            name: None,
        }),
        ChatMessage::User(text) => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(text.clone()),
            name: None,
        }),
        ChatMessage::Assistant { content, tool_calls } => {
            // OpenAI rejects an assistant message with neither content nor tool calls,
            // and some servers reject empty content next to tool calls: send content
            // when there is some, or when there is nothing else.
            let content = (!content.is_empty() || tool_calls.is_empty())
                .then(|| ChatCompletionRequestAssistantMessageContent::Text(content.clone()));
            let tool_calls = (!tool_calls.is_empty()).then(|| {
                tool_calls
                    .iter()
                    .map(|call| {
                        ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                            id: call.id.clone(),
                            function: FunctionCall { name: call.name.clone(), arguments: call.arguments.clone() },
                        })
                    })
                    .collect()
            });
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content,
                tool_calls,
                ..Default::default()
            })
        }
        ChatMessage::Tool { tool_call_id, content } => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(content.clone()),
            tool_call_id: tool_call_id.clone(),
        }),
    }
}

fn to_openai_tool(tool: &ToolSpec) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: tool.name.clone(),
            description: (!tool.description.is_empty()).then(|| tool.description.clone()),
            parameters: Some(tool.parameters.clone()),
            strict: None,
        },
    })
}

/// A tool call being assembled from stream fragments.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

async fn read_stream(
    client: &Client<OpenAIConfig>,
    request: CreateChatCompletionRequest,
    on_delta: &mut (dyn FnMut(&str) + Send),
) -> Result<LlmReply, LlmError> {
    let mut stream = client.chat().create_stream(request).await.map_err(from_openai)?;
    let mut reply = LlmReply::default();
    let mut calls: BTreeMap<u32, PartialCall> = BTreeMap::new();

    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(from_openai)?;
        if let Some(usage) = chunk.usage {
            reply.usage =
                Usage { input_tokens: u64::from(usage.prompt_tokens), output_tokens: u64::from(usage.completion_tokens) };
        }
        // We never ask for n > 1; other choices would be someone else's answer.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                on_delta(&text);
                reply.content.push_str(&text);
            }
            for fragment in choice.delta.tool_calls.unwrap_or_default() {
                let call = calls.entry(fragment.index).or_default();
                // The id and name come whole in the first fragment; some servers
                // repeat them later, so keep the first rather than concatenate.
                if let Some(id) = fragment.id.filter(|id| !id.is_empty())
                    && call.id.is_empty()
                {
                    call.id = id;
                }
                if let Some(function) = fragment.function {
                    if let Some(name) = function.name.filter(|n| !n.is_empty())
                        && call.name.is_empty()
                    {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                reply.finish_reason = Some(finish_reason_str(reason).to_owned());
            }
        }
    }

    // A stream that ends without a finish_reason was cut off: its text must not
    // be mistaken for a complete answer.
    if reply.finish_reason.is_none() {
        return Err(LlmError::Protocol("stream ended without a finish_reason".to_owned()));
    }
    for (index, call) in calls {
        if call.name.is_empty() {
            return Err(LlmError::Protocol(format!("tool call {index} has no function name")));
        }
        // Servers that omit ids (some local ones) still need one to pair the result with.
        let id = if call.id.is_empty() { format!("call_{index}") } else { call.id };
        reply.tool_calls.push(ToolCall { id, name: call.name, arguments: call.arguments });
    }
    Ok(reply)
}

fn finish_reason_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnstone_llmsim::{Config, Running};

    async fn simulator() -> Running {
        turnstone_llmsim::spawn(Config::default()).await.expect("start simulator")
    }

    fn endpoint(sim: &Running) -> LlmEndpoint {
        LlmEndpoint {
            base_url: sim.base_url(),
            api_key: Some("sk-test-secret-key".to_owned()),
            model: "sim-1".to_owned(),
            timeout: Duration::from_secs(10),
            http: super::http_client().expect("HTTP client"),
        }
    }

    async fn chat(endpoint: &LlmEndpoint, messages: &[ChatMessage]) -> (Result<LlmReply, LlmError>, Vec<String>) {
        let mut deltas = Vec::new();
        let result = stream_chat(endpoint, messages, &[], &mut |d: &str| deltas.push(d.to_owned())).await;
        (result, deltas)
    }

    #[tokio::test]
    async fn echo_is_streamed_in_pieces_with_usage() {
        // Arrange
        let sim = simulator().await;
        let messages = [ChatMessage::System("be brief".into()), ChatMessage::User("hello there world".into())];

        // Act
        let (reply, deltas) = chat(&endpoint(&sim), &messages).await;

        // Assert
        let reply = reply.expect("reply");
        assert_eq!(reply.content, "echo: hello there world");
        assert!(deltas.len() >= 3, "deltas: {deltas:?}");
        assert_eq!(deltas.concat(), reply.content);
        assert!(reply.tool_calls.is_empty());
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
        assert!(reply.usage.input_tokens > 0 && reply.usage.output_tokens > 0, "{:?}", reply.usage);
    }

    #[tokio::test]
    async fn tool_call_round_trip() {
        // Arrange
        let sim = simulator().await;
        let endpoint = endpoint(&sim);
        let tools = [ToolSpec {
            name: "math".into(),
            description: "evaluates arithmetic".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
        }];
        let mut messages = vec![ChatMessage::User(r#"!tool math {"expression":"6*7"}"#.into())];

        // Act: the model asks for the tool
        let first = stream_chat(&endpoint, &messages, &tools, &mut |_: &str| {}).await.expect("first reply");

        // Assert
        assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(first.tool_calls.len(), 1);
        let call = first.tool_calls[0].clone();
        assert_eq!(call.name, "math");
        assert_eq!(call.arguments, r#"{"expression":"6*7"}"#);
        assert!(call.id.starts_with("call_"));

        // Act: the tool result goes back
        messages.push(ChatMessage::Assistant { content: first.content, tool_calls: vec![call.clone()] });
        messages.push(ChatMessage::Tool { tool_call_id: call.id, content: "42".into() });
        let second = stream_chat(&endpoint, &messages, &tools, &mut |_: &str| {}).await.expect("second reply");

        // Assert
        assert_eq!(second.content, "tool math returned: 42");
        assert_eq!(second.finish_reason.as_deref(), Some("stop"));
        assert!(second.tool_calls.is_empty());
    }

    #[tokio::test]
    async fn bad_request_is_not_retryable() {
        let sim = simulator().await;

        let (result, _) = chat(&endpoint(&sim), &[ChatMessage::User("!fail 400".into())]).await;

        let error = result.expect_err("must fail");
        assert!(matches!(error, LlmError::Status { status: 400, .. }), "{error:?}");
        assert_eq!(error.code(), "provider_bad_request");
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("simulated failure 400"), "{error}");
    }

    #[tokio::test]
    async fn rate_limit_is_retryable_with_the_providers_hint() {
        let sim = simulator().await;

        let (result, _) = chat(&endpoint(&sim), &[ChatMessage::User("!fail 429".into())]).await;

        let error = result.expect_err("must fail");
        assert!(matches!(error, LlmError::Status { status: 429, .. }), "{error:?}");
        assert_eq!(error.code(), "provider_rate_limited");
        assert!(error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_millis(50)));
    }

    #[tokio::test]
    async fn unavailable_once_then_answers_without_hidden_retries() {
        let sim = simulator().await;
        let endpoint = endpoint(&sim);
        let messages = [ChatMessage::User("!fail 503 1".into())];

        let (first, _) = chat(&endpoint, &messages).await;
        let (second, _) = chat(&endpoint, &messages).await;

        let error = first.expect_err("first call fails: the client itself must not retry");
        assert!(matches!(error, LlmError::Status { status: 503, .. }), "{error:?}");
        assert_eq!(error.code(), "provider_unavailable");
        assert!(error.is_retryable());
        assert_eq!(second.expect("second call").content, "echo: !fail 503 1");
    }

    #[tokio::test]
    async fn timeout_bounds_the_call_and_releases_the_connection() {
        let sim = simulator().await;
        let endpoint = LlmEndpoint { timeout: Duration::from_millis(200), ..endpoint(&sim) };

        let (result, _) = chat(&endpoint, &[ChatMessage::User("!sleep 30000".into())]).await;

        let error = result.expect_err("must time out");
        assert!(matches!(error, LlmError::Timeout), "{error:?}");
        assert_eq!(error.code(), "provider_timeout");
        assert!(error.is_retryable());
        // The simulator sees the disconnect and stops working on the request.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while sim.in_flight() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "simulator still busy after the client gave up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn refused_connection_is_unreachable_and_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = LlmEndpoint {
            base_url: format!("http://{addr}/v1"),
            api_key: None,
            model: "sim-1".into(),
            timeout: Duration::from_secs(5),
            http: super::http_client().unwrap(),
        };

        let (result, _) = chat(&endpoint, &[ChatMessage::User("hi".into())]).await;

        let error = result.expect_err("must fail");
        assert!(matches!(error, LlmError::Connect(_)), "{error:?}");
        assert_eq!(error.code(), "provider_unreachable");
        assert!(error.is_retryable());
    }

    #[test]
    fn api_key_never_shows() {
        let endpoint = LlmEndpoint {
            base_url: "http://x/v1".into(),
            api_key: Some("sk-live-123456".into()),
            model: "m".into(),
            timeout: Duration::from_secs(1),
            http: super::http_client().unwrap(),
        };
        assert!(!format!("{endpoint:?}").contains("sk-live-123456"));

        let error = LlmError::Status { status: 401, retry_after: None, message: "bad key sk-live-123456".into() }
            .scrubbed(endpoint.api_key.as_deref());
        assert!(!error.to_string().contains("sk-live-123456"), "{error}");
        assert_eq!(error.code(), "provider_unauthorized");
    }
}
