//! One step, a model call or a tool call, commits with its events, fenced by
//! the lease: [`commit_step`] (one round trip, [`STEP_ROUTINE`]), or — for a
//! tool that writes session storage — [`StepTx`], the same routine at the end
//! of a transaction that holds the tool's writes; and the events a step writes.

use crate::ids::{EventId, TurnId};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Lease, Usage};
use crate::db::{self, Routine};
use crate::error::{Error, Result};
use crate::events::{self, Event, NewEvent, types};

/// The `reason.started` marker of a model call (keyed: once per iteration).
pub fn reason_started(iteration: i32) -> NewEvent {
    NewEvent::step(types::REASON_STARTED, format!("reason:{iteration}"), json!({ "iteration": iteration }))
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
    let mut c = db::autocommit(pool).await?;
    let appended = run_step_routine(&mut c, lease, events, iterations, usage).await?;
    c.commit().await?;
    Ok(appended)
}

/// A step whose tool writes session storage (`crate::storage::tools`): a
/// transaction that takes the session's lock first (as every writer of a
/// session does), runs the tool's guarded statements ([`StepTx::conn`]), and
/// ends with [`STEP_ROUTINE`] — so the writes commit together with the step's
/// `tool.completed`, or not at all. Dropped uncommitted (a crash, a lost lease,
/// a step committed already), it rolls back: no write without its result, and
/// none applied twice.
pub struct StepTx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl StepTx {
    /// Begins the step's transaction: the org's scope and the session's lock, one round trip.
    pub async fn begin(pool: &PgPool, lease: &Lease) -> Result<StepTx> {
        Ok(StepTx { tx: db::begin_sessions(pool, lease.org_id, &[lease.session_id]).await? })
    }

    /// The connection the step's tool runs its statements on.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Appends the step's events under the lease ([`commit_step`]'s checks) and
    /// commits the tool's writes with them; on any failure nothing is written.
    pub async fn commit(mut self, lease: &Lease, events: Vec<NewEvent>, iterations: i32, usage: Usage) -> Result<Vec<Event>> {
        let appended = run_step_routine(&mut self.tx, lease, events, iterations, usage).await?;
        self.tx.commit().await?;
        Ok(appended)
    }
}

/// Runs [`STEP_ROUTINE`] on `c`; the caller commits.
async fn run_step_routine(
    c: &mut sqlx::PgConnection,
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
    type Row = (bool, Option<EventId>, Option<i64>, Option<String>, Option<TurnId>, Option<Value>, Option<DateTime<Utc>>);
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
    prelude: "PERFORM turnstone.enter_org($1);
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

/// Data of an assistant message event (`output.message.completed`).
pub fn assistant_message_data(text: &str, tool_calls: &Value, usage: Usage, iteration: i32, model: &str) -> Value {
    json!({
        "message": { "role": "assistant", "content": [{ "type": "text", "text": text }], "tool_calls": tool_calls },
        "usage": usage,
        "iteration": iteration,
        "model": model,
    })
}
