//! Turning a device's seats into a [`GrantBundle`]: what it says ([`BundleBasis`]), when a
//! new one is due, and the per-device `seq` that never goes backwards.

use licd_protocol::limits::MAX_SERVICES;
use licd_protocol::{GrantBundle, ServiceGrant, UnixTime, Withheld, WithheldReason};

use super::model::{BundleBasis, BundleState, DeviceKey, GrantBasis};
use super::Engine;

impl Engine {
    /// What `key`'s bundle should say now. `None` for an unknown device.
    pub(super) fn basis(&self, key: &DeviceKey) -> Option<BundleBasis> {
        let d = self.state.devices.get(key)?;
        if !self.state.customers.contains_key(&d.tenant) {
            return Some(BundleBasis {
                grants: Vec::new(),
                withheld: d
                    .services_wanted
                    .iter()
                    .take(MAX_SERVICES)
                    .map(|s| Withheld {
                        service: s.clone(),
                        reason: WithheldReason::UnknownTenant,
                    })
                    .collect(),
            });
        }
        let mut grants = Vec::new();
        for (service, seat) in &d.seats {
            let (Some(sub), Some(cat)) = (
                self.state.subscriptions.get(&seat.subscription),
                self.state.catalog.get(&seat.sku),
            ) else {
                continue;
            };
            grants.push(GrantBasis {
                service: service.clone(),
                license: sub.id.clone(),
                sku: seat.sku.clone(),
                not_before: sub.start,
                // A seat moved away ends before its subscription does (co-term move).
                not_after: seat.ends_at.map_or(sub.end, |end| end.min(sub.end)),
                vm_allowance: cat.vms_per_seat.and(self.seat_vm_allowance(seat)),
                policy: self.effective_policy(&sub.id, &seat.sku),
            });
        }
        grants.truncate(MAX_SERVICES);
        let withheld = d
            .services_wanted
            .iter()
            .filter(|s| !d.seats.contains_key(*s))
            .take(MAX_SERVICES)
            .map(|s| {
                let policy = self.state.policies.get(s);
                // An MSP device is never assigned a seat (seed 000): more seats would not help,
                // so it is NotEntitled even while the service is paused.
                let reason = if d.unassigned.contains(s) {
                    WithheldReason::Unassigned
                } else if !self.is_msp_device(d)
                    && policy.is_some_and(|p| p.paused && p.customers.contains(&d.tenant))
                {
                    WithheldReason::SeatsExhausted
                } else {
                    WithheldReason::NotEntitled
                };
                Withheld {
                    service: s.clone(),
                    reason,
                }
            })
            .collect();
        Some(BundleBasis { grants, withheld })
    }

    /// Issues a new bundle for `key` saying `basis`: `seq` one above both the last issued and
    /// the one the device reported holding. `None` if the device is unknown or its `seq` is
    /// exhausted.
    pub(super) fn issue(
        &mut self,
        key: &DeviceKey,
        basis: BundleBasis,
        now: UnixTime,
    ) -> Option<GrantBundle> {
        let lease = self.lease;
        // A grant file's lease comes from each grant's policy (`offline_lease_days`, per
        // subscription or SKU) or the controller's default; the device cannot renew often.
        let by_file = self.answering_file.as_ref() == Some(key);
        let lease_of = |g: &GrantBasis| {
            if by_file {
                g.policy
                    .offline_lease_secs
                    .unwrap_or(lease.offline_lease_secs)
            } else {
                lease.lease_secs
            }
        };
        let shortest = basis
            .grants
            .iter()
            .map(lease_of)
            .min()
            .unwrap_or(if by_file {
                lease.offline_lease_secs
            } else {
                lease.lease_secs
            });
        let d = self.state.devices.get_mut(key)?;
        let seq = d.bundle.seq.max(d.reported_seq).checked_add(1)?;
        // Half the shortest lease, so one missed refresh still leaves half a lease.
        let refresh_after = now.saturating_add((shortest / 2).max(1));
        let bundle = GrantBundle {
            device: d.id.clone(),
            device_key: d.key.id(),
            tenant: d.tenant.clone(),
            seq,
            issued_at: now,
            refresh_after,
            grants: basis
                .grants
                .iter()
                .map(|g| ServiceGrant {
                    service: g.service.clone(),
                    license: g.license.clone(),
                    sku: g.sku.clone(),
                    not_before: g.not_before,
                    not_after: g.not_after,
                    lease_until: now.saturating_add(lease_of(g)),
                    grace: lease.grace_secs,
                    vm_allowance: g.vm_allowance,
                })
                .collect(),
            withheld: basis.withheld.clone(),
        };
        d.bundle = BundleState {
            seq,
            issued_at: now,
            refresh_after,
            basis: Some(basis),
        };
        self.dirty.devices.insert(key.clone());
        Some(bundle)
    }

    /// Issues a bundle to each of `keys` whose entitlements changed since its last bundle.
    pub(super) fn refresh_bundles<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a DeviceKey>,
        now: UnixTime,
    ) -> Vec<GrantBundle> {
        let mut out = Vec::new();
        for key in keys {
            let Some(basis) = self.basis(key) else {
                continue;
            };
            let current = self
                .state
                .devices
                .get(key)
                .and_then(|d| d.bundle.basis.as_ref());
            if current == Some(&basis) {
                continue;
            }
            match self.issue(key, basis, now) {
                Some(b) => out.push(b),
                None => {
                    tracing::warn!(tenant = %key.0, device = %key.1, "bundle seq exhausted, no bundle issued")
                }
            }
        }
        out
    }

    /// Issues bundles to every device whose entitlements changed.
    pub(super) fn refresh_all(&mut self, now: UnixTime) -> Vec<GrantBundle> {
        let keys: Vec<DeviceKey> = self.state.devices.keys().cloned().collect();
        self.refresh_bundles(&keys, now)
    }
}
