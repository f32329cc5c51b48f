//! Connection pools and migrations (`migrations/`).

use crate::error::Result;
use crate::ids::{OrgId, SessionId, TypedId};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a request may wait for a pooled connection before the API answers 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this process's pools keep prepared statements across transactions
/// (`TURNSTONE_DB_PREPARED_STATEMENTS`, default true). See [`set_prepared_statements`].
static PREPARED_STATEMENTS: AtomicBool = AtomicBool::new(true);

/// Turns prepared statements off (or on) for the pools this process opens
/// afterwards, for a transaction-mode pooler that cannot carry them (PgBouncer
/// before 1.21). Off, a pool keeps no statement cache and [`autocommit`] wraps
/// each statement outside a transaction in one of its own, because sqlx
/// prepares a statement and executes it in two exchanges, each ending in a
/// `Sync`, and a transaction pooler may hand the second to another server
/// between them (docs/decisions/0015). The pooler must then discard what a
/// transaction left behind (`server_reset_query_always = 1`, README).
pub fn set_prepared_statements(on: bool) {
    PREPARED_STATEMENTS.store(on, Ordering::Relaxed);
}

/// See [`set_prepared_statements`].
pub fn prepared_statements() -> bool {
    PREPARED_STATEMENTS.load(Ordering::Relaxed)
}

fn with_statement_cache(options: PgConnectOptions) -> PgConnectOptions {
    if prepared_statements() { options } else { options.statement_cache_capacity(0) }
}

/// A pool with bounded size and a short acquire timeout, so an unreachable
/// database turns into a fast error instead of a hung request.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = with_statement_cache(PgConnectOptions::from_str(url)?.application_name("turnstone"));
    Ok(pool_options(max_connections).connect_with(options).await?)
}

/// The connection a process LISTENs on: a session of its own that a
/// transaction pooler cannot provide, so it is opened from its own URL
/// (`TURNSTONE_LISTEN_DATABASE_URL`, a direct connection; default
/// `DATABASE_URL`), named `application_name`, and only ever used for
/// `sqlx::postgres::PgListener::connect_with`. Connects on first use.
pub fn listen_pool(url: &str, application_name: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.application_name(application_name);
    Ok(pool_options(2).connect_lazy_with(options))
}

/// A connection to run one statement on, outside any transaction of the
/// caller's: the pooled connection itself, or — with prepared statements off
/// ([`set_prepared_statements`]) — a transaction of its own, so that the
/// statement's prepare and execute reach the same server through a pooler.
/// [`Autocommit::commit`] ends it; dropped uncommitted, it rolls back.
pub async fn autocommit(pool: &PgPool) -> Result<Autocommit> {
    Ok(if prepared_statements() {
        Autocommit::Connection(pool.acquire().await?)
    } else {
        Autocommit::Transaction(pool.begin().await?)
    })
}

