//! The turn queue: one turn per input message, one running turn per session.
//!
//! Transitions, each in one transaction that also appends its events:
//! - [`post_message`]: append `input.message`; insert the turn as `queued` (task
//!   queued in `task_queue` in the same transaction) when the session is idle, else as
//!   `pending` behind the running turn.
//! - [`start`]: a worker takes the turn; `attempt` is bumped and becomes the
//!   fencing token of every later write.
//! - [`commit_step`]: a step's events commit only if the caller still holds the
//!   current attempt; `events.step_key` is unique per turn, so a step can never
//!   be recorded twice.
//! - [`finish`]: the terminal event, then the next pending turn is enqueued or
//!   the session goes idle.
//!
//! Lock order is always session row, then turn row, so concurrent posts,
//! steps and finishes never deadlock; writers of several sessions lock them
//! in id order first.
//!
//! Statements over many turns reach each table through `= ANY(array)`, which
//! keeps every access on an index whatever the planner guesses of the array's
//! size. They do not join that table to the array (`unnest`) as well: under a
//! generic plan the table's index scan leads and the array is rescanned for
//! each of its rows — quadratic in the batch. A row's own values are looked
//! up by position (`array_position`) instead, and a join to a CTE (guessed at
//! one row) leads with the CTE. (The seal's task deletion keeps its `unnest`
//! join: its plan leads with the array, semi-joined to the sealed turns.)

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::events::{self, Event, NewEvent, types};
use crate::history::{ConversationCache, Prefix};
use crate::ids::new_id;
use crate::db::{self, Routine};
use crate::{limits, queue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The queue (`task_queue.queue`) turn tasks live in.
pub const QUEUE: &str = "turns";

/// The task payload: everything else is read from the database.
/// `org_id` scopes the worker's transactions (row-level security).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TurnTask {
    pub turn_id: Uuid,
    pub org_id: Uuid,
}

/// One part of a message's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
}

/// Checks message content: 1..=MAX_MESSAGE_PARTS parts of non-empty bounded text.
pub fn validate_content(parts: &[ContentPart]) -> Result<()> {
    if parts.is_empty() || parts.len() > limits::MAX_MESSAGE_PARTS {
        return Err(Error::invalid("invalid_content", format!("content must have 1-{} parts", limits::MAX_MESSAGE_PARTS)));
    }
    for p in parts {
        let ContentPart::Text { text } = p;
        if text.is_empty() {
            return Err(Error::invalid("invalid_content", "text parts must not be empty"));
        }
        crate::validate::text("content.text", text, limits::MAX_MESSAGE_TEXT_CHARS)?;
    }
    Ok(())
}

/// The plain text of message content, parts joined by newlines.
pub fn content_text(parts: &[ContentPart]) -> String {
    parts.iter().map(|ContentPart::Text { text }| text.as_str()).collect::<Vec<_>>().join("\n")
}

/// What `POST …/messages` acknowledges.
#[derive(Debug, Clone)]
pub struct Posted {
    pub message: Event,
    pub turn_id: Uuid,
    /// `queued` when the turn was enqueued at once, `pending` when it waits behind another.
    pub turn_status: &'static str,
}

/// Appends the user's message and enqueues its turn: a transaction of its own
/// on a connection outside one (one round trip, [`POST_ROUTINE`]), else a
/// statement of the caller's transaction.
///
/// One statement: it locks the session, checks the model and (when the session
/// wakes up) the concurrent-turn quota, and only if they pass appends the
/// message (and `session.activated` for an idle session), inserts the turn and,
/// for an idle session, marks it queued and writes the turn's task with its
/// wake-up of one worker (the row and notification `queue::enqueue_many`
/// writes). The quota counts the org's active sessions as its queued and
/// running turns (one per active session; index `turns_active`). It is a load
/// shedder read without the org's lock (see `quotas`), so its count's snapshot
/// predating the session lock is harmless; the session's status is read from
/// the locked row, and the sequence update from its latest version.
pub async fn post_message(
    tx: &mut PgConnection,
    org_id: Uuid,
    session_id: Uuid,
    content: Vec<ContentPart>,
    model_id: Option<Uuid>,
) -> Result<Posted> {
    validate_content(&content)?;
    type Row = (String, i32, Option<i64>, bool, Option<Uuid>, Option<i64>, Option<Value>, Option<DateTime<Utc>>);
    let turn_id = new_id();
    let data = json!({ "message": { "role": "user", "content": content } });
    let task = serde_json::to_value(TurnTask { turn_id, org_id }).expect("task payloads serialise");
    let row: Option<Row> = events::bind_append(sqlx::query_as(sqlx::AssertSqlSafe(POST_ROUTINE.call())), org_id)
        .bind(session_id)
        .bind(turn_id)
        .bind(model_id)
        .bind(new_id())
        .bind(data)
        .bind(new_id())
        .bind(QUEUE)
        .bind(task)
        .bind(TASK_MAX_ATTEMPTS)
        .fetch_optional(&mut *tx)
        .await?;
    let (status, limit, active, model_ok, id, sequence, data, ts) = row.ok_or(Error::NotFound("session"))?;
    if !model_ok {
        return Err(Error::NotFound("model"));
    }
    if let Some(active) = active {
        // Only a session that becomes active adds a concurrent turn; queueing behind one never fails.
        crate::quotas::concurrent_turns_within(limit, active)?;
    }
    let (Some(id), Some(sequence), Some(data), Some(ts)) = (id, sequence, data, ts) else {
        // Passed its checks yet not appended: the session has no sequence row.
        return Err(Error::Database(sqlx::Error::RowNotFound));
    };
    let message = Event { id, session_id, sequence, kind: types::INPUT_MESSAGE.into(), turn_id: Some(turn_id), data, ts };
    let turn_status = if status == "idle" { "queued" } else { "pending" };
    Ok(Posted { message, turn_id, turn_status })
}

