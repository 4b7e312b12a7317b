//! A service's license state and the pure rule that computes it from one grant at one time.

use std::fmt;

use licd_protocol::{ServiceGrant, UnixTime, WithheldReason};
use serde::{Deserialize, Serialize};

/// Why a service is in grace or unlicensed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No bundle has ever granted it.
    NeverGranted,
    /// The controller has not renewed the lease in time (unreachable too long).
    LeaseExpired,
    /// The entitlement term ended.
    TermEnded,
    /// The entitlement term has not started yet.
    NotYetValid,
    /// The host runs more VMs than the license covers.
    OverVmAllowance,
    /// No longer granted: a newer bundle left it out, or the bundle that granted it was
    /// dropped because its signer stopped being trusted (signing key revoked, root retired).
    Revoked,
    /// The controller has no entitlement for it.
    NotEntitled,
    /// The controller paused assignment: fewer seats than devices.
    SeatsExhausted,
    /// An operator removed the license from this device.
    Unassigned,
    /// The controller does not know this device's tenant.
    UnknownTenant,
    /// Given back with `licd release`: unlicensed until a newer bundle grants it again.
    Released,
    /// A reason this build does not know: a client reading a newer agent's answer. The agent
    /// itself never gives it.
    #[serde(other)]
    Other,
}

impl From<WithheldReason> for Reason {
    fn from(r: WithheldReason) -> Self {
        match r {
            WithheldReason::NotEntitled => Reason::NotEntitled,
            WithheldReason::SeatsExhausted => Reason::SeatsExhausted,
            WithheldReason::Unassigned => Reason::Unassigned,
            WithheldReason::UnknownTenant => Reason::UnknownTenant,
        }
    }
}

impl Reason {
    /// A short human explanation.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::NeverGranted => "never granted by the controller",
            Reason::LeaseExpired => "controller not heard from before the lease ended",
            Reason::TermEnded => "license term ended",
            Reason::NotYetValid => "license term has not started",
            Reason::OverVmAllowance => "more VMs running than the license allows",
            Reason::Revoked => {
                "no longer granted (left out of a newer bundle, or its bundle's signer is no longer trusted)"
            }
            Reason::NotEntitled => "no subscription covers this service",
            Reason::SeatsExhausted => "assignment paused: not enough seats",
            Reason::Unassigned => "license removed from this device by an operator",
            Reason::UnknownTenant => "controller does not know this device's tenant",
            Reason::Released => "given back with licd release",
            Reason::Other => "a reason this version of licd does not know (a newer agent)",
        }
    }

    /// The name on the wire and in logs (`lease_expired`, …).
    pub fn name(self) -> &'static str {
        match self {
            Reason::NeverGranted => "never_granted",
            Reason::LeaseExpired => "lease_expired",
            Reason::TermEnded => "term_ended",
            Reason::NotYetValid => "not_yet_valid",
            Reason::OverVmAllowance => "over_vm_allowance",
            Reason::Revoked => "revoked",
            Reason::NotEntitled => "not_entitled",
            Reason::SeatsExhausted => "seats_exhausted",
            Reason::Unassigned => "unassigned",
            Reason::UnknownTenant => "unknown_tenant",
            Reason::Released => "released",
            Reason::Other => "other",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Whether a service may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    /// Licensed until `until` (the earlier of lease end and term end).
    Licensed {
        /// When the license needs renewal (or the term ends).
        until: UnixTime,
    },
    /// Still allowed to run until `until`, because of `reason`.
    Grace {
        /// End of grace.
        until: UnixTime,
        /// What started the grace period.
        reason: Reason,
    },
    /// Advisory strategy past grace: still allowed to run (licensed with a warning), but not
    /// compliant, because of `reason`.
    NonCompliant {
        /// What ended the license.
        reason: Reason,
    },
    /// Not allowed to run.
    Unlicensed {
        /// Why.
        reason: Reason,
    },
}

impl ServiceState {
    /// Licensed or in grace: the service may run.
    pub fn may_run(&self) -> bool {
        !matches!(self, ServiceState::Unlicensed { .. })
    }

