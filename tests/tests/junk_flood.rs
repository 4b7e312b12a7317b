//! The junk-flood gate (issue 16): junk on **every** topic the agent subscribes to — its
//! grants topic, both trust topics and any other topic the trust filter matches, its
//! diag-request topic — against a real `licd` on a real mosquitto. The agent must count every
//! message as refused in `licd status --json` (per topic), keep its log to a few lines (one
//! warning per topic per 10 s, whatever the rate), and change nothing: same bundle, same
//! states, still connected.
//!
//! The topics come from the agent's own code (`DeviceTopics`, `TRUST_FILTER`), so a new
//! subscription without a matching case here shows up as a missing topic. Run with
//! `--nocapture` for the figures; `LICD_JUNK_PER_TOPIC` changes the flood size.

mod hardening;

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hardening::{agent_pid, alive, Publisher};
use licd_agent::session::DeviceTopics;
use licd_protocol::envelope::seal_report;
use licd_protocol::revocation::seal_revocations;
use licd_protocol::topic::{TRUST_FILTER, TRUST_REVOCATIONS, TRUST_ROOTS};
use licd_protocol::{DeviceId, RevocationList, TenantId};
use licd_tests::agent::Agent;
use licd_tests::{wait_for, Scene};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Junk messages per topic unless `LICD_JUNK_PER_TOPIC` says otherwise (the issue measured
/// 2,500 on each trust topic).
const DEFAULT_PER_TOPIC: u64 = 2_500;
/// Warnings are rate-limited per topic class: grants, trust, diag-request, other.
const CLASSES: u64 = 4;
/// The limiter's period (agent/src/daemon/mod.rs `REFUSAL_LOG_EVERY`).
const LOG_EVERY_SECS: u64 = 10;

fn per_topic() -> u64 {
    std::env::var("LICD_JUNK_PER_TOPIC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PER_TOPIC)
}

/// `licd status --json`, run as a user would (the CLI asks the daemon over its socket).
fn cli_status(agent: &Agent) -> Value {
    let (code, stdout, stderr) = agent.cli(&["status", "--json"]).unwrap();
    assert_eq!(code, 0, "licd status failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn junk_on_every_subscribed_topic_is_counted_and_logged_a_few_times_only() {
    let scene = Scene::start().unwrap();
    let (rt, controller) = (scene.rt(), &scene.controller);
    // What an installed agent logs: info and up.
    let agent = scene.agent_with(|o| o.log_level = "info".into()).unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    controller.set_policy(|p| p.answer = false);
    let pid = agent_pid(&agent).expect("the agent's pid");
    let before = cli_status(&agent);
    assert_eq!(before["refusals"]["total"], 0, "{before}");

    // Every topic the agent subscribes to, from its own code, plus one more topic the trust
    // filter matches.
    let topics = DeviceTopics::new(
        &TenantId::new("acme").unwrap(),
        &DeviceId::new("ap-1").unwrap(),
    );
    let stray = TRUST_FILTER.replace('+', "junk");
    let flood: [(&str, &str); 5] = [
        (topics.grants.as_str(), "grants"),
        (TRUST_ROOTS, "trust"),
        (TRUST_REVOCATIONS, "trust"),
        (topics.diag_request.as_str(), "diag_request"),
        (stray.as_str(), "other"),
    ];

    // Junk of several kinds: bytes that are no envelope, a genuine bundle cut short, a signed
    // message of the wrong kind, a revocation list signed by a root nobody pins.
    let report = scene.first_report().unwrap();
    let valid = scene.bundle().unwrap().seq(1_000).seal();
    let stranger = SigningKey::from_bytes(&[0x66; 32]);
    let kinds = [
        b"\xffnot an envelope".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        seal_report(&report, &stranger),
        seal_revocations(
            &RevocationList {
                version: 99,
                issued_at: 0,
                revoked: vec![],
            },
            &stranger,
        ),
    ];

    let n = per_topic();
    let log_before = agent.log().lines().count();
    let attacker = {
        let _g = rt.enter();
        Publisher::plain(scene.broker.port(), "junk-flooder")
    };
    attacker.wait_connected();
    let started = Instant::now();
    {
        let _g = rt.enter();
        rt.block_on(async {
            for i in 0..n {
                for (topic, _) in &flood {
                    let junk = kinds[(i % kinds.len() as u64) as usize].clone();
                    attacker.publish(topic, junk, false).await;
                }
            }
        });
    }
    let expected = |class: &str| n * flood.iter().filter(|(_, c)| *c == class).count() as u64;
    let total = n * flood.len() as u64;
    wait_for(
        "every junk message to be counted",
        Duration::from_secs(300),
        || {
            agent
                .status()
                .is_some_and(|s| s["refusals"]["total"].as_u64() == Some(total))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}; refusals {:?}\n{}",
            agent.status().map(|s| s["refusals"].clone()),
            agent.log()
        )
    });
    let elapsed = started.elapsed();

    let after = cli_status(&agent);
    let counts = &after["refusals"]["by_topic"];
    for class in ["grants", "trust", "diag_request", "other"] {
        assert_eq!(
            counts[class].as_u64(),
            Some(expected(class)),
            "{class}: {after}"
        );
    }
    let log = agent.log();
    let new_lines: Vec<&str> = log.lines().skip(log_before).collect();
    let bound = CLASSES * (2 + elapsed.as_secs() / LOG_EVERY_SECS);
    println!(
        "junk flood: {total} messages on {} topics refused and counted in {elapsed:?} ({:.0}/s); \
         {} log lines (bound {bound})",
        flood.len(),
        total as f64 / elapsed.as_secs_f64(),
        new_lines.len()
    );
    assert!(
        new_lines.len() as u64 <= bound,
        "{} log lines for {total} refusals:\n{}",
        new_lines.len(),
        new_lines.join("\n")
    );
    // Each class said so at least once, with its reason code.
    for what in [
        "grant bundle refused",
        "trust message refused",
        "diagnostic request refused",
        "message on an unexpected topic refused",
    ] {
        assert!(
            new_lines.iter().any(|l| l.contains(what)),
            "no {what:?} in\n{}",
            new_lines.join("\n")
        );
    }

    // Nothing changed.
    assert!(alive(pid), "the agent died during the flood");
    assert_eq!(after["bundle"], before["bundle"]);
    assert_eq!(after["services"], before["services"]);
    assert_eq!(after["trust"], before["trust"]);
    assert_eq!(after["connection"]["connected"], true, "{after}");
}