/// [`post_message`]'s statement as a routine (`turnstone.post_message`), with
/// the org's scope: called outside a transaction it is a whole POST in one
/// round trip (`BEGIN` and `COMMIT` were two more); inside one (an
/// `Idempotency-Key`'s) it is a statement of it.
///
/// Self-contained: should the session have no sequence row (it always has
/// one), nothing at all is written — the session and task writes require the
/// message's row — since no caller's rollback may be there to undo them.
pub(crate) static POST_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| Routine {
    name: "post_message",
    params: [
        &events::APPEND_PARAMS[..],
        &[
            ("session", "uuid"),
            ("turn", "uuid"),
            ("model", "uuid"),
            ("message_id", "uuid"),
            ("message", "jsonb"),
            ("activated_id", "uuid"),
            ("queue_name", "text"),
            ("task", "jsonb"),
            ("task_max_attempts", "int4"),
        ],
    ]
    .concat(),
    returns: "status text, lim int4, active int8, model_ok bool, id uuid, sequence int8, data jsonb, ts timestamptz",
    prelude: "PERFORM set_config('turnstone.org_id', $1::text, true);",
    settings: "",
    query: format!(
            "WITH locked AS (
                SELECT s.status, o.max_concurrent_turns AS lim,
                       CASE WHEN s.status = 'idle' THEN
                            (SELECT count(*) FROM turns a WHERE a.org_id = $1 AND a.status IN ('queued', 'running')) END AS active,
                       ($8::uuid IS NULL OR EXISTS (SELECT 1 FROM models m WHERE m.org_id = $1 AND m.id = $8)) AS model_ok
                  FROM sessions s JOIN orgs o ON o.id = s.org_id
                 WHERE s.org_id = $1 AND s.id = $6
                   FOR UPDATE OF s
             ), gate AS (
                SELECT l.*, l.status = 'idle' AS idle, l.model_ok AND (l.active IS NULL OR l.active < l.lim) AS go
                  FROM locked l
             ), new_events AS (
                SELECT $6::uuid AS session_id, v.id, v.type, v.data, NULL::text AS step_key, $7::uuid AS turn_id, v.ord
                  FROM gate, (VALUES ($9::uuid, '{input}', $10::jsonb, 1), ($11::uuid, '{activated}', '{{}}'::jsonb, 2))
                             AS v(id, type, data, ord)
                 WHERE gate.go AND (v.ord = 1 OR gate.idle)
             ), {append}, turn AS (
                INSERT INTO turns (id, org_id, session_id, input_event_id, input_sequence, status, model_id)
                SELECT $7, $1, $6, ins.id, ins.sequence, CASE WHEN gate.idle THEN 'queued' ELSE 'pending' END, $8
                  FROM ins, gate WHERE ins.type = '{input}'
             ), session AS (
                UPDATE sessions SET status = 'queued', updated_at = now()
                 WHERE org_id = $1 AND id = $6 AND (SELECT go AND idle FROM gate) AND EXISTS (SELECT 1 FROM ins)
             ), task AS (
                INSERT INTO task_queue (queue, payload, max_attempts)
                SELECT $12, $13, $14 FROM gate WHERE go AND idle AND EXISTS (SELECT 1 FROM ins) RETURNING id
             ), woken AS (
                SELECT count(pg_notify(turnstone_wake_channel($12), $12)) AS n FROM task
             )
             SELECT gate.status, gate.lim, gate.active, gate.model_ok, m.id, m.sequence, m.data, m.ts
               FROM gate CROSS JOIN woken
               LEFT JOIN (SELECT ins.* FROM ins, wake WHERE ins.type = '{input}') m ON true",
            input = types::INPUT_MESSAGE,
            activated = types::SESSION_ACTIVATED,
            append = events::append_ctes("ARRAY[$6::uuid]"),
        ),
});

/// Locks the session row (serialising every writer of the session) and returns its status.
async fn lock_session(tx: &mut PgConnection, org_id: Uuid, session_id: Uuid) -> Result<String> {
    sqlx::query_scalar("SELECT status FROM sessions WHERE org_id = $1 AND id = $2 FOR UPDATE")
        .bind(org_id)
        .bind(session_id)
        .fetch_optional(tx)
        .await?
        .ok_or(Error::NotFound("session"))
}

/// A turn task's `max_attempts`: attempts are bounded by our own
/// forward-progress rules (`no_progress`), not the queue's retry budget.
const TASK_MAX_ATTEMPTS: i32 = 1000;

/// A worker's hold on a running turn. `attempt` fences every write.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub turn_id: Uuid,
    pub org_id: Uuid,
    pub session_id: Uuid,
    pub attempt: i32,
    pub input_sequence: i64,
    pub model_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    /// The queue task this run holds, if any: completed in the transaction
    /// that seals the turn, so the seal needs no acknowledgement of its own.
    #[sqlx(skip)]
    pub task: Option<QueueTask>,
}

/// A claim of a `task_queue` row and the worker holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTask {
    pub held: queue::Held,
    pub worker: String,
}

/// Result of trying to start a turn (returned once per run; the size gap is harmless).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// Run it: the lease, and the context read right after taking it.
    Run(Lease, TurnContext),
    /// The turn already reached a terminal state (a duplicate or late task).
    Finished,
}

/// Takes (or retakes, after a crash) a turn and reads its context: see
/// [`start_many`], of which this is the one-turn case.
pub async fn start(pool: &PgPool, task: TurnTask, max_stalled_starts: i32) -> Result<Start> {
    match start_many(pool, task.org_id, &[task.turn_id], max_stalled_starts).await?.pop() {
        Some(Started::Run(lease)) => {
            let context = load_context(pool, &lease).await?;
            Ok(Start::Run(lease, context))
        }
        _ => Ok(Start::Finished),
    }
}

/// What [`start_many`] did with one turn.
#[derive(Debug)]
pub enum Started {
    /// Run it under this lease (read its context next: [`load_contexts`]).
    Run(Lease),
    /// Nothing to run: the turn is terminal, does not exist, or was sealed by a guard.
    Finished,
}

