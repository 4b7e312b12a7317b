//! A real 3-node nats-server cluster as licd's clustered MQTT broker (issue 19 item 3).
//!
//! `nats_mqtt_does_what_the_stub_doc_says` holds nats-server's MQTT to the table in
//! docs/STUB.md ("A clustered broker: nats-server"), one row at a time, with plain rumqttc
//! clients: what licd relies on (QoS 1 across nodes, retained grants that survive a node, wills)
//! and what it must work around (no `$share`, no `.` in topics on 2.9, wills lost with a node).

use std::time::Duration;

use licd_tests::NatsCluster;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// Upper bound for anything a healthy loopback cluster should do (connect, deliver).
const STEP: Duration = Duration::from_secs(20);

/// How long "nothing arrives" is watched for. A delivery on a healthy loopback cluster takes
/// milliseconds; this only bounds the negative checks.
const QUIET: Duration = Duration::from_secs(2);

/// What a client's event loop saw: an incoming packet or a connection error (as text).
type Seen = Result<Packet, String>;

/// A rumqttc client whose event loop runs in a task, forwarding what it sees.
struct Client {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    async fn connect(port: u16, id: &str, will: Option<LastWill>) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        if let Some(w) = will {
            options.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let item = match ev {
                    Ok(Event::Incoming(p)) => Ok(p),
                    Ok(Event::Outgoing(_)) => continue,
                    Err(e) => Err(e.to_string()),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        });
        let mut c = Self { client, seen, task };
        c.expect("a CONNACK", |p| matches!(p, Packet::ConnAck(_)))
            .await;
        c
    }

    /// Waits for a packet matching `pred`; panics naming `what` on timeout or a closed loop.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
        let found = tokio::time::timeout(STEP, async {
            loop {
                match self.seen.recv().await {
                    Some(Ok(p)) if pred(&p) => return Ok(p),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err("event loop ended".into()),
                }
            }
        })
        .await;
        match found {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!("no {what} within {STEP:?}"),
        }
    }

    /// What arrives within [`QUIET`] (packets and errors alike).
    async fn next_quietly(&mut self) -> Option<Seen> {
        tokio::time::timeout(QUIET, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    async fn subscribe(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        match self
            .expect("a SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(ack) => ack.return_codes,
            _ => unreachable!(),
        }
    }

    async fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("queue PUBLISH");
    }
}

