//! Table-like unit tests of the engine's rules, one behaviour per test.

use licd_protocol::{
    DeviceId, DeviceReport, LicenseId, PublicKey, ServiceName, Sku, TenantId, WithheldReason,
};

use super::*;

pub(super) const T0: u64 = 1_700_000_000;
const YEAR: u64 = 365 * DAY;

pub(super) fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
pub(super) fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}
pub(super) fn sku(s: &str) -> Sku {
    Sku::new(s).unwrap()
}
pub(super) fn lic(s: &str) -> LicenseId {
    LicenseId::new(s).unwrap()
}

/// MSP `msp`, tenants `a` and `b`; SKUs for `wifi` on class `ap` and per-VM `hv` on `server`.
pub(super) fn fixture() -> Engine {
    let mut e = Engine::new(LeasePolicy::default());
    let _ = e
        .add_customer(t("msp"), "MSP", CustomerKind::Msp, T0)
        .unwrap();
    let _ = e
        .add_customer(t("a"), "Tenant A", CustomerKind::Tenant, T0)
        .unwrap();
    let _ = e
        .add_customer(t("b"), "Tenant B", CustomerKind::Tenant, T0)
        .unwrap();
    e.add_catalog_entry(CatalogEntry {
        sku: sku("LIC-AP"),
        name: "AP foundation".into(),
        service: svc("wifi"),
        product_class: "ap".into(),
        vms_per_seat: None,
    })
    .unwrap();
    e.add_catalog_entry(CatalogEntry {
        sku: sku("LIC-HV-4"),
        name: "Hypervisor, 4 VMs".into(),
        service: svc("hv"),
        product_class: "server".into(),
        vms_per_seat: Some(4),
    })
    .unwrap();
    e
}

pub(super) fn add_sub(e: &mut Engine, id: &str, owner: &str, sku_: &str, seats: u32) -> Effects {
    e.add_subscription(
        Subscription {
            id: lic(id),
            name: id.into(),
            owner: Some(t(owner)),
            claim_key: None,
            start: T0 - DAY,
            end: T0 + YEAR,
            entitlements: vec![Entitlement {
                sku: sku(sku_),
                limit: seats,
            }],
        },
        T0,
    )
    .unwrap()
}

pub(super) fn key_of(n: u8) -> PublicKey {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
    PublicKey::from(&sk.verifying_key())
}

pub(super) fn report(tenant: &str, device: &str, class: &str, services: &[&str]) -> DeviceReport {
    DeviceReport {
        device: DeviceId::new(device).unwrap(),
        tenant: t(tenant),
        device_key: key_of(device.len() as u8 + device.as_bytes()[0]),
        model: "m".into(),
        serial: "s".into(),
        product_class: class.into(),
        firmware_version: "1".into(),
        agent_version: "0.1".into(),
        vm_count: None,
        services_wanted: services.iter().map(|s| svc(s)).collect(),
        bundle_seq: 0,
        clock: T0,
        uptime: 1,
        clock_rollback: false,
    }
}

fn granted(b: &GrantBundle) -> Vec<&str> {
    b.grants.iter().map(|g| g.service.as_str()).collect()
}

#[test]
fn a_reporting_tenant_device_gets_a_seat_when_auto_licensing_covers_it() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let r = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0)
        .unwrap();
    assert!(r.paused.is_empty());
    let fx = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    assert_eq!(fx.publish.len(), 1);
    let b = &fx.publish[0];
    assert_eq!(b.seq, 1);
    assert_eq!(granted(b), ["wifi"]);
    let g = &b.grants[0];
    assert_eq!(g.license.as_str(), "S1");
    assert_eq!(g.lease_until, T0 + 7 * DAY);
    assert_eq!(g.grace, 30 * DAY);
    assert_eq!(g.not_after, T0 + YEAR);
    assert_eq!(b.refresh_after, T0 + 7 * DAY / 2);
    assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 1);
}

