//! Time for the agent: the [`Clock`] the shell reads, and [`TrustedTime`], the pure rule that
//! turns a possibly wrong wall clock into an evaluation time that never goes backwards.
//!
//! Devices without an RTC boot in 1970 and an attacker who owns the device can set its clock
//! back. So the agent keeps a high-water mark (the newest time it has good reason to believe:
//! wall clock readings and the `issued_at` of accepted bundles), persists it, and advances it
//! with a boot-time monotonic clock (`CLOCK_BOOTTIME`: time asleep counts, unlike
//! `CLOCK_MONOTONIC`), so grace periods keep running while the wall clock is wrong.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use licd_protocol::UnixTime;

/// Where the shell reads time from. The enforcement core never calls it: it is handed the
/// result.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, unix seconds (may be wrong: 1970 after boot, set back, set forward).
    fn wall(&self) -> UnixTime;
    /// Time since boot including suspend; only differences between readings mean anything.
    fn boot(&self) -> Duration;
}

/// The real clocks: `SystemTime` and `CLOCK_BOOTTIME`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> UnixTime {
        // Before 1970 reads as 1970: the mark takes over from there.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn boot(&self) -> Duration {
        boot_time()
    }
}

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(target_arch = "mips")
))]
fn boot_time() -> Duration {
    // std has no CLOCK_BOOTTIME and its monotonic clock stops during suspend, while a grace
    // period must count time the device was asleep.
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

// 32-bit MIPS: rustix takes its libc backend there (its raw syscalls need unstable asm) and,
// on musl, hands the 32-bit-time_t `clock_gettime` of the libc crate its 64-bit timespec, so
// every reading was garbage (seconds in the 10^17) and the trusted time with it: each grant
// was judged expired (cross/smoke.sh mipsel, 2026-12-04). /proc/uptime is CLOCK_BOOTTIME too,
// needs no `unsafe`, and costs a read per call, which one agent on a device can afford.
#[cfg(all(any(target_os = "linux", target_os = "android"), target_arch = "mips"))]
fn boot_time() -> Duration {
    read_proc_uptime().unwrap_or_else(process_monotonic)
}

/// Parses `/proc/uptime` (seconds with two decimals): CLOCK_BOOTTIME in centiseconds.
#[cfg(any(target_arch = "mips", all(test, target_os = "linux")))]
fn read_proc_uptime() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    let first = s.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    let centis: u64 = frac.get(..2).unwrap_or(frac).parse().ok()?;
    Some(Duration::from_secs(secs) + Duration::from_millis(centis * 10))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_time() -> Duration {
    process_monotonic()
}

#[cfg(any(
    not(any(target_os = "linux", target_os = "android")),
    target_arch = "mips"
))]
fn process_monotonic() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// A clock for tests: both readings are set by hand and shared between clones.
#[derive(Debug, Clone)]
pub struct TestClock {
    inner: Arc<Mutex<(UnixTime, Duration)>>,
}

impl TestClock {
    /// A clock reading `wall` with boot time zero.
    pub fn new(wall: UnixTime) -> Self {
        Self {
            inner: Arc::new(Mutex::new((wall, Duration::ZERO))),
        }
    }

    /// Lets `d` pass on both clocks.
    pub fn advance(&self, d: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += d.as_secs();
        g.1 += d;
    }

    /// Sets the wall clock only (as an attacker or a bad NTP server would).
    pub fn set_wall(&self, wall: UnixTime) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0 = wall;
    }
}

impl Clock for TestClock {
    fn wall(&self) -> UnixTime {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn boot(&self) -> Duration {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

/// One evaluation of trusted time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The time to evaluate licenses at.
    pub now: UnixTime,
    /// The wall clock is behind the mark by more than the tolerance.
    pub rollback: bool,
}

/// The high-water mark rule. Pure: readings are passed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedTime {
    mark: UnixTime,
    mark_boot: Duration,
    tolerance: u64,
    rollback: bool,
}

impl TrustedTime {
    /// Starts from a persisted `mark` at boot reading `boot`. Time that passed while the agent
    /// was not running is not counted until the wall clock (or a bundle) vouches for it.
    pub fn new(mark: UnixTime, boot: Duration, tolerance: u64) -> Self {
        Self {
            mark,
            mark_boot: boot,
            tolerance,
            rollback: false,
        }
    }

    /// The current mark (what gets persisted).
    pub fn mark(&self) -> UnixTime {
        self.mark
    }

    /// Whether the last reading found the wall clock set back.
    pub fn rollback(&self) -> bool {
        self.rollback
    }

