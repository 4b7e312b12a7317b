//! Controller replicas on one PostgreSQL ledger (issue 19 item 2): several controllers, each
//! with its own signing key certified by one root, apply reports for the same devices at the
//! same time. Whatever the interleaving: exactly the seats there are go out (assigned ≤
//! limit), no device's `seq` is ever issued twice, and the ledger ends where the bundles say.
//! A replica that dies in the middle of a turn (its connection gone) leaves nothing behind:
//! its transaction rolls back and the lock is free for the others.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_report;
use licd_protocol::{
    DeviceId, DeviceReport, LicenseId, PublicKey, ServiceName, Sku, TenantId, Topic, TopicKind,
};
use licd_stub::controller::Controller;
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Effects, Engine, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::ledger::Ledger;
use licd_stub::Signer;
use licd_tests::{wait_for, Postgres};

const T0: u64 = 1_800_000_000;
const REPLICAS: usize = 3;
/// Issue 19's size: 1,000 devices racing for 900 seats (~40 s for the file on a 2-core
/// machine with the kill test at the same size).
const DEVICES: u32 = 1_000;
const SEATS: u32 = 900;
/// `LICD_REPLICAS_DEVICES=N` runs the racing tests with N devices for 9/10 as many seats
/// (larger or smaller runs by hand).
const SCALE_VAR: &str = "LICD_REPLICAS_DEVICES";
/// Each device reports this many times, each time to another replica.
const ROUNDS: u32 = 3;
const BATCH: usize = 8;

/// (devices, seats): [`DEVICES`] and [`SEATS`], or as [`SCALE_VAR`] says.
fn size() -> (u32, u32) {
    std::env::var(SCALE_VAR)
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .map_or((DEVICES, SEATS), |n| (n, n / 10 * 9))
}

fn devices() -> u32 {
    size().0
}

fn seats() -> u32 {
    size().1
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn open(url: &str, signer: Signer) -> Controller {
    Controller::open(
        Ledger::open_postgres(url, Duration::from_secs(20)).unwrap(),
        signer,
        LeasePolicy::default(),
    )
    .unwrap()
}

fn seed(c: &mut Controller) {
    c.apply(T0, |e, now| {
        let _ = e.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp, now)?;
        let _ = e.add_customer(
            TenantId::new("acme").unwrap(),
            "Acme",
            CustomerKind::Tenant,
            now,
        )?;
        e.add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-WIFI").unwrap(),
            name: "wifi".into(),
            service: svc("wifi"),
            product_class: "wireless".into(),
            vms_per_seat: None,
        })?;
        let _ = e.add_subscription(
            Subscription {
                id: LicenseId::new("S1").unwrap(),
                name: "s1".into(),
                owner: Some(TenantId::new("acme").unwrap()),
                claim_key: None,
                start: T0 - 10,
                end: T0 + 1_000_000,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-WIFI").unwrap(),
                    limit: seats(),
                }],
            },
            now,
        )?;
        let r = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, now)?;
        Ok(((), r.effects))
    })
    .unwrap();
}

fn device_key(n: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    SigningKey::from_bytes(&seed)
}

fn report(n: u32, held_seq: u64) -> (String, Vec<u8>) {
    let key = device_key(n);
    let r = DeviceReport {
        device: DeviceId::new(format!("ap-{n}")).unwrap(),
        tenant: TenantId::new("acme").unwrap(),
        device_key: PublicKey::from(&key.verifying_key()),
        model: "AP".into(),
        serial: n.to_string(),
        product_class: "wireless".into(),
        firmware_version: "1".into(),
        agent_version: "0.1".into(),
        vm_count: None,
        services_wanted: vec![svc("wifi")],
        bundle_seq: held_seq,
        clock: T0,
        uptime: 1,
        clock_rollback: false,
    };
    let topic = Topic::new(&r.tenant, &r.device, TopicKind::Report).to_topic_string();
    (topic, seal_report(&r, &key))
}

/// Every bundle published: device → seqs, in publication order per replica.
type Published = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

