//! Licensing by file against a real `licd` with **no broker at all** (its broker URL points at
//! a closed port): `licd request` → a grant file signed by the test controller's keys →
//! `licd import`, with the daemon running (through the socket) and stopped (the cache, under
//! the state-directory lock); renewal; `licd release` and its receipt; and the hostile files of
//! issue 18, each refused with its code and exit status, the agent's state unchanged.
//! (The controller's side, `licd-stub offline`, is in `offline_stub.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use licd_protocol::envelope::seal_bundle;
use licd_protocol::offline::{
    armor, open_activation_request, open_release_receipt, seal_grant_answer,
};
use licd_protocol::{ActivationRequest, GrantAnswer};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::controller::{bundle_for, ControllerKeys, Policy};
use licd_tests::{free_port, wait_for};

const T: Duration = Duration::from_secs(15);

/// An agent whose broker never answers.
fn agent() -> Agent {
    let keys = ControllerKeys::fixed();
    let mut o = AgentOptions::plain(free_port().expect("a free port"), &keys.root_hex());
    o.services = vec!["wifi".into(), "wids".into()];
    let a = Agent::start(&o).expect("agent starts");
    wait_for("the agent's socket", T, || a.status().is_some()).expect("socket answers");
    a
}

fn path(a: &Agent, name: &str) -> PathBuf {
    a.state.join(name)
}

/// `licd request --out FILE` (armored when asked); returns the opened request.
fn request(a: &Agent, name: &str, armored: bool) -> ActivationRequest {
    let out = path(a, name);
    let out_s = out.display().to_string();
    let mut args = vec!["request", "--out", &out_s];
    if armored {
        args.push("--armor");
    }
    let (code, stdout, stderr) = a.cli(&args).expect("licd runs");
    assert_eq!(code, 0, "request: {stdout}{stderr}");
    assert!(stdout.contains("licd-stub offline grant"), "{stdout}");
    let bytes = std::fs::read(&out).expect("request written");
    let raw = licd_protocol::offline::decode_file(&bytes)
        .expect("decodes")
        .into_owned();
    // Plain or extended (an agent that speaks policy writes kind 15, PROTOCOL.md §17.7): this
    // test's controller answers either with a plain grant.
    open_activation_request(&raw)
        .or_else(|_| {
            licd_protocol::policy::open_extended_activation_request(&raw).map(|x| {
                ActivationRequest {
                    report: x.report.report,
                    nonce: x.nonce,
                }
            })
        })
        .expect("the request opens")
}

/// The controller's answer to `req`: a grant of `services` with `seq`.
fn answer(req: &ActivationRequest, seq: u64, services: &[&str]) -> Vec<u8> {
    let keys = ControllerKeys::fixed();
    let policy = Policy {
        services: services.iter().map(|s| s.to_string()).collect(),
        lease: 30 * 86_400,
        ..Policy::default()
    };
    let bundle = seal_bundle(
        &bundle_for(&req.report, seq, &policy),
        &keys.signing,
        &keys.cert,
    );
    let a = GrantAnswer {
        device: req.report.device.clone(),
        request_nonce: req.nonce,
        bundle,
    };
    seal_grant_answer(&a, &keys.signing, &keys.cert)
}

fn write(a: &Agent, name: &str, bytes: &[u8]) -> PathBuf {
    let p = path(a, name);
    std::fs::write(&p, bytes).expect("write file");
    p
}

fn import(a: &Agent, file: &Path) -> (i32, String) {
    let f = file.display().to_string();
    let (code, stdout, stderr) = a.cli(&["import", &f]).expect("licd runs");
    (code, format!("{stdout}{stderr}"))
}

