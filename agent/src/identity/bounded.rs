//! Runs a blocking probe on tokio's blocking pool and gives up on it after a deadline.
//!
//! The probe runs under `spawn_blocking`, the deadline is `tokio::time::timeout`: no thread
//! sleeps out the deadline, and a probe that finishes early frees its (pooled) thread at once.
//! A probe that never returns (sysinfo stuck in a netlink `recvfrom` under qemu, a `/sys` read
//! on a wedged driver) keeps its pool thread; to keep such threads from piling up when the same
//! probe hangs on every tick, at most [`MAX_STUCK`] probes may be running at a time; after
//! that, probes are refused until one finishes. Dropping a runtime waits for its blocking
//! tasks, so whoever owns the runtime shuts it down with a timeout (`licd`'s `main` does).
//!
//! Paused test clocks (`#[tokio::test(start_paused = true)]`): tokio jumps its clock to the
//! next timer whenever the runtime is idle, but not while a blocking-pool task runs. So a real
//! probe is awaited without its deadline being skipped past, and a test times out a hung probe
//! by advancing the clock (`tokio::time::advance`) — no real time passes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How many probes may be running (finished or stuck) at once.
pub(crate) const MAX_STUCK: usize = 4;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Why a bounded probe produced no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoundedError {
    /// The probe did not finish in time; it is left to finish on its own.
    #[error("{what} did not finish within {}s (abandoned)", .after.as_secs_f64())]
    TimedOut {
        /// What was probed.
        what: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// Too many earlier probes are still stuck; this one was not started.
    #[error("{what} not started: {MAX_STUCK} earlier probes are still stuck")]
    TooManyStuck {
        /// What was to be probed.
        what: &'static str,
    },
    /// The probe panicked (a bug, or a library surprised by an odd system), or the runtime
    /// shut down under it.
    #[error("{what} panicked")]
    Panicked {
        /// What was probed.
        what: &'static str,
    },
}

/// Decrements [`RUNNING`] when the probe ends, however it ends.
struct RunningGuard;

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `f` on the blocking pool and waits at most `timeout` for its result.
pub(crate) async fn run_bounded<T, F>(
    what: &'static str,
    timeout: Duration,
    f: F,
) -> Result<T, BoundedError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if RUNNING.fetch_add(1, Ordering::AcqRel) >= MAX_STUCK {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return Err(BoundedError::TooManyStuck { what });
    }
    let guard = RunningGuard;
    let probe = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        f()
    });
    // On timeout the JoinHandle is dropped: the task is detached, not stopped.
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(BoundedError::Panicked { what }),
        Err(_) => {
            tracing::warn!(probe = what, ?timeout, "probe timed out; abandoning it");
            Err(BoundedError::TimedOut {
                what,
                after: timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_finished_probe_returns_its_value() {
        let v = run_bounded("test", Duration::from_secs(5), || 42).await;
        assert_eq!(v.ok(), Some(42));
    }

    #[tokio::test]
    async fn a_hanging_probe_times_out_without_waiting_for_it() {
        let started = Instant::now();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let r = run_bounded("hang", Duration::from_millis(100), move || {
            // Blocks until the test lets it go, like a stuck recvfrom.
            let _ = release_rx.recv();
        })
        .await;
        assert!(
            matches!(r, Err(BoundedError::TimedOut { what: "hang", .. })),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(release_tx);
    }

    // The clock does not jump to the 1 s deadline while the probe does 50 ms of real work.
    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_is_not_timed_out_by_a_paused_clock() {
        let v = run_bounded("slow", Duration::from_secs(1), || {
            std::thread::sleep(Duration::from_millis(50));
            7
        })
        .await;
        assert_eq!(v.ok(), Some(7));
    }

    // The deadline is tokio's: advancing the paused clock by the timeout ends the wait for a
    // hung probe at once, with no thread sleeping out the hour.
    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_times_out_when_the_paused_clock_passes_its_deadline() {
        let started = Instant::now();
        let timeout = Duration::from_secs(3600);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (r, ()) = tokio::join!(
            run_bounded("hang", timeout, move || {
                let _ = release_rx.recv();
            }),
            tokio::time::advance(timeout)
        );
        assert!(
            matches!(r, Err(BoundedError::TimedOut { after, .. }) if after == timeout),
            "{r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Lets the probe end, so the test runtime's shutdown does not wait for it.
        drop(release_tx);
    }

    #[tokio::test]
    async fn a_panicking_probe_is_reported_not_propagated() {
        let r = run_bounded("boom", Duration::from_secs(5), || -> u32 {
            panic!("probe bug")
        })
        .await;
        assert!(
            matches!(r, Err(BoundedError::Panicked { what: "boom" })),
            "{r:?}"
        );
    }
}
