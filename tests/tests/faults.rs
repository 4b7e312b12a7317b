//! Faults end to end: the broker killed and restarted many times while the agent runs; a
//! network partition (broker stopped) with the agent's reconnect backoff measured from its own
//! log; the controller silent for longer than the lease; a full disk and a read-only state
//! directory under the agent's cache.
//!
//! `LICD_BROKER_RESTARTS` sets the number of broker kill/restart cycles (default 50).
//! The disk tests mount a small tmpfs over the agent's state directory, which needs root and
//! `mount`; without them they say so and skip (with `CI=true` they fail instead).

mod hardening;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hardening::{grants_topic, status, wait_status, Publisher, T};
use licd_agent::enforce::{AcceptanceRules, Enforcer};
use licd_agent::store::Store;
use licd_protocol::{DeviceId, PublicKey, TrustStore};
use licd_tests::agent::Agent;
use licd_tests::controller::{ControllerKeys, Policy};
use licd_tests::{wait_for, Scene};

/// Kill/restart cycles (see the module docs).
const RESTARTS_ENV: &str = "LICD_BROKER_RESTARTS";
const DEFAULT_RESTARTS: u32 = 50;
/// The reconnect cap the harness configures (`reconnect_max_secs = 2`).
const RECONNECT_CAP_MS: u64 = 2_000;
/// Scheduling slack allowed when comparing logged delays with observed gaps.
const SLACK_MS: u64 = 60;

fn agent_with_hook(scene: &Scene) -> (Agent, tempfile::NamedTempFile) {
    let transcript = tempfile::NamedTempFile::new().unwrap();
    let agent = scene
        .agent_with(|o| {
            o.extra = format!(
                "[hooks]\non_change = [\"sh\", \"-c\", \"echo $LICD_SERVICE $LICD_STATE $LICD_REASON >> {}\"]\n",
                transcript.path().display()
            );
        })
        .unwrap();
    (agent, transcript)
}

fn transcript(file: &tempfile::NamedTempFile) -> Vec<String> {
    std::fs::read_to_string(file.path())
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Milliseconds since midnight of a log line's RFC 3339 timestamp (`…T22:24:57.835658Z`).
fn log_millis(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let secs: f64 = s.parse().ok()?;
    Some(
        (h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60) * 1000
            + (secs * 1000.0) as u64,
    )
}

/// (timestamp ms, logged retry delay ms) of every failed connection attempt in `log`.
fn reconnect_attempts(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains("reconnect failed") || l.contains("retrying with backoff"))
        .filter_map(|l| {
            let delay = l
                .split("retry_in_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((log_millis(l)?, delay))
        })
        .collect()
}

fn connected(agent: &Agent) -> bool {
    agent
        .status()
        .is_some_and(|s| s["connection"]["connected"] == true)
}

#[test]
fn broker_killed_and_restarted_many_times_loses_no_bundle_and_never_storms() {
    let cycles: u32 = std::env::var(RESTARTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RESTARTS);
    let mut scene = Scene::start().unwrap();
    let (agent, hook) = agent_with_hook(&scene);
    agent.wait_state("wifi", "licensed", T).unwrap();
    scene.controller.set_policy(|p| p.answer = false);
    let transitions_before = transcript(&hook);

    let started = Instant::now();
    let mut reconnect_ms = Vec::new();
    for cycle in 0..cycles {
        scene.broker.kill().unwrap();
        wait_status(&agent, "the agent to notice the broker is gone", |s| {
            s["connection"]["connected"] == false
        });
        scene.broker.start_again().unwrap();
        let back = Instant::now();
        wait_for("the agent to reconnect", T, || connected(&agent))
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}\n{}", agent.log()));
        reconnect_ms.push(back.elapsed().as_millis() as u64);
        // A new bundle published (retained) after each restart is applied: none is lost,
        // whether it arrives before or after the agent resubscribes.
        let seq = 1_000 + u64::from(cycle);
        let _g = scene.enter();
        let publisher = Publisher::plain(scene.broker.port(), "publisher");
        scene.rt().block_on(publisher.publish_acked(
            &grants_topic(),
            scene.bundle().unwrap().seq(seq).seal(),
            true,
        ));
        wait_status(&agent, "the new bundle to be applied", |s| {
            s["bundle"]["seq"].as_u64() == Some(seq)
        });
        assert_eq!(agent.state_of("wifi").as_deref(), Some("licensed"));
    }
    let elapsed = started.elapsed();

    // Exactly one connection of the agent per broker start: no flapping, no storm.
    let client = "as licd-acme-ap-1";
    let log = scene.broker.log();
    let connections = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(client))
        .count();
    assert_eq!(connections as u32, cycles + 1, "{log}");
    // The license never wavered: every change the hook saw since is a renewal (licensed with
    // a new end; bundles issued within the same second change nothing), never grace or
    // unlicensed.
    let after = transcript(&hook);
    assert_eq!(after[..transitions_before.len()], transitions_before[..]);
    let renewals = &after[transitions_before.len()..];
    assert!(
        renewals.len() <= cycles as usize && renewals.iter().all(|t| t == "wifi licensed"),
        "{after:?}"
    );
    let s = status(&agent);
    assert_eq!(s["refusals"]["total"], 0, "{s}");
    reconnect_ms.sort_unstable();
    let max = *reconnect_ms.last().unwrap_or(&0);
    println!(
        "broker killed and restarted {cycles} times in {elapsed:?}: {cycles} bundles published, \
         {cycles} applied, {connections} agent connections in the broker log (one per start); \
         reconnect after restart: median {} ms, max {max} ms (cap {RECONNECT_CAP_MS} ms)",
        reconnect_ms[reconnect_ms.len() / 2]
    );
    assert!(max <= RECONNECT_CAP_MS + 3_000, "reconnect took {max} ms");
}

