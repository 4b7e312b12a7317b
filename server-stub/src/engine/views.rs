//! Read-only views computed from the engine's records: subscriptions with their seat counts
//! (Meraki `seats.assigned/available/limit`), devices with each service's state, and the
//! seats missing for a paused service.

use std::collections::BTreeMap;

use licd_protocol::{DeviceId, LicenseId, ServiceName, Sku, TenantId, UnixTime, WithheldReason};
use serde::{Deserialize, Serialize};

use super::model::{DeviceKey, SubscriptionStatus};
use super::{Engine, EngineError};

/// Seat counts of an entitlement or a whole subscription. 64 bits: a subscription's totals
/// are sums over its SKUs, each up to [`super::MAX_SEATS`], and must not saturate or wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatCounts {
    /// Seats in use.
    pub assigned: u64,
    /// Seats reserved by site delegations (issue 23): not free, not held by a device here.
    pub reserved: u64,
    /// Seats free.
    pub available: u64,
    /// Seats bought.
    pub limit: u64,
}

/// One SKU of a subscription with its seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementView {
    /// SKU.
    pub sku: Sku,
    /// Service it licenses (`None` if the SKU left the catalogue).
    pub service: Option<ServiceName>,
    /// Product class it is for.
    pub product_class: String,
    /// Seats.
    pub seats: SeatCounts,
}

/// A subscription as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// Id.
    pub id: LicenseId,
    /// Name.
    pub name: String,
    /// Owner (None until claimed).
    pub owner: Option<TenantId>,
    /// Status at the time of the view.
    pub status: SubscriptionStatus,
    /// Term start.
    pub start: UnixTime,
    /// Term end.
    pub end: UnixTime,
    /// Product classes it has entitlements for.
    pub product_classes: Vec<String>,
    /// Seats per SKU.
    pub entitlements: Vec<EntitlementView>,
    /// Seats over all SKUs.
    pub seats: SeatCounts,
}

/// Seats missing for a service (Meraki `insufficientEntitlements`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insufficient {
    /// Service.
    pub service: ServiceName,
    /// Product class of the devices short of seats.
    pub product_class: String,
    /// SKU that would cover them (`None` if the catalogue has none for that class).
    pub sku: Option<Sku>,
    /// How many seats are missing.
    pub quantity: u32,
}

/// Where one service of a device stands on the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ServiceState {
    /// The device holds a seat.
    Granted {
        /// Subscription.
        license: LicenseId,
        /// SKU.
        sku: Sku,
        /// VMs the seat covers (per-VM SKUs).
        vm_allowance: Option<u32>,
        /// The device runs more VMs than the seat covers.
        over_vm_allowance: bool,
    },
    /// The device wants it and holds no seat.
    Withheld {
        /// Why.
        reason: WithheldReason,
    },
}

/// A device as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Tenant.
    pub tenant: TenantId,
    /// Device id.
    pub device: DeviceId,
    /// Pinned key, hex.
    pub key: String,
    /// Model.
    pub model: String,
    /// Serial.
    pub serial: String,
    /// Product class.
    pub product_class: String,
    /// VMs running, as last reported.
    pub vm_count: Option<u32>,
    /// Last report (controller time).
    pub last_report_at: UnixTime,
    /// `seq` of the newest bundle issued.
    pub bundle_seq: u64,
    /// `seq` the device said it holds.
    pub reported_seq: u64,
    /// The tenant is not a known customer.
    pub unknown_tenant: bool,
    /// Each service wanted or held.
    pub services: BTreeMap<ServiceName, ServiceState>,
}

impl Engine {
    /// Seat counts of `sku` in subscription `sub` with the given limit.
    fn counts(&self, sub: &LicenseId, sku: &Sku, limit: u32, now: UnixTime) -> SeatCounts {
        let assigned = u64::from(self.assigned_seats(sub, sku));
        let reserved = u64::from(self.reserved_seats(sub, sku, now));
        let limit = u64::from(limit);
        SeatCounts {
            assigned,
            reserved,
            available: limit.saturating_sub(assigned).saturating_sub(reserved),
            limit,
        }
    }

