//! Unit and property tests of Snow assignments (`assign.rs`): computer assignments as seats,
//! their removal revoking the service on one device, datacenter coverage of placed hosts, the
//! summary and the invalid-assignment reasons.

use licd_protocol::{DeviceId, LicenseId, Sku, WithheldReason};

use super::assign::{reasons, AssignmentRequest, LicenseRef, PutMode, Target};
use super::tests::{add_sub, fixture, report, svc, t, T0};
use super::*;

fn lic(sub: &str, sku: &str) -> LicenseRef {
    LicenseRef {
        subscription: LicenseId::new(sub).unwrap(),
        sku: Sku::new(sku).unwrap(),
    }
}

fn dev(tenant: &str, device: &str) -> DeviceKey {
    (t(tenant), DeviceId::new(device).unwrap())
}

fn computer(tenant: &str, device: &str, quantity: u32) -> AssignmentRequest {
    AssignmentRequest {
        target: Target::Computer(dev(tenant, device)),
        quantity,
        virtual_machines: Vec::new(),
    }
}

fn other(kind: AssignmentKind, id: &str, quantity: u32) -> AssignmentRequest {
    AssignmentRequest {
        target: Target::Other(kind, id.into()),
        quantity,
        virtual_machines: Vec::new(),
    }
}

/// The services the newest bundle of `key` in `fx` grants, or `None` without one.
fn bundle_for<'a>(fx: &'a Effects, key: &DeviceKey) -> Option<&'a licd_protocol::GrantBundle> {
    fx.publish
        .iter()
        .rev()
        .find(|b| b.tenant == key.0 && b.device == key.1)
}

/// Two APs of tenant `a` with auto-licensed wifi from `S1` (5 seats).
fn two_aps() -> Engine {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "a", "LIC-AP", 5);
    let _ = e
        .enable_auto_licensing(&Selection::only([t("a")]), &[svc("wifi")], false, T0)
        .unwrap();
    for d in ["ap1", "ap2"] {
        let _ = e
            .handle_report(&report("a", d, "ap", &["wifi"]), T0)
            .unwrap();
    }
    e
}

#[test]
fn deleting_a_computer_assignment_revokes_the_service_on_that_device_only() {
    let mut e = two_aps();
    let l = lic("S1", "LIC-AP");
    let listed = e.assignments_of(&l, AssignmentKind::Computer, T0).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|a| a.is_auto_allocated));
    let fx = e
        .delete_assignment(&l, AssignmentKind::Computer, "a:ap1", T0 + 1)
        .unwrap();
    let b = bundle_for(&fx, &dev("a", "ap1")).expect("a new bundle for ap1");
    assert!(b.grants.is_empty());
    assert_eq!(b.withheld[0].reason, WithheldReason::Unassigned);
    assert!(
        bundle_for(&fx, &dev("a", "ap2")).is_none(),
        "ap2 is untouched"
    );
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 1);
    // Auto-licensing does not hand the seat back on the next report.
    let fx = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0 + 2)
        .unwrap();
    assert!(fx.publish.iter().all(|b| b.grants.is_empty()));
    assert!(e.state().devices[&dev("a", "ap1")].seats.is_empty());
}

#[test]
fn adding_a_computer_assignment_again_relicenses_the_device_with_its_quantity() {
    let mut e = two_aps();
    let l = lic("S1", "LIC-AP");
    let _ = e
        .delete_assignment(&l, AssignmentKind::Computer, "a:ap1", T0)
        .unwrap();
    let fx = e
        .put_assignment(&l, computer("a", "ap1", 2), PutMode::Add, T0 + 1)
        .unwrap();
    let b = bundle_for(&fx, &dev("a", "ap1")).unwrap();
    assert_eq!(b.grants[0].license.as_str(), "S1");
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 3);
    let a = e
        .assignment(&l, AssignmentKind::Computer, "a:ap1", T0)
        .unwrap();
    assert!(!a.is_auto_allocated);
    assert_eq!(a.quantity, 2);
    // Adding it a second time is a conflict; replacing it is fine.
    assert!(matches!(
        e.put_assignment(&l, computer("a", "ap1", 1), PutMode::Add, T0),
        Err(EngineError::AssignmentExists { .. })
    ));
    let _ = e
        .put_assignment(&l, computer("a", "ap1", 1), PutMode::Replace, T0)
        .unwrap();
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 2);
}

