//! Licensing by file, the shell's half: the state-directory lock, writing requests and
//! receipts, and carrying out an import's effects — for the daemon (a socket op) and for
//! `licd` with the daemon stopped alike. The rules are `licd_core::offline`'s.
//!
//! The lock ([`StateLock`], `flock` on [`LOCK_FILE`]) is what keeps a `licd import` with the
//! daemon stopped and a daemon starting at the same moment from interleaving: the daemon holds
//! it from before it restores its state until its socket answers, and every read-modify-write
//! of the offline state takes it. A `licd` that gets the lock checks the socket once more, so
//! it never writes behind a daemon's back.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use licd_core::cache::Binding;
use licd_core::enforce::{Effect, Enforcer};
use licd_core::offline::{ImportOutcome, ImportRefusal, Imported, OfflineState, ReleaseError};
use licd_core::store::{Store, StoreError};
use licd_core::trust::{Accepted, TrustState};
use licd_protocol::offline::{seal_activation_request, seal_release_receipt};
use licd_protocol::policy::seal_extended_activation_request;
use licd_protocol::{
    ActivationRequest, DeviceReport, ExtendedActivationRequest, ExtendedReport, Nonce,
    ReleaseReceipt, ServiceName, TenantId, UnixTime,
};

use crate::clock::Clock;
use crate::config::Settings;
use crate::identity::{DeviceKey, Identity, KeyError};
use crate::status::AGENT_VERSION;

/// File name of the lock in the state directory.
pub const LOCK_FILE: &str = "licd.lock";

/// How long `licd import`/`request`/`release` and the daemon's file ops wait for the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long a starting daemon waits for the lock (a `licd import` holds it for milliseconds;
/// a stuck holder is named in the error).
pub const START_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Poll interval while the lock is taken by another process (flock has no timeout of its own).
const LOCK_POLL: Duration = Duration::from_millis(10);

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// Reading or writing the state directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Another process holds the state directory's lock.
    #[error(
        "{path} is locked by another licd for over {secs} s (a daemon starting, or another import)"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        secs: u64,
    },
    /// The lock file cannot be opened or locked.
    #[error("lock {path}: {error}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The daemon never ran in this state directory.
    #[error("{0} has no device binding: start the daemon once, or run licd request, so this device has its key")]
    Unbound(PathBuf),
    /// The import was refused by the rules.
    #[error("{0}")]
    Import(ImportRefusal),
    /// The release was refused.
    #[error("{0}")]
    Release(#[from] ReleaseError),
    /// A service name is invalid.
    #[error("invalid service name {name:?}: {error}")]
    Service {
        /// The name given.
        name: String,
        /// Why.
        error: licd_protocol::IdError,
    },
    /// No randomness for the nonce.
    #[error("cannot draw a random nonce: {0}")]
    Random(String),
}

impl OfflineError {
    /// A stable short code (`import` refusals carry the rule's code).
    pub fn code(&self) -> &'static str {
        match self {
            OfflineError::Import(r) => r.code(),
            OfflineError::Release(r) => r.code(),
            OfflineError::Busy { .. } => "busy",
            OfflineError::Unbound(_) => "unbound",
            OfflineError::Service { .. } => "invalid_service",
            _ => "error",
        }
    }
}

/// Codes of refusals where the file itself is unusable (`licd import` exits 2 for these).
pub const UNUSABLE_FILE_CODES: &[&str] = &[
    "bad_armor",
    "malformed",
    "oversized",
    "bad_version",
    "wrong_kind",
    "not_importable",
];

/// An exclusive `flock` on the state directory's [`LOCK_FILE`], released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, waiting up to `wait` while another process holds it.
    pub fn acquire(state_dir: &Path, wait: Duration) -> Result<Self, OfflineError> {
        use rustix::fs::{flock, FlockOperation};
        let path = state_dir.join(LOCK_FILE);
        let lock_err = |error| OfflineError::Lock {
            path: path.clone(),
            error,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(lock_err)?;
        let deadline = Instant::now() + wait;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Self { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_POLL)
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(OfflineError::Busy {
                        path,
                        secs: wait.as_secs(),
                    })
                }
                Err(e) => return Err(lock_err(e.into())),
            }
        }
    }
}

/// Parses service names given on the command line or the socket.
pub fn service_names(names: &[String]) -> Result<Vec<ServiceName>, OfflineError> {
    names
        .iter()
        .map(|n| {
            ServiceName::new(n).map_err(|error| OfflineError::Service {
                name: n.clone(),
                error,
            })
        })
        .collect()
}

