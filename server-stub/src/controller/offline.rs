//! Licensing by file on the controller: opening the files, running the engine, committing,
//! sealing the answer. The same commit as every other change: the ledger stores the new
//! `seq` before any file or MQTT message carries it.

use licd_protocol::offline::{decode_file, open_activation_request, seal_grant_answer};
use licd_protocol::policy::open_extended_activation_request;
use licd_protocol::{
    ActivationRequest, Envelope, GrantAnswer, GrantBundle, MessageKind, TenantId, UnixTime,
};

use super::{Controller, Publication};
use crate::engine::offline::{OfflineRefused, Returned};
use crate::ledger::LedgerError;

/// Why a file was not applied. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineFileError {
    /// The file does not open (armor, framing, signature, content).
    #[error("the file is not a valid {what}: {error}")]
    File {
        /// What was expected.
        what: &'static str,
        /// Why.
        error: licd_protocol::Error,
    },
    /// The engine refused it.
    #[error(transparent)]
    Refused(#[from] OfflineRefused),
    /// The ledger could not store the change; nothing was issued.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// An answered activation request.
#[derive(Debug, Clone)]
pub struct OfflineGrant {
    /// The grant file (a signed GrantAnswer carrying the signed bundle).
    pub file: Vec<u8>,
    /// The bundle inside.
    pub bundle: GrantBundle,
}

impl Controller {
    /// Answers an activation request (binary or armored): the report's rules, seats, a bundle
    /// with the offline lease, sealed and wrapped with the request's nonce.
    /// `tenant`: the only tenant whose devices the caller may license (a tenant-scoped token);
    /// a request of another tenant's device is refused as an unknown device.
    pub fn offline_request(
        &mut self,
        bytes: &[u8],
        tenant: Option<&TenantId>,
        now: UnixTime,
    ) -> Result<(OfflineGrant, Vec<Publication>), OfflineFileError> {
        let file = |error| OfflineFileError::File {
            what: "activation request",
            error,
        };
        let raw = decode_file(bytes).map_err(file)?;
        // A device that speaks policy writes an extended request (kind 15, PROTOCOL.md
        // §17.7): its usage is counted like an extended report's, and the answer is a policy
        // bundle acknowledging it.
        let (request, extended) = match Envelope::parse(&raw) {
            Ok(env) if env.kind == MessageKind::ExtendedActivationRequest => {
                if !self.policy_kinds {
                    // What a controller predating §17 says.
                    return Err(file(licd_protocol::Error::UnknownKind(env.kind.to_byte())));
                }
                let x = open_extended_activation_request(&raw).map_err(file)?;
                let request = ActivationRequest {
                    report: x.report.report.clone(),
                    nonce: x.nonce,
                };
                (request, Some(x.report))
            }
            _ => (open_activation_request(&raw).map_err(file)?, None),
        };
        if tenant.is_some_and(|only| *only != request.report.tenant) {
            return Err(OfflineFileError::Refused(OfflineRefused::UnknownDevice {
                tenant: request.report.tenant.to_string(),
                device: request.report.device.to_string(),
            }));
        }
        let (bundle, effects) = self.decide(|engine| {
            engine
                .handle_offline_request_with(&request, extended.as_ref(), now)
                .map_err(OfflineFileError::from)
        })?;
        let pubs = self.commit(effects)?;
        let sealed = pubs
            .iter()
            .find(|p| {
                p.seq == bundle.seq && p.topic.ends_with(&format!("/{}/grants", bundle.device))
            })
            .map(|p| p.payload.clone())
            .unwrap_or_else(|| self.seal(&bundle).payload);
        let answer = GrantAnswer {
            device: bundle.device.clone(),
            request_nonce: request.nonce,
            bundle: sealed,
        };
        let file = seal_grant_answer(&answer, self.signer.key(), self.signer.cert());
        tracing::info!(tenant = %bundle.tenant, device = %bundle.device, seq = bundle.seq, grants = bundle.grants.len(), "activation request answered with a grant file");
        Ok((OfflineGrant { file, bundle }, pubs))
    }

    /// Applies a release receipt (binary or armored): frees the seats once.
    /// `tenant` as for [`Controller::offline_request`].
    pub fn offline_return(
        &mut self,
        bytes: &[u8],
        tenant: Option<&TenantId>,
        now: UnixTime,
    ) -> Result<(Returned, Vec<Publication>), OfflineFileError> {
        let raw = decode_file(bytes).map_err(|error| OfflineFileError::File {
            what: "release receipt",
            error,
        })?;
        let (returned, effects) = self.decide(|engine| {
            engine
                .handle_release_of(&raw, tenant, now)
                .map_err(OfflineFileError::from)
        })?;
        let pubs = self.commit(effects)?;
        tracing::info!(tenant = %returned.receipt.tenant, device = %returned.receipt.device, seq = returned.receipt.bundle_seq, freed = returned.freed.len(), "release receipt applied");
        Ok((returned, pubs))
    }
}
