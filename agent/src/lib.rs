//! `licd-agent`: the license-enforcement agent.
//!
//! The licensing rules live in `licd-core` ([`enforce`], [`clock`], [`trust`], [`store`],
//! [`status`], [`backoff`], [`config`], re-exported here under their old paths); this crate is the daemon
//! shell around them: the MQTT session ([`session`]), the local API ([`api`]), hooks
//! ([`hooks`]), identity probes ([`identity`]), TLS ([`tls`]), diagnostics ([`diag`]), and the
//! loop that ties them together ([`daemon`]).

pub mod api;
pub mod daemon;
pub mod diag;
pub mod hooks;
pub mod identity;
pub mod session;
pub mod tls;

pub use licd_core::{backoff, cache, clock, config, enforce, status, store, trust};