#[test]
fn a_report_from_a_device_holding_the_newest_bundle_before_refresh_issues_nothing() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let mut r = report("a", "ap1", "ap", &["wifi"]);
    let first = e.handle_report(&r, T0).unwrap().publish;
    r.bundle_seq = first[0].seq;
    assert!(e.handle_report(&r, T0 + 60).unwrap().publish.is_empty());
    // Past refresh_after: a new lease with a higher seq.
    let again = e.handle_report(&r, first[0].refresh_after).unwrap().publish;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, 2);
    assert!(again[0].grants[0].lease_until > first[0].grants[0].lease_until);
}

#[test]
fn a_device_is_new_to_the_ledger_until_its_first_commit_and_known_after() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e.take_dirty();
    let r = report("a", "ap1", "ap", &["wifi"]);
    let key = (r.tenant.clone(), r.device.clone());
    let _ = e.handle_report(&r, T0).unwrap();
    let _ = e.handle_report(&r, T0 + 1).unwrap();
    let dirty = e.take_dirty();
    assert!(dirty.devices.contains(&key));
    assert!(dirty.new_devices.contains(&key), "first seen in this turn");
    // A commit that failed keeps it new (nothing of it was stored)...
    e.mark_dirty(dirty);
    assert!(e.take_dirty().new_devices.contains(&key));
    // ...and once stored it is a known device: its old rows are replaced.
    let _ = e.handle_report(&r, T0 + 2).unwrap();
    let dirty = e.take_dirty();
    assert!(dirty.devices.contains(&key));
    assert!(dirty.new_devices.is_empty());
}

#[test]
fn a_device_reporting_a_higher_seq_than_the_ledger_gets_a_bundle_above_it() {
    let mut e = fixture();
    let mut r = report("a", "ap1", "ap", &["wifi"]);
    r.bundle_seq = 41;
    let b = e.handle_report(&r, T0).unwrap().publish;
    assert_eq!(b[0].seq, 42);
}

#[test]
fn too_few_seats_pauses_the_service_instead_of_assigning_some() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 1);
    for d in ["ap1", "ap2"] {
        let _ = e
            .handle_report(&report("a", d, "ap", &["wifi"]), T0)
            .unwrap();
    }
    let r = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0)
        .unwrap();
    assert_eq!(r.paused, [svc("wifi")]);
    assert_eq!(r.seats_assigned, 0);
    assert_eq!(r.insufficient_entitlements[0].quantity, 1);
    assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 0);
    for b in &r.effects.publish {
        assert!(b.grants.is_empty());
        assert_eq!(b.withheld[0].reason, WithheldReason::SeatsExhausted);
    }
    let c = e.compliance(&t("a"), T0).unwrap();
    assert!(!c.compliant);
    assert_eq!(c.paused_services, [svc("wifi")]);
    assert_eq!(c.violations[0].product_class, "ap");
    assert_eq!(c.violations[0].missing[0].quantity, 2);
    assert_eq!(c.violations[0].grace_period_ends_at, T0 + 30 * DAY);

    // One more seat: unpaused, both devices get a seat and a new bundle.
    let fx = add_sub(&mut e, "S2", "msp", "LIC-AP", 1);
    assert_eq!(fx.publish.len(), 2);
    assert!(fx
        .publish
        .iter()
        .all(|b| granted(b) == ["wifi"] && b.seq == 3));
    assert!(e.compliance(&t("a"), T0).unwrap().compliant);
}

#[test]
fn a_tenant_created_after_an_all_customers_enable_inherits_it() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    // A device of a tenant that does not exist yet: recorded, answered with an empty bundle.
    let b = e
        .handle_report(&report("c", "ap1", "ap", &["wifi"]), T0)
        .unwrap()
        .publish;
    assert!(b[0].grants.is_empty());
    assert_eq!(b[0].withheld[0].reason, WithheldReason::UnknownTenant);
    let fx = e
        .add_customer(t("c"), "C", CustomerKind::Tenant, T0)
        .unwrap();
    assert_eq!(granted(&fx.publish[0]), ["wifi"]);
    assert_eq!(fx.publish[0].seq, 2);
}