#[test]
fn a_computer_assignment_needs_free_seats_and_the_licenses_product_class() {
    let mut e = two_aps();
    let l = lic("S1", "LIC-AP");
    let before = e.state().clone();
    // 5 seats, 2 used by the APs: 4 for ap1 (which gives its own back) is fine, 5 is not.
    assert!(matches!(
        e.put_assignment(&l, computer("a", "ap1", 5), PutMode::Add, T0),
        Err(EngineError::NotEnoughSeats {
            free: 4,
            quantity: 5,
            ..
        })
    ));
    assert_eq!(e.state(), &before, "a refused assignment changes nothing");
    let _ = e.handle_report(&report("a", "srv1", "server", &["hv"]), T0);
    assert!(matches!(
        e.put_assignment(&l, computer("a", "srv1", 1), PutMode::Add, T0),
        Err(EngineError::InvalidAssignment(_))
    ));
    assert!(matches!(
        e.put_assignment(&l, computer("a", "nope", 1), PutMode::Add, T0),
        Err(EngineError::UnknownDevice(..))
    ));
    assert!(matches!(
        e.put_assignment(
            &lic("S1", "LIC-HV-4"),
            computer("a", "ap1", 1),
            PutMode::Add,
            T0
        ),
        Err(EngineError::UnknownLicense(_))
    ));
}

#[test]
fn replacing_all_computer_assignments_revokes_the_left_out_and_checks_all_first() {
    let mut e = two_aps();
    let l = lic("S1", "LIC-AP");
    let _ = e.handle_report(&report("a", "ap3", "ap", &["wifi"]), T0);
    let before = e.state().clone();
    // One bad item (unknown device) and nothing changes.
    let bad = vec![computer("a", "ap1", 1), computer("a", "ghost", 1)];
    assert!(e
        .replace_assignments(&l, AssignmentKind::Computer, bad, &|_| true, T0)
        .is_err());
    assert_eq!(e.state(), &before);
    let twice = vec![computer("a", "ap1", 1), computer("a", "ap1", 1)];
    assert!(matches!(
        e.replace_assignments(&l, AssignmentKind::Computer, twice, &|_| true, T0),
        Err(EngineError::InvalidAssignment(_))
    ));
    // Explicit ap1 only: the auto-allocated seats stay, ap1's becomes the operator's.
    let _ = e
        .replace_assignments(
            &l,
            AssignmentKind::Computer,
            vec![computer("a", "ap1", 1)],
            &|_| true,
            T0,
        )
        .unwrap();
    let explicit: Vec<_> = e
        .assignments_of(&l, AssignmentKind::Computer, T0)
        .unwrap()
        .into_iter()
        .filter(|a| !a.is_auto_allocated)
        .map(|a| a.id)
        .collect();
    assert_eq!(explicit, ["a:ap1"]);
    // Delete all: every device of the license loses the service.
    let fx = e
        .delete_assignments(&l, AssignmentKind::Computer, &|_| true, T0 + 1)
        .unwrap();
    for d in ["ap1", "ap2", "ap3"] {
        let b = bundle_for(&fx, &dev("a", d)).unwrap();
        assert!(b.grants.is_empty(), "{d}");
    }
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 0);
}

