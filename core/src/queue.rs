//! The task queue: a table (`task_queue`) claimed with `FOR UPDATE SKIP LOCKED`,
//! woken by NOTIFY on [`CHANNEL`], with one liveness row per worker
//! (`queue_workers`). Workers drive it through their apalis backend
//! (`turnstone-worker`'s `queue` module); the control plane only enqueues.
//!
//! Semantics: at least once. A claimed task is `running` under its worker's
//! name until that worker completes it (the row is deleted), fails it (back to
//! `pending` after a delay, or `failed` once out of attempts), hands it back, or
//! stops heart-beating for longer than the reclaim time — then any live worker
//! puts it back to `pending`. Handlers fence their own side effects (turns do,
//! by `turns.attempt`).
//!
//! Every statement here works on many tasks at once: one claim per batch, one
//! completion per batch of finished tasks, one heartbeat row per worker.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::error::Result;

/// The NOTIFY channel for "tasks are claimable", heard by every worker; the
/// payload is the queue name. Enqueues wake one worker on its own channel
/// instead ([`worker_channel`], picked in SQL by `turnstone_wake_channel`);
/// this one carries the rarer wake-ups (retries, hand-backs, reclaims) and
/// the ones a worker passes on.
pub const CHANNEL: &str = "turnstone_queue";

/// Retry budget of a task unless the enqueuer says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;

/// A claimed task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub payload: Value,
    /// Including this one (the claim counts).
    pub attempts: i32,
}

impl Claimed {
    pub fn held(&self) -> Held {
        Held { id: self.id, attempts: self.attempts }
    }
}

/// One claim of a task: its id and its `attempts` at claim time. Every
/// completion, failure and hand-back matches both (and the worker's name), so
/// a stale run of the same task by the same worker — reclaimed while it was
/// cut off, then claimed again — cannot touch the newer claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub id: i64,
    pub attempts: i32,
}

fn split(held: &[Held]) -> (Vec<i64>, Vec<i32>) {
    held.iter().map(|h| (h.id, h.attempts)).unzip()
}

/// Adds tasks in one statement (the caller's transaction); when it commits,
/// each task wakes one worker, picked by `turnstone_wake_channel` (a random
/// live worker accepting work, else every worker). (Turn tasks are written
/// the same way inside the statements that create them, to save round trips:
/// a POST's, `turns::post_message`, and a session's hand-over to its next
/// turn, `turns::advance_ctes`.)
pub async fn enqueue_many(tx: &mut PgConnection, queue: &str, payloads: &[Value], max_attempts: i32) -> Result<u64> {
    if payloads.is_empty() {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar(
        "WITH t AS (INSERT INTO task_queue (queue, payload, max_attempts) SELECT $1, p, $3 FROM unnest($2::jsonb[]) p RETURNING 1)
         SELECT count(*) FROM t, LATERAL (SELECT pg_notify(turnstone_wake_channel($1), $1)) n",
    )
    .bind(queue)
    .bind(payloads)
    .bind(max_attempts)
    .fetch_one(tx)
    .await?;
    Ok(n as u64)
}

/// Registers (or refreshes) a worker's liveness row, accepting work: from now
/// on enqueues may wake it on its own channel ([`worker_channel`]), which it
/// must be listening on. `heartbeat` is how often it will refresh the row.
pub async fn register(pool: &PgPool, queue: &str, worker: &str, heartbeat: Duration) -> Result<()> {
    let mut c = crate::db::autocommit(pool).await?;
    sqlx::query(
        "INSERT INTO queue_workers (name, queue, accepting, heartbeat_secs) VALUES ($1, $2, true, $3)
         ON CONFLICT (name) DO UPDATE
            SET queue = EXCLUDED.queue, last_seen = now(), accepting = true, heartbeat_secs = EXCLUDED.heartbeat_secs",
    )
    .bind(worker)
    .bind(queue)
    .bind(heartbeat.as_secs_f64())
    .execute(&mut *c)
    .await?;
    c.commit().await
}

/// Registers (or refreshes) `worker`'s row from the connection that carries
/// its LISTEN — call it on that connection after each (re)connect: the row
/// records that backend (its pid, and its start time where pg_stat_activity
/// shows it to this role, to tell a reused pid apart), so other workers' heartbeats
/// stop picking this worker once the backend is gone (see [`heartbeat`]).
/// `accepting`: false once the worker stops claiming.
pub async fn register_listener<'c, E>(
    listener: E,
    queue: &str,
    worker: &str,
    heartbeat: Duration,
    accepting: bool,
) -> Result<Listening>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let (pid, started) = sqlx::query_as(
        "INSERT INTO queue_workers (name, queue, accepting, heartbeat_secs, listener_pid, listener_started)
         SELECT $1, $2, $4, $3, pg_backend_pid(), backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
         ON CONFLICT (name) DO UPDATE
            SET queue = EXCLUDED.queue, last_seen = now(), accepting = EXCLUDED.accepting,
                heartbeat_secs = EXCLUDED.heartbeat_secs,
                listener_pid = EXCLUDED.listener_pid, listener_started = EXCLUDED.listener_started
         RETURNING listener_pid, listener_started",
    )
    .bind(worker)
    .bind(queue)
    .bind(heartbeat.as_secs_f64())
    .bind(accepting)
    .fetch_one(listener)
    .await?;
    Ok(Listening { pid, started })
}

