//! Floating seats at a site (issue 23): what a site issuer (relay) grants, within the pools of
//! its delegation. Pure: reports and time in, bundles out; the shell signs and publishes them
//! and persists [`Pools`] before it does.
//!
//! The rule is first come, first served, per service: a device gets a seat while fewer devices
//! than the pool's size **occupy** one. A seat is occupied until the end of the last lease the
//! relay gave for it **plus the grace** that lease carried — the last moment the device may
//! still run the service on a bundle it holds, even if it never hears from the relay again. So
//! a device that goes away frees its seat when its lease and grace have run out, a waiting
//! device gets it at its next report, and at no instant can more devices run a service than its
//! pool holds. A lease never outlives the delegation and is never longer than its `max_lease`,
//! so every bundle stays within what devices check (docs/PROTOCOL.md §18.3).

use std::collections::BTreeMap;

use licd_protocol::limits::MAX_SERVICES;
use licd_protocol::{
    Constraints, DeviceId, DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceGrant,
    ServiceName, Sku, UnixTime, Withheld, WithheldReason,
};
use serde::{Deserialize, Serialize};

/// How a relay leases seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    /// Lease length (capped at the delegation's `max_lease` and its end).
    pub lease_secs: u64,
    /// Grace each grant carries; the seat stays occupied for it after the lease.
    pub grace_secs: u64,
}

/// Why a report gets no bundle from the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRefused {
    /// The report's tenant is not the delegation's.
    #[error("tenant {0} is not the tenant this site issuer is delegated for")]
    OtherTenant(String),
    /// The device's pinned key differs.
    #[error("report signed by key {got}, but key {pinned} is pinned for this device")]
    KeyMismatch {
        /// Pinned key id.
        pinned: String,
        /// Key id of the report.
        got: String,
    },
    /// The delegation has not begun or has ended: the relay grants nothing.
    #[error("the delegation is not valid at {now} (window {not_before}..{not_after})")]
    OutsideDelegation {
        /// Evaluation time.
        now: UnixTime,
        /// Start of the delegation.
        not_before: UnixTime,
        /// End of the delegation.
        not_after: UnixTime,
    },
    /// The device's seq cannot go higher.
    #[error("bundle seq exhausted")]
    SeqExhausted,
}

/// A device the relay has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteDevice {
    /// Key pinned at first contact.
    pub key: PublicKey,
    /// Last seq issued (never goes backwards).
    pub seq: u64,
    /// Per service: the seat is occupied until then (lease end + grace of the last grant).
    pub occupied: BTreeMap<ServiceName, UnixTime>,
    /// Last report.
    pub last_report: UnixTime,
}

/// The relay's state: the delegation's window and pools, and every device's seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pools {
    constraints: Constraints,
    not_before: UnixTime,
    not_after: UnixTime,
    terms: LeaseTerms,
    devices: BTreeMap<DeviceId, SiteDevice>,
    /// Leases issued and not yet acknowledged by the controller (a seats file written before
    /// the uplink existed reads as an empty outbox).
    #[serde(default)]
    outbox: Outbox,
}

/// What the relay issued and the controller has not acknowledged, saved with the seats (one
/// atomic, fsynced file: a lease is never issued without being recorded). One entry per
/// device and service — the newest lease, which is what the controller's ledger needs — so
/// it stays as small as the site however long the uplink is down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// The last number given (numbers start at 1: an acknowledgement "through 0" covers
    /// nothing).
    next: u64,
    /// Unacknowledged leases, oldest number first.
    pending: Vec<licd_protocol::IssuedLease>,
}

/// The license id and SKU a relay's grants name (the controller's ledger knows the delegation
/// by the relay's key id; devices only show these).
const LICENSE: &str = "site-delegation";
const SKU: &str = "site-pool";

impl Pools {
    /// Empty pools for a delegation valid in `[not_before, not_after)`.
    pub fn new(
        constraints: Constraints,
        not_before: UnixTime,
        not_after: UnixTime,
        terms: LeaseTerms,
    ) -> Self {
        Self {
            constraints,
            not_before,
            not_after,
            terms,
            devices: BTreeMap::new(),
            outbox: Outbox::default(),
        }
    }

