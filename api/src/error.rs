//! The only place that maps failures to HTTP: RFC 9457 `application/problem+json`
//! bodies with a stable `code`, for handler errors and for everything poem or
//! poem-openapi rejects before a handler runs (bad JSON, wrong content type,
//! unknown route, oversized body, missing key). 5xx bodies never carry internal detail.
//! Every `code` is listed, with its meaning, in [`catalog`].

mod catalog;

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use turnstone_core::Error as CoreError;

pub use catalog::{PROBLEM_TYPES, ProblemType, markdown as problems_markdown, problem_type};

/// An RFC 9457 problem detail.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// The problem type: `/problems/<code>`, relative to the API's address, which describes it.
    #[oai(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation specific to this occurrence.
    pub detail: String,
    /// Stable machine-readable identifier; clients match on this, never on `detail`.
    pub code: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        debug_assert!(problem_type(code).is_some(), "problem code {code:?} is not in api/src/error/catalog.rs");
        Problem {
            kind: catalog::type_uri(code),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
        }
    }
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or fails validation.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing, unknown, revoked or expired API key.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// A quota of the organisation is used up.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such resource in the caller's organisation.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The request conflicts with the resource's current state.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// A precondition (`If-Match`, `If-None-Match`) does not hold: nothing was written.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
    /// The request body, or what it would store, is larger than the documented limit.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The request body is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// An `Idempotency-Key` was reused with a different request, or a tool call id is not pending.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Rate limit or concurrency limit reached; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u32),
    /// An unexpected server failure; the body carries no internal detail.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unreachable; retry after the `Retry-After` seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u32),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        let p = Json(Problem::new(status, code, detail));
        match status.as_u16() {
            400 => ApiError::BadRequest(p),
            401 => ApiError::Unauthorized(p),
            403 => ApiError::Forbidden(p),
            404 => ApiError::NotFound(p),
            409 => ApiError::Conflict(p),
            412 => ApiError::PreconditionFailed(p),
            413 => ApiError::PayloadTooLarge(p),
            415 => ApiError::UnsupportedMediaType(p),
            422 => ApiError::Unprocessable(p),
            429 => ApiError::TooManyRequests(p, 1),
            503 => ApiError::Unavailable(p, 2),
            _ => ApiError::Internal(Json(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error"))),
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
    }

    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database is unavailable; retry shortly")
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound(what) => ApiError::not_found(what),
            CoreError::Invalid { code, message } => ApiError::bad_request(code, message),
            CoreError::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            CoreError::Unprocessable { code, message } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message),
            CoreError::PreconditionFailed(message) => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", message)
            }
            CoreError::TooLarge { code, message } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message),
            CoreError::QuotaExceeded(message) => ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", message),
            CoreError::TooMany { code, message, retry_after_secs } => {
                ApiError::TooManyRequests(Json(Problem::new(StatusCode::TOO_MANY_REQUESTS, code, message)), retry_after_secs)
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable()
            }
            e => {
                tracing::error!(error = %e, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.problem();
        write!(f, "{} {}: {}", p.status, p.code, p.detail)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    fn problem(&self) -> &Problem {
        match self {
            ApiError::BadRequest(p)
            | ApiError::Unauthorized(p)
            | ApiError::Forbidden(p)
            | ApiError::NotFound(p)
            | ApiError::Conflict(p)
            | ApiError::PreconditionFailed(p)
            | ApiError::PayloadTooLarge(p)
            | ApiError::UnsupportedMediaType(p)
            | ApiError::Unprocessable(p)
            | ApiError::TooManyRequests(p, _)
            | ApiError::Internal(p)
            | ApiError::Unavailable(p, _) => &p.0,
        }
    }
}

/// Renders any error that escaped a handler as problem+json with a stable code.
pub fn problem_from_poem_error(err: poem::Error) -> Response {
    use poem::error::{MethodNotAllowedError, NotFoundError, ParseJsonError, ReadBodyError, SizedLimitError};
    use poem_openapi::error::{AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError};

    // Our own ApiError, converted to poem::Error by a security checker, is already a problem.
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    if err.is::<NotFoundError>() {
        raw_problem(status, "route_not_found", "no such route".into())
    } else if err.is::<MethodNotAllowedError>() {
        raw_problem(status, "method_not_allowed", "method not allowed on this route".into())
    } else if err.is::<AuthorizationError>() {
        ApiError::unauthorized().into_response()
    } else if err.is::<ContentTypeError>() {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", err.to_string()).into_response()
    } else if err.is::<ParseRequestPayloadError>() || err.is::<ParseJsonError>() {
        raw_problem(status, "invalid_body", err.to_string())
    } else if err.is::<ParseParamError>() {
        raw_problem(status, "invalid_parameter", err.to_string())
    } else if err.is::<SizedLimitError>() || matches!(err.downcast_ref::<ReadBodyError>(), Some(ReadBodyError::PayloadTooLarge)) {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {} bytes", turnstone_core::limits::MAX_BODY_BYTES),
        )
        .into_response()
    } else if status.is_server_error() {
        tracing::error!(error = %err, "unhandled server error");
        ApiError::internal().into_response()
    } else {
        raw_problem(status, "bad_request", err.to_string())
    }
}

/// A problem+json response with any status (poem's own rejections include some, such as
/// 405, that no operation answers with).
fn raw_problem(status: StatusCode, code: &str, detail: String) -> Response {
    let problem = Problem::new(status, code, detail);
    let body = serde_json::json!({
        "type": problem.kind, "title": problem.title, "status": problem.status, "detail": problem.detail, "code": problem.code,
    });
    Response::builder().status(status).content_type("application/problem+json").body(body.to_string())
}
