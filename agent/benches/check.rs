//! Benchmarks of the agent's answer paths and cache, each against a baseline measured in the
//! same run (the machine is shared and noisy; ratios travel better than absolute figures):
//!
//! - `socket`: `licd check` over the unix socket — [`api::query`] against a real [`ApiServer`]
//!   holding a status snapshot — vs a bare unix-socket server answering the same bytes;
//! - `cache`: the from-cache path in process (load + verify + evaluate + snapshot, and the whole
//!   [`daemon::status_from_cache`]) vs reading the file, and `licd check --json` as a process
//!   with no daemon vs spawning `/bin/true`;
//! - `store`: [`Store::save_bundle`] (temp file, fsync, rename, fsync dir) vs one write + fsync
//!   of the same bytes, and [`Store::load_bundle`] vs `fs::read`;
//! - `inproc`: [`Snapshot::state`] / [`Enforcer::state`] vs a `HashMap` lookup of the same key;
//! - `coldstart`: from spawning `licd run` on a state directory with a cached bundle to its
//!   socket answering `check` from that bundle (`source: daemon`) vs spawning `/bin/true` and
//!   waiting for it. `LICD_BENCH_LICD=/path/to/licd` measures another build of the binary (an
//!   older commit's, for a before/after in one run).
//!
//! Subject and baseline alternate iteration by iteration so both see the same noise.
//!
//! ```text
//! cargo bench -p licd-agent --bench check             # everything
//! cargo bench -p licd-agent --bench check -- socket   # sections whose name contains "socket"
//! LICD_BENCH_DIR=/some/disk cargo bench -p licd-agent --bench check -- store
//! cargo bench -p licd-agent --bench check -- coldstart
//! ```

#![allow(missing_docs)] // a bench binary
#![allow(clippy::unwrap_used)] // a failed set-up should stop the bench loudly

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use licd_agent::api::{self, check_answer, ApiServer};
use licd_agent::clock::SystemClock;
use licd_agent::config::Settings;
use licd_agent::daemon;
use licd_agent::enforce::{AcceptanceRules, Enforcer, ServiceState};
use licd_agent::identity::DeviceKey;
use licd_agent::status::{Source, Status};
use licd_agent::store::Store;
use licd_protocol::envelope::seal_bundle;
use licd_protocol::{
    DeviceId, GrantBundle, LicenseId, PublicKey, ServiceGrant, ServiceName, SignerCertificate, Sku,
    TenantId, TrustStore,
};
use serde_json::json;

const SERVICES: [&str; 5] = ["wifi", "vpn", "ids", "guest-portal", "mesh"];
const CHECKED: &str = "wifi";

/// Sorted durations with percentiles.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }
    fn pct(&self, p: usize) -> Duration {
        self.0[(self.0.len() * p / 100).min(self.0.len() - 1)]
    }
}

fn fmt_d(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64().max(1e-12))
}

/// Prints one row: subject p50/p99 vs baseline p50/p99 and the p50 and p99 ratios.
fn row(name: &str, subject: &Samples, base_name: &str, base: &Samples) {
    println!(
        "{name:<44} n={:<5} p50 {:>10}  p99 {:>10} | {base_name:<28} p50 {:>10}  p99 {:>10} | ratio p50 {:>7} p99 {:>7}",
        subject.0.len(),
        fmt_d(subject.pct(50)),
        fmt_d(subject.pct(99)),
        fmt_d(base.pct(50)),
        fmt_d(base.pct(99)),
        ratio(subject.pct(50), base.pct(50)),
        ratio(subject.pct(99), base.pct(99)),
    );
}

