//! Licensing policy carried in the signed grant, and usage reported back (docs/PROTOCOL.md §17).
//!
//! Two kinds appended to v1, like the diagnostic and file kinds: bytes of kinds 1–9 are
//! unchanged, and a build that predates them refuses them with [`Error::UnknownKind`].
//!
//! - [`PolicyBundle`] (kind 10, signed by a certified controller key, like a bundle): a
//!   [`GrantBundle`] — byte for byte the payload of a kind-2 bundle — followed by a policy per
//!   service ([`ServicePolicy`]: expiry strategy, overage tolerance, expiring-soon thresholds)
//!   and the report seq the controller acknowledges (`usage_ack`).
//! - [`ExtendedReport`] (kind 11, signed by the device key, like a report): a [`DeviceReport`]
//!   followed by the report's seq, the usage accumulated since the last acknowledged report
//!   ([`Usage`]) and the compliance the device sees per service ([`ServiceCompliance`]).
//!
//! A device that sends extended reports understands policy bundles; a controller answers a
//! plain report with a plain bundle. Which rules the policy drives is the agent's decision
//! (`licd-core`); this module holds the types, their content rules, sealing and opening.

use alloc::vec::Vec;

use ed25519_dalek::SigningKey;

use crate::cert::SignerCertificate;
use crate::envelope::{seal, Envelope, MessageKind};
use crate::error::Error;
use crate::id::ServiceName;
use crate::limits::{MAX_OVERAGE_TOLERANCE_PCT, MAX_SERVICES, MAX_WARN_THRESHOLDS};
use crate::messages::{DeviceReport, GrantBundle};
use crate::trust::{CertMemo, SignerInfo, TrustStore};
use crate::UnixTime;

/// What happens to a service when its term ends, its lease lapses or it is revoked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Strategy {
    /// Today's rule: licensed, then `grace`, then unlicensed. The default for a service with
    /// no policy entry.
    #[default]
    Restrict,
    /// The service never stops for licensing: after grace it stays allowed to run, shown
    /// non-compliant with the reason (on the device and in reports).
    Advisory,
    /// No grace at term end or revocation: the service stops at once.
    Immediate,
}

impl Strategy {
    /// The name in status output and JSON (`restrict`, `advisory`, `immediate`).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Restrict => "restrict",
            Strategy::Advisory => "advisory",
            Strategy::Immediate => "immediate",
        }
    }
}

/// One service's policy in a [`PolicyBundle`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServicePolicy {
    /// The service; it must be granted by the bundle.
    pub service: ServiceName,
    /// What happens at term end, lease lapse and revocation.
    pub strategy: Strategy,
    /// For a grant with a VM allowance: how many VMs, in percent of the allowance, the
    /// service may run while staying licensed (with an overage warning). 100 = no tolerance;
    /// below 100 is malformed; ignored on a grant without an allowance.
    pub overage_tolerance_pct: u32,
    /// Seconds before the term ends at which the device warns (a log line, a hook event, a
    /// report flag), once per threshold and term. Strictly descending, each above zero, at
    /// most [`MAX_WARN_THRESHOLDS`].
    pub warn_before: Vec<u64>,
}

impl ServicePolicy {
    /// The policy of a service that has no entry: restrict, no tolerance, no warnings —
    /// exactly the behaviour of a plain bundle.
    pub fn default_for(service: ServiceName) -> Self {
        Self {
            service,
            strategy: Strategy::Restrict,
            overage_tolerance_pct: 100,
            warn_before: Vec::new(),
        }
    }

    /// The most VMs `allowance` covers under this tolerance (`allowance × pct / 100`, rounded
    /// down, never below `allowance`).
    pub fn tolerated_vms(&self, allowance: u32) -> u32 {
        let t = u64::from(allowance) * u64::from(self.overage_tolerance_pct) / 100;
        u32::try_from(t).unwrap_or(u32::MAX).max(allowance)
    }

