//! Organisations, API keys and the first-start bootstrap of the default org.
//!
//! An API key looks like `ts_live_<40 base62>`. Only its SHA-256 is stored; the
//! first 16 hex digits of that hash are the indexed `lookup_id`, and the full
//! hash is compared in constant time after lookup.

use crate::crypto::{KeyRing, Secret};
use crate::error::{Error, Result};
use crate::ids::{ApiKeyId, ModelId, OrgId, ProviderId, TypedId};
use crate::providers;
use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use subtle::ConstantTimeEq;

/// Every Turnstone API key starts with this, so leak scanners can find them.
pub const KEY_PREFIX: &str = "ts_";

/// The caller an API key resolves to.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub org_id: OrgId,
    pub key_id: ApiKeyId,
}

/// A new random API key (shown once, never stored).
pub fn generate_api_key() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    Secret::new(format!("{KEY_PREFIX}live_{body}"))
}

/// The SHA-256 of a presented key: what is stored, and what a cache of checked keys is keyed by.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn lookup_id(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Rejects keys that could not have been issued (wrong prefix, too short or long).
pub fn validate_key_format(key: &str) -> Result<()> {
    if !key.starts_with(KEY_PREFIX) || key.len() < 24 || key.len() > 200 || !key.is_ascii() {
        return Err(Error::invalid("invalid_api_key_format", "API keys start with ts_ and are 24-200 ASCII characters"));
    }
    Ok(())
}

/// An organisation (the tenant registry is not itself tenant data: no RLS).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub disabled: bool,
    pub max_agents: i32,
    pub max_sessions: i32,
    pub max_concurrent_turns: i32,
    pub rate_limit_per_minute: i32,
    /// Storage limits (`crate::storage`): one file's bytes, a session's bytes, files and keys, the org's bytes.
    pub max_file_bytes: i64,
    pub max_session_bytes: i64,
    pub max_session_files: i32,
    pub max_session_keys: i32,
    pub max_storage_bytes: i64,
    pub created_at: DateTime<Utc>,
}

/// Changes to an org (operator). `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct OrgUpdate {
    pub name: Option<String>,
    pub disabled: Option<bool>,
    pub max_agents: Option<i32>,
    pub max_sessions: Option<i32>,
    pub max_concurrent_turns: Option<i32>,
    pub rate_limit_per_minute: Option<i32>,
    pub max_file_bytes: Option<i64>,
    pub max_session_bytes: Option<i64>,
    pub max_session_files: Option<i32>,
    pub max_session_keys: Option<i32>,
    pub max_storage_bytes: Option<i64>,
}

const ORG_COLUMNS: &str = "id, name, disabled, max_agents, max_sessions, max_concurrent_turns, rate_limit_per_minute, \
                           max_file_bytes, max_session_bytes, max_session_files, max_session_keys, max_storage_bytes, created_at";

pub async fn create_org(pool: &PgPool, name: &str) -> Result<Org> {
    crate::validate::name("name", name)?;
    let mut c = crate::db::autocommit(pool).await?;
    let org = sqlx::query_as(sqlx::AssertSqlSafe(format!("INSERT INTO orgs (id, name) VALUES ($1, $2) RETURNING {ORG_COLUMNS}")))
        .bind(OrgId::new())
        .bind(name)
        .fetch_one(&mut *c)
        .await?;
    c.commit().await?;
    Ok(org)
}

pub async fn get_org(pool: &PgPool, id: OrgId) -> Result<Org> {
    let mut c = crate::db::autocommit(pool).await?;
    let org = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    c.commit().await?;
    org.ok_or(Error::NotFound("org"))
}

pub async fn list_orgs(pool: &PgPool, after: Option<OrgId>, limit: u32) -> Result<crate::page::Page<Org, OrgId>> {
    let mut c = crate::db::autocommit(pool).await?;
    let rows: Vec<Org> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORG_COLUMNS} FROM orgs WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *c)
    .await?;
    c.commit().await?;
    Ok(crate::page::Page::from_rows(rows, limit, |o| o.id))
}

