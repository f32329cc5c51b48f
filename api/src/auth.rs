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
