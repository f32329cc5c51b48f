//! The contract holds against the live API: schemathesis (an independent OpenAPI fuzzer, pinned
//! and installed by `scripts/test`) generates requests for every operation from the served
//! `/openapi.json` and checks every response: no 5xx, a documented status, the documented content
//! type, and a body that validates against the documented schema. A Python client generated from
//! the committed contract by openapi-python-client (pinned likewise) round-trips an agent, a
//! session, a message and a problem (`tests/python/roundtrip.py`); every request example works as
//! sent; every problem's `type` leads to a description of its code.
//!
//! `GET /v1/sessions/{id}/sse` is left out: it is an endless `text/event-stream` (a request only
//! ends when the server cycles it after minutes), which schemathesis would wait on until its
//! timeout, and its frames are not JSON bodies a schema could check; `sse.rs` tests it.
//!
//! Seeded and bounded: `TURNSTONE_SCHEMATHESIS_SEED` replays a run, `TURNSTONE_SCHEMATHESIS_EXAMPLES`
//! sets the examples per operation and phase, and `TURNSTONE_SCHEMATHESIS_REPORT=<dir>` keeps every
//! request and response (HAR) and a JUnit report there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use turnstone_tests::{Stack, StackOptions};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The CLI, from `TURNSTONE_SCHEMATHESIS` (set by `scripts/test`) or the venv it installs.
/// Missing: the test fails under CI, and says it did not run otherwise.
fn tool(env: &str, name: &str) -> Option<PathBuf> {
    let path =
        std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| Path::new(ROOT).join(".turnstone/py-tools/bin").join(name));
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "{name} not found at {} ({env}); scripts/test installs it", path.display());
    eprintln!("SKIPPED: {name} not found at {}; run scripts/test, which installs it", path.display());
    None
}

