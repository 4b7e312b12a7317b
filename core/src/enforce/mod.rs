//! The enforcement state machine. Pure: no tokio, no files, no clock — every call takes `now`
//! (trusted time, see [`crate::clock::TrustedTime`]) and returns [`Effect`]s for the shell to
//! carry out. [`Enforcer::next_deadline`] says when time alone changes a state,
//! [`Enforcer::next_wake`] when the shell must call again (a state change or a report due).
//!
//! The enforcer also owns the report schedule ([`ReportSchedule`]): the shell tells it about the
//! broker connection ([`Input::Connected`], [`Input::Disconnected`]) and sends a report when an
//! effect says so ([`Effect::Report`]); when to report, retry and back off is decided here.

mod accept;
mod negotiate;
mod policy;
mod schedule;
mod state;
mod vm;

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::{
    ComplianceReason, GrantBundle, MessageKind, PolicyBundle, ServiceCompliance, ServiceName,
    ServicePolicy, SignerInfo, Standing, TrustStore, UnixTime, Usage,
};
use serde::Serialize;

use crate::offline::{Release, ReleaseError};
use crate::refusal::Channel;

pub use crate::refusal::RefusalStats;
pub use accept::{AcceptanceRules, Refusal};
pub use negotiate::{
    ExtendedReports, Negotiated, Negotiation, FALLBACK_AFTER, FALLBACK_SPAN_MAX,
    RETRY_EXTENDED_AFTER,
};
pub use policy::{
    evaluate_with_policy, thresholds_crossed, AckOutcome, Counters, Fired, PolicyRecord,
    MAX_POLICY_RECORD_LEN, MAX_SENT_REMEMBERED, USAGE_PERSIST_INTERVAL,
};
pub use schedule::{
    ReportPolicy, ReportSchedule, DEFAULT_REPORT_INTERVAL, FIRST_REPORT_RETRY, MAX_REPORT_RETRY,
    MIN_REPORT_GAP,
};
pub use state::{evaluate, min_opt, Evaluation, Reason, ServiceState};
pub use vm::{OverUse, VmReading, VmRecord, VmStatus, MAX_RECORD_LEN as MAX_VM_RECORD_LEN};

/// A VM record whose only change is a newer `read_at` is persisted at most this often (flash
/// wear): the age shown after a restart is then right to within this much.
pub const VM_RECORD_REFRESH: u64 = 3_600;

/// Something that happened, for the enforcer to decide on.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A signed bundle arrived (bytes exactly as received).
    Bundle(&'a [u8]),
    /// The VM probe gave a new reading. `None`: the probe failed (error, garbage, timeout);
    /// the last known count stays in force and the over-allowance grace clock runs on.
    VmCount(Option<u32>),
    /// Time passed (a deadline was reached, or a periodic tick).
    Tick,
    /// The broker connection came up (subscribed): a report goes at once.
    Connected,
    /// The broker connection went down: no report is scheduled until it is up again.
    Disconnected,
    /// The shell could not queue the report the last [`Effect::Report`] asked for (the MQTT
    /// request queue was full): it does not count as sent.
    ReportNotQueued,
}

/// Why the shell should send a report now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportCause {
    /// The broker connection came up.
    Connected,
    /// The schedule: the bundle's `refresh_after`, the report interval, or a retry of a report
    /// nobody answered.
    Scheduled,
    /// The VM count changed.
    VmCountChanged,
    /// A service entered grace: the controller should hear about it.
    GraceStarted,
    /// The held bundle's signer is no longer trusted (revoked): the controller should send a
    /// bundle from a trusted signer (the report says the device holds none).
    BundleDistrusted,
}

/// What the shell must do after an input.
///
/// Effects are independent of each other: a shell may carry them out in any order, and none
/// needs another's outcome (`Persist` and `WitnessTime` each stand alone; the shell's own
/// bookkeeping, such as whether the time mark still needs a write once the cache has taken the
/// bundle, is settled after it has seen them all). Several `Report` effects from one call ask
/// for **one** report (each names a cause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write this signed bundle to the cache (it was accepted).
    Persist(Vec<u8>),
    /// A bundle was accepted.
    Accepted {
        /// Its seq.
        seq: u64,
        /// Who signed it.
        signer: SignerInfo,
    },
    /// A bundle was refused; nothing changed.
    Refused(Refusal),
    /// The held bundle stopped being trusted after a trust change (its signer was revoked, or
    /// its root retired before it was issued) and was dropped: its services are unlicensed
    /// (reason `revoked`) until a bundle from a trusted signer arrives.
    Distrusted {
        /// Seq of the dropped bundle (later bundles must still be newer).
        seq: u64,
        /// Why.
        refusal: Refusal,
    },
    /// A service changed state (run hooks, publish events).
    Changed {
        /// The service.
        service: ServiceName,
        /// Previous state (`None` the first time the service is evaluated).
        from: Option<ServiceState>,
        /// New state.
        to: ServiceState,
    },
    /// Send a report to the controller now (the schedule counts it as sent; see
    /// [`Input::ReportNotQueued`]).
    Report(ReportCause),
    /// Raise the trusted time mark to this time, vouched for by a signed bundle just accepted
    /// (its `issued_at`; see [`crate::clock::TrustedTime::witness`]).
    WitnessTime(UnixTime),
    /// Write this VM record to the state directory (it changed; see [`VmRecord`]).
    PersistVm(VmRecord),
    /// A service's term ends within `threshold` seconds (a threshold of its policy was
    /// crossed): log it and run the hook with event `expiring_soon`. Once per threshold and
    /// term, also across restarts (the record is persisted with it, [`Effect::PersistPolicy`]).
    ExpiringSoon {
        /// The service.
        service: ServiceName,
        /// The smallest threshold crossed, seconds before the term end.
        threshold: u64,
        /// The term end (`not_after`).
        term_ends_at: UnixTime,
    },
    /// Write this policy record (report seqs, usage, thresholds fired) to the state directory.
    PersistPolicy(PolicyRecord),
    /// The report kind changed (extended or plain, §17.6): log it. The record is persisted
    /// with it ([`Effect::PersistPolicy`]).
    Negotiated(Negotiated),
}

