//! Organisations, API keys and the first-start bootstrap of the default org.
//!
//! An API key looks like `ts_live_<40 base62>`. Only its SHA-256 is stored; the
//! first 16 hex digits of that hash are the indexed `lookup_id`, and the full
//! hash is compared in constant time after lookup.

use crate::crypto::{KeyRing, Secret};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::providers;
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every Turnstone API key starts with this, so leak scanners can find them.
pub const KEY_PREFIX: &str = "ts_";

/// The caller an API key resolves to.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub org_id: Uuid,
    pub key_id: Uuid,
}

/// A new random API key (shown once, never stored).
pub fn generate_api_key() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    Secret::new(format!("{KEY_PREFIX}live_{body}"))
}

fn key_hash(key: &str) -> [u8; 32] {
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

pub async fn create_org(pool: &PgPool, name: &str) -> Result<Uuid> {
    let id = new_id();
    sqlx::query("INSERT INTO orgs (id, name) VALUES ($1, $2)").bind(id).bind(name).execute(pool).await?;
    Ok(id)
}

/// Stores an API key for `org_id`; returns the key row id.
pub async fn insert_api_key(pool: &PgPool, org_id: Uuid, key: &Secret, name: &str) -> Result<Uuid> {
    validate_key_format(key.expose())?;
    let hash = key_hash(key.expose());
    let id = new_id();
    sqlx::query("INSERT INTO api_keys (id, org_id, lookup_id, secret_hash, name) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(org_id)
        .bind(lookup_id(&hash))
        .bind(&hash[..])
        .bind(name)
        .execute(pool)
        .await?;
    Ok(id)
}

/// Resolves a presented key to its org, or `None` when the key is unknown,
/// revoked, expired or its org disabled. Marks the key used (at most once a minute).
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<Principal>> {
    if validate_key_format(presented).is_err() {
        return Ok(None);
    }
    let hash = key_hash(presented);
    let row: Option<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT k.id, k.org_id, k.secret_hash FROM api_keys k JOIN orgs o ON o.id = k.org_id
          WHERE k.lookup_id = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
            AND NOT o.disabled",
    )
    .bind(lookup_id(&hash))
    .fetch_optional(pool)
    .await?;
    let Some((key_id, org_id, stored)) = row else { return Ok(None) };
    if !bool::from(stored.as_slice().ct_eq(&hash[..])) {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(key_id)
    .execute(pool)
    .await?;
    Ok(Some(Principal { org_id, key_id }))
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
    pub org_id: Uuid,
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
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orgs ORDER BY created_at, id LIMIT 1").fetch_optional(pool).await?;
    let first_start = existing.is_none();
    let org_id = match existing {
        Some(id) => id,
        None => create_org(pool, "default").await?,
    };
    let mut generated_key = None;
    match &cfg.api_key {
        Some(key) => {
            let hash = key_hash(key.expose());
            let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE lookup_id = $1)")
                .bind(lookup_id(&hash))
                .fetch_one(pool)
                .await?;
            if !known {
                insert_api_key(pool, org_id, key, "bootstrap").await?;
            }
        }
        None if first_start => {
            let key = generate_api_key();
            insert_api_key(pool, org_id, &key, "bootstrap").await?;
            generated_key = Some(key);
        }
        None => {}
    }
    sync_default_provider(pool, keys, org_id, cfg).await?;
    Ok(BootstrapOutcome { org_id, generated_key })
}

/// Upserts the default org's `default` provider from the environment; makes sure
/// the org has a default model, renaming it when it belongs to that provider.
async fn sync_default_provider(pool: &PgPool, keys: &KeyRing, org_id: Uuid, cfg: &Bootstrap) -> Result<()> {
    let mut tx = pool.begin().await?;
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM providers WHERE org_id = $1 AND name = 'default'")
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    let provider_id = match existing {
        Some(id) => {
            providers::update_provider_endpoint(&mut tx, keys, org_id, id, &cfg.provider_base_url, cfg.provider_api_key.as_ref()).await?;
            id
        }
        None => providers::create_provider(&mut tx, keys, org_id, "default", &cfg.provider_base_url, cfg.provider_api_key.as_ref()).await?,
    };
    let default_model: Option<(Uuid, Uuid)> = sqlx::query_as("SELECT id, provider_id FROM models WHERE org_id = $1 AND is_default")
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    match default_model {
        None => {
            providers::create_model(&mut tx, org_id, provider_id, &cfg.model_name, true).await?;
        }
        Some((model_id, p)) if p == provider_id => {
            sqlx::query("UPDATE models SET name = $3 WHERE org_id = $1 AND id = $2").bind(org_id).bind(model_id).bind(&cfg.model_name).execute(&mut *tx).await?;
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
        assert!(k.expose().starts_with("ts_live_"));
        validate_key_format(k.expose()).unwrap();
        assert!(validate_key_format("sk-abc").is_err());
        assert_eq!(lookup_id(&key_hash(k.expose())).len(), 16);
    }
}
