//! The signed envelope that carries every licd message.
//!
//! Layout of protocol v1 (big-endian integers), in this order:
//!
//! | size | field |
//! |---|---|
//! | 1 | version (= [`PROTOCOL_VERSION`]) |
//! | 1 | kind ([`MessageKind`]) |
//! | 32 | signer public key |
//! | 2 | certificate length `n` (0 = no certificate) |
//! | n | signer certificate ([`crate::cert`], 145 bytes), optionally followed by a site delegation ([`crate::delegation`]) |
//! | 4 | payload length `m` |
//! | m | payload (postcard) |
//! | 64 | ed25519 signature by the signer over [`DOMAIN`] ‖ kind ‖ payload |
//!
//! Nothing may follow the signature. Receiving is three steps in a fixed order: the size limit
//! before parsing, the signature over the exact received payload bytes before decoding, and
//! only then postcard decoding — the payload is never re-serialized before it is verified.

use alloc::vec::Vec;

use ed25519_dalek::{Signer, SigningKey};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cert::{SignerCertificate, CERT_LEN};
use crate::delegation::Delegation;
use crate::diag::{DiagRequest, DiagResponse};
use crate::error::Error;
use crate::keys::{verify_strict, PublicKey};
use crate::limits::{MAX_CERT_LEN, MAX_ENVELOPE_LEN};
use crate::messages::{DeviceReport, GrantBundle};
use crate::trust::{CertMemo, SignerInfo, TrustStore};
use crate::UnixTime;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Domain-separation prefix of every envelope signature, so a signature made for a licd
/// message can never be taken for one made in another context (or another version).
pub const DOMAIN: &[u8] = b"licd/v1 envelope\0";

/// Fixed bytes around the certificate and payload: version, kind, signer, two lengths,
/// signature.
const OVERHEAD: usize = 1 + 1 + 32 + 2 + 4 + 64;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// A [`DeviceReport`], signed by the device key.
    Report,
    /// A [`GrantBundle`], signed by a controller signing key.
    Grants,
    /// A revocation list of signing keys, signed by a root (trust-chain issue).
    Revocations,
    /// A root rotation statement, signed by the old and the new root (trust-chain issue).
    RootRotation,
    /// A [`DiagRequest`], signed by a controller signing key.
    DiagRequest,
    /// A [`DiagResponse`], signed by the device key.
    DiagResponse,
    /// An [`crate::offline::ActivationRequest`] (a request file), signed by the device key.
    ActivationRequest,
    /// A [`crate::offline::ReleaseReceipt`] (a release file), signed by the device key.
    ReleaseReceipt,
    /// A [`crate::offline::GrantAnswer`] (a grant file answering a request), signed by a
    /// controller signing key.
    GrantAnswer,
    /// A [`crate::policy::PolicyBundle`] (a bundle with licensing policy and a usage
    /// acknowledgement), signed by a controller signing key.
    PolicyBundle,
    /// A [`crate::policy::ExtendedReport`] (a report with usage and compliance), signed by the
    /// device key.
    ExtendedReport,
    /// A site delegation (docs/PROTOCOL.md §18.4) handed to its relay over MQTT or as a file,
    /// signed by the certified controller key that issued it.
    Delegation,
    /// A [`crate::delegation::RelayReport`]: what a site relay issued, signed by the relay key
    /// under its delegation.
    RelayReport,
    /// A [`crate::delegation::RelayAck`]: the controller has stored a relay's reports up to a
    /// point, signed by a certified controller key.
    RelayAck,
    /// A [`crate::policy::ExtendedActivationRequest`] (a request file carrying an extended
    /// report), signed by the device key.
    ExtendedActivationRequest,
}