/// Runs `a` and `b` alternately `n` times after `warm` warm-up rounds; per-call durations.
fn paired(n: usize, warm: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (Samples, Samples) {
    for _ in 0..warm {
        a();
        b();
    }
    let (mut sa, mut sb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        a();
        sa.push(t.elapsed());
        let t = Instant::now();
        b();
        sb.push(t.elapsed());
    }
    (Samples::new(sa), Samples::new(sb))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A state directory with a device key, a config, and a cached bundle granting every service.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    settings: Settings,
    rules: AcceptanceRules,
    raw: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let dir = match std::env::var_os("LICD_BENCH_DIR") {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let root = dir.path().to_path_buf();
        let state = root.join("state");
        let ca = SigningKey::from_bytes(&[31; 32]);
        let signing = SigningKey::from_bytes(&[32; 32]);
        let cert =
            SignerCertificate::issue(&ca, PublicKey::from(&signing.verifying_key()), 0, u64::MAX);
        let config = format!(
            "tenant = \"acme\"\nservices = [{}]\nstate_dir = {:?}\nroots = [{:?}]\n\n\
             [broker]\nurl = \"mqtt://127.0.0.1:1\"\nallow_insecure = true\n\n\
             [api]\nsocket = {:?}\n\n[identity]\ndevice_id = \"ap-1\"\nmodel = \"AP-BENCH\"\n\
             serial = \"SN-BENCH\"\nproduct_class = \"wireless\"\n",
            SERVICES.map(|s| format!("{s:?}")).join(", "),
            state.display().to_string(),
            PublicKey::from(&ca.verifying_key()).to_hex(),
            // No daemon listens here: `licd check` falls back to the cache.
            root.join("no-daemon.sock").display().to_string(),
        );
        std::fs::write(root.join("licd.toml"), &config).unwrap();
        let settings = Settings::from_toml(&config).unwrap();
        let key = DeviceKey::load_or_create(&state).unwrap();
        let now = unix_now();
        let bundle = GrantBundle {
            device: DeviceId::new("ap-1").unwrap(),
            device_key: key.id(),
            tenant: TenantId::new("acme").unwrap(),
            seq: 7,
            issued_at: now,
            refresh_after: now + 1_800,
            grants: SERVICES
                .iter()
                .map(|s| ServiceGrant {
                    service: ServiceName::new(*s).unwrap(),
                    license: LicenseId::new(format!("lic-{s}")).unwrap(),
                    sku: Sku::new("SKU-BENCH").unwrap(),
                    not_before: now - 60,
                    not_after: now + 365 * 86_400,
                    lease_until: now + 3_600,
                    grace: 600,
                    vm_allowance: None,
                })
                .collect(),
            withheld: vec![],
        };
        let raw = seal_bundle(&bundle, &signing, &cert);
        Store::open(&state).unwrap().save_bundle(&raw).unwrap();
        // What the daemon leaves for `licd check` to read when it is down.
        licd_agent::cache::Binding {
            device: DeviceId::new("ap-1").unwrap(),
            device_key: key.public(),
        }
        .save_if_changed(&state)
        .unwrap();
        let rules = AcceptanceRules {
            trust: TrustStore::new(settings.roots.clone()),
            device: DeviceId::new("ap-1").unwrap(),
            device_key: key.id(),
            future_tolerance: settings.future_tolerance,
        };
        Self {
            _dir: dir,
            root,
            settings,
            rules,
            raw,
        }
    }

    fn store(&self) -> Store {
        Store::open_read_only(&self.settings.state_dir)
    }

    /// Load + verify + evaluate + snapshot: the enforcement part of `status_from_cache`.
    fn restore(&self) -> Enforcer {
        let raw = self.store().load_bundle().unwrap().unwrap();
        let mut e = Enforcer::new(self.rules.clone(), self.settings.services.clone());
        e.restore(&raw, unix_now()).unwrap();
        e
    }

    fn status(&self) -> Status {
        let (mut s, _) =
            daemon::status_from_cache(self.settings.clone(), Arc::new(SystemClock)).unwrap();
        s.source = Source::Daemon;
        s
    }
}

fn bench_socket(f: &Fixture) {
    let status = f.status();
    assert!(status.state(CHECKED).may_run());
    let answer = {
        let mut b = serde_json::to_vec(&check_answer(&status, CHECKED)).unwrap();
        b.push(b'\n');
        b
    };
    let request = json!({"v": 1, "op": "check", "service": CHECKED});
    let request_line = {
        let mut b = serde_json::to_vec(&request).unwrap();
        b.push(b'\n');
        b
    };

    // The real server, on its own current-thread runtime as in the daemon.
    let api_path = f.root.join("api.sock");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let api_path = api_path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = ApiServer::bind(&api_path).await.unwrap();
                let (_status_tx, status_rx) = tokio::sync::watch::channel(Arc::new(status));
                let (events, _) = tokio::sync::broadcast::channel(16);
                ready_tx.send(()).unwrap();
                server
                    .serve(status_rx, events, None, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        })
    };
    ready_rx.recv().unwrap();

    // The baseline: a bare server that reads a line and writes the same answer bytes.
    let echo_path = f.root.join("echo.sock");
    let listener = UnixListener::bind(&echo_path).unwrap();
    let echo_answer = answer.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                if conn.write_all(&echo_answer).is_err() {
                    break;
                }
                line.clear();
            }
        }
    });
    let bare = |path: &Path| {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(&request_line).unwrap();
        let mut got = String::new();
        BufReader::new(s.take(1 << 20)).read_line(&mut got).unwrap();
        black_box(got);
    };

    let (real, base) = paired(
        2_000,
        200,
        || {
            let v = api::query(&api_path, &request, Duration::from_secs(2)).unwrap();
            assert_eq!(v["state"], "licensed");
            black_box(v);
        },
        || bare(&echo_path),
    );
    row(
        "socket: api::query check (connect+req+answer)",
        &real,
        "bare unix echo, same bytes",
        &base,
    );
    let _ = stop_tx.send(());
    server.join().unwrap();
}

