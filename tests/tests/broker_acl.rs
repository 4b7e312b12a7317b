//! Broker ACLs: a mosquitto with mutual TLS and exactly the ACL file of
//! `docs/mosquitto-acl.conf` (device certificates with CN `<tenant>/<device>`, used as the user
//! name). Device A (`acme/ap-1`) must not be able to publish device B's (`acme/ap-2`) report
//! or presence, read B's grants or publish grants at all; a real agent must still work under
//! the same rules: its grants, the retained trust statements, remote diagnostics.
//!
//! Negative checks are made deterministic with markers instead of waits: MQTT keeps the order
//! of one client's messages, so once a later allowed message has arrived, an earlier denied one
//! would have arrived before it; and a retained message shows which publish the broker took.

mod hardening;

use std::path::{Path, PathBuf};

use hardening::{runtime, topic, Publisher, T};
use licd_agent::tls::{self, TlsSettings};
use licd_protocol::diag::DiagRequest;
use licd_protocol::envelope::{open_report, seal_bundle, seal_diag_request};
use licd_protocol::revocation::seal_revocations;
use licd_protocol::topic::TRUST_REVOCATIONS;
use licd_protocol::{DeviceId, PublicKey, RevocationList, TenantId, TopicKind};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::controller::{bundle_for, unix_now, ControllerKeys, Policy};
use licd_tests::{wait_for, CertFiles, Mosquitto, MosquittoConfig, Pki};
use rumqttc::SubscribeReasonCode;

fn acl_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/mosquitto-acl.conf")
}

fn broker(pki: &Pki) -> Mosquitto {
    let acl = std::fs::canonicalize(acl_file()).unwrap();
    Mosquitto::start(
        MosquittoConfig::mutual_tls(pki).with_line(format!("acl_file {}", acl.display())),
    )
    .unwrap()
}

fn client(broker: &Mosquitto, pki: &Pki, id: &str, cert: &CertFiles) -> Publisher {
    let settings = TlsSettings {
        ca_file: Some(pki.ca_cert.clone()),
        client_cert: Some(cert.cert.clone()),
        client_key: Some(cert.key.clone()),
        ..TlsSettings::default()
    };
    let p = Publisher::with_transport(broker.port(), id, Some(tls::transport(&settings).unwrap()));
    p.wait_connected();
    p
}

fn got(p: &Publisher, topic: &str, payload: &[u8]) -> bool {
    p.received().iter().any(|(t, b)| t == topic && b == payload)
}

/// The first message `p` received on `topic`, waiting up to `T`; on timeout the test fails with
/// `logs()` (the agent's and the broker's) beside the reason.
fn first_on(p: &Publisher, topic: &str, what: &str, logs: impl Fn() -> String) -> Vec<u8> {
    let first = || {
        p.received()
            .into_iter()
            .find(|(t, _)| t == topic)
            .map(|(_, b)| b)
    };
    wait_for(what, T, || first().is_some()).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    first().unwrap_or_default()
}

#[test]
fn device_a_cannot_publish_b_s_report_or_presence_nor_read_b_s_grants() {
    let rt = runtime();
    let _g = rt.enter();
    let pki = Pki::generate().unwrap();
    let broker = broker(&pki);
    let a_cert = pki.issue_client("ap1", "acme/ap-1").unwrap();
    let b_cert = pki.issue_client("ap2", "acme/ap-2").unwrap();
    let c_cert = pki.issue_client("controller", "licd-controller").unwrap();
    let controller = client(&broker, &pki, "controller", &c_cert);
    let a = client(&broker, &pki, "device-a", &a_cert);
    let b = client(&broker, &pki, "device-b", &b_cert);
    let (a_report, b_report) = (
        topic("acme", "ap-1", TopicKind::Report),
        topic("acme", "ap-2", TopicKind::Report),
    );
    let b_presence = topic("acme", "ap-2", TopicKind::Presence);
    let (a_grants, b_grants) = (
        topic("acme", "ap-1", TopicKind::Grants),
        topic("acme", "ap-2", TopicKind::Grants),
    );
    let block = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>| rt.block_on(f);

    block(Box::pin(controller.subscribe("licd/v1/+/+/report")));
    block(Box::pin(controller.subscribe("licd/v1/+/+/presence")));
    block(Box::pin(b.subscribe(&b_grants)));
    wait_for("the subscriptions", T, || {
        controller.subacks().len() == 2 && b.subacks().len() == 1
    })
    .unwrap();
    assert!(controller
        .subacks()
        .iter()
        .flatten()
        .all(|c| matches!(c, SubscribeReasonCode::Success(_))));

    // A publishes B's report and presence (denied), then its own report (allowed) as a marker.
    block(Box::pin(a.publish_acked(
        &b_report,
        b"forged report".to_vec(),
        false,
    )));
    block(Box::pin(a.publish_acked(
        &b_presence,
        b"offline".to_vec(),
        true,
    )));
    block(Box::pin(a.publish_acked(
        &a_report,
        b"marker".to_vec(),
        false,
    )));
    wait_for("A's own report to reach the controller", T, || {
        got(&controller, &a_report, b"marker")
    })
    .unwrap();
    assert!(
        !got(&controller, &b_report, b"forged report"),
        "A published B's report"
    );
    assert!(
        !got(&controller, &b_presence, b"offline"),
        "A published B's presence"
    );

    // A subscribes to B's grants and to every grant of its tenant. mosquitto 2.0 with MQTT
    // 3.1.1 may grant the subscription itself; the ACL is enforced on every message delivered.
    block(Box::pin(a.subscribe(&b_grants)));
    block(Box::pin(a.subscribe("licd/v1/acme/+/grants")));
    block(Box::pin(a.subscribe(&a_grants)));
    wait_for("A's SUBACKs", T, || a.subacks().len() == 3).unwrap();
    println!(
        "SUBACKs for A (B's grants, the tenant's grants, its own): {:?}",
        a.subacks()
    );
    // The controller grants B, then A (marker): A receives its own, never B's.
    block(Box::pin(controller.publish_acked(
        &b_grants,
        b"grant for B".to_vec(),
        true,
    )));
    block(Box::pin(controller.publish_acked(
        &a_grants,
        b"grant for A".to_vec(),
        true,
    )));
    wait_for("A's own grant", T, || got(&a, &a_grants, b"grant for A")).unwrap();
    wait_for("B's own grant", T, || got(&b, &b_grants, b"grant for B")).unwrap();
    assert!(
        !a.received().iter().any(|(t, _)| *t == b_grants),
        "A read B's grants"
    );

    // A publishes a retained grant on B's topic: denied, the retained grant is still the
    // controller's (and B never saw A's).
    block(Box::pin(a.publish_acked(
        &b_grants,
        b"grant forged by A".to_vec(),
        true,
    )));
    // The controller may only write grants; a device may read its own: B looks again.
    let b2 = client(&broker, &pki, "device-b-again", &b_cert);
    block(Box::pin(b2.subscribe(&b_grants)));
    wait_for("the retained grant", T, || !b2.received().is_empty()).unwrap();
    assert_eq!(b2.received(), [(b_grants.clone(), b"grant for B".to_vec())]);
    assert!(!got(&b, &b_grants, b"grant forged by A"));
    println!(
        "ACL: A→B report denied, A→B presence denied, B's grants never delivered to A (direct or \
         wildcard subscription), A→B retained grant denied; A's own topics work"
    );
}

