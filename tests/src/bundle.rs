//! [`BundleBuilder`]: signed grant bundles for tests, from defaults a test overrides one field
//! at a time — instead of a `GrantBundle { … ServiceGrant { … } }` literal per file.
//!
//! Defaults (what the test controller grants, see [`crate::controller::bundle_for`]): tenant
//! `acme`, device `ap-1` with the key of [`test_device_key`], `seq` 1, issued at `now`, one
//! grant for `wifi` from license `lic-test`, SKU `SKU-TEST`, term from a minute before `now`
//! to a year after, a lease of an hour with 10 minutes of grace, refresh at half the lease,
//! signed by [`ControllerKeys::fixed`]. Ids are test constants: an invalid one panics (a bug
//! in the test, not an input).

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_bundle;
use licd_protocol::{
    DeviceId, DeviceReport, GrantBundle, KeyId, LicenseId, PublicKey, ServiceGrant, ServiceName,
    SignerCertificate, Sku, TenantId, Withheld, WithheldReason,
};

use crate::controller::ControllerKeys;

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// A device key for bundles that no running agent checks (fixed seed).
pub fn test_device_key() -> SigningKey {
    SigningKey::from_bytes(&[13; 32])
}

/// Builds a [`GrantBundle`] and seals it; every setter takes and returns the builder.
#[derive(Clone)]
pub struct BundleBuilder {
    tenant: TenantId,
    device: DeviceId,
    device_key: KeyId,
    seq: u64,
    issued_at: u64,
    refresh_after: Option<u64>,
    services: Vec<ServiceName>,
    extra_grants: Vec<ServiceGrant>,
    withheld: Vec<Withheld>,
    license: LicenseId,
    sku: Sku,
    not_before: u64,
    not_after: u64,
    lease: u64,
    grace: u64,
    vm_allowance: Option<u32>,
    signing: SigningKey,
    cert: SignerCertificate,
}

impl BundleBuilder {
    /// The defaults above, issued at `now`.
    pub fn new(now: u64) -> Self {
        let keys = ControllerKeys::fixed();
        Self {
            tenant: TenantId::new("acme").expect("valid id"),
            device: DeviceId::new("ap-1").expect("valid id"),
            device_key: PublicKey::from(&test_device_key().verifying_key()).id(),
            seq: 1,
            issued_at: now,
            refresh_after: None,
            services: vec![ServiceName::new("wifi").expect("valid id")],
            extra_grants: vec![],
            withheld: vec![],
            license: LicenseId::new("lic-test").expect("valid id"),
            sku: Sku::new("SKU-TEST").expect("valid id"),
            not_before: now.saturating_sub(60),
            not_after: now + 365 * DAY,
            lease: 3_600,
            grace: 600,
            vm_allowance: None,
            signing: keys.signing,
            cert: keys.cert,
        }
    }

    /// For the device, key and tenant of `report` (a real agent's first report), at `now`.
    pub fn for_report(report: &DeviceReport, now: u64) -> Self {
        Self::new(now)
            .tenant(report.tenant.as_str())
            .device(report.device.as_str())
            .device_key(report.device_key.id())
    }

