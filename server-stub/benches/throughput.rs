//! Controller throughput without the network, and ledger size.
//!
//! `cargo bench -p licd-stub --bench throughput` (optimized; `LICD_BENCH_DEVICES=N` changes the
//! fleet size, default 10,000). Add `CARGO_PROFILE_BENCH_LTO=false
//! CARGO_PROFILE_BENCH_CODEGEN_UNITS=16` to skip the release profile's LTO when building.
//!
//! Prints: bare ed25519 signatures/s; bundles sealed/s by the controller (postcard + sign +
//! envelope); reports processed/s for new devices (verify, pin, seat, bundle, SQLite write,
//! seal) and for known devices holding their newest bundle (verify, record, SQLite write); and
//! the ledger file size for the fleet; and a site relay's reports/s for the same new devices
//! (verify, floating seats, the seats file written and fsynced, seal with the delegation
//! chain), one by one against the controller's unbatched rate and batched by 64 against its
//! batched rate, in the same run.
//!
//! With `LICD_BENCH_POSTGRES_URL=postgres://user@host:port/db` (a server where that user may
//! create databases; the bench makes `licd_bench` afresh) it also runs the new devices on a
//! PostgreSQL ledger: one by one, batched by 64, two replicas taking turns batch by batch in
//! one thread (each turn then catches up with what the other wrote) and two replicas in two
//! threads at once, plus the cost of an empty turn (BEGIN, turn lock, generation, COMMIT).
//! The crypto floor is one verify and one sign per device on one core (issue 19's yardstick).

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey};
use licd_protocol::envelope::seal_report;
use licd_protocol::{
    DeviceId, DeviceReport, LicenseId, PublicKey, ServiceName, Sku, TenantId, Topic, TopicKind,
};
use licd_stub::controller::Controller;
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::ledger::Ledger;
use licd_stub::Signer;

const T0: u64 = 1_800_000_000;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The controller's batch (`session::MAX_BATCH`).
const BATCH: usize = 64;

/// A larger batch, as the worker takes under load (`session::MAX_BATCH`).
const BIG_BATCH: usize = 256;

/// CPU time this thread has run (Linux `/proc/thread-self/schedstat`, nanoseconds; zero
/// elsewhere): the per-core yardstick, which waiting on the database or a disk does not count.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// What a batched run measured.
struct Run {
    /// Reports per second of wall time.
    rate: f64,
    /// Reports per second of this thread's CPU time (the controller's share of a core).
    per_cpu: f64,
    /// Bundles published.
    published: usize,
}

/// A chunk of (topic, payload) as the controller takes it.
fn items(chunk: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    chunk
        .iter()
        .map(|(t, b)| (t.as_str(), b.as_slice()))
        .collect()
}

/// Runs reports through a controller in batches of `size`, as the worker does.
fn batched(c: &mut Controller, reps: &[(String, Vec<u8>)], now: u64, size: usize) -> Run {
    let (t, cpu) = (Instant::now(), thread_cpu());
    let mut published = 0;
    for chunk in reps.chunks(size) {
        let (results, pubs) = c.handle_report_batch(&items(chunk), now).expect("batch");
        assert!(results.iter().all(|r| r.is_ok()));
        published += pubs.len();
    }
    Run {
        rate: rate(reps.len(), t.elapsed()),
        per_cpu: rate(reps.len(), thread_cpu().saturating_sub(cpu)),
        published,
    }
}

/// [`batched`] as the controller's worker runs it: another thread checks the next batch's
/// signatures ([`licd_stub::controller::Opener`]) while this one applies the last.
fn pipelined(c: &mut Controller, reps: &[(String, Vec<u8>)], now: u64, size: usize) -> Run {
    let (t, cpu) = (Instant::now(), thread_cpu());
    let opener = c.opener();
    let mut published = 0;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        s.spawn(move || {
            for chunk in reps.chunks(size) {
                if tx.send(opener.open_batch(&items(chunk))).is_err() {
                    return;
                }
            }
        });
        for opened in rx {
            let (results, pubs) = c.apply_opened(opened, now).expect("batch");
            assert!(results.iter().all(|r| r.is_ok()));
            published += pubs.len();
        }
    });
    Run {
        rate: rate(reps.len(), t.elapsed()),
        // This thread's CPU only: the checking thread's is the floor's verify, on another core.
        per_cpu: rate(reps.len(), thread_cpu().saturating_sub(cpu)),
        published,
    }
}

