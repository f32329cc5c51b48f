//! The MCP catalog: the MCP servers an org trusts (URL, write-only headers
//! sealed with the org key chain, allowed tools, status) and each server's tool
//! list, cached here in PostgreSQL with a TTL and refreshed by one process at a time.
//!
//! # Tool names the model sees
//! `mcp__<server name>__<tool>`, at most 64 characters of `[A-Za-z0-9_-]`.
//! A server name is a slug without `_`, so the first `__` after `mcp__` always
//! ends it and two servers never share a prefix. A tool name is sanitised (any
//! other character becomes `_`); when the whole name would pass 64 characters
//! the tool part is cut and `_` plus 8 hex digits of the SHA-256 of the
//! original tool name are appended. When two tools of a server still map to
//! one name, the tools are taken in order of their original names: the first
//! keeps it, each later one gets the hash suffix. The mapping depends only on
//! the server's name and its set of tool names.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use crate::crypto::{KeyRing, Secret};
use crate::error::{Error, Result};
use crate::ids::{McpServerId, OrgId, TypedId};
use crate::page::Page;
use crate::{db, keychain, validate};

/// Associated-data purpose of a server's sealed headers.
const HEADERS_PURPOSE: &str = "mcp_server.headers";
/// Longest server name.
pub const MAX_SERVER_NAME_CHARS: usize = 32;
/// Most headers per server.
pub const MAX_HEADERS: usize = 16;
/// Longest header name.
pub const MAX_HEADER_NAME_CHARS: usize = 64;
/// Most entries of `allowed_tools`.
pub const MAX_ALLOWED_TOOLS: usize = 256;
/// Longest tool name the model is shown (OpenAI's function-name limit).
pub const MAX_TOOL_NAME_CHARS: usize = 64;
/// The capability that gives an agent a server's tools: `mcp:<server id>`.
pub const CAPABILITY_PREFIX: &str = "mcp:";

/// Headers a server may not be given: the transport sets them itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct McpServer {
    pub id: McpServerId,
    pub name: String,
    pub url: String,
    /// Names only: the values never leave the database unsealed except toward the server.
    pub header_names: Vec<String>,
    pub allowed_tools: Option<Vec<String>>,
    pub status: String,
    pub tools_fetched_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, url, header_names, allowed_tools, status, tools_fetched_at, created_at, updated_at";

/// A new server, or changes to one (`None` = unchanged).
#[derive(Debug, Default)]
pub struct McpServerInput {
    pub name: Option<String>,
    pub url: Option<String>,
    /// Replaces all headers.
    pub headers: Option<Vec<(String, Secret)>>,
    /// `Some(None)`: every tool is allowed.
    pub allowed_tools: Option<Option<Vec<String>>>,
    pub status: Option<String>,
}

fn validate_input(input: &McpServerInput) -> Result<()> {
    if let Some(name) = &input.name {
        let ok = (1..=MAX_SERVER_NAME_CHARS).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !ok {
            return Err(Error::invalid(
                "invalid_mcp_server_name",
                format!("name must be 1-{MAX_SERVER_NAME_CHARS} characters of a-z, 0-9 and -, not starting or ending with -"),
            ));
        }
    }
    if let Some(url) = &input.url {
        mcp_url(url)?;
    }
    if let Some(headers) = &input.headers {
        if headers.len() > MAX_HEADERS {
            return Err(Error::invalid("invalid_mcp_header", format!("at most {MAX_HEADERS} headers")));
        }
        let mut seen = HashSet::new();
        for (name, value) in headers {
            let token = !name.is_empty()
                && name.len() <= MAX_HEADER_NAME_CHARS
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(Error::invalid(
                    "invalid_mcp_header",
                    format!("header names are 1-{MAX_HEADER_NAME_CHARS} characters of an HTTP token"),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(Error::invalid("invalid_mcp_header", format!("header {name} is set by the MCP transport")));
            }
            if !seen.insert(lower) {
                return Err(Error::invalid("invalid_mcp_header", format!("header {name} is given twice")));
            }
            let v = value.expose_secret();
            let sendable = (1..=crate::limits::MAX_SECRET_CHARS).contains(&v.len())
                && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
                && v.trim() == v;
            if !sendable {
                // The message names the header, never its value.
                return Err(Error::invalid(
                    "invalid_mcp_header",
                    format!(
                        "the value of header {name} must be 1-{} printable ASCII characters without leading or trailing spaces",
                        crate::limits::MAX_SECRET_CHARS
                    ),
                ));
            }
        }
    }
    if let Some(Some(tools)) = &input.allowed_tools {
        if tools.len() > MAX_ALLOWED_TOOLS {
            return Err(Error::invalid("invalid_allowed_tools", format!("at most {MAX_ALLOWED_TOOLS} allowed tools")));
        }
        for t in tools {
            if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "invalid_allowed_tools",
                    "tool names are 1-128 characters without control characters",
                ));
            }
        }
    }
    if let Some(s) = &input.status
        && !matches!(s.as_str(), "active" | "disabled")
    {
        return Err(Error::invalid("invalid_mcp_status", "status is active or disabled"));
    }
    Ok(())
}

