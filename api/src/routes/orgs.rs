//! Organisations (operator token) and an org's own API keys (org key).

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::crypto::Secret;
use turnstone_core::ids::{OrgId, TypedId};
use turnstone_core::{db, limits, orgs};

use super::{Tag, page_limit};
use crate::AppState;
use crate::auth::{ApiKey as OrgKey, Operator};
use crate::error::ApiError;
use crate::idempotency::create_once;
use crate::wire::rules::{self, Id};
use crate::wire::{
    ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyList, IdempotencyKey, Org, OrgCreate, OrgList, OrgUpdate, PageLimit,
};

pub struct OrgsApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum OrgCreated {
    #[oai(status = 201)]
    Created(Json<Org>),
}

#[derive(ApiResponse)]
enum KeyCreated {
    /// The key, shown once.
    #[oai(status = 201)]
    Created(Json<ApiKeyCreated>),
}

/// Issues a key for `org_id` in the caller's org-scoped transaction.
async fn issue_key(conn: &mut sqlx::PgConnection, org_id: OrgId, body: ApiKeyCreate) -> Result<ApiKeyCreated, ApiError> {
    let secret: Secret = orgs::generate_api_key();
    let k = orgs::insert_api_key(conn, org_id, &secret, &body.name, body.expires_at).await?;
    Ok(ApiKeyCreated {
        id: k.id.wire(),
        key: Some(secret.expose_secret().to_owned()).into(),
        name: k.name,
        display_prefix: k.display_prefix,
        created_at: k.created_at,
        expires_at: k.expires_at.into(),
    })
}

#[OpenApi(prefix_path = "/v1")]
impl OrgsApi {
    /// Create an organisation (operator).
    #[oai(path = "/orgs", method = "post", operation_id = "createOrg", tag = "Tag::Orgs")]
    async fn create_org(&self, _op: Operator, body: Json<OrgCreate>) -> Result<OrgCreated, ApiError> {
        Ok(OrgCreated::Created(Json(orgs::create_org(&self.state.pool, &body.0.name).await?.into())))
    }

    /// List organisations, newest first (operator).
    #[oai(path = "/orgs", method = "get", operation_id = "listOrgs", tag = "Tag::Orgs")]
    async fn list_orgs(
        &self,
        _op: Operator,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::Org>>>,
    ) -> Result<Json<OrgList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let page = orgs::list_orgs(&self.state.pool, after, limit).await?;
        Ok(Json(OrgList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Get one organisation (operator).
    #[oai(path = "/orgs/:org_id", method = "get", operation_id = "getOrg", tag = "Tag::Orgs")]
    async fn get_org(&self, _op: Operator, org_id: Path<Id<rules::Org>>) -> Result<Json<Org>, ApiError> {
        let id = org_id.0.id()?;
        Ok(Json(orgs::get_org(&self.state.pool, id).await?.into()))
    }

    /// Rename, disable or re-size an organisation (operator). Disabling stops all its keys at once.
    #[oai(path = "/orgs/:org_id", method = "patch", operation_id = "updateOrg", tag = "Tag::Orgs")]
    async fn update_org(
        &self,
        _op: Operator,
        org_id: Path<Id<rules::Org>>,
        body: Json<OrgUpdate>,
    ) -> Result<Json<Org>, ApiError> {
        let id = org_id.0.id()?;
        let b = body.0;
        let update = orgs::OrgUpdate {
            name: b.name.map(Into::into),
            disabled: b.disabled,
            max_agents: b.max_agents,
            max_sessions: b.max_sessions,
            max_concurrent_turns: b.max_concurrent_turns,
            rate_limit_per_minute: b.rate_limit_per_minute,
            max_file_bytes: b.max_file_bytes,
            max_session_bytes: b.max_session_bytes,
            max_session_files: b.max_session_files,
            max_session_keys: b.max_session_keys,
            max_storage_bytes: b.max_storage_bytes,
        };
        let org = orgs::update_org(&self.state.pool, id, &update).await?;
        // Other API processes hear it on `turnstone_auth`; this one need not wait for that.
        self.state.auth_cache.invalidate();
        Ok(Json(org.into()))
    }

    /// Issue an API key for an organisation (operator); the key is shown once.
    #[oai(path = "/orgs/:org_id/api-keys", method = "post", operation_id = "createOrgApiKey", tag = "Tag::Orgs")]
    async fn create_org_key(
        &self,
        _op: Operator,
        org_id: Path<Id<rules::Org>>,
        body: Json<ApiKeyCreate>,
    ) -> Result<KeyCreated, ApiError> {
        let id = org_id.0.id()?;
        orgs::get_org(&self.state.pool, id).await?;
        let mut tx = db::begin_org(&self.state.pool, id).await?;
        let created = issue_key(&mut tx, id, body.0).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(KeyCreated::Created(Json(created)))
    }

    /// List this org's API keys (never the secrets).
    #[oai(path = "/api-keys", method = "get", operation_id = "listApiKeys", tag = "Tag::ApiKeys")]
    async fn list_keys(
        &self,
        auth: OrgKey,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::ApiKey>>>,
    ) -> Result<Json<ApiKeyList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let page = orgs::list_api_keys(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, after, limit).await?;
        Ok(Json(ApiKeyList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Create another API key for this org, optionally named and expiring; shown once.
    #[oai(path = "/api-keys", method = "post", operation_id = "createApiKey", tag = "Tag::ApiKeys")]
    async fn create_key(
        &self,
        auth: OrgKey,
        body: Json<ApiKeyCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<KeyCreated, ApiError> {
        let org = auth.0.org_id;
        let request = format!("createApiKey:{}", body.0.to_json_string());
        let created = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move { issue_key(c, org, body.0).await })
        })
        .await?;
        Ok(KeyCreated::Created(Json(created)))
    }

    /// Revoke an API key of this org; it stops working on the next request.
    #[oai(path = "/api-keys/:key_id", method = "delete", operation_id = "revokeApiKey", tag = "Tag::ApiKeys")]
    async fn revoke_key(&self, auth: OrgKey, key_id: Path<Id<rules::ApiKey>>) -> Result<Json<ApiKey>, ApiError> {
        let id = key_id.0.id()?;
        let mut tx = self.state.org_tx(auth.0.org_id).await?;
        let key = orgs::revoke_api_key(&mut tx, auth.0.org_id, id).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        // "Stops working on the next request": other processes hear `turnstone_auth`.
        self.state.auth_cache.invalidate();
        Ok(Json(key.into()))
    }
}
