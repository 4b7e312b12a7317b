//! What `licd status`, `licd check` and the socket report: the enforcer's snapshot plus the
//! agent's identity, clock and connection facts. One type for the daemon and the from-cache
//! path, so both answer the same way.

use licd_protocol::UnixTime;
use serde::{Deserialize, Serialize};

use crate::enforce::{ServiceState, Snapshot};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The running daemon.
    Daemon,
    /// The cache, evaluated read-only because no daemon answered.
    Cache,
}

/// Trusted-time facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockStatus {
    /// Evaluation time.
    pub now: UnixTime,
    /// Raw wall clock.
    pub wall: UnixTime,
    /// High-water mark.
    pub mark: UnixTime,
    /// The wall clock was found set back behind the mark.
    pub rollback: bool,
}

/// Broker connection facts (daemon only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Broker address.
    pub broker: String,
    /// When the connection state last changed (trusted time).
    pub since: UnixTime,
    /// Last connection error, if any.
    pub last_error: Option<String>,
    /// Reports sent since start.
    pub reports_sent: u64,
    /// When the controller was last heard from (a bundle arrived), trusted time.
    pub last_bundle_at: Option<UnixTime>,
}

/// A cached bundle that is there but cannot be used, and why. `licd check` and `licd status`
/// answering from the cache say so on stderr and exit 4; the daemon sets such a file aside at
/// start and shows this until a new bundle is cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheProblem {
    /// `unreadable` (the file cannot be read), `no_device_key` (a cache but no device key), or
    /// the refusal code of the bundle in it (`malformed`, `wrong_device`, `wrong_device_key`,
    /// `bad_signature`, …).
    pub code: &'static str,
    /// What is wrong, in one line naming the file.
    pub message: String,
    /// Where the daemon moved the file (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_aside_to: Option<String>,
}

impl std::fmt::Display for CacheProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(to) = &self.set_aside_to {
            write!(f, " (set aside as {to})")?;
        }
        Ok(())
    }
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Where this answer came from.
    pub source: Source,
    /// Device id.
    pub device: String,
    /// Tenant.
    pub tenant: String,
    /// Device key id (hex).
    pub device_key: String,
    /// Agent version.
    pub agent_version: &'static str,
    /// Clock facts.
    pub clock: ClockStatus,
    /// Connection facts (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionStatus>,
    /// The cached bundle is there but unusable (absent when the cache is fine or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_problem: Option<CacheProblem>,
    /// Services, bundle, refusals.
    #[serde(flatten)]
    pub enforcement: Snapshot,
}

impl Status {
    /// The state of one service.
    pub fn state(&self, service: &str) -> ServiceState {
        self.enforcement.state(service)
    }
}

/// The agent's version string.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `2027-01-12T10:00:00Z` for a unix time (UTC).
pub fn fmt_time(t: UnixTime) -> String {
    // Past year 9999 (2^63 s is far beyond it) `time` has no date: say so rather than wrap.
    let Some(dt) = i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
    else {
        return format!("@{t}");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The unix time of a UTC calendar date and time of day, or `None` if there is no such date
/// (`2027-02-31`, month 13, hour 24) or it is before 1970. A leap second (`:60`) reads as the
/// next second, as X.509 and POSIX time do.
pub fn utc_time(
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
) -> Option<UnixTime> {
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let (second, leap) = if second == 60 { (59, 1) } else { (second, 0) };
    let t = date.with_hms(hour, minute, second).ok()?.assume_utc();
    UnixTime::try_from(t.unix_timestamp() + leap).ok()
}

#[cfg(test)]
mod tests {
    use super::{fmt_time, utc_time};

    #[test]
    fn formats_utc_times() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_time(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(fmt_time(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(fmt_time(u64::MAX), format!("@{}", u64::MAX));
    }

    #[test]
    fn calendar_dates_that_do_not_exist_are_refused() {
        assert_eq!(utc_time(2000, 2, 29, 0, 0, 0), Some(951_782_400));
        assert_eq!(utc_time(2099, 12, 31, 23, 59, 59), Some(4_102_444_799));
        assert_eq!(utc_time(2099, 12, 31, 23, 59, 60), Some(4_102_444_800));
        for (y, m, d, h, min) in [
            (2027, 2, 31, 0, 0),
            (2027, 2, 29, 0, 0),
            (1900, 2, 29, 0, 0),
            (2027, 4, 31, 0, 0),
            (2027, 13, 1, 0, 0),
            (2027, 0, 1, 0, 0),
            (2027, 1, 0, 0, 0),
            (2027, 1, 1, 24, 0),
            (2027, 1, 1, 0, 60),
            (1969, 12, 31, 23, 59),
        ] {
            assert_eq!(utc_time(y, m, d, h, min, 0), None, "{y}-{m}-{d} {h}:{min}");
        }
    }

    #[test]
    fn formatting_and_the_calendar_agree() {
        for t in (0..4_102_444_800u64).step_by(86_400 * 37 + 3_601) {
            let s = fmt_time(t);
            let n = |r: std::ops::Range<usize>| s[r].parse::<u8>().unwrap();
            let y: i32 = s[0..4].parse().unwrap();
            assert_eq!(
                utc_time(y, n(5..7), n(8..10), n(11..13), n(14..16), n(17..19)),
                Some(t)
            );
        }
    }
}
