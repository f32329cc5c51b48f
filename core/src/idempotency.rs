//! `Idempotency-Key` support: the first response to a keyed POST is stored in
//! the same transaction as the change it describes, and replayed for retries
//! for [`RETENTION_HOURS`]; after that the key may be used afresh, and expired
//! records are swept by later writes of the same org.

use crate::error::{Error, Result};
use crate::ids::OrgId;
use crate::limits;
use serde_json::Value;
use sqlx::PgConnection;

/// A stored first response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub fingerprint: String,
    pub status: u16,
    pub response: Value,
}

/// How long a key's first response is replayed.
pub const RETENTION_HOURS: i32 = 24;

pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > limits::MAX_IDEMPOTENCY_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1-{} visible ASCII characters", limits::MAX_IDEMPOTENCY_KEY_CHARS),
        ));
    }
    Ok(())
}

pub async fn lookup(conn: &mut PgConnection, org_id: OrgId, key: &str) -> Result<Option<Stored>> {
    let row: Option<(String, i32, Value)> = sqlx::query_as(
        "SELECT fingerprint, status, response FROM idempotency_keys
              WHERE org_id = $1 AND key = $2 AND created_at > now() - make_interval(hours => $3)",
    )
    .bind(org_id)
    .bind(key)
    .bind(RETENTION_HOURS)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(fingerprint, status, response)| Stored { fingerprint, status: status as u16, response }))
}

/// Records the response in the caller's transaction. Returns `false` when a
/// live record of the key exists (a concurrent first use won): the caller then
/// rolls its transaction back, with its duplicate change, and replays.
pub async fn record(
    tx: &mut PgConnection,
    org_id: OrgId,
    key: &str,
    fingerprint: &str,
    status: u16,
    response: &Value,
) -> Result<bool> {
    // An expired record of the same key is replaced; a live one makes this a
    // unique violation (a concurrent first use), as the caller expects.
    let stored = sqlx::query(
        "INSERT INTO idempotency_keys (org_id, key, fingerprint, status, response) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (org_id, key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, response = EXCLUDED.response, created_at = now()
          WHERE idempotency_keys.created_at <= now() - make_interval(hours => $6)",
    )
    .bind(org_id)
    .bind(key)
    .bind(fingerprint)
    .bind(i32::from(status))
    .bind(response)
    .bind(RETENTION_HOURS)
    .execute(&mut *tx)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(false);
    }
    // Sweep a few expired records of this org (bounded work per write).
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM idempotency_keys
             WHERE org_id = $1 AND created_at <= now() - make_interval(hours => $2) LIMIT 16))",
    )
    .bind(org_id)
    .bind(RETENTION_HOURS)
    .execute(tx)
    .await?;
    Ok(true)
}
