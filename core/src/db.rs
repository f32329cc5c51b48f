//! Connection pools and migrations: Turnstone's own (`migrations/`) and apalis' task-queue schema.

use crate::error::Result;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// How long a request may wait for a pooled connection before the API answers 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool with bounded size and a short acquire timeout, so an unreachable
/// database turns into a fast error instead of a hung request.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.application_name("turnstone");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Like [`connect`], but connects on first use: a worker may start before the
/// database (or its role) exists and wait for it.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.application_name("turnstone");
    Ok(PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options))
}

/// Turnstone's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations (apalis' queue schema, then ours, which grants
/// on it). Safe to run from several processes at once: both migrators take an
/// advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| crate::Error::Queue(e.to_string()))?;
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Begins a transaction scoped to one org: row-level security shows and
/// accepts only that org's rows until it ends.
pub async fn begin_org(pool: &PgPool, org_id: uuid::Uuid) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('turnstone.org_id', $1, true)").bind(org_id.to_string()).execute(&mut *tx).await?;
    Ok(tx)
}

/// True when every embedded migration has been applied (the `/ready` check).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(applied.unwrap_or(0) >= latest)
}
