//! Fixtures shared by the protocol tests: deterministic keys from fixed seeds, a fixed "now",
//! a typical device report and a typical 5-service grant bundle. The golden vectors in
//! `tests/vectors/` are made from exactly these values, so changing one here is a wire change
//! the golden test reports.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use licd_protocol::{
    DeviceId, DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceGrant, ServiceName,
    SignerCertificate, Sku, TenantId, TrustStore, UnixTime, Withheld, WithheldReason,
};

/// Seed of the root key the agent pins.
pub const ROOT_SEED: [u8; 32] = [0x11; 32];
/// Seed of the controller signing key the root certifies.
pub const SIGNING_SEED: [u8; 32] = [0x22; 32];
/// Seed of the device key.
pub const DEVICE_SEED: [u8; 32] = [0x33; 32];
/// Seed of a key nobody trusts.
pub const STRANGER_SEED: [u8; 32] = [0x44; 32];

/// 2026-01-01T00:00:00Z: the time the vectors are evaluated at.
pub const NOW: UnixTime = 1_767_225_600;
/// 2025-01-01T00:00:00Z: the signing key's certificate starts.
pub const CERT_NOT_BEFORE: UnixTime = 1_735_689_600;
/// 2027-01-01T00:00:00Z: the signing key's certificate ends (exclusive).
pub const CERT_NOT_AFTER: UnixTime = 1_798_761_600;

const DAY: u64 = 86_400;

pub fn root_key() -> SigningKey {
    SigningKey::from_bytes(&ROOT_SEED)
}

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&SIGNING_SEED)
}

pub fn device_key() -> SigningKey {
    SigningKey::from_bytes(&DEVICE_SEED)
}

pub fn stranger_key() -> SigningKey {
    SigningKey::from_bytes(&STRANGER_SEED)
}

pub fn public(key: &SigningKey) -> PublicKey {
    PublicKey::from(&key.verifying_key())
}

/// The signing key's certificate, issued by the root.
pub fn signing_cert() -> SignerCertificate {
    SignerCertificate::issue(
        &root_key(),
        public(&signing_key()),
        CERT_NOT_BEFORE,
        CERT_NOT_AFTER,
    )
}

/// A trust store pinning the root, as an agent holds it.
pub fn trust() -> TrustStore {
    TrustStore::new(vec![public(&root_key())])
}

pub fn tenant() -> TenantId {
    TenantId::new("acme-retail").expect("valid id")
}

pub fn device() -> DeviceId {
    DeviceId::new("ap-0042").expect("valid id")
}

pub fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid id")
}

/// The five services of the typical AP.
pub const SERVICES: [&str; 5] = ["wifi-ap", "wids", "poe-plus", "guest-portal", "analytics"];

/// A typical report of an access point that holds bundle 41 and wants five services.
pub fn typical_report() -> DeviceReport {
    DeviceReport {
        device: device(),
        tenant: tenant(),
        device_key: public(&device_key()),
        model: "AP-515".into(),
        serial: "CNF7J0X2KQ".into(),
        product_class: "wireless".into(),
        firmware_version: "10.4.1.0".into(),
        agent_version: "0.1.0".into(),
        vm_count: None,
        services_wanted: SERVICES.iter().map(|s| svc(s)).collect(),
        bundle_seq: 41,
        clock: NOW,
        uptime: 3 * DAY + 7_321,
        clock_rollback: false,
    }
}

fn grant(service: &str, license: &str, sku: &str, vm_allowance: Option<u32>) -> ServiceGrant {
    ServiceGrant {
        service: svc(service),
        license: LicenseId::new(license).expect("valid id"),
        sku: Sku::new(sku).expect("valid id"),
        not_before: 1_748_736_000, // 2025-06-01
        not_after: 1_780_272_000,  // 2026-06-01
        lease_until: NOW + 7 * DAY,
        grace: 14 * DAY,
        vm_allowance,
    }
}

/// A typical bundle granting the five services the typical report asks for.
pub fn five_service_bundle() -> GrantBundle {
    GrantBundle {
        device: device(),
        device_key: public(&device_key()).id(),
        tenant: tenant(),
        seq: 42,
        issued_at: NOW,
        refresh_after: NOW + DAY,
        grants: vec![
            grant("wifi-ap", "sub-7f3a9c01", "LIC-AP-FOUNDATION-1Y", None),
            grant("wids", "sub-7f3a9c01", "LIC-AP-SECURITY-1Y", None),
            grant("poe-plus", "lic-000184", "LIC-POE-PLUS", None),
            grant("guest-portal", "sub-7f3a9c02", "LIC-GUEST-1Y", None),
            grant("analytics", "sub-7f3a9c03", "LIC-ANALYTICS-1Y", None),
        ],
        withheld: vec![],
    }
}

/// A bundle for a hypervisor host exercising the rest of the encoding: a VM allowance, a
/// withheld service of every reason.
pub fn withheld_bundle() -> GrantBundle {
    GrantBundle {
        device: DeviceId::new("hv-07").expect("valid id"),
        device_key: public(&device_key()).id(),
        tenant: tenant(),
        seq: 7,
        issued_at: NOW,
        refresh_after: NOW + DAY,
        grants: vec![grant("vm-runtime", "snow-991", "SRV-VM-PACK-8", Some(8))],
        withheld: vec![
            Withheld {
                service: svc("backup"),
                reason: WithheldReason::NotEntitled,
            },
            Withheld {
                service: svc("dr"),
                reason: WithheldReason::SeatsExhausted,
            },
            Withheld {
                service: svc("monitoring"),
                reason: WithheldReason::Unassigned,
            },
            Withheld {
                service: svc("ha"),
                reason: WithheldReason::UnknownTenant,
            },
        ],
    }
}
