//! Site delegations: a certified controller signing key vouches for a site issuer's key (a
//! relay at a disconnected site) with **constraints the device checks itself** — tenant, site,
//! the services it may grant with a seat pool each, the longest lease it may give, and a
//! validity window. No device has to believe the relay beyond its delegation.
//!
//! A delegated message carries its chain in the envelope's certificate field: the controller's
//! signing-key certificate (§6, 145 bytes, issued by a pinned root) followed by the delegation
//! (this module), signed by that controller key. Layout (big-endian integers):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | delegation version = `0x02` (a certificate is `0x01`) |
//! | 1 | 32 | issuer: the controller signing key (the subject of the certificate before it) |
//! | 33 | 32 | subject: the site issuer's (relay's) key |
//! | 65 | 8 | not_before: unix time, valid from this second |
//! | 73 | 8 | not_after: unix time, valid **until before** this second |
//! | 81 | 2 | constraints length `c` |
//! | 83 | c | [`Constraints`], postcard |
//! | 83 + c | 64 | ed25519 signature by `issuer` over [`DELEGATION_DOMAIN`] ‖ bytes 0..83 + c |
//!
//! Seat pools are not something a device can count (it sees only its own bundle): they bind
//! the relay and the controller's ledger. Everything a single bundle can break — tenant,
//! services, lease length, the delegation's window — is checked by every device
//! ([`Delegation::permits`]); the site is checked against the device's configured site by the
//! agent (licd-core), which knows it.

use alloc::vec::Vec;

use ed25519_dalek::{Signer, SigningKey};

use crate::error::Error;
use crate::id::{ServiceName, SiteId, TenantId};
use crate::keys::{verify_strict, KeyId, PublicKey};
use crate::limits::MAX_DELEGATED_SERVICES;
use crate::messages::GrantBundle;
use crate::UnixTime;

/// Domain-separation prefix of a delegation signature (its own, so a delegation signature can
/// never be taken for an envelope or certificate signature).
pub const DELEGATION_DOMAIN: &[u8] = b"licd/v1 site delegation\0";

/// Version byte of a delegation (distinct from a certificate's `0x01`).
pub const DELEGATION_VERSION: u8 = 2;

const HEADER_LEN: usize = 83;

/// Seats of one service the site issuer may hand out at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeatPool {
    /// The service.
    pub service: ServiceName,
    /// Most devices licensed for it at once (reserved in the controller's ledger).
    pub seats: u32,
}

/// What a site issuer may do, fixed by the controller when it delegates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Constraints {
    /// The only tenant whose devices it may license.
    pub tenant: TenantId,
    /// The site it serves; a device accepts it only if configured for this site.
    pub site: SiteId,
    /// Longest lease it may give: every grant's `lease_until` ≤ bundle `issued_at` + this.
    pub max_lease: u64,
    /// The services it may grant, each with its pool; services unique, at least one.
    pub pools: Vec<SeatPool>,
}

impl Constraints {
    /// Checks what postcard cannot: a pool at all, unique services, non-zero seats and lease.
    pub fn validate(&self) -> Result<(), Error> {
        if self.pools.is_empty() {
            return Err(Error::Invalid("a delegation grants no service"));
        }
        if self.pools.len() > MAX_DELEGATED_SERVICES {
            return Err(Error::Invalid("more than 16 services in a delegation"));
        }
        for (i, p) in self.pools.iter().enumerate() {
            if self.pools[..i].iter().any(|o| o.service == p.service) {
                return Err(Error::Invalid("a service is delegated twice"));
            }
            if p.seats == 0 {
                return Err(Error::Invalid("a delegated seat pool is empty"));
            }
        }
        if self.max_lease == 0 {
            return Err(Error::Invalid("a delegation's maximum lease is zero"));
        }
        Ok(())
    }

    /// The pool of `service`, if delegated.
    pub fn pool(&self, service: &ServiceName) -> Option<&SeatPool> {
        self.pools.iter().find(|p| &p.service == service)
    }
}

/// What a delegation states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationBody {
    /// The controller signing key that delegates.
    pub issuer: PublicKey,
    /// The site issuer's key.
    pub subject: PublicKey,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
    /// The limits.
    pub constraints: Constraints,
}

