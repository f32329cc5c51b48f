//! The session key-value store (`/v1/sessions/{id}/kv`): JSON values with
//! versions (`ETag: "<version>"`), preconditions and expiry.

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::storage::files::Precondition;
use turnstone_core::storage::{By, Writer, kv};
use turnstone_core::{db, limits};

use super::Tag;
use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::text::Text;
use crate::wire::rules::{self, Id};
use crate::wire::{KvDeleted, KvEntry, KvList, KvSet, PageLimit};

pub struct KvApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum KvWritten {
    /// The key was created (or had expired).
    #[oai(status = 201)]
    Created(Json<KvEntry>, #[oai(header = "ETag")] String),
    /// The key's value was replaced.
    #[oai(status = 200)]
    Replaced(Json<KvEntry>, #[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
enum KvRead {
    #[oai(status = 200)]
    Found(Json<KvEntry>, #[oai(header = "ETag")] String),
}

/// The version an `If-Match` names: `"<version>"` (quotes optional).
fn if_match_version(value: Option<&Text>) -> Result<Option<i64>, ApiError> {
    let Some(v) = value.map(|v| v.0.trim()) else { return Ok(None) };
    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    v.parse::<i64>().ok().filter(|n| *n >= 1).map(Some).ok_or_else(|| {
        ApiError::bad_request("invalid_precondition", "If-Match must name one version, as the ETag header gave it")
    })
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Kv")]
impl KvApi {
    /// Set a key. `If-Match: "<version>"` changes only that version;
    /// `If-None-Match: *` only creates (412 `precondition_failed` otherwise).
    #[oai(path = "/sessions/:session_id/kv/:key", method = "put", operation_id = "setKey")]
    async fn set(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        key: Path<rules::KvKey>,
        body: Json<KvSet>,
        #[oai(name = "If-Match")] if_match: Header<Option<Text>>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<Text>>,
    ) -> Result<KvWritten, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let absent = match if_none_match.0.as_ref().map(|v| v.0.trim()) {
            None => false,
            Some("*") => true,
            Some(_) => return Err(ApiError::bad_request("invalid_precondition", "on a write, If-None-Match may only be *")),
        };
        let pre = match (if_match_version(if_match.0.as_ref())?, absent) {
            (Some(_), true) => {
                return Err(ApiError::bad_request("invalid_precondition", "send If-Match or If-None-Match, not both"));
            }
            (Some(v), false) => Precondition::Matches(v),
            (None, true) => Precondition::Absent,
            (None, false) => Precondition::None,
        };
        let ttl = body.0.ttl_secs.map(i64::from);
        let mut c = db::autocommit(&self.state.pool).await?;
        let w = kv::set(&mut c, Writer { org_id: org, session_id: session, by: By::Api }, &key.0.0.0, &body.0.value, ttl, &pre)
            .await?;
        c.commit().await?;
        let tag = etag(w.value.version);
        Ok(if w.created { KvWritten::Created(Json(w.value.into()), tag) } else { KvWritten::Replaced(Json(w.value.into()), tag) })
    }

    /// Get a key's value and version. An expired key is 404.
    #[oai(path = "/sessions/:session_id/kv/:key", method = "get", operation_id = "getKey")]
    async fn get(&self, auth: ApiKey, session_id: Path<Id<rules::Session>>, key: Path<rules::KvKey>) -> Result<KvRead, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let entry = kv::get(&mut *self.state.org_tx(org).await?, org, session, &key.0.0.0).await?;
        let tag = etag(entry.version);
        Ok(KvRead::Found(Json(entry.into()), tag))
    }

    /// Delete a key, optionally only the version `If-Match` names.
    #[oai(path = "/sessions/:session_id/kv/:key", method = "delete", operation_id = "deleteKey")]
    async fn delete(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        key: Path<rules::KvKey>,
        #[oai(name = "If-Match")] if_match: Header<Option<Text>>,
    ) -> Result<Json<KvDeleted>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let version = if_match_version(if_match.0.as_ref())?;
        let mut c = db::autocommit(&self.state.pool).await?;
        let w = kv::delete(&mut c, Writer { org_id: org, session_id: session, by: By::Api }, &key.0.0.0, version).await?;
        c.commit().await?;
        Ok(Json(KvDeleted { key: key.0.0.0.clone(), version: w.value }))
    }

    /// List live keys with their values, by key.
    #[oai(path = "/sessions/:session_id/kv", method = "get", operation_id = "listKeys")]
    async fn list(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// Only keys starting with this.
        prefix: Query<Option<rules::KvPrefix>>,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page (a key).
        after: Query<Option<rules::KvKey>>,
    ) -> Result<Json<KvList>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let limit = super::page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let prefix = prefix.0.as_ref().map_or("", |p| p.0.0.as_str());
        let after = after.0.as_ref().map(|a| a.0.0.as_str());
        if let Some(a) = after {
            turnstone_core::storage::validate_key(a)?;
        }
        let (entries, more) = kv::list(&mut *self.state.org_tx(org).await?, org, session, prefix, after, limit).await?;
        let next = if more { entries.last().map(|e| e.key.clone()) } else { None };
        Ok(Json(KvList { data: entries.into_iter().map(Into::into).collect(), next_cursor: next.into() }))
    }
}