    /// Checks the rules postcard cannot: tolerance range and threshold order.
    pub fn validate(&self) -> Result<(), Error> {
        if self.overage_tolerance_pct < 100 {
            return Err(Error::Invalid("overage tolerance below 100 %"));
        }
        if self.overage_tolerance_pct > MAX_OVERAGE_TOLERANCE_PCT {
            return Err(Error::Invalid("overage tolerance above 1000 %"));
        }
        if self.warn_before.len() > MAX_WARN_THRESHOLDS {
            return Err(Error::Invalid("more than 8 expiring-soon thresholds"));
        }
        if self.warn_before.contains(&0) {
            return Err(Error::Invalid("an expiring-soon threshold of zero"));
        }
        if self.warn_before.windows(2).any(|w| w[0] <= w[1]) {
            return Err(Error::Invalid(
                "expiring-soon thresholds not strictly descending",
            ));
        }
        Ok(())
    }
}

/// A grant bundle with licensing policy and a usage acknowledgement. Signed by a certified
/// controller signing key, exactly like a [`GrantBundle`] (kind 2); the agent's acceptance
/// rules apply to `bundle` unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyBundle {
    /// The bundle: its encoding is exactly a kind-2 payload.
    pub bundle: GrantBundle,
    /// Policies of granted services, each at most once. A granted service without an entry
    /// follows [`ServicePolicy::default_for`].
    pub policies: Vec<ServicePolicy>,
    /// The highest report seq whose usage the controller has recorded (0 = none): the device
    /// closes its usage window there (§17.3).
    pub usage_ack: u64,
}

impl PolicyBundle {
    /// A plain bundle as a policy bundle: no policy entries, no acknowledgement.
    pub fn plain(bundle: GrantBundle) -> Self {
        Self {
            bundle,
            policies: Vec::new(),
            usage_ack: 0,
        }
    }

    /// Checks the bundle's rules, then the policies': each names a granted service once and
    /// is valid itself.
    pub fn validate(&self) -> Result<(), Error> {
        self.bundle.validate()?;
        if self.policies.len() > MAX_SERVICES {
            return Err(Error::Invalid("more than 64 policies in a bundle"));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if self.policies[..i].iter().any(|o| o.service == p.service) {
                return Err(Error::Invalid("a service has two policies"));
            }
            if self.bundle.grant(&p.service).is_none() {
                return Err(Error::Invalid("a policy for a service not granted"));
            }
            p.validate()?;
        }
        Ok(())
    }

    /// The policy of `service` (the default one when it has no entry).
    pub fn policy(&self, service: &ServiceName) -> ServicePolicy {
        self.policies
            .iter()
            .find(|p| &p.service == service)
            .cloned()
            .unwrap_or_else(|| ServicePolicy::default_for(service.clone()))
    }
}

/// Usage since the last acknowledged report (§17.3). Counters saturate, never wrap.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// The report seq the window opened at: the last seq a controller acknowledged and the
    /// device applied (0 = since the device's first report).
    pub window: u64,
    /// The most VMs seen running in the window (None: no probe reading in it).
    pub peak_vm_count: Option<u32>,
    /// Messages the agent refused in the window (bundles, grant files, trust messages,
    /// diagnostic requests), saturating.
    pub refusals: u32,
    /// Seconds each service spent in grace in the window (services with none are left out),
    /// at most 64 entries, each service once.
    pub grace_seconds: Vec<ServiceSeconds>,
}

/// Seconds one service spent in a state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSeconds {
    /// The service.
    pub service: ServiceName,
    /// Seconds, saturating.
    pub seconds: u64,
}

/// How a service stands, as the device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Standing {
    /// Licensed (maybe with a warning: overage within tolerance, expiring soon).
    Licensed,
    /// In grace: running, the clock runs.
    Grace,
    /// Advisory strategy past grace: running, but not compliant.
    NonCompliant,
    /// Not allowed to run.
    Unlicensed,
}

/// Why a service is in grace, non-compliant or unlicensed (the agent's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ComplianceReason {
    /// No bundle has ever granted it.
    NeverGranted,
    /// The controller was not heard from before the lease ended.
    LeaseExpired,
    /// The entitlement term ended.
    TermEnded,
    /// The term has not started.
    NotYetValid,
    /// More VMs run than the license (with its tolerance) covers.
    OverVmAllowance,
    /// No longer granted.
    Revoked,
    /// Withheld: not entitled.
    NotEntitled,
    /// Withheld: seats exhausted.
    SeatsExhausted,
    /// Withheld: unassigned by an operator.
    Unassigned,
    /// Withheld: the controller does not know the tenant.
    UnknownTenant,
    /// Given back with `licd release`.
    Released,
}

