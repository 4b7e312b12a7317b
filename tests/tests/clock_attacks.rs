//! Clock attacks against the real `licd` binary, its wall clock faked with `libfaketime`
//! (Debian package `faketime`; `scripts/test.sh` installs it). The unit-level versions of the
//! same attacks are in `core/src/clock.rs` (`TrustedTime` with a test clock).
//!
//! The agent runs with `LD_PRELOAD=libfaketimeMT.so.1` and `FAKETIME_TIMESTAMP_FILE` pointing at
//! a file the test rewrites (`FAKETIME_NO_CACHE=1`: re-read at every clock call), so its wall
//! clock can be moved while it runs. `FAKETIME_DONT_FAKE_MONOTONIC=1` keeps tokio's timers on
//! the real monotonic clock. libfaketime intercepts the libc clock calls only: the agent reads
//! `CLOCK_BOOTTIME` through the vDSO (rustix), not through libc, so its boot clock stays real
//! (checked below: the uptime in its report matches `/proc/uptime`), which is exactly the
//! device situation the high-water mark is designed for: a wall clock anyone can set, and a
//! boot clock nobody can.
//!
//! The daemon samples the clock on every event and at least every 60 s; the tests nudge it with
//! a garbage message on its grants topic (refused, changes nothing) instead of waiting.
//!
//! Without libfaketime the tests fail with a message saying how to install it (or skip outside
//! CI).

mod hardening;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hardening::{grants_topic, Publisher, T};
use licd_stub::relay::run::RelayHandle;
use licd_stub::{Clock, Signer};
use licd_tests::controller::{unix_now, Policy};
use licd_tests::site::{start_site_relay, SiteRelayOptions};
use licd_tests::{licd_bin, wait_for, Scene, TempState, TestProcess};
use serde_json::{json, Value};

/// Where Debian installs the multi-threaded libfaketime (the agent runs tokio threads).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const YEAR: u64 = 365 * 86_400;