/// Takes (or retakes, after a crash) turns of one org, all in one transaction:
/// bumps each turn's `attempt`, marks it running, and on its first attempt
/// appends `turn.started` (with the first `reason.started`). Returns one
/// [`Started`] per id, in the order given; ids must be distinct.
///
/// Two guards run first, per turn. A turn whose cancellation was requested is
/// sealed `turn.cancelled`. A turn retaken `max_stalled_starts` times in a row
/// without a new committed step (a crash loop) is sealed `turn.failed` with
/// code `no_progress`. Either way its session moves on and it is `Finished`.
///
/// One round trip however many turns: [`START_ROUTINE`] scopes the transaction to the
/// org, takes the sessions' locks (in id order), then runs one statement
/// that reads the live turns, applies their guards, takes them (with their
/// sessions' status) and appends the first starts' events; the call commits
/// as it returns. A worker starts what one wake-up claimed together, so a
/// burst costs a few transactions, not one per turn. A turn its guards seal
/// (rare) is sealed next, in a transaction of its own; should the worker die
/// in between, the turn is retaken and its guards seal it then.
pub async fn start_many(pool: &PgPool, org_id: Uuid, turn_ids: &[Uuid], max_stalled_starts: i32) -> Result<Vec<Started>> {
    if turn_ids.is_empty() {
        return Ok(Vec::new());
    }
    /// A taken turn, with what its guards need.
    #[derive(sqlx::FromRow)]
    struct Taken {
        #[sqlx(flatten)]
        lease: Lease,
        cancel_requested: bool,
        stalled: i32,
    }
    // One statement reads the live turns, computes each one's guards and takes
    // it. Progress = step results (model outputs, tool results), not lifecycle
    // markers; steps commit only under the session locks, which the routine
    // takes before this statement, whose snapshot is thus taken after they
    // were granted: the count is current. A run marks its session running; a
    // turn to seal (its cancellation was requested, or it was retaken
    // `max_stalled_starts` times without progress) leaves its session to the seal. A first attempt's run
    // appends `turn.started` and its first `reason.started` (the event
    // `reason_started(1)` builds, written here in SQL): the first step of a
    // fresh turn is always the first model call, so its marker commits with
    // the start, saving a transaction.
    let event_ids: Vec<Uuid> = (0..2 * turn_ids.len()).map(|_| new_id()).collect();
    let mut c = db::autocommit(pool).await?;
    let taken: Vec<Taken> = events::bind_append(sqlx::query_as(sqlx::AssertSqlSafe(START_ROUTINE.call())), org_id)
        .bind(turn_ids)
        .bind(max_stalled_starts)
        .bind(&event_ids)
        .fetch_all(&mut *c)
        .await?;
    c.commit().await?;
    let mut runs = std::collections::HashMap::with_capacity(turn_ids.len());
    let mut seals = Vec::new();
    for t in taken {
        if t.cancel_requested {
            seals.push(Seal::bare(&t.lease, Outcome::Cancelled));
        } else if t.stalled >= max_stalled_starts {
            let message = format!("the turn was retaken {} times without progress; it is failed to stop a crash loop", t.stalled);
            seals.push(Seal::bare(&t.lease, Outcome::Failed { code: "no_progress".into(), message }));
        } else {
            runs.insert(t.lease.turn_id, t.lease);
        }
    }
    if !seals.is_empty() {
        // Rare: sealed together, in a transaction of their own. The task stays
        // claimed (`complete` false): the handler answers for it as Finished.
        let mut c = db::autocommit(pool).await?;
        settle_many(&mut c, org_id, seals, false).await?;
        c.commit().await?;
    }
    Ok(turn_ids.iter().map(|id| runs.remove(id).map_or(Started::Finished, Started::Run)).collect())
}

/// [`start_many`]'s transaction as a routine (`turnstone.start_turns`): the
/// org's scope, the sessions' locks (a statement of their own, so the start's
/// snapshot is taken after they were granted), then the start.
pub(crate) static START_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| Routine {
    name: "start_turns",
    params: [&events::APPEND_PARAMS[..], &[("turns", "uuid[]"), ("max_stalled_starts", "int4"), ("event_ids", "uuid[]")]].concat(),
    returns: "turn_id uuid, org_id uuid, session_id uuid, attempt int4, input_sequence int8, model_id uuid,
         started_at timestamptz, cancel_requested bool, stalled int4",
    prelude: "PERFORM set_config('turnstone.org_id', $1::text, true);
         PERFORM turnstone_lock_turn_sessions($6);",
    settings: db::GENERIC_PLANS,
    query: format!(
            "WITH live AS (
                SELECT t.id, t.attempt, t.steps_seen, t.stalled_starts, t.cancel_requested_at IS NOT NULL AS cancel_requested,
                       (SELECT count(*) FROM events e
                         WHERE e.turn_id = t.id AND (e.step_key LIKE 'llm:%' OR e.step_key LIKE 'tool:%'))::int4 AS steps
                  FROM turns t WHERE t.id = ANY($6) AND t.status IN ('queued', 'running') ORDER BY t.id FOR UPDATE OF t
             ), guard AS (
                SELECT l.*, CASE WHEN l.attempt > 0 AND l.steps = l.steps_seen THEN l.stalled_starts + 1 ELSE 0 END AS stalled
                  FROM live l
             ), lease AS (
                UPDATE turns t SET status = 'running', attempt = t.attempt + 1, started_at = coalesce(t.started_at, now()),
                                   steps_seen = g.steps, stalled_starts = g.stalled
                  FROM guard g
                 WHERE t.id = g.id
                 RETURNING t.id AS turn_id, t.org_id, t.session_id, t.attempt, t.input_sequence, t.model_id, t.started_at,
                           g.cancel_requested, g.stalled, g.cancel_requested OR g.stalled >= $7 AS sealing
             ), running AS (
                UPDATE sessions s SET status = CASE WHEN s.status = 'cancelling' THEN s.status ELSE 'running' END, updated_at = now()
                  FROM lease l
                 WHERE s.id = l.session_id AND NOT l.sealing
                   AND s.id IN (SELECT session_id FROM turns WHERE id = ANY($6))
             ), first AS (
                SELECT l.session_id, l.turn_id, l.input_sequence, array_position($6, l.turn_id) AS pos
                  FROM lease l WHERE l.attempt = 1 AND NOT l.sealing
             ), new_events AS (
                SELECT session_id, $8[2 * pos - 1] AS id, '{started}' AS type,
                       jsonb_build_object('input_sequence', input_sequence) AS data, 'start' AS step_key, turn_id, 2 * pos - 1 AS ord
                  FROM first
                UNION ALL
                SELECT session_id, $8[2 * pos], '{reason}', jsonb_build_object('iteration', 1), 'reason:1', turn_id, 2 * pos
                  FROM first
             ), {append}
             SELECT turn_id, org_id, session_id, attempt, input_sequence, model_id, started_at, cancel_requested, stalled
               FROM lease CROSS JOIN wake ORDER BY turn_id",
            started = types::TURN_STARTED,
            reason = types::REASON_STARTED,
            append = events::append_ctes("ARRAY(SELECT session_id FROM first)"),
        ),
});