/// Renames, disables or re-sizes an org; a disabled org's keys stop working at once.
pub async fn update_org(pool: &PgPool, id: OrgId, update: &OrgUpdate) -> Result<Org> {
    if let Some(n) = &update.name {
        crate::validate::name("name", n)?;
    }
    for (field, v) in [
        ("max_agents", update.max_agents),
        ("max_sessions", update.max_sessions),
        ("max_concurrent_turns", update.max_concurrent_turns),
        ("rate_limit_per_minute", update.rate_limit_per_minute),
    ] {
        if v.is_some_and(|v| v < 0) {
            return Err(Error::invalid("invalid_quota", format!("{field} must be >= 0")));
        }
    }
    for (field, v) in [
        ("max_file_bytes", update.max_file_bytes),
        ("max_session_bytes", update.max_session_bytes),
        ("max_session_files", update.max_session_files.map(i64::from)),
        ("max_session_keys", update.max_session_keys.map(i64::from)),
        ("max_storage_bytes", update.max_storage_bytes),
    ] {
        if v.is_some_and(|v| v < 0) {
            return Err(Error::invalid("invalid_quota", format!("{field} must be >= 0")));
        }
    }
    let mut c = crate::db::autocommit(pool).await?;
    let org = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE orgs SET name = coalesce($2, name), disabled = coalesce($3, disabled),
                max_agents = coalesce($4, max_agents), max_sessions = coalesce($5, max_sessions),
                max_concurrent_turns = coalesce($6, max_concurrent_turns),
                rate_limit_per_minute = coalesce($7, rate_limit_per_minute),
                max_file_bytes = coalesce($8, max_file_bytes), max_session_bytes = coalesce($9, max_session_bytes),
                max_session_files = coalesce($10, max_session_files), max_session_keys = coalesce($11, max_session_keys),
                max_storage_bytes = coalesce($12, max_storage_bytes)
          WHERE id = $1 RETURNING {ORG_COLUMNS}"
    )))
    .bind(id)
    .bind(&update.name)
    .bind(update.disabled)
    .bind(update.max_agents)
    .bind(update.max_sessions)
    .bind(update.max_concurrent_turns)
    .bind(update.rate_limit_per_minute)
    .bind(update.max_file_bytes)
    .bind(update.max_session_bytes)
    .bind(update.max_session_files)
    .bind(update.max_session_keys)
    .bind(update.max_storage_bytes)
    .fetch_optional(&mut *c)
    .await?;
    c.commit().await?;
    org.ok_or(Error::NotFound("org"))
}

/// An API key's metadata (the secret itself is never stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "id, name, display_prefix, created_at, expires_at, revoked_at, last_used_at";

/// Stores an API key for the org of `conn`'s transaction; returns its metadata.
pub async fn insert_api_key(
    conn: &mut PgConnection,
    org_id: OrgId,
    key: &Secret,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<ApiKey> {
    validate_key_format(key.expose_secret())?;
    crate::validate::text("name", name, crate::limits::MAX_NAME_CHARS)?;
    if expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(Error::invalid("invalid_expires_at", "expires_at must be in the future"));
    }
    let hash = key_hash(key.expose_secret());
    let prefix: String = key.expose_secret().chars().take(12).collect();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, org_id, lookup_id, secret_hash, display_prefix, name, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    )))
    .bind(ApiKeyId::new())
    .bind(org_id)
    .bind(lookup_id(&hash))
    .bind(&hash[..])
    .bind(prefix)
    .bind(name)
    .bind(expires_at)
    .fetch_one(conn)
    .await?)
}

pub async fn list_api_keys(
    conn: &mut PgConnection,
    org_id: OrgId,
    after: Option<ApiKeyId>,
    limit: u32,
) -> Result<crate::page::Page<ApiKey, ApiKeyId>> {
    let rows: Vec<ApiKey> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(org_id)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    Ok(crate::page::Page::from_rows(rows, limit, |k| k.id))
}

/// Revokes a key; it stops working on the next request. Revoking twice is a no-op.
pub async fn revoke_api_key(conn: &mut PgConnection, org_id: OrgId, id: ApiKeyId) -> Result<ApiKey> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE org_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("api key"))
}

