//! `licd-stub`: the stub controller that plays the vendor cloud for licd agents in tests, labs
//! and demos.
//!
//! - [`engine`]: the licensing engine — pure logic with the seed semantics (Meraki
//!   subscriptions and compliance, Aruba auto-licensing, Snow per-VM counting).
#![forbid(unsafe_code)]

pub mod broker;
pub mod config;
pub mod controller;
pub mod engine;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod session;
pub mod stub;
pub mod tls;

pub use config::{BrokerMode, Clock, KeySource, LedgerLocation, ReportSubscription, StubConfig};
pub use error::StubError;
pub use keys::Signer;
pub use stub::{serve, Stub, StubHandle};
