//! The daemon's loop: one `select!` over the MQTT session's events, the enforcer's next
//! wake-up (a state change or a report due), the VM-probe timer and shutdown. It turns what
//! happens into enforcer inputs and carries out the effects.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use licd_protocol::envelope::seal_report;
use licd_protocol::policy::seal_extended_report;
use licd_protocol::{DeviceReport, ExtendedReport, UnixTime};
use rumqttc::QoS;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::restore::Core;
use crate::api::{Event, FileAnswer, FileCommand, FileOp};
use crate::enforce::{Effect, Input, Refusal, ReportCause};
use crate::hooks::{HookEvent, Hooks};
use crate::identity::{probe_vm_count, DeviceKey, Identity, VmCount, VmProbeConfig};
use crate::offline::{self as files, OfflineError, StateLock};
use crate::refusal::{Channel, LogLevel, RefusalLimiter};
use crate::session::{DeviceTopics, Outbox, SessionEvent};
use crate::status::{ConnectionStatus, Source, Status, AGENT_VERSION};
use crate::trust::Accepted;
use licd_core::api::ErrorAnswer;

/// Longest the daemon sleeps without looking at the clock: catches wall-clock jumps and
/// persists the time mark. One wakeup a minute when idle.
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// The time mark is persisted at most this often while it only advances with the clock
/// (flash wear), and at once when a bundle raises it.
const MARK_SAVE_EVERY: u64 = 3_600;
/// Most characters of a stray topic quoted in status and logs.
const TOPIC_EXCERPT: usize = 80;

pub(super) struct Daemon {
    pub(super) core: Core,
    /// The device key (reports are signed with it).
    pub(super) key: DeviceKey,
    /// What the device says about itself in reports.
    pub(super) identity: Identity,
    pub(super) client: Outbox,
    /// Remote diagnostics (decides and answers; see [`crate::diag::remote`]).
    pub(super) remote_diag: crate::diag::remote::Responder,
    pub(super) topics: DeviceTopics,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) hooks: Hooks,
    pub(super) status_tx: watch::Sender<Arc<Status>>,
    pub(super) connection: ConnectionStatus,
    pub(super) mark_saved: UnixTime,
    /// The one rate limit on refusal warnings, for every topic.
    pub(super) refusals: RefusalLimiter,
}

