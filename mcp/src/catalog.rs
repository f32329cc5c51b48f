//! The catalog's tool lists, kept fresh: reads the cache in PostgreSQL
//! ([`turnstone_core::mcp`]), and when it is stale or asked to, refreshes it
//! over MCP — one refresher at a time across all processes (a lease in the
//! server's row); the others wait for its result or use the list they have.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use turnstone_core::crypto::KeyRing;
use turnstone_core::ids::{McpServerId, OrgId, TypedId};
use turnstone_core::mcp::{self, CachedTool, StoredServer, ToolList};
use turnstone_core::{Error, db};

use crate::client::{Endpoint, McpError, Sessions};

/// Why a tool list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Core(#[from] Error),
    #[error(transparent)]
    Mcp(#[from] McpError),
}

/// A server's connection details, headers opened.
pub fn endpoint(server: &StoredServer, keys: &KeyRing, org_id: OrgId) -> Result<Endpoint, Error> {
    Ok(Endpoint { server_id: server.id.uuid(), url: server.url.clone(), headers: server.open_headers(keys, org_id)? })
}

/// Reads one server (with its sealed headers) in an org-scoped transaction.
pub async fn stored_server(pool: &PgPool, org_id: OrgId, id: McpServerId) -> Result<StoredServer, Error> {
    let mut tx = db::begin_org(pool, org_id).await?;
    let s = mcp::stored_servers(&mut tx, org_id, &[id]).await?.pop().ok_or(Error::NotFound("MCP server"))?;
    tx.commit().await?;
    Ok(s)
}

/// How long a refresh claim lasts: a crashed refresher blocks the others no longer than this.
fn lease(sessions: &Sessions) -> Duration {
    sessions.config().connect_timeout * 2 + Duration::from_secs(5)
}

/// Connects now and lists the server's tools again, storing the result. Waits
/// (up to one lease) while another process refreshes the same server.
pub async fn refresh(
    pool: &PgPool,
    keys: &KeyRing,
    sessions: &Sessions,
    org_id: OrgId,
    server: &StoredServer,
) -> Result<Vec<CachedTool>, CatalogError> {
    let lease = lease(sessions);
    let deadline = Instant::now() + lease;
    while !mcp::claim_refresh(pool, org_id, server.id, lease).await? {
        if Instant::now() > deadline {
            return Err(McpError::Unreachable("another refresh of this server did not finish".into()).into());
        }
        // Another process is listing this server; its result lands in the row.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refresh_claimed(pool, keys, sessions, org_id, server).await
}

/// Lists the server's tools and stores them, releasing the refresh claim the caller holds.
async fn refresh_claimed(
    pool: &PgPool,
    keys: &KeyRing,
    sessions: &Sessions,
    org_id: OrgId,
    server: &StoredServer,
) -> Result<Vec<CachedTool>, CatalogError> {
    let listed = async {
        let ep = endpoint(server, keys, org_id)?;
        Ok::<_, CatalogError>(sessions.list_tools(&ep).await?)
    }
    .await;
    match listed {
        Ok(listed) => {
            let tools = mcp::cache_entries(&server.name, &listed);
            mcp::finish_refresh(pool, org_id, server.id, Some(&tools)).await?;
            Ok(tools)
        }
        Err(e) => {
            mcp::finish_refresh(pool, org_id, server.id, None).await?;
            Err(e)
        }
    }
}

/// A server's tools for a turn, given its `cached` list (read with the server,
/// [`mcp::servers_with_tools`]): that list while it is fresh; else a refresh,
/// falling back to the stale list when the server cannot be reached or another
/// process is refreshing it.
pub async fn tools_for_turn(
    pool: &PgPool,
    keys: &KeyRing,
    sessions: &Sessions,
    org_id: OrgId,
    server: &StoredServer,
    cached: ToolList,
    ttl: Duration,
) -> Result<Vec<CachedTool>, CatalogError> {
    if cached.is_fresh(ttl) {
        return Ok(cached.tools);
    }
    let refreshed = if cached.fetched_at.is_none() {
        // Nothing to fall back on: wait for a refresh in flight, or run one.
        refresh(pool, keys, sessions, org_id, server).await
    } else if mcp::claim_refresh(pool, org_id, server.id, lease(sessions)).await? {
        refresh_claimed(pool, keys, sessions, org_id, server).await
    } else {
        // Another process is refreshing it: the stale list serves this turn.
        return Ok(cached.tools);
    };
    match refreshed {
        Ok(t) => Ok(t),
        Err(e) if cached.fetched_at.is_some() => {
            tracing::warn!(server_id = %server.id, error = %e, "MCP tool list refresh failed; using the stale list");
            Ok(cached.tools)
        }
        Err(e) => Err(e),
    }
}
