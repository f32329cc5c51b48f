//! Every problem `code` the API can answer with: its status and what it means.
//!
//! A problem's `type` is `/problems/<code>`, a URI reference resolved against the API's own
//! address, where `GET /problems/{code}` serves the entry below (`routes::system`), and
//! `docs/problems.md` is this table rendered (`turnstone-api problems`; a test fails on drift).
//! A test also scans `api/src` and `core/src` for every code literal and fails on one that is
//! not listed here, or on an entry no code uses.

/// One problem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType {
    pub code: &'static str,
    pub status: u16,
    pub meaning: &'static str,
}

const fn p(code: &'static str, status: u16, meaning: &'static str) -> ProblemType {
    ProblemType { code, status, meaning }
}

/// The catalogue, by status then code.
pub const PROBLEM_TYPES: &[ProblemType] = &[
    p(
        "api_key_required",
        400,
        "Changing a provider's `base_url` while it holds a key needs `api_key` too (a new key, or `null` to drop the stored one): a key is only ever sent to the host it was given for.",
    ),
    p("bad_request", 400, "The request could not be read; `detail` says why."),
    p("field_too_long", 400, "A text field is longer than its documented limit."),
    p("invalid_after_sequence", 400, "`after_sequence` must be 0 or more."),
    p(
        "invalid_api_key",
        400,
        "A provider's `api_key` must be 1-4096 visible ASCII characters, with no spaces or control characters: it is sent as an HTTP header.",
    ),
    p("invalid_api_key_format", 400, "A Turnstone API key must start with `ts_` and be 24-200 ASCII characters."),
    p("invalid_base_url", 400, "`base_url` must be an http(s) URL naming a host, without credentials, query or fragment."),
    p(
        "invalid_body",
        400,
        "The body is not valid JSON, or does not match the operation's schema (a missing or unknown field, a wrong type, a length or count limit); `detail` names the field.",
    ),
    p("invalid_content", 400, "A message needs 1-32 parts, and text parts must not be empty."),
    p("invalid_content_type", 400, "A file's `Content-Type` must be 1-255 visible ASCII characters."),
    p("invalid_expires_at", 400, "`expires_at` must be in the future."),
    p("invalid_field", 400, "A text field is blank, or holds control or NUL characters."),
    p("invalid_glob", 400, "`glob` must be a valid glob of 1-1024 bytes."),
    p(
        "invalid_id",
        400,
        "An id is malformed or of the wrong kind: ids are `<prefix>_<32 hex digits>`, and the prefix names the kind (`agt_`, `ses_`, `mdl_`…).",
    ),
    p("invalid_idempotency_key", 400, "`Idempotency-Key` must be 1-255 visible ASCII characters."),
    p("invalid_key", 400, "A key (or key prefix) must be 1-256 characters of `[A-Za-z0-9._:-]`."),
    p("invalid_limit", 400, "`limit` is outside its documented range (1-200; 1-1000 for events)."),
    p("invalid_max_iterations", 400, "`max_iterations` must be 1-100."),
    p("invalid_max_turn_secs", 400, "`max_turn_secs` must be 1-86400."),
    p("invalid_parameter", 400, "A path, query or header parameter has the wrong type; `detail` names it."),
    p(
        "invalid_path",
        400,
        "A path must be absolute, at most 1,024 bytes, with segments of 1-255 bytes that are not `.` or `..`, and no control or NUL characters; a file's path is not `/`.",
    ),
    p(
        "invalid_pattern",
        400,
        "`pattern` must be a regular expression of 1-1000 bytes (the `regex` crate's syntax) whose compiled program stays under its size limit.",
    ),
    p(
        "invalid_precondition",
        400,
        "`If-Match` must name one entity tag (a file) or version (a key), as the `ETag` header gave it; on a write `If-None-Match` may only be `*`, and not together with `If-Match`.",
    ),
    p("invalid_quota", 400, "A quota must be 0 or more."),
    p("invalid_tag", 400, "A tag must be 1-64 characters of `[A-Za-z0-9_.:-]`, and a resource's tags must be distinct."),
    p("invalid_timeout_secs", 400, "`timeout_secs` and `approval_timeout_secs` must be 1-604800 (7 days)."),
    p("invalid_tool_name", 400, "A client tool's name must be 1-64 letters, digits, `_` or `-`."),
    p("invalid_tool_parameters", 400, "A client tool's `parameters` must be a JSON Schema object of at most 16 KiB."),
    p("invalid_tool_policy", 400, "A tool policy's pattern must be 1-128 characters, with no NUL."),
    p("invalid_tool_results", 400, "`results` must hold 1-64 results, each for a different call."),
    p("invalid_ttl", 400, "`ttl_secs` must be 1-31622400 (a year)."),
    p("invalid_value", 400, "A value must not contain NUL characters (`\\u0000`), which PostgreSQL cannot store."),
    p("missing_field", 400, "A required field is missing."),
    p("no_model", 400, "No model is given on the message, session or agent, and the org has no default model."),
    p("same_path", 400, "A move or copy needs two different paths."),
    p("too_many_capabilities", 400, "An agent has at most 32 capabilities."),
    p("too_many_client_tools", 400, "An agent and a session have at most 64 client tools together."),
    p("too_many_event_types", 400, "`types` names at most 32 event types."),
    p("too_many_tags", 400, "A resource has at most 32 tags."),
    p("too_many_tool_policies", 400, "An agent has at most 64 tool policies."),
    p(
        "tool_name_conflict",
        400,
        "A client tool's name is a capability tool's, or another client tool's (the agent's, for a session).",
    ),
    p("unknown_capability", 400, "A capability name is not in `GET /v1/capabilities`, or is listed twice."),
    p("unknown_event_id", 400, "The event id to resume the stream from is not an event of this session."),
    p("unknown_event_type", 400, "`types` names an event type that is never stored."),
    p("operator_disabled", 401, "Organisation management is disabled: the deployment sets no `TURNSTONE_OPERATOR_TOKEN`."),
    p(
        "unauthorized",
        401,
        "A valid credential is required: `Authorization: Bearer <key>` with an active API key of an enabled org (or the operator token for `/v1/orgs`).",
    ),
    p("quota_exceeded", 403, "A quota of the org (active agents, sessions) is used up."),
    p("not_found", 404, "No such resource in the caller's organisation (another organisation's ids look the same)."),
    p("route_not_found", 404, "No operation has this path."),
    p("method_not_allowed", 405, "The path exists, but not with this method."),
    p("agent_archived", 409, "The agent is archived: it cannot be changed or start sessions."),
    p(
        "already_resolved",
        409,
        "The tool call or approval was already resolved (answered, decided, timed out, superseded or cancelled).",
    ),
    p(
        "arguments_changed",
        409,
        "`arguments_sha256` is not the hash of the held call's arguments: the decision would not be about the call that runs.",
    ),
    p("directory_not_empty", 409, "The path is a directory; pass `recursive=true` to delete it and everything below it."),
    p("file_exists", 409, "The target of a move or copy exists; pass `overwrite: true` to replace it."),
    p("model_in_use", 409, "Agents, sessions or turns still use the model."),
    p("model_is_default", 409, "The model is the org's default; make another model the default first."),
    p("path_conflict", 409, "A file cannot be where a directory is (a path other files are below), nor below another file."),
    p("provider_in_use", 409, "The provider still has models; delete them first."),
    p("provider_name_taken", 409, "The org already has a provider with this name."),
    p("session_idle", 409, "The session has no turn to cancel."),
    p("too_many_files", 409, "The session holds its maximum number of files (the org's `max_session_files`, 10,000 by default)."),
    p("too_many_keys", 409, "The session holds its maximum number of keys (the org's `max_session_keys`, 10,000 by default)."),
    p(
        "precondition_failed",
        412,
        "The file's etag or the key's version is not the one `If-Match` named (or the file or key exists and `If-None-Match: *` was sent): nothing was written.",
    ),
    p(
        "file_too_large",
        413,
        "The file is larger than the org's per-file limit (`max_file_bytes`, 10 MiB by default); its body is refused while it streams in.",
    ),
    p("payload_too_large", 413, "The body is larger than 1 MiB (a file's content has its own limit, `file_too_large`)."),
    p(
        "session_storage_full",
        413,
        "The session's files would exceed its storage limit (the org's `max_session_bytes`, 100 MiB by default).",
    ),
    p("storage_quota_exceeded", 413, "The org's files would exceed its storage quota (`max_storage_bytes`, 10 GiB by default)."),
    p("value_too_large", 413, "A key's value is larger than 64 KiB of JSON."),
    p("unsupported_media_type", 415, "The body must be `application/json`."),
    p("range_not_satisfiable", 416, "The `Range` lies outside the file (`Content-Range: bytes */size` gives its size)."),
    p("idempotency_key_reused", 422, "This `Idempotency-Key` was used with a different request in the last 24 hours."),
    p("unknown_tool_call", 422, "The `tool_call_id` is not a pending client tool call of this session."),
    p("rate_limited", 429, "The API key's requests-per-minute limit is reached; retry after `Retry-After` seconds."),
    p(
        "too_many_concurrent_turns",
        429,
        "The org's limit of sessions with a turn queued or running at once is reached; retry after `Retry-After` seconds.",
    ),
    p("too_many_streams", 429, "This API process serves its maximum of open SSE streams; retry after `Retry-After` seconds."),
    p("internal", 500, "An unexpected server failure; the body carries no detail, the server's log does."),
    p("database_unavailable", 503, "The database is unreachable; retry after `Retry-After` seconds."),
    p("migrations_pending", 503, "The database schema is not migrated yet (readiness only)."),
];