/// Runs one replica over its share of the reports, in batches, recording what it publishes.
fn run_replica(
    url: String,
    signer: Signer,
    items: Vec<(u32, u32)>,
    published: Published,
) -> Controller {
    let mut c = open(&url, signer);
    for chunk in items.chunks(BATCH) {
        let reports: Vec<(String, Vec<u8>)> = chunk.iter().map(|(n, _)| report(*n, 0)).collect();
        let refs: Vec<(&str, &[u8])> = reports
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
            .collect();
        let (results, pubs) = c.handle_report_batch(&refs, T0 + 5).unwrap();
        assert!(results.iter().all(Result::is_ok));
        let mut p = published.lock().unwrap();
        for pub_ in pubs {
            let device = pub_.topic.split('/').nth(3).unwrap().to_string();
            p.entry(device).or_default().push(pub_.seq);
        }
    }
    c
}

/// A replica caught up with the ledger holds what a fresh load holds, seat counts included.
fn check_caught_up(c: &mut Controller, url: &str) {
    c.refresh().unwrap();
    let fresh = Engine::from_state(
        Ledger::open_postgres(url, Duration::from_secs(10))
            .unwrap()
            .load()
            .unwrap(),
        LeasePolicy::default(),
    );
    assert_eq!(c.engine().state(), fresh.state());
    let (sub, sku) = (LicenseId::new("S1").unwrap(), Sku::new("LIC-WIFI").unwrap());
    assert_eq!(
        c.engine().assigned_seats(&sub, &sku),
        fresh.assigned_seats(&sub, &sku)
    );
}

/// Which replica gets device `n`'s report in round `r`: a different one each round, so every
/// device's bundles come from several replicas.
fn shares() -> Vec<Vec<(u32, u32)>> {
    let mut shares = vec![Vec::new(); REPLICAS];
    for r in 0..ROUNDS {
        for n in 0..devices() {
            shares[(n + r) as usize % REPLICAS].push((n, r));
        }
    }
    shares
}

fn check_invariants(url: &str, published: &Published) {
    let state = Ledger::open_postgres(url, Duration::from_secs(10))
        .unwrap()
        .load()
        .unwrap();
    let licensed = state
        .devices
        .values()
        .filter(|d| d.seats.contains_key(&svc("wifi")))
        .count();
    assert_eq!(licensed, seats() as usize, "exactly the seats there are");
    assert_eq!(state.devices.len(), devices() as usize);
    let published = published.lock().unwrap();
    for d in state.devices.values() {
        let seqs = &published[d.id.as_str()];
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            seqs.len(),
            "{}: a seq issued twice: {seqs:?}",
            d.id
        );
        assert_eq!(
            sorted.last().copied(),
            Some(d.bundle.seq),
            "{}: the ledger holds the newest seq",
            d.id
        );
    }
}

#[test]
fn replicas_racing_for_seats_allocate_exactly_the_limit_and_never_reuse_a_seq() {
    let pg = Postgres::shared().unwrap();
    let url = pg.create_database().unwrap();
    let root = SigningKey::from_bytes(&[42; 32]);
    seed(&mut open(&url, Signer::issue(&root, T0).unwrap()));
    let published = Published::default();
    let started = Instant::now();
    let threads: Vec<_> = shares()
        .into_iter()
        .map(|items| {
            let (url, published) = (url.clone(), published.clone());
            let signer = Signer::issue(&root, T0).unwrap();
            std::thread::spawn(move || run_replica(url, signer, items, published))
        })
        .collect();
    let mut replicas: Vec<Controller> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!(
        "{} reports through {REPLICAS} replicas in {:?}",
        devices() * ROUNDS,
        started.elapsed()
    );
    check_invariants(&url, &published);
    // Reports change devices only — bar one: the report that finds the seats gone pauses
    // auto-licensing (a policy change). So every replica caught up with the others by the
    // devices they changed, and at most once (the pause, unless it wrote it) by a whole reload.
    for c in &mut replicas {
        check_caught_up(c, &url);
        let caught = c.catch_ups();
        assert!(caught.devices > 0, "{caught:?}");
        assert!(caught.whole <= 1, "{caught:?}");
    }
}

