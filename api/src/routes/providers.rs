//! Providers (`/v1/providers`) and models (`/v1/models`).

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::crypto::Secret;
use turnstone_core::ids::TypedId;
use turnstone_core::{limits, providers};

use super::{Tag, page_limit};
use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::idempotency::create_once;
use crate::wire::rules::{self, Id};
use crate::wire::{
    IdempotencyKey, Model, ModelCreate, ModelList, PageLimit, Provider, ProviderCreate, ProviderList, ProviderUpdate,
};

pub struct ProvidersApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum ProviderCreated {
    #[oai(status = 201)]
    Created(Json<Provider>),
}

#[derive(ApiResponse)]
enum ModelCreated {
    #[oai(status = 201)]
    Created(Json<Model>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Providers")]
impl ProvidersApi {
    /// Register an OpenAI-compatible provider. Its API key is encrypted at rest and never returned.
    #[oai(path = "/providers", method = "post", operation_id = "createProvider")]
    async fn create_provider(
        &self,
        auth: ApiKey,
        body: Json<ProviderCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<ProviderCreated, ApiError> {
        let org = auth.0.org_id;
        let state = self.state.clone();
        // The stored fingerprint must not be derived from the secret (a weak key could be
        // confirmed offline from a dump): it covers whether a key was given, not which.
        let request = format!(
            "createProvider:{}:{}:{}",
            body.0.name.to_json_string(),
            body.0.base_url.to_json_string(),
            body.0.api_key.is_some()
        );
        let created = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move {
                let key = body.0.api_key.map(Secret::new);
                let id =
                    providers::create_provider(&mut *c, &state.config.keys, org, &body.0.name, &body.0.base_url, key.as_ref())
                        .await?;
                let p: Provider = providers::get_provider(&mut *c, org, id).await?.into();
                Ok(p)
            })
        })
        .await?;
        Ok(ProviderCreated::Created(Json(created)))
    }

    /// List providers, newest first.
    #[oai(path = "/providers", method = "get", operation_id = "listProviders")]
    async fn list_providers(
        &self,
        auth: ApiKey,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::Provider>>>,
    ) -> Result<Json<ProviderList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let page = providers::list_providers(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, after, limit).await?;
        Ok(Json(ProviderList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Get one provider.
    #[oai(path = "/providers/:provider_id", method = "get", operation_id = "getProvider")]
    async fn get_provider(&self, auth: ApiKey, provider_id: Path<Id<rules::Provider>>) -> Result<Json<Provider>, ApiError> {
        let id = provider_id.0.id()?;
        Ok(Json(providers::get_provider(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, id).await?.into()))
    }

    /// Update a provider's name, base URL or key. Moving `base_url` of a provider that holds a key
    /// needs `api_key` as well (400 `api_key_required`), so a stored key never follows a new host.
    #[oai(path = "/providers/:provider_id", method = "patch", operation_id = "updateProvider")]
    async fn update_provider(
        &self,
        auth: ApiKey,
        provider_id: Path<Id<rules::Provider>>,
        body: Json<ProviderUpdate>,
    ) -> Result<Json<Provider>, ApiError> {
        use poem_openapi::types::MaybeUndefined;
        let org = auth.0.org_id;
        let id = provider_id.0.id()?;
        let b = body.0;
        let update = providers::ProviderUpdate {
            name: b.name.map(Into::into),
            base_url: b.base_url.map(Into::into),
            api_key: match b.api_key {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(k) => Some(Some(Secret::new(k))),
            },
        };
        let mut tx = self.state.org_tx(org).await?;
        let provider = providers::update_provider(&mut tx, &self.state.config.keys, org, id, update).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(Json(provider.into()))
    }

    /// Delete a provider that no model uses.
    #[oai(path = "/providers/:provider_id", method = "delete", operation_id = "deleteProvider")]
    async fn delete_provider(&self, auth: ApiKey, provider_id: Path<Id<rules::Provider>>) -> Result<Deleted, ApiError> {
        let id = provider_id.0.id()?;
        let mut tx = self.state.org_tx(auth.0.org_id).await?;
        providers::delete_provider(&mut tx, auth.0.org_id, id).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(Deleted::NoContent)
    }

    /// Register a model of a provider; `is_default` makes it the org default.
    #[oai(path = "/models", method = "post", operation_id = "createModel")]
    async fn create_model(
        &self,
        auth: ApiKey,
        body: Json<ModelCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<ModelCreated, ApiError> {
        let org = auth.0.org_id;
        let provider_id = body.0.provider_id.id()?;
        let request = format!("createModel:{}", body.0.to_json_string());
        let created = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move {
                let id = providers::create_model(&mut *c, org, provider_id, &body.0.name, body.0.is_default).await?;
                let m: Model = providers::get_model(&mut *c, org, id).await?.into();
                Ok(m)
            })
        })
        .await?;
        Ok(ModelCreated::Created(Json(created)))
    }

    /// List models, newest first.
    #[oai(path = "/models", method = "get", operation_id = "listModels")]
    async fn list_models(
        &self,
        auth: ApiKey,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::Model>>>,
    ) -> Result<Json<ModelList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let page = providers::list_models(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, after, limit).await?;
        Ok(Json(ModelList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Delete a model that no agent, session or turn uses (409 `model_in_use`); not the org default.
    #[oai(path = "/models/:model_id", method = "delete", operation_id = "deleteModel")]
    async fn delete_model(&self, auth: ApiKey, model_id: Path<Id<rules::Model>>) -> Result<Deleted, ApiError> {
        let id = model_id.0.id()?;
        let mut tx = self.state.org_tx(auth.0.org_id).await?;
        providers::delete_model(&mut tx, auth.0.org_id, id).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(Deleted::NoContent)
    }

    /// Get one model.
    #[oai(path = "/models/:model_id", method = "get", operation_id = "getModel")]
    async fn get_model(&self, auth: ApiKey, model_id: Path<Id<rules::Model>>) -> Result<Json<Model>, ApiError> {
        let id = model_id.0.id()?;
        Ok(Json(providers::get_model(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, id).await?.into()))
    }
}