/// The `reason.started` marker of a model call (keyed: once per iteration).
pub fn reason_started(iteration: i32) -> NewEvent {
    NewEvent::step(types::REASON_STARTED, format!("reason:{iteration}"), json!({ "iteration": iteration }))
}

/// Token usage of one step, added to the turn's totals.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Commits one step's events (and its usage) if the lease is still held, in
/// one round trip ([`STEP_ROUTINE`]: the org's scope, the session's lock, then
/// one statement that checks the lease, adds the usage and appends).
/// Fails with [`Error::LeaseLost`] for a stale owner, and with a unique
/// violation if the step was already committed; either way nothing is written.
pub async fn commit_step(
    pool: &PgPool,
    lease: &Lease,
    events: Vec<NewEvent>,
    iterations: i32,
    usage: Usage,
) -> Result<Vec<Event>> {
    let n = events.len();
    let mut arrays = events::EventArrays::default();
    for e in events {
        arrays.push(lease.session_id, Some(lease.turn_id), e);
    }
    type Row = (bool, Option<Uuid>, Option<i64>, Option<String>, Option<Uuid>, Option<Value>, Option<DateTime<Utc>>);
    let mut c = db::autocommit(pool).await?;
    let rows: Vec<Row> = arrays
        .bind(events::bind_append(sqlx::query_as(sqlx::AssertSqlSafe(STEP_ROUTINE.call())), lease.org_id))
        .bind(lease.session_id)
        .bind(lease.turn_id)
        .bind(lease.attempt)
        .bind(iterations)
        .bind(usage.input_tokens)
        .bind(usage.output_tokens)
        .fetch_all(&mut *c)
        .await?;
    if !rows.first().is_some_and(|r| r.0) {
        return Err(Error::LeaseLost);
    }
    c.commit().await?;
    let appended = rows
        .into_iter()
        .filter_map(|(_, id, sequence, kind, turn_id, data, ts)| {
            Some(Event { id: id?, session_id: lease.session_id, sequence: sequence?, kind: kind?, turn_id, data: data?, ts: ts? })
        })
        .collect::<Vec<_>>();
    if appended.len() != n {
        // Unreachable while every session has its sequence row: the lease check requires it.
        return Err(Error::NotFound("session"));
    }
    Ok(appended)
}

/// [`commit_step`]'s transaction as a routine (`turnstone.commit_step`). The lease check (`attempt`, still running) is the
/// update that adds the step's usage; the events are appended only if it
/// passed, and it passes only if the session has its sequence row, so the
/// statement writes all or nothing. One row per appended event, each with
/// `held`; a lease check that failed gives one row, `held` false.
pub(crate) static STEP_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| Routine {
    name: "commit_step",
    params: [
        &events::APPEND_PARAMS[..],
        &events::EVENT_ARRAY_PARAMS[..],
        &[
            ("session", "uuid"),
            ("turn", "uuid"),
            ("lease_attempt", "int4"),
            ("step_iterations", "int4"),
            ("step_input_tokens", "int8"),
            ("step_output_tokens", "int8"),
        ],
    ]
    .concat(),
    returns: "held bool, id uuid, sequence int8, type text, turn_id uuid, data jsonb, ts timestamptz",
    prelude: "PERFORM set_config('turnstone.org_id', $1::text, true);
         PERFORM turnstone_lock_sessions(ARRAY[$12]);",
    settings: db::GENERIC_PLANS,
    query: format!(
            "WITH held AS (
                UPDATE turns SET iterations = iterations + $15, input_tokens = input_tokens + $16,
                                 output_tokens = output_tokens + $17
                 WHERE id = $13 AND attempt = $14 AND status = 'running'
                   AND EXISTS (SELECT 1 FROM session_sequences q WHERE q.org_id = $1 AND q.session_id = $12)
                RETURNING id
             ), new_events AS (
                SELECT * FROM unnest($6::uuid[], $7::uuid[], $8::text[], $9::jsonb[], $10::text[], $11::uuid[])
                       WITH ORDINALITY AS u(session_id, id, type, data, step_key, turn_id, ord)
                 WHERE EXISTS (SELECT 1 FROM held)
             ), {append}
             SELECT EXISTS (SELECT 1 FROM held), ins.id, ins.sequence, ins.type, ins.turn_id, ins.data, ins.ts
               FROM wake LEFT JOIN ins ON true ORDER BY ins.sequence",
            append = events::append_ctes("ARRAY[$12::uuid]"),
        ),
});

/// How a turn ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed,
    Failed { code: String, message: String },
    Cancelled,
}

impl Outcome {
    /// The turn's terminal status and error code.
    fn status(&self) -> (&'static str, Option<&str>) {
        match self {
            Outcome::Completed => ("completed", None),
            Outcome::Failed { code, .. } => ("failed", Some(code)),
            Outcome::Cancelled => ("cancelled", None),
        }
    }
}

