//! Per-org quotas (agents, sessions, concurrent turns) and the per-key rate
//! limit. Agent and session counts are taken under a lock on the org row, in
//! the same transaction as the insert they guard, so concurrent requests
//! cannot overshoot them. The concurrent-turn quota is read without that lock,
//! together with the session's own lock (`turns::post_message`): every message
//! that wakes a session checks it, and serialising them all on the org row
//! would cap admission. Simultaneous requests may overshoot it by their number;
//! it is a load shedder.

use crate::ids::{ApiKeyId, OrgId};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgConnection;

use crate::error::{Error, Result};

/// A quota checked under the org row's lock.
#[derive(Debug, Clone, Copy)]
pub enum Quota {
    Agents,
    Sessions,
}

/// Fails when creating one more of `what` would exceed the org's quota.
pub async fn check(conn: &mut PgConnection, org_id: OrgId, what: Quota) -> Result<()> {
    let (limit_sql, count_sql) = match what {
        Quota::Agents => (
            "SELECT max_agents FROM orgs WHERE id = $1 FOR NO KEY UPDATE",
            "SELECT count(*) FROM agents WHERE org_id = $1 AND archived_at IS NULL",
        ),
        Quota::Sessions => {
            ("SELECT max_sessions FROM orgs WHERE id = $1 FOR NO KEY UPDATE", "SELECT count(*) FROM sessions WHERE org_id = $1")
        }
    };
    let limit: i32 =
        sqlx::query_scalar(limit_sql).bind(org_id).fetch_optional(&mut *conn).await?.ok_or(Error::NotFound("org"))?;
    let used: i64 = sqlx::query_scalar(count_sql).bind(org_id).fetch_one(&mut *conn).await?;
    if used < i64::from(limit) {
        return Ok(());
    }
    Err(Error::QuotaExceeded(match what {
        Quota::Agents => format!("the org's quota of {limit} active agents is used up"),
        Quota::Sessions => format!("the org's quota of {limit} sessions is used up"),
    }))
}

/// Fails when `active` sessions leave no room under the org's `limit` of concurrent turns.
pub fn concurrent_turns_within(limit: i32, active: i64) -> Result<()> {
    if active < i64::from(limit) {
        return Ok(());
    }
    Err(Error::TooMany {
        code: "too_many_concurrent_turns",
        message: format!("the org already runs its limit of {limit} concurrent turns; retry shortly"),
        retry_after_secs: 1,
    })
}

/// Counts one request of `key_id` in the current one-minute window (in the
/// caller's transaction, scoped to the key's org); fails once `limit` (the
/// org's per-key requests per minute, 0 = unlimited) is reached, saying when
/// the window resets.
pub async fn count_request(
    conn: &mut PgConnection,
    org_id: OrgId,
    key_id: ApiKeyId,
    limit: i32,
    now: DateTime<Utc>,
) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    let window = now.duration_trunc(TimeDelta::minutes(1)).expect("minute truncation");
    let count: i32 = sqlx::query_scalar(
        "INSERT INTO rate_limits (key_id, org_id, window_start, count) VALUES ($1, $2, $3, 1)
         ON CONFLICT (key_id) DO UPDATE SET
            count = CASE WHEN rate_limits.window_start = EXCLUDED.window_start THEN rate_limits.count + 1 ELSE 1 END,
            window_start = EXCLUDED.window_start
         RETURNING count",
    )
    .bind(key_id)
    .bind(org_id)
    .bind(window)
    .fetch_one(conn)
    .await?;
    if count <= limit {
        return Ok(());
    }
    let reset = (window + TimeDelta::minutes(1) - now).num_seconds().max(1) as u32;
    Err(Error::TooMany {
        code: "rate_limited",
        message: format!("this key is limited to {limit} requests per minute"),
        retry_after_secs: reset,
    })
}
