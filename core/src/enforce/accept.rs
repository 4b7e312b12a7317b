//! The acceptance rules for a grant bundle: what a bundle must prove before it can change any
//! license state. Pure: trust anchors, the held bundle and the time are passed in.

use licd_protocol::policy::{open_any_bundle, open_any_bundle_as_issued, open_any_bundle_memo};
use licd_protocol::{CertMemo, DeviceId, KeyId, PolicyBundle, SignerInfo, TrustStore, UnixTime};

/// Why a bundle was refused. The state is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Framing, signature, trust chain or content (the protocol's precise reason).
    #[error(transparent)]
    Protocol(#[from] licd_protocol::Error),
    /// The bundle is for another device.
    #[error("bundle is for device {got}, this is {expected}")]
    WrongDevice {
        /// Device named in the bundle.
        got: DeviceId,
        /// This device.
        expected: DeviceId,
    },
    /// The bundle is bound to another device key (copied from another device, or issued
    /// before this device's key changed).
    #[error("bundle is bound to device key {got}, this device's key is {expected}")]
    WrongDeviceKey {
        /// Key id in the bundle.
        got: KeyId,
        /// This device's key id.
        expected: KeyId,
    },
    /// Not newer than the bundle held: a replay or an out-of-order delivery.
    #[error("bundle seq {seq} is not newer than the held seq {held}")]
    Stale {
        /// Seq of the refused bundle.
        seq: u64,
        /// Seq held.
        held: u64,
    },
    /// The very bundle held, imported again from a file (the MQTT path ignores a redelivery
    /// quietly instead: retained messages come back on every connect).
    #[error("bundle seq {seq} is the one already held")]
    AlreadyHeld {
        /// Its seq.
        seq: u64,
    },
    /// Issued further in the future than the tolerance allows.
    #[error("bundle issued at {issued_at}, more than {tolerance}s after now ({now})")]
    FromTheFuture {
        /// The bundle's `issued_at`.
        issued_at: UnixTime,
        /// Evaluation time.
        now: UnixTime,
        /// Tolerance in force.
        tolerance: u64,
    },
}

impl Refusal {
    /// A stable short code for status output and counters.
    pub fn code(&self) -> &'static str {
        use licd_protocol::Error as E;
        match self {
            Refusal::Protocol(e) => match e {
                E::Oversized { .. } => "oversized",
                E::Truncated(_) | E::Decode(_) | E::Invalid(_) | E::Id(_) => "malformed",
                E::BadVersion { .. } => "bad_version",
                E::UnknownKind(_) | E::WrongKind { .. } => "wrong_kind",
                E::BadSignature | E::BadPublicKey | E::BadCertificateSignature => "bad_signature",
                E::UnknownSigner(_) | E::CertificateMismatch { .. } => "untrusted_signer",
                E::CertificateExpired { .. } | E::CertificateNotYetValid { .. } => {
                    "certificate_validity"
                }
                E::SignerRevoked(_) => "signer_revoked",
                E::RetiredRoot(_) => "retired_root",
                E::NotSignedByRoot(_) => "not_signed_by_root",
                E::RevocationRollback { .. } => "revocation_rollback",
                E::RotationNotSignedByBoth { .. } => "rotation_not_signed_by_both",
                E::RotationFromUnknownRoot(_) => "rotation_from_unknown_root",
                E::RotationRollback { .. } => "rotation_rollback",
                E::BadTopic(_) => "bad_topic",
                _ => "refused",
            },
            Refusal::WrongDevice { .. } => "wrong_device",
            Refusal::WrongDeviceKey { .. } => "wrong_device_key",
            Refusal::Stale { .. } => "stale",
            Refusal::AlreadyHeld { .. } => "already_held",
            Refusal::FromTheFuture { .. } => "from_the_future",
        }
    }
}

/// What a bundle is checked against.
#[derive(Debug, Clone)]
pub struct AcceptanceRules {
    /// Pinned roots (and revocations).
    pub trust: TrustStore,
    /// This device.
    pub device: DeviceId,
    /// This device's key id.
    pub device_key: KeyId,
    /// How far `issued_at` may lie ahead of the evaluation time (controller clock skew).
    pub future_tolerance: u64,
}

impl AcceptanceRules {
    /// Checks everything but freshness against a held bundle: signature and chain at `now`,
    /// device binding, and `issued_at` not too far ahead of `now`. Either bundle kind (2, or
    /// 10 with policy; a plain one comes back with default policies).
    pub fn check(
        &self,
        bytes: &[u8],
        now: UnixTime,
    ) -> Result<(PolicyBundle, SignerInfo), Refusal> {
        let opened = open_any_bundle(bytes, &self.trust, now)?;
        self.bind(opened, now)
    }

    /// [`AcceptanceRules::check`] that remembers the signer certificate that verified, so the
    /// next bundle of the same signing key costs one ed25519 verification instead of two.
    pub fn check_memo(
        &self,
        bytes: &[u8],
        now: UnixTime,
        memo: &mut CertMemo,
    ) -> Result<(PolicyBundle, SignerInfo), Refusal> {
        let opened = open_any_bundle_memo(bytes, &self.trust, now, memo)?;
        self.bind(opened, now)
    }

    /// The cache rule, for a bundle accepted once and read back from disk (or held while the
    /// trust changes): the signer's chain is evaluated at the bundle's signed `issued_at`
    /// ([`licd_protocol::TrustStore::authorize_as_issued`]: certificate valid then, issued by
    /// a root current then, signer not revoked now), then the same device binding and
    /// future check at `now`.
    pub fn check_as_issued(
        &self,
        bytes: &[u8],
        now: UnixTime,
    ) -> Result<(PolicyBundle, SignerInfo), Refusal> {
        let opened = open_any_bundle_as_issued(bytes, &self.trust)?;
        self.bind(opened, now)
    }

    fn bind(
        &self,
        (policy, signer): (PolicyBundle, SignerInfo),
        now: UnixTime,
    ) -> Result<(PolicyBundle, SignerInfo), Refusal> {
        let bundle = &policy.bundle;
        if bundle.device != self.device {
            return Err(Refusal::WrongDevice {
                got: bundle.device.clone(),
                expected: self.device.clone(),
            });
        }
        if bundle.device_key != self.device_key {
            return Err(Refusal::WrongDeviceKey {
                got: bundle.device_key,
                expected: self.device_key,
            });
        }
        if bundle.issued_at > now.saturating_add(self.future_tolerance) {
            return Err(Refusal::FromTheFuture {
                issued_at: bundle.issued_at,
                now,
                tolerance: self.future_tolerance,
            });
        }
        Ok((policy, signer))
    }
}
