//! Fuzz entries for the wire protocol (`licd-protocol` only): envelope decoding, topic
//! parsing, files and the policy kinds. Included by the fuzz crate and by
//! `protocol/tests/fuzz_corpus.rs`.
//!
//! The keys are the golden vectors' seeds (`protocol/tests/vectors/keys.json`), so the
//! vectors' envelopes open completely and make good seeds.

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use licd_protocol::delegation::{
    open_delegation, open_relay_ack, open_relay_report, seal_delegation,
};
use licd_protocol::envelope::{open_bundle, open_report, seal_bundle, seal_bytes, seal_report};
use licd_protocol::offline::{
    armor, dearmor, decode_file, open_activation_request, open_grant_answer, open_release_receipt,
    seal_activation_request, seal_release_receipt,
};
use licd_protocol::policy::{
    open_any_bundle, open_any_bundle_as_issued, open_extended_activation_request,
    open_extended_report, open_policy_bundle, seal_extended_activation_request,
    seal_extended_report, seal_policy_bundle,
};
use licd_protocol::{
    ActivationRequest, DeviceReport, Envelope, GrantBundle, MessageKind, PublicKey, ReleaseReceipt,
    SignerCertificate, Topic, TrustStore, UnixTime,
};

/// 2026-01-01T00:00:00Z, the golden vectors' evaluation time.
pub const NOW: UnixTime = 1_767_225_600;

struct Keys {
    trust: TrustStore,
    signing: SigningKey,
    cert: SignerCertificate,
    device: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let root = SigningKey::from_bytes(&[0x11; 32]);
        let signing = SigningKey::from_bytes(&[0x22; 32]);
        let cert = SignerCertificate::issue(
            &root,
            PublicKey::from(&signing.verifying_key()),
            1_735_689_600,
            1_798_761_600,
        );
        Keys {
            trust: TrustStore::new(vec![PublicKey::from(&root.verifying_key())]),
            signing,
            cert,
            device: SigningKey::from_bytes(&[0x33; 32]),
        }
    })
}

/// Envelope decoding, three ways:
///
/// 1. `data` as a received message: [`open_bundle`], [`open_report`] and the framing alone
///    ([`Envelope::parse`]) with both payload decoders — what a hostile broker can send;
/// 2. `data` as the payload of a bundle signed by the trusted signing key, so that postcard
///    decoding and the content rules are reached (a holder of a signing key — a leaked key —
///    controls these bytes);
/// 3. the same as a device report signed by the key it names.
///
/// Invariants: nothing panics; a message that opens re-encodes to a message that opens to the
/// same value.
pub fn envelope(data: &[u8]) {
    let k = keys();
    let _ = open_bundle(data, &k.trust, NOW);
    let _ = open_report(data);
    if let Ok(env) = Envelope::parse(data) {
        let _ = env.expect_kind(MessageKind::Grants);
        if let Ok(b) = env.decode::<GrantBundle>() {
            let _ = b.validate();
        }
        if let Ok(r) = env.decode::<DeviceReport>() {
            let _ = r.validate();
        }
    }

    let sealed = seal_bytes(MessageKind::Grants, &k.signing, Some(&k.cert), data);
    if let Ok((bundle, _)) = open_bundle(&sealed, &k.trust, NOW) {
        let again = seal_bundle(&bundle, &k.signing, &k.cert);
        let (reopened, _) = open_bundle(&again, &k.trust, NOW).expect("a re-encoded bundle opens");
        assert_eq!(reopened, bundle, "bundle round trip");
    }

    let sealed = seal_bytes(MessageKind::Report, &k.device, None, data);
    if let Ok(report) = open_report(&sealed) {
        // A report that opened was signed by the key it names; re-sealing needs that key,
        // which is ours only when it is the device key.
        if report.device_key == PublicKey::from(&k.device.verifying_key()) {
            let again = seal_report(&report, &k.device);
            assert_eq!(
                open_report(&again).expect("re-encoded report opens"),
                report
            );
        }
    }
}

/// Topic parsing: arbitrary (UTF-8) text through [`Topic::parse`]. Invariant: whatever parses
/// is exactly the topic it prints as (no wildcard, prefix or level can hide in it).
pub fn topic(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = Topic::parse(text) {
        assert_eq!(topic.to_topic_string(), text, "topic round trip");
        assert!(!text.contains(['+', '#']), "wildcard accepted: {text:?}");
    }
}

