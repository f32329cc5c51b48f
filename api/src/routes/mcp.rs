//! The MCP catalog (`/v1/mcp-servers`): servers, their cached tools, refresh.

use poem::http::StatusCode;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::{MaybeUndefined, ToJSON};
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::ids::TypedId;
use turnstone_core::{limits, mcp};
use turnstone_mcp::catalog::{self, CatalogError};

use super::{Tag, page_limit};
use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::idempotency::create_once;
use crate::wire::rules::{self, Id};
use crate::wire::{
    IdempotencyKey, McpServer, McpServerCreate, McpServerList, McpServerUpdate, McpToolList, PageLimit, mcp_input,
};

pub struct McpServersApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum McpServerCreated {
    #[oai(status = 201)]
    Created(Json<McpServer>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::McpServers")]
impl McpServersApi {
    /// Register an MCP server (streamable HTTP). Header values are encrypted at rest and never returned.
    /// Agents list `mcp:<id>` among their capabilities to use its tools.
    #[oai(path = "/mcp-servers", method = "post", operation_id = "createMcpServer")]
    async fn create_mcp_server(
        &self,
        auth: ApiKey,
        body: Json<McpServerCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<McpServerCreated, ApiError> {
        let org = auth.0.org_id;
        let state = self.state.clone();
        // The fingerprint names the headers, never their values.
        let b = body.0;
        let request = format!(
            "createMcpServer:{}:{}:{:?}:{}:{:?}",
            b.name.to_json_string(),
            b.url.to_json_string(),
            b.headers.as_ref().map(|h| h.keys().cloned().collect::<Vec<_>>()),
            b.allowed_tools.to_json_string(),
            b.status.map(|s| s.as_str()),
        );
        let created = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move {
                let input = mcp_input(Some(b.name), Some(b.url), b.headers, b.allowed_tools.map(Some), b.status);
                let s: McpServer = mcp::create_server(&mut *c, &state.config.keys, org, input).await?.into();
                Ok(s)
            })
        })
        .await?;
        Ok(McpServerCreated::Created(Json(created)))
    }

    /// List MCP servers, newest first.
    #[oai(path = "/mcp-servers", method = "get", operation_id = "listMcpServers")]
    async fn list_mcp_servers(
        &self,
        auth: ApiKey,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::McpServer>>>,
    ) -> Result<Json<McpServerList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let page = mcp::list_servers(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, after, limit).await?;
        Ok(Json(McpServerList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Get one MCP server (header names only).
    #[oai(path = "/mcp-servers/:mcp_server_id", method = "get", operation_id = "getMcpServer")]
    async fn get_mcp_server(&self, auth: ApiKey, mcp_server_id: Path<Id<rules::McpServer>>) -> Result<Json<McpServer>, ApiError> {
        let id = mcp_server_id.0.id()?;
        Ok(Json(mcp::get_server(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, id).await?.into()))
    }

    /// Update an MCP server. A new `url` drops the cached tool list, and needs `headers` too
    /// when headers are stored (400 `mcp_headers_required`).
    #[oai(path = "/mcp-servers/:mcp_server_id", method = "patch", operation_id = "updateMcpServer")]
    async fn update_mcp_server(
        &self,
        auth: ApiKey,
        mcp_server_id: Path<Id<rules::McpServer>>,
        body: Json<McpServerUpdate>,
    ) -> Result<Json<McpServer>, ApiError> {
        let org = auth.0.org_id;
        let id = mcp_server_id.0.id()?;
        let b = body.0;
        let allowed = match b.allowed_tools {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(v) => Some(Some(v)),
        };
        let input = mcp_input(b.name, b.url, b.headers, allowed, b.status);
        let mut tx = self.state.org_tx(org).await?;
        let server = mcp::update_server(&mut tx, &self.state.config.keys, org, id, input).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(Json(server.into()))
    }

    /// Delete an MCP server. Agents that list it lose its tools.
    #[oai(path = "/mcp-servers/:mcp_server_id", method = "delete", operation_id = "deleteMcpServer")]
    async fn delete_mcp_server(&self, auth: ApiKey, mcp_server_id: Path<Id<rules::McpServer>>) -> Result<Deleted, ApiError> {
        let id = mcp_server_id.0.id()?;
        let mut tx = self.state.org_tx(auth.0.org_id).await?;
        mcp::delete_server(&mut tx, auth.0.org_id, id).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        self.state.mcp.forget(id.uuid()).await;
        Ok(Deleted::NoContent)
    }

    /// The server's cached tool list (shared by every process; refreshed when older than its TTL).
    #[oai(path = "/mcp-servers/:mcp_server_id/tools", method = "get", operation_id = "listMcpServerTools")]
    async fn list_mcp_server_tools(
        &self,
        auth: ApiKey,
        mcp_server_id: Path<Id<rules::McpServer>>,
    ) -> Result<Json<McpToolList>, ApiError> {
        let org = auth.0.org_id;
        let id = mcp_server_id.0.id()?;
        let mut tx = self.state.org_tx(org).await?;
        let server = mcp::get_server(&mut *tx, org, id).await?;
        let list = mcp::cached_tools(&mut *tx, org, id).await?;
        Ok(Json(McpToolList::new(list.tools, list.fetched_at, &server.allowed_tools)))
    }

    /// Connect to the server now and list its tools again. An unreachable or refused server
    /// answers 502 `mcp_unreachable`.
    #[oai(path = "/mcp-servers/:mcp_server_id/refresh", method = "post", operation_id = "refreshMcpServer")]
    async fn refresh_mcp_server(
        &self,
        auth: ApiKey,
        mcp_server_id: Path<Id<rules::McpServer>>,
    ) -> Result<Json<McpToolList>, ApiError> {
        let org = auth.0.org_id;
        let id = mcp_server_id.0.id()?;
        let state = &self.state;
        let server = catalog::stored_server(&state.pool, org, id).await?;
        match catalog::refresh(&state.pool, &state.config.keys, &state.mcp, org, &server).await {
            Ok(tools) => {
                let fetched_at = mcp::cached_tools(&mut *state.org_tx(org).await?, org, id).await?.fetched_at;
                Ok(Json(McpToolList::new(tools, fetched_at, &server.allowed_tools)))
            }
            Err(CatalogError::Mcp(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "mcp_unreachable", e.to_string())),
            Err(CatalogError::Core(e)) => Err(e.into()),
        }
    }
}
