//! The licensing policy a grant carries (docs/PROTOCOL.md §17): the state rule per strategy
//! and tolerance, expiring-soon thresholds, and the usage ledger kept until the controller
//! acknowledges it — with the record (`policy.v1.bin`) that carries thresholds fired and usage
//! across restarts. Pure: time is an argument.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::limits::{MAX_SERVICES, MAX_WARN_THRESHOLDS};
use licd_protocol::{
    ServiceGrant, ServiceName, ServicePolicy, ServiceSeconds, Strategy, UnixTime, Usage,
};
use serde::{Deserialize, Serialize};

use super::negotiate::Negotiation;
use super::state::{evaluate, min_opt, Evaluation, Reason, ServiceState};

/// How many reports sent in the open window the device remembers (an acknowledgement of an
/// older one is ignored; the controller acknowledges a later one).
pub const MAX_SENT_REMEMBERED: usize = 8;

/// Usage counters grown but not yet persisted are written at least this often (a kill -9
/// loses at most this much accrual, never counts any twice).
pub const USAGE_PERSIST_INTERVAL: u64 = 300;

/// The state of one granted service at `now` under `policy` (§17.1):
///
/// - restrict: exactly [`evaluate`];
/// - immediate: the worse of [`evaluate`] and the term with no grace (unlicensed from
///   `not_after` on, even while a lease grace would run: only the lease keeps its grace, as a
///   lapse is an outage, not a licensing decision);
/// - advisory: [`evaluate`], but where it says unlicensed for lease, term or VMs the service is
///   non-compliant — allowed to run, shown with the reason.
///
/// `over_vm_since` is since when the host runs more VMs than the policy tolerates.
pub fn evaluate_with_policy(
    grant: &ServiceGrant,
    policy: &ServicePolicy,
    now: UnixTime,
    over_vm_since: Option<UnixTime>,
) -> Evaluation {
    let base = evaluate(grant, now, over_vm_since);
    match policy.strategy {
        Strategy::Restrict => base,
        Strategy::Immediate => {
            if now >= grant.not_before && now >= grant.not_after {
                Evaluation {
                    state: ServiceState::Unlicensed {
                        reason: Reason::TermEnded,
                    },
                    next_change: None,
                }
            } else if now >= grant.not_before {
                Evaluation {
                    state: base.state,
                    next_change: min_opt(base.next_change, Some(grant.not_after)),
                }
            } else {
                base
            }
        }
        Strategy::Advisory => match base.state {
            ServiceState::Unlicensed {
                reason:
                    reason @ (Reason::LeaseExpired | Reason::TermEnded | Reason::OverVmAllowance),
            } => Evaluation {
                state: ServiceState::NonCompliant { reason },
                next_change: None,
            },
            _ => base,
        },
    }
}

/// The expiring-soon thresholds of `policy` crossed at `now` in the term ending `not_after`
/// (largest first), and the next time one is crossed.
pub fn thresholds_crossed(
    not_after: UnixTime,
    policy: &ServicePolicy,
    now: UnixTime,
) -> (Vec<u64>, Option<UnixTime>) {
    if now >= not_after {
        return (Vec::new(), None);
    }
    let mut crossed = Vec::new();
    let mut next = None;
    for &w in &policy.warn_before {
        let at = not_after.saturating_sub(w);
        if now >= at {
            crossed.push(w);
        } else {
            next = min_opt(next, Some(at));
        }
    }
    (crossed, next)
}

/// Thresholds already fired for one service's current term.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// The term they belong to: a grant with another `not_after` starts over.
    pub not_after: UnixTime,
    /// Thresholds fired (seconds before `not_after`).
    pub thresholds: BTreeSet<u64>,
}

/// Usage counters (PROTOCOL.md §17.2), saturating.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Most VMs seen.
    pub peak_vm_count: Option<u32>,
    /// Messages refused.
    pub refusals: u32,
    /// Seconds in grace per service.
    pub grace_seconds: BTreeMap<ServiceName, u64>,
}

impl Counters {
    /// Counts one refused message (saturating).
    pub fn add_refusal(&mut self) {
        self.refusals = self.refusals.saturating_add(1);
    }

    /// Counts a VM reading into the peak.
    pub fn see_vms(&mut self, count: u32) {
        self.peak_vm_count = Some(self.peak_vm_count.map_or(count, |p| p.max(count)));
    }

