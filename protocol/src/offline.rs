//! Licensing by file, for devices that never reach a broker (air-gapped sites, staging, RMA).
//!
//! The same signed envelopes travel as files instead of MQTT messages, plus three kinds that
//! only files carry:
//!
//! - [`ActivationRequest`] (kind 7, signed by the device key): the device's report and a fresh
//!   nonce — `licd request` writes it, the controller answers it.
//! - [`GrantAnswer`] (kind 9, signed by a certified controller key): a signed grant bundle
//!   (kind 2, unchanged) together with the nonce of the request it answers, so the device can
//!   tell an answer to its own request from any other grant file. A plain kind-2 bundle is a
//!   grant file too (it answers no request).
//! - [`ReleaseReceipt`] (kind 8, signed by the device key): the device gave back the named
//!   services of the bundle it held — the controller frees their seats once.
//!
//! A file is one envelope, binary or [armored](armor): base64 between a header and a footer
//! line, with a checksum, in lines short enough for a serial console or a web form.
//!
//! This module holds the payloads, their content rules, sealing and opening, and the armor
//! codec. What a device accepts (pending nonces, the release record, seq rules) is the agent's
//! decision (`licd-core`); what a controller accepts is the controller's.

use alloc::borrow::Cow;
use alloc::vec::Vec;

use ed25519_dalek::SigningKey;

use crate::cert::SignerCertificate;
use crate::envelope::{open_certified, seal, Envelope, MessageKind};
use crate::error::Error;
use crate::id::{DeviceId, ServiceName, TenantId};
use crate::keys::PublicKey;
use crate::limits::{MAX_ENVELOPE_LEN, MAX_SERVICES};
use crate::messages::DeviceReport;
use crate::trust::{SignerInfo, TrustStore};
use crate::UnixTime;

pub mod armor;

pub use armor::{armor, dearmor, ArmorError};

/// 16 random bytes naming one request (or one receipt); never reused.
pub type Nonce = [u8; 16];

/// A device asks for licenses by file. Signed by the device key (no certificate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActivationRequest {
    /// What a connected device would report: identity, key, model, VM count, services
    /// wanted, the seq it holds (a renewal carries it), its clock and rollback flag.
    pub report: DeviceReport,
    /// Fresh randomness: the grant file answering this request names it.
    pub nonce: Nonce,
}

/// A grant file answering a request: the signed bundle and the request's nonce. Signed by a
/// certified controller signing key (the same chain as the bundle's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantAnswer {
    /// The device the request came from (the bundle inside must name it too).
    pub device: DeviceId,
    /// The nonce of the [`ActivationRequest`] this answers.
    pub request_nonce: Nonce,
    /// The signed grant bundle envelope (kind 2, or kind 10 with policy), exactly as a broker
    /// would carry it.
    pub bundle: Vec<u8>,
}

/// A device gave licenses back. Signed by the device key (no certificate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReleaseReceipt {
    /// The releasing device.
    pub device: DeviceId,
    /// Its tenant.
    pub tenant: TenantId,
    /// `seq` of the bundle the device held when it released (the controller refuses a receipt
    /// for a bundle it never issued to this device).
    pub bundle_seq: u64,
    /// The services given back: non-empty, at most 64, each once.
    pub services: Vec<ServiceName>,
    /// The device's trusted time when it released.
    pub released_at: UnixTime,
    /// Fresh randomness: a controller frees seats for one receipt once.
    pub nonce: Nonce,
}

impl ReleaseReceipt {
    /// Checks the rules postcard cannot: a non-empty, bounded list of distinct services.
    pub fn validate(&self) -> Result<(), Error> {
        if self.services.is_empty() {
            return Err(Error::Invalid("a release receipt names no service"));
        }
        if self.services.len() > MAX_SERVICES {
            return Err(Error::Invalid("more than 64 services released"));
        }
        for (i, s) in self.services.iter().enumerate() {
            if self.services[..i].contains(s) {
                return Err(Error::Invalid("a service is released twice"));
            }
        }
        Ok(())
    }
}

/// Encodes and signs an activation request with the device key.
pub fn seal_activation_request(request: &ActivationRequest, device_key: &SigningKey) -> Vec<u8> {
    seal(MessageKind::ActivationRequest, device_key, None, request)
}

/// Verifies and decodes an activation request: no certificate, the signature by the
/// envelope's signer, decoding, then the report's rules — its `device_key` must be the signer.
/// Whether that key is the one pinned for the device is the controller's decision.
pub fn open_activation_request(bytes: &[u8]) -> Result<ActivationRequest, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::ActivationRequest)?;
    if env.cert.is_some() {
        return Err(Error::Invalid(
            "an activation request carries no signer certificate",
        ));
    }
    env.verify_signature()?;
    let request: ActivationRequest = env.decode()?;
    if request.report.device_key != env.signer {
        return Err(Error::Invalid(
            "request is not signed by the device key it names",
        ));
    }
    request.report.validate()?;
    Ok(request)
}

/// Encodes and signs a grant answer with a certified controller signing key.
pub fn seal_grant_answer(
    answer: &GrantAnswer,
    signing_key: &SigningKey,
    cert: &SignerCertificate,
) -> Vec<u8> {
    seal(MessageKind::GrantAnswer, signing_key, Some(cert), answer)
}

/// Verifies and decodes a grant answer like a live bundle (signature, then the chain to a
/// pinned root at `now`), then checks that it carries a bundle envelope, kind Grants or
/// PolicyBundle (framing only: the
/// bundle inside is opened by the same rules as any bundle, by the caller).
pub fn open_grant_answer(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
) -> Result<(GrantAnswer, SignerInfo), Error> {
    let (answer, signer) =
        open_certified::<GrantAnswer>(bytes, MessageKind::GrantAnswer, trust, now)?;
    let inner = Envelope::parse(&answer.bundle)?;
    if inner.kind != MessageKind::PolicyBundle {
        inner.expect_kind(MessageKind::Grants)?;
    }
    Ok((answer, signer))
}

