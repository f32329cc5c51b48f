//! Organisations and their API keys (operator and org routes).

use super::*;
use turnstone_core::ids::TypedId;

/// A new organisation.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct OrgCreate {
    /// Not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Name,
}

impl Example for OrgCreate {
    fn example() -> Self {
        example(json!({"name": "acme"}))
    }
}

/// Changes to an organisation; absent fields are unchanged.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct OrgUpdate {
    /// Not blank, no control characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<Name>,
    /// A disabled org's keys stop working on the next request.
    pub disabled: Option<bool>,
    /// Quota: active (non-archived) agents.
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub max_agents: Option<i32>,
    /// Quota: sessions.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    pub max_sessions: Option<i32>,
    /// Quota: sessions with a turn queued or running at once.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000")))]
    pub max_concurrent_turns: Option<i32>,
    /// Requests per minute per API key; 0 = unlimited.
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub rate_limit_per_minute: Option<i32>,
    /// Storage: bytes of one file (default 10 MiB).
    #[oai(validator(minimum(value = "0"), maximum(value = "1073741824")))]
    pub max_file_bytes: Option<i64>,
    /// Storage: bytes of one session's files (default 100 MiB).
    #[oai(validator(minimum(value = "0"), maximum(value = "1099511627776")))]
    pub max_session_bytes: Option<i64>,
    /// Storage: files of one session (default 10,000).
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub max_session_files: Option<i32>,
    /// Storage: keys of one session (default 10,000).
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000")))]
    pub max_session_keys: Option<i32>,
    /// Quota: bytes of all the org's files (default 10 GiB).
    #[oai(validator(minimum(value = "0"), maximum(value = "1125899906842624")))]
    pub max_storage_bytes: Option<i64>,
}

impl Example for OrgUpdate {
    fn example() -> Self {
        example(json!({"max_concurrent_turns": 20, "rate_limit_per_minute": 600}))
    }
}

#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct Org {
    /// `org_…`
    pub id: String,
    pub name: String,
    pub disabled: bool,
    pub max_agents: i32,
    pub max_sessions: i32,
    pub max_concurrent_turns: i32,
    pub rate_limit_per_minute: i32,
    pub max_file_bytes: i64,
    pub max_session_bytes: i64,
    pub max_session_files: i32,
    pub max_session_keys: i32,
    pub max_storage_bytes: i64,
    pub created_at: DateTime<Utc>,
}

impl From<turnstone_core::orgs::Org> for Org {
    fn from(o: turnstone_core::orgs::Org) -> Self {
        Org {
            id: o.id.wire(),
            name: o.name,
            disabled: o.disabled,
            max_agents: o.max_agents,
            max_sessions: o.max_sessions,
            max_concurrent_turns: o.max_concurrent_turns,
            rate_limit_per_minute: o.rate_limit_per_minute,
            max_file_bytes: o.max_file_bytes,
            max_session_bytes: o.max_session_bytes,
            max_session_files: o.max_session_files,
            max_session_keys: o.max_session_keys,
            max_storage_bytes: o.max_storage_bytes,
            created_at: o.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct OrgList {
    pub data: Vec<Org>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A new API key.
#[derive(Debug, Object, Default)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct ApiKeyCreate {
    /// A label for people; no NUL characters.
    #[oai(default, validator(max_length = 200))]
    pub name: FreeText,
    /// The key stops working at this time (in the future); absent: it never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Example for ApiKeyCreate {
    fn example() -> Self {
        example(json!({"name": "ci"}))
    }
}

/// An API key's metadata; the secret is only ever shown at creation.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it (`ts_live_AbCd`).
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key stops working; `null`: never.
    pub expires_at: Nullable<DateTime<Utc>>,
    /// When the key was revoked; `null` while it is not.
    pub revoked_at: Nullable<DateTime<Utc>>,
    /// Roughly when the key last authenticated a request; `null` if never.
    pub last_used_at: Nullable<DateTime<Utc>>,
}

impl From<turnstone_core::orgs::ApiKey> for ApiKey {
    fn from(k: turnstone_core::orgs::ApiKey) -> Self {
        ApiKey {
            id: k.id.wire(),
            name: k.name,
            display_prefix: k.display_prefix,
            created_at: k.created_at,
            expires_at: k.expires_at.into(),
            revoked_at: k.revoked_at.into(),
            last_used_at: k.last_used_at.into(),
        }
    }
}

/// A new key: `key` is shown this once and stored only as a hash.
// `Debug` is written by hand below: `key` must never be printed. `key` is not serialised
// for the `Idempotency-Key` record, so a replay answers `null`.
#[derive(Object, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyCreated {
    /// `key_…`
    pub id: String,
    /// The secret, `ts_live_…`. Store it now: it cannot be shown again. `null` when an
    /// `Idempotency-Key` retry replays the creation (the secret is never stored, not even for replays).
    #[serde(skip_serializing, default)]
    pub key: Nullable<String>,
    pub name: String,
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    /// When the key stops working; `null`: never.
    pub expires_at: Nullable<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}
