//! Turns that wait for people: a worker parks a turn on client tool calls and
//! approvals ([`park`]) and lets go of it; the control plane resolves what it
//! waits for ([`submit_results`], [`decide`], [`supersede`], and `cancel`);
//! and the transaction that resolves the last pending call resumes the turn
//! ([`resume_on`]): `turn.resumed`, and the turn's task due at once.
//!
//! A waiting turn holds one `task_queue` row, `turns.wait_task`: pending with
//! `run_at` at the earliest unresolved deadline and `"wait": true` in its
//! payload. Claimed at its deadline, the worker first calls [`expire`]; made
//! due by a resolution, the mark is gone and the turn just starts. Nothing
//! else holds the turn: no worker, no lease, no connection, no timer.
//!
//! Every resolution is a conditional update of `pending_calls`
//! (`resolved_at IS NULL`) under the session's lock: the first writer wins and
//! a second finds the row resolved (409 `already_resolved`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::post::lock_session;
use super::{Lease, QUEUE, QueueTask, TASK_MAX_ATTEMPTS, reason_started};
use crate::db;
use crate::error::{Error, Result};
use crate::events::{self, Event, NewEvent, types};
use crate::ids::{ApprovalId, OrgId, SessionId, TurnId, TypedId};
use crate::{limits, tools};

/// What a pending call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// The client runs the tool and posts its result.
    ClientTool,
    /// A person approves (the worker then runs the tool) or denies it.
    Approval,
}

impl WaitKind {
    fn as_str(self) -> &'static str {
        match self {
            WaitKind::ClientTool => "client_tool",
            WaitKind::Approval => "approval",
        }
    }
}

/// A tool call a turn is about to wait for.
#[derive(Debug, Clone)]
pub struct WaitCall {
    pub kind: WaitKind,
    pub tool_call_id: String,
    pub name: String,
    /// As the model sent them.
    pub arguments: String,
    pub deadline_at: DateTime<Utc>,
}

/// What [`park`] did.
#[derive(Debug)]
pub enum Parked {
    /// The turn waits; the task is now its deadline timer: the worker holds nothing.
    Waiting,
    /// A message is queued behind the turn: rather than wait, every call got
    /// the error result `superseded by a new message` (these events), and the turn goes on.
    Superseded(Vec<Event>),
    /// Cancellation was requested meanwhile: the worker seals the turn cancelled.
    Cancelled,
}

/// Step keys of the events a wait writes; a result's is the worker's own (`tool:<iteration>:<id>`).
fn result_key(iteration: i32, call: &str) -> String {
    format!("tool:{iteration}:{call}")
}

/// The error result a call gets when it ends without an answer.
fn error_text(error: &str, reason: Option<&str>) -> String {
    let mut v = json!({ "error": error });
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v.to_string()
}

/// A `tool.completed` written by whoever resolved the call (`by`).
fn completed(iteration: i32, call: &str, name: &str, output: Result<&str, &str>, by: &str) -> NewEvent {
    let mut data = json!({ "iteration": iteration, "tool_call_id": call, "name": name, "is_error": output.is_err(), "by": by });
    match output {
        Ok(r) => data["result"] = json!(r),
        Err(e) => data["error"] = json!(e),
    }
    NewEvent::step(types::TOOL_COMPLETED, result_key(iteration, call), data)
}