/// The backend carrying a worker's LISTEN, as [`register_listener`] recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub pid: i32,
    /// NULL where pg_stat_activity hides it from the worker's role.
    pub started: Option<chrono::DateTime<chrono::Utc>>,
}

/// Writes `listening` and `accepting` back to `worker`'s row where they
/// differ — a worker's own heartbeat does it. Another worker's heartbeat can
/// find this worker's listener missing when its `pg_stat_activity` snapshot
/// predates a reconnect; this undoes that within one heartbeat (and redoes a
/// registration whose row a heartbeat re-created).
pub async fn reassert_listener(pool: &PgPool, worker: &str, listening: Listening, accepting: bool) -> Result<()> {
    let mut c = crate::db::autocommit(pool).await?;
    sqlx::query(
        "UPDATE queue_workers SET listener_pid = $2, listener_started = $3, accepting = $4
          WHERE name = $1
            AND (listener_pid IS DISTINCT FROM $2 OR listener_started IS DISTINCT FROM $3 OR accepting IS DISTINCT FROM $4)",
    )
    .bind(worker)
    .bind(listening.pid)
    .bind(listening.started)
    .bind(accepting)
    .execute(&mut *c)
    .await?;
    c.commit().await
}

/// The channel on which enqueues wake `worker` alone (besides [`CHANNEL`], on
/// which every worker is woken).
pub async fn worker_channel(pool: &PgPool, worker: &str) -> Result<String> {
    let mut c = crate::db::autocommit(pool).await?;
    let out = sqlx::query_scalar("SELECT turnstone_worker_channel($1)").bind(worker).fetch_one(&mut *c).await?;
    c.commit().await?;
    Ok(out)
}

/// Stops enqueues from picking `worker` to wake (it stops claiming); its row stays while it drains.
pub async fn stop_accepting(pool: &PgPool, worker: &str) -> Result<()> {
    let mut c = crate::db::autocommit(pool).await?;
    sqlx::query("UPDATE queue_workers SET accepting = false WHERE name = $1").bind(worker).execute(&mut *c).await?;
    c.commit().await
}

/// Wakes every worker of `queue` (a wake-up sent to one worker that cannot take it).
pub async fn wake_all(pool: &PgPool, queue: &str) -> Result<()> {
    let mut c = crate::db::autocommit(pool).await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(queue).execute(&mut *c).await?;
    c.commit().await
}

/// Claims up to `limit` due tasks of `queue` for `worker`, oldest first.
/// Claims nothing while `worker` has no live row (another worker declared it
/// dead and took its tasks back; its next heartbeat registers it again).
///
/// The claim commits without waiting for its WAL flush
/// (`synchronous_commit = off` for its own transaction): a claim is a lease,
/// not a fact anyone was told. If the database crashes before the flush, the
/// claim is lost and the task is `pending` again, which is what a reclaim
/// does; and nothing that depends on the claim can outlive it, since any
/// later synchronous commit (the handler's first write) flushes the WAL up to
/// and including it. One flush fewer between a message and its turn starting.
pub async fn claim(pool: &PgPool, queue: &str, worker: &str, limit: usize) -> Result<Vec<Claimed>> {
    let mut c = crate::db::autocommit(pool).await?;
    let out = sqlx::query_as(
        "WITH unflushed AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE task_queue t SET status = 'running', lock_by = $2, locked_at = now(), attempts = t.attempts + 1
           FROM (SELECT id FROM task_queue WHERE queue = $1 AND status = 'pending' AND run_at <= now()
                   AND EXISTS (SELECT 1 FROM queue_workers w WHERE w.name = $2)
                   AND EXISTS (SELECT 1 FROM unflushed)
                  ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) c
          WHERE t.id = c.id
         RETURNING t.id, t.payload, t.attempts",
    )
    .bind(queue)
    .bind(worker)
    .bind(limit as i64)
    .fetch_all(&mut *c)
    .await?;
    c.commit().await?;
    Ok(out)
}

/// The condition under which a claim `h(id, attempts, worker)` may settle task
/// row `t`: it is still that worker's claim of that attempt. Statements that
/// complete claims (here and `turns`' seal) share it.
pub(crate) const HELD_BY: &str = "t.attempts = h.attempts AND t.lock_by = h.worker";

