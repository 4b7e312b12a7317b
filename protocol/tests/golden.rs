//! Golden vectors: the exact bytes of protocol v1 for fixed keys and messages, stored in
//! `tests/vectors/*.json` and checked both ways — encoding the fixtures today must give the
//! stored bytes, and opening the stored bytes must give the fixtures. An accidental wire change
//! (a reordered field, a new field, another integer encoding) fails here.
//!
//! After an *intended* wire change (which needs a new protocol version, see docs/PROTOCOL.md),
//! regenerate the files with `LICD_BLESS=1 cargo test -p licd-protocol --test golden` and
//! review the diff.

mod common;

use std::path::PathBuf;

use common::*;
use licd_protocol::cert::{CERT_DOMAIN, CERT_LEN};
use licd_protocol::envelope::{
    open_bundle, open_report, seal_bundle, seal_report, signing_input, DOMAIN,
};
use licd_protocol::keys::verify_strict;
use licd_protocol::{DeviceReport, Envelope, GrantBundle, MessageKind, PublicKey, SignerInfo};
use serde_json::{json, Value};

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

fn blessing() -> bool {
    std::env::var("LICD_BLESS").is_ok_and(|v| v == "1")
}

/// In bless mode writes `expected`; otherwise compares the stored file with it and fails with
/// the first differing field. Returns the stored (or just written) value.
fn check_or_bless(name: &str, expected: &Value) -> Value {
    let path = vector_path(name);
    if blessing() {
        let text = serde_json::to_string_pretty(expected).expect("serializable") + "\n";
        std::fs::write(&path, text).expect("write vector file");
        eprintln!("blessed {}", path.display());
        return expected.clone();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden vector {}: {e}\n\
             create it with: LICD_BLESS=1 cargo test -p licd-protocol --test golden",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    let (Value::Object(want), Value::Object(got)) = (expected, &stored) else {
        panic!("{}: expected a JSON object", path.display());
    };
    for (key, want_value) in want {
        let got_value = got.get(key).unwrap_or(&Value::Null);
        assert!(
            got_value == want_value,
            "WIRE CHANGE in {}: field `{key}` differs.\n  stored:  {got_value}\n  encoded: {want_value}\n\
             If this change is intended it needs a new protocol version (docs/PROTOCOL.md, \
             \"Versioning\"); then re-bless with LICD_BLESS=1.",
            path.display()
        );
    }
    for key in got.keys() {
        assert!(
            want.contains_key(key),
            "{}: stored field `{key}` is no longer produced (re-bless with LICD_BLESS=1)",
            path.display()
        );
    }
    stored
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field `{key}` missing or not a string"));
    hex::decode(s).unwrap_or_else(|e| panic!("vector field `{key}` is not hex: {e}"))
}

fn key_json(seed: &[u8; 32], key: &PublicKey) -> Value {
    json!({
        "seed": hex::encode(seed),
        "public_key": key.to_hex(),
        "key_id": key.id().to_hex(),
    })
}

/// The message as JSON for people (and other languages): serde's own JSON form, except that
/// the `device_key` byte array is written as hex.
fn readable(mut message: Value) -> Value {
    if let Some(key) = message.get_mut("device_key") {
        let bytes: Vec<u8> = serde_json::from_value(key.clone()).expect("a byte array");
        *key = Value::String(hex::encode(bytes));
    }
    message
}

/// The inverse of [`readable`].
fn serde_form(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(key) = message.get_mut("device_key") {
        let bytes = hex::decode(key.as_str().expect("hex string")).expect("hex");
        *key = json!(bytes);
    }
    message
}

/// Everything about one sealed message, as stored.
fn message_json(
    comment: &str,
    kind: MessageKind,
    signer: &PublicKey,
    message: Value,
    payload: &[u8],
    envelope: &[u8],
) -> Value {
    let signature = &envelope[envelope.len() - 64..];
    json!({
        "comment": comment,
        "kind": format!("{kind:?}"),
        "kind_byte": kind.to_byte(),
        "signer_public_key": signer.to_hex(),
        "root_public_key": public(&root_key()).to_hex(),
        "now": NOW,
        "message": message,
        "payload": hex::encode(payload),
        "payload_len": payload.len(),
        "signing_input": hex::encode(signing_input(kind, payload)),
        "signature": hex::encode(signature),
        "envelope": hex::encode(envelope),
        "envelope_len": envelope.len(),
    })
}