#[test]
fn an_enable_with_an_exclude_list_is_not_inherited_and_skips_excluded() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.handle_report(&report("a", "ap1", "ap", &["wifi"]), T0);
    let _ = e.handle_report(&report("b", "ap2", "ap", &["wifi"]), T0);
    let _ = e
        .enable_auto_licensing(&Selection::all_except([t("a")]), &[svc("wifi")], false, T0)
        .unwrap();
    let va = e
        .device_view(&t("a"), &DeviceId::new("ap1").unwrap())
        .unwrap();
    let vb = e
        .device_view(&t("b"), &DeviceId::new("ap2").unwrap())
        .unwrap();
    assert!(matches!(
        va.services[&svc("wifi")],
        views::ServiceState::Withheld {
            reason: WithheldReason::NotEntitled
        }
    ));
    assert!(matches!(
        vb.services[&svc("wifi")],
        views::ServiceState::Granted { .. }
    ));
    let fx = e
        .add_customer(t("c"), "C", CustomerKind::Tenant, T0)
        .unwrap();
    assert!(fx.publish.is_empty());
    assert!(!e.state().policies[&svc("wifi")].customers.contains(&t("c")));
}

#[test]
fn naming_an_unknown_customer_or_no_service_is_refused() {
    let mut e = fixture();
    assert_eq!(
        e.enable_auto_licensing(&Selection::only([t("zz")]), &[svc("wifi")], false, T0),
        Err(EngineError::UnknownCustomer(t("zz")))
    );
    assert_eq!(
        e.unassign(&Selection::all(), &[], T0),
        Err(EngineError::NoServices)
    );
    assert_eq!(
        e.enable_auto_licensing(&Selection::all(), &[svc("nope")], false, T0),
        Err(EngineError::UnknownService(svc("nope")))
    );
    // Seed 000 defines each list alone; both together is refused, not half-applied.
    let both = Selection {
        include_customers: vec![t("a")],
        exclude_customers: vec![t("b")],
    };
    assert_eq!(
        e.enable_auto_licensing(&both, &[svc("wifi")], false, T0),
        Err(EngineError::IncludeAndExclude)
    );
    assert_eq!(
        e.unassign(&both, &[svc("wifi")], T0),
        Err(EngineError::IncludeAndExclude)
    );
    assert!(e.state().policies.is_empty());
}

/// `e` with a seat of `sub`/`sku` for `service` given to `device` of `tenant` straight in the
/// ledger's state: how an MSP device holds a seat (assigned before MSP mode, seed 001).
fn with_seat(
    e: &Engine,
    tenant: &str,
    device: &str,
    service: &str,
    sub: &str,
    sku_: &str,
) -> Engine {
    let mut st = e.state().clone();
    let d = st
        .devices
        .get_mut(&(t(tenant), DeviceId::new(device).unwrap()))
        .unwrap();
    d.seats
        .insert(svc(service), Seat::new(lic(sub), sku(sku_), T0));
    Engine::from_state(st, e.lease_policy())
}

#[test]
fn unassign_removes_seats_from_msp_devices_too_with_a_higher_seq() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e.handle_report(&report("msp", "ap0", "ap", &["wifi"]), T0);
    // Auto-licensing gives an MSP device nothing (seed 000); seed 001's case is a seat it
    // holds from before MSP mode.
    let mut e = with_seat(&e, "msp", "ap0", "wifi", "S1", "LIC-AP");
    let mut r = report("msp", "ap0", "ap", &["wifi"]);
    r.bundle_seq = 1;
    let b1 = e.handle_report(&r, T0 + 1).unwrap().publish;
    assert_eq!(granted(&b1[0]), ["wifi"]);
    let fx = e
        .unassign(&Selection::all(), &[svc("wifi")], T0 + 5)
        .unwrap();
    assert_eq!(fx.publish.len(), 1);
    let b2 = &fx.publish[0];
    assert!(b2.seq > b1[0].seq);
    assert!(b2.grants.is_empty());
    assert_eq!(b2.withheld[0].reason, WithheldReason::Unassigned);
    assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 0);
    // Not re-assigned on the next report, nor inherited by a new tenant.
    let mut r = report("msp", "ap0", "ap", &["wifi"]);
    r.bundle_seq = b2.seq;
    assert!(e.handle_report(&r, T0 + 6).unwrap().publish.is_empty());
    assert!(!e.state().policies[&svc("wifi")].inherit_to_new_tenants);
}

