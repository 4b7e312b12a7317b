//! Compliance per customer (Meraki `complianceStatuses`): violations by product class with the
//! missing entitlements (SKU, quantity) and `gracePeriodEndsAt`, the services whose
//! auto-licensing is paused, and hosts running more VMs than their seats allow (Snow).

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::{DeviceId, LicenseId, ServiceName, Sku, TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use super::model::SubscriptionStatus;
use super::{Engine, EngineError};

/// A customer's compliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceReport {
    /// The customer.
    pub customer: TenantId,
    /// No violation, nothing paused, no VM over-use.
    pub compliant: bool,
    /// Subscriptions the customer owns.
    pub subscriptions: Vec<SubscriptionSummary>,
    /// Violations by product class.
    pub violations: Vec<ProductClassViolation>,
    /// Auto-licensed services paused for this customer for lack of seats.
    pub paused_services: Vec<ServiceName>,
    /// Hosts running more VMs than their seat's policy tolerates.
    pub vm_overuse: Vec<VmOveruse>,
    /// Hosts over their allowance but within the tolerance: licensed with a warning (issue 20).
    pub vm_overage_warnings: Vec<VmOveruse>,
    /// Grants whose term ends soon (issue 20): within the asked window, or within the
    /// largest `warn_before` threshold of the grant's policy.
    pub expiring: Vec<ExpiringGrant>,
    /// Services the devices themselves report as not licensed (issue 20): advisory services
    /// past grace (`non_compliant`: running, and not compliant), in grace, or unlicensed.
    pub device_reported: Vec<ReportedStanding>,
}

/// A grant whose term ends soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiringGrant {
    /// Device.
    pub device: DeviceId,
    /// Service.
    pub service: ServiceName,
    /// Subscription of the seat.
    pub subscription: LicenseId,
    /// SKU of the seat.
    pub sku: Sku,
    /// When the term ends.
    pub not_after: UnixTime,
    /// The smallest `warn_before` threshold of its policy crossed now (None: none).
    pub threshold: Option<u64>,
}

/// A service's standing as its device reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedStanding {
    /// Device.
    pub device: DeviceId,
    /// Service.
    pub service: ServiceName,
    /// How the device reported it (see [`super::usage::ReportedCompliance`]).
    pub report: super::usage::ReportedCompliance,
}

/// A subscription in a compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSummary {
    /// Id.
    pub id: LicenseId,
    /// Name.
    pub name: String,
    /// Status.
    pub status: SubscriptionStatus,
}

/// Devices of one product class short of licenses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductClassViolation {
    /// Product class.
    pub product_class: String,
    /// When the earliest of these violations runs out of grace (its start + the policy
    /// grace).
    pub grace_period_ends_at: UnixTime,
    /// Devices concerned.
    pub devices: u32,
    /// What is missing.
    pub missing: Vec<MissingEntitlement>,
}

/// Seats missing for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingEntitlement {
    /// The service.
    pub service: ServiceName,
    /// SKU that would cover it (`None` if the catalogue has none for the class).
    pub sku: Option<Sku>,
    /// Seats missing.
    pub quantity: u32,
}

/// A host over its VM allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOveruse {
    /// Host.
    pub device: DeviceId,
    /// Service.
    pub service: ServiceName,
    /// VMs it runs.
    pub vm_count: u32,
    /// VMs its seat covers.
    pub allowance: u32,
    /// VMs its policy tolerates (the allowance × the overage tolerance).
    pub tolerated: u32,
}

#[derive(Default)]
struct ClassAcc {
    since: Option<UnixTime>,
    devices: u32,
    missing: BTreeMap<ServiceName, u32>,
}

/// One wanted service of one device out of compliance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceViolation {
    device: DeviceId,
    product_class: String,
    service: ServiceName,
    /// The seat at fault (its subscription expired or vanished, or the host runs more VMs
    /// than it covers); `None`: the device has no seat for the service.
    seat: Option<(LicenseId, Sku)>,
    /// Seats missing.
    quantity: u32,
    /// Since when.
    since: UnixTime,
    /// `(vm_count, allowance, tolerated)` for VM over-use.
    overuse: Option<(u32, u32, u32)>,
}

