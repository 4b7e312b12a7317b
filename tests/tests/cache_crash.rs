//! Crash consistency of the cache: a child process writes signed bundles (seq n, n+1, …) to a
//! state directory with the agent's own `Store::save_bundle` in a tight loop, and is killed with
//! SIGKILL at a random moment. After every kill the cache is loaded the way the agent loads it
//! at start (`Store::load_bundle` + `Enforcer::restore`) and must be a valid bundle: the last
//! one the child reported saved, or the one it was writing — never missing, never corrupt.
//!
//! The child is this test binary run again (`current_exe`) with only [`CHILD_TEST`] selected
//! and [`CHILD_DIR_ENV`] set; without that variable the child test does nothing.
//!
//! Trials: `LICD_KILL_TRIALS` (default 200, e.g. 1000 locally); seed: `LICD_KILL_SEED`.
//! SIGKILL tests process crashes (what the page cache holds survives); power cuts additionally
//! rely on the fsyncs, which this test cannot observe.

// Helpers outside #[test] fns unwrap too: a failed step is a test failure with a backtrace.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use licd_agent::enforce::{AcceptanceRules, Enforcer};
use licd_agent::store::{Store, BUNDLE_FILE};
use licd_protocol::envelope::seal_bundle;
use licd_protocol::{
    DeviceId, GrantBundle, LicenseId, PublicKey, ServiceGrant, ServiceName, SignerCertificate, Sku,
    TenantId, TrustStore, UnixTime,
};

/// The child's test name (see the module docs).
const CHILD_TEST: &str = "child_cache_writer";
/// Set for the child only: the state directory it writes to.
const CHILD_DIR_ENV: &str = "LICD_CRASH_CHILD_DIR";
/// Set for the child only: the seq it starts after.
const CHILD_SEQ_ENV: &str = "LICD_CRASH_CHILD_SEQ";
/// Trials (kills) in one run.
const TRIALS_ENV: &str = "LICD_KILL_TRIALS";
const DEFAULT_TRIALS: u64 = 200;
/// Seed of the kill delays.
const SEED_ENV: &str = "LICD_KILL_SEED";
const DEFAULT_SEED: u64 = 0x6b69_6c6c_2d39;
/// A kill lands uniformly within this long after the child said it started writing; a few
/// fsync'd writes fit in it on a disk (~10 ms each on this machine's ext4), many on tmpfs.
const MAX_KILL_DELAY_US: u64 = 40_000;
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// How long the parent waits for a child to start writing.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Bundles' `issued_at`; the cache is evaluated at this time (no wall clock involved).
const T0: UnixTime = 1_800_000_000;

/// Fixed keys shared by parent and child.
struct Fixture {
    signing: SigningKey,
    cert: SignerCertificate,
    rules: AcceptanceRules,
}

impl Fixture {
    fn new() -> Self {
        let root = SigningKey::from_bytes(&[21; 32]);
        let signing = SigningKey::from_bytes(&[22; 32]);
        let device_key = SigningKey::from_bytes(&[23; 32]);
        let cert = SignerCertificate::issue(
            &root,
            PublicKey::from(&signing.verifying_key()),
            0,
            u64::MAX,
        );
        let rules = AcceptanceRules {
            trust: TrustStore::new(vec![PublicKey::from(&root.verifying_key())]),
            device: DeviceId::new("ap-1").unwrap(),
            device_key: PublicKey::from(&device_key.verifying_key()).id(),
            future_tolerance: 300,
        };
        Self {
            signing,
            cert,
            rules,
        }
    }

    /// A signed bundle with seq `seq`; its size changes with `seq` (0–3 grants), so a torn
    /// write of one over another could not pass for either.
    fn sealed(&self, seq: u64) -> Vec<u8> {
        let grants = (0..seq % 4)
            .map(|i| ServiceGrant {
                service: ServiceName::new(format!("svc-{i}")).unwrap(),
                license: LicenseId::new(format!("lic-{seq}-{i}")).unwrap(),
                sku: Sku::new("SKU-CRASH").unwrap(),
                not_before: T0 - 60,
                not_after: T0 + 365 * 86_400,
                lease_until: T0 + 3_600,
                grace: 600,
                vm_allowance: None,
            })
            .collect();
        let bundle = GrantBundle {
            device: self.rules.device.clone(),
            device_key: self.rules.device_key,
            tenant: TenantId::new("acme").unwrap(),
            seq,
            issued_at: T0,
            refresh_after: T0 + 1_800,
            grants,
            withheld: vec![],
        };
        seal_bundle(&bundle, &self.signing, &self.cert)
    }

