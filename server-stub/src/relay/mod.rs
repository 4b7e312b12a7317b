//! The site relay (issue 23): a delegated, constrained issuer that licenses a disconnected
//! site's devices from the seat pools of its delegation (docs/PROTOCOL.md §18).
//!
//! - [`pool`]: floating seats — the pure rules of what the relay grants.
//! - [`site`]: the relay's files (key, delegation, seats) and the controller's `delegate`.
//! - [`run`]: the running relay — MQTT session, worker, embedded broker.

pub mod pool;
pub mod run;
pub mod site;
