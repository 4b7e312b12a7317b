//! The controller's MQTT session: one task polls the rumqttc event loop (reconnecting with the
//! agent's backoff policy — jittered exponential, reset only by a connection that held, see
//! [`licd_core::backoff`] — never exiting on a broker error, re-subscribing on every ConnAck),
//! and hands reports to a worker task through a bounded queue; the worker runs the
//! [`Controller`] and publishes the sealed bundles QoS 1, retained.
//!
//! The poll loop never waits on the worker (a full queue drops the report — devices report
//! again), and the worker's publishes are drained by the poll loop, so the two bounded
//! channels cannot deadlock each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use licd_core::backoff::os_random;
use licd_core::failover::Failover;
use licd_protocol::limits::MAX_ENVELOPE_LEN;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode, Transport,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{BrokerMode, Clock};
use crate::controller::{Controller, Publication};
use crate::error::StubError;
use crate::intake::Offered;

/// Longest reconnect delay: one controller, so a shorter cap than the agents' 5 minutes.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// MQTT keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Most reports applied in one ledger transaction.
pub(crate) const MAX_BATCH: usize = 64;
/// Requests (publishes, subscribes) queued in the rumqttc client.
const REQUEST_CAPACITY: usize = 256;
/// QoS 1 publishes (bundles) awaiting the broker's PUBACK. rumqttc's default of 100 caps the
/// controller at 100 / PUBACK latency: on a nats-server cluster, which acknowledges a retained
/// publish only once JetStream has replicated it, that was ~180 bundles/s.
const INFLIGHT: u16 = 1000;

/// Counters of the session, for tests and the admin API.
#[derive(Debug, Default)]
pub struct Stats {
    /// Report messages received from the broker.
    pub reports_received: AtomicU64,
    /// Reports applied.
    pub reports_applied: AtomicU64,
    /// Reports refused (bad envelope, topic mismatch, key mismatch, …).
    pub reports_refused: AtomicU64,
    /// Reports dropped because the worker queue was full.
    pub reports_dropped: AtomicU64,
    /// Reports that took the place of their device's report still waiting in the queue (a
    /// retry; the older copy was dropped, see `intake.rs`).
    pub reports_replaced: AtomicU64,
    /// Bundles handed to the MQTT client.
    pub bundles_published: AtomicU64,
    /// Connections (ConnAcks) to the broker so far.
    pub connections: AtomicU64,
    /// Refusals by code and ledger latency, for `/metrics` (see [`crate::metrics`]).
    pub instruments: crate::metrics::Instruments,
    /// Reports, refusals and bundles as they happen, for live views (see [`crate::events`]).
    pub events: crate::events::Events,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// See [`Stats::reports_received`].
    pub reports_received: u64,
    /// See [`Stats::reports_applied`].
    pub reports_applied: u64,
    /// See [`Stats::reports_refused`].
    pub reports_refused: u64,
    /// See [`Stats::reports_dropped`].
    pub reports_dropped: u64,
    /// See [`Stats::reports_replaced`].
    pub reports_replaced: u64,
    /// See [`Stats::bundles_published`].
    pub bundles_published: u64,
    /// See [`Stats::connections`].
    pub connections: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            reports_received: g(&self.reports_received),
            reports_applied: g(&self.reports_applied),
            reports_refused: g(&self.reports_refused),
            reports_dropped: g(&self.reports_dropped),
            reports_replaced: g(&self.reports_replaced),
            bundles_published: g(&self.bundles_published),
            connections: g(&self.connections),
        }
    }
}

/// One broker node the controller may connect to: its name for logs, and the options.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) options: MqttOptions,
}

/// MQTT options for the controller's client on the broker's first node (see [`node_options`]).
pub(crate) fn mqtt_options(
    broker: &BrokerMode,
    embedded: Option<std::net::SocketAddr>,
    client_id: &str,
) -> Result<MqttOptions, StubError> {
    let mut nodes = node_options(broker, embedded, client_id)?.into_iter();
    nodes
        .next()
        .map(|n| n.options)
        .ok_or_else(|| StubError::Config("no broker URL".into()))
}