/// Tenant `a` with a per-VM datacenter license `DC` (LIC-HV-4, 10 seats) and hosts h1, h2
/// (2 and 30 VMs) wanting `hv`; no auto-licensing.
fn hosts() -> Engine {
    let mut e = fixture();
    let _ = add_sub(&mut e, "DC", "a", "LIC-HV-4", 10);
    for (d, vms) in [("h1", 2), ("h2", 30), ("h3", 1)] {
        let mut r = report("a", d, "server", &["hv"]);
        r.vm_count = Some(vms);
        let _ = e.handle_report(&r, T0).unwrap();
    }
    e
}

#[test]
fn a_datacenter_assignment_with_vm_use_rights_covers_the_hosts_placed_there() {
    let mut e = hosts();
    let l = lic("DC", "LIC-HV-4");
    for d in ["h1", "h2"] {
        let _ = e
            .place_device(&dev("a", d), Some("dc-north".into()), T0)
            .unwrap();
    }
    let fx = e
        .put_assignment(
            &l,
            other(AssignmentKind::Datacenter, "dc-north", 4),
            PutMode::Add,
            T0 + 1,
        )
        .unwrap();
    for d in ["h1", "h2"] {
        let b = bundle_for(&fx, &dev("a", d)).unwrap_or_else(|| panic!("bundle for {d}"));
        assert_eq!(b.grants.len(), 1, "{d}");
        // The datacenter's VM use rights cover the host's VMs: no per-host allowance.
        assert_eq!(b.grants[0].vm_allowance, None);
    }
    assert!(
        bundle_for(&fx, &dev("a", "h3")).is_none(),
        "h3 is not placed there"
    );
    // The datacenter uses its quantity of seats, not one per host.
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 4);
    let a = e
        .assignment(&l, AssignmentKind::Datacenter, "dc-north", T0)
        .unwrap();
    assert_eq!(a.number_of_supported_virtual_machines, Some(16));
    assert_eq!(a.covered_hosts.len(), 2);
    // 32 VMs run on its hosts, 16 are supported.
    assert!(a.invalid_reasons.contains(&reasons::VM_OVERUSE));
    // A host taken out of the datacenter loses the service; one placed in gains it.
    let fx = e.place_device(&dev("a", "h2"), None, T0 + 2).unwrap();
    assert!(bundle_for(&fx, &dev("a", "h2")).unwrap().grants.is_empty());
    let fx = e
        .place_device(&dev("a", "h3"), Some("dc-north".into()), T0 + 3)
        .unwrap();
    assert_eq!(bundle_for(&fx, &dev("a", "h3")).unwrap().grants.len(), 1);
    // Deleting the assignment revokes it on every host.
    let fx = e
        .delete_assignment(&l, AssignmentKind::Datacenter, "dc-north", T0 + 4)
        .unwrap();
    for d in ["h1", "h3"] {
        assert!(bundle_for(&fx, &dev("a", d)).unwrap().grants.is_empty());
    }
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 0);
}

#[test]
fn a_datacenter_assignment_without_vm_use_rights_covers_no_host() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "a", "LIC-AP", 5);
    let _ = e.handle_report(&report("a", "ap1", "ap", &["wifi"]), T0);
    let _ = e.place_device(&dev("a", "ap1"), Some("dc".into()), T0);
    let l = lic("S1", "LIC-AP");
    let _ = e
        .put_assignment(
            &l,
            other(AssignmentKind::Datacenter, "dc", 1),
            PutMode::Add,
            T0,
        )
        .unwrap();
    assert!(e.state().devices[&dev("a", "ap1")].seats.is_empty());
    let a = e
        .assignment(&l, AssignmentKind::Datacenter, "dc", T0)
        .unwrap();
    assert!(a.invalid_reasons.contains(&reasons::NO_VM_USE_RIGHTS));
    assert!(!a.has_vm_use_rights);
}

