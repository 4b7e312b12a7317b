//! The daemon: loads the state, then one `select!` over the MQTT session's events, the
//! enforcer's next wake-up (a state change or a report due), the VM-probe timer and shutdown.
//! It turns what happens into enforcer inputs and carries out the effects; the licensing
//! decisions, and when to report, are the enforcer's. Also the read-only, from-cache evaluation that `licd check` uses when no daemon
//! answers.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use licd_protocol::envelope::seal_report;
use licd_protocol::{DeviceReport, UnixTime};
use rumqttc::QoS;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::{ApiError, ApiServer, Event};
use crate::clock::{Clock, TrustedTime};
use crate::config::Settings;
use crate::enforce::{Effect, Enforcer, Input, Refusal, ReportCause};
use crate::hooks::Hooks;
use crate::identity::{
    probe_vm_count, resolve_identity, DeviceKey, HostRoot, Identity, IdentityError, KeyError,
    VmCount, VmProbeConfig, DEFAULT_RESOLVE_TIMEOUT,
};
use crate::refusal::{Channel, LogLevel, RefusalLimiter};
use crate::session::{self, DeviceTopics, Outbox, SessionEvent, OFFLINE};
use crate::status::{CacheProblem, ConnectionStatus, Source, Status, AGENT_VERSION};
use crate::store::{Store, StoreError};
use crate::tls::TlsError;
use crate::trust::{Accepted, TrustState};
use licd_core::cache::{self, Binding, Problem};

/// Longest the daemon sleeps without looking at the clock: catches wall-clock jumps and
/// persists the time mark. One wakeup a minute when idle.
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// The time mark is persisted at most this often while it only advances with the clock
/// (flash wear), and at once when a bundle raises it.
const MARK_SAVE_EVERY: u64 = 3_600;
/// Refusals are logged at warn level at most this often per topic (a flood of bad messages
/// must not flood the log; see [`crate::refusal`]).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Most characters of a stray topic quoted in status and logs.
const TOPIC_EXCERPT: usize = 80;
/// How long a clean shutdown waits for "offline" to reach the broker.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// Why the daemon could not start (it does not stop for anything after that).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// State directory or cache.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Device key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// TLS set-up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Local API socket.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// What both the daemon and the from-cache path load: the state restored by
/// [`licd_core::cache::restore`] and what is needed to keep it current.
struct Core {
    store: Store,
    binding: Binding,
    time: TrustedTime,
    enforcer: Enforcer,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// Roots and revocations (config roots moved forward by accepted trust messages).
    trust: TrustState,
    /// The cached bundle found at start could not be used (cleared once a new one is cached).
    cache_problem: Option<CacheProblem>,
}

impl Core {
    /// Restores the state for `binding`. `writable` (the daemon): log each problem and set the
    /// unusable files aside; read-only callers get the problems back instead.
    fn restore(
        settings: Settings,
        clock: Arc<dyn Clock>,
        store: Store,
        binding: Binding,
        writable: bool,
    ) -> (Self, Vec<Effect>, Vec<Problem>) {
        let restored = cache::restore(&settings, &binding, &store, clock.wall(), clock.boot());
        let mut core = Self {
            store,
            binding,
            time: restored.time,
            enforcer: restored.enforcer,
            clock,
            settings,
            trust: restored.trust,
            cache_problem: restored.cache_problem,
        };
        if writable {
            for problem in &restored.problems {
                core.set_aside(problem);
            }
        }
        (core, restored.effects, restored.problems)
    }

