//! Site delegations in the ledger (issue 23): the seats a controller hands a site relay are
//! **reserved** from the tenant's subscriptions when it delegates, so no device elsewhere can
//! take them while the delegation runs; returning or revoking it (or its window ending) gives
//! them back.
//!
//! Which subscription backs a pool follows the allocator's own order for the tenant's devices
//! (`alloc.rs`): the tenant's own subscriptions, then those it is bound to, then the MSP's; among
//! those the earliest-ending first, then by id and SKU. A subscription backs a delegation only
//! if it is active now and its term covers the delegation's whole window (a relay's seats must
//! stay good for as long as devices can be licensed under it); a pool may be spread over
//! several subscriptions. A delegation that cannot be covered in full is refused with the
//! service, the seats asked for and the seats free — nothing is reserved.
//!
//! Signing is the shell's (the controller's signing key): the engine records the signed bytes
//! it is given so the same delegation can be handed out again (admin API, MQTT, file).

use std::collections::BTreeMap;

use licd_protocol::{LicenseId, PublicKey, ServiceName, SiteId, Sku, TenantId, UnixTime};
use serde::{Deserialize, Serialize};

use super::{Effects, Engine, EngineError, SubscriptionStatus};

/// Where a delegation stands (as stored; an active one past its window is shown as expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelegationState {
    /// In force: its seats are reserved until its window ends.
    Active,
    /// Given back by the operator: seats freed; the relay key is not revoked.
    Returned,
    /// Revoked: seats freed and the relay key on the revocation list.
    Revoked,
}

impl DelegationState {
    /// The word used in the ledger and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationState::Active => "active",
            DelegationState::Returned => "returned",
            DelegationState::Revoked => "revoked",
        }
    }
}

/// Seats of one subscription's SKU reserved for a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Subscription.
    pub subscription: LicenseId,
    /// SKU (licensing the pool's service).
    pub sku: Sku,
    /// Seats reserved from it.
    pub seats: u32,
}

/// One delegated seat pool and where its seats come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedPool {
    /// The service.
    pub service: ServiceName,
    /// Seats in the pool (the sum of `reserved`).
    pub seats: u32,
    /// Reservations backing it, in the order they were chosen.
    pub reserved: Vec<Reservation>,
}

/// A delegation as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationRecord {
    /// Id (`dlg-<n>`), given by the engine.
    pub id: String,
    /// The only tenant the relay may license.
    pub tenant: TenantId,
    /// The site.
    pub site: SiteId,
    /// The relay's public key.
    pub relay_key: PublicKey,
    /// Longest lease the relay may give, seconds.
    pub max_lease: u64,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
    /// The pools.
    pub pools: Vec<DelegatedPool>,
    /// As stored.
    pub state: DelegationState,
    /// When it was made.
    pub created_at: UnixTime,
    /// When it was returned or revoked.
    pub ended_at: Option<UnixTime>,
    /// The signed delegation: a kind-12 envelope (docs/PROTOCOL.md §18.4) — what the relay
    /// takes over MQTT or as a file.
    pub signed: Vec<u8>,
}

impl DelegationRecord {
    /// The chain a relay loads as `delegation.hex` (certificate ‖ delegation), from the
    /// stored envelope; `None` if it does not open (never for what the controller stored).
    pub fn chain(&self) -> Option<Vec<u8>> {
        licd_protocol::delegation::open_delegation(&self.signed)
            .ok()
            .map(|f| f.chain())
    }

    /// Whether its seats are reserved at `now`: active and within its window.
    pub fn reserves_at(&self, now: UnixTime) -> bool {
        self.state == DelegationState::Active && now < self.not_after
    }

    /// What it is at `now`: its stored state, or `"expired"` for an active one past its window.
    pub fn state_at(&self, now: UnixTime) -> &'static str {
        if self.state == DelegationState::Active && now >= self.not_after {
            "expired"
        } else {
            self.state.as_str()
        }
    }
}

