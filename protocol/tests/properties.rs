//! Property tests (proptest) of the wire format: round trips for arbitrary valid content, any
//! single bit flip of a sealed envelope refused (with the reason its position implies), and
//! arbitrary or hostile bytes never panicking the parser, the decoder or the topic parser.
//!
//! Case counts are moderate: ed25519 in a debug build costs milliseconds per operation.

mod common;

use std::collections::BTreeSet;

use common::*;
use ed25519_dalek::SigningKey;
use licd_protocol::cert::CERT_LEN;
use licd_protocol::envelope::{open_bundle, open_report, seal_bundle, seal_bytes, seal_report};
use licd_protocol::limits::{MAX_ENVELOPE_LEN, MAX_TEXT_LEN};
use licd_protocol::{
    DeviceId, DeviceReport, Envelope, Error, GrantBundle, KeyId, LicenseId, MessageKind, PublicKey,
    ServiceGrant, ServiceName, Sku, TenantId, Topic, Withheld, WithheldReason,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies

fn id_string() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}".prop_filter("'.' and '..' are refused", |s| s != "." && s != "..")
}

fn text() -> impl Strategy<Value = String> {
    // Any printable Unicode (control characters are refused), at most 128 bytes of UTF-8.
    "\\PC{0,32}".prop_filter("at most 128 bytes", |s| s.len() <= MAX_TEXT_LEN)
}

fn service() -> impl Strategy<Value = ServiceName> {
    id_string().prop_map(|s| ServiceName::new(s).expect("strategy makes valid ids"))
}

fn seed() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

prop_compose! {
    fn report_with_key(key: PublicKey)(
        device in id_string(),
        tenant in id_string(),
        model in text(),
        serial in text(),
        product_class in text(),
        firmware_version in text(),
        agent_version in text(),
        vm_count in any::<Option<u32>>(),
        services_wanted in prop::collection::vec(service(), 0..8),
        bundle_seq in any::<u64>(),
        clock in any::<u64>(),
        uptime in any::<u64>(),
        clock_rollback in any::<bool>(),
    ) -> DeviceReport {
        DeviceReport {
            device: DeviceId::new(device).expect("valid"),
            tenant: TenantId::new(tenant).expect("valid"),
            device_key: key,
            model, serial, product_class, firmware_version, agent_version,
            vm_count, services_wanted, bundle_seq, clock, uptime, clock_rollback,
        }
    }
}

fn report() -> impl Strategy<Value = DeviceReport> {
    any::<[u8; 32]>().prop_flat_map(|k| report_with_key(PublicKey(k)))
}

prop_compose! {
    fn grant(service: ServiceName)(
        license in id_string(),
        sku in id_string(),
        not_before in any::<u64>(),
        term in any::<u64>(),
        lease_until in any::<u64>(),
        grace in any::<u64>(),
        vm_allowance in any::<Option<u32>>(),
    ) -> ServiceGrant {
        ServiceGrant {
            service: service.clone(),
            license: LicenseId::new(license).expect("valid"),
            sku: Sku::new(sku).expect("valid"),
            not_before,
            not_after: not_before.saturating_add(term),
            lease_until, grace, vm_allowance,
        }
    }
}

fn grants() -> impl Strategy<Value = Vec<ServiceGrant>> {
    prop::collection::btree_set(service(), 0..7)
        .prop_flat_map(|services: BTreeSet<_>| services.into_iter().map(grant).collect::<Vec<_>>())
}

fn reason() -> impl Strategy<Value = WithheldReason> {
    prop_oneof![
        Just(WithheldReason::NotEntitled),
        Just(WithheldReason::SeatsExhausted),
        Just(WithheldReason::Unassigned),
        Just(WithheldReason::UnknownTenant),
    ]
}

prop_compose! {
    fn bundle()(
        device in id_string(),
        device_key in any::<[u8; 16]>(),
        tenant in id_string(),
        seq in any::<u64>(),
        issued_at in any::<u64>(),
        refresh_after in any::<u64>(),
        grants in grants(),
        withheld in prop::collection::vec(
            (service(), reason()).prop_map(|(service, reason)| Withheld { service, reason }),
            0..4,
        ),
    ) -> GrantBundle {
        GrantBundle {
            device: DeviceId::new(device).expect("valid"),
            device_key: KeyId(device_key),
            tenant: TenantId::new(tenant).expect("valid"),
            seq, issued_at, refresh_after, grants, withheld,
        }
    }
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[bit / 8] ^= 1 << (bit % 8);
    b
}

// ---------------------------------------------------------------------------------------------
// Where a flipped bit lands decides the refusal. Offsets follow docs/PROTOCOL.md.

