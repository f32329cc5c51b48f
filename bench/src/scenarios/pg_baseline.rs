//! `pg_baseline`: the ceiling. Single-row insert transactions against the same
//! server, with pgbench when installed (else an equivalent sqlx loop), at 1 client
//! and at the client count the throughput scenarios use.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use turnstone_tests::TestDb;

use crate::Ctx;
use crate::stats::r2;

const SCRIPT: &str = "INSERT INTO bench_baseline (v) VALUES (1);\n";

pub async fn run(ctx: &Ctx) -> Value {
    let db = TestDb::new_on(&ctx.admin_url).await;
    let pool = PgPoolOptions::new().max_connections(ctx.clients as u32).connect(&db.url).await.expect("pool");
    sqlx::query("CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, v int NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await
        .expect("create table");
    let secs = ctx.pick(5, 15);
    let settings: Vec<(String, String)> =
        sqlx::query_as("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'server_version', 'shared_buffers', 'max_connections')")
            .fetch_all(&pool)
            .await
            .expect("settings");
    let pgbench = which("pgbench");
    let mut out = json!({ "name": "pg_baseline", "tool": if pgbench { "pgbench" } else { "sqlx" }, "seconds_per_run": secs, "clients": ctx.clients });
    for (k, v) in settings {
        out["server"][k] = json!(v);
    }
    for clients in [1usize, ctx.clients] {
        let tps = if pgbench { pgbench_tps(&db.url, clients, secs) } else { sqlx_tps(&pool, clients, secs).await };
        if clients == ctx.clients {
            out["commits_per_s"] = json!(r2(tps));
        } else {
            out["commits_per_s_1_client"] = json!(r2(tps));
            out["commit_ms_1_client"] = json!(r2(1000.0 / tps));
        }
    }
    out
}

fn which(bin: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// pgbench -n -f <insert> -c N -j 2 -T secs -M prepared; parses `tps = …`.
fn pgbench_tps(url: &str, clients: usize, secs: u64) -> f64 {
    let script = std::env::temp_dir().join(format!("turnstone-bench-insert-{}.sql", std::process::id()));
    std::fs::write(&script, SCRIPT).expect("write pgbench script");
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2", "-T", &secs.to_string(), "-f"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()?.parse().ok()))
        .unwrap_or_else(|| panic!("pgbench output without tps: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

/// The same transaction from `clients` sqlx connections for `secs` seconds.
async fn sqlx_tps(pool: &sqlx::PgPool, clients: usize, secs: u64) -> f64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.expect("conn");
                let mut n = 0u64;
                while Instant::now() < until {
                    sqlx::query(SCRIPT.trim_end()).execute(&mut *conn).await.expect("insert");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    total as f64 / start.elapsed().as_secs_f64()
}
