//! The ledger keeps everything across a restart: customers, catalogue, subscriptions,
//! auto-licensing, devices with their pinned keys, seats and bundle `seq` (which must never go
//! backwards, or agents would refuse the next bundle).

// Test helpers outside #[test] fns unwrap too: a panic is a test failure (see clippy.toml).
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_report;
use licd_protocol::{
    DeviceId, DeviceReport, LicenseId, PublicKey, ServiceName, Sku, TenantId, Topic, TopicKind,
};
use licd_stub::controller::{Controller, ReportError};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Effects, Entitlement, LeasePolicy, ReportRefused, Selection,
    Subscription,
};
use licd_stub::ledger::{Ledger, LedgerError};
use licd_stub::Signer;

const T0: u64 = 1_800_000_000;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn report(device: &str, key: &SigningKey, services: &[&str], seq: u64) -> (String, Vec<u8>) {
    let r = DeviceReport {
        device: DeviceId::new(device).unwrap(),
        tenant: TenantId::new("acme").unwrap(),
        device_key: PublicKey::from(&key.verifying_key()),
        model: "SRV".into(),
        serial: "1".into(),
        product_class: "server".into(),
        firmware_version: "1".into(),
        agent_version: "0.1".into(),
        vm_count: Some(6),
        services_wanted: services.iter().map(|s| svc(s)).collect(),
        bundle_seq: seq,
        clock: T0,
        uptime: 1,
        clock_rollback: false,
    };
    let topic = Topic::new(&r.tenant, &r.device, TopicKind::Report).to_topic_string();
    (topic, seal_report(&r, key))
}

fn populate(c: &mut Controller) {
    c.apply(T0, |e, now| {
        let _ = e.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp, now)?;
        let _ = e.add_customer(
            TenantId::new("acme").unwrap(),
            "Acme",
            CustomerKind::Tenant,
            now,
        )?;
        e.add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-HV-4").unwrap(),
            name: "hv".into(),
            service: svc("hv"),
            product_class: "server".into(),
            vms_per_seat: Some(4),
        })?;
        let _ = e.add_subscription(
            Subscription {
                id: LicenseId::new("S1").unwrap(),
                name: "s1".into(),
                owner: Some(TenantId::new("msp").unwrap()),
                claim_key: Some("CK-1".into()),
                start: T0 - 10,
                end: T0 + 1_000_000,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-HV-4").unwrap(),
                    limit: 3,
                }],
            },
            now,
        )?;
        let r = e.enable_auto_licensing(&Selection::all(), &[svc("hv")], false, now)?;
        Ok(((), r.effects))
    })
    .unwrap();
}

#[test]
fn a_restart_loses_nothing_and_seq_keeps_rising() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let signer = Signer::ephemeral(T0).unwrap();
    let key = SigningKey::from_bytes(&[5; 32]);

    let mut c = Controller::open(
        Ledger::open(&path).unwrap(),
        signer.clone(),
        LeasePolicy::default(),
    )
    .unwrap();
    populate(&mut c);
    let (topic, bytes) = report("host-1", &key, &["hv"], 0);
    let (_, pubs) = c.handle_report_message(&topic, &bytes, T0).unwrap();
    assert_eq!(pubs.len(), 1);
    let (_, again) = c
        .apply(T0 + 1, |e, now| {
            let fx = e.reissue(
                &TenantId::new("acme").unwrap(),
                &DeviceId::new("host-1").unwrap(),
                now,
            )?;
            Ok(((), fx))
        })
        .unwrap();
    let seq_before = again[0].seq;
    let state_before = c.engine().state().clone();
    drop(c);

    let mut c =
        Controller::open(Ledger::open(&path).unwrap(), signer, LeasePolicy::default()).unwrap();
    assert_eq!(c.engine().state(), &state_before);
    assert_eq!(
        c.ledger().schema_version().unwrap() as usize,
        licd_stub::ledger::schema::MIGRATIONS.len()
    );
    let key_of = (
        TenantId::new("acme").unwrap(),
        DeviceId::new("host-1").unwrap(),
    );
    assert_eq!(c.ledger().device_seq(&key_of).unwrap(), Some(seq_before));
    assert_eq!(
        c.engine().assigned_seats(
            &LicenseId::new("S1").unwrap(),
            &Sku::new("LIC-HV-4").unwrap()
        ),
        1
    );

    // The device, still holding an older bundle, reports: the next seq is above every one
    // issued before the restart.
    let (topic, bytes) = report("host-1", &key, &["hv"], 1);
    let (_, pubs) = c.handle_report_message(&topic, &bytes, T0 + 2).unwrap();
    assert!(pubs[0].seq > seq_before);

    // The pinned key survived too.
    let evil = SigningKey::from_bytes(&[6; 32]);
    let (topic, bytes) = report("host-1", &evil, &["hv"], 1);
    assert!(matches!(
        c.handle_report_message(&topic, &bytes, T0 + 3),
        Err(ReportError::Refused(ReportRefused::KeyMismatch { .. }))
    ));
    assert_eq!(c.ledger().refused_reports(5).unwrap().len(), 1);
}

#[test]
fn a_ledger_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(Ledger::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let supported = licd_stub::ledger::schema::MIGRATIONS.len() as u32;
    assert!(matches!(
        Ledger::open(&path),
        Err(LedgerError::NewerSchema { found: 99, supported: s }) if s == supported
    ));
}

#[test]
fn an_operation_the_engine_refuses_writes_nothing() {
    let mut c = Controller::open(
        Ledger::open_in_memory().unwrap(),
        Signer::ephemeral(T0).unwrap(),
        LeasePolicy::default(),
    )
    .unwrap();
    populate(&mut c);
    let before = c.ledger().load().unwrap();
    let r = c.apply(T0, |e, now| {
        let fx: Effects = e.unassign(
            &Selection::only([TenantId::new("ghost").unwrap()]),
            &[svc("hv")],
            now,
        )?;
        Ok(((), fx))
    });
    assert!(r.is_err());
    assert_eq!(c.ledger().load().unwrap(), before);
}

