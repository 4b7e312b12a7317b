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
use licd_protocol::{GrantBundle, Topic, TopicKind, UnixTime};
use rumqttc::AsyncClient;
use tokio::sync::watch;
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
    /// The controller's broker, when the site has an uplink: the relay takes renewed
    /// delegations from there (`licd/v1/{tenant}/{site}/delegation`, retained). The relay
    /// works the same without it, or while it is down.
    pub uplink: Option<BrokerMode>,
    /// How often the relay sends what it issued over the uplink while it is up (and at once
    /// whenever it comes back).
    pub uplink_report_every: Duration,
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
    /// An acknowledgement from the uplink was not taken (the reason).
    #[error("acknowledgement from the uplink not taken: {0}")]
    Ack(String),
    /// A delegation from the uplink was not taken (the reason); the one in force stays.
    #[error("delegation from the uplink not taken: {0}")]
    Delegation(String),
}

/// The relay's state: its delegation and seats, saved in its directory.
#[derive(Debug)]
pub struct RelayCore {
    site: Site,
    pools: Pools,
    dir: PathBuf,
    terms: LeaseTerms,
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
        Ok(Self {
            site,
            pools,
            dir,
            terms,
        })
    }

    /// The delegation in force.
    pub fn delegation(&self) -> &licd_protocol::Delegation {
        &self.site.delegation
    }

    /// Takes a delegation received from the controller (a kind-12 envelope on the uplink):
    /// installs it if it is for this relay, its tenant and site, and newer than the one in
    /// force; the seats still occupied carry over ([`Pools::continuing`]). Returns whether it
    /// was installed (`false`: the same one again, or an empty retained message).
    pub fn take_delegation(&mut self, payload: &[u8], now: UnixTime) -> Result<bool, RelayError> {
        if payload.is_empty() {
            return Ok(false);
        }
        let file = site::read_delegation(payload).map_err(RelayError::Delegation)?;
        let (cur, new) = (&self.site.delegation.body, &file.delegation.body);
        if file.delegation == self.site.delegation {
            return Ok(false);
        }
        if new.constraints.tenant != cur.constraints.tenant
            || new.constraints.site != cur.constraints.site
        {
            return Err(RelayError::Delegation(format!(
                "a delegation for {}/{}, this relay serves {}/{}",
                new.constraints.tenant,
                new.constraints.site,
                cur.constraints.tenant,
                cur.constraints.site
            )));
        }
        if (new.not_before, new.not_after) <= (cur.not_before, cur.not_after) {
            return Err(RelayError::Delegation(format!(
                "not newer than the delegation in force (valid {}..{}, this one {}..{})",
                cur.not_before, cur.not_after, new.not_before, new.not_after
            )));
        }
        let site = site::install(&self.dir, file)?;
        let mut pools = site.pools(self.terms).continuing(self.pools.clone());
        pools.prune(now);
        site::save_state(&self.dir, &pools)?;
        tracing::info!(
            site = %site.delegation.body.constraints.site,
            not_after = site.delegation.body.not_after,
            "renewed delegation installed; seats still occupied carry over"
        );
        self.site = site;
        self.pools = pools;
        Ok(true)
    }

    /// The report to send over the uplink: the oldest unacknowledged leases (at most 256),
    /// signed with the relay key under its delegation; `None` when everything is
    /// acknowledged.
    pub fn relay_report(&self, now: UnixTime) -> Option<(String, Vec<u8>)> {
        let leases = self
            .pools
            .unacknowledged(licd_protocol::limits::MAX_RELAY_REPORT_LEASES);
        if leases.is_empty() {
            return None;
        }
        let c = &self.site.delegation.body.constraints;
        let report = licd_protocol::RelayReport {
            tenant: c.tenant.clone(),
            site: c.site.clone(),
            sent_at: now,
            leases: leases.to_vec(),
        };
        Some((
            licd_protocol::topic::site_topic(
                &c.tenant,
                &c.site,
                licd_protocol::topic::RELAY_REPORT_LEAF,
            ),
            licd_protocol::delegation::seal_relay_report(
                &report,
                &self.site.key,
                &self.site.cert,
                &self.site.delegation,
            ),
        ))
    }

    /// Takes the controller's acknowledgement (kind 14): signed by the controller key that
    /// delegated to this relay, for its tenant, site and key; the leases it covers are
    /// forgotten and the seats file saved. Returns how many are still unacknowledged.
    pub fn take_ack(&mut self, payload: &[u8]) -> Result<usize, RelayError> {
        if payload.is_empty() {
            return Ok(self.pools.unacknowledged(usize::MAX).len());
        }
        let (ack, signer) = licd_protocol::delegation::open_relay_ack(payload)
            .map_err(|e| RelayError::Ack(e.to_string()))?;
        let b = &self.site.delegation.body;
        if signer != b.issuer {
            return Err(RelayError::Ack(format!(
                "signed by {}, not by the controller key that delegated to this relay ({})",
                signer.id(),
                b.issuer.id()
            )));
        }
        let ours = licd_protocol::PublicKey::from(&self.site.key.verifying_key()).id();
        if ack.relay != ours || ack.tenant != b.constraints.tenant || ack.site != b.constraints.site
        {
            return Err(RelayError::Ack("for another relay, tenant or site".into()));
        }
        let before = self.pools.clone();
        if self.pools.acknowledge(ack.through) {
            if let Err(e) = site::save_state(&self.dir, &self.pools) {
                self.pools = before;
                return Err(e.into());
            }
            tracing::info!(
                through = ack.through,
                "relay: leases acknowledged by the controller"
            );
        }
        Ok(self.pools.unacknowledged(usize::MAX).len())
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
        let mut results = self.handle_batch(&[(topic, payload)], now)?;
        results
            .pop()
            .unwrap_or(Err(RelayError::Invalid(licd_protocol::Error::BadTopic(
                "empty batch",
            ))))
    }

    /// Applies several reports, saves the seats once for all of them, then seals each
    /// bundle: the same steps as [`RelayCore::handle`] with one fsynced write per batch (the
    /// seats file holds the whole site, so a write per report cost O(devices) each). If the
    /// seats cannot be saved, none of the batch is given: the pools stay as they were on disk
    /// and the error is returned for all of it.
    pub fn handle_batch(
        &mut self,
        items: &[(&str, &[u8])],
        now: UnixTime,
    ) -> Result<Vec<Result<Publication, RelayError>>, RelayError> {
        let before = self.pools.clone();
        let bundles: Vec<Result<GrantBundle, RelayError>> = items
            .iter()
            .map(|(topic, payload)| self.apply(topic, payload, now))
            .collect();
        self.pools.prune(now);
        if let Err(e) = site::save_state(&self.dir, &self.pools) {
            // Not saved, not given: the seats stay as they were on disk.
            self.pools = before;
            return Err(e.into());
        }
        Ok(bundles
            .into_iter()
            .map(|b| {
                b.map(|bundle| Publication {
                    topic: Topic::new(&bundle.tenant, &bundle.device, TopicKind::Grants)
                        .to_topic_string(),
                    payload: seal_bundle_delegated(
                        &bundle,
                        &self.site.key,
                        &self.site.cert,
                        &self.site.delegation,
                    ),
                    seq: bundle.seq,
                })
            })
            .collect())
    }

    fn apply(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: UnixTime,
    ) -> Result<GrantBundle, RelayError> {
        if payload.len() > MAX_ENVELOPE_LEN {
            return Err(RelayError::Oversized(payload.len()));
        }
        let t = Topic::parse(topic).map_err(RelayError::Invalid)?;
        if t.kind != TopicKind::Report {
            return Err(RelayError::Invalid(licd_protocol::Error::BadTopic(
                "not a report topic",
            )));
        }
        // An extended report (§17) is read for its report part and answered with a plain
        // bundle: the device then sends plain reports to this relay (§17.6).
        let report = match open_report(payload) {
            Err(licd_protocol::Error::WrongKind { .. }) => {
                licd_protocol::policy::open_extended_report(payload)
                    .map_err(RelayError::Invalid)?
                    .report
            }
            other => other.map_err(RelayError::Invalid)?,
        };
        if report.tenant != t.tenant || report.device != t.device {
            return Err(RelayError::TopicMismatch(format!(
                "{}/{}",
                report.tenant, report.device
            )));
        }
        let bundle = self.pools.handle_report(&report, now)?;
        // Recorded for the controller in the same write as the seats.
        self.pools.record_issued(&bundle);
        Ok(bundle)
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

    /// The session's counters (reports received, applied, refused, dropped; bundles
    /// published), as the controller's [`crate::StubHandle::stats`] gives them.
    pub fn stats(&self) -> crate::session::StatsSnapshot {
        self.stats.snapshot()
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

    /// Leases issued and not yet acknowledged by the controller.
    pub fn unacknowledged(&self) -> usize {
        self.core
            .lock()
            .map(|c| c.pools().unacknowledged(usize::MAX).len())
            .unwrap_or(0)
    }

    /// The delegation in force.
    pub fn delegation(&self) -> Option<licd_protocol::Delegation> {
        self.core.lock().ok().map(|c| c.delegation().clone())
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
    let (work_tx, work_rx) = crate::intake::channel(1024);
    let (ready_tx, mut ready) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let core = Arc::new(Mutex::new(core));
    let tasks = vec![
        tokio::spawn(session::run_eventloop(
            eventloop,
            nodes,
            client.clone(),
            filter.clone().into(),
            work_tx,
            ready_tx,
            shutdown_rx.clone(),
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
    let mut tasks = tasks;
    if let Some(uplink) = &config.uplink {
        // The uplink fails over between the controller's broker nodes like the site session.
        let up_nodes =
            session::node_options(uplink, None, &format!("{}-uplink", config.client_id))?;
        let up_opts = up_nodes
            .first()
            .map(|n| n.options.clone())
            .ok_or_else(|| StubError::Config("no uplink broker URL".into()))?;
        // One filter for what the controller sends this site.
        let up_filter = format!("licd/v1/{tenant}/{site_id}/+");
        let (up_client, up_loop) = AsyncClient::new(up_opts, 64);
        let (up_tx, up_rx) = crate::intake::channel(64);
        let (up_ready, up_ready_rx) = watch::channel(false);
        tasks.push(tokio::spawn(session::run_eventloop(
            up_loop,
            up_nodes,
            up_client.clone(),
            up_filter.clone().into(),
            up_tx,
            up_ready,
            shutdown_rx.clone(),
            Arc::new(Stats::default()),
            Arc::new(crate::diag::DiagWaiters::default()),
        )));
        tasks.push(tokio::spawn(run_uplink(
            core.clone(),
            config.clock.clone(),
            up_rx,
        )));
        tasks.push(tokio::spawn(send_reports(
            core.clone(),
            up_client,
            config.clock.clone(),
            up_ready_rx,
            shutdown_rx.clone(),
            config.uplink_report_every,
        )));
        tracing::info!(filter = %up_filter, "relay uplink configured");
    }
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
    work_rx: crate::intake::Consumer,
    stats: Arc<Stats>,
) {
    // Take what is queued, up to a batch: one write of the seats file for all of it.
    while let Some(batch) = work_rx.take(session::MAX_BATCH).await {
        let now = clock.now();
        let items: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|i| (i.topic.as_str(), i.payload.as_slice()))
            .collect();
        let results = match core.lock() {
            Ok(mut c) => c.handle_batch(&items, now),
            Err(_) => {
                tracing::error!("relay state poisoned; stopping the worker");
                return;
            }
        };
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                stats
                    .reports_refused
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, reports = batch.len(), "relay: seats not saved; reports not answered");
                continue;
            }
        };
        let mut pubs = Vec::with_capacity(results.len());
        for (item, r) in batch.iter().zip(results) {
            match r {
                Ok(publication) => {
                    stats.reports_applied.fetch_add(1, Ordering::Relaxed);
                    pubs.push(publication);
                }
                Err(e) => {
                    stats.reports_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %item.topic, reason = %e, "relay: report refused");
                }
            }
        }
        session::publish_all(&client, pubs, &stats).await;
    }
}

