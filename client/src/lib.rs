//! `licd-client`: asks the local licd agent whether a service may run.
//!
//! The agent answers on a unix socket in JSON lines (protocol version [`API_VERSION`], see
//! `agent/src/api.rs`). This crate speaks it with a blocking [`std::os::unix::net::UnixStream`]
//! and read/write timeouts: no async runtime; it depends on `serde_json`, `thiserror`, `rustix`
//! and `licd-protocol` (no_std, no I/O: the service-name rule).
//!
//! ```no_run
//! use licd_client::Client;
//!
//! let mut client = Client::connect(licd_client::DEFAULT_SOCKET)?;
//! let state = client.check("wifi-ap")?;
//! if !state.may_run() {
//!     eprintln!("wifi-ap is not licensed: {state}");
//! }
//! # Ok::<(), licd_client::ClientError>(())
//! ```
//!
//! - [`Client::check`], [`Client::status`] and [`Client::watch`] (an iterator of state
//!   changes on a connection of its own).
//! - Errors are a [`ClientError`]; [`ClientError::NotRunning`] when no agent listens,
//!   [`ClientError::UnsupportedVersion`] when the agent speaks a newer major version, and
//!   [`ClientError::InvalidService`] for a name the protocol does not allow (checked before
//!   anything is asked: [`validate_service`]).
//! - With the `cache-fallback` feature, [`fallback::check`] answers from the agent's cache
//!   (read-only, the agent's own evaluation code) when the agent is not running, like
//!   `licd check` does. That feature depends on `licd-agent`, so it is off by default.
//!
//! There is no async feature: a check on a local socket takes tens of microseconds, so async
//! callers can use `spawn_blocking` (or a thread per [`Watch`]); an async variant would add
//! tokio to the dependency tree and a second copy of every code path for little gain.
//!
//! The C library (`client/ffi`, `include/licd.h`) is a thin layer over this crate.

mod client;
mod error;
#[cfg(feature = "cache-fallback")]
pub mod fallback;
mod state;

pub use client::{Client, Watch, WatchStopper, DEFAULT_SOCKET, DEFAULT_TIMEOUT, MAX_ANSWER_LEN};
pub use error::ClientError;
pub use state::{Event, Reason, Source, State, Verdict};

/// Version of the socket protocol this client speaks; it refuses answers from a higher major
/// version.
pub use licd_core::api::API_VERSION;

/// Checks `service` against the protocol's rule for service names (`[A-Za-z0-9._-]{1,64}`,
/// not `.` or `..`: `licd_protocol`'s own check, the one the agent applies), so an invalid
/// name gets the same [`ClientError::InvalidService`] whether the agent or the cache would
/// have answered. Every check in this crate calls it first.
pub fn validate_service(service: &str) -> Result<(), ClientError> {
    licd_protocol::ServiceName::new(service)
        .map(drop)
        .map_err(|e| ClientError::InvalidService(e.to_string()))
}
