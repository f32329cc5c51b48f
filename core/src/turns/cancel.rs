//! Cancel requests (`POST …/cancel`: [`cancel`]) and the check workers poll
//! behind their NOTIFY ([`cancel_requested`]).

use crate::ids::{ModelId, OrgId, SessionId, TurnId, TypedId};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use super::post::lock_session;
use super::seal::{advance_sessions, seal_on};
use super::{Lease, Outcome};
use crate::db;
use crate::error::{Error, Result};
use crate::events::{self, NewEvent, types};

/// NOTIFY channel telling workers a turn's cancellation was requested; payload: the turn uuid.
pub const CANCEL_CHANNEL: &str = "turnstone_cancel";

/// What `POST …/cancel` did.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The turn that was active (running or queued).
    pub turn_id: TurnId,
    /// `cancelled` when sealed at once (it had not started), `cancelling` when a worker must stop it.
    pub state: &'static str,
    /// Pending turns cancelled too (`all`).
    pub pending_cancelled: Vec<TurnId>,
}

/// Cancels the session's active turn (and with `all`, its pending turns) in the
/// caller's transaction. A turn no worker holds (queued, or waiting for
/// people: its pending calls resolve as cancelled) is sealed here; a running
/// one gets the durable flag plus a NOTIFY, and its worker seals it.
/// An idle session is a conflict (`session_idle`).
pub async fn cancel(tx: &mut PgConnection, org_id: OrgId, session_id: SessionId, all: bool) -> Result<Cancelled> {
    let status = lock_session(tx, org_id, session_id).await?;
    if status == "idle" {
        return Err(Error::conflict("session_idle", "the session has no turn to cancel"));
    }
    let mut pending_cancelled = Vec::new();
    if all {
        let mut pending: Vec<TurnId> =
            sqlx::query_scalar("UPDATE turns SET status = 'cancelled', finished_at = now() WHERE session_id = $1 AND status = 'pending' RETURNING id")
                .bind(session_id)
                .fetch_all(&mut *tx)
                .await?;
        // UUIDv7 ids are time-ordered: cancel in posting order.
        pending.sort();
        for id in pending {
            let e = NewEvent::step(
                types::TURN_CANCELLED,
                "final",
                json!({ "usage": { "input_tokens": 0, "output_tokens": 0 }, "iterations": 0, "duration_ms": 0 }),
            );
            events::append(tx, org_id, session_id, Some(id), vec![e]).await?;
            pending_cancelled.push(id);
        }
    }
    type Active = (TurnId, String, i32, Option<DateTime<Utc>>, i64, Option<ModelId>);
    let active: Option<Active> = sqlx::query_as(
        "SELECT id, status, attempt, started_at, input_sequence, model_id FROM turns
          WHERE session_id = $1 AND status IN ('queued', 'running', 'waiting') FOR UPDATE",
    )
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((turn_id, turn_status, attempt, started_at, input_sequence, model_id)) = active else {
        // Only pending turns were left (all=true cancelled them): nothing runs.
        let idled = advance_sessions(tx, org_id, &[session_id]).await?;
        let idled = idled.iter().map(|_| NewEvent::of_session(types::SESSION_IDLED, json!({}))).collect();
        events::append(tx, org_id, session_id, None, idled).await?;
        let turn_id = pending_cancelled
            .first()
            .copied()
            .ok_or_else(|| Error::conflict("session_idle", "the session has no turn to cancel"))?;
        return Ok(Cancelled { turn_id, state: "cancelled", pending_cancelled });
    };
    if turn_status == "waiting" {
        // No worker holds it: its pending calls resolve as cancelled, and it is sealed here.
        super::wait::cancel_waiting(tx, org_id, session_id, turn_id).await?;
    }
    if turn_status == "queued" || turn_status == "waiting" {
        let lease = Lease {
            turn_id,
            org_id,
            session_id,
            attempt,
            input_sequence,
            model_id,
            started_at: started_at.unwrap_or_else(Utc::now),
            task: None,
        };
        seal_on(tx, &lease, Outcome::Cancelled).await?;
        return Ok(Cancelled { turn_id, state: "cancelled", pending_cancelled });
    }
    sqlx::query("UPDATE turns SET cancel_requested_at = coalesce(cancel_requested_at, now()) WHERE id = $1")
        .bind(turn_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE sessions SET status = 'cancelling', updated_at = now() WHERE id = $1")
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CANCEL_CHANNEL).bind(turn_id.uuid().to_string()).execute(&mut *tx).await?;
    Ok(Cancelled { turn_id, state: "cancelling", pending_cancelled })
}

/// Of these turns, the ones whose cancellation was requested (workers poll this
/// as a backstop for a missed NOTIFY).
pub async fn cancel_requested(pool: &PgPool, org_id: OrgId, turn_ids: &[TurnId]) -> Result<Vec<TurnId>> {
    let mut tx = db::begin_org(pool, org_id).await?;
    Ok(sqlx::query_scalar("SELECT id FROM turns WHERE id = ANY($1) AND cancel_requested_at IS NOT NULL AND status = 'running'")
        .bind(turn_ids)
        .fetch_all(&mut *tx)
        .await?)
}
