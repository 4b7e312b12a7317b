//! The real stub controller (embedded broker, ledger, licensing rules) and real agent
//! processes together: auto-licensing grants the agent its services, an unassign revokes one
//! and the agent sees it revoked with the controller's reason, the seat is back in the ledger;
//! trust statements published with the stub's key tools reach the agent through rumqttd.

use std::time::Duration;

use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{Signer, Stub, StubConfig};
use licd_tests::agent::{Agent, AgentOptions};

const T: Duration = Duration::from_secs(30);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

#[test]
fn the_stub_grants_a_real_agent_its_services_and_an_unassign_revokes_one() {
    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let mut config = StubConfig::for_tests(Signer::ephemeral(now).unwrap());
    config.lease = LeasePolicy {
        lease_secs: 60,
        grace_secs: 60,
        ..LeasePolicy::default()
    };
    let stub = rt.block_on(async {
        let stub = Stub::start(config).await.unwrap();
        let acme = TenantId::new("acme").unwrap();
        stub.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp)
            .await
            .unwrap();
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
            owner: Some(acme.clone()),
            claim_key: None,
            start: now - 60,
            end: now + 86_400,
            entitlements: vec![
                Entitlement {
                    sku: Sku::new("LIC-WIFI").unwrap(),
                    limit: 5,
                },
                Entitlement {
                    sku: Sku::new("LIC-POE").unwrap(),
                    limit: 5,
                },
            ],
        })
        .await
        .unwrap();
        stub.enable_auto_licensing(&Selection::all(), &[svc("wifi"), svc("poe")], false)
            .await
            .unwrap();
        stub
    });
    let port = stub.broker_addr().unwrap().port();
    let mut options = AgentOptions::plain(port, &stub.root_public_key().to_hex());
    options.services = vec!["wifi".into(), "poe".into()];
    let agent = Agent::start(&options).unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    agent.wait_state("poe", "licensed", T).unwrap();
    let check = agent.check("poe").unwrap();
    assert_eq!(check["may_run"], true);

    rt.block_on(stub.unassign(
        &Selection::only([TenantId::new("acme").unwrap()]),
        &[svc("poe")],
    ))
    .unwrap();
    agent.wait_state("poe", "unlicensed", T).unwrap();
    assert_eq!(agent.check("poe").unwrap()["reason"], "unassigned");
    assert_eq!(agent.state_of("wifi").as_deref(), Some("licensed"));

    // The controller's view agrees: the device holds one seat, for wifi.
    let devices = stub.devices(None).unwrap();
    let device = devices
        .iter()
        .find(|d| d.device.as_str() == "ap-1")
        .expect("the agent is registered");
    let dump = format!("{device:?}");
    assert!(dump.contains("wifi"), "{dump}");
    rt.block_on(stub.shutdown());
}

/// The lab path of a root rotation: `licd-stub keys revoke` and `keys rotate-root` write the
/// statements, `keys publish` puts them retained on the stub's embedded broker (rumqttd), and
/// a real agent — one `licd/v1/trust/+` subscription — takes both, whichever comes first.
#[test]
fn the_embedded_broker_delivers_the_retained_trust_statements_to_the_agent_s_one_filter() {
    use licd_stub::keys::{self, trust};
    use licd_stub::KeySource;

    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let dir = tempfile::tempdir().unwrap();
    let old_root = keys::init(dir.path(), now).unwrap();
    let mut config = StubConfig::for_tests(Signer::ephemeral(now).unwrap());
    config.keys = KeySource::Dir(dir.path().to_owned());
    let stub = rt.block_on(Stub::start(config)).unwrap();
    let port = stub.broker_addr().unwrap().port();
    let agent = Agent::start(&AgentOptions::plain(port, &old_root.to_hex())).unwrap();
    wait_status(&agent, "the agent to connect", |s| {
        s["connection"]["connected"] == true
    });

    // A revocation list (of a key nobody uses), then a new root: the list is signed by the
    // old root, the rotation by both.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[99; 32]);
    let stranger = licd_protocol::PublicKey::from(&stranger.verifying_key()).id();
    trust::revoke(dir.path(), stranger, now).unwrap();
    let rotated = trust::rotate_root(dir.path(), now).unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let messages = trust::trust_messages(dir.path()).unwrap();
    assert_eq!(messages.len(), 2, "a rotation and a revocation list");
    rt.block_on(trust::publish_retained(&url, messages, T))
        .unwrap();

    // rotate-root re-signed the list with the new root, as version 2.
    let s = wait_status(&agent, "both trust statements", |s| {
        s["trust"]["rotation_seq"] == 1 && s["trust"]["revocations_version"] == 2
    });
    assert_eq!(
        s["trust"]["revoked"],
        serde_json::json!([stranger.to_hex()]),
        "{s}"
    );
    assert_eq!(
        s["trust"]["roots"],
        serde_json::json!([rotated.new.id().to_hex()]),
        "{s}"
    );
    rt.block_on(stub.shutdown());
}

fn wait_status(
    agent: &Agent,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = None;
    licd_tests::wait_for(what, T, || {
        last = agent.status();
        last.as_ref().is_some_and(&pred)
    })
    .unwrap_or_else(|e| panic!("{e}; last status {last:?}\n{}", agent.log()));
    last.unwrap()
}
