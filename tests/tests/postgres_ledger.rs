//! The controller on a PostgreSQL ledger, end to end: a real agent process licensed through
//! mosquitto by a stub whose ledger is a real PostgreSQL server, across a controller restart;
//! and PostgreSQL itself restarted while reports pour in — the controller rides it out
//! (retries, then applies every report), nothing is lost or allocated twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_report;
use licd_protocol::{
    DeviceId, DeviceReport, LicenseId, PublicKey, ServiceName, Sku, TenantId, Topic, TopicKind,
};
use licd_stub::config::{BrokerMode, LedgerLocation};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::ledger::Ledger;
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::controller::unix_now;
use licd_tests::mosquitto::{Mosquitto, MosquittoConfig};
use licd_tests::pki::Pki;
use licd_tests::{wait_for, Postgres};

const T: Duration = Duration::from_secs(40);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn config(signer: &Signer, url: &str, broker: Option<String>) -> StubConfig {
    let mut config = StubConfig::for_tests(signer.clone());
    config.ledger = LedgerLocation::Postgres {
        url: url.to_string(),
        retry: Duration::from_secs(30),
    };
    if let Some(url) = broker {
        config.broker = BrokerMode::External {
            url,
            ca_file: None,
            credentials: None,
        };
    }
    config
}

/// MSP, tenant acme, SKU LIC-WIFI (service wifi), a subscription of `seats`, auto-licensing.
async fn seed(stub: &StubHandle, seats: u32) {
    let now = unix_now();
    stub.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp)
        .await
        .unwrap();
    stub.add_customer(acme(), "Acme", CustomerKind::Tenant)
        .await
        .unwrap();
    stub.add_catalog_entry(CatalogEntry {
        sku: Sku::new("LIC-WIFI").unwrap(),
        name: "wifi".into(),
        service: svc("wifi"),
        product_class: "wireless".into(),
        vms_per_seat: None,
    })
    .await
    .unwrap();
    stub.add_subscription(Subscription {
        id: LicenseId::new("SUB-1").unwrap(),
        name: "acme".into(),
        owner: Some(acme()),
        claim_key: None,
        start: now - 60,
        end: now + 365 * 86_400,
        entitlements: vec![Entitlement {
            sku: Sku::new("LIC-WIFI").unwrap(),
            limit: seats,
        }],
    })
    .await
    .unwrap();
    stub.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
        .await
        .unwrap();
}

fn seq(a: &Agent) -> u64 {
    a.status().unwrap()["bundle"]["seq"].as_u64().unwrap_or(0)
}

#[test]
fn a_stub_on_postgres_licenses_a_real_agent_and_a_restart_keeps_its_seq_rising() {
    licd_tests::licd_bin().unwrap();
    let pg = Postgres::shared().unwrap();
    let url = pg.create_database().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let signer = Signer::ephemeral(unix_now()).unwrap();
    let rt = licd_tests::runtime();
    let stub = rt.block_on(async {
        let stub = Stub::start(config(&signer, &url, Some(broker.url())))
            .await
            .unwrap();
        seed(&stub, 1).await;
        stub
    });
    let agent = Agent::start(&AgentOptions::plain(
        broker.port(),
        &stub.root_public_key().to_hex(),
    ))
    .unwrap();
    wait_for("the agent licensed", T, || {
        agent.state_of("wifi").as_deref() == Some("licensed")
    })
    .unwrap();
    let before = seq(&agent);
    let state = stub.with_engine(|e| e.state().clone()).unwrap();
    rt.block_on(stub.shutdown());

    // A new controller on the same database: the same records, and the next bundle is above
    // every one issued before.
    let stub = rt
        .block_on(Stub::start(config(&signer, &url, Some(broker.url()))))
        .unwrap();
    assert_eq!(stub.with_engine(|e| e.state().clone()).unwrap(), state);
    rt.block_on(stub.reissue(&acme(), &DeviceId::new("ap-1").unwrap()))
        .unwrap();
    wait_for("the reissued bundle", T, || seq(&agent) > before).unwrap();
    assert_eq!(agent.state_of("wifi").as_deref(), Some("licensed"));
    rt.block_on(stub.shutdown());
}

fn report(device: &str, key: &SigningKey) -> (String, Vec<u8>) {
    let r = DeviceReport {
        device: DeviceId::new(device).unwrap(),
        tenant: acme(),
        device_key: PublicKey::from(&key.verifying_key()),
        model: "AP".into(),
        serial: device.into(),
        product_class: "wireless".into(),
        firmware_version: "1".into(),
        agent_version: "0.1".into(),
        vm_count: None,
        services_wanted: vec![svc("wifi")],
        bundle_seq: 0,
        clock: unix_now(),
        uptime: 1,
        clock_rollback: false,
    };
    let topic = Topic::new(&r.tenant, &r.device, TopicKind::Report).to_topic_string();
    (topic, seal_report(&r, key))
}

