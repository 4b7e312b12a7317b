//! Operator operations on the engine (what the admin API and the CLI call): customers,
//! catalogue, subscriptions and claim keys, auto-licensing and unassign, key re-pinning.
//! Each checks everything before it changes anything.

use std::collections::BTreeSet;

use licd_protocol::{DeviceId, PublicKey, ServiceName, TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use super::model::{CatalogEntry, Customer, CustomerKind, DeviceKey, Subscription};
use super::select::Selection;
use super::views::{Insufficient, SubscriptionView};
use super::{Effects, Engine, EngineError};

/// Result of enabling auto-licensing (or of its `validate` dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoLicenseResult {
    /// Services whose assignment is paused for lack of seats.
    pub paused: Vec<ServiceName>,
    /// Seats missing to un-pause them.
    pub insufficient_entitlements: Vec<Insufficient>,
    /// Seats assigned by this call.
    pub seats_assigned: u32,
    /// Bundles to publish (empty for a dry run).
    #[serde(skip)]
    pub effects: Effects,
}

impl Engine {
    /// Adds a customer. A tenant inherits every auto-licensing setting that was enabled for
    /// all customers (seed 000: "newly created tenant will inherit license settings").
    pub fn add_customer(
        &mut self,
        id: TenantId,
        name: impl Into<String>,
        kind: CustomerKind,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        if self.state.customers.contains_key(&id) {
            return Err(EngineError::CustomerExists(id));
        }
        if kind == CustomerKind::Msp {
            if let Some(msp) = self.msp() {
                return Err(EngineError::MspExists(msp.id.clone()));
            }
        }
        self.state.customers.insert(
            id.clone(),
            Customer {
                id: id.clone(),
                name: name.into(),
                kind,
                created_at: now,
            },
        );
        self.dirty.customers.insert(id.clone());
        for (service, p) in self.state.policies.iter_mut() {
            if p.inherit_to_new_tenants && p.customers.insert(id.clone()) {
                self.dirty.policies.insert(service.clone());
            }
        }
        tracing::info!(customer = %id, ?kind, "customer added");
        Ok(self.settle_all(now))
    }

    /// Adds a SKU to the catalogue.
    pub fn add_catalog_entry(&mut self, entry: CatalogEntry) -> Result<(), EngineError> {
        if self.state.catalog.contains_key(&entry.sku) {
            return Err(EngineError::SkuExists(entry.sku));
        }
        self.dirty.catalog.insert(entry.sku.clone());
        self.state.catalog.insert(entry.sku.clone(), entry);
        Ok(())
    }

    /// Adds a subscription: owned (`owner` set) or waiting for its claim key.
    pub fn add_subscription(
        &mut self,
        sub: Subscription,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        if self.state.subscriptions.contains_key(&sub.id) {
            return Err(EngineError::SubscriptionExists(sub.id));
        }
        if sub.end < sub.start {
            return Err(EngineError::InvalidTerm {
                start: sub.start,
                end: sub.end,
            });
        }
        if let Some(owner) = &sub.owner {
            if !self.state.customers.contains_key(owner) {
                return Err(EngineError::UnknownCustomer(owner.clone()));
            }
        }
        for (i, e) in sub.entitlements.iter().enumerate() {
            if !self.state.catalog.contains_key(&e.sku) {
                return Err(EngineError::UnknownSku(e.sku.clone()));
            }
            // The ledger keeps one row per (subscription, SKU): a second one would fail to store.
            if sub.entitlements[..i].iter().any(|o| o.sku == e.sku) {
                return Err(EngineError::DuplicateSku(e.sku.clone()));
            }
            if e.limit > super::MAX_SEATS {
                return Err(EngineError::TooManySeats {
                    sku: e.sku.clone(),
                    limit: e.limit,
                });
            }
        }
        if let Some(key) = &sub.claim_key {
            if let Some(other) = self
                .state
                .subscriptions
                .values()
                .find(|s| s.claim_key.as_ref() == Some(key))
            {
                return Err(EngineError::ClaimKeyInUse(other.id.clone()));
            }
        }
        let owned = sub.owner.is_some();
        tracing::info!(subscription = %sub.id, owner = ?sub.owner, "subscription added");
        self.dirty.subscriptions.insert(sub.id.clone());
        self.state.subscriptions.insert(sub.id.clone(), sub);
        Ok(if owned {
            self.settle_all(now)
        } else {
            Effects::default()
        })
    }

