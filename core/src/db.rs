//! Connection pools and migrations (`migrations/`).

use crate::error::Result;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// How long a request may wait for a pooled connection before the API answers 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool with bounded size and a short acquire timeout, so an unreachable
/// database turns into a fast error instead of a hung request.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.application_name("turnstone");
    Ok(pool_options(max_connections, Caller::Api).connect_with(options).await?)
}

/// A worker's pool. Like [`connect`], but connects on first use (a worker may
/// start before the database, or its role, exists and wait for it), and its
/// sessions use generic plans (`plan_cache_mode = force_generic_plan`): every
/// batched statement a worker runs takes arrays, and PostgreSQL's heuristic
/// kept planning them again at each execution — about 0.4 ms of planning per
/// turn (`turn_throughput`) — while their generic plans execute as fast
/// (pg_stat_statements, docs/benchmarks.md). Every such statement also filters
/// with `= ANY(array)`, so its generic plan stays on the indexes.
///
/// Its connections are named `turnstone-worker:<worker name>` in
/// `pg_stat_activity.application_name` (cut to PostgreSQL's 63 bytes), so an
/// operator sees which worker holds which backend.
pub fn connect_worker(url: &str, max_connections: u32, worker: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?
        .application_name(&worker_application_name(worker))
        .options([("plan_cache_mode", "force_generic_plan")]);
    Ok(pool_options(max_connections, Caller::Worker).connect_lazy_with(options))
}

/// `turnstone-worker:<name>`, cut at a character boundary to the 63 bytes
/// PostgreSQL keeps (it would cut it itself, possibly inside a character;
/// it also shows each non-ASCII byte as `?`).
pub fn worker_application_name(worker: &str) -> String {
    let mut name = format!("turnstone-worker:{worker}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// No ping before handing out a pooled connection: it cost a round trip per
/// acquire (a dozen per turn). A connection that died with its server fails
/// its next statement instead, is discarded by the pool, and the caller's usual
/// path for an unavailable database applies (503 + `Retry-After`, or a retry).
///
/// Every new connection creates [`ROUTINES`] and warms the ones its process
/// calls ([`warm_routines`]) before it is handed out.
fn pool_options(max_connections: u32, caller: Caller) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                create_routines(conn).await?;
                // Only a head start: a failure (before the migrations ran, say) leaves the first calls to compile them.
                if let Err(e) = warm_routines(conn, caller).await {
                    tracing::debug!(error = %e, "could not warm the routines");
                }
                Ok(())
            })
        })
}

/// Which of [`ROUTINES`] a pool's process calls.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    /// The control plane: the POST (it seals only on a cancel, rarely).
    Api,
    /// A worker: the start, the step commit and the seal that completes tasks.
    Worker,
}

/// Calls each routine `caller` uses once, with arguments that match no row
/// (the nil org, no session, no turn, empty arrays), in one round trip: a
/// function's first call on a connection compiles it and plans its statement
/// — 5 ms for the POST, whose later calls take 0.45 ms — and that cost moves
/// from the connection's first request to its opening. It writes nothing and
/// notifies no one.
pub async fn warm_routines(conn: &mut sqlx::PgConnection, caller: Caller) -> sqlx::Result<()> {
    const NIL: &str = "'00000000-0000-0000-0000-000000000000'";
    let head = format!("{NIL}, '', 0, NULL, NULL");
    let calls = match caller {
        Caller::Api => format!(
            "SELECT count(*) FROM pg_temp.turnstone_post({head}, {NIL}, {NIL}, NULL, {NIL}, '{{}}', {NIL}, '', '{{}}', 0)"
        ),
        Caller::Worker => {
            let none = |n: usize| vec!["'{}'"; n].join(", ");
            format!(
                "SELECT count(*) FROM pg_temp.turnstone_start({head}, '{{}}', 0, '{{}}');
                 SELECT count(*) FROM pg_temp.turnstone_step({head}, {}, {NIL}, {NIL}, 0, 0, 0, 0);
                 SELECT count(*) FROM pg_temp.turnstone_seal_done({head}, '', 0, {})",
                none(6),
                none(22),
            )
        }
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(calls)).execute(conn).await.map(drop)
}

/// Creates [`ROUTINES`] on a new connection (each pool does it for every
/// connection it opens). A failure names its likely cause; the pool logs it
/// (`error returned from after_connect`) and tries again until its acquire
/// timeout.
pub async fn create_routines(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(ROUTINES.as_str())).execute(conn).await {
        Ok(_) => Ok(()),
        Err(e) => Err(sqlx::Error::Configuration(
            format!(
                "could not create Turnstone's routines in the connection's temporary schema \
                 (the role needs the TEMPORARY privilege on the database): {e}"
            )
            .into(),
        )),
    }
}

