//! `licd-client` (Rust) against a real `licd` on a real mosquitto with the test controller:
//! check, status, watch seeing a revocation, "not running" and the cache fallback once the
//! agent stops. Also measures check latency through the client (printed; run with
//! `--nocapture` to see it). Every wait is on a condition with a timeout.

// Helpers outside `#[test]` functions (runtime, builds) unwrap too: in a test a panic is a
// failure with a message, which clippy.toml's allow-unwrap-in-tests means but does not cover.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use licd_client::{Client, ClientError, Event, Reason, Source, State};
use licd_tests::agent::Agent;
use licd_tests::controller::{unix_now, Policy};
use licd_tests::Scene;

const T: Duration = Duration::from_secs(30);

fn socket(agent: &Agent) -> std::path::PathBuf {
    agent.state.join("licd.sock")
}

#[test]
fn check_status_and_not_running_through_the_client_then_the_cache_fallback_agrees() {
    let scene = Scene::start().unwrap();
    let mut agent = scene.licensed_agent().unwrap();

    let mut client = Client::connect(socket(&agent)).unwrap();
    let verdict = client.verdict("wifi").unwrap();
    assert_eq!(verdict.source, Source::Daemon);
    assert_eq!(verdict.service, "wifi");
    match verdict.state {
        State::Licensed { until } => assert!(until > unix_now(), "{until}"),
        other => panic!("wifi should be licensed: {other:?}"),
    }
    assert_eq!(
        client.check("never-heard-of").unwrap(),
        State::Unlicensed {
            reason: Reason::NeverGranted
        }
    );
    let status = client.status().unwrap();
    assert_eq!(status["device"], "ap-1", "{status}");
    assert_eq!(status["source"], "daemon", "{status}");

    // An invalid name is refused alike by the client (before asking), the daemon and
    // `licd check`; below, by the cache path too.
    let refused = "invalid service name: identifier is empty";
    match client.check("") {
        Err(e @ ClientError::InvalidService(_)) => assert_eq!(e.to_string(), refused),
        other => panic!("expected InvalidService, got {other:?}"),
    }
    let raw = agent.check("").unwrap();
    assert_eq!(
        (raw["ok"].as_bool(), raw["error"].as_str()),
        (Some(false), Some(refused))
    );
    let long = "x".repeat(10_000);
    assert!(matches!(
        client.check(&long),
        Err(ClientError::InvalidService(_))
    ));
    assert_eq!(agent.check_cli("", &[]).unwrap().0, 4);
    assert_eq!(agent.check_cli(&long, &[]).unwrap().0, 4);

    // Latency through the client: one kept connection, and a connection per check (what the
    // C library's licd_check does).
    let timed = |n: usize, mut f: Box<dyn FnMut() + '_>| {
        let mut samples: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        samples.sort();
        (samples[n / 2], samples[n * 99 / 100])
    };
    let (p50, p99) = timed(
        2000,
        Box::new(|| {
            client.check("wifi").unwrap();
        }),
    );
    eprintln!("check latency, kept connection, 2000 calls: p50 {p50:?} p99 {p99:?}");
    let path = socket(&agent);
    let (p50, p99) = timed(
        2000,
        Box::new(|| {
            Client::connect(&path).unwrap().check("wifi").unwrap();
        }),
    );
    eprintln!("check latency, connection per call, 2000 calls: p50 {p50:?} p99 {p99:?}");

    // The agent stops: a clear "not running", for a kept connection and a new one alike.
    assert!(agent.stop().unwrap());
    match client.check("wifi") {
        Err(ClientError::NotRunning { path, .. }) => assert_eq!(path, socket(&agent)),
        other => panic!("expected NotRunning, got {other:?}"),
    }
    let err = Client::connect(socket(&agent)).unwrap_err();
    assert!(err.is_not_running(), "{err:?}");
    assert!(err.to_string().contains("licd is not running"), "{err}");

    // The fallback evaluates the cache with the agent's rules, as `licd check` does.
    let verdict = licd_client::fallback::check(&agent.config_path(), "wifi").unwrap();
    assert_eq!(verdict.source, Source::Cache);
    assert!(
        matches!(verdict.state, State::Licensed { .. }),
        "{verdict:?}"
    );
    let (code, cli) = agent.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, cli["source"].as_str()), (0, Some("cache")));
    assert_eq!(Some(verdict.state.name()), cli["state"].as_str());
    assert_eq!(verdict.state.until(), cli["until"].as_u64());
    assert!(matches!(
        licd_client::fallback::check(&agent.config_path(), ""),
        Err(ClientError::InvalidService(_))
    ));
    assert_eq!(agent.check_cli("", &[]).unwrap().0, 4);
    let unknown = licd_client::fallback::check(&agent.config_path(), "never-heard-of").unwrap();
    assert_eq!(
        unknown.state,
        State::Unlicensed {
            reason: Reason::NeverGranted
        }
    );

    // A truncated cache is an error naming the file, as `licd check` exits 4 for it: not an
    // "unlicensed, never granted" verdict.
    let cache = agent.state_dir().join("bundle.v1.bin");
    let good = std::fs::read(&cache).unwrap();
    std::fs::write(&cache, &good[..good.len() / 2]).unwrap();
    match licd_client::fallback::check(&agent.config_path(), "wifi") {
        Err(ClientError::Cache(why)) => {
            assert!(
                why.contains("bundle.v1.bin") && why.contains("unusable"),
                "{why}"
            )
        }
        other => panic!("expected a cache error, got {other:?}"),
    }
    let (code, _) = agent.check_cli("wifi", &[]).unwrap();
    assert_eq!(code, 4);
}

#[test]
fn a_watch_sees_the_revocation_when_the_controller_stops_granting() {
    let scene = Scene::with_policy(Policy {
        lease: 4,
        grace: 2,
        ..Policy::default()
    })
    .unwrap();
    let agent = scene.licensed_agent().unwrap();

    let mut client = Client::connect(socket(&agent)).unwrap();
    let mut watch = client.watch().unwrap();
    // The watch is confirmed: from here no change can be missed.
    assert!(client.check("wifi").unwrap().may_run());
    watch.set_timeout(Some(T)).unwrap();
    scene.controller.set_policy(|p| p.services.clear());

    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    let last = loop {
        assert!(Instant::now() < deadline, "no revocation seen: {seen:?}");
        match watch.next() {
            Some(Ok(Event::Changed { service, state })) if service == "wifi" => {
                seen.push(format!("{state:?}"));
                if !state.may_run() {
                    break state;
                }
            }
            Some(Ok(other)) => seen.push(format!("{other:?}")),
            other => panic!("watch ended: {other:?} after {seen:?}\n{}", agent.log()),
        }
    };
    assert_eq!(
        last,
        State::Unlicensed {
            reason: Reason::Revoked
        },
        "{seen:?}"
    );
    assert_eq!(client.check("wifi").unwrap(), last);

    // A stopper ends the watch from another thread.
    let stopper = watch.stopper().unwrap();
    watch.set_timeout(None).unwrap();
    let waiter = std::thread::spawn(move || watch.next().is_none());
    stopper.stop();
    assert!(waiter.join().unwrap(), "a stopped watch ends with None");
}
