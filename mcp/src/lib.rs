//! Turnstone's MCP client and outbound guard, shared by the control plane
//! (`POST /v1/mcp-servers/{id}/refresh`) and the workers (tool calls).
//!
//! It must not hold SQL (the catalog and its tool-list cache are in
//! `turnstone_core::mcp`), serve HTTP, or connect anywhere the guard has not
//! checked.
//!
//! # Layout
//! - [`guard`]: address classes, the operator's allow-list, a resolver that pins connections to checked addresses.
//! - [`catalog`]: tool lists from the cache in PostgreSQL, refreshed one process at a time.
//! - [`client`]: warm MCP sessions over streamable HTTP (`rmcp`), listing and calling tools, rendering results.

pub mod catalog;
pub mod client;
pub mod guard;

pub use client::{Endpoint, McpConfig, McpError, Sessions, ToolResult};
pub use guard::{AllowList, Guard, Refused};