    /// Takes a reading: the wall clock if it is at or ahead of the mark advanced by the boot
    /// clock (a clock set forward ends leases early: fail closed), else that advanced mark.
    /// Evaluation time never goes backwards.
    pub fn observe(&mut self, wall: UnixTime, boot: Duration) -> Reading {
        let elapsed = boot.saturating_sub(self.mark_boot).as_secs();
        let floor = self.mark.saturating_add(elapsed);
        let now = wall.max(floor);
        self.rollback = wall.saturating_add(self.tolerance) < floor;
        self.mark_boot = if now == floor {
            // Keep the sub-second remainder so that frequent readings do not lose time.
            self.mark_boot + Duration::from_secs(elapsed)
        } else {
            boot
        };
        self.mark = now;
        Reading {
            now,
            rollback: self.rollback,
        }
    }

    /// Raises the mark to a time vouched for by a signed bundle (`issued_at`).
    pub fn witness(&mut self, t: UnixTime, boot: Duration) {
        if t > self.mark {
            self.mark = t;
            self.mark_boot = boot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = 1_800_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_boot_clock_reads_clock_boottime_as_proc_uptime_does() {
        // /proc/uptime is CLOCK_BOOTTIME truncated to centiseconds.
        let before = read_proc_uptime().unwrap();
        let boot = SystemClock.boot();
        let after = read_proc_uptime().unwrap();
        assert!(
            before <= boot && boot < after + Duration::from_millis(10),
            "{before:?} <= {boot:?} < {after:?} + 10 ms"
        );
    }

    #[test]
    fn a_correct_wall_clock_is_used_as_is() {
        let mut t = TrustedTime::new(T0, secs(10), 300);
        assert_eq!(
            t.observe(T0 + 5, secs(15)),
            Reading {
                now: T0 + 5,
                rollback: false
            }
        );
        assert_eq!(t.mark(), T0 + 5);
    }

    #[test]
    fn a_clock_set_back_a_year_keeps_the_advanced_mark_and_flags_rollback() {
        let mut t = TrustedTime::new(T0, secs(0), 300);
        let r = t.observe(T0 - 365 * 86_400, secs(100));
        assert_eq!(
            r,
            Reading {
                now: T0 + 100,
                rollback: true
            }
        );
        // Time keeps running on the boot clock while the wall clock stays wrong.
        let r = t.observe(T0 - 365 * 86_400, secs(1_100));
        assert_eq!(r.now, T0 + 1_100);
        assert!(r.rollback);
    }

    #[test]
    fn a_small_step_back_within_tolerance_is_not_a_rollback_but_time_still_does_not_go_back() {
        let mut t = TrustedTime::new(T0, secs(0), 300);
        let r = t.observe(T0 - 200, secs(0));
        assert_eq!(
            r,
            Reading {
                now: T0,
                rollback: false
            }
        );
    }

    #[test]
    fn a_device_booting_in_1970_enforces_from_the_mark() {
        let mut t = TrustedTime::new(T0, secs(3), 300);
        let r = t.observe(0, secs(63));
        assert_eq!(r.now, T0 + 60);
        assert!(r.rollback);
    }

    #[test]
    fn a_clock_set_forward_is_believed_so_leases_end_early() {
        let mut t = TrustedTime::new(T0, secs(0), 300);
        assert_eq!(t.observe(T0 + 86_400 * 40, secs(1)).now, T0 + 86_400 * 40);
        // And it cannot be taken back afterwards.
        assert_eq!(t.observe(T0, secs(2)).now, T0 + 86_400 * 40 + 1);
    }

    #[test]
    fn a_witnessed_bundle_time_raises_the_mark() {
        let mut t = TrustedTime::new(0, secs(0), 300);
        t.witness(T0, secs(5));
        assert_eq!(t.observe(0, secs(65)).now, T0 + 60);
    }

    proptest::proptest! {
        #[test]
        fn evaluation_time_never_goes_backwards(
            steps in proptest::collection::vec((0u64..4_000_000_000, 0u64..10_000), 1..50)
        ) {
            let mut t = TrustedTime::new(T0, Duration::ZERO, 300);
            let mut boot = Duration::ZERO;
            let mut last = 0;
            for (wall, dt) in steps {
                boot += Duration::from_secs(dt);
                let r = t.observe(wall, boot);
                proptest::prop_assert!(r.now >= last);
                proptest::prop_assert!(r.now >= wall);
                last = r.now;
            }
        }
    }
}
