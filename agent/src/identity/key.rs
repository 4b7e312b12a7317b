//! The device key: the ed25519 keypair that signs this device's reports and that grant bundles
//! are bound to.
//!
//! It is generated on first start as `device.key` in the state directory and loaded on every
//! later start. The controller pins the public key on first contact, so the file is precious: a
//! damaged file is an error that says what to do, never a reason to make a new key silently.
//!
//! File format (72 bytes): the magic `licdkey1` (8 bytes), the 32-byte ed25519 secret key, and
//! the 32-byte public key. The public key is redundant on purpose: it is re-derived from the
//! secret on load, so a flipped bit anywhere is caught instead of turning into a different,
//! unpinned key. Mode 0600 in a directory created 0700; written atomically (temp file, fsync,
//! link into place, fsync the directory), so a power cut leaves no key or the whole key.
//!
//! What this leaves to others: signing messages (`signing` is public for the envelope code),
//! and reporting the file's permissions in `licd diag`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ed25519_dalek::SigningKey;
use licd_protocol::{KeyId, PublicKey};

/// File name of the device key in the state directory.
pub const KEY_FILE_NAME: &str = "device.key";

/// The first 8 bytes of a key file; the digit is the format version.
const MAGIC: &[u8; 8] = b"licdkey1";

/// Length of a key file: magic, secret key, public key.
const KEY_FILE_LEN: usize = 8 + 32 + 32;

/// Mode of the key file: owner read/write only.
const KEY_FILE_MODE: u32 = 0o600;

/// Mode of a state directory this module creates.
const STATE_DIR_MODE: u32 = 0o700;

/// What is wrong with the bytes of a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCorruption {
    /// The file is shorter or longer than a key file.
    #[error("it is {len} bytes long, a key file has {KEY_FILE_LEN}")]
    WrongLength {
        /// The file's length as read (reading stops a byte past the expected length).
        len: usize,
    },
    /// The file does not start with the key-file magic.
    #[error("it does not start with the licd key-file marker")]
    BadMagic,
    /// The stored public key does not belong to the stored secret key: a bit changed.
    #[error("its public key does not match its secret key")]
    PublicKeyMismatch,
}

/// Why the device key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {error}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The key file exists but could not be read.
    #[error("cannot read device key {path}: {error}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The key file is damaged. The agent does not replace it: the controller pins this
    /// device's key, and a new one would make it refuse the device.
    #[error(
        "device key {path} is corrupt: {kind}. licd does not replace it on its own, because the \
         controller has pinned this device's key. Restore the file from a backup; or, to \
         re-enrol the device with a new key, move the file away, restart licd and register the \
         new key id (shown by `licd status`) with the controller"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        kind: KeyCorruption,
    },
    /// The key file is not there (from [`DeviceKey::load`], which never creates one).
    #[error("device key {path} does not exist; `licd run` creates it on first start")]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system gave no randomness for a new key.
    #[error("cannot get randomness for a new device key: {0}")]
    Random(getrandom::Error),
    /// Writing the new key failed; nothing was put in place.
    #[error("cannot write device key {path}: {error}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

