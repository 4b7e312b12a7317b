//! Which signers an agent trusts: pinned root keys, and signing keys those roots certified.

use alloc::vec::Vec;

use crate::envelope::Envelope;
use crate::error::Error;
use crate::keys::{KeyId, PublicKey};
use crate::UnixTime;

/// The pinned roots and the signing keys revoked by them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStore {
    roots: Vec<PublicKey>,
    revoked: Vec<KeyId>,
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
}

impl TrustStore {
    /// A store pinning `roots`.
    pub fn new(roots: Vec<PublicKey>) -> Self {
        Self {
            roots,
            revoked: Vec::new(),
        }
    }

    /// The pinned roots.
    pub fn roots(&self) -> &[PublicKey] {
        &self.roots
    }

    /// Marks signing key `id` as revoked.
    pub fn revoke(&mut self, id: KeyId) {
        if !self.revoked.contains(&id) {
            self.revoked.push(id);
        }
    }

    /// Decides whether the (already signature-checked) envelope's signer may speak for the
    /// controller at `now`: it must carry a certificate for exactly that key, issued by a
    /// pinned root, validly signed, not revoked and valid at `now`.
    pub fn authorize(&self, env: &Envelope<'_>, now: UnixTime) -> Result<SignerInfo, Error> {
        let signer = env.signer.id();
        let cert = env.cert.as_ref().ok_or(Error::UnknownSigner(signer))?;
        if cert.body.subject != env.signer {
            return Err(Error::CertificateMismatch {
                certified: cert.body.subject.id(),
                signer,
            });
        }
        if !self.roots.contains(&cert.body.issuer) {
            return Err(Error::UnknownSigner(signer));
        }
        cert.verify()?;
        if self.revoked.contains(&signer) {
            return Err(Error::SignerRevoked(signer));
        }
        cert.body.check_validity(now)?;
        Ok(SignerInfo {
            signer,
            root: cert.body.issuer.id(),
            cert_not_after: cert.body.not_after,
        })
    }
}
