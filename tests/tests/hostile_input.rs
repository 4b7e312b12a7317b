//! Hostile MQTT input against a running agent: a real `licd`, a real mosquitto, a test
//! controller that granted `wifi`, and an attacker client publishing on the agent's grants
//! topic. Every hostile message must be refused with its precise reason code (status
//! `refusals.last_code`), and after each one the agent is alive, still connected, holds the
//! same bundle, has the same license states and the same cache file. Then a flood of 10,000
//! bad messages, with the agent's resident memory read before and after.
//!
//! The figures (per-case outcome, flood rate, VmRSS) are printed; run with `--nocapture` to
//! see them. `docs/SECURITY.md` quotes them.

mod hardening;

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hardening::{agent_pid, alive, grants_topic, seal, status, vm_rss_kib, Publisher, T};
use licd_protocol::envelope::{seal_bytes, seal_report};
use licd_protocol::{DeviceId, GrantBundle, KeyId, MessageKind};
use licd_tests::agent::Agent;
use licd_tests::controller::{unix_now, ControllerKeys};
use licd_tests::{wait_for, Scene};
use serde_json::Value;

/// Messages in the flood.
const FLOOD: u64 = 10_000;
/// Allowed growth of the agent's resident memory over the flood. Generous (allocator
/// behaviour, the broker's delivery bursts); a leak of even 1 KiB per message would be 10 MB.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;
/// Absolute bound on the agent's resident memory after the flood (debug build).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// The group order L of Ed25519, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The same signature with `S` replaced by `S + L`: the equation still holds (a malleable
/// signature); strict verification refuses it because `S` is not reduced.
fn malleate(envelope: &[u8]) -> Vec<u8> {
    let mut out = envelope.to_vec();
    let s = out.len() - 32;
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(out[s + i]) + u16::from(L[i]) + carry;
        out[s + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits 256 bits");
    out
}

/// What the agent shows that must not change: bundle, services, connection, cache bytes.
#[derive(Debug, PartialEq)]
struct Observed {
    seq: Value,
    services: Value,
    connected: Value,
    cache: Vec<u8>,
}

fn observe(agent: &Agent) -> Observed {
    let s = status(agent);
    Observed {
        seq: s["bundle"]["seq"].clone(),
        services: s["services"].clone(),
        connected: s["connection"]["connected"].clone(),
        cache: std::fs::read(agent.state_dir().join("bundle.v1.bin")).unwrap(),
    }
}

/// A [`Scene`] with a licensed agent and an attacker client on its broker.
struct Rig {
    agent: Agent,
    attacker: Publisher,
    scene: Scene,
    pid: u32,
}

impl Rig {
    fn start() -> Self {
        let scene = Scene::start().unwrap();
        let attacker = {
            let _g = scene.enter();
            Publisher::plain(scene.broker.port(), "attacker")
        };
        let agent = scene.licensed_agent().unwrap();
        // From now on only the test publishes bundles.
        scene.controller.set_policy(|p| p.answer = false);
        attacker.wait_connected();
        let pid = agent_pid(&agent).expect("the agent's pid");
        Self {
            agent,
            attacker,
            scene,
            pid,
        }
    }

    fn refusals(&self) -> u64 {
        status(&self.agent)["refusals"]["total"].as_u64().unwrap()
    }

    fn send(&self, bytes: Vec<u8>) {
        let _g = self.scene.enter();
        self.scene
            .rt()
            .block_on(self.attacker.publish_acked(&grants_topic(), bytes, true));
    }

    /// Publishes `bytes`, waits for the refusal and checks code, liveness and that nothing
    /// changed.
    fn expect_refused(&self, case: &str, bytes: Vec<u8>, code: &str) {
        let before = observe(&self.agent);
        let total = self.refusals();
        let len = bytes.len();
        self.send(bytes);
        wait_for(&format!("{case} to be refused"), T, || {
            self.agent
                .status()
                .is_some_and(|s| s["refusals"]["total"].as_u64() == Some(total + 1))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.agent.log()));
        let s = status(&self.agent);
        assert_eq!(s["refusals"]["last_code"], code, "{case}: {s}");
        assert!(alive(self.pid), "{case}: the agent died");
        assert_eq!(observe(&self.agent), before, "{case}: state changed");
        println!(
            "refused: {case:<55} {len:>8} bytes  code={code:<20} {}",
            s["refusals"]["last_message"].as_str().unwrap_or("")
        );
    }

    /// Publishes a bundle that must be accepted; returns its bytes.
    fn expect_accepted(&self, bundle: &GrantBundle) -> Vec<u8> {
        let raw = seal(self.scene.keys(), bundle);
        self.send(raw.clone());
        wait_for("a valid bundle to be accepted", T, || {
            self.agent
                .status()
                .is_some_and(|s| s["bundle"]["seq"].as_u64() == Some(bundle.seq))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.agent.log()));
        raw
    }
}

#[test]
fn every_hostile_grant_is_refused_with_its_reason_and_changes_nothing() {
    let rig = Rig::start();
    let keys = rig.scene.keys();
    let report = rig.scene.first_report().unwrap();
    let now = unix_now();
    let bundle = rig.scene.bundle().unwrap();
    let base = |seq: u64| bundle.clone().seq(seq).build();
    let rss_start = vm_rss_kib(rig.pid).unwrap();

    // Two genuine bundles first, so that the older one can be replayed.
    let older = rig.expect_accepted(&base(100));
    let newer = rig.expect_accepted(&base(101));
    let cases_start = Instant::now();

    let mut garbage = b"GET / HTTP/1.1\r\nHost: licd\r\n\r\n".to_vec();
    garbage.extend((0u32..200).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    rig.expect_refused("garbage bytes", garbage, "bad_version");
    rig.expect_refused("empty payload", Vec::new(), "malformed");
    rig.expect_refused(
        "truncated envelope (first half of a valid bundle)",
        newer[..newer.len() / 2].to_vec(),
        "malformed",
    );
    rig.expect_refused(
        "valid bundle with one byte cut off",
        newer[..newer.len() - 1].to_vec(),
        "malformed",
    );
    let mut trailing = seal(keys, &base(102));
    trailing.push(0);
    rig.expect_refused("valid bundle with a byte appended", trailing, "malformed");
    let mut huge = seal(keys, &base(103));
    huge.resize(1 << 20, 0);
    rig.expect_refused("1 MiB payload", huge, "oversized");
    let mut v2 = seal(keys, &base(104));
    v2[0] = 2;
    rig.expect_refused("protocol version 2", v2, "bad_version");
    rig.expect_refused(
        "a device report on the grants topic",
        seal_report(&report, &SigningKey::from_bytes(&[7; 32])),
        "wrong_kind",
    );

    let mut flipped = seal(keys, &base(105));
    let at = flipped.len() - 10;
    flipped[at] ^= 1;
    rig.expect_refused("one signature bit flipped", flipped, "bad_signature");
    let mut tampered = seal(keys, &base(106));
    let payload_byte = 2 + 32 + 2 + 145 + 4 + 20;
    tampered[payload_byte] ^= 0x40;
    rig.expect_refused("one payload bit flipped", tampered, "bad_signature");
    rig.expect_refused(
        "malleable signature (S + L)",
        malleate(&seal(keys, &base(107))),
        "bad_signature",
    );

    let rogue = ControllerKeys::from_seeds(66, 67);
    rig.expect_refused(
        "valid signature from an unknown key (own root)",
        seal(&rogue, &base(108)),
        "untrusted_signer",
    );
    // The payload bytes of a genuine bundle: after version, kind, signer, the certificate
    // with its length, and the payload length; before the signature.
    let genuine = seal(keys, &base(109));
    let payload = genuine[1 + 1 + 32 + 2 + 145 + 4..genuine.len() - 64].to_vec();
    rig.expect_refused(
        "signed by the pinned root itself, no certificate",
        seal_bytes(MessageKind::Grants, &keys.root, None, &payload),
        "untrusted_signer",
    );
    rig.expect_refused(
        "unknown key wearing the genuine certificate",
        seal_bytes(
            MessageKind::Grants,
            &rogue.signing,
            Some(&keys.cert),
            &payload,
        ),
        "untrusted_signer",
    );
    let expired = keys.certificate(now - 30 * 86_400, now - 86_400);
    rig.expect_refused(
        "certificate expired yesterday",
        licd_protocol::envelope::seal_bundle(&base(110), &keys.signing, &expired),
        "certificate_validity",
    );
    let not_yet = keys.certificate(now + 86_400, now + 30 * 86_400);
    rig.expect_refused(
        "certificate valid from tomorrow",
        licd_protocol::envelope::seal_bundle(&base(111), &keys.signing, &not_yet),
        "certificate_validity",
    );

    let mut other_device = base(112);
    other_device.device = DeviceId::new("ap-2").unwrap();
    rig.expect_refused(
        "bundle for another device",
        seal(keys, &other_device),
        "wrong_device",
    );
    let mut other_key = base(113);
    other_key.device_key = KeyId([0xab; 16]);
    rig.expect_refused(
        "bundle bound to another device key (copied)",
        seal(keys, &other_key),
        "wrong_device_key",
    );
    rig.expect_refused("replayed older bundle (seq 100)", older, "stale");
    let mut same_seq = base(101);
    same_seq.grants.clear();
    rig.expect_refused(
        "same seq as held, different content",
        seal(keys, &same_seq),
        "stale",
    );
    let mut lower = base(99);
    lower.grants.clear();
    rig.expect_refused("lower seq revoking everything", seal(keys, &lower), "stale");
    let mut future = base(120);
    future.issued_at = now + 3_600;
    rig.expect_refused(
        "issued an hour in the future",
        seal(keys, &future),
        "from_the_future",
    );
    println!(
        "{} hostile cases in {:?}; agent VmRSS {} KiB at start, {} KiB now",
        status(&rig.agent)["refusals"]["total"],
        cases_start.elapsed(),
        rss_start,
        vm_rss_kib(rig.pid).unwrap()
    );
    assert!(rig
        .agent
        .log()
        .contains("grant bundle refused; license state unchanged"));
}

#[test]
fn a_flood_of_ten_thousand_bad_messages_is_refused_in_bounded_memory() {
    let rig = Rig::start();
    let keys = rig.scene.keys();
    let bundle = rig.scene.bundle().unwrap();
    let before = observe(&rig.agent);
    let total = rig.refusals();
    let log_lines = |a: &Agent| {
        a.log()
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("grant bundle refused"))
            .count()
    };
    let warned_before = log_lines(&rig.agent);
    let rss_before = vm_rss_kib(rig.pid).unwrap();

    // Three kinds in rotation: cheap garbage, a framing error, and a forged signature that
    // costs the agent a full signature check.
    let valid = seal(keys, &bundle.clone().seq(10_000).build());
    let mut forged = valid.clone();
    let at = forged.len() - 1;
    forged[at] ^= 0x01;
    let kinds = [
        b"\xffnot an envelope".to_vec(),
        valid[..valid.len() - 7].to_vec(),
        forged,
    ];
    let started = Instant::now();
    {
        let _g = rig.scene.enter();
        rig.scene.rt().block_on(async {
            for i in 0..FLOOD {
                rig.attacker
                    .publish(&grants_topic(), kinds[(i % 3) as usize].clone(), false)
                    .await;
            }
        });
    }
    wait_for(
        "the whole flood to be refused",
        Duration::from_secs(180),
        || {
            rig.agent
                .status()
                .is_some_and(|s| s["refusals"]["total"].as_u64() == Some(total + FLOOD))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}; refusals {:?}\n{}",
            rig.agent.status().map(|s| s["refusals"].clone()),
            rig.agent.log()
        )
    });
    let elapsed = started.elapsed();
    let rss_after = vm_rss_kib(rig.pid).unwrap();
    let warned = log_lines(&rig.agent) - warned_before;
    println!(
        "flood: {FLOOD} bad messages refused in {elapsed:?} ({:.0}/s); VmRSS {rss_before} KiB \
         before, {rss_after} KiB after; {warned} refusal warnings logged (rate-limited)",
        FLOOD as f64 / elapsed.as_secs_f64()
    );
    assert!(alive(rig.pid), "the agent died during the flood");
    assert_eq!(
        observe(&rig.agent),
        before,
        "state changed during the flood"
    );
    assert!(
        rss_after <= rss_before + RSS_GROWTH_LIMIT_KIB && rss_after <= RSS_LIMIT_KIB,
        "VmRSS {rss_before} KiB → {rss_after} KiB"
    );
    // The log is rate-limited: one warning per 10 s, not one per message.
    assert!(
        (warned as u64) <= 2 + elapsed.as_secs() / 10,
        "{warned} warnings for {FLOOD} refusals"
    );
    // And the agent still takes a genuine bundle afterwards.
    let fresh = bundle.seq(20_000).build();
    rig.expect_accepted(&fresh);
}
