//! The session key-value store: JSON values under short keys, each with a
//! `version` every write increments and an optional expiry.
//!
//! Writes are routines ([`SET_ROUTINE`], [`DELETE_ROUTINE`]): the session's
//! lock, then one compare-and-set statement on the key's `version` that also
//! checks the limit and appends the event. An expired key reads as absent;
//! the next write of a new key to its session removes the expired ones.

use crate::ids::{OrgId, SessionId};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};

use super::files::{LOCK_PRELUDE, Precondition, WRITER_PARAMS, Written, ensure_session};
use super::{By, MAX_TTL_SECS, MAX_VALUE_BYTES, Writer, validate_key, verdict_error};
use crate::db::Routine;
use crate::error::{Error, Result};
use crate::events::{self, NewEvent};
use crate::ids::{EventId, TypedId};

/// Event types of the key-value store.
pub mod types {
    pub const KV_SET: &str = "kv.set";
    pub const KV_DELETED: &str = "kv.deleted";
}

/// A key and its value.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub version: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const LIVE: &str = "(k.expires_at IS NULL OR k.expires_at > now())";

/// `turnstone.kv_set`.
pub(crate) static SET_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| {
    Routine {
    name: "kv_set",
    params: [
        &events::APPEND_PARAMS[..],
        &WRITER_PARAMS[..],
        &[("kv_key", "text"), ("kv_value", "jsonb"), ("ttl_secs", "int8"), ("if_version", "int8"), ("if_none_match", "bool")],
    ]
    .concat(),
    returns: "verdict text, created bool, key text, value jsonb, version int8, expires_at timestamptz, updated_at timestamptz",
    prelude: LOCK_PRELUDE,
    settings: "",
    query: format!(
        "WITH lim AS (
                SELECT o.max_session_keys, EXISTS (SELECT 1 FROM sessions s WHERE s.org_id = $1 AND s.id = $6) AS session_ok
                  FROM orgs o WHERE o.id = $1
             ), cur AS (
                SELECT k.version FROM kv k WHERE k.org_id = $1 AND k.session_id = $6 AND k.key = $10 AND {LIVE}
             ), verdict AS (
                SELECT CASE
                    WHEN NOT lim.session_ok THEN 'not_found'
                    WHEN $13::int8 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cur WHERE cur.version = $13) THEN 'precondition_failed'
                    WHEN $14 AND EXISTS (SELECT 1 FROM cur) THEN 'precondition_failed'
                    WHEN NOT EXISTS (SELECT 1 FROM cur)
                         AND (SELECT count(*) FROM kv k WHERE k.org_id = $1 AND k.session_id = $6 AND {LIVE}) >= lim.max_session_keys
                        THEN 'too_many_keys'
                    ELSE 'ok' END AS v
                  FROM lim
             ), purged AS (
                DELETE FROM kv k WHERE k.org_id = $1 AND k.session_id = $6 AND k.expires_at <= now() AND k.key <> $10
                   AND (SELECT v FROM verdict) = 'ok' AND NOT EXISTS (SELECT 1 FROM cur)
             ), written AS (
                INSERT INTO kv AS k (org_id, session_id, key, value, version, expires_at)
                SELECT $1, $6, $10, $11, 1, now() + make_interval(secs => $12::float8) FROM verdict WHERE v = 'ok'
                ON CONFLICT (session_id, key) DO UPDATE
                   SET value = EXCLUDED.value, version = k.version + 1, expires_at = EXCLUDED.expires_at, updated_at = now(),
                       created_at = CASE WHEN {LIVE} THEN k.created_at ELSE now() END
                 WHERE ($13::int8 IS NULL OR (k.version = $13 AND {LIVE})) AND NOT ($14 AND {LIVE})
                RETURNING k.key, k.value, k.version, k.expires_at, k.updated_at, (k.xmax = 0 OR k.created_at = k.updated_at) AS created
             ), new_events AS (
                SELECT $6::uuid AS session_id, $9::uuid AS id, 'kv.set' AS type,
                       jsonb_build_object('key', key, 'version', version, 'by', CASE WHEN $7 IS NULL THEN 'api' ELSE 'tool' END) AS data,
                       NULL::text AS step_key, $7::uuid AS turn_id, 1 AS ord
                  FROM written WHERE $8
             ), {append}
             SELECT v.v, w.created, w.key::text, w.value, w.version, w.expires_at, w.updated_at
               FROM verdict v CROSS JOIN wake LEFT JOIN written w ON true",
        append = events::append_ctes("ARRAY[$6::uuid]"),
    ),
}
});