/// The device's ed25519 keypair.
///
/// `Debug` shows only the key id; the secret is never formatted or logged.
pub struct DeviceKey {
    /// The signing key (secret). Zeroised on drop by `ed25519-dalek`.
    pub signing: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// The public key, as carried in reports and pinned by the controller.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(&self.signing.verifying_key())
    }

    /// The key id (truncated SHA-256 of the public key), as grant bundles name it.
    pub fn id(&self) -> KeyId {
        self.public().id()
    }

    /// The key file's path in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(KEY_FILE_NAME)
    }

    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(KeyError::Random)?;
        let key = Self {
            signing: SigningKey::from_bytes(&secret),
        };
        wipe(&mut secret);
        Ok(key)
    }

    /// Loads the key from `state_dir`, or, when there is no key file yet, generates one and
    /// stores it (creating `state_dir` with mode 0700 if needed). A damaged file is an error,
    /// never replaced.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, KeyError> {
        let path = Self::path_in(state_dir);
        match Self::load(&path) {
            Err(KeyError::Missing { .. }) => {}
            other => return other,
        }
        create_state_dir(state_dir)?;
        let key = Self::generate()?;
        match key.store_new(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), key_id = %key.id(), "created a new device key");
                Ok(key)
            }
            // Another process (a second agent on the same state dir) won the race: use its key
            // so both agree.
            Err(KeyError::Write { error, .. }) if error.kind() == io::ErrorKind::AlreadyExists => {
                Self::load(&path)
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the key file at `path`; never creates one.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_owned(),
                })
            }
            Err(error) => {
                return Err(KeyError::Read {
                    path: path.to_owned(),
                    error,
                })
            }
        };
        warn_if_exposed(&file, path);
        let mut buf = Vec::with_capacity(KEY_FILE_LEN + 1);
        // One byte more than a key file, to tell "too long" from "exactly right".
        file.take(KEY_FILE_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|error| KeyError::Read {
                path: path.to_owned(),
                error,
            })?;
        let parsed = Self::from_file_bytes(&buf);
        wipe(&mut buf);
        parsed.map_err(|kind| KeyError::Corrupt {
            path: path.to_owned(),
            kind,
        })
    }

    /// Parses the key-file format described in the module docs.
    fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyCorruption> {
        if bytes.len() != KEY_FILE_LEN {
            return Err(KeyCorruption::WrongLength { len: bytes.len() });
        }
        let (magic, rest) = bytes.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(KeyCorruption::BadMagic);
        }
        let (secret, public) = rest.split_at(32);
        let mut secret_arr = [0u8; 32];
        secret_arr.copy_from_slice(secret);
        let key = Self {
            signing: SigningKey::from_bytes(&secret_arr),
        };
        wipe(&mut secret_arr);
        if key.signing.verifying_key().as_bytes() != public {
            return Err(KeyCorruption::PublicKeyMismatch);
        }
        Ok(key)
    }

    fn to_file_bytes(&self) -> [u8; KEY_FILE_LEN] {
        let mut out = [0u8; KEY_FILE_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..40].copy_from_slice(self.signing.as_bytes());
        out[40..].copy_from_slice(self.signing.verifying_key().as_bytes());
        out
    }

    /// Writes the key to `path`, which must not exist yet: temp file (0600), fsync, hard link
    /// into place (fails if another process created the file meanwhile), fsync the directory.
    fn store_new(&self, path: &Path) -> Result<(), KeyError> {
        let write_err = |error| KeyError::Write {
            path: path.to_owned(),
            error,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        // Unique per process and call, so racing starts never share a temp file.
        // AtomicUsize, not AtomicU64: 32-bit MIPS has no 64-bit atomics.
        static NEXT_TMP: AtomicUsize = AtomicUsize::new(0);
        let tmp = dir.join(format!(
            ".{KEY_FILE_NAME}.tmp.{}.{}",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(KEY_FILE_MODE)
                .open(&tmp)?;
            let mut bytes = self.to_file_bytes();
            let written = file.write_all(&bytes);
            wipe(&mut bytes);
            written?;
            file.sync_all()?;
            drop(file);
            // The umask cannot widen 0600, but an odd filesystem might ignore the mode.
            fs::set_permissions(&tmp, fs::Permissions::from_mode(KEY_FILE_MODE))?;
            link_no_replace(&tmp, path)?;
            File::open(dir)?.sync_all()
        })();
        let _ = fs::remove_file(&tmp);
        result.map_err(write_err)
    }
}

/// Puts `tmp` at `path` without replacing an existing file: a hard link does exactly that. On
/// filesystems without hard links (vfat on some boot partitions) falls back to a rename, after
/// checking that nothing is there.
fn link_no_replace(tmp: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            if path.exists() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(tmp, path)
        }
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is:
/// its mode may be the packager's choice (e.g. systemd's `StateDirectoryMode`).
fn create_state_dir(dir: &Path) -> Result<(), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(dir)
        .map_err(|error| KeyError::CreateDir {
            path: dir.to_owned(),
            error,
        })
}

/// Logs a warning when the key file is readable or writable by group or others. Not an error:
/// refusing to start would cost the device its licences over a chmod; `licd diag` fails the
/// check instead.
fn warn_if_exposed(file: &File, path: &Path) {
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "device key file is accessible to group or others; chmod 600 it"
            );
        }
    }
}

