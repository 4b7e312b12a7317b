//! Restoring the enforcement state from the state directory: the time mark, the trust state and
//! the cached bundle, judged by the same rules as live messages. The daemon does this at start;
//! `licd check` and the client libraries do it read-only when no daemon answers. Both get the
//! same [`Restored`] and the same list of [`Problem`]s, so both say the same thing about a
//! damaged cache.
//!
//! Which device and key the cache is bound to comes from the binding file ([`BINDING_FILE`]),
//! which the daemon writes at every start that finds it missing or different: the read-only
//! path never probes the host (a probe can hang, and it runs inside a C caller's
//! `licd_check_with_fallback`) and never reads the private key.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use licd_protocol::{DeviceId, KeyId, PublicKey, UnixTime};

use crate::clock::TrustedTime;
use crate::config::{Settings, VmProbeConfig};
use crate::enforce::{AcceptanceRules, Effect, Enforcer, Input, Refusal, ReportPolicy};
use crate::status::{CacheProblem, ClockStatus, Source, Status, AGENT_VERSION};
use crate::store::{write_atomic, Store, StoreError};
use crate::trust::{Dropped, TrustState};

/// File name of the device key in the state directory (its owner is the daemon; the read-only
/// path only checks that it is there).
pub const KEY_FILE: &str = "device.key";

/// File name of the binding in the state directory.
pub const BINDING_FILE: &str = "binding.v1";

/// Largest binding file read back (it is about 120 bytes).
const MAX_BINDING_LEN: u64 = 1024;

/// The device and key that grants for this state directory are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The device id the daemon resolved at its last start.
    pub device: DeviceId,
    /// The device's public key.
    pub device_key: PublicKey,
}

impl Binding {
    /// `device <id>\nkey <hex>\n`.
    pub fn encode(&self) -> String {
        format!("device {}\nkey {}\n", self.device, self.device_key.to_hex())
    }

    /// Parses [`Binding::encode`]'s text; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        let device = lines.next()?.strip_prefix("device ")?;
        let key = lines.next()?.strip_prefix("key ")?;
        if lines.next().is_some() {
            return None;
        }
        Some(Self {
            device: DeviceId::new(device).ok()?,
            device_key: PublicKey::from_hex(key).ok()?,
        })
    }

    /// The device key's id.
    pub fn key_id(&self) -> KeyId {
        self.device_key.id()
    }

    /// Path of the binding file in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(BINDING_FILE)
    }

    /// The binding in `state_dir` (`None`: the daemon has not started there yet).
    pub fn load(state_dir: &Path) -> Result<Option<Self>, StoreError> {
        use std::io::Read;
        let path = Self::path_in(state_dir);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    error,
                })
            }
        };
        let mut text = String::new();
        file.take(MAX_BINDING_LEN)
            .read_to_string(&mut text)
            .map_err(|error| StoreError::Io {
                op: "read",
                path: path.clone(),
                error,
            })?;
        Self::decode(&text).map(Some).ok_or(StoreError::Corrupt {
            path,
            why: "not a device binding (expected \"device <id>\" and \"key <hex>\" lines)".into(),
        })
    }

    /// Writes the binding atomically unless the file already says the same (flash wear).
    /// Returns whether it wrote.
    pub fn save_if_changed(&self, state_dir: &Path) -> Result<bool, StoreError> {
        if matches!(Self::load(state_dir), Ok(Some(old)) if old == *self) {
            return Ok(false);
        }
        write_atomic(&Self::path_in(state_dir), self.encode().as_bytes(), 0o644)?;
        Ok(true)
    }
}