/// A turn to seal: its last step's events and usage (possibly none) and how it ended.
#[derive(Debug, Clone)]
pub struct Seal {
    pub lease: Lease,
    pub events: Vec<NewEvent>,
    pub iterations: i32,
    pub usage: Usage,
    pub outcome: Outcome,
}

impl Seal {
    /// Sealing with no last step.
    pub fn bare(lease: &Lease, outcome: Outcome) -> Self {
        Seal { lease: lease.clone(), events: Vec::new(), iterations: 0, usage: Usage::default(), outcome }
    }
}

/// Seals the turn with its terminal event, then hands the session to the next
/// pending turn or marks it idle — all in one transaction.
pub async fn finish(pool: &PgPool, lease: &Lease, outcome: Outcome) -> Result<()> {
    commit_and_finish(pool, lease, Vec::new(), 0, Usage::default(), outcome).await
}

/// Commits a last step's events and seals the turn in one transaction (a
/// final answer and `turn.completed` land together: one commit, not two).
pub async fn commit_and_finish(
    pool: &PgPool,
    lease: &Lease,
    events: Vec<NewEvent>,
    iterations: i32,
    usage: Usage,
    outcome: Outcome,
) -> Result<()> {
    let seal = Seal { lease: lease.clone(), events, iterations, usage, outcome };
    match finish_many(pool, lease.org_id, vec![seal]).await?.as_slice() {
        [true] => Ok(()),
        _ => Err(Error::LeaseLost),
    }
}

/// [`commit_and_finish`] for turns of one org, in one transaction of one
/// round trip: [`SEAL_ROUTINES`] scopes it to the org, locks the sessions in
/// id order, then writes every seal and completes the sealed turns' queue
/// tasks together ([`settle_many`]); the call commits as it returns.
/// Returns, per seal in order, whether it was sealed (`false`: its lease was
/// lost and nothing was written for it). A unique violation (a step committed
/// twice) fails the whole batch: the caller retries its seals one by one.
pub async fn finish_many(pool: &PgPool, org_id: Uuid, seals: Vec<Seal>) -> Result<Vec<bool>> {
    if seals.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = db::autocommit(pool).await?;
    let sealed = settle_many(&mut c, org_id, seals, true).await?;
    c.commit().await?;
    Ok(sealed)
}

/// Marks the turn terminal, appends its terminal event and advances the session.
/// The caller holds the session lock.
async fn seal(tx: &mut PgConnection, lease: &Lease, outcome: Outcome) -> Result<()> {
    match settle_many(tx, lease.org_id, vec![Seal::bare(lease, outcome)], false).await?.as_slice() {
        [true] => Ok(()),
        _ => Err(Error::LeaseLost),
    }
}

/// Seals turns in one statement ([`SEAL_ROUTINES`]): a transaction of its own
/// on a connection outside one, else a statement of the caller's. It locks
/// the sessions (in id order; a caller may already hold them), then updates
/// each turn (only if it is still queued or running under its lease's
/// attempt — for a worker, its lease check), hands each session over (its
/// next pending turn queued with its task and wake-up, or the session
/// idled), with `complete` deletes the sealed turns' own queue tasks
/// (`Lease::task`), and appends each sealed turn's step events, its terminal
/// event (its totals read from the updated row) and, when its session went
/// idle, `session.idled`. One round trip however many turns (there were
/// four: the locks, the settle, the append and `COMMIT`). Returns per seal
/// whether it was sealed; a lost lease writes nothing for that seal and
/// completes nothing.
async fn settle_many(conn: &mut PgConnection, org_id: Uuid, seals: Vec<Seal>, complete: bool) -> Result<Vec<bool>> {
    let mut turns = Turns::default();
    // Each step event's turn (a session's event has none in `steps`): only sealed turns' land.
    let (mut steps, mut owners) = (events::EventArrays::default(), Vec::new());
    let mut held = HeldTasks::default();
    for s in seals.iter() {
        let (status, code) = s.outcome.status();
        turns.ids.push(s.lease.turn_id);
        turns.attempts.push(s.lease.attempt);
        turns.statuses.push(status);
        turns.codes.push(code.map(str::to_owned));
        turns.messages.push(match &s.outcome {
            Outcome::Failed { message, .. } => Some(message.clone()),
            _ => None,
        });
        turns.iterations.push(s.iterations);
        turns.inputs.push(s.usage.input_tokens);
        turns.outputs.push(s.usage.output_tokens);
        turns.sessions.push(s.lease.session_id);
        turns.final_ids.push(new_id());
        turns.idled_ids.push(new_id());
        if let Some(t) = &s.lease.task {
            held.ids.push(t.held.id);
            held.attempts.push(t.held.attempts);
            held.workers.push(t.worker.clone());
            held.turns.push(s.lease.turn_id);
        }
    }
    for s in seals {
        for e in s.events {
            steps.push(s.lease.session_id, Some(s.lease.turn_id), e);
            owners.push(s.lease.turn_id);
        }
    }
    // With no task to complete the statement has no `DELETE` at all: the
    // control plane seals turns too (a cancel) and may not delete queue rows.
    let complete = complete && !held.ids.is_empty();
    let query = events::bind_append(sqlx::query_as(sqlx::AssertSqlSafe(SEAL_ROUTINES[complete as usize].call())), org_id)
        .bind(QUEUE)
        .bind(TASK_MAX_ATTEMPTS)
        .bind(&turns.ids)
        .bind(&turns.attempts)
        .bind(&turns.statuses)
        .bind(&turns.codes)
        .bind(&turns.iterations)
        .bind(&turns.inputs)
        .bind(&turns.outputs)
        .bind(&turns.sessions)
        .bind(&turns.messages)
        .bind(&turns.final_ids)
        .bind(&turns.idled_ids);
    let query = steps.bind(query).bind(&owners);
    let query = if complete { query.bind(&held.ids).bind(&held.attempts).bind(&held.workers).bind(&held.turns) } else { query };
    let sealed: Vec<(Option<Uuid>,)> = query.fetch_all(&mut *conn).await?;
    Ok(turns.ids.iter().map(|id| sealed.contains(&(Some(*id),))).collect())
}

