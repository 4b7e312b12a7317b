//! `licd-protocol`: the licd wire protocol, version 1.
//!
//! Everything the agent and the controller exchange is defined here: validated identifiers
//! ([`id`]), the MQTT topic scheme ([`topic`]), the messages ([`messages`]), signing-key
//! certificates ([`cert`]), site delegations ([`delegation`]), the signed envelope that carries
//! every message ([`envelope`]), remote diagnostics ([`diag`]), licensing by file and its armor
//! ([`offline`]), licensing policy and usage reports ([`policy`]), and the trust chain: pinned
//! roots ([`trust`]), root-signed revocation lists ([`revocation`]) and
//! root rotations signed by the old and the new root ([`rotation`]).
//!
//! The crate is pure: no I/O, no clock, no randomness. Time is always an argument (unix seconds),
//! so every time-dependent check is testable. It builds for `no_std` + `alloc` (disable the
//! default `std` feature) so a microcontroller can speak the protocol too.
//!
//! The byte-level format is documented in `docs/PROTOCOL.md`.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod cert;
pub mod delegation;
pub mod diag;
pub mod envelope;
pub mod error;
pub mod id;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod offline;
pub mod policy;
pub mod revocation;
pub mod rotation;
pub mod topic;
pub mod trust;

pub use cert::{CertBody, SignerCertificate};
pub use delegation::{
    Breach, Constraints, Delegation, DelegationFile, IssuedLease, RelayAck, RelayReport, SeatPool,
};
pub use diag::{DiagRequest, DiagResponse};
pub use envelope::{Envelope, MessageKind, PROTOCOL_VERSION};
pub use error::Error;
pub use id::{DeviceId, IdError, LicenseId, ServiceName, SiteId, Sku, TenantId};
pub use keys::{KeyId, PublicKey};
pub use messages::{DeviceReport, GrantBundle, ServiceGrant, Withheld, WithheldReason};
pub use offline::{ActivationRequest, GrantAnswer, Nonce, ReleaseReceipt};
pub use policy::{
    ComplianceReason, ExtendedActivationRequest, ExtendedReport, PolicyBundle, ServiceCompliance,
    ServicePolicy, ServiceSeconds, Standing, Strategy, Usage,
};
pub use revocation::RevocationList;
pub use rotation::RootRotation;
pub use topic::{Topic, TopicKind, TrustTopic};
pub use trust::{CertMemo, RetiredRoot, SignerInfo, TrustStore};

/// Unix time in whole seconds (UTC). Every timestamp on the wire uses it.
pub type UnixTime = u64;
