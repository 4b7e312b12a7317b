//! The policy a grant carries (PROTOCOL.md §17): strategies, overage tolerance, expiring-soon
//! thresholds and the usage ledger — table tests and a property test over every strategy ×
//! tolerance against lease end, term end, revocation and VM changes in any order.

use super::*;
use licd_protocol::policy::seal_policy_bundle;
use licd_protocol::{PolicyBundle, ServicePolicy, Strategy};

const DAY: u64 = 86_400;

fn policy(service: &str, strategy: Strategy, pct: u32, warn: &[u64]) -> ServicePolicy {
    ServicePolicy {
        service: svc(service),
        strategy,
        overage_tolerance_pct: pct,
        warn_before: warn.to_vec(),
    }
}

impl Fixture {
    fn seal_policy(&self, b: GrantBundle, policies: Vec<ServicePolicy>, usage_ack: u64) -> Vec<u8> {
        seal_policy_bundle(
            &PolicyBundle {
                bundle: b,
                policies,
                usage_ack,
            },
            &self.signing,
            &self.cert,
        )
    }
}

/// A grant whose term ends at `T0 + term` and whose lease ends at `T0 + lease`.
fn grant_ending(service: &str, term: u64, lease: u64) -> ServiceGrant {
    let mut g = grant(service, T0);
    g.not_after = T0 + term;
    g.lease_until = T0 + lease;
    g
}

#[test]
fn an_advisory_service_runs_past_grace_shown_non_compliant_with_the_reason() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let raw = f.seal_policy(
        f.bundle(1, T0, vec![grant("wifi", T0)]),
        vec![policy("wifi", Strategy::Advisory, 100, &[])],
        0,
    );
    e.handle(T0, Input::Bundle(&raw));
    assert!(matches!(
        state_after(&mut e, T0 + LEASE, "wifi"),
        ServiceState::Grace { .. }
    ));
    let s = state_after(&mut e, T0 + LEASE + GRACE, "wifi");
    assert_eq!(
        s,
        ServiceState::NonCompliant {
            reason: Reason::LeaseExpired
        }
    );
    assert!(s.may_run());
    let snap = e.snapshot();
    assert_eq!(snap.services[0].strategy, Some("advisory"));
    assert_eq!(
        snap.services[0].warnings,
        vec![Warning::NonCompliant {
            reason: Reason::LeaseExpired
        }]
    );
    let c = e.compliance();
    assert_eq!(c[0].standing, licd_protocol::Standing::NonCompliant);
    assert_eq!(
        c[0].reason,
        Some(licd_protocol::ComplianceReason::LeaseExpired)
    );
    // Still non-compliant (not unlicensed) a year later, and nothing wakes the shell for it.
    assert!(state_after(&mut e, T0 + 400 * DAY, "wifi").may_run());
}

#[test]
fn an_immediate_service_stops_at_term_end_but_keeps_the_lease_grace() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["a", "b"]);
    // a: the term ends before the lease (no grace at term end);
    // b: the lease lapses first (its grace holds, then the term end cuts it).
    let raw = f.seal_policy(
        f.bundle(
            1,
            T0,
            vec![grant_ending("a", 100, 1_000), grant_ending("b", 1_000, 100)],
        ),
        vec![
            policy("a", Strategy::Immediate, 100, &[]),
            policy("b", Strategy::Immediate, 100, &[]),
        ],
        0,
    );
    e.handle(T0, Input::Bundle(&raw));
    assert_eq!(
        state_after(&mut e, T0 + 100, "a"),
        ServiceState::Unlicensed {
            reason: Reason::TermEnded
        }
    );
    assert!(matches!(
        e.state(&svc("b")),
        ServiceState::Grace {
            reason: Reason::LeaseExpired,
            ..
        }
    ));
    // b's lease grace (600 s) would run to T0 + 700; its term ends at T0 + 1000: grace holds.
    assert!(matches!(
        state_after(&mut e, T0 + 699, "b"),
        ServiceState::Grace { .. }
    ));
    // With a lease renewed past the term, b stops exactly at its term end.
    let raw = f.seal_policy(
        f.bundle(2, T0 + 100, vec![grant_ending("b", 1_000, 5_000)]),
        vec![policy("b", Strategy::Immediate, 100, &[])],
        0,
    );
    e.handle(T0 + 100, Input::Bundle(&raw));
    assert!(matches!(
        state_after(&mut e, T0 + 999, "b"),
        ServiceState::Licensed { .. }
    ));
    assert_eq!(e.next_deadline(), Some(T0 + 1_000));
    assert_eq!(
        state_after(&mut e, T0 + 1_000, "b"),
        ServiceState::Unlicensed {
            reason: Reason::TermEnded
        }
    );
}

