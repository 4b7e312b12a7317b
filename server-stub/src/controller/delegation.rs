//! Site delegations on the controller (issue 23): plan the reservation, sign the delegation
//! with the controller's signing key, record it — the same commit as every other change, so
//! the seats are reserved on disk before the signed delegation leaves the controller.

use licd_protocol::{
    Constraints, Delegation, PublicKey, SeatPool, ServiceName, SiteId, TenantId, UnixTime,
};

use super::{ApplyError, Controller, Publication};
use crate::engine::delegation::{DelegationRecord, DelegationRequest, DelegationState};
use crate::engine::EngineError;

/// What an operator asks to delegate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelegation {
    /// The relay's public key (`licd-stub relay init` printed it).
    pub relay_key: PublicKey,
    /// The only tenant whose devices the relay may license.
    pub tenant: TenantId,
    /// The site.
    pub site: SiteId,
    /// Seats per service.
    pub pools: Vec<(ServiceName, u32)>,
    /// Reserve only SKUs for this product class, if given.
    pub product_class: Option<String>,
    /// Longest lease the relay may give, seconds.
    pub max_lease: u64,
    /// How long it is valid from now, seconds (capped by the signing key's certificate).
    pub valid_secs: u64,
}

impl Controller {
    /// Delegates `req`'s seats to a site relay: checks the seats can be reserved, signs the
    /// delegation (certificate ‖ delegation, what the relay loads), records it with its
    /// reservations. Nothing changes when it is refused.
    pub fn delegate(
        &mut self,
        req: NewDelegation,
        now: UnixTime,
    ) -> Result<DelegationRecord, ApplyError> {
        let not_after = now
            .saturating_add(req.valid_secs)
            .min(self.signer.cert().body.not_after);
        let request = DelegationRequest {
            tenant: req.tenant.clone(),
            site: req.site.clone(),
            relay_key: req.relay_key,
            pools: req.pools.clone(),
            product_class: req.product_class.clone(),
            max_lease: req.max_lease,
            not_before: now,
            not_after,
        };
        if req.relay_key.to_verifying_key().is_err() {
            return Err(EngineError::InvalidDelegation(
                "the relay key is not a valid ed25519 public key".into(),
            )
            .into());
        }
        // Refused for want of seats before anything is signed.
        self.engine.plan_delegation(&request, now)?;
        let constraints = Constraints {
            tenant: req.tenant,
            site: req.site,
            max_lease: req.max_lease,
            pools: req
                .pools
                .iter()
                .map(|(service, seats)| SeatPool {
                    service: service.clone(),
                    seats: *seats,
                })
                .collect(),
        };
        let delegation = Delegation::issue(
            self.signer.key(),
            req.relay_key,
            now,
            not_after,
            constraints,
        )
        .map_err(|e| EngineError::InvalidDelegation(e.to_string()))?;
        // Kept as the kind-12 envelope: the same signed bytes go to the relay over MQTT, as a
        // file (binary or armored) and, unwrapped, as its `delegation.hex`.
        let signed = licd_protocol::delegation::seal_delegation(
            &delegation,
            self.signer.key(),
            self.signer.cert(),
        );
        let (record, pubs) = self.apply(now, |e, now| e.add_delegation(&request, signed, now))?;
        debug_assert!(pubs.is_empty(), "reserving seats issues no bundle");
        Ok(record)
    }

    /// Ends a delegation (returned or revoked): its seats are free and devices waiting for
    /// them get bundles. `tenant`: a tenant token's scope.
    pub fn end_delegation(
        &mut self,
        id: &str,
        tenant: Option<&TenantId>,
        to: DelegationState,
        now: UnixTime,
    ) -> Result<(DelegationRecord, Vec<Publication>), ApplyError> {
        self.apply(now, |e, now| e.end_delegation(id, tenant, to, now))
    }
}

/// Why a relay report was not stored. Nothing changed; no acknowledgement is sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayReportError {
    /// Not `licd/v1/{tenant}/{site}/relay-report`, or another tenant or site than the report.
    #[error("relay report on the wrong topic: {0}")]
    Topic(String),
    /// Over the envelope limit, or the envelope, its chain or its payload does not open.
    #[error("invalid relay report: {error}")]
    Invalid {
        /// Why.
        error: licd_protocol::Error,
    },
    /// Signed under a delegation this controller did not issue (or no longer holds).
    #[error("relay report under a delegation this controller does not hold (relay key {0})")]
    UnknownDelegation(licd_protocol::KeyId),
    /// Signed under a revoked delegation.
    #[error("relay report under revoked delegation {0}")]
    Revoked(String),
    /// A lease the relay's delegations do not allow: forged or overstepping.
    #[error("relay report lease {n} ({device} {service}) is outside every delegation to the relay: {why}")]
    Lease {
        /// Its number.
        n: u64,
        /// Device.
        device: String,
        /// Service.
        service: String,
        /// What it breaks.
        why: &'static str,
    },
    /// The ledger could not store it.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