/// The error a single flipped bit at `byte` must produce, for an envelope with a certificate
/// of `cert_len` bytes (0 or 145) and a payload of `payload_len` bytes.
fn flip_is_refused_for_the_right_reason(
    err: &Error,
    byte: usize,
    cert_len: usize,
    payload_len: usize,
    signer: KeyId,
) -> bool {
    let cert_start = 36;
    let payload_len_at = cert_start + cert_len;
    let payload_start = payload_len_at + 4;
    let signature_start = payload_start + payload_len;
    match byte {
        0 => matches!(err, Error::BadVersion { supported: 1, .. }),
        // A flipped kind is unknown, or another known kind (3 = 2^1 turns Grants into
        // Revocations, 3 = 1^2 turns Report into it too): refused as the wrong kind.
        1 => matches!(err, Error::UnknownKind(_) | Error::WrongKind { .. }),
        2..=33 => matches!(err, Error::BadSignature | Error::BadPublicKey),
        34 | 35 => matches!(err, Error::Truncated(_) | Error::Invalid(_)),
        b if b < payload_len_at => {
            let at = b - cert_start;
            match at {
                0 => *err == Error::Invalid("unknown certificate version"),
                1..=32 => *err == Error::UnknownSigner(signer),
                33..=64 => {
                    matches!(err, Error::CertificateMismatch { signer: s, .. } if *s == signer)
                }
                _ => *err == Error::BadCertificateSignature,
            }
        }
        b if b < payload_start => matches!(err, Error::Truncated(_)),
        b if b < signature_start => *err == Error::BadSignature,
        _ => *err == Error::BadSignature,
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn report_postcard_round_trips(report in report()) {
        let bytes = postcard::to_allocvec(&report).unwrap();
        prop_assert_eq!(postcard::from_bytes::<DeviceReport>(&bytes).unwrap(), report.clone());
        prop_assert!(report.validate().is_ok());
    }

    #[test]
    fn bundle_postcard_round_trips(bundle in bundle()) {
        let bytes = postcard::to_allocvec(&bundle).unwrap();
        prop_assert_eq!(postcard::from_bytes::<GrantBundle>(&bytes).unwrap(), bundle.clone());
        prop_assert!(bundle.validate().is_ok());
    }

    #[test]
    fn decoding_a_truncated_payload_fails_without_panicking(bundle in bundle(), cut in any::<prop::sample::Index>()) {
        let bytes = postcard::to_allocvec(&bundle).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(postcard::from_bytes::<GrantBundle>(&bytes[..cut]).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn report_seal_then_open_round_trips(seed in seed(), report in report()) {
        let key = SigningKey::from_bytes(&seed);
        let report = DeviceReport { device_key: public(&key), ..report };
        let sealed = seal_report(&report, &key);
        prop_assert_eq!(open_report(&sealed).unwrap(), report);
    }

    #[test]
    fn bundle_seal_then_open_round_trips(bundle in bundle()) {
        let sealed = seal_bundle(&bundle, &signing_key(), &signing_cert());
        let (opened, info) = open_bundle(&sealed, &trust(), NOW).unwrap();
        prop_assert_eq!(opened, bundle);
        prop_assert_eq!(info.signer, public(&signing_key()).id());
    }
}

// ---------------------------------------------------------------------------------------------
// Any single bit flip is refused, for the reason its position implies.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_bit_flip_in_a_sealed_report_is_refused(bit in any::<prop::sample::Index>()) {
        let sealed = seal_report(&typical_report(), &device_key());
        let bit = bit.index(sealed.len() * 8);
        let err = open_report(&flip(&sealed, bit)).unwrap_err();
        let payload_len = sealed.len() - 104;
        prop_assert!(
            flip_is_refused_for_the_right_reason(&err, bit / 8, 0, payload_len, public(&device_key()).id()),
            "bit {} (byte {}): {:?}", bit, bit / 8, err
        );
    }

    #[test]
    fn any_bit_flip_in_a_sealed_bundle_is_refused(bit in any::<prop::sample::Index>()) {
        let sealed = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
        let bit = bit.index(sealed.len() * 8);
        let err = open_bundle(&flip(&sealed, bit), &trust(), NOW).unwrap_err();
        let payload_len = sealed.len() - 104 - CERT_LEN;
        prop_assert!(
            flip_is_refused_for_the_right_reason(&err, bit / 8, CERT_LEN, payload_len, public(&signing_key()).id()),
            "bit {} (byte {}): {:?}", bit, bit / 8, err
        );
    }

    #[test]
    fn any_bit_flip_in_an_arbitrary_sealed_bundle_is_refused(bundle in bundle(), bit in any::<prop::sample::Index>()) {
        let sealed = seal_bundle(&bundle, &signing_key(), &signing_cert());
        let bit = bit.index(sealed.len() * 8);
        prop_assert!(open_bundle(&flip(&sealed, bit), &trust(), NOW).is_err());
    }
}

/// The framing bytes a flip can hit without any signature being checked (version, kind,
/// lengths, certificate version), every bit of them: cheap, so exhaustive.
#[test]
fn every_bit_flip_in_the_framing_is_refused_for_the_right_reason() {
    let report = seal_report(&typical_report(), &device_key());
    let bundle = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    let report_payload = report.len() - 104;
    let bundle_payload = bundle.len() - 104 - CERT_LEN;
    let report_bytes = [0, 1, 34, 35, 36, 37, 38, 39];
    let bundle_bytes = [0, 1, 34, 35, 36, 181, 182, 183, 184];
    for byte in report_bytes {
        for bit in 0..8 {
            let err = open_report(&flip(&report, byte * 8 + bit)).unwrap_err();
            let signer = public(&device_key()).id();
            assert!(
                flip_is_refused_for_the_right_reason(&err, byte, 0, report_payload, signer),
                "report byte {byte} bit {bit}: {err:?}"
            );
        }
    }
    for byte in bundle_bytes {
        for bit in 0..8 {
            let err = open_bundle(&flip(&bundle, byte * 8 + bit), &trust(), NOW).unwrap_err();
            let signer = public(&signing_key()).id();
            assert!(
                flip_is_refused_for_the_right_reason(&err, byte, CERT_LEN, bundle_payload, signer),
                "bundle byte {byte} bit {bit}: {err:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input never panics.

fn envelope_like() -> impl Strategy<Value = Vec<u8>> {
    // Plausible framing around random content, so the parser gets past the first bytes.
    (
        1u8..=2,
        any::<[u8; 32]>(),
        prop_oneof![Just(0usize), Just(CERT_LEN), 0usize..300],
        prop::collection::vec(any::<u8>(), 0..400),
        -3i64..=3,
    )
        .prop_map(|(kind, signer, cert_len, body, skew)| {
            let mut v = vec![1, kind];
            v.extend_from_slice(&signer);
            v.extend_from_slice(&(cert_len as u16).to_be_bytes());
            let cert: Vec<u8> = body.iter().cycle().take(cert_len).copied().collect();
            v.extend_from_slice(&cert);
            let payload_len = (body.len() as i64 + skew).max(0) as u32;
            v.extend_from_slice(&payload_len.to_be_bytes());
            v.extend_from_slice(&body);
            v.extend_from_slice(&[0x5a; 64]);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser_or_the_openers(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..1024), envelope_like()],
    ) {
        let _ = Envelope::parse(&bytes);
        let _ = open_report(&bytes);
        let _ = open_bundle(&bytes, &trust(), NOW);
    }

    #[test]
    fn arbitrary_strings_never_panic_the_topic_parser(s in ".{0,200}") {
        let _ = Topic::parse(&s);
    }

    #[test]
    fn a_version_byte_other_than_1_is_bad_version(got in any::<u8>(), rest in prop::collection::vec(any::<u8>(), 0..300)) {
        prop_assume!(got != 1);
        let mut bytes = vec![got];
        bytes.extend_from_slice(&rest);
        let err = Envelope::parse(&bytes).unwrap_err();
        prop_assert_eq!(&err, &Error::BadVersion { got, supported: 1 });
        prop_assert_eq!(err.to_string(), format!("protocol version {got} not supported, this build speaks 1"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Validly signed garbage (or a mutated valid payload) from a trusted signer reaches the
    /// decoder: it must refuse with a decode/content error, never panic or accept junk
    /// silently.
    #[test]
    fn validly_signed_garbage_payloads_never_panic_the_decoder(
        garbage in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| {
                let mut p = postcard::to_allocvec(&five_service_bundle()).unwrap();
                let i = i.index(p.len());
                p[i] = b;
                p
            }),
        ],
    ) {
        let sealed = seal_bytes(MessageKind::Grants, &signing_key(), Some(&signing_cert()), &garbage);
        match open_bundle(&sealed, &trust(), NOW) {
            Ok((bundle, _)) => prop_assert!(bundle.validate().is_ok()),
            Err(e) => prop_assert!(matches!(e, Error::Decode(_) | Error::Invalid(_)), "{e:?}"),
        }
        let sealed = seal_bytes(MessageKind::Report, &device_key(), None, &garbage);
        match open_report(&sealed) {
            Ok(report) => prop_assert_eq!(report.device_key, public(&device_key())),
            Err(e) => prop_assert!(matches!(e, Error::Decode(_) | Error::Invalid(_)), "{e:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn oversized_input_is_refused_before_parsing(
        extra in 1usize..4096,
        first in any::<u8>(),
        fill in any::<u8>(),
    ) {
        let mut bytes = vec![fill; MAX_ENVELOPE_LEN + extra];
        bytes[0] = first;
        let want = Error::Oversized { len: MAX_ENVELOPE_LEN + extra, max: MAX_ENVELOPE_LEN };
        prop_assert_eq!(Envelope::parse(&bytes).unwrap_err(), want.clone());
        prop_assert_eq!(open_report(&bytes).unwrap_err(), want.clone());
        prop_assert_eq!(open_bundle(&bytes, &trust(), NOW).unwrap_err(), want);
    }
}
