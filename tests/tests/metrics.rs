//! Operator metrics end to end (issue 22): the real stub controller with its admin server and
//! a real agent process. `GET /metrics` needs a token, answers OpenMetrics text that a
//! Prometheus text parser reads, and its figures agree with what happened: the report applied,
//! the bundle published, a forged report refused with its code, the device's services by
//! state, the seats taken, the MQTT session connected, ledger transactions timed. On the
//! device, `licd status --format prometheus` (stdout and `--output FILE`) parses too and says
//! the same states.

use std::collections::HashMap;
use std::time::Duration;

use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::admin::{token, AdminConfig, AdminServer};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::wait::wait_for;
use prometheus_parse::{Scrape, Value};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const T: Duration = Duration::from_secs(30);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text parses")
}

/// The value of the one sample of `metric` whose labels include `want` (panics listing the
/// samples of that metric when there is none or several).
fn value(scrape: &Scrape, metric: &str, want: &[(&str, &str)]) -> f64 {
    let hits: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| want.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{metric}{want:?}: {} samples; all of {metric}: {:?}",
        hits.len(),
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .collect::<Vec<_>>()
    );
    match hits[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{metric}: not a number: {other:?}"),
    }
}

/// Publishes junk on a report topic with a client of its own and waits for the broker's ack.
async fn publish_junk_report(stub: &StubHandle) {
    let addr = stub.broker_addr().unwrap();
    let opts = MqttOptions::new("metrics-forger", addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(opts, 8);
    client
        .publish(
            "licd/v1/acme/ap-forged/report",
            QoS::AtLeastOnce,
            false,
            b"not an envelope".to_vec(),
        )
        .await
        .unwrap();
    tokio::time::timeout(T, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("the broker acks the junk report");
}

async fn seed(stub: &StubHandle, now: u64) {
    let acme = TenantId::new("acme").unwrap();
    stub.add_customer(acme.clone(), "Acme", CustomerKind::Tenant)
        .await
        .unwrap();
    for (sku, service) in [("LIC-WIFI", "wifi"), ("LIC-POE", "poe")] {
        stub.add_catalog_entry(CatalogEntry {
            sku: Sku::new(sku).unwrap(),
            name: sku.into(),
            service: svc(service),
            product_class: "wireless".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
    }
    stub.add_subscription(Subscription {
        id: LicenseId::new("SUB-1").unwrap(),
        name: "acme".into(),
        owner: Some(acme),
        claim_key: None,
        start: now - 60,
        end: now + 86_400,
        entitlements: vec![Entitlement {
            sku: Sku::new("LIC-WIFI").unwrap(),
            limit: 5,
        }],
    })
    .await
    .unwrap();
    stub.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
        .await
        .unwrap();
}

#[test]
fn the_stub_s_metrics_and_the_agent_s_textfile_parse_and_say_what_happened() {
    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(token::TOKEN_STORE_FILE);
    let read = token::create(&store, "grafana", token::TokenKind::Read, now).unwrap();
    let (stub, server) = rt.block_on(async {
        let stub = std::sync::Arc::new(
            Stub::start(StubConfig::for_tests(Signer::ephemeral(now).unwrap()))
                .await
                .unwrap(),
        );
        seed(&stub, now).await;
        let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), store);
        let server = AdminServer::start(stub.clone(), config).await.unwrap();
        (stub, server)
    });
    let port = stub.broker_addr().unwrap().port();
    let mut options = AgentOptions::plain(port, &stub.root_public_key().to_hex());
    // wifi has seats; poe has no subscription at all.
    options.services = vec!["wifi".into(), "poe".into()];
    let agent = Agent::start(&options).unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    rt.block_on(publish_junk_report(&stub));
    wait_for("the junk report to be refused", T, || {
        stub.instruments().refusals_of("bad_envelope") == 1
    })
    .unwrap();

    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.url());
    let (anonymous, resp) = rt.block_on(async {
        let anonymous = http.get(&url).send().await.unwrap().status().as_u16();
        let resp = http.get(&url).bearer_auth(&read).send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        (anonymous, (status, ctype, resp.text().await.unwrap()))
    });
    assert_eq!(anonymous, 401, "metrics need a token");
    let (status, ctype, text) = resp;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let scrape = parse(&text);
    let v = |m: &str, l: &[(&str, &str)]| value(&scrape, m, l);

    assert!(v("licd_stub_reports_applied_total", &[]) >= 1.0, "{text}");
    assert!(v("licd_stub_reports_received_total", &[]) >= 2.0, "{text}");
    assert!(v("licd_stub_bundles_published_total", &[]) >= 1.0, "{text}");
    assert_eq!(
        v(
            "licd_stub_reports_refused_total",
            &[("code", "bad_envelope")]
        ),
        1.0
    );
    assert_eq!(v("licd_stub_mqtt_connected", &[]), 1.0);
    assert!(v("licd_stub_mqtt_connections_total", &[]) >= 1.0);
    // One controller on SQLite: nobody else writes, nothing to catch up with.
    for kind in ["devices", "whole"] {
        assert_eq!(
            v("licd_stub_replica_catch_ups_total", &[("kind", kind)]),
            0.0
        );
    }
    assert_eq!(v("licd_stub_devices", &[("tenant", "acme")]), 1.0);
    let wifi = [("tenant", "acme"), ("service", "wifi")];
    assert_eq!(
        v(
            "licd_stub_device_services",
            &[wifi[0], wifi[1], ("state", "granted"), ("reason", "ok")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "licd_stub_device_services",
            &[
                ("service", "poe"),
                ("state", "withheld"),
                ("reason", "not_entitled")
            ]
        ),
        1.0
    );
    let seat = [("subscription", "SUB-1"), ("sku", "LIC-WIFI")];
    assert_eq!(v("licd_stub_seats_assigned", &seat), 1.0);
    assert_eq!(v("licd_stub_seats_available", &seat), 4.0);
    assert_eq!(v("licd_stub_seats_limit", &seat), 5.0);
    // Ledger latency: a histogram per kind of transaction, with observations.
    let histograms: HashMap<String, u64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "licd_stub_ledger_transaction_seconds")
        .filter_map(|s| match &s.value {
            Value::Histogram(buckets) => Some((
                s.labels.get("op").unwrap_or("?").to_string(),
                buckets.last().map_or(0, |b| b.count as u64),
            )),
            _ => None,
        })
        .collect();
    assert!(histograms["report_batch"] >= 1, "{histograms:?}\n{text}");
    assert!(histograms["operator"] >= 4, "{histograms:?}\n{text}");

    // The device side: no port, a textfile for node_exporter.
    let (code, stdout, stderr) = agent.cli(&["status", "--format", "prometheus"]).unwrap();
    assert_eq!(code, 0, "{stderr}");
    let device = parse(&stdout);
    let d = |m: &str, l: &[(&str, &str)]| value(&device, m, l);
    assert_eq!(
        d(
            "licd_service_state",
            &[("service", "wifi"), ("state", "licensed")]
        ),
        1.0
    );
    assert_eq!(
        d(
            "licd_service_state",
            &[
                ("service", "poe"),
                ("state", "unlicensed"),
                ("reason", "not_entitled")
            ]
        ),
        1.0
    );
    assert_eq!(d("licd_service_may_run", &[("service", "poe")]), 0.0);
    let deadline = d("licd_service_deadline_seconds", &[("service", "wifi")]);
    assert!(deadline > now as f64, "{deadline} vs {now}");
    assert_eq!(d("licd_clock_rollback", &[]), 0.0);
    assert_eq!(d("licd_broker_connected", &[]), 1.0);
    assert_eq!(
        d("licd_refused_messages_total", &[("topic", "grants")]),
        0.0
    );
    let age = d("licd_cache_age_seconds", &[]);
    assert!((0.0..600.0).contains(&age), "cache age {age}");
    assert!(d("licd_bundle_seq", &[]) >= 1.0);

    // --output: written whole, readable by node_exporter (0644), no temp file left.
    let prom = dir.path().join("licd.prom");
    let (code, _, stderr) = agent
        .cli(&[
            "status",
            "--format",
            "prometheus",
            "--output",
            prom.to_str().unwrap(),
        ])
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let written = std::fs::read_to_string(&prom).unwrap();
    let file = parse(&written);
    assert_eq!(
        value(&file, "licd_service_may_run", &[("service", "wifi")]),
        1.0
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    rt.block_on(async {
        server.shutdown().await;
        if let Ok(stub) = std::sync::Arc::try_unwrap(stub) {
            stub.shutdown().await;
        }
    });
}
