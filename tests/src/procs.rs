//! The real binaries as child processes, for tests that kill or signal them.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Where `scripts/test` built the binaries (`TURNSTONE_BIN_DIR`), else next to this test binary.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TURNSTONE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug
    exe.parent().and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, envs: &[(&str, String)]) -> Proc {
        let path = bin_dir().join(name);
        assert!(path.exists(), "{} is not built; run `cargo build --bins` (scripts/test does)", path.display());
        let mut cmd = Command::new(path);
        cmd.envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        Proc { child: cmd.spawn().expect("spawn"), name }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Sends a signal (e.g. `"TERM"`, `"KILL"`).
    pub fn signal(&self, sig: &str) {
        let status =
            std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Waits for exit (with the test deadline); returns the exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        let status =
            tokio::time::timeout(crate::DEADLINE, self.child.wait()).await.expect("process exits in time").expect("wait");
        status.code()
    }
}

/// Environment for a worker process against `db_url`, tuned for fast recovery in tests.
pub fn worker_env(db_url: &str, master_key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", format!("{db_url}?options=-c%20role%3Dturnstone_worker")),
        ("TURNSTONE_MASTER_KEY", master_key.to_owned()),
        ("TURNSTONE_WORKER_HEARTBEAT_SECS", "0.5".into()),
        ("TURNSTONE_WORKER_RECLAIM_SECS", "2".into()),
        ("TURNSTONE_WORKER_POLL_MS", "200".into()),
        ("TURNSTONE_LLM_BACKOFF_MS", "20".into()),
        // Tests' providers and MCP servers listen on loopback.
        ("TURNSTONE_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8,::1/128".into()),
    ]
}

/// Spawns a worker process for `stack`, with extra environment.
pub fn worker(stack: &crate::Stack, extra: &[(&'static str, String)]) -> Proc {
    let mut env = worker_env(&stack.db.url, &stack.master_key);
    if stack.pgbouncer.is_some() {
        let (url, listen_url, prepared) = stack.worker_urls();
        env.retain(|(k, _)| *k != "DATABASE_URL");
        env.push(("DATABASE_URL", url));
        env.extend(listen_url.map(|u| ("TURNSTONE_LISTEN_DATABASE_URL", u)));
        env.push(("TURNSTONE_DB_PREPARED_STATEMENTS", prepared.to_string()));
    }
    env.extend(extra.iter().cloned());
    Proc::spawn("turnstone-worker", &env)
}

/// A private PostgreSQL cluster a test may stop and start (via `scripts/lib/pg.sh`).
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

fn pg_sh(args: &[&str]) {
    assert!(try_pg_sh(args), "pg.sh {args:?} failed");
}

/// Starts (after initdb, the first time) the cluster in `dir` on `port`; false if it did not start.
fn start_at(dir: &std::path::Path, port: u16) -> bool {
    try_pg_sh(&["ts_start_private_cluster", dir.to_str().unwrap(), &port.to_string(), "-c fsync=off"])
}

fn try_pg_sh(args: &[&str]) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib/pg.sh");
    std::process::Command::new("bash").arg(script).args(args).stdout(Stdio::null()).status().expect("run pg.sh").success()
}

impl Cluster {
    /// initdb + start on a free port, in a fresh directory under the target dir.
    /// The port is free when picked but another socket may take it before the
    /// server binds it: a failed start tries another port (three times in all).
    pub fn start() -> Cluster {
        let dir = bin_dir().join(format!("pg-{}", uuid::Uuid::now_v7().simple()));
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if start_at(&dir, port) {
                return Cluster { dir, port };
            }
        }
        panic!("no private PostgreSQL cluster started in {} on three ports", dir.display());
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn up(&self) {
        assert!(start_at(&self.dir, self.port), "the private cluster in {} did not start", self.dir.display());
    }

    pub fn down(&self) {
        pg_sh(&["ts_stop_private_cluster", self.dir.to_str().unwrap()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