/// One service's compliance in an [`ExtendedReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceCompliance {
    /// The service.
    pub service: ServiceName,
    /// How it stands.
    pub standing: Standing,
    /// Why, unless licensed.
    pub reason: Option<ComplianceReason>,
    /// VMs running over the allowance but within the tolerance (None: not over).
    pub overage_vms: Option<u32>,
    /// The smallest expiring-soon threshold (seconds before term end) crossed in the current
    /// term (None: none crossed).
    pub expiring_within: Option<u64>,
}

/// A device report with a report seq, usage and compliance. Signed by the device key, like a
/// [`DeviceReport`] (kind 1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtendedReport {
    /// The report: its encoding is exactly a kind-1 payload.
    pub report: DeviceReport,
    /// Strictly increasing per device, persisted across restarts (never reused).
    pub report_seq: u64,
    /// Usage since the window opened.
    pub usage: Usage,
    /// Per service, what the device sees (at most 64 entries, each service once).
    pub compliance: Vec<ServiceCompliance>,
}

impl ExtendedReport {
    /// Checks the report's rules, then counts and uniqueness of the usage and compliance
    /// lists, and that the window opened before this report.
    pub fn validate(&self) -> Result<(), Error> {
        self.report.validate()?;
        if self.report_seq == 0 {
            return Err(Error::Invalid("report seq 0"));
        }
        if self.usage.window >= self.report_seq {
            return Err(Error::Invalid(
                "usage window opens at or after the report's seq",
            ));
        }
        let grace = &self.usage.grace_seconds;
        if grace.len() > MAX_SERVICES || self.compliance.len() > MAX_SERVICES {
            return Err(Error::Invalid("more than 64 services in a usage report"));
        }
        for (i, g) in grace.iter().enumerate() {
            if grace[..i].iter().any(|o| o.service == g.service) {
                return Err(Error::Invalid("a service's grace time is reported twice"));
            }
        }
        for (i, c) in self.compliance.iter().enumerate() {
            if self.compliance[..i].iter().any(|o| o.service == c.service) {
                return Err(Error::Invalid("a service's compliance is reported twice"));
            }
        }
        Ok(())
    }
}

/// Encodes and signs a policy bundle with a certified signing key.
pub fn seal_policy_bundle(
    bundle: &PolicyBundle,
    signing_key: &SigningKey,
    cert: &SignerCertificate,
) -> Vec<u8> {
    seal(MessageKind::PolicyBundle, signing_key, Some(cert), bundle)
}

/// Verifies and decodes a policy bundle (kind 10 only): the live bundle path (signature, the
/// chain at `now`), then decoding and content rules.
pub fn open_policy_bundle(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
) -> Result<(PolicyBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::PolicyBundle)?;
    env.verify_signature()?;
    let signer = trust.authorize(&env, now)?;
    decode_any(&env).map(|b| (b, signer))
}

/// Decodes either bundle kind of an envelope whose signature was verified: a kind-2 bundle
/// becomes a [`PolicyBundle::plain`]; content rules are checked.
fn decode_any(env: &Envelope<'_>) -> Result<PolicyBundle, Error> {
    let bundle = match env.kind {
        MessageKind::Grants => PolicyBundle::plain(env.decode::<GrantBundle>()?),
        MessageKind::PolicyBundle => env.decode::<PolicyBundle>()?,
        got => {
            return Err(Error::WrongKind {
                expected: MessageKind::Grants,
                got,
            })
        }
    };
    bundle.validate()?;
    // A bundle signed by a site issuer must stay within its delegation (PROTOCOL.md §18.3),
    // whichever path opened it.
    env.check_delegated(&bundle.bundle)?;
    Ok(bundle)
}

/// Checks the kind byte is one of the two bundle kinds (else `WrongKind`, expecting Grants).
fn expect_bundle_kind(env: &Envelope<'_>) -> Result<(), Error> {
    match env.kind {
        MessageKind::Grants | MessageKind::PolicyBundle => Ok(()),
        _ => env.expect_kind(MessageKind::Grants),
    }
}

