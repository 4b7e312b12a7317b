//! Which signers an agent trusts: pinned root keys, the signing keys those roots certified, and
//! the trust messages that change both — root-signed revocation lists ([`crate::revocation`])
//! and root rotation statements signed by the old and the new root ([`crate::rotation`]).
//!
//! Pure: the caller passes the received bytes and keeps the store; persisting the accepted
//! messages (and replaying them through the same checks at start) is the agent's job.
//!
//! Rules (see `docs/PROTOCOL.md` §10–§11):
//! - a bundle's certificate must be issued by a **current** root; a root that a rotation
//!   retired vouches for nothing new ([`Error::RetiredRoot`]);
//! - [`TrustStore::authorize_as_issued`] (the cache rule) evaluates the chain at the bundle's
//!   own `issued_at`: certificate valid then, issued by a root that was current then (pinned,
//!   or retired by a rotation made at or after `issued_at`), signer not revoked **now**;
//! - revocation lists only move forward (`version` strictly increasing) and rotations too
//!   (`seq` strictly increasing).

use alloc::vec::Vec;

use crate::envelope::{Envelope, MessageKind};
use crate::error::Error;
use crate::id::SiteId;
use crate::keys::{KeyId, PublicKey};
use crate::revocation::RevocationList;
use crate::rotation::RootRotation;
use crate::UnixTime;

/// A root that a rotation statement replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredRoot {
    /// The retired root.
    pub key: PublicKey,
    /// The rotation statement's `issued_at`: bundles issued until then still load from a cache.
    pub retired_at: UnixTime,
}

/// The pinned roots, the retired ones, and the revoked signing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStore {
    roots: Vec<PublicKey>,
    revoked: Vec<KeyId>,
    revocations: Option<RevocationList>,
    retired: Vec<RetiredRoot>,
    rotation_seq: u64,
    site: Option<SiteId>,
}

/// The last signer certificate whose signature verified, for
/// [`TrustStore::authorize_memo`]. Only a successful verification fills it, so holding one
/// cannot make a forged certificate pass: a certificate is skipped only if it is byte for byte
/// (body and signature) the one that verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertMemo {
    verified: Option<crate::cert::SignerCertificate>,
}

/// Who signed an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerInfo {
    /// The signing key.
    pub signer: KeyId,
    /// The root that certified it.
    pub root: KeyId,
    /// End of the signing key's certificate.
    pub cert_not_after: UnixTime,
    /// The site issuer (relay) key that signed under a delegation from `signer`, if any.
    pub site_issuer: Option<KeyId>,
}

impl TrustStore {
    /// A store pinning `roots`.
    pub fn new(roots: Vec<PublicKey>) -> Self {
        Self {
            roots,
            ..Self::default()
        }
    }

    /// The site this device is at: site issuers (relays) delegated for this site, and only
    /// those, may license it. A device with no site accepts no delegated bundle. Configuration,
    /// not trust state: set at start from the device's config, never from a message.
    pub fn set_site(&mut self, site: Option<SiteId>) {
        self.site = site;
    }

    /// The site set by [`TrustStore::set_site`].
    pub fn site(&self) -> Option<&SiteId> {
        self.site.as_ref()
    }

    /// The pinned (current) roots.
    pub fn roots(&self) -> &[PublicKey] {
        &self.roots
    }

    /// Roots rotated away, oldest first.
    pub fn retired(&self) -> &[RetiredRoot] {
        &self.retired
    }

    /// Marks signing key `id` as revoked (locally, outside any signed list).
    pub fn revoke(&mut self, id: KeyId) {
        if !self.revoked.contains(&id) {
            self.revoked.push(id);
        }
    }