/// What the device says about itself in a request: the report a connected device would send.
#[allow(clippy::too_many_arguments)]
pub fn report(
    identity: &Identity,
    key: &DeviceKey,
    tenant: &TenantId,
    enforcer: &Enforcer,
    services: Vec<ServiceName>,
    now: UnixTime,
    uptime: u64,
    rollback: bool,
) -> DeviceReport {
    DeviceReport {
        device: identity.device.id.clone(),
        tenant: tenant.clone(),
        device_key: key.public(),
        model: identity.product.model.value.clone(),
        serial: identity.product.serial.value.clone(),
        product_class: identity.product.product_class.value.clone(),
        firmware_version: identity.product.firmware_version.value.clone(),
        agent_version: AGENT_VERSION.to_string(),
        vm_count: enforcer.vm_count(),
        services_wanted: if services.is_empty() {
            enforcer.wanted().cloned().collect()
        } else {
            services
        },
        bundle_seq: enforcer.held_seq(),
        clock: now,
        uptime,
        clock_rollback: rollback,
    }
}

fn nonce() -> Result<Nonce, OfflineError> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).map_err(|e| OfflineError::Random(e.to_string()))?;
    Ok(n)
}

/// Writes a signed activation request for `report`: the nonce is remembered as pending
/// (under the lock) before the request exists, so its answer is always recognised. A device
/// that speaks policy (`extended_reports` not `false`, and not fallen back to plain reports)
/// writes an extended request (kind 15, PROTOCOL.md §17.7): it takes the next report seq and
/// persists it with the usage it carries first (write-ahead, as for an extended report).
pub fn new_request(
    _held: &StateLock,
    store: &Store,
    enforcer: &mut Enforcer,
    report: DeviceReport,
    key: &DeviceKey,
    now: UnixTime,
) -> Result<Vec<u8>, OfflineError> {
    let dir = store.dir();
    let nonce = nonce()?;
    let mut state = OfflineState::load(dir)?;
    state.add_pending(nonce);
    state.save(dir)?;
    if !enforcer.sends_extended() {
        return Ok(seal_activation_request(
            &ActivationRequest { report, nonce },
            &key.signing,
        ));
    }
    let (report_seq, usage, compliance, record) = enforcer.prepare_report(now);
    store.save_policy_record(&record)?;
    let report = ExtendedReport {
        report,
        report_seq,
        usage,
        compliance,
    };
    Ok(seal_extended_activation_request(
        &ExtendedActivationRequest { report, nonce },
        &key.signing,
    ))
}

/// Gives `services` back: the release is recorded (under the lock) before the signed receipt
/// exists, so a receipt in the operator's hands always means the device stopped using them.
/// Returns the receipt and the enforcer's effects for the caller to carry out.
#[allow(clippy::too_many_arguments)]
pub fn release(
    _held: &StateLock,
    state_dir: &Path,
    enforcer: &mut Enforcer,
    services: &[ServiceName],
    tenant: &TenantId,
    key: &DeviceKey,
    now: UnixTime,
) -> Result<(Vec<u8>, Vec<Effect>), OfflineError> {
    let mut state = OfflineState::load(state_dir)?;
    let device = enforcer
        .held()
        .map(|h| h.bundle.device.clone())
        .ok_or(OfflineError::Release(ReleaseError::NothingHeld))?;
    let (record, effects) = enforcer.release(services, now)?;
    state.release = Some(record.clone());
    state.save(state_dir)?;
    let receipt = ReleaseReceipt {
        device,
        tenant: tenant.clone(),
        bundle_seq: record.seq,
        services: services.to_vec(),
        released_at: now,
        nonce: nonce()?,
    };
    Ok((seal_release_receipt(&receipt, &key.signing), effects))
}

/// Imports a file by the core's rules, then persists what changed in a crash-safe order: the
/// bundle (the `Persist` effect, carried out here and removed from the effects returned), the
/// trust state, and last the offline state (the consumed nonce) — a crash in between leaves
/// the answer importable again, never consumed without its bundle.
pub fn import(
    _held: &StateLock,
    store: &Store,
    file: &[u8],
    enforcer: &mut Enforcer,
    trust: &mut TrustState,
    now: UnixTime,
) -> Result<ImportOutcome, OfflineError> {
    let dir = store.dir();
    let mut state = OfflineState::load(dir)?;
    let mut out = licd_core::offline::import(file, enforcer, trust, &mut state, now)
        .map_err(OfflineError::Import)?;
    let mut effects = Vec::with_capacity(out.effects.len());
    for e in std::mem::take(&mut out.effects) {
        match e {
            Effect::Persist(raw) => store.save_bundle(&raw)?,
            // A policy bundle's usage acknowledgement: persisted here, also with the daemon
            // stopped, so the next request does not carry the acknowledged usage again.
            Effect::PersistPolicy(record) => store.save_policy_record(&record)?,
            other => effects.push(other),
        }
    }
    out.effects = effects;
    if out.trust_changed {
        licd_core::trust::save(dir, trust)?;
    }
    if out.offline_changed {
        state.save(dir)?;
    }
    Ok(out)
}

