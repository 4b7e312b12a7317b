//! The VM count: how many guests this host runs, for per-VM licenses.
//!
//! The probe is chosen in the `[vm]` table of the config ([`VmProbeConfig`]). Whatever happens,
//! a probe yields a [`VmCount`]: a failing, garbled or hanging probe is `Unknown` with a reason,
//! never a crash or a hang — every probe runs under a timeout (the command probe's child is
//! killed; the process listing runs on an abandoned-if-stuck thread, see [`super::bounded`]).
//!
//! What this leaves to others: when to probe and what a changed count means for enforcement
//! (daemon and `enforce`). An unknown count is not zero: the enforcer keeps the last known
//! count in force, persisted across restarts.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::bounded::{run_bounded, BoundedError};
use super::ConfigError;
use crate::command::{self, RunError};
pub use licd_core::config::host::{
    default_guest_process_names, VmProbeConfig, DEFAULT_GUEST_PROCESS_NAMES,
    DEFAULT_PROBE_TIMEOUT_SECS, MAX_PROBE_TIMEOUT_SECS,
};

/// Bytes of a command's stdout kept for parsing; a count is at most 10 digits, the rest is
/// room for whitespace. Further output is read and discarded so the child never blocks on a
/// full pipe.
const MAX_STDOUT: usize = 64;

/// Bytes of a command's stderr kept for the reason of a failure.
const MAX_STDERR: usize = 512;

/// Linux keeps only the first 15 bytes of a process name (`comm`).
const COMM_LEN: usize = 15;

/// The outcome of a VM probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmCount {
    /// No probe is configured.
    NotConfigured,
    /// The probe counted this many VMs.
    Known(u32),
    /// The probe failed; the count is not known (the last known one stays in force).
    Unknown {
        /// Why, for status and logs.
        reason: String,
    },
}

impl VmCount {
    /// The count, if this reading has one. `None` is not zero: the enforcer keeps the last
    /// known count in force (and in the report) while the probe fails.
    pub fn counted(&self) -> Option<u32> {
        match self {
            Self::Known(n) => Some(*n),
            Self::NotConfigured | Self::Unknown { .. } => None,
        }
    }
}