/// The compliance of one subscription (Meraki `complianceStatuses` item): the violations of
/// the devices of the organizations it serves that it is the subscription to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionCompliance {
    /// The subscription.
    pub subscription: SubscriptionSummary,
    /// By product class.
    pub by_product_class: Vec<SubscriptionViolation>,
}

/// Devices of one product class short of a subscription's entitlements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionViolation {
    /// Product class.
    pub product_class: String,
    /// When the earliest of these violations runs out of grace.
    pub grace_period_ends_at: UnixTime,
    /// Seats missing per SKU.
    pub missing: Vec<(Sku, u32)>,
}

impl Engine {
    fn device_violations(&self, customer: &TenantId, now: UnixTime) -> Vec<DeviceViolation> {
        let mut out = Vec::new();
        for d in self
            .state
            .devices
            .values()
            .filter(|d| &d.tenant == customer)
        {
            for s in &d.services_wanted {
                let since_report = d.violation_since.get(s).copied().unwrap_or(now);
                let mut overuse = None;
                let (quantity, since) = match d.seats.get(s) {
                    None => (1, since_report),
                    Some(seat) => {
                        let sub = self.state.subscriptions.get(&seat.subscription);
                        let allowance = self.seat_vm_allowance(seat);
                        match (sub, d.vm_count, allowance) {
                            (Some(sub), _, _) if sub.status(now) == SubscriptionStatus::Expired => {
                                (1, sub.end)
                            }
                            // Moved away (co-term move): out of compliance from the move.
                            _ if seat.ends_at.is_some_and(|end| end <= now) => {
                                (1, seat.ends_at.unwrap_or(now))
                            }
                            (None, _, _) => (1, since_report),
                            (_, Some(n), Some(a))
                                if n > self
                                    .effective_policy(&seat.subscription, &seat.sku)
                                    .tolerated_vms(a) =>
                            {
                                let tolerated = self
                                    .effective_policy(&seat.subscription, &seat.sku)
                                    .tolerated_vms(a);
                                overuse = Some((n, a, tolerated));
                                ((n - a).div_ceil(a.max(1)), since_report)
                            }
                            _ => (0, 0),
                        }
                    }
                };
                if quantity == 0 {
                    continue;
                }
                out.push(DeviceViolation {
                    device: d.id.clone(),
                    product_class: d.product_class.clone(),
                    service: s.clone(),
                    seat: d
                        .seats
                        .get(s)
                        .map(|seat| (seat.subscription.clone(), seat.sku.clone())),
                    quantity,
                    since,
                    overuse,
                });
            }
        }
        out
    }

    /// Compliance of `customer` at `now`; grants listed as expiring by their policies'
    /// thresholds.
    pub fn compliance(
        &self,
        customer: &TenantId,
        now: UnixTime,
    ) -> Result<ComplianceReport, EngineError> {
        self.compliance_with(customer, now, None)
    }

