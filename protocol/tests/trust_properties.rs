//! Property tests of the trust messages: revocation lists only move forward whatever order
//! they arrive in, a rotation needs both roots' signatures whatever the keys, and any single
//! bit flip of a sealed revocation list or rotation statement is refused.

use ed25519_dalek::SigningKey;
use licd_protocol::revocation::seal_revocations;
use licd_protocol::rotation::seal_rotation;
use licd_protocol::{Error, KeyId, PublicKey, RevocationList, RootRotation, TrustStore};
use proptest::prelude::*;

fn public(k: &SigningKey) -> PublicKey {
    PublicKey::from(&k.verifying_key())
}

fn list(version: u64, revoked: Vec<KeyId>) -> RevocationList {
    RevocationList {
        version,
        issued_at: 1_767_225_600,
        revoked,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_held_revocation_version_is_the_running_maximum(
        versions in prop::collection::vec(0u64..20, 1..12),
    ) {
        let root = SigningKey::from_bytes(&[1; 32]);
        let mut t = TrustStore::new(vec![public(&root)]);
        let mut held: Option<u64> = None;
        for v in versions {
            let r = t.accept_revocations(&seal_revocations(&list(v, vec![]), &root)).map(|l| l.version);
            match held {
                Some(h) if v <= h => prop_assert_eq!(
                    r,
                    Err(Error::RevocationRollback { version: v, current: h })
                ),
                _ => {
                    prop_assert_eq!(r, Ok(v));
                    held = Some(v);
                }
            }
            prop_assert_eq!(t.revocations_version(), held.unwrap_or(0));
        }
    }

    #[test]
    fn a_rotation_is_accepted_only_with_both_roots_signatures(
        old_seed in any::<[u8; 32]>(),
        new_seed in any::<[u8; 32]>(),
        other_seed in any::<[u8; 32]>(),
        seq in 1u64..u64::MAX,
        issued_at in any::<u64>(),
    ) {
        let (old, new, other) = (
            SigningKey::from_bytes(&old_seed),
            SigningKey::from_bytes(&new_seed),
            SigningKey::from_bytes(&other_seed),
        );
        prop_assume!(public(&old) != public(&new) && public(&other) != public(&new) && public(&other) != public(&old));
        let t = TrustStore::new(vec![public(&old)]);
        let good = RootRotation::sign(&old, public(&new), seq, issued_at);
        prop_assert_eq!(t.check_rotation(&seal_rotation(&good, &new)), Ok(good.clone()));
        // The envelope signed by anyone but the new root.
        prop_assert_eq!(
            t.check_rotation(&seal_rotation(&good, &other)),
            Err(Error::RotationNotSignedByBoth { missing: public(&new).id() })
        );
        // The statement signed by anyone but the old root.
        let mut forged = RootRotation::sign(&other, public(&new), seq, issued_at);
        forged.previous = public(&old);
        prop_assert_eq!(
            t.check_rotation(&seal_rotation(&forged, &new)),
            Err(Error::RotationNotSignedByBoth { missing: public(&old).id() })
        );
    }

    #[test]
    fn any_bit_flip_of_a_sealed_trust_message_is_refused(
        which in any::<bool>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let (old, new) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let t = TrustStore::new(vec![public(&old)]);
        let mut bytes = if which {
            seal_revocations(&list(3, vec![KeyId([7; 16])]), &old)
        } else {
            seal_rotation(&RootRotation::sign(&old, public(&new), 1, 9), &new)
        };
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        if which {
            prop_assert!(t.check_revocations(&bytes).is_err());
        } else {
            prop_assert!(t.check_rotation(&bytes).is_err());
        }
    }
}
