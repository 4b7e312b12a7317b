//! The running stub: [`Stub::start`] opens the ledger, loads the keys, starts the embedded
//! broker (or uses an external one), connects and subscribes, and returns a [`StubHandle`]
//! for tests, the admin API and demos; [`serve`] runs until a shutdown future completes
//! (mini-redis style: the binary passes ctrl-c, tests a oneshot).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use licd_protocol::topic::{report_filter, shared_report_filter};
use licd_protocol::{DeviceId, PublicKey, ServiceName, TenantId, UnixTime};
use rumqttc::AsyncClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BrokerMode, Clock, KeySource, LedgerLocation, ReportSubscription, StubConfig};
use crate::controller::Controller;
use crate::engine::compliance::ComplianceReport;
use crate::engine::ops::AutoLicenseResult;
use crate::engine::views::{DeviceView, SubscriptionView};
use crate::engine::{
    CatalogEntry, CustomerKind, Effects, Engine, EngineError, Selection, Subscription,
};
use crate::error::StubError;
use crate::ledger::{Ledger, RefusedReport};
use crate::session::{self, Stats, StatsSnapshot};

mod delegation;
mod offline;

pub use delegation::Revoked;

/// Entry point of the runtime.
#[derive(Debug)]
pub struct Stub;

/// A running stub. Dropping it without [`StubHandle::shutdown`] leaves its tasks running
/// until the runtime stops.
#[derive(Debug)]
pub struct StubHandle {
    core: Arc<Mutex<Controller>>,
    client: AsyncClient,
    broker_addr: Option<SocketAddr>,
    broker_tls_addr: Option<SocketAddr>,
    broker_url: String,
    root: PublicKey,
    clock: Clock,
    stats: Arc<Stats>,
    order: Arc<session::PublishOrder>,
    diag: Arc<crate::diag::DiagWaiters>,
    ready: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The key directory, when the keys come from one: revoking a delegation signs a new
    /// revocation list with its root key.
    key_dir: Option<std::path::PathBuf>,
}

impl Stub {
    /// Starts the stub and waits until it is subscribed to reports (or the connect timeout
    /// passes). Must run inside a tokio runtime.
    pub async fn start(config: StubConfig) -> Result<StubHandle, StubError> {
        let signer = match &config.keys {
            KeySource::Signer(s) => (**s).clone(),
            KeySource::Dir(dir) => crate::keys::load_signer(dir)?,
        };
        let ledger = match &config.ledger {
            LedgerLocation::File(p) => Ledger::open(p)?,
            LedgerLocation::InMemory => Ledger::open_in_memory()?,
            LedgerLocation::Postgres { url, retry } => {
                // Connecting may wait for the server (up to `retry`): off the runtime's threads.
                let (url, retry) = (url.clone(), *retry);
                tokio::task::spawn_blocking(move || Ledger::open_postgres(&url, retry))
                    .await
                    .map_err(|e| {
                        crate::ledger::LedgerError::Postgres(format!("opening the ledger: {e}"))
                    })??
            }
        };
        let root = signer.root_public_key();
        let mut core = Controller::open(ledger, signer, config.lease)?;
        core.set_policy_kinds(config.policy_kinds);

        let started =
            crate::broker::start_if_embedded(&config.broker, config.connect_timeout).await?;
        let broker_tls_addr = started.and_then(|b| b.tls_addr);
        let embedded = started.map(|b| b.addr);
        let broker_url = match (&config.broker, embedded) {
            (BrokerMode::External { url, .. }, _) => url.clone(),
            (_, Some(addr)) => format!("mqtt://{addr}"),
            (_, None) => String::new(),
        };
        let nodes = session::node_options(&config.broker, embedded, &config.client_id)?;
        let opts = nodes
            .first()
            .map(|n| n.options.clone())
            .ok_or_else(|| StubError::Config("no broker URL".into()))?;
        let filter = match &config.subscription {
            ReportSubscription::Shared(group) => shared_report_filter(group),
            ReportSubscription::Plain => report_filter(),
        };
        let (client, eventloop) = AsyncClient::new(opts, 256);
        let (work_tx, work_rx) = crate::intake::channel(config.queue_capacity);
        let (ready_tx, mut ready) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let core = Arc::new(Mutex::new(core));
        let order = Arc::new(session::PublishOrder::default());
        let diag = Arc::new(crate::diag::DiagWaiters::default());
        let tasks = vec![
            tokio::spawn(session::run_eventloop(
                eventloop,
                nodes,
                client.clone(),
                session::ReportFilter {
                    filter: filter.clone(),
                    qos: config.subscribe_qos,
                },
                work_tx,
                ready_tx,
                shutdown_rx,
                stats.clone(),
                diag.clone(),
            )),
            tokio::spawn(session::run_worker(
                core.clone(),
                order.clone(),
                client.clone(),
                config.clock.clone(),
                work_rx,
                stats.clone(),
            )),
        ];
        let handle = StubHandle {
            core,
            client,
            broker_addr: embedded,
            broker_tls_addr,
            broker_url,
            root,
            clock: config.clock.clone(),
            stats,
            order,
            diag,
            ready: ready.clone(),
            shutdown_tx,
            tasks,
            key_dir: match &config.keys {
                KeySource::Dir(dir) => Some(dir.clone()),
                KeySource::Signer(_) => None,
            },
        };
        let waited = tokio::time::timeout(config.connect_timeout, ready.wait_for(|r| *r)).await;
        if !matches!(waited, Ok(Ok(_))) {
            handle.shutdown().await;
            return Err(StubError::ConnectTimeout(config.connect_timeout));
        }
        tracing::info!(broker = %handle.broker_url, %filter, root = %root.id(), "licd-stub ready");
        Ok(handle)
    }
}