    /// One subscription with its seat counts.
    pub fn subscription_view(
        &self,
        id: &LicenseId,
        now: UnixTime,
    ) -> Result<SubscriptionView, EngineError> {
        let s = self
            .state
            .subscriptions
            .get(id)
            .ok_or_else(|| EngineError::UnknownSubscription(id.clone()))?;
        let mut total = SeatCounts::default();
        let mut classes = Vec::new();
        let entitlements = s
            .entitlements
            .iter()
            .map(|e| {
                let seats = self.counts(&s.id, &e.sku, e.limit, now);
                // Each term is below 2^32 and a subscription has far fewer than 2^32 SKUs:
                // the sums are exact (saturating only as a guard).
                total.assigned = total.assigned.saturating_add(seats.assigned);
                total.reserved = total.reserved.saturating_add(seats.reserved);
                total.available = total.available.saturating_add(seats.available);
                total.limit = total.limit.saturating_add(seats.limit);
                let cat = self.state.catalog.get(&e.sku);
                let service = cat.map(|c| c.service.clone());
                let class = cat.map(|c| c.product_class.clone()).unwrap_or_default();
                if !classes.contains(&class) {
                    classes.push(class.clone());
                }
                EntitlementView {
                    sku: e.sku.clone(),
                    service,
                    product_class: class,
                    seats,
                }
            })
            .collect();
        Ok(SubscriptionView {
            id: s.id.clone(),
            name: s.name.clone(),
            owner: s.owner.clone(),
            status: s.status(now),
            start: s.start,
            end: s.end,
            product_classes: classes,
            entitlements,
            seats: total,
        })
    }

    /// Every subscription, by id.
    pub fn subscriptions(&self, now: UnixTime) -> Vec<SubscriptionView> {
        self.state
            .subscriptions
            .keys()
            .filter_map(|id| self.subscription_view(id, now).ok())
            .collect()
    }

    /// One device with each service's state.
    pub fn device_view(&self, tenant: &TenantId, device: &DeviceId) -> Option<DeviceView> {
        let key: DeviceKey = (tenant.clone(), device.clone());
        let d = self.state.devices.get(&key)?;
        let basis = self.basis(&key)?;
        let mut services = BTreeMap::new();
        for g in basis.grants {
            let over = matches!((d.vm_count, g.vm_allowance), (Some(n), Some(a)) if n > a);
            services.insert(
                g.service,
                ServiceState::Granted {
                    license: g.license,
                    sku: g.sku,
                    vm_allowance: g.vm_allowance,
                    over_vm_allowance: over,
                },
            );
        }
        for w in basis.withheld {
            services.insert(w.service, ServiceState::Withheld { reason: w.reason });
        }
        Some(DeviceView {
            tenant: d.tenant.clone(),
            device: d.id.clone(),
            key: d.key.to_hex(),
            model: d.model.clone(),
            serial: d.serial.clone(),
            product_class: d.product_class.clone(),
            vm_count: d.vm_count,
            last_report_at: d.last_report_at,
            bundle_seq: d.bundle.seq,
            reported_seq: d.reported_seq,
            unknown_tenant: !self.state.customers.contains_key(&d.tenant),
            services,
        })
    }

    /// Every device (of `tenant` only, when given), by key.
    pub fn device_views(&self, tenant: Option<&TenantId>) -> Vec<DeviceView> {
        self.state
            .devices
            .keys()
            .filter(|(t, _)| tenant.is_none_or(|x| x == t))
            .filter_map(|(t, d)| self.device_view(t, d))
            .collect()
    }

    /// Seats missing for `service`: devices auto-licensing covers that hold none (the MSP's
    /// count, seed 000), per product class, less the free seats they could use.
    pub fn shortfall(&self, service: &ServiceName, now: UnixTime) -> Vec<Insufficient> {
        let mut need: BTreeMap<String, u32> = BTreeMap::new();
        for d in self.state.devices.values() {
            if self.counts_for_pause(d, service, now) {
                *need.entry(d.product_class.clone()).or_default() += 1;
            }
        }
        need.into_iter()
            .filter_map(|(class, n)| {
                let mut free = 0u32;
                let mut sku = None;
                for c in self.state.catalog.values() {
                    if &c.service != service || c.product_class != class {
                        continue;
                    }
                    sku.get_or_insert_with(|| c.sku.clone());
                    for s in self.state.subscriptions.values() {
                        if s.status(now) != SubscriptionStatus::Active {
                            continue;
                        }
                        for e in s.entitlements.iter().filter(|e| e.sku == c.sku) {
                            let available = self.counts(&s.id, &e.sku, e.limit, now).available;
                            free =
                                free.saturating_add(u32::try_from(available).unwrap_or(u32::MAX));
                        }
                    }
                }
                let quantity = n.saturating_sub(free);
                (quantity > 0).then(|| Insufficient {
                    service: service.clone(),
                    product_class: class,
                    sku,
                    quantity,
                })
            })
            .collect()
    }
}
