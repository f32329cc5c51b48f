//! Answers `POST /v1/chat/completions`: runs the script, then writes a completion or an SSE chunk stream.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use poem::{
    Body, Response, handler,
    http::{StatusCode, header},
    web::Data,
};
use serde_json::{Value, json};

use crate::{
    Config,
    script::Script,
    wire::{ChatRequest, Envelope, Message, Usage, delta_choice, error_body},
};

/// State shared by every request of one simulator instance.
pub struct Sim {
    pub config: Config,
    /// `!fail STATUS TIMES` counters, keyed by the exact message text. Per
    /// instance (which is per process for the binary) so parallel tests that
    /// each start their own simulator never see each other's counts.
    failures: Mutex<HashMap<String, u64>>,
    /// Makes completion ids unique within the instance.
    next_id: AtomicU64,
    /// Requests currently being answered, streams included: lets tests prove
    /// that a client disconnect really stops the work.
    in_flight: AtomicUsize,
}

impl Sim {
    pub fn new(config: Config) -> Sim {
        Sim { config, failures: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), in_flight: AtomicUsize::new(0) }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts one more request for `text`; true while it is within the first `times`.
    fn should_fail(&self, text: &str, times: Option<u64>) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let seen = failures.entry(text.to_owned()).or_insert(0);
        *seen += 1;
        times.is_none_or(|t| *seen <= t)
    }
}

/// Counts a request as in flight until dropped; moved into the response
/// stream so a streamed answer counts until its last chunk or its disconnect.
struct InFlight(Arc<Sim>);

