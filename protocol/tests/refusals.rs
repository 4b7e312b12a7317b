//! Every reason a v1 envelope is refused, each asserted as the exact `Error` variant, so a
//! message refused for the wrong reason fails the test. The order of checks is part of the
//! protocol (docs/PROTOCOL.md, "Verification order"), and several tests pin it.

mod common;

use common::*;
use licd_protocol::envelope::{open_bundle, open_report, seal_bundle, seal_bytes, seal_report};
use licd_protocol::limits::{MAX_CERT_LEN, MAX_ENVELOPE_LEN};
use licd_protocol::{Envelope, Error, MessageKind, PublicKey, SignerCertificate};

fn sealed_report() -> Vec<u8> {
    seal_report(&typical_report(), &device_key())
}

fn sealed_bundle() -> Vec<u8> {
    seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert())
}

fn bundle_payload() -> Vec<u8> {
    postcard::to_allocvec(&five_service_bundle()).expect("encodes")
}

/// A bundle signed by the signing key, with `cert` as its certificate.
fn bundle_with_cert(cert: &SignerCertificate) -> Vec<u8> {
    seal_bundle(&five_service_bundle(), &signing_key(), cert)
}

#[test]
fn the_fixtures_open() {
    assert_eq!(open_report(&sealed_report()).unwrap(), typical_report());
    let (bundle, info) = open_bundle(&sealed_bundle(), &trust(), NOW).unwrap();
    assert_eq!(bundle, five_service_bundle());
    assert_eq!(info.signer, public(&signing_key()).id());
}

#[test]
fn empty_input_is_truncated() {
    assert_eq!(
        Envelope::parse(&[]),
        Err(Error::Truncated("missing version byte"))
    );
    assert_eq!(
        open_report(&[]),
        Err(Error::Truncated("missing version byte"))
    );
    assert_eq!(
        open_bundle(&[], &trust(), NOW),
        Err(Error::Truncated("missing version byte"))
    );
}

#[test]
fn oversized_input_is_refused_before_anything_is_parsed() {
    // Version 2 and garbage: the size check still comes first.
    let mut big = vec![0xffu8; MAX_ENVELOPE_LEN + 1];
    big[0] = 2;
    let oversized = Error::Oversized {
        len: MAX_ENVELOPE_LEN + 1,
        max: MAX_ENVELOPE_LEN,
    };
    assert_eq!(Envelope::parse(&big), Err(oversized.clone()));
    assert_eq!(open_report(&big), Err(oversized.clone()));
    assert_eq!(open_bundle(&big, &trust(), NOW), Err(oversized.clone()));
    assert_eq!(
        oversized.to_string(),
        "message of 65537 bytes is over the 65536-byte limit"
    );
}

#[test]
fn an_envelope_of_exactly_the_limit_parses_and_one_byte_more_does_not() {
    // Framing without a certificate is 104 bytes.
    let payload = vec![0u8; MAX_ENVELOPE_LEN - 104];
    let exact = seal_bytes(MessageKind::Report, &device_key(), None, &payload);
    assert_eq!(exact.len(), MAX_ENVELOPE_LEN);
    let env = Envelope::parse(&exact).unwrap();
    env.verify_signature().unwrap();
    let over = seal_bytes(
        MessageKind::Report,
        &device_key(),
        None,
        &[0u8; MAX_ENVELOPE_LEN - 103],
    );
    assert!(matches!(
        Envelope::parse(&over),
        Err(Error::Oversized { len, max }) if len == MAX_ENVELOPE_LEN + 1 && max == MAX_ENVELOPE_LEN
    ));
}

