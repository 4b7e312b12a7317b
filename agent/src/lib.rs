//! `licd-agent`: the license-enforcement agent.
//!
//! The licensing rules live in `licd-core` ([`enforce`], [`clock`], [`trust`], [`store`],
//! [`status`], [`backoff`], [`config`], re-exported here under their old paths); this crate is the daemon
//! shell around them: the MQTT session ([`session`]), the local API ([`api`]), hooks
//! ([`hooks`]), bounded external commands for hooks and probes ([`command`]), identity probes
//! ([`identity`]), licensing by file ([`offline`]), TLS ([`tls`]), diagnostics ([`diag`]), the
//! node_exporter textfile format of the status ([`textfile`]), and the loop that ties them together
//! ([`daemon`]).
//!
//! Error types: each message is whole, its cause's text included, and no error exposes that
//! cause again through `source()`; so `{:#}` (anyhow's chain on one line, how `licd` prints
//! errors) and `%e` in a log line both say every reason once. `#[error(transparent)]` wraps
//! without adding text.

pub mod api;
pub mod command;
pub mod daemon;
pub mod diag;
pub mod hooks;
pub mod identity;
pub mod offline;
pub mod session;
pub mod textfile;
pub mod tls;

pub use licd_core::{
    backoff, cache, clock, config, enforce, failover, refusal, status, store, trust,
};

#[cfg(test)]
mod error_chains;