/// Verifies and decodes a bundle of either kind (2 or 10) on the live path: framing, kind,
/// signature, the chain at `now`, decoding, content rules. A kind-2 bundle comes back as a
/// [`PolicyBundle::plain`].
pub fn open_any_bundle(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
) -> Result<(PolicyBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    expect_bundle_kind(&env)?;
    env.verify_signature()?;
    let signer = trust.authorize(&env, now)?;
    decode_any(&env).map(|b| (b, signer))
}

/// [`open_any_bundle`] with a [`CertMemo`] (see [`TrustStore::authorize_memo`]).
pub fn open_any_bundle_memo(
    bytes: &[u8],
    trust: &TrustStore,
    now: UnixTime,
    memo: &mut CertMemo,
) -> Result<(PolicyBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    expect_bundle_kind(&env)?;
    env.verify_signature()?;
    let signer = trust.authorize_memo(&env, now, memo)?;
    decode_any(&env).map(|b| (b, signer))
}

/// A bundle of either kind under the cache rule ([`crate::envelope::open_bundle_as_issued`]):
/// signature, decoding, then the chain at the signed `issued_at`.
pub fn open_any_bundle_as_issued(
    bytes: &[u8],
    trust: &TrustStore,
) -> Result<(PolicyBundle, SignerInfo), Error> {
    let env = Envelope::parse(bytes)?;
    expect_bundle_kind(&env)?;
    env.verify_signature()?;
    let bundle = decode_any(&env)?;
    let signer = trust.authorize_as_issued(&env, bundle.bundle.issued_at)?;
    Ok((bundle, signer))
}

/// An activation request carrying an extended report (kind 15, PROTOCOL.md §17.7): what a
/// device that speaks policy writes for `licd request`, so the grant file answering it is a
/// policy bundle acknowledging the usage the report carries. Signed by the device key (no
/// certificate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtendedActivationRequest {
    /// The extended report a connected device would send (its report seq is taken, and
    /// persisted, like one sent over MQTT).
    pub report: ExtendedReport,
    /// Fresh randomness: the grant file answering this request names it.
    pub nonce: crate::offline::Nonce,
}

/// Encodes and signs an extended activation request with the device key.
pub fn seal_extended_activation_request(
    request: &ExtendedActivationRequest,
    device_key: &SigningKey,
) -> Vec<u8> {
    seal(
        MessageKind::ExtendedActivationRequest,
        device_key,
        None,
        request,
    )
}

/// Verifies and decodes an extended activation request: no certificate, the signature by the
/// envelope's signer, decoding, `report.report.device_key` equal to the signer, the extended
/// report's content rules. Whether the key is the one pinned for the device, and whether the
/// seq is new, is the controller's decision.
pub fn open_extended_activation_request(bytes: &[u8]) -> Result<ExtendedActivationRequest, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::ExtendedActivationRequest)?;
    if env.cert.is_some() {
        return Err(Error::Invalid(
            "an activation request carries no signer certificate",
        ));
    }
    env.verify_signature()?;
    let request: ExtendedActivationRequest = env.decode()?;
    if request.report.report.device_key != env.signer {
        return Err(Error::Invalid(
            "request is not signed by the device key it names",
        ));
    }
    request.report.validate()?;
    Ok(request)
}

/// Encodes and signs an extended report with the device key.
pub fn seal_extended_report(report: &ExtendedReport, device_key: &SigningKey) -> Vec<u8> {
    seal(MessageKind::ExtendedReport, device_key, None, report)
}