    /// Claims the subscription with `claim_key` for `customer` (Meraki claim). With
    /// `validate`, only checks and shows what would be claimed.
    pub fn claim(
        &mut self,
        claim_key: &str,
        customer: &TenantId,
        validate: bool,
        now: UnixTime,
    ) -> Result<(SubscriptionView, Effects), EngineError> {
        if !self.state.customers.contains_key(customer) {
            return Err(EngineError::UnknownCustomer(customer.clone()));
        }
        let sub = self
            .state
            .subscriptions
            .values()
            .find(|s| s.claim_key.as_deref() == Some(claim_key))
            .ok_or(EngineError::UnknownClaimKey)?;
        if sub.owner.is_some() {
            return Err(EngineError::AlreadyClaimed(sub.id.clone()));
        }
        let id = sub.id.clone();
        if validate {
            let mut view = self.subscription_view(&id, now)?;
            view.owner = Some(customer.clone());
            // The status it would have once claimed (not `unclaimed`).
            let mut claimed = sub.clone();
            claimed.owner = Some(customer.clone());
            view.status = claimed.status(now);
            return Ok((view, Effects::default()));
        }
        if let Some(s) = self.state.subscriptions.get_mut(&id) {
            s.owner = Some(customer.clone());
        }
        self.dirty.subscriptions.insert(id.clone());
        tracing::info!(subscription = %id, %customer, "subscription claimed");
        let effects = self.settle_all(now);
        Ok((self.subscription_view(&id, now)?, effects))
    }

    /// Enables auto-licensing of `services` for the selected customers (seed 000). Neither
    /// list = every customer, and tenants created later inherit it. With `validate`, a dry
    /// run: reports what would be paused and what is missing, changes nothing.
    pub fn enable_auto_licensing(
        &mut self,
        selection: &Selection,
        services: &[ServiceName],
        validate: bool,
        now: UnixTime,
    ) -> Result<AutoLicenseResult, EngineError> {
        let customers = self.check_request(selection, services)?;
        if validate {
            let mut dry = self.clone();
            let mut r = dry.enable_checked(selection, &customers, services, now);
            r.effects = Effects::default();
            return Ok(r);
        }
        Ok(self.enable_checked(selection, &customers, services, now))
    }

    fn enable_checked(
        &mut self,
        selection: &Selection,
        customers: &BTreeSet<TenantId>,
        services: &[ServiceName],
        now: UnixTime,
    ) -> AutoLicenseResult {
        let before: u64 = self.assigned.values().map(|&n| u64::from(n)).sum();
        for service in services {
            let p = self.state.policies.entry(service.clone()).or_default();
            p.customers.extend(customers.iter().cloned());
            if selection.is_all() {
                p.inherit_to_new_tenants = true;
            }
            self.dirty.policies.insert(service.clone());
            for (key, d) in self.state.devices.iter_mut() {
                if customers.contains(&d.tenant) && d.unassigned.remove(service) {
                    self.dirty.devices.insert(key.clone());
                }
            }
        }
        let effects = self.settle_all(now);
        let after: u64 = self.assigned.values().map(|&n| u64::from(n)).sum();
        let paused: Vec<ServiceName> = services
            .iter()
            .filter(|s| self.state.policies.get(*s).is_some_and(|p| p.paused))
            .cloned()
            .collect();
        let insufficient_entitlements =
            paused.iter().flat_map(|s| self.shortfall(s, now)).collect();
        tracing::info!(
            ?services,
            customers = customers.len(),
            ?paused,
            "auto-licensing enabled"
        );
        AutoLicenseResult {
            paused,
            insufficient_entitlements,
            seats_assigned: u32::try_from(after.saturating_sub(before)).unwrap_or(u32::MAX),
            effects,
        }
    }

