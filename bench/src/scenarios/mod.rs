//! The scenarios of issue 5, one module each (turn latency and throughput share `turns`),
//! issue 19's `storage`, issue 20's `waiting` and issue 21's `mcp`.

pub mod concurrency;
pub mod fanout;
pub mod mcp;
pub mod pg_baseline;
pub mod queue;
pub mod recovery;
pub mod storage;
pub mod turns;
pub mod waiting;

use serde_json::{Value, json};

/// `{"<label>": met}` for a target check.
pub fn target(targets: &mut serde_json::Map<String, Value>, label: &str, met: bool) {
    targets.insert(label.to_owned(), json!(met));
}
