//! Proves the harness against a real mosquitto with a rumqttc client configured by the agent's
//! TLS code: plain, TLS and mutual-TLS round trips, refusals, and a broker that goes away and
//! comes back on the same port.
//!
//! The clients are configured by `licd_agent::tls`, the same code the agent connects with.

use std::time::Duration;

use licd_agent::tls::{self, Scheme, TlsSettings};
use licd_tests::{BrokerSecurity, Mosquitto, MosquittoConfig, Pki};
use rumqttc::{AsyncClient, ConnAck, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

/// Upper bound for anything a healthy loopback broker should do (connect, deliver).
const STEP: Duration = Duration::from_secs(15);

/// What the client's event loop saw: an incoming packet or a connection error (as text).
type Seen = Result<Packet, String>;

/// A rumqttc client whose event loop runs in a task, forwarding what it sees.
struct TestClient {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestClient {
    fn connect(broker: &Mosquitto, id: &str, transport: rumqttc::Transport) -> Self {
        Self::connect_to(broker.host(), broker.port(), id, transport)
    }

    fn connect_to(host: &str, port: u16, id: &str, transport: rumqttc::Transport) -> Self {
        let mut options = MqttOptions::new(id, host, port);
        options.set_transport(transport);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        if tx.send(Err(e.to_string())).is_err() {
                            return;
                        }
                        // Polling again reconnects; pace it like a (fast) backoff would.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Self { client, seen, task }
    }

    /// The next thing the event loop saw, within [`STEP`].
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(STEP, self.seen.recv())
            .await
            .expect("the client saw nothing in time")
            .expect("the event loop task ended")
    }

    /// Waits for a ConnAck, failing on the first connection error.
    async fn connected(&mut self) -> ConnAck {
        loop {
            match self.next().await {
                Ok(Packet::ConnAck(ack)) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success);
                    return ack;
                }
                Ok(_) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// Waits for the first connection error; fails if the client gets connected instead.
    async fn refused(&mut self) -> String {
        loop {
            match self.next().await {
                Err(e) => return e,
                Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                    panic!("expected a refusal, got connected: {ack:?}")
                }
                Ok(_) => {}
            }
        }
    }

    /// Skips errors (a reconnecting client) until connected again.
    async fn reconnected(&mut self) -> ConnAck {
        loop {
            if let Ok(Packet::ConnAck(ack)) = self.next().await {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                return ack;
            }
        }
    }

    /// Subscribes at QoS 1 and waits for the SubAck.
    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("the subscribe request is queued");
        loop {
            match self.next().await {
                Ok(Packet::SubAck(_)) => return,
                Ok(_) => {}
                Err(e) => panic!("subscribe to {filter} failed: {e}"),
            }
        }
    }

    /// The next incoming PUBLISH.
    async fn publish_received(&mut self) -> Publish {
        loop {
            match self.next().await {
                Ok(Packet::Publish(p)) => return p,
                Ok(_) => {}
                Err(e) => panic!("waiting for a publish: {e}"),
            }
        }
    }
}

fn tls_settings(pki: &Pki) -> TlsSettings {
    TlsSettings {
        ca_file: Some(pki.ca_cert.clone()),
        ..TlsSettings::default()
    }
}

fn mtls_settings(pki: &Pki) -> TlsSettings {
    TlsSettings {
        client_cert: Some(pki.client.cert.clone()),
        client_key: Some(pki.client.key.clone()),
        ..tls_settings(pki)
    }
}

fn plain() -> rumqttc::Transport {
    tls::transport_for(Scheme::Mqtt, true, &TlsSettings::default())
        .expect("plain transport when insecure is allowed")
}

/// One client publishes `payload` to `topic` at QoS 1; `sub` (subscribed) must receive it.
async fn round_trip(publisher: &TestClient, sub: &mut TestClient, topic: &str, payload: &[u8]) {
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .expect("the publish request is queued");
    let got = sub.publish_received().await;
    assert_eq!(got.topic, topic);
    assert_eq!(&got.payload[..], payload);
}

#[tokio::test]
async fn plain_broker_round_trips_a_qos1_message() {
    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    assert!(broker.url().starts_with("mqtt://127.0.0.1:"));
    let mut sub = TestClient::connect(&broker, "sub", plain());
    sub.connected().await;
    sub.subscribe("licd/test/#").await;
    let mut publisher = TestClient::connect(&broker, "pub", plain());
    publisher.connected().await;
    round_trip(&publisher, &mut sub, "licd/test/plain", b"hello").await;
}