/// The bundle currently in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Decoded content.
    pub bundle: GrantBundle,
    /// Policies of its services (empty for a plain kind-2 bundle: every service has the
    /// default policy).
    pub policies: Vec<ServicePolicy>,
    /// Whether it came as a policy bundle (kind 10).
    pub with_policy: bool,
    /// The signed bytes (what the cache stores).
    pub raw: Vec<u8>,
    /// Who signed it.
    pub signer: SignerInfo,
}

impl Held {
    /// The policy of `service` (the default one when the bundle has none for it).
    pub fn policy(&self, service: &ServiceName) -> ServicePolicy {
        self.policies
            .iter()
            .find(|p| &p.service == service)
            .cloned()
            .unwrap_or_else(|| ServicePolicy::default_for(service.clone()))
    }
}

/// A warning on a service that may run (status, `licd check --json`, the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum Warning {
    /// More VMs than the allowance, within the policy's tolerance: licensed.
    Overage {
        /// VMs running.
        vms: u32,
        /// The grant's allowance.
        allowance: u32,
        /// The most the tolerance allows.
        tolerated: u32,
    },
    /// The term ends within `threshold` seconds (a threshold of the policy was crossed).
    ExpiringSoon {
        /// The smallest threshold crossed.
        threshold: u64,
    },
    /// Advisory strategy past grace: the service runs, but is not compliant.
    NonCompliant {
        /// Why.
        reason: Reason,
    },
}

/// One service in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: ServiceName,
    /// Its state.
    #[serde(flatten)]
    pub state: ServiceState,
    /// License id and SKU when granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The grant's expiry strategy (`restrict`, `advisory`, `immediate`) when granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<&'static str>,
    /// The grant's term end (`not_after`) when granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_ends_at: Option<UnixTime>,
    /// Warnings (overage within tolerance, expiring soon, advisory non-compliance).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// Facts about the held bundle, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleInfo {
    /// Its seq.
    pub seq: u64,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When the device should report again.
    pub refresh_after: UnixTime,
    /// Signing key id.
    pub signer: String,
    /// End of the signer's certificate.
    pub signer_cert_not_after: UnixTime,
}

/// The trust in force, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrustInfo {
    /// Key ids of the pinned roots (config roots moved forward by accepted rotations).
    pub roots: Vec<String>,
    /// Key ids of roots rotated away (trusted only for cached bundles issued before).
    pub retired_roots: Vec<String>,
    /// `seq` of the last root rotation applied (0: none).
    pub rotation_seq: u64,
    /// Version of the revocation list in force (0: none).
    pub revocations_version: u64,
    /// Key ids of revoked signing keys.
    pub revoked: Vec<String>,
}

impl TrustInfo {
    fn of(t: &TrustStore) -> Self {
        Self {
            roots: t.roots().iter().map(|r| r.id().to_hex()).collect(),
            retired_roots: t.retired().iter().map(|r| r.key.id().to_hex()).collect(),
            rotation_seq: t.rotation_seq(),
            revocations_version: t.revocations_version(),
            revoked: t
                .revocations()
                .map(|l| l.revoked.iter().map(|k| k.to_hex()).collect())
                .unwrap_or_default(),
        }
    }
}

/// A read-only picture of the enforcer, for the local API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Time the states were evaluated at.
    pub evaluated_at: UnixTime,
    /// Every known service.
    pub services: Vec<ServiceStatus>,
    /// The bundle in force.
    pub bundle: Option<BundleInfo>,
    /// The VM count in force: the last the probe read (kept while the probe fails).
    pub vm_count: Option<u32>,
    /// The VM probe's last reading, its age and whether the probe fails since (absent when
    /// no probe ever gave a reading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmStatus>,
    /// Refused messages on every topic the agent subscribes to.
    pub refusals: RefusalStats,
    /// Roots and revocations in force.
    pub trust: TrustInfo,
    /// Which report kind goes next (PROTOCOL.md §17.6).
    pub reports: ReportsInfo,
}

/// The report kind in force, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportsInfo {
    /// `extended` or `plain`: the kind of the next report.
    pub kind: &'static str,
    /// The `extended_reports` setting: `auto`, `always` or `never`.
    pub setting: &'static str,
    /// A policy bundle confirmed the controller speaks policy.
    pub confirmed: bool,
    /// Plain reports since this time after falling back (auto), until a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_since: Option<UnixTime>,
}

impl Snapshot {
    /// The state of `service` (unlicensed, never granted, when unknown).
    pub fn state(&self, service: &str) -> ServiceState {
        self.services
            .iter()
            .find(|s| s.service.as_str() == service)
            .map(|s| s.state)
            .unwrap_or(ServiceState::Unlicensed {
                reason: Reason::NeverGranted,
            })
    }
}