/// An http(s) URL naming a host, without credentials or fragment (a query is allowed).
pub fn mcp_url(value: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("invalid_mcp_url", format!("url {why}"));
    validate::text("url", value, crate::limits::MAX_URL_CHARS)?;
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace"));
    }
    let url = url::Url::parse(value).map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials; use headers instead"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not contain a fragment"));
    }
    Ok(())
}

async fn seal_headers(
    conn: &mut PgConnection,
    keys: &KeyRing,
    org_id: OrgId,
    id: McpServerId,
    headers: &[(String, Secret)],
) -> Result<(Vec<String>, Option<Vec<u8>>)> {
    if headers.is_empty() {
        return Ok((vec![], None));
    }
    let names = headers.iter().map(|(n, _)| n.clone()).collect();
    let plain: serde_json::Map<String, Value> =
        headers.iter().map(|(n, v)| (n.clone(), Value::String(v.expose_secret().to_owned()))).collect();
    let plain = Secret::new(Value::Object(plain).to_string());
    let sealed = keychain::seal(conn, keys, org_id, id.uuid(), HEADERS_PURPOSE, plain.expose_secret()).await?;
    Ok((names, Some(sealed)))
}

fn name_taken(e: Error) -> Error {
    if e.is_unique_violation() {
        Error::conflict("mcp_server_name_taken", "the org already has an MCP server with this name")
    } else {
        e
    }
}

pub async fn create_server(conn: &mut PgConnection, keys: &KeyRing, org_id: OrgId, input: McpServerInput) -> Result<McpServer> {
    let name = input.name.clone().ok_or_else(|| Error::invalid("missing_field", "name is required"))?;
    let url = input.url.clone().ok_or_else(|| Error::invalid("missing_field", "url is required"))?;
    validate_input(&input)?;
    let id = McpServerId::new();
    let (names, sealed) = seal_headers(&mut *conn, keys, org_id, id, input.headers.as_deref().unwrap_or_default()).await?;
    sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO mcp_servers (id, org_id, name, url, header_names, headers_ciphertext, allowed_tools, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, 'active')) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(org_id)
    .bind(name)
    .bind(url)
    .bind(names)
    .bind(sealed)
    .bind(input.allowed_tools.flatten())
    .bind(input.status)
    .fetch_one(conn)
    .await
    .map_err(|e| name_taken(e.into()))
}

/// Applies changes. A new URL drops the cached tool list (it belonged to another server),
/// and needs `headers` too when headers are stored, so they never follow a new host.
pub async fn update_server(
    conn: &mut PgConnection,
    keys: &KeyRing,
    org_id: OrgId,
    id: McpServerId,
    input: McpServerInput,
) -> Result<McpServer> {
    validate_input(&input)?;
    let current = get_server(&mut *conn, org_id, id).await?;
    let moved = input.url.as_ref().is_some_and(|u| *u != current.url);
    if moved && !current.header_names.is_empty() && input.headers.is_none() {
        return Err(Error::invalid(
            "mcp_headers_required",
            "changing url needs headers too (or []): stored headers are only sent where they were given for",
        ));
    }
    let (set_headers, names, sealed) = match &input.headers {
        None => (false, vec![], None),
        Some(h) => {
            let (n, s) = seal_headers(&mut *conn, keys, org_id, id, h).await?;
            (true, n, s)
        }
    };
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE mcp_servers SET name = coalesce($3, name), url = coalesce($4, url),
                header_names = CASE WHEN $5 THEN $6 ELSE header_names END,
                headers_ciphertext = CASE WHEN $5 THEN $7 ELSE headers_ciphertext END,
                allowed_tools = CASE WHEN $8 THEN $9 ELSE allowed_tools END,
                status = coalesce($10, status),
                tools = CASE WHEN $11 THEN '[]' ELSE tools END,
                tools_fetched_at = CASE WHEN $11 THEN NULL ELSE tools_fetched_at END,
                updated_at = now()
          WHERE org_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(org_id)
    .bind(id)
    .bind(&input.name)
    .bind(&input.url)
    .bind(set_headers)
    .bind(names)
    .bind(sealed)
    .bind(input.allowed_tools.is_some())
    .bind(input.allowed_tools.clone().flatten())
    .bind(&input.status)
    .bind(moved)
    .fetch_one(conn)
    .await
    .map_err(|e| name_taken(e.into()))
}

