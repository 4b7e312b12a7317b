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