/// A way of running reports through a controller: [`batched`] or [`pipelined`].
type Runner = fn(&mut Controller, &[(String, Vec<u8>)], u64, usize) -> Run;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid")
}

fn setup(c: &mut Controller, devices: u32) {
    c.apply(T0, |e, now| {
        let _ = e.add_customer(
            TenantId::new("msp").expect("id"),
            "MSP",
            CustomerKind::Msp,
            now,
        )?;
        let _ = e.add_customer(
            TenantId::new("acme").expect("id"),
            "Acme",
            CustomerKind::Tenant,
            now,
        )?;
        for (sku, service) in [("LIC-AP", "wifi"), ("LIC-SEC", "security")] {
            e.add_catalog_entry(CatalogEntry {
                sku: Sku::new(sku).expect("id"),
                name: sku.into(),
                service: svc(service),
                product_class: "ap".into(),
                vms_per_seat: None,
            })?;
        }
        let _ = e.add_subscription(
            Subscription {
                id: LicenseId::new("S1").expect("id"),
                name: "bench".into(),
                owner: Some(TenantId::new("msp").expect("id")),
                claim_key: None,
                start: T0 - 10,
                end: T0 + 10_000_000,
                entitlements: vec![
                    Entitlement {
                        sku: Sku::new("LIC-AP").expect("id"),
                        limit: devices,
                    },
                    Entitlement {
                        sku: Sku::new("LIC-SEC").expect("id"),
                        limit: devices,
                    },
                ],
            },
            now,
        )?;
        let r = e.enable_auto_licensing(
            &Selection::all(),
            &[svc("wifi"), svc("security")],
            false,
            now,
        )?;
        Ok(((), r.effects))
    })
    .expect("setup");
}

fn reports(n: u32, seq: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            let r = DeviceReport {
                device: DeviceId::new(format!("ap-{i:05}")).expect("id"),
                tenant: TenantId::new("acme").expect("id"),
                device_key: PublicKey::from(&key.verifying_key()),
                model: "AP-515".into(),
                serial: format!("SN{i}"),
                product_class: "ap".into(),
                firmware_version: "10.4.0".into(),
                agent_version: "0.1.0".into(),
                vm_count: None,
                services_wanted: vec![svc("wifi"), svc("security")],
                bundle_seq: seq,
                clock: T0,
                uptime: 100,
                clock_rollback: false,
            };
            let topic = Topic::new(&r.tenant, &r.device, TopicKind::Report).to_topic_string();
            (topic, seal_report(&r, &key))
        })
        .collect()
}

