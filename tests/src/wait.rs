//! Waiting on conditions with a deadline: the harness never sleeps for a guessed duration.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// How often a condition is polled. Short enough not to slow tests down, long enough not to
/// burn one of the machine's two cores.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it returns true, or fails with [`HarnessError::Timeout`] naming
/// `what` after `timeout`. The condition is always checked at least once, and once more at the
/// deadline.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// The async form of [`wait_for`]: awaits `condition()` until it yields true, sleeping on the
/// tokio timer in between (so it works with paused time too).
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        wait_for("third call", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[test]
    fn wait_for_times_out_with_the_condition_named() {
        let err = wait_for("never", Duration::from_millis(50), || false).unwrap_err();
        assert!(matches!(err, HarnessError::Timeout { ref what, .. } if what == "never"));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_async_times_out_on_the_tokio_clock() {
        let err = wait_for_async("never", Duration::from_secs(3600), || async { false })
            .await
            .unwrap_err();
        assert!(matches!(err, HarnessError::Timeout { .. }));
    }
}
