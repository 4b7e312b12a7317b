//! The agent's cache under attack, end to end: a real `licd` is licensed through a real
//! mosquitto by the test controller, stopped, and its `bundle.v1.bin` (or `time-mark.v1`) is
//! damaged or swapped. Restarted with the broker down, the agent must not crash, must say what
//! it found in its log, must move the file aside (`*.rejected-<time>`), must not grant anything
//! from it — and must be licensed again once the broker is back.
//!
//! Each case has its own broker and agent so a failure names its case; cases run in parallel.
//! Randomness (random bytes, which bit to flip) comes from a fixed seed.

// Helpers outside #[test] fns unwrap too: a failed step is a test failure with a backtrace.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use licd_agent::store::{BUNDLE_FILE, MARK_FILE};
use licd_protocol::envelope::open_bundle;
use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::{DeviceId, DeviceReport, PublicKey, TrustStore};
use licd_tests::agent::Agent;
use licd_tests::controller::unix_now;
use licd_tests::{wait_for, BundleBuilder, Scene};

const T: Duration = Duration::from_secs(30);

/// The log line of a cache file that was read but failed the acceptance rules.
const REFUSED: &str = "cached bundle refused";
/// The log line of a cache file that could not be read as a bundle at all.
const UNREADABLE: &str = "cache unreadable";

/// SplitMix64: a few lines of deterministic randomness, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A [`Scene`] whose agent was licensed for `wifi`, then stopped cleanly, with the broker
/// stopped too. The agent is declared first so it stops before the broker and controller.
struct Offline {
    agent: Agent,
    scene: Scene,
    /// The first report the controller saw (the agent's device key is in it).
    report: DeviceReport,
}

impl Offline {
    fn licensed_then_offline() -> Self {
        let mut scene = Scene::start().unwrap();
        let mut agent = scene.licensed_agent().unwrap();
        let report = scene.controller.reports()[0].clone();
        assert!(agent.stop().unwrap(), "clean exit 0 on SIGTERM");
        scene.broker.stop().unwrap();
        Self {
            agent,
            scene,
            report,
        }
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.agent.state_dir().join(name)
    }

    /// A bundle signed by the test controller's real keys for `report`'s device and key.
    fn sealed(&self, report: &DeviceReport, seq: u64) -> Vec<u8> {
        BundleBuilder::for_report(report, unix_now())
            .seq(seq)
            .signed_by(self.scene.keys())
            .seal()
    }

    /// Restarts the agent (the broker is down) and returns where its new log starts.
    fn restart_offline(&mut self) -> usize {
        let from = self.agent.log().len();
        self.agent.restart().unwrap();
        from
    }

    /// The agent's log since `from`, checked to hold one start and no panic.
    fn log_since(&self, from: usize) -> String {
        let log = self.agent.log()[from..].to_owned();
        assert_eq!(log.matches("==== licd-tests:").count(), 1, "{log}");
        assert!(!log.contains("panicked"), "{log}");
        log
    }

    /// Starts the broker again and publishes a fresh grant (retained, as the controller does);
    /// the agent must apply it, whether it gets this one or the controller's answer to its
    /// report first. Then the cache must hold a valid bundle for this device again.
    fn broker_back_and_licensed_again(&mut self) {
        self.scene.broker.start_again().unwrap();
        let fresh = self.sealed(&self.report, self.scene.controller.seq() + 100);
        self.scene.publish_grants(&self.agent, fresh);
        self.agent.wait_state("wifi", "licensed", T).unwrap();
        let raw = fs::read(self.state_file(BUNDLE_FILE)).unwrap();
        let trust = TrustStore::new(vec![PublicKey::from(
            &self.scene.keys().root.verifying_key(),
        )]);
        let (bundle, _) = open_bundle(&raw, &trust, unix_now()).unwrap();
        assert_eq!(bundle.device, self.report.device);
        let status = self.agent.status().unwrap();
        assert!(status["cache_problem"].is_null(), "{status}");
    }
}

/// Files in `dir` named `<name>.rejected-*`.
fn rejected(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.rejected-");
    let mut found: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    found.sort();
    found
}