/// Issue 16 item 4, seed 000: "License assignment is not supported for the MSP owned devices.
/// License assignment will be in paused state if the total license tokens are less than total
/// device counts (including MSP and tenants)". Whatever the selection, the MSP's devices get
/// no seat; they do count for the pause.
#[test]
fn msp_devices_get_no_seat_from_auto_licensing_but_count_for_the_pause() {
    let msp_state = |e: &Engine| {
        e.device_view(&t("msp"), &DeviceId::new("m0").unwrap())
            .unwrap()
            .services[&svc("wifi")]
            .clone()
    };
    let not_entitled = views::ServiceState::Withheld {
        reason: WithheldReason::NotEntitled,
    };
    for sel in [
        Selection::all(),
        Selection::all_except([t("b")]),
        Selection::only([t("msp"), t("a")]),
    ] {
        for msp_first in [true, false] {
            let mut e = fixture();
            let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 2);
            let msp = report("msp", "m0", "ap", &["wifi"]);
            let tenant = report("a", "ap1", "ap", &["wifi"]);
            if msp_first {
                let _ = e.handle_report(&msp, T0).unwrap();
            }
            let r = e
                .enable_auto_licensing(&sel, &[svc("wifi")], false, T0)
                .unwrap();
            assert!(r.paused.is_empty(), "{sel:?}");
            let _ = e.handle_report(&tenant, T0).unwrap();
            if !msp_first {
                let _ = e.handle_report(&msp, T0).unwrap();
            }
            assert_eq!(msp_state(&e), not_entitled, "{sel:?}");
            assert!(e.state().devices[&(t("msp"), DeviceId::new("m0").unwrap())]
                .seats
                .is_empty());
            assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 1, "{sel:?}");
            assert!(!e.state().policies[&svc("wifi")].paused);
            // A second tenant device takes the last seat the MSP device's count leaves: the
            // total (3) is now above the seats (2), so the service pauses.
            let _ = e
                .handle_report(&report("a", "ap2", "ap", &["wifi"]), T0)
                .unwrap();
            assert!(e.state().policies[&svc("wifi")].paused, "{sel:?}");
            assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 1);
            assert_eq!(
                msp_state(&e),
                not_entitled,
                "no SeatsExhausted for the MSP's"
            );
            assert_eq!(e.shortfall(&svc("wifi"), T0)[0].quantity, 1);
            // The MSP device stops wanting wifi: 2 devices, 2 seats; the pause lifts at the
            // next report that reconciles wifi.
            let _ = e
                .handle_report(&report("msp", "m0", "ap", &[]), T0)
                .unwrap();
            let _ = e
                .handle_report(&report("a", "ap2", "ap", &["wifi"]), T0 + 1)
                .unwrap();
            assert!(!e.state().policies[&svc("wifi")].paused, "{sel:?}");
            assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 2);
        }
    }
}

#[test]
fn a_report_signed_by_another_key_than_the_pinned_one_is_refused_and_changes_nothing() {
    let mut e = fixture();
    let r = report("a", "ap1", "ap", &["wifi"]);
    let _ = e.handle_report(&r, T0).unwrap();
    let _ = e.take_dirty();
    let before = e.state().clone();
    let mut evil = r.clone();
    evil.device_key = key_of(200);
    evil.services_wanted.clear();
    assert_eq!(
        e.handle_report(&evil, T0 + 1),
        Err(ReportRefused::KeyMismatch {
            pinned: r.device_key.id(),
            got: key_of(200).id()
        })
    );
    assert_eq!(e.state(), &before);
    assert!(e.take_dirty().is_empty());
    // After an operator re-pins, the new key is accepted.
    e.repin_device_key(&t("a"), &r.device, key_of(200)).unwrap();
    let b = e.handle_report(&evil, T0 + 2).unwrap().publish;
    assert_eq!(b[0].device_key, key_of(200).id());
}

