//! `/health` (the process is alive) and `/ready` (database reachable, migrations applied).

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::db;

use super::Tag;
use crate::AppState;
use crate::error::Problem;
use crate::wire::{Health, Ready};

pub struct SystemApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Ready to serve.
    #[oai(status = 200)]
    Ready(Json<Ready>),
    /// Not ready: the database is unreachable or migrations are pending.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>),
}

#[OpenApi(tag = "Tag::System")]
impl SystemApi {
    /// Liveness: the process answers.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }

    /// Readiness: the database answers and every migration is applied.
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> ReadyResponse {
        match db::migrations_applied(&self.state.pool).await {
            Ok(true) => ReadyResponse::Ready(Json(Ready { status: "ready".into() })),
            Ok(false) => ReadyResponse::NotReady(Json(Problem::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "migrations_pending",
                "database migrations are not applied yet",
            ))),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                ReadyResponse::NotReady(Json(Problem::new(
                    poem::http::StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unreachable",
                )))
            }
        }
    }
}
