//! `mcp` (issue 21): a one-tool turn whose tool is on an MCP server (the tests'
//! rmcp streamable-HTTP server, in this process, on loopback) against the
//! one-tool `math` turn, interleaved in the same run, with the worker's MCP
//! session warm; and what a cold session costs:
//! - in a turn: the first MCP turn after the server is registered (its tool
//!   list already cached by a refresh, so only the worker's `initialize` is new);
//! - alone: `initialize` + `tools/list` on a fresh client against
//!   `tools/list` on the warm one, from this process through the same client
//!   the worker uses (`turnstone_mcp::Sessions`).

use std::time::Instant;

use serde_json::{Value, json};
use turnstone_core::ids::{McpServerId, TypedId};
use turnstone_mcp::{AllowList, Endpoint, Guard, McpConfig, Sessions};
use turnstone_tests::Client;
use turnstone_tests::mcp_server::McpServer;

use super::turns::{ms, open_sse, run_turn};
use crate::Ctx;
use crate::stack::{Deployment, Options};
use crate::stats::{Samples, r2};

const MATH: &str = r#"!tool math {"expression":"6*7"}"#;
const ADD: &str = r#"!tool mcp__bench__add {"a":6,"b":7}"#;

/// Registers the server under `name` and lists its tools through the API (so the cache is fresh); its id.
async fn register(c: &Client, name: &str, url: &str) -> String {
    let created = c.post("/v1/mcp-servers", json!({"name": name, "url": url})).await.expect(201);
    let id = created["id"].as_str().expect("id").to_owned();
    c.post(&format!("/v1/mcp-servers/{id}/refresh"), json!({})).await.expect(200);
    id
}

/// `initialize` measured alone: a fresh client's first `tools/list` (connect, initialize, list)
/// against the warm client's next one, `n` times.
async fn initialize_alone(url: &str, n: usize) -> Value {
    let config = McpConfig { guard: Guard::new(AllowList::loopback()), ..McpConfig::default() };
    let sessions = Sessions::new(config).expect("MCP client");
    let ep = Endpoint { server_id: McpServerId::new().uuid(), url: url.to_owned(), headers: vec![] };
    let (mut cold, mut warm) = (Samples::default(), Samples::default());
    for i in 0..n + 5 {
        sessions.forget(ep.server_id).await;
        let t = Instant::now();
        sessions.list_tools(&ep).await.expect("cold list");
        let c = ms(t);
        let t = Instant::now();
        sessions.list_tools(&ep).await.expect("warm list");
        if i >= 5 {
            cold.push(c);
            warm.push(ms(t));
        }
    }
    json!({
        "cold_initialize_and_list": cold.summary(),
        "warm_list": warm.summary(),
        "initialize_p50_ms": r2(cold.pct(50.0) - warm.pct(50.0)),
    })
}

pub async fn run(ctx: &Ctx) -> Value {
    let turns = ctx.pick(100, 300);
    let colds = ctx.pick(10, 30);
    let server = McpServer::start().await;
    let allow = ("TURNSTONE_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8".to_owned());
    let opts = Options { worker_env: vec![allow.clone()], api_env: vec![allow], ..Options::default() };
    let d = Deployment::start(ctx, opts).await;
    let c = &d.client;
    let mut out = json!({ "name": "mcp", "turns_each": turns, "cold_turns": colds });
    let mcp = register(c, "bench", &server.url).await;

    // Warm: interleaved so that both see the same machine, a fresh pair of sessions every ten turns.
    let (mut math, mut remote) = (Samples::default(), Samples::default());
    let mut pair = None;
    for i in 0..turns + 10 {
        if i % 10 == 0 {
            let (m, r) = (c.session(&["math"]).await, c.session(&[&format!("mcp:{mcp}")]).await);
            pair = Some(((open_sse(c, &m).await, m), (open_sse(c, &r).await, r)));
        }
        let ((m_sse, m), (r_sse, r)) = pair.as_mut().expect("sessions");
        let a = run_turn(c, m_sse, m, MATH).await;
        let b = run_turn(c, r_sse, r, ADD).await;
        if i >= 10 {
            math.push(a.completed_ms);
            remote.push(b.completed_ms);
        }
    }
    let inits_after_warm = server.initializations();
    let calls = server.calls();
    assert_eq!(calls, turns + 10, "every MCP turn called the server once");
    out["turn_one_tool_math"] = math.summary();
    out["turn_one_tool_mcp_warm"] = remote.summary();
    let overhead = remote.pct(50.0) - math.pct(50.0);
    out["warm_overhead_p50_ms"] = json!(r2(overhead));
    // The API's refresh and the worker's first call each initialize once.
    out["initializations_in_warm_turns"] = json!(inits_after_warm);

    // Cold: a newly registered server (same process, new id) that the worker has no session for.
    let mut cold = Samples::default();
    for i in 0..colds {
        let id = register(c, &format!("cold{i}"), &server.url).await;
        let s = c.session(&[&format!("mcp:{id}")]).await;
        let mut sse = open_sse(c, &s).await;
        let script = ADD.replace("mcp__bench__", &format!("mcp__cold{i}__"));
        cold.push(run_turn(c, &mut sse, &s, &script).await.completed_ms);
    }
    out["turn_one_tool_mcp_cold"] = cold.summary();
    out["cold_turn_minus_warm_turn_p50_ms"] = json!(r2(cold.pct(50.0) - remote.pct(50.0)));
    out["initialize_alone"] = initialize_alone(&server.url, ctx.pick(50, 200)).await;

    let result = c.get(&format!("/v1/sessions/{}/events", pair.expect("sessions").1.1)).await.expect(200);
    let completed = result["data"].as_array().expect("data").iter().find(|e| e["type"] == "tool.completed").cloned();
    assert_eq!(completed.as_ref().map(|e| e["data"]["result"].clone()), Some(json!("13")), "the MCP tool answered");
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "warm MCP turn p50 - math turn p50 <= 5 ms", overhead <= 5.0);
    out["targets"] = Value::Object(targets);
    out
}
