//! Bearer API-key authentication for every `/v1` operation.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use turnstone_core::orgs::{self, Principal};

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
    match orgs::authenticate(&state.pool, key).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(ApiError::unauthorized().into()),
        Err(e) => Err(ApiError::from(e).into()),
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
            let (a, b) = (Sha256::digest(token.expose().as_bytes()), Sha256::digest(bearer.token.as_bytes()));
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
