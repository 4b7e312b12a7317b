//! The ledger keeps everything across a restart, on both backends (SQLite file and a real
//! PostgreSQL server started by the harness): customers, catalogue, subscriptions,
//! auto-licensing, devices with their pinned keys, seats and bundle `seq` (which must never go
//! backwards, or agents would refuse the next bundle), bindings, seat limits, policies, usage
//! history and refused reports. Every scenario runs once per backend; a restart is a new
//! `Ledger` on the same file or database.

use std::path::PathBuf;

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
use licd_tests::Postgres;

/// Where a scenario's ledger lives; `open` is a (re)start.
enum Place {
    // The temp dir lives as long as the place.
    Sqlite(#[allow(dead_code)] tempfile::TempDir, PathBuf),
    Postgres(std::sync::Arc<Postgres>, String),
}

impl Place {
    fn open(&self) -> Ledger {
        match self {
            Place::Sqlite(_, path) => Ledger::open(path).unwrap(),
            Place::Postgres(_, url) => {
                Ledger::open_postgres(url, std::time::Duration::from_secs(10)).unwrap()
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(..) => "sqlite",
            Place::Postgres(..) => "postgres",
        }
    }
}

/// Runs `scenario` on a fresh SQLite file, then on a fresh PostgreSQL cluster.
fn on_both(scenario: impl Fn(&Place)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let places = [Place::Sqlite(dir, path), {
        let pg = Postgres::shared().unwrap();
        let url = pg.create_database().unwrap();
        Place::Postgres(pg, url)
    }];
    for place in &places {
        eprintln!("-- on {}", place.name());
        scenario(place);
    }
}

const T0: u64 = 1_800_000_000;
const T1: u64 = 1_700_000_000;

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
    on_both(a_restart_loses_nothing_and_seq_keeps_rising_on);
}

fn a_restart_loses_nothing_and_seq_keeps_rising_on(place: &Place) {
    let signer = Signer::ephemeral(T0).unwrap();
    let key = SigningKey::from_bytes(&[5; 32]);

    let mut c = Controller::open(place.open(), signer.clone(), LeasePolicy::default()).unwrap();
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

    let mut c = Controller::open(place.open(), signer, LeasePolicy::default()).unwrap();
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

    // The device, still holding an older bundle, reports once the newest one counts as lost:
    // the next seq is above every one issued before the restart.
    let (topic, bytes) = report("host-1", &key, &["hv"], 1);
    let late = T0 + 2 + licd_stub::engine::ANSWER_IN_FLIGHT_SECS;
    let (_, pubs) = c.handle_report_message(&topic, &bytes, late).unwrap();
    assert!(pubs[0].seq > seq_before);

    // The pinned key survived too.
    let evil = SigningKey::from_bytes(&[6; 32]);
    let (topic, bytes) = report("host-1", &evil, &["hv"], 1);
    assert!(matches!(
        c.handle_report_message(&topic, &bytes, late + 1),
        Err(ReportError::Refused(ReportRefused::KeyMismatch { .. }))
    ));
    assert_eq!(c.ledger().refused_reports(5).unwrap().len(), 1);
}

/// New devices are stored without deleting rows they cannot have (`Dirty::new_devices`);
/// a known device's seats are replaced. Both, in one batch and alone, read back the same.
#[test]
fn seats_of_new_and_known_devices_read_back_the_same_after_a_restart() {
    on_both(seats_of_new_and_known_devices_read_back_the_same_on);
}

fn seats_of_new_and_known_devices_read_back_the_same_on(place: &Place) {
    let signer = Signer::ephemeral(T0).unwrap();
    let keys: Vec<SigningKey> = (0..3)
        .map(|i| SigningKey::from_bytes(&[20 + i; 32]))
        .collect();
    let mut c = Controller::open(place.open(), signer.clone(), LeasePolicy::default()).unwrap();
    populate(&mut c);
    let batch = |c: &mut Controller, reports: &[(String, Vec<u8>)]| {
        let items: Vec<(&str, &[u8])> = reports
            .iter()
            .map(|(t, b)| (t.as_str(), b.as_slice()))
            .collect();
        let (results, _) = c.handle_report_batch(&items, T0 + 1).unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    };
    let seats = |c: &Controller| {
        c.engine().assigned_seats(
            &LicenseId::new("S1").unwrap(),
            &Sku::new("LIC-HV-4").unwrap(),
        )
    };
    // Two new devices in one turn (PostgreSQL's bulk path): the first gets the seats.
    batch(
        &mut c,
        &[
            report("host-1", &keys[0], &["hv"], 0),
            report("host-2", &keys[1], &["hv"], 0),
        ],
    );
    let held = seats(&c);
    assert!(held > 0);
    // A known device giving its seats back next to a new one, in one turn...
    batch(
        &mut c,
        &[
            report("host-1", &keys[0], &[], 1),
            report("host-3", &keys[2], &["hv"], 0),
        ],
    );
    // ...and a known device alone (the per-row path).
    batch(&mut c, &[report("host-2", &keys[1], &[], 1)]);
    let state_before = c.engine().state().clone();
    let seats_before = seats(&c);
    assert!(state_before
        .devices
        .values()
        .filter(|d| d.id.as_str() != "host-3")
        .all(|d| d.seats.is_empty()));
    drop(c);

    let c = Controller::open(place.open(), signer, LeasePolicy::default()).unwrap();
    assert_eq!(c.engine().state(), &state_before);
    assert_eq!(seats(&c), seats_before);
}

#[test]
fn a_ledger_from_a_newer_version_is_refused() {
    on_both(|place| {
        drop(place.open());
        match place {
            Place::Sqlite(_, path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.pragma_update(None, "user_version", 99).unwrap();
            }
            Place::Postgres(pg, url) => {
                let db = url.rsplit('/').next().unwrap();
                pg.psql(db, "UPDATE licd_schema SET version = 99").unwrap();
            }
        }
        let supported = licd_stub::ledger::schema::MIGRATIONS.len() as u32;
        let opened = match place {
            Place::Sqlite(_, path) => Ledger::open(path),
            Place::Postgres(_, url) => {
                Ledger::open_postgres(url, std::time::Duration::from_secs(10))
            }
        };
        assert!(matches!(
            opened,
            Err(LedgerError::NewerSchema { found: 99, supported: s }) if s == supported
        ));
    });
}

#[test]
fn an_operation_the_engine_refuses_writes_nothing() {
    on_both(|place| an_operation_the_engine_refuses_writes_nothing_on(place.open()));
}

fn an_operation_the_engine_refuses_writes_nothing_on(ledger: Ledger) {
    let mut c = Controller::open(
        ledger,
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

fn open(place: &Place, signer: &Signer) -> Controller {
    Controller::open(place.open(), signer.clone(), LeasePolicy::default()).unwrap()
}

/// Issue 21 (co-term move, migration 4): a seat whose license moved away keeps its end
/// across a restart, so the device stays in grace rather than being licensed again.
#[test]
fn a_seat_ended_by_a_license_move_keeps_its_end_across_a_restart() {
    on_both(a_seat_ended_by_a_license_move_keeps_its_end_on);
}

fn a_seat_ended_by_a_license_move_keeps_its_end_on(place: &Place) {
    let signer = Signer::ephemeral(T0).unwrap();
    let mut c = open(place, &signer);
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
    let c = open(place, &signer);
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
    on_both(snow_assignments_and_placements_survive_a_restart_on);
}

fn snow_assignments_and_placements_survive_a_restart_on(place: &Place) {
    use licd_stub::engine::assign::{AssignmentRequest, LicenseRef, PutMode, Target};
    use licd_stub::engine::AssignmentKind;

    let signer = Signer::ephemeral(T0).unwrap();
    let mut c = open(place, &signer);
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
    let c = open(place, &signer);
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

/// What the admin API's engine operations change (issue 6): bindings, seat limits, renamed
/// and removed customers.
#[test]
fn bindings_seat_limits_and_customer_changes_survive_a_restart() {
    on_both(bindings_seat_limits_and_customer_changes_survive_on);
}

fn bindings_seat_limits_and_customer_changes_survive_on(place: &Place) {
    let signer = Signer::ephemeral(T1).unwrap();
    let open = |signer: &Signer| open(place, signer);
    let mut c = open(&signer);
    c.apply(T1, |e, now| {
        let _ = e.add_customer(t("a"), "A", CustomerKind::Tenant, now)?;
        let _ = e.add_customer(t("b"), "B", CustomerKind::Tenant, now)?;
        let _ = e.add_customer(t("gone"), "G", CustomerKind::Tenant, now)?;
        e.add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-AP").unwrap(),
            name: "ap".into(),
            service: ServiceName::new("wifi").unwrap(),
            product_class: "ap".into(),
            vms_per_seat: None,
        })?;
        let fx = e.add_subscription(
            Subscription {
                id: LicenseId::new("SA").unwrap(),
                name: "sa".into(),
                owner: Some(t("a")),
                claim_key: None,
                start: now - 1,
                end: now + 1000,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-AP").unwrap(),
                    limit: 1,
                }],
            },
            now,
        )?;
        Ok(((), fx))
    })
    .unwrap();
    c.apply(T1, |e, now| {
        let (_, fx) = e.bind_customers(
            &LicenseId::new("SA").unwrap(),
            &[t("b"), t("gone")],
            false,
            now,
        )?;
        let more = e.set_seat_limit(
            &LicenseId::new("SA").unwrap(),
            &Sku::new("LIC-AP").unwrap(),
            7,
            now,
        )?;
        e.rename_customer(&t("b"), "Bee".into())?;
        e.remove_customer(&t("gone"))?;
        let mut all = Effects::default();
        all.publish.extend(fx.publish);
        all.publish.extend(more.publish);
        Ok(((), all))
    })
    .unwrap();
    let before = c.engine().state().clone();
    drop(c);
    let c = open(&signer);
    assert_eq!(c.engine().state(), &before);
    let st = c.engine().state();
    assert_eq!(st.bindings[&LicenseId::new("SA").unwrap()].len(), 1);
    assert_eq!(
        st.subscriptions[&LicenseId::new("SA").unwrap()].entitlements[0].limit,
        7
    );
    assert_eq!(st.customers[&t("b")].name, "Bee");
    assert!(!st.customers.contains_key(&t("gone")));
}