/// What the controller sends the site over the uplink: renewed delegations. Anything else on
/// the site's topics is not for this relay's worker.
async fn run_uplink(core: Arc<Mutex<RelayCore>>, clock: Clock, rx: crate::intake::Consumer) {
    while let Some(batch) = rx.take(session::MAX_BATCH).await {
        for item in batch {
            if !take_from_uplink(&core, &clock, &item) {
                return;
            }
        }
    }
}

/// Applies one message from the uplink; `false` when the relay's state is poisoned.
fn take_from_uplink(core: &Mutex<RelayCore>, clock: &Clock, item: &Incoming) -> bool {
    let leaf = format!("/{}", licd_protocol::topic::DELEGATION_LEAF);
    let ack_leaf = format!("/{}", licd_protocol::topic::RELAY_ACK_LEAF);
    if item.topic.ends_with(&ack_leaf) {
        let taken = match core.lock() {
            Ok(mut c) => c.take_ack(&item.payload),
            Err(_) => return false,
        };
        match taken {
            Ok(left) => tracing::debug!(left, "relay: acknowledgement taken"),
            Err(e) => {
                tracing::warn!(topic = %item.topic, reason = %e, "relay: acknowledgement refused")
            }
        }
        return true;
    }
    if !item.topic.ends_with(&leaf) {
        return true;
    }
    let now = clock.now();
    let taken = match core.lock() {
        Ok(mut c) => c.take_delegation(&item.payload, now),
        Err(_) => {
            tracing::error!("relay state poisoned; stopping the uplink worker");
            return false;
        }
    };
    match taken {
        Ok(true) => tracing::info!(topic = %item.topic, "delegation renewed from the uplink"),
        Ok(false) => {
            tracing::debug!(topic = %item.topic, "delegation from the uplink already in force")
        }
        Err(e) => {
            tracing::warn!(topic = %item.topic, reason = %e, "delegation from the uplink refused")
        }
    }
    true
}

