//! Who this device is: its id, product facts (model, serial, class, firmware), the number of
//! VMs it runs, and its ed25519 device key.
//!
//! What lives here:
//! - [`IdentityConfig`] / [`VmProbeConfig`]: the `[identity]` and `[vm]` tables of the agent's
//!   TOML. The config module embeds them and calls their `validate` once at load.
//! - [`device_id`]: the device id, from config or derived from stable host facts, with the
//!   source used and a [`HostFingerprint`] for drift detection.
//! - [`facts`]: model, serial, product class and firmware version (config → DMI / device tree →
//!   sysinfo), plus host facts (OS, kernel, CPUs, memory) for status.
//! - [`vm`]: the VM count probes.
//! - [`key`]: the device key in the state directory.
//!
//! What it leaves to others: reading the config file, persisting the fingerprint between runs
//! and comparing it (`licd diag`), building and signing the report (session), scheduling VM
//! probes (daemon). Every host probe here is bounded by a timeout — a probe that hangs (issue 7:
//! sysinfo stuck in netlink under qemu) must never hang the agent.

pub mod bounded;
pub mod device_id;
pub mod facts;
pub mod key;
pub mod vm;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bounded::BoundedError;
pub use device_id::{
    DeviceIdError, DeviceIdSource, FingerprintFact, HostFingerprint, ResolvedDeviceId,
};
pub use facts::{DmiFacts, FactSource, HostFacts, ProductFact, ProductInfo};
pub use key::{DeviceKey, KeyCorruption, KeyError};
/// The `[identity]` and `[vm]` tables are configuration, which lives in `licd-core`.
pub use licd_core::config::host::{ConfigError, IdentityConfig};
pub use vm::{probe_vm_count, run_vm_probe, VmCount, VmProbeConfig, VmProbeError};

/// How long [`resolve_identity`] may take in total before it gives up. Reading a handful of
/// small files and calling `uname` takes milliseconds; anything near this is a wedged system.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the host's files are: `/` on a real system, a temp dir in tests.
///
/// Only the files this module reads are rerouted (`etc/machine-id`, `sys/class/dmi/id`,
/// `sys/class/net`, the device tree). sysinfo always reads the real system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::system()
    }
}

impl HostRoot {
    /// The running system (`/`).
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A host tree rooted at `root` (tests, or inspecting a mounted image).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` (a path relative to `/`) under this root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// `/etc/machine-id`.
    pub fn machine_id(&self) -> PathBuf {
        self.path("etc/machine-id")
    }

    /// `/var/lib/dbus/machine-id`, the pre-systemd location (older or systemd-less images).
    pub fn dbus_machine_id(&self) -> PathBuf {
        self.path("var/lib/dbus/machine-id")
    }

    /// `/sys/class/dmi/id`, the DMI (SMBIOS) facts of x86 and some ARM servers.
    pub fn dmi_dir(&self) -> PathBuf {
        self.path("sys/class/dmi/id")
    }

    /// `/sys/class/net`, one entry per network interface.
    pub fn net_dir(&self) -> PathBuf {
        self.path("sys/class/net")
    }

    /// `/proc/device-tree`, the device tree of ARM/MIPS boards (APs, switches).
    pub fn device_tree_dir(&self) -> PathBuf {
        self.path("proc/device-tree")
    }
}

/// Everything [`resolve_identity`] found: the device id and where it came from, the product
/// facts for the report, and host facts for status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The device id, its source and the host fingerprint.
    pub device: ResolvedDeviceId,
    /// Model, serial, product class and firmware version, each with its source.
    pub product: ProductInfo,
    /// OS, kernel, CPUs, memory, DMI.
    pub host: HostFacts,
}

/// Why the identity could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The `[identity]` config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No device id: none configured and none derivable.
    #[error(transparent)]
    DeviceId(#[from] DeviceIdError),
    /// Probing the host hung, panicked or could not start (the message names the probe).
    #[error(transparent)]
    Probe(#[from] BoundedError),
}

/// Resolves the device id, product facts and host facts, all on a probe thread bounded by
/// `timeout` (see [`DEFAULT_RESOLVE_TIMEOUT`]).
///
/// The device key is not part of this: it lives in the state directory, see
/// [`DeviceKey::load_or_create`].
pub async fn resolve_identity(
    config: &IdentityConfig,
    root: &HostRoot,
    timeout: Duration,
) -> Result<Identity, IdentityError> {
    config.validate()?;
    let config = config.clone();
    let root = root.clone();
    let identity = bounded::run_bounded("identity resolution", timeout, move || {
        resolve_identity_blocking(&config, &root)
    })
    .await??;
    Ok(identity)
}

/// The unbounded core of [`resolve_identity`]: runs on the caller's thread. Use it only where
/// a hang is acceptable (tests, offline tools) — the daemon uses [`resolve_identity`].
pub fn resolve_identity_blocking(
    config: &IdentityConfig,
    root: &HostRoot,
) -> Result<Identity, IdentityError> {
    config.validate()?;
    let device = device_id::resolve_device_id(config.device_id.as_deref(), root)?;
    let host = HostFacts::collect(root);
    let product = ProductInfo::resolve(config, &host);
    Ok(Identity {
        device,
        product,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_root_paths_are_under_the_root() {
        let root = HostRoot::at("/tmp/x");
        assert_eq!(root.machine_id(), PathBuf::from("/tmp/x/etc/machine-id"));
        assert_eq!(root.dmi_dir(), PathBuf::from("/tmp/x/sys/class/dmi/id"));
        assert_eq!(
            HostRoot::default().net_dir(),
            PathBuf::from("/sys/class/net")
        );
    }
}