    /// Whether signing key `id` is revoked (locally or by the held list).
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id) || self.revocations.as_ref().is_some_and(|l| l.contains(id))
    }

    /// The revocation list in force, if any.
    pub fn revocations(&self) -> Option<&RevocationList> {
        self.revocations.as_ref()
    }

    /// Version of the revocation list in force (0: none).
    pub fn revocations_version(&self) -> u64 {
        self.revocations.as_ref().map_or(0, |l| l.version)
    }

    /// `seq` of the last root rotation applied (0: none).
    pub fn rotation_seq(&self) -> u64 {
        self.rotation_seq
    }

    /// Decides whether the (already signature-checked) envelope's signer may speak for the
    /// controller at `now`: it must carry a certificate for exactly that key, issued by a
    /// pinned root, validly signed, not revoked and valid at `now`.
    pub fn authorize(&self, env: &Envelope<'_>, now: UnixTime) -> Result<SignerInfo, Error> {
        self.authorize_inner(env, now, false, None)
    }

    /// [`TrustStore::authorize`] that skips the certificate's signature check when `memo` holds
    /// exactly this certificate from an earlier successful check (every bundle of a signing key
    /// carries the same certificate: this halves the ed25519 work of accepting one). Everything
    /// else — pinned issuer, revocation, validity at `now` — is checked every time.
    pub fn authorize_memo(
        &self,
        env: &Envelope<'_>,
        now: UnixTime,
        memo: &mut CertMemo,
    ) -> Result<SignerInfo, Error> {
        self.authorize_inner(env, now, false, Some(memo))
    }

    /// The cache rule: like [`TrustStore::authorize`], but the certificate is evaluated at the
    /// bundle's signed `issued_at`, and a root retired by a rotation made *after* `issued_at`
    /// (or in the same second) still counts. Revocation is checked against the current list: a revoked signer is
    /// refused whenever it signed.
    pub fn authorize_as_issued(
        &self,
        env: &Envelope<'_>,
        issued_at: UnixTime,
    ) -> Result<SignerInfo, Error> {
        self.authorize_inner(env, issued_at, true, None)
    }

    fn authorize_inner(
        &self,
        env: &Envelope<'_>,
        at: UnixTime,
        as_issued: bool,
        memo: Option<&mut CertMemo>,
    ) -> Result<SignerInfo, Error> {
        let cert = env
            .cert
            .as_ref()
            .ok_or(Error::UnknownSigner(env.signer.id()))?;
        // The key the root's certificate must name: the envelope's signer, or for a site
        // issuer, the controller key that delegated to it.
        let certified = match &env.delegation {
            None => env.signer,
            Some(d) => {
                if d.body.subject != env.signer {
                    return Err(Error::CertificateMismatch {
                        certified: d.body.subject.id(),
                        signer: env.signer.id(),
                    });
                }
                d.body.issuer
            }
        };
        let signer = certified.id();
        if cert.body.subject != certified {
            return Err(Error::CertificateMismatch {
                certified: cert.body.subject.id(),
                signer,
            });
        }
        let issuer = cert.body.issuer;
        let mut info = if !self.roots.contains(&issuer) {
            match self.retired.iter().find(|r| r.key == issuer) {
                Some(r) if as_issued && at <= r.retired_at => {
                    self.finish(cert, signer, at, memo)? // the root was current when issued
                }
                Some(_) => return Err(Error::RetiredRoot(issuer.id())),
                None => return Err(Error::UnknownSigner(signer)),
            }
        } else {
            self.finish(cert, signer, at, memo)?
        };
        if let Some(d) = &env.delegation {
            info.site_issuer = Some(self.check_delegation(env.kind, d, at)?);
        }
        Ok(info)
    }

    /// The site issuer's half of the chain, after the controller key's certificate passed:
    /// only bundles (and grant files) may be delegated, the delegation's signature by the
    /// controller key, the site issuer not revoked, the delegation valid at `at`, and made for
    /// this device's site.
    fn check_delegation(
        &self,
        kind: MessageKind,
        d: &crate::delegation::Delegation,
        at: UnixTime,
    ) -> Result<KeyId, Error> {
        if !matches!(
            kind,
            MessageKind::Grants | MessageKind::PolicyBundle | MessageKind::GrantAnswer
        ) {
            return Err(Error::Invalid("a site issuer signs grants only"));
        }
        d.verify()?;
        let relay = d.subject_id();
        if self.is_revoked(&relay) {
            return Err(Error::SignerRevoked(relay));
        }
        d.check_validity(at)?;
        let delegated = &d.body.constraints.site;
        match &self.site {
            Some(site) if site == delegated => Ok(relay),
            site => Err(Error::DelegationBreach(crate::delegation::Breach::Site {
                device: site.clone(),
                delegated: delegated.clone(),
            })),
        }
    }

    fn finish(
        &self,
        cert: &crate::cert::SignerCertificate,
        signer: KeyId,
        at: UnixTime,
        memo: Option<&mut CertMemo>,
    ) -> Result<SignerInfo, Error> {
        match memo {
            Some(m) if m.verified.as_ref() == Some(cert) => {}
            Some(m) => {
                cert.verify()?;
                m.verified = Some(cert.clone());
            }
            None => cert.verify()?,
        }
        if self.is_revoked(&signer) {
            return Err(Error::SignerRevoked(signer));
        }
        cert.body.check_validity(at)?;
        Ok(SignerInfo {
            signer,
            root: cert.body.issuer.id(),
            cert_not_after: cert.body.not_after,
            site_issuer: None,
        })
    }

    /// Checks a received revocation list (kind 3) without applying it, in this order: framing
    /// and kind, no certificate, signer is a pinned root ([`Error::NotSignedByRoot`]),
    /// signature, decoding and content, `version` newer than the held list's
    /// ([`Error::RevocationRollback`]).
    pub fn check_revocations(&self, bytes: &[u8]) -> Result<RevocationList, Error> {
        let env = root_signed(bytes, MessageKind::Revocations)?;
        if !self.roots.contains(&env.signer) {
            return Err(Error::NotSignedByRoot(env.signer.id()));
        }
        env.verify_signature()?;
        let list: RevocationList = env.decode()?;
        list.validate()?;
        let current = self.revocations_version();
        if self.revocations.is_some() && list.version <= current {
            return Err(Error::RevocationRollback {
                version: list.version,
                current,
            });
        }
        Ok(list)
    }

    /// Puts a list returned by [`TrustStore::check_revocations`] in force (it replaces the
    /// previous list).
    pub fn apply_revocations(&mut self, list: RevocationList) {
        self.revocations = Some(list);
    }

    /// [`TrustStore::check_revocations`] then [`TrustStore::apply_revocations`].
    pub fn accept_revocations(&mut self, bytes: &[u8]) -> Result<&RevocationList, Error> {
        let list = self.check_revocations(bytes)?;
        Ok(self.revocations.insert(list))
    }

    /// Checks a received root rotation statement (kind 4) without applying it, in this order:
    /// framing and kind, no certificate, the envelope signature by its signer, decoding and
    /// content, the signer is the new root (else [`Error::RotationNotSignedByBoth`] naming
    /// the new root), the old root is pinned ([`Error::RotationFromUnknownRoot`]), the old
    /// root's signature ([`Error::RotationNotSignedByBoth`] naming the old root), and `seq`
    /// newer than the last rotation applied ([`Error::RotationRollback`]).
    pub fn check_rotation(&self, bytes: &[u8]) -> Result<RootRotation, Error> {
        let env = root_signed(bytes, MessageKind::RootRotation)?;
        env.verify_signature()?;
        let rotation: RootRotation = env.decode()?;
        rotation.validate()?;
        if env.signer != rotation.next {
            return Err(Error::RotationNotSignedByBoth {
                missing: rotation.next.id(),
            });
        }
        if !self.roots.contains(&rotation.previous) {
            return Err(Error::RotationFromUnknownRoot(rotation.previous.id()));
        }
        rotation
            .verify_previous()
            .map_err(|_| Error::RotationNotSignedByBoth {
                missing: rotation.previous.id(),
            })?;
        if rotation.seq <= self.rotation_seq {
            return Err(Error::RotationRollback {
                seq: rotation.seq,
                current: self.rotation_seq,
            });
        }
        Ok(rotation)
    }

    /// Applies a statement returned by [`TrustStore::check_rotation`]: `previous` is no longer
    /// pinned (it is kept as retired, for the cache rule), `next` is.
    pub fn apply_rotation(&mut self, rotation: &RootRotation) {
        self.roots.retain(|r| *r != rotation.previous);
        if !self.roots.contains(&rotation.next) {
            self.roots.push(rotation.next);
        }
        self.retired.retain(|r| r.key != rotation.next);
        self.retired.push(RetiredRoot {
            key: rotation.previous,
            retired_at: rotation.issued_at,
        });
        self.rotation_seq = rotation.seq;
    }

    /// [`TrustStore::check_rotation`] then [`TrustStore::apply_rotation`].
    pub fn accept_rotation(&mut self, bytes: &[u8]) -> Result<RootRotation, Error> {
        let rotation = self.check_rotation(bytes)?;
        self.apply_rotation(&rotation);
        Ok(rotation)
    }
}

