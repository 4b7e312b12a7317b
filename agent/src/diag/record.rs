//! The identity record in the state directory (`identity.v1.json`): which device id, key and
//! host fingerprint the daemon last started with. The daemon writes it at a start that finds it
//! missing or different (not at every start: flash wears); `licd diag` reads it and compares it
//! with what it finds now (fingerprint drift, a changed id or key). It is informational:
//! nothing is refused because of it, and a missing or damaged record only makes diag say "no
//! record".

use std::path::{Path, PathBuf};

use licd_protocol::UnixTime;
use serde::{Deserialize, Serialize};

use crate::identity::{DeviceIdSource, HostFingerprint, Identity};
use crate::store::{write_atomic, StoreError};

/// File name of the record (versioned like the other state files).
pub const IDENTITY_FILE: &str = "identity.v1.json";

/// Largest record read back (it is a few hundred bytes).
const MAX_RECORD_LEN: u64 = 16 * 1024;

/// What the daemon started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Device id.
    pub device: String,
    /// Where the id came from.
    pub source: DeviceIdSource,
    /// Device key id (hex).
    pub device_key: String,
    /// Digests of the host facts.
    pub fingerprint: HostFingerprint,
    /// Agent version that wrote it.
    pub agent_version: String,
    /// When (wall clock, unix seconds) this identity was first recorded: the daemon rewrites
    /// the record only when something else in it changed (see [`save_if_changed`]).
    pub written_at: UnixTime,
}

impl IdentityRecord {
    /// The record for `identity` and the key id `device_key`.
    pub fn new(identity: &Identity, device_key: String, written_at: UnixTime) -> Self {
        Self {
            device: identity.device.id.to_string(),
            source: identity.device.source.clone(),
            device_key,
            fingerprint: identity.device.fingerprint.clone(),
            agent_version: crate::status::AGENT_VERSION.to_string(),
            written_at,
        }
    }
}

/// Path of the record in `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY_FILE)
}

/// Writes the record atomically (mode 0600), replacing an older one.
pub fn save(state_dir: &Path, record: &IdentityRecord) -> Result<(), StoreError> {
    let path = path_in(state_dir);
    let mut json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        why: e.to_string(),
    })?;
    json.push(b'\n');
    write_atomic(&path, &json, 0o600)
}

/// Writes the record unless the one on disk already says the same (apart from `written_at`),
/// so a device that reboots with the same identity does not rewrite its flash at every start.
/// Returns whether it wrote. An unreadable record is replaced.
pub fn save_if_changed(state_dir: &Path, record: &IdentityRecord) -> Result<bool, StoreError> {
    if let Ok(Some(old)) = load(state_dir) {
        let same = IdentityRecord {
            written_at: record.written_at,
            ..old
        };
        if same == *record {
            return Ok(false);
        }
    }
    save(state_dir, record).map(|()| true)
}

/// Why the record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Reading failed.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The record.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not a record.
    #[error("{path} is not an identity record: {why}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The record in `state_dir`, `None` when there is none yet.
pub fn load(state_dir: &Path) -> Result<Option<IdentityRecord>, RecordError> {
    use std::io::Read;
    let path = path_in(state_dir);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(RecordError::Io { path, error }),
    };
    let mut text = Vec::new();
    file.take(MAX_RECORD_LEN)
        .read_to_end(&mut text)
        .map_err(|error| RecordError::Io {
            path: path.clone(),
            error,
        })?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| RecordError::Corrupt {
            path,
            why: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> IdentityRecord {
        IdentityRecord {
            device: "ap-1".into(),
            source: DeviceIdSource::MachineId,
            device_key: "00".repeat(16),
            fingerprint: HostFingerprint {
                machine_id: Some("abcd".into()),
                ..Default::default()
            },
            agent_version: "0.1.0".into(),
            written_at: 1_800_000_000,
        }
    }

    #[test]
    fn a_record_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        save(dir.path(), &record()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(record()));
    }

    #[test]
    fn an_unchanged_identity_is_not_rewritten_and_a_changed_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let first = record();
        assert!(save_if_changed(dir.path(), &first).unwrap());
        let later = IdentityRecord {
            written_at: first.written_at + 86_400,
            ..first.clone()
        };
        assert!(!save_if_changed(dir.path(), &later).unwrap());
        assert_eq!(
            load(dir.path()).unwrap(),
            Some(first.clone()),
            "kept its first time"
        );
        let rekeyed = IdentityRecord {
            device_key: "11".repeat(16),
            ..later
        };
        assert!(save_if_changed(dir.path(), &rekeyed).unwrap());
        assert_eq!(load(dir.path()).unwrap(), Some(rekeyed));
        std::fs::write(path_in(dir.path()), b"{not json").unwrap();
        assert!(
            save_if_changed(dir.path(), &first).unwrap(),
            "a damaged one is replaced"
        );
    }

    #[test]
    fn a_damaged_record_is_an_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path_in(dir.path()), b"{not json").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(IDENTITY_FILE), "{err}");
    }
}
