//! LLM providers (OpenAI-compatible endpoints with an encrypted key) and their models.

use crate::crypto::{KeyRing, Secret};
use crate::error::{Error, Result};
use crate::ids::{ModelId, OrgId, ProviderId, TypedId};
use crate::page::Page;
use crate::{keychain, validate};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

/// Associated-data purpose of a provider's sealed API key.
const API_KEY_PURPOSE: &str = "provider.api_key";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Provider {
    pub id: ProviderId,
    pub name: String,
    pub base_url: String,
    /// Whether a key is stored; the key itself never leaves the database unsealed.
    pub has_api_key: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Model {
    pub id: ModelId,
    pub provider_id: ProviderId,
    pub name: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// What a worker needs to call a model.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub model_id: ModelId,
    pub base_url: String,
    /// The operator configured this URL (`OPENAI_BASE_URL`): exempt from the outbound guard.
    pub operator_managed: bool,
    pub api_key: Option<Secret>,
    pub model_name: String,
}

const PROVIDER_COLUMNS: &str = "id, name, base_url, api_key_ciphertext IS NOT NULL AS has_api_key, created_at";

pub async fn create_provider(
    conn: &mut PgConnection,
    keys: &KeyRing,
    org_id: OrgId,
    name: &str,
    base_url: &str,
    api_key: Option<&Secret>,
) -> Result<ProviderId> {
    validate::name("name", name)?;
    validate::base_url(base_url)?;
    if let Some(k) = api_key {
        validate::header_secret("api_key", k.expose_secret())?;
    }
    let id = ProviderId::new();
    let sealed = match api_key {
        Some(k) => Some(keychain::seal(&mut *conn, keys, org_id, id.uuid(), API_KEY_PURPOSE, k.expose_secret()).await?),
        None => None,
    };
    let res = sqlx::query("INSERT INTO providers (id, org_id, name, base_url, api_key_ciphertext) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(org_id)
        .bind(name)
        .bind(base_url.trim_end_matches('/'))
        .bind(sealed)
        .execute(conn)
        .await
        .map_err(Error::from);
    match res {
        Err(e) if e.is_unique_violation() => {
            Err(Error::conflict("provider_name_taken", format!("a provider named {name:?} exists")))
        }
        other => other.map(|_| id),
    }
}

/// Points an existing provider at a new endpoint and key (re-sealed under the primary master key).
pub async fn update_provider_endpoint(
    conn: &mut PgConnection,
    keys: &KeyRing,
    org_id: OrgId,
    id: ProviderId,
    base_url: &str,
    api_key: Option<&Secret>,
) -> Result<()> {
    validate::base_url(base_url)?;
    let sealed = match api_key {
        Some(k) => Some(keychain::seal(&mut *conn, keys, org_id, id.uuid(), API_KEY_PURPOSE, k.expose_secret()).await?),
        None => None,
    };
    sqlx::query("UPDATE providers SET base_url = $3, api_key_ciphertext = $4 WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .bind(base_url.trim_end_matches('/'))
        .bind(sealed)
        .execute(conn)
        .await?;
    Ok(())
}

/// Changes to a provider. Moving `base_url` requires a new `api_key` (or
/// explicitly none), so a stored key is never sent to a host it was not given for.
#[derive(Debug, Default)]
pub struct ProviderUpdate {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// `Some(None)` removes the stored key.
    pub api_key: Option<Option<Secret>>,
}

pub async fn update_provider(
    conn: &mut PgConnection,
    keys: &KeyRing,
    org_id: OrgId,
    id: ProviderId,
    update: ProviderUpdate,
) -> Result<Provider> {
    let current = get_provider(&mut *conn, org_id, id).await?;
    if let Some(n) = &update.name {
        validate::name("name", n)?;
    }
    if let Some(u) = &update.base_url {
        validate::base_url(u)?;
        if current.has_api_key && u.trim_end_matches('/') != current.base_url && update.api_key.is_none() {
            return Err(Error::invalid(
                "api_key_required",
                "changing base_url needs api_key too (or null): a stored key is only sent where it was given for",
            ));
        }
    }
    let (set_key, sealed) = match &update.api_key {
        None => (false, None),
        Some(None) => (true, None),
        Some(Some(k)) => {
            validate::header_secret("api_key", k.expose_secret())?;
            (true, Some(keychain::seal(&mut *conn, keys, org_id, id.uuid(), API_KEY_PURPOSE, k.expose_secret()).await?))
        }
    };
    let res = sqlx::query(
        "UPDATE providers SET name = coalesce($3, name), base_url = coalesce($4, base_url),
                operator_managed = operator_managed AND $4::text IS NULL,
                api_key_ciphertext = CASE WHEN $5 THEN $6 ELSE api_key_ciphertext END
          WHERE org_id = $1 AND id = $2",
    )
    .bind(org_id)
    .bind(id)
    .bind(&update.name)
    .bind(update.base_url.as_deref().map(|u| u.trim_end_matches('/')))
    .bind(set_key)
    .bind(sealed)
    .execute(&mut *conn)
    .await
    .map_err(Error::from);
    match res {
        Err(e) if e.is_unique_violation() => {
            return Err(Error::conflict("provider_name_taken", "another provider has that name"));
        }
        other => other?,
    };
    get_provider(conn, org_id, id).await
}

/// Deletes a model no agent or session uses; the org's default model cannot be deleted.
pub async fn delete_model(conn: &mut PgConnection, org_id: OrgId, id: ModelId) -> Result<()> {
    let model = get_model(&mut *conn, org_id, id).await?;
    if model.is_default {
        return Err(Error::conflict("model_is_default", "make another model the default first"));
    }
    let res = sqlx::query("DELETE FROM models WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await
        .map_err(Error::from);
    match res {
        Err(e) if e.is_foreign_key_violation() => {
            Err(Error::conflict("model_in_use", "agents, sessions or turns still use this model"))
        }
        other => other.map(|_| ()),
    }
}

pub async fn get_provider(db: impl sqlx::PgExecutor<'_>, org_id: OrgId, id: ProviderId) -> Result<Provider> {
    sqlx::query_as(AssertSqlSafe(format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE org_id = $1 AND id = $2")))
        .bind(org_id)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("provider"))
}

pub async fn list_providers(
    conn: &mut PgConnection,
    org_id: OrgId,
    after: Option<ProviderId>,
    limit: u32,
) -> Result<Page<Provider, ProviderId>> {
    let rows: Vec<Provider> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE org_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(org_id)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, limit, |p| p.id))
}

/// Deletes a provider that no model uses; otherwise a 409.
pub async fn delete_provider(conn: &mut PgConnection, org_id: OrgId, id: ProviderId) -> Result<()> {
    let in_use: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM models WHERE org_id = $1 AND provider_id = $2)")
        .bind(org_id)
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    if in_use {
        return Err(Error::conflict("provider_in_use", "delete the provider's models first"));
    }
    let done = sqlx::query("DELETE FROM providers WHERE org_id = $1 AND id = $2").bind(org_id).bind(id).execute(conn).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("provider"));
    }
    Ok(())
}

