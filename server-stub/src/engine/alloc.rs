//! Seat allocation for auto-licensing: which subscription a device's seat comes from, and the
//! all-or-nothing rule — when the seats for a service are fewer than the devices that need
//! them, assignment of that service is paused instead of handing seats out arbitrarily.
//!
//! Seed 000: "License assignment is not supported for the MSP owned devices. License
//! assignment will be in paused state if the total license tokens are less than total device
//! counts (including MSP and tenants)". So an MSP device never gets a seat from
//! auto-licensing, yet one that auto-licensing covers counts when deciding the pause: the
//! seats must cover the tenants' devices and the MSP's, and the MSP's share is left free.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::limits::MAX_SERVICES;
use licd_protocol::{DeviceId, LicenseId, ServiceName, Sku, TenantId, UnixTime};

use super::model::{CustomerKind, Device, DeviceKey, Seat, SubscriptionStatus};
use super::Engine;

/// What a reconcile pass changed.
#[derive(Debug, Default)]
pub(super) struct Reconciled {
    /// Devices whose seats changed.
    pub changed: BTreeSet<DeviceKey>,
    /// The service's paused flag flipped (every device wanting it may need a new bundle).
    pub pause_changed: bool,
}

type Plan = Vec<(DeviceKey, LicenseId, Sku)>;

impl Engine {
    /// Whether `d` holds a seat for `service` that is still good (its subscription has not
    /// ended at `now`).
    pub(super) fn has_valid_seat(&self, d: &Device, service: &ServiceName, now: UnixTime) -> bool {
        d.seats.get(service).is_some_and(|seat| {
            seat.ends_at.is_none_or(|end| now < end)
                && self
                    .state
                    .subscriptions
                    .get(&seat.subscription)
                    .is_some_and(|s| s.status(now) != SubscriptionStatus::Expired)
        })
    }

    /// Whether `d` belongs to the MSP (seed 000: auto-licensing assigns it nothing).
    pub(super) fn is_msp_device(&self, d: &Device) -> bool {
        self.state
            .customers
            .get(&d.tenant)
            .is_some_and(|c| c.kind == CustomerKind::Msp)
    }

    /// The devices of `tenant`, without walking the others: the device map is ordered by
    /// (tenant, device id), and `-` is the smallest valid id.
    pub(super) fn devices_of<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> impl Iterator<Item = &'a Device> + 'a {
        let first = DeviceId::new("-").ok();
        first
            .into_iter()
            .flat_map(move |first| self.state.devices.range((tenant.clone(), first)..))
            .take_while(move |((t, _), _)| t == tenant)
            .map(|(_, d)| d)
    }

    /// Whether auto-licensing of `service` covers `d`, `d` wants it and holds no good seat:
    /// the devices the pause rule counts, the MSP's included.
    pub(super) fn counts_for_pause(
        &self,
        d: &Device,
        service: &ServiceName,
        now: UnixTime,
    ) -> bool {
        self.state.customers.contains_key(&d.tenant)
            && d.services_wanted.contains(service)
            // Revoked on this device by an operator (unassign, a computer assignment deleted).
            && !d.unassigned.contains(service)
            && self
                .state
                .policies
                .get(service)
                .is_some_and(|p| p.customers.contains(&d.tenant))
            && !self.has_valid_seat(d, service, now)
    }

    /// How early `tenant` may draw on `sub`: its own subscriptions first (0), then those it
    /// is bound to (1), then the MSP's (2); `None` if it may not. Devices and site
    /// delegations use the same order.
    pub(super) fn subscription_rank(
        &self,
        sub: &super::model::Subscription,
        tenant: &licd_protocol::TenantId,
    ) -> Option<u8> {
        let owner = sub.owner.as_ref()?;
        let bound = self
            .state
            .bindings
            .get(&sub.id)
            .is_some_and(|b| b.contains(tenant));
        if owner == tenant {
            Some(0)
        } else if bound {
            Some(1)
        } else if self.msp().is_some_and(|m| &m.id == owner) {
            Some(2)
        } else {
            None
        }
    }

    /// Seats `d` could take for `service`, best first: its own customer's subscriptions, then
    /// those it is bound to, then the MSP's, then the earliest-ending, then by id and SKU. Each with its free seats.
    fn candidates(
        &self,
        service: &ServiceName,
        d: &Device,
        now: UnixTime,
    ) -> Vec<(LicenseId, Sku, u32)> {
        let mut out = Vec::new();
        for sub in self.state.subscriptions.values() {
            if sub.status(now) != SubscriptionStatus::Active {
                continue;
            }
            let Some(rank) = self.subscription_rank(sub, &d.tenant) else {
                continue;
            };
            for ent in &sub.entitlements {
                let Some(cat) = self.state.catalog.get(&ent.sku) else {
                    continue;
                };
                if &cat.service != service || cat.product_class != d.product_class {
                    continue;
                }
                // Seats reserved by site delegations are as good as assigned.
                let free = ent
                    .limit
                    .saturating_sub(self.used_seats(&sub.id, &ent.sku, now));
                out.push((rank, sub.end, sub.id.clone(), ent.sku.clone(), free));
            }
        }
        out.sort();
        out.into_iter()
            .map(|(_, _, id, sku, free)| (id, sku, free))
            .collect()
    }

