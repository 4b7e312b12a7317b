//! End to end with a simulated device: the stub with its embedded broker grants a device (a
//! rumqttc client with a real ed25519 key) its services over MQTT; the device verifies the
//! retained bundle against the pinned root; an unassign revokes one service with a higher
//! `seq`; a report under a foreign key is refused and recorded.

// Test helpers outside #[test] fns unwrap too: a panic is a test failure (see clippy.toml).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{setup, Device, WAIT};
use ed25519_dalek::SigningKey;
use licd_protocol::{DeviceId, PublicKey, TenantId, TrustStore, WithheldReason};
use licd_stub::engine::Selection;

fn svc(s: &str) -> licd_protocol::ServiceName {
    common::svc(s)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_stub_remembers_the_device_and_keeps_its_seq_rising() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config();
    config.ledger = licd_stub::LedgerLocation::File(dir.path().join("ledger.db"));
    let stub = common::setup_with(config.clone()).await;
    let trust = TrustStore::new(vec![stub.root_public_key()]);
    let mut dev = Device::connect(&stub, "acme", "ap-1", 7).await;
    dev.send(&dev.report(&["wifi", "security"], 0), &dev.key.clone())
        .await;
    let b1 = dev.next_bundle(&trust).await;
    stub.shutdown().await;
    drop(dev);

    // Same ledger and keys, a new embedded broker (rumqttd cannot be stopped, so a new port).
    let stub = licd_stub::Stub::start(config).await.unwrap();
    let view = stub
        .device(
            &TenantId::new("acme").unwrap(),
            &DeviceId::new("ap-1").unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(view.bundle_seq, b1.seq);
    assert_eq!(
        view.key,
        PublicKey::from(&SigningKey::from_bytes(&[7; 32]).verifying_key()).to_hex()
    );
    let mut dev = Device::connect(&stub, "acme", "ap-1", 7).await;
    stub.unassign(
        &Selection::only([TenantId::new("acme").unwrap()]),
        &[svc("wifi")],
    )
    .await
    .unwrap();
    let b2 = dev.next_bundle(&trust).await;
    assert!(b2.seq > b1.seq);
    assert!(b2.grant(&svc("wifi")).is_none());
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_after_refresh_time_renews_the_lease_with_a_manual_clock() {
    let mut config = common::test_config();
    let (clock, hand) = licd_stub::Clock::manual(common::now());
    config.clock = clock;
    let stub = common::setup_with(config).await;
    let trust = TrustStore::new(vec![stub.root_public_key()]);
    let mut dev = Device::connect(&stub, "acme", "ap-1", 7).await;
    dev.send(&dev.report(&["wifi"], 0), &dev.key.clone()).await;
    let b1 = dev.next_bundle(&trust).await;
    assert_eq!(b1.refresh_after, b1.issued_at + 30);

    // Past refresh_after (lease 60 s → refresh at 30 s) the same report gets a new lease.
    hand.fetch_add(31, std::sync::atomic::Ordering::SeqCst);
    dev.send(&dev.report(&["wifi"], b1.seq), &dev.key.clone())
        .await;
    let b2 = dev.next_bundle(&trust).await;
    assert_eq!(b2.seq, b1.seq + 1);
    assert_eq!(b2.issued_at, b1.issued_at + 31);
    assert_eq!(b2.grants[0].lease_until, b2.issued_at + 60);
    stub.shutdown().await;
}
