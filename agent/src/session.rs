//! The MQTT connection: one task that drives rumqttc's event loop, reconnects forever with
//! jittered exponential backoff, re-subscribes and re-announces presence on every ConnAck
//! (the session is clean, so the broker forgets subscriptions), and forwards what matters to
//! the daemon as [`SessionEvent`]s. It makes no licensing decision.
//!
//! Subscriptions, in one SUBSCRIBE packet: the device's grants topic, the two global retained
//! trust topics (`licd/v1/trust/+`: roots and revocations) that move the agent's roots and
//! revoked signing keys forward (see [`crate::trust`]), and the device's `diag-request` topic
//! (remote diagnostics, see [`crate::diag::remote`]).
//!
//! The daemon publishes through an [`Outbox`]: rumqttc's request queue, or a channel — so the
//! daemon loop runs in tests without a broker (events in through the same `mpsc` the session
//! task feeds, publishes out through the channel).

use std::time::Duration;

use licd_protocol::topic::TRUST_FILTER;
use licd_protocol::{DeviceId, TenantId, Topic, TopicKind, TrustTopic};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::os_random;
use crate::config::BrokerSettings;
use crate::failover::Failover;
use crate::tls::{transport, TlsError};

/// Retained presence payloads.
pub const ONLINE: &[u8] = b"online";
/// See [`ONLINE`]; also the last will.
pub const OFFLINE: &[u8] = b"offline";

/// Largest MQTT packet accepted from the broker. Bigger than the protocol's 64 KiB envelope
/// limit on purpose: an oversized grant payload must reach the envelope check and be refused
/// with a reason, rather than make rumqttc drop the connection (and, the message being
/// retained, drop it again on every reconnect).
const MAX_INCOMING_PACKET: usize = 2 * 1024 * 1024;

/// Generous connect timeout: TLS handshakes on slow device CPUs take seconds.
const CONNECT_TIMEOUT_SECS: u64 = 30;

/// Most QoS 1 publishes awaiting their PUBACK. A device has a handful at most (report, status,
/// presence, a diagnostic answer); rumqttc's default of 100 costs a 101-slot table per
/// connection, ~10 KB of RSS on a device for nothing. Further publishes wait for an ack.
const MAX_INFLIGHT: u16 = 8;

/// Where the daemon's outgoing messages go.
#[derive(Debug, Clone)]
pub enum Outbox {
    /// rumqttc's request queue (the session task sends them).
    Mqtt(AsyncClient),
    /// A channel (tests, simulators): each publish is one [`Published`]; a full channel is a
    /// full queue, as with rumqttc.
    Channel(mpsc::Sender<Published>),
}

/// A message handed to an [`Outbox::Channel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Topic.
    pub topic: String,
    /// QoS.
    pub qos: QoS,
    /// Retained.
    pub retain: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A publish the outbox did not take.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutboxError(String);

impl Outbox {
    /// Queues a publish without waiting (the daemon's loop must not block on the broker).
    pub fn try_publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), OutboxError> {
        match self {
            Self::Mqtt(c) => c
                .try_publish(topic, qos, retain, payload)
                .map_err(|e| OutboxError(e.to_string())),
            Self::Channel(tx) => tx
                .try_send(Published {
                    topic,
                    qos,
                    retain,
                    payload,
                })
                .map_err(|e| OutboxError(format!("outbox channel: {e}"))),
        }
    }

    /// Queues a publish, waiting for room.
    pub async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), OutboxError> {
        match self {
            Self::Mqtt(c) => c
                .publish(topic, qos, retain, payload)
                .await
                .map_err(|e| OutboxError(e.to_string())),
            Self::Channel(tx) => tx
                .send(Published {
                    topic,
                    qos,
                    retain,
                    payload,
                })
                .await
                .map_err(|e| OutboxError(format!("outbox channel: {e}"))),
        }
    }

    /// Asks for a clean disconnect (rumqttc); nothing for a channel.
    pub fn try_disconnect(&self) -> Result<(), OutboxError> {
        match self {
            Self::Mqtt(c) => c.try_disconnect().map_err(|e| OutboxError(e.to_string())),
            Self::Channel(_) => Ok(()),
        }
    }
}