fn open(path: &std::path::Path, signer: &Signer) -> Controller {
    Controller::open(
        Ledger::open(path).unwrap(),
        signer.clone(),
        LeasePolicy::default(),
    )
    .unwrap()
}

/// Issue 21 (co-term move, migration 4): a seat whose license moved away keeps its end
/// across a restart, so the device stays in grace rather than being licensed again.
#[test]
fn a_seat_ended_by_a_license_move_keeps_its_end_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let signer = Signer::ephemeral(T0).unwrap();
    let mut c = open(&path, &signer);
    populate(&mut c);
    let (topic, bytes) = report("host-1", &SigningKey::from_bytes(&[5; 32]), &["hv"], 0);
    let _ = c.handle_report_message(&topic, &bytes, T0).unwrap();
    let (_, pubs) = c
        .apply(T0 + 5, |e, now| {
            let beta = TenantId::new("beta").unwrap();
            let _ = e.add_customer(beta.clone(), "Beta", CustomerKind::Tenant, now)?;
            let (_, fx) = e.move_licenses(
                &TenantId::new("msp").unwrap(),
                &beta,
                &[licd_stub::engine::coterm::LicenseMove {
                    key: "CK-1".into(),
                    counts: vec![(Sku::new("LIC-HV-4").unwrap(), 3)],
                }],
                now,
            )?;
            Ok(((), fx))
        })
        .unwrap();
    assert!(!pubs.is_empty(), "host-1 gets a bundle ending at the move");
    let before = c.engine().state().clone();
    drop(c);
    let c = open(&path, &signer);
    assert_eq!(c.engine().state(), &before);
    let d = &c.engine().state().devices[&(
        TenantId::new("acme").unwrap(),
        DeviceId::new("host-1").unwrap(),
    )];
    assert_eq!(d.seats[&svc("hv")].ends_at, Some(T0 + 5));
}

/// Issue 21 item 3 (migration 5): every kind of Snow assignment, a computer assignment's
/// quantity and VM ids, a datacenter's seats on its hosts and the hosts' placement survive a
/// restart, and the seat counts rebuilt from them are the same.
#[test]
fn snow_assignments_and_placements_survive_a_restart() {
    use licd_stub::engine::assign::{AssignmentRequest, LicenseRef, PutMode, Target};
    use licd_stub::engine::AssignmentKind;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let signer = Signer::ephemeral(T0).unwrap();
    let mut c = open(&path, &signer);
    populate(&mut c);
    let acme = TenantId::new("acme").unwrap();
    let host = |d: &str| (acme.clone(), DeviceId::new(d).unwrap());
    for (n, d) in [(5u8, "host-1"), (7, "host-2")] {
        let (topic, bytes) = report(d, &SigningKey::from_bytes(&[n; 32]), &["hv"], 0);
        let _ = c.handle_report_message(&topic, &bytes, T0).unwrap();
    }
    let l = LicenseRef {
        subscription: LicenseId::new("S1").unwrap(),
        sku: Sku::new("LIC-HV-4").unwrap(),
    };
    let other = |kind, id: &str, quantity| AssignmentRequest {
        target: Target::Other(kind, id.into()),
        quantity,
        virtual_machines: vec!["vm-a".into()],
    };
    let (h1, h2) = (host("host-1"), host("host-2"));
    c.apply(T0 + 1, |e, now| {
        // host-2's service is revoked (an operator's revocation also keeps its datacenter
        // from covering it) and it is placed in dc-1.
        let _ = e.delete_assignment(&l, AssignmentKind::Computer, "acme:host-2", now)?;
        let _ = e.place_device(&h2, Some("dc-1".into()), now)?;
        // host-1's auto-licensed seat becomes the operator's, with a quantity and VM ids.
        let _ = e.put_assignment(
            &l,
            AssignmentRequest {
                target: Target::Computer(h1.clone()),
                quantity: 2,
                virtual_machines: vec!["vm-1".into(), "vm-2".into()],
            },
            PutMode::Add,
            now,
        )?;
        for (kind, id, q) in [
            (AssignmentKind::Organization, "acme", 2),
            (AssignmentKind::Site, "acme", 1),
            (AssignmentKind::User, "user-1", 1),
        ] {
            let _ = e.put_assignment(&l, other(kind, id, q), PutMode::Add, now)?;
        }
        let _ = e.put_assignment(
            &l,
            other(AssignmentKind::Datacenter, "dc-1", 1),
            PutMode::Add,
            now,
        )?;
        Ok(((), Effects::default()))
    })
    .unwrap();
    let before = c.engine().state().clone();
    let seats = c.engine().assigned_seats(&l.subscription, &l.sku);
    assert_eq!(seats, 3, "host-1's 2 and the datacenter's 1");
    drop(c);
    let c = open(&path, &signer);
    assert_eq!(c.engine().state(), &before);
    assert_eq!(c.engine().assigned_seats(&l.subscription, &l.sku), seats);
    let e = c.engine();
    let a = e
        .assignment(&l, AssignmentKind::Computer, "acme:host-1", T0 + 2)
        .unwrap();
    assert_eq!((a.quantity, a.virtual_machines.len()), (2, 2));
    assert_eq!(e.state().devices[&h2].datacenter.as_deref(), Some("dc-1"));
    assert!(e.state().devices[&h2].seats.is_empty());
    let s = e.assignment_summary(&l, T0 + 2).unwrap();
    assert!(s.computer && s.datacenter && s.organization && s.site && s.user);
}
