//! Trust-chain conformance suite, modelled on how tuf-conformance drives a client: every case
//! sets up its own keys (roots, certified signing keys) and signed messages, drives the real
//! `licd` binary against a real mosquitto, and asserts the exact accept/refuse reason the agent
//! reports in its status (`refusals.last_code`, `trust`, `bundle.signer`) — so a refusal for
//! the wrong reason fails the case.
//!
//! Cases: a signing-key rotation is accepted with no config change; the old key is refused
//! after its revocation (and a held bundle it signed stops being trusted); a root rotation
//! signed by only one of its two roots is refused; a revocation list rollback is refused (also
//! after a restart); an expired certificate is refused even when the wall clock is set back
//! (the trusted-time mark is ahead of it); a cache written under the old key still loads after
//! a rotation when its signer was valid when the bundle was issued.

mod hardening;

use ed25519_dalek::SigningKey;
use hardening::{grants_topic, runtime, Publisher, T};
use licd_protocol::envelope::seal_bundle;
use licd_protocol::revocation::seal_revocations;
use licd_protocol::rotation::{seal_rotation, Signature64};
use licd_protocol::topic::{TRUST_REVOCATIONS, TRUST_ROOTS};
use licd_protocol::{
    GrantBundle, KeyId, PublicKey, RevocationList, RootRotation, SignerCertificate,
};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::controller::unix_now;
use licd_tests::{wait_for, BundleBuilder, Mosquitto, MosquittoConfig};
use serde_json::Value;

const DAY: u64 = 86_400;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(k: &SigningKey) -> PublicKey {
    PublicKey::from(&k.verifying_key())
}

fn id_hex(k: &SigningKey) -> String {
    public(k).id().to_hex()
}

/// A signing key with a certificate from `root`, valid `[not_before, not_after)`.
struct Signing {
    key: SigningKey,
    cert: SignerCertificate,
}

impl Signing {
    fn new(root: &SigningKey, seed: u8, not_before: u64, not_after: u64) -> Self {
        let key = key(seed);
        let cert = SignerCertificate::issue(root, public(&key), not_before, not_after);
        Self { key, cert }
    }

    fn seal(&self, bundle: &GrantBundle) -> Vec<u8> {
        seal_bundle(bundle, &self.key, &self.cert)
    }
}

/// One case's world: mosquitto, an agent pinning `root`, and a raw publisher.
struct Rig {
    rt: tokio::runtime::Runtime,
    _broker: Mosquitto,
    agent: Agent,
    publisher: Publisher,
    device_key: KeyId,
}

impl Rig {
    fn start(root: &SigningKey) -> Self {
        let rt = runtime();
        let broker = {
            let _g = rt.enter();
            Mosquitto::start(MosquittoConfig::plain()).unwrap()
        };
        let agent =
            Agent::start(&AgentOptions::plain(broker.port(), &public(root).to_hex())).unwrap();
        let publisher = {
            let _g = rt.enter();
            Publisher::plain(broker.port(), "trust-conformance")
        };
        publisher.wait_connected();
        let rig = Self {
            rt,
            _broker: broker,
            agent,
            publisher,
            device_key: KeyId([0; 16]),
        };
        let status = rig.wait_status("the agent to connect", |s| {
            s["connection"]["connected"] == true
        });
        let device_key = parse_key_id(status["device_key"].as_str().unwrap());
        Self { device_key, ..rig }
    }

    fn status(&self) -> Value {
        self.agent.status().unwrap_or(Value::Null)
    }

