//! What a waiting turn waits for (`/v1/sessions/{id}/pending`), and the
//! answers that resume it: client tool results and approval decisions.

use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::ids::TypedId;
use turnstone_core::turns::{self, Decision, ToolResult};

use super::Tag;
use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::idempotency::create_once;
use crate::wire::rules::{self, Id};
use crate::wire::{
    ApprovalDecision, ApprovalDecisionCreate, ApprovalResolved, IdempotencyKey, PendingItem, PendingList, ToolResultsAccepted,
    ToolResultsCreate,
};

/// Test hook: `TURNSTONE_CRASH_AT=<point>` aborts the process at that point
/// (as the worker's does), so a test can kill the API between a commit and
/// its answer. Inert otherwise.
fn crash_point(point: &str) {
    if std::env::var("TURNSTONE_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("crash point {point} reached: aborting");
        std::process::abort();
    }
}

pub struct WaitingApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum ResultsStored {
    /// Every result was stored; `resumed` says whether the turn resumed.
    #[oai(status = 200)]
    Stored(Json<ToolResultsAccepted>),
}

#[derive(ApiResponse)]
enum DecisionStored {
    /// The decision was recorded; `resumed` says whether the turn resumed.
    #[oai(status = 200)]
    Stored(Json<ApprovalResolved>),
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Sessions")]
impl WaitingApi {
    /// List what the session waits for: client tool calls and approvals, with
    /// their deadlines. Empty when the session does not wait.
    #[oai(path = "/sessions/:session_id/pending", method = "get", operation_id = "listPending")]
    async fn pending(&self, auth: ApiKey, session_id: Path<Id<rules::Session>>) -> Result<Json<PendingList>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let rows = turns::list_pending(&mut *self.state.org_tx(org).await?, org, session).await?;
        Ok(Json(PendingList { data: rows.into_iter().map(PendingItem::from).collect() }))
    }

    /// Post results of client tool calls. Partial submissions are fine; each
    /// result is stored as `tool.completed` (`by: "client"`), all or none, and
    /// the last pending one resumes the turn in the same transaction
    /// (`turn.resumed`). An id that is not pending is 422
    /// `unknown_tool_call`; one answered before, 409 `already_resolved`.
    #[oai(path = "/sessions/:session_id/tool-results", method = "post", operation_id = "postToolResults")]
    async fn tool_results(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        body: Json<ToolResultsCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<ResultsStored, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let request = format!("postToolResults:{}:{}", &*session_id.0, body.0.to_json_string());
        let results: Vec<ToolResult> = body
            .0
            .results
            .into_iter()
            .map(|r| ToolResult { tool_call_id: r.tool_call_id.into(), output: r.output.into(), is_error: r.is_error })
            .collect();
        let stored = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move {
                let s = turns::submit_results(c, org, session, results).await?;
                Ok(ToolResultsAccepted { accepted: s.accepted, resumed: s.resumed })
            })
        })
        .await?;
        crash_point("after_tool_results_commit");
        Ok(ResultsStored::Stored(Json(stored)))
    }

    /// Approve or deny a held tool call (`tool.approval_requested`). Approve:
    /// the worker runs the call with its stored arguments, with no model call
    /// in between; deny: the model gets `{"error":"denied","reason":…}`. A
    /// hash other than the held call's is 409 `arguments_changed`; a second
    /// decision, 409 `already_resolved`.
    #[oai(path = "/sessions/:session_id/approvals/:approval_id", method = "post", operation_id = "decideApproval")]
    async fn decide(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        approval_id: Path<Id<rules::Approval>>,
        body: Json<ApprovalDecisionCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<DecisionStored, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let approval = approval_id.0.id()?;
        let request = format!("decideApproval:{}:{}:{}", &*session_id.0, &*approval_id.0, body.0.to_json_string());
        let b = body.0;
        let decision = match b.decision {
            ApprovalDecision::Approve => Decision::Approve,
            ApprovalDecision::Deny => Decision::Deny,
        };
        let reason: Option<String> = b.reason.map(Into::into);
        let sha = b.arguments_sha256;
        let decided = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move {
                let d = turns::decide(c, org, session, approval, decision, reason, &sha).await?;
                Ok(ApprovalResolved {
                    approval_id: d.approval_id.wire(),
                    tool_call_id: d.tool_call_id,
                    decision: b.decision,
                    resumed: d.resumed,
                })
            })
        })
        .await?;
        Ok(DecisionStored::Stored(Json(decided)))
    }
}