    /// Short name: `licensed`, `grace`, `non_compliant`, `unlicensed`.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceState::Licensed { .. } => "licensed",
            ServiceState::Grace { .. } => "grace",
            ServiceState::NonCompliant { .. } => "non_compliant",
            ServiceState::Unlicensed { .. } => "unlicensed",
        }
    }

    /// The deadline (`until`), if the state has one.
    pub fn until(&self) -> Option<UnixTime> {
        match *self {
            ServiceState::Licensed { until } | ServiceState::Grace { until, .. } => Some(until),
            ServiceState::NonCompliant { .. } | ServiceState::Unlicensed { .. } => None,
        }
    }

    /// The reason, if the state has one.
    pub fn reason(&self) -> Option<Reason> {
        match *self {
            ServiceState::Licensed { .. } => None,
            ServiceState::Grace { reason, .. }
            | ServiceState::NonCompliant { reason }
            | ServiceState::Unlicensed { reason } => Some(reason),
        }
    }

    /// How bad the state is, for combining two verdicts on one service.
    fn severity(&self) -> (u8, UnixTime) {
        match *self {
            ServiceState::Licensed { until } => (0, UnixTime::MAX - until),
            ServiceState::Grace { until, .. } => (1, UnixTime::MAX - until),
            ServiceState::NonCompliant { .. } => (2, 0),
            ServiceState::Unlicensed { .. } => (3, 0),
        }
    }

    /// The worse of two states (unlicensed over non-compliant over grace over licensed; the
    /// earlier end first).
    pub fn worst(self, other: ServiceState) -> ServiceState {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Licensed { until } => write!(f, "licensed until {until}"),
            ServiceState::Grace { until, reason } => write!(f, "grace until {until}: {reason}"),
            ServiceState::NonCompliant { reason } => {
                write!(f, "non-compliant (running, advisory): {reason}")
            }
            ServiceState::Unlicensed { reason } => write!(f, "unlicensed: {reason}"),
        }
    }
}

/// A verdict and the next time it can change by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The state at the evaluated time.
    pub state: ServiceState,
    /// When to evaluate again (None: nothing changes with time alone).
    pub next_change: Option<UnixTime>,
}

/// The state of one granted service at `now`, given whether (and since when) the host is over
/// the grant's VM allowance. Boundaries: licensed while `now < end`, grace while
/// `end <= now < end + grace`, unlicensed from `end + grace` on, where `end` is the earlier of
/// `lease_until` and `not_after`.
pub fn evaluate(
    grant: &ServiceGrant,
    now: UnixTime,
    over_vm_since: Option<UnixTime>,
) -> Evaluation {
    if now < grant.not_before {
        return Evaluation {
            state: ServiceState::Unlicensed {
                reason: Reason::NotYetValid,
            },
            next_change: Some(grant.not_before),
        };
    }
    let (end, reason) = if grant.not_after <= grant.lease_until {
        (grant.not_after, Reason::TermEnded)
    } else {
        (grant.lease_until, Reason::LeaseExpired)
    };
    let by_time = window(now, end, grant.grace, reason);
    match over_vm_since {
        None => by_time,
        Some(since) => {
            let by_vm = window(now, since, grant.grace, Reason::OverVmAllowance);
            Evaluation {
                state: by_time.state.worst(by_vm.state),
                next_change: min_opt(by_time.next_change, by_vm.next_change),
            }
        }
    }
}

fn window(now: UnixTime, end: UnixTime, grace: u64, reason: Reason) -> Evaluation {
    let grace_end = end.saturating_add(grace);
    if now < end {
        Evaluation {
            state: ServiceState::Licensed { until: end },
            next_change: Some(end),
        }
    } else if now < grace_end {
        Evaluation {
            state: ServiceState::Grace {
                until: grace_end,
                reason,
            },
            next_change: Some(grace_end),
        }
    } else {
        Evaluation {
            state: ServiceState::Unlicensed { reason },
            next_change: None,
        }
    }
}

/// The earlier of two optional times.
pub fn min_opt(a: Option<UnixTime>, b: Option<UnixTime>) -> Option<UnixTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod wire_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ALL: [Reason; 12] = [
        Reason::NeverGranted,
        Reason::LeaseExpired,
        Reason::TermEnded,
        Reason::NotYetValid,
        Reason::OverVmAllowance,
        Reason::Revoked,
        Reason::NotEntitled,
        Reason::SeatsExhausted,
        Reason::Unassigned,
        Reason::UnknownTenant,
        Reason::Released,
        Reason::Other,
    ];

    #[test]
    fn every_reason_reads_back_from_its_name() {
        for r in ALL {
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json, r.name(), "{r:?}");
            assert_eq!(serde_json::from_value::<Reason>(json).unwrap(), r);
        }
    }

    #[test]
    fn a_newer_agents_reason_reads_as_other_but_a_newer_state_is_refused() {
        let s: ServiceState =
            serde_json::from_str(r#"{"state":"unlicensed","reason":"moon_phase"}"#).unwrap();
        assert_eq!(s.reason(), Some(Reason::Other));
        assert!(serde_json::from_str::<ServiceState>(r#"{"state":"maybe"}"#).is_err());
        assert!(serde_json::from_str::<ServiceState>(r#"{"state":"licensed"}"#).is_err());
    }
}
