//! The running relay: the same MQTT session as the controller (reconnect with backoff,
//! re-subscribe on every ConnAck, bounded queue), subscribed to the delegation's tenant's
//! reports only; each report goes through [`Pools`], the seats are saved, and the bundle is
//! sealed with the relay's key and its delegation chain and published retained.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use licd_protocol::envelope::{open_report, seal_bundle_delegated};
use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::{Topic, TopicKind, UnixTime};
use rumqttc::AsyncClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::pool::{LeaseTerms, Pools, RelayRefused};
use super::site::{self, Site, SiteError};
use crate::config::{BrokerMode, Clock};
use crate::controller::Publication;
use crate::error::StubError;
use crate::session::{self, Incoming, Stats};

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The relay's directory (key, delegation, seats).
    pub dir: PathBuf,
    /// The site's broker: embedded (the default) or an external one.
    pub broker: BrokerMode,
    /// Lease and grace of the bundles it issues.
    pub terms: LeaseTerms,
    /// Time source.
    pub clock: Clock,
    /// MQTT client id.
    pub client_id: String,
    /// How long to wait for the broker at start.
    pub connect_timeout: Duration,
}

/// Why a report got no bundle from the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Over the envelope limit.
    #[error("report of {0} bytes is over the envelope limit")]
    Oversized(usize),
    /// Not a report topic, or the envelope does not open.
    #[error("invalid report: {0}")]
    Invalid(licd_protocol::Error),
    /// The report names another device than its topic.
    #[error("report for {0} arrived on another device's topic")]
    TopicMismatch(String),
    /// The pools refused it.
    #[error(transparent)]
    Refused(#[from] RelayRefused),
    /// The seats could not be saved; nothing was published.
    #[error(transparent)]
    Site(#[from] SiteError),
}

/// The relay's state: its delegation and seats, saved in its directory.
#[derive(Debug)]
pub struct RelayCore {
    site: Site,
    pools: Pools,
    dir: PathBuf,
}

impl RelayCore {
    /// Loads the site and its saved seats. Seats saved under another delegation (a renewed
    /// one) carry over for the same tenant: leases given under the old one still run.
    pub fn open(dir: PathBuf, terms: LeaseTerms) -> Result<Self, SiteError> {
        let site = Site::load(&dir)?;
        let fresh = site.pools(terms);
        let pools = match site::load_state(&dir)? {
            Some(saved) if saved.same_delegation(&fresh) => saved.with_terms(terms),
            Some(saved) => {
                tracing::info!(
                    "a new delegation: seats still occupied under the old one carry over"
                );
                fresh.continuing(saved)
            }
            None => fresh,
        };
        Ok(Self { site, pools, dir })
    }

    /// The seats.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Checks, applies and answers one report: size, topic, envelope and signature,
    /// topic/report agreement, the pools, the seats saved, then the sealed bundle.
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: UnixTime,
    ) -> Result<Publication, RelayError> {
        if payload.len() > MAX_ENVELOPE_LEN {
            return Err(RelayError::Oversized(payload.len()));
        }
        let t = Topic::parse(topic).map_err(RelayError::Invalid)?;
        if t.kind != TopicKind::Report {
            return Err(RelayError::Invalid(licd_protocol::Error::BadTopic(
                "not a report topic",
            )));
        }
        let report = open_report(payload).map_err(RelayError::Invalid)?;
        if report.tenant != t.tenant || report.device != t.device {
            return Err(RelayError::TopicMismatch(format!(
                "{}/{}",
                report.tenant, report.device
            )));
        }
        let before = self.pools.clone();
        let bundle = self.pools.handle_report(&report, now)?;
        self.pools.prune(now);
        if let Err(e) = site::save_state(&self.dir, &self.pools) {
            // Not saved, not given: the seats stay as they were on disk.
            self.pools = before;
            return Err(e.into());
        }
        Ok(Publication {
            topic: Topic::new(&bundle.tenant, &bundle.device, TopicKind::Grants).to_topic_string(),
            payload: seal_bundle_delegated(
                &bundle,
                &self.site.key,
                &self.site.cert,
                &self.site.delegation,
            ),
            seq: bundle.seq,
        })
    }
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    core: Arc<Mutex<RelayCore>>,
    broker_addr: Option<SocketAddr>,
    stats: Arc<Stats>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RelayHandle {
    /// The embedded broker's address (`None` with an external broker).
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// Bundles published so far.
    pub fn bundles_published(&self) -> u64 {
        self.stats.bundles_published.load(Ordering::Relaxed)
    }

    /// Devices licensed for `service` at `now` (seats occupied).
    pub fn occupied(&self, service: &licd_protocol::ServiceName, now: UnixTime) -> u32 {
        self.core
            .lock()
            .map(|c| c.pools().occupied(service, now))
            .unwrap_or(0)
    }

    /// Stops the session and the worker.
    pub async fn shutdown(self) {
        self.shutdown_tx.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the relay (and its embedded broker) and waits until it is subscribed.
pub async fn start(config: RelayConfig) -> Result<RelayHandle, StubError> {
    let core = RelayCore::open(config.dir.clone(), config.terms)?;
    let site_id = core.site.delegation.body.constraints.site.clone();
    let tenant = core.site.delegation.body.constraints.tenant.clone();
    let embedded = crate::broker::start_if_embedded(&config.broker, config.connect_timeout)
        .await?
        .map(|b| b.addr);
    let nodes = session::node_options(&config.broker, embedded, &config.client_id)?;
    let opts = nodes
        .first()
        .map(|n| n.options.clone())
        .ok_or_else(|| StubError::Config("no broker URL".into()))?;
    let filter = format!("licd/v1/{tenant}/+/report");
    let (client, eventloop) = AsyncClient::new(opts, 256);
    let (work_tx, work_rx) = mpsc::channel(1024);
    let (ready_tx, mut ready) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let core = Arc::new(Mutex::new(core));
    let tasks = vec![
        tokio::spawn(session::run_eventloop(
            eventloop,
            nodes,
            client.clone(),
            filter.clone(),
            work_tx,
            ready_tx,
            shutdown_rx,
            stats.clone(),
            Arc::new(crate::diag::DiagWaiters::default()),
        )),
        tokio::spawn(run_worker(
            core.clone(),
            client,
            config.clock.clone(),
            work_rx,
            stats.clone(),
        )),
    ];
    let handle = RelayHandle {
        core,
        broker_addr: embedded,
        stats,
        shutdown_tx,
        tasks,
    };
    let waited = tokio::time::timeout(config.connect_timeout, ready.wait_for(|r| *r)).await;
    if !matches!(waited, Ok(Ok(_))) {
        handle.shutdown().await;
        return Err(StubError::ConnectTimeout(config.connect_timeout));
    }
    tracing::info!(site = %site_id, %tenant, %filter, "licd-stub relay ready");
    Ok(handle)
}

/// Runs the relay until `shutdown` completes.
pub async fn serve(
    config: RelayConfig,
    shutdown: impl std::future::Future,
) -> Result<(), StubError> {
    let handle = start(config).await?;
    if let Some(addr) = handle.broker_addr() {
        tracing::info!(broker = %addr, "site broker (embedded) listening");
    }
    shutdown.await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn run_worker(
    core: Arc<Mutex<RelayCore>>,
    client: AsyncClient,
    clock: Clock,
    mut work_rx: mpsc::Receiver<Incoming>,
    stats: Arc<Stats>,
) {
    while let Some(item) = work_rx.recv().await {
        let now = clock.now();
        let result = match core.lock() {
            Ok(mut c) => c.handle(&item.topic, &item.payload, now),
            Err(_) => {
                tracing::error!("relay state poisoned; stopping the worker");
                return;
            }
        };
        match result {
            Ok(publication) => {
                stats.reports_applied.fetch_add(1, Ordering::Relaxed);
                session::publish_all(&client, vec![publication], &stats).await;
            }
            Err(e) => {
                stats.reports_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %item.topic, reason = %e, "relay: report refused");
            }
        }
    }
}