fn check_code(a: &Agent, service: &str) -> (i32, String) {
    let (code, v) = a.check_cli(service, &[]).expect("check runs");
    (code, v["reason"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn a_device_with_no_broker_is_licensed_renewed_and_released_by_file_through_the_daemon() {
    let a = agent();
    assert_eq!(a.state_of("wifi").as_deref(), Some("unlicensed"));

    let req = request(&a, "req1.licd", false);
    assert_eq!(req.report.bundle_seq, 0);
    assert_eq!(req.report.device.as_str(), "ap-1");
    let grant = write(&a, "grant1.licd", &answer(&req, 1, &["wifi", "wids"]));
    let (code, out) = import(&a, &grant);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("imported grant seq 1") && out.contains("the daemon enforces it now"));
    // Through the socket: in force at once, no restart.
    assert_eq!(a.state_of("wifi").as_deref(), Some("licensed"));

    // The same answer again: its request was answered already.
    let (code, out) = import(&a, &grant);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not_requested"), "{out}");

    // Renewal: a new request carries the seq held, the answer has a higher one (armored).
    let req2 = request(&a, "req2.asc", true);
    assert_eq!(req2.report.bundle_seq, 1);
    let text = armor(&answer(&req2, 2, &["wifi", "wids"])).expect("armor");
    let (code, out) = import(&a, &write(&a, "grant2.asc", text.as_bytes()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(a.status().expect("status")["bundle"]["seq"], 2);

    // Release: wifi stops, wids keeps running; the receipt is signed by the device key.
    let receipt_path = path(&a, "release.licd");
    let rp = receipt_path.display().to_string();
    let (code, stdout, stderr) = a
        .cli(&["release", "wifi", "--out", &rp])
        .expect("licd runs");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("licd-stub offline return"), "{stdout}");
    let receipt = open_release_receipt(
        &std::fs::read(&receipt_path).expect("receipt"),
        &req.report.device_key,
    )
    .expect("the receipt opens with the device key");
    assert_eq!(receipt.bundle_seq, 2);
    assert_eq!(receipt.services.len(), 1);
    assert_eq!(check_code(&a, "wifi"), (1, "released".into()));
    assert_eq!(a.state_of("wids").as_deref(), Some("licensed"));

    // The released grant, as a plain bundle file, cannot come back.
    let keys = ControllerKeys::fixed();
    let policy = Policy {
        services: vec!["wifi".into()],
        ..Policy::default()
    };
    let old = seal_bundle(
        &bundle_for(&req2.report, 2, &policy),
        &keys.signing,
        &keys.cert,
    );
    let (code, out) = import(&a, &write(&a, "old.licd", &old));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("already_held") || out.contains("released"),
        "{out}"
    );
    assert_eq!(check_code(&a, "wifi"), (1, "released".into()));
}

#[test]
fn with_the_daemon_stopped_import_writes_the_cache_and_the_next_start_continues_from_it() {
    let mut a = agent();
    a.stop().expect("stops");
    let req = request(&a, "req.licd", false);
    let grant = write(&a, "grant.licd", &answer(&req, 7, &["wifi"]));
    let (code, out) = import(&a, &grant);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("written to the cache"), "{out}");
    // `licd check` answers from the cache.
    assert_eq!(check_code(&a, "wifi").0, 0);

    // Released with the daemon stopped too, then the daemon starts and agrees.
    let rp = path(&a, "rel.licd").display().to_string();
    let (code, stdout, stderr) = a.cli(&["release", "wifi", "--out", &rp]).expect("runs");
    assert_eq!(code, 0, "{stdout}{stderr}");
    a.restart().expect("restarts");
    wait_for("the socket", T, || a.status().is_some()).expect("socket");
    assert_eq!(a.status().expect("status")["bundle"]["seq"], 7);
    let st = a.check("wifi").expect("check");
    assert_eq!(st["reason"], "released", "{st}");
}

#[test]
fn hostile_files_are_refused_with_their_code_and_change_nothing() {
    let a = agent();
    let req = request(&a, "req.licd", false);
    let good = answer(&req, 3, &["wifi"]);

    // Another device's grant (a request forged for ap-2 with this device's nonce).
    let mut other = req.clone();
    other.report.device = "ap-2".parse().expect("id");
    let cases: Vec<(&str, Vec<u8>, i32, &str)> = vec![
        (
            "another device",
            answer(&other, 3, &["wifi"]),
            1,
            "wrong_device",
        ),
        (
            "a bit flipped",
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 100] ^= 0x01;
                b
            },
            1,
            "bad_signature",
        ),
        (
            "truncated",
            good[..good.len() - 10].to_vec(),
            2,
            "malformed",
        ),
        (
            "armored with a wrong checksum",
            {
                let text = armor(&good).expect("armor");
                let sum = text
                    .lines()
                    .find(|l| l.starts_with('='))
                    .expect("sum")
                    .to_owned();
                text.replace(&sum, "=00000000").into_bytes()
            },
            2,
            "bad_armor",
        ),
        ("text garbage", b"hello, world\n".to_vec(), 2, "bad_armor"),
        ("binary garbage", vec![0xff; 40], 2, "bad_version"),
        (
            "a request instead of a grant",
            std::fs::read(path(&a, "req.licd")).expect("req"),
            2,
            "not_importable",
        ),
    ];
    let before = a.status().expect("status");
    for (what, bytes, want_code, want) in cases {
        let (code, out) = import(&a, &write(&a, "hostile.licd", &bytes));
        assert_eq!(code, want_code, "{what}: {out}");
        assert!(out.contains(want), "{what}: expected {want} in {out}");
        assert_eq!(out.lines().count(), 1, "{what}: one line: {out}");
        let now = a.status().expect("status");
        assert_eq!(now["bundle"], before["bundle"], "{what}");
        assert_eq!(now["services"], before["services"], "{what}");
    }
    // After all that, the good answer still imports: nothing was consumed.
    let (code, out) = import(&a, &write(&a, "good.licd", &good));
    assert_eq!(code, 0, "{out}");
    // And an older one after it is refused as stale.
    let req2 = request(&a, "req2.licd", false);
    let (code, out) = import(&a, &write(&a, "older.licd", &answer(&req2, 2, &["wifi"])));
    assert_eq!((code, out.contains("stale")), (1, true), "{out}");
}