/// Runs the stub until `shutdown` completes, then stops it cleanly.
pub async fn serve(config: StubConfig, shutdown: impl Future) -> Result<(), StubError> {
    let handle = Stub::start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

impl StubHandle {
    /// Address of the embedded broker's plain listener (`None` with an external broker).
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// Address of the embedded broker's TLS listener, when one was configured.
    pub fn broker_tls_addr(&self) -> Option<SocketAddr> {
        self.broker_tls_addr
    }

    /// The broker URL agents should use, e.g. `mqtt://127.0.0.1:40123`.
    pub fn broker_url(&self) -> &str {
        &self.broker_url
    }

    /// The root public key agents must pin.
    pub fn root_public_key(&self) -> PublicKey {
        self.root
    }

    /// The controller's current time.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Whether the session is connected and subscribed right now.
    pub fn is_connected(&self) -> bool {
        *self.ready.borrow()
    }

    /// Counters of the MQTT session.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// How this replica caught up with the others' writes (PostgreSQL; zero on SQLite).
    pub fn catch_ups(&self) -> Result<crate::controller::CatchUps, StubError> {
        let core = self.core.lock().map_err(|_| StubError::Poisoned)?;
        Ok(core.catch_ups())
    }

    /// Refusals by code and ledger latency (see [`crate::metrics`]).
    pub fn instruments(&self) -> &crate::metrics::Instruments {
        &self.stats.instruments
    }

    /// Reports, refusals and bundles as they happen (see [`crate::events`]).
    pub fn events(&self) -> &crate::events::Events {
        &self.stats.events
    }

    /// Runs `op` on the engine at the current time, stores the result and publishes the
    /// bundles it produced. Every operator operation below goes through here; the admin API
    /// can use it for anything else.
    pub async fn apply<T>(
        &self,
        op: impl FnOnce(&mut Engine, UnixTime) -> Result<(T, Effects), EngineError>,
    ) -> Result<T, StubError> {
        let _turn = self.order.lock().await;
        let now = self.now();
        let started = std::time::Instant::now();
        let (value, pubs) = {
            let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
            let long = core.ledger().is_postgres();
            session::blocking(long, || core.apply(now, op))?
        };
        self.stats
            .instruments
            .ledger_latency(crate::metrics::LedgerOp::Operator, started.elapsed());
        session::publish_all(&self.client, pubs, &self.stats).await;
        Ok(value)
    }

    /// Reads the engine (views, compliance, raw records).
    pub fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> T) -> Result<T, StubError> {
        let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
        // Replicas: the same view on every one (a reload when another replica wrote).
        let long = core.ledger().is_postgres();
        session::blocking(long, || core.refresh())?;
        // A panic while only reading changes nothing, so it must not poison the lock (which
        // would fail every later request): release the lock first, then let the panic go on
        // to the caller (the admin API answers it with a 500).
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(core.engine())));
        drop(core);
        match out {
            Ok(v) => Ok(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Adds a customer (see [`Engine::add_customer`]).
    pub async fn add_customer(
        &self,
        id: TenantId,
        name: &str,
        kind: CustomerKind,
    ) -> Result<(), StubError> {
        let name = name.to_string();
        self.apply(move |e, now| Ok(((), e.add_customer(id, name, kind, now)?)))
            .await
    }

    /// Adds a SKU to the catalogue.
    pub async fn add_catalog_entry(&self, entry: CatalogEntry) -> Result<(), StubError> {
        self.apply(move |e, _| {
            e.add_catalog_entry(entry)?;
            Ok(((), Effects::default()))
        })
        .await
    }

    /// Adds a subscription (owned, or claimable by its claim key).
    pub async fn add_subscription(&self, sub: Subscription) -> Result<(), StubError> {
        self.apply(move |e, now| Ok(((), e.add_subscription(sub, now)?)))
            .await
    }

    /// Claims a subscription by claim key; `validate` = dry run.
    pub async fn claim(
        &self,
        claim_key: &str,
        customer: &TenantId,
        validate: bool,
    ) -> Result<SubscriptionView, StubError> {
        self.apply(|e, now| e.claim(claim_key, customer, validate, now))
            .await
    }

    /// Enables auto-licensing of `services` for the selected customers; `validate` = dry run.
    pub async fn enable_auto_licensing(
        &self,
        selection: &Selection,
        services: &[ServiceName],
        validate: bool,
    ) -> Result<AutoLicenseResult, StubError> {
        self.apply(|e, now| {
            let mut r = e.enable_auto_licensing(selection, services, validate, now)?;
            let fx = std::mem::take(&mut r.effects);
            Ok((r, fx))
        })
        .await
    }

    /// Unassigns `services` from the selected customers' devices (MSP devices included).
    pub async fn unassign(
        &self,
        selection: &Selection,
        services: &[ServiceName],
    ) -> Result<(), StubError> {
        self.apply(|e, now| Ok(((), e.unassign(selection, services, now)?)))
            .await
    }

    /// Issues a fresh bundle to a device.
    pub async fn reissue(&self, tenant: &TenantId, device: &DeviceId) -> Result<(), StubError> {
        self.apply(|e, now| Ok(((), e.reissue(tenant, device, now)?)))
            .await
    }

    /// Pins a new key for a device.
    pub async fn repin_device_key(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        key: PublicKey,
    ) -> Result<(), StubError> {
        self.apply(|e, _| {
            e.repin_device_key(tenant, device, key)?;
            Ok(((), Effects::default()))
        })
        .await
    }

    /// Devices (of one tenant, when given).
    pub fn devices(&self, tenant: Option<&TenantId>) -> Result<Vec<DeviceView>, StubError> {
        self.with_engine(|e| e.device_views(tenant))
    }

    /// One device.
    pub fn device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<DeviceView>, StubError> {
        self.with_engine(|e| e.device_view(tenant, device))
    }

    /// Subscriptions with seat counts.
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionView>, StubError> {
        let now = self.now();
        self.with_engine(|e| e.subscriptions(now))
    }

    /// Compliance of a customer.
    pub fn compliance(&self, customer: &TenantId) -> Result<ComplianceReport, StubError> {
        let now = self.now();
        self.with_engine(|e| e.compliance(customer, now))?
            .map_err(StubError::from)
    }

    /// The newest refused reports.
    pub fn refused_reports(&self, limit: u32) -> Result<Vec<RefusedReport>, StubError> {
        let core = self.core.lock().map_err(|_| StubError::Poisoned)?;
        Ok(core.ledger().refused_reports(limit)?)
    }

    /// The usage history (see [`crate::ledger::Ledger::usage_windows`]).
    pub fn usage_windows(
        &self,
        q: &crate::ledger::UsageQuery<'_>,
    ) -> Result<Vec<crate::engine::usage::UsageWindow>, StubError> {
        let core = self.core.lock().map_err(|_| StubError::Poisoned)?;
        Ok(core.ledger().usage_windows(q)?)
    }

    /// Asks `device` of `tenant` for its diagnostic report over MQTT and waits up to `timeout`
    /// for the answer signed by the device's pinned key (see [`crate::diag`]).
    pub async fn request_diag(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        timeout: std::time::Duration,
    ) -> Result<licd_protocol::DiagResponse, crate::diag::DiagError> {
        let cx = crate::diag::DiagContext {
            core: &self.core,
            client: &self.client,
            waiters: &self.diag,
            clock: &self.clock,
        };
        crate::diag::request(cx, tenant, device, timeout).await
    }

    /// Stops the MQTT session and waits for its tasks. The ledger is closed when the last
    /// reference goes. (The embedded broker thread cannot be stopped: rumqttd has no handle.)
    pub async fn shutdown(self) {
        self.shutdown_tx.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