impl InFlight {
    fn enter(sim: &Arc<Sim>) -> InFlight {
        sim.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(sim.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the assistant says once the script has run.
enum Answer {
    Text(String),
    /// One or more calls (`!tool a {…} !tool b {…}`), in order.
    ToolCalls(Vec<Call>),
}

/// One function call of an answer.
struct Call {
    id: String,
    name: String,
    arguments: String,
}

impl Answer {
    fn completion_tokens(&self) -> u64 {
        match self {
            Answer::Text(text) => text.split_whitespace().count() as u64,
            Answer::ToolCalls(calls) => {
                calls.iter().map(|c| ((c.name.chars().count() + c.arguments.chars().count()) as u64).div_ceil(4)).sum()
            }
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self {
            Answer::Text(_) => "stop",
            Answer::ToolCalls(_) => "tool_calls",
        }
    }
}

#[handler]
pub async fn chat_completions(Data(sim): Data<&Arc<Sim>>, body: Body) -> Response {
    let request = match parse_request(body).await {
        Ok(request) => request,
        Err(message) => return error_response(400, &message),
    };
    if let Err(message) = crate::shape::check(&request.messages) {
        return error_response(400, &message);
    }
    let Some(last_user) = request.messages.iter().rposition(|m| m.role == "user") else {
        return error_response(400, "messages must contain at least one user message");
    };
    let guard = InFlight::enter(sim);
    let text = request.messages[last_user].text();

    // Dropping this future (the client went away) cancels these sleeps, which
    // is how the simulator stops work promptly on disconnect.
    sleep_ms(sim.config.latency_ms).await;
    let mut script = Script::parse(&text);
    while let Script::Sleep { delay, then } = script {
        tokio::time::sleep(delay).await;
        script = *then;
    }

    let answer = match script {
        Script::Fail { status, times } => {
            if sim.should_fail(&text, times) {
                let message = format!("simulated failure {status} for {text:?}");
                return error_response(status, &message);
            }
            Answer::Text(format!("echo: {text}"))
        }
        Script::Tool { name, arguments } => match last_tool_result(&request.messages[last_user + 1..]) {
            Some(result) => Answer::Text(format!("tool {name} returned: {result}")),
            None => Answer::ToolCalls(vec![Call { id: tool_call_id(last_user, &text), name, arguments }]),
        },
        Script::Tools(calls) => {
            let results: Vec<String> =
                request.messages[last_user + 1..].iter().filter(|m| m.role == "tool").map(Message::text).collect();
            if results.is_empty() {
                let id = tool_call_id(last_user, &text);
                Answer::ToolCalls(
                    calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| Call { id: format!("{id}_{i}"), name, arguments })
                        .collect(),
                )
            } else {
                Answer::Text(format!("tools returned: {}", results.join(" | ")))
            }
        }
        Script::Echo(echo) => Answer::Text(format!("echo: {echo}")),
        Script::Sleep { .. } => unreachable!("sleeps were unwrapped above"),
    };

    let usage = Usage::estimate(&request.messages, answer.completion_tokens());
    let id = format!("chatcmpl-sim{:08}", sim.next_id.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let envelope = Envelope { id: &id, model: &request.model, created };

    if request.stream {
        let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let frames = stream_frames(&envelope, &answer, usage, include_usage);
        stream_response(frames, Duration::from_millis(sim.config.chunk_delay_ms), guard)
    } else {
        let body = envelope.completion(message_json(&answer), answer.finish_reason(), usage);
        Response::builder().content_type("application/json").body(body.to_string())
    }
}

/// Reads and validates the body, with a client-facing message on failure.
async fn parse_request(body: Body) -> Result<ChatRequest, String> {
    let bytes = body.into_bytes().await.map_err(|e| format!("could not read body: {e}"))?;
    let request: ChatRequest = serde_json::from_slice(&bytes).map_err(|e| format!("invalid request body: {e}"))?;
    if request.messages.is_empty() {
        return Err("messages must not be empty".to_owned());
    }
    if request.model.trim().is_empty() {
        return Err("you must provide a model parameter".to_owned());
    }
    Ok(request)
}

/// The content of the last `tool` message, if any, among those after the last user message.
fn last_tool_result(after_user: &[Message]) -> Option<String> {
    after_user.iter().rev().find(|m| m.role == "tool").map(Message::text)
}

/// `call_` + a hash of the message position and text: the same conversation
/// always gets the same id, which lets tests assert on it.
fn tool_call_id(position: usize, text: &str) -> String {
    // FNV-1a 64: tiny, stable across Rust versions (unlike `DefaultHasher`).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in position.to_le_bytes().iter().chain(text.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("call_{hash:016x}")
}

fn message_json(answer: &Answer) -> Value {
    match answer {
        Answer::Text(text) => json!({ "role": "assistant", "content": text, "refusal": null }),
        Answer::ToolCalls(calls) => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "tool_calls": calls
                .iter()
                .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
                .collect::<Vec<_>>(),
        }),
    }
}

/// Every SSE frame of a streamed answer, `data: [DONE]` included, in order.
fn stream_frames(envelope: &Envelope<'_>, answer: &Answer, usage: Usage, include_usage: bool) -> Vec<String> {
    // OpenAI sends `"usage": null` on every chunk but the last when usage was requested.
    let null_usage = || include_usage.then_some(Value::Null);
    let mut chunks = Vec::new();
    match answer {
        Answer::Text(text) => {
            chunks.push(
                envelope.chunk(delta_choice(json!({ "role": "assistant", "content": "", "refusal": null }), None), null_usage()),
            );
            for piece in split_words(text) {
                chunks.push(envelope.chunk(delta_choice(json!({ "content": piece }), None), null_usage()));
            }
        }
        Answer::ToolCalls(calls) => {
            for (index, c) in calls.iter().enumerate() {
                let head =
                    json!([{ "index": index, "id": c.id, "type": "function", "function": { "name": c.name, "arguments": "" } }]);
                let delta = if index == 0 {
                    json!({ "role": "assistant", "content": null, "tool_calls": head })
                } else {
                    json!({ "tool_calls": head })
                };
                chunks.push(envelope.chunk(delta_choice(delta, None), null_usage()));
                for piece in split_chars(&c.arguments, 3) {
                    chunks.push(envelope.chunk(
                        delta_choice(json!({ "tool_calls": [{ "index": index, "function": { "arguments": piece } }] }), None),
                        null_usage(),
                    ));
                }
            }
        }
    }
    chunks.push(envelope.chunk(delta_choice(json!({}), Some(answer.finish_reason())), null_usage()));
    if include_usage {
        chunks.push(envelope.chunk(json!([]), Some(usage.to_json())));
    }
    chunks.into_iter().map(|chunk| format!("data: {chunk}\n\n")).chain(std::iter::once("data: [DONE]\n\n".to_owned())).collect()
}

/// Splits text into word pieces that concatenate back to it (each piece
/// carries the spaces after it); short texts are cut by characters so that a
/// stream always has at least three content chunks when there are three characters.
fn split_words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if !c.is_whitespace() && !in_word && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        in_word = !c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    if pieces.len() < 3 { split_chars(text, 3) } else { pieces }
}

/// Cuts `text` into up to `n` non-empty pieces of near-equal character count.
fn split_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn stream_response(frames: Vec<String>, chunk_delay: Duration, guard: InFlight) -> Response {
    let stream = futures::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| {
        // The guard lives as long as the stream: dropped when the last frame
        // is written or when the connection closes under it.
        let _alive = &guard;
        async move {
            if i > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            Ok::<_, std::io::Error>(frame)
        }
    });
    Response::builder()
        .content_type("text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_bytes_stream(stream))
}

/// An OpenAI-style error. 429 and 503 also tell the client when to retry,
/// both ways real providers do: `retry-after-ms: 50` (OpenAI's header) and
/// `Retry-After: 1` (RFC 9110, whole seconds).
pub fn error_response(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(code).content_type("application/json");
    if matches!(status, 429 | 503) {
        builder = builder.header("retry-after-ms", "50").header(header::RETRY_AFTER, "1");
    }
    builder.body(error_body(code.as_u16(), message).to_string())
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_into_pieces_that_rejoin() {
        let pieces = split_words("echo: hello big world");
        assert_eq!(pieces, ["echo: ", "hello ", "big ", "world"]);
        assert_eq!(pieces.concat(), "echo: hello big world");
        let short = split_words("echo: ");
        assert!(short.len() >= 3, "{short:?}");
        assert_eq!(short.concat(), "echo: ");
    }

    #[test]
    fn arguments_split_into_at_least_two_pieces() {
        assert_eq!(split_chars("{}", 3), ["{", "}"]);
        let pieces = split_chars(r#"{"expression":"6*7"}"#, 3);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), r#"{"expression":"6*7"}"#);
    }

    #[test]
    fn tool_call_ids_are_stable() {
        assert_eq!(tool_call_id(0, "!tool a {}"), tool_call_id(0, "!tool a {}"));
        assert_ne!(tool_call_id(0, "!tool a {}"), tool_call_id(2, "!tool a {}"));
        assert!(tool_call_id(0, "x").starts_with("call_"));
    }
}