fn publish_on<'a>(p: &'a Packet, topic: &str) -> Option<&'a rumqttc::Publish> {
    match p {
        Packet::Publish(p) if p.topic == topic => Some(p),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_mqtt_does_what_the_stub_doc_says() {
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .expect("join")
        .expect("a 3-node nats-server cluster");
    let grants = "licd/v1/acme/ap-1/grants";
    let report = "licd/v1/acme/ap-1/report";

    // QoS 1 across nodes: a report published on node 1 reaches a controller on node 2.
    let mut controller = Client::connect(cluster.mqtt_port(1), "controller", None).await;
    let codes = controller.subscribe("licd/v1/+/+/report").await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut device = Client::connect(cluster.mqtt_port(0), "ap-1", None).await;
    device.publish(report, false, b"r1".to_vec()).await;
    device
        .expect("the PUBACK of the report", |p| {
            matches!(p, Packet::PubAck(_))
        })
        .await;
    let got = controller
        .expect("the report on node 2", |p| publish_on(p, report).is_some())
        .await;
    assert!(
        matches!(got, Packet::Publish(ref p) if p.qos == QoS::AtLeastOnce && &p.payload[..] == b"r1")
    );

    // `$share`: no shared subscriptions. Row "shared subscriptions" of STUB.md.
    let mut replica = Client::connect(cluster.mqtt_port(2), "replica", None).await;
    let codes = replica
        .subscribe("$share/licd-controllers/licd/v1/+/+/report")
        .await;
    device.publish(report, false, b"r2".to_vec()).await;
    controller
        .expect("the second report", |p| publish_on(p, report).is_some())
        .await;
    let shared = replica.next_quietly().await;
    // Accepted, and silent: the filter is taken literally, no report ever matches it.
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert!(
        !matches!(shared, Some(Ok(Packet::Publish(_)))),
        "a $share subscriber got a report: {shared:?}"
    );

    // Retained grants (QoS 1) are kept in JetStream, replicated: a device on another node
    // gets the newest one at subscribe, also after the node it was published on is killed.
    let bundle = vec![7u8; 64 * 1024];
    controller.publish(grants, true, bundle.clone()).await;
    controller
        .expect("the PUBACK of the grant", |p| {
            matches!(p, Packet::PubAck(_))
        })
        .await;
    let mut fresh = Client::connect(cluster.mqtt_port(2), "ap-1b", None).await;
    fresh.subscribe(grants).await;
    let got = fresh
        .expect("the retained grant", |p| publish_on(p, grants).is_some())
        .await;
    assert!(matches!(got, Packet::Publish(ref p) if p.retain && p.payload.len() == bundle.len()));
    drop(fresh);

    // A last will: sent by the node holding the connection when the client vanishes...
    let presence = "licd/v1/acme/ap-2/presence";
    let will = LastWill::new(presence, b"offline".to_vec(), QoS::AtLeastOnce, true);
    let watcher_port = cluster.mqtt_port(2);
    let mut watcher = Client::connect(watcher_port, "watcher", None).await;
    watcher.subscribe("licd/v1/+/+/presence").await;
    let ap2 = Client::connect(cluster.mqtt_port(0), "ap-2", Some(will.clone())).await;
    ap2.task.abort(); // the TCP connection is dropped without DISCONNECT
    drop(ap2);
    watcher
        .expect("the will of a vanished client", |p| {
            publish_on(p, presence).is_some_and(|p| &p.payload[..] == b"offline")
        })
        .await;

    // ... and lost with that node: a client on a node that is killed leaves no will.
    let presence3 = "licd/v1/acme/ap-3/presence";
    let will3 = LastWill::new(presence3, b"offline".to_vec(), QoS::AtLeastOnce, true);
    let _ap3 = Client::connect(cluster.mqtt_port(1), "ap-3", Some(will3)).await;
    cluster.kill(1).expect("kill node 2");
    let will_after_kill = watcher.next_quietly().await;
    assert!(
        will_after_kill.is_none(),
        "a will from a killed node: STUB.md says it is lost: {will_after_kill:?}"
    );

    // The retained grant was published through the killed node: still there on node 1. While
    // JetStream elects new leaders for what the killed node led (a few seconds), a QoS 1
    // SUBSCRIBE can be refused (SUBACK 0x80); a new attempt then gets the grant. The agent and
    // the controller treat such a refusal as a failed connection and retry.
    let deadline = tokio::time::Instant::now() + STEP * 2;
    let mut refusals = 0;
    loop {
        let mut again = Client::connect(cluster.mqtt_port(0), "ap-1c", None).await;
        if again.subscribe(grants).await == vec![rumqttc::SubscribeReasonCode::Failure] {
            refusals += 1;
            assert!(
                tokio::time::Instant::now() < deadline,
                "refused until {STEP:?} × 2"
            );
            continue;
        }
        again
            .expect("the retained grant after a node loss", |p| {
                publish_on(p, grants).is_some_and(|p| p.retain && p.payload.len() == bundle.len())
            })
            .await;
        break;
    }
    eprintln!("subscriptions refused after the node loss before one held: {refusals}");

    // Topics with `.` (licd's ids allow it): 2.9 refuses them — a failed SUBACK, and a publish
    // closes the connection.
    let dotted = "licd/v1/acme/ap.4/grants";
    let mut dot = Client::connect(cluster.mqtt_port(2), "ap-4", None).await;
    assert_eq!(
        dot.subscribe(dotted).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    dot.publish(dotted, true, b"x".to_vec()).await;
    let closed = dot.next_quietly().await;
    assert!(matches!(closed, Some(Err(_))), "{closed:?}");
}