impl Daemon {
    pub(super) async fn main_loop(
        &mut self,
        mut rx: mpsc::Receiver<SessionEvent>,
        mut files_rx: mpsc::Receiver<FileCommand>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let vm_config = self.core.settings.vm.clone();
        let vm_enabled = !matches!(vm_config, VmProbeConfig::None);
        let mut vm_task: Option<JoinHandle<VmCount>> = None;
        let mut next_vm = Instant::now();
        loop {
            let now = self.core.now();
            let wake = self
                .core
                .enforcer
                .next_wake()
                .map(|d| Duration::from_secs(d.saturating_sub(now)) + Duration::from_millis(5))
                .unwrap_or(HOUSEKEEPING)
                .min(HOUSEKEEPING);
            tokio::select! {
                _ = &mut shutdown => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_session(ev),
                    None => {
                        tracing::error!("MQTT session task ended unexpectedly");
                        break;
                    }
                },
                _ = tokio::time::sleep(wake) => {
                    let now = self.core.now();
                    let effects = self.core.enforcer.handle(now, Input::Tick);
                    self.apply(effects);
                    if now >= self.mark_saved + MARK_SAVE_EVERY {
                        self.save_mark();
                    }
                }
                Some(cmd) = files_rx.recv() => {
                    let answer = self.on_file(cmd.op);
                    let _ = cmd.reply.send(answer);
                }
                _ = tokio::time::sleep_until(next_vm), if vm_enabled && vm_task.is_none() => {
                    let cfg = vm_config.clone();
                    vm_task = Some(tokio::spawn(async move { probe_vm_count(&cfg).await }));
                }
                res = async { vm_task.as_mut().expect("guarded").await }, if vm_task.is_some() => {
                    vm_task = None;
                    next_vm = Instant::now() + self.core.settings.vm_probe_interval;
                    let count = match res {
                        Ok(c) => c,
                        Err(e) => VmCount::Unknown { reason: format!("probe task failed: {e}") },
                    };
                    self.on_vm_count(count);
                }
            }
        }
        if let Some(t) = vm_task {
            t.abort();
        }
    }

    fn on_session(&mut self, ev: SessionEvent) {
        let now = self.core.now();
        match ev {
            SessionEvent::Connected { broker } => {
                tracing::info!(%broker, "connected to broker");
                self.connection.broker = broker;
                self.connection.connected = true;
                self.connection.since = now;
                self.connection.last_error = None;
                let effects = self.core.enforcer.handle(now, Input::Connected);
                self.apply(effects);
            }
            SessionEvent::Disconnected { error, retry_in } => {
                if self.connection.connected
                    || self.connection.last_error.as_deref() != Some(&error)
                {
                    tracing::warn!(broker = %self.connection.broker, %error, retry_in_ms = retry_in.as_millis() as u64, "broker connection lost or refused; retrying with backoff");
                } else {
                    tracing::debug!(%error, retry_in_ms = retry_in.as_millis() as u64, "reconnect failed");
                }
                if self.connection.connected {
                    self.connection.since = now;
                }
                self.connection.connected = false;
                self.connection.last_error = Some(error);
                let effects = self.core.enforcer.handle(now, Input::Disconnected);
                self.apply(effects);
            }
            SessionEvent::Grants(bytes) => {
                let effects = self.core.enforcer.handle(now, Input::Bundle(&bytes));
                self.apply(effects);
            }
            SessionEvent::Trust(topic, bytes) => self.on_trust(topic, &bytes),
            SessionEvent::DiagRequest(bytes) => {
                if let Err(refusal) = self
                    .remote_diag
                    .handle(&bytes, self.core.trust.store(), now)
                {
                    let topic = self.topics.diag_request.clone();
                    self.refuse(Channel::DiagRequest, &topic, refusal.code(), &refusal);
                }
            }
            SessionEvent::Stray(topic) => {
                let topic: String = topic.chars().take(TOPIC_EXCERPT).collect();
                let reason = licd_protocol::Error::BadTopic("not a topic licd reads");
                self.refuse(Channel::Other, &topic, "bad_topic", &reason);
            }
        }
    }

    /// Counts a refusal the enforcer did not make (trust messages, diagnostic requests, stray
    /// topics) and logs it through the one limiter.
    fn refuse(
        &mut self,
        channel: Channel,
        topic: &str,
        code: &'static str,
        reason: &dyn std::fmt::Display,
    ) {
        let now = self.core.now();
        self.core
            .enforcer
            .count_refusal(channel, code, reason.to_string(), now);
        self.log_refusal(channel, topic, code, reason);
        self.publish_status();
    }

    /// Logs a counted refusal: at warn level when the limiter says so, else at debug level.
    fn log_refusal(
        &mut self,
        channel: Channel,
        topic: &str,
        code: &'static str,
        reason: &dyn std::fmt::Display,
    ) {
        match self.refusals.decide(channel, self.core.clock.boot()) {
            LogLevel::Warn { suppressed } => {
                tracing::warn!(%topic, %reason, code, suppressed, "{}", channel.what())
            }
            LogLevel::Debug => tracing::debug!(%topic, %reason, code, "{}", channel.what()),
        }
    }

    /// A message on a trust topic: the trust module decides; an accepted change is persisted
    /// and handed to the enforcer (which re-checks the held bundle); a refusal is logged and
    /// counted in the status like a refused bundle.
    fn on_trust(&mut self, topic: licd_protocol::TrustTopic, bytes: &[u8]) {
        let now = self.core.now();
        match self.core.trust.handle(topic, bytes) {
            Ok(Accepted::AlreadyHeld) => {}
            Ok(accepted) => {
                match accepted {
                    Accepted::Rotation {
                        seq,
                        previous,
                        next,
                        revocations,
                    } => tracing::warn!(
                        seq,
                        previous = %previous.id(),
                        next = %next.id(),
                        ?revocations,
                        "root rotation accepted: the previous root is no longer trusted"
                    ),
                    Accepted::Revocations { version, revoked } => {
                        tracing::info!(version, revoked, "revocation list accepted")
                    }
                    Accepted::AlreadyHeld => {}
                }
                if let Err(e) = crate::trust::save(self.core.store.dir(), &self.core.trust) {
                    tracing::error!(error = %e, "cannot write the trust state; it is enforced from memory and will be fetched again at restart");
                }
                let store = self.core.trust.store().clone();
                let effects = self.core.enforcer.set_trust(store, now);
                self.apply(effects);
            }
            Err(e) => {
                let refusal = Refusal::Protocol(e);
                self.refuse(Channel::Trust, topic.as_str(), refusal.code(), &refusal);
            }
        }
    }

    /// A file operation from the socket (licensing by file): the same rules and writes as
    /// `licd` with the daemon stopped, on the daemon's own state, so it takes effect at once.
    fn on_file(&mut self, op: FileOp) -> Result<FileAnswer, ErrorAnswer> {
        use base64::Engine as _;
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
        let refuse = |e: OfflineError| ErrorAnswer::with_code(&e, e.code());
        let dir = self.core.store.dir().to_path_buf();
        let lock = StateLock::acquire(&dir, files::LOCK_WAIT).map_err(refuse)?;
        let now = self.core.now();
        match op {
            FileOp::Request(names) => {
                let services = files::service_names(&names).map_err(refuse)?;
                let report = files::report(
                    &self.identity,
                    &self.key,
                    &self.core.settings.tenant,
                    &self.core.enforcer,
                    services,
                    now,
                    self.core.clock.boot().as_secs(),
                    self.core.time.rollback(),
                );
                let (n, seq) = (report.services_wanted.len(), report.bundle_seq);
                let store = self.core.store.clone();
                let bytes = files::new_request(
                    &lock,
                    &store,
                    &mut self.core.enforcer,
                    report,
                    &self.key,
                    now,
                )
                .map_err(refuse)?;
                tracing::info!(services = n, seq, "activation request written");
                Ok(FileAnswer::new(
                    format!("activation request for {n} service(s), holding grant seq {seq}"),
                    Some(b64(bytes)),
                ))
            }
            FileOp::Import(bytes) => {
                let store = self.core.store.clone();
                let out = files::import(
                    &lock,
                    &store,
                    &bytes,
                    &mut self.core.enforcer,
                    &mut self.core.trust,
                    now,
                );
                drop(lock);
                match out {
                    Ok(out) => {
                        let message = files::describe(&out.imported);
                        if matches!(out.imported, licd_core::offline::Imported::Bundle { .. }) {
                            self.core.cache_problem = None;
                        }
                        tracing::info!(%message, "file imported");
                        self.apply(out.effects);
                        Ok(FileAnswer::new(message, None))
                    }
                    Err(e) => {
                        tracing::warn!(reason = %e, code = e.code(), "file import refused");
                        Err(refuse(e))
                    }
                }
            }
            FileOp::Release(names) => {
                let services = files::service_names(&names).map_err(refuse)?;
                let (receipt, effects) = files::release(
                    &lock,
                    &dir,
                    &mut self.core.enforcer,
                    &services,
                    &self.core.settings.tenant,
                    &self.key,
                    now,
                )
                .map_err(refuse)?;
                drop(lock);
                let seq = self.core.enforcer.held_seq();
                tracing::warn!(
                    ?names,
                    seq,
                    "licenses released; the receipt goes to the controller"
                );
                self.apply(effects);
                Ok(FileAnswer::new(
                    format!("released {} from grant seq {seq}", names.join(", ")),
                    Some(b64(receipt)),
                ))
            }
        }
    }

    fn on_vm_count(&mut self, count: VmCount) {
        let was_unknown = self.core.enforcer.vm().unknown_since.is_some();
        match &count {
            VmCount::Unknown { reason } if !was_unknown => tracing::warn!(
                %reason,
                last_known = ?self.core.enforcer.vm_count(),
                "VM count probe failed; the last known count stays in force"
            ),
            VmCount::Unknown { reason } => tracing::debug!(%reason, "VM count probe still failing"),
            VmCount::Known(n) if was_unknown => {
                tracing::info!(count = n, "VM count probe works again")
            }
            _ => {}
        }
        let now = self.core.now();
        let effects = self
            .core
            .enforcer
            .handle(now, Input::VmCount(count.counted()));
        self.apply(effects);
    }

    /// Carries out `effects`, in whatever order they come (see [`Effect`]): what depends on
    /// several of them (the time mark's write, the one report) is settled after the loop.
    pub(super) fn apply(&mut self, effects: Vec<Effect>) {
        let now = self.core.now();
        let mut report: Option<ReportCause> = None;
        let mut cached = false;
        let mut witnessed = false;
        for effect in effects {
            match effect {
                Effect::Persist(raw) => match self.core.store.save_bundle(&raw) {
                    Ok(()) => {
                        cached = true;
                        self.core.cache_problem = None;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot write the cache; the new bundle is enforced from memory and will be lost at restart");
                    }
                },
                Effect::Accepted { seq, signer } => {
                    tracing::info!(seq, signer = %signer.signer, "grant bundle accepted");
                    self.connection.last_bundle_at = Some(now);
                }
                Effect::WitnessTime(t) => {
                    self.core.time.witness(t, self.core.clock.boot());
                    witnessed = true;
                }
                Effect::Refused(refusal) => {
                    let topic = self.topics.grants.clone();
                    self.log_refusal(Channel::Grants, &topic, refusal.code(), &refusal);
                }
                Effect::PersistVm(record) => {
                    if let Err(e) = self.core.store.save_vm_record(&record) {
                        tracing::error!(error = %e, "cannot write the VM record; a restart would forget the last VM count");
                    }
                }
                Effect::Distrusted { seq, refusal } => tracing::warn!(
                    seq,
                    reason = %refusal,
                    code = refusal.code(),
                    "held grant bundle is no longer trusted; its services are unlicensed until a trusted bundle arrives"
                ),
                Effect::Changed { service, from, to } => {
                    match from {
                        Some(from) => {
                            tracing::info!(%service, from = from.name(), to = %to, "license state changed")
                        }
                        None => tracing::debug!(%service, state = %to, "license state"),
                    }
                    let ev = Event {
                        service: service.to_string(),
                        state: to,
                    };
                    self.hooks.notify(ev.clone().into());
                    let _ = self.events.send(ev);
                }
                Effect::ExpiringSoon {
                    service,
                    threshold,
                    term_ends_at,
                } => {
                    tracing::warn!(
                        %service,
                        threshold_days = threshold / 86_400,
                        threshold_secs = threshold,
                        term_ends_at,
                        "license term ends soon"
                    );
                    let state = self.core.enforcer.state(&service);
                    self.hooks.notify(HookEvent {
                        event: Event {
                            service: service.to_string(),
                            state,
                        },
                        expiring: Some((threshold, term_ends_at)),
                    });
                }
                Effect::Negotiated(change) => tracing::info!(%change, "report kind"),
                Effect::PersistPolicy(record) => {
                    if let Err(e) = self.core.store.save_policy_record(&record) {
                        tracing::error!(error = %e, "cannot write the policy record; a restart could fire an expiring-soon warning again or lose usage not yet acknowledged");
                    }
                }
                // One report for however many causes; the first named is logged.
                Effect::Report(cause) => {
                    report.get_or_insert(cause);
                }
            }
        }
        // The cached bundle carries its issued_at and a restart witnesses it, so the mark file
        // needs a write only when the cache did not take the bundle.
        if witnessed && !cached {
            self.save_mark();
        }
        if let Some(cause) = report {
            self.send_report(cause);
        }
        self.publish_status();
    }

    /// Sends the report the enforcer asked for; tells it when the report could not be queued.
    fn send_report(&mut self, cause: ReportCause) {
        let why = match cause {
            ReportCause::Connected => "connected",
            ReportCause::Scheduled => "scheduled",
            ReportCause::VmCountChanged => "vm count changed",
            ReportCause::GraceStarted => "grace started",
            ReportCause::BundleDistrusted => "held bundle distrusted",
        };
        let now = self.core.now();
        let id = &self.identity;
        let report = DeviceReport {
            device: id.device.id.clone(),
            tenant: self.core.settings.tenant.clone(),
            device_key: self.key.public(),
            model: id.product.model.value.clone(),
            serial: id.product.serial.value.clone(),
            product_class: id.product.product_class.value.clone(),
            firmware_version: id.product.firmware_version.value.clone(),
            agent_version: AGENT_VERSION.to_string(),
            vm_count: self.core.enforcer.vm_count(),
            services_wanted: self.core.enforcer.wanted().cloned().collect(),
            bundle_seq: self.core.enforcer.held_seq(),
            clock: now,
            uptime: self.core.clock.boot().as_secs(),
            clock_rollback: self.core.time.rollback(),
        };
        let bundle_seq = report.bundle_seq;
        let (extended, change) = self.core.enforcer.next_report_kind(now);
        if let Some(change) = change {
            tracing::info!(%change, "report kind");
            if !extended {
                // An extended report persists the record below anyway (write-ahead).
                if let Err(e) = self
                    .core
                    .store
                    .save_policy_record(self.core.enforcer.policy_record())
                {
                    tracing::warn!(error = %e, "cannot write the policy record; a restart negotiates the report kind again");
                }
            }
        }
        let bytes = if extended {
            let (report_seq, usage, compliance, record) = self.core.enforcer.prepare_report(now);
            // Write-ahead (PROTOCOL.md §17.3): the seq and what the report carries are on disk
            // before it leaves, so a crash can skip a seq but never reuse one.
            if let Err(e) = self.core.store.save_policy_record(&record) {
                tracing::error!(error = %e, "cannot write the policy record; report not sent");
                let _ = self.core.enforcer.handle(now, Input::ReportNotQueued);
                return;
            }
            seal_extended_report(
                &ExtendedReport {
                    report,
                    report_seq,
                    usage,
                    compliance,
                },
                &self.key.signing,
            )
        } else {
            seal_report(&report, &self.key.signing)
        };
        match self
            .client
            .try_publish(self.topics.report.clone(), QoS::AtLeastOnce, false, bytes)
        {
            Ok(()) => {
                tracing::debug!(why, seq = bundle_seq, "report sent");
                self.connection.reports_sent += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "report not queued");
                // No effects: the schedule only moves its next attempt.
                let _ = self.core.enforcer.handle(now, Input::ReportNotQueued);
            }
        }
    }

    pub(super) fn save_mark(&mut self) {
        let mark = self.core.time.mark();
        match self.core.store.save_mark(mark) {
            Ok(()) => self.mark_saved = mark,
            Err(e) => tracing::warn!(error = %e, "cannot persist the time mark"),
        }
    }

    fn publish_status(&self) {
        let status = self
            .core
            .status(Source::Daemon, Some(self.connection.clone()));
        self.status_tx.send_replace(Arc::new(status));
    }

    pub(super) fn log_summary(&self, what: &str) {
        let snap = self.core.enforcer.snapshot();
        let licensed = snap.services.iter().filter(|s| s.state.may_run()).count();
        tracing::info!(
            seq = snap.bundle.as_ref().map_or(0, |b| b.seq),
            services = snap.services.len(),
            may_run = licensed,
            clock_rollback = self.core.time.rollback(),
            "{what}"
        );
    }
}