/// Something in the state directory that could not be used. The state is restored without it
/// (which can only lose licenses, never add them); the daemon logs each and sets the file aside,
/// the read-only path reports it.
#[derive(Debug)]
pub enum Problem {
    /// The time mark file is unreadable; trusted time starts from the cached bundle.
    MarkUnreadable(StoreError),
    /// The VM record is unreadable; the VM count is unknown until the probe reads it.
    VmRecordUnreadable(StoreError),
    /// The policy record is unreadable: usage not yet acknowledged is lost, report seqs and
    /// expiring-soon thresholds start afresh.
    PolicyRecordUnreadable(StoreError),
    /// The trust state file is unreadable; trust starts from the config roots.
    TrustUnreadable(String),
    /// A stored trust message no longer verifies and was dropped.
    TrustDropped(Dropped),
    /// The offline state (pending requests, release record) is unreadable: answers to earlier
    /// requests are refused, and the release floor is lost.
    OfflineUnreadable(StoreError),
    /// The cached bundle cannot be read (I/O error, over the size limit).
    BundleUnreadable(StoreError),
    /// The cached bundle was read but refused by the acceptance rules (damaged, another
    /// device's, a revoked signer…).
    BundleRefused(Refusal),
}

impl Problem {
    /// Whether the problem is the cached bundle itself (the file to set aside).
    pub fn is_bundle(&self) -> bool {
        matches!(self, Self::BundleUnreadable(_) | Self::BundleRefused(_))
    }