/// See [`autocommit`].
pub enum Autocommit {
    Connection(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Transaction(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Autocommit {
    /// Commits the statement's transaction, when it has one.
    pub async fn commit(self) -> Result<()> {
        if let Autocommit::Transaction(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Autocommit {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        match self {
            Autocommit::Connection(c) => c,
            Autocommit::Transaction(t) => t,
        }
    }
}

impl std::ops::DerefMut for Autocommit {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        match self {
            Autocommit::Connection(c) => c,
            Autocommit::Transaction(t) => t,
        }
    }
}

/// A worker's pool. Like [`connect`], but connects on first use (a worker may
/// start before the database, or its role, exists and wait for it). It sets
/// nothing on its sessions, so a transaction pooler may hand its statements to
/// any backend; the batched routines it calls carry their own
/// `plan_cache_mode` ([`Routine::settings`]).
///
/// Its connections are named `turnstone-worker:<worker name>` in
/// `pg_stat_activity.application_name` (cut to PostgreSQL's 63 bytes), so an
/// operator sees which worker holds which backend.
pub fn connect_worker(url: &str, max_connections: u32, worker: &str) -> Result<PgPool> {
    let options = with_statement_cache(PgConnectOptions::from_str(url)?.application_name(&worker_application_name(worker)));
    Ok(pool_options(max_connections).connect_lazy_with(options))
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
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).test_before_acquire(false)
}

/// A hot-path transaction that is one statement after its org's scope (and
/// its locks), as a PL/pgSQL function in schema `turnstone`, defined by a
/// versioned migration ([`ROUTINES_MIGRATION`]). Called outside any
/// transaction, it is the whole transaction in one round trip — scope, locks,
/// statement and commit — where `BEGIN`, the statement and `COMMIT` took
/// three; its statements keep their plans for the session's life, as
/// prepared statements do (docs/decisions).
///
/// The SQL is built here, next to the Rust that calls it ([`Routine::call`]
/// names every parameter), and rendered into the migration; a test fails when
/// the two differ ([`routines_sql`]).
pub(crate) struct Routine {
    /// The function's name in schema `turnstone`.
    pub name: &'static str,
    /// `(name, type)` of each parameter, in the order the caller binds them.
    pub params: Vec<(&'static str, &'static str)>,
    /// The columns of `RETURNS TABLE (…)`.
    pub returns: &'static str,
    /// Statements run before the query, each ending in `;` (the org's scope, locks).
    pub prelude: &'static str,
    /// The statement whose rows are returned; it refers to the parameters as `$1`, `$2`, …
    pub query: String,
    /// `SET` clauses of the function (settings in force while it runs), or empty.
    /// The worker's batched routines take arrays, and PostgreSQL's plan cache
    /// heuristic kept planning them again at each execution (about 0.4 ms per
    /// turn) while their generic plans run as fast; every such statement
    /// filters with `= ANY(array)`, so a generic plan stays on the indexes
    /// (docs/decisions/0013).
    pub settings: &'static str,
}

/// [`Routine::settings`] of the worker's batched routines.
pub(crate) const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

impl Routine {
    /// `CREATE OR REPLACE FUNCTION turnstone.<name>(…)`. A bare name in the
    /// query is a column, never a parameter or an output name
    /// (`#variable_conflict use_column`). Each statement takes its own snapshot
    /// (the function is volatile), so locks taken in the prelude are held when
    /// the query's snapshot is taken.
    pub fn definition(&self) -> String {
        debug_assert!(!self.query.contains("$routine$") && !self.prelude.contains("$routine$"));
        let params: Vec<String> = self.params.iter().map(|(n, t)| format!("{n} {t}")).collect();
        format!(
            "CREATE OR REPLACE FUNCTION turnstone.{name}({params})\nRETURNS TABLE ({returns})\nLANGUAGE plpgsql{settings} AS $routine$\n\
             #variable_conflict use_column\nBEGIN\n{prelude}\nRETURN QUERY {query};\nEND $routine$;\n",
            name = self.name,
            settings = if self.settings.is_empty() { String::new() } else { format!(" {}", self.settings) },
            params = params.join(", "),
            returns = self.returns,
            prelude = self.prelude,
            query = self.query,
        )
    }

    /// `SELECT * FROM turnstone.<name>(<param> => $1, …)`: the call the Rust binds, in named notation.
    pub fn call(&self) -> String {
        let args: Vec<String> = self.params.iter().enumerate().map(|(i, (n, _))| format!("{n} => ${}", i + 1)).collect();
        format!("SELECT * FROM turnstone.{}({})", self.name, args.join(", "))
    }
}

/// The migration that defines the current [`Routine`]s (`migrations/<this>.sql`).
/// A change to a routine's SQL is a new migration: write [`routines_sql`]'s
/// output to it (`scripts/routines`) and name it here.
pub const ROUTINES_MIGRATION: &str = "20261206200001_routines";

/// The SQL of [`ROUTINES_MIGRATION`]: the schema, every routine, and who may call them.
pub fn routines_sql() -> String {
    use crate::storage::{files, kv};
    use crate::turns::{POST_ROUTINE, SEAL_ROUTINES, START_ROUTINE, STEP_ROUTINE};
    let mut sql = String::from(
        "-- Generated by `scripts/routines` from core/src (db::routines_sql); a test fails when they differ.\n\
         -- The hot path's transactions, each one statement after its org's scope and locks (core/src/db.rs, Routine).\n\
         CREATE SCHEMA IF NOT EXISTS turnstone;\n\
         GRANT USAGE ON SCHEMA turnstone TO turnstone_api, turnstone_worker;\n",
    );
    for routine in [
        &*POST_ROUTINE,
        &*START_ROUTINE,
        &*STEP_ROUTINE,
        &SEAL_ROUTINES[0],
        &SEAL_ROUTINES[1],
        &*files::WRITE_ROUTINE,
        &*files::DELETE_ROUTINE,
        &*files::MOVE_ROUTINE,
        &*kv::SET_ROUTINE,
        &*kv::DELETE_ROUTINE,
    ] {
        sql.push('\n');
        sql.push_str(&routine.definition());
    }
    sql
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
/// The tenancy scope has one idiom: `turnstone.enter_org(org)` (migration
/// `20261206000013_org_scope`), called here in the `BEGIN`, by [`enter_org`] in a
/// transaction that learns its org late, and by each [`Routine`]'s prelude.
///
/// One round trip: the call rides in the `BEGIN` simple query. Inlining
/// is safe because a `Uuid` formats as 36 characters of hex and dashes.
pub async fn begin_org(pool: &PgPool, org_id: OrgId) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let begin = format!("BEGIN; SELECT turnstone.enter_org('{}')", org_id.uuid().hyphenated());
    Ok(pool.begin_with(sqlx::AssertSqlSafe(begin)).await?)
}

/// Scopes a transaction already begun to `org_id` (one that first had to learn
/// its org, such as the API key check).
pub async fn enter_org(tx: &mut sqlx::PgConnection, org_id: OrgId) -> Result<()> {
    sqlx::query("SELECT turnstone.enter_org($1)").bind(org_id).execute(tx).await?;
    Ok(())
}

/// [`begin_org`] that also takes these sessions' row locks, in id order — what
/// every writer of sessions does first (lock order: session row, then turn
/// row) — in the same round trip. A session that does not exist (or is
/// another org's) is simply not locked; the caller's guarded statements then
/// find nothing. The locks are taken by a function of the migrations
/// (`turnstone_lock_sessions`), which keeps its plan for the connection's
/// life: the same statement inlined in this simple query was planned again at
/// every transaction (0.13 ms of planning, 0.02 ms of execution). (The hot
/// path's transactions are [`Routine`]s instead.)
pub async fn begin_sessions(
    pool: &PgPool,
    org_id: OrgId,
    sessions: &[SessionId],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let begin = format!(
        "BEGIN; SELECT turnstone.enter_org('{}'); SELECT turnstone_lock_sessions({}::uuid[])",
        org_id.uuid().hyphenated(),
        uuid_array(sessions)
    );
    Ok(pool.begin_with(sqlx::AssertSqlSafe(begin)).await?)
}

/// An array literal of uuids. Inlining is safe: a `Uuid` formats as hex and dashes only.
fn uuid_array(ids: &[SessionId]) -> String {
    let list: Vec<String> = ids.iter().map(|t| t.uuid().hyphenated().to_string()).collect();
    format!("'{{{}}}'", list.join(","))
}

/// True when every embedded migration has been applied (the `/ready` check).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let mut c = autocommit(pool).await?;
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&mut *c).await?;
    c.commit().await?;
    Ok(applied.unwrap_or(0) >= latest)
}

/// True when this pool's role skips row-level security (superuser or BYPASSRLS).
pub async fn bypasses_row_security(pool: &PgPool) -> Result<bool> {
    let mut c = autocommit(pool).await?;
    let bypasses = sqlx::query_scalar("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *c)
        .await?;
    c.commit().await?;
    Ok(bypasses)
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
    fn the_routines_migration_is_what_the_code_renders() {
        let path = format!("{}/../migrations/{}.sql", env!("CARGO_MANIFEST_DIR"), super::ROUTINES_MIGRATION);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == super::routines_sql(),
            "{path} differs from the routines in core/src. A migration never changes once released: write the \
             routines to a new one with `scripts/routines <YYYYMMDDhhmmss>` and set db::ROUTINES_MIGRATION to its name"
        );
    }

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
