//! Signing-key certificates: a root key vouches for a controller signing key for a window of
//! time. Agents pin roots; controllers sign with certified keys, so a signing key can be
//! rotated without touching firmware.
//!
//! Fixed layout, 145 bytes (big-endian integers):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | certificate version (1) |
//! | 1 | 32 | issuer (root) public key |
//! | 33 | 32 | subject (signing) public key |
//! | 65 | 8 | not_before (unix seconds) |
//! | 73 | 8 | not_after (unix seconds, exclusive) |
//! | 81 | 64 | ed25519 signature by the issuer over [`CERT_DOMAIN`] ‖ bytes 0..81 |

use alloc::vec::Vec;

use ed25519_dalek::{Signer, SigningKey};

use crate::error::Error;
use crate::keys::{verify_strict, PublicKey};
use crate::UnixTime;

/// Domain-separation prefix of a certificate signature.
pub const CERT_DOMAIN: &[u8] = b"licd/v1 signing-key certificate\0";

/// Encoded length of a certificate.
pub const CERT_LEN: usize = 145;

const BODY_LEN: usize = 81;
const CERT_VERSION: u8 = 1;

/// What a certificate states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertBody {
    /// The root key that signs the certificate.
    pub issuer: PublicKey,
    /// The signing key it vouches for.
    pub subject: PublicKey,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
}

impl CertBody {
    fn encode(&self) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        b[0] = CERT_VERSION;
        b[1..33].copy_from_slice(&self.issuer.0);
        b[33..65].copy_from_slice(&self.subject.0);
        b[65..73].copy_from_slice(&self.not_before.to_be_bytes());
        b[73..81].copy_from_slice(&self.not_after.to_be_bytes());
        b
    }

    /// Whether `now` lies in `[not_before, not_after)`, with the precise error if not.
    pub fn check_validity(&self, now: UnixTime) -> Result<(), Error> {
        if now < self.not_before {
            return Err(Error::CertificateNotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now >= self.not_after {
            return Err(Error::CertificateExpired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }
}

/// A certificate as received: the body and the issuer's signature over it. Parsing checks the
/// structure only; [`SignerCertificate::verify`] checks the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerCertificate {
    /// The statement.
    pub body: CertBody,
    signature: [u8; 64],
}

impl SignerCertificate {
    /// Issues a certificate for `subject`, signed by `root`.
    pub fn issue(
        root: &SigningKey,
        subject: PublicKey,
        not_before: UnixTime,
        not_after: UnixTime,
    ) -> Self {
        let body = CertBody {
            issuer: PublicKey::from(&root.verifying_key()),
            subject,
            not_before,
            not_after,
        };
        let signature = root.sign(&signing_input(&body.encode())).to_bytes();
        Self { body, signature }
    }

    /// Parses the fixed layout.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != CERT_LEN {
            return Err(Error::Truncated("certificate is not 145 bytes"));
        }
        if bytes[0] != CERT_VERSION {
            return Err(Error::Invalid("unknown certificate version"));
        }
        let key = |at: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes[at..at + 32]);
            PublicKey(k)
        };
        let time = |at: usize| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(t)
        };
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[BODY_LEN..]);
        Ok(Self {
            body: CertBody {
                issuer: key(1),
                subject: key(33),
                not_before: time(65),
                not_after: time(73),
            },
            signature,
        })
    }

    /// The 145-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CERT_LEN);
        out.extend_from_slice(&self.body.encode());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Checks the issuer's signature (not the validity window, not whether the issuer is
    /// trusted: see [`crate::TrustStore`]).
    pub fn verify(&self) -> Result<(), Error> {
        verify_strict(
            &self.body.issuer.0,
            &signing_input(&self.body.encode()),
            &self.signature,
        )
        .map_err(|e| match e {
            Error::BadSignature => Error::BadCertificateSignature,
            other => other,
        })
    }
}

fn signing_input(body: &[u8; BODY_LEN]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CERT_DOMAIN.len() + BODY_LEN);
    v.extend_from_slice(CERT_DOMAIN);
    v.extend_from_slice(body);
    v
}