    /// The problem as status shows it, for a bundle problem (`None` for the others).
    pub fn as_cache_problem(&self, store: &Store) -> Option<CacheProblem> {
        let path = store.bundle_path();
        match self {
            Self::BundleRefused(refusal) => Some(CacheProblem {
                code: refusal.code(),
                message: format!("cached bundle {} is unusable: {refusal}", path.display()),
                set_aside_to: None,
            }),
            Self::BundleUnreadable(e) => Some(CacheProblem {
                code: "unreadable",
                message: format!("cached bundle unreadable: {e}"),
                set_aside_to: None,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MarkUnreadable(e) => write!(f, "time mark unreadable: {e}"),
            Self::VmRecordUnreadable(e) => write!(f, "VM record unreadable: {e}"),
            Self::PolicyRecordUnreadable(e) => write!(f, "policy record unreadable: {e}"),
            Self::TrustUnreadable(e) => write!(f, "trust state unreadable: {e}"),
            Self::TrustDropped(d) => write!(
                f,
                "stored trust message ({:?}) no longer verifies: {}",
                d.kind, d.error
            ),
            Self::OfflineUnreadable(e) => write!(f, "offline state unreadable: {e}"),
            Self::BundleUnreadable(e) => write!(f, "cached bundle unreadable: {e}"),
            Self::BundleRefused(r) => write!(f, "cached bundle refused ({}): {r}", r.code()),
        }
    }
}

/// The enforcement state restored from a state directory.
#[derive(Debug)]
pub struct Restored {
    /// Trusted time, from the mark and the cached bundle's `issued_at`.
    pub time: TrustedTime,
    /// The enforcer, holding the cached bundle if it passed.
    pub enforcer: Enforcer,
    /// Roots and revocations in force.
    pub trust: TrustState,
    /// The effects of the first evaluation (state changes from nothing to the restored states).
    pub effects: Vec<Effect>,
    /// What could not be used.
    pub problems: Vec<Problem>,
    /// The cached bundle's problem as status shows it.
    pub cache_problem: Option<CacheProblem>,
}

/// The acceptance rules for `binding` under `settings` and `trust`.
pub fn rules(settings: &Settings, binding: &Binding, trust: &TrustState) -> AcceptanceRules {
    let mut store = trust.store().clone();
    store.set_site(settings.site.clone());
    AcceptanceRules {
        trust: store,
        device: binding.device.clone(),
        device_key: binding.key_id(),
        future_tolerance: settings.future_tolerance,
    }
}

/// Restores the state from `store` for the device `binding`, at wall time `wall` and boot time
/// `boot`. Reads only; what to do about each [`Problem`] is the caller's.
pub fn restore(
    settings: &Settings,
    binding: &Binding,
    store: &Store,
    wall: UnixTime,
    boot: Duration,
) -> Restored {
    let mut problems = Vec::new();
    let mark = store.load_mark().unwrap_or_else(|e| {
        problems.push(Problem::MarkUnreadable(e));
        None
    });
    let mut time = TrustedTime::new(mark.unwrap_or(0), boot, settings.rollback_tolerance);
    // Trust first: the cached bundle is judged against the roots and revocations in force.
    let (trust, dropped, unreadable) = crate::trust::load(store.dir(), settings.roots.clone());
    problems.extend(unreadable.map(Problem::TrustUnreadable));
    problems.extend(dropped.into_iter().map(Problem::TrustDropped));
    let mut enforcer = Enforcer::new(rules(settings, binding, &trust), settings.services.clone());
    enforcer.set_report_policy(
        ReportPolicy::with_interval(settings.report_interval.as_secs()),
        crate::backoff::os_random(),
    );
    enforcer.set_extended_reports(settings.extended_reports);
    let now = time.observe(wall, boot).now;
    // The VM record before the bundle: over-use clocks continue under the restored bundle.
    // Only with a probe configured: without one nothing would ever update the count.
    let vm_probe = !matches!(settings.vm, VmProbeConfig::None);
    match store.load_vm_record().map(|r| r.filter(|_| vm_probe)) {
        Ok(None) => {}
        Ok(Some(record)) => enforcer.restore_vm(record),
        Err(e) => problems.push(Problem::VmRecordUnreadable(e)),
    }
    // The policy record before the bundle: thresholds fired stay fired, seqs continue.
    match store.load_policy_record() {
        Ok(None) => {}
        Ok(Some(record)) => enforcer.restore_policy(record, now),
        Err(e) => problems.push(Problem::PolicyRecordUnreadable(e)),
    }
    // The release record before the bundle: released services stay unlicensed under it, and
    // its floor holds even when the cache was lost.
    match crate::offline::OfflineState::load(store.dir()) {
        Ok(state) => enforcer.set_release(state.release),
        Err(e) => problems.push(Problem::OfflineUnreadable(e)),
    }
    let mut effects = Vec::new();
    match store.load_bundle() {
        Ok(None) => {}
        Ok(Some(raw)) => match enforcer.restore(&raw, now) {
            Ok(e) => effects = e,
            Err(refusal) => problems.push(Problem::BundleRefused(refusal)),
        },
        Err(e) => problems.push(Problem::BundleUnreadable(e)),
    }
    if let Some(held) = enforcer.held() {
        time.witness(held.bundle.issued_at, boot);
    }
    let now = time.observe(wall, boot).now;
    effects.extend(enforcer.handle(now, Input::Tick));
    let cache_problem = problems.iter().find_map(|p| p.as_cache_problem(store));
    Restored {
        time,
        enforcer,
        trust,
        effects,
        problems,
        cache_problem,
    }
}

impl Restored {
    /// The status of this state for `binding`, evaluated by `source` at wall time `wall`.
    pub fn status(
        &self,
        source: Source,
        settings: &Settings,
        binding: &Binding,
        wall: UnixTime,
    ) -> Status {
        status_of(source, settings, binding, &self.time, wall, &self.enforcer)
    }
}

/// The status of `enforcer` for `binding`, evaluated by `source`: what `licd status` and the
/// socket show (the daemon adds its connection facts).
pub fn status_of(
    source: Source,
    settings: &Settings,
    binding: &Binding,
    time: &TrustedTime,
    wall: UnixTime,
    enforcer: &Enforcer,
) -> Status {
    Status {
        source,
        device: binding.device.to_string(),
        tenant: settings.tenant.to_string(),
        device_key: binding.key_id().to_hex(),
        agent_version: AGENT_VERSION,
        clock: ClockStatus {
            now: time.mark(),
            wall,
            mark: time.mark(),
            rollback: time.rollback(),
        },
        connection: None,
        cache_problem: None,
        enforcement: enforcer.snapshot(),
    }
}

/// Evaluates the state directory read-only, as `licd check` and the client libraries do when
/// no daemon answers: creates, moves and probes nothing. A cached bundle that cannot be used
/// is `status.cache_problem` (callers answer it as an error, not as "never granted"): damaged,
/// another device's, or lying in a state directory without its device key or without the
/// binding the daemon writes at start. With no bundle and no binding (the daemon never ran
/// there) every service reads "never granted". Errors only when the binding file itself cannot
/// be read.
pub fn read_only(
    settings: &Settings,
    wall: UnixTime,
    boot: Duration,
) -> Result<(Status, Vec<Problem>), StoreError> {
    let store = Store::open_read_only(&settings.state_dir);
    let bundle = store.bundle_path();
    let key = settings.state_dir.join(KEY_FILE);
    let unusable = |code, why: String| CacheProblem {
        code,
        message: format!("cached bundle {} is unusable: {why}", bundle.display()),
        set_aside_to: None,
    };
    match Binding::load(&settings.state_dir)? {
        Some(binding) => {
            let r = restore(settings, &binding, &store, wall, boot);
            let mut status = r.status(Source::Cache, settings, &binding, wall);
            status.cache_problem = r.cache_problem;
            // A cache is bound to a key: without the key it is a damaged state directory, not
            // a device that was never granted anything (the daemon will make a new key).
            if status.cache_problem.is_none() && r.enforcer.held().is_some() && !key.exists() {
                status.cache_problem = Some(unusable(
                    "no_device_key",
                    format!("the device key {} is missing", key.display()),
                ));
            }
            Ok((status, r.problems))
        }
        None => {
            // A key nobody holds binds nothing: whatever lies in the cache is refused.
            let nobody = Binding {
                device: DeviceId::new("unbound").map_err(|e| StoreError::Corrupt {
                    path: settings.state_dir.clone(),
                    why: e.to_string(),
                })?,
                device_key: PublicKey([0; 32]),
            };
            let r = restore(settings, &nobody, &store, wall, boot);
            let mut status = r.status(Source::Cache, settings, &nobody, wall);
            status.device = "unknown (the daemon has not run yet)".into();
            status.device_key = "none (the daemon has not run yet)".into();
            if bundle.exists() {
                status.cache_problem = Some(if key.exists() {
                    unusable(
                        "unbound",
                        format!(
                            "{} is missing, so nothing says which device it is for; the daemon \
                             writes it when it starts",
                            Binding::path_in(&settings.state_dir).display()
                        ),
                    )
                } else {
                    unusable(
                        "no_device_key",
                        format!("the device key {} is missing", key.display()),
                    )
                });
            }
            Ok((status, Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn binding() -> Binding {
        Binding {
            device: DeviceId::new("ap-1").unwrap(),
            device_key: PublicKey([7; 32]),
        }
    }

    #[test]
    fn a_binding_round_trips_and_is_written_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Binding::load(dir.path()).unwrap(), None);
        let b = binding();
        assert_eq!(Binding::decode(&b.encode()), Some(b.clone()));
        assert!(b.save_if_changed(dir.path()).unwrap());
        assert!(!b.save_if_changed(dir.path()).unwrap());
        assert_eq!(Binding::load(dir.path()).unwrap(), Some(b.clone()));
        let other = Binding {
            device: DeviceId::new("ap-2").unwrap(),
            ..b
        };
        assert!(other.save_if_changed(dir.path()).unwrap());
        assert_eq!(Binding::load(dir.path()).unwrap(), Some(other));
    }

    #[test]
    fn a_damaged_binding_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for junk in [
            "",
            "device ap-1\n",
            "device a/b\nkey 00\n",
            "key x\ndevice y\n",
        ] {
            std::fs::write(Binding::path_in(dir.path()), junk).unwrap();
            let e = Binding::load(dir.path()).unwrap_err();
            assert!(e.to_string().contains(BINDING_FILE), "{junk:?}: {e}");
        }
    }
}