    /// Whether `other` was made for the same delegation (constraints and window).
    pub fn same_delegation(&self, other: &Pools) -> bool {
        self.constraints == other.constraints
            && self.not_before == other.not_before
            && self.not_after == other.not_after
    }

    /// Fresh pools of a new delegation that keep what `old` knew of the same tenant's devices:
    /// pinned keys, seqs, and seats still occupied (a device keeps running on a lease of the
    /// old delegation until it ends, so its seat counts against the new pools too). Nothing is
    /// kept from another tenant's pools.
    pub fn continuing(mut self, old: Pools) -> Self {
        if old.constraints.tenant == self.constraints.tenant {
            self.devices = old.devices;
            // Leases issued under the old delegation are still to be reported.
            self.outbox = old.outbox;
        }
        self
    }

    /// Records the leases of `bundle` (just issued) for the controller: each replaces the
    /// pending one of the same device and service, numbered anew.
    pub fn record_issued(&mut self, bundle: &GrantBundle) {
        for g in &bundle.grants {
            let o = &mut self.outbox;
            o.pending
                .retain(|l| !(l.device == bundle.device && l.service == g.service));
            o.next = o.next.saturating_add(1);
            o.pending.push(licd_protocol::IssuedLease {
                n: o.next,
                device: bundle.device.clone(),
                service: g.service.clone(),
                bundle_seq: bundle.seq,
                issued_at: bundle.issued_at,
                lease_until: g.lease_until,
            });
        }
    }

    /// The oldest unacknowledged leases, at most `max`.
    pub fn unacknowledged(&self, max: usize) -> &[licd_protocol::IssuedLease] {
        let o = &self.outbox.pending;
        &o[..o.len().min(max)]
    }

    /// Forgets the leases numbered up to `through` (the controller stored them). Returns
    /// whether anything was forgotten.
    pub fn acknowledge(&mut self, through: u64) -> bool {
        let before = self.outbox.pending.len();
        self.outbox.pending.retain(|l| l.n > through);
        self.outbox.pending.len() != before
    }

    /// These seats under new lease terms (the relay's options may change across restarts;
    /// what is occupied stays occupied until it ends).
    pub fn with_terms(mut self, terms: LeaseTerms) -> Self {
        self.terms = terms;
        self
    }

    /// The delegation's constraints.
    pub fn constraints(&self) -> &Constraints {
        &self.constraints
    }

    /// The devices seen.
    pub fn devices(&self) -> &BTreeMap<DeviceId, SiteDevice> {
        &self.devices
    }