    /// Adds `seconds` in grace for `service` (saturating). At most [`MAX_SERVICES`] services
    /// are tracked (a bundle grants no more).
    pub fn add_grace(&mut self, service: &ServiceName, seconds: u64) {
        if seconds == 0 {
            return;
        }
        if let Some(s) = self.grace_seconds.get_mut(service) {
            *s = s.saturating_add(seconds);
        } else if self.grace_seconds.len() < MAX_SERVICES {
            self.grace_seconds.insert(service.clone(), seconds);
        }
    }

    /// Removes what `acked` carried (saturating), for a window closing at it. The peak starts
    /// again from `current_vms`.
    pub fn subtract(&mut self, acked: &Counters, current_vms: Option<u32>) {
        self.refusals = self.refusals.saturating_sub(acked.refusals);
        for (service, secs) in &acked.grace_seconds {
            if let Some(s) = self.grace_seconds.get_mut(service) {
                *s = s.saturating_sub(*secs);
            }
        }
        self.grace_seconds.retain(|_, s| *s > 0);
        self.peak_vm_count = current_vms;
    }

    fn to_wire(&self, window: u64) -> Usage {
        Usage {
            window,
            peak_vm_count: self.peak_vm_count,
            refusals: self.refusals,
            grace_seconds: self
                .grace_seconds
                .iter()
                .map(|(service, &seconds)| ServiceSeconds {
                    service: service.clone(),
                    seconds,
                })
                .collect(),
        }
    }
}

/// The persisted policy state: report seqs, the usage window and thresholds fired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The last report seq used (0: none yet).
    pub report_seq: u64,
    /// The report seq the usage window opened at (the last acknowledgement applied).
    pub window: u64,
    /// Usage since the window opened.
    pub usage: Counters,
    /// Reports sent in the window and what each carried (the last [`MAX_SENT_REMEMBERED`]).
    pub sent: Vec<(u64, Counters)>,
    /// Up to when grace time has been counted.
    pub accrued_at: UnixTime,
    /// Expiring-soon thresholds fired per service.
    pub fired: BTreeMap<ServiceName, Fired>,
    /// Whether the controller speaks policy (extended reports, §17.6). Encoded after the
    /// fields above, so a record written before it existed still reads (negotiating afresh).
    #[serde(skip)]
    pub negotiation: Negotiation,
}

/// First bytes of the record file (`policy.v1.bin`).
const MAGIC: &[u8] = b"licd policy v1\n";

/// Largest record file read: counters and fired thresholds for 64 services, 8 sent reports.
pub const MAX_POLICY_RECORD_LEN: usize = 64 * 1024;

/// Why a usage acknowledgement changed nothing, or what it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The window closed at this report seq.
    Closed(u64),
    /// 0, not newer than the window, or not a report of this window the device remembers.
    Ignored,
}