/// The entry of `code`, if it is one.
pub fn problem_type(code: &str) -> Option<&'static ProblemType> {
    PROBLEM_TYPES.iter().find(|p| p.code == code)
}

/// The `type` URI of a problem: relative, so it resolves to the API that answered.
pub fn type_uri(code: &str) -> String {
    format!("/problems/{code}")
}

/// `docs/problems.md`: the catalogue as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Problem types\n\n\
         <!-- Generated from api/src/error/catalog.rs by `scripts/openapi`; a test fails when it is stale. -->\n\n\
         Every error is `application/problem+json` (RFC 9457) with a stable `code`; clients match on\n\
         `code`, never on `detail`. A problem's `type` is `/problems/<code>`, relative to the API's\n\
         address, which serves each entry below as JSON (`GET /problems/{code}`, and all of them at\n\
         `GET /problems`).\n\n\
         | code | status | meaning |\n|---|---|---|\n",
    );
    for p in PROBLEM_TYPES {
        out.push_str(&format!("| `{}` | {} | {} |\n", p.code, p.status, p.meaning.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_sorted_and_snake_case() {
        for pair in PROBLEM_TYPES.windows(2) {
            assert!((pair[0].status, pair[0].code) < (pair[1].status, pair[1].code), "{} out of order", pair[1].code);
        }
        for p in PROBLEM_TYPES {
            assert!(p.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", p.code);
            assert!((400..600).contains(&p.status), "{}", p.code);
            assert!(p.meaning.ends_with('.'), "{}: a sentence", p.code);
        }
    }
}