    /// Devices occupying a seat of `service` at `now`.
    pub fn occupied(&self, service: &ServiceName, now: UnixTime) -> u32 {
        let n = self
            .devices
            .values()
            .filter(|d| d.occupied.get(service).is_some_and(|until| *until > now))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Answers a verified report: pins the key on first contact, renews the seats the device
    /// occupies, gives it free seats for the other services it wants, and issues its next
    /// bundle (always: a relay's leases are short, every report renews them).
    pub fn handle_report(
        &mut self,
        report: &DeviceReport,
        now: UnixTime,
    ) -> Result<GrantBundle, RelayRefused> {
        if report.tenant != self.constraints.tenant {
            return Err(RelayRefused::OtherTenant(report.tenant.to_string()));
        }
        if now < self.not_before || now >= self.not_after {
            return Err(RelayRefused::OutsideDelegation {
                now,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        if let Some(d) = self.devices.get(&report.device) {
            if d.key != report.device_key {
                return Err(RelayRefused::KeyMismatch {
                    pinned: d.key.id().to_string(),
                    got: report.device_key.id().to_string(),
                });
            }
        }
        let held = self.devices.get(&report.device).map_or(0, |d| d.seq);
        let seq = held
            .max(report.bundle_seq)
            .checked_add(1)
            .ok_or(RelayRefused::SeqExhausted)?;

        let lease = self.terms.lease_secs.min(self.constraints.max_lease).max(1);
        let lease_until = now.saturating_add(lease).min(self.not_after);
        let grace = self.terms.grace_secs;
        let mut grants = Vec::new();
        let mut withheld = Vec::new();
        for service in report.services_wanted.iter().take(MAX_SERVICES) {
            let Some(pool) = self.constraints.pool(service) else {
                withheld.push(Withheld {
                    service: service.clone(),
                    reason: WithheldReason::NotEntitled,
                });
                continue;
            };
            let holds = self
                .devices
                .get(&report.device)
                .and_then(|d| d.occupied.get(service))
                .is_some_and(|until| *until > now);
            if !holds && self.occupied(service, now) >= pool.seats {
                withheld.push(Withheld {
                    service: service.clone(),
                    reason: WithheldReason::SeatsExhausted,
                });
                continue;
            }
            grants.push(service.clone());
        }

        let d = self
            .devices
            .entry(report.device.clone())
            .or_insert_with(|| {
                tracing::info!(device = %report.device, key = %report.device_key.id(), "relay: new device, key pinned");
                SiteDevice {
                    key: report.device_key,
                    seq: 0,
                    occupied: BTreeMap::new(),
                    last_report: now,
                }
            });
        d.seq = seq;
        d.last_report = now;
        // Seats of services no longer granted stay occupied until their last lease and grace
        // end: the device may still run them on the bundle it holds.
        d.occupied.retain(|_, until| *until > now);
        let occupied_until = lease_until.saturating_add(grace);
        for service in &grants {
            let until = d.occupied.entry(service.clone()).or_insert(0);
            *until = (*until).max(occupied_until);
        }
        let (license, sku) = ids();
        Ok(GrantBundle {
            device: report.device.clone(),
            device_key: report.device_key.id(),
            tenant: report.tenant.clone(),
            seq,
            issued_at: now,
            refresh_after: now.saturating_add(lease / 2).min(lease_until),
            grants: grants
                .into_iter()
                .map(|service| ServiceGrant {
                    service,
                    license: license.clone(),
                    sku: sku.clone(),
                    not_before: self.not_before,
                    not_after: self.not_after,
                    lease_until,
                    grace,
                    vm_allowance: None,
                })
                .collect(),
            withheld,
        })
    }

    /// Forgets occupations that ended before `now` (the state file stays small).
    pub fn prune(&mut self, now: UnixTime) {
        for d in self.devices.values_mut() {
            d.occupied.retain(|_, until| *until > now);
        }
    }
}

fn ids() -> (LicenseId, Sku) {
    // Constant, valid identifiers.
    (
        LicenseId::new(LICENSE).unwrap_or_else(|_| unreachable!("valid license id")),
        Sku::new(SKU).unwrap_or_else(|_| unreachable!("valid sku")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use licd_protocol::{SeatPool, SiteId, TenantId};
    use proptest::prelude::*;

    const T0: UnixTime = 1_800_000_000;
    const LEASE: u64 = 3_600;
    const GRACE: u64 = 300;

    fn pools(seats: u32) -> Pools {
        Pools::new(
            Constraints {
                tenant: TenantId::new("acme").unwrap(),
                site: SiteId::new("plant-7").unwrap(),
                max_lease: 2 * LEASE,
                pools: vec![SeatPool {
                    service: ServiceName::new("wifi-ap").unwrap(),
                    seats,
                }],
            },
            T0 - 60,
            T0 + 30 * 86_400,
            LeaseTerms {
                lease_secs: LEASE,
                grace_secs: GRACE,
            },
        )
    }

    fn report(n: u8, seq: u64, wanted: &[&str]) -> DeviceReport {
        let key = SigningKey::from_bytes(&[n.wrapping_add(1); 32]);
        DeviceReport {
            device: DeviceId::new(format!("ap-{n}")).unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            device_key: PublicKey::from(&key.verifying_key()),
            model: "AP".into(),
            serial: "S".into(),
            product_class: "wireless".into(),
            firmware_version: "1".into(),
            agent_version: "1".into(),
            vm_count: None,
            services_wanted: wanted
                .iter()
                .map(|s| ServiceName::new(*s).unwrap())
                .collect(),
            bundle_seq: seq,
            clock: T0,
            uptime: 1,
            clock_rollback: false,
        }
    }

    fn granted(b: &GrantBundle) -> bool {
        !b.grants.is_empty()
    }

    #[test]
    fn eight_devices_on_five_seats_five_are_licensed_and_a_lapsed_seat_floats() {
        let mut p = pools(5);
        let mut got = 0;
        for n in 0..8 {
            if granted(&p.handle_report(&report(n, 0, &["wifi-ap"]), T0).unwrap()) {
                got += 1;
            }
        }
        assert_eq!(got, 5);
        // Devices 0-3 renew; device 4 went away. Until its lease and grace end, nobody
        // waiting gets its seat.
        for n in 0..4 {
            assert!(granted(
                &p.handle_report(&report(n, 1, &["wifi-ap"]), T0 + LEASE / 2)
                    .unwrap()
            ));
        }
        let b = p
            .handle_report(&report(5, 0, &["wifi-ap"]), T0 + LEASE + GRACE - 1)
            .unwrap();
        assert_eq!(b.withheld[0].reason, WithheldReason::SeatsExhausted);
        let b = p
            .handle_report(&report(5, 0, &["wifi-ap"]), T0 + LEASE + GRACE)
            .unwrap();
        assert!(granted(&b), "the lapsed seat floats to a waiting device");
        assert_eq!(
            b.seq, 3,
            "seq continues above what the relay issued (1: withheld at T0, 2: withheld again)"
        );
    }

    #[test]
    fn a_lease_stays_within_the_delegation_and_a_service_outside_it_is_not_entitled() {
        let mut p = pools(1);
        let end = T0 + 30 * 86_400;
        let b = p
            .handle_report(&report(0, 0, &["wifi-ap", "poe"]), end - 10)
            .unwrap();
        assert_eq!(b.grants[0].lease_until, end);
        assert_eq!(b.withheld[0].reason, WithheldReason::NotEntitled);
        assert!(matches!(
            p.handle_report(&report(0, 1, &["wifi-ap"]), end),
            Err(RelayRefused::OutsideDelegation { .. })
        ));
    }

    #[test]
    fn another_tenant_or_another_key_gets_nothing() {
        let mut p = pools(1);
        let mut other = report(0, 0, &["wifi-ap"]);
        other.tenant = TenantId::new("other").unwrap();
        assert!(matches!(
            p.handle_report(&other, T0),
            Err(RelayRefused::OtherTenant(_))
        ));
        p.handle_report(&report(0, 0, &["wifi-ap"]), T0).unwrap();
        let mut imposter = report(0, 0, &["wifi-ap"]);
        imposter.device_key = report(9, 0, &[]).device_key;
        assert!(matches!(
            p.handle_report(&imposter, T0),
            Err(RelayRefused::KeyMismatch { .. })
        ));
    }

    #[test]
    fn a_new_delegation_keeps_the_seats_still_occupied_under_the_old_one() {
        let mut old = pools(2);
        for n in 0..2 {
            old.handle_report(&report(n, 0, &["wifi-ap"]), T0).unwrap();
        }
        // A renewed delegation (another window) for the same tenant and site.
        let renewed = Pools::new(
            old.constraints().clone(),
            T0,
            T0 + 60 * 86_400,
            LeaseTerms {
                lease_secs: LEASE,
                grace_secs: GRACE,
            },
        );
        assert!(!renewed.same_delegation(&old));
        let mut p = renewed.continuing(old);
        let wifi = ServiceName::new("wifi-ap").unwrap();
        assert_eq!(p.occupied(&wifi, T0 + 1), 2);
        let b = p
            .handle_report(&report(2, 0, &["wifi-ap"]), T0 + 1)
            .unwrap();
        assert_eq!(b.withheld[0].reason, WithheldReason::SeatsExhausted);
        let b = p
            .handle_report(&report(0, 1, &["wifi-ap"]), T0 + 2)
            .unwrap();
        assert!(granted(&b), "a device holding a seat renews it");
        assert_eq!(b.seq, 2, "its seq continues");
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// Device `n` reports, wanting the service or not, `dt` seconds after the last event.
        Report { n: u8, wants: bool, dt: u64 },
    }

    fn event() -> impl Strategy<Value = Event> {
        (0u8..8, any::<bool>(), 0u64..2 * LEASE).prop_map(|(n, wants, dt)| Event::Report {
            n,
            wants,
            dt,
        })
    }

    proptest! {
        /// Whatever devices report when — wanting the service or dropping it, renewing or going
        /// silent — at no instant can more devices run the service than the pool holds, even
        /// counting that a device may never receive a later bundle and runs on any bundle it was
        /// ever given until that bundle's lease and grace end.
        #[test]
        fn no_instant_has_more_devices_able_to_run_than_seats(
            seats in 1u32..4,
            events in proptest::collection::vec(event(), 1..60),
        ) {
            let mut p = pools(seats);
            let mut now = T0;
            // Per device: every interval [issued_at, lease_until + grace) it could run in.
            let mut runnable: Vec<(u8, UnixTime, UnixTime)> = Vec::new();
            let mut seqs = [0u64; 8];
            for Event::Report { n, wants, dt } in events {
                now += dt;
                let wanted: &[&str] = if wants { &["wifi-ap"] } else { &[] };
                let b = p.handle_report(&report(n, seqs[n as usize], wanted), now).unwrap();
                prop_assert!(b.seq > seqs[n as usize]);
                seqs[n as usize] = b.seq;
                for g in &b.grants {
                    prop_assert!(g.lease_until <= b.issued_at + 2 * LEASE);
                    runnable.push((n, b.issued_at, g.lease_until + g.grace));
                }
            }
            let mut instants: Vec<UnixTime> = runnable.iter().map(|r| r.1).collect();
            instants.sort_unstable();
            for t in instants {
                let mut running: Vec<u8> = runnable
                    .iter()
                    .filter(|(_, from, until)| *from <= t && t < *until)
                    .map(|(n, _, _)| *n)
                    .collect();
                running.sort_unstable();
                running.dedup();
                prop_assert!(
                    running.len() <= seats as usize,
                    "{} devices could run at {t} on {seats} seats", running.len()
                );
            }
        }
    }
}

#[cfg(test)]
mod outbox_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use licd_protocol::{SeatPool, SiteId, TenantId};

    fn bundle(device: &str, seq: u64, at: UnixTime) -> GrantBundle {
        GrantBundle {
            device: DeviceId::new(device).unwrap(),
            device_key: licd_protocol::KeyId([0; 16]),
            tenant: TenantId::new("acme").unwrap(),
            seq,
            issued_at: at,
            refresh_after: at + 30,
            grants: vec![ServiceGrant {
                service: ServiceName::new("wifi").unwrap(),
                license: ids().0,
                sku: ids().1,
                not_before: 0,
                not_after: at + 1000,
                lease_until: at + 60,
                grace: 0,
                vm_allowance: None,
            }],
            withheld: vec![],
        }
    }

    #[test]
    fn the_outbox_keeps_the_newest_lease_per_device_until_acknowledged_and_survives_a_renewal() {
        let c = Constraints {
            tenant: TenantId::new("acme").unwrap(),
            site: SiteId::new("plant-7").unwrap(),
            max_lease: 600,
            pools: vec![SeatPool {
                service: ServiceName::new("wifi").unwrap(),
                seats: 2,
            }],
        };
        let terms = LeaseTerms {
            lease_secs: 60,
            grace_secs: 0,
        };
        let mut p = Pools::new(c.clone(), 0, 10_000, terms);
        p.record_issued(&bundle("ap-1", 1, 100));
        p.record_issued(&bundle("ap-2", 1, 101));
        p.record_issued(&bundle("ap-1", 2, 130));
        let n: Vec<(u64, &str, u64)> = p
            .unacknowledged(10)
            .iter()
            .map(|l| (l.n, l.device.as_str(), l.bundle_seq))
            .collect();
        assert_eq!(
            n,
            [(2, "ap-2", 1), (3, "ap-1", 2)],
            "newest per device, numbered anew"
        );
        assert_eq!(p.unacknowledged(1).len(), 1);
        // The seats file round-trips the outbox; one written before it reads as empty.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pools>(&json).unwrap(), p);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_object_mut().unwrap().remove("outbox");
        let old: Pools = serde_json::from_value(v).unwrap();
        assert!(old.unacknowledged(10).is_empty());
        // A renewal carries it; an acknowledgement drops what it covers, once.
        let mut renewed = Pools::new(c, 5_000, 20_000, terms).continuing(p);
        assert!(!renewed.acknowledge(1), "lease 1 was superseded already");
        assert!(renewed.acknowledge(2));
        assert!(!renewed.acknowledge(2));
        assert_eq!(renewed.unacknowledged(10)[0].n, 3);
        renewed.record_issued(&bundle("ap-3", 1, 6_000));
        assert_eq!(renewed.unacknowledged(10).last().unwrap().n, 4);
    }
}
