//! Replays the committed corpora of the protocol's fuzz targets (`fuzz/corpus/envelope/`,
//! `fuzz/corpus/topic/`) through the very entry functions the fuzzer runs
//! (`fuzz/src/protocol_entry.rs`, included below), on the stable toolchain, in CI. A file that
//! once crashed a target is added to its corpus and stays fixed here.

#[path = "../../fuzz/src/protocol_entry.rs"]
mod protocol_entry;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let files = corpus(target);
    for file in &files {
        let data = std::fs::read(file).expect("read a corpus file");
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", file.display());
    }
    println!("{target}: {} corpus files replayed", files.len());
    files.len()
}

#[test]
fn the_envelope_corpus_replays_without_a_panic() {
    replay("envelope", protocol_entry::envelope);
}

#[test]
fn the_armor_corpus_replays_without_a_panic() {
    replay("armor", protocol_entry::armor_text);
}

#[test]
fn the_offline_file_corpus_replays_without_a_panic() {
    replay("offline_file", protocol_entry::offline_file);
}

#[test]
fn the_policy_corpus_replays_without_a_panic() {
    replay("policy", protocol_entry::policy);
}

#[test]
fn the_topic_corpus_replays_without_a_panic() {
    replay("topic", protocol_entry::topic);
}

#[test]
fn the_seeds_reach_the_deep_paths() {
    // The golden envelopes open under the fuzz keys: the seeds start the fuzzer past the
    // signature and trust-chain checks, not in front of them.
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/envelope/grant_bundle_5_services.bin"),
    )
    .expect("seed");
    let root = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]);
    let trust =
        licd_protocol::TrustStore::new(vec![licd_protocol::PublicKey::from(&root.verifying_key())]);
    licd_protocol::envelope::open_bundle(&raw, &trust, protocol_entry::NOW).expect("seed opens");
}
