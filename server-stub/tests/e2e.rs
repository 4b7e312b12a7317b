//! End to end with a simulated device: the stub with its embedded broker grants a device (a
//! rumqttc client with a real ed25519 key) its services over MQTT; the device verifies the
//! retained bundle against the pinned root; an unassign revokes one service with a higher
//! `seq`; a report under a foreign key is refused and recorded.

// Test helpers outside #[test] fns unwrap too: a panic is a test failure (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::{open_bundle, seal_report};
use licd_protocol::{
    DeviceId, DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceName, Sku, TenantId, Topic,
    TopicKind, TrustStore, WithheldReason,
};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

struct Device {
    key: SigningKey,
    tenant: TenantId,
    id: DeviceId,
    client: AsyncClient,
    events: EventLoop,
}

impl Device {
    async fn connect(stub: &StubHandle, tenant: &str, id: &str, seed: u8) -> Self {
        let addr = stub.broker_addr().unwrap();
        let mut opts = MqttOptions::new(
            format!("dev-{tenant}-{id}-{seed}"),
            addr.ip().to_string(),
            addr.port(),
        );
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, events) = AsyncClient::new(opts, 16);
        let mut d = Self {
            key: SigningKey::from_bytes(&[seed; 32]),
            tenant: TenantId::new(tenant).unwrap(),
            id: DeviceId::new(id).unwrap(),
            client,
            events,
        };
        let grants = Topic::new(&d.tenant, &d.id, TopicKind::Grants).to_topic_string();
        d.client.subscribe(grants, QoS::AtLeastOnce).await.unwrap();
        d.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
        d
    }

    fn report(&self, services: &[&str], bundle_seq: u64) -> DeviceReport {
        DeviceReport {
            device: self.id.clone(),
            tenant: self.tenant.clone(),
            device_key: PublicKey::from(&self.key.verifying_key()),
            model: "AP-515".into(),
            serial: "SN1".into(),
            product_class: "ap".into(),
            firmware_version: "10.4".into(),
            agent_version: "0.1.0".into(),
            vm_count: None,
            services_wanted: services.iter().map(|s| svc(s)).collect(),
            bundle_seq,
            clock: now(),
            uptime: 5,
            clock_rollback: false,
        }
    }

    async fn send(&self, report: &DeviceReport, key: &SigningKey) {
        let topic = Topic::new(&self.tenant, &self.id, TopicKind::Report).to_topic_string();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, seal_report(report, key))
            .await
            .unwrap();
    }

    /// Polls until a packet matches, with a timeout (no fixed sleeps).
    async fn wait_for(&mut self, mut pred: impl FnMut(&Packet) -> bool) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Incoming(p) = self.events.poll().await.unwrap() {
                    if pred(&p) {
                        return p;
                    }
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }

    /// Waits for the next bundle on the grants topic and verifies it like an agent would.
    async fn next_bundle(&mut self, trust: &TrustStore) -> GrantBundle {
        let Packet::Publish(p) = self.wait_for(|p| matches!(p, Packet::Publish(_))).await else {
            unreachable!()
        };
        let (bundle, _) = open_bundle(&p.payload, trust, now()).expect("bundle verifies");
        assert_eq!(bundle.device, self.id);
        assert_eq!(
            bundle.device_key,
            PublicKey::from(&self.key.verifying_key()).id()
        );
        bundle
    }
}