/// A delegation as received: the body and the issuer's signature. Parsing checks structure and
/// content rules; [`Delegation::verify`] the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The statement.
    pub body: DelegationBody,
    signature: [u8; 64],
}

/// How a delegated bundle oversteps its delegation. Each is a precise refusal reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Breach {
    /// The delegation is for another site than the device's (or the device has no site).
    #[error("delegation is for site {delegated}, this device is at {}", device.as_ref().map_or("no site", |s| s.as_str()))]
    Site {
        /// The device's configured site, if any.
        device: Option<SiteId>,
        /// The delegation's site.
        delegated: SiteId,
    },
    /// The bundle is for another tenant than the delegation's.
    #[error("bundle for tenant {bundle}, but the delegation is for tenant {delegated}")]
    Tenant {
        /// The bundle's tenant.
        bundle: TenantId,
        /// The delegation's tenant.
        delegated: TenantId,
    },
    /// A service the delegation does not include.
    #[error("service {0} is not delegated to this site issuer")]
    Service(ServiceName),
    /// A lease longer than the delegation's maximum.
    #[error(
        "lease of {service} until {lease_until} is longer than the delegated maximum (until {max})"
    )]
    LeaseTooLong {
        /// The service.
        service: ServiceName,
        /// The grant's lease end.
        lease_until: UnixTime,
        /// `issued_at` + `max_lease`.
        max: UnixTime,
    },
    /// A lease that runs past the end of the delegation itself.
    #[error(
        "lease of {service} until {lease_until} outlives the delegation (valid until {not_after})"
    )]
    LeaseOutlivesDelegation {
        /// The service.
        service: ServiceName,
        /// The grant's lease end.
        lease_until: UnixTime,
        /// End of the delegation.
        not_after: UnixTime,
    },
    /// The bundle says it was issued outside the delegation's window.
    #[error(
        "bundle issued at {issued_at}, outside the delegation's window {not_before}..{not_after}"
    )]
    IssuedOutside {
        /// The bundle's `issued_at`.
        issued_at: UnixTime,
        /// Start of the delegation.
        not_before: UnixTime,
        /// End of the delegation.
        not_after: UnixTime,
    },
}

impl Delegation {
    /// Issues a delegation to `subject`, signed by the controller signing key `issuer`.
    /// Refuses constraints that break [`Constraints::validate`] or an empty window.
    pub fn issue(
        issuer: &SigningKey,
        subject: PublicKey,
        not_before: UnixTime,
        not_after: UnixTime,
        constraints: Constraints,
    ) -> Result<Self, Error> {
        constraints.validate()?;
        if not_after <= not_before {
            return Err(Error::Invalid("a delegation's window is empty"));
        }
        let body = DelegationBody {
            issuer: PublicKey::from(&issuer.verifying_key()),
            subject,
            not_before,
            not_after,
            constraints,
        };
        let unsigned = encode_body(&body)?;
        let signature = issuer.sign(&signing_input(&unsigned)).to_bytes();
        Ok(Self { body, signature })
    }

