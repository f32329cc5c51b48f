//! `Idempotency-Key` on creating POSTs: the first response is stored in the same
//! transaction as the change, and a retry with the same key replays it.

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use turnstone_core::idempotency;
use turnstone_core::ids::OrgId;

use crate::AppState;
use crate::error::ApiError;

/// Runs `create` in a transaction; with a key, records its response there too,
/// or replays the response recorded for that key. `request` identifies the
/// operation and body: reusing a key for a different request is a 422.
pub async fn create_once<T, F>(
    state: &AppState,
    org_id: OrgId,
    key: Option<&str>,
    request: &str,
    create: F,
) -> Result<T, ApiError>
where
    T: Serialize + DeserializeOwned,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, ApiError>>,
{
    let Some(key) = key else {
        let mut tx = state.org_tx(org_id).await?;
        let out = create(&mut tx).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        return Ok(out);
    };
    idempotency::validate_key(key)?;
    let fingerprint = hex::encode(Sha256::digest(request.as_bytes()));
    if let Some(stored) = idempotency::lookup(&mut *state.org_tx(org_id).await?, org_id, key).await? {
        return replay(stored, &fingerprint);
    }
    let mut tx = state.org_tx(org_id).await?;
    let out = match create(&mut tx).await {
        Ok(out) => out,
        Err(e) => {
            // A concurrent first use of the key may have won while this one
            // waited (e.g. on the session's lock) and then failed against
            // its change (409 `already_resolved`): the retry replays the
            // first answer, as the key promises.
            drop(tx);
            return match idempotency::lookup(&mut *state.org_tx(org_id).await?, org_id, key).await? {
                Some(stored) => replay(stored, &fingerprint),
                None => Err(e),
            };
        }
    };
    let body = serde_json::to_value(&out).map_err(|_| ApiError::internal())?;
    if idempotency::record(&mut tx, org_id, key, &fingerprint, 200, &body).await? {
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        return Ok(out);
    }
    // A concurrent request with the same key won: drop our change, replay theirs.
    drop(tx);
    let stored = idempotency::lookup(&mut *state.org_tx(org_id).await?, org_id, key).await?.ok_or_else(ApiError::internal)?;
    replay(stored, &fingerprint)
}

fn replay<T: DeserializeOwned>(stored: idempotency::Stored, fingerprint: &str) -> Result<T, ApiError> {
    if stored.fingerprint != fingerprint {
        return Err(ApiError::new(
            poem::http::StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        ));
    }
    serde_json::from_value(stored.response).map_err(|_| ApiError::internal())
}
