//! The agent's cache on disk: the signed bundle in force and the trusted-time high-water mark.
//!
//! The disk is not trusted: the cache holds the *signed* bundle, and whoever loads it runs the
//! same acceptance rules as for a live bundle. Writes are atomic (temp file, fsync, rename,
//! fsync of the directory), so a power cut at any moment leaves the old or the new file, never
//! neither. Files that fail to load are moved aside, not deleted, so they can be inspected.
//!
//! Layout (versioned by file name, so a later layout can live beside this one during an
//! upgrade and a rollback finds its own files):
//! - `bundle.v1.bin`: the signed grant envelope exactly as received;
//! - `time-mark.v1`: the high-water mark, decimal unix seconds and a newline;
//! - `vm.v1`: the last VM count read, since when the probe fails, and since when each service
//!   is over its VM allowance ([`VmRecord`]), so a restart continues the over-use grace clock;
//! - `policy.v1.bin`: report seqs, usage not yet acknowledged and expiring-soon thresholds
//!   fired ([`PolicyRecord`]), so a restart neither reuses a seq, loses or re-sends usage, nor
//!   fires a threshold again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::UnixTime;

use crate::enforce::{PolicyRecord, VmRecord, MAX_POLICY_RECORD_LEN, MAX_VM_RECORD_LEN};

/// File name of the cached bundle.
pub const BUNDLE_FILE: &str = "bundle.v1.bin";
/// File name of the high-water mark.
pub const MARK_FILE: &str = "time-mark.v1";
/// File name of the VM record.
pub const VM_FILE: &str = "vm.v1";
/// File name of the policy record.
pub const POLICY_FILE: &str = "policy.v1.bin";

/// A failed cache operation, with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading, writing or renaming failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file is there but cannot be what we wrote.
    #[error("{path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |error| StoreError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Uses `dir` as the state directory, creating it with mode 0700 if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        ensure_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Uses `dir` without creating anything (for read-only callers such as `licd check`).
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the cached bundle.
    pub fn bundle_path(&self) -> PathBuf {
        self.dir.join(BUNDLE_FILE)
    }

    /// The cached signed bundle, if there is one. Refuses a file over the protocol's size limit
    /// without reading it all.
    pub fn load_bundle(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.bundle_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut raw = Vec::new();
        file.take(MAX_ENVELOPE_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(io_err("read", &path))?;
        if raw.len() > MAX_ENVELOPE_LEN {
            return Err(StoreError::Corrupt {
                path,
                why: format!("larger than {MAX_ENVELOPE_LEN} bytes"),
            });
        }
        Ok(Some(raw))
    }

    /// Replaces the cached bundle atomically.
    pub fn save_bundle(&self, raw: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.bundle_path(), raw, 0o600)
    }

    /// Moves the cached bundle aside as `bundle.v1.bin.rejected-<time>` and returns the new
    /// path.
    pub fn set_aside_bundle(&self, now: UnixTime) -> Result<PathBuf, StoreError> {
        set_aside(&self.bundle_path(), now)
    }

    /// The persisted high-water mark (`None`: never written). A corrupt file is moved aside and
    /// reported as an error; the caller starts from the cached bundle's `issued_at` then.
    pub fn load_mark(&self) -> Result<Option<UnixTime>, StoreError> {
        let path = self.dir.join(MARK_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let parsed = std::str::from_utf8(&text)
            .ok()
            .and_then(|s| s.trim_end_matches('\n').parse::<UnixTime>().ok());
        match parsed {
            Some(t) => Ok(Some(t)),
            None => Err(StoreError::Corrupt {
                path,
                why: "not a decimal unix time".into(),
            }),
        }
    }

    /// Persists the high-water mark atomically.
    pub fn save_mark(&self, mark: UnixTime) -> Result<(), StoreError> {
        write_atomic(
            &self.dir.join(MARK_FILE),
            format!("{mark}\n").as_bytes(),
            0o600,
        )
    }

    /// Moves a corrupt mark file aside.
    pub fn set_aside_mark(&self, now: UnixTime) -> Result<PathBuf, StoreError> {
        set_aside(&self.dir.join(MARK_FILE), now)
    }

    /// The persisted VM record (`None`: never written). A file that is not a record is an
    /// error; the caller sets it aside and starts from the probe's next reading.
    pub fn load_vm_record(&self) -> Result<Option<VmRecord>, StoreError> {
        let path = self.dir.join(VM_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut raw = Vec::new();
        file.take(MAX_VM_RECORD_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(io_err("read", &path))?;
        VmRecord::decode(&raw)
            .map(Some)
            .map_err(|why| StoreError::Corrupt {
                path,
                why: why.into(),
            })
    }

    /// Persists the VM record atomically.
    pub fn save_vm_record(&self, record: &VmRecord) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(VM_FILE), record.encode().as_bytes(), 0o600)
    }

    /// The persisted policy record (`None`: never written). A file that is not a record is an
    /// error; the caller sets it aside and starts a fresh one (report seqs then restart at 1:
    /// the controller sees a new window, PROTOCOL.md §17.3).
    pub fn load_policy_record(&self) -> Result<Option<PolicyRecord>, StoreError> {
        let path = self.dir.join(POLICY_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut raw = Vec::new();
        file.take(MAX_POLICY_RECORD_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(io_err("read", &path))?;
        PolicyRecord::decode(&raw)
            .map(Some)
            .map_err(|why| StoreError::Corrupt {
                path,
                why: why.into(),
            })
    }

    /// Persists the policy record atomically.
    pub fn save_policy_record(&self, record: &PolicyRecord) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(POLICY_FILE), &record.encode(), 0o600)
    }

    /// Moves a corrupt policy record aside.
    pub fn set_aside_policy_record(&self, now: UnixTime) -> Result<PathBuf, StoreError> {
        set_aside(&self.dir.join(POLICY_FILE), now)
    }

    /// Moves a corrupt VM record aside.
    pub fn set_aside_vm_record(&self, now: UnixTime) -> Result<PathBuf, StoreError> {
        set_aside(&self.dir.join(VM_FILE), now)
    }

    /// Moves a corrupt offline state ([`crate::offline::OFFLINE_FILE`]) aside.
    pub fn set_aside_offline(&self, now: UnixTime) -> Result<PathBuf, StoreError> {
        set_aside(&crate::offline::OfflineState::path_in(&self.dir), now)
    }
}

