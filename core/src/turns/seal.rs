//! The seal, a turn's terminal transition: its last step's events, its
//! terminal event, its queue task completed, and its session handed to the
//! next pending turn or idled, in one statement ([`SEAL_ROUTINES`]).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Lease, Outcome, QUEUE, Seal, TASK_MAX_ATTEMPTS, Usage};
use crate::db::{self, Routine};
use crate::error::{Error, Result};
use crate::events::{self, NewEvent, types};
use crate::ids::{EventId, OrgId, SessionId, TurnId, TypedId};
use crate::queue;

/// Seals the turn with its terminal event, then hands the session to the next
/// pending turn or marks it idle — all in one transaction.
pub async fn seal(pool: &PgPool, lease: &Lease, outcome: Outcome) -> Result<()> {
    commit_and_seal(pool, lease, Vec::new(), 0, Usage::default(), outcome).await
}

/// Commits a last step's events and seals the turn in one transaction (a
/// final answer and `turn.completed` land together: one commit, not two).
pub async fn commit_and_seal(
    pool: &PgPool,
    lease: &Lease,
    events: Vec<NewEvent>,
    iterations: i32,
    usage: Usage,
    outcome: Outcome,
) -> Result<()> {
    let seal = Seal { lease: lease.clone(), events, iterations, usage, outcome };
    match seal_many(pool, lease.org_id, vec![seal]).await?.as_slice() {
        [true] => Ok(()),
        _ => Err(Error::LeaseLost),
    }
}

/// [`commit_and_seal`] for turns of one org, in one transaction of one
/// round trip: [`SEAL_ROUTINES`] scopes it to the org, locks the sessions in
/// id order, then writes every seal and completes the sealed turns' queue
/// tasks together ([`seal_many_on`]); the call commits as it returns.
/// Returns, per seal in order, whether it was sealed (`false`: its lease was
/// lost and nothing was written for it). A unique violation (a step committed
/// twice) fails the whole batch: the caller retries its seals one by one.
pub async fn seal_many(pool: &PgPool, org_id: OrgId, seals: Vec<Seal>) -> Result<Vec<bool>> {
    if seals.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = db::autocommit(pool).await?;
    let sealed = seal_many_on(&mut c, org_id, seals, true).await?;
    c.commit().await?;
    Ok(sealed)
}

/// Marks the turn terminal, appends its terminal event and advances the
/// session, in the caller's transaction. The caller holds the session lock.
pub(super) async fn seal_on(tx: &mut PgConnection, lease: &Lease, outcome: Outcome) -> Result<()> {
    match seal_many_on(tx, lease.org_id, vec![Seal::bare(lease, outcome)], false).await?.as_slice() {
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
/// four: the locks, the update, the append and `COMMIT`). Returns per seal
/// whether it was sealed; a lost lease writes nothing for that seal and
/// completes nothing.
pub(super) async fn seal_many_on(conn: &mut PgConnection, org_id: OrgId, seals: Vec<Seal>, complete: bool) -> Result<Vec<bool>> {
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
        turns.final_ids.push(EventId::new());
        turns.idled_ids.push(EventId::new());
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
    let sealed: Vec<(Option<TurnId>,)> = query.fetch_all(&mut *conn).await?;
    Ok(turns.ids.iter().map(|id| sealed.contains(&(Some(*id),))).collect())
}

/// [`seal_many_on`]'s per-turn arrays.
#[derive(Default)]
struct Turns {
    ids: Vec<TurnId>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    codes: Vec<Option<String>>,
    messages: Vec<Option<String>>,
    iterations: Vec<i32>,
    inputs: Vec<i64>,
    outputs: Vec<i64>,
    sessions: Vec<SessionId>,
    /// The ids of each turn's terminal event and of its session's `session.idled`.
    final_ids: Vec<EventId>,
    idled_ids: Vec<EventId>,
}

/// The queue tasks of the seals that hold one.
#[derive(Default)]
struct HeldTasks {
    ids: Vec<i64>,
    attempts: Vec<i32>,
    workers: Vec<String>,
    turns: Vec<TurnId>,
}

/// [`seal_many_on`]'s statement as routines (`turnstone.seal_turns`,
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
        params.extend([
            ("task_ids", "int8[]"),
            ("task_attempts", "int4[]"),
            ("task_workers", "text[]"),
            ("task_turns", "uuid[]"),
        ]);
    }
    Routine {
        name: if complete { "seal_turns_and_tasks" } else { "seal_turns" },
        params,
        returns: "turn_id uuid",
        prelude: "PERFORM turnstone.enter_org($1);
         PERFORM turnstone_lock_sessions($15);",
        settings: db::GENERIC_PLANS,
        query: seal_sql(complete),
    }
}

/// The statement of [`SEAL_ROUTINES`] (parameters listed in [`seal_routine`]).
fn seal_sql(complete: bool) -> String {
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
pub(super) async fn advance_sessions(tx: &mut PgConnection, org_id: OrgId, sessions: &[SessionId]) -> Result<Vec<Uuid>> {
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
/// that do it ([`advance_sessions`], [`seal_many_on`]): `next` queues each
/// session's oldest pending turn, `task` enqueues its
/// [`TurnTask`](super::TurnTask), `woken` wakes a worker per task
/// (`turnstone_wake_channel`) and `moved` sets each session `queued` or
/// `idle`. `sessions` is an SQL `uuid[]` expression (it keeps both updates on
/// their indexes); `only`, a query of session ids that narrows it further.
/// They use `$1` (the org), and `queue` and `max_attempts`, the parameters
/// holding the queue and the tasks' `max_attempts`. It must read `woken` for
/// the wake-ups to be sent.
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