/// libfaketime, or `None` (with a message) when the test should skip.
fn libfaketime() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from(LIBFAKETIME),
        PathBuf::from("/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"),
        PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1"),
    ];
    if let Some(p) = candidates.iter().find(|p| p.exists()) {
        return Some(p.clone());
    }
    let msg = format!(
        "libfaketime not found ({}); install Debian's `faketime` package (scripts/test.sh does)",
        LIBFAKETIME
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A `licd` whose wall clock follows a faketime file.
struct FakeTimeAgent {
    state: TempState,
    clock_file: PathBuf,
    lib: PathBuf,
    process: Option<TestProcess>,
}

impl FakeTimeAgent {
    /// Writes a config for the plain broker on `port` and starts the agent with its clock at
    /// `spec` (libfaketime syntax: `+0`, `-365d`, `@1970-01-01 00:00:00`).
    fn start(lib: PathBuf, port: u16, root_hex: &str, spec: &str) -> Self {
        Self::start_with(lib, port, root_hex, spec, "")
    }

    /// The same, configured for `site` (licensed by that site's relay).
    fn start_at_site(lib: PathBuf, port: u16, root_hex: &str, spec: &str, site: &str) -> Self {
        Self::start_with(lib, port, root_hex, spec, &format!("site = {site:?}\n"))
    }

    fn start_with(lib: PathBuf, port: u16, root_hex: &str, spec: &str, top: &str) -> Self {
        let state = TempState::new("faketime").unwrap();
        let config = format!(
            "tenant = \"acme\"\nservices = [\"wifi\"]\n{top}state_dir = {:?}\nroots = [{root_hex:?}]\n\n\
             [broker]\nurl = \"mqtt://127.0.0.1:{port}\"\nallow_insecure = true\n\
             reconnect_max_secs = 2\nkeep_alive_secs = 5\n\n[api]\nsocket = {:?}\n\n\
             [log]\nlevel = \"debug,rumqttc=info\"\n\n[identity]\ndevice_id = \"ap-1\"\n\
             model = \"AP-TEST\"\nserial = \"SN-TEST\"\nproduct_class = \"wireless\"\n",
            state.join("state").display().to_string(),
            state.join("licd.sock").display().to_string(),
        );
        state.write("licd.toml", config).unwrap();
        let clock_file = state.join("faketime");
        let mut agent = Self {
            state,
            clock_file,
            lib,
            process: None,
        };
        agent.set_clock(spec);
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(licd_bin().unwrap());
        cmd.arg("--config")
            .arg(self.state.join("licd.toml"))
            .arg("run")
            .current_dir(self.state.path())
            .env("LD_PRELOAD", &self.lib)
            .env("FAKETIME_TIMESTAMP_FILE", &self.clock_file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        self.process = Some(
            TestProcess::spawn("licd run (faketime)", cmd, &self.state.join("licd.log")).unwrap(),
        );
        wait_for("the faked agent to answer", T, || self.status().is_some())
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// Moves the agent's wall clock (takes effect at its next clock reading).
    fn set_clock(&self, spec: &str) {
        std::fs::write(&self.clock_file, format!("{spec}\n")).unwrap();
    }

    /// Stops it cleanly (SIGTERM: the time mark is saved).
    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            assert!(p.terminate(Duration::from_secs(10)).unwrap().success());
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn state_dir(&self) -> PathBuf {
        self.state.join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("licd.log")).unwrap_or_default()
    }

    fn status(&self) -> Option<Value> {
        let mut s = UnixStream::connect(self.state.join("licd.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"{\"v\":1,\"op\":\"status\"}\n").ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        serde_json::from_str::<Value>(&line)
            .ok()
            .map(|v| v["status"].clone())
    }

    fn service(&self) -> Value {
        let s = self
            .status()
            .unwrap_or_else(|| panic!("no answer\n{}", self.log()));
        s["services"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["service"] == "wifi").cloned())
            .unwrap_or(json!({}))
    }

    fn wait(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, T, || self.status().is_some_and(|s| pred(&s)))
            .unwrap_or_else(|e| panic!("{e}; last {:?}\n{}", self.status(), self.log()));
        self.status().unwrap()
    }

    fn wait_state(&self, state: &str) -> Value {
        wait_for(&format!("wifi {state}"), T, || {
            self.service()["state"] == state
        })
        .unwrap_or_else(|e| panic!("{e}; last {}\n{}", self.service(), self.log()));
        self.service()
    }
}

fn mark_file(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("time-mark.v1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A garbage message on the grants topic: refused, changes nothing, makes the daemon read
/// its clocks now. Waits until the refusal is counted.
fn nudge(rt: &tokio::runtime::Runtime, attacker: &Publisher, agent: &FakeTimeAgent) {
    let before = agent.status().unwrap()["refusals"]["total"]
        .as_u64()
        .unwrap();
    let _g = rt.enter();
    rt.block_on(attacker.publish_acked(&grants_topic(), b"tick".to_vec(), false));
    agent.wait("the nudge to be refused", |s| {
        s["refusals"]["total"].as_u64() == Some(before + 1)
    });
}

#[test]
fn libfaketime_moves_the_wall_clock_but_not_the_boot_clock() {
    let Some(lib) = libfaketime() else { return };
    let run = |cmd: &str| {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .env("LD_PRELOAD", &lib)
            .env("FAKETIME", "-365d")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let faked: u64 = run("date +%s").trim().parse().unwrap();
    let now = unix_now();
    assert!(
        faked + YEAR - 5 <= now && now <= faked + YEAR + 5,
        "{faked} vs {now}"
    );
    let up = |s: &str| -> f64 { s.split_whitespace().next().unwrap().parse().unwrap() };
    let faked_uptime = up(&run("cat /proc/uptime"));
    let real_uptime = up(&std::fs::read_to_string("/proc/uptime").unwrap());
    assert!(
        (faked_uptime - real_uptime).abs() < 5.0,
        "/proc/uptime under faketime {faked_uptime} vs {real_uptime}"
    );
}

#[test]
fn a_clock_set_back_a_year_after_a_grant_gives_no_extra_validity_and_flags_rollback() {
    let Some(lib) = libfaketime() else { return };
    let scene = Scene::with_policy(Policy {
        lease: 8,
        grace: 4,
        ..Policy::default()
    })
    .unwrap();
    let (rt, controller) = (scene.rt(), &scene.controller);
    let _g = scene.enter();
    let attacker = Publisher::plain(scene.broker.port(), "attacker");
    let agent = FakeTimeAgent::start(lib, scene.broker.port(), &scene.root_hex(), "+0");
    agent.wait_state("licensed");
    // The controller goes silent: the lease in hand is all the agent has.
    controller.set_policy(|p| p.answer = false);
    let granted = agent.status().unwrap();
    let lease_until = granted["services"][0]["until"].as_u64();
    let seq = granted["bundle"]["seq"].clone();
    assert_eq!(granted["clock"]["rollback"], false);

    agent.set_clock("-365d");
    nudge(rt, &attacker, &agent);
    let s = agent.status().unwrap();
    let real = unix_now();
    let wall = s["clock"]["wall"].as_u64().unwrap();
    let now = s["clock"]["now"].as_u64().unwrap();
    println!("clock set back a year: wall {wall}, evaluation time {now}, real {real}");
    assert!(wall + YEAR - 10 <= real && real <= wall + YEAR + 10, "{s}");
    assert!(
        now + 2 >= real,
        "evaluation time followed the wall clock back: {s}"
    );
    assert_eq!(s["clock"]["rollback"], true, "{s}");

    // The lease ends on the real schedule: grace, then unlicensed — not a year later.
    let grace = agent.wait_state("grace");
    assert_eq!(grace["reason"], "lease_expired", "{grace}");
    let at_grace = unix_now();
    if let Some(until) = lease_until {
        assert!(at_grace + 2 >= until, "grace before the lease ended");
    }
    let gone = agent.wait_state("unlicensed");
    assert_eq!(gone["reason"], "lease_expired", "{gone}");
    assert!(
        unix_now() <= at_grace + 4 + 3,
        "unlicensed long after grace ended"
    );
    assert_eq!(agent.status().unwrap()["bundle"]["seq"], seq);
    // The report sent when grace started told the controller about the rollback.
    wait_for("a report with the rollback flag", T, || {
        controller.reports().iter().any(|r| r.clock_rollback)
    })
    .unwrap();
    // Its boot clock was not faked with the wall clock.
    let reported = controller
        .reports()
        .iter()
        .rev()
        .find(|r| r.clock_rollback)
        .map(|r| r.uptime)
        .unwrap();
    let real_uptime = std::fs::read_to_string("/proc/uptime").unwrap();
    let real_uptime: f64 = real_uptime
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (reported as f64 - real_uptime).abs() < 30.0,
        "the agent reported uptime {reported} s under faketime, /proc/uptime says {real_uptime}"
    );
}

#[test]
fn an_agent_booting_in_1970_with_a_cached_bundle_enforces_from_the_high_water_mark() {
    let Some(lib) = libfaketime() else { return };
    let mut scene = Scene::start().unwrap();
    let mut agent = FakeTimeAgent::start(lib, scene.broker.port(), &scene.root_hex(), "+0");
    agent.wait_state("licensed");
    let issued_at = agent.status().unwrap()["bundle"]["issued_at"]
        .as_u64()
        .unwrap();
    drop(scene.controller);
    scene.broker.stop().unwrap();
    agent.stop();
    let mark = mark_file(&agent.state_dir());
    assert!(mark >= issued_at);

    // Power cycle without an RTC: the wall clock starts at the epoch.
    agent.set_clock("@1970-01-01 00:00:00");
    agent.spawn();
    let s = agent.wait("the 1970 reading", |s| {
        s["clock"]["wall"].as_u64() < Some(86_400)
    });
    println!(
        "booted in 1970: wall {}, evaluation time {} (mark {mark}), rollback {}",
        s["clock"]["wall"], s["clock"]["now"], s["clock"]["rollback"]
    );
    assert!(s["clock"]["now"].as_u64().unwrap() >= mark, "{s}");
    assert_eq!(s["clock"]["rollback"], true, "{s}");
    assert_eq!(agent.service()["state"], "licensed", "{s}");
    assert!(agent.log().contains("enforcing from cache"));

    // Even with the mark file lost, the cached bundle's signed issued_at is a floor.
    agent.stop();
    std::fs::remove_file(agent.state_dir().join("time-mark.v1")).unwrap();
    agent.restart();
    let s = agent.wait("the 1970 reading without a mark", |s| {
        s["clock"]["wall"].as_u64() < Some(86_400)
    });
    assert!(s["clock"]["now"].as_u64().unwrap() >= issued_at, "{s}");
    assert_eq!(agent.service()["state"], "licensed", "{s}");
}

#[test]
fn a_clock_jumped_forward_ends_leases_and_setting_it_back_does_not_undo_that() {
    let Some(lib) = libfaketime() else { return };
    // Lease 1 h, grace 10 min: a jump of 2 h is past both.
    let scene = Scene::start().unwrap();
    let (rt, controller) = (scene.rt(), &scene.controller);
    let _g = scene.enter();
    let attacker = Publisher::plain(scene.broker.port(), "attacker");
    let agent = FakeTimeAgent::start(lib, scene.broker.port(), &scene.root_hex(), "+0");
    agent.wait_state("licensed");
    controller.set_policy(|p| p.answer = false);

    agent.set_clock("+2h");
    nudge(rt, &attacker, &agent);
    let gone = agent.wait_state("unlicensed");
    assert_eq!(gone["reason"], "lease_expired", "{gone}");

    // Setting the clock back does not bring the license back: the mark stays ahead.
    agent.set_clock("+0");
    nudge(rt, &attacker, &agent);
    let s = agent.status().unwrap();
    assert_eq!(s["clock"]["rollback"], true, "{s}");
    assert!(
        s["clock"]["now"].as_u64().unwrap() >= unix_now() + 7_200 - 5,
        "{s}"
    );
    assert_eq!(agent.service()["state"], "unlicensed");
    println!(
        "clock jumped +2h then back: evaluation time stays {}s ahead; wifi {}",
        s["clock"]["now"].as_u64().unwrap() - unix_now(),
        agent.service()["state"]
    );
}

#[test]
fn an_expired_delegation_is_refused_even_with_the_device_and_relay_clocks_set_back() {
    let Some(lib) = libfaketime() else { return };
    let rt = licd_tests::runtime();
    let now = unix_now();
    let signer = Signer::ephemeral(now).unwrap();
    let root = signer.root_public_key().to_hex();
    let dir = tempfile::tempdir().unwrap();
    // The delegation runs out in an hour; the relay's clock is the test's to set.
    let (clock, relay_clock) = Clock::manual(now);
    let mut opts = SiteRelayOptions::wifi(2, 60);
    opts.clock = clock;
    let relay = rt
        .block_on(start_site_relay(&signer, dir.path(), opts))
        .unwrap();
    let port = relay.broker_addr().unwrap().port();
    // Real time until the attack (a manual clock does not run on its own).
    relay_clock.store(unix_now(), std::sync::atomic::Ordering::SeqCst);
    let mut agent = FakeTimeAgent::start_at_site(lib, port, &root, "+0", "plant-7");
    agent.wait_state("licensed");

    // Two hours pass on the device: the relay's lease and its delegation are over. The relay
    // still answers (its clock, set back by whoever holds the site, keeps the delegation
    // valid), and the device refuses it by its own time.
    agent.set_clock("+2h");
    let s = restart_until_the_relay_is_refused(&mut agent, &relay);
    assert_ne!(agent.service()["state"], "licensed", "{s}");

    // Now the device's clock is set back into the window too. Its trusted time stays ahead
    // (the mark), so the relay's next bundle, stamped inside the window, is refused again.
    relay_clock.store(unix_now(), std::sync::atomic::Ordering::SeqCst);
    agent.set_clock("+0");
    let s = restart_until_the_relay_is_refused(&mut agent, &relay);
    println!(
        "delegation expired, clocks set back: wall {}, evaluation time {}, rollback {}, refusal {}",
        s["clock"]["wall"],
        s["clock"]["now"],
        s["clock"]["rollback"],
        s["refusals"]["last_message"]
    );
    assert!(
        s["clock"]["now"].as_u64().unwrap() >= now + 7_200 - 5,
        "the device's trusted time followed its clock back: {s}"
    );
    assert_eq!(s["clock"]["rollback"], true, "{s}");
    assert!(
        s["refusals"]["last_message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{s}"
    );
    assert_ne!(agent.service()["state"], "licensed", "{s}");
    agent.stop();
    rt.block_on(relay.shutdown());
}

/// Restarts the agent (it reports at start) and waits until the relay has answered that report
/// with a fresh bundle and the agent has refused it for the delegation's window: the retained
/// bundle it gets first and the fresh one make two refusals on the grants topic.
fn restart_until_the_relay_is_refused(agent: &mut FakeTimeAgent, relay: &RelayHandle) -> Value {
    let published = relay.bundles_published();
    agent.restart();
    wait_for("the relay to answer the restarted agent", T, || {
        relay.bundles_published() > published
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    agent.wait(
        "the relay's fresh bundle refused for the delegation's window",
        |s| {
            s["refusals"]["by_topic"]["grants"].as_u64() >= Some(2)
                && s["refusals"]["last_code"] == "delegation_validity"
        },
    )
}