#[test]
fn unknown_version_is_refused_with_a_precise_message() {
    for sealed in [sealed_report(), sealed_bundle()] {
        let mut v2 = sealed.clone();
        v2[0] = 2;
        let err = Envelope::parse(&v2).unwrap_err();
        assert_eq!(
            err,
            Error::BadVersion {
                got: 2,
                supported: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "protocol version 2 not supported, this build speaks 1"
        );
        assert_eq!(open_report(&v2), Err(err.clone()));
        assert_eq!(open_bundle(&v2, &trust(), NOW), Err(err));
        // A version byte alone is enough to be told.
        for got in [0u8, 2, 3, 0x7f, 0xff] {
            assert_eq!(
                Envelope::parse(&[got]),
                Err(Error::BadVersion { got, supported: 1 })
            );
        }
    }
}

#[test]
fn unknown_kind_is_refused() {
    for kind in [0u8, 16, 0x81, 0xff] {
        let mut bytes = sealed_report();
        bytes[1] = kind;
        assert_eq!(Envelope::parse(&bytes), Err(Error::UnknownKind(kind)));
    }
}

#[test]
fn wrong_kind_is_refused_both_ways() {
    assert_eq!(
        open_report(&sealed_bundle()),
        Err(Error::WrongKind {
            expected: MessageKind::Report,
            got: MessageKind::Grants
        })
    );
    assert_eq!(
        open_bundle(&sealed_report(), &trust(), NOW),
        Err(Error::WrongKind {
            expected: MessageKind::Grants,
            got: MessageKind::Report
        })
    );
}

#[test]
fn a_payload_signed_as_one_kind_does_not_verify_as_the_other() {
    // The kind byte is in the signing input: relabelling an envelope breaks the signature.
    let payload = bundle_payload();
    let mut bytes = seal_bytes(
        MessageKind::Report,
        &signing_key(),
        Some(&signing_cert()),
        &payload,
    );
    bytes[1] = MessageKind::Grants.to_byte();
    assert_eq!(open_bundle(&bytes, &trust(), NOW), Err(Error::BadSignature));
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    for sealed in [sealed_report(), sealed_bundle()] {
        for len in 0..sealed.len() {
            let err = Envelope::parse(&sealed[..len]).unwrap_err();
            assert!(
                matches!(err, Error::Truncated(_)),
                "prefix of {len}/{} bytes: {err:?}",
                sealed.len()
            );
        }
    }
}

#[test]
fn trailing_bytes_after_the_signature_are_refused() {
    for sealed in [sealed_report(), sealed_bundle()] {
        for extra in [&[0u8][..], &[0xff; 64][..]] {
            let mut bytes = sealed.clone();
            bytes.extend_from_slice(extra);
            assert_eq!(
                Envelope::parse(&bytes),
                Err(Error::Truncated("bytes after the signature"))
            );
        }
    }
}

#[test]
fn certificate_length_over_the_limit_is_refused_before_reading_it() {
    let mut bytes = sealed_bundle();
    let len = (MAX_CERT_LEN + 1) as u16;
    bytes[34..36].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Envelope::parse(&bytes),
        Err(Error::Invalid("certificate length over the limit"))
    );
}

#[test]
fn a_certificate_that_is_not_145_bytes_is_refused() {
    // Announce 144 bytes: the certificate parser sees the wrong length.
    let mut bytes = sealed_bundle();
    bytes[34..36].copy_from_slice(&144u16.to_be_bytes());
    assert_eq!(
        Envelope::parse(&bytes),
        Err(Error::Truncated("certificate is not 145 bytes"))
    );
}

#[test]
fn an_unknown_certificate_version_is_refused() {
    let mut bytes = sealed_bundle();
    bytes[36] = 2;
    assert_eq!(
        Envelope::parse(&bytes),
        Err(Error::Invalid("unknown certificate version"))
    );
}

#[test]
fn a_bad_envelope_signature_is_refused() {
    let mut bytes = sealed_bundle();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    assert_eq!(open_bundle(&bytes, &trust(), NOW), Err(Error::BadSignature));
    let mut bytes = sealed_report();
    bytes[40] ^= 0x80; // first payload byte
    assert_eq!(open_report(&bytes), Err(Error::BadSignature));
}

#[test]
fn a_small_order_signer_key_is_refused() {
    let mut bytes = sealed_report();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    bytes[2..34].copy_from_slice(&identity);
    assert_eq!(open_report(&bytes), Err(Error::BadPublicKey));
}

#[test]
fn a_bundle_without_a_certificate_is_from_an_unknown_signer() {
    let unsigned_cert = seal_bytes(MessageKind::Grants, &signing_key(), None, &bundle_payload());
    assert_eq!(
        open_bundle(&unsigned_cert, &trust(), NOW),
        Err(Error::UnknownSigner(public(&signing_key()).id()))
    );
    // Not even the pinned root may sign bundles directly: roots only certify signing keys.
    let by_root = seal_bytes(MessageKind::Grants, &root_key(), None, &bundle_payload());
    assert_eq!(
        open_bundle(&by_root, &trust(), NOW),
        Err(Error::UnknownSigner(public(&root_key()).id()))
    );
}

