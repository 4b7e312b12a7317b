//! Usage counted once (PROTOCOL.md §17.3) in the engine: the worked example step by step, and
//! a property test pitting a model of the device's half against the engine under lost,
//! repeated and late reports, lost acknowledgements, device crashes and controller restarts.

use std::collections::BTreeMap;

use licd_protocol::{ExtendedReport, ServiceSeconds, Usage};
use proptest::prelude::*;

use super::tests::{add_sub, fixture, report, svc, t, T0};
use super::usage::{UsageOutcome, UsageWindow};
use super::*;

fn key() -> DeviceKey {
    (t("a"), "ap1".parse().unwrap())
}

fn ext(seq: u64, window: u64, grace: u64) -> ExtendedReport {
    ExtendedReport {
        report: report("a", "ap1", "ap", &["wifi"]),
        report_seq: seq,
        usage: Usage {
            window,
            peak_vm_count: Some(u32::try_from(seq % 7).unwrap_or(0)),
            refusals: 0,
            grace_seconds: if grace == 0 {
                Vec::new()
            } else {
                vec![ServiceSeconds {
                    service: svc("wifi"),
                    seconds: grace,
                }]
            },
        },
        compliance: Vec::new(),
    }
}

fn engine() -> Engine {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 5);
    let _ = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0)
        .unwrap();
    e
}

/// The ledger's history table, as [`crate::ledger::Ledger::save`] upserts it: by key, a closed
/// row never changes again.
#[derive(Default)]
struct History(BTreeMap<(DeviceKey, u64, u64), UsageWindow>);

impl History {
    fn take(&mut self, e: &mut Engine) {
        for w in e.take_dirty().usage_windows {
            let k = (w.device.clone(), w.chain, w.window);
            if self.0.get(&k).is_none_or(|old| !old.closed) {
                self.0.insert(k, w);
            }
        }
    }

    fn grace(&self) -> u64 {
        self.0
            .values()
            .map(|w| w.counters.grace_seconds.values().sum::<u64>())
            .sum()
    }
}

#[test]
fn the_worked_example_of_the_protocol_counts_1500_seconds() {
    let mut e = engine();
    let mut h = History::default();
    let send = |e: &mut Engine, h: &mut History, r: ExtendedReport| {
        let fx = e.handle_extended_report(&r, T0).unwrap();
        h.take(e);
        fx
    };
    // 1: report 1 (g 600); its acknowledging bundle (2) is lost.
    let fx = send(&mut e, &mut h, ext(1, 0, 600));
    assert_eq!(e.usage_ack(&key()), 1);
    assert!(!fx.publish.is_empty(), "a stored report is acknowledged");
    // 3: report 2 (g 900), same window: acks 2.
    let _ = send(&mut e, &mut h, ext(2, 0, 900));
    assert_eq!(e.usage_ack(&key()), 2);
    assert_eq!(h.grace(), 900);
    // 5: report 2 again (a QoS 1 duplicate): nothing changes, no bundle for it.
    let key = key();
    assert_eq!(
        e.record_usage(&key, &ext(2, 0, 900), T0),
        UsageOutcome::Duplicate
    );
    h.take(&mut e);
    assert_eq!(h.grace(), 900);
    // 6: report 3, window 2 (the device applied ack 2): closes window 0 at report 2.
    let _ = send(&mut e, &mut h, ext(3, 2, 400));
    assert_eq!(h.grace(), 1300);
    assert_eq!(e.usage_ack(&key), 3);
    // 8: controller restart: the engine comes back from its state (the ledger's rows).
    let mut e = Engine::from_state(e.state().clone(), e.lease_policy());
    // A late report of window 0 changes nothing.
    assert_eq!(
        e.record_usage(&key, &ext(1, 0, 600), T0),
        UsageOutcome::ClosedWindow
    );
    // 9: report 5 (4 was lost to the crash), window 2, g 600.
    let _ = send(&mut e, &mut h, ext(5, 2, 600));
    assert_eq!(h.grace(), 1500);
    let closed: Vec<_> = h.0.values().filter(|w| w.closed).collect();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].window, closed[0].last_seq), (0, 2));
}