#[test]
fn a_125_percent_tolerance_on_a_4_vm_allowance_behaves_at_4_5_and_6_vms() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["vm"]);
    let mut g = grant("vm", T0);
    g.vm_allowance = Some(4);
    let raw = f.seal_policy(
        f.bundle(1, T0, vec![g]),
        vec![policy("vm", Strategy::Restrict, 125, &[])],
        0,
    );
    e.handle(T0, Input::Bundle(&raw));
    e.handle(T0, Input::VmCount(Some(4)));
    assert!(matches!(e.state(&svc("vm")), ServiceState::Licensed { .. }));
    assert!(e.snapshot().services[0].warnings.is_empty());

    e.handle(T0 + 1, Input::VmCount(Some(5)));
    assert!(matches!(e.state(&svc("vm")), ServiceState::Licensed { .. }));
    assert_eq!(
        e.snapshot().services[0].warnings,
        vec![Warning::Overage {
            vms: 5,
            allowance: 4,
            tolerated: 5
        }]
    );
    assert_eq!(e.compliance()[0].overage_vms, Some(1));

    e.handle(T0 + 2, Input::VmCount(Some(6)));
    assert_eq!(
        e.state(&svc("vm")),
        ServiceState::Grace {
            until: T0 + 2 + GRACE,
            reason: Reason::OverVmAllowance
        }
    );
    assert_eq!(
        state_after(&mut e, T0 + 2 + GRACE, "vm"),
        ServiceState::Unlicensed {
            reason: Reason::OverVmAllowance
        }
    );
    // Back within the tolerance: licensed again, with the warning.
    e.handle(T0 + 3 + GRACE, Input::VmCount(Some(5)));
    assert!(matches!(e.state(&svc("vm")), ServiceState::Licensed { .. }));
}

#[test]
fn expiring_soon_fires_once_per_threshold_across_a_restart_and_again_for_a_new_term() {
    let f = Fixture::new();
    let term = 40 * DAY;
    let bundle = |seq, not_after| {
        let mut g = grant_ending("wifi", not_after, 365 * DAY);
        g.not_after = T0 + not_after;
        f.seal_policy(
            f.bundle(seq, T0, vec![g]),
            vec![policy(
                "wifi",
                Strategy::Restrict,
                100,
                &[30 * DAY, 7 * DAY],
            )],
            0,
        )
    };
    let fired = |effects: &[Effect]| -> Vec<u64> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::ExpiringSoon { threshold, .. } => Some(*threshold),
                _ => None,
            })
            .collect()
    };
    let persisted = |effects: &[Effect]| {
        effects.iter().rev().find_map(|e| match e {
            Effect::PersistPolicy(r) => Some(r.clone()),
            _ => None,
        })
    };
    let mut e = f.enforcer(&["wifi"]);
    assert!(fired(&e.handle(T0, Input::Bundle(&bundle(1, term)))).is_empty());
    // The next deadline is the first threshold: the shell wakes for it.
    assert_eq!(e.next_wake(), Some(T0 + 10 * DAY));
    let effects = e.handle(T0 + 10 * DAY, Input::Tick);
    assert_eq!(fired(&effects), vec![30 * DAY]);
    let record = persisted(&effects).expect("persisted at once");
    assert!(fired(&e.handle(T0 + 11 * DAY, Input::Tick)).is_empty());

    // A restart: the persisted record keeps it from firing again.
    let mut e = f.enforcer(&["wifi"]);
    e.restore_policy(record, T0 + 12 * DAY);
    let effects = e
        .restore(&bundle(1, term), T0 + 12 * DAY)
        .expect("restores");
    assert!(fired(&effects).is_empty());
    assert_eq!(
        e.snapshot().services[0].warnings,
        vec![Warning::ExpiringSoon {
            threshold: 30 * DAY
        }]
    );
    let effects = e.handle(T0 + 33 * DAY, Input::Tick);
    assert_eq!(fired(&effects), vec![7 * DAY]);
    assert!(fired(&e.handle(T0 + 34 * DAY, Input::Tick)).is_empty());

    // A renewal (a new term end): both thresholds are new again, once crossed.
    let effects = e.handle(T0 + 34 * DAY, Input::Bundle(&bundle(2, term + 365 * DAY)));
    assert!(fired(&effects).is_empty());
    let effects = e.handle(T0 + term + 335 * DAY, Input::Tick);
    assert_eq!(fired(&effects), vec![30 * DAY]);
}