/// `turnstone.kv_delete`.
pub(crate) static DELETE_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| {
    Routine {
    name: "kv_delete",
    params: [&events::APPEND_PARAMS[..], &WRITER_PARAMS[..], &[("kv_key", "text"), ("if_version", "int8")]].concat(),
    returns: "verdict text, version int8",
    prelude: LOCK_PRELUDE,
    settings: "",
    query: format!(
        "WITH lim AS (
                SELECT EXISTS (SELECT 1 FROM sessions s WHERE s.org_id = $1 AND s.id = $6) AS session_ok
             ), cur AS (
                SELECT k.version FROM kv k WHERE k.org_id = $1 AND k.session_id = $6 AND k.key = $10 AND {LIVE}
             ), verdict AS (
                SELECT CASE
                    WHEN NOT lim.session_ok THEN 'not_found'
                    WHEN NOT EXISTS (SELECT 1 FROM cur) THEN 'key_not_found'
                    WHEN $11::int8 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cur WHERE cur.version = $11) THEN 'precondition_failed'
                    ELSE 'ok' END AS v
                  FROM lim
             ), deleted AS (
                DELETE FROM kv k WHERE k.org_id = $1 AND k.session_id = $6 AND k.key = $10 AND (SELECT v FROM verdict) = 'ok'
                   AND ($11::int8 IS NULL OR k.version = $11) AND {LIVE}
                RETURNING k.key, k.version
             ), new_events AS (
                SELECT $6::uuid AS session_id, $9::uuid AS id, 'kv.deleted' AS type,
                       jsonb_build_object('key', key, 'version', version, 'by', CASE WHEN $7 IS NULL THEN 'api' ELSE 'tool' END) AS data,
                       NULL::text AS step_key, $7::uuid AS turn_id, 1 AS ord
                  FROM deleted WHERE $8
             ), {append}
             SELECT v.v, d.version FROM verdict v CROSS JOIN wake LEFT JOIN deleted d ON true",
        append = events::append_ctes("ARRAY[$6::uuid]"),
    ),
}
});

/// Checks a value (at most [`MAX_VALUE_BYTES`] of JSON, no NUL in its strings) and a TTL.
pub fn validate(value: &Value, ttl_secs: Option<i64>) -> Result<()> {
    let json = serde_json::to_string(value).expect("a value serialises");
    if json.len() > MAX_VALUE_BYTES {
        return Err(Error::TooLarge {
            code: "value_too_large",
            message: format!("a value is at most {MAX_VALUE_BYTES} bytes of JSON"),
        });
    }
    if json.contains("\\u0000") {
        return Err(Error::invalid("invalid_value", "a value must not contain NUL characters (PostgreSQL cannot store them)"));
    }
    if ttl_secs.is_some_and(|t| !(1..=MAX_TTL_SECS).contains(&t)) {
        return Err(Error::invalid("invalid_ttl", format!("ttl_secs must be 1-{MAX_TTL_SECS}")));
    }
    Ok(())
}