/// MQTT options for every node of the broker: the embedded broker, or each URL of an external
/// broker's comma-separated list (`mqtt://a:1883,mqtt://b:1883`: the nodes of a cluster, one
/// scheme for all), in order.
pub(crate) fn node_options(
    broker: &BrokerMode,
    embedded: Option<std::net::SocketAddr>,
    client_id: &str,
) -> Result<Vec<Node>, StubError> {
    let nodes = match (broker, embedded) {
        (_, Some(addr)) => vec![Node {
            name: addr.to_string(),
            options: MqttOptions::new(client_id, addr.ip().to_string(), addr.port()),
        }],
        (
            BrokerMode::External {
                url,
                ca_file,
                credentials,
            },
            None,
        ) => {
            let urls = split_urls(url).map_err(StubError::Config)?;
            let tls = urls.iter().any(|u| u.starts_with("mqtts://"));
            // One TLS configuration for every node: the CA file is read once.
            let transport = if tls {
                Some(Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(crate::tls::client_config(
                        ca_file.as_deref(),
                    )?),
                ))
            } else {
                None
            };
            let mut nodes = Vec::with_capacity(urls.len());
            for u in urls {
                let (host, port) = host_port(u)?;
                let mut o = MqttOptions::new(client_id, host.trim_matches(['[', ']']), port);
                if let Some(t) = &transport {
                    o.set_transport(t.clone());
                }
                if let Some((u, p)) = credentials {
                    o.set_credentials(u.clone(), p.clone());
                }
                nodes.push(Node {
                    name: format!("{host}:{port}"),
                    options: o,
                });
            }
            nodes
        }
        (BrokerMode::Embedded { .. }, None) => {
            return Err(StubError::Config("embedded broker not started".into()))
        }
    };
    Ok(nodes
        .into_iter()
        .map(|mut n| {
            n.options
                .set_keep_alive(KEEP_ALIVE)
                .set_clean_session(true)
                .set_max_packet_size(MAX_ENVELOPE_LEN + 4096, MAX_ENVELOPE_LEN + 4096)
                .set_request_channel_capacity(REQUEST_CAPACITY)
                .set_inflight(INFLIGHT);
            n
        })
        .collect())
}

/// The URLs of a comma-separated broker list, checked: each `mqtt://` or `mqtts://`, all with
/// the same scheme, none twice.
pub(crate) fn split_urls(list: &str) -> Result<Vec<&str>, String> {
    let urls: Vec<&str> = list.split(',').map(str::trim).collect();
    let mut seen: Vec<&str> = Vec::new();
    for u in &urls {
        if !(u.starts_with("mqtt://") || u.starts_with("mqtts://")) {
            return Err(format!(
                "broker {u:?}: expected mqtt://host:port or mqtts://host:port (several: comma-separated)"
            ));
        }
        if u.starts_with("mqtts://") != urls[0].starts_with("mqtts://") {
            return Err(format!(
                "broker {list:?}: every node needs the same scheme (all mqtts:// or all mqtt://)"
            ));
        }
        if seen.contains(u) {
            return Err(format!("broker {u:?} is listed twice"));
        }
        seen.push(u);
    }
    Ok(urls)
}

/// `host` and port of one `mqtt(s)://host[:port]` URL (default 1883, 8883 with TLS).
fn host_port(url: &str) -> Result<(&str, u16), StubError> {
    let (tls, rest) = match url.strip_prefix("mqtts://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("mqtt://").unwrap_or(url)),
    };
    let rest = rest.trim_end_matches('/');
    let bracketed = rest.starts_with('[');
    match rest.rsplit_once(':') {
        Some((h, p)) if !bracketed || h.ends_with(']') => Ok((
            h,
            p.parse::<u16>()
                .map_err(|_| StubError::Config(format!("bad port in {url}")))?,
        )),
        _ if rest.is_empty() => Err(StubError::Config(format!("no host in {url}"))),
        _ => Ok((rest, if tls { 8883 } else { 1883 })),
    }
}

