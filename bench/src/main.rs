//! `turnstone-bench`: runs the benchmark scenarios of issue 5 against real
//! processes and prints one JSON object per scenario on stdout and a table on stderr.
//!
//! Normally started by `scripts/bench`, which builds the release binaries and runs
//! a private PostgreSQL. Usage:
//! `turnstone-bench --admin-url postgres://postgres@127.0.0.1:54331/postgres [--quick] [--only a,b] [--no-rls] [--via-pgbouncer]`
//! (`TURNSTONE_BIN_DIR` names the directory holding the release binaries).

mod scenarios;
mod stack;
mod stats;

use std::time::Duration;

use serde_json::{Value, json};

/// Settings shared by every scenario.
#[derive(Clone)]
pub struct Ctx {
    pub admin_url: String,
    pub quick: bool,
    /// Run the API and workers as their least-privileged roles (row-level security on).
    pub rls: bool,
    /// Reach PostgreSQL through a PgBouncer in transaction mode (`--via-pgbouncer`), as the
    /// login roles, without prepared statements; LISTEN and migrations stay direct.
    pub via_pgbouncer: bool,
    /// Database client count used by the baseline and the throughput scenarios.
    pub clients: usize,
    /// Commits/s of the baseline at `clients`, filled in by `pg_baseline`.
    pub baseline_tps: Option<f64>,
}

impl Ctx {
    /// `quick` or `full` value.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

const ALL: &[&str] = &[
    "pg_baseline",
    "queue_throughput",
    "pickup",
    "turn_overhead",
    "turn_throughput",
    "sse_fanout",
    "concurrency",
    "recovery",
    "waiting",
    "storage",
    "mcp",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let mut ctx =
        Ctx { admin_url: String::new(), quick: false, rls: true, via_pgbouncer: false, clients: 32, baseline_tps: None };
    let mut only: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => ctx.quick = true,
            "--no-rls" => ctx.rls = false,
            "--via-pgbouncer" => ctx.via_pgbouncer = true,
            "--admin-url" => ctx.admin_url = args.next().expect("--admin-url URL"),
            "--clients" => ctx.clients = args.next().and_then(|v| v.parse().ok()).expect("--clients N"),
            "--only" => only = args.next().expect("--only a,b").split(',').map(str::to_owned).collect(),
            other => {
                eprintln!("turnstone-bench: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if ctx.admin_url.is_empty() {
        ctx.admin_url = std::env::var("TURNSTONE_TEST_DATABASE_URL").expect("--admin-url or TURNSTONE_TEST_DATABASE_URL");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(ctx, only));
}

async fn run(mut ctx: Ctx, only: Vec<String>) {
    let mut reports: Vec<Value> = Vec::new();
    // The baseline always runs first: every throughput is reported as a ratio to it.
    let names: Vec<&str> = ALL.iter().copied().filter(|n| *n == "pg_baseline" || only.iter().any(|o| o == n)).collect();
    for name in names {
        eprintln!("[bench] running {name} ({})", if ctx.quick { "quick" } else { "full" });
        let started = std::time::Instant::now();
        let c = ctx.clone();
        let task = tokio::spawn(async move {
            match name {
                "pg_baseline" => scenarios::pg_baseline::run(&c).await,
                "queue_throughput" => scenarios::queue::run(&c).await,
                "pickup" => scenarios::turns::pickup(&c).await,
                "turn_overhead" => scenarios::turns::overhead(&c).await,
                "turn_throughput" => scenarios::turns::throughput(&c).await,
                "sse_fanout" => scenarios::fanout::run(&c).await,
                "concurrency" => scenarios::concurrency::run(&c).await,
                "recovery" => scenarios::recovery::run(&c).await,
                "waiting" => scenarios::waiting::run(&c).await,
                "storage" => scenarios::storage::run(&c).await,
                "mcp" => scenarios::mcp::run(&c).await,
                _ => unreachable!(),
            }
        });
        let mut report = match task.await {
            Ok(v) => v,
            Err(e) => {
                let why = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                } else {
                    e.to_string()
                };
                json!({ "name": name, "error": why })
            }
        };
        report["seconds"] = json!(stats::r2(started.elapsed().as_secs_f64()));
        if name == "pg_baseline" {
            ctx.baseline_tps = report["commits_per_s"].as_f64();
        }
        println!("{report}");
        print_table(&report);
        reports.push(report);
        // Let the previous scenario's processes and database go before the next one starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("\n[bench] summary of targets");
    for r in &reports {
        if let Some(t) = r["targets"].as_object() {
            for (k, v) in t {
                eprintln!("  {:<18} {:<44} {}", r["name"].as_str().unwrap_or(""), k, if v == true { "met" } else { "MISSED" });
            }
        }
    }
}

/// Prints a scenario's report as an indented key/value table on stderr.
fn print_table(report: &Value) {
    eprintln!("\n== {} ==", report["name"].as_str().unwrap_or("?"));
    fn walk(prefix: &str, v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "name" {
                        continue;
                    }
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, v);
                }
            }
            Value::Array(a) if a.iter().all(|x| x.is_object()) && !a.is_empty() => {
                for (i, x) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), x);
                }
            }
            other => eprintln!("  {prefix:<52} {other}"),
        }
    }
    walk("", report);
}