pub async fn get_server(db: impl sqlx::PgExecutor<'_>, org_id: OrgId, id: McpServerId) -> Result<McpServer> {
    sqlx::query_as(AssertSqlSafe(format!("SELECT {COLUMNS} FROM mcp_servers WHERE org_id = $1 AND id = $2")))
        .bind(org_id)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("MCP server"))
}

pub async fn list_servers(
    conn: &mut PgConnection,
    org_id: OrgId,
    after: Option<McpServerId>,
    limit: u32,
) -> Result<Page<McpServer, McpServerId>> {
    let rows: Vec<McpServer> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM mcp_servers WHERE org_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(org_id)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, limit, |s| s.id))
}

/// Deletes a server; agents naming it lose its tools (their turns see a tool error if they call one).
pub async fn delete_server(conn: &mut PgConnection, org_id: OrgId, id: McpServerId) -> Result<()> {
    let done = sqlx::query("DELETE FROM mcp_servers WHERE org_id = $1 AND id = $2").bind(org_id).bind(id).execute(conn).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("MCP server"));
    }
    Ok(())
}

/// The server id of an `mcp:<id>` capability; `None` for another capability.
pub fn capability_server(capability: &str) -> Option<Result<McpServerId>> {
    let id = capability.strip_prefix(CAPABILITY_PREFIX)?;
    Some(McpServerId::parse(id).map_err(|_| {
        Error::invalid("unknown_capability", format!("capability {capability:?} must be mcp:<an MCP server id, mcp_…>"))
    }))
}

/// Checks that every `mcp:<id>` capability names a server of the org (400 `unknown_capability` otherwise).
pub async fn ensure_capabilities(conn: &mut PgConnection, org_id: OrgId, capabilities: &[String]) -> Result<()> {
    let mut ids = Vec::new();
    for c in capabilities {
        if let Some(id) = capability_server(c) {
            ids.push(id?);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM mcp_servers WHERE org_id = $1 AND id = ANY($2)")
        .bind(org_id)
        .bind(&ids)
        .fetch_one(conn)
        .await?;
    if found as usize != ids.len() {
        return Err(Error::invalid("unknown_capability", "an mcp:<id> capability names no MCP server of this org"));
    }
    Ok(())
}

/// One tool of a server as cached: what the server said, plus the name the model sees and a hash.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedTool {
    /// The server's own name for it.
    pub name: String,
    /// `mcp__<server>__<tool>` (see the module docs).
    pub model_name: String,
    pub description: Option<String>,
    pub input_schema: Value,
    pub annotations: Option<Value>,
    /// SHA-256 (hex) of the definition as the server sent it, keys sorted: a changed definition gets a new hash.
    pub hash: String,
}

/// A server's cached tool list and whether it is still within its TTL.
#[derive(Debug, Clone)]
pub struct ToolList {
    pub tools: Vec<CachedTool>,
    pub fetched_at: Option<DateTime<Utc>>,
}

impl ToolList {
    pub fn is_fresh(&self, ttl: std::time::Duration) -> bool {
        self.fetched_at.is_some_and(|t| Utc::now() - t < chrono::Duration::from_std(ttl).unwrap_or_default())
    }
}

fn sanitise(tool: &str) -> String {
    tool.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn hash8(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..4])
}

fn with_suffix(prefix: &str, tool: &str, original: &str) -> String {
    let suffix = format!("_{}", hash8(original));
    let room = MAX_TOOL_NAME_CHARS - prefix.len() - suffix.len();
    format!("{prefix}{}{suffix}", &tool[..tool.len().min(room)])
}

/// The names the model sees for a server's tools, in the order of `tools` (see the module docs).
pub fn model_tool_names(server: &str, tools: &[&str]) -> Vec<String> {
    let prefix = format!("mcp__{server}__");
    let mut order: Vec<usize> = (0..tools.len()).collect();
    order.sort_by(|a, b| tools[*a].cmp(tools[*b]));
    let mut out = vec![String::new(); tools.len()];
    let mut taken = HashSet::new();
    for i in order {
        let clean = sanitise(tools[i]);
        let plain = format!("{prefix}{clean}");
        let name = if plain.len() <= MAX_TOOL_NAME_CHARS && !taken.contains(&plain) {
            plain
        } else {
            with_suffix(&prefix, &clean, tools[i])
        };
        taken.insert(name.clone());
        out[i] = name;
    }
    out
}