    /// The cache as the agent loads it at start: the seq of the bundle it would enforce.
    fn load(&self, store: &Store) -> Result<u64, String> {
        let raw = store
            .load_bundle()
            .map_err(|e| format!("unreadable: {e}"))?
            .ok_or("missing")?;
        let mut enforcer = Enforcer::new(self.rules.clone(), [ServiceName::new("svc-0").unwrap()]);
        enforcer
            .restore(&raw, T0)
            .map_err(|e| format!("refused ({}): {e}", e.code()))?;
        Ok(enforcer.held_seq())
    }
}

/// SplitMix64: deterministic randomness, no dependency.
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

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The child: writes bundles seq+1, seq+2, … until killed, printing `saved N` after each
/// `save_bundle` returned. Does nothing unless [`CHILD_DIR_ENV`] is set.
#[test]
fn child_cache_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let fixture = Fixture::new();
    let store = Store::open(dir).unwrap();
    let mut seq = env_u64(CHILD_SEQ_ENV, 0);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    while started.elapsed() < CHILD_LIFETIME {
        seq += 1;
        // Signing takes tens of µs, a write with two fsyncs milliseconds on a disk.
        store.save_bundle(&fixture.sealed(seq)).unwrap();
        // A closed pipe means the parent is gone: stop.
        if writeln!(out, "saved {seq}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// What the parent hears from a child.
enum Heard {
    Ready,
    Saved(u64),
}

/// How one trial ended.
#[derive(Debug, Default)]
struct Outcomes {
    trials: u64,
    /// The cache held the last bundle the child reported saved (or the previous trial's).
    old: u64,
    /// The cache held the bundle after that: killed after the rename, before the report.
    new: u64,
    /// The temp file was there at the kill: the kill landed inside a write.
    mid_write: u64,
    /// The child had completed no write yet.
    before_first_write: u64,
    writes: u64,
}

fn spawn_child(dir: &Path, held: u64) -> (std::process::Child, mpsc::Receiver<Heard>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEQ_ENV, held.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest's "test child_cache_writer ... " shares the first line with "ready".
            let heard = match line.strip_prefix("saved ") {
                Some(n) => Heard::Saved(n.parse().unwrap()),
                None if line.ends_with("ready") => Heard::Ready,
                None => continue,
            };
            if tx.send(heard).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn kill_9_during_cache_writes_always_leaves_the_old_or_the_new_valid_bundle() {
    let trials = env_u64(TRIALS_ENV, DEFAULT_TRIALS);
    let mut rng = Rng(env_u64(SEED_ENV, DEFAULT_SEED));
    let fixture = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let store = Store::open(&dir).unwrap();
    store.save_bundle(&fixture.sealed(1)).unwrap();
    let temp_file = dir.join(format!(".{BUNDLE_FILE}.tmp"));
    let mut held = 1;
    let mut o = Outcomes::default();
    let started = Instant::now();

    for trial in 0..trials {
        let (mut child, heard) = spawn_child(&dir, held);
        match heard.recv_timeout(CHILD_START_TIMEOUT) {
            Ok(Heard::Ready) => {}
            _ => {
                let _ = child.kill();
                panic!("trial {trial}: the child writer did not start");
            }
        }
        // The kill moment is the random variable under test, not a wait for a condition.
        std::thread::sleep(Duration::from_micros(rng.next() % MAX_KILL_DELAY_US));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "trial {trial}: the child exited by itself"
        );
        let mid_write = temp_file.exists();

        // The reader thread ends at EOF; everything the child reported is in the channel.
        let last_saved = heard
            .iter()
            .filter_map(|h| match h {
                Heard::Saved(n) => Some(n),
                Heard::Ready => None,
            })
            .max();
        let old = last_saved.unwrap_or(held);
        let seq = match fixture.load(&store) {
            Ok(seq) => seq,
            Err(why) => panic!(
                "trial {trial}: cache {why} after a kill (last saved {last_saved:?}, held {held}; \
                 state dir kept at {})",
                tmp.keep().display()
            ),
        };
        assert!(
            seq == old || seq == old + 1,
            "trial {trial}: the cache holds seq {seq}; expected {old} (old) or {} (new)",
            old + 1
        );
        o.trials += 1;
        o.writes += last_saved.map_or(0, |n| n - held);
        o.before_first_write += u64::from(last_saved.is_none());
        o.mid_write += u64::from(mid_write);
        if seq == old {
            o.old += 1;
        } else {
            o.new += 1;
        }
        held = seq;
    }
    eprintln!(
        "kill -9 trials: {} in {:.1?} — cache valid after every kill: old bundle {}, new bundle \
         {}; kills inside a write (temp file present) {}, before the first write {}; {} writes \
         completed",
        o.trials,
        started.elapsed(),
        o.old,
        o.new,
        o.mid_write,
        o.before_first_write,
        o.writes
    );
    assert_eq!(o.old + o.new, trials);
    if trials >= 100 {
        // A run whose kills never landed inside a write would prove nothing.
        assert!(o.mid_write > 0, "no kill landed inside a write: {o:?}");
    }
}
