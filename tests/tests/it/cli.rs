//! The `turnstone` CLI as a user runs it: the real binary as a child process against a real
//! stack. Exit codes (0 ok, 1 API error, 2 usage, 3 cannot connect), the profile file (mode 0600;
//! flags over environment over profile), `-o json` passing the API's JSON through, every noun's
//! happy path and a bad-input path, `chat` from a pipe, across server-cycled streams and under
//! Ctrl-C (SIGINT), `sessions watch` resuming with no gap and no duplicate, and `files`/`kv`
//! (bytes through unchanged, preconditions, the API's JSON), and answering waiting turns (client tool
//! results and approvals read from the next input line in `chat`; `sessions pending|tool-result|approve|deny`),
//! and `mcp` against a real loopback MCP server (header values never printed).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use turnstone_tests::{Stack, StackOptions, procs::bin_dir};

/// A user's environment: a home directory of their own, no `TURNSTONE_*` variables.
struct User {
    home: PathBuf,
}

/// What a run printed and how it exited.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    /// stdout as bytes (`stdout` is its lossy text).
    raw: Vec<u8>,
}

impl Out {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {self:?}"))
    }
}

impl User {
    fn new() -> User {
        let home = std::env::temp_dir().join(format!("turnstone-cli-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&home).unwrap();
        User { home }
    }

    fn config(&self) -> PathBuf {
        self.home.join(".config/turnstone/config.toml")
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let path = bin_dir().join("turnstone");
        assert!(path.exists(), "{} is not built; run `cargo build --bins` (scripts/test does)", path.display());
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(args)
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TURNSTONE_CONFIG")
            .env_remove("TURNSTONE_URL")
            .env_remove("TURNSTONE_API_KEY")
            .env_remove("TURNSTONE_OPERATOR_TOKEN")
            .env_remove("TURNSTONE_PROFILE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
        self.run_bytes(args, env, stdin.map(str::as_bytes)).await
    }

    async fn run_bytes(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Out {
        let mut cmd = self.command(args, env);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("turnstone runs");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text).await.unwrap();
        }
        let output = tokio::time::timeout(turnstone_tests::DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("turnstone {args:?} exits in time"))
            .unwrap();
        Out {
            code: output.status.code().expect("exited, not signalled"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            raw: output.stdout,
        }
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_with(args, env, None).await
    }

    /// Runs with `-o json`; it must exit 0 and print one JSON document.
    async fn ok(&self, env: &[(&str, &str)], args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.run(&all, env).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
    }

    /// Runs; it must exit `code` and say `needle` on stderr.
    async fn fails(&self, env: &[(&str, &str)], args: &[&str], code: i32, needle: &str) {
        let out = self.run(args, env).await;
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?} says {needle}: {out:?}");
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The stack's URL and key as the environment a script would set.
fn env(stack: &Stack) -> [(&'static str, &str); 2] {
    [("TURNSTONE_URL", stack.base.as_str()), ("TURNSTONE_API_KEY", stack.key.as_str())]
}

fn zero_id(prefix: &str) -> String {
    format!("{prefix}_{}", "0".repeat(32))
}

#[tokio::test]
async fn exit_codes_and_json_passthrough() {
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let user = User::new();
    let env = env(&stack);

    // 0, and `-o json` is the API's JSON: the same document a raw GET answers.
    let created =
        user.run(&["agents", "create", "--name", "cli", "--tag", "t1", "--capability", "math", "-o", "json"], &env).await;
    let agent = created.json();
    let id = agent["id"].as_str().unwrap();
    assert!(id.starts_with("agt_") && agent["capabilities"] == json!(["math"]), "{agent}");
    let shown = user.run(&["agents", "get", id, "-o", "json"], &env).await.json();
    let raw = stack.client().get(&format!("/v1/agents/{id}")).await.expect(200);
    assert_eq!(shown, raw);
    let listed = user.run(&["-o", "json", "agents", "list", "--tag", "t1"], &env).await.json();
    assert_eq!(listed, stack.client().get("/v1/agents?tag=t1").await.expect(200));
    // A table for people: a header row, then one row per agent.
    let table = user.run(&["agents", "list"], &env).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[1].starts_with(id), "{table:?}");

    // 1: the API's problem, its code and detail on stderr, nothing on stdout.
    let missing = user.run(&["agents", "get", &zero_id("agt")], &env).await;
    assert_eq!((missing.code, missing.stdout.as_str()), (1, ""), "{missing:?}");
    assert!(missing.stderr.contains("not_found") && missing.stderr.contains("404"), "{missing:?}");
    let conflict = user.run(&["sessions", "cancel", &zero_id("ses")], &env).await;
    assert_eq!(conflict.code, 1, "{conflict:?}");

    // 2: clap's usage errors, and values the contract rejects (checked before sending).
    for args in [
        &["agents", "frobnicate"][..],
        &["agents", "get"],
        &["agents", "get", "ses_nope"],
        &["agents", "create", "--name", ""],
        &["agents", "create", "--name", "x", "--capability", "no_such_capability"],
        &["-o", "yaml", "agents", "list"],
        &["chat"],
    ] {
        let out = user.run(args, &env).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty() && !out.stderr.is_empty(), "{args:?}: {out:?}");
    }
    // No configuration at all is a usage error too.
    let unconfigured = user.run(&["agents", "list"], &[]).await;
    assert_eq!(unconfigured.code, 2, "{unconfigured:?}");
    assert!(unconfigured.stderr.contains("turnstone login"), "{unconfigured:?}");

    // 3: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = user.run(&["agents", "list", "--url", &dead], &env).await;
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(unreachable.stderr.contains("cannot connect"), "{unreachable:?}");
}

#[tokio::test]
async fn login_writes_a_private_profile_and_flags_beat_environment_beat_profile() {
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let user = User::new();

    // A wrong key is refused by the API, and nothing is saved.
    let refused = user.run(&["login", "--url", &stack.base, "--key", "ts_live_wrong"], &[]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("unauthorized"), "{refused:?}");
    assert!(!user.config().exists());

    let login = user.run(&["login", "--url", &stack.base, "--key", &stack.key], &[]).await;
    assert_eq!(login.code, 0, "{login:?}");
    let meta = std::fs::metadata(user.config()).expect("the profile file exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(user.config().parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    let text = std::fs::read_to_string(user.config()).unwrap();
    assert!(text.contains("[profiles.default]") && text.contains(&stack.base), "{text}");

    // The profile alone is enough.
    assert_eq!(user.run(&["capabilities", "list"], &[]).await.code, 0);

    // The environment beats the profile; a flag beats the environment.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert_eq!(user.run(&["capabilities", "list"], &[("TURNSTONE_URL", &dead)]).await.code, 3);
    let flag = user.run(&["capabilities", "list", "--url", &stack.base], &[("TURNSTONE_URL", &dead)]).await;
    assert_eq!(flag.code, 0, "{flag:?}");
    assert_eq!(user.run(&["capabilities", "list"], &[("TURNSTONE_API_KEY", "ts_live_wrong")]).await.code, 1);
    assert_eq!(user.run(&["capabilities", "list", "--key", &stack.key], &[("TURNSTONE_API_KEY", "ts_live_wrong")]).await.code, 0);

    // Named profiles: `--profile` (or TURNSTONE_PROFILE) picks one; an unknown one is a usage error.
    let ops =
        user.run(&["login", "--profile", "ops", "--url", &stack.base, "--operator-token", &stack.operator_token], &[]).await;
    assert_eq!(ops.code, 0, "{ops:?}");
    assert_eq!(user.run(&["orgs", "list", "--profile", "ops"], &[]).await.code, 0);
    assert_eq!(user.run(&["orgs", "list"], &[("TURNSTONE_PROFILE", "ops")]).await.code, 0);
    // The default profile has no operator token.
    assert_eq!(user.run(&["orgs", "list"], &[]).await.code, 2);
    assert_eq!(user.run(&["capabilities", "list", "--profile", "nope"], &[]).await.code, 2);
    assert_eq!(std::fs::metadata(user.config()).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn every_noun_has_a_happy_path_and_a_bad_input_path() {
    let stack = Stack::start().await;
    let user = User::new();
    let env = env(&stack);
    // providers and models
    let sim = stack.sim.base_url();
    let provider = user.ok(&env, &["providers", "create", "--name", "p2", "--base-url", &sim, "--api-key", "sk-x"]).await;
    let pid = provider["id"].as_str().unwrap().to_owned();
    assert_eq!(provider["has_api_key"], true);
    assert_eq!(user.ok(&env, &["providers", "get", &pid]).await["name"], "p2");
    assert!(user.ok(&env, &["providers", "list"]).await["data"].as_array().unwrap().len() >= 2);
    assert_eq!(user.ok(&env, &["providers", "update", &pid, "--name", "p3"]).await["name"], "p3");
    user.fails(&env, &["providers", "create", "--name", "p4", "--base-url", "ftp://x"], 1, "invalid").await;
    let model = user.ok(&env, &["models", "create", "--provider", &pid, "--name", "sim-2"]).await;
    let mid = model["id"].as_str().unwrap().to_owned();
    assert_eq!(user.ok(&env, &["models", "get", &mid]).await["name"], "sim-2");
    assert!(user.ok(&env, &["models", "list"]).await["data"].as_array().unwrap().len() >= 2);
    user.fails(&env, &["models", "get", &zero_id("mdl")], 1, "not_found").await;
    assert_eq!(user.ok(&env, &["models", "delete", &mid]).await["deleted"], mid.as_str());
    assert_eq!(user.ok(&env, &["providers", "delete", &pid]).await["deleted"], pid.as_str());
    user.fails(&env, &["providers", "delete", &pid], 1, "not_found").await;

    // agents from a file, flags over it
    let file = user.home.join("agent.json");
    std::fs::write(&file, json!({"name": "from-file", "system_prompt": "Be brief.", "tags": ["f"]}).to_string()).unwrap();
    let agent = user.ok(&env, &["agents", "create", "--file", file.to_str().unwrap(), "--name", "flag-wins"]).await;
    assert_eq!((agent["name"].as_str(), agent["system_prompt"].as_str()), (Some("flag-wins"), Some("Be brief.")));
    let aid = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(user.ok(&env, &["agents", "update", &aid, "--system-prompt", "Be kind."]).await["system_prompt"], "Be kind.");
    std::fs::write(&file, "{not json").unwrap();
    user.fails(&env, &["agents", "create", "--file", file.to_str().unwrap()], 2, "agent.json").await;

    // sessions, messages, events
    let session = user.ok(&env, &["sessions", "create", "--agent", &aid, "--title", "cli", "--tag", "s"]).await;
    let sid = session["id"].as_str().unwrap().to_owned();
    assert_eq!(user.ok(&env, &["sessions", "get", &sid]).await["title"], "cli");
    assert_eq!(user.ok(&env, &["sessions", "list", "--agent", &aid]).await["data"][0]["id"], sid.as_str());
    let accepted = user.ok(&env, &["messages", "send", &sid, "hello cli"]).await;
    assert!(accepted["turn_id"].as_str().unwrap().starts_with("trn_"), "{accepted}");
    stack.client().wait_for(&sid, "turn.completed", 1).await;
    let messages = user.ok(&env, &["messages", "list", &sid]).await;
    assert_eq!(messages["data"][1]["content"][0]["text"], "echo: hello cli");
    let events = user.ok(&env, &["events", "list", &sid, "--type", "turn.completed"]).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    user.fails(&env, &["events", "list", &sid, "--type", "no.such.type"], 2, "invalid value").await;
    user.fails(&env, &["sessions", "cancel", &sid], 1, "session_idle").await;
    user.fails(&env, &["messages", "send", &sid], 2, "content").await;
    user.fails(&env, &["sessions", "create", "--agent", &zero_id("agt")], 1, "not_found").await;
    assert!(user.ok(&env, &["agents", "archive", &aid]).await["archived_at"].is_string());

    // keys and capabilities
    let key = user.ok(&env, &["keys", "create", "--name", "ci"]).await;
    assert!(key["key"].as_str().unwrap().starts_with("ts_"), "{key}");
    let kid = key["id"].as_str().unwrap().to_owned();
    assert!(user.ok(&env, &["keys", "list"]).await["data"].as_array().unwrap().iter().any(|k| k["id"] == kid.as_str()));
    assert!(user.ok(&env, &["keys", "revoke", &kid]).await["revoked_at"].is_string());
    user.fails(&env, &["keys", "create", "--expires-at", "yesterday"], 1, "invalid").await;
    let caps = user.ok(&env, &["capabilities", "list"]).await;
    assert!(caps["data"].as_array().unwrap().iter().any(|c| c["name"] == "math"), "{caps}");

    // orgs, with the operator token
    let op_env = [("TURNSTONE_OPERATOR_TOKEN", stack.operator_token.as_str()), ("TURNSTONE_URL", stack.base.as_str())];
    let org = user.run(&["orgs", "create", "--name", "acme", "-o", "json"], &op_env).await.json();
    let oid = org["id"].as_str().unwrap().to_owned();
    let org_get = user.run(&["orgs", "get", &oid, "-o", "json"], &op_env).await.json();
    assert_eq!(org_get["name"], "acme");
    assert!(user.run(&["orgs", "list", "-o", "json"], &op_env).await.json()["data"].as_array().unwrap().len() >= 2);
    let updated = user.run(&["orgs", "update", &oid, "--max-agents", "3", "-o", "json"], &op_env).await.json();
    assert_eq!(updated["max_agents"], 3);
    let org_key = user.run(&["orgs", "create-key", &oid, "--name", "first", "-o", "json"], &op_env).await.json();
    assert!(org_key["key"].as_str().unwrap().starts_with("ts_"), "{org_key}");
    let wrong = user.run(&["orgs", "get", &zero_id("org"), "-o", "json"], &op_env).await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    // An org key is not the operator token.
    let as_org = user.run(&["orgs", "list", "--operator-token", &stack.key, "--url", &stack.base], &[]).await;
    assert_eq!(as_org.code, 1, "{as_org:?}");
}

/// Creates an agent with `math` and a session; returns the session id.
async fn math_session(stack: &Stack) -> String {
    stack.client().session(&["math"]).await
}

#[tokio::test]
async fn piped_chat_answers_each_line_with_tool_calls_and_exits() {
    let stack = Stack::start().await;
    let user = User::new();
    let session = math_session(&stack).await;

    let out = user
        .run_with(&["chat", "--session", &session], &env(&stack), Some("hi there\n\n!tool math {\"expression\":\"6*7\"}\nbye\n"))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout, "echo: hi there\n  → math({\"expression\":\"6*7\"})\n  ← math: 42\ntool math returned: 42\necho: bye\n",
        "{out:?}"
    );
    let messages = stack.client().get(&format!("/v1/sessions/{session}/messages")).await.expect(200);
    assert_eq!(messages["data"].as_array().unwrap().len(), 7, "3 user messages, 4 assistant messages: {messages}");

    // A second chat on the same session shows only its own turn, not the history.
    let again = user.run_with(&["chat", "--session", &session], &env(&stack), Some("again\n")).await;
    assert_eq!((again.code, again.stdout.as_str()), (0, "echo: again\n"), "{again:?}");

    // `--agent` starts a session and says which.
    let agent = stack.client().agent(&[]).await;
    let fresh = user.run_with(&["chat", "--agent", &agent], &env(&stack), Some("new\n")).await;
    assert_eq!((fresh.code, fresh.stdout.as_str()), (0, "echo: new\n"), "{fresh:?}");
    assert!(fresh.stderr.contains("turnstone chat --session ses_"), "{fresh:?}");

    // A failed turn: reported, and the exit code says so.
    let failed = user.run_with(&["chat", "--session", &session], &env(&stack), Some("!fail 400\n")).await;
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("the turn failed"), "{failed:?}");
}

#[tokio::test]
async fn chat_and_watch_resume_across_cycled_streams_with_no_gap_and_no_duplicate() {
    // The server cycles every stream after about 0.4 s: many reconnects per turn.
    let stack = Stack::start_with(StackOptions {
        sse_max_connection: Duration::from_millis(400),
        sim: turnstone_llmsim::Config { chunk_delay_ms: 150, ..Default::default() },
        ..Default::default()
    })
    .await;
    let user = User::new();
    let session = math_session(&stack).await;
    let watcher = user
        .command(&["sessions", "watch", &session, "-o", "json", "--until", "session.idled"], &env(&stack))
        .spawn()
        .expect("watch runs");

    let text = "one two three four five six seven eight nine ten eleven twelve";
    let out = user
        .run_with(
            &["chat", "--session", &session],
            &env(&stack),
            Some(&format!("!sleep 1500 {text}\n!tool math {{\"expression\":\"2^10\"}}\n")),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("echo: !sleep 1500 {text}\n  → math({{\"expression\":\"2^10\"}})\n  ← math: 1024\ntool math returned: 1024\n"),
        "the replies once each, whole: {out:?}"
    );

    // The watcher saw every stored event once, in order (it stops at the first session.idled).
    let watched = tokio::time::timeout(turnstone_tests::DEADLINE, watcher.wait_with_output()).await.unwrap().unwrap();
    assert!(watched.status.success(), "{watched:?}");
    let events: Vec<Value> = String::from_utf8_lossy(&watched.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    let stored = stack.client().events(&session).await;
    let idled = stored.iter().position(|e| e["type"] == "session.idled").unwrap();
    assert_eq!(sequences, (1..=idled as i64 + 1).collect::<Vec<_>>(), "gap-free, once each");
    assert_eq!(events, stored[..=idled], "the stored events, unchanged");
}

#[tokio::test]
async fn sigint_cancels_the_running_turn_and_a_second_one_exits() {
    let stack = Stack::start().await;
    let user = User::new();
    let session = math_session(&stack).await;
    let mut chat = user.command(&["chat", "--session", &session], &env(&stack)).stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"!sleep 30000 never answered\n").await.unwrap();
    turnstone_tests::wait_until("the model call started", || stack.sim.in_flight() == 1).await;

    let pid = chat.id().unwrap().to_string();
    let sigint = || std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sigint().success());
    stack.client().wait_for(&session, "turn.cancelled", 1).await;
    // Still running: the next line is a new turn.
    stdin.write_all(b"after\n").await.unwrap();
    stack.client().wait_for(&session, "turn.completed", 1).await;
    assert!(sigint().success());
    let out = tokio::time::timeout(turnstone_tests::DEADLINE, chat.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("(turn cancelled)"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo: after\n");
    turnstone_tests::wait_until("the aborted model call was closed", || stack.sim.in_flight() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_terminal_runs_a_turn_a_tool_call_and_a_cancel() {
    use expectrl::{ControlCode, Eof, Expect, Session};
    let stack = Stack::start().await;
    let user = User::new();
    let session = math_session(&stack).await;
    let mut cmd = std::process::Command::new(bin_dir().join("turnstone"));
    cmd.args(["chat", "--session", &session])
        .env("HOME", &user.home)
        .env("TURNSTONE_URL", &stack.base)
        .env("TURNSTONE_API_KEY", &stack.key)
        .env_remove("TURNSTONE_CONFIG");
    let mut tty = Session::spawn(cmd).expect("turnstone chat starts in a pseudo-terminal");
    tty.set_expect_timeout(Some(turnstone_tests::DEADLINE));
    // The pseudo-terminal's calls block: each runs in place on this multi-threaded runtime.
    let mut step = |what: &str, f: &mut dyn FnMut(&mut expectrl::session::OsSession) -> Result<(), expectrl::Error>| {
        tokio::task::block_in_place(|| f(&mut tty)).unwrap_or_else(|e| panic!("{what}: {e}"))
    };

    step("the prompt", &mut |t| t.expect("> ").map(drop));
    step("a turn", &mut |t| {
        t.send_line("hello terminal")?;
        t.expect("echo: hello terminal")?;
        t.expect("> ").map(drop)
    });
    step("a tool call", &mut |t| {
        t.send_line(r#"!tool math {"expression":"6*7"}"#)?;
        t.expect("→ math(")?;
        t.expect("← math: 42")?;
        t.expect("tool math returned: 42")?;
        t.expect("> ").map(drop)
    });
    step("a slow turn", &mut |t| t.send_line("!sleep 30000 never answered"));
    turnstone_tests::wait_until("the model call started", || stack.sim.in_flight() == 1).await;
    step("Ctrl-C cancels it", &mut |t| {
        t.send(ControlCode::EndOfText)?;
        t.expect("(turn cancelled)")?;
        t.expect("> ").map(drop)
    });
    stack.client().wait_for(&session, "turn.cancelled", 1).await;
    step("Ctrl-C between turns exits", &mut |t| {
        t.send(ControlCode::EndOfText)?;
        t.expect(Eof).map(drop)
    });
}

/// A TCP proxy in front of the API whose open connections a test can cut, as a network would.
struct Cutter {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Cutter {
    async fn start(upstream: &str) -> Cutter {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {} // dropped: both sockets close without a word
                    }
                });
            }
        });
        Cutter { url, cut, accepted }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_dropped_connections_with_no_gap_and_no_duplicate() {
    let stack = Stack::start().await;
    let proxy = Cutter::start(&stack.base).await;
    let user = User::new();
    let api = stack.client();
    let session = math_session(&stack).await;
    let mut watch = user
        .command(
            &["sessions", "watch", &session, "-o", "json", "--until", "turn.completed"],
            &[("TURNSTONE_URL", proxy.url.as_str()), ("TURNSTONE_API_KEY", stack.key.as_str())],
        )
        .spawn()
        .unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    // The first event comes through: the stream is open.
    api.say(&session, "!sleep 1200 first").await;
    let first = tokio::time::timeout(turnstone_tests::DEADLINE, lines.recv()).await.expect("the watcher prints in time");
    let mut watched = vec![first.expect("the watcher is running")];
    // Cut while the turn runs; events appended meanwhile arrive after the reconnect, once each.
    api.wait_for(&session, "reason.started", 1).await;
    let before = proxy.accepted();
    proxy.cut();
    turnstone_tests::wait_until("the watcher reconnected", || proxy.accepted() > before).await;
    api.say(&session, "second").await;
    proxy.cut();

    let out = tokio::time::timeout(turnstone_tests::DEADLINE, watch.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.matches("(reconnecting:").count() >= 2, "the drops were noticed: {stderr}");
    // The rest of the lines, up to the end of the pipe.
    while let Some(line) = lines.recv().await {
        watched.push(line);
    }
    let events: Vec<Value> = watched.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stored = api.events(&session).await;
    let first_completed = stored.iter().position(|e| e["type"] == "turn.completed").unwrap();
    assert_eq!(events, stored[..=first_completed], "every stored event once, in order, unchanged");
}

#[tokio::test]
async fn watch_and_chat_refuse_what_is_not_there() {
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let user = User::new();
    let env = env(&stack);
    user.fails(&env, &["sessions", "watch", &zero_id("ses")], 1, "not_found").await;
    user.fails(&env, &["sessions", "watch", "agt_x"], 2, "session id").await;
    user.fails(&env, &["chat", "--session", &zero_id("ses")], 1, "not_found").await;
    user.fails(&env, &["chat", "--agent", &zero_id("agt")], 1, "not_found").await;
    user.fails(&env, &["chat", "--agent", "x", "--session", "y"], 2, "cannot be used with").await;
}

#[tokio::test]
async fn files_pass_bytes_through_unchanged_and_a_failed_precondition_exits_1() {
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let user = User::new();
    let env = env(&stack);
    let sid = stack.client().session(&[]).await;

    // NUL, bytes that are not UTF-8 (a lone continuation, an overlong start, 0xff), every byte value.
    let mut blob: Vec<u8> = b"\x00head\x00\xff\xfe\xc3\x28\x80 not utf-8\r\n".to_vec();
    blob.extend(0..=255u8);
    assert!(std::str::from_utf8(&blob).is_err());
    let put = user.run_bytes(&["files", "put", &sid, "/bin/blob.dat", "-o", "json"], &env, Some(&blob)).await.json();
    assert_eq!((put["path"].as_str(), put["size"].as_u64()), (Some("/bin/blob.dat"), Some(blob.len() as u64)), "{put}");
    let etag = put["etag"].as_str().unwrap().to_owned();
    let got = user.run(&["files", "get", &sid, "/bin/blob.dat"], &env).await;
    assert_eq!(got.code, 0, "{got:?}");
    assert!(got.raw == blob, "stdout is the bytes written: {:?}", got.raw);

    // --file both ways; the metadata is the API's JSON.
    let local = user.home.join("blob.in");
    std::fs::write(&local, &blob[..100]).unwrap();
    let again =
        user.ok(&env, &["files", "put", &sid, "/bin/blob.dat", "--file", local.to_str().unwrap(), "--if-match", &etag]).await;
    assert_eq!(again["size"], 100);
    let out = user.home.join("blob.out");
    let saved = user.ok(&env, &["files", "get", &sid, "/bin/blob.dat", "--file", out.to_str().unwrap()]).await;
    assert_eq!(std::fs::read(&out).unwrap(), &blob[..100]);
    assert_eq!((saved["size"].as_u64(), &saved["etag"]), (Some(100), &again["etag"]), "{saved}");

    // The old version's etag, and --create-only over an existing file: 412, exit 1, the code on stderr.
    user.fails(
        &env,
        &["files", "put", &sid, "/bin/blob.dat", "--file", local.to_str().unwrap(), "--if-match", &etag],
        1,
        "precondition_failed",
    )
    .await;
    let exists = user.run_bytes(&["files", "put", &sid, "/bin/blob.dat", "--create-only"], &env, Some(b"x")).await;
    assert_eq!(exists.code, 1, "{exists:?}");
    assert!(exists.stderr.contains("precondition_failed"), "{exists:?}");
    user.fails(&env, &["files", "rm", &sid, "/bin/blob.dat", "--if-match", &etag], 1, "precondition_failed").await;

    // ls, cp, mv, search, rm: the API's JSON.
    let todo = user.run_with(&["files", "put", &sid, "/notes/todo.md"], &env, Some("one\nTODO: ship it\n")).await;
    assert_eq!(todo.code, 0, "{todo:?}");
    assert_eq!(user.ok(&env, &["files", "cp", &sid, "/notes/todo.md", "/notes/copy.md"]).await["path"], "/notes/copy.md");
    user.fails(&env, &["files", "mv", &sid, "/notes/todo.md", "/notes/copy.md"], 1, "file_exists").await;
    assert_eq!(user.ok(&env, &["files", "mv", &sid, "/notes/copy.md", "/notes/moved.md"]).await["path"], "/notes/moved.md");
    let listed = user.ok(&env, &["files", "ls", &sid, "--recursive"]).await;
    assert_eq!(listed, stack.client().get(&format!("/v1/sessions/{sid}/files?recursive=true")).await.expect(200));
    let names = user.run(&["files", "ls", &sid, "--dir", "/notes", "-o", "id"], &env).await;
    assert_eq!(names.stdout, "/notes/moved.md\n/notes/todo.md\n", "{names:?}");
    let found = user.ok(&env, &["files", "search", &sid, "TODO", "--glob", "*.md"]).await;
    let mut hits: Vec<(&str, i64)> =
        found["data"].as_array().unwrap().iter().map(|m| (m["path"].as_str().unwrap(), m["line"].as_i64().unwrap())).collect();
    hits.sort();
    assert_eq!(hits, [("/notes/moved.md", 2), ("/notes/todo.md", 2)], "{found}");
    let removed = user.ok(&env, &["files", "rm", &sid, "/notes", "--recursive"]).await;
    assert_eq!((removed["path"].as_str(), removed["files"].as_i64()), (Some("/notes"), Some(2)), "{removed}");
    user.fails(&env, &["files", "get", &sid, "/notes/todo.md"], 1, "not_found").await;

    // Usage errors: nothing is sent, exit 2.
    user.fails(&env, &["files", "put", &sid, "relative.txt", "--file", local.to_str().unwrap()], 2, "path").await;
    user.fails(&env, &["files", "put", &sid, "/a", "--if-match", &etag, "--create-only"], 2, "cannot be used with").await;
    user.fails(&env, &["files", "get", &sid], 2, "PATH").await;
}

#[tokio::test]
async fn kv_set_get_ls_rm_print_the_apis_json() {
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let user = User::new();
    let env = env(&stack);
    let sid = stack.client().session(&[]).await;
    let api = stack.client();

    let set = user.ok(&env, &["kv", "set", &sid, "user:name", r#"{"name":"Ada","n":[1,2]}"#, "--ttl", "3600"]).await;
    let raw = api.get(&format!("/v1/sessions/{sid}/kv/user:name")).await.expect(200);
    assert_eq!(set, raw);
    assert_eq!(raw["value"], json!({"name": "Ada", "n": [1, 2]}));
    assert!(raw["expires_at"].is_string(), "{raw}");
    assert_eq!(user.ok(&env, &["kv", "get", &sid, "user:name"]).await, raw);
    let v = raw["version"].as_i64().unwrap().to_string();

    let plan = user.run_with(&["kv", "set", &sid, "user:plan", "-", "-o", "json"], &env, Some("\"pro\"")).await.json();
    assert_eq!((plan["value"].as_str(), plan["expires_at"].is_null()), (Some("pro"), true), "{plan}");
    user.ok(&env, &["kv", "set", &sid, "other", "42"]).await;
    let listed = user.ok(&env, &["kv", "ls", &sid, "--prefix", "user:"]).await;
    assert_eq!(listed, api.get(&format!("/v1/sessions/{sid}/kv?prefix=user:")).await.expect(200));
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    // The KEY argument is not the global `--key` (the API key): both in one command line.
    let flags = ["kv", "get", &sid, "other", "--key", &stack.key, "--url", &stack.base, "-o", "json"];
    assert_eq!(user.run(&flags, &[]).await.json()["value"], 42);
    let keys = user.run(&["kv", "ls", &sid, "-o", "id"], &env).await;
    assert_eq!(keys.stdout, "other\nuser:name\nuser:plan\n", "{keys:?}");

    // Versions: a stale one is 412 (exit 1); the current one replaces, then removes.
    let updated = user.ok(&env, &["kv", "set", &sid, "user:name", r#""Grace""#, "--if-version", &v]).await;
    assert_eq!(updated["value"], "Grace");
    user.fails(&env, &["kv", "set", &sid, "user:name", "1", "--if-version", &v], 1, "precondition_failed").await;
    user.fails(&env, &["kv", "set", &sid, "user:name", "1", "--create-only"], 1, "precondition_failed").await;
    user.fails(&env, &["kv", "rm", &sid, "user:name", "--if-version", &v], 1, "precondition_failed").await;
    let current = updated["version"].as_i64().unwrap().to_string();
    let removed = user.ok(&env, &["kv", "rm", &sid, "user:name", "--if-version", &current]).await;
    assert_eq!(removed, json!({"key": "user:name", "version": updated["version"]}));
    user.fails(&env, &["kv", "get", &sid, "user:name"], 1, "not_found").await;

    // Usage errors: exit 2, nothing sent.
    user.fails(&env, &["kv", "set", &sid, "k", "not json"], 2, "not JSON").await;
    user.fails(&env, &["kv", "set", &sid, "bad key!", "1"], 2, "key").await;
    user.fails(&env, &["kv", "set", &sid, "k"], 2, "VALUE").await;
    user.fails(&env, &["kv", "ls", "ses_nope"], 2, "session id").await;
}

/// An agent with `math` under an `ask` policy and the client tool `lookup_order`; returns a new
/// session of it.
async fn waiting_session(stack: &Stack) -> String {
    let api = stack.client();
    let agent = api
        .post(
            "/v1/agents",
            json!({
                "name": "waiter", "capabilities": ["math"], "tool_policies": {"math": "ask"},
                "client_tools": [{"name": "lookup_order", "description": "Looks an order up.",
                                  "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}],
            }),
        )
        .await
        .expect(201);
    let session = api.post("/v1/sessions", json!({"agent_id": agent["id"]})).await.expect(201);
    session["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn piped_chat_answers_a_client_tool_and_an_approval_from_the_next_lines() {
    let stack = Stack::start().await;
    let user = User::new();
    let session = waiting_session(&stack).await;

    // Act: each ask reads the next line: the tool's result, then `y`, then `n`.
    let input = concat!(
        "!tool lookup_order {\"order_id\":\"A1\"}\n",
        "{\"status\":\"shipped\"}\n",
        "!tool math {\"expression\":\"6*7\"}\n",
        "y\n",
        "!tool math {\"expression\":\"1+1\"}\n",
        "no thanks\n",
        "bye\n",
    );
    let out = user.run_with(&["chat", "--session", &session], &env(&stack), Some(input)).await;

    // Assert
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("  ? lookup_order({\"order_id\":\"A1\"}) asks for its result"), "{out:?}");
    assert!(out.stderr.contains("result> "), "{out:?}");
    assert!(out.stderr.contains("  ? math({\"expression\":\"6*7\"}) needs approval"), "{out:?}");
    assert_eq!(out.stderr.matches("approve? [y/N] ").count(), 2, "{out:?}");
    assert!(
        out.stdout.contains("tool lookup_order returned: {\"status\":\"shipped\"}\n"),
        "the reply has the typed result: {out:?}"
    );
    assert!(out.stdout.contains("  ← math: 42\ntool math returned: 42\n"), "approved, it ran: {out:?}");
    assert!(out.stdout.contains("  ✗ math: "), "denied, the model got an error: {out:?}");
    assert!(out.stdout.ends_with("echo: bye\n"), "the lines after the answers are messages again: {out:?}");
    let pending = stack.client().get(&format!("/v1/sessions/{session}/pending")).await.expect(200);
    assert_eq!(pending["data"], json!([]), "nothing left waiting");

    // Input that ends while the turn waits: exit 1, the turn still waits.
    let cut =
        user.run_with(&["chat", "--session", &session], &env(&stack), Some("!tool lookup_order {\"order_id\":\"B2\"}\n")).await;
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(cut.stderr.contains("turnstone sessions pending ses_"), "{cut:?}");
    let pending = stack.client().get(&format!("/v1/sessions/{session}/pending")).await.expect(200);
    assert_eq!(pending["data"].as_array().unwrap().len(), 1, "{pending}");
}

#[tokio::test]
async fn sessions_pending_approve_deny_and_tool_result_answer_a_waiting_turn() {
    let stack = Stack::start().await;
    let user = User::new();
    let env = env(&stack);
    let api = stack.client();
    let session = waiting_session(&stack).await;
    let url = format!("/v1/sessions/{session}/pending");

    // A client tool call: listed (the API's JSON), answered by hand.
    api.say(&session, r#"!tool lookup_order {"order_id": "A1"}"#).await;
    api.wait_for(&session, "turn.waiting", 1).await;
    let listed = user.ok(&env, &["sessions", "pending", &session]).await;
    assert_eq!(listed, api.get(&url).await.expect(200));
    let call = listed["data"][0]["tool_call_id"].as_str().unwrap().to_owned();
    assert_eq!(listed["data"][0]["type"], "tool_call");
    let table = user.run(&["sessions", "pending", &session], &env).await;
    assert!(table.stdout.starts_with("TYPE") && table.stdout.contains("lookup_order"), "{table:?}");
    let ids = user.run(&["sessions", "pending", &session, "-o", "id"], &env).await;
    assert_eq!(ids.stdout, format!("{call}\n"));
    let answered = user.ok(&env, &["sessions", "tool-result", &session, &call, "{\"status\":\"lost\"}", "--error"]).await;
    assert_eq!(answered, json!({"accepted": [call], "resumed": true}));
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let done = events.iter().find(|e| e["type"] == "tool.completed").unwrap();
    assert_eq!(done["data"]["is_error"], true, "{done}");
    user.fails(&env, &["sessions", "tool-result", &session, &call, "again"], 1, "already_resolved").await;

    // Approvals: one approved, one denied with a reason.
    api.say(&session, r#"!tool math {"expression": "6*7"}"#).await;
    api.wait_for(&session, "turn.waiting", 2).await;
    let listed = user.ok(&env, &["sessions", "pending", &session]).await;
    assert_eq!(listed["data"][0]["type"], "approval");
    let approval = listed["data"][0]["approval_id"].as_str().unwrap().to_owned();
    let decided = user.ok(&env, &["sessions", "approve", &session, &approval, "--reason", "fine"]).await;
    assert_eq!((decided["decision"].as_str(), decided["resumed"].as_bool()), (Some("approve"), Some(true)), "{decided}");
    api.wait_for(&session, "turn.completed", 2).await;
    user.fails(&env, &["sessions", "approve", &session, &approval], 1, "not_found").await;

    api.say(&session, r#"!tool math {"expression": "1+1"}"#).await;
    api.wait_for(&session, "turn.waiting", 3).await;
    let approval = api.get(&url).await.expect(200)["data"][0]["approval_id"].as_str().unwrap().to_owned();
    let denied = user.run(&["sessions", "deny", &session, &approval, "--reason", "not now", "-o", "id"], &env).await;
    assert_eq!((denied.code, denied.stdout.clone()), (0, format!("{approval}\n")), "{denied:?}");
    let events = api.wait_for(&session, "turn.completed", 3).await;
    let last = events.iter().rev().find(|e| e["type"] == "tool.completed").unwrap();
    assert_eq!(last["data"]["is_error"], true, "{last}");

    // Usage errors: exit 2, nothing sent.
    user.fails(&env, &["sessions", "pending", "ses_nope"], 2, "session id").await;
    user.fails(&env, &["sessions", "tool-result", &session, &call], 2, "OUTPUT").await;
}

#[tokio::test]
async fn mcp_add_tools_refresh_update_rm_print_the_apis_json_and_never_a_header_value() {
    const SECRET: &str = "cli-mcp-secret-93ab";
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let user = User::new();
    let env = env(&stack);
    let api = stack.client();
    let server = turnstone_tests::mcp_server::McpServer::start_with_token(Some(SECRET)).await;
    let auth = format!("Authorization: Bearer {SECRET}");
    let mut printed = String::new();
    let mut run = async |args: &[&str]| {
        let out = user.run(args, &env).await;
        printed.push_str(&out.stdout);
        printed.push_str(&out.stderr);
        out
    };

    // add (the server's URL is --server-url: --url is the API's), then tools (never fetched) and refresh (fetched from the server, with the header).
    let out = run(&["mcp", "add", "--name", "test", "--server-url", &server.url, "--header", &auth, "-o", "json"]).await;
    let created = out.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["headers"], json!(["Authorization"]), "{created}");
    assert_eq!(run(&["mcp", "tools", &id, "-o", "json"]).await.json()["data"], json!([]));
    let refreshed = run(&["mcp", "refresh", &id, "-o", "json"]).await.json();
    let names: Vec<&str> = refreshed["data"].as_array().unwrap().iter().map(|t| t["model_name"].as_str().unwrap()).collect();
    assert!(names.contains(&"mcp__test__echo"), "{refreshed}");
    let tools = run(&["mcp", "tools", &id, "-o", "json"]).await.json();
    assert_eq!(tools, api.get(&format!("/v1/mcp-servers/{id}/tools")).await.expect(200));
    assert_eq!(tools["data"], refreshed["data"]);
    let table = run(&["mcp", "tools", &id]).await;
    assert!(table.code == 0 && table.stdout.contains("mcp__test__echo"), "{table:?}");
    let ids = run(&["mcp", "tools", &id, "-o", "id"]).await;
    assert!(ids.stdout.lines().any(|l| l == "mcp__test__echo"), "{ids:?}");

    // -o json is the API's JSON, for get and ls; the table and -o id print too.
    let got = run(&["mcp", "get", &id, "-o", "json"]).await.json();
    assert_eq!(got, api.get(&format!("/v1/mcp-servers/{id}")).await.expect(200));
    let listed = run(&["mcp", "ls", "-o", "json"]).await.json();
    assert_eq!(listed, api.get("/v1/mcp-servers").await.expect(200));
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(run(&["mcp", "ls", "-o", "id"]).await.stdout, format!("{id}\n"));
    for args in [&["mcp", "ls"][..], &["mcp", "get", &id]] {
        let out = run(args).await;
        assert!(out.code == 0 && out.stdout.contains("Authorization"), "{out:?}");
    }

    // update: allowed tools and status, then a new header value (replaces the old).
    let updated = run(&["mcp", "update", &id, "--allowed-tool", "echo", "--status", "disabled", "-o", "json"]).await.json();
    assert_eq!((updated["allowed_tools"].clone(), updated["status"].clone()), (json!(["echo"]), json!("disabled")));
    let body = user.home.join("server.json");
    std::fs::write(&body, json!({"status": "active", "headers": {"Authorization": format!("Bearer {SECRET}-2")}}).to_string())
        .unwrap();
    let updated = run(&["mcp", "update", &id, "--file", body.to_str().unwrap(), "-o", "json"]).await.json();
    assert_eq!((updated["status"].clone(), updated["headers"].clone()), (json!("active"), json!(["Authorization"])));

    // rm, then get is the API's not_found (exit 1); a bad id or header is a usage error (exit 2).
    assert_eq!(run(&["mcp", "rm", &id, "-o", "json"]).await.json(), json!({"deleted": id}));
    let gone = run(&["mcp", "get", &id]).await;
    assert!(gone.code == 1 && gone.stderr.contains("not_found"), "{gone:?}");
    for args in [&["mcp", "get", "mcp_nope"][..], &["mcp", "rm", "agt_123"], &["mcp", "tools", "x"], &["mcp", "refresh", "x"]] {
        let out = run(args).await;
        assert!(out.code == 2 && out.stderr.contains("mcp server id"), "{args:?}: {out:?}");
    }
    let no_colon = format!("Authorization Bearer {SECRET}");
    let out = run(&["mcp", "add", "--name", "bad", "--server-url", &server.url, "--header", &no_colon]).await;
    assert!(out.code == 2 && out.stderr.contains("--header"), "{out:?}");
    assert!(!printed.contains(SECRET), "a header value was printed: {printed}");
}
