//! `licd-agent`: the license-enforcement agent.
//!
//! The pure core ([`clock::TrustedTime`], [`enforce`], [`trust`], [`backoff`]) takes time and randomness
//! as arguments and does no I/O. Thin shells around it do the files ([`store`]), the MQTT
//! session ([`session`]), the local API ([`api`]), hooks ([`hooks`]), bounded external commands
//! for hooks and probes ([`command`]) and tie them together ([`daemon`]).

pub mod api;
pub mod backoff;
pub mod clock;
pub mod command;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod enforce;
pub mod hooks;
pub mod identity;
pub mod session;
pub mod status;
pub mod store;
pub mod tls;
pub mod trust;