fn bench_cache(f: &Fixture) {
    let bundle_path = f.store().bundle_path();
    let (restore, read) = paired(
        1_000,
        50,
        || {
            let e = f.restore();
            black_box(e.snapshot());
        },
        || {
            black_box(std::fs::read(&bundle_path).unwrap());
        },
    );
    row(
        "cache: load+restore+snapshot in process",
        &restore,
        "fs::read of the bundle",
        &read,
    );
    let (full, read) = paired(
        200,
        10,
        || {
            black_box(f.status());
        },
        || {
            black_box(std::fs::read(&bundle_path).unwrap());
        },
    );
    row(
        "cache: daemon::status_from_cache",
        &full,
        "fs::read of the bundle",
        &read,
    );

    let licd = env!("CARGO_BIN_EXE_licd");
    let config = f.root.join("licd.toml");
    let (cli, truth) = paired(
        50,
        3,
        || {
            let out = Command::new(licd)
                .arg("--config")
                .arg(&config)
                .args(["check", CHECKED, "--json"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["source"], "cache");
        },
        || {
            let st = Command::new("/bin/true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        },
    );
    row(
        "cache: `licd check --json` process, no daemon",
        &cli,
        "spawn /bin/true",
        &truth,
    );
}

/// `licd run` until its socket answers `check` from the cached bundle, vs `/bin/true`.
fn bench_coldstart(f: &Fixture) {
    let licd =
        std::env::var("LICD_BENCH_LICD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_licd").into());
    let socket = f.root.join("daemon.sock");
    let text = std::fs::read_to_string(f.root.join("licd.toml"))
        .unwrap()
        .replace("no-daemon.sock", "daemon.sock");
    let config = f.root.join("licd-run.toml");
    std::fs::write(&config, text).unwrap();
    let request = json!({"v": 1, "op": "check", "service": CHECKED});
    // Spawn to answer only: the kill and reap that follow are left out.
    let answered = std::cell::RefCell::new(Vec::new());
    let (_, truth) = paired(
        30,
        2,
        || {
            let t = Instant::now();
            let mut child = Command::new(&licd)
                .arg("--config")
                .arg(&config)
                .arg("run")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let give_up = Instant::now() + Duration::from_secs(10);
            loop {
                match api::query(&socket, &request, Duration::from_secs(2)) {
                    Ok(v) if v["source"] == "daemon" => {
                        answered.borrow_mut().push(t.elapsed());
                        assert_eq!(v["state"], "licensed", "{v}");
                        break;
                    }
                    _ if Instant::now() < give_up => std::thread::sleep(Duration::from_micros(100)),
                    other => panic!("licd run did not answer within 10 s: {other:?}"),
                }
            }
            // The next start replaces the stale socket, as after a crash.
            child.kill().unwrap();
            child.wait().unwrap();
        },
        || {
            let st = Command::new("/bin/true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        },
    );
    let mut answered = answered.into_inner();
    answered.drain(..2); // the warm-up rounds
    row(
        "coldstart: `licd run` to check answered",
        &Samples::new(answered),
        "spawn /bin/true",
        &truth,
    );
}

fn bench_store(f: &Fixture) {
    let dir = f.root.join("store-bench");
    let store = Store::open(&dir).unwrap();
    let plain = dir.join("plain.bin");
    let (save, fsync) = paired(
        200,
        10,
        || store.save_bundle(&f.raw).unwrap(),
        || {
            let mut file = std::fs::File::create(&plain).unwrap();
            file.write_all(&f.raw).unwrap();
            file.sync_all().unwrap();
        },
    );
    row(
        &format!("store: save_bundle ({} B, atomic+fsync)", f.raw.len()),
        &save,
        "one write + fsync, same bytes",
        &fsync,
    );
    let (load, read) = paired(
        5_000,
        100,
        || {
            black_box(store.load_bundle().unwrap());
        },
        || {
            black_box(std::fs::read(store.bundle_path()).unwrap());
        },
    );
    row("store: load_bundle", &load, "fs::read", &read);
}

/// Nanoseconds per call of `f`, median of 7 rounds of `iters` calls.
fn ns_per_call(iters: u32, mut f: impl FnMut() -> bool) -> f64 {
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[3]
}

fn bench_inproc(f: &Fixture) {
    let enforcer = f.restore();
    let snapshot = enforcer.snapshot();
    let service = ServiceName::new(CHECKED).unwrap();
    let map: HashMap<String, ServiceState> = snapshot
        .services
        .iter()
        .map(|s| (s.service.to_string(), s.state))
        .collect();
    let iters = 2_000_000;
    let base = ns_per_call(iters, || {
        black_box(&map)
            .get(black_box(CHECKED))
            .is_some_and(|s| s.may_run())
    });
    let snap = ns_per_call(iters, || {
        black_box(&snapshot).state(black_box(CHECKED)).may_run()
    });
    let enf = ns_per_call(iters, || {
        black_box(&enforcer).state(black_box(&service)).may_run()
    });
    for (name, ns) in [
        ("inproc: Snapshot::state (5 services)", snap),
        ("inproc: Enforcer::state (5 services)", enf),
    ] {
        println!(
            "{name:<44} {ns:>8.1} ns/call | HashMap<String,_>::get same key {base:>6.1} ns/call | ratio {:.2}×",
            ns / base
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a section filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let fixture = Fixture::new();
    println!(
        "licd-agent benches, state dir {} ({} cores available)",
        fixture.root.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wanted("socket") {
        bench_socket(&fixture);
    }
    if wanted("cache") {
        bench_cache(&fixture);
    }
    if wanted("store") {
        bench_store(&fixture);
    }
    if wanted("inproc") {
        bench_inproc(&fixture);
    }
    if wanted("coldstart") {
        bench_coldstart(&fixture);
    }
}
