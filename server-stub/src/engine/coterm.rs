//! Meraki co-term licenses (seed 002, issue 21 item 1): a claimed subscription is a co-term
//! license of its owner (key = its claim key, or its id when it has none; counts per model =
//! seats per SKU), and licenses move between organizations.
//!
//! Moving `count` seats of a SKU away lowers the source license's limit and creates a new
//! license in the destination with those seats and the same term. When the source then holds
//! fewer seats than its devices use, the seats assigned last end at the move: their grants
//! carry the move time as their term end, so those devices go into grace (`term_ended`) and
//! show in compliance, until a seat frees up elsewhere or the grace runs out.

use licd_protocol::{LicenseId, Sku, TenantId, UnixTime};

use super::model::{Entitlement, Subscription};
use super::{Effects, Engine, EngineError};

/// Seats of one SKU of one license to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseMove {
    /// The license key (claim key, or subscription id).
    pub key: String,
    /// Seats per SKU.
    pub counts: Vec<(Sku, u32)>,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveResult {
    /// The source licenses after the move.
    pub remainder: Vec<LicenseId>,
    /// The new licenses of the destination.
    pub moved: Vec<LicenseId>,
    /// Devices whose seat ended with the move.
    pub ended_seats: u32,
}

impl Engine {
    /// The license `key` of organization `org`: a subscription it owns whose claim key, or
    /// else id, is `key`.
    pub fn coterm_license(&self, org: &TenantId, key: &str) -> Option<&Subscription> {
        self.state.subscriptions.values().find(|s| {
            s.owner.as_ref() == Some(org)
                && (s.claim_key.as_deref() == Some(key)
                    || (s.claim_key.is_none() && s.id.as_str() == key))
        })
    }

    /// The key a license is known by.
    pub fn coterm_key(s: &Subscription) -> &str {
        s.claim_key.as_deref().unwrap_or(s.id.as_str())
    }

