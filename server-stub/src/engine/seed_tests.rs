//! Unit tests of issue 21's engine rules: compliance per subscription.

use super::tests::{add_sub, fixture, report, svc, t, T0};
use super::*;

fn lic(s: &str) -> LicenseId {
    LicenseId::new(s).unwrap()
}

fn missing(c: &compliance::SubscriptionCompliance) -> Vec<(String, String, u32)> {
    c.by_product_class
        .iter()
        .flat_map(|v| {
            v.missing
                .iter()
                .map(|(sku, q)| (v.product_class.clone(), sku.to_string(), *q))
        })
        .collect()
}

#[test]
fn a_subscription_s_compliance_lists_the_seats_its_organizations_lack_of_its_skus() {
    let mut e = fixture();
    // a owns S-A with one AP seat; b owns S-B with one; two of a's APs and one of b's want wifi.
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 1);
    let _ = add_sub(&mut e, "S-B", "b", "LIC-AP", 1);
    let _ = add_sub(&mut e, "S-HV", "a", "LIC-HV-4", 1);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    for (tenant, device) in [("a", "ap1"), ("b", "bp1")] {
        let _ = e
            .handle_report(&report(tenant, device, "ap", &["wifi"]), T0)
            .unwrap();
    }
    // The second AP of a comes later: no seat left (paused), a violation since then.
    let _ = e
        .handle_report(&report("a", "ap2", "ap", &["wifi"]), T0 + 100)
        .unwrap();
    let orgs = [t("a"), t("b")];
    let c = e
        .subscription_compliance(&lic("S-A"), &orgs, T0 + 200)
        .unwrap();
    assert_eq!(c.subscription.status, SubscriptionStatus::Active);
    assert_eq!(missing(&c), [("ap".into(), "LIC-AP".into(), 1)]);
    assert_eq!(
        c.by_product_class[0].grace_period_ends_at,
        T0 + 100 + 30 * DAY
    );
    // b's subscription serves b only: b's device holds its seat, nothing is missing; a's
    // shortfall is not b's subscription's to fix.
    let c = e
        .subscription_compliance(&lic("S-B"), &orgs, T0 + 200)
        .unwrap();
    assert!(c.by_product_class.is_empty(), "{c:?}");
    // A subscription without the SKU a device lacks is not at fault either.
    let c = e
        .subscription_compliance(&lic("S-HV"), &orgs, T0 + 200)
        .unwrap();
    assert!(c.by_product_class.is_empty(), "{c:?}");
    // Asked for organization b only, a's devices do not count.
    let c = e
        .subscription_compliance(&lic("S-A"), &[t("b")], T0 + 200)
        .unwrap();
    assert!(c.by_product_class.is_empty(), "{c:?}");
    assert!(matches!(
        e.subscription_compliance(&lic("NOPE"), &orgs, T0),
        Err(EngineError::UnknownSubscription(_))
    ));
}

#[test]
fn an_expired_subscription_is_at_fault_for_the_seats_it_still_holds_from_its_end() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 2);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    let end = e.state().subscriptions[&lic("S-A")].end;
    let c = e
        .subscription_compliance(&lic("S-A"), &[t("a")], end + 5)
        .unwrap();
    assert_eq!(c.subscription.status, SubscriptionStatus::Expired);
    assert_eq!(missing(&c), [("ap".into(), "LIC-AP".into(), 1)]);
    assert_eq!(c.by_product_class[0].grace_period_ends_at, end + 30 * DAY);
}

#[test]
fn moving_seats_away_ends_the_newest_seats_beyond_the_source_s_limit_and_nothing_on_refusal() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 2);
    let _ = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0);
    let _ = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    let _ = e
        .handle_report(&report("a", "ap2", "ap", &["wifi"]), T0 + 5)
        .unwrap();
    let sku = Sku::new("LIC-AP").unwrap();
    let mv = |n| coterm::LicenseMove {
        key: "S-A".into(),
        counts: vec![(sku.clone(), n)],
    };
    // Refused as a whole: more than the license has, to itself, an unknown key.
    let before = e.state().clone();
    assert!(matches!(
        e.move_licenses(&t("a"), &t("b"), &[mv(3)], T0 + 10),
        Err(EngineError::InvalidMove(_))
    ));
    assert!(matches!(
        e.move_licenses(&t("a"), &t("a"), &[mv(1)], T0 + 10),
        Err(EngineError::InvalidMove(_))
    ));
    assert!(matches!(
        e.move_licenses(&t("b"), &t("a"), &[mv(1)], T0 + 10),
        Err(EngineError::UnknownLicenseKey(_))
    ));
    assert_eq!(e.state(), &before);

    let (r, fx) = e
        .move_licenses(&t("a"), &t("b"), &[mv(1)], T0 + 10)
        .unwrap();
    assert_eq!(r.remainder, [lic("S-A")]);
    assert_eq!(r.moved, [lic("S-A-m1")]);
    assert_eq!(r.ended_seats, 1);
    assert_eq!(
        e.state().subscriptions[&lic("S-A")].entitlements[0].limit,
        1
    );
    let moved = &e.state().subscriptions[&lic("S-A-m1")];
    assert_eq!(
        (moved.owner.clone(), moved.entitlements[0].limit),
        (Some(t("b")), 1)
    );
    assert_eq!(moved.claim_key.as_deref(), Some("S-A-m1"));
    // ap2 (assigned last) gets a bundle whose grant ends at the move; ap1's is unchanged.
    assert_eq!(fx.publish.len(), 1, "{fx:?}");
    assert_eq!(fx.publish[0].device.as_str(), "ap2");
    assert_eq!(fx.publish[0].grants[0].not_after, T0 + 10);
    let c = e.compliance(&t("a"), T0 + 20).unwrap();
    assert_eq!(c.violations[0].missing[0].quantity, 1);
    assert_eq!(c.violations[0].grace_period_ends_at, T0 + 10 + 30 * DAY);
}
