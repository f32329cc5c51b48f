//! A deployment under test: a fresh database on the benchmark cluster, and the
//! simulator, API and workers as real processes from the release build
//! (`TURNSTONE_BIN_DIR`), plus probes into `/proc` and `pg_stat_*`.

use std::time::{Duration, Instant};
use turnstone_core::ids::{TurnId, TypedId};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use turnstone_tests::procs::Proc;
use turnstone_tests::{Client, TestDb};

use crate::Ctx;
use crate::stats::r2;

/// How a scenario wants its processes.
#[derive(Clone)]
pub struct Options {
    pub sim_latency_ms: u64,
    pub workers: usize,
    /// Extra environment for every worker.
    pub worker_env: Vec<(&'static str, String)>,
    /// Extra environment for the API.
    pub api_env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options { sim_latency_ms: 0, workers: 1, worker_env: vec![], api_env: vec![] }
    }
}

/// Fields drop in order: processes first (killed), then the probe pool, then the database.
pub struct Deployment {
    pub workers: Vec<Proc>,
    pub api: Proc,
    /// The simulator; it lives (and is killed) with the deployment.
    pub sim: Proc,
    /// The pooler between the processes and the database (`--via-pgbouncer`).
    pub pgbouncer: Option<turnstone_tests::pooler::PgBouncer>,
    /// Superuser pool on the scenario's database, for probes (bypasses row-level security).
    pub admin: PgPool,
    pub db: TestDb,
    pub worker_names: Vec<String>,
    pub client: Client,
    pub master_key: String,
    opts: Options,
    rls: bool,
    next_worker: usize,
}

