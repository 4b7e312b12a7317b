//! Product facts for the report (model, serial, product class, firmware version) and host facts
//! for status (OS, kernel, CPUs, memory, DMI).
//!
//! Each product fact is taken from the first source that has a usable value:
//!
//! | fact | 1. config | 2. DMI (`/sys/class/dmi/id`) | 3. device tree | 4. system (sysinfo) | 5. default |
//! |---|---|---|---|---|---|
//! | model | `identity.model` | `product_name` | `model` | `generic-<arch>` | — |
//! | serial | `identity.serial` | `product_serial`, `board_serial` | `serial-number` | hostname | `unknown` |
//! | product class | `identity.product_class` | `server` when DMI is present | — | — | `device` |
//! | firmware version | `identity.firmware_version` | — | — | OS name + version, kernel | `unknown` |
//!
//! DMI strings that vendors leave as placeholders (`To be filled by O.E.M.`, `Default string`,
//! …) count as missing. Every value is trimmed, stripped of control characters and cut to the
//! protocol's text limit, so whatever the host says, the report validates.
//!
//! What this leaves to others: the device id ([`super::device_id`]) and VM count
//! ([`super::vm`]). Collection is blocking; [`super::resolve_identity`] runs it bounded.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use licd_protocol::limits::MAX_TEXT_LEN;

use super::{HostRoot, IdentityConfig};

/// The most bytes read from one `/sys` or `/proc` fact file: they hold one short line, and a
/// bounded read keeps a strange file from costing memory.
const MAX_FACT_FILE: u64 = 4096;

/// DMI values that mean "not set" (compared case-insensitively after trimming).
const DMI_PLACEHOLDERS: &[&str] = &[
    "to be filled by o.e.m.",
    "default string",
    "system product name",
    "system serial number",
    "system manufacturer",
    "system version",
    "base board serial number",
    "chassis serial number",
    "not specified",
    "not applicable",
    "not available",
    "not present",
    "not settable",
    "none",
    "n/a",
    "na",
    "oem",
    "o.e.m.",
    "unknown",
    "123456789",
    "0123456789",
];

/// Reads a small text file (at most [`MAX_FACT_FILE`] bytes), lossily as UTF-8.
pub(crate) fn read_small(path: &Path) -> io::Result<String> {
    let mut buf = Vec::new();
    fs::File::open(path)?
        .take(MAX_FACT_FILE)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Trims, drops control characters (device-tree strings end in NUL) and cuts to the protocol's
/// text limit on a character boundary. `None` when nothing is left.
fn clean(s: &str) -> Option<String> {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    out = out.trim().to_owned();
    if out.len() > MAX_TEXT_LEN {
        let mut end = MAX_TEXT_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out = out.trim_end().to_owned();
    }
    (!out.is_empty()).then_some(out)
}

/// A DMI value, or `None` when it is missing, unreadable (serials are root-only) or a vendor
/// placeholder.
fn clean_dmi(s: &str) -> Option<String> {
    let v = clean(s)?;
    let lower = v.to_ascii_lowercase();
    let filler = v
        .chars()
        .all(|c| matches!(c, '0' | '.' | ' ' | 'x' | 'X' | '-'));
    (!DMI_PLACEHOLDERS.contains(&lower.as_str()) && !filler).then_some(v)
}

fn read_dmi(dir: &Path, name: &str) -> Option<String> {
    clean_dmi(&read_small(&dir.join(name)).ok()?)
}

/// The DMI (SMBIOS) strings of the host, each `None` when missing or a placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DmiFacts {
    /// `sys_vendor`, e.g. `Dell Inc.`.
    pub sys_vendor: Option<String>,
    /// `product_name`, e.g. `PowerEdge R640`.
    pub product_name: Option<String>,
    /// `product_version`.
    pub product_version: Option<String>,
    /// `product_serial` (readable by root only).
    pub product_serial: Option<String>,
    /// `board_vendor`.
    pub board_vendor: Option<String>,
    /// `board_name`.
    pub board_name: Option<String>,
    /// `board_serial` (readable by root only).
    pub board_serial: Option<String>,
    /// `bios_version`.
    pub bios_version: Option<String>,
}