/// The whole scenario for one way of damaging `bundle.v1.bin`: `damage` gets the scene and
/// the good cached bytes and returns what to put in their place. `code` is the refusal code
/// the agent gives the damage (`unreadable` when the file cannot be read as a bundle).
fn a_damaged_cache_is_set_aside_and_the_agent_recovers(
    line: &str,
    code: Option<&str>,
    damage: impl FnOnce(&Offline, Vec<u8>) -> Vec<u8>,
) {
    let mut scene = Offline::licensed_then_offline();
    let path = scene.state_file(BUNDLE_FILE);
    let good = fs::read(&path).unwrap();
    let bad = damage(&scene, good.clone());
    assert_ne!(bad, good, "the case must change the cache");
    fs::write(&path, &bad).unwrap();

    // No daemon: `licd check` evaluates the cache read-only, refuses it, says so in one line
    // on stderr and exits 4 (OPERATIONS.md: cache unreadable) — not "never granted" — and
    // moves nothing. `licd status` shows the problem and exits 4 too.
    for args in [&["check", "wifi", "--json"][..], &["check", "wifi"]] {
        let (exit, stdout, stderr) = scene.agent.cli(args).unwrap();
        assert_eq!(exit, 4, "{args:?}: stdout {stdout:?} stderr {stderr:?}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(
            stderr.starts_with("licd: cached bundle") && stderr.contains(BUNDLE_FILE),
            "{args:?}: {stderr:?}"
        );
    }
    let (exit, stdout, stderr) = scene.agent.cli(&["status", "--json"]).unwrap();
    assert_eq!(exit, 4, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["source"], "cache", "{status}");
    let problem = &status["cache_problem"];
    assert!(
        problem["message"]
            .as_str()
            .is_some_and(|m| stderr.contains(m)),
        "{status}"
    );
    if let Some(code) = code {
        assert_eq!(problem["code"], code, "{status}");
    }
    let (exit, stdout, _) = scene.agent.cli(&["status"]).unwrap();
    assert_eq!(exit, 4);
    assert!(stdout.contains("cache       UNUSABLE: "), "{stdout}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bad,
        "licd check must not touch the cache"
    );

    // The daemon, broker down: alive, unlicensed (never granted), the file moved aside.
    let from = scene.restart_offline();
    scene.agent.wait_state("wifi", "unlicensed", T).unwrap();
    let answer = scene.agent.check("wifi").unwrap();
    assert_eq!(answer["reason"], "never_granted", "{answer}");
    let status = scene.agent.status().unwrap();
    assert!(status["bundle"].is_null(), "{status}");
    // The running daemon shows what it found and where it put it.
    assert!(
        status["cache_problem"]["set_aside_to"]
            .as_str()
            .is_some_and(|to| to.contains(".rejected-")),
        "{status}"
    );
    let log = scene.log_since(from);
    assert!(log.contains(line), "expected {line:?} in\n{log}");
    if let Some(code) = code {
        assert!(
            log.contains(code),
            "expected refusal code {code:?} in\n{log}"
        );
    }
    let aside = rejected(&scene.agent.state_dir(), BUNDLE_FILE);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read(&aside[0]).unwrap(),
        bad,
        "moved aside, not changed"
    );
    assert!(!path.exists(), "the damaged cache is no longer in place");

    scene.broker_back_and_licensed_again();
}

#[test]
fn random_bytes_in_the_cache_are_refused_set_aside_and_the_agent_relicenses() {
    a_damaged_cache_is_set_aside_and_the_agent_recovers(REFUSED, None, |_, good| {
        let mut rng = Rng(0x5eed_0001);
        (0..good.len()).map(|_| rng.next() as u8).collect()
    });
}

#[test]
fn a_cache_truncated_to_half_is_refused_set_aside_and_the_agent_relicenses() {
    a_damaged_cache_is_set_aside_and_the_agent_recovers(
        REFUSED,
        Some("malformed"),
        |_, mut good| {
            good.truncate(good.len() / 2);
            good
        },
    );
}

