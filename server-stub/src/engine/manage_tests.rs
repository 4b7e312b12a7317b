//! Unit tests of the operations in [`manage`](super::manage): rename/remove customers, bind
//! with its dry run, seat limits.

use licd_protocol::{LicenseId, Sku};

use super::tests::{add_sub, fixture, report, svc, t, T0};
use super::*;

fn sku(s: &str) -> Sku {
    Sku::new(s).unwrap()
}
fn lic(s: &str) -> LicenseId {
    LicenseId::new(s).unwrap()
}

#[test]
fn a_customer_is_renamed_and_an_unused_one_removed_but_not_one_in_use() {
    let mut e = fixture();
    e.rename_customer(&t("a"), "Alpha".into()).unwrap();
    assert_eq!(e.state().customers[&t("a")].name, "Alpha");
    let _ = e.take_dirty();
    let _ = add_sub(&mut e, "S1", "a", "LIC-AP", 1);
    assert!(matches!(
        e.remove_customer(&t("a")),
        Err(EngineError::CustomerInUse(..))
    ));
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e.take_dirty();
    e.remove_customer(&t("b")).unwrap();
    assert!(!e.state().customers.contains_key(&t("b")));
    assert!(!e.state().policies[&svc("wifi")].customers.contains(&t("b")));
    let dirty = e.take_dirty();
    assert!(dirty.customers.contains(&t("b")) && dirty.policies.contains(&svc("wifi")));
    assert_eq!(
        e.remove_customer(&t("b")),
        Err(EngineError::UnknownCustomer(t("b")))
    );
    let _ = e.handle_report(&report("msp", "ap9", "ap", &["wifi"]), T0);
    assert!(matches!(
        e.remove_customer(&t("msp")),
        Err(EngineError::CustomerInUse(..))
    ));
}

#[test]
fn binding_a_tenant_to_another_tenants_subscription_lets_its_devices_use_the_seats() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "SA", "a", "LIC-AP", 1);
    let _ = e.enable_auto_licensing(&Selection::only([t("b")]), &[svc("wifi")], false, T0);
    let fx = e
        .handle_report(&report("b", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    assert!(fx.publish[0].grants.is_empty(), "b has no seats of its own");

    // Dry run: shows what the bind would do, changes nothing.
    let before = e.state().clone();
    let (dry, fx) = e.bind_customers(&lic("SA"), &[t("b")], true, T0).unwrap();
    assert!(fx.publish.is_empty());
    assert_eq!(e.state(), &before);
    assert_eq!(dry.customers, [t("b")]);
    assert!(dry.errors.is_empty() && dry.insufficient_entitlements.is_empty());

    let (r, fx) = e.bind_customers(&lic("SA"), &[t("b")], false, T0).unwrap();
    assert_eq!(r, dry);
    assert_eq!(fx.publish.len(), 1);
    assert_eq!(fx.publish[0].grants[0].license, lic("SA"));
    assert_eq!(e.bound_customers(&lic("SA")), [t("b")]);
    assert!(e.take_dirty().subscriptions.contains(&lic("SA")));

    // A second device of b: the one seat is taken, so a validate lists what is missing.
    let _ = e.handle_report(&report("b", "ap2", "ap", &["wifi"]), T0);
    let (dry, _) = e.bind_customers(&lic("SA"), &[t("b")], true, T0).unwrap();
    assert_eq!(dry.errors, ["Insufficient licenses"]);
    assert_eq!(
        dry.insufficient_entitlements,
        [manage::SkuQuantity {
            sku: sku("LIC-AP"),
            quantity: 1
        }]
    );
}

#[test]
fn bind_refuses_unknown_ids_no_customers_and_unclaimed_subscriptions() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "SA", "a", "LIC-AP", 1);
    assert_eq!(
        e.bind_customers(&lic("NOPE"), &[t("b")], false, T0).err(),
        Some(EngineError::UnknownSubscription(lic("NOPE")))
    );
    assert_eq!(
        e.bind_customers(&lic("SA"), &[], false, T0).err(),
        Some(EngineError::NoCustomers)
    );
    assert_eq!(
        e.bind_customers(&lic("SA"), &[t("zz")], false, T0).err(),
        Some(EngineError::UnknownCustomer(t("zz")))
    );
    let _ = e.add_subscription(
        Subscription {
            id: lic("SC"),
            name: "claimable".into(),
            owner: None,
            claim_key: Some("K".into()),
            start: T0,
            end: T0 + DAY,
            entitlements: vec![],
        },
        T0,
    );
    assert_eq!(
        e.bind_customers(&lic("SC"), &[t("b")], false, T0).err(),
        Some(EngineError::Unclaimed(lic("SC")))
    );
}

#[test]
fn a_seat_limit_is_raised_to_lift_a_pause_and_never_lowered_below_the_seats_in_use() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 1);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e.handle_report(&report("a", "ap1", "ap", &["wifi"]), T0);
    let _ = e.handle_report(&report("a", "ap2", "ap", &["wifi"]), T0);
    assert!(e.state().policies[&svc("wifi")].paused);
    assert_eq!(
        e.set_seat_limit(&lic("S1"), &sku("LIC-AP"), 0, T0).err(),
        Some(EngineError::SeatsInUse {
            sku: sku("LIC-AP"),
            assigned: 1,
            limit: 0
        })
    );
    assert_eq!(
        e.set_seat_limit(&lic("S1"), &sku("LIC-HV-4"), 3, T0).err(),
        Some(EngineError::NotEntitled(lic("S1"), sku("LIC-HV-4")))
    );
    let fx = e.set_seat_limit(&lic("S1"), &sku("LIC-AP"), 2, T0).unwrap();
    assert!(!e.state().policies[&svc("wifi")].paused);
    assert_eq!(e.assigned_seats(&lic("S1"), &sku("LIC-AP")), 2);
    assert!(!fx.publish.is_empty());
}
