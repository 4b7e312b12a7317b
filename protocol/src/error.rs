//! The one error type of the protocol crate: a variant per reason a message is refused.

use crate::envelope::MessageKind;
use crate::id::IdError;
use crate::keys::KeyId;
use crate::UnixTime;

/// Why a message, certificate or topic was refused. Tests assert the exact variant, so a
/// refusal for the wrong reason fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The envelope is larger than [`crate::limits::MAX_ENVELOPE_LEN`].
    #[error("message of {len} bytes is over the {max}-byte limit")]
    Oversized {
        /// Size received.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The bytes end before the structure they announce (or have bytes left over after it).
    #[error("message truncated or malformed framing: {0}")]
    Truncated(&'static str),
    /// A protocol version this build does not speak.
    #[error("protocol version {got} not supported, this build speaks {supported}")]
    BadVersion {
        /// Version byte received.
        got: u8,
        /// Version this build speaks.
        supported: u8,
    },
    /// A message kind byte this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The message is of another kind than the one expected here.
    #[error("expected a {expected:?} message, got {got:?}")]
    WrongKind {
        /// Kind the caller asked for.
        expected: MessageKind,
        /// Kind on the wire.
        got: MessageKind,
    },
    /// The signature does not verify (strict ed25519: malleable and small-order forms refused).
    #[error("bad signature")]
    BadSignature,
    /// The signer certificate's own signature (by its issuer) does not verify.
    #[error("signer certificate signature does not verify")]
    BadCertificateSignature,
    /// A public key that is not a valid ed25519 point (or a weak, small-order one).
    #[error("invalid public key")]
    BadPublicKey,
    /// The signer carries no certificate from a pinned root (roots themselves do not sign
    /// bundles: they certify signing keys).
    #[error("signer {0} is not trusted (no certificate chaining to a pinned root)")]
    UnknownSigner(KeyId),
    /// The certificate names a signing key other than the envelope's signer.
    #[error("certificate is for key {certified}, but the message is signed by {signer}")]
    CertificateMismatch {
        /// Key named in the certificate.
        certified: KeyId,
        /// Key that signed the message.
        signer: KeyId,
    },
    /// The signer certificate's validity window ended.
    #[error("signer certificate expired at {not_after} (now {now})")]
    CertificateExpired {
        /// End of validity.
        not_after: UnixTime,
        /// Time it was evaluated at.
        now: UnixTime,
    },
    /// The signer certificate's validity window has not begun.
    #[error("signer certificate not valid before {not_before} (now {now})")]
    CertificateNotYetValid {
        /// Start of validity.
        not_before: UnixTime,
        /// Time it was evaluated at.
        now: UnixTime,
    },
    /// A delegation's own signature (by the controller key it names) does not verify.
    #[error("site delegation signature does not verify")]
    BadDelegationSignature,
    /// The delegation's validity window ended (evaluated at the device's trusted time, so a
    /// clock set back does not revive it).
    #[error("site delegation expired at {not_after} (now {now})")]
    DelegationExpired {
        /// End of validity.
        not_after: UnixTime,
        /// Time it was evaluated at.
        now: UnixTime,
    },
    /// The delegation's validity window has not begun.
    #[error("site delegation not valid before {not_before} (now {now})")]
    DelegationNotYetValid {
        /// Start of validity.
        not_before: UnixTime,
        /// Time it was evaluated at.
        now: UnixTime,
    },
    /// A bundle signed under a delegation oversteps it (the [`crate::delegation::Breach`] says
    /// how).
    #[error("site issuer oversteps its delegation: {0}")]
    DelegationBreach(crate::delegation::Breach),
    /// The signing key was revoked by a root.
    #[error("signer {0} has been revoked")]
    SignerRevoked(KeyId),
    /// A revocation list or root rotation is signed by a key that is not a pinned root (a
    /// signing key, a stranger, or a root rotated away).
    #[error("signed by {0}, which is not a pinned root")]
    NotSignedByRoot(KeyId),
    /// A bundle's certificate was issued by a root that a rotation statement retired (and,
    /// for a cached bundle, the bundle was issued after the rotation).
    #[error("signer certificate issued by root {0}, which has been rotated away")]
    RetiredRoot(KeyId),
    /// A revocation list not newer than the one held: a rollback to a list that revoked less.
    #[error("revocation list version {version} is not newer than the held version {current}")]
    RevocationRollback {
        /// Version of the refused list.
        version: u64,
        /// Version held.
        current: u64,
    },
    /// A root rotation statement lacks the signature of one of its two roots (`missing`):
    /// the envelope is not signed by the new root, or the old root's signature is bad.
    #[error("root rotation is not signed by both roots: signature of {missing} missing or bad")]
    RotationNotSignedByBoth {
        /// The root whose signature is missing or does not verify.
        missing: KeyId,
    },
    /// A root rotation away from a root that is not pinned (never was, or already rotated).
    #[error("root rotation away from {0}, which is not a pinned root")]
    RotationFromUnknownRoot(KeyId),
    /// A root rotation not newer than the last one applied (a replay or an old statement).
    #[error("root rotation seq {seq} is not newer than the applied seq {current}")]
    RotationRollback {
        /// Seq of the refused statement.
        seq: u64,
        /// Seq of the last rotation applied.
        current: u64,
    },
    /// A diagnostic request issued more than the tolerance before the device's trusted now
    /// (an old request replayed).
    #[error("diagnostic request issued at {issued_at} is stale (now {now})")]
    StaleRequest {
        /// The request's `issued_at`.
        issued_at: UnixTime,
        /// The device's trusted now.
        now: UnixTime,
    },
    /// A diagnostic request issued more than the tolerance after the device's trusted now.
    #[error("diagnostic request issued at {issued_at} is in the future (now {now})")]
    RequestFromFuture {
        /// The request's `issued_at`.
        issued_at: UnixTime,
        /// The device's trusted now.
        now: UnixTime,
    },
    /// A message that must be signed by a device's pinned key is signed by another key.
    #[error("signed by {got}, not by the device key {expected}")]
    NotDeviceKey {
        /// The key pinned for the device.
        expected: KeyId,
        /// The key that signed the message.
        got: KeyId,
    },
    /// The payload's postcard encoding is invalid for the announced kind.
    #[error("payload does not decode: {0}")]
    Decode(&'static str),
    /// The payload decoded but breaks a rule of the protocol (lengths, counts, ids).
    #[error("invalid content: {0}")]
    Invalid(&'static str),
    /// An identifier that is not `[A-Za-z0-9._-]{1,64}`.
    #[error(transparent)]
    Id(#[from] IdError),
    /// An armored file that does not decode ([`crate::offline::ArmorError`] says where).
    #[error("armored file refused: {0}")]
    Armor(#[from] crate::offline::ArmorError),
    /// A topic that is not a licd v1 topic.
    #[error("bad topic: {0}")]
    BadTopic(&'static str),
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        use postcard::Error as P;
        Error::Decode(match e {
            P::DeserializeUnexpectedEnd => "unexpected end of payload",
            P::DeserializeBadVarint => "bad varint",
            P::DeserializeBadBool => "bad bool",
            P::DeserializeBadChar => "bad char",
            P::DeserializeBadUtf8 => "bad utf-8",
            P::DeserializeBadOption => "bad option tag",
            P::DeserializeBadEnum => "bad enum tag",
            P::DeserializeBadEncoding => "bad encoding",
            P::DeserializeBadCrc => "bad crc",
            P::SerdeDeCustom => "field value refused",
            _ => "malformed payload",
        })
    }
}
