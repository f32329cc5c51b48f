//! The worker's configuration, read from the environment with safe defaults.

use std::time::Duration;
use turnstone_core::crypto::KeyRing;

/// Everything `turnstone-worker` needs to run. Tests build it directly.
/// `Debug` is written by hand: database URLs may carry passwords.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    /// `TURNSTONE_LISTEN_DATABASE_URL`: the direct session connection this
    /// worker LISTENs on (wake-ups, cancellations); `None` uses `database_url`.
    pub listen_database_url: Option<String>,
    /// `TURNSTONE_DB_PREPARED_STATEMENTS` (default true); false behind a
    /// transaction pooler that cannot carry them (`db::set_prepared_statements`).
    pub prepared_statements: bool,
    pub keys: KeyRing,
    /// Unique per process: becomes `queue_workers.name` and `task_queue.lock_by`.
    pub name: String,
    /// Turns run at once by this process (they are I/O-bound: LLM calls).
    pub concurrency: usize,
    pub db_max_connections: u32,
    /// Fallback poll for tasks, in case a NOTIFY wake-up is missed.
    pub poll_interval: Duration,
    /// How often the worker proves it is alive.
    pub heartbeat: Duration,
    /// A worker silent for this long is dead; its turns are re-enqueued.
    pub reclaim_after: Duration,
    /// Bound on one LLM call, stream included.
    pub llm_timeout: Duration,
    /// Tries per LLM step for retryable failures (429, 5xx, timeouts).
    pub llm_max_attempts: u32,
    /// First retry delay; doubles per attempt, with full jitter.
    pub llm_backoff: Duration,
    /// On SIGTERM, how long turns in flight may run before they are released to other workers.
    pub drain: Duration,
    /// A turn retaken this many times in a row without a new committed step is failed (`no_progress`).
    pub max_stalled_starts: i32,
    /// Live token deltas are gathered this long into one NOTIFY. A reply that
    /// streams completely within the first window sends no deltas at all: its
    /// `output.message.completed` follows at once and carries the whole text.
    pub delta_window: Duration,
    /// Bytes of conversation prefixes kept in memory so that a turn's context
    /// read fetches only what its session appended since ([`turnstone_core::history`]); 0: none.
    pub history_cache_bytes: usize,
    /// The MCP client: call timeout, result cap, tool-list TTL, `TURNSTONE_ALLOW_PRIVATE_NETWORKS`.
    pub mcp: turnstone_mcp::McpConfig,
}

/// Default of `TURNSTONE_WORKER_HISTORY_CACHE_MB`.
pub const HISTORY_CACHE_MB: u64 = 64;

pub use turnstone_core::env::ConfigError;
use turnstone_core::env::{positive as number, seconds, var, whole_or_off};

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = turnstone_core::env::required("DATABASE_URL")?;
        let keys = turnstone_core::env::master_keys()?;
        let name = var("TURNSTONE_WORKER_NAME").unwrap_or_else(default_name);
        let concurrency = number("TURNSTONE_WORKER_CONCURRENCY", 32usize)?;
        Ok(Config {
            database_url,
            listen_database_url: var("TURNSTONE_LISTEN_DATABASE_URL"),
            prepared_statements: turnstone_core::env::flag("TURNSTONE_DB_PREPARED_STATEMENTS", true)?,
            keys,
            name,
            concurrency,
            db_max_connections: number("TURNSTONE_WORKER_DB_CONNECTIONS", 10u32)?,
            poll_interval: Duration::from_millis(number("TURNSTONE_WORKER_POLL_MS", 250u64)?),
            heartbeat: seconds("TURNSTONE_WORKER_HEARTBEAT_SECS", 5.0)?,
            reclaim_after: seconds("TURNSTONE_WORKER_RECLAIM_SECS", 30.0)?,
            llm_timeout: seconds("TURNSTONE_LLM_TIMEOUT_SECS", 120.0)?,
            llm_max_attempts: number("TURNSTONE_LLM_MAX_ATTEMPTS", 4u32)?,
            llm_backoff: Duration::from_millis(number("TURNSTONE_LLM_BACKOFF_MS", 250u64)?),
            drain: seconds("TURNSTONE_WORKER_DRAIN_SECS", 30.0)?,
            max_stalled_starts: number("TURNSTONE_WORKER_MAX_STALLED_STARTS", 3i32)?,
            delta_window: Duration::from_millis(number("TURNSTONE_DELTA_WINDOW_MS", 25u64)?),
            history_cache_bytes: (whole_or_off("TURNSTONE_WORKER_HISTORY_CACHE_MB", HISTORY_CACHE_MB, 1 << 20)? << 20) as usize,
            mcp: turnstone_mcp::McpConfig::from_env()?,
        })
    }

    /// Defaults for a worker reaching `database_url`; used by tests.
    pub fn new(database_url: String, keys: KeyRing) -> Self {
        Config {
            database_url,
            listen_database_url: None,
            prepared_statements: true,
            keys,
            name: default_name(),
            concurrency: 32,
            db_max_connections: 10,
            poll_interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(5),
            reclaim_after: Duration::from_secs(30),
            llm_timeout: Duration::from_secs(120),
            llm_max_attempts: 4,
            llm_backoff: Duration::from_millis(250),
            drain: Duration::from_secs(30),
            max_stalled_starts: 3,
            delta_window: Duration::from_millis(25),
            history_cache_bytes: (HISTORY_CACHE_MB << 20) as usize,
            mcp: turnstone_mcp::McpConfig::default(),
        }
    }
}

/// `worker-<host>-<pid>-<random>`: unique even for two workers in one process (tests).
fn default_name() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
    format!("worker-{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &turnstone_core::db::redact_url(&self.database_url))
            .field("keys", &self.keys)
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("db_max_connections", &self.db_max_connections)
            .field("poll_interval", &self.poll_interval)
            .field("heartbeat", &self.heartbeat)
            .field("reclaim_after", &self.reclaim_after)
            .field("llm_timeout", &self.llm_timeout)
            .field("llm_max_attempts", &self.llm_max_attempts)
            .field("llm_backoff", &self.llm_backoff)
            .field("drain", &self.drain)
            .field("max_stalled_starts", &self.max_stalled_starts)
            .field("delta_window", &self.delta_window)
            .field("mcp", &self.mcp)
            .finish()
    }
}
