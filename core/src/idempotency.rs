//! `Idempotency-Key` support: the first response to a keyed POST is stored in
//! the same transaction as the change it describes, and replayed for retries.

use crate::error::{Error, Result};
use crate::limits;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// A stored first response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub fingerprint: String,
    pub status: u16,
    pub response: Value,
}

pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > limits::MAX_IDEMPOTENCY_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1-{} visible ASCII characters", limits::MAX_IDEMPOTENCY_KEY_CHARS),
        ));
    }
    Ok(())
}

pub async fn lookup(conn: &mut PgConnection, org_id: Uuid, key: &str) -> Result<Option<Stored>> {
    let row: Option<(String, i32, Value)> =
        sqlx::query_as("SELECT fingerprint, status, response FROM idempotency_keys WHERE org_id = $1 AND key = $2")
            .bind(org_id)
            .bind(key)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(fingerprint, status, response)| Stored { fingerprint, status: status as u16, response }))
}

/// Records the response in the caller's transaction. A concurrent request with
/// the same key makes this fail with a unique violation, and its transaction
/// (with the duplicate change) rolls back.
pub async fn record(
    tx: &mut PgConnection,
    org_id: Uuid,
    key: &str,
    fingerprint: &str,
    status: u16,
    response: &Value,
) -> Result<()> {
    sqlx::query("INSERT INTO idempotency_keys (org_id, key, fingerprint, status, response) VALUES ($1, $2, $3, $4, $5)")
        .bind(org_id)
        .bind(key)
        .bind(fingerprint)
        .bind(i32::from(status))
        .bind(response)
        .execute(tx)
        .await?;
    Ok(())
}