/// The figures of issue 18 (BENCHMARKS.md): wall time of `licd import` with the daemon running
/// and stopped, against `licd check` as the baseline, each a whole process run as a user would.
/// Run with `cargo test -p licd-tests --test offline_files -- --ignored --nocapture figures`.
#[test]
#[ignore = "figures: run on a quiet machine"]
fn figures_import_wall_time_against_check() {
    use std::time::Instant;
    const RUNS: usize = 15;
    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }
    let mut a = agent();
    let mut seq = 0;
    let timed_imports = |a: &Agent, seq: &mut u64| {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            *seq += 1;
            let req = request(a, "fig.req", false);
            let grant = write(a, "fig.grant", &answer(&req, *seq, &["wifi", "wids"]));
            let f = grant.display().to_string();
            let start = Instant::now();
            let (code, out, err) = a.cli(&["import", &f]).expect("runs");
            times.push(start.elapsed());
            assert_eq!(code, 0, "{out}{err}");
        }
        median(times)
    };
    let time_checks = |a: &Agent| {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            let (code, _, _) = a.cli(&["check", "wifi"]).expect("runs");
            times.push(start.elapsed());
            assert_eq!(code, 0);
        }
        median(times)
    };
    let import_running = timed_imports(&a, &mut seq);
    let check_running = time_checks(&a);
    a.stop().expect("stops");
    let import_stopped = timed_imports(&a, &mut seq);
    let check_stopped = time_checks(&a);
    println!(
        "median of {RUNS} runs of the licd binary (debug build unless LICD_BIN says otherwise):"
    );
    println!("  licd check wifi, daemon running: {check_running:?}");
    println!("  licd import,     daemon running: {import_running:?}");
    println!("  licd check wifi, daemon stopped: {check_stopped:?}");
    println!("  licd import,     daemon stopped: {import_stopped:?}");
}