/// Parks the running turn on `calls` (all of one model call, `iteration`),
/// in one transaction under the session's lock, fenced by the lease: the
/// pending calls, `tool.call_requested` (client tools), one
/// `tool.approval_requested` per approval, `turn.waiting`, the turn and its
/// session `waiting`, and the task it runs under turned into the deadline
/// timer (or a new one when it holds none). The worker then finishes the task
/// without acknowledging it. `open_next` is whether a superseded wait also
/// opens the next model call (`reason.started`).
pub async fn park(pool: &PgPool, lease: &Lease, iteration: i32, calls: &[WaitCall], open_next: bool) -> Result<Parked> {
    let mut tx = db::begin_sessions(pool, lease.org_id, &[lease.session_id]).await?;
    let row: Option<(bool, bool)> = sqlx::query_as(
        "SELECT t.cancel_requested_at IS NOT NULL,
                EXISTS (SELECT 1 FROM turns p WHERE p.session_id = t.session_id AND p.status = 'pending')
           FROM turns t WHERE t.id = $1 AND t.attempt = $2 AND t.status = 'running' FOR UPDATE",
    )
    .bind(lease.turn_id)
    .bind(lease.attempt)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((cancel_requested, superseded)) = row else { return Err(Error::LeaseLost) };
    if cancel_requested {
        return Ok(Parked::Cancelled);
    }
    if superseded {
        let superseded = error_text("superseded by a new message", None);
        let mut events: Vec<NewEvent> =
            calls.iter().map(|c| completed(iteration, &c.tool_call_id, &c.name, Err(&superseded), "superseded")).collect();
        if open_next {
            events.push(reason_started(iteration + 1));
        }
        let appended = events::append(&mut tx, lease.org_id, lease.session_id, Some(lease.turn_id), events).await?;
        tx.commit().await?;
        return Ok(Parked::Superseded(appended));
    }
    let ids: Vec<ApprovalId> = calls.iter().map(|_| ApprovalId::new()).collect();
    let hashes: Vec<String> = calls.iter().map(|c| tools::arguments_sha256(&c.arguments)).collect();
    sqlx::query(
        "INSERT INTO pending_calls (id, org_id, session_id, turn_id, kind, iteration, tool_call_id, name, arguments,
                                    arguments_sha256, deadline_at)
         SELECT u.id, $1, $2, $3, u.kind, $4, u.call, u.name, u.arguments, u.hash, u.deadline
           FROM unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
                AS u(id, kind, call, name, arguments, hash, deadline)",
    )
    .bind(lease.org_id)
    .bind(lease.session_id)
    .bind(lease.turn_id)
    .bind(iteration)
    .bind(&ids)
    .bind(calls.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.tool_call_id.clone()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
    .bind(calls.iter().map(|c| c.arguments.clone()).collect::<Vec<_>>())
    .bind(&hashes)
    .bind(calls.iter().map(|c| c.deadline_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let wake_at = calls.iter().map(|c| c.deadline_at).min().unwrap_or_else(Utc::now);
    let until = calls.iter().map(|c| c.deadline_at).max().unwrap_or_else(Utc::now);
    let mut evs = Vec::new();
    let client: Vec<Value> = calls
        .iter()
        .filter(|c| c.kind == WaitKind::ClientTool)
        .map(|c| {
            json!({ "tool_call_id": c.tool_call_id, "name": c.name, "arguments": tools::arguments_json(&c.arguments),
                    "deadline_at": c.deadline_at })
        })
        .collect();
    if !client.is_empty() {
        let deadline = calls.iter().filter(|c| c.kind == WaitKind::ClientTool).map(|c| c.deadline_at).max();
        evs.push(NewEvent::step(
            types::TOOL_CALL_REQUESTED,
            format!("call_requested:{iteration}"),
            json!({ "iteration": iteration, "calls": client, "deadline_at": deadline }),
        ));
    }
    let mut waiting_for = Vec::new();
    for ((c, id), hash) in calls.iter().zip(&ids).zip(&hashes) {
        match c.kind {
            WaitKind::ClientTool => {
                waiting_for.push(json!({ "type": "tool_call", "tool_call_id": c.tool_call_id, "deadline_at": c.deadline_at }))
            }
            WaitKind::Approval => {
                let approval_id = id.wire();
                evs.push(NewEvent::step(
                    types::TOOL_APPROVAL_REQUESTED,
                    format!("approval:{iteration}:{}", c.tool_call_id),
                    json!({ "iteration": iteration, "approval_id": approval_id, "tool_call_id": c.tool_call_id,
                            "name": c.name, "arguments": tools::arguments_json(&c.arguments),
                            "arguments_sha256": hash, "deadline_at": c.deadline_at }),
                ));
                waiting_for.push(json!({ "type": "approval", "approval_id": approval_id, "tool_call_id": c.tool_call_id,
                                          "deadline_at": c.deadline_at }));
            }
        }
    }
    evs.push(NewEvent::step(
        types::TURN_WAITING,
        format!("wait:{iteration}"),
        json!({ "iteration": iteration, "waiting_for": waiting_for, "deadline_at": until }),
    ));
    events::append(&mut tx, lease.org_id, lease.session_id, Some(lease.turn_id), evs).await?;
    let timer = arm_timer(&mut tx, lease.org_id, lease.turn_id, lease.task.as_ref(), wake_at).await?;
    sqlx::query("UPDATE turns SET status = 'waiting', wait_task = $2, waiting_since = now() WHERE id = $1")
        .bind(lease.turn_id)
        .bind(timer)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE sessions SET status = 'waiting', updated_at = now() WHERE org_id = $1 AND id = $2")
        .bind(lease.org_id)
        .bind(lease.session_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Parked::Waiting)
}

/// Turns the task `held` into the turn's deadline timer (pending, due at
/// `at`, marked `wait`), or enqueues a new one when this run holds none (or
/// lost its claim). Returns the timer's id.
async fn arm_timer(
    tx: &mut PgConnection,
    org_id: OrgId,
    turn_id: TurnId,
    held: Option<&QueueTask>,
    at: DateTime<Utc>,
) -> Result<i64> {
    if let Some(t) = held {
        let armed: Option<i64> = sqlx::query_scalar(
            "UPDATE task_queue t SET status = 'pending', lock_by = NULL, locked_at = NULL, attempts = 0, run_at = $4,
                                    payload = t.payload || '{\"wait\": true}'
              WHERE t.id = $1 AND t.attempts = $2 AND t.lock_by = $3 RETURNING t.id",
        )
        .bind(t.held.id)
        .bind(t.held.attempts)
        .bind(&t.worker)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = armed {
            return Ok(id);
        }
    }
    let task = json!({ "turn_id": turn_id, "org_id": org_id, "wait": true });
    Ok(sqlx::query_scalar("INSERT INTO task_queue (queue, payload, max_attempts, run_at) VALUES ($1, $2, $3, $4) RETURNING id")
        .bind(QUEUE)
        .bind(task)
        .bind(TASK_MAX_ATTEMPTS)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?)
}

/// Resumes the session's waiting turn `turn_id` in the caller's transaction
/// (which holds the session's lock and has resolved its last pending call):
/// the turn and session `queued`, the waited time added up, `turn.resumed`
/// appended, and the turn's task made due now and stripped of its timer mark
/// (a new task if it is gone), with its worker's wake-up. A timer a worker
/// claimed meanwhile finds the turn queued and runs it. Returns the events appended.
pub(super) async fn resume_on(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    turn_id: TurnId,
    reason: &str,
) -> Result<Vec<Event>> {
    let task: Option<Option<i64>> = sqlx::query_scalar(
        "WITH old AS (SELECT wait_task, waiting_since FROM turns WHERE id = $1 AND status = 'waiting')
         UPDATE turns t SET status = 'queued', wait_task = NULL, waiting_since = NULL,
                            waited = t.waited + greatest(now() - coalesce(old.waiting_since, now()), '0')
           FROM old
          WHERE t.id = $1 AND t.status = 'waiting'
         RETURNING old.wait_task",
    )
    .bind(turn_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(task) = task else { return Ok(Vec::new()) };
    sqlx::query("UPDATE sessions SET status = 'queued', updated_at = now() WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "WITH due AS (
            UPDATE task_queue SET run_at = now(), payload = payload - 'wait'
             WHERE id = $1 AND status = 'pending' RETURNING id
         ), fresh AS (
            INSERT INTO task_queue (queue, payload, max_attempts)
            SELECT $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM due)
                                AND NOT EXISTS (SELECT 1 FROM task_queue WHERE id = $1)
            RETURNING id
         )
         SELECT count(pg_notify(turnstone_wake_channel($2), $2)) FROM (SELECT id FROM due UNION ALL SELECT id FROM fresh) x",
    )
    .bind(task)
    .bind(QUEUE)
    .bind(json!({ "turn_id": turn_id, "org_id": org_id }))
    .bind(TASK_MAX_ATTEMPTS)
    .execute(&mut *tx)
    .await?;
    let resumed = NewEvent::new(types::TURN_RESUMED, json!({ "reason": reason }));
    events::append(tx, org_id, session_id, Some(turn_id), vec![resumed]).await
}

/// The session's waiting turn, locked (the caller holds the session's lock).
async fn waiting_turn(tx: &mut PgConnection, session_id: SessionId) -> Result<Option<TurnId>> {
    Ok(sqlx::query_scalar("SELECT id FROM turns WHERE session_id = $1 AND status = 'waiting' FOR UPDATE")
        .bind(session_id)
        .fetch_optional(tx)
        .await?)
}

/// Unresolved calls the turn still waits for.
async fn open_calls(tx: &mut PgConnection, turn_id: TurnId) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM pending_calls WHERE turn_id = $1 AND resolved_at IS NULL")
        .bind(turn_id)
        .fetch_one(tx)
        .await?)
}

