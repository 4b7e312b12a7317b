//! Reconnect backoff: exponential from 1 s to a 5 min cap with full jitter (AWS architecture
//! blog, "Exponential Backoff And Jitter"), so 100k devices that lost the same broker do not
//! come back in lockstep. Pure: the random number is passed in.

use std::time::Duration;

/// First retry delay bound.
pub const BASE: Duration = Duration::from_secs(1);
/// Largest retry delay bound.
pub const CAP: Duration = Duration::from_secs(300);
/// A connection that lasted at least this long resets the backoff; a broker that accepts and
/// drops at once keeps it growing.
pub const RESET_AFTER: Duration = Duration::from_secs(30);

/// Exponential backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_cap(CAP)
    }
}

impl Backoff {
    /// Backoff bounded by `cap` instead of [`CAP`].
    pub fn with_cap(cap: Duration) -> Self {
        Self { attempt: 0, cap }
    }

    /// The delay before the next attempt: uniform in `[0, min(cap, BASE·2^attempt)]`, given a
    /// uniformly random `random`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let bound = BASE
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let millis = bound.as_millis() as u64;
        Duration::from_millis(random % (millis + 1))
    }

    /// Attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over (after a connection that held).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before reconnecting after a connection that lasted `held` (`None`: the attempt
    /// never connected). Only a connection that held for [`RESET_AFTER`] starts over, so a
    /// broker that accepts and drops at once is retried ever more slowly, not at the first
    /// step's pace.
    pub fn after_disconnect(&mut self, held: Option<Duration>, random: u64) -> Duration {
        if held.is_some_and(|held| held >= RESET_AFTER) {
            self.reset();
        }
        self.next_delay(random)
    }
}

/// A uniformly random u64 from the OS (for jitter; never for keys).
pub fn os_random() -> u64 {
    let mut b = [0u8; 8];
    // If the OS has no randomness we fall back to the clock: jitter matters, not secrecy.
    if getrandom::fill(&mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_from_one_second_to_the_cap() {
        let mut b = Backoff::default();
        let maxima: Vec<u64> = (0..12)
            .map(|_| b.next_delay(u64::MAX).as_millis() as u64)
            .collect();
        // random = u64::MAX is not the max of the range, so check bounds with a modulus-free value.
        let mut b = Backoff::default();
        let bounds: Vec<u64> = (0..12)
            .map(|i| {
                let bound = (1000u64 << i).min(300_000);
                let d = b.next_delay(bound).as_millis() as u64;
                assert_eq!(d, bound, "attempt {i}");
                d
            })
            .collect();
        assert_eq!(bounds[0], 1_000);
        assert_eq!(bounds[8], 256_000);
        assert_eq!(bounds[9], 300_000);
        assert_eq!(bounds[11], 300_000);
        assert!(maxima.iter().zip(&bounds).all(|(m, b)| m <= b));
    }

    #[test]
    fn full_jitter_can_be_zero_and_reset_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay(1);
        }
        assert_eq!(b.next_delay(0), Duration::ZERO);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay(u64::MAX) <= BASE);
    }

    #[test]
    fn only_a_connection_that_held_for_the_reset_window_starts_over() {
        let mut b = Backoff::default();
        b.after_disconnect(None, 0); // never connected
        b.after_disconnect(Some(Duration::from_millis(5)), 0); // accepted, then dropped at once
        b.after_disconnect(Some(RESET_AFTER - Duration::from_millis(1)), 0);
        assert_eq!(b.attempt(), 3, "short connections keep the backoff growing");
        // The fourth attempt's bound is 8 s; after a connection that held, it is 1 s again.
        let bound = Duration::from_secs(8);
        let at_bound = bound.as_millis() as u64;
        assert_eq!(
            b.after_disconnect(Some(Duration::from_secs(1)), at_bound),
            bound
        );
        assert_eq!(b.after_disconnect(Some(RESET_AFTER), 1_000), BASE);
        assert_eq!(b.attempt(), 1);
    }
}