pub async fn create_model(
    conn: &mut PgConnection,
    org_id: OrgId,
    provider_id: ProviderId,
    name: &str,
    is_default: bool,
) -> Result<ModelId> {
    validate::name("name", name)?;
    let mut tx = sqlx::Acquire::begin(conn).await?;
    let provider_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM providers WHERE org_id = $1 AND id = $2)")
        .bind(org_id)
        .bind(provider_id)
        .fetch_one(&mut *tx)
        .await?;
    if !provider_exists {
        return Err(Error::NotFound("provider"));
    }
    if is_default {
        sqlx::query("UPDATE models SET is_default = false WHERE org_id = $1 AND is_default")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
    }
    let id = ModelId::new();
    sqlx::query("INSERT INTO models (id, org_id, provider_id, name, is_default) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(org_id)
        .bind(provider_id)
        .bind(name)
        .bind(is_default)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn get_model(db: impl sqlx::PgExecutor<'_>, org_id: OrgId, id: ModelId) -> Result<Model> {
    sqlx::query_as("SELECT id, provider_id, name, is_default, created_at FROM models WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("model"))
}

pub async fn list_models(
    conn: &mut PgConnection,
    org_id: OrgId,
    after: Option<ModelId>,
    limit: u32,
) -> Result<Page<Model, ModelId>> {
    let rows: Vec<Model> = sqlx::query_as(
        "SELECT id, provider_id, name, is_default, created_at FROM models
          WHERE org_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(org_id)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, limit, |m| m.id))
}

/// Checks that a model id belongs to the org (used when agents and sessions reference one).
pub async fn ensure_model(conn: &mut PgConnection, org_id: OrgId, id: ModelId) -> Result<()> {
    let ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM models WHERE org_id = $1 AND id = $2)")
        .bind(org_id)
        .bind(id)
        .fetch_one(conn)
        .await?;
    if ok { Ok(()) } else { Err(Error::NotFound("model")) }
}