/// The per-device enforcement state machine.
#[derive(Debug)]
pub struct Enforcer {
    rules: AcceptanceRules,
    wanted: BTreeSet<ServiceName>,
    held: Option<Held>,
    ever_granted: BTreeSet<ServiceName>,
    /// The last count the probe read, since when it fails, and since when each service is
    /// over its allowance.
    vm: VmRecord,
    /// The VM record last handed to the shell to persist.
    vm_persisted: Option<VmRecord>,
    states: BTreeMap<ServiceName, ServiceState>,
    next_deadline: Option<UnixTime>,
    evaluated_at: UnixTime,
    refusals: RefusalStats,
    /// Seq of a bundle dropped because its signer stopped being trusted: anti-replay still
    /// counts from it.
    floor_seq: u64,
    /// The signer certificate that verified last (a renewal skips re-verifying it).
    cert_memo: licd_protocol::CertMemo,
    /// Services given back with `licd release` from the held bundle (or an older one): they
    /// stay unlicensed until a newer bundle is in force.
    released: Option<Release>,
    /// When to report next.
    schedule: ReportSchedule,
    /// Report seqs, usage until acknowledged, thresholds fired (persisted).
    policy: PolicyRecord,
    /// The policy record changed since it was last handed to the shell.
    policy_dirty: bool,
    /// The change must be persisted at once (an acknowledgement applied, a threshold fired).
    policy_urgent: bool,
    /// When the policy record was last handed to the shell to persist.
    policy_persisted_at: UnixTime,
    /// The `extended_reports` setting.
    extended: ExtendedReports,
    /// The last report counted was extended (undone by [`Input::ReportNotQueued`]).
    last_extended: bool,
}

impl Enforcer {
    /// An enforcer holding no bundle, for the `wanted` services.
    pub fn new(rules: AcceptanceRules, wanted: impl IntoIterator<Item = ServiceName>) -> Self {
        Self {
            rules,
            wanted: wanted.into_iter().collect(),
            held: None,
            ever_granted: BTreeSet::new(),
            vm: VmRecord::default(),
            vm_persisted: None,
            states: BTreeMap::new(),
            next_deadline: None,
            evaluated_at: 0,
            refusals: RefusalStats::default(),
            floor_seq: 0,
            cert_memo: licd_protocol::CertMemo::default(),
            released: None,
            schedule: ReportSchedule::new(ReportPolicy::default(), 0),
            policy: PolicyRecord::default(),
            policy_dirty: false,
            policy_urgent: false,
            policy_persisted_at: 0,
            extended: ExtendedReports::Never,
            last_extended: false,
        }
    }

    /// Sets the `extended_reports` setting (a new enforcer sends plain reports only).
    pub fn set_extended_reports(&mut self, mode: ExtendedReports) {
        self.extended = mode;
    }

    /// Whether the next report (or activation request) would be extended: the setting, and
    /// under `auto` the negotiation (not fallen back to plain reports). Changes nothing.
    pub fn sends_extended(&self) -> bool {
        self.policy.negotiation.extended(self.extended)
    }

    /// Decides whether the report about to go at `now` is extended (PROTOCOL.md §17.6) and
    /// counts it. With `Some` change, the shell logs it and persists
    /// [`Enforcer::policy_record`] (an extended report persists it anyway, write-ahead).
    pub fn next_report_kind(&mut self, now: UnixTime) -> (bool, Option<Negotiated>) {
        let held = self.held.as_ref().map(|h| h.signer.signer);
        let span = self.schedule.policy().interval;
        let (extended, change) =
            self.policy
                .negotiation
                .next_report(self.extended, now, span, held);
        self.last_extended = extended;
        if change.is_some() {
            self.policy_dirty = true;
        }
        (extended, change)
    }

    /// Puts a persisted policy record in force (at start-up, **before**
    /// [`Enforcer::restore`]): report seqs continue, usage not yet acknowledged is kept, and
    /// thresholds already fired do not fire again. Grace time is counted from `now` on (the
    /// time the daemon was down is not known to be grace).
    pub fn restore_policy(&mut self, mut record: PolicyRecord, now: UnixTime) {
        record.accrued_at = now;
        self.policy = record;
        self.policy_dirty = false;
        self.policy_urgent = false;
        self.policy_persisted_at = now;
    }

    /// Counts grace time up to `now` and returns the policy record when it has changes not
    /// yet handed to the shell (for a clean shutdown: nothing accrued is lost).
    pub fn flush_policy(&mut self, now: UnixTime) -> Option<PolicyRecord> {
        let in_grace = self.in_grace();
        if !in_grace.is_empty() && now > self.policy.accrued_at {
            self.policy_dirty = true;
        }
        self.policy.accrue(now, in_grace.iter());
        if !self.policy_dirty {
            return None;
        }
        self.policy_dirty = false;
        self.policy_urgent = false;
        self.policy_persisted_at = now;
        Some(self.policy.clone())
    }

    /// The policy record in force.
    pub fn policy_record(&self) -> &PolicyRecord {
        &self.policy
    }

    /// Takes the next report seq for an extended report and returns what it carries: the
    /// seq, the usage since the window opened and the compliance per service. The record
    /// returned must be persisted **before** the report is sent (write-ahead, PROTOCOL.md
    /// §17.3).
    pub fn prepare_report(
        &mut self,
        now: UnixTime,
    ) -> (u64, Usage, Vec<ServiceCompliance>, PolicyRecord) {
        let in_grace: Vec<ServiceName> = self.in_grace();
        self.policy.accrue(now, in_grace.iter());
        let (seq, usage) = self.policy.next_report();
        self.policy_dirty = false;
        self.policy_urgent = false;
        self.policy_persisted_at = now;
        (seq, usage, self.compliance(), self.policy.clone())
    }