/// [`settle_many`]'s per-turn arrays.
#[derive(Default)]
struct Turns {
    ids: Vec<Uuid>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<String>>,
    messages: Vec<Option<String>>,
    iterations: Vec<i32>,
    inputs: Vec<i64>,
    outputs: Vec<i64>,
    sessions: Vec<Uuid>,
    /// The ids of each turn's terminal event and of its session's `session.idled`.
    final_ids: Vec<Uuid>,
    idled_ids: Vec<Uuid>,
}

/// The queue tasks of the seals that hold one.
#[derive(Default)]
struct HeldTasks {
    ids: Vec<i64>,
    attempts: Vec<i32>,
    workers: Vec<String>,
    turns: Vec<Uuid>,
}

/// [`settle_many`]'s statement as routines (`turnstone.seal_turns`,
/// `turnstone.seal_turns_and_tasks`): the org's scope and the sessions' locks
/// (a statement of their own, so the seal's snapshot is taken after they were
/// granted), then the seal. The second also deletes the sealed turns' tasks.
pub(crate) static SEAL_ROUTINES: std::sync::LazyLock<[Routine; 2]> =
    std::sync::LazyLock::new(|| [seal_routine(false), seal_routine(true)]);

fn seal_routine(complete: bool) -> Routine {
    let mut params = events::APPEND_PARAMS.to_vec();
    params.extend([
        ("queue_name", "text"),
        ("task_max_attempts", "int4"),
        // Per turn:
        ("turns", "uuid[]"),
        ("attempts", "int4[]"),
        ("statuses", "text[]"),
        ("codes", "text[]"),
        ("turn_iterations", "int4[]"),
        ("turn_input_tokens", "int8[]"),
        ("turn_output_tokens", "int8[]"),
        ("sessions", "uuid[]"),
        ("messages", "text[]"),
        ("terminal_ids", "uuid[]"),
        ("idled_ids", "uuid[]"),
    ]);
    // Per step event, and its owner (the turn whose lease it needs):
    params.extend(events::EVENT_ARRAY_PARAMS);
    params.push(("event_owners", "uuid[]"));
    if complete {
        params.extend([("task_ids", "int8[]"), ("task_attempts", "int4[]"), ("task_workers", "text[]"), ("task_turns", "uuid[]")]);
    }
    Routine {
        name: if complete { "seal_turns_and_tasks" } else { "seal_turns" },
        params,
        returns: "turn_id uuid",
        prelude: "PERFORM set_config('turnstone.org_id', $1::text, true);
         PERFORM turnstone_lock_sessions($15);",
        settings: db::GENERIC_PLANS,
        query: settle_sql(complete),
    }
}

/// The statement of [`SEAL_ROUTINES`] (parameters listed in [`seal_routine`]).
fn settle_sql(complete: bool) -> String {
    let done = if complete {
        format!(
            ", done AS (
                DELETE FROM task_queue t USING unnest($26::bigint[], $27::int[], $28::text[], $29::uuid[]) AS h(id, attempts, worker, turn_id)
                 WHERE t.id = h.id AND t.id = ANY($26) AND {held} AND h.turn_id IN (SELECT id FROM sealed)
             )",
            held = queue::HELD_BY
        )
    } else {
        String::new()
    };
    format!(
        // A running turn never goes back to `queued`, so for a worker the update is its lease check.
        // The new events are ordered per session: step events, then the terminal event, then `session.idled`.
        "WITH sealed AS (
            UPDATE turns t
               SET (status, error_code, finished_at, iterations, input_tokens, output_tokens) =
                   (SELECT ($10::text[])[i], ($11::text[])[i], now(), t.iterations + ($12::int[])[i],
                           t.input_tokens + ($13::bigint[])[i], t.output_tokens + ($14::bigint[])[i]
                      FROM array_position($8::uuid[], t.id) AS i)
             WHERE t.id = ANY($8) AND t.attempt = ($9::int[])[array_position($8, t.id)] AND t.status IN ('queued', 'running')
               AND EXISTS (SELECT 1 FROM session_sequences q WHERE q.org_id = $1 AND q.session_id = t.session_id)
             RETURNING t.id, t.session_id, t.status, t.iterations, t.input_tokens, t.output_tokens,
                       floor(extract(epoch FROM t.finished_at - coalesce(t.started_at, t.finished_at)) * 1000)::int8 AS duration_ms,
                       array_position($8, t.id) AS pos
         ), {advance}{done}, new_events AS (
            SELECT u.session_id, u.id, u.type, u.data, u.step_key, u.turn_id, u.ord
              FROM unnest($19::uuid[], $20::uuid[], $21::text[], $22::jsonb[], $23::text[], $24::uuid[], $25::uuid[])
                   WITH ORDINALITY AS u(session_id, id, type, data, step_key, turn_id, owner, ord)
             WHERE u.owner IN (SELECT id FROM sealed)
            UNION ALL
            SELECT s.session_id, ($17::uuid[])[s.pos],
                   CASE s.status WHEN 'completed' THEN '{completed}' WHEN 'failed' THEN '{failed}' ELSE '{cancelled}' END,
                   jsonb_build_object('usage', jsonb_build_object('input_tokens', s.input_tokens, 'output_tokens', s.output_tokens),
                                      'iterations', s.iterations, 'duration_ms', greatest(s.duration_ms, 0))
                   || CASE WHEN s.status = 'failed'
                           THEN jsonb_build_object('error_code', ($11::text[])[s.pos], 'message', ($16::text[])[s.pos])
                           ELSE '{{}}' END,
                   'final', s.id, 1000000000 + s.pos
              FROM sealed s
            UNION ALL
            SELECT m.id, ($18::uuid[])[array_position($15, m.id)], '{idled}', '{{}}'::jsonb, NULL, NULL, 2000000000
              FROM moved m WHERE m.status = 'idle'
         ), {append}
         SELECT s.id FROM woken CROSS JOIN wake LEFT JOIN sealed s ON true",
        advance = advance_ctes("$15", Some("SELECT session_id FROM sealed"), "$6", "$7"),
        completed = types::TURN_COMPLETED,
        failed = types::TURN_FAILED,
        cancelled = types::TURN_CANCELLED,
        idled = types::SESSION_IDLED,
        append = events::append_ctes("$15"),
    )
}

