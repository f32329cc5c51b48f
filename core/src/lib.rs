//! Turnstone's domain core: ids, the event model, every SQL statement, the turn
//! queue's transitions, the capability registry and secret encryption.
//!
//! The control plane (`turnstone-api`) and the workers (`turnstone-worker`) both
//! depend on this crate and on nothing else of each other. PostgreSQL is the only
//! channel between them, so everything they must agree on — table shapes, event
//! types, NOTIFY channels and payloads, task arguments — is defined here once.
//!
//! This crate must not know HTTP (no poem types), must not call LLMs, and must
//! not hold cross-process state in memory ([`history`] only caches immutable log prefixes).
//!
//! # Layout
//! - [`error`]: the crate's one error enum.
//! - [`env`](mod@env): reading configuration variables, with one set of rules.
//! - [`ids`]: UUIDv7 ids and their prefixed wire form (`agt_…`, `ses_…`).
//! - [`limits`]: size limits shared by validation and the OpenAPI schema.
//! - [`crypto`]: master keys, data keys and XChaCha20-Poly1305 sealing.
//! - [`keychain`]: the per-org key chain in the database, and key rotations.
//! - [`db`]: pool construction and migrations.
//! - [`orgs`]: organisations, API keys and first-start bootstrap.
//! - [`providers`], [`agents`], [`sessions`]: tenant resources.
//! - [`quotas`]: per-org quotas and the per-key rate limit.
//! - [`events`]: the append-only event log and its NOTIFY wake-ups.
//! - [`conversation`]: the order messages are read back in (each turn's input, then its outputs).
//! - [`history`]: a worker's cache of conversation prefixes it has read (the log is immutable).
//! - [`queue`]: the task queue table — enqueue, batched claim/complete, heartbeats, reclaim.
//! - [`turns`]: a turn's transitions — post, start, guarded step commits, seal, cancel.
//! - [`storage`]: the session filesystem and key-value store, and their tools.
//! - [`capabilities`]: the registry of tools an agent can enable (with [`math`]).
//! - [`tools`]: client tools, tool policies and the approval's argument hash.
//! - [`page`]: cursor pagination.
//! - [`validate`]: length, tag and URL rules with stable error codes.
//! - [`telemetry`]: logs (text or JSON) and optional OpenTelemetry trace export.
//! - [`idempotency`]: stored first responses for `Idempotency-Key` retries.

pub mod agents;
pub mod capabilities;
pub mod conversation;
pub mod crypto;
pub mod db;
pub mod env;
pub mod error;
pub mod events;
pub mod history;
pub mod idempotency;
pub mod ids;
pub mod keychain;
pub mod limits;
pub mod math;
pub mod orgs;
pub mod page;
pub mod providers;
pub mod queue;
pub mod quotas;
pub mod sessions;
pub mod storage;
pub mod telemetry;
pub mod tools;
pub mod turns;
pub mod validate;

pub use error::{Error, Result};