fn main() {
    let n: u32 = std::env::var("LICD_BENCH_DEVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let signer = Signer::ephemeral(T0).expect("keys");

    // Bare ed25519 over a bundle-sized message.
    let key = SigningKey::from_bytes(&[1; 32]);
    let msg = vec![0x5au8; 400];
    let k = 20_000usize;
    let t = Instant::now();
    for _ in 0..k {
        std::hint::black_box(key.sign(std::hint::black_box(&msg)));
    }
    let bare = rate(k, t.elapsed());
    // The crypto floor per new device (issue 19): one verify (its report) and one sign (its
    // bundle), nothing else.
    let (vk, sig) = (key.verifying_key(), key.sign(&msg));
    let t = Instant::now();
    for _ in 0..k {
        std::hint::black_box(vk.verify_strict(std::hint::black_box(&msg), &sig)).ok();
        std::hint::black_box(key.sign(std::hint::black_box(&msg)));
    }
    let floor = rate(k, t.elapsed());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let mut c = Controller::open(
        Ledger::open(&path).expect("ledger"),
        signer,
        LeasePolicy::default(),
    )
    .expect("controller");
    setup(&mut c, n);

    let first = reports(n, 0);
    let t = Instant::now();
    let mut bundles = Vec::new();
    for (topic, bytes) in &first {
        let (_, pubs) = c.handle_report_message(topic, bytes, T0).expect("report");
        bundles.extend(pubs);
    }
    let new_rate = rate(first.len(), t.elapsed());
    assert_eq!(bundles.len(), n as usize);

    let steady = reports(n, 1);
    let t = Instant::now();
    for (topic, bytes) in &steady {
        let (_, pubs) = c
            .handle_report_message(topic, bytes, T0 + 60)
            .expect("report");
        assert!(pubs.is_empty());
    }
    let steady_rate = rate(steady.len(), t.elapsed());

    // The same with the worker's batching (64 reports per ledger transaction), each on a
    // fresh ledger.
    let fresh_run = |runner: Runner, reps: &[(String, Vec<u8>)], size: usize| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Controller::open(
            Ledger::open(&dir.path().join("ledger.db")).expect("ledger"),
            Signer::ephemeral(T0).expect("keys"),
            LeasePolicy::default(),
        )
        .expect("controller");
        setup(&mut c, n);
        let run = runner(&mut c, reps, T0, size);
        assert_eq!(run.published, n as usize);
        (dir, c, run)
    };
    let (_batch_dir, mut cb, run) = fresh_run(batched, &first, BATCH);
    let (new_batched, new_batched_cpu) = (run.rate, run.per_cpu);
    let run = batched(&mut cb, &steady, T0 + 60, BATCH);
    assert_eq!(run.published, 0);
    let steady_batched = run.rate;
    drop(cb);
    let big = fresh_run(batched, &first, BIG_BATCH).2;
    let piped = fresh_run(pipelined, &first, BATCH).2;

    // Sealing alone: the controller's share of issuing a bundle.
    let sample = c
        .engine()
        .state()
        .devices
        .keys()
        .next()
        .cloned()
        .expect("a device");
    let mut fx = Vec::new();
    c.apply(T0 + 61, |e, now| {
        let f = e.reissue(&sample.0, &sample.1, now)?;
        fx = f.publish.clone();
        Ok(((), f))
    })
    .expect("reissue");
    let bundle = &fx[0];
    let t = Instant::now();
    for _ in 0..k {
        std::hint::black_box(c.seal(std::hint::black_box(bundle)));
    }
    let seal_rate = rate(k, t.elapsed());
    let envelope_len = c.seal(bundle).payload.len();

    drop(c);
    // Fold the WAL into the main file before measuring it.
    let conn = rusqlite::Connection::open(&path).expect("reopen");
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").ok();
    drop(conn);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    // A site relay licensing the same new devices from a delegation of n seats each: one by
    // one (a seats-file write per report), then batched like the controller's worker.
    let open_relay = || {
        use licd_protocol::{Constraints, SeatPool, SiteId};
        use licd_stub::relay::{pool::LeaseTerms, run::RelayCore, site};
        let relay_dir = tempfile::tempdir().expect("tempdir");
        let relay_key = site::init(relay_dir.path()).expect("relay key");
        let constraints = Constraints {
            tenant: TenantId::new("acme").expect("id"),
            site: SiteId::new("plant-7").expect("id"),
            max_lease: 3_600,
            pools: ["wifi", "security"]
                .iter()
                .map(|s| SeatPool {
                    service: svc(s),
                    seats: n,
                })
                .collect(),
        };
        let bytes = site::delegate(
            &Signer::ephemeral(T0).expect("keys"),
            relay_key,
            constraints,
            T0 - 60,
            86_400,
        )
        .expect("delegation");
        site::write_delegation_file(&relay_dir.path().join(site::DELEGATION_FILE), &bytes)
            .expect("delegation file");
        let relay = RelayCore::open(
            relay_dir.path().to_path_buf(),
            LeaseTerms {
                lease_secs: 3_600,
                grace_secs: 0,
            },
        )
        .expect("relay");
        (relay_dir, relay)
    };
    let relay_rate = {
        let (_dir, mut relay) = open_relay();
        let t = Instant::now();
        for (topic, bytes) in &first {
            relay.handle(topic, bytes, T0).expect("relay report");
        }
        rate(first.len(), t.elapsed())
    };
    let relay_batched = {
        let (_dir, mut relay) = open_relay();
        let t = Instant::now();
        for chunk in first.chunks(64) {
            for r in relay.handle_batch(&items(chunk), T0).expect("relay batch") {
                r.expect("relay report");
            }
        }
        rate(first.len(), t.elapsed())
    };

    let pg = std::env::var("LICD_BENCH_POSTGRES_URL")
        .ok()
        .map(|url| postgres_cases(&url, n, &first));

    println!("devices:                          {n}");
    println!("bare ed25519 sign/s:              {bare:>10.0}");
    println!("crypto floor (verify + sign)/s:   {floor:>10.0}  (one core)");
    println!("bundles sealed/s (controller):    {seal_rate:>10.0}  ({:.2} of bare; envelope {envelope_len} bytes)", seal_rate / bare);
    println!(
        "reports/s, new devices:           {new_rate:>10.0}  ({:.2} of bare signing)",
        new_rate / bare
    );
    println!(
        "reports/s, steady state:          {steady_rate:>10.0}  ({:.2} of bare signing)",
        steady_rate / bare
    );
    println!(
        "reports/s, new, batched by 64:    {new_batched:>10.0}  ({:.2} of bare signing, {:.2} of the floor)",
        new_batched / bare,
        new_batched / floor
    );
    println!(
        "  per second of controller CPU:   {new_batched_cpu:>10.0}  ({:.2} of the floor per core)",
        new_batched_cpu / floor
    );
    println!(
        "reports/s, new, batched by {BIG_BATCH}:   {:>10.0}  ({:.2} of the floor; per CPU second {:.0}, {:.2} of the floor)",
        big.rate,
        big.rate / floor,
        big.per_cpu,
        big.per_cpu / floor
    );
    println!(
        "reports/s, new, pipelined by 64:  {:>10.0}  ({:.2} of batched; signatures checked on a second thread)",
        piped.rate,
        piped.rate / new_batched
    );
    println!(
        "reports/s, steady, batched by 64: {steady_batched:>10.0}  ({:.2} of bare signing)",
        steady_batched / bare
    );
    println!(
        "ledger size for {n} devices:   {size:>10} bytes ({:.0} bytes/device)",
        size as f64 / f64::from(n.max(1))
    );
    println!(
        "relay reports/s, new devices:     {relay_rate:>10.0}  ({:.2} of the controller's unbatched)",
        relay_rate / new_rate
    );
    println!(
        "relay reports/s, batched by 64:   {relay_batched:>10.0}  ({:.2} of the controller's batched)",
        relay_batched / new_batched
    );
    if let Some(pg) = pg {
        println!(
            "PostgreSQL reports/s, new, one by one:   {:>10.0}  ({:.2} of bare signing, {:.2} of SQLite)",
            pg.new, pg.new / bare, pg.new / new_rate
        );
        println!(
            "PostgreSQL reports/s, new, batched by 64: {:>9.0}  ({:.2} of bare signing, {:.2} of SQLite, {:.2} of the floor)",
            pg.batched, pg.batched / bare, pg.batched / new_batched, pg.batched / floor
        );
        println!(
            "  per second of controller CPU:          {:>9.0}  ({:.2} of the floor per core; the server's CPU not counted)",
            pg.batched_cpu, pg.batched_cpu / floor
        );
        println!(
            "PostgreSQL reports/s, new, batched by {BIG_BATCH}: {:>8.0}  ({:.2} of the floor; per CPU second {:.0}, {:.2} of the floor)",
            pg.big.rate, pg.big.rate / floor, pg.big.per_cpu, pg.big.per_cpu / floor
        );
        println!(
            "PostgreSQL reports/s, new, pipelined by 64: {:>7.0}  ({:.2} of batched, {:.2} of the floor)",
            pg.piped.rate, pg.piped.rate / pg.batched, pg.piped.rate / floor
        );
        println!(
            "PostgreSQL, 2 replicas alternating by 64: {:>9.0}  ({:.2} of one replica; one thread, each turn catches up)",
            pg.two, pg.two / pg.batched
        );
        println!(
            "PostgreSQL, 2 replicas in parallel by 64: {:>9.0}  ({:.2} of one replica; two threads)",
            pg.parallel, pg.parallel / pg.batched
        );
        println!(
            "PostgreSQL empty turn (lock + generation): {:>8.0} us",
            pg.turn_us
        );
    }
}