/// One schemathesis run over the operations `filter` selects, authenticated with `token`.
async fn schemathesis(bin: &PathBuf, stack: &Stack, token: &str, filter: &[&str], seed: u64, examples: u32) -> (bool, String) {
    let work = std::env::temp_dir().join(format!("turnstone-schemathesis-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work).expect("work dir");
    let report: Vec<String> = match std::env::var("TURNSTONE_SCHEMATHESIS_REPORT") {
        Ok(dir) => vec!["--report".into(), "har,junit".into(), "--report-dir".into(), format!("{dir}/{}", filter.join("-"))],
        Err(_) => vec![],
    };
    let started = Instant::now();
    let output = tokio::process::Command::new(bin)
        .current_dir(&work)
        .arg("run")
        .arg(format!("{}/openapi.json", stack.base))
        .args(["--url", &stack.base])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--seed", &seed.to_string()])
        .args(["--max-examples", &examples.to_string()])
        .args(["--generation-database", "none"])
        .args(["--workers", "1", "--no-color", "--request-timeout", "10"])
        .args(["--exclude-path-regex", "/sse$"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(filter)
        .args(report)
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&work);
    let text = format!(
        "{}{}\n(exit {:?} after {:.0?})",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        output.status.code(),
        started.elapsed()
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    let Some(bin) = tool("TURNSTONE_SCHEMATHESIS", "schemathesis") else { return };
    let seed = std::env::var("TURNSTONE_SCHEMATHESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(17);
    let examples = std::env::var("TURNSTONE_SCHEMATHESIS_EXAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let stack = Stack::start_with(StackOptions::default()).await;

    // The org's operations with an org key; the operator's (tag Orgs) with the operator token.
    let (org_ok, org_out) = schemathesis(&bin, &stack, &stack.key, &["--exclude-tag", "Orgs"], seed, examples).await;
    let (op_ok, op_out) = schemathesis(&bin, &stack, &stack.operator_token, &["--include-tag", "Orgs"], seed, examples).await;

    eprintln!("--- org key run (seed {seed}, {examples} examples)\n{org_out}\n--- operator run\n{op_out}");
    assert!(org_ok && op_ok, "schemathesis reported failures (output above); replay with TURNSTONE_SCHEMATHESIS_SEED={seed}");
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("turnstone-{what}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_round_trips() {
    let Some(generator) = tool("TURNSTONE_OPENAPI_PYTHON_CLIENT", "openapi-python-client") else { return };
    let bin = generator.parent().expect("the tool's directory").to_owned();
    let scratch = Scratch::new("python-client");
    let package = scratch.0.join("turnstone_client");
    // The tools' own directory first on PATH: the generator formats its output with the ruff beside it.
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let generated = tokio::process::Command::new(&generator)
        .args(["generate", "--meta", "none", "--path"])
        .arg(Path::new(ROOT).join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(&package)
        .env("PATH", &path)
        .output()
        .await
        .expect("openapi-python-client runs");
    let log = format!("{}{}", String::from_utf8_lossy(&generated.stdout), String::from_utf8_lossy(&generated.stderr));
    assert!(generated.status.success() && package.join("client.py").is_file(), "the client generates:\n{log}");
    assert!(!log.contains("Warning"), "the contract generates without warnings:\n{log}");

    let stack = Stack::start_with(StackOptions::default()).await;
    let run = tokio::process::Command::new(bin.join("python"))
        .arg(Path::new(ROOT).join("tests/python/roundtrip.py"))
        .arg(&scratch.0)
        .args([&stack.base, &stack.key])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "tests/python/roundtrip.py failed:\n{out}");
    assert!(out.contains("roundtrip: agent, session, message and problem parsed"), "{out}");
}

/// The request examples of the served contract, by operation: (method, path, example).
fn request_examples(doc: &Value) -> Vec<(String, String, Value)> {
    let schemas = &doc["components"]["schemas"];
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let Some(content) = op.pointer("/requestBody/content").and_then(Value::as_object) else { continue };
            // A raw-body operation (a file's content) takes any bytes: README.md shows one in use.
            let Some((_, media)) = content.iter().find(|(t, _)| t.starts_with("application/json")) else { continue };
            let schema = &media["schema"];
            let name = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()).expect("a named request schema");
            let example = schemas[name]["example"].clone();
            assert!(example.is_object(), "{method} {path}: request schema {name} has an example");
            out.push((method.to_uppercase(), path.clone(), example));
        }
    }
    out
}

#[tokio::test]
async fn every_request_example_works_as_sent() {
    // One worker: the waiting routes' examples answer a turn it parked.
    let stack = Stack::start().await;
    let (api, operator) = (stack.client(), stack.operator());
    let doc = api.get("/openapi.json").await.expect(200);

    // Real resources for the path parameters, and for the placeholder ids in the examples
    // (a reader pastes their own, as the examples' descriptions say).
    let org = operator.post("/v1/orgs", json!({"name": "examples"})).await.expect(201)["id"].as_str().unwrap().to_owned();
    let provider = api.post("/v1/providers", json!({"name": "p", "base_url": stack.sim.base_url()})).await.expect(201);
    let provider = provider["id"].as_str().unwrap().to_owned();
    let agent = api.agent(&[]).await;
    let session = api.post("/v1/sessions", json!({"agent_id": agent})).await.expect(201)["id"].as_str().unwrap().to_owned();
    // A session waiting for a client tool, and one waiting for an approval of a call with `{}` arguments.
    let waiting = |tools: Value, ask: Value, say: &'static str| {
        let api = api.clone();
        async move {
            let agent = api
                .post("/v1/agents", json!({"name": "w", "capabilities": ["math"], "client_tools": tools, "tool_policies": ask}))
                .await
                .expect(201);
            let session =
                api.post("/v1/sessions", json!({"agent_id": agent["id"]})).await.expect(201)["id"].as_str().unwrap().to_owned();
            api.say(&session, say).await;
            api.wait_for(&session, "turn.waiting", 1).await;
            let pending = api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200)["data"][0].clone();
            (session, pending)
        }
    };
    let (client_session, call) =
        waiting(json!([{"name": "lookup_order", "parameters": {"type": "object"}}]), json!({}), "!tool lookup_order {}").await;
    let (approval_session, approval) = waiting(json!([]), json!({"math": "ask"}), "!tool math {}").await;
    let session_for = |path: &str| {
        if path.contains("/tool-results") {
            client_session.clone()
        } else if path.contains("/approvals/") {
            approval_session.clone()
        } else {
            session.clone()
        }
    };
    // The file the move and copy examples name.
    let upload = format!("{}/v1/sessions/{session}/files/content?path=/drafts/report.md", api.base);
    api.send(api.http.put(upload).body("# Draft\n")).await.expect(201);
    // The placeholders of an operation's path and example, made real; a waiting route's session is its own.
    let real = |path: &str, text: String| {
        let session = session_for(path);
        text.replace("prv_0190b5e3a1c47d2e8f0a1b2c3d4e5f60", &provider)
            .replace("agt_0190b5e3a1c47d2e8f0a1b2c3d4e5f60", &agent)
            .replace("{org_id}", &org)
            .replace("{provider_id}", &provider)
            .replace("{agent_id}", &agent)
            .replace("{session_id}", &session)
            .replace("{approval_id}", approval["approval_id"].as_str().unwrap())
            .replace("\"call_1\"", &call["tool_call_id"].to_string())
            .replace("{key}", "user:name")
    };

    let examples = request_examples(&doc);
    assert!(examples.len() >= 10, "every creating or changing operation has an example: {examples:?}");
    for (method, path, example) in examples {
        let client = if path.starts_with("/v1/orgs") { &operator } else { &api };
        let url = format!("{}{}", client.base, real(&path, path.clone()));
        let body: Value = serde_json::from_str(&real(&path, example.to_string())).unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let reply = client.send(client.http.request(method.clone(), url).json(&body)).await;
        assert!(
            (200..300).contains(&reply.status),
            "{method} {path} with its example {body} answered {}: {}",
            reply.status,
            reply.body
        );
    }
}

#[tokio::test]
async fn every_problem_type_leads_to_its_description() {
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let anonymous = turnstone_tests::Client::new(&stack.base, "");

    // Problems of several origins: a handler, the router, poem-openapi's parsers, auth.
    let problems = [
        api.get(&format!("/v1/agents/agt_{}", "0".repeat(32))).await.expect_problem(404, "not_found"),
        api.get("/v1/agents/ses_nope").await.expect_problem(400, "invalid_id"),
        api.get("/v1/nothing-here").await.expect_problem(404, "route_not_found"),
        api.post("/v1/agents", json!({"name": 7})).await.expect_problem(400, "invalid_body"),
        api.get("/v1/agents?limit=abc").await.expect_problem(400, "invalid_parameter"),
        anonymous.get("/v1/agents").await.expect_problem(401, "unauthorized"),
    ];
    for problem in problems {
        let kind = problem["type"].as_str().expect("a type");
        assert_eq!(kind, format!("/problems/{}", problem["code"].as_str().unwrap()), "{problem}");
        // A relative reference: it resolves against the API that answered.
        let doc = anonymous.get(kind).await.expect(200);
        assert_eq!((&doc["code"], &doc["status"]), (&problem["code"], &problem["status"]), "{kind}: {doc}");
        assert!(doc["meaning"].as_str().is_some_and(|m| m.len() > 10), "{doc}");
    }

    let all = anonymous.get("/problems").await.expect(200);
    let codes: Vec<&str> = all["data"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
    let catalogue: Vec<&str> = turnstone_api::error::PROBLEM_TYPES.iter().map(|p| p.code).collect();
    assert_eq!(codes, catalogue);
    anonymous.get("/problems/no_such_code").await.expect_problem(404, "not_found");
}