/// Completes claims `worker` still holds: their rows are deleted. Returns how many.
pub async fn complete(pool: &PgPool, worker: &str, held: &[Held]) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let claims: Vec<(Held, String)> = held.iter().map(|h| (*h, worker.to_owned())).collect();
    let mut c = crate::db::autocommit(pool).await?;
    let n = complete_all_in(&mut c, &claims).await?;
    c.commit().await?;
    Ok(n)
}

/// Completes one claim `worker` holds in the caller's transaction (a handler
/// fusing its acknowledgement with its own last commit). Returns whether it did.
pub async fn complete_in(tx: &mut PgConnection, held: Held, worker: &str) -> Result<bool> {
    Ok(complete_all_in(tx, &[(held, worker.to_owned())]).await? == 1)
}

/// Completes claims, each still held by the worker named with it, on the
/// caller's connection — in its transaction, if one is open (a batch of seals
/// acknowledging their tasks). Returns how many.
pub async fn complete_all_in(tx: &mut PgConnection, claims: &[(Held, String)]) -> Result<u64> {
    if claims.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = claims.iter().map(|(h, _)| h.id).collect();
    let attempts: Vec<i32> = claims.iter().map(|(h, _)| h.attempts).collect();
    let workers: Vec<&str> = claims.iter().map(|(_, w)| w.as_str()).collect();
    static COMPLETE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "DELETE FROM task_queue t USING unnest($1::bigint[], $2::int[], $3::text[]) AS h(id, attempts, worker)
              WHERE t.id = h.id AND t.id = ANY($1) AND {HELD_BY}"
        )
    });
    Ok(sqlx::query(sqlx::AssertSqlSafe(COMPLETE.as_str()))
        .bind(&ids)
        .bind(&attempts)
        .bind(&workers)
        .execute(tx)
        .await?
        .rows_affected())
}

/// A failed run: the task goes back to `pending` after `retry_in`, or to
/// `failed` when its attempts are used up.
#[derive(Debug, Clone)]
pub struct Failure {
    pub held: Held,
    pub error: String,
    pub retry_in: Duration,
}

/// Records failed runs of claims `worker` still holds, and wakes workers for the retries.
pub async fn fail(pool: &PgPool, worker: &str, failures: &[Failure]) -> Result<u64> {
    if failures.is_empty() {
        return Ok(0);
    }
    let mut c = crate::db::autocommit(pool).await?;
    let ids: Vec<i64> = failures.iter().map(|f| f.held.id).collect();
    let attempts: Vec<i32> = failures.iter().map(|f| f.held.attempts).collect();
    // PostgreSQL text cannot hold U+0000; an error message must never make the outcome unwritable.
    let errors: Vec<String> = failures.iter().map(|f| truncate(&crate::validate::storable(&f.error), 2000)).collect();
    let delays: Vec<f64> = failures.iter().map(|f| f.retry_in.as_secs_f64()).collect();
    let n: i64 = sqlx::query_scalar(
        "WITH f AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[]) AS f(id, attempts, error, delay)),
              u AS (
                UPDATE task_queue t
                   SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
                       lock_by = NULL, locked_at = NULL, last_error = f.error,
                       run_at = now() + make_interval(secs => f.delay)
                  FROM f WHERE t.id = f.id AND t.attempts = f.attempts AND t.lock_by = $5
                RETURNING t.queue)
         SELECT count(*) FROM u, LATERAL (SELECT pg_notify($6, u.queue)) n",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&errors)
    .bind(&delays)
    .bind(worker)
    .bind(CHANNEL)
    .fetch_one(&mut *c)
    .await?;
    let out = n as u64;
    c.commit().await?;
    Ok(out)
}

/// Puts claims `worker` made but never started back to `pending`, attempt
/// refunded. Returns how many.
pub async fn unclaim(pool: &PgPool, worker: &str, held: &[Held]) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let mut c = crate::db::autocommit(pool).await?;
    let (ids, attempts) = split(held);
    let n: i64 = sqlx::query_scalar(
        "WITH u AS (
            UPDATE task_queue t SET status = 'pending', lock_by = NULL, locked_at = NULL, attempts = greatest(t.attempts - 1, 0)
              FROM unnest($1::bigint[], $2::int[]) AS h(id, attempts)
             WHERE t.id = h.id AND t.attempts = h.attempts AND t.lock_by = $3 RETURNING t.queue)
         SELECT count(*) FROM u, LATERAL (SELECT pg_notify($4, u.queue)) n",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(worker)
    .bind(CHANNEL)
    .fetch_one(&mut *c)
    .await?;
    let out = n as u64;
    c.commit().await?;
    Ok(out)
}

