//! The device id: from config, or derived from stable host facts — and a fingerprint of those
//! facts so `licd diag` can tell when they drift.
//!
//! Priority when `identity.device_id` is not set (the first usable fact wins):
//! 1. the machine id: `/etc/machine-id`, else `/var/lib/dbus/machine-id` → id `m-…`
//! 2. the DMI product UUID: `/sys/class/dmi/id/product_uuid` (readable by root only) → id `u-…`
//! 3. the primary MAC: the first interface in `/sys/class/net`, sorted by name, that is backed by
//!    a device (not loopback, bridge, veth, tun …), has a non-random, non-zero unicast address
//!    → id `n-…`
//!
//! A derived id is a letter for the source, `-`, and the first 20 hex digits (80 bits) of
//! SHA-256 over a domain prefix and the normalised fact. It is never the raw fact: per
//! machine-id(5) the machine id is confidential and must not be exposed on the network, and a
//! MAC or board UUID says more about the hardware than an id needs to. The same fact always gives
//! the same id, so the id survives restarts and agent upgrades; it changes only when the fact
//! does (reinstall, cloned image, new NIC) — which is why the config can override it and why the
//! fingerprint exists.
//!
//! What this leaves to others: storing the previous fingerprint and reporting drift (diag).

use std::fs;
use std::path::Path;

use licd_protocol::{DeviceId, IdError};

use super::facts::read_small;
use super::HostRoot;
use sha2::{Digest, Sha256};

/// Hex digits of the hash in a derived id: 80 bits keeps collisions negligible in any fleet
/// (about 4·10⁻¹³ for a million devices) while the id stays short enough to read out over the
/// phone.
const DERIVED_ID_HEX_DIGITS: usize = 20;

/// Hex digits of one fact's digest in a [`HostFingerprint`].
const FINGERPRINT_HEX_DIGITS: usize = 16;

/// A placeholder UUID several BIOS vendors ship unchanged on every board.
const PLACEHOLDER_UUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
];

/// Where the device id came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceIdSource {
    /// `identity.device_id` in the config.
    Config,
    /// Derived from the machine id (`/etc/machine-id` or `/var/lib/dbus/machine-id`).
    MachineId,
    /// Derived from the DMI product UUID.
    DmiProductUuid,
    /// Derived from the MAC address of `interface`.
    PrimaryMac {
        /// The interface the MAC was read from, e.g. `eth0`.
        interface: String,
    },
}

/// One of the host facts a device id can be derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintFact {
    /// The machine id.
    MachineId,
    /// The DMI product UUID.
    DmiProductUuid,
    /// The primary MAC address.
    PrimaryMac,
}

impl FingerprintFact {
    /// A short human name, as diag prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::MachineId => "machine-id",
            Self::DmiProductUuid => "DMI product UUID",
            Self::PrimaryMac => "primary MAC",
        }
    }

    /// The derived-id prefix letter and the hash domain of the fact.
    fn id_prefix(self) -> &'static str {
        match self {
            Self::MachineId => "m",
            Self::DmiProductUuid => "u",
            Self::PrimaryMac => "n",
        }
    }

    fn domain(self) -> &'static str {
        match self {
            Self::MachineId => "machine-id",
            Self::DmiProductUuid => "dmi-product-uuid",
            Self::PrimaryMac => "primary-mac",
        }
    }
}

/// Digests of the host facts a device id can be derived from (each `None` when the fact is
/// missing or unreadable). Safe to store and print: each digest is 64 bits of a domain-separated
/// SHA-256, different from the derived id's hash, and reveals nothing of the fact.
///
/// `licd diag` stores it after each run and compares it with [`HostFingerprint::drift`] on the
/// next: a changed fact means a derived device id may have changed (or would change, if the id
/// is configured and the config is later removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFingerprint {
    /// Digest of the machine id.
    pub machine_id: Option<String>,
    /// Digest of the DMI product UUID.
    pub dmi_product_uuid: Option<String>,
    /// Digest of the primary MAC address.
    pub primary_mac: Option<String>,
}

impl HostFingerprint {
    /// Reads the facts under `root` and digests them.
    pub fn collect(root: &HostRoot) -> Self {
        HostIdFacts::read(root).fingerprint()
    }

    /// The digest of one fact.
    pub fn get(&self, fact: FingerprintFact) -> Option<&str> {
        match fact {
            FingerprintFact::MachineId => self.machine_id.as_deref(),
            FingerprintFact::DmiProductUuid => self.dmi_product_uuid.as_deref(),
            FingerprintFact::PrimaryMac => self.primary_mac.as_deref(),
        }
    }