/// Held from an engine call until its bundles are queued in the MQTT client, so bundles for
/// one device reach the broker in `seq` order even when the worker and an operator operation
/// run at the same time (the retained bundle is then always the newest).
pub(crate) type PublishOrder = tokio::sync::Mutex<()>;

/// A received report, queued for the worker.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// Tells live views (the dashboard) that the controller's broker link came up or went down:
/// once per change, not per reconnect attempt.
fn link_event(stats: &Stats, text: impl Into<String>) {
    stats.events.send(crate::events::StubEvent {
        kind: "link",
        tenant: None,
        device: None,
        text: text.into(),
    });
}

/// What the controller subscribes to on every connection: its report filter, and the QoS of
/// all its subscriptions (see [`crate::StubConfig::subscribe_qos`]).
#[derive(Debug, Clone)]
pub(crate) struct ReportFilter {
    pub(crate) filter: String,
    pub(crate) qos: QoS,
}

impl From<String> for ReportFilter {
    fn from(filter: String) -> Self {
        Self {
            filter,
            qos: QoS::AtLeastOnce,
        }
    }
}

impl From<&str> for ReportFilter {
    fn from(filter: &str) -> Self {
        filter.to_string().into()
    }
}

/// Polls the event loop until shutdown.
// Each argument is a channel or shared state the loop uses once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_eventloop(
    mut eventloop: EventLoop,
    nodes: Vec<Node>,
    client: AsyncClient,
    subscribe: ReportFilter,
    work_tx: crate::intake::Producer,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<Stats>,
    diag: Arc<crate::diag::DiagWaiters>,
) {
    // The event loop starts on the first node (one controller: the operator's order is kept);
    // every failure moves to the next one (see `licd_core::failover`). An empty list: the event
    // loop's own options, retried in place.
    let mut failover = Failover::new(nodes.len(), BACKOFF_MAX, 0);
    // tokio's clock, so a paused-time test can hold a connection past the reset window.
    let mut connected_at: Option<Instant> = None;
    let mut subscriptions = Subscriptions::default();
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            ev = eventloop.poll() => ev,
        };
        if subscriptions.pending() && event.is_ok() {
            subscriptions.queue(&client);
        }
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                let n = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(connection = n, filter = %subscribe.filter, "connected to broker, subscribing to reports");
                let diag_filter = licd_protocol::topic::diag_response_filter();
                let filter = &subscribe.filter;
                let mut filters = vec![filter.clone(), diag_filter];
                // Beside the reports, site relays' reports (same share group: one replica
                // stores each).
                if let Some(stem) = filter.strip_suffix("/report") {
                    filters.push(format!(
                        "{stem}/{}",
                        licd_protocol::topic::RELAY_REPORT_LEAF
                    ));
                }
                subscriptions = Subscriptions::after_connack(filters, subscribe.qos);
                subscriptions.queue(&client);
            }
            Ok(Event::Incoming(Packet::SubAck(ack)))
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) =>
            {
                // Subscribed to nothing while looking connected: nats-server refuses a QoS 1
                // subscription for a few seconds after losing a node (JetStream re-elects).
                // Drop the connection and retry like after a failure (the next node, no
                // backoff reset).
                eventloop.clean();
                connected_at = None;
                let e = "the broker refused the report subscription";
                if ready.send_replace(false) {
                    link_event(&stats, format!("controller lost the broker: {e}"));
                }
                subscriptions = Subscriptions::default();
                let wait = fail_over(&mut failover, &nodes, &mut eventloop, None, e);
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                tracing::debug!(?ack.return_codes, "subscribed");
                if !ready.send_replace(true) {
                    link_event(&stats, "controller connected to the broker and subscribed");
                }
            }
            // Presence arrives only while a diagnostic request waits on that device.
            Ok(Event::Incoming(Packet::Publish(p)))
                if p.topic.ends_with("/diag-response") || p.topic.ends_with("/presence") =>
            {
                diag.deliver(&p.topic, &p.payload);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                stats.reports_received.fetch_add(1, Ordering::Relaxed);
                if p.payload.len() > MAX_ENVELOPE_LEN {
                    stats.reports_refused.fetch_add(1, Ordering::Relaxed);
                    stats.instruments.refused(crate::metrics::OVERSIZED, 1);
                    tracing::warn!(topic = %p.topic, len = p.payload.len(), "report over the size limit refused");
                    continue;
                }
                let item = Incoming {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                };
                match work_tx.offer(item) {
                    Offered::Queued => {}
                    Offered::Replaced => {
                        stats.reports_replaced.fetch_add(1, Ordering::Relaxed);
                    }
                    Offered::Full => {
                        let n = stats.reports_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::warn!(
                                dropped = n,
                                "controller overloaded: reports dropped (devices will report again)"
                            );
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if ready.send_replace(false) {
                    link_event(&stats, format!("controller lost the broker: {e}"));
                }
                // The next ConnAck subscribes again.
                subscriptions = Subscriptions::default();
                let held = connected_at.take().map(|t| t.elapsed());
                let wait = fail_over(&mut failover, &nodes, &mut eventloop, held, &e.to_string());
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // Say goodbye politely: queue a DISCONNECT and turn the loop until it is out (or 1 s).
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!("MQTT session stopped");
}

/// After a failed attempt or a lost connection (`held`: how long it lasted): points the event
/// loop at the next node and says so in one line; returns the backoff delay before the attempt.
fn fail_over(
    failover: &mut Failover,
    nodes: &[Node],
    eventloop: &mut EventLoop,
    held: Option<Duration>,
    error: &str,
) -> Duration {
    let failed = failover.current();
    let retry = failover.after_disconnect(held, os_random());
    let retry_in_ms = retry.delay.as_millis() as u64;
    match (retry.switched, nodes.get(failed), nodes.get(retry.node)) {
        (true, Some(from), Some(to)) => {
            eventloop.mqtt_options = to.options.clone();
            tracing::warn!(from = %from.name, to = %to.name, %error, retry_in_ms, "broker node failed; failing over to the next node");
        }
        _ => tracing::warn!(%error, retry_in_ms, "broker connection failed"),
    }
    retry.delay
}

/// The subscriptions still to be queued after a ConnAck, kept until rumqttc's request queue
/// takes them. The queue can be full then — it holds the bundles published while the broker
/// was away — and a SUBSCRIBE dropped then would leave the controller deaf to reports until the
/// next reconnect. Every event of the loop either took a request from the queue or shows the
/// loop moving (acks, pings), so retrying after each event needs no timer.
#[derive(Debug)]
struct Subscriptions {
    /// Filters not queued yet, in order.
    pending: Vec<String>,
    /// Their QoS.
    qos: QoS,
    /// Attempts that left something pending, for the log.
    failed: u32,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self::after_connack(Vec::new(), QoS::AtLeastOnce)
    }
}

impl Subscriptions {
    fn after_connack(filters: Vec<String>, qos: QoS) -> Self {
        Self {
            pending: filters,
            qos,
            failed: 0,
        }
    }

    fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues what is pending without waiting: the poll loop is what drains the queue, so an
    /// awaited send into a full queue would never return.
    fn queue(&mut self, client: &AsyncClient) {
        while let Some(filter) = self.pending.first() {
            if let Err(e) = client.try_subscribe(filter.clone(), self.qos) {
                if self.failed == 0 {
                    tracing::warn!(error = %e, %filter, "could not queue a subscription; retrying");
                }
                self.failed += 1;
                return;
            }
            self.pending.remove(0);
        }
        if self.failed > 0 {
            tracing::info!(retries = self.failed, "subscriptions queued after retrying");
            self.failed = 0;
        }
    }
}

/// Runs a controller call that may block for long (a PostgreSQL ledger riding out a server
/// restart waits up to its retry budget): on a multi-threaded runtime the worker thread is
/// handed over first, so the MQTT session and the admin API keep running meanwhile. A
/// current-thread runtime (tests) cannot hand its only thread over; the call runs as is.
/// Only for a PostgreSQL ledger (`long`): SQLite calls are short, and handing the thread
/// over on every call grew the process's memory (a new thread, a new malloc arena).
pub(crate) fn blocking<T>(long: bool, f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if long => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A batch taken from the queue: site relays' reports as they came, devices' reports with
/// their signatures checked.
struct Checked {
    relay_reports: Vec<Incoming>,
    batch: Vec<Incoming>,
    opened: Vec<Result<crate::controller::Opened, crate::controller::ReportError>>,
}

/// Takes what is queued, up to a batch, and checks the devices' signatures off the runtime's
/// threads, one batch ahead of [`run_worker`]'s turns: the next batch is verified while the
/// ledger writes the last one (`cargo bench -p licd-stub --bench throughput`, "pipelined").
async fn open_batches(
    opener: crate::controller::Opener,
    work_rx: crate::intake::Consumer,
    out: tokio::sync::mpsc::Sender<Checked>,
) {
    // Site relays' reports are stored and acknowledged one by one, apart from devices'.
    let relay_leaf = format!("/{}", licd_protocol::topic::RELAY_REPORT_LEAF);
    while let Some(batch) = work_rx.take(MAX_BATCH).await {
        let (relay_reports, batch): (Vec<Incoming>, Vec<Incoming>) = batch
            .into_iter()
            .partition(|i| i.topic.ends_with(&relay_leaf));
        let opened = if batch.is_empty() {
            Ok((batch, Vec::new()))
        } else {
            tokio::task::spawn_blocking(move || {
                let items: Vec<(&str, &[u8])> = batch
                    .iter()
                    .map(|i| (i.topic.as_str(), i.payload.as_slice()))
                    .collect();
                let opened = opener.open_batch(&items);
                (batch, opened)
            })
            .await
        };
        let Ok((batch, opened)) = opened else {
            tracing::error!("checking a batch of reports failed; stopping the worker");
            return;
        };
        let next = Checked {
            relay_reports,
            batch,
            opened,
        };
        if out.send(next).await.is_err() {
            return;
        }
    }
}

/// Applies queued reports and publishes their bundles, until the queue closes.
pub(crate) async fn run_worker(
    core: Arc<Mutex<Controller>>,
    order: Arc<PublishOrder>,
    client: AsyncClient,
    clock: Clock,
    work_rx: crate::intake::Consumer,
    stats: Arc<Stats>,
) {
    let Ok(opener) = core.lock().map(|c| c.opener()) else {
        tracing::error!("controller state poisoned; stopping the worker");
        return;
    };
    // One batch checked ahead, no more: what waits stays in the queue, where a device's
    // retry replaces its report.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let opening = tokio::spawn(open_batches(opener, work_rx, tx));
    while let Some(next) = rx.recv().await {
        let Checked {
            relay_reports,
            batch,
            opened,
        } = next;
        let _turn = order.lock().await;
        let now = clock.now();
        for item in relay_reports {
            let result = match core.lock() {
                Ok(mut c) => c.handle_relay_report(&item.topic, &item.payload, now),
                Err(_) => {
                    tracing::error!("controller state poisoned; stopping the worker");
                    opening.abort();
                    return;
                }
            };
            match result {
                Ok((ack, _)) => {
                    if let Err(e) = client
                        .publish(ack.topic, QoS::AtLeastOnce, true, ack.payload)
                        .await
                    {
                        tracing::error!(error = %e, "MQTT client closed; relay acknowledgement not published");
                    }
                }
                Err(e) => tracing::warn!(topic = %item.topic, reason = %e, "relay report refused"),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = match core.lock() {
            Ok(mut c) => {
                let long = c.ledger().is_postgres();
                blocking(long, || c.apply_opened(opened, now))
            }
            Err(_) => {
                tracing::error!("controller state poisoned; stopping the worker");
                opening.abort();
                return;
            }
        };
        stats
            .instruments
            .ledger_latency(crate::metrics::LedgerOp::ReportBatch, started.elapsed());
        let (results, pubs) = match result {
            Ok(r) => r,
            Err(e) => {
                stats
                    .reports_refused
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats
                    .instruments
                    .refused(crate::metrics::LEDGER, batch.len() as u64);
                tracing::error!(error = %e, reports = batch.len(), "ledger write failed; reports not applied");
                continue;
            }
        };
        for (item, r) in batch.iter().zip(results) {
            match r {
                Ok(report) => {
                    stats.reports_applied.fetch_add(1, Ordering::Relaxed);
                    stats.events.device(
                        "report",
                        report.tenant.as_str(),
                        report.device.as_str(),
                        format!("report applied (device holds seq {})", report.bundle_seq),
                    );
                    tracing::debug!(tenant = %report.tenant, device = %report.device, "report applied");
                }
                Err(e) => {
                    stats.reports_refused.fetch_add(1, Ordering::Relaxed);
                    stats.instruments.refused(e.code(), 1);
                    let (tenant, device) =
                        crate::events::topic_ids(&item.topic).unwrap_or(("?", "?"));
                    stats.events.device(
                        "refused",
                        tenant,
                        device,
                        format!("report refused: {}", e.code()),
                    );
                    tracing::warn!(topic = %item.topic, reason = %e, "report refused");
                }
            }
        }
        publish_all(&client, pubs, &stats).await;
    }
}

/// Publishes sealed bundles QoS 1, retained.
pub(crate) async fn publish_all(client: &AsyncClient, pubs: Vec<Publication>, stats: &Stats) {
    for p in pubs {
        tracing::info!(topic = %p.topic, seq = p.seq, "bundle published");
        let event =
            crate::events::topic_ids(&p.topic).map(|(t, d)| (t.to_string(), d.to_string(), p.seq));
        match client
            .publish(p.topic, QoS::AtLeastOnce, true, p.payload)
            .await
        {
            Ok(()) => {
                stats.bundles_published.fetch_add(1, Ordering::Relaxed);
                if let Some((tenant, device, seq)) = event {
                    let text = format!("bundle seq {seq} published");
                    stats.events.device("bundle", &tenant, &device, text);
                }
            }
            Err(e) => tracing::error!(error = %e, "MQTT client closed; bundle not published"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one MQTT packet's bytes (fixed header, remaining length, body).
    async fn read_packet(s: &mut TcpStream) -> std::io::Result<()> {
        s.read_u8().await?;
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let b = s.read_u8().await?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        s.read_exact(&mut vec![0; len]).await.map(drop)
    }

    /// A broker that accepts, answers the CONNECT with a CONNACK and hangs up at once.
    async fn accept_then_drop_broker() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                if read_packet(&mut s).await.is_ok() {
                    let _ = s.write_all(&[0x20, 2, 0, 0]).await;
                }
            }
        });
        port
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_that_accepts_then_drops_is_retried_with_a_growing_backoff() {
        let port = accept_then_drop_broker().await;
        let (client, eventloop) = AsyncClient::new(MqttOptions::new("stub", "127.0.0.1", port), 8);
        let (work_tx, _work_rx) = crate::intake::channel(8);
        let (ready_tx, _ready) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run_eventloop(
            eventloop,
            Vec::new(),
            client,
            "licd/v1/+/+/report".into(),
            work_tx,
            ready_tx,
            shutdown_rx,
            stats.clone(),
            Arc::default(),
        ));

        // Ten minutes of paused time. Resetting on every ConnAck retried every ~250 ms (~2,400
        // connections); the policy grows to a 30 s bound (~45 on average, over 100 only with a
        // vanishing probability).
        tokio::time::sleep(Duration::from_secs(600)).await;
        shutdown_tx.send_replace(true);
        task.await.expect("session task");
        let n = stats.snapshot().connections;
        assert!(n >= 5, "reconnects at all: {n} connections");
        assert!(n <= 100, "{n} connections in 10 minutes");
    }

    #[test]
    fn broker_lists_are_split_checked_and_parsed() {
        assert_eq!(
            split_urls("mqtt://a:1, mqtt://b").unwrap(),
            vec!["mqtt://a:1", "mqtt://b"]
        );
        for (bad, why) in [
            ("mqtt://a,mqtts://b", "same scheme"),
            ("mqtt://a,tcp://b", "expected mqtt://"),
            ("mqtt://a,mqtt://a", "listed twice"),
            ("mqtt://a,", "expected mqtt://"),
        ] {
            let e = split_urls(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let mode = BrokerMode::External {
            url: "mqtt://a:1884,mqtt://[::1]:1885,mqtt://c".into(),
            ca_file: None,
            credentials: None,
        };
        let names: Vec<String> = node_options(&mode, None, "stub")
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a:1884", "[::1]:1885", "c:1883"]);
        let bad = BrokerMode::External {
            url: "mqtt://a:x".into(),
            ca_file: None,
            credentials: None,
        };
        assert!(node_options(&bad, None, "stub").is_err());
    }

    #[tokio::test]
    async fn the_controller_fails_over_from_a_dead_node_to_a_live_one() {
        let broker = tokio::task::spawn_blocking(|| {
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            crate::broker::start(listen, None, Duration::from_secs(10))
        })
        .await
        .expect("join")
        .expect("embedded broker");
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mode = BrokerMode::External {
            url: format!("mqtt://127.0.0.1:{dead},mqtt://{}", broker.addr),
            ca_file: None,
            credentials: None,
        };
        let nodes = node_options(&mode, None, "stub").expect("nodes");
        let (client, eventloop) = AsyncClient::new(nodes[0].options.clone(), 8);
        let (work_tx, _work_rx) = crate::intake::channel(8);
        let (ready_tx, mut ready) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run_eventloop(
            eventloop,
            nodes,
            client,
            licd_protocol::topic::report_filter().into(),
            work_tx,
            ready_tx,
            shutdown_rx,
            stats.clone(),
            Arc::default(),
        ));
        let subscribed =
            tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        shutdown_tx.send_replace(true);
        task.await.expect("session task");
        assert!(
            matches!(subscribed, Ok(Ok(_))),
            "never subscribed on the live node"
        );
        assert_eq!(
            stats.snapshot().connections,
            1,
            "one connection: the live node"
        );
    }

    #[tokio::test]
    async fn the_report_subscription_is_retried_when_the_request_queue_is_full_at_connack() {
        let broker = tokio::task::spawn_blocking(|| {
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            crate::broker::start(listen, None, Duration::from_secs(10))
        })
        .await
        .expect("join")
        .expect("embedded broker");
        let (ip, port) = (broker.addr.ip().to_string(), broker.addr.port());
        let (client, eventloop) = AsyncClient::new(MqttOptions::new("stub", ip.clone(), port), 4);
        // Bundles published while the broker was away fill the request queue before the poll
        // loop first runs (and so before the ConnAck).
        let mut queued = 0;
        while client
            .try_publish("licd/v1/acme/ap-1/grants", QoS::AtMostOnce, false, vec![1])
            .is_ok()
        {
            queued += 1;
        }
        assert!(queued > 0);
        let (work_tx, work_rx) = crate::intake::channel(8);
        let (ready_tx, mut ready) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(run_eventloop(
            eventloop,
            Vec::new(),
            client,
            licd_protocol::topic::report_filter().into(),
            work_tx,
            ready_tx,
            shutdown_rx,
            Arc::default(),
            Arc::default(),
        ));
        let subscribed =
            tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        assert!(matches!(subscribed, Ok(Ok(_))), "never subscribed");

        // A device's report reaches the worker queue.
        let (device, mut device_loop) = AsyncClient::new(MqttOptions::new("ap-1", ip, port), 4);
        let device_task = tokio::spawn(async move { while device_loop.poll().await.is_ok() {} });
        device
            .publish("licd/v1/acme/ap-1/report", QoS::AtLeastOnce, false, vec![7])
            .await
            .expect("queue the report");
        let report = tokio::time::timeout(Duration::from_secs(10), work_rx.take(1)).await;
        shutdown_tx.send_replace(true);
        task.await.expect("session task");
        device_task.abort();
        let report = report
            .ok()
            .flatten()
            .and_then(|batch| batch.into_iter().next())
            .expect("the report reached the worker queue");
        assert_eq!(report.topic, "licd/v1/acme/ap-1/report");
        assert_eq!(report.payload, vec![7]);
    }
}