    /// Waits until the status satisfies `pred`; fails with the last status and the log.
    fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_for(what, T, || {
            last = self.status();
            pred(&last)
        });
        if let Err(e) = ok {
            panic!(
                "{e}\n--- last status ---\n{last:#}\n--- agent log ---\n{}",
                self.agent.log()
            );
        }
        last
    }

    /// Publishes (retained) and waits for the broker to take it.
    fn publish(&self, topic: &str, bytes: Vec<u8>) {
        let _g = self.rt.enter();
        self.rt
            .block_on(self.publisher.publish_acked(topic, bytes, true));
    }

    fn refusals(&self) -> u64 {
        self.status()["refusals"]["total"].as_u64().unwrap_or(0)
    }

    /// Publishes `bytes` on `topic` and waits until the agent refuses it with `code`.
    fn expect_refused(&self, topic: &str, bytes: Vec<u8>, code: &str) -> Value {
        let before = self.refusals();
        self.publish(topic, bytes);
        let s = self.wait_status(&format!("a refusal ({code})"), |s| {
            s["refusals"]["total"].as_u64().unwrap_or(0) > before
        });
        assert_eq!(s["refusals"]["last_code"], code, "{:#}", s["refusals"]);
        s
    }

    /// Publishes a bundle and waits until the agent holds `seq`.
    fn expect_accepted(&self, bytes: Vec<u8>, seq: u64) -> Value {
        self.publish(&grants_topic(), bytes);
        self.wait_status(&format!("bundle {seq} to be accepted"), |s| {
            s["bundle"]["seq"] == seq
        })
    }

    /// `wifi` for this agent's device key: a week's lease, 30 days of grace.
    fn bundle(&self, seq: u64, issued_at: u64) -> GrantBundle {
        BundleBuilder::new(issued_at)
            .device_key(self.device_key)
            .seq(seq)
            .refresh_after(issued_at + DAY)
            .license("lic-1")
            .sku("SKU-1")
            .term(issued_at - DAY, issued_at + 365 * DAY)
            .lease(7 * DAY)
            .grace(30 * DAY)
            .build()
    }

    fn wifi(&self) -> (String, String) {
        let a = self.agent.check("wifi").unwrap_or(Value::Null);
        (
            a["state"].as_str().unwrap_or("").to_owned(),
            a["reason"].as_str().unwrap_or("").to_owned(),
        )
    }
}

fn parse_key_id(hex: &str) -> KeyId {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    KeyId(id)
}

fn revocations(root: &SigningKey, version: u64, revoked: &[&SigningKey]) -> Vec<u8> {
    seal_revocations(
        &RevocationList {
            version,
            issued_at: unix_now(),
            revoked: revoked.iter().map(|k| public(k).id()).collect(),
        },
        root,
    )
}

#[test]
fn a_signing_key_rotation_is_accepted_with_no_config_change() {
    let root = key(1);
    let now = unix_now();
    let rig = Rig::start(&root);
    let k1 = Signing::new(&root, 2, now - DAY, now + 30 * DAY);
    let s = rig.expect_accepted(k1.seal(&rig.bundle(1, now)), 1);
    assert_eq!(s["bundle"]["signer"], id_hex(&k1.key));
    // `licd-stub keys rotate`: a new signing key certified by the same root.
    let k2 = Signing::new(&root, 3, now - 60, now + 365 * DAY);
    let s = rig.expect_accepted(k2.seal(&rig.bundle(2, now)), 2);
    assert_eq!(s["bundle"]["signer"], id_hex(&k2.key));
    assert_eq!(s["refusals"]["total"], 0);
    assert_eq!(rig.wifi().0, "licensed");
}

