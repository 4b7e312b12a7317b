//! Revocation lists (message kind 3): a pinned root's signed list of signing-key ids that must
//! no longer be trusted. Published retained on [`crate::topic::TRUST_REVOCATIONS`]; agents keep
//! the newest one and refuse any list whose `version` is not higher than the one they hold.
//!
//! A list is signed **directly by a root** (the envelope's signer is the root key, no
//! certificate): a signing key can never vouch for the list that revokes it. Each list is
//! complete (it replaces, not extends, the previous one). Acceptance rules are
//! [`crate::TrustStore::check_revocations`].

use alloc::vec::Vec;

use ed25519_dalek::SigningKey;

use crate::envelope::{seal_bytes, MessageKind};
use crate::error::Error;
use crate::keys::KeyId;
use crate::limits::MAX_REVOKED;
use crate::UnixTime;

/// The signed content of a kind-3 message. Field order is wire order (postcard).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationList {
    /// Strictly increasing over the lists a vendor publishes; an agent accepts only a higher
    /// version than it holds (no rollback to a list that revoked less).
    pub version: u64,
    /// When the root signed it (informational).
    pub issued_at: UnixTime,
    /// Revoked signing keys, each listed once, at most [`MAX_REVOKED`].
    pub revoked: Vec<KeyId>,
}

impl RevocationList {
    /// Checks the rules postcard cannot: the count and that no key id is listed twice (so a
    /// list has one encoding per set of ids, in the order given).
    pub fn validate(&self) -> Result<(), Error> {
        if self.revoked.len() > MAX_REVOKED {
            return Err(Error::Invalid("more than 1024 revoked keys in a list"));
        }
        for (i, id) in self.revoked.iter().enumerate() {
            if self.revoked[..i].contains(id) {
                return Err(Error::Invalid("a key id is revoked twice in one list"));
            }
        }
        Ok(())
    }

    /// Whether `id` is on the list.
    pub fn contains(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }
}

/// Encodes and signs a revocation list with a root key (no certificate).
pub fn seal_revocations(list: &RevocationList, root: &SigningKey) -> Vec<u8> {
    // postcard cannot fail on this type (fixed-size arrays, integers, a Vec).
    let payload = postcard::to_allocvec(list).unwrap_or_default();
    seal_bytes(MessageKind::Revocations, root, None, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_key_listed_twice_or_too_many_keys_is_invalid() {
        let mut l = RevocationList {
            version: 1,
            issued_at: 0,
            revoked: vec![KeyId([1; 16]), KeyId([2; 16])],
        };
        assert_eq!(l.validate(), Ok(()));
        l.revoked.push(KeyId([1; 16]));
        assert!(matches!(l.validate(), Err(Error::Invalid(_))));
        l.revoked = (0..=MAX_REVOKED as u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                KeyId(id)
            })
            .collect();
        assert!(matches!(l.validate(), Err(Error::Invalid(_))));
    }

    #[test]
    fn encoding_is_version_issued_at_then_count_and_raw_ids() {
        let l = RevocationList {
            version: 2,
            issued_at: 300,
            revoked: vec![KeyId([0xab; 16])],
        };
        let bytes = postcard::to_allocvec(&l).unwrap();
        let mut want = vec![0x02, 0xac, 0x02, 0x01];
        want.extend_from_slice(&[0xab; 16]);
        assert_eq!(bytes, want);
    }
}
