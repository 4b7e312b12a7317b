//! Helpers shared by the integration tests: a simulated device (a rumqttc client with a real
//! ed25519 key) and a stub set up with an MSP, a tenant, SKUs and a subscription.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::{open_bundle, seal_report};
use licd_protocol::{
    DeviceId, DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceName, Sku, TenantId, Topic,
    TopicKind, TrustStore,
};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

pub const WAIT: Duration = Duration::from_secs(10);

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

pub struct Device {
    pub key: SigningKey,
    pub tenant: TenantId,
    pub id: DeviceId,
    pub client: AsyncClient,
    pub events: EventLoop,
}

impl Device {
    pub async fn connect(stub: &StubHandle, tenant: &str, id: &str, seed: u8) -> Self {
        let addr = stub.broker_addr().unwrap();
        Self::connect_to(addr, tenant, id, seed).await
    }

    pub async fn connect_to(addr: std::net::SocketAddr, tenant: &str, id: &str, seed: u8) -> Self {
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

    pub fn report(&self, services: &[&str], bundle_seq: u64) -> DeviceReport {
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

    pub async fn send(&self, report: &DeviceReport, key: &SigningKey) {
        let topic = Topic::new(&self.tenant, &self.id, TopicKind::Report).to_topic_string();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, seal_report(report, key))
            .await
            .unwrap();
    }

    /// Polls until a packet matches, with a timeout (no fixed sleeps).
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Packet) -> bool) -> Packet {
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
    pub async fn next_bundle(&mut self, trust: &TrustStore) -> GrantBundle {
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

/// A stub with an embedded broker, lease 60 s and grace 120 s.
pub async fn setup() -> StubHandle {
    setup_with(test_config()).await
}

/// The test configuration: ephemeral keys, in-memory ledger, lease 60 s, grace 120 s.
pub fn test_config() -> StubConfig {
    let mut config = StubConfig::for_tests(Signer::ephemeral(now()).unwrap());
    config.lease = LeasePolicy {
        lease_secs: 60,
        grace_secs: 120,
        ..LeasePolicy::default()
    };
    config
}

/// Starts the stub with `config` and sets up MSP `msp`, tenant `acme`, SKUs for `wifi` and
/// `security` (class `ap`), 10 seats each, auto-licensing for everyone.
pub async fn setup_with(config: StubConfig) -> StubHandle {
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
