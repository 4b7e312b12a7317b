//! The site relay (issue 23): a delegated, constrained issuer that licenses a disconnected
//! site's devices from the seat pools of its delegation (docs/PROTOCOL.md §17).
//!
//! - [`pool`]: floating seats — the pure rules of what the relay grants.

pub mod pool;
