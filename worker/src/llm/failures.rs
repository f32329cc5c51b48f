//! How a provider's failures reach the worker whole: [`StatusAware`], the HTTP
//! service under async-openai that reads every non-2xx answer itself (status,
//! `Retry-After`, message) before async-openai would drop its headers, and the
//! mapping of async-openai's and reqwest's errors to [`LlmError`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_openai::{
    error::{OpenAIError, StreamError, WrappedError},
    middleware::{HttpRequestFactory, ReqwestService},
};
use openai_reqwest as reqwest;

use super::LlmError;

/// Maps async-openai's error to ours without losing the status.
pub(super) fn from_openai(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
            Ok(failure) => {
                LlmError::Status { status: failure.status, retry_after: failure.retry_after, message: failure.message }
            }
            Err(other) => LlmError::Protocol(other.to_string()),
        },
        // Not produced while `StatusAware` is installed; kept for safety.
        OpenAIError::ApiError(api) => {
            LlmError::Status { status: api.status_code.as_u16(), retry_after: None, message: api.api_error.message }
        }
        OpenAIError::Reqwest(e) => from_reqwest(e),
        OpenAIError::JSONDeserialize(e, content) => match serde_json::from_str::<WrappedError>(&content) {
            // Providers report failures after the 200 as an `{"error":…}` data frame.
            Ok(wrapped) => LlmError::Protocol(format!("provider error in stream: {}", wrapped.error.message)),
            Err(_) => LlmError::Protocol(format!("unreadable chunk: {e}")),
        },
        // The body broke mid-stream (connection reset, truncated chunk): a transport failure.
        OpenAIError::StreamError(stream_error) => match *stream_error {
            StreamError::EventStream(message) => LlmError::Connect(format!("stream interrupted: {message}")),
            other => LlmError::Protocol(other.to_string()),
        },
        other => LlmError::Protocol(other.to_string()),
    }
}

fn from_reqwest(error: reqwest::Error) -> LlmError {
    // The URL may carry credentials (`https://user:pass@host`): never print it.
    let error = error.without_url();
    if error.is_timeout() {
        LlmError::Timeout
    } else if error.is_connect() || error.is_request() || error.is_body() {
        LlmError::Connect(error_chain(&error))
    } else {
        LlmError::Protocol(error_chain(&error))
    }
}

/// `error: cause: cause` — reqwest's top-level message alone rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A non-2xx answer, read by [`StatusAware`] before async-openai drops its headers.
#[derive(Debug)]
struct HttpFailure {
    status: u16,
    retry_after: Option<Duration>,
    message: String,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpFailure {}

/// Error bodies longer than this are cut: only the message is needed.
const MAX_ERROR_BODY: usize = 16 * 1024;

impl HttpFailure {
    async fn read(mut response: reqwest::Response) -> HttpFailure {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(bytes)) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        let message = match serde_json::from_slice::<WrappedError>(&body) {
            Ok(wrapped) => wrapped.error.message,
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    text.chars().take(500).collect()
                }
            }
        };
        HttpFailure { status: status.as_u16(), retry_after, message }
    }
}

/// `retry-after-ms` (OpenAI, milliseconds) wins over `Retry-After` (RFC 9110, seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// async-openai's HTTP service, minus its habit of hiding failure details:
/// every non-2xx response becomes an [`HttpFailure`] (carried in `OpenAIError::Boxed`).
#[derive(Clone)]
pub(super) struct StatusAware {
    pub(super) inner: ReqwestService,
}

impl tower::Service<HttpRequestFactory> for StatusAware {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(OpenAIError::Boxed(Box::new(HttpFailure::read(response).await)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        headers.clear();
        headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
