//! Golden vectors of licensing by file (docs/PROTOCOL.md §16): an activation request, a grant
//! answer, a release receipt, and the armored text of each, for the golden keys. Checked both
//! ways like `golden.rs`: encoding today gives the stored bytes, and the stored bytes open to
//! the fixtures. Also the corpus seeds of the `armor` and `offline_file` fuzz targets.
//!
//! Regenerate after an intended change with
//! `LICD_BLESS=1 cargo test -p licd-protocol --test offline_golden`.

mod common;

use std::path::PathBuf;

use common::*;
use licd_protocol::envelope::{open_bundle, seal_bundle};
use licd_protocol::offline::{
    armor, decode_file, open_activation_request, open_grant_answer, open_release_receipt,
    seal_activation_request, seal_grant_answer, seal_release_receipt, ArmorError,
};
use licd_protocol::{ActivationRequest, Envelope, Error, GrantAnswer, MessageKind, ReleaseReceipt};
use serde_json::{json, Value};

fn blessing() -> bool {
    std::env::var("LICD_BLESS").is_ok_and(|v| v == "1")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn request() -> ActivationRequest {
    ActivationRequest {
        report: typical_report(),
        nonce: [0x55; 16],
    }
}

fn answer(bundle: Vec<u8>) -> GrantAnswer {
    GrantAnswer {
        device: device(),
        request_nonce: [0x55; 16],
        bundle,
    }
}

fn receipt() -> ReleaseReceipt {
    ReleaseReceipt {
        device: device(),
        tenant: tenant(),
        bundle_seq: 42,
        services: vec![svc("poe-plus"), svc("analytics")],
        released_at: NOW + 3_600,
        nonce: [0x66; 16],
    }
}

struct Files {
    request: Vec<u8>,
    answer: Vec<u8>,
    receipt: Vec<u8>,
}

fn files() -> Files {
    let bundle = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    Files {
        request: seal_activation_request(&request(), &device_key()),
        answer: seal_grant_answer(&answer(bundle), &signing_key(), &signing_cert()),
        receipt: seal_release_receipt(&receipt(), &device_key()),
    }
}

fn entry(kind: MessageKind, bytes: &[u8]) -> Value {
    let env = Envelope::parse(bytes).expect("parses");
    let text = armor(bytes).expect("armors");
    json!({
        "kind": format!("{kind:?}"),
        "kind_byte": kind.to_byte(),
        "payload": hex::encode(env.payload),
        "payload_len": env.payload.len(),
        "envelope": hex::encode(bytes),
        "envelope_len": bytes.len(),
        "armored": text,
        "armored_len": text.len(),
    })
}

#[test]
fn offline_files_match_the_golden_vector() {
    let f = files();
    let expected = json!({
        "comment": "licd protocol v1 offline files for the golden keys (keys.json): the typical \
                    report as an activation request with nonce 55..55, the 5-service bundle \
                    (grant_bundle_5_services.json) answering it, and a receipt releasing \
                    poe-plus and analytics of seq 42 with nonce 66..66",
        "now": NOW,
        "request": entry(MessageKind::ActivationRequest, &f.request),
        "grant_answer": entry(MessageKind::GrantAnswer, &f.answer),
        "release_receipt": entry(MessageKind::ReleaseReceipt, &f.receipt),
    });
    let path = root().join("tests/vectors/offline_files.json");
    if blessing() {
        let text = serde_json::to_string_pretty(&expected).expect("json") + "\n";
        std::fs::write(&path, text).expect("write vector");
        let corpus = root().join("../fuzz/corpus");
        for (dir, name, bytes) in [
            ("offline_file", "request.bin", f.request.clone()),
            ("offline_file", "grant_answer.bin", f.answer.clone()),
            ("offline_file", "release_receipt.bin", f.receipt.clone()),
            (
                "armor",
                "request.asc",
                armor(&f.request).expect("armor").into_bytes(),
            ),
            (
                "armor",
                "grant_answer.asc",
                armor(&f.answer).expect("armor").into_bytes(),
            ),
            (
                "armor",
                "release_receipt.asc",
                armor(&f.receipt).expect("armor").into_bytes(),
            ),
        ] {
            let dir = corpus.join(dir);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
        for (name, bytes) in [
            (
                "request.payload",
                Envelope::parse(&f.request).expect("p").payload.to_vec(),
            ),
            (
                "release_receipt.payload",
                Envelope::parse(&f.receipt).expect("p").payload.to_vec(),
            ),
        ] {
            std::fs::write(corpus.join("offline_file").join(name), bytes).expect("seed");
        }
        return;
    }
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("read offline_files.json (bless it first)"),
    )
    .expect("json");
    for key in ["request", "grant_answer", "release_receipt"] {
        assert_eq!(
            stored[key], expected[key],
            "WIRE CHANGE in offline_files.json `{key}` (needs a new protocol version)"
        );
    }

    // The other way: the stored bytes and texts open to the fixtures.
    let bytes = |k: &str| hex::decode(stored[k]["envelope"].as_str().expect("hex")).expect("hex");
    let text = |k: &str| stored[k]["armored"].as_str().expect("text").to_owned();
    assert_eq!(open_activation_request(&bytes("request")), Ok(request()));
    let (a, _) = open_grant_answer(&bytes("grant_answer"), &trust(), NOW).expect("answer opens");
    let (inner, _) = open_bundle(&a.bundle, &trust(), NOW).expect("inner bundle opens");
    assert_eq!(inner, five_service_bundle());
    assert_eq!(a.request_nonce, [0x55; 16]);
    assert_eq!(
        open_release_receipt(&bytes("release_receipt"), &public(&device_key())),
        Ok(receipt())
    );
    for k in ["request", "grant_answer", "release_receipt"] {
        assert_eq!(
            decode_file(text(k).as_bytes()).expect("armor").as_ref(),
            &bytes(k)[..]
        );
    }
}

#[test]
fn the_armored_grant_starts_with_its_header_and_ends_with_checksum_and_footer() {
    let text = armor(&files().answer).expect("armor");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "-----BEGIN LICD GRANT-----");
    assert_eq!(lines[lines.len() - 1], "-----END LICD GRANT-----");
    assert!(lines[lines.len() - 2].starts_with('=') && lines[lines.len() - 2].len() == 9);
    assert!(lines[1..lines.len() - 2].iter().all(|l| l.len() <= 64));
}

