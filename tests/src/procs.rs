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
        let status = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Waits for exit (with the test deadline); returns the exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(crate::DEADLINE, self.child.wait()).await.expect("process exits in time").expect("wait");
        status.code()
    }
}
