//! Remote diagnostics on the wire: requests (kind 5) open only when signed by a certified
//! controller key that chains to a pinned root and are fresh; responses (kind 6) open only
//! when signed by the device's pinned key. Each refusal is asserted as its exact variant.

mod common;

use common::*;
use licd_protocol::diag::{DiagRequest, DiagResponse, MAX_DIAG_REPORT_LEN};
use licd_protocol::envelope::{
    open_bundle, open_diag_request, open_diag_response, seal_bundle, seal_bytes, seal_diag_request,
    seal_diag_response,
};
use licd_protocol::{Error, MessageKind, SignerCertificate};

const TOLERANCE: u64 = 300;

fn request() -> DiagRequest {
    DiagRequest {
        device: device(),
        tenant: tenant(),
        request_id: [0xab; 16],
        issued_at: NOW,
    }
}

fn response() -> DiagResponse {
    DiagResponse {
        device: device(),
        tenant: tenant(),
        request_id: [0xab; 16],
        generated_at: NOW + 1,
        report: r#"{"v":1,"verdict":"ok","steps":[]}"#.into(),
    }
}

fn sealed_request(r: &DiagRequest) -> Vec<u8> {
    seal_diag_request(r, &signing_key(), &signing_cert())
}

#[test]
fn kinds_5_and_6_are_the_diag_messages() {
    assert_eq!(MessageKind::DiagRequest.to_byte(), 5);
    assert_eq!(MessageKind::DiagResponse.to_byte(), 6);
    assert_eq!(MessageKind::from_byte(5), Ok(MessageKind::DiagRequest));
    assert_eq!(MessageKind::from_byte(6), Ok(MessageKind::DiagResponse));
    assert_eq!(MessageKind::from_byte(16), Err(Error::UnknownKind(16)));
}

#[test]
fn a_signed_request_and_response_round_trip() {
    let (r, signer) =
        open_diag_request(&sealed_request(&request()), &trust(), NOW, TOLERANCE).unwrap();
    assert_eq!(r, request());
    assert_eq!(signer.signer, public(&signing_key()).id());
    assert_eq!(signer.root, public(&root_key()).id());

    let bytes = seal_diag_response(&response(), &device_key());
    assert_eq!(
        open_diag_response(&bytes, &public(&device_key())).unwrap(),
        response()
    );
}

#[test]
fn a_request_of_another_kind_is_refused_both_ways() {
    let bundle = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    assert_eq!(
        open_diag_request(&bundle, &trust(), NOW, TOLERANCE),
        Err(Error::WrongKind {
            expected: MessageKind::DiagRequest,
            got: MessageKind::Grants
        })
    );
    // A controller-signed request cannot be replayed as a bundle either (the kind byte is
    // signed, and the payloads differ).
    assert_eq!(
        open_bundle(&sealed_request(&request()), &trust(), NOW),
        Err(Error::WrongKind {
            expected: MessageKind::Grants,
            got: MessageKind::DiagRequest
        })
    );
    let resp = seal_diag_response(&response(), &device_key());
    assert_eq!(
        open_diag_request(&resp, &trust(), NOW, TOLERANCE),
        Err(Error::WrongKind {
            expected: MessageKind::DiagRequest,
            got: MessageKind::DiagResponse
        })
    );
}

#[test]
fn a_request_relabelled_as_another_kind_fails_its_signature() {
    let payload = postcard::to_allocvec(&request()).unwrap();
    let mut bytes = seal_bytes(
        MessageKind::Grants,
        &signing_key(),
        Some(&signing_cert()),
        &payload,
    );
    bytes[1] = MessageKind::DiagRequest.to_byte();
    assert_eq!(
        open_diag_request(&bytes, &trust(), NOW, TOLERANCE),
        Err(Error::BadSignature)
    );
}