/// Verifies and decodes an extended report: no certificate, the signature by the envelope's
/// signer, decoding, `report.device_key` equal to the signer, content rules. Whether the key
/// is the one pinned for the device, and whether the seq is new, is the controller's decision.
pub fn open_extended_report(bytes: &[u8]) -> Result<ExtendedReport, Error> {
    let env = Envelope::parse(bytes)?;
    env.expect_kind(MessageKind::ExtendedReport)?;
    if env.cert.is_some() {
        return Err(Error::Invalid("a report carries no signer certificate"));
    }
    env.verify_signature()?;
    let report: ExtendedReport = env.decode()?;
    if report.report.device_key != env.signer {
        return Err(Error::Invalid(
            "report is not signed by the device key it names",
        ));
    }
    report.validate()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::id::{DeviceId, LicenseId, Sku, TenantId};
    use crate::keys::PublicKey;
    use crate::messages::ServiceGrant;
    use alloc::vec;

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn policy() -> PolicyBundle {
        PolicyBundle {
            bundle: GrantBundle {
                device: DeviceId::new("d").unwrap(),
                device_key: PublicKey([1; 32]).id(),
                tenant: TenantId::new("t").unwrap(),
                seq: 1,
                issued_at: 0,
                refresh_after: 0,
                grants: vec![ServiceGrant {
                    service: svc("vm"),
                    license: LicenseId::new("l").unwrap(),
                    sku: Sku::new("s").unwrap(),
                    not_before: 0,
                    not_after: 10,
                    lease_until: 5,
                    grace: 1,
                    vm_allowance: Some(4),
                }],
                withheld: vec![],
            },
            policies: vec![ServicePolicy {
                service: svc("vm"),
                strategy: Strategy::Advisory,
                overage_tolerance_pct: 125,
                warn_before: vec![30, 7],
            }],
            usage_ack: 0,
        }
    }

    #[test]
    fn a_valid_policy_passes_and_each_malformed_one_is_refused_with_its_reason() {
        assert_eq!(policy().validate(), Ok(()));
        type Case = (fn(&mut PolicyBundle), &'static str);
        let cases: [Case; 7] = [
            (
                |b| b.policies[0].overage_tolerance_pct = 99,
                "overage tolerance below 100 %",
            ),
            (
                |b| b.policies[0].overage_tolerance_pct = 1001,
                "overage tolerance above 1000 %",
            ),
            (
                |b| b.policies[0].warn_before = vec![7, 30],
                "expiring-soon thresholds not strictly descending",
            ),
            (
                |b| b.policies[0].warn_before = vec![7, 7],
                "expiring-soon thresholds not strictly descending",
            ),
            (
                |b| b.policies[0].warn_before = vec![7, 0],
                "an expiring-soon threshold of zero",
            ),
            (
                |b| b.policies[0].warn_before = (1..=9).rev().collect(),
                "more than 8 expiring-soon thresholds",
            ),
            (
                |b| b.policies[0].service = svc("other"),
                "a policy for a service not granted",
            ),
        ];
        for (break_it, why) in cases {
            let mut b = policy();
            break_it(&mut b);
            assert_eq!(b.validate(), Err(Error::Invalid(why)));
        }
        let mut twice = policy();
        twice.policies.push(twice.policies[0].clone());
        assert_eq!(
            twice.validate(),
            Err(Error::Invalid("a service has two policies"))
        );
    }

    #[test]
    fn an_unknown_strategy_variant_does_not_decode() {
        let mut bytes = postcard::to_allocvec(&policy()).unwrap();
        // After the strategy byte come the tolerance (1 byte), the thresholds (count and two
        // one-byte varints) and usage_ack (1 byte): 5 bytes.
        let at = bytes.len() - 6;
        assert_eq!(bytes[at], 1, "advisory is variant 1");
        bytes[at] = 3;
        assert!(postcard::from_bytes::<PolicyBundle>(&bytes).is_err());
    }

    #[test]
    fn tolerated_vms_rounds_down_and_never_overflows() {
        let p = ServicePolicy {
            overage_tolerance_pct: 125,
            ..ServicePolicy::default_for(svc("vm"))
        };
        assert_eq!(p.tolerated_vms(4), 5);
        assert_eq!(p.tolerated_vms(3), 3);
        assert_eq!(p.tolerated_vms(u32::MAX), u32::MAX);
        assert_eq!(
            ServicePolicy::default_for(svc("vm")).tolerated_vms(8),
            8,
            "100 % is no tolerance"
        );
    }

    #[test]
    fn a_plain_bundle_is_a_policy_bundle_with_default_policies() {
        let p = PolicyBundle::plain(policy().bundle);
        assert_eq!(p.policy(&svc("vm")), ServicePolicy::default_for(svc("vm")));
        assert_eq!(p.usage_ack, 0);
    }
}
