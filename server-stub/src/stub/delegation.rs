//! Site delegations on the running stub (issue 23): create, return and revoke in the stub's
//! order, with the bundles they cause (devices given freed seats) published like any other
//! change, a revocation's new list published retained where devices already listen, and each
//! site's newest delegation published retained for its relay (`licd/v1/{tenant}/{site}/delegation`).

use licd_protocol::topic::TRUST_REVOCATIONS;
use licd_protocol::TenantId;
use rumqttc::QoS;

use crate::controller::delegation::NewDelegation;
use crate::engine::delegation::{DelegationRecord, DelegationState};
use crate::engine::EngineError;
use crate::error::StubError;
use crate::session;

use super::StubHandle;

/// A revoked delegation and the revocation list that cut its relay key off.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The delegation, now revoked.
    pub delegation: DelegationRecord,
    /// Version of the revocation list now naming the relay key.
    pub revocation_list_version: u64,
}

impl StubHandle {
    /// What the relay of delegation `id` reported issuing under it (tenant-scoped like
    /// [`crate::engine::Engine::delegation`]).
    pub fn delegated_leases(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<crate::ledger::DelegatedLease>, StubError> {
        let core = self.core.lock().map_err(|_| StubError::Poisoned)?;
        core.engine().delegation(id, tenant)?;
        Ok(core.ledger().delegated_leases(id)?)
    }

    /// Delegates seats to a site relay (see [`crate::controller::Controller::delegate`]).
    pub async fn delegate(&self, req: NewDelegation) -> Result<DelegationRecord, StubError> {
        let _turn = self.order.lock().await;
        let now = self.now();
        let d = {
            let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
            core.delegate(req, now)?
        };
        self.publish_site_delegation(&d.tenant, &d.site).await;
        Ok(d)
    }

    /// Publishes, retained on `licd/v1/{tenant}/{site}/delegation`, the site's newest active
    /// delegation — or clears the retained message when the site has none any more, so a relay
    /// that connects later is not handed one that was returned or revoked.
    async fn publish_site_delegation(&self, tenant: &TenantId, site: &licd_protocol::SiteId) {
        let now = self.now();
        let newest = self.with_engine(|e| {
            e.state()
                .delegations
                .values()
                .filter(|d| &d.tenant == tenant && &d.site == site && d.reserves_at(now))
                .max_by_key(|d| (d.created_at, d.not_after))
                .map(|d| d.signed.clone())
        });
        let payload = match newest {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the delegations to publish");
                return;
            }
        };
        let topic = licd_protocol::topic::delegation_topic(tenant, site);
        let cleared = payload.is_empty();
        match self
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, true, payload)
            .await
        {
            Ok(()) => tracing::info!(%topic, cleared, "site delegation published"),
            Err(e) => {
                tracing::error!(error = %e, %topic, "MQTT client closed; site delegation not published")
            }
        }
    }

    /// Returns a delegation: its seats are free again (the relay key is not revoked: for a
    /// site that is done with its seats; a lost or stolen relay is for
    /// [`StubHandle::revoke_delegation`]).
    pub async fn return_delegation(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
    ) -> Result<DelegationRecord, StubError> {
        let _turn = self.order.lock().await;
        let now = self.now();
        let (d, pubs) = {
            let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
            core.end_delegation(id, tenant, DelegationState::Returned, now)?
        };
        session::publish_all(&self.client, pubs, &self.stats).await;
        self.publish_site_delegation(&d.tenant, &d.site).await;
        Ok(d)
    }

    /// Revokes a delegation: the relay key goes on the root-signed revocation list (in the key
    /// directory, published retained on `licd/v1/trust/revocations`, which every device
    /// honours), then the delegation and every other active one to the same key end and their
    /// seats are free. Refused, changing nothing, when this controller cannot sign a
    /// revocation list (no key directory with the root key).
    pub async fn revoke_delegation(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
    ) -> Result<Revoked, StubError> {
        let _turn = self.order.lock().await;
        let now = self.now();
        let relay = self.with_engine(|e| {
            let d = e.delegation(id, tenant)?;
            if d.state != DelegationState::Active {
                return Err(EngineError::DelegationEnded {
                    id: id.to_string(),
                    state: d.state.as_str(),
                });
            }
            Ok(d.relay_key)
        })??;
        let Some(dir) = &self.key_dir else {
            return Err(StubError::Conflict(
                "this controller has no key directory with the root key, so it cannot sign a \
                 revocation list: revoke the relay key with `licd-stub keys revoke` where the \
                 root is, then return the delegation"
                    .into(),
            ));
        };
        let (list, bytes) = crate::keys::trust::revoke(dir, relay.id(), now).map_err(|e| {
            StubError::Conflict(format!(
                "cannot revoke relay key {}: {e}; the delegation is unchanged",
                relay.id()
            ))
        })?;
        // The list first: once devices hold it the relay is cut off, whatever follows.
        if let Err(e) = self
            .client
            .publish(TRUST_REVOCATIONS, QoS::AtLeastOnce, true, bytes)
            .await
        {
            tracing::error!(error = %e, "MQTT client closed; revocation list saved but not published (run `licd-stub keys publish`)");
        }
        tracing::info!(relay = %relay.id(), version = list.version, "relay key revoked");
        let (d, pubs) = {
            let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
            core.end_delegation(id, tenant, DelegationState::Revoked, now)?
        };
        session::publish_all(&self.client, pubs, &self.stats).await;
        self.publish_site_delegation(&d.tenant, &d.site).await;
        Ok(Revoked {
            delegation: d,
            revocation_list_version: list.version,
        })
    }
}