#[test]
fn crossing_several_thresholds_at_once_fires_one_event_for_the_smallest() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let raw = f.seal_policy(
        f.bundle(1, T0, vec![grant_ending("wifi", 5 * DAY, 365 * DAY)]),
        vec![policy(
            "wifi",
            Strategy::Restrict,
            100,
            &[30 * DAY, 7 * DAY, DAY],
        )],
        0,
    );
    let effects = e.handle(T0, Input::Bundle(&raw));
    let fired: Vec<_> = effects
        .iter()
        .filter(|e| matches!(e, Effect::ExpiringSoon { .. }))
        .collect();
    assert_eq!(
        fired,
        vec![&Effect::ExpiringSoon {
            service: svc("wifi"),
            threshold: 7 * DAY,
            term_ends_at: T0 + 5 * DAY
        }]
    );
}

#[test]
fn malformed_policies_are_refused_as_malformed_and_change_nothing() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    e.handle(
        T0,
        Input::Bundle(&f.seal(&f.bundle(1, T0, vec![grant("wifi", T0)]))),
    );
    let before = e.snapshot();
    for bad in [
        policy("wifi", Strategy::Restrict, 99, &[]),
        policy("wifi", Strategy::Restrict, 100, &[DAY, 7 * DAY]),
        policy("wifi", Strategy::Restrict, 100, &[DAY, DAY]),
        policy("other", Strategy::Restrict, 100, &[]),
    ] {
        let raw = f.seal_policy(f.bundle(2, T0, vec![grant("wifi", T0)]), vec![bad], 0);
        let effects = e.handle(T0 + 1, Input::Bundle(&raw));
        let Some(Effect::Refused(r)) = effects.first() else {
            panic!("not refused: {effects:?}");
        };
        assert_eq!(r.code(), "malformed", "{r}");
        assert_eq!(e.held_seq(), 1);
    }
    // An unknown strategy variant (3): refused the same way.
    let mut payload = postcard::to_allocvec(&PolicyBundle {
        bundle: f.bundle(2, T0, vec![grant("wifi", T0)]),
        policies: vec![policy("wifi", Strategy::Advisory, 100, &[])],
        usage_ack: 0,
    })
    .unwrap();
    let n = payload.len();
    assert_eq!(payload[n - 4], 1, "the strategy byte (advisory)");
    payload[n - 4] = 3;
    let raw = licd_protocol::envelope::seal_bytes(
        licd_protocol::MessageKind::PolicyBundle,
        &f.signing,
        Some(&f.cert),
        &payload,
    );
    let effects = e.handle(T0 + 1, Input::Bundle(&raw));
    assert!(matches!(effects.first(), Some(Effect::Refused(r)) if r.code() == "malformed"));
    let after = e.snapshot();
    assert_eq!(after.services, before.services);
    assert_eq!(after.bundle, before.bundle);
}

#[test]
fn a_plain_bundle_after_a_policy_bundle_is_accepted_with_default_policies() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let raw = f.seal_policy(
        f.bundle(1, T0, vec![grant("wifi", T0)]),
        vec![policy("wifi", Strategy::Advisory, 100, &[])],
        0,
    );
    e.handle(T0, Input::Bundle(&raw));
    assert!(e.held().is_some_and(|h| h.with_policy));
    e.handle(
        T0,
        Input::Bundle(&f.seal(&f.bundle(2, T0, vec![grant("wifi", T0)]))),
    );
    assert_eq!(e.held_seq(), 2);
    assert!(e.held().is_some_and(|h| !h.with_policy));
    assert_eq!(
        state_after(&mut e, T0 + LEASE + GRACE, "wifi"),
        ServiceState::Unlicensed {
            reason: Reason::LeaseExpired
        }
    );
}