/// Checks the stored bytes are self-consistent: the envelope parses, carries the stored payload
/// and signature, and the signature verifies over the stored signing input.
fn check_stored_framing(stored: &Value, kind: MessageKind) -> Vec<u8> {
    let envelope = hex_field(stored, "envelope");
    let payload = hex_field(stored, "payload");
    let signature = hex_field(stored, "signature");
    let signer = hex_field(stored, "signer_public_key");
    assert_eq!(stored["envelope_len"], json!(envelope.len()));
    assert_eq!(stored["payload_len"], json!(payload.len()));
    let env = Envelope::parse(&envelope).expect("stored envelope parses");
    assert_eq!(env.kind, kind);
    assert_eq!(env.payload, &payload[..]);
    assert_eq!(&env.signer.0[..], &signer[..]);
    assert_eq!(&envelope[envelope.len() - 64..], &signature[..]);
    let input = hex_field(stored, "signing_input");
    assert_eq!(input, signing_input(kind, &payload));
    assert!(input.starts_with(DOMAIN));
    verify_strict(&signer, &input, &signature).expect("stored signature verifies");
    envelope
}

#[test]
fn keys_and_certificate_match_the_golden_vector() {
    let root = public(&root_key());
    let signing = public(&signing_key());
    let dev = public(&device_key());
    let cert = signing_cert();
    let cert_bytes = cert.to_bytes();
    assert_eq!(cert_bytes.len(), CERT_LEN);
    let mut cert_input = CERT_DOMAIN.to_vec();
    cert_input.extend_from_slice(&cert_bytes[..81]);
    let expected = json!({
        "comment": "licd protocol v1 test keys: ed25519 keys from fixed 32-byte seeds, and the \
                    root's certificate for the signing key (145 bytes)",
        "root": key_json(&ROOT_SEED, &root),
        "signing": key_json(&SIGNING_SEED, &signing),
        "device": key_json(&DEVICE_SEED, &dev),
        "certificate": {
            "issuer": root.to_hex(),
            "subject": signing.to_hex(),
            "not_before": CERT_NOT_BEFORE,
            "not_after": CERT_NOT_AFTER,
            "signing_input": hex::encode(&cert_input),
            "signature": hex::encode(&cert_bytes[81..]),
            "bytes": hex::encode(&cert_bytes),
        },
    });
    let stored = check_or_bless("keys.json", &expected);

    // The other way: the stored bytes parse to the same certificate, whose signature verifies
    // over the stored signing input.
    let stored_cert = &stored["certificate"];
    let bytes = hex_field(stored_cert, "bytes");
    let parsed = licd_protocol::SignerCertificate::parse(&bytes).expect("stored cert parses");
    assert_eq!(parsed, cert);
    parsed
        .verify()
        .expect("stored certificate signature verifies");
    verify_strict(
        &hex_field(stored_cert, "issuer"),
        &hex_field(stored_cert, "signing_input"),
        &hex_field(stored_cert, "signature"),
    )
    .expect("certificate signature verifies over the stored signing input");
    for (name, seed) in [
        ("root", ROOT_SEED),
        ("signing", SIGNING_SEED),
        ("device", DEVICE_SEED),
    ] {
        let seed_bytes = hex_field(&stored[name], "seed");
        assert_eq!(seed_bytes, seed, "{name} seed");
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(
            hex_field(&stored[name], "public_key"),
            key.verifying_key().to_bytes(),
            "{name} public key"
        );
    }
}

fn check_report_vector(file: &str, comment: &str, report: &DeviceReport) -> usize {
    let payload = postcard::to_allocvec(report).expect("encodes");
    let sealed = seal_report(report, &device_key());
    let expected = message_json(
        comment,
        MessageKind::Report,
        &public(&device_key()),
        readable(serde_json::to_value(report).expect("serializable")),
        &payload,
        &sealed,
    );
    let stored = check_or_bless(file, &expected);

    // Opening the stored bytes gives exactly the message.
    let envelope = check_stored_framing(&stored, MessageKind::Report);
    assert_eq!(
        &open_report(&envelope).expect("stored report opens"),
        report
    );
    let from_payload: DeviceReport =
        postcard::from_bytes(&hex_field(&stored, "payload")).expect("stored payload decodes");
    assert_eq!(&from_payload, report);
    let from_json: DeviceReport =
        serde_json::from_value(serde_form(&stored["message"])).expect("stored message is a report");
    assert_eq!(&from_json, report);
    sealed.len()
}

