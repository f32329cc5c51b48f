//! `storage` (issue 19): session storage through the real API — key-value get
//! and set, 4 KiB and 1 MiB file PUT and GET, each as p50/p99 and ops/s from
//! one client — against `GET /v1/sessions/{id}` in the same run; and a
//! one-tool turn that writes a file (its write commits in the step's
//! transaction) against the one-tool `math` turn, interleaved.

use std::time::Instant;

use serde_json::{Value, json};
use turnstone_tests::Client;

use super::turns::{ms, open_sse, run_turn};
use crate::Ctx;
use crate::stack::{Deployment, Options};
use crate::stats::{Samples, r2};

/// Runs `op` `n` times after 10 warm-up calls; the latencies and the ops/s of the timed calls.
async fn measure<F, Fut>(n: usize, mut op: F) -> Value
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..10 {
        op(i).await;
    }
    let mut s = Samples::default();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(10 + i).await;
        s.push(ms(t));
    }
    let mut out = s.summary();
    out["ops_per_s"] = json!(r2(n as f64 / started.elapsed().as_secs_f64()));
    out
}

async fn expect_status(client: &Client, req: reqwest::RequestBuilder, status: u16) {
    let resp = req.bearer_auth(&client.key).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), status, "{}", resp.text().await.unwrap_or_default());
    let _ = resp.bytes().await;
}

pub async fn run(ctx: &Ctx) -> Value {
    let n = ctx.pick(300, 1000);
    let big_n = ctx.pick(40, 100);
    let turns = ctx.pick(100, 300);
    let d = Deployment::start(ctx, Options::default()).await;
    let c = &d.client;
    let session = c.session(&["files", "kv", "math"]).await;
    let base = format!("{}/v1/sessions/{session}", c.base);
    let mut out = json!({ "name": "storage", "ops_each": n, "large_ops_each": big_n, "turns_each": turns });

    out["get_session"] = measure(n, |_| expect_status(c, c.http.get(&base), 200)).await;
    out["kv_set"] = measure(n, |i| {
        expect_status(
            c,
            c.http.put(format!("{base}/kv/counter")).json(&json!({"value": {"n": i}})),
            if i == 0 { 201 } else { 200 },
        )
    })
    .await;
    out["kv_get"] = measure(n, |_| expect_status(c, c.http.get(format!("{base}/kv/counter")), 200)).await;
    for (label, size, count) in [("4kib", 4096usize, n), ("1mib", 1 << 20, big_n)] {
        let body = vec![b'x'; size];
        let url = format!("{base}/files/content?path=/bench/{label}.bin");
        out[format!("file_put_{label}")] =
            measure(count, |i| expect_status(c, c.http.put(&url).body(body.clone()), if i == 0 { 201 } else { 200 })).await;
        out[format!("file_get_{label}")] = measure(count, |_| expect_status(c, c.http.get(&url), 200)).await;
    }

    // One-tool turns, interleaved so that both see the same machine: math, and a file write.
    let (mut math, mut write) = (Samples::default(), Samples::default());
    let mut sse = None;
    let mut turn_session = String::new();
    for i in 0..turns + 10 {
        if i % 10 == 0 {
            turn_session = c.session(&["files", "math"]).await;
            sse = Some(open_sse(c, &turn_session).await);
        }
        let sse = sse.as_mut().expect("sse");
        let m = run_turn(c, sse, &turn_session, r#"!tool math {"expression":"6*7"}"#).await;
        let script = format!(r#"!tool write_file {{"path":"/out/{i}.md","content":"line one\nline two\n"}}"#);
        let w = run_turn(c, sse, &turn_session, &script).await;
        if i >= 10 {
            math.push(m.completed_ms);
            write.push(w.completed_ms);
        }
    }
    out["turn_one_tool_math"] = math.summary();
    out["turn_one_tool_write_file"] = write.summary();
    let ratio = write.pct(50.0) / math.pct(50.0);
    out["write_turn_over_math_turn_p50"] = json!(r2(ratio));
    let kv_ratio = out["kv_get"]["p50_ms"].as_f64().unwrap_or(f64::MAX) / out["get_session"]["p50_ms"].as_f64().unwrap_or(1.0);
    out["kv_get_over_get_session_p50"] = json!(r2(kv_ratio));
    let files = c.get(&format!("/v1/sessions/{turn_session}/files?dir=/out")).await.expect(200);
    assert!(!files["data"].as_array().expect("data").is_empty(), "the write turns wrote files");
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "write turn p50 <= 1.25x math turn", ratio <= 1.25);
    super::target(&mut targets, "kv get p50 <= 1.5x GET session", kv_ratio <= 1.5);
    out["targets"] = Value::Object(targets);
    out
}
