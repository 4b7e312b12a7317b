//! Licensing by file on the running stub: the controller's file operations in the stub's
//! order, with the bundles they cause published like any other change.

use crate::controller::offline::{OfflineFileError, OfflineGrant};
use crate::engine::offline::Returned;
use crate::error::StubError;
use crate::session;
use licd_protocol::TenantId;

use super::StubHandle;

impl StubHandle {
    /// Answers an activation request with a grant file (see
    /// [`crate::controller::Controller::offline_request`]).
    pub async fn offline_grant(
        &self,
        request: &[u8],
        tenant: Option<&TenantId>,
    ) -> Result<OfflineGrant, StubError> {
        let _turn = self.order.lock().await;
        let now = self.now();
        let (grant, pubs) = {
            let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
            core.offline_request(request, tenant, now)
                .map_err(offline)?
        };
        session::publish_all(&self.client, pubs, &self.stats).await;
        Ok(grant)
    }

    /// Applies a release receipt (see [`crate::controller::Controller::offline_return`]).
    pub async fn offline_return(
        &self,
        receipt: &[u8],
        tenant: Option<&TenantId>,
    ) -> Result<Returned, StubError> {
        let _turn = self.order.lock().await;
        let now = self.now();
        let (returned, pubs) = {
            let mut core = self.core.lock().map_err(|_| StubError::Poisoned)?;
            core.offline_return(receipt, tenant, now).map_err(offline)?
        };
        session::publish_all(&self.client, pubs, &self.stats).await;
        Ok(returned)
    }
}

fn offline(e: OfflineFileError) -> StubError {
    match e {
        OfflineFileError::Ledger(l) => StubError::Ledger(l),
        other => StubError::Offline(other.to_string(), kind(&other)),
    }
}

fn kind(e: &OfflineFileError) -> crate::error::OfflineKind {
    use crate::engine::offline::OfflineRefused as R;
    use crate::error::OfflineKind as K;
    match e {
        OfflineFileError::File { .. } => K::Invalid,
        OfflineFileError::Refused(R::UnknownDevice { .. }) => K::NotFound,
        OfflineFileError::Refused(R::Receipt(_)) => K::Invalid,
        OfflineFileError::Refused(_) => K::Conflict,
        OfflineFileError::Ledger(_) => K::Invalid,
    }
}