fn check_bundle_vector(file: &str, comment: &str, bundle: &GrantBundle) -> usize {
    let payload = postcard::to_allocvec(bundle).expect("encodes");
    let sealed = seal_bundle(bundle, &signing_key(), &signing_cert());
    let expected = message_json(
        comment,
        MessageKind::Grants,
        &public(&signing_key()),
        readable(serde_json::to_value(bundle).expect("serializable")),
        &payload,
        &sealed,
    );
    let stored = check_or_bless(file, &expected);

    let envelope = check_stored_framing(&stored, MessageKind::Grants);
    let (opened, info) = open_bundle(&envelope, &trust(), NOW).expect("stored bundle opens");
    assert_eq!(&opened, bundle);
    assert_eq!(
        info,
        SignerInfo {
            signer: public(&signing_key()).id(),
            root: public(&root_key()).id(),
            cert_not_after: CERT_NOT_AFTER,
            site_issuer: None,
        }
    );
    let env = Envelope::parse(&envelope).expect("parses");
    assert_eq!(env.cert.as_ref(), Some(&signing_cert()));
    let from_payload: GrantBundle =
        postcard::from_bytes(&hex_field(&stored, "payload")).expect("stored payload decodes");
    assert_eq!(&from_payload, bundle);
    let from_json: GrantBundle =
        serde_json::from_value(serde_form(&stored["message"])).expect("stored message is a bundle");
    assert_eq!(&from_json, bundle);
    sealed.len()
}

#[test]
fn typical_report_matches_the_golden_vector_both_ways() {
    check_report_vector(
        "device_report.json",
        "a typical DeviceReport of an access point, sealed with the device key (no certificate)",
        &typical_report(),
    );
}

#[test]
fn five_service_bundle_matches_the_golden_vector_both_ways() {
    check_bundle_vector(
        "grant_bundle_5_services.json",
        "a GrantBundle granting 5 services, sealed with the certified signing key; opens with \
         a TrustStore pinning the root at `now`",
        &five_service_bundle(),
    );
}

#[test]
fn bundle_with_vm_allowance_and_withheld_services_matches_the_golden_vector_both_ways() {
    check_bundle_vector(
        "grant_bundle_withheld.json",
        "a GrantBundle with a VM allowance (Some) and one withheld service of every reason \
         (enum variants 0..3)",
        &withheld_bundle(),
    );
}

/// The figures quoted in docs/PROTOCOL.md. Run with `--nocapture` to see them.
#[test]
fn encoded_sizes_of_the_typical_report_and_the_five_service_bundle() {
    let report_payload = postcard::to_allocvec(&typical_report())
        .expect("encodes")
        .len();
    let report = seal_report(&typical_report(), &device_key()).len();
    let bundle_payload = postcard::to_allocvec(&five_service_bundle())
        .expect("encodes")
        .len();
    let bundle = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert()).len();
    println!("typical report: payload {report_payload} bytes, envelope {report} bytes");
    println!("5-service bundle: payload {bundle_payload} bytes, envelope {bundle} bytes");
    // Envelope overhead: 104 bytes of framing, plus 145 for a certificate.
    assert_eq!(report, report_payload + 104);
    assert_eq!(bundle, bundle_payload + 104 + CERT_LEN);
    // Keep docs/PROTOCOL.md ("Encoded sizes") in step with these.
    assert_eq!((report_payload, report), (REPORT_PAYLOAD, REPORT_ENVELOPE));
    assert_eq!((bundle_payload, bundle), (BUNDLE_PAYLOAD, BUNDLE_ENVELOPE));
}

const REPORT_PAYLOAD: usize = 151;
const REPORT_ENVELOPE: usize = 255;
const BUNDLE_PAYLOAD: usize = 335;
const BUNDLE_ENVELOPE: usize = 584;