impl DmiFacts {
    /// Reads `/sys/class/dmi/id/*` under `root`; missing files give `None`.
    pub fn read(root: &HostRoot) -> Self {
        let dir = root.dmi_dir();
        Self {
            sys_vendor: read_dmi(&dir, "sys_vendor"),
            product_name: read_dmi(&dir, "product_name"),
            product_version: read_dmi(&dir, "product_version"),
            product_serial: read_dmi(&dir, "product_serial"),
            board_vendor: read_dmi(&dir, "board_vendor"),
            board_name: read_dmi(&dir, "board_name"),
            board_serial: read_dmi(&dir, "board_serial"),
            bios_version: read_dmi(&dir, "bios_version"),
        }
    }

    /// Whether the host has DMI at all (x86 and SBSA ARM servers do; most APs and switches
    /// do not).
    pub fn is_present(&self) -> bool {
        self.sys_vendor.is_some()
            || self.product_name.is_some()
            || self.board_vendor.is_some()
            || self.board_name.is_some()
    }
}

/// Facts about the host, for status and as the fallbacks of [`ProductInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostFacts {
    /// Host name.
    pub hostname: Option<String>,
    /// OS name, e.g. `Debian GNU/Linux`, `OpenWrt`.
    pub os_name: Option<String>,
    /// OS version, e.g. `12`, `23.05.2`.
    pub os_version: Option<String>,
    /// Kernel version, e.g. `6.1.0-18-amd64`.
    pub kernel_version: Option<String>,
    /// CPU architecture, e.g. `x86_64`, `aarch64`, `mips`.
    pub cpu_arch: String,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Total RAM in bytes.
    pub memory_total_bytes: u64,
    /// DMI strings.
    pub dmi: DmiFacts,
    /// `/proc/device-tree/model`, e.g. `Ubiquiti UniFi 6 Lite`.
    pub device_tree_model: Option<String>,
    /// `/proc/device-tree/serial-number`.
    pub device_tree_serial: Option<String>,
}

impl HostFacts {
    /// Collects the facts: DMI and device tree under `root`, the rest from the running system
    /// through sysinfo (which reads `/proc`, `/etc/os-release` and `uname`; it is built without
    /// its network listing, which hung under qemu on MIPS). Blocking.
    pub fn collect(root: &HostRoot) -> Self {
        use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let cpu_count = match sys.cpus().len() {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let dt = root.device_tree_dir();
        let dt_string = |name: &str| read_small(&dt.join(name)).ok().and_then(|s| clean(&s));
        Self {
            hostname: System::host_name().and_then(|s| clean(&s)),
            os_name: System::name().and_then(|s| clean(&s)),
            os_version: System::os_version().and_then(|s| clean(&s)),
            kernel_version: System::kernel_version().and_then(|s| clean(&s)),
            cpu_arch: System::cpu_arch(),
            cpu_count,
            memory_total_bytes: sys.total_memory(),
            dmi: DmiFacts::read(root),
            device_tree_model: dt_string("model"),
            device_tree_serial: dt_string("serial-number"),
        }
    }
}

/// Where a product fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactSource {
    /// The `[identity]` config.
    Config,
    /// DMI (`/sys/class/dmi/id`).
    Dmi,
    /// The device tree (`/proc/device-tree`).
    DeviceTree,
    /// The running system (sysinfo: host name, OS, kernel, architecture).
    System,
    /// A built-in default: nothing on the host said anything.
    Default,
}

/// One product fact and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProductFact {
    /// The value, at most the protocol's text limit, without control characters.
    pub value: String,
    /// Where it came from.
    pub source: FactSource,
}

impl ProductFact {
    fn new(value: String, source: FactSource) -> Self {
        Self { value, source }
    }
}

/// The product facts that go into the device report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProductInfo {
    /// Hardware model.
    pub model: ProductFact,
    /// Serial number.
    pub serial: ProductFact,
    /// Product class (`server`, `wireless`, …).
    pub product_class: ProductFact,
    /// Firmware (or OS) version.
    pub firmware_version: ProductFact,
}

