//! The `[identity]` and `[vm]` tables of the agent's config: what the device says about itself
//! and how it counts VMs. Plain data and their validation; the probes that use them are the
//! daemon's (`licd_agent::identity`).

use licd_protocol::limits::MAX_TEXT_LEN;
use licd_protocol::{DeviceId, IdError};

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

/// Default time a probe may take before it is killed or abandoned.
pub const DEFAULT_PROBE_TIMEOUT_SECS: u64 = 10;

/// The longest configurable probe timeout: a probe that needs longer blocks a report cycle.
pub const MAX_PROBE_TIMEOUT_SECS: u64 = 300;

/// Process-name prefixes of hypervisor guests counted by the `processes` probe by default:
/// QEMU/KVM (`qemu-system-x86_64`, RHEL's `qemu-kvm`, kvmtool's `lkvm`), Firecracker,
/// Cloud Hypervisor, crosvm, VirtualBox and VMware guest processes.
pub const DEFAULT_GUEST_PROCESS_NAMES: &[&str] = &[
    "qemu-system-",
    "qemu-kvm",
    "lkvm",
    "firecracker",
    "cloud-hypervisor",
    "crosvm",
    "VBoxHeadless",
    "VirtualBoxVM",
    "vmware-vmx",
];

/// [`DEFAULT_GUEST_PROCESS_NAMES`] as owned strings (the `names` default).
pub fn default_guest_process_names() -> Vec<String> {
    DEFAULT_GUEST_PROCESS_NAMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn default_timeout_secs() -> u64 {
    DEFAULT_PROBE_TIMEOUT_SECS
}

/// How to count VMs: the `[vm]` table of the agent config, selected by its `probe` key.
///
/// ```toml
/// # No VM counting (the default, also when [vm] is absent):
/// [vm]
/// probe = "none"
///
/// # A number the integrator knows:
/// [vm]
/// probe = "fixed"
/// count = 4
///
/// # Count running hypervisor guest processes (names are process-name prefixes;
/// # leave `names` out for the built-in list of QEMU/KVM, Firecracker, Cloud Hypervisor, …):
/// [vm]
/// probe = "processes"
/// names = ["qemu-system-", "firecracker"]
/// timeout_secs = 10
///
/// # Run a command that prints a single number (e.g. `virsh list --name | grep -c .`
/// # wrapped in a script):
/// [vm]
/// probe = "command"
/// argv = ["/usr/libexec/licd/vm-count", "--running"]
/// timeout_secs = 10
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "probe", rename_all = "snake_case", deny_unknown_fields)]
pub enum VmProbeConfig {
    /// No probe: the report carries no VM count.
    #[default]
    None,
    /// A fixed number.
    Fixed {
        /// The VM count to report.
        count: u32,
    },
    /// Count running processes whose name starts with one of `names`.
    Processes {
        /// Process-name prefixes, matched against the process name and the file name of its
        /// `argv[0]`. Default: [`DEFAULT_GUEST_PROCESS_NAMES`].
        #[serde(default = "default_guest_process_names")]
        names: Vec<String>,
        /// Seconds the process listing may take (default 10, at most 300).
        #[serde(default = "default_timeout_secs")]
        timeout_secs: u64,
    },
    /// Run a command (no shell) whose stdout is a single decimal number.
    Command {
        /// Program and arguments; the program is looked up in `PATH` unless it has a `/`.
        argv: Vec<String>,
        /// Seconds before the command is killed (default 10, at most 300).
        #[serde(default = "default_timeout_secs")]
        timeout_secs: u64,
    },
}

impl VmProbeConfig {
    /// Checks the probe's settings; the config module calls this once at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check_timeout = |value: u64| {
            if value == 0 || value > MAX_PROBE_TIMEOUT_SECS {
                Err(ConfigError::BadTimeout {
                    value,
                    max: MAX_PROBE_TIMEOUT_SECS,
                })
            } else {
                Ok(())
            }
        };
        match self {
            Self::None | Self::Fixed { .. } => Ok(()),
            Self::Processes {
                names,
                timeout_secs,
            } => {
                if names.is_empty() || names.iter().any(|n| n.is_empty()) {
                    return Err(ConfigError::EmptyProcessNames);
                }
                check_timeout(*timeout_secs)
            }
            Self::Command { argv, timeout_secs } => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(ConfigError::EmptyArgv);
                }
                check_timeout(*timeout_secs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
}