#[test]
fn a_host_over_its_vm_allowance_shows_in_compliance_and_its_grant_carries_the_allowance() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "a", "LIC-HV-4", 2);
    let _ = e.enable_auto_licensing(&Selection::only([t("a")]), &[svc("hv")], false, T0);
    let mut r = report("a", "host1", "server", &["hv"]);
    r.vm_count = Some(3);
    let b = e.handle_report(&r, T0).unwrap().publish;
    assert_eq!(b[0].grants[0].vm_allowance, Some(4));
    assert!(e.compliance(&t("a"), T0).unwrap().compliant);
    r.vm_count = Some(9);
    r.bundle_seq = b[0].seq;
    let _ = e.handle_report(&r, T0 + 10).unwrap();
    let c = e.compliance(&t("a"), T0 + 20).unwrap();
    assert!(!c.compliant);
    assert_eq!(c.vm_overuse.len(), 1);
    assert_eq!(
        (c.vm_overuse[0].vm_count, c.vm_overuse[0].allowance),
        (9, 4)
    );
    assert_eq!(c.violations[0].missing[0].quantity, 2);
    assert_eq!(c.violations[0].missing[0].sku, Some(sku("LIC-HV-4")));
    assert_eq!(c.violations[0].grace_period_ends_at, T0 + 10 + 30 * DAY);
    let v = e.device_view(&t("a"), &r.device).unwrap();
    assert!(matches!(
        v.services[&svc("hv")],
        views::ServiceState::Granted {
            over_vm_allowance: true,
            ..
        }
    ));
}

#[test]
fn claim_validate_changes_nothing_and_a_second_claim_is_refused() {
    let mut e = fixture();
    let _ = e
        .add_subscription(
            Subscription {
                id: lic("S9"),
                name: "claimable".into(),
                owner: None,
                claim_key: Some("K-1".into()),
                start: T0,
                end: T0 + YEAR,
                entitlements: vec![Entitlement {
                    sku: sku("LIC-AP"),
                    limit: 3,
                }],
            },
            T0,
        )
        .unwrap();
    let _ = e.take_dirty();
    let (view, fx) = e.claim("K-1", &t("a"), true, T0).unwrap();
    assert_eq!(view.owner, Some(t("a")));
    assert_eq!(view.seats.available, 3);
    assert!(fx.publish.is_empty());
    assert!(e.take_dirty().is_empty());
    assert_eq!(e.state().subscriptions[&lic("S9")].owner, None);
    let (view, _) = e.claim("K-1", &t("a"), false, T0).unwrap();
    assert_eq!(view.status, SubscriptionStatus::Active);
    assert_eq!(
        e.claim("K-1", &t("b"), false, T0),
        Err(EngineError::AlreadyClaimed(lic("S9")))
    );
    assert_eq!(
        e.claim("nope", &t("b"), true, T0),
        Err(EngineError::UnknownClaimKey)
    );
}

#[test]
fn enable_validate_is_a_dry_run() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 1);
    let _ = e.handle_report(&report("a", "ap1", "ap", &["wifi"]), T0);
    let _ = e.handle_report(&report("a", "ap2", "ap", &["wifi"]), T0);
    let _ = e.take_dirty();
    let before = e.state().clone();
    let r = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], true, T0)
        .unwrap();
    assert_eq!(r.paused, [svc("wifi")]);
    assert!(r.effects.publish.is_empty());
    assert_eq!(e.state(), &before);
    assert!(e.take_dirty().is_empty());
}

#[test]
fn an_expired_subscription_is_a_violation_from_its_end_and_a_new_one_renews_the_seat() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 1);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let r = report("a", "ap1", "ap", &["wifi"]);
    let _ = e.handle_report(&r, T0).unwrap();
    let later = T0 + YEAR + 10;
    let c = e.compliance(&t("a"), later).unwrap();
    assert_eq!(c.violations[0].grace_period_ends_at, T0 + YEAR + 30 * DAY);
    // A renewal subscription: the device moves to it at its next report.
    e.add_subscription(
        Subscription {
            id: lic("S2"),
            name: "renewal".into(),
            owner: Some(t("msp")),
            claim_key: None,
            start: T0 + YEAR - DAY,
            end: T0 + 2 * YEAR,
            entitlements: vec![Entitlement {
                sku: sku("LIC-AP"),
                limit: 1,
            }],
        },
        later,
    )
    .unwrap()
    .publish
    .iter()
    .for_each(|b| assert_eq!(b.grants[0].license.as_str(), "S2"));
    assert!(e.compliance(&t("a"), later).unwrap().compliant);
}