/// The first candidate with a value.
fn first(
    candidates: impl IntoIterator<Item = (Option<String>, FactSource)>,
) -> Option<ProductFact> {
    candidates
        .into_iter()
        .find_map(|(v, source)| v.map(|v| ProductFact::new(v, source)))
}

impl ProductInfo {
    /// Picks each fact from config, then the host facts, in the order in the module docs. Pure,
    /// so the precedence is testable without a host.
    pub fn resolve(config: &IdentityConfig, host: &HostFacts) -> Self {
        use FactSource::*;
        let cfg = |v: &Option<String>| v.as_deref().and_then(clean);
        let dmi = &host.dmi;

        let model = first([
            (cfg(&config.model), Config),
            (dmi.product_name.clone(), Dmi),
            (host.device_tree_model.clone(), DeviceTree),
        ])
        .unwrap_or_else(|| ProductFact::new(format!("generic-{}", host.cpu_arch), System));

        let serial = first([
            (cfg(&config.serial), Config),
            (dmi.product_serial.clone(), Dmi),
            (dmi.board_serial.clone(), Dmi),
            (host.device_tree_serial.clone(), DeviceTree),
            (host.hostname.clone(), System),
        ])
        .unwrap_or_else(|| ProductFact::new("unknown".into(), Default));

        let product_class = first([(cfg(&config.product_class), Config)]).unwrap_or_else(|| {
            if dmi.is_present() {
                ProductFact::new("server".into(), Dmi)
            } else {
                ProductFact::new("device".into(), Default)
            }
        });

        let os = match (&host.os_name, &host.os_version) {
            (Some(name), Some(version)) => clean(&format!("{name} {version}")),
            (Some(name), None) => Some(name.clone()),
            _ => None,
        };
        let firmware_version = first([
            (cfg(&config.firmware_version), Config),
            (os, System),
            (host.kernel_version.clone(), System),
        ])
        .unwrap_or_else(|| ProductFact::new("unknown".into(), Default));

        Self {
            model,
            serial,
            product_class,
            firmware_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with_dmi() -> HostFacts {
        HostFacts {
            hostname: Some("hv-07".into()),
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            kernel_version: Some("6.1.0-18-amd64".into()),
            cpu_arch: "x86_64".into(),
            cpu_count: 8,
            memory_total_bytes: 1 << 34,
            dmi: DmiFacts {
                sys_vendor: Some("Dell Inc.".into()),
                product_name: Some("PowerEdge R640".into()),
                product_serial: Some("7XK9Q2".into()),
                board_serial: Some("BOARD1".into()),
                ..Default::default()
            },
            device_tree_model: None,
            device_tree_serial: None,
        }
    }

    fn bare_host() -> HostFacts {
        HostFacts {
            cpu_arch: "mips".into(),
            cpu_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn config_wins_over_dmi_and_system() {
        let cfg = IdentityConfig {
            model: Some("AP-515".into()),
            serial: Some("CNF7J0T2XY".into()),
            product_class: Some("wireless".into()),
            firmware_version: Some("8.11.2.1".into()),
            ..Default::default()
        };
        let p = ProductInfo::resolve(&cfg, &host_with_dmi());
        assert_eq!(
            p.model,
            ProductFact::new("AP-515".into(), FactSource::Config)
        );
        assert_eq!(
            p.serial,
            ProductFact::new("CNF7J0T2XY".into(), FactSource::Config)
        );
        assert_eq!(
            p.product_class,
            ProductFact::new("wireless".into(), FactSource::Config)
        );
        assert_eq!(
            p.firmware_version,
            ProductFact::new("8.11.2.1".into(), FactSource::Config)
        );
    }

    #[test]
    fn dmi_is_used_when_config_is_silent_and_makes_the_class_server() {
        let p = ProductInfo::resolve(&IdentityConfig::default(), &host_with_dmi());
        assert_eq!(
            p.model,
            ProductFact::new("PowerEdge R640".into(), FactSource::Dmi)
        );
        assert_eq!(p.serial, ProductFact::new("7XK9Q2".into(), FactSource::Dmi));
        assert_eq!(
            p.product_class,
            ProductFact::new("server".into(), FactSource::Dmi)
        );
        assert_eq!(
            p.firmware_version,
            ProductFact::new("Debian GNU/Linux 12".into(), FactSource::System)
        );
    }

    #[test]
    fn board_serial_stands_in_for_an_unreadable_product_serial() {
        let mut host = host_with_dmi();
        host.dmi.product_serial = None;
        let p = ProductInfo::resolve(&IdentityConfig::default(), &host);
        assert_eq!(p.serial, ProductFact::new("BOARD1".into(), FactSource::Dmi));
    }

    #[test]
    fn device_tree_then_system_facts_fill_in_without_dmi() {
        let mut host = bare_host();
        host.device_tree_model = Some("Ubiquiti UniFi 6 Lite".into());
        host.device_tree_serial = Some("245A4C".into());
        host.kernel_version = Some("5.15.150".into());
        let p = ProductInfo::resolve(&IdentityConfig::default(), &host);
        assert_eq!(
            p.model,
            ProductFact::new("Ubiquiti UniFi 6 Lite".into(), FactSource::DeviceTree)
        );
        assert_eq!(
            p.serial,
            ProductFact::new("245A4C".into(), FactSource::DeviceTree)
        );
        assert_eq!(
            p.product_class,
            ProductFact::new("device".into(), FactSource::Default)
        );
        assert_eq!(
            p.firmware_version,
            ProductFact::new("5.15.150".into(), FactSource::System)
        );
    }

    #[test]
    fn an_empty_host_still_gives_a_complete_report() {
        let p = ProductInfo::resolve(&IdentityConfig::default(), &bare_host());
        assert_eq!(
            p.model,
            ProductFact::new("generic-mips".into(), FactSource::System)
        );
        assert_eq!(
            p.serial,
            ProductFact::new("unknown".into(), FactSource::Default)
        );
        assert_eq!(p.firmware_version.source, FactSource::Default);
        let mut host = bare_host();
        host.hostname = Some("ap-lobby".into());
        let p = ProductInfo::resolve(&IdentityConfig::default(), &host);
        assert_eq!(
            p.serial,
            ProductFact::new("ap-lobby".into(), FactSource::System)
        );
    }

    #[test]
    fn dmi_is_read_from_the_host_root_and_placeholders_count_as_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dmi = dir.path().join("sys/class/dmi/id");
        fs::create_dir_all(&dmi).expect("mkdir");
        fs::write(dmi.join("sys_vendor"), "QEMU\n").expect("write");
        fs::write(dmi.join("product_name"), "Standard PC (Q35 + ICH9, 2009)\n").expect("write");
        fs::write(dmi.join("product_serial"), "To Be Filled By O.E.M.\n").expect("write");
        fs::write(dmi.join("board_serial"), "0000000000\n").expect("write");
        fs::write(dmi.join("bios_version"), "1.16.3-debian\n").expect("write");
        let facts = DmiFacts::read(&HostRoot::at(dir.path()));
        assert_eq!(facts.sys_vendor.as_deref(), Some("QEMU"));
        assert_eq!(
            facts.product_name.as_deref(),
            Some("Standard PC (Q35 + ICH9, 2009)")
        );
        assert_eq!(facts.product_serial, None);
        assert_eq!(facts.board_serial, None);
        assert_eq!(facts.bios_version.as_deref(), Some("1.16.3-debian"));
        assert!(facts.is_present());
        assert!(!DmiFacts::read(&HostRoot::at(dir.path().join("nowhere"))).is_present());
    }

    #[test]
    fn host_values_are_cleaned_and_cut_to_the_protocol_limit() {
        assert_eq!(
            clean("  Ubiquiti UniFi\0").as_deref(),
            Some("Ubiquiti UniFi")
        );
        assert_eq!(clean(" \n\0"), None);
        let long = "é".repeat(100); // 200 bytes
        let cut = clean(&long).expect("value");
        assert!(cut.len() <= MAX_TEXT_LEN && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn collecting_from_the_running_system_gives_sane_values() {
        let facts = HostFacts::collect(&HostRoot::system());
        assert!(facts.cpu_count >= 1);
        assert!(!facts.cpu_arch.is_empty());
        assert!(facts.memory_total_bytes > 0);
    }
}
