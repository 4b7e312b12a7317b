//! Entry functions of the licd fuzz targets. Each takes arbitrary bytes, must never panic
//! (other than on a broken invariant it asserts), and is shared with a stable test that
//! replays the committed corpus (`corpus/<target>/`) in CI: the protocol-side entries are
//! included by `protocol/tests/fuzz_corpus.rs`, the agent-side ones by
//! `agent/tests/fuzz_corpus.rs`.

pub mod agent_entry;
pub mod protocol_entry;