    /// Grants of `customer`'s devices whose term ends after `now` and within `within`
    /// seconds, or (`None`) within the largest `warn_before` threshold of their policy.
    fn expiring(
        &self,
        customer: &TenantId,
        now: UnixTime,
        within: Option<u64>,
    ) -> Vec<ExpiringGrant> {
        let mut out = Vec::new();
        for d in self
            .state
            .devices
            .values()
            .filter(|d| &d.tenant == customer)
        {
            for (service, seat) in &d.seats {
                let Some(sub) = self.state.subscriptions.get(&seat.subscription) else {
                    continue;
                };
                let not_after = seat.ends_at.map_or(sub.end, |end| end.min(sub.end));
                if not_after <= now {
                    continue;
                }
                let left = not_after - now;
                let policy = self.effective_policy(&seat.subscription, &seat.sku);
                let threshold = policy
                    .warn_before
                    .iter()
                    .rev()
                    .find(|w| left <= **w)
                    .copied();
                let listed = match within {
                    Some(w) => left <= w,
                    None => threshold.is_some(),
                };
                if listed {
                    out.push(ExpiringGrant {
                        device: d.id.clone(),
                        service: service.clone(),
                        subscription: seat.subscription.clone(),
                        sku: seat.sku.clone(),
                        not_after,
                        threshold,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (a.not_after, &a.device, &a.service).cmp(&(b.not_after, &b.device, &b.service))
        });
        out
    }

    /// Services `customer`'s devices report as not licensed (their last extended report).
    fn device_reported(&self, customer: &TenantId) -> Vec<ReportedStanding> {
        self.state
            .devices
            .values()
            .filter(|d| &d.tenant == customer)
            .flat_map(|d| {
                d.usage
                    .compliance
                    .iter()
                    .filter(|(_, c)| c.standing != "licensed")
                    .map(|(service, c)| ReportedStanding {
                        device: d.id.clone(),
                        service: service.clone(),
                        report: c.clone(),
                    })
            })
            .collect()
    }

    /// [`Engine::compliance`] listing grants expiring within `expiring_within` seconds
    /// (`None`: by their policies' thresholds).
    pub fn compliance_with(
        &self,
        customer: &TenantId,
        now: UnixTime,
        expiring_within: Option<u64>,
    ) -> Result<ComplianceReport, EngineError> {
        if !self.state.customers.contains_key(customer) {
            return Err(EngineError::UnknownCustomer(customer.clone()));
        }
        let grace = self.lease.grace_secs;
        let mut classes: BTreeMap<String, ClassAcc> = BTreeMap::new();
        let mut vm_overuse = Vec::new();
        let mut violating: BTreeMap<String, BTreeSet<DeviceId>> = BTreeMap::new();
        for v in self.device_violations(customer, now) {
            if let Some((vm_count, allowance, tolerated)) = v.overuse {
                vm_overuse.push(VmOveruse {
                    device: v.device.clone(),
                    service: v.service.clone(),
                    vm_count,
                    allowance,
                    tolerated,
                });
            }
            violating
                .entry(v.product_class.clone())
                .or_default()
                .insert(v.device.clone());
            let acc = classes.entry(v.product_class).or_default();
            acc.since = Some(acc.since.map_or(v.since, |x| x.min(v.since)));
            // VM counts come from devices: up to u32::MAX each, so the sum saturates.
            let missing = acc.missing.entry(v.service).or_default();
            *missing = missing.saturating_add(v.quantity);
        }
        for (class, devices) in violating {
            if let Some(acc) = classes.get_mut(&class) {
                acc.devices = u32::try_from(devices.len()).unwrap_or(u32::MAX);
            }
        }
        let violations: Vec<ProductClassViolation> = classes
            .into_iter()
            .map(|(class, acc)| ProductClassViolation {
                grace_period_ends_at: acc.since.unwrap_or(now).saturating_add(grace),
                devices: acc.devices,
                missing: acc
                    .missing
                    .into_iter()
                    .map(|(service, quantity)| MissingEntitlement {
                        sku: self.sku_for(&service, &class).cloned(),
                        service,
                        quantity,
                    })
                    .collect(),
                product_class: class,
            })
            .collect();
        let paused_services: Vec<ServiceName> = self
            .state
            .policies
            .iter()
            .filter(|(_, p)| p.paused && p.customers.contains(customer))
            .map(|(s, _)| s.clone())
            .collect();
        let subscriptions = self
            .state
            .subscriptions
            .values()
            .filter(|s| s.owner.as_ref() == Some(customer))
            .map(|s| SubscriptionSummary {
                id: s.id.clone(),
                name: s.name.clone(),
                status: s.status(now),
            })
            .collect();
        let device_reported = self.device_reported(customer);
        // Advisory past grace runs on, but is not compliant, whatever the seats say.
        let advisory_breach = device_reported
            .iter()
            .any(|r| r.report.standing == "non_compliant");
        Ok(ComplianceReport {
            customer: customer.clone(),
            compliant: violations.is_empty()
                && paused_services.is_empty()
                && vm_overuse.is_empty()
                && !advisory_breach,
            subscriptions,
            violations,
            paused_services,
            vm_overuse,
            vm_overage_warnings: self.overage_warnings(customer),
            expiring: self.expiring(customer, now, expiring_within),
            device_reported,
        })
    }

    /// Hosts over their allowance but within their policy's tolerance.
    fn overage_warnings(&self, customer: &TenantId) -> Vec<VmOveruse> {
        let mut out = Vec::new();
        for d in self
            .state
            .devices
            .values()
            .filter(|d| &d.tenant == customer)
        {
            let Some(n) = d.vm_count else { continue };
            for (service, seat) in &d.seats {
                let Some(a) = self
                    .state
                    .catalog
                    .get(&seat.sku)
                    .and_then(|c| c.vms_per_seat)
                else {
                    continue;
                };
                let tolerated = self
                    .effective_policy(&seat.subscription, &seat.sku)
                    .tolerated_vms(a);
                if n > a && n <= tolerated {
                    out.push(VmOveruse {
                        device: d.id.clone(),
                        service: service.clone(),
                        vm_count: n,
                        allowance: a,
                        tolerated,
                    });
                }
            }
        }
        out
    }

    /// The catalogue's SKU for `service` on devices of `class`.
    fn sku_for(&self, service: &ServiceName, class: &str) -> Option<&Sku> {
        self.state
            .catalog
            .values()
            .find(|c| &c.service == service && c.product_class == class)
            .map(|c| &c.sku)
    }

    /// Compliance of subscription `sub` (Meraki `complianceStatuses`) over the devices of
    /// `organizations` it serves (its owner and the customers bound to it; others are left
    /// out). A violation belongs to the subscription whose seat is at fault (expired, or over
    /// its VM allowance); a device with no seat at all belongs to every subscription serving
    /// its customer that entitles the SKU it needs — those are the ones whose seats would fix
    /// it. A violation no serving subscription could fix shows in [`Engine::compliance`] only.
    pub fn subscription_compliance(
        &self,
        sub: &LicenseId,
        organizations: &[TenantId],
        now: UnixTime,
    ) -> Result<SubscriptionCompliance, EngineError> {
        let s = self
            .state
            .subscriptions
            .get(sub)
            .ok_or_else(|| EngineError::UnknownSubscription(sub.clone()))?;
        let bound = self.state.bindings.get(sub);
        let serves =
            |c: &TenantId| s.owner.as_ref() == Some(c) || bound.is_some_and(|b| b.contains(c));
        let mut classes: BTreeMap<String, (UnixTime, BTreeMap<Sku, u32>)> = BTreeMap::new();
        for c in organizations.iter().filter(|c| serves(c)) {
            for v in self.device_violations(c, now) {
                let sku = match &v.seat {
                    Some((from, sku)) if from == sub => sku.clone(),
                    Some(_) => continue,
                    None => match self.sku_for(&v.service, &v.product_class) {
                        Some(sku) if s.entitlements.iter().any(|e| &e.sku == sku) => sku.clone(),
                        _ => continue,
                    },
                };
                let acc = classes
                    .entry(v.product_class)
                    .or_insert((v.since, BTreeMap::new()));
                acc.0 = acc.0.min(v.since);
                let q = acc.1.entry(sku).or_default();
                *q = q.saturating_add(v.quantity);
            }
        }
        let grace = self.lease.grace_secs;
        Ok(SubscriptionCompliance {
            subscription: SubscriptionSummary {
                id: s.id.clone(),
                name: s.name.clone(),
                status: s.status(now),
            },
            by_product_class: classes
                .into_iter()
                .map(|(product_class, (since, missing))| SubscriptionViolation {
                    product_class,
                    grace_period_ends_at: since.saturating_add(grace),
                    missing: missing.into_iter().collect(),
                })
                .collect(),
        })
    }
}