impl MessageKind {
    /// The kind's wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            MessageKind::Report => 1,
            MessageKind::Grants => 2,
            MessageKind::Revocations => 3,
            MessageKind::RootRotation => 4,
            MessageKind::DiagRequest => 5,
            MessageKind::DiagResponse => 6,
            MessageKind::ActivationRequest => 7,
            MessageKind::ReleaseReceipt => 8,
            MessageKind::GrantAnswer => 9,
            MessageKind::PolicyBundle => 10,
            MessageKind::ExtendedReport => 11,
            MessageKind::Delegation => 12,
            MessageKind::RelayReport => 13,
            MessageKind::RelayAck => 14,
            MessageKind::ExtendedActivationRequest => 15,
        }
    }

    /// Parses a wire byte.
    pub fn from_byte(b: u8) -> Result<Self, Error> {
        match b {
            1 => Ok(MessageKind::Report),
            2 => Ok(MessageKind::Grants),
            3 => Ok(MessageKind::Revocations),
            4 => Ok(MessageKind::RootRotation),
            5 => Ok(MessageKind::DiagRequest),
            6 => Ok(MessageKind::DiagResponse),
            7 => Ok(MessageKind::ActivationRequest),
            8 => Ok(MessageKind::ReleaseReceipt),
            9 => Ok(MessageKind::GrantAnswer),
            10 => Ok(MessageKind::PolicyBundle),
            11 => Ok(MessageKind::ExtendedReport),
            12 => Ok(MessageKind::Delegation),
            13 => Ok(MessageKind::RelayReport),
            14 => Ok(MessageKind::RelayAck),
            15 => Ok(MessageKind::ExtendedActivationRequest),
            other => Err(Error::UnknownKind(other)),
        }
    }
}

/// A parsed, not yet verified envelope borrowing the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Message kind.
    pub kind: MessageKind,
    /// The key that signed it.
    pub signer: PublicKey,
    /// Certificate of a controller signing key: `signer` itself, or — when `delegation` is
    /// present — the controller key that delegated to `signer`.
    pub cert: Option<SignerCertificate>,
    /// The site delegation from the certified controller key to `signer` (a relay), if the
    /// message is signed by a site issuer.
    pub delegation: Option<Delegation>,
    /// Payload bytes exactly as received.
    pub payload: &'a [u8],
    signature: [u8; 64],
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(Error::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
}

impl<'a> Envelope<'a> {
    /// Parses the framing. Checks, in order: size limit, version, kind, lengths. Verifies
    /// nothing cryptographic.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(Error::Oversized {
                len: bytes.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        let mut r = Reader { rest: bytes };
        let version = r.take(1, "missing version byte")?[0];
        if version != PROTOCOL_VERSION {
            return Err(Error::BadVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            });
        }
        let kind = MessageKind::from_byte(r.take(1, "missing kind byte")?[0])?;
        let mut signer = [0u8; 32];
        signer.copy_from_slice(r.take(32, "missing signer key")?);
        let cert_len = read_u16(r.take(2, "missing certificate length")?) as usize;
        if cert_len > MAX_CERT_LEN {
            return Err(Error::Invalid("certificate length over the limit"));
        }
        let (cert, delegation) = match cert_len {
            0 => (None, None),
            n => {
                let chain = r.take(n, "certificate shorter than announced")?;
                // A build that predates delegations parses all n bytes as one certificate and
                // refuses a delegated chain as "certificate is not 145 bytes".
                let (cert, rest) = chain.split_at(n.min(CERT_LEN));
                let cert = SignerCertificate::parse(cert)?;
                let delegation = match rest {
                    [] => None,
                    rest => Some(Delegation::parse(rest)?),
                };
                (Some(cert), delegation)
            }
        };
        let payload_len = read_u32(r.take(4, "missing payload length")?) as usize;
        let payload = r.take(payload_len, "payload shorter than announced")?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(r.take(64, "missing signature")?);
        if !r.rest.is_empty() {
            return Err(Error::Truncated("bytes after the signature"));
        }
        Ok(Self {
            kind,
            signer: PublicKey(signer),
            cert,
            delegation,
            payload,
            signature,
        })
    }

    /// Checks that this is a `kind` message.
    pub fn expect_kind(&self, kind: MessageKind) -> Result<(), Error> {
        if self.kind != kind {
            return Err(Error::WrongKind {
                expected: kind,
                got: self.kind,
            });
        }
        Ok(())
    }

    /// Verifies the signer's signature over the received payload bytes. Says nothing about
    /// whether the signer is trusted.
    pub fn verify_signature(&self) -> Result<(), Error> {
        verify_strict(
            &self.signer.0,
            &signing_input(self.kind, self.payload),
            &self.signature,
        )
    }

    /// For a bundle signed by a site issuer: the delegation's limits on its content
    /// ([`Delegation::permits`]). Nothing for a bundle signed by a controller key.
    pub fn check_delegated(&self, bundle: &GrantBundle) -> Result<(), Error> {
        match &self.delegation {
            Some(d) => d.permits(bundle).map_err(Error::DelegationBreach),
            None => Ok(()),
        }
    }

    /// Decodes the payload. Call only after [`Envelope::verify_signature`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let (value, rest) = postcard::take_from_bytes::<T>(self.payload)?;
        if !rest.is_empty() {
            return Err(Error::Decode("bytes after the payload"));
        }
        Ok(value)
    }
}

fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The exact bytes a signature covers: [`DOMAIN`] ‖ kind byte ‖ payload.
pub fn signing_input(kind: MessageKind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DOMAIN.len() + 1 + payload.len());
    v.extend_from_slice(DOMAIN);
    v.push(kind.to_byte());
    v.extend_from_slice(payload);
    v
}

/// Frames and signs already-encoded payload bytes.
pub fn seal_bytes(
    kind: MessageKind,
    signer: &SigningKey,
    cert: Option<&SignerCertificate>,
    payload: &[u8],
) -> Vec<u8> {
    let cert = cert.map(SignerCertificate::to_bytes).unwrap_or_default();
    frame(kind, signer, &cert, payload)
}

/// Frames and signs payload bytes as a site issuer: the certificate field carries the
/// controller key's certificate followed by its delegation to `signer`.
pub fn seal_bytes_delegated(
    kind: MessageKind,
    signer: &SigningKey,
    cert: &SignerCertificate,
    delegation: &Delegation,
    payload: &[u8],
) -> Vec<u8> {
    let mut chain = cert.to_bytes();
    chain.extend_from_slice(&delegation.to_bytes());
    frame(kind, signer, &chain, payload)
}

fn frame(kind: MessageKind, signer: &SigningKey, cert: &[u8], payload: &[u8]) -> Vec<u8> {
    let signature = signer.sign(&signing_input(kind, payload)).to_bytes();
    let mut out = Vec::with_capacity(OVERHEAD + cert.len() + payload.len());
    out.push(PROTOCOL_VERSION);
    out.push(kind.to_byte());
    out.extend_from_slice(&signer.verifying_key().to_bytes());
    // Lengths are bounded: a certificate chain is at most MAX_CERT_LEN bytes, payloads are
    // built from bounded messages.
    out.extend_from_slice(&(cert.len() as u16).to_be_bytes());
    out.extend_from_slice(cert);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&signature);
    out
}

pub(crate) fn seal<T: Serialize>(
    kind: MessageKind,
    signer: &SigningKey,
    cert: Option<&SignerCertificate>,
    value: &T,
) -> Vec<u8> {
    // postcard cannot fail on these types (no maps with non-string keys, no unsized data).
    let payload = postcard::to_allocvec(value).unwrap_or_default();
    seal_bytes(kind, signer, cert, &payload)
}

/// Encodes and signs a report with the device key.
pub fn seal_report(report: &DeviceReport, device_key: &SigningKey) -> Vec<u8> {
    seal(MessageKind::Report, device_key, None, report)
}

/// Verifies and decodes a report: the envelope's signer must be the device key named inside.
/// Whether that key is the one pinned for the device is the controller's decision.
pub fn open_report(bytes: &[u8]) -> Result<DeviceReport, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::Report)?;
    if env.cert.is_some() {
        // Reports are self-signed; a certificate would only make one report encodable as
        // several byte strings.
        return Err(Error::Invalid("a report carries no signer certificate"));
    }
    env.verify_signature()?;
    let report: DeviceReport = env.decode()?;
    if report.device_key != env.signer {
        return Err(Error::Invalid(
            "report is not signed by the device key it names",
        ));
    }
    report.validate()?;
    Ok(report)
}

/// Encodes and signs a bundle as a site issuer under `delegation` from the controller key
/// `cert` certifies.
pub fn seal_bundle_delegated(
    bundle: &GrantBundle,
    relay_key: &SigningKey,
    cert: &SignerCertificate,
    delegation: &Delegation,
) -> Vec<u8> {
    // postcard cannot fail on these types (see `seal`).
    let payload = postcard::to_allocvec(bundle).unwrap_or_default();
    seal_bytes_delegated(MessageKind::Grants, relay_key, cert, delegation, &payload)
}

/// Encodes and signs a bundle with a certified signing key.
pub fn seal_bundle(
    bundle: &GrantBundle,
    signing_key: &SigningKey,
    cert: &SignerCertificate,
) -> Vec<u8> {
    seal(MessageKind::Grants, signing_key, Some(cert), bundle)
}

