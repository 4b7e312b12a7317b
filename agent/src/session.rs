//! The MQTT connection: one task that drives rumqttc's event loop, reconnects forever with
//! jittered exponential backoff, re-subscribes and re-announces presence on every ConnAck
//! (the session is clean, so the broker forgets subscriptions), and forwards what matters to
//! the daemon as [`SessionEvent`]s. It makes no licensing decision.
//!
//! Subscriptions, in one SUBSCRIBE packet: the device's grants topic, the two global retained
//! trust topics (`licd/v1/trust/+`: roots and revocations) that move the agent's roots and
//! revoked signing keys forward (see [`crate::trust`]), and the device's `diag-request` topic
//! (remote diagnostics, see [`crate::diag::remote`]).

use std::time::Duration;

use licd_protocol::topic::TRUST_FILTER;
use licd_protocol::{DeviceId, TenantId, Topic, TopicKind, TrustTopic};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::{os_random, Backoff};
use crate::config::BrokerSettings;
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

/// What the connection task tells the daemon.
#[derive(Debug)]
pub enum SessionEvent {
    /// Connected (subscribed, presence published).
    Connected,
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

/// rumqttc options for this device: clean session, last will `offline` (retained), TLS.
pub fn mqtt_options(
    broker: &BrokerSettings,
    client_id: &str,
    topics: &DeviceTopics,
) -> Result<MqttOptions, TlsError> {
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
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
    if let Some(tls) = &broker.tls {
        o.set_transport(transport(tls)?);
    }
    if let Some((user, pass)) = &broker.credentials {
        o.set_credentials(user.clone(), pass.clone());
    }
    Ok(o)
}

/// Starts the connection task. Events go to `tx`; the task ends when the daemon drops the
/// receiver or after a clean disconnect.
pub fn start(
    options: MqttOptions,
    reconnect_max: Duration,
    topics: DeviceTopics,
    tx: mpsc::Sender<SessionEvent>,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(net);
    let task_client = client.clone();
    let handle = tokio::spawn(async move {
        let backoff = Backoff::with_cap(reconnect_max);
        drive(&mut eventloop, backoff, task_client, topics, tx).await
    });
    (client, handle)
}

async fn drive(
    eventloop: &mut EventLoop,
    mut backoff: Backoff,
    client: AsyncClient,
    topics: DeviceTopics,
    tx: mpsc::Sender<SessionEvent>,
) {
    // tokio's clock, so a paused-time test can hold a connection past the reset window.
    let mut connected_at: Option<Instant> = None;
    loop {
        let sent = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                // One SUBSCRIBE packet, queued before presence so the retained bundle is on its
                // way at once. The trust topics come in one filter (see `TRUST_FILTER`), in
                // whatever order the broker keeps them: a revocation list signed by a root the
                // agent does not pin yet is kept aside and applied once the rotation arrives
                // (`crate::trust`).
                let filters = [topics.grants.as_str(), TRUST_FILTER, &topics.diag_request]
                    .map(|f| SubscribeFilter::new(f.to_owned(), QoS::AtLeastOnce));
                let _ = client.try_subscribe_many(filters);
                let _ = client.try_publish(
                    topics.presence.clone(),
                    QoS::AtLeastOnce,
                    true,
                    ONLINE.to_vec(),
                );
                tx.send(SessionEvent::Connected).await
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.grants => {
                tx.send(SessionEvent::Grants(p.payload.to_vec())).await
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.diag_request => {
                tx.send(SessionEvent::DiagRequest(p.payload.to_vec())).await
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match TrustTopic::parse(&p.topic) {
                Ok(t) => tx.send(SessionEvent::Trust(t, p.payload.to_vec())).await,
                Err(_) => {
                    tracing::debug!(topic = %p.topic, "ignoring message on an unexpected topic");
                    Ok(())
                }
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => Ok(()),
            Err(e) => {
                let held = connected_at.take().map(|t| t.elapsed());
                let retry_in = backoff.after_disconnect(held, os_random());
                let sent = tx
                    .send(SessionEvent::Disconnected {
                        error: e.to_string(),
                        retry_in,
                    })
                    .await;
                if sent.is_ok() {
                    tokio::time::sleep(retry_in).await;
                }
                sent
            }
        };
        if sent.is_err() {
            return; // the daemon is gone
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

    /// Reads one MQTT packet (fixed header, remaining length, body) and returns its type.
    async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
        let kind = s.read_u8().await? >> 4;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 || shift > 21 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await?;
        Ok((kind, body))
    }

    /// A broker that accepts, answers the CONNECT with a CONNACK and hangs up at once; counts
    /// the connections.
    async fn accept_then_drop_broker() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                if read_packet(&mut s).await.is_ok() {
                    let _ = s.write_all(&[0x20, 2, 0, 0]).await;
                }
            }
        });
        (port, connections)
    }

    fn topics() -> DeviceTopics {
        let tenant = TenantId::new("acme").expect("tenant");
        let device = DeviceId::new("ap-1").expect("device");
        DeviceTopics::new(&tenant, &device)
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_that_accepts_then_drops_is_retried_with_a_growing_backoff() {
        let (port, connections) = accept_then_drop_broker().await;
        let (tx, mut rx) = mpsc::channel(16);
        let options = MqttOptions::new("ap-1", "127.0.0.1", port);
        let (_client, task) = start(options, Duration::from_secs(30), topics(), tx);

        // Ten minutes of paused time. Resetting on every ConnAck would retry within 1 s each
        // time (~1,200 connections); the policy grows to a 30 s bound (~45 on average, and
        // over 100 only with a vanishing probability).
        let end = Instant::now() + Duration::from_secs(600);
        let mut connected = 0;
        while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
            connected += usize::from(matches!(ev, SessionEvent::Connected));
        }
        task.abort();
        let n = connections.load(Ordering::Relaxed);
        assert!(connected >= 5, "reconnects at all: {connected} connections");
        assert!(n <= 100, "{n} connections in 10 minutes");
    }
}
