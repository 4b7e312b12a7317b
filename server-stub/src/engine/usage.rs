//! Usage reported by devices, counted once (issue 20; PROTOCOL.md §17.3, the controller's
//! half), and what the device says of its own compliance.
//!
//! A device's usage comes in **windows**: each extended report carries the counters since the
//! window opened (`usage.window`, the acknowledgement the device last applied). Per device the
//! engine keeps the open window and its reports (at least the latest and every one it
//! acknowledged); a report naming a newer window `w'` closes the open one at report `w'` —
//! its value is report `w'`'s counters, exactly what the device subtracted — and opens `w'`.
//! Reports of a closed window and seqs already seen change nothing. Each bundle to such a
//! device acknowledges the highest seq of the open window ([`Engine::usage_ack`]).
//!
//! Every window, open or closed, is one row of the ledger's history ([`UsageWindow`],
//! upserted by its `(tenant, device, window)` key in the same transaction as the device), so
//! the history's sum is the device's usage whatever was lost, repeated or restarted. No I/O.

use std::collections::BTreeMap;

use licd_protocol::{
    ComplianceReason, ExtendedReport, GrantBundle, PolicyBundle, ServiceName, ServicePolicy,
    Standing, UnixTime,
};
use serde::{Deserialize, Serialize};

use super::model::DeviceKey;
use super::policy::Strategy;
use super::Engine;

/// Most reports of the open window kept per device: the device closes a window only at a seq
/// it was acknowledged, always the highest stored when acknowledged, and remembers its last 8;
/// 32 leaves room for reordering.
pub const MAX_OPEN_REPORTS: usize = 32;

/// Counters of one report (or one window's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounters {
    /// The most VMs seen (None: no reading).
    #[serde(default)]
    pub peak_vm_count: Option<u32>,
    /// Messages the agent refused.
    #[serde(default)]
    pub refusals: u32,
    /// Seconds spent in grace, per service.
    #[serde(default)]
    pub grace_seconds: BTreeMap<ServiceName, u64>,
}

/// One stored report of the open window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    /// When it arrived (controller time).
    pub at: UnixTime,
    /// The device's clock in it (tells a reset from a duplicate, PROTOCOL.md §17.3).
    #[serde(default)]
    pub clock: UnixTime,
    /// What it carried.
    pub counters: UsageCounters,
}

/// What the device says of one service in its last extended report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedCompliance {
    /// `licensed`, `grace`, `non_compliant` (advisory past grace: still runs), `unlicensed`.
    pub standing: String,
    /// Why, unless licensed (`term_ended`, `over_vm_allowance`, …).
    #[serde(default)]
    pub reason: Option<String>,
    /// VMs over the allowance but within the tolerance (a warning).
    #[serde(default)]
    pub overage_vms: Option<u32>,
    /// The smallest expiring-soon threshold crossed in the current term, in seconds.
    #[serde(default)]
    pub expiring_within: Option<u64>,
}

/// Per device: whether it speaks the policy kinds, its open usage window, its own view of its
/// compliance. Stored with the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageState {
    /// Its last report was an extended one: its bundles are policy bundles.
    #[serde(default)]
    pub extended: bool,
    /// Report chains the device started (0: its first): a device that lost its policy record
    /// starts again at report seq 1, window 0 — a new chain, whose windows are new rows.
    #[serde(default)]
    pub chain: u64,
    /// The open window opened at this report seq (0: the device's first).
    #[serde(default)]
    pub window: u64,
    /// When the open window opened (controller time of the report that closed the last one,
    /// or of the first report).
    #[serde(default)]
    pub window_start: UnixTime,
    /// Reports of the open window by seq (the newest [`MAX_OPEN_REPORTS`]).
    #[serde(default)]
    pub reports: BTreeMap<u64, StoredReport>,
    /// Per service, as the device last reported it.
    #[serde(default)]
    pub compliance: BTreeMap<ServiceName, ReportedCompliance>,
    /// The highest report seq the device sent, in any chain (a reset is told by it).
    #[serde(default)]
    pub seen_seq: u64,
    /// The latest report clock the device sent, in any chain.
    #[serde(default)]
    pub seen_clock: UnixTime,
}

impl UsageState {
    /// The highest seq of the open window stored (0: none): what a bundle acknowledges.
    pub fn ack(&self) -> u64 {
        self.reports.keys().next_back().copied().unwrap_or(0)
    }
}

/// One window of a device's usage as the ledger keeps it: closed (final) or open (its latest
/// report so far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageWindow {
    /// Device.
    pub device: DeviceKey,
    /// The device's report chain (see [`UsageState::chain`]).
    pub chain: u64,
    /// The report seq the window opened at (0: the first).
    pub window: u64,
    /// The report whose counters are its value (the closing one, or the latest).
    pub last_seq: u64,
    /// Closed: the value is final.
    pub closed: bool,
    /// When it opened (controller time).
    pub start: UnixTime,
    /// When its value's report arrived (controller time).
    pub end: UnixTime,
    /// Its value.
    pub counters: UsageCounters,
}

