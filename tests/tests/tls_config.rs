//! Unit tests of `agent/src/tls.rs`, compiled here by path until `licd_agent` exports the
//! module (then these run in the agent crate and this file goes away).

#[allow(dead_code)]
#[path = "../../agent/src/tls.rs"]
mod tls;
