//! The optional hook command run on every state change. Hooks run one at a time on their own
//! task, each bounded by a timeout; a failing, hanging or missing hook is logged and never
//! stops the agent. If hooks fall behind, further changes are dropped with a warning instead
//! of queueing without bound.

use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use crate::api::Event;
use crate::enforce::ServiceState;

/// Changes waiting for the hook before new ones are dropped.
const QUEUE: usize = 64;

/// Sends state changes to the hook task.
#[derive(Debug, Clone)]
pub struct Hooks {
    tx: Option<mpsc::Sender<Event>>,
}

impl Hooks {
    /// Starts the hook task for `argv` (no task when `argv` is empty).
    pub fn start(argv: Vec<String>, timeout: Duration) -> Self {
        if argv.is_empty() {
            return Self { tx: None };
        }
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                run_one(&argv, timeout, &ev).await;
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues a change for the hook.
    pub fn notify(&self, ev: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(ev).is_err() {
                tracing::warn!("hook queue full, state change not passed to the hook");
            }
        }
    }
}

/// Environment passed to the hook for one change.
pub fn hook_env(ev: &Event) -> Vec<(&'static str, String)> {
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
        ServiceState::Unlicensed { reason } => (String::new(), name(reason)),
    };
    vec![
        ("LICD_SERVICE", ev.service.clone()),
        ("LICD_STATE", ev.state.name().to_string()),
        ("LICD_REASON", reason),
        ("LICD_UNTIL", until),
    ]
}

async fn run_one(argv: &[String], timeout: Duration, ev: &Event) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(hook_env(ev))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(hook = %program, error = %e, "hook could not be started");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::debug!(hook = %program, service = %ev.service, "hook ran");
        }
        Ok(Ok(out)) => tracing::warn!(
            hook = %program,
            service = %ev.service,
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "hook failed"
        ),
        Ok(Err(e)) => tracing::warn!(hook = %program, error = %e, "hook failed"),
        Err(_) => {
            tracing::warn!(hook = %program, timeout_secs = timeout.as_secs(), "hook timed out and was killed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::Reason;

    #[test]
    fn the_hook_environment_spells_reasons_like_the_json_api() {
        let env = hook_env(&Event {
            service: "wifi".into(),
            state: ServiceState::Grace {
                until: 42,
                reason: Reason::LeaseExpired,
            },
        });
        assert!(env.contains(&("LICD_REASON", "lease_expired".to_string())));
        assert!(env.contains(&("LICD_STATE", "grace".to_string())));
        assert!(env.contains(&("LICD_UNTIL", "42".to_string())));
    }
}