/// What one extended report did to the device's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// Stored in the open window: the acknowledgement advanced.
    Stored,
    /// Closed the open window and opened the report's.
    Closed,
    /// A seq already stored (a duplicate delivery): nothing changed.
    Duplicate,
    /// A report of a window already closed (arrived late): nothing changed.
    ClosedWindow,
    /// The device lost its policy record and started again at seq 1, window 0 (a seq not
    /// above the highest seen, window 0, a later clock): the open window closed at its latest
    /// report and a new chain began with this report.
    Reset,
}

fn counters(r: &ExtendedReport) -> UsageCounters {
    UsageCounters {
        peak_vm_count: r.usage.peak_vm_count,
        refusals: r.usage.refusals,
        grace_seconds: r
            .usage
            .grace_seconds
            .iter()
            .map(|s| (s.service.clone(), s.seconds))
            .collect(),
    }
}

/// The API's word for a standing.
pub fn standing_name(s: Standing) -> &'static str {
    match s {
        Standing::Licensed => "licensed",
        Standing::Grace => "grace",
        Standing::NonCompliant => "non_compliant",
        Standing::Unlicensed => "unlicensed",
    }
}

/// The API's word for a reason.
pub fn reason_name(r: ComplianceReason) -> &'static str {
    match r {
        ComplianceReason::NeverGranted => "never_granted",
        ComplianceReason::LeaseExpired => "lease_expired",
        ComplianceReason::TermEnded => "term_ended",
        ComplianceReason::NotYetValid => "not_yet_valid",
        ComplianceReason::OverVmAllowance => "over_vm_allowance",
        ComplianceReason::Revoked => "revoked",
        ComplianceReason::NotEntitled => "not_entitled",
        ComplianceReason::SeatsExhausted => "seats_exhausted",
        ComplianceReason::Unassigned => "unassigned",
        ComplianceReason::UnknownTenant => "unknown_tenant",
        ComplianceReason::Released => "released",
    }
}

pub(super) fn strategy(s: Strategy) -> licd_protocol::Strategy {
    match s {
        Strategy::Restrict => licd_protocol::Strategy::Restrict,
        Strategy::Advisory => licd_protocol::Strategy::Advisory,
        Strategy::Immediate => licd_protocol::Strategy::Immediate,
    }
}

