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