async fn setup() -> StubHandle {
    let mut config = StubConfig::for_tests(Signer::ephemeral(now()).unwrap());
    config.lease = LeasePolicy {
        lease_secs: 60,
        grace_secs: 120,
    };
    let stub = Stub::start(config).await.unwrap();
    stub.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp)
        .await
        .unwrap();
    stub.add_customer(TenantId::new("acme").unwrap(), "Acme", CustomerKind::Tenant)
        .await
        .unwrap();
    for (sku, service) in [("LIC-AP", "wifi"), ("LIC-SEC", "security")] {
        stub.add_catalog_entry(CatalogEntry {
            sku: Sku::new(sku).unwrap(),
            name: sku.into(),
            service: svc(service),
            product_class: "ap".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
    }
    stub.add_subscription(Subscription {
        id: LicenseId::new("SUB-1").unwrap(),
        name: "lab".into(),
        owner: Some(TenantId::new("msp").unwrap()),
        claim_key: None,
        start: now() - 60,
        end: now() + 86_400,
        entitlements: vec![
            Entitlement {
                sku: Sku::new("LIC-AP").unwrap(),
                limit: 10,
            },
            Entitlement {
                sku: Sku::new("LIC-SEC").unwrap(),
                limit: 10,
            },
        ],
    })
    .await
    .unwrap();
    let r = stub
        .enable_auto_licensing(&Selection::all(), &[svc("wifi"), svc("security")], false)
        .await
        .unwrap();
    assert!(r.paused.is_empty());
    stub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_device_is_granted_its_services_and_an_unassign_revokes_one() {
    let stub = setup().await;
    let trust = TrustStore::new(vec![stub.root_public_key()]);
    let mut dev = Device::connect(&stub, "acme", "ap-1", 7).await;

    let report = dev.report(&["wifi", "security"], 0);
    dev.send(&report, &dev.key.clone()).await;
    let b1 = dev.next_bundle(&trust).await;
    let mut granted: Vec<&str> = b1.grants.iter().map(|g| g.service.as_str()).collect();
    granted.sort();
    assert_eq!(granted, ["security", "wifi"]);
    assert!(b1
        .grants
        .iter()
        .all(|g| g.lease_until == b1.issued_at + 60 && g.grace == 120));

    stub.unassign(
        &Selection::only([TenantId::new("acme").unwrap()]),
        &[svc("security")],
    )
    .await
    .unwrap();
    let b2 = dev.next_bundle(&trust).await;
    assert!(b2.seq > b1.seq);
    assert!(b2.grant(&svc("security")).is_none());
    assert!(b2.grant(&svc("wifi")).is_some());
    assert_eq!(b2.withheld[0].service, svc("security"));
    assert_eq!(b2.withheld[0].reason, WithheldReason::Unassigned);

    // A device reconnecting later gets the newest bundle at once: it is retained.
    let mut late = Device::connect(&stub, "acme", "ap-1", 7).await;
    drop(dev);
    let retained = late.next_bundle(&trust).await;
    assert_eq!(retained.seq, b2.seq);

    // A report under another key for the same device is refused and recorded.
    let evil = SigningKey::from_bytes(&[99; 32]);
    let mut forged = late.report(&["wifi", "security"], b2.seq);
    forged.device_key = PublicKey::from(&evil.verifying_key());
    late.send(&forged, &evil).await;
    // Keep the device's event loop turning (it sends the report) until the stub records it.
    tokio::time::timeout(WAIT, async {
        while stub.refused_reports(10).unwrap().is_empty() {
            tokio::select! {
                ev = late.events.poll() => { ev.unwrap(); }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("refusal recorded");
    assert_eq!(stub.stats().reports_refused, 1);
    let refused = stub.refused_reports(10).unwrap();
    assert!(
        refused[0].reason.contains("differs from the pinned key"),
        "{refused:?}"
    );
    let view = stub
        .device(
            &TenantId::new("acme").unwrap(),
            &DeviceId::new("ap-1").unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(view.bundle_seq, b2.seq);
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_of_an_unknown_tenant_gets_an_empty_bundle() {
    let stub = setup().await;
    let trust = TrustStore::new(vec![stub.root_public_key()]);
    let mut dev = Device::connect(&stub, "nobody", "ap-9", 9).await;
    dev.send(&dev.report(&["wifi"], 0), &dev.key.clone()).await;
    let b = dev.next_bundle(&trust).await;
    assert!(b.grants.is_empty());
    assert_eq!(b.withheld[0].reason, WithheldReason::UnknownTenant);
    assert!(stub.devices(None).unwrap().iter().any(|d| d.unknown_tenant));
    stub.shutdown().await;
}
