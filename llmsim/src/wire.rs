//! OpenAI's chat-completions wire format: the request fields the simulator reads and the JSON it writes.

use serde::Deserialize;
use serde_json::{Value, json};

/// The subset of a `POST /v1/chat/completions` body the simulator reads;
/// everything else (tools, temperature, …) is accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    /// Kept as raw JSON: its size counts toward prompt tokens, its ids toward [`crate::shape`].
    #[serde(default)]
    pub tool_calls: Option<Value>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// Message content: a string, or an array of typed parts of which only
/// `{"type":"text","text":…}` parts carry text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Message {
    /// The message's text: a string content, or its text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(s)) => s.clone(),
            Some(Content::Parts(parts)) => {
                parts.iter().filter(|p| p.kind == "text").filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("")
            }
        }
    }

    /// Characters this message contributes to the prompt-token estimate.
    fn chars(&self) -> usize {
        let calls = self.tool_calls.as_ref().map_or(0, |v| v.to_string().chars().count());
        self.text().chars().count() + calls
    }
}

/// Deterministic token counts: prompt = ⌈chars / 4⌉ over all messages,
/// completion = words of the answer (at least 1).
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn estimate(messages: &[Message], answer_words: u64) -> Usage {
        let chars: usize = messages.iter().map(Message::chars).sum();
        Usage { prompt_tokens: (chars as u64).div_ceil(4), completion_tokens: answer_words.max(1) }
    }

    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("not_found_error", "model_not_found"),
        408 => ("timeout_error", "request_timeout"),
        409 => ("conflict_error", "conflict"),
        422 => ("invalid_request_error", "unprocessable_entity"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "service_unavailable"),
        s if s >= 500 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

/// Fields shared by every completion object and chunk of one answer.
pub struct Envelope<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: u64,
}

impl Envelope<'_> {
    /// A `chat.completion.chunk`; `usage` is `null` on every chunk but the last
    /// when the client asked for usage, and absent when it did not.
    pub fn chunk(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_turnstone_sim",
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    }

    /// A whole `chat.completion` object.
    pub fn completion(&self, message: Value, finish_reason: &str, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_turnstone_sim",
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage.to_json(),
        })
    }
}

/// A `choices` array with one streamed delta.
pub fn delta_choice(delta: Value, finish_reason: Option<&str>) -> Value {
    json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_may_be_a_string_or_text_parts() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "sim-1",
            "messages": [
                {"role": "user", "content": "plain"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null, "tool_calls": []}
            ]
        }))
        .unwrap();
        assert_eq!(req.messages[0].text(), "plain");
        assert_eq!(req.messages[1].text(), "ab");
        assert_eq!(req.messages[2].text(), "");
        assert!(!req.stream);
    }

    #[test]
    fn usage_is_a_deterministic_estimate() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": "12345"}]
        }))
        .unwrap();
        let usage = Usage::estimate(&req.messages, 0);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2, 1));
        assert_eq!(usage.to_json()["total_tokens"], 3);
    }
}
