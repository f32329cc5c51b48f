//! The README's quickstart works as written: its lines, run by bash against a
//! live stack, print the tool's answer; and `scripts/dev` prints exactly them.

use std::process::Stdio;

use turnstone_tests::{Stack, readme};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn readme_quickstart() -> String {
    readme::block("quickstart")
}

#[test]
fn scripts_dev_prints_the_readme_quickstart_character_for_character() {
    let dev = std::fs::read_to_string(format!("{ROOT}/scripts/dev")).expect("scripts/dev");
    let line = dev.lines().find(|l| l.starts_with("quickstart=$(")).expect("scripts/dev extracts the quickstart");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("root={ROOT}; {line}; printf '%s\\n' \"$quickstart\""))
        .output()
        .expect("bash runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), readme_quickstart());
    assert!(dev.contains("\n$quickstart\n"), "scripts/dev prints what it extracted");
}

#[tokio::test]
async fn the_readme_quickstart_prints_the_tools_answer() {
    // Arrange: its first line points at `scripts/dev`'s defaults; the rest runs against this stack.
    let stack = Stack::start().await;
    let quickstart = readme_quickstart();
    let (first, rest) = quickstart.split_once('\n').unwrap();
    assert_eq!(first, "export TS=http://127.0.0.1:8080 KEY=$(cat .turnstone/api_key)");

    // Act
    let stdout = readme::run(&stack, rest, &[]).await;

    // Assert
    let messages = stdout.lines().last().expect("the messages list is printed last");
    assert!(messages.contains("tool math returned: 42"), "{messages}");
}

#[tokio::test]
async fn the_readme_storage_example_downloads_the_agents_edit() {
    // Arrange
    let stack = Stack::start().await;

    // Act
    let stdout = readme::run(&stack, &format!("set -e\n{}", readme::block("storage-example")), &[]).await;

    // Assert: what it downloads last is the file as the agent edited it.
    assert!(stdout.ends_with("# Plan\n- [x] draft\n"), "{stdout}");
    assert!(stdout.contains(r#""path":"/plan.md""#), "the upload answered its metadata: {stdout}");
}

#[tokio::test]
async fn the_readme_cli_quickstart_prints_the_tools_answer() {
    // Arrange: the block's first two lines point at `scripts/dev`'s build and stack; the test
    // puts its build on PATH and logs in to its own stack instead, in a home of its own.
    let block = readme::block("cli-quickstart");
    let mut lines = block.lines();
    assert_eq!(lines.next(), Some("export PATH=$PWD/target/debug:$PATH   # or: cargo install --path cli"));
    assert_eq!(lines.next(), Some(r#"turnstone login --url http://127.0.0.1:8080 --key "$(cat .turnstone/api_key)""#));
    let rest: Vec<&str> = lines.collect();
    let stack = Stack::start().await;
    let home = std::env::temp_dir().join(format!("turnstone-readme-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&home).unwrap();
    let script = format!("set -e\nturnstone login --url \"$TS\" --key \"$KEY\"\n{}\n", rest.join("\n"));

    // Act
    let path = format!("{}:{}", turnstone_tests::procs::bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env("HOME", &home)
        .env("TS", &stack.base)
        .env("KEY", &stack.key)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("TURNSTONE_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(turnstone_tests::DEADLINE, run).await.expect("the quickstart finishes").expect("bash runs");
    let _ = std::fs::remove_dir_all(&home);

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}; stdout: {stdout}; stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("← math: 42\ntool math returned: 42\n"), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().contains("tool math returned: 42"),
        "the messages table ends with the answer: {stdout}"
    );
}

#[tokio::test]
async fn the_readme_waiting_walkthrough_resolves_a_client_tool_and_an_approval() {
    // Arrange: the walkthrough, after the quickstart's variables.
    let stack = Stack::start().await;

    // Act
    let stdout = readme::run(&stack, &readme::block("waiting"), &[]).await;

    // Assert
    assert!(stdout.contains("\"resumed\":true"), "{stdout}");
    let messages = stdout.lines().last().expect("the messages list is printed last");
    assert!(messages.contains("tool lookup_order returned: shipped"), "{messages}");
    assert!(messages.contains("tool math returned: 42"), "{messages}");
}