#[test]
fn usage_accrues_until_a_bundle_acknowledges_a_report_and_is_then_subtracted_exactly() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    e.handle(
        T0,
        Input::Bundle(&f.seal(&f.bundle(1, T0, vec![grant("wifi", T0)]))),
    );
    e.handle(T0, Input::VmCount(Some(3)));
    e.handle(T0 + LEASE, Input::Tick); // grace starts
    e.handle(T0 + LEASE + 100, Input::Tick);
    let (seq, usage, _, _) = e.prepare_report(T0 + LEASE + 100);
    assert_eq!((seq, usage.window), (1, 0));
    assert_eq!(usage.peak_vm_count, Some(3));
    assert_eq!(usage.grace_seconds[0].seconds, 100);
    e.handle(T0 + LEASE + 150, Input::Tick);
    // A renewal acknowledging report 1: the 100 s it carried are gone, the later 50 remain.
    let raw = f.seal_policy(
        f.bundle(2, T0 + LEASE + 150, vec![grant("wifi", T0 + LEASE + 150)]),
        vec![],
        1,
    );
    let effects = e.handle(T0 + LEASE + 150, Input::Bundle(&raw));
    let record = effects
        .iter()
        .find_map(|e| match e {
            Effect::PersistPolicy(r) => Some(r.clone()),
            _ => None,
        })
        .expect("an acknowledgement is persisted at once");
    assert_eq!(record.window, 1);
    assert_eq!(record.usage.grace_seconds.get(&svc("wifi")), Some(&50));
    let (seq, usage, _, _) = e.prepare_report(T0 + LEASE + 200);
    assert_eq!((seq, usage.window), (2, 1));
    assert_eq!(
        usage.grace_seconds[0].seconds, 50,
        "licensed again: no more grace"
    );
    assert_eq!(
        usage.peak_vm_count,
        Some(3),
        "the peak restarts from the current count"
    );
}

/// One thing that can happen to a service, for the property test.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes.
    Wait(u64),
    /// The VM probe reads a count.
    Vms(u32),
    /// A new bundle renews the lease for `lease` more seconds (the term unchanged).
    Renew(u64),
    /// A new bundle leaves the service out.
    Revoke,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (1u64..2_000).prop_map(Step::Wait),
        (0u32..12).prop_map(Step::Vms),
        (1u64..3_000).prop_map(Step::Renew),
        Just(Step::Revoke),
    ]
}

fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    proptest::prop_oneof![
        proptest::strategy::Just(Strategy::Restrict),
        proptest::strategy::Just(Strategy::Advisory),
        proptest::strategy::Just(Strategy::Immediate)
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 128, ..Default::default() })]

    /// Every strategy and tolerance, against lease end, term end, revocation and VM changes in
    /// any order: the state is always what the rules say.
    #[test]
    fn every_strategy_and_tolerance_follows_its_rule_whatever_the_order(
        strategy in strategy(),
        pct in 100u32..=300,
        term in 500u64..6_000,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let f = Fixture::new();
        let mut e = f.enforcer(&["vm"]);
        let allowance = 4u32;
        let tolerated = allowance * pct / 100;
        let make = |lease_from: UnixTime, lease: u64| {
            let mut g = grant("vm", T0);
            g.not_after = T0 + term;
            g.lease_until = lease_from + lease;
            g.vm_allowance = Some(allowance);
            g
        };
        let mut seq = 1;
        let mut now = T0;
        let mut vms: Option<u32> = None;
        let mut revoked = false;
        e.handle(now, Input::Bundle(&f.seal_policy(
            f.bundle(seq, now, vec![make(now, 1_000)]),
            vec![policy("vm", strategy, pct, &[])],
            0,
        )));
        let mut grace_bound = 0u64;
        for s in steps {
            match s {
                Step::Wait(d) => now += d,
                Step::Vms(n) => vms = Some(n),
                Step::Renew(lease) => {
                    seq += 1;
                    revoked = false;
                    e.handle(now, Input::Bundle(&f.seal_policy(
                        f.bundle(seq, now, vec![make(now, lease)]),
                        vec![policy("vm", strategy, pct, &[])],
                        0,
                    )));
                }
                Step::Revoke => {
                    seq += 1;
                    revoked = true;
                    e.handle(now, Input::Bundle(&f.seal(&f.bundle(seq, now, vec![]))));
                }
            }
            if let Step::Vms(n) = s {
                e.handle(now, Input::VmCount(Some(n)));
            } else {
                e.handle(now, Input::Tick);
            }
            grace_bound = now - T0;
            let state = e.state(&svc("vm"));
            let reason = state.reason();
            // Revocation: unlicensed at once, whatever the strategy.
            if revoked {
                proptest::prop_assert_eq!(state, ServiceState::Unlicensed { reason: Reason::Revoked });
                continue;
            }
            // Only the advisory strategy knows non-compliance, and it never stops the
            // service for lease, term or VMs.
            if strategy == Strategy::Advisory {
                proptest::prop_assert!(state.may_run(), "advisory stopped: {state}");
            } else {
                let non_compliant = matches!(state, ServiceState::NonCompliant { .. });
                proptest::prop_assert!(!non_compliant, "non-compliant under {:?}", strategy);
            }
            // Immediate: no grace at all from the term end on.
            if strategy == Strategy::Immediate && now >= T0 + term {
                proptest::prop_assert_eq!(state, ServiceState::Unlicensed { reason: Reason::TermEnded });
            }
            // Within the tolerance, VMs are never a reason; above it they always weigh.
            let within = vms.is_none_or(|n| n <= tolerated);
            if within {
                proptest::prop_assert_ne!(reason, Some(Reason::OverVmAllowance));
            } else {
                let licensed = matches!(state, ServiceState::Licensed { .. });
                proptest::prop_assert!(!licensed, "over tolerance yet licensed");
            }
            // The overage warning shows exactly between the allowance and the tolerance.
            let warned = e.snapshot().services[0]
                .warnings
                .iter()
                .any(|w| matches!(w, Warning::Overage { .. }));
            let overage = vms.is_some_and(|n| n > allowance && n <= tolerated) && state.may_run();
            proptest::prop_assert_eq!(warned, overage);
        }
        // Grace seconds never exceed the time that passed.
        let g = e.policy_record().usage.grace_seconds.get(&svc("vm")).copied().unwrap_or(0);
        proptest::prop_assert!(g <= grace_bound, "{g} s of grace in {grace_bound} s");
    }

    /// Counters saturate: no sequence of refusals, reports and acknowledgements wraps them.
    #[test]
    fn usage_counters_saturate_and_acks_never_add(
        start in (u32::MAX - 50)..=u32::MAX,
        ops in proptest::collection::vec(0u8..3, 1..100),
    ) {
        let mut r = PolicyRecord::default();
        r.usage.refusals = start;
        let mut last = r.usage.refusals;
        for op in ops {
            match op {
                0 => r.usage.add_refusal(),
                1 => { r.next_report(); }
                _ => { let seq = r.report_seq; r.acknowledge(seq, None); }
            }
            if op == 0 {
                proptest::prop_assert!(r.usage.refusals >= last);
            } else {
                proptest::prop_assert!(r.usage.refusals <= last);
            }
            last = r.usage.refusals;
        }
    }
}

#[test]
fn grace_time_is_persisted_at_least_every_five_minutes_without_other_wake_ups() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let mut g = grant("wifi", T0);
    g.grace = 10 * DAY;
    e.handle(T0, Input::Bundle(&f.seal(&f.bundle(1, T0, vec![g]))));
    e.handle(T0 + LEASE, Input::Tick); // grace starts; it ends in 10 days
    let mut at = T0 + LEASE;
    for _ in 0..3 {
        let wake = e.next_wake().expect("a wake-up");
        assert!(
            wake <= at + USAGE_PERSIST_INTERVAL,
            "woken at {wake}, {at} + 300"
        );
        let effects = e.handle(wake, Input::Tick);
        if let Some(r) = effects.iter().find_map(|e| match e {
            Effect::PersistPolicy(r) => Some(r),
            _ => None,
        }) {
            assert_eq!(r.usage.grace_seconds[&svc("wifi")], wake - (T0 + LEASE));
            at = wake;
        }
    }
    assert!(at > T0 + LEASE, "grace time was never persisted");
}