/// Resolves the turn's last calls if nothing is left open, and resumes it.
async fn resume_if_done(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    turn_id: TurnId,
    reason: &str,
) -> Result<bool> {
    if open_calls(tx, turn_id).await? > 0 {
        return Ok(false);
    }
    resume_on(tx, org_id, session_id, turn_id, reason).await?;
    Ok(true)
}

/// One client tool result, as posted.
#[derive(Debug, Clone)]
pub struct ToolResult {
    pub tool_call_id: String,
    pub output: String,
    pub is_error: bool,
}

/// What [`submit_results`] did.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Stored as `tool.completed` (`by: "client"`), in the order posted.
    pub accepted: Vec<String>,
    /// The last pending call was answered: the turn resumed in this transaction.
    pub resumed: bool,
}

/// Stores client tool results in the caller's transaction (the org's scope):
/// each must answer a pending client tool call of the session (else 422
/// `unknown_tool_call`, or 409 `already_resolved` for one answered before),
/// and all are stored or none. The last one resumes the turn ([`resume_on`]).
pub async fn submit_results(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    results: Vec<ToolResult>,
) -> Result<Submitted> {
    if results.is_empty() || results.len() > limits::MAX_TOOL_RESULTS {
        return Err(Error::invalid("invalid_tool_results", format!("results must hold 1-{} results", limits::MAX_TOOL_RESULTS)));
    }
    for (i, r) in results.iter().enumerate() {
        if results[..i].iter().any(|o| o.tool_call_id == r.tool_call_id) {
            return Err(Error::invalid("invalid_tool_results", format!("tool call {:?} is answered twice", r.tool_call_id)));
        }
        crate::validate::text("tool_call_id", &r.tool_call_id, limits::MAX_TOOL_CALL_ID_CHARS)?;
        if r.output.len() > limits::MAX_TOOL_OUTPUT_BYTES {
            return Err(Error::invalid(
                "field_too_long",
                format!("output is longer than {} bytes", limits::MAX_TOOL_OUTPUT_BYTES),
            ));
        }
        crate::validate::text("output", &r.output, limits::MAX_TOOL_OUTPUT_BYTES)?;
    }
    lock_session(tx, org_id, session_id).await?;
    let turn = waiting_turn(tx, session_id).await?;
    let mut events = Vec::with_capacity(results.len());
    let mut accepted = Vec::with_capacity(results.len());
    for r in results {
        let resolved: Option<(i32, String)> = sqlx::query_as(
            "UPDATE pending_calls SET resolved_at = now(), resolution = 'result'
              WHERE org_id = $1 AND session_id = $2 AND turn_id = $3 AND tool_call_id = $4
                AND kind = 'client_tool' AND resolved_at IS NULL
             RETURNING iteration, name",
        )
        .bind(org_id)
        .bind(session_id)
        .bind(turn)
        .bind(&r.tool_call_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((iteration, name)) = resolved else {
            return Err(not_pending(tx, org_id, session_id, "client_tool", &r.tool_call_id).await?);
        };
        let output = if r.is_error { Err(r.output.as_str()) } else { Ok(r.output.as_str()) };
        events.push(completed(iteration, &r.tool_call_id, &name, output, "client"));
        accepted.push(r.tool_call_id);
    }
    let turn = turn.expect("a call resolved above belongs to the waiting turn");
    events::append(tx, org_id, session_id, Some(turn), events).await?;
    let resumed = resume_if_done(tx, org_id, session_id, turn, "tool_results").await?;
    Ok(Submitted { accepted, resumed })
}

/// Why `tool_call_id` could not be resolved: answered before (409) or never pending (422).
async fn not_pending(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    kind: &str,
    tool_call_id: &str,
) -> Result<Error> {
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pending_calls WHERE org_id = $1 AND session_id = $2 AND tool_call_id = $3 AND kind = $4)",
    )
    .bind(org_id)
    .bind(session_id)
    .bind(tool_call_id)
    .bind(kind)
    .fetch_one(tx)
    .await?;
    Ok(if known {
        Error::conflict("already_resolved", format!("tool call {tool_call_id:?} was already resolved"))
    } else {
        Error::unprocessable("unknown_tool_call", format!("tool call {tool_call_id:?} is not pending"))
    })
}

