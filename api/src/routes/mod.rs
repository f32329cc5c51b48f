//! The REST operations, one module per tag. Handlers parse and authorise, call
//! `turnstone_core`, and convert the result to the wire format; no SQL here.

pub mod agents;
pub mod capabilities;
pub mod files;
pub mod kv;
pub mod mcp;
pub mod orgs;
pub mod providers;
pub mod sessions;
pub mod system;
pub mod waiting;

use poem_openapi::Tags;
use turnstone_core::limits;

use crate::error::ApiError;

#[derive(Tags)]
pub enum Tag {
    /// Liveness and readiness.
    System,
    /// Organisations, managed with the operator token.
    Orgs,
    /// An org's own API keys.
    ApiKeys,
    /// OpenAI-compatible LLM endpoints and their models.
    Providers,
    /// Agent definitions: prompt, model, capabilities.
    Agents,
    /// Conversations with an agent, their messages, events and live stream.
    Sessions,
    /// Each session's private filesystem: raw bytes with entity tags.
    Files,
    /// Each session's private key-value store: JSON values with versions.
    Kv,
    /// The read-only registry of tool bundles an agent can enable.
    Capabilities,
    /// The MCP servers the org trusts, and their cached tools.
    McpServers,
}

/// Checks a requested page size against the documented bounds (`wire::PageLimit`…).
pub fn page_limit(limit: Option<impl Into<u32>>, max: u32) -> Result<u32, ApiError> {
    match limit.map(Into::into) {
        None => Ok(limits::DEFAULT_PAGE_LIMIT.min(max)),
        Some(0) => Err(ApiError::bad_request("invalid_limit", "limit must be at least 1")),
        Some(n) if n > max => Err(ApiError::bad_request("invalid_limit", format!("limit must be at most {max}"))),
        Some(n) => Ok(n),
    }
}