/// Verifies and decodes a bundle: signature, then the signer's certificate chain to a trusted
/// root at time `now`, then decoding and content rules. Device binding, `seq` and freshness
/// are the receiving agent's rules, applied on the result.
pub fn open_bundle(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
) -> Result<(GrantBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::Grants)?;
    env.verify_signature()?;
    let signer = trust.authorize(&env, now)?;
    let bundle: GrantBundle = env.decode()?;
    bundle.validate()?;
    env.check_delegated(&bundle)?;
    Ok((bundle, signer))
}

/// [`open_bundle`] with a [`CertMemo`]: a bundle carrying the certificate that verified last
/// time skips that second signature check (see [`TrustStore::authorize_memo`]).
pub fn open_bundle_memo(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
    memo: &mut CertMemo,
) -> Result<(GrantBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::Grants)?;
    env.verify_signature()?;
    let signer = trust.authorize_memo(&env, now, memo)?;
    let bundle: GrantBundle = env.decode()?;
    bundle.validate()?;
    env.check_delegated(&bundle)?;
    Ok((bundle, signer))
}

/// The live path of every message signed by a certified controller key: framing and kind,
/// the signature over the received payload, the chain to a pinned root at `now`
/// ([`TrustStore::authorize`]), then decoding. Content rules are the caller's.
pub(crate) fn open_certified<T: DeserializeOwned>(
    bytes: &[u8],
    kind: MessageKind,
    trust: &TrustStore,
    now: UnixTime,
) -> Result<(T, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(kind)?;
    env.verify_signature()?;
    let signer = trust.authorize(&env, now)?;
    Ok((env.decode()?, signer))
}

/// Verifies and decodes a bundle under the cache rule ([`TrustStore::authorize_as_issued`]):
/// the signature first, then — because the rule needs the signed `issued_at` — decoding, and
/// then the chain evaluated at that `issued_at` (certificate valid then, issuer a root that was
/// current then, signer not revoked now). For a bundle loaded from disk, which was accepted
/// live once; live bundles go through [`open_bundle`] at trusted now.
pub fn open_bundle_as_issued(
    bytes: &[u8],
    trust: &TrustStore,
) -> Result<(GrantBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::Grants)?;
    env.verify_signature()?;
    let bundle: GrantBundle = env.decode()?;
    let signer = trust.authorize_as_issued(&env, bundle.issued_at)?;
    bundle.validate()?;
    env.check_delegated(&bundle)?;
    Ok((bundle, signer))
}

/// Encodes and signs a diagnostic request with a certified controller signing key.
pub fn seal_diag_request(
    request: &DiagRequest,
    signing_key: &SigningKey,
    cert: &SignerCertificate,
) -> Vec<u8> {
    seal(MessageKind::DiagRequest, signing_key, Some(cert), request)
}

/// Verifies and decodes a diagnostic request exactly like a live bundle: signature, then the
/// signer's chain to a pinned root at `now` ([`TrustStore::authorize`]), then decoding, then
/// freshness (`issued_at` within `tolerance` of `now`, [`DiagRequest::check_fresh`]). Whether
/// it names this device, was seen before or comes too often is the agent's decision.
pub fn open_diag_request(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
    tolerance: u64,
) -> Result<(DiagRequest, SignerInfo), Error> {
    let (request, signer) =
        open_certified::<DiagRequest>(bytes, MessageKind::DiagRequest, trust, now)?;
    request.check_fresh(now, tolerance)?;
    Ok((request, signer))
}

/// Encodes and signs a diagnostic response with the device key.
pub fn seal_diag_response(response: &DiagResponse, device_key: &SigningKey) -> Vec<u8> {
    seal(MessageKind::DiagResponse, device_key, None, response)
}

/// Verifies and decodes a diagnostic response: no certificate, signed by `device_key` (the
/// key the controller pinned for the device, else [`Error::NotDeviceKey`]) — checked before
/// the signature, so a stranger's message costs no signature check — then the signature,
/// decoding and the size rule. That it names the device and request asked is the caller's
/// check.
pub fn open_diag_response(bytes: &[u8], device_key: &PublicKey) -> Result<DiagResponse, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::DiagResponse)?;
    if env.cert.is_some() {
        return Err(Error::Invalid(
            "a diagnostic response carries no signer certificate",
        ));
    }
    if env.signer != *device_key {
        return Err(Error::NotDeviceKey {
            expected: device_key.id(),
            got: env.signer.id(),
        });
    }
    env.verify_signature()?;
    let response: DiagResponse = env.decode()?;
    response.validate()?;
    Ok(response)
}