impl PolicyRecord {
    /// The file contents: a magic line, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // postcard cannot fail on these types (no unsized data, maps with string keys).
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out.extend(postcard::to_allocvec(&self.negotiation).unwrap_or_default());
        out
    }

    /// Parses [`PolicyRecord::encode`]'s output; anything else is an error saying what is
    /// wrong (the caller sets the file aside and starts afresh).
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() > MAX_POLICY_RECORD_LEN {
            return Err("larger than any policy record");
        }
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a policy record (bad header)")?;
        let (mut record, rest) = postcard::take_from_bytes::<PolicyRecord>(body)
            .map_err(|_| "policy record does not decode")?;
        // A record from before the negotiation ends here.
        let rest = if rest.is_empty() {
            rest
        } else {
            let (n, rest) = postcard::take_from_bytes::<Negotiation>(rest)
                .map_err(|_| "policy record does not decode")?;
            record.negotiation = n;
            rest
        };
        if !rest.is_empty() {
            return Err("bytes after the policy record");
        }
        if record.sent.len() > MAX_SENT_REMEMBERED
            || record.fired.len() > MAX_SERVICES
            || record
                .fired
                .values()
                .any(|f| f.thresholds.len() > MAX_WARN_THRESHOLDS)
            || record.window > record.report_seq
        {
            return Err("policy record out of bounds");
        }
        Ok(record)
    }

    /// Takes the next report seq and remembers what the report carries (write-ahead: persist
    /// the record before sending). Returns the seq and the usage to send.
    pub fn next_report(&mut self) -> (u64, Usage) {
        self.report_seq = self.report_seq.saturating_add(1);
        self.sent.push((self.report_seq, self.usage.clone()));
        if self.sent.len() > MAX_SENT_REMEMBERED {
            self.sent.remove(0);
        }
        (self.report_seq, self.usage.to_wire(self.window))
    }

    /// Applies a bundle's `usage_ack` (PROTOCOL.md §17.3): closes the window at that report
    /// when it is one sent in this window, subtracting exactly what it carried.
    pub fn acknowledge(&mut self, ack: u64, current_vms: Option<u32>) -> AckOutcome {
        if ack == 0 || ack <= self.window {
            return AckOutcome::Ignored;
        }
        let Some((_, carried)) = self.sent.iter().find(|(seq, _)| *seq == ack) else {
            return AckOutcome::Ignored;
        };
        let carried = carried.clone();
        self.usage.subtract(&carried, current_vms);
        self.window = ack;
        self.sent.clear();
        AckOutcome::Closed(ack)
    }

    /// Counts grace time up to `now` for the services `in_grace` (their state since the last
    /// accrual). Time never runs backwards here: an earlier `now` counts nothing.
    pub fn accrue<'a>(&mut self, now: UnixTime, in_grace: impl Iterator<Item = &'a ServiceName>) {
        if self.accrued_at == 0 {
            // First call (fresh record): start counting now.
            self.accrued_at = now;
            return;
        }
        let elapsed = now.saturating_sub(self.accrued_at);
        for s in in_grace {
            self.usage.add_grace(s, elapsed);
        }
        self.accrued_at = self.accrued_at.max(now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[test]
    fn the_worked_example_of_protocol_md_counts_every_second_once() {
        let a = svc("analytics");
        let mut dev = PolicyRecord::default();
        dev.usage.add_grace(&a, 600);
        let (s1, u1) = dev.next_report();
        assert_eq!((s1, u1.window, u1.grace_seconds[0].seconds), (1, 0, 600));
        dev.usage.add_grace(&a, 300);
        let (s2, u2) = dev.next_report();
        assert_eq!((s2, u2.grace_seconds[0].seconds), (2, 900));
        assert_eq!(dev.acknowledge(2, None), AckOutcome::Closed(2));
        assert_eq!(dev.acknowledge(1, None), AckOutcome::Ignored, "older ack");
        assert!(dev.usage.grace_seconds.is_empty());
        dev.usage.add_grace(&a, 400);
        let (s3, u3) = dev.next_report();
        assert_eq!((s3, u3.window, u3.grace_seconds[0].seconds), (3, 2, 400));
        let restored = PolicyRecord::decode(&dev.encode()).unwrap();
        assert_eq!(restored, dev);
    }

    #[test]
    fn an_ack_of_a_forgotten_or_foreign_report_changes_nothing() {
        let mut dev = PolicyRecord::default();
        for _ in 0..(MAX_SENT_REMEMBERED + 2) {
            dev.usage.add_refusal();
            dev.next_report();
        }
        let before = dev.clone();
        assert_eq!(dev.acknowledge(1, None), AckOutcome::Ignored);
        assert_eq!(dev.acknowledge(99, None), AckOutcome::Ignored);
        assert_eq!(dev, before);
        assert_eq!(dev.acknowledge(10, Some(3)), AckOutcome::Closed(10));
        assert_eq!(dev.usage.refusals, 0);
        assert_eq!(dev.usage.peak_vm_count, Some(3));
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let mut c = Counters {
            refusals: u32::MAX,
            ..Counters::default()
        };
        c.add_refusal();
        assert_eq!(c.refusals, u32::MAX);
        c.add_grace(&svc("a"), u64::MAX);
        c.add_grace(&svc("a"), 5);
        assert_eq!(c.grace_seconds[&svc("a")], u64::MAX);
    }

    #[test]
    fn a_record_written_before_the_negotiation_still_reads_and_the_negotiation_round_trips() {
        let mut dev = PolicyRecord::default();
        dev.usage.add_refusal();
        dev.next_report();
        // What an agent before §17.6 wrote: the magic line and the record alone.
        let mut old = MAGIC.to_vec();
        old.extend(postcard::to_allocvec(&dev).unwrap());
        assert_eq!(PolicyRecord::decode(&old).unwrap(), dev);
        dev.negotiation.confirmed = true;
        dev.negotiation.plain_since = Some(7);
        assert_eq!(PolicyRecord::decode(&dev.encode()).unwrap(), dev);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        assert!(PolicyRecord::decode(b"").is_err());
        assert!(PolicyRecord::decode(b"licd policy v1\n\xff\xff\xff").is_err());
        let mut bytes = PolicyRecord::default().encode();
        bytes.push(0);
        assert_eq!(
            PolicyRecord::decode(&bytes),
            Err("bytes after the policy record")
        );
    }
}