    /// The facts that differ between `earlier` and `self` (appeared, vanished or changed), in
    /// priority order. Empty when nothing drifted.
    pub fn drift(&self, earlier: &HostFingerprint) -> Vec<FingerprintFact> {
        [
            FingerprintFact::MachineId,
            FingerprintFact::DmiProductUuid,
            FingerprintFact::PrimaryMac,
        ]
        .into_iter()
        .filter(|&f| self.get(f) != earlier.get(f))
        .collect()
    }

    /// One short digest over all facts, for a one-line status.
    pub fn summary(&self) -> String {
        let parts = [
            self.machine_id.as_deref().unwrap_or("-"),
            self.dmi_product_uuid.as_deref().unwrap_or("-"),
            self.primary_mac.as_deref().unwrap_or("-"),
        ]
        .join("/");
        digest("fingerprint-summary", &parts, FINGERPRINT_HEX_DIGITS)
    }
}

/// The device id with its source and the host fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedDeviceId {
    /// The id used in topics and reports.
    pub id: DeviceId,
    /// Where it came from.
    pub source: DeviceIdSource,
    /// Digests of the host facts, collected even when the id is configured, so drift shows
    /// either way.
    pub fingerprint: HostFingerprint,
}

/// Why there is no device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceIdError {
    /// The configured id is not a valid device id.
    #[error("identity.device_id {value:?} is not a valid device id: {reason}")]
    InvalidOverride {
        /// The configured value.
        value: String,
        /// Why it is refused.
        reason: IdError,
    },
    /// None configured and no host fact is usable.
    #[error(
        "no stable host fact to derive a device id from ({}); set identity.device_id in the config",
        .reasons.join("; ")
    )]
    NoStableFacts {
        /// Why each fact was not usable, in priority order.
        reasons: Vec<String>,
    },
}

/// The device id: `configured` if given (validated), else derived from host facts under
/// `root` in the priority documented on this module.
pub fn resolve_device_id(
    configured: Option<&str>,
    root: &HostRoot,
) -> Result<ResolvedDeviceId, DeviceIdError> {
    let facts = HostIdFacts::read(root);
    let fingerprint = facts.fingerprint();
    let (id, source) = match configured {
        Some(value) => {
            let id = DeviceId::new(value).map_err(|reason| DeviceIdError::InvalidOverride {
                value: value.to_owned(),
                reason,
            })?;
            (id, DeviceIdSource::Config)
        }
        None => facts.derive()?,
    };
    Ok(ResolvedDeviceId {
        id,
        source,
        fingerprint,
    })
}

/// The normalised facts, or why each is unusable.
struct HostIdFacts {
    machine_id: Result<String, String>,
    product_uuid: Result<String, String>,
    /// `(interface, mac)`.
    primary_mac: Result<(String, String), String>,
}

impl HostIdFacts {
    fn read(root: &HostRoot) -> Self {
        Self {
            machine_id: read_machine_id(root),
            product_uuid: read_product_uuid(root),
            primary_mac: read_primary_mac(root),
        }
    }

    fn fingerprint(&self) -> HostFingerprint {
        let fp = |fact: FingerprintFact, v: Option<&str>| {
            v.map(|v| {
                digest(
                    &format!("fingerprint/{}", fact.domain()),
                    v,
                    FINGERPRINT_HEX_DIGITS,
                )
            })
        };
        HostFingerprint {
            machine_id: fp(FingerprintFact::MachineId, self.machine_id.as_deref().ok()),
            dmi_product_uuid: fp(
                FingerprintFact::DmiProductUuid,
                self.product_uuid.as_deref().ok(),
            ),
            primary_mac: fp(
                FingerprintFact::PrimaryMac,
                self.primary_mac.as_ref().ok().map(|(_, mac)| mac.as_str()),
            ),
        }
    }

    fn derive(&self) -> Result<(DeviceId, DeviceIdSource), DeviceIdError> {
        if let Ok(v) = &self.machine_id {
            return Ok((
                derived_id(FingerprintFact::MachineId, v),
                DeviceIdSource::MachineId,
            ));
        }
        if let Ok(v) = &self.product_uuid {
            return Ok((
                derived_id(FingerprintFact::DmiProductUuid, v),
                DeviceIdSource::DmiProductUuid,
            ));
        }
        if let Ok((interface, mac)) = &self.primary_mac {
            return Ok((
                derived_id(FingerprintFact::PrimaryMac, mac),
                DeviceIdSource::PrimaryMac {
                    interface: interface.clone(),
                },
            ));
        }
        let why = |fact: FingerprintFact, err: Option<&String>| {
            format!("{}: {}", fact.name(), err.map_or("", String::as_str))
        };
        Err(DeviceIdError::NoStableFacts {
            reasons: vec![
                why(FingerprintFact::MachineId, self.machine_id.as_ref().err()),
                why(
                    FingerprintFact::DmiProductUuid,
                    self.product_uuid.as_ref().err(),
                ),
                why(FingerprintFact::PrimaryMac, self.primary_mac.as_ref().err()),
            ],
        })
    }
}

