//! Remote diagnostics end to end: the real stub controller (embedded broker, ledger, signing
//! key) asks a real agent process for its diagnostic report over MQTT. The answer comes back
//! signed by the device key the ledger pinned, with the request's id, and carries the agent's
//! offline `licd diag` document; a request signed by a key no pinned root certified and a
//! second request within the agent's rate limit are refused (no answer; the agent counts them
//! and says why in its log). The stub itself answers a second request of its own within the
//! minute with `RateLimited`, and a request to a stopped device with `Offline`, at once.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use licd_protocol::diag::DiagRequest;
use licd_protocol::envelope::seal_diag_request;
use licd_protocol::{DeviceId, PublicKey, SignerCertificate, TenantId, Topic, TopicKind};
use licd_stub::diag::DiagError;
use licd_stub::engine::CustomerKind;
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::wait::wait_for;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const T: Duration = Duration::from_secs(30);

fn ids() -> (TenantId, DeviceId) {
    (
        TenantId::new("acme").unwrap(),
        DeviceId::new("ap-1").unwrap(),
    )
}

/// Waits until the agent's log contains `needle`, failing with the log.
fn wait_log(agent: &Agent, needle: &str) {
    if wait_for(needle, T, || agent.log().contains(needle)).is_err() {
        panic!("no {needle:?} in the agent log:\n{}", agent.log());
    }
}

/// Publishes `payload` on `topic` with a client of its own, and waits for the broker's ack.
async fn publish_raw(stub: &StubHandle, topic: String, payload: Vec<u8>) {
    let addr = stub.broker_addr().unwrap();
    let opts = MqttOptions::new("remote-diag-forger", addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(opts, 8);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
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
    .expect("the broker acks the forged request");
}

/// A request for the agent, signed by a signing key that a root nobody pinned certified.
fn forged_request(now: u64) -> Vec<u8> {
    let (tenant, device) = ids();
    let root = SigningKey::from_bytes(&[0x5a; 32]);
    let key = SigningKey::from_bytes(&[0x5b; 32]);
    let cert = SignerCertificate::issue(
        &root,
        PublicKey::from(&key.verifying_key()),
        now - 3_600,
        now + 3_600,
    );
    let request = DiagRequest {
        device,
        tenant,
        request_id: [0x42; 16],
        issued_at: now,
    };
    seal_diag_request(&request, &key, &cert)
}

#[test]
fn the_controller_gets_a_signed_diagnostic_report_and_the_agent_refuses_floods_and_forgeries() {
    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let (tenant, device) = ids();
    let signer = Signer::ephemeral(now).unwrap();
    let stub = rt.block_on(async {
        let stub = Stub::start(StubConfig::for_tests(signer.clone()))
            .await
            .unwrap();
        stub.add_customer(tenant.clone(), "Acme", CustomerKind::Tenant)
            .await
            .unwrap();
        stub
    });
    let port = stub.broker_addr().unwrap().port();
    let mut agent =
        Agent::start(&AgentOptions::plain(port, &stub.root_public_key().to_hex())).unwrap();
    // The first report pins the device key; the agent subscribed to its diag-request topic
    // before it sent that report.
    wait_for("the device to be pinned", T, || {
        stub.device(&tenant, &device).unwrap().is_some()
    })
    .unwrap();

    // A request signed by a key no pinned root certified: refused, not answered.
    let topic = Topic::new(&tenant, &device, TopicKind::DiagRequest).to_topic_string();
    rt.block_on(publish_raw(&stub, topic.clone(), forged_request(now)));
    wait_log(&agent, "invalid_request");
    assert!(
        agent.log().contains("is not trusted"),
        "refused for the chain:\n{}",
        agent.log()
    );

    // The device stops: its presence says offline, and a request is answered at once (and
    // does not count against the device's one request a minute). Then it comes back.
    assert!(agent.stop().unwrap());
    let started = Instant::now();
    let offline = rt.block_on(stub.request_diag(&tenant, &device, T));
    assert!(
        matches!(offline, Err(DiagError::Offline { .. })),
        "{offline:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    agent.restart().unwrap();
    wait_for("the agent to reconnect", T, || {
        agent
            .status()
            .is_some_and(|s| s["connection"]["connected"] == true)
    })
    .unwrap();

    // The controller's request: answered, verified against the pinned key, correlated.
    let response = rt
        .block_on(stub.request_diag(&tenant, &device, T))
        .unwrap_or_else(|e| panic!("{e}\n--- agent log ---\n{}", agent.log()));
    assert_eq!(response.device, device);
    assert_eq!(response.tenant, tenant);
    let doc: serde_json::Value = serde_json::from_str(&response.report).unwrap();
    assert_eq!(doc["device"], "ap-1");
    assert_eq!(doc["tenant"], "acme");
    assert_eq!(doc["offline"], true);
    let steps = doc["steps"].as_array().unwrap();
    let verdict = |id: &str| {
        steps
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["verdict"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no step {id} in {doc}"))
    };
    assert_eq!(verdict("config"), "ok");
    assert_eq!(verdict("device_key"), "ok");
    assert_eq!(verdict("cache"), "ok");
    assert_eq!(
        verdict("service.wifi"),
        "fail",
        "acme holds no subscription"
    );
    assert_eq!(verdict("identity"), "ok");
    assert_eq!(verdict("daemon"), "ok");
    assert_eq!(
        verdict("tcp"),
        "skip",
        "network steps are never run remotely"
    );
    assert!(steps
        .iter()
        .all(|s| ["ok", "warn", "fail", "skip"].contains(&s["verdict"].as_str().unwrap())));
    let text = licd_stub::diag::render(&response);
    assert!(text.contains("acme/ap-1"), "{text}");
    wait_log(&agent, "diagnostic report sent to the controller");

    // A second request within the minute: the stub knows the device would refuse it (one
    // request a minute) and says so at once, with the seconds to wait, without asking.
    let started = Instant::now();
    let second = rt.block_on(stub.request_diag(&tenant, &device, T));
    assert!(
        matches!(second, Err(DiagError::RateLimited { retry_after, .. }) if (1..=60).contains(&retry_after)),
        "{second:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A request the device gets inside its minute all the same (signed by the controller's
    // key, sent by someone the stub does not know of): the agent refuses it, counts it in its
    // status and logs why; no answer.
    let request = DiagRequest {
        device: device.clone(),
        tenant: tenant.clone(),
        request_id: [0x43; 16],
        issued_at: now,
    };
    rt.block_on(publish_raw(
        &stub,
        topic.clone(),
        signer.seal_diag_request(&request),
    ));
    wait_log(&agent, "rate_limited");
    let status = agent.status().unwrap();
    assert_eq!(
        status["refusals"]["by_topic"]["diag_request"], 1,
        "the rate-limited request (since the restart): {status}"
    );

    rt.block_on(stub.shutdown());
}
