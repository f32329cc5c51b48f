//! A message becomes a queued turn: [`post_message`] (one statement,
//! [`POST_ROUTINE`]), the checks of its content, and the session lock that
//! other writers of a session take.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::{ContentPart, QUEUE, TASK_MAX_ATTEMPTS, TurnTask};
use crate::db::Routine;
use crate::error::{Error, Result};
use crate::events::{self, Event, types};
use crate::ids::{EventId, ModelId, OrgId, SessionId, TurnId, TypedId};
use crate::limits;

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
    pub turn_id: TurnId,
    /// `queued` when the turn was enqueued at once, `pending` when it waits behind another.
    pub turn_status: &'static str,
}

/// Appends the user's message and enqueues its turn: a transaction of its own
/// on a connection outside one (one round trip, [`POST_ROUTINE`]), else a
/// statement of the caller's transaction.
///
/// One statement: it locks the session, checks the model, that the session
/// is not waiting for people (then it writes nothing, and the wait is ended
/// first: see the body), and (when the session
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
    org_id: OrgId,
    session_id: SessionId,
    content: Vec<ContentPart>,
    model_id: Option<ModelId>,
) -> Result<Posted> {
    validate_content(&content)?;
    let turn_id = TurnId::new();
    match post_once(&mut *tx, org_id, session_id, &content, model_id, turn_id).await? {
        Some(posted) => Ok(posted),
        None => {
            // The session waits for people: the message ends the wait first
            // (`wait::supersede`), in one transaction with the post (a
            // savepoint inside the caller's). Rare, so off the one-round-trip path.
            let mut tx = sqlx::Connection::begin(&mut *tx).await?;
            crate::db::enter_org(&mut tx, org_id).await?;
            super::wait::supersede(&mut tx, org_id, session_id).await?;
            let posted = post_once(&mut tx, org_id, session_id, &content, model_id, turn_id).await?;
            tx.commit().await?;
            // Unreachable: the wait ended above, under the session's lock.
            posted.ok_or(Error::Database(sqlx::Error::RowNotFound))
        }
    }
}

/// One call of [`POST_ROUTINE`]; `None` when the session is waiting (nothing written).
async fn post_once(
    tx: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    content: &[ContentPart],
    model_id: Option<ModelId>,
    turn_id: TurnId,
) -> Result<Option<Posted>> {
    type Row = (String, i32, Option<i64>, bool, Option<EventId>, Option<i64>, Option<Value>, Option<DateTime<Utc>>);
    let task = serde_json::to_value(TurnTask { turn_id, org_id, wait: false }).expect("task payloads serialise");
    let data = json!({ "message": { "role": "user", "content": content } });
    let row: Option<Row> = events::bind_append(sqlx::query_as(sqlx::AssertSqlSafe(POST_ROUTINE.call())), org_id)
        .bind(session_id)
        .bind(turn_id)
        .bind(model_id)
        .bind(EventId::new())
        .bind(data)
        .bind(EventId::new())
        .bind(QUEUE)
        .bind(task)
        .bind(TASK_MAX_ATTEMPTS)
        .fetch_optional(&mut *tx)
        .await?;
    let (status, limit, active, model_ok, id, sequence, data, ts) = row.ok_or(Error::NotFound("session"))?;
    if !model_ok {
        return Err(Error::NotFound("model"));
    }
    if status == "waiting" {
        return Ok(None);
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
    Ok(Some(Posted { message, turn_id, turn_status }))
}

/// [`post_message`]'s statement as a routine (`turnstone.post_message`), with
/// the org's scope: called outside a transaction it is a whole POST in one
/// round trip (`BEGIN` and `COMMIT` were two more); inside one (an
/// `Idempotency-Key`'s) it is a statement of it.
///
/// Self-contained: should the session have no sequence row (it always has
/// one), nothing at all is written — the session and task writes require the
/// message's row — since no caller's rollback may be there to undo them.
pub(crate) static POST_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| {
    Routine {
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
    prelude: "PERFORM turnstone.enter_org($1);",
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
                SELECT l.*, l.status = 'idle' AS idle,
                       l.model_ok AND l.status <> 'waiting' AND (l.active IS NULL OR l.active < l.lim) AS go
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
}
});

/// Locks the session row (serialising every writer of the session) and returns its status.
pub(super) async fn lock_session(tx: &mut PgConnection, org_id: OrgId, session_id: SessionId) -> Result<String> {
    sqlx::query_scalar("SELECT status FROM sessions WHERE org_id = $1 AND id = $2 FOR UPDATE")
        .bind(org_id)
        .bind(session_id)
        .fetch_optional(tx)
        .await?
        .ok_or(Error::NotFound("session"))
}