/// Armor decoding: arbitrary bytes through [`dearmor`] and [`decode_file`]. Invariants:
/// nothing panics; whatever decodes armors back to a text that decodes to the same bytes.
pub fn armor_text(data: &[u8]) {
    let _ = decode_file(data);
    if let Ok(bytes) = dearmor(data) {
        if let Ok(text) = armor(&bytes) {
            assert_eq!(
                dearmor(text.as_bytes()).expect("re-armored text decodes"),
                bytes,
                "armor round trip"
            );
        }
    }
}

/// The offline file decoders: `data` as a received request, grant answer and receipt, then
/// as the payload of each signed by the right key (so postcard decoding and the content rules
/// are reached). Invariants: nothing panics; what opens re-seals to what opens the same.
pub fn offline_file(data: &[u8]) {
    let k = keys();
    let device = PublicKey::from(&k.device.verifying_key());
    let _ = open_activation_request(data);
    let _ = open_grant_answer(data, &k.trust, NOW);
    let _ = open_release_receipt(data, &device);

    let sealed = seal_bytes(MessageKind::ActivationRequest, &k.device, None, data);
    if let Ok(request) = open_activation_request(&sealed) {
        let again = seal_activation_request(&request, &k.device);
        let reopened: ActivationRequest =
            open_activation_request(&again).expect("a re-encoded request opens");
        assert_eq!(reopened, request, "request round trip");
    }
    let sealed = seal_bytes(MessageKind::ReleaseReceipt, &k.device, None, data);
    if let Ok(receipt) = open_release_receipt(&sealed, &device) {
        let again = seal_release_receipt(&receipt, &k.device);
        let reopened: ReleaseReceipt =
            open_release_receipt(&again, &device).expect("a re-encoded receipt opens");
        assert_eq!(reopened, receipt, "receipt round trip");
    }
    let sealed = seal_bytes(MessageKind::GrantAnswer, &k.signing, Some(&k.cert), data);
    let _ = open_grant_answer(&sealed, &k.trust, NOW);
    // A site delegation (kind 12) as received, then `data` as its delegation signed by the
    // controller key: what opens re-seals to what opens the same.
    let _ = open_delegation(data);
    let sealed = seal_bytes(MessageKind::Delegation, &k.signing, Some(&k.cert), data);
    if let Ok(file) = open_delegation(&sealed) {
        let again = seal_delegation(&file.delegation, &k.signing, &k.cert);
        assert_eq!(
            open_delegation(&again).expect("a re-encoded delegation opens"),
            file,
            "delegation round trip"
        );
    }
    // Kinds 13 and 14 as received.
    let _ = open_relay_report(data);
    let _ = open_relay_ack(data);
}

/// The policy kinds (docs/PROTOCOL.md §17): `data` as a received policy bundle (by the strict
/// and the either-kind openers) and extended report, then as the payload of each signed by
/// the right key (so postcard decoding and the content rules are reached). Invariants:
/// nothing panics; what opens re-seals to what opens the same.
pub fn policy(data: &[u8]) {
    let k = keys();
    let _ = open_policy_bundle(data, &k.trust, NOW);
    let _ = open_any_bundle(data, &k.trust, NOW);
    let _ = open_extended_report(data);

    let sealed = seal_bytes(MessageKind::PolicyBundle, &k.signing, Some(&k.cert), data);
    if let Ok((bundle, _)) = open_any_bundle(&sealed, &k.trust, NOW) {
        let again = seal_policy_bundle(&bundle, &k.signing, &k.cert);
        let (reopened, _) =
            open_policy_bundle(&again, &k.trust, NOW).expect("a re-encoded policy bundle opens");
        assert_eq!(reopened, bundle, "policy bundle round trip");
        let _ = open_any_bundle_as_issued(&again, &k.trust);
    }
    let sealed = seal_bytes(MessageKind::ExtendedReport, &k.device, None, data);
    if let Ok(report) = open_extended_report(&sealed) {
        if report.report.device_key == PublicKey::from(&k.device.verifying_key()) {
            let again = seal_extended_report(&report, &k.device);
            assert_eq!(
                open_extended_report(&again).expect("a re-encoded extended report opens"),
                report,
                "extended report round trip"
            );
        }
    }
    let _ = open_extended_activation_request(data);
    let sealed = seal_bytes(
        MessageKind::ExtendedActivationRequest,
        &k.device,
        None,
        data,
    );
    if let Ok(request) = open_extended_activation_request(&sealed) {
        let again = seal_extended_activation_request(&request, &k.device);
        assert_eq!(
            open_extended_activation_request(&again).expect("a re-encoded request opens"),
            request,
            "extended activation request round trip"
        );
    }
}