/// `licd/<domain>/v1` + NUL + value, hashed; the first `digits` hex digits.
fn digest(domain: &str, value: &str, digits: usize) -> String {
    let h = Sha256::new()
        .chain_update(b"licd/")
        .chain_update(domain.as_bytes())
        .chain_update(b"/v1\0")
        .chain_update(value.as_bytes())
        .finalize();
    h.iter()
        .flat_map(|b| [b >> 4, b & 0x0f])
        .take(digits)
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect()
}

fn derived_id(fact: FingerprintFact, value: &str) -> DeviceId {
    let hash = digest(
        &format!("device-id/{}", fact.domain()),
        value,
        DERIVED_ID_HEX_DIGITS,
    );
    // A letter, '-' and hex digits always form a valid id; a failure here is a bug.
    DeviceId::new(format!("{}-{hash}", fact.id_prefix()))
        .unwrap_or_else(|e| unreachable!("derived device id is invalid: {e}"))
}

fn describe_read_error(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} not found", path.display()),
        std::io::ErrorKind::PermissionDenied => {
            format!("{} not readable (permission denied)", path.display())
        }
        _ => format!("{}: {e}", path.display()),
    }
}

/// The machine id, lower-cased; refuses empty, uninitialised and all-zero ids (a container
/// image built with an empty `/etc/machine-id` must not give every container the same id).
fn read_machine_id(root: &HostRoot) -> Result<String, String> {
    let mut reasons = Vec::new();
    for path in [root.machine_id(), root.dbus_machine_id()] {
        match read_small(&path) {
            Ok(raw) => {
                let v = raw.trim().to_ascii_lowercase();
                if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    if v.bytes().all(|b| b == b'0') {
                        reasons.push(format!("{} is all zeros", path.display()));
                    } else {
                        return Ok(v);
                    }
                } else if v.is_empty() || v == "uninitialized" {
                    reasons.push(format!("{} is not initialised", path.display()));
                } else {
                    reasons.push(format!("{} is not 32 hex digits", path.display()));
                }
            }
            Err(e) => reasons.push(describe_read_error(&path, &e)),
        }
    }
    Err(reasons.join(", "))
}

/// The DMI product UUID, lower-cased; refuses malformed and well-known placeholder UUIDs.
fn read_product_uuid(root: &HostRoot) -> Result<String, String> {
    let path = root.dmi_dir().join("product_uuid");
    let raw = read_small(&path).map_err(|e| describe_read_error(&path, &e))?;
    let v = raw.trim().to_ascii_lowercase();
    let well_formed = v.len() == 36
        && v.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if !well_formed {
        return Err(format!("{} is not a UUID", path.display()));
    }
    if PLACEHOLDER_UUIDS.contains(&v.as_str()) {
        return Err(format!("{} is a placeholder ({v})", path.display()));
    }
    Ok(v)
}