/// Publishes the reports of devices `range` (QoS 1) from one MQTT client.
async fn publish_reports(client: &rumqttc::AsyncClient, range: std::ops::Range<u32>) {
    for n in range {
        let key = SigningKey::from_bytes(&[(n % 250) as u8 + 1; 32]);
        let (topic, bytes) = report(&format!("ap-{n}"), &key);
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }
}

#[test]
fn postgres_restarted_under_load_the_controller_retries_and_loses_nothing() {
    const DEVICES: u32 = 80;
    const SEATS: u32 = 60;
    // Its own server: this test stops it.
    let mut pg = Postgres::start().unwrap();
    let url = pg.create_database().unwrap();
    let signer = Signer::ephemeral(unix_now()).unwrap();
    let rt = licd_tests::runtime();
    let stub = Arc::new(rt.block_on(async {
        let stub = Stub::start(config(&signer, &url, None)).await.unwrap();
        seed(&stub, SEATS).await;
        stub
    }));
    let broker = stub.broker_addr().unwrap();
    let mut opts = rumqttc::MqttOptions::new("load", broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 256);
    rt.spawn(async move { while eventloop.poll().await.is_ok() {} });

    // First half with the server up.
    rt.block_on(publish_reports(&client, 0..DEVICES / 2));
    wait_for("the first half applied", T, || {
        stub.stats().reports_applied >= u64::from(DEVICES / 2)
    })
    .unwrap();

    // The server goes away; the second half arrives while it is down.
    pg.stop().unwrap();
    rt.block_on(publish_reports(&client, DEVICES / 2..DEVICES));
    wait_for("the second half received", T, || {
        stub.stats().reports_received >= u64::from(DEVICES)
    })
    .unwrap();
    // The controller is waiting on the ledger: nothing of the second half is applied yet
    // (no bundle may go out before its seq is stored).
    let applied_while_down = stub.stats().reports_applied;
    pg.start_again().unwrap();
    wait_for("every report applied", T, || {
        stub.stats().reports_applied >= u64::from(DEVICES)
    })
    .unwrap();
    let stats = stub.stats();
    assert_eq!(stats.reports_refused, 0, "{stats:?}");
    assert_eq!(
        applied_while_down,
        u64::from(DEVICES / 2),
        "no report of the second half applied while the server was down"
    );

    // Exactly the seats there are, each device with a bundle, and the database holds what
    // the controller holds.
    let state = stub.with_engine(|e| e.state().clone()).unwrap();
    let licensed = state
        .devices
        .values()
        .filter(|d| d.seats.contains_key(&svc("wifi")))
        .count();
    assert_eq!(licensed, SEATS as usize);
    assert_eq!(state.devices.len(), DEVICES as usize);
    assert!(state.devices.values().all(|d| d.bundle.seq > 0));
    let stored = Ledger::open_postgres(&url, Duration::from_secs(10))
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(stored, state);
    if let Ok(stub) = Arc::try_unwrap(stub) {
        rt.block_on(stub.shutdown());
    }
}

/// TLS to PostgreSQL: on a server that lets only TLS in over TCP, a controller whose ledger
/// URL says `sslmode=verify-full` with the test CA works (the server lists its sessions as
/// TLS) and its records read back; the plain URL is refused by the server, and a CA that did
/// not sign the server's certificate by the controller — at once, not after the retry budget.
#[test]
fn a_controller_reaches_a_tls_only_postgres_with_verify_full_and_refuses_an_unverified_server() {
    let pki = Pki::generate().unwrap();
    let pg = Postgres::start_tls(&pki.server).unwrap();
    let url = pg.create_database().unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    let with_ca =
        |ca: &std::path::Path| format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let tls_url = with_ca(&pki.ca_cert);
    let signer = Signer::ephemeral(unix_now()).unwrap();
    let rt = licd_tests::runtime();
    let stub = rt.block_on(async {
        let stub = Stub::start(config(&signer, &tls_url, None)).await.unwrap();
        seed(&stub, 3).await;
        stub
    });
    let sessions = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{db}'"
            ),
        )
        .unwrap();
    assert_eq!(sessions, "1|0", "the controller's session (TLS, plain)");
    let state = stub.with_engine(|e| e.state().clone()).unwrap();
    assert!(state.customers.contains_key(&acme()));
    rt.block_on(stub.shutdown());
    let stored = Ledger::open_postgres(&tls_url, Duration::from_secs(10))
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(stored, state);

    let budget = Duration::from_secs(60);
    let plain = Ledger::open_postgres(&url, budget).unwrap_err().to_string();
    assert!(plain.contains("no encryption"), "{plain}");
    let other = Pki::generate().unwrap();
    let started = Instant::now();
    let unverified = Ledger::open_postgres(&with_ca(&other.ca_cert), budget)
        .unwrap_err()
        .to_string();
    assert!(unverified.contains("certificate"), "{unverified}");
    assert!(
        started.elapsed() < budget,
        "a refused certificate is not retried"
    );
}