#[test]
fn the_old_key_is_refused_after_its_revocation_and_a_bundle_it_signed_stops_being_trusted() {
    let root = key(1);
    let now = unix_now();
    let mut rig = Rig::start(&root);
    let k1 = Signing::new(&root, 2, now - DAY, now + 30 * DAY);
    rig.expect_accepted(k1.seal(&rig.bundle(1, now)), 1);
    assert_eq!(rig.wifi().0, "licensed");

    // K1 leaks: the root revokes it. The held bundle it signed is no longer trusted.
    rig.publish(TRUST_REVOCATIONS, revocations(&root, 1, &[&k1.key]));
    let s = rig.wait_status("the revocation list", |s| {
        s["trust"]["revocations_version"] == 1 && s["bundle"].is_null()
    });
    assert_eq!(s["trust"]["revoked"][0], id_hex(&k1.key));
    assert_eq!(s["refusals"]["last_code"], "signer_revoked");
    assert_eq!(rig.wifi(), ("unlicensed".into(), "revoked".into()));

    // The rotated key's bundle is accepted; a newer bundle from the old key is refused.
    let k2 = Signing::new(&root, 3, now - 60, now + 365 * DAY);
    rig.expect_accepted(k2.seal(&rig.bundle(2, now)), 2);
    assert_eq!(rig.wifi().0, "licensed");
    let s = rig.expect_refused(
        &grants_topic(),
        k1.seal(&rig.bundle(3, now)),
        "signer_revoked",
    );
    assert_eq!(s["bundle"]["seq"], 2);

    // The list survives a restart (the retained copy is cleared first, so the agent can only
    // have it from its state dir).
    rig.publish(TRUST_REVOCATIONS, Vec::new());
    rig.publish(&grants_topic(), Vec::new());
    rig.agent.restart().unwrap();
    let s = rig.wait_status("the agent back", |s| s["connection"]["connected"] == true);
    assert_eq!(s["trust"]["revocations_version"], 1);
    rig.expect_refused(
        &grants_topic(),
        k1.seal(&rig.bundle(4, now)),
        "signer_revoked",
    );
}

#[test]
fn a_root_rotation_signed_by_only_one_of_the_two_roots_is_refused() {
    let (old_root, new_root, attacker) = (key(1), key(4), key(9));
    let now = unix_now();
    let rig = Rig::start(&old_root);
    let k_old = Signing::new(&old_root, 2, now - DAY, now + 365 * DAY);
    rig.expect_accepted(k_old.seal(&rig.bundle(1, now)), 1);

    // Only the old root (stolen): it signs the statement and the envelope, naming a key of the
    // attacker's. The new root's signature is missing.
    let stmt = RootRotation::sign(&old_root, public(&attacker), 1, now);
    let s = rig.expect_refused(
        TRUST_ROOTS,
        seal_rotation(&stmt, &old_root),
        "rotation_not_signed_by_both",
    );
    assert!(
        s["refusals"]["last_message"]
            .as_str()
            .unwrap()
            .contains(&id_hex(&attacker)),
        "{:#}",
        s["refusals"]
    );
    // Only the new root: the old root's signature is made up.
    let mut forged = RootRotation::sign(&new_root, public(&new_root), 1, now);
    forged.previous = public(&old_root);
    forged.previous_signature = Signature64([7; 64]);
    let s = rig.expect_refused(
        TRUST_ROOTS,
        seal_rotation(&forged, &new_root),
        "rotation_not_signed_by_both",
    );
    assert_eq!(s["trust"]["roots"][0], id_hex(&old_root));
    assert_eq!(s["trust"]["rotation_seq"], 0);

    // Signed by both: accepted; the old root alone is no longer enough.
    let stmt = RootRotation::sign(&old_root, public(&new_root), 1, now);
    rig.publish(TRUST_ROOTS, seal_rotation(&stmt, &new_root));
    let s = rig.wait_status("the rotation", |s| s["trust"]["rotation_seq"] == 1);
    assert_eq!(s["trust"]["roots"], serde_json::json!([id_hex(&new_root)]));
    assert_eq!(s["trust"]["retired_roots"][0], id_hex(&old_root));
    // The bundle held (issued before the rotation) stays in force.
    assert_eq!(s["bundle"]["seq"], 1);
    rig.expect_refused(
        &grants_topic(),
        k_old.seal(&rig.bundle(2, now)),
        "retired_root",
    );
    let k_new = Signing::new(&new_root, 5, now - 60, now + 365 * DAY);
    rig.expect_accepted(k_new.seal(&rig.bundle(3, now)), 3);
    // Revocation lists now come from the new root only.
    rig.expect_refused(
        TRUST_REVOCATIONS,
        revocations(&old_root, 1, &[&k_new.key]),
        "not_signed_by_root",
    );
}

