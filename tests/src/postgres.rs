//! A real PostgreSQL server for tests: its own cluster (`initdb`) in a temp dir, listening on a
//! free 127.0.0.1 port and a unix socket in that dir; stoppable, restartable on the same port
//! and data, killed (immediate shutdown) on drop. Each test takes a fresh database of its own
//! with [`Postgres::create_database`].
//!
//! PostgreSQL refuses to run as root: started as root (CI, this machine), the cluster runs as
//! the `postgres` user Debian's package creates, and the temp dir is handed to that user.
//! The server's output goes to `postgres.log` in the temp dir; errors carry it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::state::read_lossy;
use crate::wait::POLL_INTERVAL;
use crate::{HarnessError, Result};

/// Where Debian's `postgresql` package installs the server binaries (one folder per major
/// version; the newest is taken).
pub const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// How long a starting server gets to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fresh ports tried when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// The superuser the cluster is created with (trust authentication on loopback only).
pub const USER: &str = "licd";

/// A running (or stopped) PostgreSQL cluster owned by one test.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// uid/gid to run as (when started as root).
    run_as: Option<(u32, u32)>,
    databases: AtomicU32,
    starts: u32,
}

/// The cluster the tests of one process share while any holds it (see [`Postgres::shared`]).
static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());

impl Postgres {
    /// A cluster shared by the tests of this process that run at the same time (each takes
    /// its own database): one `initdb` instead of one per test. It stops when the last
    /// holder drops it; tests that stop or restart the server start their own instead.
    pub fn shared() -> Result<Arc<Self>> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pg) = slot.upgrade() {
            return Ok(pg);
        }
        let pg = Arc::new(Self::start()?);
        *slot = Arc::downgrade(&pg);
        Ok(pg)
    }

    /// Creates a cluster in a temp dir and starts it.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// Creates a cluster that takes TLS connections only (`hostssl` in `pg_hba.conf`; a
    /// plain TCP connection is refused), presenting `server` (certificate and key, PEM), and
    /// starts it. `psql` and `pg_isready` still get in: they use TLS when offered.
    pub fn start_tls(server: &crate::pki::CertFiles) -> Result<Self> {
        Self::start_with(Some(server))
    }

    fn start_with(tls: Option<&crate::pki::CertFiles>) -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("licd-pg-")
            .tempdir()
            .map_err(|e| HarnessError::io("create the PostgreSQL temp dir", e))?;
        let run_as = if rustix::process::geteuid().is_root() {
            let ids = postgres_user()?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .map_err(|e| HarnessError::io("hand the temp dir to the postgres user", e))?;
            Some(ids)
        } else {
            None
        };
        let mut pg = Self {
            bin,
            dir,
            port: 0,
            child: None,
            run_as,
            databases: AtomicU32::new(0),
            starts: 0,
        };
        let out = pg
            .command("initdb")
            .args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .arg("-D")
            .arg(pg.data_dir())
            .output()
            .map_err(|e| HarnessError::io("run initdb (scripts/test.sh installs postgresql)", e))?;
        if !out.status.success() {
            return Err(pg.error(&format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if let Some(server) = tls {
            pg.require_tls(server)?;
        }
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port()?;
            match pg.spawn_and_wait() {
                Ok(()) => return Ok(pg),
                // Taken by someone else between the probe and the bind: another port.
                Err(_) if pg.log().contains("could not bind") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(pg.error("found no free port"))
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> Result<String> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs one SQL command with `psql` on database `db` and returns its unaligned output
    /// (rows one a line, columns split by `|`).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::io("run psql", e))?;
        if !out.status.success() {
            return Err(self.error(&format!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Whether the server process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server with a fast shutdown (SIGINT: open sessions are ended, committed data
    /// is on disk), waiting for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        self.signal_and_wait(rustix::process::Signal::INT)
    }

    /// Kills the server as a crash would (SIGQUIT: immediate shutdown, recovery at the next
    /// start).
    pub fn kill(&mut self) -> Result<()> {
        self.signal_and_wait(rustix::process::Signal::QUIT)
    }

    /// Starts a stopped server again on the same port and data.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(self.error("is already running"));
        }
        self.spawn_and_wait()
    }

    fn signal_and_wait(&mut self, sig: rustix::process::Signal) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
            }
        }
    }

    /// Installs `server` in the data dir, turns `ssl` on and lets only TLS in over TCP.
    fn require_tls(&self, server: &crate::pki::CertFiles) -> Result<()> {
        let data = self.data_dir();
        let io = |what: &'static str| move |e| HarnessError::io(what, e);
        fs::copy(&server.cert, data.join("server.crt"))
            .map_err(io("copy the server certificate"))?;
        fs::copy(&server.key, data.join("server.key")).map_err(io("copy the server key"))?;
        // PostgreSQL refuses a key others may read.
        fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(io("restrict the server key"))?;
        if let Some((uid, gid)) = self.run_as {
            for f in ["server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(f), Some(uid), Some(gid))
                    .map_err(io("hand the TLS files to the postgres user"))?;
            }
        }
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .map_err(io("write pg_hba.conf"))?;
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(io("open postgresql.conf"))?;
        conf.write_all(b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
            .map_err(io("write postgresql.conf"))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        // The server's user may not be allowed into the test's working directory.
        c.stdin(Stdio::null()).current_dir(self.dir.path());
        c
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| HarnessError::io("open postgres.log", e))?;
        let _ = writeln!(
            log,
            "==== licd-tests: start #{} on port {} ====",
            self.starts, self.port
        );
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let stderr = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicate the postgres log handle", e))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Room for a few replicas and test clients; small memory on a shared machine.
            .args(["-c", "max_connections=40", "-c", "shared_buffers=16MB"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| HarnessError::io("spawn postgres", e))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(self.error(&format!("exited during start-up ({status})")));
                }
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                return Err(self.error(&format!("not ready within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn error(&self, problem: &str) -> HarnessError {
        HarnessError::Postgres {
            port: self.port,
            problem: problem.to_owned(),
            log: self.log(),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The newest `…/postgresql/N/bin` Debian installed.
pub fn bin_dir() -> Result<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    let entries = fs::read_dir(DEBIAN_LIB).map_err(|e| {
        HarnessError::io(
            format!("list {DEBIAN_LIB} (is postgresql installed? scripts/test.sh installs it)"),
            e,
        )
    })?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(v) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let bin = e.path().join("bin");
        if bin.join("postgres").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, bin));
        }
    }
    best.map(|(_, b)| b).ok_or_else(|| {
        HarnessError::io(
            format!("find postgres under {DEBIAN_LIB}"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })
}

/// Whether a PostgreSQL server is installed here.
pub fn is_installed() -> bool {
    bin_dir().is_ok()
}

/// uid and gid of the `postgres` user (from `/etc/passwd`).
fn postgres_user() -> Result<(u32, u32)> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| HarnessError::io("read /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            HarnessError::io(
                "find the postgres user (installed with the postgresql package)",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
}

impl Postgres {
    /// The cluster's temp dir (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
