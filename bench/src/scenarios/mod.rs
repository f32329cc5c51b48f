//! The scenarios of issue 5, one module each (turn latency and throughput share `turns`),
//! and issue 19's `storage`.

pub mod concurrency;
pub mod fanout;
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