    /// Logs a problem found at start and moves the file aside: whatever sits at the cache path
    /// (garbage, a directory, another device's bundle) would otherwise be met again at every
    /// start, and an unreadable one would make every later write fail.
    fn set_aside(&mut self, problem: &Problem) {
        let now = self.time.mark();
        match problem {
            Problem::MarkUnreadable(e) => {
                tracing::warn!(error = %e, "time mark unreadable; starting from the cached bundle's time");
                let _ = self.store.set_aside_mark(self.clock.wall());
            }
            Problem::VmRecordUnreadable(e) => {
                tracing::warn!(error = %e, "VM record unreadable; the VM count is unknown until the probe reads it");
                let _ = self.store.set_aside_vm_record(now);
            }
            Problem::TrustUnreadable(problem) => {
                tracing::warn!(%problem, "trust state unreadable; starting from the config roots")
            }
            Problem::TrustDropped(d) => {
                tracing::warn!(kind = ?d.kind, reason = %d.error, "stored trust message no longer verifies; dropped")
            }
            Problem::BundleRefused(refusal) => {
                tracing::warn!(reason = %refusal, code = refusal.code(), "cached bundle refused; starting without it")
            }
            Problem::BundleUnreadable(e) => {
                tracing::warn!(error = %e, "cache unreadable; starting without it")
            }
        }
        if problem.is_bundle() {
            match self.store.set_aside_bundle(now) {
                Ok(to) => {
                    tracing::warn!(moved_to = %to.display(), "cached bundle set aside");
                    if let Some(p) = self.cache_problem.as_mut() {
                        p.set_aside_to = Some(to.display().to_string());
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot set the unusable cache aside; new bundles will not survive a restart")
                }
            }
        }
    }

    fn now(&mut self) -> UnixTime {
        let r = self.time.observe(self.clock.wall(), self.clock.boot());
        r.now
    }

    fn status(&self, source: Source, connection: Option<ConnectionStatus>) -> Status {
        let mut status = cache::status_of(
            source,
            &self.settings,
            &self.binding,
            &self.time,
            self.clock.wall(),
            &self.enforcer,
        );
        status.connection = connection;
        status.cache_problem = self.cache_problem.clone();
        status
    }
}

/// Evaluates the cache read-only, as `licd check` does when the daemon is not running
/// ([`licd_core::cache::read_only`] at the clock's time).
pub fn status_from_cache(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<(Status, Vec<Problem>), RunError> {
    Ok(cache::read_only(&settings, clock.wall(), clock.boot())?)
}

/// Runs the daemon until `shutdown` resolves. Returns an error only for start-up failures
/// (state dir, key, identity, TLS files, socket); after that it keeps running through broker
/// outages, bad messages and disk errors.
pub async fn run(
    settings: Settings,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let identity = resolve_identity(
        &settings.identity,
        &HostRoot::system(),
        DEFAULT_RESOLVE_TIMEOUT,
    )
    .await?;
    run_with(settings, clock, identity, |_| {}, shutdown).await
}

/// [`run`] with the identity already resolved; `on_status` gets a receiver of the daemon's
/// status (updated on every change, as the local API sees it) once the state is loaded. For
/// hosts of many simulated agents in one process (the fleet simulator in `tests/`): resolving
/// the host identity runs a bounded probe thread per call, and a watch replaces a socket per
/// agent.
pub async fn run_with(
    settings: Settings,
    clock: Arc<dyn Clock>,
    identity: Identity,
    on_status: impl FnOnce(watch::Receiver<Arc<Status>>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let connect = |settings: &Settings, client_id: &str, topics: &DeviceTopics| {
        let options = session::mqtt_options(&settings.broker, client_id, topics)?;
        if settings.broker.tls.is_none() {
            tracing::warn!("broker connection is NOT encrypted (allow_insecure = true)");
        }
        let (tx, rx) = mpsc::channel(64);
        let (client, task) =
            session::start(options, settings.broker.reconnect_max, topics.clone(), tx);
        Ok(Link {
            events: rx,
            outbox: Outbox::Mqtt(client),
            session: Some(task),
        })
    };
    serve(settings, clock, identity, connect, on_status, shutdown).await
}

/// How the daemon reaches the broker: the session's events in, an [`Outbox`] out.
#[derive(Debug)]
pub struct Link {
    /// What the session reports ([`session::start`]'s task, or a test).
    pub events: mpsc::Receiver<SessionEvent>,
    /// Where publishes go.
    pub outbox: Outbox,
    /// The session task, awaited (bounded) at shutdown so "offline" gets out.
    pub session: Option<JoinHandle<()>>,
}

/// [`run_with`] over a [`Link`] the caller made: no broker, no MQTT session. For in-process
/// tests of the daemon loop (paused time, a channel for each direction) and simulators.
pub async fn run_linked(
    settings: Settings,
    clock: Arc<dyn Clock>,
    identity: Identity,
    link: Link,
    on_status: impl FnOnce(watch::Receiver<Arc<Status>>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let connect = |_: &Settings, _: &str, _: &DeviceTopics| Ok(link);
    serve(settings, clock, identity, connect, on_status, shutdown).await
}

/// Loads the state, binds the socket, connects through `connect`, then runs the loop until
/// `shutdown`.
async fn serve(
    settings: Settings,
    clock: Arc<dyn Clock>,
    identity: Identity,
    connect: impl FnOnce(&Settings, &str, &DeviceTopics) -> Result<Link, RunError>,
    on_status: impl FnOnce(watch::Receiver<Arc<Status>>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let store = Store::open(&settings.state_dir)?;
    let key = DeviceKey::load_or_create(&settings.state_dir)?;
    tracing::info!(
        device = %identity.device.id,
        source = ?identity.device.source,
        tenant = %settings.tenant,
        device_key = %key.id(),
        "licd {AGENT_VERSION} starting"
    );
    // The identity this start used, for `licd diag`'s drift check (informational only).
    let record =
        crate::diag::record::IdentityRecord::new(&identity, key.id().to_hex(), clock.wall());
    if let Err(e) = crate::diag::record::save_if_changed(&settings.state_dir, &record) {
        tracing::warn!(error = %e, "cannot write the identity record (used by licd diag)");
    }
    // What `licd check` and the client libraries read when this daemon is not running.
    let binding = Binding {
        device: identity.device.id.clone(),
        device_key: key.public(),
    };
    if let Err(e) = binding.save_if_changed(&settings.state_dir) {
        tracing::warn!(error = %e, "cannot write the device binding (read by licd check when the daemon is down)");
    }
    let (core, effects, _) = Core::restore(settings, clock, store, binding, true);
    let topics = DeviceTopics::new(&core.settings.tenant, &identity.device.id);
    let client_id = format!("licd-{}-{}", core.settings.tenant, identity.device.id);

    // Events feed the socket API's watchers; without a socket nobody reads them, and 10,000
    // agents in one fleet process should not each allocate 256 slots.
    let capacity = if core.settings.socket.is_some() {
        256
    } else {
        1
    };
    let (events, _) = broadcast::channel(capacity);
    let (status_tx, status_rx) = watch::channel(Arc::new(core.status(Source::Daemon, None)));
    on_status(status_rx.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let api_task = match &core.settings.socket {
        Some(path) if cfg!(feature = "socket-api") => {
            let server = ApiServer::bind(path).await?;
            let mut stop = stop_rx.clone();
            let events = events.clone();
            Some(tokio::spawn(server.serve(status_rx, events, async move {
                let _ = stop.wait_for(|s| *s).await;
            })))
        }
        Some(path) => {
            tracing::warn!(
                socket = %path.display(),
                "built without the socket-api feature: no socket; `licd check` reads the cache"
            );
            None
        }
        None => None,
    };

    let link = match connect(&core.settings, &client_id, &topics) {
        Ok(link) => link,
        Err(e) => {
            let _ = stop_tx.send(true);
            if let Some(t) = api_task {
                let _ = t.await;
            }
            return Err(e);
        }
    };
    let client = link.outbox;
    let hooks = Hooks::start(core.settings.hook.clone(), core.settings.hook_timeout);
    let broker = format!(
        "{}:{}",
        core.settings.broker.host, core.settings.broker.port
    );
    let remote_diag = crate::diag::remote::Responder::new(
        core.settings.clone(),
        core.clock.clone(),
        identity.device.id.clone(),
        key.signing.clone(),
        client.clone(),
        topics.diag_response.clone(),
    );
    let mut daemon = Daemon {
        core,
        key,
        identity,
        client,
        remote_diag,
        topics,
        events,
        hooks,
        status_tx,
        connection: ConnectionStatus {
            broker,
            ..Default::default()
        },
        mark_saved: 0,
        refusals: RefusalLimiter::new(REFUSAL_LOG_EVERY),
    };
    daemon.apply(effects);
    daemon.log_summary("enforcing from cache");
    daemon.save_mark();
    daemon.main_loop(link.events, shutdown).await;

    // Clean shutdown: "offline" (the broker sends no will for a clean disconnect), then
    // disconnect, flush, socket removal.
    if daemon.connection.connected {
        let _ = daemon.client.try_publish(
            daemon.topics.presence.clone(),
            QoS::AtLeastOnce,
            true,
            OFFLINE.to_vec(),
        );
        let _ = daemon.client.try_disconnect();
        if let Some(task) = link.session {
            let _ = tokio::time::timeout(SHUTDOWN_FLUSH, task).await;
        }
    } else if let Some(task) = link.session {
        task.abort();
    }
    daemon.save_mark();
    let _ = stop_tx.send(true);
    if let Some(t) = api_task {
        let _ = t.await;
    }
    tracing::info!("licd stopped");
    Ok(())
}

struct Daemon {
    core: Core,
    /// The device key (reports are signed with it).
    key: DeviceKey,
    /// What the device says about itself in reports.
    identity: Identity,
    client: Outbox,
    /// Remote diagnostics (decides and answers; see [`crate::diag::remote`]).
    remote_diag: crate::diag::remote::Responder,
    topics: DeviceTopics,
    events: broadcast::Sender<Event>,
    hooks: Hooks,
    status_tx: watch::Sender<Arc<Status>>,
    connection: ConnectionStatus,
    mark_saved: UnixTime,
    /// The one rate limit on refusal warnings, for every topic.
    refusals: RefusalLimiter,
}

impl Daemon {
    async fn main_loop(
        &mut self,
        mut rx: mpsc::Receiver<SessionEvent>,
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
            SessionEvent::Connected => {
                tracing::info!(broker = %self.connection.broker, "connected to broker");
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
    fn apply(&mut self, effects: Vec<Effect>) {
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
                    self.hooks.notify(ev.clone());
                    let _ = self.events.send(ev);
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
        let bytes = seal_report(&report, &self.key.signing);
        match self
            .client
            .try_publish(self.topics.report.clone(), QoS::AtLeastOnce, false, bytes)
        {
            Ok(()) => {
                tracing::debug!(why, seq = report.bundle_seq, "report sent");
                self.connection.reports_sent += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "report not queued");
                // No effects: the schedule only moves its next attempt.
                let _ = self.core.enforcer.handle(now, Input::ReportNotQueued);
            }
        }
    }

    fn save_mark(&mut self) {
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

    fn log_summary(&self, what: &str) {
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

/// Whether `path` looks like a config that exists (for friendlier CLI errors).
pub fn config_exists(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests;