    /// A seat for every device in `devices`, or `None` when one of them cannot get one.
    fn plan(&self, service: &ServiceName, devices: &[DeviceKey], now: UnixTime) -> Option<Plan> {
        let mut taken: BTreeMap<(LicenseId, Sku), u32> = BTreeMap::new();
        let mut plan = Vec::with_capacity(devices.len());
        for key in devices {
            let d = self.state.devices.get(key)?;
            if d.seats.len() >= MAX_SERVICES && !d.seats.contains_key(service) {
                return None;
            }
            let (sub, sku) = self
                .candidates(service, d, now)
                .into_iter()
                .find(|(sub, sku, free)| {
                    *free > taken.get(&(sub.clone(), sku.clone())).copied().unwrap_or(0)
                })
                .map(|(sub, sku, _)| (sub, sku))?;
            *taken.entry((sub.clone(), sku.clone())).or_default() += 1;
            plan.push((key.clone(), sub, sku));
        }
        Some(plan)
    }

    fn apply(&mut self, service: &ServiceName, plan: Plan, now: UnixTime) -> BTreeSet<DeviceKey> {
        let mut changed = BTreeSet::new();
        for (key, sub, sku) in plan {
            self.release_seat(&key, service);
            if let Some(d) = self.state.devices.get_mut(&key) {
                d.seats
                    .insert(service.clone(), Seat::new(sub.clone(), sku.clone(), now));
                *self.assigned.entry((sub, sku)).or_default() += 1;
                self.dirty.devices.insert(key.clone());
                changed.insert(key);
            }
        }
        changed
    }

    /// Removes `d`'s seat for `service`, if any. Returns whether there was one.
    pub(super) fn release_seat(&mut self, key: &DeviceKey, service: &ServiceName) -> bool {
        let Some(d) = self.state.devices.get_mut(key) else {
            return false;
        };
        let Some(seat) = d.seats.remove(service) else {
            return false;
        };
        let counted = seat.counted();
        if let Some(n) = self.assigned.get_mut(&(seat.subscription, seat.sku)) {
            *n = n.saturating_sub(counted);
        }
        self.dirty.devices.insert(key.clone());
        true
    }

    /// Brings `service` to its rule: every device auto-licensing covers that needs a seat gets
    /// one, or — when there are not enough — none does and the service is paused.
    pub(super) fn reconcile(&mut self, service: &ServiceName, now: UnixTime) -> Reconciled {
        let Some(was_paused) = self.state.policies.get(service).map(|p| p.paused) else {
            return Reconciled::default();
        };
        let needing: Vec<DeviceKey> = self
            .state
            .devices
            .iter()
            .filter(|(_, d)| self.counts_for_pause(d, service, now))
            .map(|(k, _)| k.clone())
            .collect();
        let (changed, paused) = match self.plan(service, &needing, now) {
            Some(plan) => {
                // The MSP's devices were planned for (their seats must exist) but get none.
                let plan: Plan = plan
                    .into_iter()
                    .filter(|(key, _, _)| {
                        self.state
                            .devices
                            .get(key)
                            .is_some_and(|d| !self.is_msp_device(d))
                    })
                    .collect();
                (self.apply(service, plan, now), false)
            }
            None => (BTreeSet::new(), true),
        };
        if paused != was_paused {
            if let Some(p) = self.state.policies.get_mut(service) {
                p.paused = paused;
            }
            self.dirty.policies.insert(service.clone());
            tracing::info!(%service, paused, devices = needing.len(), "auto-licensing pause state changed");
        }
        Reconciled {
            changed,
            pause_changed: paused != was_paused,
        }
    }

    /// Reconcile on behalf of one device that just reported: if the service is not paused and
    /// there is a seat for this device, it takes it; otherwise the full pass decides.
    /// Returns the devices whose bundles may have changed.
    pub(super) fn reconcile_for(
        &mut self,
        service: &ServiceName,
        key: &DeviceKey,
        now: UnixTime,
    ) -> BTreeSet<DeviceKey> {
        let Some(d) = self.state.devices.get(key) else {
            return BTreeSet::new();
        };
        if !self.counts_for_pause(d, service, now) {
            return BTreeSet::new();
        }
        let paused = self.state.policies.get(service).is_some_and(|p| p.paused);
        // The quick way (a free seat for this one device) is right only when every other
        // counted device holds its seat, which is never so for the MSP's devices.
        // Through the MSPs' own devices: a walk over every device here made each report cost
        // O(fleet) (4.9 ms of controller CPU per device at 10,000 devices, BENCHMARKS.md).
        let msp_counted = self
            .state
            .customers
            .iter()
            .filter(|(_, c)| c.kind == CustomerKind::Msp)
            .any(|(t, _)| {
                self.devices_of(t)
                    .any(|x| self.counts_for_pause(x, service, now))
            });
        if !paused && !msp_counted {
            if let Some(plan) = self.plan(service, std::slice::from_ref(key), now) {
                return self.apply(service, plan, now);
            }
        }
        let r = self.reconcile(service, now);
        if r.pause_changed {
            self.devices_wanting(service)
        } else {
            r.changed
        }
    }

    /// Every device that wants `service`.
    pub(super) fn devices_wanting(&self, service: &ServiceName) -> BTreeSet<DeviceKey> {
        self.state
            .devices
            .iter()
            .filter(|(_, d)| d.services_wanted.contains(service))
            .map(|(k, _)| k.clone())
            .collect()
    }
}
