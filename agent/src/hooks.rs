//! The optional hook command run on every state change and every expiring-soon threshold
//! crossed (`LICD_EVENT` says which). Hooks run one at a time on their own
//! task, each bounded by a timeout ([`crate::command`]); a failing, hanging or missing hook is
//! logged — with the start of its stderr — and never stops the agent. If hooks fall behind, further changes are dropped with a warning instead
//! of queueing without bound.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::Event;
use crate::command::{self, RunError};
use crate::enforce::ServiceState;

/// Changes waiting for the hook before new ones are dropped.
const QUEUE: usize = 64;

/// What a hook runs for: a state change, or a threshold of the service's expiring-soon policy
/// crossed (once per threshold and term, PROTOCOL.md §17.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    /// The service and its state.
    pub event: Event,
    /// `Some((threshold, term_ends_at))` for an expiring-soon event.
    pub expiring: Option<(u64, licd_protocol::UnixTime)>,
}

impl From<Event> for HookEvent {
    fn from(event: Event) -> Self {
        Self {
            event,
            expiring: None,
        }
    }
}

/// Sends state changes to the hook task.
#[derive(Debug, Clone)]
pub struct Hooks {
    tx: Option<mpsc::Sender<HookEvent>>,
}

impl Hooks {
    /// Starts the hook task for `argv` (no task when `argv` is empty).
    pub fn start(argv: Vec<String>, timeout: Duration) -> Self {
        if argv.is_empty() {
            return Self { tx: None };
        }
        let (tx, mut rx) = mpsc::channel::<HookEvent>(QUEUE);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                run_one(&argv, timeout, &ev).await;
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues a change (or an expiring-soon event) for the hook.
    pub fn notify(&self, ev: HookEvent) {
        if let Some(tx) = &self.tx {
            if tx.try_send(ev).is_err() {
                tracing::warn!("hook queue full, state change not passed to the hook");
            }
        }
    }
}

/// Environment passed to the hook for one event: `LICD_EVENT` (`state_changed` or
/// `expiring_soon`), `LICD_SERVICE`, `LICD_STATE`, `LICD_REASON`, `LICD_UNTIL`, and for
/// `expiring_soon` also `LICD_THRESHOLD_SECS` and `LICD_TERM_ENDS_AT`.
pub fn hook_env(hev: &HookEvent) -> Vec<(&'static str, String)> {
    let ev = &hev.event;
    // The same spelling as `licd check --json` (`lease_expired`), so scripts match one form.
    let name = |r: crate::enforce::Reason| {
        serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (until, reason) = match ev.state {
        ServiceState::Licensed { until } => (until.to_string(), String::new()),
        ServiceState::Grace { until, reason } => (until.to_string(), name(reason)),
        ServiceState::NonCompliant { reason } => (String::new(), name(reason)),
        ServiceState::Unlicensed { reason } => (String::new(), name(reason)),
    };
    let mut env = vec![
        (
            "LICD_EVENT",
            if hev.expiring.is_some() {
                "expiring_soon"
            } else {
                "state_changed"
            }
            .to_string(),
        ),
        ("LICD_SERVICE", ev.service.clone()),
        ("LICD_STATE", ev.state.name().to_string()),
        ("LICD_REASON", reason),
        ("LICD_UNTIL", until),
    ];
    if let Some((threshold, term_ends_at)) = hev.expiring {
        env.push(("LICD_THRESHOLD_SECS", threshold.to_string()));
        env.push(("LICD_TERM_ENDS_AT", term_ends_at.to_string()));
    }
    env
}

/// Bytes of a hook's stderr kept for the log; its stdout is read and dropped.
const MAX_STDERR: usize = 1024;

/// Characters of stderr shown in the "hook failed" line.
const STDERR_IN_LOG: usize = 300;

async fn run_one(argv: &[String], timeout: Duration, hev: &HookEvent) {
    let ev = &hev.event;
    let program = argv.first().map_or("", String::as_str);
    let cmd = command::Bounded {
        argv,
        env: hook_env(hev),
        timeout,
        max_stdout: 0,
        max_stderr: MAX_STDERR,
    };
    match command::run(&cmd).await {
        Ok(out) if out.status.success() => tracing::debug!(
            hook = %program,
            service = %ev.service,
            stderr = %out.stderr.one_line(STDERR_IN_LOG),
            "hook ran"
        ),
        Ok(out) => tracing::warn!(
            hook = %program,
            service = %ev.service,
            status = %out.status,
            stderr = %out.stderr.one_line(STDERR_IN_LOG),
            "hook failed"
        ),
        Err(e @ RunError::TimedOut { .. }) => {
            tracing::warn!(hook = %program, service = %ev.service, error = %e, "hook timed out and was killed")
        }
        Err(e) => tracing::warn!(hook = %program, service = %ev.service, error = %e, "hook failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::Reason;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_hook_environment_spells_reasons_like_the_json_api() {
        let env = hook_env(
            &Event {
                service: "wifi".into(),
                state: ServiceState::Grace {
                    until: 42,
                    reason: Reason::LeaseExpired,
                },
            }
            .into(),
        );
        assert!(env.contains(&("LICD_EVENT", "state_changed".to_string())));
        assert!(env.contains(&("LICD_REASON", "lease_expired".to_string())));
        assert!(env.contains(&("LICD_STATE", "grace".to_string())));
        assert!(env.contains(&("LICD_UNTIL", "42".to_string())));
    }

    #[test]
    fn an_expiring_soon_event_names_its_threshold_and_term_end() {
        let env = hook_env(&HookEvent {
            event: Event {
                service: "wifi".into(),
                state: ServiceState::Licensed { until: 900 },
            },
            expiring: Some((604_800, 1_000)),
        });
        assert!(env.contains(&("LICD_EVENT", "expiring_soon".to_string())));
        assert!(env.contains(&("LICD_THRESHOLD_SECS", "604800".to_string())));
        assert!(env.contains(&("LICD_TERM_ENDS_AT", "1000".to_string())));
        assert!(env.contains(&("LICD_STATE", "licensed".to_string())));
    }

    /// Collects what `tracing` logs on this thread while the guard lives.
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failing_hook_is_logged_with_its_stderr_on_one_line() {
        let (logs, _guard) = capture_logs();
        let argv = [
            "sh",
            "-c",
            "echo \"no space left\" >&2; echo 'second line' >&2; exit 2",
        ]
        .map(str::to_owned);
        let ev = Event {
            service: "wifi".into(),
            state: ServiceState::Licensed { until: 42 },
        };
        run_one(&argv, Duration::from_secs(5), &ev.into()).await;
        let logs = String::from_utf8(logs.lock().expect("log buffer").clone()).expect("utf-8");
        let line = logs
            .lines()
            .find(|l| l.contains("hook failed"))
            .unwrap_or_else(|| panic!("no 'hook failed' line in {logs:?}"));
        assert!(
            line.contains(r"stderr=no space left\nsecond line"),
            "{line}"
        );
        assert!(line.contains("exit status: 2"), "{line}");
    }
}
