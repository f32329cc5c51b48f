//! A turn's transitions: one turn per input message, one running turn per session.
//!
//! Each transition is one transaction that also appends its events; a file each:
//! - `post.rs` — [`post_message`]: append `input.message`; insert the turn as
//!   `queued` (its task queued in `task_queue` in the same transaction) when the
//!   session is idle, else as `pending` behind the running turn.
//! - `start.rs` — [`start_many`]: a worker takes the turn; `attempt` is bumped
//!   and becomes the fencing token of every later write.
//! - `step.rs` — [`commit_step`]: a step's events commit only if the caller
//!   still holds the current attempt; `events.step_key` is unique per turn, so a
//!   step can never be recorded twice. [`StepTx`] is the same commit at the end
//!   of a transaction holding a storage tool's writes.
//! - `seal.rs` — [`seal_many`]: the terminal event, then the next pending turn
//!   is enqueued or the session goes idle.
//! - `cancel.rs` — [`cancel()`]: a turn no worker holds (queued or waiting)
//!   is sealed at once; a running one is flagged for its worker to seal.
//! - `wait.rs` — [`park`]: a turn waits for client tool results or approvals,
//!   holding nothing; [`submit_results`], [`decide`], [`supersede`] and
//!   [`expire`] resolve what it waits for, and the last resolution resumes it.
//!
//! `context.rs` reads what a worker runs a turn from ([`load_contexts`]); this
//! file holds the vocabulary the transitions share.
//!
//! Lock order is always session row, then turn row, so concurrent posts,
//! steps and seals never deadlock; writers of several sessions lock them
//! in id order first.
//!
//! Statements over many turns reach each table through `= ANY(array)`, which
//! keeps every access on an index whatever the planner guesses of the array's
//! size. They do not join that table to the array (`unnest`) as well: under a
//! generic plan the table's index scan leads and the array is rescanned for
//! each of its rows — quadratic in the batch. A row's own values are looked
//! up by position (`array_position`) instead, and a join to a CTE (guessed at
//! one row) leads with the CTE. (The seal's task deletion keeps its `unnest`
//! join: its plan leads with the array, semi-joined to the sealed turns.)

mod cancel;
mod context;
mod post;
mod seal;
mod start;
mod step;
mod wait;

use crate::ids::{ModelId, OrgId, SessionId, TurnId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::NewEvent;
use crate::queue;

pub use cancel::{CANCEL_CHANNEL, Cancelled, cancel, cancel_requested};
pub use context::{TurnContext, load_context, load_contexts};
pub use post::{Posted, content_text, post_message, validate_content};
pub use seal::{commit_and_seal, seal, seal_many};
pub use start::{start, start_many};
pub use step::{StepTx, assistant_message_data, commit_step, reason_started};
pub use wait::{
    Decided, Decision, Expiry, Parked, Pending, Submitted, ToolResult, WaitCall, WaitKind, decide, expire, list_pending, park,
    submit_results, supersede,
};

pub(crate) use post::POST_ROUTINE;
pub(crate) use seal::SEAL_ROUTINES;
pub(crate) use start::START_ROUTINE;
pub(crate) use step::STEP_ROUTINE;

/// The queue (`task_queue.queue`) turn tasks live in.
pub const QUEUE: &str = "turns";

/// A turn task's `max_attempts`: attempts are bounded by our own
/// forward-progress rules (`no_progress`), not the queue's retry budget.
const TASK_MAX_ATTEMPTS: i32 = 1000;

/// The task payload: everything else is read from the database.
/// `org_id` scopes the worker's transactions (row-level security).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TurnTask {
    pub turn_id: TurnId,
    pub org_id: OrgId,
    /// A waiting turn's deadline timer: the worker first expires what is due ([`expire`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

/// One part of a message's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
}

/// A worker's hold on a running turn. `attempt` fences every write.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub turn_id: TurnId,
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub attempt: i32,
    pub input_sequence: i64,
    pub model_id: Option<ModelId>,
    pub started_at: DateTime<Utc>,
    /// The queue task this run holds, if any: completed in the transaction
    /// that seals the turn, so the seal needs no acknowledgement of its own.
    #[sqlx(skip)]
    pub task: Option<QueueTask>,
}

/// A claim of a `task_queue` row and the worker holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTask {
    pub held: queue::Held,
    pub worker: String,
}

/// Result of trying to start a turn (returned once per run; the size gap is harmless).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// Run it: the lease, and the context read right after taking it.
    Run(Lease, TurnContext),
    /// The turn is already sealed (a duplicate or late task).
    Sealed,
}

/// What [`start_many`] did with one turn.
#[derive(Debug)]
pub enum Started {
    /// Run it under this lease (read its context next: [`load_contexts`]).
    Run(Lease),
    /// Nothing to run: the turn was sealed already or by a guard now, or does not exist.
    Sealed,
}

/// Token usage of one step, added to the turn's totals.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// How a turn ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed,
    Failed { code: String, message: String },
    Cancelled,
}

impl Outcome {
    /// The turn's terminal status and error code.
    fn status(&self) -> (&'static str, Option<&str>) {
        match self {
            Outcome::Completed => ("completed", None),
            Outcome::Failed { code, .. } => ("failed", Some(code)),
            Outcome::Cancelled => ("cancelled", None),
        }
    }
}

/// A turn to seal: its last step's events and usage (possibly none) and how it ended.
#[derive(Debug, Clone)]
pub struct Seal {
    pub lease: Lease,
    pub events: Vec<NewEvent>,
    pub iterations: i32,
    pub usage: Usage,
    pub outcome: Outcome,
}

impl Seal {
    /// Sealing with no last step.
    pub fn bare(lease: &Lease, outcome: Outcome) -> Self {
        Seal { lease: lease.clone(), events: Vec::new(), iterations: 0, usage: Usage::default(), outcome }
    }
}