    /// Tenant.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = TenantId::new(tenant).expect("valid tenant id");
        self
    }

    /// Device id.
    pub fn device(mut self, device: &str) -> Self {
        self.device = DeviceId::new(device).expect("valid device id");
        self
    }

    /// Id of the device key the bundle is bound to.
    pub fn device_key(mut self, key: KeyId) -> Self {
        self.device_key = key;
        self
    }

    /// `seq`.
    pub fn seq(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    /// Issued at `t`; the term, lease and refresh move with it unless set.
    pub fn issued_at(mut self, t: u64) -> Self {
        let (before, after) = (
            self.issued_at - self.not_before,
            self.not_after - self.issued_at,
        );
        self.issued_at = t;
        self.not_before = t.saturating_sub(before);
        self.not_after = t + after;
        self
    }

    /// When the device should report again (default: half the lease after issue).
    pub fn refresh_after(mut self, t: u64) -> Self {
        self.refresh_after = Some(t);
        self
    }

    /// Grants exactly these services (each with the builder's license, term and lease).
    pub fn services(mut self, services: &[&str]) -> Self {
        self.services = services
            .iter()
            .map(|s| ServiceName::new(*s).expect("valid service name"))
            .collect();
        self
    }

    /// Grants `service` too.
    pub fn service(mut self, service: &str) -> Self {
        self.services
            .push(ServiceName::new(service).expect("valid service name"));
        self
    }

    /// Grants nothing (a revocation of everything held).
    pub fn no_grants(mut self) -> Self {
        self.services.clear();
        self.extra_grants.clear();
        self
    }

    /// Adds a grant exactly as given (after the services' grants).
    pub fn grant(mut self, grant: ServiceGrant) -> Self {
        self.extra_grants.push(grant);
        self
    }

    /// Lists `service` as withheld for `reason`.
    pub fn withheld(mut self, service: &str, reason: WithheldReason) -> Self {
        self.withheld.push(Withheld {
            service: ServiceName::new(service).expect("valid service name"),
            reason,
        });
        self
    }

    /// License id of the grants.
    pub fn license(mut self, license: &str) -> Self {
        self.license = LicenseId::new(license).expect("valid license id");
        self
    }

    /// SKU of the grants.
    pub fn sku(mut self, sku: &str) -> Self {
        self.sku = Sku::new(sku).expect("valid SKU");
        self
    }

    /// Entitlement term of the grants.
    pub fn term(mut self, not_before: u64, not_after: u64) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Lease length from issue, seconds.
    pub fn lease(mut self, secs: u64) -> Self {
        self.lease = secs;
        self
    }

    /// Grace length, seconds.
    pub fn grace(mut self, secs: u64) -> Self {
        self.grace = secs;
        self
    }

    /// VM allowance of the grants.
    pub fn vm_allowance(mut self, vms: Option<u32>) -> Self {
        self.vm_allowance = vms;
        self
    }

    /// Signed by `keys`' signing key with its certificate.
    pub fn signed_by(self, keys: &ControllerKeys) -> Self {
        self.signed_with(&keys.signing, &keys.cert)
    }

    /// Signed by `signing` presenting `cert` (a forged or expired certificate, say).
    pub fn signed_with(mut self, signing: &SigningKey, cert: &SignerCertificate) -> Self {
        self.signing = signing.clone();
        self.cert = cert.clone();
        self
    }

    /// The bundle.
    pub fn build(&self) -> GrantBundle {
        let grant = |service: &ServiceName| ServiceGrant {
            service: service.clone(),
            license: self.license.clone(),
            sku: self.sku.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            lease_until: self.issued_at + self.lease,
            grace: self.grace,
            vm_allowance: self.vm_allowance,
        };
        GrantBundle {
            device: self.device.clone(),
            device_key: self.device_key,
            tenant: self.tenant.clone(),
            seq: self.seq,
            issued_at: self.issued_at,
            refresh_after: self
                .refresh_after
                .unwrap_or(self.issued_at + self.lease / 2),
            grants: self
                .services
                .iter()
                .map(grant)
                .chain(self.extra_grants.iter().cloned())
                .collect(),
            withheld: self.withheld.clone(),
        }
    }

    /// The bundle, sealed (signed envelope bytes as they go on the wire).
    pub fn seal(&self) -> Vec<u8> {
        seal_bundle(&self.build(), &self.signing, &self.cert)
    }
}

#[cfg(test)]
mod tests {
    use licd_protocol::envelope::open_bundle;
    use licd_protocol::TrustStore;

    use super::*;

    #[test]
    fn the_defaults_make_a_bundle_the_fixed_root_accepts() {
        let now = 1_800_000_000;
        let raw = BundleBuilder::new(now).seq(7).seal();
        let trust = TrustStore::new(vec![PublicKey::from(
            &ControllerKeys::fixed().root.verifying_key(),
        )]);
        let (bundle, _) = open_bundle(&raw, &trust, now).expect("accepted");
        assert_eq!(bundle.seq, 7);
        assert_eq!(bundle.grants.len(), 1);
        assert_eq!(bundle.grants[0].lease_until, now + 3_600);
        assert_eq!(bundle.refresh_after, now + 1_800);
    }

    #[test]
    fn moving_the_issue_time_moves_the_term_and_lease_with_it() {
        let b = BundleBuilder::new(1_000_000)
            .issued_at(2_000_000)
            .lease(10)
            .build();
        assert_eq!(b.grants[0].not_before, 2_000_000 - 60);
        assert_eq!(b.grants[0].not_after, 2_000_000 + 365 * DAY);
        assert_eq!(b.grants[0].lease_until, 2_000_010);
    }

    #[test]
    fn a_bundle_signed_by_another_root_is_refused_by_the_fixed_one() {
        let rogue = ControllerKeys::from_seeds(66, 67);
        let raw = BundleBuilder::new(1_000_000).signed_by(&rogue).seal();
        let trust = TrustStore::new(vec![PublicKey::from(
            &ControllerKeys::fixed().root.verifying_key(),
        )]);
        assert!(open_bundle(&raw, &trust, 1_000_000).is_err());
    }
}
