//! Public keys as they travel on the wire, and the short key ids used to name them.

use core::fmt;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// An ed25519 public key (32 bytes, compressed Edwards point) as carried in messages.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key id: the first 16 bytes of SHA-256 over the 32 key bytes.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }

    /// Parses the key for verification. Refuses non-canonical and weak (small-order) points so
    /// that no signature can verify under them.
    pub fn to_verifying_key(&self) -> Result<VerifyingKey, Error> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| Error::BadPublicKey)?;
        if key.is_weak() {
            return Err(Error::BadPublicKey);
        }
        Ok(key)
    }

    /// Lower-case hex of the 32 key bytes.
    pub fn to_hex(&self) -> alloc::string::String {
        hex32(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; 32];
        from_hex_into(s.trim(), &mut out).ok_or(Error::BadPublicKey)?;
        Ok(Self(out))
    }
}

impl From<&VerifyingKey> for PublicKey {
    fn from(k: &VerifyingKey) -> Self {
        Self(k.to_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A 16-byte key id (truncated SHA-256 of the public key). Used to name keys in logs, in
/// revocation lists and as the device-key binding of a bundle. Never used to *verify*: the
/// full key is always at hand where a signature is checked.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// Lower-case hex, 32 digits.
    pub fn to_hex(&self) -> alloc::string::String {
        hex32(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

fn hex32(bytes: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn from_hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

/// Strict ed25519 verification — the one signature check every envelope and certificate goes
/// through. Refuses keys that are not canonical or are of small order, non-canonical `s`,
/// small-order `R`, and signatures that are not exactly 64 bytes.
pub fn verify_strict(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), Error> {
    let key: [u8; 32] = public_key.try_into().map_err(|_| Error::BadPublicKey)?;
    let key = PublicKey(key).to_verifying_key()?;
    let sig: [u8; 64] = signature.try_into().map_err(|_| Error::BadSignature)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig);
    key.verify_strict(message, &sig)
        .map_err(|_| Error::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let k = PublicKey([7u8; 32]);
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert!(PublicKey::from_hex("zz").is_err());
        assert!(PublicKey::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point: every signature with R = identity and s = 0 would verify.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey(identity).to_verifying_key(),
            Err(Error::BadPublicKey)
        );
    }
}