/// An approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

/// What [`decide`] did.
#[derive(Debug, Clone)]
pub struct Decided {
    pub approval_id: ApprovalId,
    pub tool_call_id: String,
    pub decision: Decision,
    pub resumed: bool,
}

/// Records a decision on a pending approval in the caller's transaction (the
/// org's scope): `tool.approval_resolved`; on deny also the error result the
/// model gets. The approved call is run by the worker with its stored
/// arguments, with no model call in between. An approval of another session
/// is 404; a hash other than the held call's is 409 `arguments_changed`; a
/// second decision is 409 `already_resolved`.
pub async fn decide(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    approval_id: ApprovalId,
    decision: Decision,
    reason: Option<String>,
    arguments_sha256: &str,
) -> Result<Decided> {
    if let Some(r) = &reason {
        crate::validate::text("reason", r, limits::MAX_REASON_CHARS)?;
    }
    lock_session(tx, org_id, session_id).await?;
    type Row = (TurnId, i32, String, String, String, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT turn_id, iteration, tool_call_id, name, arguments_sha256, resolved_at IS NOT NULL FROM pending_calls
          WHERE org_id = $1 AND session_id = $2 AND id = $3 AND kind = 'approval' FOR UPDATE",
    )
    .bind(org_id)
    .bind(session_id)
    .bind(approval_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((turn, iteration, call, name, held_hash, resolved)) = row else { return Err(Error::NotFound("approval")) };
    if resolved {
        return Err(Error::conflict("already_resolved", "this approval was already decided"));
    }
    if !held_hash.eq_ignore_ascii_case(arguments_sha256) {
        return Err(Error::conflict("arguments_changed", "arguments_sha256 is not the hash of the held call's arguments"));
    }
    let resolution = if decision == Decision::Approve { "approved" } else { "denied" };
    sqlx::query("UPDATE pending_calls SET resolved_at = now(), resolution = $2 WHERE id = $1 AND resolved_at IS NULL")
        .bind(approval_id)
        .bind(resolution)
        .execute(&mut *tx)
        .await?;
    let word = if decision == Decision::Approve { "approve" } else { "deny" };
    let mut evs = vec![NewEvent::step(
        types::TOOL_APPROVAL_RESOLVED,
        format!("approval_resolved:{iteration}:{call}"),
        json!({ "iteration": iteration, "approval_id": approval_id.wire(),
                "tool_call_id": call, "decision": word, "reason": reason }),
    )];
    if decision == Decision::Deny {
        let denied = error_text("denied", reason.as_deref());
        evs.push(completed(iteration, &call, &name, Err(&denied), "approval"));
    }
    events::append(tx, org_id, session_id, Some(turn), evs).await?;
    let resumed = resume_if_done(tx, org_id, session_id, turn, "approval").await?;
    Ok(Decided { approval_id, tool_call_id: call, decision, resumed })
}

/// One thing a session waits for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub id: ApprovalId,
    pub turn_id: TurnId,
    /// `client_tool` or `approval`.
    pub kind: String,
    pub tool_call_id: String,
    pub name: String,
    pub arguments: String,
    pub arguments_sha256: String,
    pub deadline_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What the session waits for: its unresolved tool calls and approvals, oldest first.
pub async fn list_pending(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId) -> Result<Vec<Pending>> {
    crate::sessions::get_session(&mut *conn, org_id, session_id).await?;
    Ok(sqlx::query_as(
        "SELECT id, turn_id, kind, tool_call_id, name, arguments, arguments_sha256, deadline_at, created_at FROM pending_calls
          WHERE org_id = $1 AND session_id = $2 AND resolved_at IS NULL
          ORDER BY created_at, tool_call_id",
    )
    .bind(org_id)
    .bind(session_id)
    .fetch_all(conn)
    .await?)
}

/// Resolves the unresolved calls of `turn_id` (with `due_only`, those whose
/// deadline passed) as `resolution`, each with the error result `error`
/// (`by` the resolution); an approval that timed out also gets
/// `tool.approval_resolved` (`expired`) and the model `denied`. Returns how many.
async fn resolve_open(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    turn_id: TurnId,
    due_only: bool,
    resolution: &str,
    error: &str,
) -> Result<usize> {
    let rows: Vec<(ApprovalId, String, i32, String, String)> = sqlx::query_as(
        "UPDATE pending_calls SET resolved_at = now(), resolution = $2
          WHERE turn_id = $1 AND resolved_at IS NULL AND (NOT $3 OR deadline_at <= now())
         RETURNING id, kind, iteration, tool_call_id, name",
    )
    .bind(turn_id)
    .bind(resolution)
    .bind(due_only)
    .fetch_all(&mut *tx)
    .await?;
    let mut evs = Vec::new();
    let mut rows = rows;
    rows.sort_by(|a, b| a.3.cmp(&b.3));
    for (id, kind, iteration, call, name) in &rows {
        let text = if kind == "approval" && resolution == "timeout" {
            evs.push(NewEvent::step(
                types::TOOL_APPROVAL_RESOLVED,
                format!("approval_resolved:{iteration}:{call}"),
                json!({ "iteration": iteration, "approval_id": id.wire(),
                        "tool_call_id": call, "decision": "expired", "reason": "the approval timed out" }),
            ));
            error_text("denied", Some("the approval timed out"))
        } else {
            error_text(error, None)
        };
        evs.push(completed(*iteration, call, name, Err(&text), resolution));
    }
    events::append(tx, org_id, session_id, Some(turn_id), evs).await?;
    Ok(rows.len())
}

/// A new message for a waiting session ends the wait, in the caller's
/// transaction: every pending call gets the error result `superseded by a new
/// message` and the turn resumes (to finish before the new one starts). Does
/// nothing when the session is not waiting.
pub async fn supersede(tx: &mut PgConnection, org_id: OrgId, session_id: SessionId) -> Result<()> {
    lock_session(tx, org_id, session_id).await?;
    let Some(turn) = waiting_turn(tx, session_id).await? else { return Ok(()) };
    resolve_open(tx, org_id, session_id, turn, false, "superseded", "superseded by a new message").await?;
    resume_on(tx, org_id, session_id, turn, "superseded").await?;
    Ok(())
}

/// Cancels the session's waiting turn in the caller's transaction, which
/// holds the session's lock: its pending calls resolve as cancelled, and the
/// turn is made `queued` again for the caller to seal (`turn.cancelled`); its
/// timer is made due so a worker deletes it at once.
pub(super) async fn cancel_waiting(tx: &mut PgConnection, org_id: OrgId, session_id: SessionId, turn_id: TurnId) -> Result<()> {
    resolve_open(tx, org_id, session_id, turn_id, false, "cancelled", "cancelled").await?;
    sqlx::query(
        "WITH t AS (UPDATE turns SET status = 'queued', waiting_since = NULL WHERE id = $1 AND status = 'waiting' RETURNING wait_task)
         UPDATE task_queue SET run_at = now() WHERE id = (SELECT wait_task FROM t) AND status = 'pending'",
    )
    .bind(turn_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// What a worker does with a timer it claimed ([`expire`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Start the turn as usual (it resumed now, or before, or is gone).
    Run,
    /// Still waiting: the task is armed again for the next deadline (or was a
    /// stray and is deleted). Nothing to acknowledge.
    Parked,
}

/// Handles a claimed deadline timer of `turn_id`, in one transaction under the
/// session's lock: every pending call whose deadline passed gets its error
/// result (`{"error":"timeout"}`; an approval, `denied`, expired); if nothing
/// is left open the turn resumes and the worker runs it with this task,
/// else the task is armed for the next deadline.
pub async fn expire(pool: &PgPool, org_id: OrgId, turn_id: TurnId, held: Option<&QueueTask>) -> Result<Expiry> {
    let mut tx = db::begin_org(pool, org_id).await?;
    let session: Option<SessionId> =
        sqlx::query_scalar("SELECT session_id FROM turns WHERE id = $1").bind(turn_id).fetch_optional(&mut *tx).await?;
    let Some(session_id) = session else { return Ok(Expiry::Run) };
    sqlx::query("SELECT turnstone_lock_sessions(ARRAY[$1]::uuid[])").bind(session_id).execute(&mut *tx).await?;
    let row: Option<(String, Option<i64>)> = sqlx::query_as("SELECT status, wait_task FROM turns WHERE id = $1 FOR UPDATE")
        .bind(turn_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((status, wait_task)) = row else { return Ok(Expiry::Run) };
    if status != "waiting" {
        return Ok(Expiry::Run);
    }
    let stray = held.is_some_and(|h| Some(h.held.id) != wait_task);
    if !stray {
        resolve_open(&mut tx, org_id, session_id, turn_id, true, "timeout", "timeout").await?;
        if open_calls(&mut tx, turn_id).await? == 0 {
            resume_on(&mut tx, org_id, session_id, turn_id, "timeout").await?;
            tx.commit().await?;
            return Ok(Expiry::Run);
        }
    }
    if let Some(h) = held {
        // The earliest deadline still open (none only in a race already lost: run it now).
        let next: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(deadline_at) FROM pending_calls WHERE turn_id = $1 AND resolved_at IS NULL")
                .bind(turn_id)
                .fetch_one(&mut *tx)
                .await?;
        if stray {
            sqlx::query("DELETE FROM task_queue t WHERE t.id = $1 AND t.attempts = $2 AND t.lock_by = $3")
                .bind(h.held.id)
                .bind(h.held.attempts)
                .bind(&h.worker)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE task_queue t SET status = 'pending', lock_by = NULL, locked_at = NULL, attempts = 0, run_at = $4
                  WHERE t.id = $1 AND t.attempts = $2 AND t.lock_by = $3",
            )
            .bind(h.held.id)
            .bind(h.held.attempts)
            .bind(&h.worker)
            .bind(next.unwrap_or_else(Utc::now))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Expiry::Parked)
}