#[test]
fn a_real_agent_works_under_the_acl() {
    let rt = runtime();
    let _g = rt.enter();
    let pki = Pki::generate().unwrap();
    let broker = broker(&pki);
    let agent_cert = pki.issue_client("ap1", "acme/ap-1").unwrap();
    let c_cert = pki.issue_client("controller", "licd-controller").unwrap();
    let controller = client(&broker, &pki, "controller", &c_cert);
    rt.block_on(controller.subscribe("licd/v1/+/+/report"));
    rt.block_on(controller.subscribe("licd/v1/+/+/diag-response"));
    wait_for("the subscriptions", T, || controller.subacks().len() == 2).unwrap();
    assert!(
        controller
            .subacks()
            .iter()
            .flatten()
            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
        "{:?}",
        controller.subacks()
    );

    let keys = ControllerKeys::fixed();
    // A retained revocation list (revoking a key nobody uses) waits for the agent.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[99; 32]);
    let list = seal_revocations(
        &RevocationList {
            version: 1,
            issued_at: unix_now(),
            revoked: vec![PublicKey::from(&stranger.verifying_key()).id()],
        },
        &keys.root,
    );
    rt.block_on(controller.publish_acked(TRUST_REVOCATIONS, list, true));
    let mut options = AgentOptions::plain(broker.port(), &keys.root_hex());
    options.broker_url = format!("mqtts://127.0.0.1:{}", broker.port());
    options.ca_file = Some(pki.ca_cert.clone());
    options.client_cert = Some((agent_cert.cert.clone(), agent_cert.key.clone()));
    let agent = Agent::start(&options).unwrap();
    let logs = || format!("{}\n{}", agent.log(), broker.log());
    let report_topic = topic("acme", "ap-1", TopicKind::Report);
    let raw = first_on(&controller, &report_topic, "the agent's report", logs);
    // Plain or extended (the agent negotiates, PROTOCOL.md §17.6): the report part either way.
    let report = open_report(&raw)
        .or_else(|_| licd_protocol::policy::open_extended_report(&raw).map(|x| x.report))
        .unwrap();
    let bundle = seal_bundle(
        &bundle_for(&report, 1, &Policy::default()),
        &keys.signing,
        &keys.cert,
    );
    rt.block_on(controller.publish_acked(&topic("acme", "ap-1", TopicKind::Grants), bundle, true));
    agent.wait_state("wifi", "licensed", T).unwrap();
    // The trust filter is readable: the agent took the retained list.
    wait_for("the revocation list", T, || {
        agent
            .status()
            .is_some_and(|s| s["trust"]["revocations_version"] == 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // Remote diagnostics pass the ACL both ways.
    let request = seal_diag_request(
        &DiagRequest {
            device: DeviceId::new("ap-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            request_id: [7; 16],
            issued_at: unix_now(),
        },
        &keys.signing,
        &keys.cert,
    );
    let request_topic = topic("acme", "ap-1", TopicKind::DiagRequest);
    rt.block_on(controller.publish_acked(&request_topic, request, false));
    let response_topic = topic("acme", "ap-1", TopicKind::DiagResponse);
    first_on(
        &controller,
        &response_topic,
        "the agent's diagnostic response",
        logs,
    );
}
