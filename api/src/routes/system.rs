//! `/health` (the process is alive), `/ready` (database reachable, migrations applied) and
//! `/problems` (what each problem `code` means: where a problem's `type` leads).

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::db;

use super::Tag;
use crate::AppState;
use crate::error::{self, Problem};
use crate::wire::{Health, ProblemTypeDoc, ProblemTypeList, Ready};

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

#[derive(ApiResponse)]
enum ProblemTypeResponse {
    /// The problem type.
    #[oai(status = 200)]
    Found(Json<ProblemTypeDoc>),
    /// No problem has this code.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
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

    /// Every problem type: each `code` an error can carry, its status and its meaning.
    #[oai(path = "/problems", method = "get", operation_id = "listProblemTypes")]
    async fn problem_types(&self) -> Json<ProblemTypeList> {
        Json(ProblemTypeList { data: error::PROBLEM_TYPES.iter().map(ProblemTypeDoc::from).collect() })
    }

    /// One problem type: where a problem's `type` (`/problems/<code>`) leads.
    #[oai(path = "/problems/:code", method = "get", operation_id = "getProblemType")]
    async fn problem_type(&self, code: Path<String>) -> ProblemTypeResponse {
        match error::problem_type(&code.0) {
            Some(p) => ProblemTypeResponse::Found(Json(p.into())),
            None => ProblemTypeResponse::NotFound(Json(Problem::new(
                poem::http::StatusCode::NOT_FOUND,
                "not_found",
                "no problem type has this code",
            ))),
        }
    }
}
