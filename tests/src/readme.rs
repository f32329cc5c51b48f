//! The README's walkthroughs, run as written: a block is the `sh` code between
//! `<!-- NAME:begin -->` and `<!-- NAME:end -->`, run by bash against a live stack.

use std::process::Stdio;

use crate::Stack;

/// The lines of the README's `sh` block between the `name` markers.
pub fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let marker = format!("<!-- {name}:begin -->\n```sh\n");
    let start = readme.find(&marker).unwrap_or_else(|| panic!("README marker {marker:?}")) + marker.len();
    let end = readme.find(&format!("```\n<!-- {name}:end -->")).unwrap_or_else(|| panic!("README end marker of {name}"));
    readme[start..end].to_owned()
}

/// Runs `script` with bash against `stack` (`TS`, `KEY`, the quickstart's `H` and `J`, and `env`);
/// its stdout once it exited 0 within the deadline.
pub async fn run(stack: &Stack, script: &str, env: &[(&str, &str)]) -> String {
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("H=\"Authorization: Bearer $KEY\"; J='content-type: application/json'\n{script}"))
        .env("TS", &stack.base)
        .env("KEY", &stack.key)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(crate::DEADLINE, run).await.expect("the walkthrough finishes").expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exit {:?}; stdout: {stdout}; stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}