impl Controller {
    /// A site relay's report over its uplink (kind 13): verified (signatures, chain), matched
    /// against the delegations this controller issued to that relay key for that tenant and
    /// site (not revoked), each lease inside one of them (service delegated, issued in its
    /// window, lease within its maximum and its end), stored idempotently, and answered with
    /// a signed acknowledgement to publish retained on the site's `relay-ack` topic. A
    /// replayed or resent report stores nothing new and gets the same acknowledgement.
    pub fn handle_relay_report(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: UnixTime,
    ) -> Result<(Publication, usize), RelayReportError> {
        use licd_protocol::delegation::{open_relay_report, seal_relay_ack};
        use licd_protocol::topic::{
            parse_site_topic, site_topic, RELAY_ACK_LEAF, RELAY_REPORT_LEAF,
        };
        if payload.len() > licd_protocol::limits::MAX_ENVELOPE_LEN {
            return Err(RelayReportError::Invalid {
                error: licd_protocol::Error::Oversized {
                    len: payload.len(),
                    max: licd_protocol::limits::MAX_ENVELOPE_LEN,
                },
            });
        }
        let (tenant, site) = parse_site_topic(topic, RELAY_REPORT_LEAF)
            .ok_or_else(|| RelayReportError::Topic(topic.to_string()))?;
        let opened =
            open_relay_report(payload).map_err(|error| RelayReportError::Invalid { error })?;
        let report = &opened.report;
        if report.tenant != tenant || report.site != site {
            return Err(RelayReportError::Topic(topic.to_string()));
        }
        // A delegation made through another replica is in the ledger, maybe not yet here.
        self.refresh()?;
        let relay = opened.file.delegation.body.subject;
        let chain = opened.file.chain();
        let delegations: Vec<&DelegationRecord> = self
            .engine
            .state()
            .delegations
            .values()
            .filter(|d| d.relay_key == relay && d.tenant == tenant && d.site == site)
            .collect();
        // The delegation the report is signed under must be one of ours, not revoked.
        let signed_under = *delegations
            .iter()
            .find(|d| d.chain().as_deref() == Some(chain.as_slice()))
            .ok_or(RelayReportError::UnknownDelegation(relay.id()))?;
        if signed_under.state == DelegationState::Revoked {
            return Err(RelayReportError::Revoked(signed_under.id.clone()));
        }
        // A lease belongs to the delegation the report is signed under if it fits it, else to
        // the newest other one it fits (leases issued before a renewal are reported after it).
        let mut delegations = delegations;
        delegations.sort_by_key(|d| {
            (
                d.id != signed_under.id,
                std::cmp::Reverse((d.created_at, d.not_after)),
            )
        });
        let mut rows = Vec::with_capacity(report.leases.len());
        for l in &report.leases {
            let breach = |why| RelayReportError::Lease {
                n: l.n,
                device: l.device.to_string(),
                service: l.service.to_string(),
                why,
            };
            let under = delegations
                .iter()
                .filter(|d| d.state != DelegationState::Revoked)
                .find(|d| d.not_before <= l.issued_at && l.issued_at < d.not_after)
                .ok_or_else(|| breach("issued outside every delegation's window"))?;
            if !under.pools.iter().any(|p| p.service == l.service) {
                return Err(breach("service not delegated"));
            }
            if l.lease_until > l.issued_at.saturating_add(under.max_lease)
                || l.lease_until > under.not_after
            {
                return Err(breach("lease longer than the delegation allows"));
            }
            rows.push((under.id.clone(), l.clone()));
        }
        let through = self.ledger.store_delegated_leases(&relay, &rows, now)?;
        let ack = licd_protocol::RelayAck {
            tenant: tenant.clone(),
            site: site.clone(),
            relay: relay.id(),
            through,
            acked_at: now,
        };
        tracing::info!(%tenant, %site, relay = %relay.id(), leases = rows.len(), through, "relay report stored");
        Ok((
            Publication {
                topic: site_topic(&tenant, &site, RELAY_ACK_LEAF),
                payload: seal_relay_ack(&ack, self.signer.key(), self.signer.cert()),
                seq: through,
            },
            rows.len(),
        ))
    }
}