    /// Parses the layout above and the constraints' content rules; the whole slice must be
    /// consumed.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER_LEN + 64 {
            return Err(Error::Truncated("delegation shorter than its fixed part"));
        }
        if bytes[0] != DELEGATION_VERSION {
            return Err(Error::Invalid("unknown delegation version"));
        }
        let c = u16::from_be_bytes([bytes[81], bytes[82]]) as usize;
        if bytes.len() != HEADER_LEN + c + 64 {
            return Err(Error::Truncated(
                "delegation length does not match its constraints length",
            ));
        }
        let key = |at: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes[at..at + 32]);
            PublicKey(k)
        };
        let time = |at: usize| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(t)
        };
        let (constraints, rest) =
            postcard::take_from_bytes::<Constraints>(&bytes[HEADER_LEN..HEADER_LEN + c])?;
        if !rest.is_empty() {
            return Err(Error::Decode("bytes after the delegation's constraints"));
        }
        constraints.validate()?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[HEADER_LEN + c..]);
        Ok(Self {
            body: DelegationBody {
                issuer: key(1),
                subject: key(33),
                not_before: time(65),
                not_after: time(73),
                constraints,
            },
            signature,
        })
    }

    /// The encoding (layout above).
    pub fn to_bytes(&self) -> Vec<u8> {
        // `issue` and `parse` both validated the constraints, so they encode within bounds.
        let mut out = encode_body(&self.body).unwrap_or_default();
        out.extend_from_slice(&self.signature);
        out
    }

    /// The site issuer's key id (what a revocation list names to cut the site off).
    pub fn subject_id(&self) -> KeyId {
        self.body.subject.id()
    }

    /// Checks the issuer's signature (not the window, not whether the issuer is trusted: the
    /// trust store checks the certificate before it).
    pub fn verify(&self) -> Result<(), Error> {
        let unsigned = encode_body(&self.body)?;
        verify_strict(
            &self.body.issuer.0,
            &signing_input(&unsigned),
            &self.signature,
        )
        .map_err(|e| match e {
            Error::BadSignature => Error::BadDelegationSignature,
            other => other,
        })
    }

    /// Whether `at` lies in `[not_before, not_after)`.
    pub fn check_validity(&self, at: UnixTime) -> Result<(), Error> {
        if at < self.body.not_before {
            return Err(Error::DelegationNotYetValid {
                not_before: self.body.not_before,
                now: at,
            });
        }
        if at >= self.body.not_after {
            return Err(Error::DelegationExpired {
                not_after: self.body.not_after,
                now: at,
            });
        }
        Ok(())
    }

    /// The rules every device applies to a bundle signed under this delegation: its tenant,
    /// its services, each lease's length and end, and its `issued_at` inside the window.
    /// Withheld entries grant nothing and are not constrained.
    pub fn permits(&self, bundle: &GrantBundle) -> Result<(), Breach> {
        let b = &self.body;
        let c = &b.constraints;
        if bundle.tenant != c.tenant {
            return Err(Breach::Tenant {
                bundle: bundle.tenant.clone(),
                delegated: c.tenant.clone(),
            });
        }
        if bundle.issued_at < b.not_before || bundle.issued_at >= b.not_after {
            return Err(Breach::IssuedOutside {
                issued_at: bundle.issued_at,
                not_before: b.not_before,
                not_after: b.not_after,
            });
        }
        let max = bundle.issued_at.saturating_add(c.max_lease);
        for g in &bundle.grants {
            if c.pool(&g.service).is_none() {
                return Err(Breach::Service(g.service.clone()));
            }
            if g.lease_until > max {
                return Err(Breach::LeaseTooLong {
                    service: g.service.clone(),
                    lease_until: g.lease_until,
                    max,
                });
            }
            if g.lease_until > b.not_after {
                return Err(Breach::LeaseOutlivesDelegation {
                    service: g.service.clone(),
                    lease_until: g.lease_until,
                    not_after: b.not_after,
                });
            }
        }
        Ok(())
    }
}

/// A delegation as its relay receives it (kind [`crate::MessageKind::Delegation`], §18.4):
/// the controller key's certificate and the delegation it signed, checked to belong together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationFile {
    /// The controller signing key's certificate.
    pub cert: crate::SignerCertificate,
    /// The delegation, issued by the certificate's subject.
    pub delegation: Delegation,
}

impl DelegationFile {
    /// The chain a relay puts in the certificate field of what it signs: the certificate
    /// followed by the delegation (the relay's `delegation.hex`).
    pub fn chain(&self) -> Vec<u8> {
        let mut out = self.cert.to_bytes();
        out.extend_from_slice(&self.delegation.to_bytes());
        out
    }
}

/// Seals `delegation` as a kind-12 envelope signed by the controller key that issued it, with
/// its certificate: what the controller publishes retained for the relay and what a
/// delegation file holds (binary or armored).
pub fn seal_delegation(
    delegation: &Delegation,
    signing_key: &SigningKey,
    cert: &crate::SignerCertificate,
) -> Vec<u8> {
    crate::envelope::seal_bytes(
        crate::MessageKind::Delegation,
        signing_key,
        Some(cert),
        &delegation.to_bytes(),
    )
}