#[test]
fn a_replayed_root_rotation_already_applied_and_superseded_is_refused_as_a_rollback() {
    let (a, b, c) = (key(1), key(4), key(6));
    let now = unix_now();
    let mut rig = Rig::start(&a);
    let first = seal_rotation(&RootRotation::sign(&a, public(&b), 1, now), &b);
    let second = seal_rotation(&RootRotation::sign(&b, public(&c), 2, now), &c);
    rig.publish(TRUST_ROOTS, first.clone());
    rig.wait_status("rotation 1", |s| s["trust"]["rotation_seq"] == 1);
    rig.publish(TRUST_ROOTS, second.clone());
    rig.wait_status("rotation 2", |s| s["trust"]["rotation_seq"] == 2);
    // The first statement again (an attacker replaying an old retained message): refused
    // with the reason PROTOCOL.md §10.1 gives, counted and logged.
    let s = rig.expect_refused(TRUST_ROOTS, first, "rotation_rollback");
    assert_eq!(s["refusals"]["by_topic"]["trust"], 1, "{:#}", s["refusals"]);
    assert_eq!(s["trust"]["roots"], serde_json::json!([id_hex(&c)]));
    assert!(
        rig.agent.log().contains("trust message refused"),
        "{}",
        rig.agent.log()
    );
    // The statement in force delivered again (live, or retained on every reconnect) is not a
    // refusal. A message on a stray trust topic, sent after it, marks when it was handled.
    let marker = |rig: &Rig, n: u64| {
        rig.publish("licd/v1/trust/marker", b"marker".to_vec());
        rig.wait_status("the marker", |s| s["refusals"]["by_topic"]["other"] == n)
    };
    rig.publish(TRUST_ROOTS, second);
    let s = marker(&rig, 1);
    assert_eq!(s["refusals"]["by_topic"]["trust"], 1, "{:#}", s["refusals"]);
    rig.agent.restart().unwrap();
    // The retained marker comes back too (after the retained rotation, same SUBSCRIBE).
    let s = rig.wait_status("the agent back", |s| {
        s["connection"]["connected"] == true && s["refusals"]["by_topic"]["other"] == 1
    });
    assert_eq!(s["trust"]["rotation_seq"], 2);
    assert_eq!(s["refusals"]["by_topic"]["trust"], 0, "{:#}", s["refusals"]);
}

#[test]
fn a_revocation_list_rollback_is_refused_also_after_a_restart() {
    let root = key(1);
    let now = unix_now();
    let mut rig = Rig::start(&root);
    let (k1, k2) = (key(2), key(3));
    rig.publish(TRUST_REVOCATIONS, revocations(&root, 2, &[&k1, &k2]));
    rig.wait_status("list v2", |s| s["trust"]["revocations_version"] == 2);
    // An older list that revoked less (what an attacker replaying old retained messages sends).
    let s = rig.expect_refused(
        TRUST_REVOCATIONS,
        revocations(&root, 1, &[&k1]),
        "revocation_rollback",
    );
    assert_eq!(s["trust"]["revocations_version"], 2);
    assert_eq!(s["trust"]["revoked"].as_array().unwrap().len(), 2);
    // The same version with other content is not newer either.
    rig.expect_refused(
        TRUST_REVOCATIONS,
        revocations(&root, 2, &[]),
        "revocation_rollback",
    );
    // After a restart the version held is still 2 (from trust.v2.bin: the retained copy is
    // cleared first).
    rig.publish(TRUST_REVOCATIONS, Vec::new());
    rig.agent.restart().unwrap();
    let s = rig.wait_status("the agent back", |s| s["connection"]["connected"] == true);
    assert_eq!(s["trust"]["revocations_version"], 2);
    let s = rig.expect_refused(
        TRUST_REVOCATIONS,
        revocations(&root, 1, &[]),
        "revocation_rollback",
    );
    assert_eq!(s["trust"]["revocations_version"], 2);
    let k = Signing::new(&root, 3, now - DAY, now + DAY);
    rig.expect_refused(
        &grants_topic(),
        k.seal(&rig.bundle(1, now)),
        "signer_revoked",
    );
}

