//! Runs an external command bounded in time and in memory: the state-change hook
//! ([`crate::hooks`]) and the VM count command ([`crate::identity::vm`]).
//!
//! No shell; stdin is `/dev/null`. Stdout and stderr are read to the end while the child runs
//! (so it never blocks on a full pipe), keeping only the first bytes of each. After the timeout
//! the child is killed (SIGKILL, the direct child only: grandchildren of a script run on until
//! they exit — a script should `exec` its last command) and reaped for a moment.
//!
//! The deadline is tokio's timer. Under a paused test clock (`tokio::time::pause`) the runtime
//! jumps to the next timer whenever it is idle — which it is while it waits for a child — so
//! every command would "time out" at once. A run therefore holds the clock: a blocking-pool
//! task that waits for the run to end, which tokio counts as work in progress and so does not
//! jump ahead (see [`hold_clock`]). It is not a deadline thread: it ends with the run.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How long to wait for a killed command to be reaped before leaving it to tokio's orphan
/// reaper.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// A command and its bounds.
#[derive(Debug, Clone)]
pub struct Bounded<'a> {
    /// Program and arguments; the program is looked up in `PATH` unless it has a `/`.
    pub argv: &'a [String],
    /// Variables added to the inherited environment.
    pub env: Vec<(&'static str, String)>,
    /// Time before the command is killed.
    pub timeout: Duration,
    /// Bytes of stdout kept; the rest is read and discarded.
    pub max_stdout: usize,
    /// Bytes of stderr kept; the rest is read and discarded.
    pub max_stderr: usize,
}

/// The start of one output stream of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// Whether the command wrote more than was kept.
    pub truncated: bool,
}

impl Captured {
    /// The bytes as one printable line for a log line or a reason: see [`one_line`]; ends in
    /// `…` when cut here or at capture.
    pub fn one_line(&self, max_chars: usize) -> String {
        let mut line = one_line(&self.bytes, max_chars);
        if self.truncated && !line.ends_with('…') {
            line.push('…');
        }
        line
    }
}

/// What a command that ran to its end left.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// The start of its stdout.
    pub stdout: Captured,
    /// The start of its stderr.
    pub stderr: Captured,
}

/// Why a command did not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The command line is empty.
    #[error("no program to run")]
    NoProgram,
    /// The command could not be started.
    #[error("cannot start {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
    /// The command did not finish in time and was killed.
    #[error("{program} did not finish within {}s and was killed", .after.as_secs())]
    TimedOut {
        /// The program.
        program: String,
        /// The timeout.
        after: Duration,
    },
    /// Reading the command's output or waiting for it failed.
    #[error("running {program}: {error}")]
    Io {
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
}

/// Runs `cmd` to its end or to its timeout.
pub async fn run(cmd: &Bounded<'_>) -> Result<Output, RunError> {
    let Some((program, args)) = cmd.argv.split_first() else {
        return Err(RunError::NoProgram);
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Also kills the child if the caller drops this future (shutdown, a newer probe).
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| RunError::Spawn {
            program: program.clone(),
            error,
        })?;
    let io_err = |error| RunError::Io {
        program: program.clone(),
        error,
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io_err(io::Error::other("child has no stdout/stderr pipe")));
    };

    let _hold = hold_clock(cmd.timeout);
    let finished = tokio::time::timeout(cmd.timeout, async {
        let (out, err, status) = tokio::join!(
            drain(stdout, cmd.max_stdout),
            drain(stderr, cmd.max_stderr),
            child.wait()
        );
        Ok::<_, io::Error>((out?, err?, status?))
    })
    .await;
    match finished {
        Ok(Ok((stdout, stderr, status))) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Ok(Err(e)) => Err(io_err(e)),
        Err(_) => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
            Err(RunError::TimedOut {
                program: program.clone(),
                after: cmd.timeout,
            })
        }
    }
}

/// Keeps a paused tokio clock from jumping ahead while the caller waits for real work (a child
/// process) that tokio cannot see; no effect on a running clock. Tokio does not auto-advance
/// while a blocking-pool task runs, so one waits here until the returned sender is dropped
/// (the run ended) or `at_most` has passed in real time (so a hung command under a paused
/// clock still times out, after its timeout of real time, as with the real clock).
fn hold_clock(at_most: Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Detached: the task ends by itself.
    drop(tokio::task::spawn_blocking(move || {
        let _ = rx.recv_timeout(at_most);
    }));
    tx
}