    /// Moves seats of `source`'s licenses to `destination` (see the module docs). Checked
    /// as a whole before anything changes.
    pub fn move_licenses(
        &mut self,
        source: &TenantId,
        destination: &TenantId,
        moves: &[LicenseMove],
        now: UnixTime,
    ) -> Result<(MoveResult, Effects), EngineError> {
        for c in [source, destination] {
            if !self.state.customers.contains_key(c) {
                return Err(EngineError::UnknownCustomer(c.clone()));
            }
        }
        if source == destination {
            return Err(EngineError::InvalidMove(
                "the destination is the source organization".into(),
            ));
        }
        if moves.is_empty() {
            return Err(EngineError::InvalidMove("no license to move".into()));
        }
        // Check everything first: the license, its SKUs, the counts, the new ids.
        let mut plan: Vec<(LicenseId, Subscription)> = Vec::new();
        for m in moves {
            let s = self
                .coterm_license(source, &m.key)
                .ok_or_else(|| EngineError::UnknownLicenseKey(m.key.clone()))?;
            if m.counts.is_empty() {
                return Err(EngineError::InvalidMove(format!(
                    "license {}: no counts to move",
                    m.key
                )));
            }
            for (i, (sku, count)) in m.counts.iter().enumerate() {
                let have = s
                    .entitlements
                    .iter()
                    .find(|e| &e.sku == sku)
                    .map(|e| e.limit)
                    .ok_or_else(|| EngineError::NotEntitled(s.id.clone(), sku.clone()))?;
                let asked: u32 = moves
                    .iter()
                    .filter(|o| o.key == m.key)
                    .flat_map(|o| &o.counts)
                    .filter(|(k, _)| k == sku)
                    .fold(0u32, |a, (_, c)| a.saturating_add(*c));
                if *count == 0 || asked > have {
                    return Err(EngineError::InvalidMove(format!(
                        "license {}: {asked} seats of {sku} asked, it has {have}",
                        m.key
                    )));
                }
                if m.counts[..i].iter().any(|(k, _)| k == sku) {
                    return Err(EngineError::DuplicateSku(sku.clone()));
                }
            }
            // The first free `<id>-m<n>`: at most one per subscription and planned move taken.
            let taken = |id: &str| {
                self.state.subscriptions.keys().any(|k| k.as_str() == id)
                    || plan.iter().any(|(_, p)| p.id.as_str() == id)
            };
            let n = (1..=self.state.subscriptions.len() + plan.len() + 1)
                .find(|n| !taken(&format!("{}-m{n}", s.id)))
                .unwrap_or(1);
            let id = format!("{}-m{n}", s.id);
            let id = LicenseId::new(&id).map_err(|e| {
                EngineError::InvalidMove(format!("license {}: new id {id:?}: {e}", m.key))
            })?;
            let key = format!("{}-m{n}", Self::coterm_key(s));
            plan.push((
                s.id.clone(),
                Subscription {
                    id,
                    name: s.name.clone(),
                    owner: Some(destination.clone()),
                    claim_key: Some(key),
                    start: s.start,
                    end: s.end,
                    entitlements: m
                        .counts
                        .iter()
                        .map(|(sku, limit)| Entitlement {
                            sku: sku.clone(),
                            limit: *limit,
                        })
                        .collect(),
                },
            ));
        }
        for (_, new) in &plan {
            if let Some(key) = &new.claim_key {
                if let Some(other) = self
                    .state
                    .subscriptions
                    .values()
                    .find(|s| s.claim_key.as_ref() == Some(key))
                {
                    return Err(EngineError::ClaimKeyInUse(other.id.clone()));
                }
            }
        }
        let mut result = MoveResult {
            remainder: Vec::new(),
            moved: Vec::new(),
            ended_seats: 0,
        };
        for (from, new) in plan {
            if let Some(s) = self.state.subscriptions.get_mut(&from) {
                for ent in &new.entitlements {
                    if let Some(e) = s.entitlements.iter_mut().find(|e| e.sku == ent.sku) {
                        e.limit = e.limit.saturating_sub(ent.limit);
                    }
                }
            }
            self.dirty.subscriptions.insert(from.clone());
            for ent in &new.entitlements {
                result.ended_seats += self.end_seats_beyond_limit(&from, &ent.sku, now);
            }
            tracing::info!(license = %from, to = %destination, moved = %new.id, "co-term license moved");
            self.dirty.subscriptions.insert(new.id.clone());
            result.moved.push(new.id.clone());
            self.state.subscriptions.insert(new.id.clone(), new);
            if !result.remainder.contains(&from) {
                result.remainder.push(from);
            }
        }
        Ok((result, self.settle_all(now)))
    }

    /// Ends (at `now`) the seats of `sku` in `sub` beyond its limit, the ones assigned last
    /// first; how many.
    fn end_seats_beyond_limit(&mut self, sub: &LicenseId, sku: &Sku, now: UnixTime) -> u32 {
        let limit = self
            .state
            .subscriptions
            .get(sub)
            .and_then(|s| s.entitlements.iter().find(|e| &e.sku == sku))
            .map_or(0, |e| e.limit);
        let mut running: Vec<(UnixTime, super::DeviceKey, licd_protocol::ServiceName)> = self
            .state
            .devices
            .values()
            .flat_map(|d| {
                d.seats
                    .iter()
                    .filter(|(_, s)| &s.subscription == sub && &s.sku == sku && s.ends_at.is_none())
                    .map(|(svc, s)| (s.since, d.key(), svc.clone()))
            })
            .collect();
        let excess = running.len().saturating_sub(limit as usize);
        // Newest first; ties by device, so the choice does not depend on map order.
        running.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let mut ended = 0;
        for (_, key, service) in running.into_iter().take(excess) {
            if let Some(seat) = self
                .state
                .devices
                .get_mut(&key)
                .and_then(|d| d.seats.get_mut(&service))
            {
                seat.ends_at = Some(now);
                self.dirty.devices.insert(key.clone());
                tracing::info!(tenant = %key.0, device = %key.1, %service, license = %sub, "seat ends: its license moved away");
                ended += 1;
            }
        }
        ended
    }
}