#[test]
fn one_flipped_bit_in_the_cache_is_refused_set_aside_and_the_agent_relicenses() {
    a_damaged_cache_is_set_aside_and_the_agent_recovers(REFUSED, None, |_, mut good| {
        let bit = Rng(0x5eed_0002).next() as usize % (good.len() * 8);
        good[bit / 8] ^= 1 << (bit % 8);
        good
    });
}

#[test]
fn an_empty_cache_file_is_refused_set_aside_and_the_agent_relicenses() {
    a_damaged_cache_is_set_aside_and_the_agent_recovers(REFUSED, Some("malformed"), |_, _| {
        Vec::new()
    });
}

#[test]
fn an_oversized_cache_file_is_unreadable_set_aside_and_the_agent_relicenses() {
    a_damaged_cache_is_set_aside_and_the_agent_recovers(
        UNREADABLE,
        Some("unreadable"),
        |_, mut good| {
            good.resize(MAX_ENVELOPE_LEN + 1, 0);
            good
        },
    );
}

#[test]
fn a_valid_bundle_for_another_device_is_refused_set_aside_and_the_agent_relicenses() {
    a_damaged_cache_is_set_aside_and_the_agent_recovers(REFUSED, Some("wrong_device"), |s, _| {
        let mut other = s.report.clone();
        other.device = DeviceId::new("ap-2").unwrap();
        s.sealed(&other, s.scene.controller.seq() + 1)
    });
}

#[test]
fn a_valid_bundle_for_this_id_but_another_device_key_is_refused_and_the_agent_relicenses() {
    // A cache copied from another unit configured with the same device id.
    a_damaged_cache_is_set_aside_and_the_agent_recovers(
        REFUSED,
        Some("wrong_device_key"),
        |s, _| {
            let mut other = s.report.clone();
            let stranger = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
            other.device_key = PublicKey::from(&stranger.verifying_key());
            s.sealed(&other, s.scene.controller.seq() + 1)
        },
    );
}

#[test]
fn a_cache_without_its_device_key_is_reported_by_an_offline_check_not_never_granted() {
    let scene = Offline::licensed_then_offline();
    fs::remove_file(scene.state_file("device.key")).unwrap();
    let (exit, stdout, stderr) = scene.agent.cli(&["check", "wifi"]).unwrap();
    assert_eq!(exit, 4, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("device key"), "{stderr:?}");
    let (exit, stdout, _) = scene.agent.cli(&["status", "--json"]).unwrap();
    assert_eq!(exit, 4);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["cache_problem"]["code"], "no_device_key", "{status}");
}

#[test]
fn a_corrupt_time_mark_is_set_aside_and_the_cached_grant_still_holds() {
    let mut scene = Offline::licensed_then_offline();
    let mark = scene.state_file(MARK_FILE);
    let garbage = b"\x00\xffnot a time\n".to_vec();
    fs::write(&mark, &garbage).unwrap();

    let from = scene.restart_offline();
    scene.agent.wait_state("wifi", "licensed", T).unwrap();
    let log = scene.log_since(from);
    assert!(log.contains("time mark unreadable"), "{log}");
    let aside = rejected(&scene.agent.state_dir(), MARK_FILE);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(&aside[0]).unwrap(), garbage);
    assert!(
        rejected(&scene.agent.state_dir(), BUNDLE_FILE).is_empty(),
        "the bundle is fine and stays"
    );

    // A fresh mark is written from the cached bundle's time (and the clock).
    let issued_at = scene.agent.status().unwrap()["bundle"]["issued_at"]
        .as_u64()
        .unwrap();
    wait_for("a fresh time mark", T, || {
        fs::read_to_string(&mark)
            .ok()
            .and_then(|t| t.trim_end().parse::<u64>().ok())
            .is_some_and(|m| m >= issued_at)
    })
    .unwrap();

    scene.scene.broker.start_again().unwrap();
    wait_for("the agent to reconnect", T, || {
        scene
            .agent
            .status()
            .is_some_and(|s| s["connection"]["connected"] == true)
    })
    .unwrap();
    assert_eq!(scene.agent.state_of("wifi").as_deref(), Some("licensed"));
}
