//! The payloads of protocol v1, encoded with postcard inside a signed [`crate::Envelope`].
//!
//! Field order is wire order: postcard has no field names, so a change here is a wire change
//! (the golden vectors in `tests/vectors/` catch one made by accident). New fields need a new
//! protocol version.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::Error;
use crate::id::{DeviceId, LicenseId, ServiceName, Sku, TenantId};
use crate::keys::{KeyId, PublicKey};
use crate::limits::{MAX_SERVICES, MAX_TEXT_LEN};
use crate::UnixTime;

/// What a device tells the controller about itself. Signed by the device key, which is also
/// carried inside so the controller can pin it on first contact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceReport {
    /// The device's id (also its topic level).
    pub device: DeviceId,
    /// The tenant the device belongs to (also its topic level).
    pub tenant: TenantId,
    /// The device's ed25519 public key; must equal the envelope's signer.
    pub device_key: PublicKey,
    /// Hardware model, e.g. `AP-515`.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Product class (`wireless`, `switch`, `server`, …), as the controller's catalogue names it.
    pub product_class: String,
    /// Firmware (or OS) version.
    pub firmware_version: String,
    /// licd agent version.
    pub agent_version: String,
    /// Number of running VMs, `None` when there is no probe or the probe failed.
    pub vm_count: Option<u32>,
    /// Services the device wants licensed.
    pub services_wanted: Vec<ServiceName>,
    /// `seq` of the bundle the device holds (0 = none).
    pub bundle_seq: u64,
    /// The device's evaluation time when it sent this (its trusted time, not the raw clock).
    pub clock: UnixTime,
    /// Seconds since boot.
    pub uptime: u64,
    /// The device saw its wall clock set back behind its high-water mark.
    pub clock_rollback: bool,
}

/// The licenses a controller grants one device. Signed by a controller signing key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantBundle {
    /// The device it is for.
    pub device: DeviceId,
    /// Key id of the device key it is bound to; a bundle copied to another device (or kept
    /// across a key change) does not verify there.
    pub device_key: KeyId,
    /// Tenant of the device.
    pub tenant: TenantId,
    /// Strictly increasing per device; a device accepts only a higher `seq` than it holds.
    pub seq: u64,
    /// When the controller issued it.
    pub issued_at: UnixTime,
    /// When the device should report again (the controller's refresh schedule).
    pub refresh_after: UnixTime,
    /// Services granted. A service missing from a newer bundle is revoked.
    pub grants: Vec<ServiceGrant>,
    /// Services the device asked for and does not get, with the controller's reason
    /// (informational: a withheld service is not granted either way).
    pub withheld: Vec<Withheld>,
}

/// One service's license in a [`GrantBundle`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceGrant {
    /// The service.
    pub service: ServiceName,
    /// License or subscription id on the controller.
    pub license: LicenseId,
    /// SKU the seat comes from.
    pub sku: Sku,
    /// Start of the entitlement term.
    pub not_before: UnixTime,
    /// End of the entitlement term.
    pub not_after: UnixTime,
    /// The device must hear from the controller again by then.
    pub lease_until: UnixTime,
    /// Seconds the service keeps running after the lease or the term ends (or while over its
    /// VM allowance).
    pub grace: u64,
    /// VMs this license covers on this host, for per-VM licenses.
    pub vm_allowance: Option<u32>,
}

/// A service the controller did not grant, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Withheld {
    /// The service.
    pub service: ServiceName,
    /// Why.
    pub reason: WithheldReason,
}

/// Why a controller withholds a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WithheldReason {
    /// No subscription or license covers the service for this customer.
    NotEntitled,
    /// Auto-licensing is paused: fewer seats than devices that need them.
    SeatsExhausted,
    /// An operator removed the license from the device.
    Unassigned,
    /// The device's tenant is not known to the controller.
    UnknownTenant,
}

fn check_text(s: &str, what: &'static str) -> Result<(), Error> {
    if s.len() > MAX_TEXT_LEN {
        return Err(Error::Invalid(what));
    }
    // Control characters would let a device forge lines in the controller's logs.
    if s.chars().any(char::is_control) {
        return Err(Error::Invalid("control character in a text field"));
    }
    Ok(())
}

impl DeviceReport {
    /// Checks the rules postcard cannot: text lengths and service count.
    pub fn validate(&self) -> Result<(), Error> {
        check_text(&self.model, "model longer than 128 bytes")?;
        check_text(&self.serial, "serial longer than 128 bytes")?;
        check_text(&self.product_class, "product class longer than 128 bytes")?;
        check_text(
            &self.firmware_version,
            "firmware version longer than 128 bytes",
        )?;
        check_text(&self.agent_version, "agent version longer than 128 bytes")?;
        if self.services_wanted.len() > MAX_SERVICES {
            return Err(Error::Invalid("more than 64 services wanted"));
        }
        Ok(())
    }
}

impl GrantBundle {
    /// Checks the rules postcard cannot: counts, unique services, ordered time windows.
    pub fn validate(&self) -> Result<(), Error> {
        if self.grants.len() > MAX_SERVICES || self.withheld.len() > MAX_SERVICES {
            return Err(Error::Invalid("more than 64 services in a bundle"));
        }
        for (i, w) in self.withheld.iter().enumerate() {
            if self.withheld[..i].iter().any(|o| o.service == w.service)
                || self.grant(&w.service).is_some()
            {
                return Err(Error::Invalid(
                    "a service is withheld twice or both granted and withheld",
                ));
            }
        }
        for (i, g) in self.grants.iter().enumerate() {
            if self.grants[..i].iter().any(|o| o.service == g.service) {
                return Err(Error::Invalid("a service is granted twice"));
            }
            if g.not_after < g.not_before {
                return Err(Error::Invalid("a grant's term ends before it starts"));
            }
        }
        Ok(())
    }

    /// The grant for `service`, if any.
    pub fn grant(&self, service: &ServiceName) -> Option<&ServiceGrant> {
        self.grants.iter().find(|g| &g.service == service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn bundle() -> GrantBundle {
        GrantBundle {
            device: DeviceId::new("d").unwrap(),
            device_key: PublicKey([1; 32]).id(),
            tenant: TenantId::new("t").unwrap(),
            seq: 1,
            issued_at: 0,
            refresh_after: 0,
            grants: vec![ServiceGrant {
                service: ServiceName::new("wifi").unwrap(),
                license: LicenseId::new("l").unwrap(),
                sku: Sku::new("s").unwrap(),
                not_before: 0,
                not_after: 10,
                lease_until: 5,
                grace: 1,
                vm_allowance: None,
            }],
            withheld: vec![],
        }
    }

    #[test]
    fn a_service_both_granted_and_withheld_is_invalid() {
        let mut b = bundle();
        assert_eq!(b.validate(), Ok(()));
        b.withheld.push(Withheld {
            service: ServiceName::new("wifi").unwrap(),
            reason: WithheldReason::Unassigned,
        });
        assert!(matches!(b.validate(), Err(Error::Invalid(_))));
    }

    #[test]
    fn control_characters_in_report_texts_are_invalid() {
        assert_eq!(check_text("AP-515 rev.2", "x"), Ok(()));
        assert!(check_text("AP\n2024-01-01 forged log line", "x").is_err());
        assert!(check_text("\u{1b}[31m", "x").is_err());
    }
}