/// Spawns a server process on a free loopback port and waits until `GET
/// <ready_path>` answers 200; returns it with its address. The port is free
/// when picked, but another socket may take it before the process binds it
/// (likelier after a scenario that opened thousands of connections): a process
/// that exits during start is started again on another port, up to five times.
async fn spawn_serving(
    name: &'static str,
    ready_path: &str,
    env: impl Fn(&str) -> Vec<(&'static str, String)>,
) -> (Proc, String) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 1..=5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut proc = Proc::spawn(name, &env(&addr));
        loop {
            if let Ok(r) = http.get(format!("http://{addr}{ready_path}")).send().await
                && r.status().as_u16() == 200
            {
                return (proc, addr);
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                eprintln!("{name} exited during start ({status}, attempt {attempt}); trying another port");
                break;
            }
            assert!(Instant::now() < deadline, "{name} not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("{name} exited during start five times");
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn with_role(url: &str, role: &str) -> String {
    format!("{url}?options=-c%20role%3D{role}")
}

/// `DATABASE_URL` (and, through a pooler, the direct LISTEN URL and no prepared statements) of
/// the `api` or `worker` process.
fn database_env(
    url: &str,
    pgbouncer: Option<&turnstone_tests::pooler::PgBouncer>,
    database: &str,
    rls: bool,
    process: &str,
) -> Vec<(&'static str, String)> {
    let role = format!("turnstone_{process}");
    match pgbouncer {
        Some(b) => vec![
            ("DATABASE_URL", b.url(&format!("{role}_login"), database)),
            ("TURNSTONE_LISTEN_DATABASE_URL", with_role(url, &role)),
            ("TURNSTONE_DB_PREPARED_STATEMENTS", "false".into()),
        ],
        None if rls => vec![("DATABASE_URL", with_role(url, &role))],
        None => vec![("DATABASE_URL", url.to_owned())],
    }
}

impl Deployment {
    pub async fn start(ctx: &Ctx, opts: Options) -> Deployment {
        let db = TestDb::new_on(&ctx.admin_url).await;
        let admin = PgPoolOptions::new().max_connections(4).connect(&db.url).await.expect("admin pool");
        // pg_stat_statements is preloaded by scripts/bench; absent elsewhere, which is fine.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&admin).await;
        if ctx.rls {
            // The RLS migration creates these too; they must exist before the API's pool connects as them.
            sqlx::query(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'turnstone_api') THEN CREATE ROLE turnstone_api NOLOGIN; END IF;
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'turnstone_worker') THEN CREATE ROLE turnstone_worker NOLOGIN; END IF;
                 END $$",
            )
            .execute(&admin)
            .await
            .expect("roles");
        }
        // Through PgBouncer: the login roles join the group roles, so they must exist first; the
        // server pool is sized like a production pooler's, not the tests' deliberately small one.
        let pgbouncer = match ctx.via_pgbouncer {
            true => {
                assert!(ctx.rls, "--via-pgbouncer connects as the login roles: it needs row-level security on");
                Some(turnstone_tests::pooler::PgBouncer::start_with_pool(&db.url, 20).await)
            }
            false => None,
        };
        let (sim, sim_addr) = spawn_serving("turnstone-llmsim", "/health", |addr| {
            vec![("TURNSTONE_LLMSIM_ADDR", addr.to_owned()), ("TURNSTONE_LLMSIM_LATENCY_MS", opts.sim_latency_ms.to_string())]
        })
        .await;
        let key = turnstone_tests::api_key();
        let master_key = turnstone_tests::master_key();
        let (api, api_addr) = spawn_serving("turnstone-api", "/ready", |addr| {
            let mut env = vec![
                ("TURNSTONE_MIGRATE_DATABASE_URL", db.url.clone()),
                ("TURNSTONE_MASTER_KEY", master_key.clone()),
                ("TURNSTONE_BOOTSTRAP_API_KEY", key.clone()),
                ("OPENAI_BASE_URL", format!("http://{sim_addr}/v1")),
                ("OPENAI_API_KEY", "llmsim".into()),
                ("TURNSTONE_DEFAULT_MODEL", "sim-1".into()),
                ("TURNSTONE_LLMSIM_ADDR", sim_addr.clone()),
                ("TURNSTONE_API_ADDR", addr.to_owned()),
            ];
            env.extend(database_env(&db.url, pgbouncer.as_ref(), &db.name, ctx.rls, "api"));
            env.extend(opts.api_env.iter().cloned());
            env
        })
        .await;
        let base = format!("http://{api_addr}");
        // Benchmarks measure the platform, not its tenant limits: lift the bootstrap org's quotas
        // (max_concurrent_turns defaults to 100, the per-key rate limit to 6000/min). Absent columns are fine.
        let _ = sqlx::query("UPDATE orgs SET max_concurrent_turns = 1000000, rate_limit_per_minute = 0").execute(&admin).await;
        let client = Client::new(&base, &key);
        let mut d = Deployment {
            db,
            admin,
            sim,
            api,
            workers: vec![],
            worker_names: vec![],
            client,
            master_key,
            rls: ctx.rls,
            pgbouncer,
            opts: opts.clone(),
            next_worker: 0,
        };
        for _ in 0..opts.workers {
            d.add_worker().await;
        }
        d
    }

    /// Starts one more worker process and waits until it registered in `queue_workers`.
    pub async fn add_worker(&mut self) {
        self.next_worker += 1;
        let name = format!("bench-w{}-{}", self.next_worker, std::process::id());
        let mut env = database_env(&self.db.url, self.pgbouncer.as_ref(), &self.db.name, self.rls, "worker");
        env.extend([("TURNSTONE_MASTER_KEY", self.master_key.clone()), ("TURNSTONE_WORKER_NAME", name.clone())]);
        env.extend(self.opts.worker_env.iter().cloned());
        let proc = Proc::spawn("turnstone-worker", &env);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `apalis.workers` is where binaries before the own queue (TURNSTONE_BIN_DIR A/B runs) register.
            let own: bool = sqlx::query_scalar("SELECT to_regclass('queue_workers') IS NOT NULL")
                .fetch_one(&self.admin)
                .await
                .unwrap_or(true);
            let sql = if own {
                "SELECT count(*) FROM queue_workers WHERE name = $1"
            } else {
                "SELECT count(*) FROM apalis.workers WHERE id = $1"
            };
            let n: i64 = sqlx::query_scalar(sql).bind(&name).fetch_one(&self.admin).await.unwrap_or(0);
            if n > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "worker {name} did not register within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.workers.push(proc);
        self.worker_names.push(name);
    }

    /// A session on a fresh agent with the `math` capability.
    pub async fn session(&self) -> String {
        self.client.session(&["math"]).await
    }

    /// Commits and rollbacks of this database so far (`pg_stat_database`).
    pub async fn xacts(&self) -> (i64, i64) {
        // Our own pending counters first, so the snapshot is as fresh as the server allows.
        let _ = sqlx::query("SELECT pg_stat_force_next_flush()").execute(&self.admin).await;
        sqlx::query_as("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&self.admin)
            .await
            .expect("pg_stat_database")
    }
}

/// The scenario database's connections whose `application_name` is LIKE
/// `pattern` (`pg_stat_activity`): the API names its connections `turnstone`,
/// a worker `turnstone-worker:<name>`. One query, whatever the number of open
/// sockets: walking `/proc/<pid>/fd` and `/proc/net/tcp` for this, as the bench
/// did before, cost the load generator 5-50 ms of CPU per sample with
/// thousands of sockets open — CPU taken from the system it measures.
pub async fn connections_named(d: &Deployment, pattern: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE $1")
        .bind(pattern)
        .fetch_one(&d.admin)
        .await
        .unwrap_or(-1)
}

/// The API's connections (see [`connections_named`]).
pub const API_CONNECTIONS: &str = "turnstone";
/// Every worker's connections (see [`connections_named`]).
pub const WORKER_CONNECTIONS: &str = "turnstone-worker%";

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`).
pub fn proc_kb(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.trim_start_matches(':').split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// The turn id of a `POST …/messages` 202 body.
pub fn turn_of(accepted: &serde_json::Value) -> TurnId {
    let id = accepted["turn_id"].as_str().expect("turn_id in 202 body");
    TurnId::parse(id).expect("turn id")
}

/// The scenario database's statements from `pg_stat_statements` (empty when it
/// is not preloaded): query (whitespace folded, cut to `width`), calls, total
/// execution ms; the `limit` with the most calls, or the most time.
pub async fn statements(d: &Deployment, by_time: bool, width: i32, limit: i64) -> Vec<(String, i64, f64)> {
    let order = if by_time { "total_exec_time" } else { "calls" };
    let sql = format!(
        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), $1), calls, total_exec_time
           FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          ORDER BY {order} DESC LIMIT $2"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(width).bind(limit).fetch_all(&d.admin).await.unwrap_or_default()
}

/// Top-level statements run in the scenario database so far
/// (`pg_stat_statements`; `None` when it is not preloaded): every statement a
/// client sent, nested ones (functions, foreign-key checks) not counted. A
/// simple query of several statements (`BEGIN; SELECT …`) counts each.
pub async fn toplevel_statements(d: &Deployment) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel",
    )
    .fetch_one(&d.admin)
    .await
    .ok()
}

/// Claim statements run in the scenario database so far (`pg_stat_statements`;
/// `None` when it is not preloaded). Every claim — a full one or an empty one
/// (a worker woken for nothing) — is one call. Matches the claim of every
/// version since the own queue (constants may or may not be folded into `$n`).
pub async fn claims(d: &Deployment) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query LIKE '%UPDATE task_queue t SET status = %, lock_by = $2, locked_at = now()%'",
    )
    .fetch_one(&d.admin)
    .await
    .ok()
}

/// CPU seconds used so far by each process of a deployment, and by the machine.
pub struct CpuUse {
    api: f64,
    sim: f64,
    workers: f64,
    postgres: f64,
    bench: f64,
    machine_busy: f64,
    machine_idle: f64,
}

impl CpuUse {
    pub fn now(d: &Deployment) -> Self {
        let (machine_busy, machine_idle) = machine_cpu_s();
        CpuUse {
            api: cpu_s(d.api.pid()),
            sim: cpu_s(d.sim.pid()),
            workers: d.workers.iter().map(|w| cpu_s(w.pid())).sum(),
            postgres: postgres_cpu_s(),
            bench: cpu_s(std::process::id() as i32),
            machine_busy,
            machine_idle,
        }
    }

    /// Seconds of CPU each used from `before` to `self` (a worker spawned in
    /// between counts from its start), and the machine's busy and idle seconds
    /// (two CPUs: busy + idle is twice the wall time). `bench_client` is the load
    /// generator itself, which shares the CPUs with the system it measures.
    pub fn since(&self, before: &Self) -> serde_json::Value {
        serde_json::json!({
            "workers": r2(self.workers - before.workers),
            "api": r2(self.api - before.api),
            "simulator": r2(self.sim - before.sim),
            "postgres": r2(self.postgres - before.postgres),
            "bench_client": r2(self.bench - before.bench),
            "machine_busy": r2(self.machine_busy - before.machine_busy),
            "machine_idle": r2(self.machine_idle - before.machine_idle),
        })
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`,
/// with those of its children that exited and were waited for.
pub fn cpu_s(pid: i32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // utime, stime, cutime, cstime are fields 14-17, i.e. 11-14 after the name.
    let ticks: f64 = f.get(11..15).map_or(0.0, |t| t.iter().sum());
    ticks / USER_HZ
}

/// CPU seconds used so far by every process named `postgres` on this machine
/// (the bench cluster's server and backends; an idle second cluster adds nothing).
pub fn postgres_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_s)
        .sum()
}

/// CPU seconds all CPUs spent busy and idle so far (`/proc/stat`, first line).
pub fn machine_cpu_s() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = text.lines().next().unwrap_or("").split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    let busy: f64 = f.iter().take(8).sum::<f64>() - idle;
    (busy / USER_HZ, idle / USER_HZ)
}

/// `USER_HZ`: Linux reports `/proc` CPU times in these ticks (100 on every common build).
const USER_HZ: f64 = 100.0;