    /// Removes the seats of `services` from every device of the selected customers, MSP
    /// devices included, and turns auto-licensing of those services off for them (seed 001).
    /// Neither list = every customer, and future tenants no longer inherit it.
    pub fn unassign(
        &mut self,
        selection: &Selection,
        services: &[ServiceName],
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        let customers = self.check_request(selection, services)?;
        let mut released = 0u32;
        for service in services {
            if let Some(p) = self.state.policies.get_mut(service) {
                p.customers.retain(|c| !customers.contains(c));
                if selection.is_all() {
                    p.inherit_to_new_tenants = false;
                }
                self.dirty.policies.insert(service.clone());
            }
            let keys: Vec<DeviceKey> = self
                .state
                .devices
                .iter()
                .filter(|(_, d)| customers.contains(&d.tenant))
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let had = self.release_seat(&key, service);
                if let Some(d) = self.state.devices.get_mut(&key) {
                    if had || d.services_wanted.contains(service) {
                        d.unassigned.insert(service.clone());
                        self.dirty.devices.insert(key.clone());
                    }
                }
                released += u32::from(had);
            }
        }
        tracing::info!(
            ?services,
            customers = customers.len(),
            released,
            "licenses unassigned"
        );
        Ok(self.settle_all(now))
    }

    /// Issues a fresh bundle to a device even if nothing changed (admin "re-issue").
    pub fn reissue(
        &mut self,
        tenant: &TenantId,
        device: &DeviceId,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        let key = (tenant.clone(), device.clone());
        let basis = self
            .basis(&key)
            .ok_or_else(|| EngineError::UnknownDevice(tenant.clone(), device.clone()))?;
        let bundle = self
            .issue(&key, basis, now)
            .ok_or(EngineError::SeqExhausted)?;
        Ok(Effects {
            publish: vec![bundle],
        })
    }

    /// Pins a new key for a device (after a board swap or a key reset); reports signed by the
    /// old key are refused from now on. The next bundle is bound to the new key.
    pub fn repin_device_key(
        &mut self,
        tenant: &TenantId,
        device: &DeviceId,
        key: PublicKey,
    ) -> Result<(), EngineError> {
        let k = (tenant.clone(), device.clone());
        let d = self
            .state
            .devices
            .get_mut(&k)
            .ok_or_else(|| EngineError::UnknownDevice(tenant.clone(), device.clone()))?;
        tracing::info!(%tenant, %device, old = %d.key.id(), new = %key.id(), "device key re-pinned");
        d.key = key;
        d.bundle.basis = None;
        self.dirty.devices.insert(k);
        Ok(())
    }

    fn check_request(
        &self,
        selection: &Selection,
        services: &[ServiceName],
    ) -> Result<BTreeSet<TenantId>, EngineError> {
        if services.is_empty() {
            return Err(EngineError::NoServices);
        }
        for s in services {
            if !self.state.catalog.values().any(|c| &c.service == s) {
                return Err(EngineError::UnknownService(s.clone()));
            }
        }
        selection.resolve(&self.state.customers)
    }

    /// Reconciles every auto-licensed service, then issues bundles where entitlements changed.
    pub(super) fn settle_all(&mut self, now: UnixTime) -> Effects {
        // Datacenter coverage first: a covered host needs no seat from auto-licensing.
        self.cover_datacenters(now);
        let services: Vec<ServiceName> = self.state.policies.keys().cloned().collect();
        for s in &services {
            let _ = self.reconcile(s, now);
        }
        let keys: Vec<DeviceKey> = self.state.devices.keys().cloned().collect();
        for k in &keys {
            self.update_violations(k, now);
        }
        Effects {
            publish: self.refresh_all(now),
        }
    }
}
