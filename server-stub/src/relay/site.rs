//! The relay's files in its directory, and the controller's side of a delegation.
//!
//! - `relay.key`: the site issuer's ed25519 seed (hex, mode 0600), made at the site by
//!   `licd-stub relay init`; only its public key leaves the site.
//! - `delegation.hex`: what the controller hands the site (`licd-stub delegate`): the
//!   controller signing key's certificate followed by its delegation to the relay key, hex.
//! - `pools.json`: the relay's seats ([`Pools`]), written atomically and fsynced before any
//!   bundle it decided is published, so a restart never hands a seat out twice.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use licd_protocol::cert::CERT_LEN;
use licd_protocol::delegation::open_delegation;
use licd_protocol::offline::decode_file;
use licd_protocol::{
    Constraints, Delegation, DelegationFile, PublicKey, SignerCertificate, UnixTime,
};

use super::pool::{LeaseTerms, Pools};
use crate::keys::{read_hex, read_seed, write_secret, KeyError, Signer};

/// The relay key's file name.
pub const KEY_FILE: &str = "relay.key";
/// The delegation's file name.
pub const DELEGATION_FILE: &str = "delegation.hex";
/// The seats' file name.
pub const STATE_FILE: &str = "pools.json";

/// Why the relay's files are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    /// A key file (see [`KeyError`]).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The delegation file does not hold a usable delegation for this relay.
    #[error("{path}: {why}")]
    Delegation {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The seats file could not be read, parsed or written.
    #[error("{path}: {why}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The delegation asked for is not valid.
    #[error("delegation refused: {0}")]
    Invalid(licd_protocol::Error),
}

/// Creates `dir` (mode 0700) and a new relay key in it; refuses to overwrite one. Returns the
/// public key the controller delegates to.
pub fn init(dir: &Path) -> Result<PublicKey, SiteError> {
    crate::keys::create_dir(dir)?;
    let path = dir.join(KEY_FILE);
    if path.exists() {
        return Err(KeyError::Exists(path).into());
    }
    let key = crate::keys::random_key()?;
    write_secret(&path, key.as_bytes())?;
    Ok(PublicKey::from(&key.verifying_key()))
}

/// The relay's public key (what `relay init` printed).
pub fn public_key(dir: &Path) -> Result<PublicKey, SiteError> {
    let key = read_seed(&dir.join(KEY_FILE))?;
    Ok(PublicKey::from(&key.verifying_key()))
}

/// The controller's side: delegates to `relay` under `constraints` for `[now, now + valid)`,
/// signed by the controller's signing key. Returns the delegation file's bytes (certificate
/// then delegation). Reserving the seats in the ledger is the caller's.
pub fn delegate(
    signer: &Signer,
    relay: PublicKey,
    constraints: Constraints,
    now: UnixTime,
    valid: u64,
) -> Result<Vec<u8>, SiteError> {
    let not_after = now.saturating_add(valid).min(signer.cert().body.not_after);
    let delegation = Delegation::issue(signer.key(), relay, now, not_after, constraints)
        .map_err(SiteError::Invalid)?;
    let mut bytes = signer.cert().to_bytes();
    bytes.extend_from_slice(&delegation.to_bytes());
    Ok(bytes)
}