/// Hands each session to its oldest pending turn (queued, its task enqueued)
/// or marks it idle, in one statement. Returns the sessions that went idle
/// (their callers append `session.idled` after what they append already).
async fn advance_sessions(tx: &mut PgConnection, org_id: Uuid, sessions: &[Uuid]) -> Result<Vec<Uuid>> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    static ADVANCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH {advance} SELECT m.id FROM woken LEFT JOIN moved m ON m.status = 'idle'",
            advance = advance_ctes("$4", None, "$2", "$3")
        )
    });
    let idled: Vec<Option<Uuid>> = sqlx::query_scalar(sqlx::AssertSqlSafe(ADVANCE.as_str()))
        .bind(org_id)
        .bind(QUEUE)
        .bind(TASK_MAX_ATTEMPTS)
        .bind(sessions)
        .fetch_all(&mut *tx)
        .await?;
    Ok(idled.into_iter().flatten().collect())
}

/// The common table expressions that hand sessions over, for the statements
/// that do it ([`advance_sessions`], [`settle_many`]): `next` queues each
/// session's oldest pending turn, `task` enqueues its [`TurnTask`], `woken`
/// wakes a worker per task (`turnstone_wake_channel`) and `moved` sets each
/// session `queued` or `idle`. `sessions` is an SQL `uuid[]` expression (it
/// keeps both updates on their indexes); `only`, a query of session ids that
/// narrows it further. They use `$1` (the org), and `queue` and
/// `max_attempts`, the parameters holding the queue and the tasks'
/// `max_attempts`. It must read `woken` for the wake-ups to be sent.
fn advance_ctes(sessions: &str, only: Option<&str>, queue: &str, max_attempts: &str) -> String {
    let only = |col: &str| only.map(|q| format!("AND {col} IN ({q})")).unwrap_or_default();
    format!(
        "next AS (
            UPDATE turns t SET status = 'queued'
              FROM (SELECT DISTINCT ON (p.session_id) p.id FROM turns p
                     WHERE p.session_id = ANY({sessions}) {only_p} AND p.status = 'pending'
                     ORDER BY p.session_id, p.input_sequence) n
             WHERE t.id = n.id
             RETURNING t.id, t.session_id
         ), moved AS (
            UPDATE sessions x SET status = CASE WHEN EXISTS (SELECT 1 FROM next WHERE next.session_id = x.id)
                                               THEN 'queued' ELSE 'idle' END,
                                  updated_at = now()
             WHERE x.id = ANY({sessions}) {only_x}
             RETURNING x.id, x.status
         ), task AS (
            INSERT INTO task_queue (queue, payload, max_attempts)
            SELECT {queue}::text, jsonb_build_object('turn_id', next.id, 'org_id', $1::uuid), {max_attempts}::int4 FROM next RETURNING id
         ), woken AS (
            SELECT count(pg_notify(turnstone_wake_channel({queue}), {queue})) AS n FROM task
         )",
        only_p = only("p.session_id"),
        only_x = only("x.id"),
    )
}

/// NOTIFY channel telling workers a turn's cancellation was requested; payload: the turn uuid.
pub const CANCEL_CHANNEL: &str = "turnstone_cancel";

/// What `POST …/cancel` did.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The turn that was active (running or queued).
    pub turn_id: Uuid,
    /// `cancelled` when sealed at once (it had not started), `cancelling` when a worker must stop it.
    pub state: &'static str,
    /// Pending turns cancelled too (`all`).
    pub pending_cancelled: Vec<Uuid>,
}