/// Overwrites secret bytes. `black_box` keeps the compiler from dropping the dead store.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn first_start_creates_the_key_and_state_dir_with_private_modes() {
        let base = tempfile::tempdir().expect("tempdir");
        let state = base.path().join("var/lib/licd");
        let key = DeviceKey::load_or_create(&state).expect("created");
        let path = DeviceKey::path_in(&state);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            fs::metadata(&path).expect("meta").len(),
            KEY_FILE_LEN as u64
        );
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(&state)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE_NAME)]);
        assert_eq!(key.id(), key.public().id());
    }

    #[test]
    fn reloading_gives_the_same_key() {
        let state = tempfile::tempdir().expect("tempdir");
        let first = DeviceKey::load_or_create(state.path()).expect("created");
        let again = DeviceKey::load_or_create(state.path()).expect("loaded");
        let loaded = DeviceKey::load(&DeviceKey::path_in(state.path())).expect("loaded");
        assert_eq!(first.public(), again.public());
        assert_eq!(first.signing.to_bytes(), loaded.signing.to_bytes());
    }

    #[test]
    fn an_existing_state_dir_keeps_its_mode() {
        let state = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(state.path(), fs::Permissions::from_mode(0o750)).expect("chmod");
        DeviceKey::load_or_create(state.path()).expect("created");
        assert_eq!(mode(state.path()), 0o750);
        assert_eq!(mode(&DeviceKey::path_in(state.path())), 0o600);
    }

    #[test]
    fn a_truncated_key_file_is_an_error_that_says_what_to_do_and_is_not_replaced() {
        let state = tempfile::tempdir().expect("tempdir");
        DeviceKey::load_or_create(state.path()).expect("created");
        let path = DeviceKey::path_in(state.path());
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..20]).expect("truncate");

        let e = DeviceKey::load_or_create(state.path()).expect_err("corrupt");
        assert!(
            matches!(
                &e,
                KeyError::Corrupt {
                    kind: KeyCorruption::WrongLength { len: 20 },
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("Restore the file from a backup"), "{msg}");
        assert!(msg.contains("register the new key id"), "{msg}");
        // The damaged file is still there, untouched.
        assert_eq!(fs::read(&path).expect("read"), &bytes[..20]);
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let state = tempfile::tempdir().expect("tempdir");
        DeviceKey::load_or_create(state.path()).expect("created");
        let path = DeviceKey::path_in(state.path());
        let good = fs::read(&path).expect("read");
        let corrupt = |bytes: &[u8]| {
            fs::write(&path, bytes).expect("write");
            match DeviceKey::load_or_create(state.path()) {
                Err(KeyError::Corrupt { kind, .. }) => kind,
                other => panic!("expected corrupt, got {other:?}"),
            }
        };
        assert_eq!(corrupt(&[]), KeyCorruption::WrongLength { len: 0 });
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            corrupt(&long),
            KeyCorruption::WrongLength {
                len: KEY_FILE_LEN + 1
            }
        );
        let mut magic = good.clone();
        magic[0] ^= 0xff;
        assert_eq!(corrupt(&magic), KeyCorruption::BadMagic);
        let mut flipped = good.clone();
        flipped[12] ^= 0x01;
        assert_eq!(corrupt(&flipped), KeyCorruption::PublicKeyMismatch);
        fs::write(&path, &good).expect("restore");
        assert!(DeviceKey::load_or_create(state.path()).is_ok());
    }

    #[test]
    fn load_never_creates_a_key() {
        let state = tempfile::tempdir().expect("tempdir");
        let path = DeviceKey::path_in(state.path());
        assert!(matches!(
            DeviceKey::load(&path),
            Err(KeyError::Missing { .. })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn an_unreadable_key_file_is_a_read_error_not_a_new_key() {
        let state = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: opening works, reading fails (EISDIR).
        fs::create_dir(DeviceKey::path_in(state.path())).expect("mkdir");
        let r = DeviceKey::load_or_create(state.path());
        assert!(matches!(r, Err(KeyError::Read { .. })), "{r:?}");
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = DeviceKey::generate().expect("key");
        let shown = format!("{key:?}");
        let secret_hex: String = key
            .signing
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(shown.contains(&key.id().to_hex()), "{shown}");
        assert!(!shown.contains(&secret_hex[..16]), "{shown}");
    }

    #[test]
    fn the_key_signs_and_its_public_key_verifies_strictly() {
        use ed25519_dalek::Signer;
        let key = DeviceKey::generate().expect("key");
        let sig = key.signing.sign(b"report");
        assert!(
            licd_protocol::keys::verify_strict(&key.public().0, b"report", &sig.to_bytes()).is_ok()
        );
    }

    #[test]
    fn two_starts_racing_on_an_empty_state_dir_agree_on_one_key() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir = state.path().to_owned();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || DeviceKey::load_or_create(&dir).map(|k| k.public()))
            })
            .collect();
        let keys: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("join").expect("key"))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    }
}
