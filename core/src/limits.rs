//! Size limits on every input, shared by validation here and the OpenAPI schema in the API.

/// Whole request body, bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Names of agents, providers, models, orgs, API keys.
pub const MAX_NAME_CHARS: usize = 200;
/// An agent's system prompt.
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 100_000;
/// One text part of a message.
pub const MAX_MESSAGE_TEXT_CHARS: usize = 100_000;
/// Parts in one message.
pub const MAX_MESSAGE_PARTS: usize = 32;
/// Tags per resource, and characters per tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_CHARS: usize = 64;
/// Capabilities per agent.
pub const MAX_CAPABILITIES: usize = 32;
/// URLs (provider base_url).
pub const MAX_URL_CHARS: usize = 2048;
/// Secret values (provider API keys).
pub const MAX_SECRET_CHARS: usize = 4096;
/// Session titles.
pub const MAX_TITLE_CHARS: usize = 500;
/// List page size: default and maximum.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_PAGE_LIMIT: u32 = 200;
/// Event list page size maximum.
pub const MAX_EVENTS_LIMIT: u32 = 1000;
/// Idempotency-Key header length.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Iteration cap bounds for an agent's turn loop.
pub const MAX_ITERATIONS: i32 = 100;
/// Turn wall-clock cap bounds, seconds.
pub const MAX_TURN_SECS: i32 = 86_400;
/// Client tools per agent (and per session, added to its agent's).
pub const MAX_CLIENT_TOOLS: usize = 64;
/// A client tool's name (the model's function-name rules: letters, digits, `_`, `-`).
pub const MAX_TOOL_NAME_CHARS: usize = 64;
/// A client tool's description.
pub const MAX_TOOL_DESCRIPTION_CHARS: usize = 1024;
/// A client tool's `parameters` JSON Schema, serialised, bytes.
pub const MAX_TOOL_PARAMETERS_BYTES: usize = 16 * 1024;
/// A client tool's `timeout_secs`: default and bounds (7 days).
pub const DEFAULT_CLIENT_TOOL_TIMEOUT_SECS: i32 = 300;
pub const MAX_WAIT_SECS: i32 = 7 * 24 * 3600;
/// Entries of an agent's `tool_policies`, and characters per pattern.
pub const MAX_TOOL_POLICIES: usize = 64;
pub const MAX_TOOL_PATTERN_CHARS: usize = 128;
/// An agent's `approval_timeout_secs` default.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: i32 = 900;
/// Results in one `POST …/tool-results`.
pub const MAX_TOOL_RESULTS: usize = 64;
/// A tool call id (as the model sent it).
pub const MAX_TOOL_CALL_ID_CHARS: usize = 256;
/// One client tool output, bytes.
pub const MAX_TOOL_OUTPUT_BYTES: usize = 256 * 1024;
/// An approval decision's `reason`.
pub const MAX_REASON_CHARS: usize = 2000;
