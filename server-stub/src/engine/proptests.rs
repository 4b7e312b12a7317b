//! Property tests of the engine's invariants over random operation sequences: seats never
//! exceed limits, one seat per service per device, `seq` never goes backwards, unassign then
//! auto-license converges, and a report under a foreign key is refused without effect.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::ServiceName;
use proptest::prelude::*;

use super::tests::{add_sub, fixture, key_of, report, svc, t, T0};
use super::*;

const TENANTS: [&str; 4] = ["msp", "a", "b", "zz"];

#[derive(Debug, Clone)]
enum Op {
    Report {
        tenant: usize,
        device: u8,
        server: bool,
        wifi: bool,
        hv: bool,
        vms: Option<u32>,
    },
    AddSub {
        owner: usize,
        hv: bool,
        seats: u32,
    },
    Enable {
        sel: u8,
        hv: bool,
    },
    Unassign {
        sel: u8,
        hv: bool,
    },
    AddTenant,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, 0..6u8, any::<bool>(), any::<bool>(), any::<bool>(), proptest::option::of(0..12u32))
            .prop_map(|(tenant, device, server, wifi, hv, vms)| Op::Report { tenant, device, server, wifi, hv, vms }),
        2 => (0..3usize, any::<bool>(), 0..4u32).prop_map(|(owner, hv, seats)| Op::AddSub { owner, hv, seats }),
        2 => (0..4u8, any::<bool>()).prop_map(|(sel, hv)| Op::Enable { sel, hv }),
        1 => (0..4u8, any::<bool>()).prop_map(|(sel, hv)| Op::Unassign { sel, hv }),
        1 => Just(Op::AddTenant),
        1 => (0..(400 * DAY)).prop_map(Op::Advance),
    ]
}

fn selection(sel: u8) -> Selection {
    match sel {
        0 => Selection::all(),
        1 => Selection::only([t("a")]),
        2 => Selection::all_except([t("a")]),
        _ => Selection::only([t("msp"), t("b")]),
    }
}

fn service(hv: bool) -> ServiceName {
    svc(if hv { "hv" } else { "wifi" })
}

/// Applies `op`, returning the bundles it produced (errors are fine: refused ops change
/// nothing).
fn apply(
    e: &mut Engine,
    op: &Op,
    now: &mut u64,
    subs: &mut u32,
    tenants: &mut u32,
) -> Vec<GrantBundle> {
    match op {
        Op::Report {
            tenant,
            device,
            server,
            wifi,
            hv,
            vms,
        } => {
            let mut services = Vec::new();
            if *wifi {
                services.push("wifi");
            }
            if *hv {
                services.push("hv");
            }
            let class = if *server { "server" } else { "ap" };
            let id = format!("d{device}");
            let mut r = report(TENANTS[*tenant], &id, class, &services);
            r.device_key = key_of(*device + 1);
            r.vm_count = *vms;
            e.handle_report(&r, *now)
                .map(|f| f.publish)
                .unwrap_or_default()
        }
        Op::AddSub { owner, hv, seats } => {
            *subs += 1;
            let sku = if *hv { "LIC-HV-4" } else { "LIC-AP" };
            add_sub(e, &format!("P{subs}"), TENANTS[*owner], sku, *seats).publish
        }
        Op::Enable { sel, hv } => e
            .enable_auto_licensing(&selection(*sel), &[service(*hv)], false, *now)
            .map(|r| r.effects.publish)
            .unwrap_or_default(),
        Op::Unassign { sel, hv } => e
            .unassign(&selection(*sel), &[service(*hv)], *now)
            .map(|f| f.publish)
            .unwrap_or_default(),
        Op::AddTenant => {
            *tenants += 1;
            e.add_customer(
                t(&format!("new{tenants}")),
                "new",
                CustomerKind::Tenant,
                *now,
            )
            .map(|f| f.publish)
            .unwrap_or_default()
        }
        Op::Advance(s) => {
            *now += s;
            Vec::new()
        }
    }
}

fn check_seats(e: &Engine) -> Result<(), TestCaseError> {
    let mut counted: BTreeMap<(licd_protocol::LicenseId, licd_protocol::Sku), u32> =
        BTreeMap::new();
    for d in e.state().devices.values() {
        for (service, seat) in &d.seats {
            let cat = &e.state().catalog[&seat.sku];
            prop_assert_eq!(
                &cat.service,
                service,
                "a seat licenses the service it is held for"
            );
            *counted
                .entry((seat.subscription.clone(), seat.sku.clone()))
                .or_default() += 1;
        }
    }
    for s in e.state().subscriptions.values() {
        for ent in &s.entitlements {
            let n = counted
                .get(&(s.id.clone(), ent.sku.clone()))
                .copied()
                .unwrap_or(0);
            prop_assert!(
                n <= ent.limit,
                "{} seats of {} assigned, limit {}",
                n,
                ent.sku,
                ent.limit
            );
            prop_assert_eq!(n, e.assigned_seats(&s.id, &ent.sku));
        }
    }
    Ok(())
}