    fn in_grace(&self) -> Vec<ServiceName> {
        self.states
            .iter()
            .filter(|(_, s)| matches!(s, ServiceState::Grace { .. }))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Per service, what the device sees (for the extended report).
    pub fn compliance(&self) -> Vec<ServiceCompliance> {
        self.states
            .iter()
            .map(|(service, state)| {
                let (standing, reason) = match *state {
                    ServiceState::Licensed { .. } => (Standing::Licensed, None),
                    ServiceState::Grace { reason, .. } => (Standing::Grace, Some(reason)),
                    ServiceState::NonCompliant { reason } => (Standing::NonCompliant, Some(reason)),
                    ServiceState::Unlicensed { reason } => (Standing::Unlicensed, Some(reason)),
                };
                let warnings = self.warnings(service);
                ServiceCompliance {
                    service: service.clone(),
                    standing,
                    reason: reason.and_then(wire_reason),
                    overage_vms: warnings.iter().find_map(|w| match w {
                        Warning::Overage { vms, allowance, .. } => Some(vms - allowance),
                        _ => None,
                    }),
                    expiring_within: warnings.iter().find_map(|w| match w {
                        Warning::ExpiringSoon { threshold } => Some(*threshold),
                        _ => None,
                    }),
                }
            })
            .collect()
    }

    /// The warnings on `service` at the last evaluation.
    fn warnings(&self, service: &ServiceName) -> Vec<Warning> {
        let mut out = Vec::new();
        let state = self.state(service);
        if let ServiceState::NonCompliant { reason } = state {
            out.push(Warning::NonCompliant { reason });
        }
        let Some(held) = &self.held else {
            return out;
        };
        let Some(grant) = held.bundle.grant(service) else {
            return out;
        };
        if !state.may_run() {
            return out;
        }
        let policy = held.policy(service);
        if let (Some(vms), Some(allowance)) = (self.vm_count(), grant.vm_allowance) {
            let tolerated = policy.tolerated_vms(allowance);
            if vms > allowance && vms <= tolerated {
                out.push(Warning::Overage {
                    vms,
                    allowance,
                    tolerated,
                });
            }
        }
        if let Some(threshold) = self
            .policy
            .fired
            .get(service)
            .filter(|f| f.not_after == grant.not_after && self.evaluated_at < grant.not_after)
            .and_then(|f| f.thresholds.iter().next().copied())
        {
            out.push(Warning::ExpiringSoon { threshold });
        }
        out
    }

    /// Puts a persisted release record in force (at start-up, before [`Enforcer::restore`]):
    /// its services stay unlicensed under the bundle they were released from, and no bundle
    /// of that seq or older is accepted again — also when the cache itself was lost.
    pub fn set_release(&mut self, release: Option<Release>) {
        if let Some(r) = &release {
            self.floor_seq = self.floor_seq.max(r.seq);
        }
        self.released = release;
    }

    /// The release record in force.
    pub fn release_record(&self) -> Option<&Release> {
        self.released.as_ref()
    }

    /// Gives `services` back (`licd release`): each must be granted by the held bundle. They
    /// become unlicensed (reason `released`) and the held seq becomes the floor below which
    /// nothing is accepted again. Returns the record to persist (it adds to an earlier release
    /// of the same bundle) and the state changes.
    pub fn release(
        &mut self,
        services: &[ServiceName],
        now: UnixTime,
    ) -> Result<(Release, Vec<Effect>), ReleaseError> {
        let Some(held) = &self.held else {
            return Err(ReleaseError::NothingHeld);
        };
        if services.is_empty() {
            return Err(ReleaseError::NoService);
        }
        let seq = held.bundle.seq;
        for s in services {
            if held.bundle.grant(s).is_none() {
                return Err(ReleaseError::NotGranted {
                    service: s.clone(),
                    seq,
                });
            }
            if self.is_released(seq, s) {
                return Err(ReleaseError::AlreadyReleased {
                    service: s.clone(),
                    seq,
                });
            }
        }
        let mut record = match self.released.take() {
            Some(r) if r.seq == seq => r,
            _ => Release {
                seq,
                services: BTreeSet::new(),
            },
        };
        record.services.extend(services.iter().cloned());
        self.floor_seq = self.floor_seq.max(seq);
        self.released = Some(record.clone());
        let mut causes = Vec::new();
        let mut effects = self.reevaluate(now, &mut causes);
        self.report_if_due(now, causes, &mut effects);
        Ok((record, effects))
    }

    fn is_released(&self, held_seq: u64, service: &ServiceName) -> bool {
        self.released
            .as_ref()
            .is_some_and(|r| held_seq <= r.seq && r.services.contains(service))
    }

    /// A bundle from a file (`licd import`): the same rules as [`Input::Bundle`], except that
    /// the bundle already held is refused as [`Refusal::AlreadyHeld`] instead of ignored, so
    /// the operator learns the file changed nothing. On refusal nothing changed.
    pub fn import_bundle(&mut self, raw: &[u8], now: UnixTime) -> Result<Vec<Effect>, Refusal> {
        if let Some(h) = self.held.as_ref().filter(|h| h.raw == raw) {
            return Err(Refusal::AlreadyHeld { seq: h.bundle.seq });
        }
        let effects = self.handle(now, Input::Bundle(raw));
        match effects.iter().find_map(|e| match e {
            Effect::Refused(r) => Some(r.clone()),
            _ => None,
        }) {
            Some(r) => Err(r),
            None => Ok(effects),
        }
    }

    /// Sets the report schedule's parameters and the seed of its jitter (the shell passes OS
    /// randomness; tests a fixed value). Starts disconnected.
    pub fn set_report_policy(&mut self, policy: ReportPolicy, seed: u64) {
        self.schedule = ReportSchedule::new(policy, seed);
    }

    /// The report schedule (when the next report is due, reports unanswered).
    pub fn report_schedule(&self) -> &ReportSchedule {
        &self.schedule
    }

    /// Loads a bundle from the cache at start-up: the same checks as a live bundle (the disk is
    /// not trusted), except that there is nothing to be newer than, and the signer's chain is
    /// judged by the cache rule ([`AcceptanceRules::check_as_issued`]): certificate valid at the
    /// bundle's signed `issued_at`, issued by a root current then, signer not revoked now. So a
    /// bundle cached under a signing key that has since been rotated out (its certificate
    /// expired) still loads; one whose signer was revoked does not. Returns the effects of the
    /// first evaluation; on refusal the enforcer holds nothing and the caller sets the file aside.
    ///
    /// The grants are evaluated at `max(now, issued_at)`: a cached bundle was accepted once, at a
    /// time not before its `issued_at`, so a clock behind that (a device booting in 1970 whose
    /// time mark was lost) is a clock to correct, not a bundle "from the future" to discard. The
    /// `issued_at` read before verification is only a candidate; once the bundle verifies it was
    /// signed by a trusted signer. Moving evaluation time forward can only end validity sooner.
    pub fn restore(&mut self, raw: &[u8], now: UnixTime) -> Result<Vec<Effect>, Refusal> {
        let issued_at = licd_protocol::Envelope::parse(raw)
            .and_then(|env| match env.kind {
                MessageKind::PolicyBundle => env.decode::<PolicyBundle>().map(|p| p.bundle),
                _ => env.decode::<GrantBundle>(),
            })
            .map_or(0, |b| b.issued_at);
        let now = now.max(issued_at);
        let (bundle, signer) = self.rules.check_as_issued(raw, now)?;
        // The acknowledgement was applied when the bundle was accepted live; applying it
        // again changes nothing (the window is at it or past it).
        self.install(bundle, raw.to_vec(), signer, now);
        let mut causes = Vec::new();
        let mut effects = self.reevaluate(now, &mut causes);
        self.report_if_due(now, causes, &mut effects);
        Ok(effects)
    }

    /// Puts new trust in force (after an accepted root rotation or revocation list) and
    /// re-checks the held bundle by the cache rule: a bundle whose signer is now revoked (or
    /// whose root was retired before it was issued) is dropped — its services become
    /// unlicensed with reason `revoked`, a report is asked for, and later bundles must still
    /// have a higher seq than the dropped one.
    pub fn set_trust(&mut self, mut trust: TrustStore, now: UnixTime) -> Vec<Effect> {
        // The site is configuration, not trust state: a new store from the trust records
        // keeps the configured one.
        trust.set_site(self.rules.trust.site().cloned());
        self.rules.trust = trust;
        let mut effects = Vec::new();
        let mut causes = Vec::new();
        if let Some(held) = &self.held {
            if let Err(refusal) = self
                .rules
                .check_as_issued(&held.raw, now.max(held.bundle.issued_at))
            {
                let seq = held.bundle.seq;
                self.floor_seq = self.floor_seq.max(seq);
                self.held = None;
                self.note_refusal(&refusal, now);
                effects.push(Effect::Distrusted { seq, refusal });
                causes.push(ReportCause::BundleDistrusted);
            }
        }
        effects.extend(self.reevaluate(now, &mut causes));
        self.report_if_due(now, causes, &mut effects);
        effects
    }

    /// The trust in force.
    pub fn trust(&self) -> &TrustStore {
        &self.rules.trust
    }

    /// Counts a refused bundle in the status.
    fn note_refusal(&mut self, refusal: &Refusal, now: UnixTime) {
        self.count_refusal(Channel::Grants, refusal.code(), refusal.to_string(), now);
    }

    /// Counts a message the shell refused on `channel` (trust messages, diagnostic requests,
    /// stray topics) in the status, beside the refused bundles.
    pub fn count_refusal(
        &mut self,
        channel: Channel,
        code: &'static str,
        message: String,
        now: UnixTime,
    ) {
        self.refusals.count(channel, code, message, now);
        self.policy.usage.add_refusal();
        self.policy_dirty = true;
    }

    /// Handles one input at trusted time `now`.
    pub fn handle(&mut self, now: UnixTime, input: Input<'_>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut causes = Vec::new();
        match input {
            Input::Bundle(raw) => match self.accept(raw, now) {
                Ok(None) => return effects,
                Ok(Some((bundle, signer))) => {
                    let (seq, issued_at) = (bundle.bundle.seq, bundle.bundle.issued_at);
                    let refresh = bundle.bundle.refresh_after;
                    let with_policy = raw.get(1) == Some(&MessageKind::PolicyBundle.to_byte());
                    if let Some(n) = self.policy.negotiation.bundle_accepted(
                        self.extended,
                        with_policy,
                        signer.signer,
                        now,
                    ) {
                        effects.push(Effect::Negotiated(n));
                        self.policy_dirty = true;
                        self.policy_urgent = true;
                    }
                    self.install(bundle, raw.to_vec(), signer, now);
                    effects.push(Effect::Persist(raw.to_vec()));
                    effects.push(Effect::Accepted { seq, signer });
                    effects.push(Effect::WitnessTime(issued_at));
                    // The controller answered: the next report goes at its refresh_after.
                    self.schedule.answered(now, Some(refresh));
                }
                Err(refusal) => {
                    self.note_refusal(&refusal, now);
                    effects.push(Effect::Refused(refusal));
                    return effects;
                }
            },
            Input::VmCount(Some(count)) => {
                if self.vm_count() != Some(count) {
                    causes.push(ReportCause::VmCountChanged);
                }
                self.vm.reading = Some(VmReading {
                    count,
                    read_at: now,
                });
                self.vm.unknown_since = None;
                if self.policy.usage.peak_vm_count.is_none_or(|p| count > p) {
                    self.policy.usage.see_vms(count);
                    self.policy_dirty = true;
                }
            }
            // Unknown is not zero: the last known count stays in force (a probe that fails on
            // and off must not lift over-use, nor restart its grace clock). The report keeps
            // carrying that count.
            Input::VmCount(None) => {
                self.vm.unknown_since.get_or_insert(now);
            }
            Input::Tick => {}
            Input::Connected => {
                self.schedule.connect();
                causes.push(ReportCause::Connected);
            }
            Input::Disconnected => self.schedule.disconnect(),
            Input::ReportNotQueued => {
                self.policy.negotiation.not_queued(self.last_extended);
                let refresh = self.held.as_ref().map(|h| h.bundle.refresh_after);
                self.schedule.not_queued(now, refresh);
                return effects;
            }
        }
        effects.extend(self.reevaluate(now, &mut causes));
        effects.extend(self.vm_record_due().map(Effect::PersistVm));
        effects.extend(self.policy_record_due(now).map(Effect::PersistPolicy));
        self.report_if_due(now, causes, &mut effects);
        effects
    }

    /// The policy record, when it changed and is due: at once after an acknowledgement or a
    /// threshold fired (`policy_urgent`), else at most
    /// every [`USAGE_PERSIST_INTERVAL`] while usage grows.
    fn policy_record_due(&mut self, now: UnixTime) -> Option<PolicyRecord> {
        if self.policy_persisted_at == 0 {
            // The first evaluation: the interval counts from here.
            self.policy_persisted_at = now;
        }
        if !self.policy_dirty
            || !self.policy_urgent
                && now
                    < self
                        .policy_persisted_at
                        .saturating_add(USAGE_PERSIST_INTERVAL)
        {
            return None;
        }
        self.policy_dirty = false;
        self.policy_urgent = false;
        self.policy_persisted_at = now;
        Some(self.policy.clone())
    }

    /// Asks the schedule whether a report goes now (for `causes`, or because one is due) and
    /// adds the `Report` effects if so.
    fn report_if_due(
        &mut self,
        now: UnixTime,
        causes: Vec<ReportCause>,
        effects: &mut Vec<Effect>,
    ) {
        let refresh = self.held.as_ref().map(|h| h.bundle.refresh_after);
        effects.extend(
            self.schedule
                .poll(now, causes, refresh)
                .into_iter()
                .map(Effect::Report),
        );
    }

    /// Puts a persisted VM record in force (at start-up, **before** [`Enforcer::restore`]):
    /// the last known count and the over-allowance clocks continue from where they were, so a
    /// restart neither forgets over-use nor restarts its grace period.
    pub fn restore_vm(&mut self, record: VmRecord) {
        self.vm = record.clone();
        self.vm_persisted = Some(record);
    }

    /// The VM record, when it differs from the one last persisted in anything but a
    /// `read_at` less than [`VM_RECORD_REFRESH`] newer. Marks it persisted.
    fn vm_record_due(&mut self) -> Option<VmRecord> {
        let current = &self.vm;
        let due = match &self.vm_persisted {
            None => *current != VmRecord::default(),
            Some(old) => {
                old.unknown_since != current.unknown_since
                    || old.over_since != current.over_since
                    || old.reading.map(|r| r.count) != current.reading.map(|r| r.count)
                    || match (old.reading, current.reading) {
                        (Some(o), Some(c)) => {
                            c.read_at >= o.read_at.saturating_add(VM_RECORD_REFRESH)
                        }
                        _ => false,
                    }
            }
        };
        if !due {
            return None;
        }
        self.vm_persisted = Some(current.clone());
        Some(current.clone())
    }

    /// `Ok(None)`: the very bundle already held (a retained message delivered again).
    fn accept(
        &mut self,
        raw: &[u8],
        now: UnixTime,
    ) -> Result<Option<(PolicyBundle, SignerInfo)>, Refusal> {
        if self.held.as_ref().is_some_and(|h| h.raw == raw) {
            return Ok(None);
        }
        let (bundle, signer) = self.rules.check_memo(raw, now, &mut self.cert_memo)?;
        let held = self.held_seq().max(self.floor_seq);
        if (self.held.is_some() || self.floor_seq > 0) && bundle.bundle.seq <= held {
            return Err(Refusal::Stale {
                seq: bundle.bundle.seq,
                held,
            });
        }
        Ok(Some((bundle, signer)))
    }

    fn install(&mut self, policy: PolicyBundle, raw: Vec<u8>, signer: SignerInfo, now: UnixTime) {
        let with_policy = raw.get(1) == Some(&MessageKind::PolicyBundle.to_byte());
        let PolicyBundle {
            bundle,
            policies,
            usage_ack,
        } = policy;
        if let AckOutcome::Closed(_) = self.policy.acknowledge(usage_ack, self.vm_count()) {
            // Persist at once: a restart must not send the acknowledged usage again.
            self.policy_dirty = true;
            self.policy_urgent = true;
        }
        self.ever_granted
            .extend(bundle.grants.iter().map(|g| g.service.clone()));
        // A new bundle restarts the over-allowance clock only for services whose allowance it
        // changes; an unchanged allowance keeps counting from when the host first went over —
        // also across a restart, a damaged cache or a distrusted bundle (the clocks stay while
        // no bundle is held).
        let over: BTreeMap<_, _> = std::mem::take(&mut self.vm.over_since);
        for g in &bundle.grants {
            if let (Some(o), Some(allowance)) = (over.get(&g.service), g.vm_allowance) {
                let since = if o.allowance == allowance {
                    o.since
                } else {
                    now
                };
                self.vm
                    .over_since
                    .insert(g.service.clone(), OverUse { since, allowance });
            }
        }
        self.held = Some(Held {
            bundle,
            policies,
            with_policy,
            raw,
            signer,
        });
    }

    fn update_vm_overuse(&mut self, now: UnixTime) {
        // No bundle (none yet, a damaged cache, a distrusted one): nothing to judge against;
        // the clocks wait for the next bundle.
        let Some(held) = &self.held else {
            return;
        };
        let count = self.vm.reading.map(|r| r.count);
        for g in &held.bundle.grants {
            // Within the policy's tolerance the service stays licensed (with a warning); the
            // grace clock starts only above it.
            let tolerated = g
                .vm_allowance
                .map(|a| held.policy(&g.service).tolerated_vms(a));
            match (count, g.vm_allowance, tolerated) {
                (Some(n), Some(allowance), Some(t)) if n > t => {
                    self.vm
                        .over_since
                        .entry(g.service.clone())
                        .or_insert(OverUse {
                            since: now,
                            allowance,
                        });
                }
                _ => {
                    self.vm.over_since.remove(&g.service);
                }
            }
        }
        self.vm
            .over_since
            .retain(|s, _| held.bundle.grant(s).is_some());
    }

    /// Re-evaluates every service at `now`; a service entering grace adds its report cause.
    fn reevaluate(&mut self, now: UnixTime, causes: &mut Vec<ReportCause>) -> Vec<Effect> {
        // Grace time up to now belongs to the states in force until now.
        let in_grace = self.in_grace();
        if !in_grace.is_empty() && now > self.policy.accrued_at {
            self.policy_dirty = true;
        }
        self.policy.accrue(now, in_grace.iter());
        self.update_vm_overuse(now);
        self.evaluated_at = now;
        let mut effects = Vec::new();
        let mut deadline = self.expiring_soon(now, &mut effects);
        let services: BTreeSet<ServiceName> = self
            .wanted
            .iter()
            .chain(&self.ever_granted)
            .cloned()
            .collect();
        for service in services {
            let eval = self.evaluate_one(&service, now);
            deadline = min_opt(deadline, eval.next_change);
            let old = self.states.insert(service.clone(), eval.state);
            if old != Some(eval.state) {
                if matches!(eval.state, ServiceState::Grace { .. })
                    && !matches!(old, Some(ServiceState::Grace { .. }))
                    && !causes.contains(&ReportCause::GraceStarted)
                {
                    causes.push(ReportCause::GraceStarted);
                }
                effects.push(Effect::Changed {
                    service,
                    from: old,
                    to: eval.state,
                });
            }
        }
        self.next_deadline = deadline;
        effects
    }

    fn evaluate_one(&self, service: &ServiceName, now: UnixTime) -> Evaluation {
        let unlicensed = |reason| Evaluation {
            state: ServiceState::Unlicensed { reason },
            next_change: None,
        };
        let Some(held) = &self.held else {
            // No bundle, but one granted it before: that bundle was dropped as distrusted.
            if self.ever_granted.contains(service) {
                return unlicensed(Reason::Revoked);
            }
            return unlicensed(Reason::NeverGranted);
        };
        if self.is_released(held.bundle.seq, service) {
            return unlicensed(Reason::Released);
        }
        if let Some(grant) = held.bundle.grant(service) {
            return evaluate_with_policy(
                grant,
                &held.policy(service),
                now,
                self.vm.over_since.get(service).map(|o| o.since),
            );
        }
        if let Some(w) = held.bundle.withheld.iter().find(|w| &w.service == service) {
            return unlicensed(w.reason.into());
        }
        if self.ever_granted.contains(service) {
            return unlicensed(Reason::Revoked);
        }
        unlicensed(Reason::NeverGranted)
    }

    /// Fires the expiring-soon thresholds crossed at `now` that have not fired in the current
    /// term (one effect per service: the smallest threshold crossed; the larger ones crossed
    /// with it count as fired). Returns when the next threshold is crossed.
    fn expiring_soon(&mut self, now: UnixTime, effects: &mut Vec<Effect>) -> Option<UnixTime> {
        let Some(held) = &self.held else {
            return None;
        };
        let mut next = None;
        let fired = &mut self.policy.fired;
        fired.retain(|s, _| held.bundle.grant(s).is_some());
        for g in &held.bundle.grants {
            let policy = held.policy(&g.service);
            if policy.warn_before.is_empty()
                || self
                    .released
                    .as_ref()
                    .is_some_and(|r| held.bundle.seq <= r.seq && r.services.contains(&g.service))
            {
                continue;
            }
            let (crossed, at) = thresholds_crossed(g.not_after, &policy, now);
            next = min_opt(next, at);
            let entry = fired.entry(g.service.clone()).or_default();
            if entry.not_after != g.not_after {
                // A new term (a renewal): its thresholds fire again.
                *entry = Fired {
                    not_after: g.not_after,
                    thresholds: Default::default(),
                };
                self.policy_dirty = true;
            }
            let new: Vec<u64> = crossed
                .into_iter()
                .filter(|w| !entry.thresholds.contains(w))
                .collect();
            if let Some(&smallest) = new.iter().min() {
                entry.thresholds.extend(new.iter().copied());
                effects.push(Effect::ExpiringSoon {
                    service: g.service.clone(),
                    threshold: smallest,
                    term_ends_at: g.not_after,
                });
                // Persist at once: a restart must not fire it again.
                self.policy_dirty = true;
                self.policy_urgent = true;
            }
        }
        next
    }

    /// When time alone next changes a state.
    pub fn next_deadline(&self) -> Option<UnixTime> {
        self.next_deadline
    }

    /// When the shell must call [`Enforcer::handle`] with [`Input::Tick`] again: the next
    /// state change or the next report, whichever is first (`None`: nothing is due by time).
    pub fn next_wake(&self) -> Option<UnixTime> {
        // While a service is in grace its seconds accrue: persist them at least every
        // USAGE_PERSIST_INTERVAL, so a kill -9 loses no more than that.
        let usage = self
            .states
            .values()
            .any(|s| matches!(s, ServiceState::Grace { .. }))
            .then(|| {
                self.policy_persisted_at
                    .saturating_add(USAGE_PERSIST_INTERVAL)
                    .max(self.evaluated_at.saturating_add(1))
            });
        min_opt(min_opt(self.next_deadline, self.schedule.next()), usage)
    }

    /// The bundle in force.
    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref()
    }