/// Opens a kind-12 envelope: framing, kind, a plain certificate (no chain), the envelope's
/// signature, the certificate's signature, the certificate names the signer, the delegation
/// parses, is issued by the signer and its signature verifies. Whether the certificate's root
/// is one the devices pin, and the window, are the devices' to decide (§18.3): a relay takes
/// what its controller signed and the devices hold it to it.
pub fn open_delegation(bytes: &[u8]) -> Result<DelegationFile, Error> {
    let env = crate::Envelope::parse(bytes)?;
    env.expect_kind(crate::MessageKind::Delegation)?;
    if env.delegation.is_some() {
        return Err(Error::Invalid(
            "a delegation is not signed by a site issuer",
        ));
    }
    let cert = env
        .cert
        .clone()
        .ok_or(Error::Invalid("a delegation carries no certificate"))?;
    env.verify_signature()?;
    cert.verify()?;
    if cert.body.subject != env.signer {
        return Err(Error::CertificateMismatch {
            certified: cert.body.subject.id(),
            signer: env.signer.id(),
        });
    }
    let delegation = Delegation::parse(env.payload)?;
    if delegation.body.issuer != env.signer {
        return Err(Error::CertificateMismatch {
            certified: delegation.body.issuer.id(),
            signer: env.signer.id(),
        });
    }
    delegation.verify()?;
    Ok(DelegationFile { cert, delegation })
}

/// One lease a site relay issued (a grant of one service in one bundle), numbered by the
/// relay: `n` grows by one with every lease it records and never repeats for its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IssuedLease {
    /// The relay's number for it.
    pub n: u64,
    /// The device.
    pub device: crate::DeviceId,
    /// The service.
    pub service: ServiceName,
    /// The bundle's `seq`.
    pub bundle_seq: u64,
    /// The bundle's `issued_at`.
    pub issued_at: UnixTime,
    /// The grant's `lease_until`.
    pub lease_until: UnixTime,
}

/// What a site relay reports over its uplink (kind 13, §18.5): leases it issued that the
/// controller has not acknowledged, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayReport {
    /// The delegation's tenant.
    pub tenant: TenantId,
    /// The delegation's site.
    pub site: SiteId,
    /// The relay's clock when it sent it.
    pub sent_at: UnixTime,
    /// 1 to [`crate::limits::MAX_RELAY_REPORT_LEASES`] leases, `n` strictly increasing.
    pub leases: Vec<IssuedLease>,
}

impl RelayReport {
    /// Checks what postcard cannot: 1 to 256 leases, numbers strictly increasing.
    pub fn validate(&self) -> Result<(), Error> {
        if self.leases.is_empty() {
            return Err(Error::Invalid("a relay report carries no lease"));
        }
        if self.leases.len() > crate::limits::MAX_RELAY_REPORT_LEASES {
            return Err(Error::Invalid("more than 256 leases in a relay report"));
        }
        if self.leases.windows(2).any(|w| w[0].n >= w[1].n) {
            return Err(Error::Invalid(
                "a relay report's lease numbers do not strictly increase",
            ));
        }
        Ok(())
    }
}

/// The controller's acknowledgement of a relay's reports (kind 14, §18.5): every lease the
/// relay numbered up to `through` is stored; the relay may forget them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayAck {
    /// The tenant.
    pub tenant: TenantId,
    /// The site.
    pub site: SiteId,
    /// The relay key it answers.
    pub relay: KeyId,
    /// Leases numbered up to this one are stored.
    pub through: u64,
    /// The controller's clock.
    pub acked_at: UnixTime,
}

/// A relay report as opened: the report, the delegation it was signed under and the relay key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedRelayReport {
    /// The report.
    pub report: RelayReport,
    /// The certificate and delegation from the envelope.
    pub file: DelegationFile,
}

/// Seals a relay report with the relay key, its delegation chain in the certificate field.
pub fn seal_relay_report(
    report: &RelayReport,
    relay_key: &SigningKey,
    cert: &crate::SignerCertificate,
    delegation: &Delegation,
) -> Vec<u8> {
    let payload = postcard::to_allocvec(report).unwrap_or_default();
    crate::envelope::seal_bytes_delegated(
        crate::MessageKind::RelayReport,
        relay_key,
        cert,
        delegation,
        &payload,
    )
}

