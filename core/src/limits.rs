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
