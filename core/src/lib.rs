//! `licd-core`: the licensing rules of the licd agent, with no runtime under them.
//!
//! Everything here takes time and randomness as arguments or reads plain files; nothing needs
//! tokio, a socket or TLS. The daemon (`licd-agent`) is a shell that turns MQTT messages, timers
//! and socket requests into calls on these types and carries out what they return; the client
//! libraries (`licd-client`, liblicd) read the same cache with the same rules when no daemon
//! answers.
//!
//! - [`enforce`]: the per-device state machine — bundle acceptance, service states, deadlines.
//! - [`config`]: the agent's config file and its validated settings.
//! - [`clock`]: trusted time (a high-water mark that a wall clock set back cannot undo).
//! - [`trust`]: the pinned roots and revocations, moved forward by signed trust messages.
//! - [`store`]: the crash-safe cache files in the state directory.
//! - [`refusal`]: counting refused messages and keeping their log lines few.
//! - [`status`]: what `licd status`/`check` and the socket report.
//! - [`api`]: the local API's request, answer and event lines.
//! - [`cache`]: restoring the state from the state directory, daemon and read-only alike.
//! - [`offline`]: licensing by file — pending requests, the release record, import rules.
//! - [`backoff`]: the one retry policy (jittered exponential, with a reset window).
//! - [`failover`]: that policy spread over the nodes of a clustered broker.

pub mod api;
pub mod backoff;
pub mod cache;
pub mod clock;
pub mod config;
pub mod enforce;
pub mod failover;
pub mod offline;
pub mod refusal;
pub mod status;
pub mod store;
pub mod trust;
