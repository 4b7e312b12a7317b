//! Remote diagnostics: a controller asks one device for its `licd diag` report, the device
//! answers with the report signed by its device key.
//!
//! - [`DiagRequest`] (kind 5) travels on `licd/v1/{tenant}/{device}/diag-request`, signed by a
//!   certified controller signing key (checked with the same chain as grant bundles,
//!   [`crate::TrustStore::authorize`]).
//! - [`DiagResponse`] (kind 6) travels on `licd/v1/{tenant}/{device}/diag-response`, signed by
//!   the device key (no certificate, like a report); the controller checks it against the key
//!   it pinned for the device.
//!
//! This module holds the payloads and their content rules; sealing and opening are in
//! [`crate::envelope`]. What the agent accepts (device binding, replay, rate limit) is the
//! agent's decision, made on the opened request with [`DiagRequest::check_fresh`].

use alloc::string::String;

use crate::error::Error;
use crate::id::{DeviceId, TenantId};
use crate::UnixTime;

/// Largest diagnostic document a response may carry (the JSON of `licd diag --json`): 48 KiB,
/// which leaves room for the envelope within [`crate::limits::MAX_ENVELOPE_LEN`].
pub const MAX_DIAG_REPORT_LEN: usize = 48 * 1024;

/// How far a request's `issued_at` may lie from the device's trusted now, either way, before
/// it is refused as stale (a replay) or from the future: 5 minutes.
pub const DIAG_REQUEST_TOLERANCE: u64 = 300;

/// A device answers at most one diagnostic request per this many seconds (the agent's rate
/// limit; a controller that knows it can tell its operator at once instead of waiting for an
/// answer that will not come).
pub const DIAG_MIN_INTERVAL: u64 = 60;

/// Correlation data: 16 random bytes chosen by the controller, echoed in the response.
pub type RequestId = [u8; 16];

/// A controller asks a device for a diagnostic report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiagRequest {
    /// The device asked (must be the receiving device).
    pub device: DeviceId,
    /// Its tenant (must be the receiving device's).
    pub tenant: TenantId,
    /// Correlation id, echoed in the [`DiagResponse`]; a device answers an id once.
    pub request_id: RequestId,
    /// When the controller issued the request (controller time).
    pub issued_at: UnixTime,
}

impl DiagRequest {
    /// Whether the request is fresh at the device's trusted `now`: `issued_at` no more than
    /// `tolerance` seconds in the past ([`Error::StaleRequest`]) or in the future
    /// ([`Error::RequestFromFuture`]).
    pub fn check_fresh(&self, now: UnixTime, tolerance: u64) -> Result<(), Error> {
        if self.issued_at > now.saturating_add(tolerance) {
            return Err(Error::RequestFromFuture {
                issued_at: self.issued_at,
                now,
            });
        }
        if self.issued_at.saturating_add(tolerance) < now {
            return Err(Error::StaleRequest {
                issued_at: self.issued_at,
                now,
            });
        }
        Ok(())
    }
}

/// A device's answer to a [`DiagRequest`]. Signed by the device key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiagResponse {
    /// The answering device.
    pub device: DeviceId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The request's correlation id.
    pub request_id: RequestId,
    /// When the device made the report (its trusted time).
    pub generated_at: UnixTime,
    /// The diagnostic document: the JSON of `licd diag --json --offline`, at most
    /// [`MAX_DIAG_REPORT_LEN`] bytes.
    pub report: String,
}

impl DiagResponse {
    /// Checks the rule postcard cannot: the report's size.
    pub fn validate(&self) -> Result<(), Error> {
        if self.report.len() > MAX_DIAG_REPORT_LEN {
            return Err(Error::Invalid("diagnostic report longer than 48 KiB"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(issued_at: UnixTime) -> DiagRequest {
        DiagRequest {
            device: DeviceId::new("ap-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            request_id: [7; 16],
            issued_at,
        }
    }

    #[test]
    fn a_request_within_the_tolerance_either_way_is_fresh() {
        for at in [700, 1_000, 1_300] {
            assert_eq!(request(at).check_fresh(1_000, 300), Ok(()), "{at}");
        }
    }

    #[test]
    fn an_old_request_is_stale_and_a_future_one_is_refused() {
        assert_eq!(
            request(699).check_fresh(1_000, 300),
            Err(Error::StaleRequest {
                issued_at: 699,
                now: 1_000
            })
        );
        assert_eq!(
            request(1_301).check_fresh(1_000, 300),
            Err(Error::RequestFromFuture {
                issued_at: 1_301,
                now: 1_000
            })
        );
        // No overflow at the ends of time.
        assert!(request(u64::MAX).check_fresh(u64::MAX, 300).is_ok());
        assert!(request(0).check_fresh(0, 0).is_ok());
    }

    #[test]
    fn a_response_over_48_kib_is_invalid() {
        let mut r = DiagResponse {
            device: DeviceId::new("ap-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            request_id: [7; 16],
            generated_at: 0,
            report: "x".repeat(MAX_DIAG_REPORT_LEN),
        };
        assert_eq!(r.validate(), Ok(()));
        r.report.push('x');
        assert!(matches!(r.validate(), Err(Error::Invalid(_))));
    }
}