#[test]
fn a_new_host_reporting_in_a_covered_datacenter_is_licensed_at_its_first_bundle_after_placement() {
    let mut e = hosts();
    let l = lic("DC", "LIC-HV-4");
    let _ = e
        .put_assignment(
            &l,
            other(AssignmentKind::Datacenter, "dc", 1),
            PutMode::Add,
            T0,
        )
        .unwrap();
    let a = e
        .assignment(&l, AssignmentKind::Datacenter, "dc", T0)
        .unwrap();
    assert!(a.invalid_reasons.contains(&reasons::NO_HOSTS));
    let _ = e
        .place_device(&dev("a", "h1"), Some("dc".into()), T0)
        .unwrap();
    let fx = e
        .handle_report(&report("a", "h1", "server", &["hv"]), T0 + 10)
        .unwrap();
    assert!(fx.publish.is_empty() || fx.publish[0].grants.len() == 1);
    assert!(e.state().devices[&dev("a", "h1")]
        .seats
        .contains_key(&svc("hv")));
}

#[test]
fn organization_site_and_user_assignments_are_records_with_a_summary() {
    let mut e = two_aps();
    let l = lic("S1", "LIC-AP");
    let s = e.assignment_summary(&l, T0).unwrap();
    assert!(s.computer && !s.organization && !s.site && !s.user && !s.datacenter);
    let _ = e
        .put_assignment(
            &l,
            other(AssignmentKind::Organization, "a", 3),
            PutMode::Add,
            T0,
        )
        .unwrap();
    let _ = e
        .put_assignment(&l, other(AssignmentKind::Site, "a", 1), PutMode::Add, T0)
        .unwrap();
    let _ = e
        .put_assignment(&l, other(AssignmentKind::User, "u-1", 1), PutMode::Add, T0)
        .unwrap();
    let s = e.assignment_summary(&l, T0).unwrap();
    assert!(s.organization && s.site && s.user);
    // One site per license; an organization that may not use the subscription is refused.
    assert!(matches!(
        e.put_assignment(&l, other(AssignmentKind::Site, "b", 1), PutMode::Add, T0),
        Err(EngineError::AssignmentExists { .. })
    ));
    assert!(matches!(
        e.put_assignment(
            &l,
            other(AssignmentKind::Organization, "b", 1),
            PutMode::Add,
            T0
        ),
        Err(EngineError::InvalidAssignment(_))
    ));
    assert!(matches!(
        e.put_assignment(
            &l,
            other(AssignmentKind::Organization, "zz", 1),
            PutMode::Add,
            T0
        ),
        Err(EngineError::UnknownCustomer(_))
    ));
    // Records do not use seats.
    assert_eq!(e.assigned_seats(&l.subscription, &l.sku), 2);
    let _ = e
        .delete_assignments(&l, AssignmentKind::User, &|_| true, T0)
        .unwrap();
    assert!(!e.assignment_summary(&l, T0).unwrap().user);
}