/// Sets a key on `conn` (alone, its own transaction; in a step's, it commits with the step).
pub async fn set(
    conn: &mut PgConnection,
    w: Writer,
    key: &str,
    value: &Value,
    ttl_secs: Option<i64>,
    pre: &Precondition<i64>,
) -> Result<Written<Entry>> {
    validate_key(key)?;
    validate(value, ttl_secs)?;
    let q = sqlx::query(sqlx::AssertSqlSafe(SET_ROUTINE.call()));
    let row = events::bind_append_query(q, w.org_id)
        .bind(w.session_id)
        .bind(w.by.turn())
        .bind(w.by == By::Api)
        .bind(EventId::new())
        .bind(key)
        .bind(value)
        .bind(ttl_secs)
        .bind(match pre {
            Precondition::Matches(v) => Some(*v),
            _ => None,
        })
        .bind(matches!(pre, Precondition::Absent))
        .fetch_one(conn)
        .await?;
    let verdict: String = row.try_get("verdict")?;
    if verdict != "ok" {
        return Err(verdict_error(&verdict, "key"));
    }
    let key: Option<String> = row.try_get("key")?;
    let Some(key) = key else { return Err(verdict_error("precondition_failed", "key")) };
    let entry = Entry {
        key,
        value: row.try_get("value")?,
        version: row.try_get("version")?,
        expires_at: row.try_get("expires_at")?,
        updated_at: row.try_get("updated_at")?,
    };
    let event = match w.by {
        By::Api => None,
        By::Tool { .. } => {
            Some(NewEvent::new(types::KV_SET, json!({ "key": entry.key, "version": entry.version, "by": "tool" })))
        }
    };
    Ok(Written { created: row.try_get::<Option<bool>, _>("created")?.unwrap_or(false), value: entry, event })
}

/// Deletes a key; returns the version it had.
pub async fn delete(conn: &mut PgConnection, w: Writer, key: &str, if_version: Option<i64>) -> Result<Written<i64>> {
    validate_key(key)?;
    let q = sqlx::query(sqlx::AssertSqlSafe(DELETE_ROUTINE.call()));
    let row = events::bind_append_query(q, w.org_id)
        .bind(w.session_id)
        .bind(w.by.turn())
        .bind(w.by == By::Api)
        .bind(EventId::new())
        .bind(key)
        .bind(if_version)
        .fetch_one(conn)
        .await?;
    let verdict: String = row.try_get("verdict")?;
    if verdict != "ok" {
        return Err(verdict_error(&verdict, "key"));
    }
    let version: Option<i64> = row.try_get("version")?;
    let Some(version) = version else { return Err(verdict_error("precondition_failed", "key")) };
    let event = match w.by {
        By::Api => None,
        By::Tool { .. } => Some(NewEvent::new(types::KV_DELETED, json!({ "key": key, "version": version, "by": "tool" }))),
    };
    Ok(Written { value: version, created: false, event })
}

/// A live key (`NotFound("key")` when absent or expired, `NotFound("session")` for another session).
pub async fn get(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId, key: &str) -> Result<Entry> {
    validate_key(key)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT k.key::text AS key, k.value, k.version, k.expires_at, k.updated_at
           FROM sessions s LEFT JOIN kv k ON k.org_id = s.org_id AND k.session_id = s.id AND k.key = $3 AND {LIVE}
          WHERE s.org_id = $1 AND s.id = $2"
    )))
    .bind(org_id)
    .bind(session_id)
    .bind(key)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("session"))?;
    let key: Option<String> = row.try_get("key")?;
    let Some(key) = key else { return Err(Error::NotFound("key")) };
    Ok(Entry {
        key,
        value: row.try_get("value")?,
        version: row.try_get("version")?,
        expires_at: row.try_get("expires_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Live keys starting with `prefix`, by key, after the cursor `after`; and whether more follow.
pub async fn list(
    conn: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<Entry>, bool)> {
    if !prefix.is_empty() {
        validate_key(prefix)
            .map_err(|_| Error::invalid("invalid_key", "prefix must be up to 256 characters of [A-Za-z0-9._:-]"))?;
    }
    ensure_session(&mut *conn, org_id, session_id).await?;
    let mut rows: Vec<Entry> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT k.key::text AS key, k.value, k.version, k.expires_at, k.updated_at FROM kv k
          WHERE k.org_id = $1 AND k.session_id = $2 AND starts_with(k.key, $3) AND ($4::text IS NULL OR k.key > $4) AND {LIVE}
          ORDER BY k.key LIMIT $5"
    )))
    .bind(org_id)
    .bind(session_id)
    .bind(prefix)
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows, more))
}