/// Writes a delegation file (hex, one line) at `path`: what [`Site::load`] reads as
/// `delegation.hex`.
pub fn write_delegation_file(path: &Path, bytes: &[u8]) -> Result<(), SiteError> {
    std::fs::write(path, format!("{}\n", hex::encode(bytes))).map_err(|e| SiteError::Delegation {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Everything the running relay needs from its directory.
pub struct Site {
    /// The relay's key.
    pub key: SigningKey,
    /// The controller key's certificate.
    pub cert: SignerCertificate,
    /// The delegation to `key`.
    pub delegation: Delegation,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("relay", &PublicKey::from(&self.key.verifying_key()).id())
            .field("site", &self.delegation.body.constraints.site)
            .field("not_after", &self.delegation.body.not_after)
            .finish()
    }
}

impl Site {
    /// Loads the key and the delegation and checks that they belong together: the delegation
    /// is for this key, issued by the key the certificate certifies, and both signatures
    /// verify. (Whether the certificate's root is one the devices pin, the devices decide.)
    pub fn load(dir: &Path) -> Result<Self, SiteError> {
        let key = read_seed(&dir.join(KEY_FILE))?;
        let path = dir.join(DELEGATION_FILE);
        let bytes = read_hex(&path)?;
        let bad = |why: String| SiteError::Delegation {
            path: path.clone(),
            why,
        };
        let file = parse_chain(&bytes).map_err(bad)?;
        Self::new(key, file).map_err(|why| SiteError::Delegation { path, why })
    }

    /// The site of `key` under `file`, if `file` is a delegation to `key`.
    fn new(key: SigningKey, file: DelegationFile) -> Result<Self, String> {
        let ours = PublicKey::from(&key.verifying_key());
        if file.delegation.body.subject != ours {
            return Err(format!(
                "the delegation is for relay key {}, this relay's key is {}",
                file.delegation.body.subject.id(),
                ours.id()
            ));
        }
        Ok(Self {
            key,
            cert: file.cert,
            delegation: file.delegation,
        })
    }

    /// Empty pools for this delegation.
    pub fn pools(&self, terms: LeaseTerms) -> Pools {
        let b = &self.delegation.body;
        Pools::new(b.constraints.clone(), b.not_before, b.not_after, terms)
    }
}

/// Parses and checks a chain (certificate ‖ delegation, what `delegation.hex` holds): the
/// certificate's signature, the delegation issued by the certified key, its signature.
fn parse_chain(bytes: &[u8]) -> Result<DelegationFile, String> {
    if bytes.len() <= CERT_LEN {
        return Err(
            "shorter than a certificate and a delegation (is this the file `licd-stub delegate` wrote?)".into(),
        );
    }
    let (cert, delegation) = bytes.split_at(CERT_LEN);
    let cert = SignerCertificate::parse(cert).map_err(|e| format!("certificate: {e}"))?;
    let delegation = Delegation::parse(delegation).map_err(|e| format!("delegation: {e}"))?;
    cert.verify().map_err(|e| format!("certificate: {e}"))?;
    if delegation.body.issuer != cert.body.subject {
        return Err("the delegation is not signed by the key the certificate certifies".into());
    }
    delegation
        .verify()
        .map_err(|e| format!("delegation: {e}"))?;
    Ok(DelegationFile { cert, delegation })
}

/// Reads a delegation as it reaches a site: a kind-12 file, armored
/// (`-----BEGIN LICD DELEGATION-----`) or binary, as `licd-stub delegations show --armor` or
/// the MQTT uplink gives it, or hex — of such a file or of the chain `licd-stub delegate
/// --out` writes. Checks every signature.
pub fn read_delegation(bytes: &[u8]) -> Result<DelegationFile, String> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if let Some(hex_text) =
        text.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        let raw = hex::decode(hex_text).map_err(|e| format!("not hex: {e}"))?;
        // A chain starts like an envelope (a version byte 1, then the root key's first byte,
        // which may be 12): whichever opens is the one.
        return open_delegation(&raw)
            .map_err(|e| e.to_string())
            .or_else(|_| parse_chain(&raw));
    }
    let raw = decode_file(bytes).map_err(|e| e.to_string())?;
    open_delegation(&raw).map_err(|e| e.to_string())
}

/// Installs `file` as the relay's delegation in `dir` (`delegation.hex`, atomic replace,
/// fsynced) if it is a delegation to the relay's key; returns the site it makes.
pub fn install(dir: &Path, file: DelegationFile) -> Result<Site, SiteError> {
    let key = read_seed(&dir.join(KEY_FILE))?;
    let path = dir.join(DELEGATION_FILE);
    let chain = file.chain();
    let site = Site::new(key, file).map_err(|why| SiteError::Delegation {
        path: path.clone(),
        why,
    })?;
    licd_core::store::write_atomic(&path, format!("{}\n", hex::encode(chain)).as_bytes(), 0o644)
        .map_err(|e| SiteError::Delegation {
            path,
            why: e.to_string(),
        })?;
    Ok(site)
}

/// The seats saved in `dir`, if any (possibly under an earlier delegation: the caller decides
/// what carries over, see [`Pools::continuing`]).
pub fn load_state(dir: &Path) -> Result<Option<Pools>, SiteError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SiteError::State {
                path,
                why: format!("not a seats file: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SiteError::State {
            path,
            why: e.to_string(),
        }),
    }
}

/// Saves the seats (atomic replace, fsynced).
pub fn save_state(dir: &Path, pools: &Pools) -> Result<(), SiteError> {
    let path = dir.join(STATE_FILE);
    let bytes = serde_json::to_vec(pools).map_err(|e| SiteError::State {
        path: path.clone(),
        why: e.to_string(),
    })?;
    licd_core::store::write_atomic(&path, &bytes, 0o600).map_err(|e| SiteError::State {
        path,
        why: e.to_string(),
    })
}