fn set_aside(path: &Path, now: UnixTime) -> Result<PathBuf, StoreError> {
    // Never overwrite an earlier rejected file: it is evidence. Same-second rejections get a
    // counter.
    let mut to = PathBuf::new();
    for n in 0u32.. {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".rejected-{now}"));
        if n > 0 {
            name.push(format!(".{n}"));
        }
        to = PathBuf::from(name);
        if fs::symlink_metadata(&to).is_err() || n >= 1000 {
            break;
        }
    }
    fs::rename(path, &to).map_err(io_err("rename", path))?;
    Ok(to)
}

/// Creates `dir` (and parents) with mode 0700, or checks that it is a directory.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::Corrupt {
            path: dir.to_path_buf(),
            why: "exists and is not a directory".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create directory", dir)),
        Err(e) => Err(io_err("stat", dir)(e)),
    }
}

/// Writes `bytes` to `path` so that a crash at any moment leaves either the old file or the
/// new one: write a temp file beside it, fsync it, rename it over `path`, fsync the directory
/// (without that last step the rename itself may be lost on power failure).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    // The mode given to open() is filtered by the umask; make sure it is exactly `mode`.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &tmp))?;
    let result = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp));
    drop(f);
    if let Err(e) = result {
        // Leave no half-written temp file behind (disk full); the old file is untouched.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state")).unwrap();
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(store.load_bundle().unwrap(), None);
        store.save_bundle(b"one").unwrap();
        store.save_bundle(b"two").unwrap();
        assert_eq!(store.load_bundle().unwrap().as_deref(), Some(&b"two"[..]));
        let mode = fs::metadata(store.bundle_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(BUNDLE_FILE)]);
    }

    #[test]
    fn an_oversized_cache_file_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(store.bundle_path(), vec![0u8; MAX_ENVELOPE_LEN + 10]).unwrap();
        assert!(matches!(
            store.load_bundle(),
            Err(StoreError::Corrupt { .. })
        ));
        let aside = store.set_aside_bundle(42).unwrap();
        assert!(aside
            .to_string_lossy()
            .ends_with("bundle.v1.bin.rejected-42"));
        assert_eq!(store.load_bundle().unwrap(), None);
    }

    #[test]
    fn the_mark_round_trips_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_mark().unwrap(), None);
        store.save_mark(1_800_000_000).unwrap();
        assert_eq!(store.load_mark().unwrap(), Some(1_800_000_000));
        fs::write(dir.path().join(MARK_FILE), b"soon").unwrap();
        assert!(matches!(store.load_mark(), Err(StoreError::Corrupt { .. })));
        store.set_aside_mark(7).unwrap();
        assert_eq!(store.load_mark().unwrap(), None);
    }

    #[test]
    fn the_vm_record_round_trips_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_vm_record().unwrap(), None);
        let record = VmRecord {
            reading: Some(crate::enforce::VmReading {
                count: 6,
                read_at: 1_800_000_000,
            }),
            unknown_since: Some(1_800_000_060),
            over_since: Default::default(),
        };
        store.save_vm_record(&record).unwrap();
        assert_eq!(store.load_vm_record().unwrap(), Some(record));
        fs::write(dir.path().join(VM_FILE), b"six").unwrap();
        assert!(matches!(
            store.load_vm_record(),
            Err(StoreError::Corrupt { .. })
        ));
        store.set_aside_vm_record(7).unwrap();
        assert_eq!(store.load_vm_record().unwrap(), None);
    }

    #[test]
    fn a_state_path_that_is_a_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
