//! A claimed task becomes a leased, running turn: [`start_many`] (one round
//! trip, [`START_ROUTINE`]), its guards (a requested cancel, a crash loop), and
//! [`start`], its one-turn case.

use sqlx::PgPool;

use super::seal::seal_many_on;
use super::{Lease, Outcome, Seal, Start, Started, TurnTask, load_context};
use crate::db::{self, Routine};
use crate::error::Result;
use crate::events::{self, types};
use crate::ids::{EventId, OrgId, TurnId, TypedId};

/// Takes (or retakes, after a crash) a turn and reads its context: see
/// [`start_many`], of which this is the one-turn case.
pub async fn start(pool: &PgPool, task: TurnTask, max_stalled_starts: i32) -> Result<Start> {
    match start_many(pool, task.org_id, &[task.turn_id], max_stalled_starts).await?.pop() {
        Some(Started::Run(lease)) => {
            let context = load_context(pool, &lease).await?;
            Ok(Start::Run(lease, context))
        }
        _ => Ok(Start::Sealed),
    }
}

/// Takes (or retakes, after a crash) turns of one org, all in one transaction:
/// bumps each turn's `attempt`, marks it running, and on its first attempt
/// appends `turn.started` (with the first `reason.started`). Returns one
/// [`Started`] per id, in the order given; ids must be distinct.
///
/// Two guards run first, per turn. A turn whose cancellation was requested is
/// sealed `turn.cancelled`. A turn retaken `max_stalled_starts` times in a row
/// without a new committed step (a crash loop) is sealed `turn.failed` with
/// code `no_progress`. Either way its session moves on and it is `Sealed`.
///
/// One round trip however many turns: [`START_ROUTINE`] scopes the transaction to the
/// org, takes the sessions' locks (in id order), then runs one statement
/// that reads the live turns, applies their guards, takes them (with their
/// sessions' status) and appends the first starts' events; the call commits
/// as it returns. A worker starts what one wake-up claimed together, so a
/// burst costs a few transactions, not one per turn. A turn its guards seal
/// (rare) is sealed next, in a transaction of its own; should the worker die
/// in between, the turn is retaken and its guards seal it then.
pub async fn start_many(pool: &PgPool, org_id: OrgId, turn_ids: &[TurnId], max_stalled_starts: i32) -> Result<Vec<Started>> {
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
    let event_ids: Vec<EventId> = (0..2 * turn_ids.len()).map(|_| EventId::new()).collect();
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
        // claimed (`complete` false): the handler answers for it as sealed.
        let mut c = db::autocommit(pool).await?;
        seal_many_on(&mut c, org_id, seals, false).await?;
        c.commit().await?;
    }
    Ok(turn_ids.iter().map(|id| runs.remove(id).map_or(Started::Sealed, Started::Run)).collect())
}

/// [`start_many`]'s transaction as a routine (`turnstone.start_turns`): the
/// org's scope, the sessions' locks (a statement of their own, so the start's
/// snapshot is taken after they were granted), then the start.
pub(crate) static START_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| {
    Routine {
    name: "start_turns",
    params: [&events::APPEND_PARAMS[..], &[("turns", "uuid[]"), ("max_stalled_starts", "int4"), ("event_ids", "uuid[]")]].concat(),
    returns: "turn_id uuid, org_id uuid, session_id uuid, attempt int4, input_sequence int8, model_id uuid,
         started_at timestamptz, cancel_requested bool, stalled int4",
    prelude: "PERFORM turnstone.enter_org($1);
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
}
});