#[tokio::test]
async fn a_stalled_subscriber_gets_every_qos1_message_of_a_burst_when_it_resumes() {
    // With mosquitto's defaults (20 in flight, 1000 queued per client) the broker drops
    // messages for a subscriber that stops reading while 3000 arrive; the harness's limits
    // must not.
    const COUNT: u32 = 3000;
    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();

    let mut options = MqttOptions::new("stalled", broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(60));
    let (sub, mut sub_loop) = AsyncClient::new(options, 10);
    sub.subscribe("licd/test/burst", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(STEP, async {
        while !matches!(
            sub_loop.poll().await,
            Ok(Event::Incoming(Packet::SubAck(_)))
        ) {}
    })
    .await
    .expect("subscribed in time");
    // From here on nobody polls `sub_loop`: the subscriber has stalled.

    let mut publisher = TestClient::connect(&broker, "burst", plain());
    publisher.connected().await;
    let client = publisher.client.clone();
    tokio::spawn(async move {
        for i in 0..COUNT {
            let payload = i.to_be_bytes().to_vec();
            client
                .publish("licd/test/burst", QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
    });
    let mut acked = 0;
    while acked < COUNT {
        if let Ok(Packet::PubAck(_)) = publisher.next().await {
            acked += 1;
        }
    }

    // The broker has accepted all of them; now the subscriber resumes.
    let mut expected = 0;
    tokio::time::timeout(STEP, async {
        while expected < COUNT {
            match sub_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let n = u32::from_be_bytes(p.payload[..].try_into().unwrap());
                    assert_eq!(n, expected, "broker log:\n{}", broker.log());
                    expected += 1;
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber failed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("got {expected} of {COUNT}; broker log:\n{}", broker.log()));
    assert!(
        !broker.log().contains("Outgoing messages are being dropped"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn tls_broker_round_trips_with_the_generated_ca() {
    let pki = Pki::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::tls(&pki)).unwrap();
    assert!(broker.url().starts_with("mqtts://127.0.0.1:"));
    let transport = tls::transport_for(Scheme::Mqtts, false, &tls_settings(&pki)).unwrap();
    let mut client = TestClient::connect(&broker, "tls", transport);
    client.connected().await;
    client.subscribe("licd/test/tls").await;
    let publisher = TestClient::connect(
        &broker,
        "tls-pub",
        tls::transport(&tls_settings(&pki)).unwrap(),
    );
    round_trip(&publisher, &mut client, "licd/test/tls", b"over tls").await;
}

#[tokio::test]
async fn tls_client_trusting_another_ca_is_refused() {
    let pki = Pki::generate().unwrap();
    let stranger = Pki::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::tls(&pki)).unwrap();
    let transport = tls::transport(&tls_settings(&stranger)).unwrap();
    let mut client = TestClient::connect(&broker, "wrong-ca", transport);
    let error = client.refused().await;
    assert!(error.contains("invalid peer certificate"), "{error}");
}

#[tokio::test]
async fn server_name_override_checks_the_certificate_against_the_configured_name() {
    let pki = Pki::generate().unwrap();
    let named = pki.issue_server("named", &["broker.licd.test"]).unwrap();
    let config = MosquittoConfig {
        security: BrokerSecurity::Tls {
            ca_cert: pki.ca_cert.clone(),
            server: named,
        },
        ..MosquittoConfig::plain()
    };
    let broker = Mosquitto::start(config).unwrap();

    // Connecting to 127.0.0.1 without the override: the certificate does not name that IP.
    let mut client = TestClient::connect(&broker, "no-override", {
        tls::transport(&tls_settings(&pki)).unwrap()
    });
    let error = client.refused().await;
    assert!(error.contains("not valid for name"), "{error}");

    // With the override, the same certificate is accepted at the same address.
    let settings = TlsSettings {
        server_name: Some("broker.licd.test".to_owned()),
        ..tls_settings(&pki)
    };
    let mut client = TestClient::connect(&broker, "override", tls::transport(&settings).unwrap());
    client.connected().await;

    // And a wrong override is still refused: the override is checked, not a bypass.
    let settings = TlsSettings {
        server_name: Some("other.licd.test".to_owned()),
        ..tls_settings(&pki)
    };
    let mut client = TestClient::connect(&broker, "wrong", tls::transport(&settings).unwrap());
    let error = client.refused().await;
    assert!(error.contains("not valid for name"), "{error}");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_with_it() {
    let pki = Pki::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::mutual_tls(&pki)).unwrap();

    let mut anonymous = TestClient::connect(
        &broker,
        "no-cert",
        tls::transport(&tls_settings(&pki)).unwrap(),
    );
    let error = anonymous.refused().await;
    // TLS 1.3 alert certificate_required (TLS 1.2 would end the handshake with a failure).
    assert!(
        error.contains("CertificateRequired") || error.contains("HandshakeFailure"),
        "{error}"
    );
    drop(anonymous);

    let mut client = TestClient::connect(
        &broker,
        "with-cert",
        tls::transport(&mtls_settings(&pki)).unwrap(),
    );
    client.connected().await;
    client.subscribe("licd/test/mtls").await;
    let publisher = TestClient::connect(
        &broker,
        "with-cert-pub",
        tls::transport(&mtls_settings(&pki)).unwrap(),
    );
    round_trip(&publisher, &mut client, "licd/test/mtls", b"mutual").await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let pki = Pki::generate().unwrap();
    let stranger = Pki::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::mutual_tls(&pki)).unwrap();
    let settings = TlsSettings {
        ca_file: Some(pki.ca_cert.clone()),
        client_cert: Some(stranger.client.cert.clone()),
        client_key: Some(stranger.client.key.clone()),
        server_name: None,
    };
    let mut client = TestClient::connect(&broker, "stranger", tls::transport(&settings).unwrap());
    client.refused().await;
}

#[tokio::test]
async fn a_client_reconnects_after_the_broker_restarts_on_the_same_port() {
    let pki = Pki::generate().unwrap();
    let mut broker = Mosquitto::start(MosquittoConfig::tls(&pki)).unwrap();
    let port = broker.port();
    let mut client = TestClient::connect(
        &broker,
        "survivor",
        tls::transport(&tls_settings(&pki)).unwrap(),
    );
    client.connected().await;

    broker.stop().unwrap();
    assert!(!broker.is_running());
    let error = client.refused().await;
    eprintln!("client saw the broker go away: {error}");
    // It keeps retrying against the dead port and keeps failing.
    let error = client.refused().await;
    eprintln!("and keeps failing while it is down: {error}");

    broker.start_again().unwrap();
    assert_eq!(broker.port(), port);
    let ack = client.reconnected().await;
    assert!(
        !ack.session_present,
        "clean session: subscriptions must be renewed"
    );
    client.subscribe("licd/test/back").await;
    let publisher = TestClient::connect(
        &broker,
        "after",
        tls::transport(&tls_settings(&pki)).unwrap(),
    );
    round_trip(&publisher, &mut client, "licd/test/back", b"back").await;
    assert!(broker.log().contains("start #2"), "{}", broker.log());
}

#[tokio::test]
async fn a_killed_broker_comes_back_with_restart() {
    let mut broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let mut client = TestClient::connect(&broker, "k", plain());
    client.connected().await;
    broker.kill().unwrap();
    client.refused().await;
    broker.restart().unwrap();
    client.reconnected().await;
}

#[tokio::test]
async fn persistence_keeps_retained_messages_across_a_clean_restart() {
    let mut broker = Mosquitto::start(MosquittoConfig::plain().with_persistence(true)).unwrap();
    let mut publisher = TestClient::connect(&broker, "retainer", plain());
    publisher.connected().await;
    publisher
        .client
        .publish(
            "licd/test/retained",
            QoS::AtLeastOnce,
            true,
            b"kept".to_vec(),
        )
        .await
        .unwrap();
    loop {
        if let Ok(Packet::PubAck(_)) = publisher.next().await {
            break;
        }
    }
    drop(publisher);

    broker.restart().unwrap();
    let mut late = TestClient::connect(&broker, "late", plain());
    late.connected().await;
    late.subscribe("licd/test/retained").await;
    let got = late.publish_received().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"kept");
}