/// Policies (migration 6), usage history rows (upserted by key, a closed window final) and
/// refused reports (newest first, bounded) read back the same on both backends.
#[test]
fn policies_usage_history_and_refused_reports_read_back_the_same() {
    on_both(|place| {
        use licd_stub::engine::policy::Policy;
        use licd_stub::engine::usage::{UsageCounters, UsageWindow};
        use licd_stub::engine::Dirty;
        use licd_stub::ledger::UsageQuery;

        let mut ledger = place.open();
        let mut state = licd_stub::engine::State::default();
        let sku = Sku::new("LIC-HV-4").unwrap();
        state.sku_policies.insert(
            sku.clone(),
            Policy {
                overage_tolerance_pct: Some(125),
                warn_before: Some(vec![86_400, 3_600]),
                ..Policy::default()
            },
        );
        let device = (
            TenantId::new("acme").unwrap(),
            DeviceId::new("host-1").unwrap(),
        );
        let window = |last_seq, closed, peak| UsageWindow {
            device: device.clone(),
            chain: u64::MAX,
            window: 3,
            last_seq,
            closed,
            start: T0,
            end: T0 + last_seq,
            counters: UsageCounters {
                peak_vm_count: Some(peak),
                refusals: 1,
                grace_seconds: [(svc("hv"), 60)].into_iter().collect(),
            },
        };
        let mut dirty = Dirty::default();
        dirty.sku_policies.insert(sku.clone());
        dirty.usage_windows = vec![window(4, false, 5), window(5, true, 9), window(6, false, 1)];
        ledger.save(&state, &dirty).unwrap();
        for i in 0..3 {
            ledger
                .record_refused(T0 + i, "acme", "host-1", &format!("reason {i}"))
                .unwrap();
        }
        drop(ledger);

        let ledger = place.open();
        assert_eq!(ledger.load().unwrap().sku_policies, state.sku_policies);
        let q = UsageQuery {
            tenant: Some(&device.0),
            device: None,
            from: 0,
            to: u64::MAX,
        };
        let windows = ledger.usage_windows(&q).unwrap();
        assert_eq!(
            windows,
            vec![window(5, true, 9)],
            "the closed value is final"
        );
        let none = UsageQuery {
            tenant: Some(&TenantId::new("other").unwrap()),
            ..q
        };
        assert!(ledger.usage_windows(&none).unwrap().is_empty());
        let refused = ledger.refused_reports(2).unwrap();
        assert_eq!(
            refused
                .iter()
                .map(|r| r.reason.as_str())
                .collect::<Vec<_>>(),
            ["reason 2", "reason 1"]
        );
    });
}

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// Issue 23 (migration 7): a site delegation, the seats it reserves and the leases its relay
/// reported survive a restart on both backends; storing a relay report again (a replay or a
/// resend) adds nothing and acknowledges the same number.
#[test]
fn delegations_reservations_and_relay_leases_survive_a_restart() {
    on_both(delegations_reservations_and_relay_leases_survive_on);
}

