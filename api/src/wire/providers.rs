//! Providers and models: OpenAI-compatible endpoints, keys write-only.

use super::*;
use turnstone_core::ids::TypedId;
use turnstone_core::providers;

/// A new provider: an OpenAI-compatible endpoint and, optionally, its API key.
// `api_key` is a `ProviderKey`, whose `Debug` prints `[redacted]`: the key is never logged.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ProviderCreate {
    /// Unique per org; not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`: http(s), a host, no
    /// credentials, query or fragment.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub base_url: Text,
    /// Sent to the provider as `Authorization: Bearer <api_key>`, so visible ASCII only.
    /// Stored encrypted; never returned.
    #[oai(validator(max_length = 4096))]
    pub api_key: Option<ProviderKey>,
}

impl Example for ProviderCreate {
    fn example() -> Self {
        example(json!({"name": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-your-provider-key"}))
    }
}

/// Changes to a provider; absent fields are unchanged. Changing `base_url` of a
/// provider that holds a key needs `api_key` too (a new key, or `null` to drop it).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ProviderUpdate {
    /// Unique per org; not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Name>,
    /// OpenAI-compatible base URL: http(s), a host, no credentials, query or fragment.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub base_url: Option<Text>,
    /// A new key (visible ASCII, stored encrypted), or `null` to remove the stored one.
    #[oai(nullable, validator(max_length = 4096))]
    pub api_key: MaybeUndefined<ProviderKey>,
}

impl Example for ProviderUpdate {
    fn example() -> Self {
        example(json!({"name": "openai-eu"}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Provider {
    /// `prv_…`
    pub id: String,
    pub name: String,
    pub base_url: String,
    /// Whether an API key is stored (the key itself is never returned).
    pub has_api_key: bool,
    pub created_at: DateTime<Utc>,
}

impl From<providers::Provider> for Provider {
    fn from(p: providers::Provider) -> Self {
        Provider { id: p.id.wire(), name: p.name, base_url: p.base_url, has_api_key: p.has_api_key, created_at: p.created_at }
    }
}

#[derive(Debug, Object)]
pub struct ProviderList {
    pub data: Vec<Provider>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A new model of a provider.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ModelCreate {
    /// `prv_…` of one of the org's providers.
    pub provider_id: Id<rules::Provider>,
    /// The upstream model name sent to the provider, e.g. `gpt-4o-mini`.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
    /// Make this the org's default model.
    #[oai(default)]
    pub is_default: bool,
}

impl Example for ModelCreate {
    fn example() -> Self {
        // The provider id is a placeholder: use one from `GET /v1/providers`.
        example(json!({"provider_id": "prv_0190b5e3a1c47d2e8f0a1b2c3d4e5f60", "name": "gpt-4o-mini", "is_default": false}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Model {
    /// `mdl_…`
    pub id: String,
    /// `prv_…`
    pub provider_id: String,
    pub name: String,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

impl From<providers::Model> for Model {
    fn from(m: providers::Model) -> Self {
        Model {
            id: m.id.wire(),
            provider_id: m.provider_id.wire(),
            name: m.name,
            is_default: m.is_default,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ModelList {
    pub data: Vec<Model>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}