/// One line saying what an import put in force.
pub fn describe(imported: &Imported) -> String {
    match imported {
        Imported::Bundle {
            seq,
            answered_request: true,
        } => format!("imported grant seq {seq} (it answers a request made on this device)"),
        Imported::Bundle { seq, .. } => format!("imported grant seq {seq}"),
        Imported::Trust(Accepted::Revocations { version, revoked }) => {
            format!("imported revocation list version {version} ({revoked} signing key(s) revoked)")
        }
        Imported::Trust(Accepted::Rotation { seq, next, .. }) => {
            format!(
                "imported root rotation {seq}: root {} is now pinned",
                next.id()
            )
        }
        Imported::Trust(Accepted::AlreadyHeld) => "trust statement already in force".into(),
    }
}

/// The binding of `state_dir`, or [`OfflineError::Unbound`].
pub fn binding(state_dir: &Path) -> Result<Binding, OfflineError> {
    Binding::load(state_dir)?.ok_or_else(|| OfflineError::Unbound(state_dir.to_path_buf()))
}

/// The state of a stopped daemon, restored from its state directory (under the lock).
struct Stopped {
    store: Store,
    enforcer: Enforcer,
    trust: TrustState,
    now: UnixTime,
    uptime: u64,
    rollback: bool,
}

impl Stopped {
    fn restore(
        settings: &Settings,
        binding: &Binding,
        clock: &dyn Clock,
    ) -> Result<Self, OfflineError> {
        let store = Store::open(&settings.state_dir)?;
        let r = licd_core::cache::restore(settings, binding, &store, clock.wall(), clock.boot());
        let mut time = r.time;
        let now = time.observe(clock.wall(), clock.boot()).now;
        Ok(Self {
            store,
            enforcer: r.enforcer,
            trust: r.trust,
            now,
            uptime: clock.boot().as_secs(),
            rollback: time.rollback(),
        })
    }
}

/// `licd import` with the daemon stopped: restores the state, imports, writes what changed.
/// Returns what was imported, in words.
pub fn import_stopped(
    lock: &StateLock,
    settings: &Settings,
    clock: &dyn Clock,
    file: &[u8],
) -> Result<String, OfflineError> {
    let binding = binding(&settings.state_dir)?;
    let mut s = Stopped::restore(settings, &binding, clock)?;
    let out = import(lock, &s.store, file, &mut s.enforcer, &mut s.trust, s.now)?;
    Ok(describe(&out.imported))
}

/// `licd release` with the daemon stopped: the signed receipt.
pub fn release_stopped(
    lock: &StateLock,
    settings: &Settings,
    clock: &dyn Clock,
    services: &[ServiceName],
) -> Result<Vec<u8>, OfflineError> {
    let binding = binding(&settings.state_dir)?;
    let key = DeviceKey::load(&DeviceKey::path_in(&settings.state_dir))?;
    let mut s = Stopped::restore(settings, &binding, clock)?;
    let (receipt, _) = release(
        lock,
        &settings.state_dir,
        &mut s.enforcer,
        services,
        &settings.tenant,
        &key,
        s.now,
    )?;
    Ok(receipt)
}

/// `licd request` with the daemon stopped: like a daemon start it makes the device key and
/// the binding when missing, so a device that never ran the daemon can be licensed by file.
pub fn request_stopped(
    lock: &StateLock,
    settings: &Settings,
    clock: &dyn Clock,
    identity: &Identity,
    services: Vec<ServiceName>,
) -> Result<Vec<u8>, OfflineError> {
    Store::open(&settings.state_dir)?;
    let key = DeviceKey::load_or_create(&settings.state_dir)?;
    let binding = Binding {
        device: identity.device.id.clone(),
        device_key: key.public(),
    };
    binding.save_if_changed(&settings.state_dir)?;
    let mut s = Stopped::restore(settings, &binding, clock)?;
    let report = report(
        identity,
        &key,
        &settings.tenant,
        &s.enforcer,
        services,
        s.now,
        s.uptime,
        s.rollback,
    );
    new_request(lock, &s.store, &mut s.enforcer, report, &key, s.now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), LOCK_WAIT).unwrap();
        let e = StateLock::acquire(dir.path(), Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.code(), "busy");
        assert!(e.to_string().contains(LOCK_FILE), "{e}");
        drop(first);
        StateLock::acquire(dir.path(), Duration::from_millis(30)).unwrap();
    }
}
