//! The control plane's configuration, read from the environment with safe defaults.

use std::time::Duration;
use turnstone_core::crypto::{KeyRing, Secret};
use turnstone_core::orgs::Bootstrap;

/// Everything `turnstone-api` needs to run. Tests build it directly.
/// `Debug` is written by hand: database URLs may carry passwords.
#[derive(Clone)]
pub struct Config {
    /// Requests run here: in production a role subject to row-level security.
    pub database_url: String,
    /// Migrations and first-start bootstrap run here (the schema owner);
    /// `None` uses `database_url` (single-role mode).
    pub migrate_database_url: Option<String>,
    /// The session connection this process LISTENs on (`TURNSTONE_LISTEN_DATABASE_URL`);
    /// `None` uses `database_url`. Direct, not through a transaction pooler.
    pub listen_database_url: Option<String>,
    /// `TURNSTONE_DB_PREPARED_STATEMENTS` (default true); false for a transaction
    /// pooler that cannot carry prepared statements (`db::set_prepared_statements`).
    pub prepared_statements: bool,
    /// Maximum pooled database connections (SSE streams share them; they do not hold one each).
    pub db_max_connections: u32,
    pub keys: KeyRing,
    /// `TURNSTONE_OPERATOR_TOKEN`: bearer token for the org-management operations; unset disables them.
    pub operator_token: Option<Secret>,
    pub bootstrap: Bootstrap,
    /// SSE comment heartbeat interval.
    pub sse_heartbeat: Duration,
    /// How long an SSE connection lives before it is cycled (±20% jitter).
    pub sse_max_connection: Duration,
    /// How often each session's reader re-reads the log even without a notification.
    pub sse_fallback_poll: Duration,
    /// How often an open SSE stream re-checks that its API key is still valid.
    pub sse_key_check: Duration,
    /// Open SSE streams this process serves at most; more get 429 `too_many_streams`.
    pub sse_max_streams: usize,
    /// How long a successful API-key check is reused (0 = look every key up).
    pub auth_cache: Duration,
    /// The MCP client: timeouts, result cap, `TURNSTONE_ALLOW_PRIVATE_NETWORKS`.
    pub mcp: turnstone_mcp::McpConfig,
}

pub use turnstone_core::env::ConfigError;
use turnstone_core::env::{positive, seconds as secs, var};

impl Config {
    /// Reads `DATABASE_URL`, `TURNSTONE_MIGRATE_DATABASE_URL`, `TURNSTONE_LISTEN_DATABASE_URL`,
    /// `TURNSTONE_DB_PREPARED_STATEMENTS`, `TURNSTONE_MASTER_KEY`, `TURNSTONE_BOOTSTRAP_API_KEY`,
    /// `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `TURNSTONE_DEFAULT_MODEL`,
    /// `TURNSTONE_LLMSIM_ADDR`, `TURNSTONE_AUTH_CACHE_SECS` and the `TURNSTONE_SSE_*` knobs.
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = turnstone_core::env::required("DATABASE_URL")?;
        let keys = turnstone_core::env::master_keys()?;
        let (provider_base_url, default_model) = match var("OPENAI_BASE_URL") {
            Some(url) => (url, var("TURNSTONE_DEFAULT_MODEL").unwrap_or_else(|| "gpt-4o-mini".into())),
            None => {
                let sim = var("TURNSTONE_LLMSIM_ADDR").unwrap_or_else(|| "127.0.0.1:8090".into());
                (format!("http://{sim}/v1"), var("TURNSTONE_DEFAULT_MODEL").unwrap_or_else(|| "sim-1".into()))
            }
        };
        let db_max_connections = positive("TURNSTONE_API_DB_CONNECTIONS", 16u32)?;
        Ok(Config {
            database_url,
            migrate_database_url: var("TURNSTONE_MIGRATE_DATABASE_URL"),
            listen_database_url: var("TURNSTONE_LISTEN_DATABASE_URL"),
            prepared_statements: turnstone_core::env::flag("TURNSTONE_DB_PREPARED_STATEMENTS", true)?,
            db_max_connections,
            keys,
            operator_token: var("TURNSTONE_OPERATOR_TOKEN").map(Secret::new),
            bootstrap: Bootstrap {
                api_key: var("TURNSTONE_BOOTSTRAP_API_KEY").map(Secret::new),
                provider_base_url,
                provider_api_key: var("OPENAI_API_KEY").map(Secret::new),
                model_name: default_model,
            },
            sse_heartbeat: secs("TURNSTONE_SSE_HEARTBEAT_SECS", 15.0)?,
            sse_max_connection: secs("TURNSTONE_SSE_MAX_CONNECTION_SECS", 300.0)?,
            sse_fallback_poll: secs("TURNSTONE_SSE_FALLBACK_POLL_SECS", 5.0)?,
            sse_key_check: secs("TURNSTONE_SSE_KEY_CHECK_SECS", 30.0)?,
            sse_max_streams: positive("TURNSTONE_SSE_MAX_STREAMS", 20_000usize)?,
            auth_cache: turnstone_core::env::seconds_or_off("TURNSTONE_AUTH_CACHE_SECS", 10.0)?,
            mcp: turnstone_mcp::McpConfig::from_env()?,
        })
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &turnstone_core::db::redact_url(&self.database_url))
            .field("migrate_database_url", &self.migrate_database_url.as_deref().map(turnstone_core::db::redact_url))
            .field("listen_database_url", &self.listen_database_url.as_deref().map(turnstone_core::db::redact_url))
            .field("prepared_statements", &self.prepared_statements)
            .field("db_max_connections", &self.db_max_connections)
            .field("keys", &self.keys)
            .field("operator_token", &self.operator_token)
            .field("bootstrap", &self.bootstrap)
            .field("sse_heartbeat", &self.sse_heartbeat)
            .field("sse_max_connection", &self.sse_max_connection)
            .field("sse_fallback_poll", &self.sse_fallback_poll)
            .field("sse_key_check", &self.sse_key_check)
            .field("sse_max_streams", &self.sse_max_streams)
            .field("auth_cache", &self.auth_cache)
            .field("mcp", &self.mcp)
            .finish()
    }
}
