//! Bearer API-key authentication for every `/v1` operation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use turnstone_core::orgs::{self, KeyCheck, Principal};

use crate::AppState;
use crate::error::ApiError;

/// `Authorization: Bearer ts_live_…`: an org API key.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", key_name = "Authorization", checker = "check_api_key")]
pub struct ApiKey(pub Principal);

async fn check_api_key(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    authenticate(req, &bearer.token).await
}

async fn authenticate(req: &Request, key: &str) -> poem::Result<Principal> {
    let state = req.data::<AppState>().expect("AppState is attached to every route");
    Ok(principal_for(state, key).await?)
}

/// The org key's principal: from the cache of recent checks, or looked up.
pub async fn principal_for(state: &AppState, key: &str) -> Result<Principal, ApiError> {
    let hash = orgs::key_hash(key);
    if let Some(check) = state.auth_cache.get(&hash) {
        orgs::count_checked(&state.pool, &check).await?;
        return Ok(check.principal);
    }
    let generation = state.auth_cache.generation();
    match orgs::authenticate(&state.pool, key).await? {
        Some(check) => {
            state.auth_cache.put(hash, check, generation);
            Ok(check.principal)
        }
        None => Err(ApiError::unauthorized()),
    }
}

/// Successful key checks, kept for `TURNSTONE_AUTH_CACHE_SECS` so a request
/// costs no lookup transaction. Only good answers are kept (a wrong key is
/// always looked up). Everything is dropped when the `turnstone_auth` channel
/// says a key, or an org, changed (triggers of migration 0006), when this
/// process revokes a key or updates an org itself, and whenever the hub's
/// LISTEN connection is down — while it is down, nothing is answered from here.
pub struct AuthCache {
    ttl: Duration,
    /// Bumped by every invalidation: a check that began before one is not stored.
    generation: AtomicU64,
    /// The LISTEN connection is up, so invalidations would be heard.
    listening: AtomicBool,
    entries: Mutex<HashMap<[u8; 32], Cached>>,
}

struct Cached {
    check: KeyCheck,
    until: Instant,
}

/// Distinct keys kept at most; a full cache starts over.
const MAX_CACHED_KEYS: usize = 10_000;

impl AuthCache {
    pub fn new(ttl: Duration) -> AuthCache {
        AuthCache { ttl, generation: AtomicU64::new(0), listening: AtomicBool::new(false), entries: Mutex::default() }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<KeyCheck> {
        if !self.listening.load(Ordering::SeqCst) {
            return None;
        }
        let mut entries = self.entries.lock().expect("auth cache lock");
        let cached = entries.get(hash)?;
        let expired = cached.check.expires_at.is_some_and(|at| at <= Utc::now());
        if cached.until <= Instant::now() || expired {
            entries.remove(hash);
            return None;
        }
        Some(cached.check)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn put(&self, hash: [u8; 32], check: KeyCheck, generation: u64) {
        if self.ttl.is_zero() || !self.listening.load(Ordering::SeqCst) {
            return;
        }
        let mut entries = self.entries.lock().expect("auth cache lock");
        // Under the lock, so an invalidation either happened before (skip) or clears this entry after.
        if self.generation() != generation {
            return;
        }
        if entries.len() >= MAX_CACHED_KEYS {
            entries.clear();
        }
        entries.insert(hash, Cached { check, until: Instant::now() + self.ttl });
    }

    /// Drops every cached check.
    pub fn invalidate(&self) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    /// Whether invalidations are heard; dropping the cache either way.
    pub fn set_listening(&self, listening: bool) {
        self.invalidate();
        self.listening.store(listening, Ordering::SeqCst);
    }
}

/// `?access_token=ts_live_…`: the same org API key in the query string, for
/// browsers' `EventSource`, which cannot set headers. Only the SSE operation
/// accepts it; prefer a dedicated, expiring key, since URLs end up in proxy logs.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "access_token", key_in = "query", rename = "AccessToken", checker = "check_access_token")]
pub struct AccessToken(pub Principal);

async fn check_access_token(req: &Request, key: poem_openapi::auth::ApiKey) -> poem::Result<Principal> {
    authenticate(req, &key.key).await
}

/// Either way of presenting an org key on the SSE operation (the header wins).
#[derive(SecurityScheme)]
pub enum StreamAuth {
    Query(AccessToken),
    Bearer(ApiKey),
}

impl StreamAuth {
    pub fn principal(&self) -> Principal {
        match self {
            StreamAuth::Query(AccessToken(p)) | StreamAuth::Bearer(ApiKey(p)) => *p,
        }
    }
}

/// `Authorization: Bearer <TURNSTONE_OPERATOR_TOKEN>`: the deployment operator.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", key_name = "Authorization", rename = "OperatorToken", checker = "check_operator")]
pub struct Operator(pub ());

async fn check_operator(req: &Request, bearer: Bearer) -> poem::Result<()> {
    use subtle::ConstantTimeEq;
    let state = req.data::<AppState>().expect("AppState is attached to every route");
    match &state.config.operator_token {
        // Hash both sides so the comparison is constant-time whatever the lengths.
        Some(token) => {
            use sha2::{Digest, Sha256};
            let (a, b) = (Sha256::digest(token.expose_secret().as_bytes()), Sha256::digest(bearer.token.as_bytes()));
            if bool::from(a.ct_eq(&b)) { Ok(()) } else { Err(ApiError::unauthorized().into()) }
        }
        None => Err(ApiError::new(
            poem::http::StatusCode::UNAUTHORIZED,
            "operator_disabled",
            "org management is disabled: set TURNSTONE_OPERATOR_TOKEN",
        )
        .into()),
    }
}