#[test]
fn a_request_signed_by_another_key_than_it_names_is_invalid() {
    let forged = seal_activation_request(&request(), &stranger_key());
    assert_eq!(
        open_activation_request(&forged),
        Err(Error::Invalid(
            "request is not signed by the device key it names"
        ))
    );
}

#[test]
fn a_grant_answer_from_an_untrusted_signer_or_carrying_no_bundle_is_refused() {
    let bundle = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    let forged = licd_protocol::envelope::seal_bytes(
        MessageKind::GrantAnswer,
        &stranger_key(),
        None,
        &postcard::to_allocvec(&answer(bundle)).expect("encodes"),
    );
    assert!(matches!(
        open_grant_answer(&forged, &trust(), NOW),
        Err(Error::UnknownSigner(_))
    ));
    let report_inside = answer(seal_activation_request(&request(), &device_key()));
    let sealed = seal_grant_answer(&report_inside, &signing_key(), &signing_cert());
    assert!(matches!(
        open_grant_answer(&sealed, &trust(), NOW),
        Err(Error::WrongKind { .. })
    ));
}

#[test]
fn a_bit_flipped_or_truncated_file_is_refused_armored_or_not() {
    let f = files();
    let mut flipped = f.answer.clone();
    flipped[200] ^= 0x10;
    assert!(open_grant_answer(&flipped, &trust(), NOW).is_err());
    let cut = &f.answer[..f.answer.len() - 1];
    assert!(matches!(
        open_grant_answer(cut, &trust(), NOW),
        Err(Error::Truncated(_))
    ));
    let text = armor(&f.answer).expect("armor");
    let half: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        decode_file(half.as_bytes()).map(|c| c.into_owned()),
        Err(Error::Armor(ArmorError::NoFooter))
    );
}

#[test]
fn sizes_of_the_five_service_files() {
    let f = files();
    for (name, bytes) in [
        ("request", &f.request),
        ("grant answer", &f.answer),
        ("receipt", &f.receipt),
    ] {
        let text = armor(bytes).expect("armor");
        println!(
            "{name}: {} bytes binary, {} bytes armored",
            bytes.len(),
            text.len()
        );
    }
}