/// Encodes and signs a release receipt with the device key.
pub fn seal_release_receipt(receipt: &ReleaseReceipt, device_key: &SigningKey) -> Vec<u8> {
    seal(MessageKind::ReleaseReceipt, device_key, None, receipt)
}

/// The device a release receipt claims to come from, read **without** verifying anything:
/// for a controller to find the key it pinned for that device, then [`open_release_receipt`].
pub fn peek_release_receipt_device(bytes: &[u8]) -> Result<DeviceId, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::ReleaseReceipt)?;
    Ok(env.decode::<ReleaseReceipt>()?.device)
}

/// Verifies and decodes a release receipt: no certificate, signed by `device_key` (the key
/// the controller pinned for the device, else [`Error::NotDeviceKey`], checked before the
/// signature), the signature, decoding and content rules. Replay and seq are the
/// controller's checks.
pub fn open_release_receipt(bytes: &[u8], device_key: &PublicKey) -> Result<ReleaseReceipt, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::ReleaseReceipt)?;
    if env.cert.is_some() {
        return Err(Error::Invalid(
            "a release receipt carries no signer certificate",
        ));
    }
    if env.signer != *device_key {
        return Err(Error::NotDeviceKey {
            expected: device_key.id(),
            got: env.signer.id(),
        });
    }
    env.verify_signature()?;
    let receipt: ReleaseReceipt = env.decode()?;
    receipt.validate()?;
    Ok(receipt)
}

/// The envelope bytes of a file, binary or armored: an armored file (its first non-blank
/// line is an armor header) is decoded and its checksum checked; anything else is taken as
/// binary and left to the envelope parser. Refuses a file over the size limits first.
pub fn decode_file(bytes: &[u8]) -> Result<Cow<'_, [u8]>, Error> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes[start..].starts_with(armor::BEGIN) {
        return Ok(Cow::Owned(dearmor(bytes)?));
    }
    // Text that is not armor (a mail body, a wrong file): say where the header should be,
    // not "protocol version 104" from its first letter.
    if bytes.first() != Some(&crate::envelope::PROTOCOL_VERSION)
        && core::str::from_utf8(bytes).is_ok_and(|t| !t.is_empty())
    {
        return Err(dearmor(bytes)
            .err()
            .unwrap_or(Error::Truncated("empty file")));
    }
    if bytes.len() > MAX_ENVELOPE_LEN {
        return Err(Error::Oversized {
            len: bytes.len(),
            max: MAX_ENVELOPE_LEN,
        });
    }
    Ok(Cow::Borrowed(bytes))
}

/// A label for files of `kind` (armor headers, file names, operator messages).
pub fn label(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Report
        | MessageKind::ActivationRequest
        | MessageKind::ExtendedReport
        | MessageKind::ExtendedActivationRequest => "REQUEST",
        MessageKind::Grants | MessageKind::GrantAnswer | MessageKind::PolicyBundle => "GRANT",
        MessageKind::ReleaseReceipt => "RELEASE",
        MessageKind::Revocations | MessageKind::RootRotation => "TRUST",
        MessageKind::DiagRequest | MessageKind::DiagResponse => "DIAG",
        MessageKind::Delegation => "DELEGATION",
        MessageKind::RelayReport | MessageKind::RelayAck => "RELAY",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use alloc::vec;

    fn receipt() -> ReleaseReceipt {
        ReleaseReceipt {
            device: DeviceId::new("ap-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            bundle_seq: 3,
            services: vec![ServiceName::new("wifi").unwrap()],
            released_at: 1_000,
            nonce: [9; 16],
        }
    }

    #[test]
    fn a_receipt_must_name_each_service_once_and_at_least_one() {
        assert_eq!(receipt().validate(), Ok(()));
        let mut r = receipt();
        r.services.clear();
        assert!(matches!(r.validate(), Err(Error::Invalid(_))));
        let mut r = receipt();
        r.services.push(r.services[0].clone());
        assert_eq!(
            r.validate(),
            Err(Error::Invalid("a service is released twice"))
        );
    }

    #[test]
    fn a_receipt_opens_only_with_the_pinned_device_key() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let bytes = seal_release_receipt(&receipt(), &key);
        let pinned = PublicKey::from(&key.verifying_key());
        assert_eq!(open_release_receipt(&bytes, &pinned), Ok(receipt()));
        assert_eq!(
            peek_release_receipt_device(&bytes),
            Ok(DeviceId::new("ap-1").unwrap())
        );
        let stranger = PublicKey::from(&other.verifying_key());
        assert!(matches!(
            open_release_receipt(&bytes, &stranger),
            Err(Error::NotDeviceKey { .. })
        ));
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 70] ^= 1;
        assert!(open_release_receipt(&flipped, &pinned).is_err());
    }

    #[test]
    fn binary_files_pass_through_and_armored_ones_are_decoded() {
        let bytes = seal_release_receipt(&receipt(), &SigningKey::from_bytes(&[3; 32]));
        assert_eq!(decode_file(&bytes).unwrap().as_ref(), &bytes[..]);
        let text = armor(&bytes).unwrap();
        assert_eq!(decode_file(text.as_bytes()).unwrap().as_ref(), &bytes[..]);
        let padded = alloc::format!("\n  \n{text}\n\n");
        assert_eq!(decode_file(padded.as_bytes()).unwrap().as_ref(), &bytes[..]);
    }
}