fn delegations_reservations_and_relay_leases_survive_on(place: &Place) {
    use licd_protocol::{IssuedLease, SiteId};
    use licd_stub::controller::delegation::NewDelegation;
    let signer = Signer::ephemeral(T0).unwrap();
    let mut c = open(place, &signer);
    populate(&mut c);
    let relay_key = PublicKey::from(&SigningKey::from_bytes(&[9; 32]).verifying_key());
    let d = c
        .delegate(
            NewDelegation {
                relay_key,
                tenant: TenantId::new("acme").unwrap(),
                site: SiteId::new("plant-7").unwrap(),
                pools: vec![(svc("hv"), 2)],
                product_class: None,
                max_lease: 3_600,
                valid_secs: 86_400,
            },
            T0,
        )
        .unwrap();
    let (sub, sku) = (LicenseId::new("S1").unwrap(), Sku::new("LIC-HV-4").unwrap());
    assert_eq!(c.engine().reserved_seats(&sub, &sku, T0 + 1), 2);
    let before = c.engine().state().clone();
    drop(c);

    let leases: Vec<(String, IssuedLease)> = (1..=3)
        .map(|n| {
            let lease = IssuedLease {
                n,
                device: DeviceId::new(format!("ap-{n}")).unwrap(),
                service: svc("hv"),
                bundle_seq: n + 10,
                issued_at: T0 + n,
                lease_until: T0 + n + 600,
            };
            (d.id.clone(), lease)
        })
        .collect();
    let mut ledger = place.open();
    assert_eq!(
        ledger
            .store_delegated_leases(&relay_key, &leases, T0 + 10)
            .unwrap(),
        3
    );
    // The same report again, and an older part of it: nothing new, the same acknowledgement.
    assert_eq!(
        ledger
            .store_delegated_leases(&relay_key, &leases[..1], T0 + 20)
            .unwrap(),
        3
    );
    drop(ledger);

    let c = open(place, &signer);
    assert_eq!(c.engine().state(), &before, "delegation and reservations");
    assert_eq!(c.engine().reserved_seats(&sub, &sku, T0 + 1), 2);
    let stored = c.ledger().delegated_leases(&d.id).unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(
        stored
            .iter()
            .map(|l| (l.n, l.bundle_seq))
            .collect::<Vec<_>>(),
        [(1, 11), (2, 12), (3, 13)]
    );
    assert!(stored.iter().all(|l| l.reported_at == T0 + 10));
}