/// Resolves a presented key to its org, or `None` when the key is unknown,
/// revoked, expired or its org disabled. Marks the key used (at most once a
/// minute) and counts the request against the key's rate limit
/// ([`Error::TooMany`] once it is reached).
///
/// Runs before the org is known, so its transaction names the one lookup id it
/// may read (row-level security policy `key_lookup`); the full hash is then
/// compared in constant time.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<KeyCheck>> {
    if validate_key_format(presented).is_err() {
        return Ok(None);
    }
    let hash = key_hash(presented);
    let lookup = lookup_id(&hash);
    // The lookup id is 16 hex digits, so it can ride in the BEGIN (one round trip).
    let begin = format!("BEGIN; SELECT set_config('turnstone.key_lookup', '{lookup}', true)");
    let mut tx = pool.begin_with(sqlx::AssertSqlSafe(begin)).await?;
    #[allow(clippy::type_complexity)]
    let row: Option<(ApiKeyId, OrgId, Vec<u8>, bool, i32, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT k.id, k.org_id, k.secret_hash, k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute',
                o.rate_limit_per_minute, k.expires_at
           FROM api_keys k JOIN orgs o ON o.id = k.org_id
          WHERE k.lookup_id = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
            AND NOT o.disabled",
    )
    .bind(&lookup)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((key_id, org_id, stored, stale_use, rate_limit, expires_at)) = row else { return Ok(None) };
    if !bool::from(stored.as_slice().ct_eq(&hash[..])) {
        return Ok(None);
    }
    if stale_use || rate_limit > 0 {
        crate::db::enter_org(&mut tx, org_id).await?;
        if stale_use {
            sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1").bind(key_id).execute(&mut *tx).await?;
        }
        crate::quotas::count_request(&mut tx, org_id, key_id, rate_limit, Utc::now()).await?;
        tx.commit().await?;
    }
    Ok(Some(KeyCheck { principal: Principal { org_id, key_id }, expires_at, rate_limit }))
}

/// Counts one request of a key whose check came from a cache (see [`KeyCheck`]):
/// the rate limit holds whether or not the key was looked up again.
pub async fn count_checked(pool: &PgPool, check: &KeyCheck) -> Result<()> {
    if check.rate_limit == 0 {
        return Ok(());
    }
    let Principal { org_id, key_id } = check.principal;
    let mut tx = crate::db::begin_org(pool, org_id).await?;
    crate::quotas::count_request(&mut tx, org_id, key_id, check.rate_limit, Utc::now()).await?;
    tx.commit().await?;
    Ok(())
}

/// A key that passed [`authenticate`], with what a cache of checked keys needs.
#[derive(Debug, Clone, Copy)]
pub struct KeyCheck {
    pub principal: Principal,
    /// The key's own expiry: a cached check ends with it.
    pub expires_at: Option<DateTime<Utc>>,
    /// The org's per-key requests per minute (0 = unlimited): a cached check
    /// still counts every request ([`count_checked`]).
    pub rate_limit: i32,
}

/// NOTIFY channel announcing that a key was revoked or changed, or an org
/// disabled or its rate limit changed (triggers of migration 0006): cached key checks are void.
pub const AUTH_CHANNEL: &str = "turnstone_auth";

/// Whether an authenticated key is still usable (not revoked or expired, org
/// not disabled) — for long-lived requests such as SSE streams.
pub async fn key_active(pool: &PgPool, p: Principal) -> Result<bool> {
    let mut tx = crate::db::begin_org(pool, p.org_id).await?;
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_keys k JOIN orgs o ON o.id = k.org_id
          WHERE k.org_id = $1 AND k.id = $2 AND k.revoked_at IS NULL
            AND (k.expires_at IS NULL OR k.expires_at > now()) AND NOT o.disabled)",
    )
    .bind(p.org_id)
    .bind(p.key_id)
    .fetch_one(&mut *tx)
    .await?)
}

/// What the first start needs to make the quickstart work without setup calls.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `TURNSTONE_BOOTSTRAP_API_KEY`: this exact key is ensured for the default org.
    pub api_key: Option<Secret>,
    /// Base URL of the default provider (`OPENAI_BASE_URL` or the simulator).
    pub provider_base_url: String,
    /// `OPENAI_API_KEY`, encrypted at rest.
    pub provider_api_key: Option<Secret>,
    /// The upstream model name of the default model.
    pub model_name: String,
}

/// What bootstrap did.
#[derive(Debug)]
pub struct BootstrapOutcome {
    pub org_id: OrgId,
    /// A key generated because none was configured; print it once.
    pub generated_key: Option<Secret>,
}

