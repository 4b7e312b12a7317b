//! The report kind negotiated with the controller (PROTOCOL.md §17.6): an enforcer with its
//! real report schedule against simulated controllers that answer with real signed bundles —
//! one that speaks policy, one that predates it (drops extended reports), one that reads
//! extended reports but answers plain bundles — with outages and restarts.

use super::*;
use licd_protocol::policy::seal_policy_bundle;
use licd_protocol::PolicyBundle;

const DAY: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    /// Answers extended reports with policy bundles, plain ones with plain bundles.
    Speaks,
    /// Predates §17: drops extended reports, answers plain ones.
    Old,
    /// Reads extended reports but answers every report with a plain bundle.
    PlainOnly,
}

struct Sim {
    f: Fixture,
    e: Enforcer,
    controller: Controller,
    seq: u64,
    interval: u64,
    /// (time, extended, answered) per report sent.
    reports: Vec<(UnixTime, bool, bool)>,
    changes: Vec<(UnixTime, Negotiated)>,
}

impl Sim {
    fn new(controller: Controller, mode: ExtendedReports, interval: u64, seed: u64) -> Self {
        let f = Fixture::new();
        let mut e = f.enforcer(&["wifi"]);
        e.set_report_policy(ReportPolicy::with_interval(interval), seed);
        e.set_extended_reports(mode);
        Self {
            f,
            e,
            controller,
            seq: 0,
            interval,
            reports: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn answer(&mut self, now: UnixTime, policy: bool) -> Vec<u8> {
        self.seq += 1;
        let mut g = grant("wifi", now);
        g.lease_until = now + 30 * DAY;
        let mut b = self.f.bundle(self.seq, now, vec![g]);
        b.refresh_after = now + self.interval / 2;
        if policy {
            seal_policy_bundle(
                &PolicyBundle {
                    bundle: b,
                    policies: vec![],
                    usage_ack: 0,
                },
                &self.f.signing,
                &self.f.cert,
            )
        } else {
            self.f.seal(&b)
        }
    }

    fn apply(&mut self, now: UnixTime, effects: Vec<Effect>, down: bool) {
        let mut report = false;
        for e in effects {
            match e {
                Effect::Report(_) => report = true,
                Effect::Negotiated(n) => self.changes.push((now, n)),
                _ => {}
            }
        }
        if !report {
            return;
        }
        let (extended, change) = self.e.next_report_kind(now);
        if let Some(n) = change {
            self.changes.push((now, n));
        }
        let answer = match (down, self.controller, extended) {
            (true, _, _) | (false, Controller::Old, true) => None,
            (false, Controller::Speaks, true) => Some(true),
            (false, _, _) => Some(false),
        };
        self.reports.push((now, extended, answer.is_some()));
        if let Some(policy) = answer {
            let raw = self.answer(now, policy);
            let effects = self.e.handle(now, Input::Bundle(&raw));
            assert!(
                effects.iter().any(|e| matches!(e, Effect::Accepted { .. })),
                "{effects:?}"
            );
            self.apply(now, effects, down);
        }
    }

    /// Runs until `until`, waking when the enforcer asks; the controller is down (answers
    /// nothing) during `outages`.
    fn run(&mut self, from: UnixTime, until: UnixTime, outages: &[(UnixTime, UnixTime)]) {
        let effects = self.e.handle(from, Input::Connected);
        let down = |t: UnixTime| outages.iter().any(|&(a, b)| a <= t && t < b);
        self.apply(from, effects, down(from));
        while let Some(t) = self.e.next_wake().filter(|&t| t <= until) {
            let effects = self.e.handle(t, Input::Tick);
            self.apply(t, effects, down(t));
        }
    }

    /// A restart: the policy record (with the negotiation) goes to disk and back.
    fn restart(&mut self, now: UnixTime, mode: ExtendedReports) {
        let _ = self.e.flush_policy(now);
        let record = PolicyRecord::decode(&self.e.policy_record().encode()).unwrap();
        let held = self.e.held().map(|h| h.raw.clone());
        let mut e = self.f.enforcer(&["wifi"]);
        e.set_report_policy(ReportPolicy::with_interval(self.interval), 7);
        e.set_extended_reports(mode);
        e.restore_policy(record, now);
        if let Some(raw) = held {
            e.restore(&raw, now).unwrap();
        }
        self.e = e;
    }

    /// The longest stretch (seconds) from a report nobody answered to the next answered
    /// report, counting only reports sent outside `outages`.
    fn longest_unanswered(&self, outages: &[(UnixTime, UnixTime)], until: UnixTime) -> u64 {
        let down = |t: UnixTime| outages.iter().any(|&(a, b)| a <= t && t < b);
        let mut worst = 0;
        let mut since = None;
        for &(t, _, answered) in &self.reports {
            if answered {
                if let Some(s) = since.take() {
                    worst = worst.max(t - s);
                }
            } else if !down(t) {
                since.get_or_insert(t);
            }
        }
        if let Some(s) = since {
            worst = worst.max(until - s);
        }
        worst
    }
}

/// After an outage or an unanswered report, the device hears back within this long when the
/// controller answers plain reports: the fallback needs [`FALLBACK_AFTER`] reports over the
/// span, the reports after the first are at most an interval apart, then one more report.
fn bound(interval: u64) -> u64 {
    interval.min(FALLBACK_SPAN_MAX) + u64::from(FALLBACK_AFTER + 1) * interval
}

#[test]
fn a_controller_that_speaks_policy_confirms_it_and_the_device_keeps_sending_extended_reports() {
    let mut s = Sim::new(Controller::Speaks, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + 3 * DAY, &[]);
    assert!(s.reports.len() > 100, "{}", s.reports.len());
    assert!(s.reports.iter().all(|&(_, ext, ans)| ext && ans));
    assert_eq!(s.changes, vec![(T0, Negotiated::Confirmed)]);
    assert_eq!(s.e.snapshot().reports.kind, "extended");
    assert!(s.e.snapshot().reports.confirmed);
}

#[test]
fn an_old_controller_gets_three_extended_reports_over_the_span_then_plain_ones_for_a_day() {
    let mut s = Sim::new(Controller::Old, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + DAY / 2, &[]);
    // Reports at T0, +5 s, +15 s, … : three go unanswered, and the fallback waits for the
    // span (10 minutes here, under the hour's interval).
    let first_plain = s.reports.iter().position(|r| !r.1).unwrap();
    assert!(first_plain >= FALLBACK_AFTER as usize, "{:?}", s.reports);
    let (t, _, answered) = s.reports[first_plain];
    assert!(answered);
    assert!(
        (T0 + FALLBACK_SPAN_MAX..T0 + FALLBACK_SPAN_MAX + 3_600).contains(&t),
        "{t}"
    );
    assert!(s.reports[first_plain..]
        .iter()
        .all(|&(_, ext, ans)| !ext && ans));
    assert!(matches!(
        s.changes.as_slice(),
        [(_, Negotiated::NoAnswer { reports, secs })] if *reports >= FALLBACK_AFTER && *secs >= FALLBACK_SPAN_MAX
    ));
    let snap = s.e.snapshot();
    assert_eq!(
        (
            snap.reports.kind,
            snap.reports.confirmed,
            snap.reports.plain_since
        ),
        ("plain", false, Some(t))
    );
}

#[test]
fn a_plain_bundle_answering_an_extended_report_falls_back_at_once() {
    let mut s = Sim::new(Controller::PlainOnly, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + DAY / 2, &[]);
    assert_eq!(s.reports[0], (T0, true, true));
    assert!(s.reports[1..].iter().all(|&(_, ext, ans)| !ext && ans));
    assert_eq!(s.changes, vec![(T0, Negotiated::PlainAnswer)]);
}

#[test]
fn after_falling_back_extended_reports_are_tried_again_a_day_later_and_an_upgrade_is_found() {
    let mut s = Sim::new(Controller::Old, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + DAY + 3_600, &[]);
    let retries: Vec<_> = s
        .changes
        .iter()
        .filter(|(_, n)| *n == Negotiated::Retry { new_signer: false })
        .collect();
    assert_eq!(retries.len(), 1, "{:?}", s.changes);
    assert!(retries[0].0 >= T0 + DAY, "{retries:?}");
    // The controller is upgraded: the next retry confirms it.
    let now = s.reports.last().unwrap().0;
    s.controller = Controller::Speaks;
    s.run(now, now + 2 * DAY, &[]);
    assert_eq!(s.changes.last().unwrap().1, Negotiated::Confirmed);
    assert!(s.reports.last().unwrap().1, "extended again");
    assert_eq!(s.e.snapshot().reports.kind, "extended");
}

#[test]
fn a_bundle_from_a_new_controller_signing_key_tries_extended_reports_again_at_once() {
    let mut s = Sim::new(Controller::Old, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + 3_600, &[]);
    assert_eq!(s.e.snapshot().reports.kind, "plain");
    // The controller is replaced: a new signing key, and it speaks policy.
    let root = key(1);
    let signing = key(9);
    s.f.cert = licd_protocol::SignerCertificate::issue(
        &root,
        licd_protocol::PublicKey::from(&signing.verifying_key()),
        T0 - 86_400,
        T0 + 365 * 86_400,
    );
    s.f.signing = signing;
    s.controller = Controller::Speaks;
    let now = T0 + 7_200;
    let raw = s.answer(now, false);
    let effects = s.e.handle(now, Input::Bundle(&raw));
    assert!(effects.contains(&Effect::Negotiated(Negotiated::Retry { new_signer: true })));
    assert_eq!(s.e.snapshot().reports.kind, "extended");
    s.run(now, now + DAY, &[]);
    assert!(s.changes.iter().any(|c| c.1 == Negotiated::Confirmed));
    assert!(s.reports.last().unwrap().1);
}

#[test]
fn a_restart_neither_probes_an_old_controller_again_nor_forgets_a_confirmation() {
    let mut s = Sim::new(Controller::Old, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + 3_600, &[]);
    let fell_back = s.changes.len();
    s.restart(T0 + 3_700, ExtendedReports::Auto);
    s.run(T0 + 3_700, T0 + 7_200, &[]);
    assert_eq!(s.changes.len(), fell_back, "{:?}", s.changes);
    assert!(!s.reports.last().unwrap().1);

    let mut s = Sim::new(Controller::Speaks, ExtendedReports::Auto, 3_600, 1);
    s.run(T0, T0 + 3_600, &[]);
    s.restart(T0 + 3_700, ExtendedReports::Auto);
    assert!(s.e.snapshot().reports.confirmed);
    s.run(T0 + 3_700, T0 + 7_200, &[]);
    assert_eq!(s.changes, vec![(T0, Negotiated::Confirmed)]);
}

#[test]
fn true_and_false_mean_always_and_never_whatever_the_controller_answers() {
    let mut s = Sim::new(Controller::PlainOnly, ExtendedReports::Always, 3_600, 1);
    s.run(T0, T0 + DAY, &[]);
    assert!(s.reports.iter().all(|r| r.1));
    let mut s = Sim::new(Controller::Speaks, ExtendedReports::Never, 3_600, 1);
    s.run(T0, T0 + DAY, &[]);
    assert!(s.reports.iter().all(|r| !r.1 && r.2));
    assert!(s.changes.is_empty());
}

#[test]
fn a_report_that_could_not_be_queued_does_not_count_towards_the_fallback() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    e.set_extended_reports(ExtendedReports::Auto);
    e.handle(T0, Input::Connected);
    for i in 0..10 {
        assert_eq!(e.next_report_kind(T0 + i * 1_000), (true, None));
        e.handle(T0 + i * 1_000, Input::ReportNotQueued);
    }
    assert_eq!(e.policy_record().negotiation.unanswered, 0);
}

fn controller() -> impl proptest::strategy::Strategy<Value = Controller> {
    proptest::prop_oneof![
        proptest::strategy::Just(Controller::Speaks),
        proptest::strategy::Just(Controller::Old),
        proptest::strategy::Just(Controller::PlainOnly),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 24, ..Default::default() })]

    /// Never stuck without answered reports: whatever the controller (it answers plain
    /// reports), the report interval, controller outages and restarts, a report outside an
    /// outage is followed by an answered one within the bound; a controller that speaks policy
    /// and never goes down always gets extended reports; an old one is probed again at most
    /// once a day.
    #[test]
    fn never_stuck_without_answered_reports_when_the_controller_answers_plain_ones(
        controller in controller(),
        interval in 60u64..=7_200,
        seed in proptest::prelude::any::<u64>(),
        outages in proptest::collection::vec((0u64..3 * DAY, 1u64..7_200), 0..3),
        restart_at in proptest::option::of(0u64..3 * DAY),
    ) {
        let outages: Vec<_> = outages.iter().map(|&(a, len)| (T0 + a, T0 + a + len)).collect();
        let until = T0 + 3 * DAY;
        let mut s = Sim::new(controller, ExtendedReports::Auto, interval, seed);
        match restart_at {
            Some(r) => {
                s.run(T0, T0 + r, &outages);
                s.restart(T0 + r, ExtendedReports::Auto);
                s.run(T0 + r, until, &outages);
            }
            None => s.run(T0, until, &outages),
        }
        // A stretch that spans an outage may last as long as the outage too.
        let longest = s.longest_unanswered(&outages, until);
        let slack = outages.iter().map(|o| o.1 - o.0).sum::<u64>();
        proptest::prop_assert!(
            longest <= bound(interval) + slack,
            "unanswered for {} s (bound {}), {:?}", longest, bound(interval), s.changes
        );
        if controller == Controller::Speaks && outages.is_empty() {
            proptest::prop_assert!(s.reports.iter().all(|r| r.1 && r.2));
        }
        if controller != Controller::Speaks {
            let probes = s.changes.iter().filter(|c| matches!(c.1, Negotiated::Retry { .. })).count();
            proptest::prop_assert!(probes <= 3, "{:?}", s.changes);
        }
    }
}
