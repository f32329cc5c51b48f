//! Why a command failed, and the exit code each reason maps to: 1 the API answered with an error
//! (its problem's `code` and `detail` go to stderr), 2 the command was used wrongly, 3 the API
//! could not be reached. 130 is an interrupt (Ctrl-C) that ended the command.

use std::fmt;

use futures::TryStreamExt;
use progenitor_client::{ByteStream, Error};

/// A command's failure.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with a problem (or another non-success status).
    Api { status: u16, code: String, detail: String },
    /// Bad arguments, configuration or input files; nothing was sent.
    Usage(String),
    /// The API could not be reached (refused, timed out, connection lost).
    Connect(String),
    /// Ctrl-C ended the command.
    Interrupted,
    /// Already reported on stderr (a failed turn in `chat`); exits with this code.
    Quiet(i32),
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::Usage(message.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Api { .. } => 1,
            Failure::Usage(_) => 2,
            Failure::Connect(_) => 3,
            Failure::Interrupted => 130,
            Failure::Quiet(code) => *code,
        }
    }

    /// Turns an error of a generated-client call into a failure, reading a problem body.
    pub async fn from_client(error: Error<ByteStream>) -> Failure {
        match error {
            Error::ErrorResponse(response) => {
                let status = response.status().as_u16();
                let chunks: Result<Vec<_>, _> = response.into_inner().into_inner().try_collect().await;
                let body: Vec<u8> = match chunks {
                    Ok(chunks) => chunks.concat(),
                    Err(e) => return Failure::Connect(format!("reading the error response: {e}")),
                };
                Failure::from_problem(status, &body)
            }
            Error::UnexpectedResponse(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                Failure::from_problem(status, &body)
            }
            Error::CommunicationError(e) | Error::ResponseBodyError(e) | Error::InvalidUpgrade(e) => {
                Failure::Connect(error_chain(&e))
            }
            Error::InvalidResponsePayload(body, e) => Failure::Api {
                status: 0,
                code: "invalid_response".into(),
                detail: format!("the response does not match the contract ({e}): {}", String::from_utf8_lossy(&body)),
            },
            Error::InvalidRequest(message) => Failure::Usage(message),
            Error::Custom(message) => Failure::Usage(message),
        }
    }

    /// A problem+json body (RFC 9457) or, failing that, the status and the body as text.
    pub fn from_problem(status: u16, body: &[u8]) -> Failure {
        #[derive(serde::Deserialize)]
        struct Problem {
            code: String,
            detail: String,
        }
        match serde_json::from_slice::<Problem>(body) {
            Ok(p) => Failure::Api { status, code: p.code, detail: p.detail },
            Err(_) => Failure::Api {
                status,
                code: format!("http_{status}"),
                detail: String::from_utf8_lossy(body).trim().chars().take(500).collect(),
            },
        }
    }
}

/// reqwest's message and its sources ("error sending request … : connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api { status, code, detail } => write!(f, "error: {code} ({status}): {detail}"),
            Failure::Usage(message) => write!(f, "error: {message}"),
            Failure::Connect(message) => write!(f, "error: cannot connect: {message}"),
            Failure::Interrupted => write!(f, "interrupted"),
            Failure::Quiet(code) => write!(f, "exit {code}"),
        }
    }
}