/// Cancels the session's active turn (and with `all`, its pending turns) in the
/// caller's transaction. A turn no worker has started is sealed here; a running
/// one gets the durable flag plus a NOTIFY, and its worker seals it.
/// An idle session is a conflict (`session_idle`).
pub async fn cancel(tx: &mut PgConnection, org_id: Uuid, session_id: Uuid, all: bool) -> Result<Cancelled> {
    let status = lock_session(tx, org_id, session_id).await?;
    if status == "idle" {
        return Err(Error::conflict("session_idle", "the session has no turn to cancel"));
    }
    let mut pending_cancelled = Vec::new();
    if all {
        let mut pending: Vec<Uuid> =
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
    type Active = (Uuid, String, i32, Option<DateTime<Utc>>, i64, Option<Uuid>);
    let active: Option<Active> = sqlx::query_as(
        "SELECT id, status, attempt, started_at, input_sequence, model_id FROM turns
          WHERE session_id = $1 AND status IN ('queued', 'running') FOR UPDATE",
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
    if turn_status == "queued" {
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
        seal(tx, &lease, Outcome::Cancelled).await?;
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
    sqlx::query("SELECT pg_notify($1, $2)").bind(CANCEL_CHANNEL).bind(turn_id.to_string()).execute(&mut *tx).await?;
    Ok(Cancelled { turn_id, state: "cancelling", pending_cancelled })
}

/// Of these turns, the ones whose cancellation was requested (workers poll this
/// as a backstop for a missed NOTIFY).
pub async fn cancel_requested(pool: &PgPool, org_id: Uuid, turn_ids: &[Uuid]) -> Result<Vec<Uuid>> {
    let mut tx = db::begin_org(pool, org_id).await?;
    Ok(sqlx::query_scalar("SELECT id FROM turns WHERE id = ANY($1) AND cancel_requested_at IS NOT NULL AND status = 'running'")
        .bind(turn_ids)
        .fetch_all(&mut *tx)
        .await?)
}

/// What a worker needs to run a turn, read fresh from the database at every (re)start.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub system_prompt: String,
    pub capabilities: Vec<String>,
    pub max_iterations: i32,
    /// Wall-clock cap for the whole turn, from the agent.
    pub max_turn_secs: i32,
    /// The durable cancellation flag is set.
    pub cancel_requested: bool,
    /// Message control → session → agent; `None` means the org default.
    pub model_id: Option<Uuid>,
    /// The session's conversation up to now and every event of this turn
    /// ([`events::for_turn_contexts`]), in conversation order
    /// ([`crate::conversation`]); input messages of later turns are excluded.
    /// Shared with the worker's [`ConversationCache`]: a turn's context costs no copy of its conversation.
    pub history: Vec<Arc<Event>>,
    /// The model to call and its provider, key still sealed; `None`: no model
    /// is configured (the turn fails `no_model` when it needs one).
    pub endpoint: Option<crate::providers::StoredEndpoint>,
}

/// Re-reads a running turn's context (a worker that lost track of its log).
pub async fn load_context(pool: &PgPool, lease: &Lease) -> Result<TurnContext> {
    let mut contexts = load_contexts(pool, lease.org_id, std::slice::from_ref(lease), &ConversationCache::new(0)).await?;
    contexts.pop().unwrap_or(Err(Error::NotFound("session")))
}

/// Reads the contexts of running turns of one org in one read-only
/// transaction (three statements however many turns; one more per distinct
/// provider key), one per lease in the order of `leases`: `NotFound("session")`
/// for a lease whose session is gone, without failing the others. The outer
/// error is the database's. Conversations known to `cache` are read from
/// where it ends, and what is read extends it.
pub async fn load_contexts(
    pool: &PgPool,
    org_id: Uuid,
    leases: &[Lease],
    cache: &ConversationCache,
) -> Result<Vec<Result<TurnContext>>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db::begin_org(pool, org_id).await?;
    let sessions: Vec<Uuid> = leases.iter().map(|l| l.session_id).collect();
    let turns: Vec<Uuid> = leases.iter().map(|l| l.turn_id).collect();
    type Row = (i64, String, Vec<String>, i32, i32, Option<Uuid>, Option<Uuid>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.ord, a.system_prompt, a.capabilities, a.max_iterations, a.max_turn_secs, s.model_id, a.model_id,
                coalesce((SELECT t.cancel_requested_at IS NOT NULL FROM turns t WHERE t.id = l.turn_id), false)
           FROM unnest($2::uuid[], $3::uuid[]) WITH ORDINALITY AS l(session_id, turn_id, ord)
           JOIN sessions s ON s.org_id = $1 AND s.id = l.session_id AND s.id = ANY($2)
           JOIN agents a ON a.id = s.agent_id AND a.org_id = s.org_id",
    )
    .bind(org_id)
    .bind(&sessions)
    .bind(&turns)
    .fetch_all(&mut *tx)
    .await?;
    let prefixes: Vec<Prefix> = leases.iter().map(|l| cache.get(org_id, l.session_id)).collect();
    let after: Vec<i64> = prefixes.iter().map(|p| p.upto).collect();
    let mut histories = events::for_turn_contexts(&mut tx, org_id, &sessions, &turns, &after).await?;
    let mut endpoints: Vec<(Option<Uuid>, Option<crate::providers::StoredEndpoint>)> = Vec::new();
    let mut contexts: Vec<Result<TurnContext>> = leases.iter().map(|_| Err(Error::NotFound("session"))).collect();
    for (ord, system_prompt, capabilities, max_iterations, max_turn_secs, session_model, agent_model, cancel_requested) in rows {
        let lease = &leases[ord as usize - 1];
        let model_id = lease.model_id.or(session_model).or(agent_model);
        // In this read-only transaction too, once per model: no transaction of its own per turn.
        let endpoint = match endpoints.iter().find(|(m, _)| *m == model_id) {
            Some((_, e)) => e.clone(),
            None => {
                let e = crate::providers::stored_endpoint(&mut tx, org_id, model_id).await?;
                endpoints.push((model_id, e.clone()));
                e
            }
        };
        let read = histories.remove(&lease.turn_id).unwrap_or_default();
        let mut history = with_prefix(cache, org_id, lease.session_id, &prefixes[ord as usize - 1], read);
        history.retain(|e| !(e.kind == types::INPUT_MESSAGE && e.sequence > lease.input_sequence));
        crate::conversation::sort(&mut history);
        let context = TurnContext {
            endpoint,
            system_prompt,
            capabilities,
            max_iterations,
            max_turn_secs,
            cancel_requested,
            model_id,
            history,
        };
        contexts[ord as usize - 1] = Ok(context);
    }
    // Read-only: dropping it rolls back on the connection's next use, no round trip here.
    drop(tx);
    Ok(contexts)
}

/// A turn's events as read after `prefix`, completed with the prefix, in
/// sequence order; the conversation now known goes back into `cache`.
fn with_prefix(cache: &ConversationCache, org_id: Uuid, session_id: Uuid, prefix: &Prefix, read: Vec<Event>) -> Vec<Arc<Event>> {
    if !cache.enabled() {
        return read.into_iter().map(Arc::new).collect();
    }
    let (conversation, own): (Vec<Arc<Event>>, Vec<Arc<Event>>) =
        read.into_iter().map(Arc::new).partition(|e| events::CONVERSATION.contains(&e.kind.as_str()));
    let known = prefix.extended(conversation);
    let mut history: Vec<Arc<Event>> = known.events.iter().cloned().chain(own).collect();
    history.sort_by_key(|e| e.sequence);
    cache.put(org_id, session_id, known);
    history
}

/// Data of an assistant message event (`output.message.completed`).
pub fn assistant_message_data(text: &str, tool_calls: &Value, usage: Usage, iteration: i32, model: &str) -> Value {
    json!({
        "message": { "role": "assistant", "content": [{ "type": "text", "text": text }], "tool_calls": tool_calls },
        "usage": usage,
        "iteration": iteration,
        "model": model,
    })
}
