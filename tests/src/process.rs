//! The `licd` binary under test and child processes that cannot outlive a test.
//!
//! # How the binary is found
//!
//! `env!("CARGO_BIN_EXE_licd")` exists only inside the `licd-agent` package, and a path such as
//! `target/debug/licd` may be stale or missing (`cargo test -p licd-tests` does not build other
//! packages' binaries). So [`licd_bin`] runs `cargo build -p licd-agent --bin licd --locked
//! --message-format=json-render-diagnostics` once per test process (with the `cargo` that runs
//! the tests, in the workspace root) and takes the executable path cargo reports: always fresh,
//! right for any `CARGO_TARGET_DIR`, and a no-op of well under a second when up to date. Set
//! `LICD_BIN` to a path to skip the build (e.g. a cross-built binary under qemu-user).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::state::{read_lossy, TempState};
use crate::wait::POLL_INTERVAL;
use crate::{HarnessError, Result};

/// Environment variable naming a prebuilt `licd` to test instead of building one.
pub const LICD_BIN_ENV: &str = "LICD_BIN";

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// The path of an up-to-date `licd` binary, built at most once per test process (see the
/// module docs).
pub fn licd_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os(LICD_BIN_ENV) {
            return Ok(PathBuf::from(path));
        }
        build_bin("licd-agent", "licd")
    })
    .clone()
    .map_err(HarnessError::Build)
}

/// Environment variable naming a prebuilt `licd-stub` to run instead of building one.
pub const LICD_STUB_BIN_ENV: &str = "LICD_STUB_BIN";

/// The path of an up-to-date `licd-stub` binary (its admin CLI, e.g. `offline grant`), built
/// at most once per test process like [`licd_bin`]; `LICD_STUB_BIN` skips the build. The
/// controller always runs on the host, also when `LICD_BIN` is an emulated agent.
pub fn stub_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os(LICD_STUB_BIN_ENV) {
            return Ok(PathBuf::from(path));
        }
        build_bin("licd-stub", "licd-stub")
    })
    .clone()
    .map_err(HarnessError::Build)
}

/// Builds `bin` of `package` with cargo and returns the executable path cargo reports.
fn build_bin(package: &str, bin: &str) -> std::result::Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["build", "--locked", "-p", package, "--bin", bin])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p {package} --bin {bin}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo built no executable named {bin}"))
}

/// Spawns the `licd` under test ([`licd_bin`]) with `args`, working directory `state`, and
/// its output in `state/licd.log` (appended across restarts of the agent).
pub fn spawn_licd(state: &TempState, args: &[&str]) -> Result<TestProcess> {
    let mut command = Command::new(licd_bin()?);
    command.args(args).current_dir(state.path());
    TestProcess::spawn(
        &format!("licd {}", args.join(" ")),
        command,
        &state.join("licd.log"),
    )
}

/// A child process whose stdout and stderr go to one log file, killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct TestProcess {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    log_path: PathBuf,
}

impl TestProcess {
    /// Spawns `command` with stdin closed and its output appended to `log_path`; `name` is used
    /// in error messages.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| HarnessError::io(format!("open {}", log_path.display()), e))?;
        writeln!(log, "==== licd-tests: {name}: {command:?} ====")
            .map_err(|e| HarnessError::io("write the process log header", e))?;
        let stderr = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicate the process log handle", e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawn {name} ({command:?})"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            status: None,
            log_path: log_path.to_path_buf(),
        })
    }

    /// The process id, while it has not been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The combined stdout/stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let Some(child) = &mut self.child else {
            return Ok(None);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                self.child = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(HarnessError::io(format!("poll {}", self.name), e)),
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("{} to exit; log:\n{}", self.name, self.log()),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGTERM (a clean shutdown request) and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(child) = &self.child {
            let pid = rustix::process::Pid::from_child(child);
            if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
                if e != rustix::io::Errno::SRCH {
                    return Err(HarnessError::io(
                        format!("send SIGTERM to {}", self.name),
                        e.into(),
                    ));
                }
            }
        }
        self.wait_exit(timeout)
    }

    /// Kills the process (SIGKILL, like a power cut) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let status = child
                .wait()
                .map_err(|e| HarnessError::io(format!("reap {}", self.name), e))?;
            self.status = Some(status);
        }
        Ok(())
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_exits_reports_its_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; echo oops >&2; exit 3"]);
        let mut p = TestProcess::spawn("sh", cmd, &dir.path().join("sh.log")).unwrap();
        let status = p.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        let log = p.log();
        assert!(log.contains("hello") && log.contains("oops"), "{log}");
    }

    #[test]
    fn terminate_stops_a_running_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut p = TestProcess::spawn("sleep", cmd, &dir.path().join("sleep.log")).unwrap();
        assert!(p.try_status().unwrap().is_none());
        let status = p.terminate(Duration::from_secs(10)).unwrap();
        assert!(!status.success());
    }
}