/// PostgreSQL figures (reports/s; µs per empty turn).
struct PgFigures {
    new: f64,
    batched: f64,
    batched_cpu: f64,
    big: Run,
    piped: Run,
    two: f64,
    parallel: f64,
    turn_us: f64,
}

fn postgres_cases(url: &str, n: u32, first: &[(String, Vec<u8>)]) -> PgFigures {
    let fresh = || {
        let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("postgres");
        admin
            .batch_execute("DROP DATABASE IF EXISTS licd_bench")
            .expect("drop");
        admin
            .batch_execute("CREATE DATABASE licd_bench")
            .expect("create");
        let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
        format!("{base}/licd_bench")
    };
    let open = |db: &str| {
        Controller::open(
            Ledger::open_postgres(db, Duration::from_secs(30)).expect("ledger"),
            Signer::ephemeral(T0).expect("keys"),
            LeasePolicy::default(),
        )
        .expect("controller")
    };

    let db = fresh();
    let mut c = open(&db);
    setup(&mut c, n);
    let t = Instant::now();
    for (topic, bytes) in first {
        let (_, pubs) = c.handle_report_message(topic, bytes, T0).expect("report");
        assert_eq!(pubs.len(), 1);
    }
    let new = rate(first.len(), t.elapsed());
    let k = 1_000;
    let t = Instant::now();
    for _ in 0..k {
        c.apply(T0 + 1, |_, _| Ok(((), Default::default())))
            .expect("turn");
    }
    let turn_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    drop(c);

    let fresh_run = |runner: Runner, size: usize| {
        let db = fresh();
        let mut c = open(&db);
        setup(&mut c, n);
        let run = runner(&mut c, first, T0, size);
        assert_eq!(run.published, n as usize);
        run
    };
    let run = fresh_run(batched, BATCH);
    let big = fresh_run(batched, BIG_BATCH);
    let piped = fresh_run(pipelined, BATCH);

    let db = fresh();
    let mut a = open(&db);
    setup(&mut a, n);
    let mut b = open(&db);
    let t = Instant::now();
    let mut published = 0;
    for (i, chunk) in first.chunks(64).enumerate() {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        published += batched(c, chunk, T0, BATCH).published;
    }
    let two = rate(first.len(), t.elapsed());
    assert_eq!(published, n as usize);
    drop((a, b));

    // Two replicas at once, as two `serve` processes sharing the reports would run: the
    // turns (engine + ledger) take the lock one at a time, sealing runs in parallel.
    let db = fresh();
    let mut a = open(&db);
    setup(&mut a, n);
    let mut b = open(&db);
    let chunks: Vec<&[(String, Vec<u8>)]> = first.chunks(64).collect();
    let share = |c: &mut Controller, parity: usize| {
        let mut published = 0;
        for chunk in chunks.iter().skip(parity).step_by(2) {
            published += batched(c, chunk, T0, BATCH).published;
        }
        published
    };
    let t = Instant::now();
    let published = std::thread::scope(|s| {
        let other = s.spawn(|| share(&mut b, 1));
        share(&mut a, 0) + other.join().expect("replica thread")
    });
    let parallel = rate(first.len(), t.elapsed());
    assert_eq!(published, n as usize);
    let caught = (a.catch_ups(), b.catch_ups());
    assert_eq!(caught.0.whole + caught.1.whole, 0, "{caught:?}");
    PgFigures {
        new,
        batched: run.rate,
        batched_cpu: run.per_cpu,
        big,
        piped,
        two,
        parallel,
        turn_us,
    }
}