impl Engine {
    /// Applies the usage and compliance of an extended report of a known device (its report
    /// part already applied). See the module docs for the window rule.
    pub(super) fn record_usage(
        &mut self,
        key: &DeviceKey,
        r: &ExtendedReport,
        now: UnixTime,
    ) -> UsageOutcome {
        let Some(d) = self.state.devices.get_mut(key) else {
            return UsageOutcome::Duplicate;
        };
        let u = &mut d.usage;
        u.compliance = r
            .compliance
            .iter()
            .map(|c| {
                (
                    c.service.clone(),
                    ReportedCompliance {
                        standing: standing_name(c.standing).into(),
                        reason: c.reason.map(|x| reason_name(x).to_string()),
                        overage_vms: c.overage_vms,
                        expiring_within: c.expiring_within,
                    },
                )
            })
            .collect();
        self.dirty.devices.insert(key.clone());
        let seq = r.report_seq;
        let opened_at = r.usage.window;
        let stored = StoredReport {
            at: now,
            clock: r.report.clock,
            counters: counters(r),
        };
        let highest = u.window.max(u.ack());
        let latest = u.reports.values().next_back();
        // A device that lost its record starts again at seq 1, window 0 (PROTOCOL.md §17.3).
        // While its seq is not above the highest seen, only a clock later than any seen tells
        // it from a late copy of an old report. Once its seq is above, no clock is needed when
        // a window has closed: every report naming window 0 went before the device applied
        // that window's acknowledgement, so at or below the highest seq — a device whose clock
        // went back (its time mark lost with the record) is recognised then, and loses nothing
        // it reported since (its unacknowledged counters kept growing meanwhile).
        let reset = opened_at == 0
            && ((seq <= highest
                && latest.is_some_and(|l| r.report.clock > l.clock.max(u.seen_clock)))
                || (seq > highest.max(u.seen_seq) && u.window > 0));
        u.seen_seq = u.seen_seq.max(seq);
        u.seen_clock = u.seen_clock.max(r.report.clock);
        let outcome = if reset {
            // PROTOCOL.md §17.3: the usage the device had not had acknowledged is lost with
            // its record; what was reported stays counted, once.
            if let Some((&last, l)) = u.reports.iter().next_back() {
                self.dirty.usage_windows.push(UsageWindow {
                    device: key.clone(),
                    chain: u.chain,
                    window: u.window,
                    last_seq: last,
                    closed: true,
                    start: u.window_start,
                    end: l.at,
                    counters: l.counters.clone(),
                });
            }
            tracing::warn!(tenant = %key.0, device = %key.1, seq, "device restarted its usage reports (its policy record was lost): a new chain");
            u.chain = u.chain.saturating_add(1);
            u.window = 0;
            u.window_start = now;
            u.reports.clear();
            u.reports.insert(seq, stored);
            UsageOutcome::Reset
        } else if opened_at < u.window {
            UsageOutcome::ClosedWindow
        } else if opened_at == u.window {
            if u.reports.contains_key(&seq) {
                UsageOutcome::Duplicate
            } else {
                if u.reports.is_empty() && u.window_start == 0 {
                    u.window_start = now;
                }
                u.reports.insert(seq, stored);
                UsageOutcome::Stored
            }
        } else {
            // The device closed the open window at `opened_at`: the window's value is that
            // report's counters, exactly what the device subtracted. A seq never stored (a
            // ledger that lost its last commits to a power cut) closes at the newest stored
            // before it: what that report carried is all this controller can vouch for.
            let closing = u
                .reports
                .range(..=opened_at)
                .next_back()
                .map(|(s, r)| (*s, r.clone()));
            if closing.as_ref().is_none_or(|(s, _)| *s != opened_at) {
                tracing::warn!(tenant = %key.0, device = %key.1, window = opened_at, "usage window closed at a report this controller did not store; its value is the newest stored before it");
            }
            let (last_seq, closing) = closing.unwrap_or((
                opened_at,
                StoredReport {
                    at: now,
                    clock: r.report.clock,
                    counters: UsageCounters::default(),
                },
            ));
            self.dirty.usage_windows.push(UsageWindow {
                device: key.clone(),
                chain: u.chain,
                window: u.window,
                last_seq,
                closed: true,
                start: u.window_start,
                end: closing.at,
                counters: closing.counters,
            });
            u.window = opened_at;
            u.window_start = closing.at;
            u.reports.clear();
            u.reports.insert(seq, stored);
            UsageOutcome::Closed
        };
        if matches!(
            outcome,
            UsageOutcome::Stored | UsageOutcome::Closed | UsageOutcome::Reset
        ) {
            while u.reports.len() > MAX_OPEN_REPORTS {
                u.reports.pop_first();
            }
            if let Some((&last, latest)) = u.reports.iter().next_back() {
                self.dirty.usage_windows.push(UsageWindow {
                    device: key.clone(),
                    chain: u.chain,
                    window: u.window,
                    last_seq: last,
                    closed: false,
                    start: u.window_start,
                    end: latest.at,
                    counters: latest.counters.clone(),
                });
            }
        }
        if matches!(
            outcome,
            UsageOutcome::Duplicate | UsageOutcome::ClosedWindow
        ) {
            tracing::debug!(tenant = %key.0, device = %key.1, seq, window = opened_at, ?outcome, "usage report changes nothing");
        }
        outcome
    }

    /// The report seq a bundle to `key` acknowledges (0: none).
    pub fn usage_ack(&self, key: &DeviceKey) -> u64 {
        self.state.devices.get(key).map_or(0, |d| d.usage.ack())
    }

    /// `b` as sent to a device that does not speak the policy kinds (a plain bundle): a
    /// service whose policy is `immediate` gets no grace at all, so editing the agent's config
    /// (`extended_reports = false`) cannot buy the term-end grace the policy withholds. The
    /// price is that such a device also loses the lease grace for that service; the other
    /// strategies are never looser under the plain rule (advisory becomes restrict, a
    /// tolerance becomes 100 %).
    pub fn plain_bundle(&self, b: &GrantBundle) -> GrantBundle {
        let mut plain = b.clone();
        for g in &mut plain.grants {
            if self.effective_policy(&g.license, &g.sku).strategy
                == super::policy::Strategy::Immediate
            {
                g.grace = 0;
            }
        }
        plain
    }

    /// The policy bundle to send for `b` if its device speaks the policy kinds (its last
    /// report was extended): each granted service's policy and the usage acknowledgement.
    /// `None`: send `b` as a plain bundle (an older agent).
    pub fn policy_bundle(&self, b: &GrantBundle) -> Option<PolicyBundle> {
        let key: DeviceKey = (b.tenant.clone(), b.device.clone());
        let d = self.state.devices.get(&key)?;
        if !d.usage.extended {
            return None;
        }
        let policies = b
            .grants
            .iter()
            .map(|g| {
                let p = self.effective_policy(&g.license, &g.sku);
                ServicePolicy {
                    service: g.service.clone(),
                    strategy: strategy(p.strategy),
                    overage_tolerance_pct: u32::from(p.overage_tolerance_pct),
                    warn_before: p.warn_before,
                }
            })
            .collect();
        Some(PolicyBundle {
            bundle: b.clone(),
            policies,
            usage_ack: d.usage.ack(),
        })
    }
}
