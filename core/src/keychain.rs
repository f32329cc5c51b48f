//! The org key chain: master key → per-org data key → secret.
//!
//! Secrets are sealed under their org's active data key (DEK); DEKs are stored
//! only wrapped under a master key. A stolen database dump therefore yields no
//! secret without `TURNSTONE_MASTER_KEY`, and a ciphertext moved to another row
//! or org fails to open. Every function runs in the caller's org-scoped
//! transaction, except the rotations, which walk all orgs.

use crate::ids::OrgId;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::crypto::{DataKey, KeyRing, Secret, sealed_data_key_id};
use crate::db;
use crate::error::{Error, Result};

/// The org's active data key, created on first use.
pub async fn active_key(conn: &mut PgConnection, ring: &KeyRing, org_id: OrgId) -> Result<DataKey> {
    let row: Option<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT id, wrapped_key FROM org_keys WHERE org_id = $1 AND retired_at IS NULL")
            .bind(org_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((id, wrapped)) = row {
        return DataKey::unwrap(ring, org_id, id, &wrapped);
    }
    let (key, master_key_id, wrapped) = DataKey::generate(ring, org_id)?;
    sqlx::query("INSERT INTO org_keys (id, org_id, master_key_id, wrapped_key) VALUES ($1, $2, $3, $4)")
        .bind(key.id)
        .bind(org_id)
        .bind(master_key_id)
        .bind(wrapped)
        .execute(conn)
        .await?;
    Ok(key)
}

/// Seals a secret of row `(org_id, row_id)` under the org's active data key.
pub async fn seal(
    conn: &mut PgConnection,
    ring: &KeyRing,
    org_id: OrgId,
    row_id: Uuid,
    purpose: &str,
    plaintext: &str,
) -> Result<Vec<u8>> {
    active_key(conn, ring, org_id).await?.seal(org_id, row_id, purpose, plaintext)
}

/// Opens a secret with the (possibly retired) data key it names.
pub async fn open(
    conn: &mut PgConnection,
    ring: &KeyRing,
    org_id: OrgId,
    row_id: Uuid,
    purpose: &str,
    sealed: &[u8],
) -> Result<Secret> {
    fetch(conn, org_id, row_id, sealed.to_vec()).await?.open(ring, org_id, purpose)
}

/// A sealed secret and the wrapped data key it names, read in one go so that
/// it can be opened later without the database (a worker reads it with a
/// turn's context and opens it when it calls the model).
#[derive(Debug, Clone)]
pub struct SealedSecret {
    row_id: Uuid,
    sealed: Vec<u8>,
    /// `None`: the ciphertext names no data key this org has; opening fails.
    key: Option<(Uuid, Vec<u8>)>,
}

/// Reads the data key `sealed` names. A missing or unreadable key is not an
/// error here: [`SealedSecret::open`] reports it.
pub async fn fetch(conn: &mut PgConnection, org_id: OrgId, row_id: Uuid, sealed: Vec<u8>) -> Result<SealedSecret> {
    let key = match sealed_data_key_id(&sealed) {
        Ok(id) => sqlx::query_scalar("SELECT wrapped_key FROM org_keys WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(conn)
            .await?
            .map(|wrapped: Vec<u8>| (id, wrapped)),
        Err(_) => None,
    };
    Ok(SealedSecret { row_id, sealed, key })
}

impl SealedSecret {
    /// Unwraps the data key with the master key ring and opens the secret.
    pub fn open(&self, ring: &KeyRing, org_id: OrgId, purpose: &str) -> Result<Secret> {
        sealed_data_key_id(&self.sealed)?;
        let (id, wrapped) = self.key.as_ref().ok_or(Error::Crypto("the data key this secret names is missing"))?;
        DataKey::unwrap(ring, org_id, *id, wrapped)?.open(org_id, self.row_id, purpose, &self.sealed)
    }
}

/// Progress of a rotation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    pub orgs: u64,
    pub keys: u64,
    pub secrets: u64,
}

async fn org_ids(pool: &PgPool) -> Result<Vec<OrgId>> {
    Ok(sqlx::query_scalar("SELECT id FROM orgs ORDER BY id").fetch_all(pool).await?)
}

/// Re-wraps every data key not yet wrapped under the ring's primary master key.
/// Online (one short transaction per key) and resumable (keys already on the
/// primary are skipped). Both the old and new master keys must be configured.
pub async fn rotate_master_key(pool: &PgPool, ring: &KeyRing) -> Result<Rotated> {
    let mut done = Rotated::default();
    for org_id in org_ids(pool).await? {
        let mut tx = db::begin_org(pool, org_id).await?;
        let stale: Vec<(Uuid, Vec<u8>)> =
            sqlx::query_as("SELECT id, wrapped_key FROM org_keys WHERE org_id = $1 AND master_key_id <> $2 FOR UPDATE")
                .bind(org_id)
                .bind(ring.primary_id())
                .fetch_all(&mut *tx)
                .await?;
        if stale.is_empty() {
            continue;
        }
        for (id, wrapped) in &stale {
            let rewrapped = DataKey::rewrap(ring, org_id, *id, wrapped)?;
            sqlx::query("UPDATE org_keys SET wrapped_key = $3, master_key_id = $4 WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(id)
                .bind(rewrapped)
                .bind(ring.primary_id())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        done.orgs += 1;
        done.keys += stale.len() as u64;
    }
    Ok(done)
}

/// Gives an org a fresh data key, re-seals all its secrets under it, and
/// retires the old key — in one transaction, so a crash leaves either the old
/// state or the new one.
pub async fn rotate_org_key(pool: &PgPool, ring: &KeyRing, org_id: OrgId) -> Result<Rotated> {
    let mut tx = db::begin_org(pool, org_id).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)").bind(org_id).fetch_one(&mut *tx).await?;
    if !exists {
        return Err(Error::NotFound("org"));
    }
    let retired = sqlx::query("UPDATE org_keys SET retired_at = now() WHERE org_id = $1 AND retired_at IS NULL")
        .bind(org_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let fresh = active_key(&mut tx, ring, org_id).await?;
    let secrets = crate::providers::reseal_all(&mut tx, ring, org_id, &fresh).await?
        + crate::mcp::reseal_all(&mut tx, ring, org_id, &fresh).await?;
    tx.commit().await?;
    Ok(Rotated { orgs: 1, keys: retired, secrets })
}