/// Turns a server's `tools/list` answer into cached tools (names mapped, definitions hashed).
pub fn cache_entries(server_name: &str, listed: &[Value]) -> Vec<CachedTool> {
    let names: Vec<&str> = listed.iter().map(|t| t.get("name").and_then(Value::as_str).unwrap_or_default()).collect();
    let model_names = model_tool_names(server_name, &names);
    listed
        .iter()
        .zip(model_names)
        .filter(|(t, _)| t.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty()))
        .map(|(t, model_name)| CachedTool {
            name: t["name"].as_str().unwrap_or_default().to_owned(),
            model_name,
            description: t.get("description").and_then(Value::as_str).map(str::to_owned),
            input_schema: t.get("inputSchema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            annotations: t.get("annotations").cloned(),
            // serde_json's maps are sorted, so the text is canonical.
            hash: hex::encode(Sha256::digest(t.to_string().as_bytes())),
        })
        .collect()
}

/// Reads a server's cached tools.
pub async fn cached_tools(db: impl sqlx::PgExecutor<'_>, org_id: OrgId, id: McpServerId) -> Result<ToolList> {
    let row: Option<(Value, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT tools, tools_fetched_at FROM mcp_servers WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(db)
            .await?;
    let (tools, fetched_at) = row.ok_or(Error::NotFound("MCP server"))?;
    Ok(ToolList { tools: serde_json::from_value(tools).unwrap_or_default(), fetched_at })
}

/// Claims the right to refresh a server's tool list for `lease` (one refresher
/// at a time across all processes). `false`: another process holds it.
pub async fn claim_refresh(pool: &PgPool, org_id: OrgId, id: McpServerId, lease: std::time::Duration) -> Result<bool> {
    let mut tx = db::begin_org(pool, org_id).await?;
    let claimed = sqlx::query(
        "UPDATE mcp_servers SET refresh_until = now() + $3
          WHERE org_id = $1 AND id = $2 AND (refresh_until IS NULL OR refresh_until < now())",
    )
    .bind(org_id)
    .bind(id)
    .bind(lease)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(claimed)
}

/// Stores a refreshed list and releases the claim; `None` (the refresh failed) only releases it.
pub async fn finish_refresh(pool: &PgPool, org_id: OrgId, id: McpServerId, tools: Option<&[CachedTool]>) -> Result<()> {
    let mut tx = db::begin_org(pool, org_id).await?;
    sqlx::query(
        "UPDATE mcp_servers SET refresh_until = NULL,
                tools = coalesce($3, tools), tools_fetched_at = CASE WHEN $3 IS NULL THEN tools_fetched_at ELSE now() END
          WHERE org_id = $1 AND id = $2",
    )
    .bind(org_id)
    .bind(id)
    .bind(tools.map(|t| json!(t)))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What a process needs to reach a server, headers still sealed.
#[derive(Debug, Clone)]
pub struct StoredServer {
    pub id: McpServerId,
    pub name: String,
    pub url: String,
    pub status: String,
    pub allowed_tools: Option<Vec<String>>,
    headers: Option<keychain::SealedSecret>,
}

impl StoredServer {
    /// Unseals the headers (no database access).
    pub fn open_headers(&self, keys: &KeyRing, org_id: OrgId) -> Result<Vec<(String, Secret)>> {
        let Some(sealed) = &self.headers else { return Ok(vec![]) };
        let plain = sealed.open(keys, org_id, HEADERS_PURPOSE)?;
        let map: serde_json::Map<String, Value> =
            serde_json::from_str(plain.expose_secret()).map_err(|_| Error::Crypto("sealed headers are not a JSON object"))?;
        Ok(map.into_iter().map(|(k, v)| (k, Secret::new(v.as_str().unwrap_or_default().to_owned()))).collect())
    }

    /// Whether the model may be shown this tool.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed_tools.as_ref().is_none_or(|a| a.iter().any(|t| t == tool))
    }
}

/// Reads servers with their sealed headers and the data keys they name; missing ids are left out.
pub async fn stored_servers(conn: &mut PgConnection, org_id: OrgId, ids: &[McpServerId]) -> Result<Vec<StoredServer>> {
    Ok(servers_with_tools(conn, org_id, ids).await?.into_iter().map(|(s, _)| s).collect())
}

/// [`stored_servers`] with each one's cached tool list, in one statement: what a turn reads.
pub async fn servers_with_tools(
    conn: &mut PgConnection,
    org_id: OrgId,
    ids: &[McpServerId],
) -> Result<Vec<(StoredServer, ToolList)>> {
    type Row = (McpServerId, String, String, String, Option<Vec<String>>, Option<Vec<u8>>, Value, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, name, url, status, allowed_tools, headers_ciphertext, tools, tools_fetched_at
           FROM mcp_servers WHERE org_id = $1 AND id = ANY($2)",
    )
    .bind(org_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, name, url, status, allowed_tools, sealed, tools, fetched_at) in rows {
        let headers = match sealed {
            Some(s) => Some(keychain::fetch(&mut *conn, org_id, id.uuid(), s).await?),
            None => None,
        };
        let list = ToolList { tools: serde_json::from_value(tools).unwrap_or_default(), fetched_at };
        out.push((StoredServer { id, name, url, status, allowed_tools, headers }, list));
    }
    Ok(out)
}

/// Re-seals every server's headers of the org under `fresh` (org key rotation).
pub async fn reseal_all(conn: &mut PgConnection, keys: &KeyRing, org_id: OrgId, fresh: &crate::crypto::DataKey) -> Result<u64> {
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, headers_ciphertext FROM mcp_servers WHERE org_id = $1 AND headers_ciphertext IS NOT NULL FOR UPDATE",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    for (id, sealed) in &rows {
        let plain = keychain::open(&mut *conn, keys, org_id, *id, HEADERS_PURPOSE, sealed).await?;
        let resealed = fresh.seal(org_id, *id, HEADERS_PURPOSE, plain.expose_secret())?;
        sqlx::query("UPDATE mcp_servers SET headers_ciphertext = $3 WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .bind(resealed)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_sanitised_bounded_and_unique() {
        let long = "t".repeat(80);
        let tools = ["add", "get.weather", "get_weather", long.as_str(), "échos"];
        let names = model_tool_names("everything", &tools);
        assert_eq!(names[0], "mcp__everything__add");
        // "get.weather" and "get_weather" collide after sanitising: the first by original name keeps it.
        assert_eq!(names[1], "mcp__everything__get_weather");
        assert_eq!(names[2], format!("mcp__everything__get_weather_{}", hash8("get_weather")));
        assert!(names[3].len() <= MAX_TOOL_NAME_CHARS && names[3].ends_with(&hash8(&long)), "{}", names[3]);
        assert_eq!(names[4], "mcp__everything___chos");
        for n in &names {
            assert!(n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{n}");
        }
        // Deterministic whatever the order the server lists them in.
        let mut reversed = tools;
        reversed.reverse();
        let mut again = model_tool_names("everything", &reversed);
        again.reverse();
        assert_eq!(again, names);
    }

    #[test]
    fn a_changed_definition_gets_a_new_hash() {
        let a = cache_entries("s", &[json!({"name": "add", "inputSchema": {"type": "object"}})]);
        let b = cache_entries("s", &[json!({"name": "add", "inputSchema": {"type": "object", "required": ["a"]}})]);
        let a2 = cache_entries("s", &[json!({"inputSchema": {"type": "object"}, "name": "add"})]);
        assert_ne!(a[0].hash, b[0].hash);
        assert_eq!(a[0].hash, a2[0].hash);
    }

    #[test]
    fn names_urls_and_headers_are_checked() {
        let ok = |i: McpServerInput| validate_input(&i).is_ok();
        assert!(ok(McpServerInput { name: Some("everything".into()), ..Default::default() }));
        assert!(!ok(McpServerInput { name: Some("has_underscore".into()), ..Default::default() }));
        assert!(!ok(McpServerInput { name: Some("x".repeat(33)), ..Default::default() }));
        assert!(mcp_url("https://mcp.example.com/mcp?tenant=1").is_ok());
        assert!(mcp_url("https://user:pw@example.com/").is_err());
        assert!(mcp_url("file:///etc/passwd").is_err());
        let h = |n: &str, v: &str| McpServerInput {
            headers: Some(vec![(n.into(), Secret::new(v.to_owned()))]),
            ..Default::default()
        };
        assert!(ok(h("Authorization", "Bearer abc")));
        assert!(!ok(h("Mcp-Session-Id", "x")));
        assert!(!ok(h("Bad Name", "x")));
        let Err(Error::Invalid { message, .. }) = validate_input(&h("X-Key", "line\nbreak-secret")) else { panic!() };
        assert!(!message.contains("secret"), "the value is never echoed: {message}");
        assert!(capability_server("math").is_none());
        assert!(capability_server("mcp:nope").unwrap().is_err());
    }
}
