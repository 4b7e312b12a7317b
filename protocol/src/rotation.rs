//! Root rotation statements (message kind 4): "root `previous` is replaced by root `next`",
//! signed by **both** roots, so that neither a stolen old root nor a key an attacker made up
//! can take over an agent's trust on its own.
//!
//! The double signature:
//! - the **envelope** is signed by the new root (`signer` = `next`, no certificate), over the
//!   usual envelope signing input (`DOMAIN ‖ 04 ‖ payload`);
//! - the **payload** carries the old root's signature, `previous_signature`, over a fixed
//!   80-byte encoding of the statement behind its own domain string ([`ROTATION_DOMAIN`]):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 22 | [`ROTATION_DOMAIN`] = `"licd/v1 root rotation"` ‖ `00` |
//! | 22 | 8 | `seq`, u64 BE |
//! | 30 | 8 | `issued_at`, u64 BE |
//! | 38 | 32 | `previous` root public key |
//! | 70 | 32 | `next` root public key |
//!
//! The old root's signature covers `seq` and both keys, so it cannot be moved to another
//! statement; the new root's envelope signature covers the whole payload including the old
//! root's signature. Acceptance rules are [`crate::TrustStore::check_rotation`].

use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;

use crate::envelope::{seal_bytes, MessageKind};
use crate::error::Error;
use crate::keys::{verify_strict, PublicKey};
use crate::UnixTime;

/// Domain-separation prefix of the old root's signature over a rotation statement (22 bytes).
pub const ROTATION_DOMAIN: &[u8] = b"licd/v1 root rotation\0";

/// Length of the old root's signing input: domain, seq, issued_at, two keys.
pub const ROTATION_INPUT_LEN: usize = 22 + 8 + 8 + 32 + 32;

/// A 64-byte ed25519 signature inside a postcard payload: the 64 bytes, no length prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature64(pub [u8; 64]);

impl fmt::Debug for Signature64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature64({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl serde::Serialize for Signature64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for Signature64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signature64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature64, A::Error> {
                let mut out = [0u8; 64];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature64(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

/// The signed content of a kind-4 message. Field order is wire order (postcard).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootRotation {
    /// Strictly increasing over every rotation a vendor publishes (one counter for all its
    /// roots); an agent accepts only a higher `seq` than the last rotation it applied.
    pub seq: u64,
    /// When the statement was made. Bundles issued until then under `previous` still load from
    /// an agent's cache (see `docs/PROTOCOL.md` §11); nothing new signed by `previous` does.
    pub issued_at: UnixTime,
    /// The root being retired.
    pub previous: PublicKey,
    /// The root replacing it; must be the envelope's signer.
    pub next: PublicKey,
    /// The old root's signature over [`RootRotation::signing_input`].
    pub previous_signature: Signature64,
}

impl RootRotation {
    /// Makes a statement signed by the old root (the new root signs the envelope when sealed
    /// with [`seal_rotation`]).
    pub fn sign(previous: &SigningKey, next: PublicKey, seq: u64, issued_at: UnixTime) -> Self {
        let previous_pub = PublicKey::from(&previous.verifying_key());
        let input = signing_input(seq, issued_at, &previous_pub, &next);
        Self {
            seq,
            issued_at,
            previous: previous_pub,
            next,
            previous_signature: Signature64(previous.sign(&input).to_bytes()),
        }
    }

    /// The exact bytes the old root signs: [`ROTATION_DOMAIN`] ‖ seq ‖ issued_at ‖ previous ‖
    /// next (integers big-endian).
    pub fn signing_input(&self) -> [u8; ROTATION_INPUT_LEN] {
        signing_input(self.seq, self.issued_at, &self.previous, &self.next)
    }

    /// Checks the old root's signature (strict), not whether the old root is pinned.
    pub fn verify_previous(&self) -> Result<(), Error> {
        verify_strict(
            &self.previous.0,
            &self.signing_input(),
            &self.previous_signature.0,
        )
    }

    /// Checks the rules postcard cannot: a root does not rotate to itself.
    pub fn validate(&self) -> Result<(), Error> {
        if self.previous == self.next {
            return Err(Error::Invalid("a root rotation names the same root twice"));
        }
        Ok(())
    }
}

fn signing_input(
    seq: u64,
    issued_at: UnixTime,
    previous: &PublicKey,
    next: &PublicKey,
) -> [u8; ROTATION_INPUT_LEN] {
    let mut b = [0u8; ROTATION_INPUT_LEN];
    b[..22].copy_from_slice(ROTATION_DOMAIN);
    b[22..30].copy_from_slice(&seq.to_be_bytes());
    b[30..38].copy_from_slice(&issued_at.to_be_bytes());
    b[38..70].copy_from_slice(&previous.0);
    b[70..102].copy_from_slice(&next.0);
    b
}

/// Encodes a statement and signs the envelope with the new root (no certificate). `next_root`
/// should be the key named `next`; sealing with another key makes a message every agent
/// refuses (`RotationNotSignedByBoth`), which the refusal tests use.
pub fn seal_rotation(statement: &RootRotation, next_root: &SigningKey) -> Vec<u8> {
    // postcard cannot fail on this type (integers and fixed-size arrays).
    let payload = postcard::to_allocvec(statement).unwrap_or_default();
    seal_bytes(MessageKind::RootRotation, next_root, None, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SigningKey, SigningKey) {
        (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        )
    }

    #[test]
    fn payload_is_seq_issued_at_two_keys_and_64_raw_signature_bytes() {
        let (old, new) = keys();
        let r = RootRotation::sign(&old, PublicKey::from(&new.verifying_key()), 3, 1);
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert_eq!(bytes.len(), 1 + 1 + 32 + 32 + 64);
        assert_eq!(&bytes[..2], &[0x03, 0x01]);
        assert_eq!(&bytes[66..], &r.previous_signature.0);
        let back: RootRotation = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        assert!(postcard::from_bytes::<RootRotation>(&bytes[..129]).is_err());
    }

    #[test]
    fn the_old_roots_signature_binds_seq_time_and_both_keys() {
        let (old, new) = keys();
        let r = RootRotation::sign(&old, PublicKey::from(&new.verifying_key()), 3, 1);
        assert_eq!(r.verify_previous(), Ok(()));
        assert_eq!(&r.signing_input()[..22], ROTATION_DOMAIN);
        let mut other = r.clone();
        other.seq = 4;
        assert_eq!(other.verify_previous(), Err(Error::BadSignature));
        let mut other = r.clone();
        other.next = PublicKey::from(&SigningKey::from_bytes(&[9; 32]).verifying_key());
        assert_eq!(other.verify_previous(), Err(Error::BadSignature));
        let mut other = r;
        other.issued_at = 2;
        assert_eq!(other.verify_previous(), Err(Error::BadSignature));
    }
}