    /// Seq of the bundle in force (0: none).
    pub fn held_seq(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.bundle.seq)
    }

    /// The services this device asks for.
    pub fn wanted(&self) -> impl Iterator<Item = &ServiceName> {
        self.wanted.iter()
    }

    /// The VM count in force: the last the probe read (kept while the probe fails), for the
    /// report.
    pub fn vm_count(&self) -> Option<u32> {
        self.vm.reading.map(|r| r.count)
    }

    /// The VM facts in force (last reading, since when the probe fails).
    pub fn vm(&self) -> &VmRecord {
        &self.vm
    }

    /// State of `service` at the last evaluation.
    pub fn state(&self, service: &ServiceName) -> ServiceState {
        self.states
            .get(service)
            .copied()
            .unwrap_or(ServiceState::Unlicensed {
                reason: Reason::NeverGranted,
            })
    }

    /// A read-only picture for the local API.
    pub fn snapshot(&self) -> Snapshot {
        let held = self.held.as_ref();
        Snapshot {
            evaluated_at: self.evaluated_at,
            services: self
                .states
                .iter()
                .map(|(service, state)| ServiceStatus {
                    service: service.clone(),
                    state: *state,
                    license: held
                        .and_then(|h| h.bundle.grant(service))
                        .map(|g| format!("{} ({})", g.license, g.sku)),
                    strategy: held
                        .filter(|h| h.bundle.grant(service).is_some())
                        .map(|h| h.policy(service).strategy.name()),
                    term_ends_at: held
                        .and_then(|h| h.bundle.grant(service))
                        .map(|g| g.not_after),
                    warnings: self.warnings(service),
                })
                .collect(),
            bundle: held.map(|h| BundleInfo {
                seq: h.bundle.seq,
                issued_at: h.bundle.issued_at,
                refresh_after: h.bundle.refresh_after,
                signer: h.signer.signer.to_hex(),
                signer_cert_not_after: h.signer.cert_not_after,
            }),
            vm_count: self.vm_count(),
            vm: VmStatus::of(&self.vm, self.evaluated_at),
            refusals: self.refusals.clone(),
            trust: TrustInfo::of(&self.rules.trust),
            reports: {
                let n = &self.policy.negotiation;
                ReportsInfo {
                    kind: if n.extended(self.extended) {
                        "extended"
                    } else {
                        "plain"
                    },
                    setting: self.extended.name(),
                    confirmed: n.confirmed,
                    plain_since: n
                        .plain_since
                        .filter(|_| self.extended == ExtendedReports::Auto),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;

/// The wire form of a reason (None for `Other`, which the agent never gives).
fn wire_reason(r: Reason) -> Option<ComplianceReason> {
    Some(match r {
        Reason::NeverGranted => ComplianceReason::NeverGranted,
        Reason::LeaseExpired => ComplianceReason::LeaseExpired,
        Reason::TermEnded => ComplianceReason::TermEnded,
        Reason::NotYetValid => ComplianceReason::NotYetValid,
        Reason::OverVmAllowance => ComplianceReason::OverVmAllowance,
        Reason::Revoked => ComplianceReason::Revoked,
        Reason::NotEntitled => ComplianceReason::NotEntitled,
        Reason::SeatsExhausted => ComplianceReason::SeatsExhausted,
        Reason::Unassigned => ComplianceReason::Unassigned,
        Reason::UnknownTenant => ComplianceReason::UnknownTenant,
        Reason::Released => ComplianceReason::Released,
        Reason::Other => return None,
    })
}