/// Why a VM probe gave no count.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmProbeError {
    /// The probe's config is invalid.
    #[error("invalid VM probe config: {0}")]
    Config(ConfigError),
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
    /// The command exited unsuccessfully.
    #[error("{program} failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// The start of its stderr, cleaned.
        stderr: String,
    },
    /// The command's output is not a single number.
    #[error("{program} printed {output:?}; expected a single number")]
    NotANumber {
        /// The program.
        program: String,
        /// The start of its stdout, cleaned.
        output: String,
    },
    /// The command printed far more than a number.
    #[error("{program} printed more than {MAX_STDOUT} bytes; expected a single number")]
    OutputTooLong {
        /// The program.
        program: String,
    },
    /// The process listing hung, panicked or could not start.
    #[error(transparent)]
    Listing(#[from] BoundedError),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Runs the configured probe: `Ok(None)` when none is configured, `Ok(Some(n))` with a count,
/// or why there is none. Bounded by the probe's timeout.
pub async fn run_vm_probe(config: &VmProbeConfig) -> Result<Option<u32>, VmProbeError> {
    config.validate().map_err(VmProbeError::Config)?;
    match config {
        VmProbeConfig::None => Ok(None),
        VmProbeConfig::Fixed { count } => Ok(Some(*count)),
        VmProbeConfig::Processes {
            names,
            timeout_secs,
        } => {
            let names = names.clone();
            let pids = run_bounded(
                "VM process listing",
                Duration::from_secs(*timeout_secs),
                move || guest_pids(&names),
            )
            .await?;
            Ok(Some(u32::try_from(pids.len()).unwrap_or(u32::MAX)))
        }
        VmProbeConfig::Command { argv, timeout_secs } => {
            run_count_command(argv, Duration::from_secs(*timeout_secs))
                .await
                .map(Some)
        }
    }
}

/// Runs the configured probe and turns any failure into [`VmCount::Unknown`] with the reason.
/// This is what the daemon calls; it logs the failure once when the probe starts failing, and
/// keeps the last known count in force (see [`crate::enforce::Input::VmCount`]).
pub async fn probe_vm_count(config: &VmProbeConfig) -> VmCount {
    match run_vm_probe(config).await {
        Ok(None) => VmCount::NotConfigured,
        Ok(Some(n)) => VmCount::Known(n),
        Err(e) => VmCount::Unknown {
            reason: e.to_string(),
        },
    }
}

/// PIDs of running guest processes matching `names`. Blocking: walks `/proc`.
fn guest_pids(names: &[String]) -> Vec<u32> {
    use sysinfo::{
        ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind,
    };

    let mut sys = System::new();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        // Threads would count one guest many times; argv[0] catches guests whose process
        // name was changed (qemu's `-name process=…`) or cut to 15 bytes.
        ProcessRefreshKind::nothing()
            .without_tasks()
            .with_cmd(UpdateKind::Always),
    );
    let mut pids: Vec<u32> = sys
        .processes()
        .values()
        .filter(|p| p.thread_kind().is_none_or(|k| k != ThreadKind::Kernel))
        .filter(|p| !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead))
        .filter(|p| {
            let argv0 = p.cmd().first().and_then(|a| Path::new(a).file_name());
            is_guest_process(p.name(), argv0, names)
        })
        .map(|p| p.pid().as_u32())
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether a process named `name` (its `comm`) with `argv0` (file name of `argv[0]`) matches
/// one of the `prefixes`.
fn is_guest_process(name: &OsStr, argv0: Option<&OsStr>, prefixes: &[String]) -> bool {
    let name = name.to_string_lossy();
    let argv0 = argv0.map(|a| a.to_string_lossy());
    prefixes.iter().any(|prefix| {
        name.starts_with(prefix.as_str())
            // `comm` is cut to 15 bytes: `cloud-hypervisor` runs as `cloud-hyperviso`.
            || (name.len() == COMM_LEN && prefix.starts_with(name.as_ref()))
            || argv0.as_deref().is_some_and(|a| a.starts_with(prefix.as_str()))
    })
}

