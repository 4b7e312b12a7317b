//! Runs a blocking probe on its own thread and gives up on it after a deadline.
//!
//! Why not `tokio::task::spawn_blocking`: a blocking task that never returns (sysinfo stuck in a
//! netlink `recvfrom` under qemu, a `/sys` read on a wedged driver) would keep the runtime from
//! shutting down, because dropping a runtime waits for its blocking tasks. A detached
//! `std::thread` is simply abandoned. To keep abandoned threads from piling up when the same
//! probe hangs on every tick, at most [`MAX_STUCK`] of them may be outstanding at a time; after
//! that, probes are refused until one finishes.
//!
//! Deadlines are measured in real time ([`real_time_deadline`]), not with tokio's timer: under
//! `#[tokio::test(start_paused = true)]` tokio jumps its clock forward whenever the runtime is
//! idle — which it is while it waits for a probe thread or a child process — so a tokio timeout
//! would fire at once and every real probe would "time out" in the daemon's paused-time tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How many probe threads may be running (finished or stuck) at once.
pub(crate) const MAX_STUCK: usize = 4;

/// Stack for probe threads: they read small files and walk `/proc`; the 2 MiB default is
/// wasteful on an access point with 128 MiB of RAM.
const PROBE_STACK_SIZE: usize = 256 * 1024;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Why a bounded probe produced no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoundedError {
    /// The probe did not finish in time; its thread is abandoned.
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
    /// The operating system refused a new thread.
    #[error("{what}: cannot start a probe thread: {error}")]
    Spawn {
        /// What was to be probed.
        what: &'static str,
        /// The error from `std::thread::Builder::spawn`.
        error: std::io::Error,
    },
    /// The probe panicked (a bug, or a library surprised by an odd system).
    #[error("{what} panicked")]
    Panicked {
        /// What was probed.
        what: &'static str,
    },
}

/// Decrements [`RUNNING`] when the probe thread ends, however it ends.
struct RunningGuard;

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `f` on a fresh thread and waits at most `timeout` for its result.
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
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("licd-probe".into())
        .stack_size(PROBE_STACK_SIZE)
        .spawn(move || {
            let _guard = RunningGuard;
            // The receiver is gone when the caller timed out; nothing to do then.
            let _ = tx.send(f());
        });
    if let Err(error) = spawned {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return Err(BoundedError::Spawn { what, error });
    }
    tokio::select! {
        result = rx => match result {
            Ok(value) => Ok(value),
            // The sender was dropped without a send: only a panic in `f` does that.
            Err(_) => Err(BoundedError::Panicked { what }),
        },
        () = real_time_deadline(timeout) => {
            tracing::warn!(
                probe = what,
                ?timeout,
                "probe timed out; abandoning its thread"
            );
            Err(BoundedError::TimedOut {
                what,
                after: timeout,
            })
        }
    }
}

/// Stack for deadline threads, which only sleep.
const DEADLINE_STACK_SIZE: usize = 64 * 1024;

/// Completes after `timeout` of real (monotonic) time, also under tokio's paused test clock
/// (see the module docs). A small detached thread sleeps for it; if no thread can be started,
/// falls back to tokio's timer.
pub(crate) fn real_time_deadline(timeout: Duration) -> impl std::future::Future<Output = ()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("licd-deadline".into())
        .stack_size(DEADLINE_STACK_SIZE)
        .spawn(move || {
            std::thread::sleep(timeout);
            let _ = tx.send(());
        })
        .is_ok();
    async move {
        if spawned {
            let _ = rx.await;
        } else {
            tokio::time::sleep(timeout).await;
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

    #[test]
    fn deadlines_run_on_real_time_not_on_tokios_clock() {
        // A runtime without a time driver: any tokio timer would panic here. Passing shows the
        // deadline cannot be skipped ahead by a paused test clock either (see module docs).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let v = run_bounded("slow", Duration::from_secs(5), || {
                std::thread::sleep(Duration::from_millis(50));
                7
            })
            .await;
            assert_eq!(v.ok(), Some(7));
            let r = run_bounded("hang", Duration::from_millis(100), || {
                std::thread::sleep(Duration::from_secs(2));
            })
            .await;
            assert!(matches!(r, Err(BoundedError::TimedOut { .. })), "{r:?}");
        });
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
