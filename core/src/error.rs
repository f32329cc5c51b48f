//! The one error type of the core crate; the API maps it to HTTP in one place.

/// Everything core can fail with. `code` strings are stable: clients match on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource does not exist *in this org* (another org's id looks the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is well-formed but invalid; `code` is a stable identifier.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The request conflicts with the current state of a resource.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well-formed, valid in itself, and yet naming something the resource
    /// does not hold (422): a tool call id that is not pending.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// A quota of the org is used up (403).
    #[error("{0}")]
    QuotaExceeded(String),
    /// Too many requests or turns right now; retry after the given seconds (429).
    #[error("{message}")]
    TooMany { code: &'static str, message: String, retry_after_secs: u32 },
    /// A write's precondition (`If-Match`, `If-None-Match`, an expected version) does not hold (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Too large for a limit: a file, a value, a session's or an org's storage (413).
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// A stale owner tried to commit a step of a turn it no longer holds.
    #[error("turn lease lost")]
    LeaseLost,
    /// Secret decryption or key parsing failed. Never carries key material.
    #[error("crypto: {0}")]
    Crypto(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("task queue: {0}")]
    Queue(String),
    /// A batched operation this call was part of failed; the cause is shared by every call in the batch.
    #[error("{0}")]
    Batched(std::sync::Arc<Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable { code, message: message.into() }
    }

    /// True when the database could not be reached (as opposed to a query error),
    /// so callers can answer 503 and retry instead of failing for good.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Batched(e) => e.is_unavailable(),
            Error::Database(e) => {
                matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_))
                    || e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
            }
            _ => false,
        }
    }

    /// True for a foreign-key violation (SQLSTATE 23503): the row is still referenced.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, Error::Database(e) if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()))
    }

    /// True for a unique-constraint violation (SQLSTATE 23505).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Batched(e) => e.is_unique_violation(),
            Error::Database(e) => e.as_database_error().is_some_and(|d| d.is_unique_violation()),
            _ => false,
        }
    }
}
