//! What a device makes of the newest bundle the controller issued it, worked out on the
//! controller's side with the device's own rule (`licd_core::enforce::evaluate`): each granted
//! service is licensed until its lease (or term) ends, then in grace, then unlicensed. While
//! the controller hears from a device it renews the lease, so the outlook stays "licensed";
//! when the controller stops hearing (its broker link is cut, the device is off the network)
//! the outlook turns to grace at the moment the device does. The dashboard shows it next to
//! the controller's own view of the seats.
//!
//! It is an expectation, not a report: a device that never received the bundle, or whose
//! clock was set back, may differ. Pure: time comes in as an argument.

use licd_core::enforce::{evaluate, evaluate_with_policy, ServiceState};
use licd_protocol::{DeviceId, ServiceGrant, ServiceName, ServicePolicy, TenantId, UnixTime};

use super::model::{BundleState, DeviceKey};
use super::Engine;

/// A device's expected services and the next moment one of them changes by time alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outlook {
    /// Each service the newest bundle grants, as the device evaluates it.
    pub services: Vec<(ServiceName, ServiceState)>,
    /// The earliest moment a state changes without any message.
    pub next_change: Option<UnixTime>,
}

/// The outlook of `bundle` (issued with a lease of `lease_secs` and `grace_secs` of grace)
/// at `now`, for a device that applies policy bundles (`policy_kinds`) or not. VM over-use is
/// left out: the controller shows it from the device's report. Each grant's policy (issue 20)
/// is the one its bundle carried: a device that speaks the policy kinds applies it; one that
/// does not got a plain bundle (restrict, and no grace for an immediate service).
pub fn outlook(
    bundle: &BundleState,
    lease_secs: u64,
    grace_secs: u64,
    policy_kinds: bool,
    now: UnixTime,
) -> Outlook {
    let Some(basis) = &bundle.basis else {
        return Outlook::default();
    };
    let lease_until = bundle.issued_at.saturating_add(lease_secs);
    let mut out = Outlook::default();
    for g in &basis.grants {
        // The grant as the bundle carried it (see `Engine::issue`).
        let grant = ServiceGrant {
            service: g.service.clone(),
            license: g.license.clone(),
            sku: g.sku.clone(),
            not_before: g.not_before,
            not_after: g.not_after,
            lease_until,
            grace: grace_secs,
            vm_allowance: g.vm_allowance,
        };
        let immediate = g.policy.strategy == super::policy::Strategy::Immediate;
        let e = if policy_kinds {
            let policy = ServicePolicy {
                service: g.service.clone(),
                strategy: super::usage::strategy(g.policy.strategy),
                overage_tolerance_pct: u32::from(g.policy.overage_tolerance_pct),
                warn_before: g.policy.warn_before.clone(),
            };
            evaluate_with_policy(&grant, &policy, now, None)
        } else if immediate {
            // What `Engine::plain_bundle` sent.
            evaluate(&ServiceGrant { grace: 0, ..grant }, now, None)
        } else {
            evaluate(&grant, now, None)
        };
        out.next_change = licd_core::enforce::min_opt(out.next_change, e.next_change);
        out.services.push((g.service.clone(), e.state));
    }
    out
}

impl Engine {
    /// The outlook of device `tenant`/`device` at `now` (`None`: no such device). A device
    /// licensed by file got the offline lease.
    pub fn outlook(&self, tenant: &TenantId, device: &DeviceId, now: UnixTime) -> Option<Outlook> {
        let key: DeviceKey = (tenant.clone(), device.clone());
        let d = self.state.devices.get(&key)?;
        let lease = if d.offline.offline {
            self.lease.offline_lease_secs
        } else {
            self.lease.lease_secs
        };
        Some(outlook(
            &d.bundle,
            lease,
            self.lease.grace_secs,
            d.usage.extended,
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::model::{BundleBasis, GrantBasis};
    use licd_core::enforce::Reason;
    use licd_protocol::{LicenseId, Sku};

    const T0: UnixTime = 1_800_000_000;

    fn bundle(not_before: UnixTime, not_after: UnixTime) -> BundleState {
        BundleState {
            seq: 3,
            issued_at: T0,
            refresh_after: T0 + 30,
            basis: Some(BundleBasis {
                grants: vec![GrantBasis {
                    service: ServiceName::new("wifi").unwrap(),
                    license: LicenseId::new("SUB-1").unwrap(),
                    sku: Sku::new("LIC-WIFI").unwrap(),
                    not_before,
                    not_after,
                    vm_allowance: None,
                    policy: Default::default(),
                }],
                withheld: vec![],
            }),
        }
    }

    fn state(b: &BundleState, now: UnixTime) -> ServiceState {
        outlook(b, 60, 100, false, now).services[0].1
    }

    #[test]
    fn a_lease_runs_out_into_grace_and_then_into_unlicensed() {
        let b = bundle(T0 - 10, T0 + 10_000);
        assert_eq!(state(&b, T0), ServiceState::Licensed { until: T0 + 60 });
        assert_eq!(
            state(&b, T0 + 59),
            ServiceState::Licensed { until: T0 + 60 }
        );
        let grace = ServiceState::Grace {
            until: T0 + 160,
            reason: Reason::LeaseExpired,
        };
        assert_eq!(state(&b, T0 + 60), grace);
        assert_eq!(
            state(&b, T0 + 160),
            ServiceState::Unlicensed {
                reason: Reason::LeaseExpired
            }
        );
        assert_eq!(outlook(&b, 60, 100, false, T0).next_change, Some(T0 + 60));
        assert_eq!(outlook(&b, 60, 100, false, T0 + 200).next_change, None);
    }

    #[test]
    fn a_term_ending_before_the_lease_ends_in_term_ended_grace() {
        let b = bundle(T0 - 10, T0 + 20);
        assert_eq!(state(&b, T0), ServiceState::Licensed { until: T0 + 20 });
        assert_eq!(
            state(&b, T0 + 20),
            ServiceState::Grace {
                until: T0 + 120,
                reason: Reason::TermEnded
            }
        );
    }

    #[test]
    fn no_bundle_issued_means_no_services() {
        assert_eq!(
            outlook(&BundleState::default(), 60, 100, false, T0),
            Outlook::default()
        );
    }

    #[test]
    fn the_grants_policy_is_applied_as_the_device_applies_it() {
        use crate::engine::policy::Strategy;
        let with = |strategy: Strategy| {
            let mut b = bundle(T0 - 10, T0 + 20);
            if let Some(basis) = b.basis.as_mut() {
                basis.grants[0].policy.strategy = strategy;
            }
            b
        };
        // Advisory, on a device that speaks the policy kinds: runs past grace, non-compliant.
        let advisory = with(Strategy::Advisory);
        assert!(matches!(
            outlook(&advisory, 60, 100, true, T0 + 500).services[0].1,
            ServiceState::NonCompliant { .. }
        ));
        // The same on a device that does not: the plain (restrict) rule.
        assert!(matches!(
            outlook(&advisory, 60, 100, false, T0 + 500).services[0].1,
            ServiceState::Unlicensed { .. }
        ));
        // Immediate: no grace at term end either way (a plain bundle carried grace 0).
        let immediate = with(Strategy::Immediate);
        for kinds in [true, false] {
            assert!(
                matches!(
                    outlook(&immediate, 60, 100, kinds, T0 + 20).services[0].1,
                    ServiceState::Unlicensed { .. }
                ),
                "policy kinds {kinds}"
            );
        }
    }
}
