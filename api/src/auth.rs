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
    let state = req.data::<AppState>().expect("AppState is attached to every route");
    match orgs::authenticate(&state.pool, &bearer.token).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(ApiError::unauthorized().into()),
        Err(e) => Err(ApiError::from(e).into()),
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