#[test]
fn an_agent_without_the_policy_kinds_gets_no_grace_for_an_immediate_service() {
    let mut e = engine();
    let fx = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    let b = fx.publish[0].clone();
    assert!(b.grants.iter().all(|g| g.grace > 0));
    assert_eq!(e.plain_bundle(&b), b, "restrict: sent as issued");
    let _ = e
        .set_sku_policy(
            &super::tests::sku("LIC-AP"),
            policy::Policy {
                strategy: Some(policy::Strategy::Immediate),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    let b = e.issue(&key(), e.basis(&key()).unwrap(), T0 + 1).unwrap();
    assert!(
        e.policy_bundle(&b).is_none(),
        "a plain report: a plain bundle"
    );
    let plain = e.plain_bundle(&b);
    assert!(!plain.grants.is_empty());
    assert!(plain.grants.iter().all(|g| g.grace == 0), "{plain:?}");
}

#[test]
fn a_plain_report_gets_a_plain_bundle_and_an_extended_one_a_policy_bundle() {
    let mut e = engine();
    let fx = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    assert!(e.policy_bundle(&fx.publish[0]).is_none());
    let _ = e
        .set_sku_policy(
            &super::tests::sku("LIC-AP"),
            policy::Policy {
                strategy: Some(policy::Strategy::Advisory),
                warn_before: Some(vec![600, 60]),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    let mut r = ext(1, 0, 0);
    r.report.bundle_seq = e.state().devices[&key()].bundle.seq;
    let fx = e.handle_extended_report(&r, T0 + 1).unwrap();
    let pb = e.policy_bundle(&fx.publish[0]).unwrap();
    assert_eq!(pb.usage_ack, 1);
    assert_eq!(pb.policies.len(), 1);
    assert_eq!(pb.policies[0].strategy, licd_protocol::Strategy::Advisory);
    assert_eq!(pb.policies[0].warn_before, vec![600, 60]);
    assert_eq!(pb.validate(), Ok(()));
    // Back to a plain report (an agent downgraded): plain bundles again.
    let fx = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0 + 2)
        .unwrap();
    let b = fx
        .publish
        .first()
        .cloned()
        .unwrap_or_else(|| e.issue(&key(), e.basis(&key()).unwrap(), T0 + 3).unwrap());
    assert!(e.policy_bundle(&b).is_none());
}

/// What the network and the parties do, one step at a time.
#[derive(Debug, Clone)]
enum Step {
    /// The device accrues grace seconds.
    Accrue(u16),
    /// The device sends a report; it is delivered, lost, or delivered twice.
    Report { lost: bool, twice: bool },
    /// A report sent earlier is delivered (late, maybe again).
    Late(u8),
    /// The newest bundle the controller issued reaches the device (or an older one does).
    Bundle { older: u8 },
    /// The device crashes after taking a seq, before sending (kill -9).
    Crash,
    /// The controller restarts from its stored state.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u16..500).prop_map(Step::Accrue),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(lost, twice)| Step::Report { lost, twice }),
        1 => any::<u8>().prop_map(Step::Late),
        3 => (0u8..3).prop_map(|older| Step::Bundle { older }),
        1 => Just(Step::Crash),
        1 => Just(Step::Restart),
    ]
}

/// The device's half of §17.3.
#[derive(Default)]
struct DeviceModel {
    last_seq: u64,
    window: u64,
    grace: u64,
    sent: Vec<(u64, u64)>,
    /// Everything ever accrued, at the time of each report seq.
    total_at: BTreeMap<u64, u64>,
    total: u64,
}

impl DeviceModel {
    fn report(&mut self) -> ExtendedReport {
        self.last_seq += 1;
        self.sent.push((self.last_seq, self.grace));
        if self.sent.len() > 8 {
            self.sent.remove(0);
        }
        self.total_at.insert(self.last_seq, self.total);
        ext(self.last_seq, self.window, self.grace)
    }

    fn ack(&mut self, a: u64) {
        if let Some(&(_, carried)) = self.sent.iter().find(|(s, _)| *s == a) {
            self.grace = self.grace.saturating_sub(carried);
            self.window = a;
            self.sent.clear();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever is lost, repeated, late or restarted, the history holds exactly what the
    /// device had accrued when it sent the report the controller acknowledges: nothing twice,
    /// nothing lost.
    #[test]
    fn usage_is_counted_once_whatever_the_network_and_restarts_do(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        let mut e = engine();
        let mut h = History::default();
        let mut dev = DeviceModel::default();
        let mut sent: Vec<ExtendedReport> = Vec::new();
        let mut acks: Vec<u64> = Vec::new();
        let deliver = |e: &mut Engine, h: &mut History, acks: &mut Vec<u64>, r: &ExtendedReport| {
            let _ = e.handle_extended_report(r, T0).unwrap();
            h.take(e);
            acks.push(e.usage_ack(&key()));
        };
        for s in steps {
            match s {
                Step::Accrue(x) => {
                    dev.grace += u64::from(x);
                    dev.total += u64::from(x);
                }
                Step::Report { lost, twice } => {
                    let r = dev.report();
                    sent.push(r.clone());
                    if !lost {
                        deliver(&mut e, &mut h, &mut acks, &r);
                        if twice {
                            deliver(&mut e, &mut h, &mut acks, &r);
                        }
                    }
                }
                Step::Late(i) => {
                    if !sent.is_empty() {
                        let r = sent[usize::from(i) % sent.len()].clone();
                        deliver(&mut e, &mut h, &mut acks, &r);
                    }
                }
                Step::Bundle { older } => {
                    if let Some(&a) = acks.iter().rev().nth(usize::from(older)) {
                        dev.ack(a);
                    }
                }
                Step::Crash => {
                    // The seq was taken and persisted, the report never left.
                    dev.last_seq += 1;
                }
                Step::Restart => {
                    e = Engine::from_state(e.state().clone(), e.lease_policy());
                }
            }
            let ack = e.usage_ack(&key());
            let expected = dev.total_at.get(&ack).copied().unwrap_or(0);
            prop_assert_eq!(h.grace(), expected, "ack {}", ack);
        }
    }
}

#[test]
fn a_device_that_lost_its_record_starts_a_new_chain_and_nothing_is_counted_twice() {
    let mut e = engine();
    let mut h = History::default();
    let at = |seq, window, grace, clock| {
        let mut r = ext(seq, window, grace);
        r.report.clock = clock;
        r
    };
    for r in [at(1, 0, 100, T0), at(2, 0, 300, T0 + 10)] {
        let _ = e.handle_extended_report(&r, T0).unwrap();
        h.take(&mut e);
    }
    assert_eq!(h.grace(), 300);
    let key = key();
    // A late copy of report 1 (earlier clock): a duplicate, not a reset.
    assert_eq!(
        e.record_usage(&key, &at(1, 0, 100, T0), T0),
        UsageOutcome::Duplicate
    );
    // The record was lost: seq 1 again, window 0, a later clock — a new chain.
    let _ = e
        .handle_extended_report(&at(1, 0, 50, T0 + 100), T0)
        .unwrap();
    h.take(&mut e);
    assert_eq!(
        h.grace(),
        350,
        "the old chain closed at 300, the new one has 50"
    );
    assert_eq!(e.state().devices[&key].usage.chain, 1);
    let _ = e
        .handle_extended_report(&at(2, 0, 80, T0 + 110), T0)
        .unwrap();
    h.take(&mut e);
    assert_eq!(h.grace(), 380);
}

#[test]
fn a_device_that_lost_its_record_with_its_clock_set_back_is_recognised_once_its_seq_passes_the_highest(
) {
    let mut e = engine();
    let mut h = History::default();
    let key = key();
    let at = |seq, window, grace, clock| {
        let mut r = ext(seq, window, grace);
        r.report.clock = clock;
        r
    };
    // Window 0 closes at report 2 (the device applied ack 2); report 3 is in window 2.
    for r in [
        at(1, 0, 100, T0),
        at(2, 0, 300, T0 + 10),
        at(3, 2, 40, T0 + 20),
    ] {
        let _ = e.handle_extended_report(&r, T0).unwrap();
        h.take(&mut e);
    }
    assert_eq!(h.grace(), 340);
    // Record and time mark lost: seqs restart at 1 with a clock from 1970. Not above the
    // highest seq (3) and no later clock: indistinguishable from late old reports, ignored —
    // and not acknowledged, so the device keeps its counters.
    for (seq, grace) in [(1, 10), (2, 20), (3, 30)] {
        assert_eq!(
            e.record_usage(&key, &at(seq, 0, grace, 5), T0),
            UsageOutcome::ClosedWindow,
            "seq {seq}"
        );
    }
    assert_eq!(h.grace(), 340);
    // Seq 4 in window 0 after window 2 opened: only a reset device sends that.
    let _ = e.handle_extended_report(&at(4, 0, 45, 15), T0).unwrap();
    h.take(&mut e);
    assert_eq!(e.state().devices[&key].usage.chain, 1, "a new chain");
    assert_eq!(
        h.grace(),
        300 + 40 + 45,
        "old chain closed at 340, new one 45, none twice"
    );
    // The new chain goes on in its window 0.
    let _ = e.handle_extended_report(&at(5, 0, 50, 16), T0).unwrap();
    h.take(&mut e);
    assert_eq!(h.grace(), 390);
    // A late copy of the lost chain's report 2 (its clock later than the new chain's, but
    // not than every clock seen) is not taken for another reset.
    let _ = e.record_usage(&key, &at(2, 0, 300, T0 + 10), T0);
    assert_eq!(e.state().devices[&key].usage.chain, 1);
}