fn assignments(e: &Engine) -> BTreeSet<(DeviceKey, ServiceName)> {
    e.state()
        .devices
        .iter()
        .flat_map(|(k, d)| d.seats.keys().map(move |s| (k.clone(), s.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_any_sequence_of_operations(ops in proptest::collection::vec(op(), 1..40)) {
        let mut e = fixture();
        let (mut now, mut subs, mut tenants) = (T0, 0, 0);
        let mut last_seq: BTreeMap<(String, String), u64> = BTreeMap::new();
        for op in &ops {
            for b in apply(&mut e, op, &mut now, &mut subs, &mut tenants) {
                let k = (b.tenant.to_string(), b.device.to_string());
                let prev = last_seq.insert(k, b.seq).unwrap_or(0);
                prop_assert!(b.seq > prev, "seq went from {} to {}", prev, b.seq);
                prop_assert!(b.validate().is_ok());
            }
            check_seats(&e)?;
        }
    }

    /// A second replica that catches up after each operation — by the changed devices alone
    /// when only devices changed, else by a whole reload — holds the same state and the same
    /// seat counts as the replica that made the change.
    #[test]
    fn a_replica_catching_up_on_changed_devices_alone_matches_the_writer(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut e = fixture();
        let mut replica = Engine::from_state(e.state().clone(), e.lease_policy());
        let (mut now, mut subs, mut tenants) = (T0, 0, 0);
        for op in &ops {
            let _ = apply(&mut e, op, &mut now, &mut subs, &mut tenants);
            let dirty = e.take_dirty();
            if dirty.only_devices() {
                replica.replace_devices(
                    dirty.devices.iter().map(|k| (k.clone(), e.state().devices.get(k).cloned())),
                );
            } else {
                replica = Engine::from_state(e.state().clone(), e.lease_policy());
            }
            prop_assert_eq!(replica.state(), e.state());
            for s in e.state().subscriptions.values() {
                for ent in &s.entitlements {
                    prop_assert_eq!(
                        replica.assigned_seats(&s.id, &ent.sku),
                        e.assigned_seats(&s.id, &ent.sku)
                    );
                }
            }
            check_seats(&replica)?;
        }
    }

    #[test]
    fn unassign_then_auto_license_again_converges(
        ops in proptest::collection::vec(op(), 0..30),
        sel in 0..4u8,
        hv in any::<bool>(),
    ) {
        let mut e = fixture();
        let (mut now, mut subs, mut tenants) = (T0, 0, 0);
        for op in &ops {
            let _ = apply(&mut e, op, &mut now, &mut subs, &mut tenants);
        }
        let (sel, services) = (selection(sel), [service(hv)]);
        let _ = e.enable_auto_licensing(&sel, &services, false, now);
        let s1 = assignments(&e);
        let paused = e.state().policies.get(&services[0]).is_some_and(|p| p.paused);
        let _ = e.unassign(&sel, &services, now);
        let _ = e.enable_auto_licensing(&sel, &services, false, now);
        let s2 = assignments(&e);
        if !paused {
            // Nothing paused: one round restores exactly the same assignments.
            prop_assert_eq!(&s1, &s2);
        }
        // Paused: the unassign may free enough seats for the rest to be served (the pause
        // lifts for them), so the first round can differ — but it converges: another round
        // changes nothing.
        let _ = e.unassign(&sel, &services, now);
        let _ = e.enable_auto_licensing(&sel, &services, false, now);
        prop_assert_eq!(s2, assignments(&e));
        check_seats(&e)?;
    }

    #[test]
    fn a_report_under_a_foreign_key_is_refused_and_changes_nothing(
        ops in proptest::collection::vec(op(), 0..20),
        pick in any::<usize>(),
        evil in 100..200u8,
    ) {
        let mut e = fixture();
        let (mut now, mut subs, mut tenants) = (T0, 0, 0);
        // At least one device exists.
        let first = Op::Report { tenant: 1, device: 0, server: false, wifi: true, hv: false, vms: None };
        for op in std::iter::once(&first).chain(&ops) {
            let _ = apply(&mut e, op, &mut now, &mut subs, &mut tenants);
        }
        let keys: Vec<DeviceKey> = e.state().devices.keys().cloned().collect();
        let (tenant, id) = keys[pick % keys.len()].clone();
        let _ = e.take_dirty();
        let before = e.state().clone();
        let mut r = report(tenant.as_str(), id.as_str(), "ap", &["wifi", "hv"]);
        r.device_key = key_of(evil);
        let refused = matches!(e.handle_report(&r, now + 1), Err(ReportRefused::KeyMismatch { .. }));
        prop_assert!(refused);
        prop_assert_eq!(e.state(), &before);
        prop_assert!(e.take_dirty().is_empty());
    }
}
