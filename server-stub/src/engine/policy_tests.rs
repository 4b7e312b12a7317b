//! Licensing policy per SKU and subscription in the engine: the offline lease a grant file
//! gets, re-issue when a policy changes, refusals that change nothing.

use licd_protocol::ActivationRequest;

use super::policy::{Policy, PolicyError, Strategy};
use super::tests::{add_sub, fixture, lic, report, sku, svc, t, T0};
use super::*;

/// Subscriptions S1 (2 seats) and S2 (1 seat) of LIC-AP, auto-licensing on for everyone.
fn two_subs() -> Engine {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 2);
    let _ = add_sub(&mut e, "S2", "msp", "LIC-AP", 1);
    let _ = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0)
        .unwrap();
    e
}

fn request(device: &str, nonce: u8) -> ActivationRequest {
    ActivationRequest {
        report: report("a", device, "ap", &["wifi"]),
        nonce: [nonce; 16],
    }
}

fn lease_days(days: u32) -> Policy {
    Policy {
        offline_lease_days: Some(days),
        ..Policy::default()
    }
}

#[test]
fn a_grant_file_lease_comes_from_the_sku_policy_and_a_subscription_overrides_it() {
    let mut e = two_subs();
    // No policy: the controller's offline_lease_days (90 by default).
    let (b, _) = e.handle_offline_request(&request("ap1", 1), T0).unwrap();
    assert_eq!(b.grants[0].license.as_str(), "S1");
    assert_eq!(b.grants[0].lease_until, T0 + 90 * DAY);
    assert_eq!(b.refresh_after, T0 + 45 * DAY);

    let _ = e
        .set_sku_policy(&sku("LIC-AP"), lease_days(30), T0)
        .unwrap();
    let mut renew = request("ap1", 2);
    renew.report.bundle_seq = b.seq;
    let (b, _) = e.handle_offline_request(&renew, T0 + 10).unwrap();
    assert_eq!(b.grants[0].lease_until, T0 + 10 + 30 * DAY);

    let _ = e
        .set_subscription_policy(&lic("S1"), lease_days(365), T0 + 20)
        .unwrap();
    let mut renew = request("ap1", 3);
    renew.report.bundle_seq = b.seq;
    let (b, _) = e.handle_offline_request(&renew, T0 + 30).unwrap();
    assert_eq!(b.grants[0].lease_until, T0 + 30 + 365 * DAY);

    // A connected device keeps the regular lease whatever the offline policy says.
    let fx = e
        .handle_report(&report("a", "ap2", "ap", &["wifi"]), T0 + 40)
        .unwrap();
    assert_eq!(fx.publish[0].grants[0].lease_until, T0 + 40 + 7 * DAY);
}

#[test]
fn a_request_that_frees_or_takes_seats_leaves_other_devices_on_the_regular_lease() {
    let mut e = two_subs();
    let _ = e
        .set_sku_policy(&sku("LIC-AP"), lease_days(30), T0)
        .unwrap();
    // Three devices, three seats; the third connected device waits on none.
    let _ = e
        .handle_report(&report("a", "ap2", "ap", &["wifi"]), T0)
        .unwrap();
    let (b, fx) = e.handle_offline_request(&request("ap1", 1), T0).unwrap();
    assert_eq!(b.grants[0].lease_until, T0 + 30 * DAY);
    for other in fx.publish.iter().filter(|x| x.device.as_str() != "ap1") {
        assert!(other.grants.iter().all(|g| g.lease_until == T0 + 7 * DAY));
    }
}

#[test]
fn changing_a_policy_reissues_the_bundles_of_the_devices_it_covers() {
    let mut e = two_subs();
    let b1 = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap()
        .publish[0]
        .seq;
    let advisory = Policy {
        strategy: Some(Strategy::Advisory),
        ..Policy::default()
    };
    // S2 covers no device: nothing re-issued.
    let fx = e
        .set_subscription_policy(&lic("S2"), advisory.clone(), T0 + 1)
        .unwrap();
    assert!(fx.publish.is_empty());
    // S1 covers ap1.
    let fx = e
        .set_subscription_policy(&lic("S1"), advisory.clone(), T0 + 2)
        .unwrap();
    assert_eq!(fx.publish.len(), 1);
    assert_eq!(fx.publish[0].seq, b1 + 1);
    let key = (t("a"), "ap1".parse().unwrap());
    let basis = e.state().devices[&key].bundle.basis.clone().unwrap();
    assert_eq!(basis.grants[0].policy.strategy, Strategy::Advisory);
    // The same policy again changes nothing.
    let fx = e
        .set_subscription_policy(&lic("S1"), advisory, T0 + 3)
        .unwrap();
    assert!(fx.publish.is_empty());
    // Clearing it goes back to the default (restrict) and re-issues.
    let fx = e
        .set_subscription_policy(&lic("S1"), Policy::default(), T0 + 4)
        .unwrap();
    assert_eq!(fx.publish.len(), 1);
    assert!(!e.state().subscription_policies.contains_key(&lic("S1")));
    let dirty = e.take_dirty();
    assert!(dirty.subscription_policies.contains(&lic("S1")));
}

#[test]
fn an_invalid_policy_or_an_unknown_target_is_refused_and_changes_nothing() {
    let mut e = two_subs();
    let _ = e.take_dirty();
    let bad = Policy {
        overage_tolerance_pct: Some(90),
        ..Policy::default()
    };
    assert_eq!(
        e.set_sku_policy(&sku("LIC-AP"), bad, T0).unwrap_err(),
        EngineError::InvalidPolicy(PolicyError::ToleranceBelowAllowance(90))
    );
    let unordered = Policy {
        warn_before: Some(vec![10, 20]),
        ..Policy::default()
    };
    assert!(matches!(
        e.set_subscription_policy(&lic("S1"), unordered, T0)
            .unwrap_err(),
        EngineError::InvalidPolicy(PolicyError::ThresholdsNotDescending(_))
    ));
    assert_eq!(
        e.set_sku_policy(&sku("NOPE"), lease_days(1), T0)
            .unwrap_err(),
        EngineError::UnknownSku(sku("NOPE"))
    );
    assert_eq!(
        e.set_subscription_policy(&lic("NOPE"), lease_days(1), T0)
            .unwrap_err(),
        EngineError::UnknownSubscription(lic("NOPE"))
    );
    assert!(e.take_dirty().is_empty());
    assert!(e.state().sku_policies.is_empty());
    assert!(e.state().subscription_policies.is_empty());
}

#[test]
fn the_effective_policy_merges_subscription_over_sku_field_by_field() {
    let mut e = two_subs();
    let _ = e
        .set_sku_policy(
            &sku("LIC-AP"),
            Policy {
                strategy: Some(Strategy::Advisory),
                overage_tolerance_pct: Some(125),
                ..Policy::default()
            },
            T0,
        )
        .unwrap();
    let _ = e
        .set_subscription_policy(
            &lic("S2"),
            Policy {
                strategy: Some(Strategy::Immediate),
                warn_before: Some(vec![30 * DAY, DAY]),
                ..Policy::default()
            },
            T0,
        )
        .unwrap();
    let s1 = e.effective_policy(&lic("S1"), &sku("LIC-AP"));
    assert_eq!(
        (s1.strategy, s1.overage_tolerance_pct),
        (Strategy::Advisory, 125)
    );
    let s2 = e.effective_policy(&lic("S2"), &sku("LIC-AP"));
    assert_eq!(
        (s2.strategy, s2.overage_tolerance_pct, s2.warn_before),
        (Strategy::Immediate, 125, vec![30 * DAY, DAY])
    );
}