#[test]
fn an_expired_certificate_is_refused_even_when_the_wall_clock_is_set_back() {
    let root = key(1);
    let now = unix_now();
    let mut rig = Rig::start(&root);
    // The agent has seen time T_mark = now + 10 days (its persisted high-water mark); its wall
    // clock now reads "now", i.e. it has been set back 10 days. The certificate ends at
    // now + 5 days: valid by the wall clock, expired by trusted time.
    let mark = now + 10 * DAY;
    rig.agent.stop().unwrap();
    std::fs::write(
        rig.agent.state_dir().join("time-mark.v1"),
        format!("{mark}\n"),
    )
    .unwrap();
    rig.agent.restart().unwrap();
    let s = rig.wait_status("the agent back", |s| s["connection"]["connected"] == true);
    assert_eq!(s["clock"]["rollback"], true, "{:#}", s["clock"]);
    assert!(s["clock"]["now"].as_u64().unwrap() >= mark);

    let k = Signing::new(&root, 2, now - DAY, now + 5 * DAY);
    let s = rig.expect_refused(
        &grants_topic(),
        k.seal(&rig.bundle(1, now)),
        "certificate_validity",
    );
    let msg = s["refusals"]["last_message"].as_str().unwrap();
    assert!(
        msg.contains("expired") && msg.contains(&(now + 5 * DAY).to_string()),
        "{msg}"
    );
    assert_eq!(rig.wifi(), ("unlicensed".into(), "never_granted".into()));
    // A certificate valid at trusted time is fine.
    let k2 = Signing::new(&root, 3, now - DAY, mark + 30 * DAY);
    rig.expect_accepted(k2.seal(&rig.bundle(2, now)), 2);
}

#[test]
fn a_cache_written_under_the_old_key_still_loads_after_a_rotation() {
    let root = key(1);
    let now = unix_now();
    let mut rig = Rig::start(&root);
    // K1's certificate ends in 2 days; the bundle it signs now has a 7-day lease.
    let k1 = Signing::new(&root, 2, now - DAY, now + 2 * DAY);
    rig.expect_accepted(k1.seal(&rig.bundle(1, now)), 1);
    // Routine rotation to K2 at the controller; the agent is switched off before it gets a
    // bundle from K2 (the retained K1 bundle is cleared so only the cache can supply it).
    rig.publish(&grants_topic(), Vec::new());
    rig.agent.stop().unwrap();
    // It comes back 3 days later (trusted time past K1's certificate).
    let later = now + 3 * DAY;
    std::fs::write(
        rig.agent.state_dir().join("time-mark.v1"),
        format!("{later}\n"),
    )
    .unwrap();
    rig.agent.restart().unwrap();
    let s = rig.wait_status("the agent back", |s| s["connection"]["connected"] == true);
    assert!(s["clock"]["now"].as_u64().unwrap() >= later);
    // The cached bundle loads: K1 was valid when it was issued (the cache rule) ...
    assert_eq!(s["bundle"]["seq"], 1, "{:#}", s);
    assert_eq!(s["bundle"]["signer"], id_hex(&k1.key));
    assert_eq!(rig.wifi().0, "licensed");
    // ... while the same bytes arriving live now would be refused: the certificate expired.
    let s = rig.expect_refused(
        &grants_topic(),
        k1.seal(&rig.bundle(2, now)),
        "certificate_validity",
    );
    assert_eq!(s["bundle"]["seq"], 1);
    // K2's bundle replaces it.
    let k2 = Signing::new(&root, 3, now - 60, now + 365 * DAY);
    rig.expect_accepted(k2.seal(&rig.bundle(3, later)), 3);

    // The rule does not cover revoked signers: after K2 is revoked, its cached bundle is
    // refused at the next start (and set aside).
    rig.publish(TRUST_REVOCATIONS, revocations(&root, 1, &[&k2.key]));
    rig.wait_status("the revocation", |s| s["trust"]["revocations_version"] == 1);
    rig.publish(&grants_topic(), Vec::new());
    rig.agent.restart().unwrap();
    let s = rig.wait_status("the agent back", |s| s["connection"]["connected"] == true);
    assert!(s["bundle"].is_null(), "{:#}", s["bundle"]);
    assert!(rig.agent.log().contains("cached bundle refused"));
}