/// Opens a relay report: framing, kind, a delegation chain in the certificate field, the
/// envelope's signature (by the relay key), the chain's signatures and that it links
/// certificate → controller key → relay key, the payload and its rules, and that tenant and
/// site are the delegation's. Whether that delegation is one the controller issued and has not
/// revoked, and each lease against it, are the controller's to check (it holds its ledger).
pub fn open_relay_report(bytes: &[u8]) -> Result<OpenedRelayReport, Error> {
    let env = crate::Envelope::parse(bytes)?;
    env.expect_kind(crate::MessageKind::RelayReport)?;
    let (Some(cert), Some(delegation)) = (env.cert.clone(), env.delegation.clone()) else {
        return Err(Error::Invalid("a relay report carries no delegation chain"));
    };
    env.verify_signature()?;
    cert.verify()?;
    if delegation.body.issuer != cert.body.subject || delegation.body.subject != env.signer {
        return Err(Error::CertificateMismatch {
            certified: delegation.body.subject.id(),
            signer: env.signer.id(),
        });
    }
    delegation.verify()?;
    let report: RelayReport = env.decode()?;
    report.validate()?;
    let c = &delegation.body.constraints;
    if report.tenant != c.tenant || report.site != c.site {
        return Err(Error::Invalid(
            "a relay report names another tenant or site than its delegation",
        ));
    }
    Ok(OpenedRelayReport {
        report,
        file: DelegationFile { cert, delegation },
    })
}

/// Seals an acknowledgement with the controller's signing key and certificate.
pub fn seal_relay_ack(
    ack: &RelayAck,
    signing_key: &SigningKey,
    cert: &crate::SignerCertificate,
) -> Vec<u8> {
    let payload = postcard::to_allocvec(ack).unwrap_or_default();
    crate::envelope::seal_bytes(
        crate::MessageKind::RelayAck,
        signing_key,
        Some(cert),
        &payload,
    )
}

/// Opens an acknowledgement: framing, kind, a plain certificate, the envelope's and the
/// certificate's signatures, the certificate names the signer. Returns the ack and the
/// signing key; the relay accepts it only from the key that delegated to it.
pub fn open_relay_ack(bytes: &[u8]) -> Result<(RelayAck, PublicKey), Error> {
    let env = crate::Envelope::parse(bytes)?;
    env.expect_kind(crate::MessageKind::RelayAck)?;
    if env.delegation.is_some() {
        return Err(Error::Invalid(
            "an acknowledgement is not signed by a site issuer",
        ));
    }
    let cert = env
        .cert
        .clone()
        .ok_or(Error::Invalid("an acknowledgement carries no certificate"))?;
    env.verify_signature()?;
    cert.verify()?;
    if cert.body.subject != env.signer {
        return Err(Error::CertificateMismatch {
            certified: cert.body.subject.id(),
            signer: env.signer.id(),
        });
    }
    Ok((env.decode()?, env.signer))
}

fn encode_body(body: &DelegationBody) -> Result<Vec<u8>, Error> {
    let constraints = postcard::to_allocvec(&body.constraints)
        .map_err(|_| Error::Invalid("constraints do not encode"))?;
    let c = u16::try_from(constraints.len())
        .map_err(|_| Error::Invalid("constraints longer than 65535 bytes"))?;
    let mut b = Vec::with_capacity(HEADER_LEN + constraints.len() + 64);
    b.push(DELEGATION_VERSION);
    b.extend_from_slice(&body.issuer.0);
    b.extend_from_slice(&body.subject.0);
    b.extend_from_slice(&body.not_before.to_be_bytes());
    b.extend_from_slice(&body.not_after.to_be_bytes());
    b.extend_from_slice(&c.to_be_bytes());
    b.extend_from_slice(&constraints);
    Ok(b)
}

fn signing_input(unsigned: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DELEGATION_DOMAIN.len() + unsigned.len());
    v.extend_from_slice(DELEGATION_DOMAIN);
    v.extend_from_slice(unsigned);
    v
}
