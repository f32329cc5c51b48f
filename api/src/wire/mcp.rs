//! The MCP catalog: servers (headers write-only) and their cached tools.

use std::collections::BTreeMap;

use super::*;
use turnstone_core::mcp;

/// Whether agents may use the server's tools (default `active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum McpServerStatus {
    Active,
    Disabled,
}

impl McpServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            McpServerStatus::Active => "active",
            McpServerStatus::Disabled => "disabled",
        }
    }
}

/// A new MCP server, reached over streamable HTTP.
// Header values are `McpHeaderValue`s, whose `Debug` prints `[redacted]`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct McpServerCreate {
    /// Unique per org. The model sees the server's tools as `mcp__<name>__<tool>`.
    pub name: McpServerName,
    /// The server's MCP endpoint: http(s), a host, no credentials or fragment. The address
    /// it resolves to must be public unless the operator allows it (`TURNSTONE_ALLOW_PRIVATE_NETWORKS`).
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: Text,
    /// Sent with every request, e.g. `Authorization`. Stored encrypted; responses show the names only.
    #[oai(validator(max_properties = 16))]
    pub headers: Option<BTreeMap<String, McpHeaderValue>>,
    /// Only these tools (the server's names) are offered to agents; absent: all.
    #[oai(validator(max_items = 256))]
    pub allowed_tools: Option<Vec<Text>>,
    // Default `active` (said on the enum: a described `$ref` becomes an `allOf` generators reject).
    pub status: Option<McpServerStatus>,
}

impl Example for McpServerCreate {
    fn example() -> Self {
        example(json!({
            "name": "everything",
            "url": "https://mcp.example.com/mcp",
            "headers": {"Authorization": "Bearer your-mcp-token"}
        }))
    }
}

/// Changes to an MCP server; absent fields are unchanged. Changing `url` of a server
/// with headers needs `headers` too (400 `mcp_headers_required`).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct McpServerUpdate {
    pub name: Option<McpServerName>,
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: Option<Text>,
    /// Replaces every header (`{}` removes them).
    #[oai(validator(max_properties = 16))]
    pub headers: Option<BTreeMap<String, McpHeaderValue>>,
    /// `null` allows every tool.
    #[oai(nullable, validator(max_items = 256))]
    pub allowed_tools: MaybeUndefined<Vec<Text>>,
    pub status: Option<McpServerStatus>,
}

impl Example for McpServerUpdate {
    fn example() -> Self {
        example(json!({"status": "disabled"}))
    }
}

/// Converts the wire fields of a create or update to core's input.
pub fn mcp_input(
    name: Option<McpServerName>,
    url: Option<Text>,
    headers: Option<BTreeMap<String, McpHeaderValue>>,
    allowed_tools: Option<Option<Vec<Text>>>,
    status: Option<McpServerStatus>,
) -> mcp::McpServerInput {
    use turnstone_core::crypto::Secret;
    mcp::McpServerInput {
        name: name.map(|n| n.0.0),
        url: url.map(|u| u.0),
        headers: headers.map(|h| h.into_iter().map(|(k, v)| (k, Secret::new(v.0.0))).collect()),
        allowed_tools: allowed_tools.map(|a| a.map(|v| v.into_iter().map(|t| t.0).collect())),
        status: status.map(|s| s.as_str().to_owned()),
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct McpServer {
    /// `mcp_…`
    pub id: String,
    pub name: String,
    pub url: String,
    /// The names of the stored headers; their values are never returned.
    pub headers: Vec<String>,
    /// `null`: every tool is offered.
    pub allowed_tools: Nullable<Vec<String>>,
    /// `active` or `disabled`.
    pub status: String,
    /// When the tool list was last fetched; `null`: never.
    pub tools_fetched_at: Nullable<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<mcp::McpServer> for McpServer {
    fn from(s: mcp::McpServer) -> Self {
        McpServer {
            id: s.id.wire(),
            name: s.name,
            url: s.url,
            headers: s.header_names,
            allowed_tools: s.allowed_tools.into(),
            status: s.status,
            tools_fetched_at: s.tools_fetched_at.into(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct McpServerList {
    pub data: Vec<McpServer>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A tool of an MCP server, as cached.
#[derive(Debug, Object)]
pub struct McpTool {
    /// The server's name for the tool.
    pub name: String,
    /// The name the model sees: `mcp__<server>__<tool>`, sanitised, at most 64 characters.
    pub model_name: String,
    pub description: Nullable<String>,
    /// JSON Schema of the arguments, as the server sent it.
    pub input_schema: Value,
    /// The server's hints (`readOnlyHint`…) as sent, or `null`.
    pub annotations: Value,
    /// SHA-256 (hex) of the definition: a changed definition has a new hash.
    pub hash: String,
    /// Whether `allowed_tools` lets agents use it.
    pub allowed: bool,
}

#[derive(Debug, Object)]
pub struct McpToolList {
    pub data: Vec<McpTool>,
    /// When the list was fetched; `null`: never (refresh it).
    pub fetched_at: Nullable<DateTime<Utc>>,
}

impl McpToolList {
    pub fn new(tools: Vec<mcp::CachedTool>, fetched_at: Option<DateTime<Utc>>, allowed: &Option<Vec<String>>) -> Self {
        McpToolList {
            data: tools
                .into_iter()
                .map(|t| McpTool {
                    allowed: allowed.as_ref().is_none_or(|a| a.contains(&t.name)),
                    name: t.name,
                    model_name: t.model_name,
                    description: t.description.into(),
                    input_schema: t.input_schema,
                    annotations: t.annotations.unwrap_or(Value::Null),
                    hash: t.hash,
                })
                .collect(),
            fetched_at: fetched_at.into(),
        }
    }
}