#[test]
fn seat_counts_follow_assignments() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 3);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e.handle_report(&report("a", "ap1", "ap", &["wifi"]), T0);
    let v = e.subscription_view(&lic("S1"), T0).unwrap();
    assert_eq!(
        v.seats,
        views::SeatCounts {
            assigned: 1,
            reserved: 0,
            available: 2,
            limit: 3
        }
    );
}

/// Issue 16 item 5: a seat count above MAX_SEATS (int32) is refused by the engine too, and a
/// subscription's totals are exact sums past 32 bits.
#[test]
fn seat_limits_are_bounded_and_totals_do_not_saturate() {
    let mut e = fixture();
    let big = |id: &str, limit: u32| Subscription {
        id: lic(id),
        name: id.into(),
        owner: Some(t("a")),
        claim_key: None,
        start: T0,
        end: T0 + YEAR,
        entitlements: vec![
            Entitlement {
                sku: sku("LIC-AP"),
                limit,
            },
            Entitlement {
                sku: sku("LIC-HV-4"),
                limit,
            },
        ],
    };
    assert!(matches!(
        e.add_subscription(big("S1", MAX_SEATS + 1), T0),
        Err(EngineError::TooManySeats { .. })
    ));
    let _ = e.add_subscription(big("S1", MAX_SEATS), T0).unwrap();
    assert!(matches!(
        e.set_seat_limit(&lic("S1"), &sku("LIC-AP"), u32::MAX, T0),
        Err(EngineError::TooManySeats { .. })
    ));
    let v = e.subscription_view(&lic("S1"), T0).unwrap();
    assert_eq!(v.seats.limit, 2 * u64::from(MAX_SEATS));
    // Two SKUs at u32::MAX each (a ledger of an older stub): the sum, not u32::MAX.
    let mut st = e.state().clone();
    for ent in &mut st.subscriptions.get_mut(&lic("S1")).unwrap().entitlements {
        ent.limit = u32::MAX;
    }
    let e = Engine::from_state(st, e.lease_policy());
    let v = e.subscription_view(&lic("S1"), T0).unwrap();
    assert_eq!(v.seats.limit, 2 * u64::from(u32::MAX));
}

/// Issue 16 item 1 (the class): VM counts come from devices, up to u32::MAX each; the seats
/// compliance says are missing saturate instead of overflowing (a panic in a debug build,
/// which would also poison the controller's lock).
#[test]
fn huge_vm_counts_from_devices_do_not_overflow_compliance() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "a", "LIC-HV-4", 5);
    let _ = e.enable_auto_licensing(&Selection::only([t("a")]), &[svc("hv")], false, T0);
    // Each needs (u32::MAX - 4) / 4 more seats, ~2^30: five of them pass u32::MAX.
    for d in ["h1", "h2", "h3", "h4", "h5"] {
        let mut r = report("a", d, "server", &["hv"]);
        r.vm_count = Some(u32::MAX);
        let _ = e.handle_report(&r, T0).unwrap();
    }
    let c = e.compliance(&t("a"), T0).unwrap();
    assert_eq!(c.vm_overuse.len(), 5);
    assert_eq!(c.violations[0].missing[0].quantity, u32::MAX);
    assert_eq!(c.violations[0].devices, 5);
}

#[test]
fn a_device_that_stops_wanting_a_service_gives_its_seat_back() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 1);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let b1 = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap()
        .publish;
    let fx = e
        .handle_report(&report("b", "ap2", "ap", &["wifi"]), T0)
        .unwrap();
    assert_eq!(
        fx.publish[0].withheld[0].reason,
        WithheldReason::SeatsExhausted
    );
    let mut r = report("a", "ap1", "ap", &[]);
    r.bundle_seq = b1[0].seq;
    let fx = e.handle_report(&r, T0 + 1).unwrap();
    // ap1's new bundle grants nothing; ap2 takes the freed seat and the pause lifts.
    let by_device = |d: &str| fx.publish.iter().find(|b| b.device.as_str() == d).unwrap();
    assert!(by_device("ap1").grants.is_empty());
    assert_eq!(granted(by_device("ap2")), ["wifi"]);
    assert!(!e.state().policies[&svc("wifi")].paused);
}