/// What the connection task tells the daemon.
#[derive(Debug)]
pub enum SessionEvent {
    /// Connected (subscribed, presence published).
    Connected {
        /// The broker node, `host:port`.
        broker: String,
    },
    /// The connection failed or dropped; the task retries after `retry_in`.
    Disconnected {
        /// The error, as rumqttc words it.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// A message arrived on this device's grants topic.
    Grants(Vec<u8>),
    /// A message arrived on a global trust topic (a root rotation or a revocation list).
    Trust(TrustTopic, Vec<u8>),
    /// A message arrived on this device's diag-request topic.
    DiagRequest(Vec<u8>),
    /// A message arrived on a topic that one of the subscriptions matched but that is none of
    /// the above (e.g. `licd/v1/trust/<unknown>`): the daemon counts it as refused.
    Stray(String),
}

/// The device's topics.
#[derive(Debug, Clone)]
pub struct DeviceTopics {
    /// Where reports go.
    pub report: String,
    /// Where grants arrive.
    pub grants: String,
    /// Presence.
    pub presence: String,
    /// Where diagnostic requests arrive.
    pub diag_request: String,
    /// Where diagnostic responses go.
    pub diag_response: String,
}

impl DeviceTopics {
    /// Topics of `device` in `tenant`.
    pub fn new(tenant: &TenantId, device: &DeviceId) -> Self {
        let t = |k| Topic::new(tenant, device, k).to_topic_string();
        Self {
            report: t(TopicKind::Report),
            grants: t(TopicKind::Grants),
            presence: t(TopicKind::Presence),
            diag_request: t(TopicKind::DiagRequest),
            diag_response: t(TopicKind::DiagResponse),
        }
    }
}

/// One broker node the session may connect to: its name for logs and status, and the rumqttc
/// options that reach it.
#[derive(Debug, Clone)]
pub struct Node {
    /// `host:port`.
    pub name: String,
    /// Options for this node.
    pub options: MqttOptions,
}

/// rumqttc options for every node of the broker, the first one first: clean session, last will
/// `offline` (retained), TLS. The TLS configuration is built once and shared.
pub fn node_options(
    broker: &BrokerSettings,
    client_id: &str,
    topics: &DeviceTopics,
) -> Result<Vec<Node>, TlsError> {
    let transport = broker.tls.as_ref().map(transport).transpose()?;
    Ok(broker
        .nodes()
        .into_iter()
        .map(|node| Node {
            options: options_for(
                broker,
                &node.host,
                node.port,
                client_id,
                topics,
                transport.clone(),
            ),
            name: node.to_string(),
        })
        .collect())
}

/// rumqttc options for this device on one node: clean session, last will `offline`
/// (retained), TLS.
fn options_for(
    broker: &BrokerSettings,
    host: &str,
    port: u16,
    client_id: &str,
    topics: &DeviceTopics,
    transport: Option<rumqttc::Transport>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(broker.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, 256 * 1024)
        .set_inflight(MAX_INFLIGHT)
        .set_last_will(LastWill::new(
            topics.presence.clone(),
            OFFLINE.to_vec(),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(t) = transport {
        o.set_transport(t);
    }
    if let Some((user, pass)) = &broker.credentials {
        o.set_credentials(user.clone(), pass.clone());
    }
    o
}

impl Node {
    /// A node named after the address in `options`.
    pub fn new(options: MqttOptions) -> Self {
        let (host, port) = options.broker_address();
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Self { name, options }
    }
}

/// Starts the connection task on `nodes` (at least one; an empty list is treated as a broker
/// that never answers, which the config cannot produce). Events go to `tx`; the task ends when
/// the daemon drops the receiver or after a clean disconnect. With several nodes it starts at a
/// random one and moves to the next on every failure (see [`crate::failover`]).
pub fn start(
    nodes: Vec<Node>,
    reconnect_max: Duration,
    subscribe_qos: QoS,
    topics: DeviceTopics,
    tx: mpsc::Sender<SessionEvent>,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let failover = Failover::new(nodes.len(), reconnect_max, os_random());
    let first = nodes
        .get(failover.current())
        .map(|n| n.options.clone())
        // Port 0 on loopback: every attempt fails, and is retried with backoff.
        .unwrap_or_else(|| MqttOptions::new("licd", "127.0.0.1", 0));
    let (client, mut eventloop) = AsyncClient::new(first, 16);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(net);
    let task_client = client.clone();
    let handle = tokio::spawn(async move {
        let sub = Subscriptions {
            topics,
            qos: subscribe_qos,
        };
        drive(&mut eventloop, nodes, failover, task_client, sub, tx).await
    });
    (client, handle)
}

/// What the session subscribes to on every ConnAck, and at which QoS.
struct Subscriptions {
    topics: DeviceTopics,
    qos: QoS,
}

async fn drive(
    eventloop: &mut EventLoop,
    nodes: Vec<Node>,
    mut failover: Failover,
    client: AsyncClient,
    sub: Subscriptions,
    tx: mpsc::Sender<SessionEvent>,
) {
    let Subscriptions { topics, qos } = sub;
    // tokio's clock, so a paused-time test can hold a connection past the reset window.
    let mut connected_at: Option<Instant> = None;
    let mut setup = Setup::default();
    let name = |i: usize| nodes.get(i).map_or("none", |n| n.name.as_str());
    loop {
        let event = eventloop.poll().await;
        if setup.pending() && event.is_ok() {
            setup.queue(&client, &topics, qos);
        }
        let sent = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                setup = Setup::after_connack();
                setup.queue(&client, &topics, qos);
                let broker = name(failover.current()).to_string();
                tx.send(SessionEvent::Connected { broker }).await
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.grants => {
                tx.send(SessionEvent::Grants(p.payload.to_vec())).await
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.diag_request => {
                tx.send(SessionEvent::DiagRequest(p.payload.to_vec())).await
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match TrustTopic::parse(&p.topic) {
                Ok(t) => tx.send(SessionEvent::Trust(t, p.payload.to_vec())).await,
                Err(_) => tx.send(SessionEvent::Stray(p.topic)).await,
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(Event::Incoming(Packet::SubAck(ack)))
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) =>
            {
                // A broker that refuses the grants subscription leaves the device deaf while
                // looking connected. nats-server does so for a few seconds after losing a
                // node (its JetStream elects new leaders) and always for a topic with `.` in
                // it (2.9): drop the connection and retry, as after a failure, so it counts as
                // one (no backoff reset) and the next attempt goes to the next node.
                eventloop.clean();
                connected_at = None;
                let e = format!("the broker refused the subscription to {}", topics.grants);
                lost(&mut failover, &mut setup, None, e, eventloop, &nodes, &tx).await
            }
            Ok(_) => Ok(()),
            Err(e) => {
                let held = connected_at.take().map(|t| t.elapsed());
                lost(
                    &mut failover,
                    &mut setup,
                    held,
                    e.to_string(),
                    eventloop,
                    &nodes,
                    &tx,
                )
                .await
            }
        };
        if sent.is_err() {
            return; // the daemon is gone
        }
    }
}

/// After a failed attempt or a lost connection (`held`: how long it lasted): moves to the next
/// node, tells the daemon and waits out the backoff. An error when the daemon is gone.
async fn lost(
    failover: &mut Failover,
    setup: &mut Setup,
    held: Option<Duration>,
    error: String,
    eventloop: &mut EventLoop,
    nodes: &[Node],
    tx: &mpsc::Sender<SessionEvent>,
) -> Result<(), mpsc::error::SendError<SessionEvent>> {
    let name = |i: usize| nodes.get(i).map_or("none", |n| n.name.as_str());
    // The next ConnAck queues everything again.
    *setup = Setup::default();
    let failed = failover.current();
    let retry = failover.after_disconnect(held, os_random());
    if let (true, Some(next)) = (retry.switched, nodes.get(retry.node)) {
        // The session is clean: nothing of the old node's session is carried over, and the
        // next ConnAck subscribes and announces presence afresh.
        eventloop.mqtt_options = next.options.clone();
        tracing::info!(from = name(failed), to = %next.name, %error, retry_in_ms = retry.delay.as_millis() as u64, "failing over to another broker node");
    }
    let sent = tx
        .send(SessionEvent::Disconnected {
            error,
            retry_in: retry.delay,
        })
        .await;
    if sent.is_ok() {
        tokio::time::sleep(retry.delay).await;
    }
    sent
}

/// What the session queues on every ConnAck — the subscriptions, then presence — kept until
/// rumqttc's request queue takes it. That queue (16 requests) can be full at ConnAck: it holds
/// what the daemon published while the broker was away, and a SUBSCRIBE dropped then would
/// leave the device deaf to its grants until the next reconnect. Every event of the loop either
/// took a request from the queue or shows the loop moving (acks, pings), so retrying after each
/// event needs no timer.
#[derive(Debug, Default)]
struct Setup {
    subscribe: bool,
    presence: bool,
    /// Attempts that left something unqueued, for the log.
    failed: u32,
}

impl Setup {
    fn after_connack() -> Self {
        Self {
            subscribe: true,
            presence: true,
            failed: 0,
        }
    }

    fn pending(&self) -> bool {
        self.subscribe || self.presence
    }

    /// Queues what is still missing, without waiting: the session task is the one that drains
    /// the queue, so an awaited send into a full queue would never return.
    fn queue(&mut self, client: &AsyncClient, topics: &DeviceTopics, qos: QoS) {
        let mut error = None;
        if self.subscribe {
            // One SUBSCRIBE packet, queued before presence so the retained bundle is on its way
            // at once. The trust topics come in one filter (see `TRUST_FILTER`), in whatever
            // order the broker keeps them: a revocation list signed by a root the agent does
            // not pin yet is kept aside and applied once the rotation arrives (`crate::trust`).
            let filters = [topics.grants.as_str(), TRUST_FILTER, &topics.diag_request]
                .map(|f| SubscribeFilter::new(f.to_owned(), qos));
            error = client.try_subscribe_many(filters).err();
            self.subscribe = error.is_some();
        }
        if self.presence && !self.subscribe {
            let online = ONLINE.to_vec();
            error = client
                .try_publish(topics.presence.clone(), QoS::AtLeastOnce, true, online)
                .err();
            self.presence = error.is_some();
        }
        match error {
            Some(e) if self.failed == 0 => {
                self.failed = 1;
                tracing::warn!(error = %e, "could not queue the subscriptions or presence; retrying");
            }
            Some(_) => self.failed += 1,
            None if self.failed > 0 => {
                tracing::info!(
                    retries = self.failed,
                    "subscriptions and presence queued after retrying"
                );
                self.failed = 0;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one MQTT packet: its first byte (type and flags) and its body.
    async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
        let first = s.read_u8().await?;
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let b = s.read_u8().await?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await?;
        Ok((first, body))
    }

    /// A packet of type `first` with a short `body`.
    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let len = u8::try_from(body.len()).expect("a short test packet");
        [&[first, len][..], body].concat()
    }

    /// How the scripted broker behaves after the CONNACK.
    #[derive(Clone, Copy, PartialEq)]
    enum Script {
        /// Hangs up at once.
        HangUp,
        /// Serves the client: SUBACK for a SUBSCRIBE, then a message `bundle` on its first
        /// filter; PUBACK for QoS 1 publishes, PINGRESP for pings.
        Serve,
        /// As `Serve`, but the SUBACK refuses every filter (0x80) and no message follows.
        Refuse,
    }

    /// A scripted broker on 127.0.0.1:0; counts connections.
    async fn broker(script: Script) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                if read_packet(&mut s).await.is_err()
                    || s.write_all(&[0x20, 2, 0, 0]).await.is_err()
                {
                    continue;
                }
                if script != Script::HangUp {
                    let refuse = script == Script::Refuse;
                    tokio::spawn(async move { while serve_one(&mut s, refuse).await.is_ok() {} });
                }
            }
        });
        (port, connections)
    }

    async fn serve_one(s: &mut TcpStream, refuse: bool) -> std::io::Result<()> {
        let (first, body) = read_packet(s).await?;
        let short = |at: usize| {
            body.get(at..at + 2)
                .map_or(0, |b| usize::from(b[0]) << 8 | usize::from(b[1]))
        };
        match first >> 4 {
            8 => {
                // SUBSCRIBE: packet id, then (length, filter, options) per filter. A SUBACK
                // granting QoS 0 to each, then a message on the first filter.
                let mut filters = Vec::new();
                let mut at = 2;
                while let Some(filter) = body.get(at + 2..at + 2 + short(at)) {
                    filters.push(filter);
                    at += filter.len() + 3;
                }
                let mut ack = body[..2].to_vec();
                ack.resize(2 + filters.len(), if refuse { 0x80 } else { 0 });
                if refuse {
                    return s.write_all(&packet(0x90, &ack)).await;
                }
                s.write_all(&packet(0x90, &ack)).await?;
                let topic = filters.first().copied().unwrap_or_default();
                let len = u16::try_from(topic.len()).expect("short").to_be_bytes();
                s.write_all(&packet(0x30, &[&len[..], topic, b"bundle"].concat()))
                    .await
            }
            // PUBLISH with QoS 1: PUBACK its packet id, which follows the topic.
            3 if first & 0x06 == 0x02 => {
                let at = 2 + short(0);
                s.write_all(&packet(0x40, body.get(at..at + 2).unwrap_or_default()))
                    .await
            }
            12 => s.write_all(&[0xd0, 0]).await,
            14 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    fn topics() -> DeviceTopics {
        let tenant = TenantId::new("acme").expect("tenant");
        let device = DeviceId::new("ap-1").expect("device");
        DeviceTopics::new(&tenant, &device)
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_that_accepts_then_drops_is_retried_with_a_growing_backoff() {
        let (port, connections) = broker(Script::HangUp).await;
        let (tx, mut rx) = mpsc::channel(16);
        let options = MqttOptions::new("ap-1", "127.0.0.1", port);
        let (_client, task) = start(
            vec![Node::new(options)],
            Duration::from_secs(30),
            QoS::AtLeastOnce,
            topics(),
            tx,
        );

        // Ten minutes of paused time. Resetting on every ConnAck would retry within 1 s each
        // time (~1,200 connections); the policy grows to a 30 s bound (~45 on average, and
        // over 100 only with a vanishing probability).
        let end = Instant::now() + Duration::from_secs(600);
        let mut connected = 0;
        while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
            connected += usize::from(matches!(ev, SessionEvent::Connected { .. }));
        }
        task.abort();
        let n = connections.load(Ordering::Relaxed);
        assert!(connected >= 5, "reconnects at all: {connected} connections");
        assert!(n <= 100, "{n} connections in 10 minutes");
    }

    // Real time, as below. One node refuses connections (nothing listens), the other serves:
    // wherever the session starts, it ends up on the serving node and gets its grants there.
    #[tokio::test]
    async fn a_session_fails_over_from_a_dead_node_to_a_live_one() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (live, _) = broker(Script::Serve).await;
        let nodes = [dead, live]
            .map(|port| Node::new(MqttOptions::new("ap-1", "127.0.0.1", port)))
            .to_vec();
        let (tx, mut rx) = mpsc::channel(64);
        let (_client, task) = start(
            nodes,
            Duration::from_secs(30),
            QoS::AtLeastOnce,
            topics(),
            tx,
        );
        let mut connected_to = Vec::new();
        let grants = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match rx.recv().await {
                    Some(SessionEvent::Connected { broker }) => connected_to.push(broker),
                    Some(SessionEvent::Grants(bundle)) => return Some(bundle),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await;
        task.abort();
        assert_eq!(grants.ok().flatten().as_deref(), Some(&b"bundle"[..]));
        assert_eq!(connected_to, vec![format!("127.0.0.1:{live}")]);
    }

    #[tokio::test]
    async fn a_refused_grants_subscription_drops_the_connection_and_retries() {
        let (port, connections) = broker(Script::Refuse).await;
        let (tx, mut rx) = mpsc::channel(64);
        let nodes = vec![Node::new(MqttOptions::new("ap-1", "127.0.0.1", port))];
        let (_client, task) = start(
            nodes,
            Duration::from_secs(30),
            QoS::AtLeastOnce,
            topics(),
            tx,
        );
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.recv().await {
                    Some(SessionEvent::Disconnected { error, .. }) => return Some(error),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await;
        let error = refused
            .ok()
            .flatten()
            .expect("a disconnect after the refusal");
        assert!(
            error.contains("refused the subscription to licd/v1/acme/ap-1/grants"),
            "{error}"
        );
        // And it comes back for another try.
        let again = tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(rx.recv().await, Some(SessionEvent::Connected { .. }) | None) {}
        })
        .await;
        task.abort();
        assert!(again.is_ok());
        assert!(connections.load(Ordering::Relaxed) >= 2);
    }

    // Real time: the queued publishes are small writes, and Nagle holds them until the broker's
    // delayed ACK (~40 ms of real time), which a paused clock would skip past.
    #[tokio::test]
    async fn the_subscription_is_retried_when_the_request_queue_is_full_at_connack() {
        let (port, _) = broker(Script::Serve).await;
        let (tx, mut rx) = mpsc::channel(64);
        let options = MqttOptions::new("ap-1", "127.0.0.1", port);
        let (client, task) = start(
            vec![Node::new(options)],
            Duration::from_secs(30),
            QoS::AtLeastOnce,
            topics(),
            tx,
        );
        // What the daemon published while the broker was away fills the request queue before
        // the session task first runs (and so before the ConnAck).
        let mut queued = 0;
        while client
            .try_publish("licd/v1/acme/ap-1/report", QoS::AtMostOnce, false, vec![1])
            .is_ok()
        {
            queued += 1;
        }
        assert!(queued > 0);

        let grants = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.recv().await {
                    Some(SessionEvent::Grants(bundle)) => return Some(bundle),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await;
        task.abort();
        assert_eq!(
            grants.ok().flatten().as_deref(),
            Some(&b"bundle"[..]),
            "no message on the grants topic: the subscription was lost"
        );
    }
}