/// Reads `reader` to the end, keeping the first `keep` bytes.
async fn drain(mut reader: impl AsyncRead + Unpin, keep: usize) -> io::Result<Captured> {
    let mut captured = Captured::default();
    let mut buf = [0u8; 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(captured);
        }
        let room = keep - captured.bytes.len();
        captured.bytes.extend_from_slice(&buf[..n.min(room)]);
        captured.truncated |= n > room;
    }
}

/// `bytes` as one printable line: lossy UTF-8, trimmed, control characters escaped (`\n`,
/// `\u{1b}`) so a command's output cannot forge log lines or colour a terminal, cut to
/// `max_chars` characters with `…`.
pub fn one_line(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut line = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        if i == max_chars {
            line.push('…');
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn run_sh(script: &str, timeout: Duration) -> Result<Output, RunError> {
        let argv = ["sh", "-c", script].map(str::to_owned);
        run(&Bounded {
            argv: &argv,
            env: vec![("LICD_TEST", "from env".into())],
            timeout,
            max_stdout: 16,
            max_stderr: 64,
        })
        .await
    }

    #[tokio::test]
    async fn output_status_and_environment_come_back() {
        let out = run_sh(
            "echo \"$LICD_TEST\"; echo oops >&2; exit 3",
            Duration::from_secs(5),
        )
        .await
        .expect("ran");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout.bytes, b"from env\n");
        assert_eq!(out.stderr.one_line(100), "oops");
        assert!(!out.stdout.truncated && !out.stderr.truncated);
    }

    #[tokio::test]
    async fn a_flood_is_read_to_the_end_and_only_its_start_kept() {
        let script = "head -c 1000000 /dev/zero | tr '\\0' 1; head -c 1000000 /dev/zero >&2";
        let out = run_sh(script, Duration::from_secs(10)).await.expect("ran");
        assert!(out.status.success());
        assert_eq!(out.stdout.bytes, [b'1'; 16]);
        assert!(out.stdout.truncated && out.stderr.truncated);
        assert_eq!(out.stderr.bytes.len(), 64);
    }

    #[tokio::test]
    async fn a_missing_program_or_an_empty_command_line_is_an_error() {
        let argv = vec!["/nonexistent/licd-command".to_owned()];
        let cmd = Bounded {
            argv: &argv,
            env: Vec::new(),
            timeout: Duration::from_secs(5),
            max_stdout: 1,
            max_stderr: 1,
        };
        assert!(matches!(run(&cmd).await, Err(RunError::Spawn { .. })));
        let empty = Bounded { argv: &[], ..cmd };
        assert!(matches!(run(&empty).await, Err(RunError::NoProgram)));
    }

    // A paused clock: the runtime would jump to the 5 s deadline while it waits for the child,
    // if the run did not hold the clock.
    #[tokio::test(start_paused = true)]
    async fn a_quick_command_is_not_timed_out_by_a_paused_clock() {
        let out = run_sh("sleep 0.05; echo done", Duration::from_secs(5)).await;
        assert_eq!(out.expect("ran").stdout.bytes, b"done\n");
    }

    // The deadline is tokio's: advancing the paused clock kills a hung command at once, with
    // no thread sleeping out the 300 s.
    #[tokio::test(start_paused = true)]
    async fn a_hung_command_is_killed_when_its_timeout_passes_on_tokios_clock() {
        let started = Instant::now();
        let timeout = Duration::from_secs(300);
        let (r, ()) = tokio::join!(run_sh("sleep 600", timeout), async {
            tokio::time::advance(timeout).await;
        });
        assert!(
            matches!(&r, Err(RunError::TimedOut { after, .. }) if *after == timeout),
            "{r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_after_its_timeout() {
        let started = Instant::now();
        let r = run_sh("sleep 30", Duration::from_millis(200)).await;
        assert!(matches!(r, Err(RunError::TimedOut { .. })), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn one_line_escapes_control_characters_and_cuts() {
        assert_eq!(one_line(b"  disk full\n", 80), "disk full");
        assert_eq!(
            one_line(b"line 1\nfake: licd started\x1b[31m", 80),
            "line 1\\nfake: licd started\\u{1b}[31m"
        );
        assert_eq!(one_line("é🙂abc".as_bytes(), 3), "é🙂a…");
        assert_eq!(one_line(b"\xffok", 80), "\u{fffd}ok");
        let cut = Captured {
            bytes: b"abc".to_vec(),
            truncated: true,
        };
        assert_eq!(cut.one_line(80), "abc…");
    }
}