#[test]
fn a_request_from_an_uncertified_or_foreign_signer_is_refused() {
    let stranger = public(&stranger_key()).id();
    // No certificate at all: a stranger (or the device itself) cannot ask.
    let payload = postcard::to_allocvec(&request()).unwrap();
    let bare = seal_bytes(MessageKind::DiagRequest, &stranger_key(), None, &payload);
    assert_eq!(
        open_diag_request(&bare, &trust(), NOW, TOLERANCE),
        Err(Error::UnknownSigner(stranger))
    );
    // Certified by a root nobody pinned.
    let foreign = SignerCertificate::issue(
        &stranger_key(),
        public(&stranger_key()),
        CERT_NOT_BEFORE,
        CERT_NOT_AFTER,
    );
    let bytes = seal_diag_request(&request(), &stranger_key(), &foreign);
    assert_eq!(
        open_diag_request(&bytes, &trust(), NOW, TOLERANCE),
        Err(Error::UnknownSigner(stranger))
    );
    // A revoked signing key.
    let mut revoked = trust();
    revoked.revoke(public(&signing_key()).id());
    assert_eq!(
        open_diag_request(&sealed_request(&request()), &revoked, NOW, TOLERANCE),
        Err(Error::SignerRevoked(public(&signing_key()).id()))
    );
    // The certificate ended.
    assert_eq!(
        open_diag_request(
            &sealed_request(&request()),
            &trust(),
            CERT_NOT_AFTER,
            TOLERANCE
        ),
        Err(Error::CertificateExpired {
            not_after: CERT_NOT_AFTER,
            now: CERT_NOT_AFTER
        })
    );
}

#[test]
fn a_stale_or_future_request_is_refused() {
    let mut old = request();
    old.issued_at = NOW - TOLERANCE - 1;
    assert_eq!(
        open_diag_request(&sealed_request(&old), &trust(), NOW, TOLERANCE),
        Err(Error::StaleRequest {
            issued_at: old.issued_at,
            now: NOW
        })
    );
    let mut future = request();
    future.issued_at = NOW + TOLERANCE + 1;
    assert_eq!(
        open_diag_request(&sealed_request(&future), &trust(), NOW, TOLERANCE),
        Err(Error::RequestFromFuture {
            issued_at: future.issued_at,
            now: NOW
        })
    );
    // At the edges it is still fresh.
    for at in [NOW - TOLERANCE, NOW + TOLERANCE] {
        let mut r = request();
        r.issued_at = at;
        assert!(open_diag_request(&sealed_request(&r), &trust(), NOW, TOLERANCE).is_ok());
    }
}

#[test]
fn a_response_not_signed_by_the_pinned_device_key_is_refused() {
    let bytes = seal_diag_response(&response(), &stranger_key());
    assert_eq!(
        open_diag_response(&bytes, &public(&device_key())),
        Err(Error::NotDeviceKey {
            expected: public(&device_key()).id(),
            got: public(&stranger_key()).id()
        })
    );
    // Tampered payload under the right key.
    let mut bytes = seal_diag_response(&response(), &device_key());
    let at = bytes.len() - 70;
    bytes[at] ^= 1;
    assert!(matches!(
        open_diag_response(&bytes, &public(&device_key())),
        Err(Error::BadSignature)
    ));
    // A certificate has no place on a response.
    let payload = postcard::to_allocvec(&response()).unwrap();
    let with_cert = seal_bytes(
        MessageKind::DiagResponse,
        &device_key(),
        Some(&signing_cert()),
        &payload,
    );
    assert_eq!(
        open_diag_response(&with_cert, &public(&device_key())),
        Err(Error::Invalid(
            "a diagnostic response carries no signer certificate"
        ))
    );
}

#[test]
fn a_response_over_the_report_limit_is_refused() {
    let mut r = response();
    r.report = "x".repeat(MAX_DIAG_REPORT_LEN + 1);
    let bytes = seal_diag_response(&r, &device_key());
    assert_eq!(
        open_diag_response(&bytes, &public(&device_key())),
        Err(Error::Invalid("diagnostic report longer than 48 KiB"))
    );
    r.report = "x".repeat(MAX_DIAG_REPORT_LEN);
    let bytes = seal_diag_response(&r, &device_key());
    assert!(bytes.len() <= licd_protocol::limits::MAX_ENVELOPE_LEN);
    assert!(open_diag_response(&bytes, &public(&device_key())).is_ok());
}
