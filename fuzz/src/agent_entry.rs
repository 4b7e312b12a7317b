//! Fuzz entries for the agent (`licd-agent`): cache loading, config parsing and the DER reader
//! of `licd diag`. Included by the fuzz crate and by `agent/tests/fuzz_corpus.rs`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use licd_agent::clock::TrustedTime;
use licd_agent::config::Settings;
use licd_agent::diag::x509;
use licd_agent::enforce::{AcceptanceRules, Effect, Enforcer, Input};
use licd_agent::store::{Store, BUNDLE_FILE, MARK_FILE};
use licd_protocol::envelope::seal_bytes;
use licd_protocol::{
    DeviceId, MessageKind, PublicKey, ServiceName, SignerCertificate, TrustStore, UnixTime,
};

/// 2026-01-01T00:00:00Z, the golden vectors' evaluation time (their bundles are for device
/// `ap-0042` and the key of seed `33…33`).
pub const NOW: UnixTime = 1_767_225_600;

struct Fixture {
    rules: AcceptanceRules,
    signing: SigningKey,
    cert: SignerCertificate,
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = SigningKey::from_bytes(&[0x11; 32]);
        let signing = SigningKey::from_bytes(&[0x22; 32]);
        let device = SigningKey::from_bytes(&[0x33; 32]);
        let cert = SignerCertificate::issue(
            &root,
            PublicKey::from(&signing.verifying_key()),
            1_735_689_600,
            1_798_761_600,
        );
        let dir = std::env::temp_dir().join(format!("licd-fuzz-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz state directory");
        Fixture {
            rules: AcceptanceRules {
                trust: TrustStore::new(vec![PublicKey::from(&root.verifying_key())]),
                device: DeviceId::new("ap-0042").expect("valid id"),
                device_key: PublicKey::from(&device.verifying_key()).id(),
                future_tolerance: 300,
            },
            signing,
            cert,
            dir,
        }
    })
}

fn wanted() -> Vec<ServiceName> {
    ["wifi-ap", "wids", "analytics"]
        .into_iter()
        .filter_map(|s| ServiceName::new(s).ok())
        .collect()
}

/// Restores `raw` as the agent does at start-up and checks the enforcer's invariants: a
/// restored bundle evaluates, the byte-identical bundle delivered again changes nothing, and
/// time passing never panics.
fn restore(raw: &[u8], now: UnixTime) {
    let f = fixture();
    let mut enforcer = Enforcer::new(f.rules.clone(), wanted());
    if enforcer.restore(raw, now).is_ok() {
        let again = enforcer.handle(now, Input::Bundle(raw));
        assert!(
            !again.iter().any(|e| matches!(e, Effect::Refused(_))),
            "the held bundle delivered again was refused: {again:?}"
        );
        let _ = enforcer.snapshot();
        if let Some(deadline) = enforcer.next_deadline() {
            let _ = enforcer.handle(deadline.max(now), Input::Tick);
        }
        let _ = enforcer.handle(now.saturating_add(400 * 86_400), Input::Tick);
    }
}

/// Cache loading: `data` written as both cache files (`bundle.v1.bin`, `time-mark.v1`) and
/// loaded with [`Store`] exactly as the daemon does (mark, then bundle through
/// [`Enforcer::restore`] at the trusted time); then `data` as the payload of a bundle signed by
/// the trusted key, so the device binding and enforcement are reached too.
pub fn cache(data: &[u8]) {
    let f = fixture();
    let store = Store::open_read_only(&f.dir);
    if std::fs::write(f.dir.join(BUNDLE_FILE), data).is_err()
        || std::fs::write(f.dir.join(MARK_FILE), data).is_err()
    {
        return;
    }
    let mark = store.load_mark().ok().flatten().unwrap_or(0);
    let mut time = TrustedTime::new(mark, Duration::ZERO, 300);
    let now = time.observe(NOW, Duration::from_secs(1)).now;
    assert!(now >= NOW && now >= mark, "trusted time went backwards");
    if let Ok(Some(raw)) = store.load_bundle() {
        restore(&raw, now);
    }
    let sealed = seal_bytes(MessageKind::Grants, &f.signing, Some(&f.cert), data);
    restore(&sealed, NOW);
}

/// Config parsing: arbitrary (UTF-8) text through [`Settings::from_toml`], which parses and
/// validates; it must refuse with an error, never panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Settings::from_toml(text);
    }
}

/// The DER reader of `licd diag` (`diag/x509.rs`, hand-written: see its module doc for why):
/// arbitrary bytes as the certificate a broker presented. It must answer `None` or a summary,
/// never panic; and bytes after a certificate it read are ignored (rustls hands over exactly
/// one), so appending some must not change that summary.
pub fn x509(data: &[u8]) {
    if let Some(summary) = x509::summarize(data) {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0x30, 0x00, 0xff]);
        assert_eq!(
            x509::summarize(&longer),
            Some(summary),
            "trailing bytes changed the summary"
        );
    }
}
