//! The embedded broker's memory levels off under steady re-issues (issue 16, item 13).
//!
//! rumqttd keeps every message published on a topic in an in-memory commit log per
//! subscription filter, after delivery too, up to the router's segment limits. With the limits
//! the stub used to set (10 segments of 4 MiB per filter), every re-issued bundle stayed in its
//! device's grants log: ~650 B per bundle, up to 40 MiB per device.
//!
//! This test runs `licd-stub serve` as a real process with its embedded broker, connects a
//! device that reports once and then reads every bundle on its grants topic, re-issues its
//! bundle steadily through the admin API, and reads the stub's VmRSS from /proc. After a
//! warm-up, the second half of the re-issues may not grow the process as it did before.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{setup_with, test_config, Device};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::LedgerLocation;
use rumqttc::{Event, Packet};

/// Re-issues before the first sample (connections, caches and the per-filter logs fill).
const WARMUP: usize = 400;
/// Re-issues in each measured half.
const HALF: usize = 1_600;
/// Admin tokens re-issuing at once: the API allows each token 100 requests/s (burst 200).
const TOKENS: usize = 4;
/// Largest growth allowed over the second half: under a third of what it grew before the fix
/// (~650 B per re-issued bundle, 1.0-1.1 MB), over three times what it grows now (80-100 KB).
const MAX_SECOND_HALF_GROWTH: u64 = 200 * HALF as u64;

/// The stub process; killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `RssAnon`), as bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// The process's resident memory: (VmRSS, RssAnon). The test judges RssAnon, the resident
/// part of its own allocations: VmRSS adds the pages of the (debug, ~100 MB) binary and the
/// ledger's mappings, which grow by a few hundred KB whenever a code path first runs (the
/// first WAL checkpoint, the first 429), whatever the broker does.
fn rss(pid: u32) -> (u64, u64) {
    (status_bytes(pid, "VmRSS"), status_bytes(pid, "RssAnon"))
}

/// Starts `licd-stub serve` on free ports; returns it with its broker and admin API addresses
/// once it is ready (read from its JSON log, so no port is guessed).
fn serve(keys: &Path, ledger: &Path) -> (Serve, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_licd-stub"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--key-dir"])
        .arg(keys)
        .arg("--ledger")
        .arg(ledger)
        .env("RUST_LOG", "info,rumqttd=warn,rumqttc=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serve = Serve(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end so the stub never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let f = &v["fields"];
            let _ = match (f["message"].as_str(), f["addr"].as_str()) {
                (Some("admin API listening"), Some(a)) => tx.send(("admin", a.to_string())),
                // Ready = subscribed to reports; a report sent earlier would be lost.
                (Some("licd-stub ready"), _) => match f["broker"].as_str() {
                    Some(url) => tx.send(("broker", url.replace("mqtt://", ""))),
                    None => continue,
                },
                _ => continue,
            };
        }
    });
    let (mut broker, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (what, addr) = rx.recv_timeout(left).expect("licd-stub serve comes up");
        let addr: SocketAddr = addr.parse().unwrap();
        if what == "admin" {
            admin = Some(addr);
        } else {
            broker = Some(addr);
        }
    }
    (serve, broker.unwrap(), admin.unwrap())
}

/// Re-issues acme/ap-1's bundle `n` times through the admin API, spread over the tokens, and
/// waits until the device has `until` bundles in all (delivered, not just stored).
async fn reissue(
    admin: SocketAddr,
    tokens: &[String],
    n: usize,
    received: &tokio::sync::watch::Receiver<usize>,
    until: usize,
) {
    let http = reqwest::Client::new();
    let url = format!("http://{admin}/api/v1/devices/acme/ap-1/reissue");
    let mut tasks = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let share = n / tokens.len() + usize::from(i < n % tokens.len());
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < share {
                let r = http.post(&url).bearer_auth(&token).send().await.unwrap();
                if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    // The API's own pacing: wait as long as it says.
                    let secs = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    continue;
                }
                assert!(r.status().is_success(), "{}", r.status());
                done += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut received = received.clone();
    let reached = tokio::time::timeout(common::WAIT, received.wait_for(|n| *n >= until))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "the device got {} of {until} bundles",
        *received.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_memory_levels_off_under_steady_reissues() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let ledger = dir.path().join("ledger.db");
    let init = Command::new(env!("CARGO_BIN_EXE_licd-stub"))
        .args(["keys", "init", "--key-dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let tokens: Vec<String> = (0..TOKENS)
        .map(|i| {
            let store: PathBuf = keys.join(TOKEN_STORE_FILE);
            token::create(&store, &format!("soak{i}"), TokenKind::Admin, 1).unwrap()
        })
        .collect();
    // The ledger (MSP, tenant acme, 10 wifi seats, auto-licensing on), written in process.
    let mut config = test_config();
    config.ledger = LedgerLocation::File(ledger.clone());
    setup_with(config).await.shutdown().await;

    let (serve, broker, admin) = serve(&keys, &ledger);
    let pid = serve.0.id();

    // One device: reports once, then reads every bundle on its grants topic, like an agent.
    let mut device = Device::connect_to(broker, "acme", "ap-1", 7).await;
    device
        .send(&device.report(&["wifi"], 0), &device.key.clone())
        .await;
    device.wait_for(|p| matches!(p, Packet::Publish(_))).await;
    // The device's bundle count, waited on (not polled) by `reissue`.
    let (counter, received) = tokio::sync::watch::channel(0usize);
    let mut events = device.events;
    tokio::spawn(async move {
        while let Ok(e) = events.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = e {
                counter.send_modify(|n| *n += 1);
            }
        }
    });

    let started = Instant::now();
    reissue(admin, &tokens, WARMUP, &received, WARMUP).await;
    let r0 = rss(pid);
    reissue(admin, &tokens, HALF, &received, WARMUP + HALF).await;
    let r1 = rss(pid);
    reissue(admin, &tokens, HALF, &received, WARMUP + 2 * HALF).await;
    let r2 = rss(pid);
    let (first, second) = (r1.1.saturating_sub(r0.1), r2.1.saturating_sub(r1.1));
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "licd-stub after {WARMUP}, {}, {} re-issues: VmRSS {:.1}, {:.1}, {:.1} MB; RssAnon \
         {:.2}, {:.2}, {:.2} MB (first half +{} KB, second half +{} KB; {:.1}s)",
        WARMUP + HALF,
        WARMUP + 2 * HALF,
        mb(r0.0),
        mb(r1.0),
        mb(r2.0),
        mb(r0.1),
        mb(r1.1),
        mb(r2.1),
        first / 1024,
        second / 1024,
        started.elapsed().as_secs_f64()
    );
    assert!(
        second <= MAX_SECOND_HALF_GROWTH,
        "the stub's own memory grew {second} B over {HALF} re-issues after a warm-up (first \
         half: {first} B): the embedded broker keeps what it delivered"
    );
}