#[test]
fn computer_assignment_reasons_name_what_is_wrong() {
    let mut e = hosts();
    let l = lic("DC", "LIC-HV-4");
    let mut req = computer("a", "h2", 1);
    req.virtual_machines = (0..5).map(|i| format!("vm-{i}")).collect();
    let _ = e.put_assignment(&l, req, PutMode::Add, T0).unwrap();
    let a = e
        .assignment(&l, AssignmentKind::Computer, "a:h2", T0)
        .unwrap();
    assert_eq!(a.number_of_supported_virtual_machines, Some(4));
    assert_eq!(a.virtual_machines.len(), 5);
    assert!(a
        .invalid_reasons
        .contains(&reasons::TOO_MANY_VIRTUAL_MACHINES));
    assert!(a.invalid_reasons.contains(&reasons::VM_OVERUSE));
    // A quantity of 8 supports 32 VMs: both reasons go, and the grant says so.
    let mut req = computer("a", "h2", 8);
    req.virtual_machines = vec!["vm-0".into()];
    let fx = e.put_assignment(&l, req, PutMode::Replace, T0).unwrap();
    let a = e
        .assignment(&l, AssignmentKind::Computer, "a:h2", T0)
        .unwrap();
    assert!(a.invalid_reasons.is_empty(), "{:?}", a.invalid_reasons);
    let b = bundle_for(&fx, &dev("a", "h2")).unwrap();
    assert_eq!(b.grants[0].vm_allowance, Some(32));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u32),
        Replace(u8, u32),
        Delete(u8),
        ReplaceAll(Vec<(u8, u32)>),
        DeleteAll,
        Dc(u32),
        DeleteDc,
        Place(u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, 0u32..5).prop_map(|(d, q)| Op::Add(d, q)),
            (0u8..4, 0u32..5).prop_map(|(d, q)| Op::Replace(d, q)),
            (0u8..4).prop_map(Op::Delete),
            proptest::collection::vec((0u8..4, 0u32..4), 0..4).prop_map(Op::ReplaceAll),
            Just(Op::DeleteAll),
            (0u32..6).prop_map(Op::Dc),
            Just(Op::DeleteDc),
            (0u8..4, any::<bool>()).prop_map(|(d, p)| Op::Place(d, p)),
        ]
    }

    fn host(n: u8) -> String {
        format!("h{n}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever operators do: seats in use never exceed the limit, the engine's count
        /// equals the seats and datacenter quantities it holds, a refused operation changes
        /// nothing, and a host holds a datacenter's seat only while placed in it.
        #[test]
        fn assignments_keep_the_seat_count_and_refusals_change_nothing(
            ops in proptest::collection::vec(op(), 1..16),
        ) {
            let mut e = fixture();
            let _ = add_sub(&mut e, "DC", "a", "LIC-HV-4", 6);
            for n in 0..4u8 {
                let _ = e.handle_report(&report("a", &host(n), "server", &["hv"]), T0);
            }
            let l = lic("DC", "LIC-HV-4");
            for (i, op) in ops.into_iter().enumerate() {
                let now = T0 + 1 + i as u64;
                let before = e.state().clone();
                let r = match op {
                    Op::Add(d, q) => e.put_assignment(&l, computer("a", &host(d), q), PutMode::Add, now),
                    Op::Replace(d, q) => e.put_assignment(&l, computer("a", &host(d), q), PutMode::Replace, now),
                    Op::Delete(d) => e.delete_assignment(&l, AssignmentKind::Computer, &format!("a:{}", host(d)), now),
                    Op::ReplaceAll(v) => e.replace_assignments(
                        &l,
                        AssignmentKind::Computer,
                        v.into_iter().map(|(d, q)| computer("a", &host(d), q)).collect(),
                        &|_| true,
                        now,
                    ),
                    Op::DeleteAll => e.delete_assignments(&l, AssignmentKind::Computer, &|_| true, now),
                    Op::Dc(q) => e.put_assignment(&l, other(AssignmentKind::Datacenter, "dc", q), PutMode::Add, now),
                    Op::DeleteDc => e.delete_assignment(&l, AssignmentKind::Datacenter, "dc", now),
                    Op::Place(d, p) => e.place_device(&dev("a", &host(d)), p.then(|| "dc".to_string()), now),
                };
                if r.is_err() {
                    prop_assert_eq!(e.state(), &before);
                }
                let st = e.state();
                let mut counted: u32 = st.devices.values().flat_map(|d| d.seats.values()).map(Seat::counted).sum();
                counted += st.snow.values().filter(|a| a.kind == AssignmentKind::Datacenter).map(|a| a.quantity).sum::<u32>();
                prop_assert_eq!(e.assigned_seats(&l.subscription, &l.sku), counted);
                prop_assert!(counted <= 6);
                for d in st.devices.values() {
                    for seat in d.seats.values() {
                        if let Some(dc) = &seat.datacenter {
                            prop_assert_eq!(d.datacenter.as_ref(), Some(dc));
                        }
                    }
                }
                // The engine rebuilt from its state counts the same (what a restart does).
                let again = Engine::from_state(st.clone(), e.lease_policy());
                prop_assert_eq!(again.assigned_seats(&l.subscription, &l.sku), counted);
            }
        }
    }
}