#[test]
fn a_partition_is_ridden_out_with_backoff_and_the_agent_reconnects_when_it_heals() {
    let mut scene = Scene::start().unwrap();
    let agent = scene.licensed_agent().unwrap();

    let before = reconnect_attempts(&agent.log()).len();
    scene.broker.stop().unwrap();
    let down = Instant::now();
    const ATTEMPTS: usize = 8;
    wait_for(
        "the agent to retry a few times",
        Duration::from_secs(60),
        || reconnect_attempts(&agent.log()).len() >= before + ATTEMPTS,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let window = down.elapsed();
    let attempts: Vec<_> = reconnect_attempts(&agent.log())[before..].to_vec();
    // Every attempt waited at least the delay it announced, and no delay exceeds the cap.
    for pair in attempts.windows(2) {
        let ((t0, delay), (t1, _)) = (pair[0], pair[1]);
        assert!(delay <= RECONNECT_CAP_MS, "delay {delay} ms over the cap");
        let gap = (t1 + 86_400_000 - t0) % 86_400_000;
        assert!(
            gap + SLACK_MS >= delay,
            "next attempt {gap} ms after announcing {delay} ms"
        );
    }
    let delays: Vec<u64> = attempts.iter().map(|a| a.1).collect();
    println!(
        "partition: {} connection attempts in {window:?} with the broker down; announced delays \
         {delays:?} ms (cap {RECONNECT_CAP_MS} ms, full jitter); each honoured",
        attempts.len()
    );
    assert_eq!(
        agent.state_of("wifi").as_deref(),
        Some("licensed"),
        "the lease covers it"
    );

    scene.broker.start_again().unwrap();
    let healed = Instant::now();
    wait_for("the agent to reconnect", T, || connected(&agent)).unwrap();
    println!("partition healed: reconnected after {:?}", healed.elapsed());
    assert!(healed.elapsed() <= Duration::from_millis(RECONNECT_CAP_MS + 3_000));
}

#[test]
fn a_controller_silent_longer_than_the_lease_gives_grace_then_unlicensed_without_a_report_storm() {
    let scene = Scene::with_policy(Policy {
        lease: 4,
        grace: 3,
        ..Policy::default()
    })
    .unwrap();
    let controller = &scene.controller;
    let (agent, hook) = agent_with_hook(&scene);
    agent.wait_state("wifi", "licensed", T).unwrap();
    controller.set_policy(|p| p.answer = false);
    let reports_before = controller.reports().len();
    let silent = Instant::now();

    agent.wait_state("wifi", "grace", T).unwrap();
    assert_eq!(agent.check("wifi").unwrap()["reason"], "lease_expired");
    agent.wait_state("wifi", "unlicensed", T).unwrap();
    assert_eq!(agent.check("wifi").unwrap()["reason"], "lease_expired");
    let reports = controller.reports().len() - reports_before;
    let window = silent.elapsed();
    // The agent asks (at refresh_after, when grace starts, then a retry doubling from 5 s),
    // it does not hammer a silent controller.
    assert!(reports <= 4, "{reports} reports in {window:?}");
    assert!(connected(&agent), "the broker connection stayed up");

    // The controller comes back and pushes a bundle: licensed again.
    let fresh = scene.bundle().unwrap().seq(controller.seq() + 1).seal();
    scene.publish_raw(&grants_topic(), fresh);
    agent.wait_state("wifi", "licensed", T).unwrap();
    // A renewal answered just before the controller went silent would add a second
    // "licensed" (a new end); consecutive repeats are not transitions.
    let deduped = || {
        let mut t = transcript(&hook);
        t.dedup();
        t
    };
    wait_for("the hook to see it", T, || deduped().len() >= 5).unwrap();
    let t = deduped();
    println!("controller silent {window:?}: {reports} reports sent meanwhile; transitions {t:?}");
    assert_eq!(
        t,
        [
            "wifi unlicensed never_granted",
            "wifi licensed",
            "wifi grace lease_expired",
            "wifi unlicensed lease_expired",
            "wifi licensed",
        ]
    );
}

/// A tmpfs mounted over a directory for the length of a test; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size` tmpfs over `path` (mode 0700), keeping the files that were there.
    /// `None` when mounting is not possible here (not root, no `mount`, a sandbox).
    fn mount_over(path: &Path, size: &str) -> Option<Self> {
        let saved = tempfile::tempdir().unwrap();
        let files: Vec<_> = std::fs::read_dir(path).unwrap().flatten().collect();
        for f in &files {
            std::fs::copy(f.path(), saved.path().join(f.file_name())).unwrap();
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                let msg = format!("cannot mount a tmpfs (needs root and mount): {why}");
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true and {msg}");
                }
                eprintln!("SKIPPED: {msg}");
                return None;
            }
        }
        for f in &files {
            let to = path.join(f.file_name());
            std::fs::copy(saved.path().join(f.file_name()), &to).unwrap();
            std::fs::set_permissions(&to, f.metadata().unwrap().permissions()).unwrap();
        }
        Some(Self {
            path: path.to_path_buf(),
        })
    }

    /// Fills the file system; returns the filler's size.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        let mut n = 0;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
        }
        let _ = f.flush();
        n
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }

    fn remount(&self, how: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {how}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The seq of the cache on disk, loaded the way the agent loads it at start.
fn cached_seq(dir: &Path, keys: &ControllerKeys, device_key: &str) -> u64 {
    let raw = Store::open_read_only(dir)
        .load_bundle()
        .unwrap()
        .expect("a cache file");
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&device_key[2 * i..2 * i + 2], 16).unwrap();
    }
    let rules = AcceptanceRules {
        trust: TrustStore::new(vec![PublicKey::from(&keys.root.verifying_key())]),
        device: DeviceId::new("ap-1").unwrap(),
        device_key: licd_protocol::KeyId(key),
        future_tolerance: 300,
    };
    let mut e = Enforcer::new(rules, []);
    e.restore(&raw, licd_tests::controller::unix_now())
        .expect("the cache loads");
    e.held_seq()
}