#[test]
fn a_certificate_for_another_key_is_a_mismatch() {
    // The stranger signs, carrying the signing key's (genuine) certificate.
    let bytes = seal_bundle(&five_service_bundle(), &stranger_key(), &signing_cert());
    assert_eq!(
        open_bundle(&bytes, &trust(), NOW),
        Err(Error::CertificateMismatch {
            certified: public(&signing_key()).id(),
            signer: public(&stranger_key()).id(),
        })
    );
}

#[test]
fn a_certificate_from_an_unpinned_root_is_an_unknown_signer() {
    let cert = SignerCertificate::issue(
        &stranger_key(),
        public(&signing_key()),
        CERT_NOT_BEFORE,
        CERT_NOT_AFTER,
    );
    assert_eq!(
        open_bundle(&bundle_with_cert(&cert), &trust(), NOW),
        Err(Error::UnknownSigner(public(&signing_key()).id()))
    );
    // The same bundle opens for an agent that pins the stranger as a root.
    let other_trust = licd_protocol::TrustStore::new(vec![public(&stranger_key())]);
    assert!(open_bundle(&bundle_with_cert(&cert), &other_trust, NOW).is_ok());
}

#[test]
fn a_certificate_with_a_bad_signature_is_refused() {
    // Stretch the validity window after issuing: the root's signature no longer covers it.
    let mut cert = signing_cert();
    cert.body.not_after += 1;
    assert_eq!(
        open_bundle(&bundle_with_cert(&cert), &trust(), NOW),
        Err(Error::BadCertificateSignature)
    );
    assert_eq!(cert.verify(), Err(Error::BadCertificateSignature));
    // Flip a bit of the certificate's signature on the wire.
    let mut bytes = sealed_bundle();
    bytes[36 + 81] ^= 0x04;
    assert_eq!(
        open_bundle(&bytes, &trust(), NOW),
        Err(Error::BadCertificateSignature)
    );
}

#[test]
fn certificate_validity_is_half_open_and_each_side_has_its_error() {
    let bytes = sealed_bundle();
    assert!(open_bundle(&bytes, &trust(), CERT_NOT_BEFORE).is_ok());
    assert!(open_bundle(&bytes, &trust(), CERT_NOT_AFTER - 1).is_ok());
    assert_eq!(
        open_bundle(&bytes, &trust(), CERT_NOT_BEFORE - 1),
        Err(Error::CertificateNotYetValid {
            not_before: CERT_NOT_BEFORE,
            now: CERT_NOT_BEFORE - 1
        })
    );
    assert_eq!(
        open_bundle(&bytes, &trust(), CERT_NOT_AFTER),
        Err(Error::CertificateExpired {
            not_after: CERT_NOT_AFTER,
            now: CERT_NOT_AFTER
        })
    );
    assert_eq!(
        open_bundle(&bytes, &trust(), 0),
        Err(Error::CertificateNotYetValid {
            not_before: CERT_NOT_BEFORE,
            now: 0
        })
    );
    assert_eq!(
        open_bundle(&bytes, &trust(), u64::MAX),
        Err(Error::CertificateExpired {
            not_after: CERT_NOT_AFTER,
            now: u64::MAX
        })
    );
}

#[test]
fn a_revoked_signer_is_refused_even_with_a_valid_certificate() {
    let mut trust = trust();
    trust.revoke(public(&stranger_key()).id());
    assert!(open_bundle(&sealed_bundle(), &trust, NOW).is_ok());
    trust.revoke(public(&signing_key()).id());
    assert_eq!(
        open_bundle(&sealed_bundle(), &trust, NOW),
        Err(Error::SignerRevoked(public(&signing_key()).id()))
    );
    // Revocation is checked before the validity window.
    assert_eq!(
        open_bundle(&sealed_bundle(), &trust, CERT_NOT_AFTER + 1),
        Err(Error::SignerRevoked(public(&signing_key()).id()))
    );
}

#[test]
fn the_signature_is_checked_before_the_trust_chain() {
    // A forged bundle with an expired certificate reports the forgery, not the expiry.
    let mut bytes = sealed_bundle();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    assert_eq!(
        open_bundle(&bytes, &trust(), CERT_NOT_AFTER + 1),
        Err(Error::BadSignature)
    );
}