/// Resolves the model for a turn — explicit choice, else the org default — and
/// unseals its provider key.
pub async fn resolve_endpoint(
    conn: &mut PgConnection,
    keys: &KeyRing,
    org_id: OrgId,
    model_id: Option<ModelId>,
) -> Result<Endpoint> {
    stored_endpoint(conn, org_id, model_id).await?.ok_or_else(no_model)?.open(keys, org_id)
}

/// The error of a turn with no model to call.
pub fn no_model() -> Error {
    Error::invalid("no_model", "no model given on the session or agent, and the org has no default model")
}

/// A turn's model and provider as stored, its key still sealed: read with the
/// turn's context (no transaction of its own), opened when the model is called.
#[derive(Debug, Clone)]
pub struct StoredEndpoint {
    pub model_id: ModelId,
    pub model_name: String,
    pub base_url: String,
    pub operator_managed: bool,
    api_key: Option<keychain::SealedSecret>,
}

impl StoredEndpoint {
    /// Unseals the provider key (no database access).
    pub fn open(&self, keys: &KeyRing, org_id: OrgId) -> Result<Endpoint> {
        let api_key = self.api_key.as_ref().map(|k| k.open(keys, org_id, API_KEY_PURPOSE)).transpose()?;
        Ok(Endpoint {
            model_id: self.model_id,
            base_url: self.base_url.clone(),
            operator_managed: self.operator_managed,
            api_key,
            model_name: self.model_name.clone(),
        })
    }
}

/// Reads the model for a turn — explicit choice, else the org default — its
/// provider and the data key its provider key is sealed under; `None` when there is no such model.
pub async fn stored_endpoint(
    conn: &mut PgConnection,
    org_id: OrgId,
    model_id: Option<ModelId>,
) -> Result<Option<StoredEndpoint>> {
    type Row = (ModelId, String, Uuid, String, Option<Vec<u8>>, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT m.id, m.name, p.id, p.base_url, p.api_key_ciphertext, p.operator_managed
           FROM models m JOIN providers p ON p.id = m.provider_id AND p.org_id = m.org_id
          WHERE m.org_id = $1 AND (m.id = $2 OR ($2::uuid IS NULL AND m.is_default))",
    )
    .bind(org_id)
    .bind(model_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((model_id, model_name, provider_id, base_url, sealed, operator_managed)) = row else { return Ok(None) };
    let api_key = match sealed {
        Some(s) => Some(keychain::fetch(conn, org_id, provider_id, s).await?),
        None => None,
    };
    Ok(Some(StoredEndpoint { model_id, model_name, base_url, operator_managed, api_key }))
}

/// Re-seals every provider key of the org under `fresh` (org key rotation).
pub async fn reseal_all(conn: &mut PgConnection, keys: &KeyRing, org_id: OrgId, fresh: &crate::crypto::DataKey) -> Result<u64> {
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, api_key_ciphertext FROM providers WHERE org_id = $1 AND api_key_ciphertext IS NOT NULL FOR UPDATE",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    for (id, sealed) in &rows {
        let plain = keychain::open(&mut *conn, keys, org_id, *id, API_KEY_PURPOSE, sealed).await?;
        let resealed = fresh.seal(org_id, *id, API_KEY_PURPOSE, plain.expose_secret())?;
        sqlx::query("UPDATE providers SET api_key_ciphertext = $3 WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .bind(resealed)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows.len() as u64)
}
