//! A real PgBouncer (the Debian package, 1.18) in transaction-pooling mode in
//! front of the test PostgreSQL, with a server pool smaller than the clients
//! that share it, and the login roles production uses through it
//! (`turnstone_api_login`, `turnstone_worker_login`, docs/security.md).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Server connections per (database, user): fewer than the API's or a worker's pool.
pub const POOL_SIZE: u32 = 2;

/// A running PgBouncer; killed when dropped.
pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    _child: Child,
}

/// Host and port of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().expect("port")),
        None => (host_port.to_owned(), 5432),
    }
}

impl PgBouncer {
    /// Starts PgBouncer in front of the server `admin_url` points at, and makes
    /// sure the login roles exist there (cluster-wide, members of the group
    /// roles the migrations create: call it after migrating).
    pub async fn start(admin_url: &str) -> PgBouncer {
        Self::start_with_pool(admin_url, POOL_SIZE).await
    }

    /// [`PgBouncer::start`] with `pool_size` server connections per (database, user).
    pub async fn start_with_pool(admin_url: &str, pool_size: u32) -> PgBouncer {
        create_login_roles(admin_url).await;
        let exe = which("pgbouncer").expect("pgbouncer is installed (scripts/test installs the Debian package)");
        let (host, server_port) = host_port(admin_url);
        // Under the system temporary directory: the account PgBouncer drops to must reach it.
        let dir = std::env::temp_dir().join(format!("turnstone-pgbouncer-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            std::fs::write(dir.join("users.txt"), "\"turnstone_api_login\" \"\"\n\"turnstone_worker_login\" \"\"\n").unwrap();
            std::fs::write(dir.join("pgbouncer.ini"), config(&host, server_port, port, &dir.join("users.txt"), pool_size))
                .unwrap();
            set_readable(&dir);
            let mut cmd = Command::new(&exe);
            // PgBouncer refuses to run as root; it drops to the PostgreSQL account then.
            if is_root() {
                cmd.arg("-u").arg("postgres");
            }
            cmd.arg(dir.join("pgbouncer.ini"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("pgbouncer.log")).unwrap())
                .kill_on_drop(true);
            let child = cmd.spawn().expect("spawn pgbouncer");
            if wait_listening(port).await {
                return PgBouncer { port, dir, _child: child };
            }
            eprintln!("pgbouncer did not listen on {port} (attempt {attempt}); log: {}", dir.join("pgbouncer.log").display());
        }
        panic!("pgbouncer did not start; see {}", dir.join("pgbouncer.log").display());
    }

    /// The URL of `database` through PgBouncer as `user`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lines of `pgbouncer.ini` the README documents, for a test.
fn config(host: &str, server_port: u16, port: u16, users: &std::path::Path, pool_size: u32) -> String {
    format!(
        "[databases]
* = host={host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_reset_query = DISCARD ALL
server_reset_query_always = 1
ignore_startup_parameters = extra_float_digits
",
        users = users.display()
    )
}

/// `turnstone_api_login` and `turnstone_worker_login`, as docs/security.md creates
/// them (no password: the test servers trust loopback). Roles are per cluster,
/// so parallel tests may race to create them: a duplicate is fine.
async fn create_login_roles(admin_url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("admin connection");
    for (login, group) in [("turnstone_api_login", "turnstone_api"), ("turnstone_worker_login", "turnstone_worker")] {
        let sql = format!(
            "DO $$ BEGIN
               CREATE ROLE {login} LOGIN IN ROLE {group};
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("login role");
    }
}

async fn wait_listening(port: u16) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The account PgBouncer drops to must read its files.
fn set_readable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for f in ["users.txt", "pgbouncer.ini"] {
        let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644));
    }
}