/// What an operator asks to delegate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRequest {
    /// Tenant.
    pub tenant: TenantId,
    /// Site.
    pub site: SiteId,
    /// Relay key.
    pub relay_key: PublicKey,
    /// Seats per service (services unique).
    pub pools: Vec<(ServiceName, u32)>,
    /// Only SKUs for devices of this product class, if given.
    pub product_class: Option<String>,
    /// Longest lease, seconds.
    pub max_lease: u64,
    /// Window.
    pub not_before: UnixTime,
    /// Window end (exclusive).
    pub not_after: UnixTime,
}

impl Engine {
    /// Seats of `sku` in subscription `sub` reserved by delegations at `now`.
    pub fn reserved_seats(&self, sub: &LicenseId, sku: &Sku, now: UnixTime) -> u32 {
        self.state
            .delegations
            .values()
            .filter(|d| d.reserves_at(now))
            .flat_map(|d| d.pools.iter().flat_map(|p| p.reserved.iter()))
            .filter(|r| &r.subscription == sub && &r.sku == sku)
            .fold(0u32, |n, r| n.saturating_add(r.seats))
    }

    /// Seats of `sku` in `sub` no device or delegation may take at `now`: assigned to devices
    /// plus reserved by delegations.
    pub fn used_seats(&self, sub: &LicenseId, sku: &Sku, now: UnixTime) -> u32 {
        self.assigned_seats(sub, sku)
            .saturating_add(self.reserved_seats(sub, sku, now))
    }

    /// Where the seats of `req` would come from (see the module docs), or why they cannot.
    /// Changes nothing.
    pub fn plan_delegation(
        &self,
        req: &DelegationRequest,
        now: UnixTime,
    ) -> Result<Vec<DelegatedPool>, EngineError> {
        if !self.state.customers.contains_key(&req.tenant) {
            return Err(EngineError::UnknownCustomer(req.tenant.clone()));
        }
        if req.pools.is_empty() {
            return Err(EngineError::NoServices);
        }
        let mut taken: BTreeMap<(LicenseId, Sku), u32> = BTreeMap::new();
        let mut out = Vec::with_capacity(req.pools.len());
        for (i, (service, seats)) in req.pools.iter().enumerate() {
            if req.pools[..i].iter().any(|(s, _)| s == service) {
                return Err(EngineError::InvalidDelegation(format!(
                    "service {service} is listed twice; give each service once with all its seats"
                )));
            }
            if *seats == 0 {
                return Err(EngineError::InvalidDelegation(format!(
                    "the pool of {service} has no seats"
                )));
            }
            if !self.state.catalog.values().any(|c| &c.service == service) {
                return Err(EngineError::UnknownService(service.clone()));
            }
            let mut left = *seats;
            let mut reserved = Vec::new();
            for (sub, sku, free) in self.delegation_candidates(req, service, now) {
                if left == 0 {
                    break;
                }
                let key = (sub.clone(), sku.clone());
                let free = free.saturating_sub(taken.get(&key).copied().unwrap_or(0));
                let n = free.min(left);
                if n == 0 {
                    continue;
                }
                *taken.entry(key).or_default() += n;
                left -= n;
                reserved.push(Reservation {
                    subscription: sub,
                    sku,
                    seats: n,
                });
            }
            if left > 0 {
                return Err(EngineError::NotEnoughForDelegation {
                    service: service.clone(),
                    seats: *seats,
                    free: *seats - left,
                });
            }
            out.push(DelegatedPool {
                service: service.clone(),
                seats: *seats,
                reserved,
            });
        }
        Ok(out)
    }

