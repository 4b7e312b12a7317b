//! `licd-stub`: the stub controller that plays the vendor cloud for licd agents in tests, labs
//! and demos.
//!
//! - [`engine`]: the licensing engine — pure logic with the seed semantics (Meraki
//!   subscriptions and compliance, Aruba auto-licensing, Snow per-VM counting).
#![forbid(unsafe_code)]

pub mod engine;
pub mod keys;
pub mod ledger;