/// Printable text for a reason: control characters dropped, cut to `max` characters.
fn excerpt(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Runs `argv` (no shell), kills it after `timeout`, and parses its stdout as one `u32`.
async fn run_count_command(argv: &[String], timeout: Duration) -> Result<u32, VmProbeError> {
    let program = argv.first().cloned().unwrap_or_default();
    let cmd = command::Bounded {
        argv,
        env: Vec::new(),
        timeout,
        max_stdout: MAX_STDOUT,
        max_stderr: MAX_STDERR,
    };
    let out = command::run(&cmd).await.map_err(|e| match e {
        RunError::Spawn { program, error } => VmProbeError::Spawn { program, error },
        RunError::TimedOut { program, after } => VmProbeError::TimedOut { program, after },
        RunError::Io { program, error } => VmProbeError::Io { program, error },
        RunError::NoProgram => VmProbeError::Config(ConfigError::EmptyArgv),
    })?;
    let (out, out_overflow, err, status) = (
        out.stdout.bytes,
        out.stdout.truncated,
        out.stderr.bytes,
        out.status,
    );

    if !status.success() {
        return Err(VmProbeError::Failed {
            program,
            status,
            stderr: excerpt(&err, 200),
        });
    }
    if out_overflow {
        return Err(VmProbeError::OutputTooLong { program });
    }
    let text = String::from_utf8_lossy(&out);
    let trimmed = text.trim();
    // `u32::from_str` accepts a leading `+`; a count is plain digits.
    match trimmed.parse::<u32>() {
        Ok(n) if trimmed.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(VmProbeError::NotANumber {
            program,
            output: excerpt(&out, 64),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn command(argv: &[&str], timeout_secs: u64) -> VmProbeConfig {
        VmProbeConfig::Command {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            timeout_secs,
        }
    }

    fn sh(script: &str) -> VmProbeConfig {
        command(&["sh", "-c", script], 5)
    }

    #[test]
    fn vm_config_reads_nicely_from_toml() {
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(default)]
            vm: VmProbeConfig,
        }
        let parse = |s: &str| toml::from_str::<Doc>(s).map(|d| d.vm);
        assert_eq!(parse("").ok(), Some(VmProbeConfig::None));
        assert_eq!(
            parse("[vm]\nprobe = \"none\"").ok(),
            Some(VmProbeConfig::None)
        );
        assert_eq!(
            parse("[vm]\nprobe = \"fixed\"\ncount = 4").ok(),
            Some(VmProbeConfig::Fixed { count: 4 })
        );
        assert_eq!(
            parse("[vm]\nprobe = \"processes\"").ok(),
            Some(VmProbeConfig::Processes {
                names: default_guest_process_names(),
                timeout_secs: DEFAULT_PROBE_TIMEOUT_SECS,
            })
        );
        assert_eq!(
            parse("[vm]\nprobe = \"command\"\nargv = [\"/usr/sbin/vm-count\"]\ntimeout_secs = 3")
                .ok(),
            Some(command(&["/usr/sbin/vm-count"], 3))
        );
        assert!(parse("[vm]\nprobe = \"fixed\"\ncount = 4\ncuont = 5").is_err());
        assert!(parse("[vm]\nprobe = \"hyperv\"").is_err());
        assert!(parse("[vm]\nprobe = \"fixed\"").is_err());
    }

    #[test]
    fn vm_config_validation_refuses_unusable_probes() {
        assert!(matches!(
            command(&[], 5).validate(),
            Err(ConfigError::EmptyArgv)
        ));
        assert!(matches!(
            command(&["x"], 0).validate(),
            Err(ConfigError::BadTimeout { value: 0, .. })
        ));
        assert!(matches!(
            command(&["x"], 301).validate(),
            Err(ConfigError::BadTimeout { value: 301, .. })
        ));
        let p = VmProbeConfig::Processes {
            names: vec![String::new()],
            timeout_secs: 5,
        };
        assert!(matches!(p.validate(), Err(ConfigError::EmptyProcessNames)));
    }

    #[tokio::test]
    async fn none_and_fixed_probes_need_no_host() {
        assert_eq!(
            probe_vm_count(&VmProbeConfig::None).await,
            VmCount::NotConfigured
        );
        assert_eq!(
            probe_vm_count(&VmProbeConfig::Fixed { count: 7 }).await,
            VmCount::Known(7)
        );
        assert_eq!(VmCount::Known(7).counted(), Some(7));
        assert_eq!(VmCount::NotConfigured.counted(), None);
    }

    #[tokio::test]
    async fn command_printing_a_number_gives_that_count() {
        assert_eq!(probe_vm_count(&sh("echo 3")).await, VmCount::Known(3));
        assert_eq!(
            probe_vm_count(&sh("printf '  12\\n\\n'")).await,
            VmCount::Known(12)
        );
    }

    #[tokio::test]
    async fn command_printing_garbage_is_unknown_with_the_output_in_the_reason() {
        let e = run_vm_probe(&sh("echo '3 VMs'"))
            .await
            .expect_err("garbage");
        assert!(
            matches!(&e, VmProbeError::NotANumber { output, .. } if output == "3 VMs"),
            "{e}"
        );
        for script in [
            "true",
            "echo -1",
            "echo +3",
            "echo 99999999999",
            "echo 1; echo 2",
        ] {
            let r = run_vm_probe(&sh(script)).await;
            assert!(
                matches!(r, Err(VmProbeError::NotANumber { .. })),
                "{script}: {r:?}"
            );
        }
        let VmCount::Unknown { reason } = probe_vm_count(&sh("echo lots")).await else {
            panic!("expected unknown");
        };
        assert!(
            reason.contains("\"lots\"") && reason.contains("single number"),
            "{reason}"
        );
    }

    // A paused test clock in the daemon's tests must not make a real probe time out early
    // (see `crate::command`).
    #[tokio::test(start_paused = true)]
    async fn command_probe_is_not_timed_out_by_a_paused_clock() {
        assert_eq!(probe_vm_count(&sh("echo 5")).await, VmCount::Known(5));
    }

    #[tokio::test]
    async fn command_that_fails_is_unknown_with_its_status_and_stderr() {
        let e = run_vm_probe(&sh("echo 'virsh: cannot connect' >&2; exit 3")).await;
        let Err(VmProbeError::Failed { status, stderr, .. }) = e else {
            panic!("wrong result {e:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, "virsh: cannot connect");
    }

    #[tokio::test]
    async fn command_that_cannot_start_is_unknown() {
        let r = run_vm_probe(&command(&["/nonexistent/licd-vm-count"], 5)).await;
        assert!(matches!(r, Err(VmProbeError::Spawn { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn command_flooding_stdout_is_refused_without_buffering_it() {
        let r = run_vm_probe(&sh("head -c 1000000 /dev/zero | tr '\\0' 1")).await;
        assert!(
            matches!(r, Err(VmProbeError::OutputTooLong { .. })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn command_sleeping_past_its_timeout_is_killed_and_unknown_quickly() {
        let started = Instant::now();
        let r = run_vm_probe(&command(&["sleep", "30"], 1)).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(&r, Err(VmProbeError::TimedOut { after, .. }) if *after == Duration::from_secs(1)),
            "{r:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }

    #[test]
    fn guest_process_names_match_by_prefix_and_through_comm_truncation() {
        let names = default_guest_process_names();
        let m = |name: &str, argv0: Option<&str>| {
            is_guest_process(OsStr::new(name), argv0.map(OsStr::new), &names)
        };
        assert!(m("qemu-system-x86", Some("qemu-system-x86_64")));
        assert!(m("qemu-system-x86", None));
        assert!(m("cloud-hyperviso", None));
        assert!(m("vm-web-01", Some("qemu-system-aarch64")));
        assert!(m("firecracker", None));
        assert!(!m("sshd", Some("/usr/sbin/sshd")));
        assert!(!m("qemu-ga", None)); // the guest agent inside a VM is not a guest
        assert!(!m("cloud", None)); // a short name is not a cut one
    }

    /// Spawns `program`, retrying while another test thread's fork still holds the copied file
    /// open for writing (ETXTBSY).
    fn spawn_retrying(program: &Path) -> std::process::Child {
        for _ in 0..50 {
            match std::process::Command::new(program).arg("30").spawn() {
                Ok(child) => return child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("spawn {}: {e}", program.display()),
            }
        }
        panic!("{} stayed busy", program.display());
    }

    #[tokio::test]
    async fn processes_probe_counts_a_running_guest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake_qemu = dir.path().join("qemu-system-x86_64");
        std::fs::copy("/bin/sleep", &fake_qemu).expect("copy sleep");
        let mut child = spawn_retrying(&fake_qemu);
        let pid = child.id();

        let names = vec!["qemu-system-".to_owned()];
        let pids = tokio::task::spawn_blocking(move || guest_pids(&names))
            .await
            .expect("join");
        let count = probe_vm_count(&VmProbeConfig::Processes {
            names: vec!["qemu-system-".into()],
            timeout_secs: 10,
        })
        .await;

        let _ = child.kill();
        let _ = child.wait();
        assert!(pids.contains(&pid), "pid {pid} not in {pids:?}");
        assert!(matches!(count, VmCount::Known(n) if n >= 1), "{count:?}");
        // Our own test process is not a guest.
        assert!(!pids.contains(&std::process::id()));
    }
}
