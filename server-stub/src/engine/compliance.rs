//! Compliance per customer (Meraki `complianceStatuses`): violations by product class with the
//! missing entitlements (SKU, quantity) and `gracePeriodEndsAt`, the services whose
//! auto-licensing is paused, and hosts running more VMs than their seats allow (Snow).

use std::collections::BTreeMap;

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
    /// Hosts running more VMs than their seat covers.
    pub vm_overuse: Vec<VmOveruse>,
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
}

#[derive(Default)]
struct ClassAcc {
    since: Option<UnixTime>,
    devices: u32,
    missing: BTreeMap<ServiceName, u32>,
}

impl Engine {
    /// Compliance of `customer` at `now`.
    pub fn compliance(
        &self,
        customer: &TenantId,
        now: UnixTime,
    ) -> Result<ComplianceReport, EngineError> {
        if !self.state.customers.contains_key(customer) {
            return Err(EngineError::UnknownCustomer(customer.clone()));
        }
        let grace = self.lease.grace_secs;
        let mut classes: BTreeMap<String, ClassAcc> = BTreeMap::new();
        let mut vm_overuse = Vec::new();
        for d in self
            .state
            .devices
            .values()
            .filter(|d| &d.tenant == customer)
        {
            let mut device_violates = false;
            for s in &d.services_wanted {
                let since_report = d.violation_since.get(s).copied().unwrap_or(now);
                let (quantity, since) = match d.seats.get(s) {
                    None => (1, since_report),
                    Some(seat) => {
                        let sub = self.state.subscriptions.get(&seat.subscription);
                        let allowance = self
                            .state
                            .catalog
                            .get(&seat.sku)
                            .and_then(|c| c.vms_per_seat);
                        match (sub, d.vm_count, allowance) {
                            (Some(sub), _, _) if sub.status(now) == SubscriptionStatus::Expired => {
                                (1, sub.end)
                            }
                            (None, _, _) => (1, since_report),
                            (_, Some(n), Some(a)) if n > a => {
                                vm_overuse.push(VmOveruse {
                                    device: d.id.clone(),
                                    service: s.clone(),
                                    vm_count: n,
                                    allowance: a,
                                });
                                ((n - a).div_ceil(a.max(1)), since_report)
                            }
                            _ => (0, 0),
                        }
                    }
                };
                if quantity == 0 {
                    continue;
                }
                device_violates = true;
                let acc = classes.entry(d.product_class.clone()).or_default();
                acc.since = Some(acc.since.map_or(since, |x| x.min(since)));
                // VM counts come from devices: up to u32::MAX each, so the sum saturates.
                let missing = acc.missing.entry(s.clone()).or_default();
                *missing = missing.saturating_add(quantity);
            }
            if device_violates {
                let acc = classes.entry(d.product_class.clone()).or_default();
                acc.devices = acc.devices.saturating_add(1);
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
                        sku: self
                            .state
                            .catalog
                            .values()
                            .find(|c| c.service == service && c.product_class == class)
                            .map(|c| c.sku.clone()),
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
        Ok(ComplianceReport {
            customer: customer.clone(),
            compliant: violations.is_empty() && paused_services.is_empty() && vm_overuse.is_empty(),
            subscriptions,
            violations,
            paused_services,
            vm_overuse,
        })
    }
}
