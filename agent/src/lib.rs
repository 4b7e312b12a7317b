//! `licd-agent`: the license-enforcement agent.
//!
//! The pure core ([`clock::TrustedTime`], [`enforce`]) takes time as an argument and does no
//! I/O; thin shells around it do the files ([`store`]), the MQTT session and the local API.

pub mod clock;
pub mod enforce;
pub mod store;
