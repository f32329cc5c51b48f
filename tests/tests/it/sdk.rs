//! The SDKs generated from the contract (`scripts/sdk`: Python by openapi-python-client,
//! TypeScript by openapi-typescript + openapi-fetch) each run a full turn against a live stack
//! with their hand-written event-stream readers: an agent, a session, two messages, the replies
//! streamed across server-cycled connections (every 0.5 s) with every stored event once and in
//! order, the messages read back, a resume from an event id, and problems raised as the SDK's
//! error type. `scripts/test` generates both first; a missing SDK or toolchain fails under CI and
//! is reported as not run elsewhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use turnstone_tests::{Stack, StackOptions};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// `path` when it exists; otherwise fails under CI and says the test did not run elsewhere.
fn required(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "{what} not found at {}; scripts/test runs scripts/sdk", path.display());
    eprintln!("SKIPPED: {what} not found at {}; run scripts/sdk (scripts/test does)", path.display());
    None
}

async fn stack() -> Stack {
    Stack::start_with(StackOptions { sse_max_connection: Duration::from_millis(500), ..Default::default() }).await
}

async fn run(mut cmd: tokio::process::Command, done: &str) {
    let run = cmd.kill_on_drop(true).output();
    let out = tokio::time::timeout(2 * turnstone_tests::DEADLINE, run).await.expect("the SDK test finishes").expect("it runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(done), "exit {:?}:\n{text}", out.status);
}

#[tokio::test]
async fn the_python_sdk_runs_a_turn_and_streams_it() {
    let sdk = Path::new(ROOT).join("sdk/python");
    let Some(_) = required(sdk.join("turnstone_client/client.py"), "the generated Python SDK") else { return };
    let python = std::env::var_os("TURNSTONE_OPENAPI_PYTHON_CLIENT")
        .map(|p| PathBuf::from(p).with_file_name("python"))
        .unwrap_or_else(|| Path::new(ROOT).join(".turnstone/py-tools/bin/python"));
    let Some(python) = required(python, "the Python tools' venv") else { return };
    let stack = stack().await;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(sdk.join("test_turn.py")).args([&stack.base, &stack.key]).env("PYTHONPATH", &sdk);
    run(cmd, "sdk-python: a turn streamed across reconnects").await;
}

#[tokio::test]
async fn the_typescript_sdk_runs_a_turn_and_streams_it() {
    let sdk = Path::new(ROOT).join("sdk/typescript");
    let Some(_) = required(sdk.join("dist/index.js"), "the built TypeScript SDK") else { return };
    let stack = stack().await;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(sdk.join("test/turn.mjs")).args([&stack.base, &stack.key]).current_dir(&sdk);
    run(cmd, "sdk-typescript: a turn streamed across reconnects").await;
}