/// Parses a root-signed trust message of `kind`: roots sign these directly, so a certificate
/// is refused rather than ignored (it would make one message encodable several ways).
fn root_signed(bytes: &[u8], kind: MessageKind) -> Result<Envelope<'_>, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(kind)?;
    if env.cert.is_some() {
        return Err(Error::Invalid(
            "a root-signed message carries no certificate",
        ));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::SignerCertificate;
    use crate::envelope::seal_bytes;
    use crate::revocation::seal_revocations;
    use crate::rotation::{seal_rotation, Signature64};
    use alloc::vec;
    use ed25519_dalek::SigningKey;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }
    fn public(k: &SigningKey) -> PublicKey {
        PublicKey::from(&k.verifying_key())
    }
    fn list(version: u64, revoked: Vec<KeyId>) -> RevocationList {
        RevocationList {
            version,
            issued_at: 100,
            revoked,
        }
    }
    /// A kind-2 envelope (any payload) signed by `signing` with a certificate from `root`.
    fn signed_by(root: &SigningKey, signing: &SigningKey, nb: u64, na: u64) -> Vec<u8> {
        let cert = SignerCertificate::issue(root, public(signing), nb, na);
        seal_bytes(MessageKind::Grants, signing, Some(&cert), b"x")
    }

    #[test]
    fn a_revocation_list_must_be_signed_by_a_pinned_root_and_only_move_forward() {
        let (root, signing, stranger) = (key(1), key(2), key(3));
        let mut t = TrustStore::new(vec![public(&root)]);
        let revoked = public(&signing).id();
        // Signed by a signing key or a stranger: refused.
        for k in [&signing, &stranger] {
            assert_eq!(
                t.check_revocations(&seal_revocations(&list(1, vec![revoked]), k)),
                Err(Error::NotSignedByRoot(public(k).id()))
            );
        }
        let v2 = seal_revocations(&list(2, vec![revoked]), &root);
        assert_eq!(t.accept_revocations(&v2).map(|l| l.version), Ok(2));
        assert!(t.is_revoked(&revoked));
        // Older or equal versions are a rollback, even when they revoke more.
        for v in [1, 2] {
            let old = seal_revocations(&list(v, vec![]), &root);
            assert_eq!(
                t.check_revocations(&old),
                Err(Error::RevocationRollback {
                    version: v,
                    current: 2
                })
            );
        }
        // A newer list replaces the old one: un-revoking is possible, by the root only.
        let v3 = seal_revocations(&list(3, vec![]), &root);
        t.accept_revocations(&v3).unwrap();
        assert!(!t.is_revoked(&revoked));
        assert_eq!(t.revocations_version(), 3);
    }

    #[test]
    fn a_revocation_list_with_a_certificate_or_of_another_kind_is_refused() {
        let root = key(1);
        let t = TrustStore::new(vec![public(&root)]);
        let payload = postcard::to_allocvec(&list(1, vec![])).unwrap();
        let cert = SignerCertificate::issue(&root, public(&root), 0, 10);
        let with_cert = seal_bytes(MessageKind::Revocations, &root, Some(&cert), &payload);
        assert!(matches!(
            t.check_revocations(&with_cert),
            Err(Error::Invalid(_))
        ));
        let wrong = seal_bytes(MessageKind::RootRotation, &root, None, &payload);
        assert!(matches!(
            t.check_revocations(&wrong),
            Err(Error::WrongKind { .. })
        ));
    }

    #[test]
    fn a_revoked_signer_is_refused_live_and_from_the_cache() {
        let (root, signing) = (key(1), key(2));
        let mut t = TrustStore::new(vec![public(&root)]);
        let raw = signed_by(&root, &signing, 0, 1_000);
        let env = Envelope::parse(&raw).unwrap();
        assert!(t.authorize(&env, 10).is_ok());
        t.accept_revocations(&seal_revocations(
            &list(1, vec![public(&signing).id()]),
            &root,
        ))
        .unwrap();
        let want = Err(Error::SignerRevoked(public(&signing).id()));
        assert_eq!(t.authorize(&env, 10), want);
        assert_eq!(t.authorize_as_issued(&env, 10), want);
    }

    #[test]
    fn a_rotation_signed_by_both_roots_moves_the_pin_and_retires_the_old_root() {
        let (old, new, signing) = (key(1), key(2), key(3));
        let mut t = TrustStore::new(vec![public(&old)]);
        let stmt = RootRotation::sign(&old, public(&new), 1, 500);
        let applied = t.accept_rotation(&seal_rotation(&stmt, &new)).unwrap();
        assert_eq!(applied, stmt);
        assert_eq!(t.roots(), &[public(&new)]);
        assert_eq!(t.rotation_seq(), 1);
        // A bundle certified by the old root: refused live ...
        let under_old = signed_by(&old, &signing, 0, 10_000);
        let env = Envelope::parse(&under_old).unwrap();
        assert_eq!(
            t.authorize(&env, 600),
            Err(Error::RetiredRoot(public(&old).id()))
        );
        // ... loads from the cache only when issued before the rotation.
        assert!(t.authorize_as_issued(&env, 499).is_ok());
        assert!(t.authorize_as_issued(&env, 500).is_ok());
        assert_eq!(
            t.authorize_as_issued(&env, 501),
            Err(Error::RetiredRoot(public(&old).id()))
        );
        // Certified by the new root: fine.
        let under_new = signed_by(&new, &signing, 0, 10_000);
        assert!(t
            .authorize(&Envelope::parse(&under_new).unwrap(), 600)
            .is_ok());
        // The old root can no longer sign revocation lists.
        assert_eq!(
            t.check_revocations(&seal_revocations(&list(1, vec![]), &old)),
            Err(Error::NotSignedByRoot(public(&old).id()))
        );
    }

    #[test]
    fn a_rotation_signed_by_only_one_root_is_refused_naming_the_missing_one() {
        let (old, new, attacker) = (key(1), key(2), key(3));
        let t = TrustStore::new(vec![public(&old)]);
        // Only the old root (say, stolen): it signs the statement and the envelope.
        let stmt = RootRotation::sign(&old, public(&attacker), 1, 5);
        assert_eq!(
            t.check_rotation(&seal_rotation(&stmt, &old)),
            Err(Error::RotationNotSignedByBoth {
                missing: public(&attacker).id()
            })
        );
        // Only the new root: the old root's signature is made up.
        let mut forged = RootRotation::sign(&new, public(&new), 1, 5);
        forged.previous = public(&old);
        assert_eq!(
            t.check_rotation(&seal_rotation(&forged, &new)),
            Err(Error::RotationNotSignedByBoth {
                missing: public(&old).id()
            })
        );
        forged.previous_signature = Signature64([0; 64]);
        assert_eq!(
            t.check_rotation(&seal_rotation(&forged, &new)),
            Err(Error::RotationNotSignedByBoth {
                missing: public(&old).id()
            })
        );
    }

    #[test]
    fn rotations_from_unknown_roots_and_replays_are_refused() {
        let (a, b, c, stranger) = (key(1), key(2), key(3), key(4));
        let mut t = TrustStore::new(vec![public(&a)]);
        let ab = seal_rotation(&RootRotation::sign(&a, public(&b), 1, 5), &b);
        let sb = seal_rotation(&RootRotation::sign(&stranger, public(&b), 1, 5), &b);
        assert_eq!(
            t.check_rotation(&sb),
            Err(Error::RotationFromUnknownRoot(public(&stranger).id()))
        );
        t.accept_rotation(&ab).unwrap();
        // Replayed: `a` is no longer pinned.
        assert_eq!(
            t.check_rotation(&ab),
            Err(Error::RotationFromUnknownRoot(public(&a).id()))
        );
        // Not newer.
        let bc1 = seal_rotation(&RootRotation::sign(&b, public(&c), 1, 6), &c);
        assert_eq!(
            t.check_rotation(&bc1),
            Err(Error::RotationRollback { seq: 1, current: 1 })
        );
        let bc2 = seal_rotation(&RootRotation::sign(&b, public(&c), 2, 6), &c);
        t.accept_rotation(&bc2).unwrap();
        assert_eq!(t.roots(), &[public(&c)]);
        assert_eq!(t.retired().len(), 2);
        // Rotating back to a retired root un-retires it.
        let ca = seal_rotation(&RootRotation::sign(&c, public(&a), 3, 7), &a);
        t.accept_rotation(&ca).unwrap();
        assert_eq!(t.roots(), &[public(&a)]);
        assert!(t.retired().iter().all(|r| r.key != public(&a)));
    }

    #[test]
    fn a_rotation_to_the_same_root_is_invalid() {
        let a = key(1);
        let t = TrustStore::new(vec![public(&a)]);
        let same = seal_rotation(&RootRotation::sign(&a, public(&a), 1, 5), &a);
        assert!(matches!(t.check_rotation(&same), Err(Error::Invalid(_))));
    }
}