#[test]
fn the_trust_chain_is_checked_before_decoding() {
    // A validly signed payload that does not decode, from an unpinned signer: refused as
    // unknown signer, so untrusted bytes never reach the decoder.
    let bytes = seal_bytes(MessageKind::Grants, &stranger_key(), None, &[0xff; 8]);
    assert_eq!(
        open_bundle(&bytes, &trust(), NOW),
        Err(Error::UnknownSigner(public(&stranger_key()).id()))
    );
}

#[test]
fn a_validly_signed_payload_that_does_not_decode_is_a_decode_error() {
    let bytes = seal_bytes(
        MessageKind::Grants,
        &signing_key(),
        Some(&signing_cert()),
        &[0xff; 8],
    );
    assert!(matches!(
        open_bundle(&bytes, &trust(), NOW),
        Err(Error::Decode(_))
    ));
    let bytes = seal_bytes(MessageKind::Report, &device_key(), None, &[]);
    assert_eq!(
        open_report(&bytes),
        Err(Error::Decode("unexpected end of payload"))
    );
}

#[test]
fn bytes_after_the_payload_are_a_decode_error() {
    let mut payload = bundle_payload();
    payload.push(0);
    let bytes = seal_bytes(
        MessageKind::Grants,
        &signing_key(),
        Some(&signing_cert()),
        &payload,
    );
    assert_eq!(
        open_bundle(&bytes, &trust(), NOW),
        Err(Error::Decode("bytes after the payload"))
    );
}

#[test]
fn an_invalid_identifier_inside_a_signed_payload_is_refused_at_decoding() {
    let mut payload = postcard::to_allocvec(&typical_report()).unwrap();
    // The device id is the first field: length 7, then "ap-0042". Make it "ap/0042".
    assert_eq!(&payload[..8], b"\x07ap-0042");
    payload[3] = b'/';
    let bytes = seal_bytes(MessageKind::Report, &device_key(), None, &payload);
    assert_eq!(
        open_report(&bytes),
        Err(Error::Decode("field value refused"))
    );
}

#[test]
fn a_report_not_signed_by_the_key_it_names_is_refused() {
    let bytes = seal_report(&typical_report(), &stranger_key());
    assert_eq!(
        open_report(&bytes),
        Err(Error::Invalid(
            "report is not signed by the device key it names"
        ))
    );
}

#[test]
fn content_rules_are_enforced_after_decoding() {
    let mut report = typical_report();
    report.model = "x".repeat(129);
    assert_eq!(
        open_report(&seal_report(&report, &device_key())),
        Err(Error::Invalid("model longer than 128 bytes"))
    );
    let mut report = typical_report();
    report.services_wanted = (0..65).map(|i| svc(&format!("s{i}"))).collect();
    assert_eq!(
        open_report(&seal_report(&report, &device_key())),
        Err(Error::Invalid("more than 64 services wanted"))
    );

    let open = |b: &licd_protocol::GrantBundle| {
        open_bundle(
            &seal_bundle(b, &signing_key(), &signing_cert()),
            &trust(),
            NOW,
        )
    };
    let mut twice = five_service_bundle();
    twice.grants.push(twice.grants[0].clone());
    assert_eq!(
        open(&twice),
        Err(Error::Invalid("a service is granted twice"))
    );
    let mut backwards = five_service_bundle();
    backwards.grants[2].not_after = backwards.grants[2].not_before - 1;
    assert_eq!(
        open(&backwards),
        Err(Error::Invalid("a grant's term ends before it starts"))
    );
    let mut many = five_service_bundle();
    many.grants = (0..65)
        .map(|i| {
            let mut g = five_service_bundle().grants[0].clone();
            g.service = svc(&format!("s{i}"));
            g
        })
        .collect();
    assert_eq!(
        open(&many),
        Err(Error::Invalid("more than 64 services in a bundle"))
    );
    // 64 is allowed.
    many.grants.truncate(64);
    assert!(open(&many).is_ok());
}

#[test]
fn a_key_that_is_not_a_curve_point_is_refused() {
    // y = 2 has no x on edwards25519.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert_eq!(
        PublicKey(not_a_point).to_verifying_key(),
        Err(Error::BadPublicKey)
    );
}