/// Creates the default org and its key on first start, and on every start points
/// the org's provider named `default` (and its default model) at the configured
/// endpoint, so changing `OPENAI_BASE_URL`/`OPENAI_API_KEY` takes effect on restart.
/// Serialised across API processes by an advisory lock; idempotent afterwards.
pub async fn bootstrap(pool: &PgPool, keys: &KeyRing, cfg: &Bootstrap) -> Result<BootstrapOutcome> {
    let mut lock = pool.acquire().await?;
    // Arbitrary constant: "turnstone bootstrap".
    sqlx::query("SELECT pg_advisory_lock(7236354)").execute(&mut *lock).await?;
    let result = bootstrap_locked(pool, keys, cfg).await;
    sqlx::query("SELECT pg_advisory_unlock(7236354)").execute(&mut *lock).await?;
    result
}

async fn bootstrap_locked(pool: &PgPool, keys: &KeyRing, cfg: &Bootstrap) -> Result<BootstrapOutcome> {
    let existing: Option<OrgId> =
        sqlx::query_scalar("SELECT id FROM orgs ORDER BY created_at, id LIMIT 1").fetch_optional(pool).await?;
    let first_start = existing.is_none();
    let org_id = match existing {
        Some(id) => id,
        None => create_org(pool, "default").await?.id,
    };
    let mut generated_key = None;
    match &cfg.api_key {
        Some(key) => {
            let hash = key_hash(key.expose_secret());
            let mut tx = crate::db::begin_org(pool, org_id).await?;
            sqlx::query("SELECT set_config('turnstone.key_lookup', $1, true)").bind(lookup_id(&hash)).execute(&mut *tx).await?;
            let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE lookup_id = $1)")
                .bind(lookup_id(&hash))
                .fetch_one(&mut *tx)
                .await?;
            if !known {
                insert_api_key(&mut tx, org_id, key, "bootstrap", None).await?;
            }
            tx.commit().await?;
        }
        None if first_start => {
            let key = generate_api_key();
            let mut tx = crate::db::begin_org(pool, org_id).await?;
            insert_api_key(&mut tx, org_id, &key, "bootstrap", None).await?;
            tx.commit().await?;
            generated_key = Some(key);
        }
        None => {}
    }
    sync_default_provider(pool, keys, org_id, cfg).await?;
    Ok(BootstrapOutcome { org_id, generated_key })
}

/// Upserts the default org's `default` provider from the environment; makes sure
/// the org has a default model, renaming it when it belongs to that provider.
async fn sync_default_provider(pool: &PgPool, keys: &KeyRing, org_id: OrgId, cfg: &Bootstrap) -> Result<()> {
    let mut tx = crate::db::begin_org(pool, org_id).await?;
    let existing: Option<ProviderId> = sqlx::query_scalar("SELECT id FROM providers WHERE org_id = $1 AND name = 'default'")
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    let provider_id = match existing {
        Some(id) => {
            providers::update_provider_endpoint(&mut tx, keys, org_id, id, &cfg.provider_base_url, cfg.provider_api_key.as_ref())
                .await?;
            id
        }
        None => {
            providers::create_provider(&mut tx, keys, org_id, "default", &cfg.provider_base_url, cfg.provider_api_key.as_ref())
                .await?
        }
    };
    // The operator's URL: the outbound guard trusts it (`OPENAI_BASE_URL` may be a local server).
    sqlx::query("UPDATE providers SET operator_managed = true WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(provider_id)
        .execute(&mut *tx)
        .await?;
    let default_model: Option<(ModelId, ProviderId)> =
        sqlx::query_as("SELECT id, provider_id FROM models WHERE org_id = $1 AND is_default")
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?;
    match default_model {
        None => {
            providers::create_model(&mut tx, org_id, provider_id, &cfg.model_name, true).await?;
        }
        Some((model_id, p)) if p == provider_id => {
            sqlx::query("UPDATE models SET name = $3 WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(model_id)
                .bind(&cfg.model_name)
                .execute(&mut *tx)
                .await?;
        }
        Some(_) => {}
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_recognisable_and_valid() {
        let k = generate_api_key();
        assert!(k.expose_secret().starts_with("ts_live_"));
        validate_key_format(k.expose_secret()).unwrap();
        assert!(validate_key_format("sk-abc").is_err());
        assert_eq!(lookup_id(&key_hash(k.expose_secret())).len(), 16);
    }
}