    /// The (subscription, SKU, free seats) that may back `service` for `req`, best first.
    fn delegation_candidates(
        &self,
        req: &DelegationRequest,
        service: &ServiceName,
        now: UnixTime,
    ) -> Vec<(LicenseId, Sku, u32)> {
        let mut out = Vec::new();
        for sub in self.state.subscriptions.values() {
            if sub.status(now) != SubscriptionStatus::Active || sub.end < req.not_after {
                continue;
            }
            let Some(rank) = self.subscription_rank(sub, &req.tenant) else {
                continue;
            };
            for ent in &sub.entitlements {
                let Some(cat) = self.state.catalog.get(&ent.sku) else {
                    continue;
                };
                if &cat.service != service
                    || req
                        .product_class
                        .as_ref()
                        .is_some_and(|pc| pc != &cat.product_class)
                {
                    continue;
                }
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

    /// Records a delegation planned by [`Engine::plan_delegation`] and signed by the shell:
    /// its seats are reserved from now on. Plans again (something may have changed since) and
    /// refuses if the seats are no longer there. Returns its id.
    pub fn add_delegation(
        &mut self,
        req: &DelegationRequest,
        signed: Vec<u8>,
        now: UnixTime,
    ) -> Result<(DelegationRecord, Effects), EngineError> {
        let pools = self.plan_delegation(req, now)?;
        let n = self
            .state
            .delegations
            .keys()
            .filter_map(|k| k.strip_prefix("dlg-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let record = DelegationRecord {
            id: format!("dlg-{n}"),
            tenant: req.tenant.clone(),
            site: req.site.clone(),
            relay_key: req.relay_key,
            max_lease: req.max_lease,
            not_before: req.not_before,
            not_after: req.not_after,
            pools,
            state: DelegationState::Active,
            created_at: now,
            ended_at: None,
            signed,
        };
        tracing::info!(
            delegation = %record.id,
            tenant = %record.tenant,
            site = %record.site,
            relay = %record.relay_key.id(),
            seats = record.pools.iter().map(|p| p.seats).sum::<u32>(),
            "seats delegated to a site relay and reserved"
        );
        self.dirty.delegations.insert(record.id.clone());
        self.state
            .delegations
            .insert(record.id.clone(), record.clone());
        Ok((record, Effects::default()))
    }

    /// Ends an active delegation (`Returned` or `Revoked`): its seats are free again, and
    /// devices waiting for them get them. `tenant`: a tenant token's scope (another tenant's
    /// delegation is answered as unknown).
    pub fn end_delegation(
        &mut self,
        id: &str,
        tenant: Option<&TenantId>,
        to: DelegationState,
        now: UnixTime,
    ) -> Result<(DelegationRecord, Effects), EngineError> {
        let d = self.delegation(id, tenant)?;
        if d.state != DelegationState::Active {
            return Err(EngineError::DelegationEnded {
                id: id.to_string(),
                state: d.state.as_str(),
            });
        }
        let relay = d.relay_key;
        // A revoked relay key is refused by every device whatever delegation it shows: every
        // active delegation to it ends with it.
        let ending: Vec<String> = self
            .state
            .delegations
            .values()
            .filter(|o| {
                o.id == id
                    || (to == DelegationState::Revoked
                        && o.relay_key == relay
                        && o.state == DelegationState::Active)
            })
            .map(|o| o.id.clone())
            .collect();
        for key in ending {
            if let Some(o) = self.state.delegations.get_mut(&key) {
                o.state = to;
                o.ended_at = Some(now);
                tracing::info!(delegation = %o.id, site = %o.site, state = to.as_str(), "delegation ended; its seats are free");
            }
            self.dirty.delegations.insert(key);
        }
        let effects = self.settle_all(now);
        let d = self.delegation(id, tenant)?.clone();
        Ok((d, effects))
    }

    /// The delegation `id` if it exists and `tenant` (a tenant token's scope) may see it.
    pub fn delegation(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
    ) -> Result<&DelegationRecord, EngineError> {
        self.state
            .delegations
            .get(id)
            .filter(|d| tenant.is_none_or(|t| t == &d.tenant))
            .ok_or_else(|| EngineError::UnknownDelegation(id.to_string()))
    }
}
