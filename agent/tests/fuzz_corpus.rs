//! Replays the committed corpora of the agent's fuzz targets (`fuzz/corpus/cache/`,
//! `fuzz/corpus/config/`, `fuzz/corpus/x509/`) through the very entry functions the fuzzer runs
//! (`fuzz/src/agent_entry.rs`, included below), on the stable toolchain, in CI. A file that
//! once crashed a target is added to its corpus and stays fixed here.

#[path = "../../fuzz/src/agent_entry.rs"]
mod agent_entry;

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

fn replay(target: &str, entry: fn(&[u8])) {
    let files = corpus(target);
    for file in &files {
        let data = std::fs::read(file).expect("read a corpus file");
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", file.display());
    }
    println!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn the_cache_corpus_replays_without_a_panic() {
    replay("cache", agent_entry::cache);
}

#[test]
fn the_config_corpus_replays_without_a_panic() {
    replay("config", agent_entry::config);
}

#[test]
fn the_x509_corpus_replays_without_a_panic() {
    replay("x509", agent_entry::x509);
}

#[test]
fn the_certificate_seeds_are_certificates_the_reader_understands() {
    // The x509 seeds start the fuzzer from certificates that parse, not from an error.
    for name in ["fixture.der", "broker.der", "ISRG_Root_X1.der"] {
        let der = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/x509")
                .join(name),
        )
        .expect("seed");
        assert!(
            licd_agent::diag::x509::summarize(&der).is_some(),
            "{name} does not parse"
        );
    }
}

#[test]
fn the_example_config_seed_is_a_valid_config() {
    // The config seed starts the fuzzer from a config that validates, not from an error.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config/minimal.toml"),
    )
    .expect("seed");
    licd_agent::config::Settings::from_toml(&text).expect("the minimal seed validates");
}