/// Sends what the relay issued over the uplink: at once when it comes up, then every
/// `every` while it is up, until everything is acknowledged. A report lost on the way is
/// simply sent again (the controller stores each lease once).
async fn send_reports(
    core: Arc<Mutex<RelayCore>>,
    client: AsyncClient,
    clock: Clock,
    mut ready: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = ready.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        if !*ready.borrow() {
            continue;
        }
        let report = match core.lock() {
            Ok(c) => c.relay_report(clock.now()),
            Err(_) => return,
        };
        if let Some((topic, payload)) = report {
            if let Err(e) = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload) {
                tracing::debug!(error = %e, "relay report not queued; sent again later");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use licd_protocol::delegation::seal_delegation;
    use licd_protocol::{Constraints, SeatPool, ServiceName, SiteId, TenantId};

    const T0: u64 = 1_800_000_000;

    fn envelope(
        signer: &crate::Signer,
        relay: licd_protocol::PublicKey,
        tenant: &str,
        nb: u64,
        na: u64,
        seats: u32,
    ) -> Vec<u8> {
        let c = Constraints {
            tenant: TenantId::new(tenant).unwrap(),
            site: SiteId::new("plant-7").unwrap(),
            max_lease: 600,
            pools: vec![SeatPool {
                service: ServiceName::new("wifi").unwrap(),
                seats,
            }],
        };
        let d = licd_protocol::Delegation::issue(signer.key(), relay, nb, na, c).unwrap();
        seal_delegation(&d, signer.key(), signer.cert())
    }

    #[test]
    fn the_uplink_installs_only_a_newer_delegation_for_the_same_relay_tenant_and_site() {
        let dir = tempfile::tempdir().unwrap();
        let signer = crate::Signer::ephemeral(T0).unwrap();
        let relay = site::init(dir.path()).unwrap();
        let first = envelope(&signer, relay, "acme", T0, T0 + 1000, 2);
        site::install(dir.path(), site::read_delegation(&first).unwrap()).unwrap();
        let terms = LeaseTerms {
            lease_secs: 60,
            grace_secs: 0,
        };
        let mut core = RelayCore::open(dir.path().to_path_buf(), terms).unwrap();
        // The same again, or an empty retained message: nothing to do.
        assert!(!core.take_delegation(&first, T0).unwrap());
        assert!(!core.take_delegation(&[], T0).unwrap());
        // Newer: installed, on disk too.
        let newer = envelope(&signer, relay, "acme", T0 + 10, T0 + 2000, 3);
        assert!(core.take_delegation(&newer, T0 + 10).unwrap());
        assert_eq!(core.delegation().body.constraints.pools[0].seats, 3);
        let reopened = RelayCore::open(dir.path().to_path_buf(), terms).unwrap();
        assert_eq!(reopened.delegation(), core.delegation());
        // Older (the controller republished one after a return), another tenant, another
        // relay's key, garbage: refused, the one in force stays.
        for bad in [
            first.clone(),
            envelope(&signer, relay, "other", T0 + 20, T0 + 3000, 1),
            envelope(
                &signer,
                crate::keys::random_key()
                    .map(|k| (&k.verifying_key()).into())
                    .unwrap(),
                "acme",
                T0 + 20,
                T0 + 3000,
                1,
            ),
            b"not a delegation".to_vec(),
        ] {
            assert!(core.take_delegation(&bad, T0 + 20).is_err());
            assert_eq!(core.delegation().body.constraints.pools[0].seats, 3);
        }
    }
}