/// The primary MAC: the first interface by name that is backed by a device, of Ethernet type,
/// whose address is a permanent-looking non-zero unicast MAC.
fn read_primary_mac(root: &HostRoot) -> Result<(String, String), String> {
    let dir = root.net_dir();
    let entries = fs::read_dir(&dir).map_err(|e| describe_read_error(&dir, &e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let ifdir = dir.join(&name);
        // Virtual interfaces (lo, bridges, bonds, veth, tun, docker0, wireguard) have no
        // `device` link; their MACs are made up and change with configuration.
        if name == "lo" || !ifdir.join("device").exists() {
            continue;
        }
        // ARPHRD_ETHER (1) only: Wi-Fi is Ethernet-typed too; InfiniBand and CAN are not.
        if let Ok(t) = read_small(&ifdir.join("type")) {
            if t.trim() != "1" {
                continue;
            }
        }
        // NET_ADDR_RANDOM (1): a MAC the kernel made up at boot changes with every boot.
        if let Ok(t) = read_small(&ifdir.join("addr_assign_type")) {
            if t.trim() == "1" {
                continue;
            }
        }
        let Ok(addr) = read_small(&ifdir.join("address")) else {
            continue;
        };
        if let Some(mac) = parse_mac(addr.trim()) {
            let unicast = mac[0] & 0x01 == 0;
            if unicast && mac != [0u8; 6] {
                let text = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                return Ok((name, text));
            }
        }
    }
    Err(format!(
        "no physical interface with a usable MAC in {}",
        dir.display()
    ))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const MACHINE_ID: &str = "4c4c4544004a3510804cb2c04f4e3232";
    const UUID: &str = "4C4C4544-004A-3510-804C-B2C04F4E3232";

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn root(&self) -> HostRoot {
            HostRoot::at(self.dir.path())
        }
        fn write(&self, rel: &str, content: &str) -> &Self {
            let p = self.dir.path().join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, content).expect("write");
            self
        }
        fn nic(&self, name: &str, mac: &str, physical: bool) -> &Self {
            self.write(
                &format!("sys/class/net/{name}/address"),
                &format!("{mac}\n"),
            );
            if physical {
                fs::create_dir_all(self.dir.path().join(format!("sys/class/net/{name}/device")))
                    .expect("mkdir");
            }
            self
        }
        fn resolve(&self) -> Result<ResolvedDeviceId, DeviceIdError> {
            resolve_device_id(None, &self.root())
        }
    }

    #[test]
    fn machine_id_wins_over_dmi_uuid_and_mac() {
        let h = Host::new();
        h.write("etc/machine-id", &format!("{MACHINE_ID}\n"))
            .write("sys/class/dmi/id/product_uuid", UUID)
            .nic("eth0", "00:11:22:33:44:55", true);
        let r = h.resolve().expect("id");
        assert_eq!(r.source, DeviceIdSource::MachineId);
        assert!(r.id.as_str().starts_with("m-"), "{}", r.id);
        assert_eq!(r.id.as_str().len(), 2 + DERIVED_ID_HEX_DIGITS);
        assert!(r.fingerprint.machine_id.is_some());
        assert!(r.fingerprint.dmi_product_uuid.is_some());
        assert!(r.fingerprint.primary_mac.is_some());
    }

    #[test]
    fn derived_id_never_contains_the_raw_machine_id() {
        let h = Host::new();
        h.write("etc/machine-id", MACHINE_ID);
        let r = h.resolve().expect("id");
        assert!(!r.id.as_str().contains(&MACHINE_ID[..8]));
        let json = serde_json::to_string(&r).expect("json");
        assert!(!json.contains(&MACHINE_ID[..8]), "{json}");
    }

    #[test]
    fn dmi_uuid_is_used_when_machine_id_is_missing_or_uninitialised() {
        let h = Host::new();
        h.write("etc/machine-id", "uninitialized\n")
            .write("sys/class/dmi/id/product_uuid", UUID)
            .nic("eth0", "00:11:22:33:44:55", true);
        let r = h.resolve().expect("id");
        assert_eq!(r.source, DeviceIdSource::DmiProductUuid);
        assert!(r.id.as_str().starts_with("u-"));
    }

    #[test]
    fn dbus_machine_id_is_the_fallback_for_etc_machine_id() {
        let h = Host::new();
        h.write("var/lib/dbus/machine-id", MACHINE_ID);
        let from_dbus = h.resolve().expect("id");
        let h2 = Host::new();
        h2.write("etc/machine-id", MACHINE_ID);
        assert_eq!(from_dbus.source, DeviceIdSource::MachineId);
        assert_eq!(from_dbus.id, h2.resolve().expect("id").id);
    }

    #[test]
    fn placeholder_uuid_and_all_zero_machine_id_are_skipped_for_the_mac() {
        let h = Host::new();
        h.write("etc/machine-id", &"0".repeat(32))
            .write(
                "sys/class/dmi/id/product_uuid",
                "03000200-0400-0500-0006-000700080009",
            )
            .nic("eth0", "00:11:22:33:44:55", true);
        let r = h.resolve().expect("id");
        assert_eq!(
            r.source,
            DeviceIdSource::PrimaryMac {
                interface: "eth0".into()
            }
        );
        assert!(r.id.as_str().starts_with("n-"));
    }

    #[test]
    fn primary_mac_skips_loopback_virtual_zero_and_random_interfaces() {
        let h = Host::new();
        h.nic("lo", "00:00:00:00:00:00", false)
            .nic("br0", "02:42:ac:11:00:01", false) // virtual: no device link
            .nic("eth0", "00:00:00:00:00:00", true) // zero address
            .nic("eth1", "aa:bb:cc:dd:ee:01", true)
            .write("sys/class/net/eth1/addr_assign_type", "1\n") // random
            .nic("eth2", "01:00:5e:00:00:01", true) // multicast
            .nic("wlan0", "3C:22:FB:12:34:56", true)
            .nic("eth3", "garbage", true);
        let r = h.resolve().expect("id");
        assert_eq!(
            r.source,
            DeviceIdSource::PrimaryMac {
                interface: "wlan0".into()
            }
        );
        // Case of the sysfs text does not matter.
        let h2 = Host::new();
        h2.nic("eth9", "3c:22:fb:12:34:56", true);
        assert_eq!(h2.resolve().expect("id").id, r.id);
    }

    #[test]
    fn primary_mac_is_the_first_usable_interface_by_name() {
        let h = Host::new();
        h.nic("wlp2s0", "00:11:22:33:44:66", true)
            .nic("enp0s31f6", "00:11:22:33:44:55", true);
        assert_eq!(
            h.resolve().expect("id").source,
            DeviceIdSource::PrimaryMac {
                interface: "enp0s31f6".into()
            }
        );
    }

    #[test]
    fn derived_id_is_stable_across_runs_and_case() {
        let h = Host::new();
        h.write("etc/machine-id", MACHINE_ID);
        let a = h.resolve().expect("id");
        let b = h.resolve().expect("id");
        assert_eq!(a, b);
        let h2 = Host::new();
        h2.write(
            "etc/machine-id",
            &format!("  {}\n", MACHINE_ID.to_uppercase()),
        );
        assert_eq!(h2.resolve().expect("id").id, a.id);
        // Pinned (computed independently: Python's hashlib.sha256 over
        // "licd/device-id/machine-id/v1\0" + the machine id): a change of the derivation
        // would silently rename every device in the field.
        assert_eq!(a.id.as_str(), "m-19f419116feff98b9e47");
        assert_eq!(
            a.fingerprint.machine_id.as_deref(),
            Some("ab34928c7eb9355c")
        );
    }

    #[test]
    fn different_sources_of_the_same_text_give_different_ids() {
        // Domain separation: a DMI UUID equal to some machine id must not collide with it.
        assert_ne!(
            derived_id(FingerprintFact::MachineId, "x").as_str()[2..],
            derived_id(FingerprintFact::DmiProductUuid, "x").as_str()[2..]
        );
    }

    #[test]
    fn configured_id_overrides_host_facts_but_fingerprint_is_still_collected() {
        let h = Host::new();
        h.write("etc/machine-id", MACHINE_ID);
        let r = resolve_device_id(Some("ap-0042"), &h.root()).expect("id");
        assert_eq!(r.id.as_str(), "ap-0042");
        assert_eq!(r.source, DeviceIdSource::Config);
        assert!(r.fingerprint.machine_id.is_some());
    }

    #[test]
    fn configured_id_is_validated() {
        let h = Host::new();
        h.write("etc/machine-id", MACHINE_ID);
        assert_eq!(
            resolve_device_id(Some("licd/v1/#"), &h.root()),
            Err(DeviceIdError::InvalidOverride {
                value: "licd/v1/#".into(),
                reason: IdError::BadChar('/'),
            })
        );
        assert!(matches!(
            resolve_device_id(Some(""), &h.root()),
            Err(DeviceIdError::InvalidOverride {
                reason: IdError::Empty,
                ..
            })
        ));
    }

    #[test]
    fn no_usable_fact_is_an_error_that_says_what_to_configure() {
        let h = Host::new();
        h.write("etc/machine-id", "")
            .nic("docker0", "02:42:ac:11:00:01", false);
        let e = h.resolve().expect_err("no facts");
        let DeviceIdError::NoStableFacts { reasons } = &e else {
            panic!("wrong error {e:?}");
        };
        assert_eq!(reasons.len(), 3);
        let msg = e.to_string();
        assert!(msg.contains("identity.device_id"), "{msg}");
        assert!(msg.contains("not initialised"), "{msg}");
    }

    #[test]
    fn fingerprint_drift_names_the_changed_facts() {
        let h = Host::new();
        h.write("etc/machine-id", MACHINE_ID)
            .nic("eth0", "00:11:22:33:44:55", true);
        let before = HostFingerprint::collect(&h.root());
        assert!(before.drift(&before).is_empty());
        h.nic("eth0", "00:11:22:33:44:77", true)
            .write("sys/class/dmi/id/product_uuid", UUID);
        let after = HostFingerprint::collect(&h.root());
        assert_eq!(
            after.drift(&before),
            vec![FingerprintFact::DmiProductUuid, FingerprintFact::PrimaryMac]
        );
        assert_ne!(after.summary(), before.summary());
        // It round-trips through JSON so diag can store it.
        let json = serde_json::to_string(&after).expect("json");
        assert_eq!(
            serde_json::from_str::<HostFingerprint>(&json).expect("parse"),
            after
        );
    }
}