/// Hands every task `worker` holds back to the queue and wakes other workers
/// (drain, or a worker runtime that stopped). Returns how many.
pub async fn release_worker(pool: &PgPool, worker: &str) -> Result<u64> {
    let mut c = crate::db::autocommit(pool).await?;
    let n: i64 = sqlx::query_scalar(
        "WITH u AS (
            UPDATE task_queue SET status = 'pending', lock_by = NULL, locked_at = NULL, run_at = now()
             WHERE lock_by = $1 AND status = 'running' RETURNING queue)
         SELECT count(*) FROM u, LATERAL (SELECT pg_notify($2, u.queue)) n",
    )
    .bind(worker)
    .bind(CHANNEL)
    .fetch_one(&mut *c)
    .await?;
    let out = n as u64;
    c.commit().await?;
    Ok(out)
}

/// Removes a stopped worker's liveness row (after [`release_worker`]).
pub async fn deregister(pool: &PgPool, worker: &str) -> Result<()> {
    let mut c = crate::db::autocommit(pool).await?;
    sqlx::query("DELETE FROM queue_workers WHERE name = $1").bind(worker).execute(&mut *c).await?;
    c.commit().await
}

/// One heartbeat: refreshes `worker`'s row, then returns to `pending` the
/// running tasks of workers of `queue` not seen for `dead_after` (and of
/// workers with no row at all), deletes those workers' rows and wakes the
/// queue; and stops waking workers whose listening backend is gone (their
/// process died: its connections closed), which would otherwise stay
/// pickable until they miss three heartbeats. A task whose lost run was its
/// last attempt becomes `failed` instead (a task that kills its worker cannot
/// loop forever). Returns how many tasks were reclaimed.
///
/// Two statements, and the second skips the rows of other workers that are
/// locked at that moment (they are looked at again by the next heartbeat):
/// heartbeats that marked each other's rows — two workers each finding the
/// other's listener gone, as after a database restart — each held its own row
/// while waiting for the other's, a deadlock PostgreSQL broke by failing one.
///
/// A row that was deleted meanwhile (this worker was declared dead while cut
/// off) comes back accepting work, with `every` as its heartbeat period.
pub async fn heartbeat(pool: &PgPool, queue: &str, worker: &str, every: Duration, dead_after: Duration) -> Result<u64> {
    let mut c = crate::db::autocommit(pool).await?;
    sqlx::query(
        "INSERT INTO queue_workers (name, queue, accepting, heartbeat_secs) VALUES ($1, $2, true, $3)
         ON CONFLICT (name) DO UPDATE SET last_seen = now()",
    )
    .bind(worker)
    .bind(queue)
    .bind(every.as_secs_f64())
    .execute(&mut *c)
    .await?;
    let n: i64 = sqlx::query_scalar(
        "WITH dead AS (
            DELETE FROM queue_workers WHERE name IN (
                SELECT name FROM queue_workers
                 WHERE queue = $2 AND name <> $1 AND last_seen < now() - make_interval(secs => $3)
                   FOR UPDATE SKIP LOCKED)
            RETURNING name),
          deaf AS (
            -- pg_stat_activity hides a backend's start time from roles without rights on its
            -- session (even its own, when connected as another login role): the pid alone
            -- decides then, and a reused pid only delays this until the heartbeat rule.
            UPDATE queue_workers SET accepting = false WHERE name IN (
                SELECT w.name FROM queue_workers w
                 WHERE w.queue = $2 AND w.name <> $1 AND w.accepting AND w.listener_pid IS NOT NULL
                   AND w.last_seen >= now() - make_interval(secs => $3)
                   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                    WHERE a.pid = w.listener_pid
                                      AND (a.backend_start IS NULL OR w.listener_started IS NULL
                                           OR a.backend_start = w.listener_started))
                   FOR UPDATE SKIP LOCKED)),
          freed AS (
            UPDATE task_queue t
               SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
                   last_error = CASE WHEN t.attempts >= t.max_attempts
                                     THEN 'its worker stopped heart-beating during the last attempt' ELSE t.last_error END,
                   lock_by = NULL, locked_at = NULL
             WHERE t.queue = $2 AND t.status = 'running' AND t.lock_by <> $1
               AND (t.lock_by IN (SELECT name FROM dead)
                    OR NOT EXISTS (SELECT 1 FROM queue_workers w WHERE w.name = t.lock_by))
            RETURNING t.id)
         SELECT count(*) FROM freed, LATERAL (SELECT pg_notify($4, $2)) n",
    )
    .bind(worker)
    .bind(queue)
    .bind(dead_after.as_secs_f64())
    .bind(CHANNEL)
    .fetch_one(&mut *c)
    .await?;
    let out = n as u64;
    c.commit().await?;
    Ok(out)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}