/// The hot path's transactions that are one statement after their org's scope
/// (and their locks): each is a PL/pgSQL function in the connection's own
/// temporary schema (`pg_temp`), created when the pool opens the connection
/// and gone with it. Called outside any transaction, such a function is the
/// whole transaction in one round trip — scope, locks, statement and commit —
/// where `BEGIN`, the statement and `COMMIT` took three. Its statements keep
/// their plans for the connection's life, as prepared statements do.
///
/// Temporary, not a migration: the statement text stays in one place, the
/// Rust that builds it (`turns`, `events`), and cannot drift from a copy in
/// the schema. Creating them needs the `TEMPORARY` privilege on the database,
/// which PostgreSQL grants to every role by default. They are called by their
/// qualified name (`pg_temp.…`): functions are never looked up there otherwise.
pub static ROUTINES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use crate::turns::{POST_ROUTINE, SEAL_ROUTINES, START_ROUTINE, STEP_ROUTINE};
    [START_ROUTINE.as_str(), POST_ROUTINE.as_str(), STEP_ROUTINE.as_str(), SEAL_ROUTINES[0].as_str(), SEAL_ROUTINES[1].as_str()]
        .join("\n")
});

/// `CREATE FUNCTION pg_temp.<name>(<args>) RETURNS TABLE (<returns>)` in
/// PL/pgSQL: runs `prelude` (statements, each ending in `;`), then returns
/// `query`'s rows. `query` refers to the arguments as `$1`, `$2`, … — the
/// text a prepared statement would have — and a bare name in it is a column,
/// never one of the output names (`#variable_conflict use_column`). Each
/// statement takes its own snapshot (the function is volatile), so locks
/// taken in `prelude` are held when `query`'s snapshot is taken.
pub(crate) fn temp_routine(name: &str, args: &[&str], returns: &str, prelude: &str, query: &str) -> String {
    debug_assert!(!query.contains("$routine$") && !prelude.contains("$routine$"));
    format!(
        "CREATE FUNCTION pg_temp.{name}({args}) RETURNS TABLE ({returns}) LANGUAGE plpgsql AS $routine$
         #variable_conflict use_column
         BEGIN
         {prelude}
         RETURN QUERY {query};
         END $routine$;",
        args = args.join(", ")
    )
}

/// Turnstone's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations. Safe to run from several processes at once:
/// the migrator takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Begins a transaction scoped to one org: row-level security shows and
/// accepts only that org's rows until it ends.
///
/// One round trip: the setting rides in the `BEGIN` simple query. Inlining
/// is safe because a `Uuid` formats as 36 characters of hex and dashes.
pub async fn begin_org(pool: &PgPool, org_id: uuid::Uuid) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let begin = format!("BEGIN; SELECT set_config('turnstone.org_id', '{}', true)", org_id.hyphenated());
    Ok(pool.begin_with(sqlx::AssertSqlSafe(begin)).await?)
}

/// [`begin_org`] that also takes these sessions' row locks, in id order — what
/// every writer of sessions does first (lock order: session row, then turn
/// row) — in the same round trip. A session that does not exist (or is
/// another org's) is simply not locked; the caller's guarded statements then
/// find nothing. The locks are taken by a function of the migrations
/// (`turnstone_lock_sessions`), which keeps its plan for the connection's
/// life: the same statement inlined in this simple query was planned again at
/// every transaction (0.13 ms of planning, 0.02 ms of execution). (The hot
/// path's transactions are [`ROUTINES`] instead.)
pub async fn begin_sessions(
    pool: &PgPool,
    org_id: uuid::Uuid,
    sessions: &[uuid::Uuid],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let begin = format!(
        "BEGIN; SELECT set_config('turnstone.org_id', '{}', true); SELECT turnstone_lock_sessions({}::uuid[])",
        org_id.hyphenated(),
        uuid_array(sessions)
    );
    Ok(pool.begin_with(sqlx::AssertSqlSafe(begin)).await?)
}

/// An array literal of uuids. Inlining is safe: a `Uuid` formats as hex and dashes only.
fn uuid_array(ids: &[uuid::Uuid]) -> String {
    let list: Vec<String> = ids.iter().map(|t| t.hyphenated().to_string()).collect();
    format!("'{{{}}}'", list.join(","))
}

/// True when every embedded migration has been applied (the `/ready` check).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(applied.unwrap_or(0) >= latest)
}

/// True when this pool's role skips row-level security (superuser or BYPASSRLS).
pub async fn bypasses_row_security(pool: &PgPool) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetch_one(pool).await?)
}

/// A connection URL fit for logs: the password, if any, is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".into() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let sep = if path.is_empty() { "" } else { "/" };
            format!("{scheme}://{user}:***@{host}{sep}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn worker_connections_are_named_within_postgres_limit() {
        assert_eq!(super::worker_application_name("w-1"), "turnstone-worker:w-1");
        // 17 bytes of prefix, one of "a", then two-byte characters: byte 63 falls inside one.
        let long = super::worker_application_name(&format!("a{}", "é".repeat(40)));
        assert!(long.starts_with("turnstone-worker:aé"), "{long}");
        assert_eq!(long.len(), 62, "cut before the character byte 63 falls in");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact_url("postgres://u:secret@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_url("postgres://h/db"), "postgres://h/db");
        assert!(!super::redact_url("garbage secret").contains("secret"));
    }
}
