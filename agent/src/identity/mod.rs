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

use licd_protocol::limits::MAX_TEXT_LEN;
use licd_protocol::{DeviceId, IdError};

pub use bounded::BoundedError;
pub use device_id::{
    DeviceIdError, DeviceIdSource, FingerprintFact, HostFingerprint, ResolvedDeviceId,
};
pub use facts::{DmiFacts, FactSource, HostFacts, ProductFact, ProductInfo};
pub use key::{DeviceKey, KeyCorruption, KeyError};
pub use vm::{probe_vm_count, run_vm_probe, VmCount, VmProbeConfig, VmProbeError};

/// How long [`resolve_identity`] may take in total before it gives up. Reading a handful of
/// small files and calling `uname` takes milliseconds; anything near this is a wedged system.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[identity]` table of the agent config. Every field is optional: whatever is not set is
/// found on the host (see [`facts`] and [`device_id`] for the order).
///
/// ```toml
/// [identity]
/// device_id = "ap-0042"          # default: derived from /etc/machine-id, DMI UUID or MAC
/// model = "AP-515"               # default: DMI product_name, device-tree model, "generic-<arch>"
/// serial = "CNF7J0T2XY"          # default: DMI product/board serial, device-tree serial, hostname
/// product_class = "wireless"     # default: "server" on DMI systems, else "device"
/// firmware_version = "8.11.2.1"  # default: the OS name and version
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The device id, when the firmware knows a better one than the host facts (e.g. the
    /// serial). Must match `[A-Za-z0-9._-]{1,64}`. Set it in containers and cloned images, where
    /// `/etc/machine-id` is shared or changes.
    pub device_id: Option<String>,
    /// Hardware model as the controller's catalogue names it, e.g. `AP-515`.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Product class as the controller's catalogue names it (`wireless`, `switch`, `server`, …).
    pub product_class: Option<String>,
    /// Firmware version; on servers usually left unset (the OS version is used).
    pub firmware_version: Option<String>,
}

/// A value in the `[identity]` or `[vm]` table that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `identity.device_id` is not a valid device id.
    #[error("identity.device_id {value:?} is not a valid device id: {reason}")]
    InvalidDeviceId {
        /// The configured value.
        value: String,
        /// Why it is refused.
        reason: IdError,
    },
    /// A text field is empty or only whitespace (leave it out to use the host's value).
    #[error("{field} is empty; leave it out to use the value found on the host")]
    Empty {
        /// The field, e.g. `identity.model`.
        field: &'static str,
    },
    /// A text field is longer than the protocol allows in a report.
    #[error("{field} is {len} bytes long; reports allow at most {MAX_TEXT_LEN}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A text field contains a control character (it would garble logs and status output).
    #[error("{field} contains a control character")]
    ControlChar {
        /// The field.
        field: &'static str,
    },
    /// `vm.argv` of a command probe is empty.
    #[error("vm.argv is empty; give the command and its arguments, e.g. [\"/usr/sbin/vm-count\"]")]
    EmptyArgv,
    /// `vm.timeout_secs` is out of range.
    #[error("vm.timeout_secs = {value} is out of range (1..={max})")]
    BadTimeout {
        /// The configured value.
        value: u64,
        /// The largest allowed value.
        max: u64,
    },
    /// `vm.names` of a processes probe is empty, or one name is empty.
    #[error("vm.names must list at least one non-empty process name prefix")]
    EmptyProcessNames,
}

impl ConfigError {
    /// The config key at fault, e.g. `identity.model`.
    pub fn key(&self) -> &'static str {
        match self {
            ConfigError::InvalidDeviceId { .. } => "identity.device_id",
            ConfigError::Empty { field }
            | ConfigError::TooLong { field, .. }
            | ConfigError::ControlChar { field } => field,
            ConfigError::EmptyArgv => "vm.argv",
            ConfigError::BadTimeout { .. } => "vm.timeout_secs",
            ConfigError::EmptyProcessNames => "vm.names",
        }
    }
}

impl IdentityConfig {
    /// Checks every set field; the config module calls this once at load so a bad value is
    /// reported at startup, not at the first report.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.device_id {
            DeviceId::new(id.as_str()).map_err(|reason| ConfigError::InvalidDeviceId {
                value: id.clone(),
                reason,
            })?;
        }
        for (field, value) in [
            ("identity.model", &self.model),
            ("identity.serial", &self.serial),
            ("identity.product_class", &self.product_class),
            ("identity.firmware_version", &self.firmware_version),
        ] {
            if let Some(v) = value {
                check_text(field, v)?;
            }
        }
        Ok(())
    }
}

fn check_text(field: &'static str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        return Err(ConfigError::Empty { field });
    }
    if v.len() > MAX_TEXT_LEN {
        return Err(ConfigError::TooLong {
            field,
            len: v.len(),
        });
    }
    if v.chars().any(char::is_control) {
        return Err(ConfigError::ControlChar { field });
    }
    Ok(())
}

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
    fn identity_config_reads_from_toml_and_refuses_unknown_fields() {
        let cfg: IdentityConfig = toml::from_str(
            r#"
            device_id = "ap-0042"
            model = "AP-515"
            serial = "CNF7J0T2XY"
            product_class = "wireless"
            firmware_version = "8.11.2.1"
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.device_id.as_deref(), Some("ap-0042"));
        assert_eq!(cfg.model.as_deref(), Some("AP-515"));
        assert!(cfg.validate().is_ok());
        assert!(toml::from_str::<IdentityConfig>("modle = \"x\"").is_err());
        assert_eq!(
            toml::from_str::<IdentityConfig>("").ok(),
            Some(IdentityConfig::default())
        );
    }

    #[test]
    fn identity_config_validation_names_the_bad_field() {
        let cfg = IdentityConfig {
            device_id: Some("ap/0042".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::InvalidDeviceId {
                value: "ap/0042".into(),
                reason: IdError::BadChar('/'),
            })
        );
        let cfg = IdentityConfig {
            model: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::Empty {
                field: "identity.model"
            })
        );
        let cfg = IdentityConfig {
            serial: Some("x".repeat(129)),
            ..Default::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::TooLong {
                field: "identity.serial",
                len: 129
            })
        );
        let cfg = IdentityConfig {
            product_class: Some("a\nb".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::ControlChar {
                field: "identity.product_class"
            })
        );
    }

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
