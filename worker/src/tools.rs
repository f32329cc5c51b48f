//! The tools a turn offers the model and runs: the capability registry's
//! built-ins beside the tools of the agent's MCP servers (`mcp:<id>`).
//!
//! MCP tools come from each server's cached list ([`turnstone_mcp::catalog`]),
//! read with the servers in one statement per turn run; a server that cannot be listed is left out of the
//! turn (logged), the others still work. A call goes over the worker's warm
//! session to that server. Calls are at-least-once: a crash after the server
//! ran a tool but before its `tool.completed` committed runs it again.

use std::sync::Arc;

use serde_json::Value;
use turnstone_core::crypto::KeyRing;
use turnstone_core::ids::{McpServerId, OrgId};
use turnstone_core::mcp::{self, CachedTool, StoredServer};
use turnstone_core::{Error, capabilities, db};
use turnstone_mcp::{Endpoint, McpError, Sessions, catalog};

use crate::llm::ToolSpec;

/// One MCP tool as the turn offers it.
struct RemoteTool {
    server: Arc<StoredServer>,
    tool: CachedTool,
}

/// A turn's tools.
pub struct Toolbox {
    capabilities: Vec<String>,
    remote: Vec<RemoteTool>,
}

/// How a tool call ended: the model reads `Err` as a tool error.
pub struct ToolOutcome {
    pub result: Result<String, String>,
    /// The MCP server that ran it, for `tool.started`/`tool.completed`.
    pub mcp_server_id: Option<McpServerId>,
}

impl Toolbox {
    /// The built-ins of `capabilities` and the tools of the active MCP servers they name.
    pub async fn load(
        pool: &sqlx::PgPool,
        keys: &KeyRing,
        sessions: &Sessions,
        org_id: OrgId,
        capabilities: &[String],
    ) -> Result<Toolbox, Error> {
        let ids: Vec<McpServerId> = capabilities.iter().filter_map(|c| mcp::capability_server(c)?.ok()).collect();
        let mut remote = Vec::new();
        if !ids.is_empty() {
            let mut tx = db::begin_org(pool, org_id).await?;
            let servers = mcp::servers_with_tools(&mut tx, org_id, &ids).await?;
            tx.commit().await?;
            for (server, cached) in servers.into_iter().filter(|(s, _)| s.status == "active") {
                let server = Arc::new(server);
                match catalog::tools_for_turn(pool, keys, sessions, org_id, &server, cached, sessions.config().tools_ttl).await {
                    Ok(tools) => remote.extend(
                        tools
                            .into_iter()
                            .filter(|t| server.allows(&t.name))
                            .map(|tool| RemoteTool { server: server.clone(), tool }),
                    ),
                    // Database trouble: the task is retried. A deleted server or unreadable headers: left out.
                    Err(catalog::CatalogError::Core(e)) if !matches!(e, Error::Crypto(_) | Error::NotFound(_)) => return Err(e),
                    Err(e) => tracing::warn!(server_id = %server.id, error = %e, "MCP server left out of the turn: no tool list"),
                }
            }
        }
        Ok(Toolbox { capabilities: capabilities.to_vec(), remote })
    }

    /// What the model is offered.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let builtin = capabilities::tools_for(&self.capabilities).into_iter().map(|t| ToolSpec {
            name: t.name.into(),
            description: t.description.into(),
            parameters: (t.parameters)(),
        });
        let remote = self.remote.iter().map(|r| ToolSpec {
            name: r.tool.model_name.clone(),
            description: r.tool.description.clone().unwrap_or_default(),
            parameters: r.tool.input_schema.clone(),
        });
        builtin.chain(remote).collect()
    }

    fn remote(&self, name: &str) -> Option<&RemoteTool> {
        self.remote.iter().find(|r| r.tool.model_name == name)
    }

    /// The MCP server behind a tool name, if it is an MCP tool.
    pub fn mcp_server_of(&self, name: &str) -> Option<McpServerId> {
        self.remote(name).map(|r| r.server.id)
    }

    /// Runs a tool call of the model.
    pub async fn run(&self, keys: &KeyRing, sessions: &Sessions, org_id: OrgId, name: &str, arguments: &str) -> ToolOutcome {
        let Some(remote) = self.remote(name) else {
            if name.starts_with("mcp__") {
                return ToolOutcome {
                    result: Err(format!("tool {name:?} is not available to this agent now")),
                    mcp_server_id: None,
                };
            }
            return ToolOutcome { result: capabilities::execute(&self.capabilities, name, arguments), mcp_server_id: None };
        };
        let result = async {
            let args = match arguments.trim() {
                "" => None,
                text => match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(map)) => Some(map),
                    Ok(_) => return Err("arguments must be a JSON object".to_owned()),
                    Err(e) => return Err(format!("arguments are not valid JSON: {e}")),
                },
            };
            let headers = remote
                .server
                .open_headers(keys, org_id)
                .map_err(|_| "the MCP server's headers cannot be decrypted".to_owned())?;
            let ep = Endpoint {
                server_id: turnstone_core::ids::TypedId::uuid(remote.server.id),
                url: remote.server.url.clone(),
                headers,
            };
            match sessions.call(&ep, &remote.tool.name, args).await {
                Ok(r) if r.is_error => Err(r.text),
                Ok(r) => Ok(r.text),
                Err(e @ (McpError::Timeout(_) | McpError::Unreachable(_) | McpError::Refused(_))) => {
                    Err(format!("the MCP server failed: {e}"))
                }
            }
        }
        .await;
        ToolOutcome { result, mcp_server_id: Some(remote.server.id) }
    }
}
