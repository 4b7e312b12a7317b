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

/// `2027-01-12T10:00:00Z` for a unix time (UTC, no dependency on a date crate).
pub fn fmt_time(t: UnixTime) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::fmt_time;

    #[test]
    fn formats_utc_times() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_time(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(fmt_time(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