#[test]
fn error_messages_read_clearly() {
    let id = public(&signing_key()).id();
    let cases = [
        (Error::Truncated("missing signature"), "message truncated or malformed framing: missing signature"),
        (Error::UnknownKind(9), "unknown message kind 9"),
        (
            Error::WrongKind { expected: MessageKind::Grants, got: MessageKind::Report },
            "expected a Grants message, got Report",
        ),
        (Error::BadSignature, "bad signature"),
        (
            Error::CertificateExpired { not_after: 10, now: 11 },
            "signer certificate expired at 10 (now 11)",
        ),
        (
            Error::CertificateNotYetValid { not_before: 10, now: 9 },
            "signer certificate not valid before 10 (now 9)",
        ),
        (
            Error::UnknownSigner(id),
            "signer 1325b850c2871916eae203f0efc3c898 is not trusted (no certificate chaining to a pinned root)",
        ),
        (Error::SignerRevoked(id), "signer 1325b850c2871916eae203f0efc3c898 has been revoked"),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

#[test]
fn the_largest_valid_messages_fit_well_within_the_envelope_limit() {
    // Every limit at its maximum: 64-byte identifiers, 128-byte texts, 64 services, the largest
    // integers. A controller can never build a valid bundle its agents refuse as oversized.
    let id = |i: usize| format!("{i:03}{}", "x".repeat(61));
    let mut report = typical_report();
    report.device = licd_protocol::DeviceId::new(id(0)).unwrap();
    report.tenant = licd_protocol::TenantId::new(id(1)).unwrap();
    for text in [
        &mut report.model,
        &mut report.serial,
        &mut report.product_class,
        &mut report.firmware_version,
        &mut report.agent_version,
    ] {
        *text = "é".repeat(64); // 128 bytes
    }
    report.vm_count = Some(u32::MAX);
    report.services_wanted = (0..64).map(|i| svc(&id(i))).collect();
    (report.bundle_seq, report.clock, report.uptime) = (u64::MAX, u64::MAX, u64::MAX);
    let sealed = seal_report(&report, &device_key());
    assert_eq!(open_report(&sealed).unwrap(), report);

    let mut bundle = five_service_bundle();
    bundle.device = report.device.clone();
    bundle.tenant = report.tenant.clone();
    (bundle.seq, bundle.issued_at, bundle.refresh_after) = (u64::MAX, u64::MAX, u64::MAX);
    bundle.grants = (0..64)
        .map(|i| licd_protocol::ServiceGrant {
            service: svc(&id(i)),
            license: licd_protocol::LicenseId::new(id(i)).unwrap(),
            sku: licd_protocol::Sku::new(id(i)).unwrap(),
            not_before: u64::MAX,
            not_after: u64::MAX,
            lease_until: u64::MAX,
            grace: u64::MAX,
            vm_allowance: Some(u32::MAX),
        })
        .collect();
    bundle.withheld = (0..64)
        .map(|i| licd_protocol::Withheld {
            service: svc(&id(i + 64)),
            reason: licd_protocol::WithheldReason::UnknownTenant,
        })
        .collect();
    let sealed_bundle = seal_bundle(&bundle, &signing_key(), &signing_cert());
    assert_eq!(
        open_bundle(&sealed_bundle, &trust(), NOW).unwrap().0,
        bundle
    );
    println!(
        "largest valid report: {} bytes, largest valid bundle: {} bytes (limit {MAX_ENVELOPE_LEN})",
        sealed.len(),
        sealed_bundle.len()
    );
    assert!(sealed.len() < MAX_ENVELOPE_LEN / 4);
    assert!(sealed_bundle.len() < MAX_ENVELOPE_LEN / 2);
}

#[test]
fn a_report_carrying_a_certificate_is_refused() {
    let device = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let root = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    let cert = licd_protocol::SignerCertificate::issue(
        &root,
        licd_protocol::PublicKey::from(&device.verifying_key()),
        0,
        u64::MAX,
    );
    let report = licd_protocol::DeviceReport {
        device: "d".parse().unwrap(),
        tenant: "t".parse().unwrap(),
        device_key: licd_protocol::PublicKey::from(&device.verifying_key()),
        model: String::new(),
        serial: String::new(),
        product_class: String::new(),
        firmware_version: String::new(),
        agent_version: String::new(),
        vm_count: None,
        services_wanted: vec![],
        bundle_seq: 0,
        clock: 0,
        uptime: 0,
        clock_rollback: false,
    };
    let payload = postcard::to_allocvec(&report).unwrap();
    let raw = licd_protocol::envelope::seal_bytes(
        licd_protocol::MessageKind::Report,
        &device,
        Some(&cert),
        &payload,
    );
    assert!(matches!(
        licd_protocol::envelope::open_report(&raw),
        Err(licd_protocol::Error::Invalid(_))
    ));
}
