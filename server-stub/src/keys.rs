//! The controller's keys: an ed25519 root key (agents pin its public half) and a signing key
//! certified by it, kept as hex files (mode 0600) in a key directory (mode 0700), and the
//! [`Signer`] that seals bundles with them.
//!
//! Layout of the key directory: `root.key` (root secret seed), `signing.key` (signing secret
//! seed), `signing.cert` (the 145-byte certificate), each one line of lower-case hex. Rotation,
//! revocation and root rotation (and their files) are in [`trust`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_bundle;
use licd_protocol::{GrantBundle, PublicKey, SignerCertificate, UnixTime};

pub mod trust;

/// Default validity of a signing-key certificate: one year (`keys rotate` issues the next).
pub const DEFAULT_CERT_VALIDITY_SECS: u64 = 365 * 24 * 60 * 60;

/// How far back a new certificate's validity starts, so an agent whose clock is a little behind
/// still accepts it.
pub const CERT_BACKDATE_SECS: u64 = 60 * 60;

const ROOT_FILE: &str = "root.key";
const SIGNING_FILE: &str = "signing.key";
const CERT_FILE: &str = "signing.cert";

/// Why keys could not be created or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `keys init` found keys already there (it never overwrites).
    #[error("{0} already exists; refusing to overwrite keys")]
    Exists(PathBuf),
    /// A key file does not hold what it should.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// Seals grant bundles with a certified signing key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    cert: SignerCertificate,
    root: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field(
                "signing_key",
                &PublicKey::from(&self.key.verifying_key()).id(),
            )
            .field("root", &self.root.id())
            .field("cert_not_after", &self.cert.body.not_after)
            .finish()
    }
}

impl Signer {
    /// A signer from its parts.
    pub fn new(key: SigningKey, cert: SignerCertificate) -> Self {
        let root = cert.body.issuer;
        Self { key, cert, root }
    }

    /// Fresh in-memory root and signing keys (tests, demos): returns the signer; its root's
    /// public key is [`Signer::root_public_key`].
    pub fn ephemeral(now: UnixTime) -> Result<Self, KeyError> {
        let root = random_key()?;
        let key = random_key()?;
        let cert = certify(&root, &key, now, DEFAULT_CERT_VALIDITY_SECS);
        Ok(Self::new(key, cert))
    }

    /// A fresh signing key certified by `root`: a controller replica's own key (each
    /// replica signs with its own; agents accept any key the pinned root certified).
    pub fn issue(root: &SigningKey, now: UnixTime) -> Result<Self, KeyError> {
        let key = random_key()?;
        let cert = certify(root, &key, now, DEFAULT_CERT_VALIDITY_SECS);
        Ok(Self::new(key, cert))
    }

    /// The root public key agents must pin.
    pub fn root_public_key(&self) -> PublicKey {
        self.root
    }

    /// The signing key's certificate.
    pub fn certificate(&self) -> &SignerCertificate {
        &self.cert
    }

    /// Encodes and signs `bundle`.
    pub fn seal(&self, bundle: &GrantBundle) -> Vec<u8> {
        seal_bundle(bundle, &self.key, &self.cert)
    }

    /// The signing key (grant answers of licensing by file are sealed with it).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The signing key's certificate.
    pub fn cert(&self) -> &SignerCertificate {
        &self.cert
    }

    /// Encodes and signs a remote diagnostics request (see [`crate::diag`]).
    pub fn seal_diag_request(&self, request: &licd_protocol::DiagRequest) -> Vec<u8> {
        licd_protocol::envelope::seal_diag_request(request, &self.key, &self.cert)
    }
}

pub(crate) fn random_key() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn certify(root: &SigningKey, key: &SigningKey, now: UnixTime, validity: u64) -> SignerCertificate {
    SignerCertificate::issue(
        root,
        PublicKey::from(&key.verifying_key()),
        now.saturating_sub(CERT_BACKDATE_SECS),
        now.saturating_add(validity),
    )
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    writeln!(f, "{}", hex::encode(bytes)).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

pub(crate) fn read_hex(path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    hex::decode(text.trim()).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        why: format!("not hex: {e}"),
    })
}

