//! The Debian packages' default agent config (`packaging/debian/licd.toml`, installed as the
//! conffile `/etc/licd/licd.toml`): it loads, and the root it pins is a placeholder whose
//! private key nobody can know — a point taken from a hash — so a freshly installed agent
//! accepts no grant until the operator pins the real root. (The RFC 8032 test key of
//! `agent/licd.example.toml` has a published private key: it must never be a default.)
//! The install/remove round trip itself runs in `scripts/debian-packages.sh`.

use ed25519_dalek::VerifyingKey;
use licd_agent::config::Settings;
use licd_tests::process::workspace_root;
use sha2::{Digest, Sha256};

/// Domain string of the placeholder root.
const PLACEHOLDER_DOMAIN: &str = "licd placeholder root v1: replace with your controller's root";

/// The first SHA-256(domain || counter) that is a valid, not small-order point.
fn placeholder_root() -> [u8; 32] {
    (0u32..)
        .map(|i| {
            let mut h = Sha256::new();
            h.update(PLACEHOLDER_DOMAIN.as_bytes());
            h.update(i.to_be_bytes());
            <[u8; 32]>::from(h.finalize())
        })
        .find(|b| VerifyingKey::from_bytes(b).is_ok_and(|k| !k.is_weak()))
        .expect("a point within a few tries")
}

#[test]
fn the_packaged_default_config_loads_and_pins_only_a_root_nobody_holds() {
    let path = workspace_root().join("packaging/debian/licd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let root: String = placeholder_root()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        text.contains(&format!("roots = [\"{root}\"]")),
        "the default config must pin the placeholder root {root}"
    );
    let example =
        std::fs::read_to_string(workspace_root().join("agent/licd.example.toml")).unwrap();
    assert!(
        !text.contains("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
        "the RFC 8032 test key (published private key) is not a default"
    );
    assert!(example.contains("roots = ["));
    let settings = Settings::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(settings.state_dir.to_str(), Some("/var/lib/licd"));
}
