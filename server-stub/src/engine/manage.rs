//! Operator operations the admin API adds to [`ops`](super::ops): renaming and removing
//! customers, binding customers to a subscription (Meraki bind, with its `validate` dry run
//! listing `insufficientEntitlements`), and changing a subscription's seat limit (the update
//! of the admin API's Snow-style bulk update). Each checks everything before it changes
//! anything, like the rest of the engine.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::{LicenseId, Sku, TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use super::model::SubscriptionStatus;
use super::{Effects, Engine, EngineError};

/// Seats of one SKU (Meraki `insufficientEntitlements` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuQuantity {
    /// SKU.
    pub sku: Sku,
    /// Seats.
    pub quantity: u32,
}

/// Result of binding customers to a subscription (or of its `validate` dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindResult {
    /// The subscription.
    pub subscription: LicenseId,
    /// Every customer bound to it after the call (for a dry run: as it would be).
    pub customers: Vec<TenantId>,
    /// Licensing problems, in words (empty = none).
    pub errors: Vec<String>,
    /// Seats missing for the bound customers' devices that want what the subscription
    /// licenses and hold no seat.
    pub insufficient_entitlements: Vec<SkuQuantity>,
}

impl Engine {
    /// Renames a customer.
    pub fn rename_customer(&mut self, id: &TenantId, name: String) -> Result<(), EngineError> {
        let c = self
            .state
            .customers
            .get_mut(id)
            .ok_or_else(|| EngineError::UnknownCustomer(id.clone()))?;
        c.name = name;
        self.dirty.customers.insert(id.clone());
        Ok(())
    }

    /// Removes a customer that owns no subscription and has no device; it leaves every
    /// auto-licensing policy and binding.
    pub fn remove_customer(&mut self, id: &TenantId) -> Result<(), EngineError> {
        if !self.state.customers.contains_key(id) {
            return Err(EngineError::UnknownCustomer(id.clone()));
        }
        let owned = self
            .state
            .subscriptions
            .values()
            .filter(|s| s.owner.as_ref() == Some(id))
            .count();
        if owned > 0 {
            return Err(EngineError::CustomerInUse(
                id.clone(),
                format!("it owns {owned} subscription(s)"),
            ));
        }
        let devices = self.state.devices.keys().filter(|(t, _)| t == id).count();
        if devices > 0 {
            return Err(EngineError::CustomerInUse(
                id.clone(),
                format!("it has {devices} device(s)"),
            ));
        }
        self.state.customers.remove(id);
        self.dirty.customers.insert(id.clone());
        for (service, p) in self.state.policies.iter_mut() {
            if p.customers.remove(id) {
                self.dirty.policies.insert(service.clone());
            }
        }
        for (sub, b) in self.state.bindings.iter_mut() {
            if b.remove(id) {
                self.dirty.subscriptions.insert(sub.clone());
            }
        }
        self.state.bindings.retain(|_, b| !b.is_empty());
        tracing::info!(customer = %id, "customer removed");
        Ok(())
    }

    /// Customers bound to `sub`.
    pub fn bound_customers(&self, sub: &LicenseId) -> Vec<TenantId> {
        self.state
            .bindings
            .get(sub)
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Binds `customers` to subscription `sub` (Meraki bind): their devices may use its seats
    /// after their own subscriptions'. With `validate`, a dry run: reports the problems and the
    /// seats missing, changes nothing. Without it the binding is made even when seats are
    /// missing (the pause rule of auto-licensing decides who gets one).
    pub fn bind_customers(
        &mut self,
        sub: &LicenseId,
        customers: &[TenantId],
        validate: bool,
        now: UnixTime,
    ) -> Result<(BindResult, Effects), EngineError> {
        let s = self
            .state
            .subscriptions
            .get(sub)
            .ok_or_else(|| EngineError::UnknownSubscription(sub.clone()))?;
        if customers.is_empty() {
            return Err(EngineError::NoCustomers);
        }
        for c in customers {
            if !self.state.customers.contains_key(c) {
                return Err(EngineError::UnknownCustomer(c.clone()));
            }
        }
        if s.owner.is_none() {
            return Err(EngineError::Unclaimed(sub.clone()));
        }
        let mut errors = Vec::new();
        match s.status(now) {
            SubscriptionStatus::Expired => errors.push(format!("subscription {sub} has expired")),
            SubscriptionStatus::Inactive => {
                errors.push(format!("subscription {sub} has not started yet"))
            }
            SubscriptionStatus::Active | SubscriptionStatus::Unclaimed => {}
        }
        let selected: BTreeSet<&TenantId> = customers.iter().collect();
        let mut need: BTreeMap<Sku, u32> = BTreeMap::new();
        for e in &s.entitlements {
            let Some(cat) = self.state.catalog.get(&e.sku) else {
                continue;
            };
            let n = self
                .state
                .devices
                .values()
                .filter(|d| {
                    selected.contains(&d.tenant)
                        && d.product_class == cat.product_class
                        && d.services_wanted.contains(&cat.service)
                        && !self.has_valid_seat(d, &cat.service, now)
                })
                .count();
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let free = e.limit.saturating_sub(self.used_seats(sub, &e.sku, now));
            if n > free {
                let need = need.entry(e.sku.clone()).or_default();
                *need = need.saturating_add(n - free);
            }
        }
        if !need.is_empty() {
            errors.push("Insufficient licenses".to_string());
        }
        let mut bound: BTreeSet<TenantId> =
            self.state.bindings.get(sub).cloned().unwrap_or_default();
        // The owner always uses its own subscription; binding it changes nothing.
        let owner = s.owner.clone();
        bound.extend(
            customers
                .iter()
                .filter(|c| Some(*c) != owner.as_ref())
                .cloned(),
        );
        let result = BindResult {
            subscription: sub.clone(),
            customers: bound.iter().cloned().collect(),
            errors,
            insufficient_entitlements: need
                .into_iter()
                .map(|(sku, quantity)| SkuQuantity { sku, quantity })
                .collect(),
        };
        if validate {
            return Ok((result, Effects::default()));
        }
        if !bound.is_empty() {
            self.state.bindings.insert(sub.clone(), bound);
        }
        self.dirty.subscriptions.insert(sub.clone());
        tracing::info!(subscription = %sub, customers = ?customers, "customers bound to subscription");
        let effects = self.settle_all(now);
        Ok((result, effects))
    }

    /// Sets the seat limit of `sku` in subscription `sub`. Refused below the seats already
    /// assigned (it would take running devices' licenses away); raising it may lift a pause.
    pub fn set_seat_limit(
        &mut self,
        sub: &LicenseId,
        sku: &Sku,
        limit: u32,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        if limit > super::MAX_SEATS {
            return Err(EngineError::TooManySeats {
                sku: sku.clone(),
                limit,
            });
        }
        // Seats reserved by site delegations cannot be taken back by lowering the limit either.
        let assigned = self.used_seats(sub, sku, now);
        let s = self
            .state
            .subscriptions
            .get_mut(sub)
            .ok_or_else(|| EngineError::UnknownSubscription(sub.clone()))?;
        let e = s
            .entitlements
            .iter_mut()
            .find(|e| &e.sku == sku)
            .ok_or_else(|| EngineError::NotEntitled(sub.clone(), sku.clone()))?;
        if limit < assigned {
            return Err(EngineError::SeatsInUse {
                sku: sku.clone(),
                assigned,
                limit,
            });
        }
        e.limit = limit;
        self.dirty.subscriptions.insert(sub.clone());
        tracing::info!(subscription = %sub, %sku, limit, "seat limit changed");
        Ok(self.settle_all(now))
    }
}
