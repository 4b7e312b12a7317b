//! `licd-agent`: the license-enforcement agent.
//!
//! The pure core ([`clock::TrustedTime`], [`enforce`], [`trust`], [`backoff`]) takes time and randomness
//! as arguments and does no I/O. Thin shells around it do the files ([`store`]), the MQTT
//! session ([`session`]), the local API ([`api`]), hooks ([`hooks`]) and tie them together
//! ([`daemon`]).
//!
//! Error types: each message is whole, its cause's text included, and no error exposes that
//! cause again through `source()`; so `{:#}` (anyhow's chain on one line, how `licd` prints
//! errors) and `%e` in a log line both say every reason once. `#[error(transparent)]` wraps
//! without adding text.

pub mod api;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod enforce;
pub mod hooks;
pub mod identity;
pub mod refusal;
pub mod session;
pub mod status;
pub mod store;
pub mod tls;
pub mod trust;

#[cfg(test)]
mod error_chains;