#[test]
fn a_full_disk_and_a_read_only_state_dir_keep_the_old_cache_and_enforcement_goes_on() {
    let scene = Scene::start().unwrap();
    let mut agent = scene.licensed_agent().unwrap();
    scene.controller.set_policy(|p| p.answer = false);
    let keys = scene.keys();
    let device_key = status(&agent)["device_key"].as_str().unwrap().to_owned();
    assert!(agent.stop().unwrap());
    let Some(fs) = Tmpfs::mount_over(&agent.state_dir(), "64k") else {
        return;
    };
    agent.restart().unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    let _g = scene.enter();
    let publisher = Publisher::plain(scene.broker.port(), "publisher");
    let publish = |seq: u64, revoke: bool| {
        let mut b = scene.bundle().unwrap().seq(seq);
        if revoke {
            b = b.no_grants();
        }
        scene
            .rt()
            .block_on(publisher.publish_acked(&grants_topic(), b.seal(), true));
        wait_status(&agent, "the bundle to be enforced", |s| {
            s["bundle"]["seq"].as_u64() == Some(seq)
        });
    };
    let old_seq = cached_seq(&agent.state_dir(), keys, &device_key);
    let old_bytes = std::fs::read(agent.state_dir().join("bundle.v1.bin")).unwrap();

    // Disk full: a bundle that revokes wifi is enforced from memory; the write fails loudly,
    // the old cache file is intact, and no temp file is left.
    let filled = fs.fill();
    publish(500, true);
    assert_eq!(agent.state_of("wifi").as_deref(), Some("unlicensed"));
    wait_for("the write error in the log", T, || {
        agent.log().contains("cannot write the cache")
    })
    .unwrap();
    let log = agent.log();
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(
        std::fs::read(agent.state_dir().join("bundle.v1.bin")).unwrap(),
        old_bytes
    );
    assert_eq!(cached_seq(&agent.state_dir(), keys, &device_key), old_seq);
    assert!(!agent.state_dir().join(".bundle.v1.bin.tmp").exists());
    println!(
        "disk full ({filled} bytes of filler on a 64k tmpfs): seq 500 enforced from memory, \
         cache on disk still seq {old_seq}"
    );

    // Space again: the next bundle is persisted.
    fs.unfill();
    publish(501, false);
    agent.wait_state("wifi", "licensed", T).unwrap();
    wait_for("seq 501 on disk", T, || {
        cached_seq(&agent.state_dir(), keys, &device_key) == 501
    })
    .unwrap();

    // Read-only state dir: same story, and the agent even restarts on it.
    fs.remount("ro");
    publish(502, true);
    assert_eq!(agent.state_of("wifi").as_deref(), Some("unlicensed"));
    wait_for("the read-only error in the log", T, || {
        agent.log().contains("Read-only file system")
    })
    .unwrap();
    assert_eq!(cached_seq(&agent.state_dir(), keys, &device_key), 501);
    assert!(
        agent.stop().unwrap(),
        "clean exit although the mark cannot be saved"
    );
    agent.restart().unwrap();
    wait_status(&agent, "the restarted agent on a read-only dir", |s| {
        s["connection"]["connected"] == true && s["bundle"]["seq"].as_u64() == Some(502)
    });
    assert_eq!(cached_seq(&agent.state_dir(), keys, &device_key), 501);
    println!(
        "read-only state dir: seq 502 enforced from memory, restart fine, cache still seq 501"
    );
    assert!(agent.stop().unwrap());
}