/// A subscription's SKUs are one entry each: the ledger stores one row per subscription and
/// SKU, so a second entry would be taken in memory and refused by the ledger.
#[test]
fn a_subscription_listing_a_sku_twice_is_refused() {
    let mut e = fixture();
    let sub = Subscription {
        id: lic("SUB-2"),
        name: "twice".into(),
        owner: Some(t("a")),
        claim_key: None,
        start: T0,
        end: T0 + YEAR,
        entitlements: vec![
            Entitlement {
                sku: sku("LIC-AP"),
                limit: 1,
            },
            Entitlement {
                sku: sku("LIC-AP"),
                limit: 2,
            },
        ],
    };
    assert_eq!(
        e.add_subscription(sub, T0).err(),
        Some(EngineError::DuplicateSku(sku("LIC-AP")))
    );
    assert!(!e.state().subscriptions.contains_key(&lic("SUB-2")));
}

/// `devices_of` (the MSP check's walk, per report) yields exactly what a scan of every device
/// filtered by tenant yields, at the edges of the id alphabet and next to neighbouring tenants.
#[test]
fn the_devices_of_a_tenant_are_found_without_a_scan_and_exactly() {
    let mut e = fixture();
    for tenant in ["ms", "msp-x"] {
        let _ = e
            .add_customer(t(tenant), tenant, CustomerKind::Tenant, T0)
            .unwrap();
    }
    let ids = ["-", "--", "-.", ".x", "..y", "0", "Z", "_", "z", "m0"];
    for tenant in ["msp", "ms", "msp-x", "a"] {
        for id in ids {
            let _ = e
                .handle_report(&report(tenant, id, "ap", &["wifi"]), T0)
                .unwrap();
        }
    }
    for tenant in ["msp", "ms", "msp-x", "a", "b", "mspx"] {
        let walked: Vec<_> = e.devices_of(&t(tenant)).map(|d| d.id.clone()).collect();
        let scanned: Vec<_> = e
            .state()
            .devices
            .values()
            .filter(|d| d.tenant == t(tenant))
            .map(|d| d.id.clone())
            .collect();
        assert_eq!(walked, scanned, "{tenant}");
    }
    assert_eq!(e.devices_of(&t("msp")).count(), ids.len());
}

#[test]
fn a_retried_report_crossing_its_answer_gets_no_new_bundle_until_the_answer_is_overdue() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let r = report("a", "ap1", "ap", &["wifi"]);
    let first = e.handle_report(&r, T0).unwrap().publish;
    assert_eq!(first[0].seq, 1);
    // The agent's retries at 5 s and 15 s still report seq 0: the answer is on its way.
    assert!(e.handle_report(&r, T0 + 5).unwrap().publish.is_empty());
    assert!(e
        .handle_report(&r, T0 + ANSWER_IN_FLIGHT_SECS - 1)
        .unwrap()
        .publish
        .is_empty());
    // Past the window the answer counts as lost: a new bundle, above the one issued.
    let again = e
        .handle_report(&r, T0 + ANSWER_IN_FLIGHT_SECS)
        .unwrap()
        .publish;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, 2);
    assert_eq!(granted(&again[0]), ["wifi"]);
}

#[test]
fn a_retried_report_is_answered_at_once_when_what_it_would_say_changed() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let first = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap()
        .publish;
    // The device no longer wants the service: the bundle in flight is out of date.
    let r = report("a", "ap1", "ap", &[]);
    let b = e.handle_report(&r, T0 + 5).unwrap().publish;
    assert_eq!(b.len(), 1);
    assert!(b[0].seq > first[0].seq);
    assert!(b[0].grants.is_empty());
}