#[test]
fn a_replica_catches_up_by_changed_devices_and_reloads_all_after_an_operator_change_or_a_gap() {
    let pg = Postgres::shared().unwrap();
    let url = pg.create_database().unwrap();
    let root = SigningKey::from_bytes(&[42; 32]);
    let mut a = open(&url, Signer::issue(&root, T0).unwrap());
    seed(&mut a);
    let mut b = open(&url, Signer::issue(&root, T0).unwrap());
    let batch = |c: &mut Controller, devices: std::ops::Range<u32>| {
        let reports: Vec<(String, Vec<u8>)> = devices.map(|n| report(n, 0)).collect();
        let refs: Vec<(&str, &[u8])> = reports
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
            .collect();
        let (results, _) = c.handle_report_batch(&refs, T0 + 5).unwrap();
        assert!(results.iter().all(Result::is_ok));
    };

    // A licenses ten devices; B's next turn reads just those ten.
    batch(&mut a, 0..10);
    batch(&mut b, 10..12);
    assert_eq!(b.catch_ups().devices, 1);
    assert_eq!(b.catch_ups().whole, 0);
    check_caught_up(&mut b, &url);
    batch(&mut a, 12..14);
    check_caught_up(&mut a, &url);
    assert_eq!(a.catch_ups().devices, 1);

    // An operator change (a new customer) is not a device: B reloads everything.
    a.apply(T0 + 6, |e, now| {
        let effects = e.add_customer(
            TenantId::new("beta").unwrap(),
            "Beta",
            CustomerKind::Tenant,
            now,
        )?;
        Ok(((), effects))
    })
    .unwrap();
    batch(&mut b, 14..16);
    assert_eq!(b.catch_ups().whole, 1, "{:?}", b.catch_ups());
    check_caught_up(&mut b, &url);

    // A generation with no change log (a controller predating it): a gap, so a whole reload.
    pg.psql(
        url.rsplit('/').next().unwrap(),
        "UPDATE licd_replication SET generation = generation + 1",
    )
    .unwrap();
    batch(&mut a, 16..18);
    assert_eq!(a.catch_ups().whole, 1, "{:?}", a.catch_ups());
    check_caught_up(&mut a, &url);
    check_caught_up(&mut b, &url);
}

