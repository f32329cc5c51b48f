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

/// Turnstone's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations (ours, then apalis'). Safe to run from several
/// processes at once: both migrators take an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| crate::Error::Queue(e.to_string()))?;
    Ok(())
}

/// True when every embedded migration has been applied (the `/ready` check).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(applied.unwrap_or(0) >= latest)
}
