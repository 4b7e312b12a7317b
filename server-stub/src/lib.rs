//! `licd-stub`: the stub controller that plays the vendor cloud for licd agents in tests, labs
//! and demos (see `docs/STUB.md`).
//!
//! - [`engine`]: the licensing engine — pure logic with the seed semantics (Meraki
//!   subscriptions, claim keys and compliance; Aruba auto-licensing with include/exclude,
//!   inheritance and pause; Snow per-VM counting). Calls take `now` and return [`engine::Effects`].
//! - [`ledger`]: the engine's records in SQLite, with schema migrations.
//! - [`keys`]: root and signing keys on disk, and the [`Signer`] that seals bundles.
//! - [`controller`]: engine + ledger + signer without the network: report bytes in, sealed
//!   publications out.
//! - [`diag`]: remote diagnostics — ask a device for its `licd diag` report over MQTT.
//! - [`broker`]: the embedded rumqttd broker; [`session`]: the MQTT client loop and worker;
//!   [`tls`]: rustls client config for `mqtts://`.
//! - [`admin`]: the admin HTTP/JSON API (axum) over a running stub, its tokens and its
//!   OpenAPI document; [`metrics`]: its Prometheus `/metrics`; [`ui`]: the operator
//!   dashboard at `/ui`, with a live feed from [`events`].
//! - [`relay`]: the site relay's floating seats within a delegation (issue 23).
//! - [`stub`]: [`Stub::start`] → [`StubHandle`] (tests, admin API, demos) and [`serve`] (the
//!   binary); [`config`]: [`StubConfig`] and the TOML file form.
#![forbid(unsafe_code)]

pub mod admin;
pub mod broker;
pub mod config;
pub mod controller;
pub mod diag;
pub mod engine;
pub mod error;
pub mod events;
mod intake;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod relay;
pub mod session;
pub mod stub;
pub mod tls;
pub mod ui;

pub use config::{BrokerMode, Clock, KeySource, LedgerLocation, ReportSubscription, StubConfig};
pub use error::StubError;
pub use keys::Signer;
pub use stub::{serve, Stub, StubHandle};