#[test]
fn a_replica_that_dies_mid_turn_leaves_nothing_behind_and_blocks_no_one() {
    let pg = Postgres::shared().unwrap();
    let url = pg.create_database().unwrap();
    let root = SigningKey::from_bytes(&[43; 32]);
    seed(&mut open(&url, Signer::issue(&root, T0).unwrap()));

    // A replica takes the turn lock and writes, then its process dies (kill -9: the
    // connection drops without a COMMIT).
    let mut psql =
        std::process::Command::new(licd_tests::postgres::bin_dir().unwrap().join("psql"))
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .args([
                "-U",
                licd_tests::postgres::USER,
                "-d",
                url.rsplit('/').next().unwrap(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
    {
        use std::io::Write as _;
        let stdin = psql.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; SELECT pg_advisory_xact_lock({}); UPDATE licd_replication SET generation = generation + 1000; UPDATE entitlements SET seat_limit = 100000;",
            licd_stub::ledger::pg::TURN_LOCK
        )
        .unwrap();
        stdin.flush().unwrap();
    }
    // Wait until it holds the lock (it shows in pg_locks as a granted advisory lock).
    licd_tests::wait_for(
        "the dying replica holds the turn lock",
        Duration::from_secs(10),
        || {
            pg.psql(
                url.rsplit('/').next().unwrap(),
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .is_ok_and(|n| n == "1")
        },
    )
    .unwrap();
    // The others run meanwhile: they wait for the lock, then go on once the replica dies.
    let published = Published::default();
    let threads: Vec<_> = shares()
        .into_iter()
        .map(|items| {
            let (url, published) = (url.clone(), published.clone());
            let signer = Signer::issue(&root, T0).unwrap();
            std::thread::spawn(move || run_replica(url, signer, items, published))
        })
        .collect();
    licd_tests::wait_for(
        "a replica waiting for the turn lock",
        Duration::from_secs(20),
        || {
            pg.psql(
                url.rsplit('/').next().unwrap(),
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .is_ok_and(|n| n != "0")
        },
    )
    .unwrap();
    psql.kill().unwrap();
    let _ = psql.wait();
    for t in threads {
        t.join().unwrap();
    }
    // Its writes are gone (the seat limit it set never counted) and the invariants hold.
    check_invariants(&url, &published);
    let mut c = open(&url, Signer::issue(&root, T0).unwrap());
    let (_, pubs) = c
        .apply(T0 + 6, |_, _| Ok(((), Effects::default())))
        .unwrap();
    assert!(pubs.is_empty());
    assert_eq!(
        c.engine().assigned_seats(
            &LicenseId::new("S1").unwrap(),
            &Sku::new("LIC-WIFI").unwrap()
        ),
        seats()
    );
}

/// The real thing: three `licd-stub serve` processes, each with its own key directory made by
/// `licd-stub keys replica`, on one PostgreSQL database, splitting reports through mosquitto's
/// `$share`. One is `kill -9`-ed mid-run; devices whose report it swallowed report again.
/// Every device ends with a bundle, exactly the seats go out, no seq is issued twice, every
/// bundle verifies against the one pinned root, and more than one replica signed.
#[test]
fn three_serve_processes_one_killed_mid_run_license_exactly_the_seats() {
    use licd_protocol::envelope::open_bundle;
    use licd_protocol::trust::TrustStore;
    use licd_tests::mosquitto::{Mosquitto, MosquittoConfig};

    let (n_devices, limit) = size();
    let stub = licd_tests::stub_bin().unwrap();
    let pg = Postgres::shared().unwrap();
    let url = pg.create_database().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root_dir = dir.path().join("root");
    let now = licd_tests::controller::unix_now();
    let root = licd_stub::keys::init(&root_dir, now).unwrap();

    // The ledger's records, seeded through a controller of its own.
    {
        let mut c = open(&url, licd_stub::keys::load_signer(&root_dir).unwrap());
        c.apply(now, |e, now| {
            let _ = e.add_customer(
                TenantId::new("acme").unwrap(),
                "Acme",
                CustomerKind::Tenant,
                now,
            )?;
            e.add_catalog_entry(CatalogEntry {
                sku: Sku::new("LIC-WIFI").unwrap(),
                name: "wifi".into(),
                service: svc("wifi"),
                product_class: "wireless".into(),
                vms_per_seat: None,
            })?;
            let _ = e.add_subscription(
                Subscription {
                    id: LicenseId::new("S1").unwrap(),
                    name: "s1".into(),
                    owner: Some(TenantId::new("acme").unwrap()),
                    claim_key: None,
                    start: now - 60,
                    end: now + 1_000_000,
                    entitlements: vec![Entitlement {
                        sku: Sku::new("LIC-WIFI").unwrap(),
                        limit,
                    }],
                },
                now,
            )?;
            let r = e.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, now)?;
            Ok(((), r.effects))
        })
        .unwrap();
    }

    let mut replicas: Vec<licd_tests::TestProcess> = (0..REPLICAS)
        .map(|i| {
            let keys = dir.path().join(format!("replica-{i}"));
            let out = std::process::Command::new(&stub)
                .args(["keys", "replica", "--key-dir"])
                .arg(&root_dir)
                .arg("--out")
                .arg(&keys)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let config = dir.path().join(format!("replica-{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "ledger = {url:?}\nkey_dir = {:?}\nbroker = {:?}\nclient_id = \"replica-{i}\"\nshared_subscription = true\n",
                    keys.display().to_string(),
                    broker.url()
                ),
            )
            .unwrap();
            let mut cmd = std::process::Command::new(&stub);
            cmd.arg("-c").arg(&config).args(["serve", "--no-admin"]);
            cmd.env("RUST_LOG", "info");
            licd_tests::TestProcess::spawn(
                &format!("replica-{i}"),
                cmd,
                &dir.path().join(format!("replica-{i}.log")),
            )
            .unwrap()
        })
        .collect();
    for r in &replicas {
        wait_for_log(r, "licd-stub ready");
    }

    // The devices' side: a client that publishes reports and collects every bundle.
    let rt = licd_tests::runtime();
    let trust = TrustStore::new(vec![root]);
    let seen: Signed = Arc::default();
    let client = {
        let mut opts = rumqttc::MqttOptions::new("devices", "127.0.0.1", broker.port());
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 4096);
        let seen = seen.clone();
        let subscriber = client.clone();
        rt.spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = subscriber
                            .subscribe("licd/v1/+/+/grants", rumqttc::QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let (bundle, signer) = open_bundle(&p.payload, &trust, now + 10)
                            .expect("every bundle verifies against the pinned root");
                        seen.lock()
                            .unwrap()
                            .entry(bundle.device.to_string())
                            .or_default()
                            .push((bundle.seq, signer.signer.to_string()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
    };
    let publish = |n: u32| {
        let (topic, bytes) = report(n, 0);
        let _ = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes);
    };
    for n in 0..n_devices / 2 {
        publish(n);
    }
    // One replica dies mid-run, then the rest of the fleet reports.
    wait_for("a first bundle", Duration::from_secs(30), || {
        !seen.lock().unwrap().is_empty()
    })
    .unwrap();
    let victim = replicas.remove(0);
    kill_9(&victim);
    for n in n_devices / 2..n_devices {
        publish(n);
    }
    // Devices without a bundle report again (as agents do on their schedule).
    let mut last = Instant::now();
    wait_for(
        "every device with a bundle",
        Duration::from_secs(90 + u64::from(n_devices) / 10),
        || {
            let missing: Vec<u32> = {
                let s = seen.lock().unwrap();
                (0..n_devices)
                    .filter(|n| !s.contains_key(&format!("ap-{n}")))
                    .collect()
            };
            if !missing.is_empty() && last.elapsed() > Duration::from_secs(2) {
                missing.iter().for_each(|n| publish(*n));
                last = Instant::now();
            }
            missing.is_empty()
        },
    )
    .unwrap();

    let state = Ledger::open_postgres(&url, Duration::from_secs(10))
        .unwrap()
        .load()
        .unwrap();
    let licensed = state
        .devices
        .values()
        .filter(|d| d.seats.contains_key(&svc("wifi")))
        .count();
    assert_eq!(licensed, limit as usize, "exactly the seats there are");
    let seen = seen.lock().unwrap();
    let mut signers = std::collections::BTreeSet::new();
    for d in state.devices.values() {
        let got = &seen[d.id.as_str()];
        let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        let before = seqs.len();
        seqs.dedup();
        assert_eq!(before, seqs.len(), "{}: a seq issued twice: {got:?}", d.id);
        assert_eq!(seqs.last().copied(), Some(d.bundle.seq), "{}", d.id);
        signers.extend(got.iter().map(|(_, k)| k.clone()));
    }
    assert!(
        signers.len() >= 2,
        "bundles from several replicas: {signers:?}"
    );
    drop(victim);
    // `serve` stops on ctrl-c (SIGINT).
    for r in &mut replicas {
        let pid = rustix::process::Pid::from_raw(r.id().unwrap() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let _ = r.wait_exit(Duration::from_secs(10));
    }
}

/// Every bundle received: device → (seq, signing key id).
type Signed = Arc<Mutex<BTreeMap<String, Vec<(u64, String)>>>>;

fn wait_for_log(p: &licd_tests::TestProcess, line: &str) {
    wait_for(
        &format!("{line:?} in the log"),
        Duration::from_secs(30),
        || p.log().contains(line),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
}

fn kill_9(p: &licd_tests::TestProcess) {
    let pid = rustix::process::Pid::from_raw(p.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}