pub(crate) fn read_seed(path: &Path) -> Result<SigningKey, KeyError> {
    let bytes = read_hex(path)?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid {
        path: path.to_path_buf(),
        why: "an ed25519 seed is 32 bytes".into(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Creates a directory for secrets (mode 0700), with its parents; an existing one is fine.
pub(crate) fn create_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io(dir))
}

/// Creates the key directory (mode 0700) with a new root key, a signing key and its
/// certificate. Refuses to overwrite existing keys. Returns the root public key.
pub fn init(dir: &Path, now: UnixTime) -> Result<PublicKey, KeyError> {
    create_dir(dir)?;
    for f in [ROOT_FILE, SIGNING_FILE, CERT_FILE] {
        let p = dir.join(f);
        if p.exists() {
            return Err(KeyError::Exists(p));
        }
    }
    let root = random_key()?;
    let key = random_key()?;
    let cert = certify(&root, &key, now, DEFAULT_CERT_VALIDITY_SECS);
    write_secret(&dir.join(ROOT_FILE), root.as_bytes())?;
    write_secret(&dir.join(SIGNING_FILE), key.as_bytes())?;
    write_secret(&dir.join(CERT_FILE), &cert.to_bytes())?;
    let public = PublicKey::from(&root.verifying_key());
    tracing::info!(dir = %dir.display(), root = %public.id(), "keys created");
    Ok(public)
}

/// Creates the key directory `out` (mode 0700) of one controller replica: a new signing key
/// certified by the root in `root_dir`, and not the root itself (it stays where it is).
/// Refuses to overwrite. Returns the new signing key's public key.
pub fn init_replica(root_dir: &Path, out: &Path, now: UnixTime) -> Result<PublicKey, KeyError> {
    let root = read_seed(&root_dir.join(ROOT_FILE))?;
    create_dir(out)?;
    for f in [ROOT_FILE, SIGNING_FILE, CERT_FILE] {
        let p = out.join(f);
        if p.exists() {
            return Err(KeyError::Exists(p));
        }
    }
    let signer = Signer::issue(&root, now)?;
    write_secret(&out.join(SIGNING_FILE), signer.key.as_bytes())?;
    write_secret(&out.join(CERT_FILE), &signer.cert.to_bytes())?;
    let public = PublicKey::from(&signer.key.verifying_key());
    tracing::info!(dir = %out.display(), key = %public.id(), root = %signer.root.id(), "replica signing key created");
    Ok(public)
}

/// The root public key from the key directory (what `keys export-root` prints).
pub fn root_public_key(dir: &Path) -> Result<PublicKey, KeyError> {
    let root = read_seed(&dir.join(ROOT_FILE))?;
    Ok(PublicKey::from(&root.verifying_key()))
}

/// Loads the signer from the key directory and checks that its certificate is for that key,
/// issued by the root in the same directory, and validly signed.
pub fn load_signer(dir: &Path) -> Result<Signer, KeyError> {
    let cert_path = dir.join(CERT_FILE);
    let key = read_seed(&dir.join(SIGNING_FILE))?;
    let cert = SignerCertificate::parse(&read_hex(&cert_path)?).map_err(|e| KeyError::Invalid {
        path: cert_path.clone(),
        why: e.to_string(),
    })?;
    let invalid = |why: &str| KeyError::Invalid {
        path: cert_path.clone(),
        why: why.into(),
    };
    cert.verify()
        .map_err(|_| invalid("certificate signature does not verify"))?;
    if cert.body.subject != PublicKey::from(&key.verifying_key()) {
        return Err(invalid("certificate is not for signing.key"));
    }
    if dir.join(ROOT_FILE).exists() && cert.body.issuer != root_public_key(dir)? {
        return Err(invalid("certificate is not issued by root.key"));
    }
    warn_if_readable(dir);
    Ok(Signer::new(key, cert))
}

fn warn_if_readable(dir: &Path) {
    #[cfg(unix)]
    for f in [ROOT_FILE, SIGNING_FILE] {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(f);
        if let Ok(m) = fs::metadata(&p) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %p.display(), "key file is readable by group or others; chmod 600 it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licd_protocol::envelope::open_bundle;
    use licd_protocol::{DeviceId, TenantId, TrustStore};

    #[test]
    fn init_creates_private_files_and_a_signer_that_chains_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let kd = dir.path().join("keys");
        let root = init(&kd, 1_700_000_000).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&kd).unwrap().permissions().mode() & 0o777,
                0o700
            );
            for f in [ROOT_FILE, SIGNING_FILE, CERT_FILE] {
                let mode = fs::metadata(kd.join(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        assert_eq!(root_public_key(&kd).unwrap(), root);
        let signer = load_signer(&kd).unwrap();
        let bundle = GrantBundle {
            device: DeviceId::new("d").unwrap(),
            device_key: root.id(),
            tenant: TenantId::new("t").unwrap(),
            seq: 1,
            issued_at: 1_700_000_000,
            refresh_after: 1_700_000_100,
            grants: vec![],
            withheld: vec![],
        };
        let trust = TrustStore::new(vec![root]);
        let (opened, info) = open_bundle(&signer.seal(&bundle), &trust, 1_700_000_000).unwrap();
        assert_eq!(opened, bundle);
        assert_eq!(info.root, root.id());
        assert!(matches!(init(&kd, 1), Err(KeyError::Exists(_))));
    }
}
