//! Benchmark of the bundle accept path against its cryptographic floor, measured in the same
//! run (issue 11: "bundle accept path vs one bare `verify_strict` of the same bytes; goal ≤
//! 1.3×"):
//!
//! - subject A: [`AcceptanceRules::check`] — size check, envelope parse, signature, signer
//!   chain (certificate signature, validity, revocation), decode, content rules, device
//!   binding, future check;
//! - subject B: [`Enforcer::handle`] with `Input::Bundle` of a *new* bundle (seq one higher
//!   each call) — A plus the seq check, installing the bundle, re-evaluating five services and
//!   returning the effects (no disk: persisting is the shell's effect);
//! - baseline: one `ed25519_dalek::VerifyingKey::verify_strict` over the same envelope's signed
//!   bytes (domain ‖ kind ‖ payload) with its signature;
//! - reference: two `verify_strict` calls (envelope + signer certificate), the floor of a
//!   certified signer when nothing is cached.
//!
//! Timing alternates subject and baseline call by call (the machine is shared). For figures
//! that noise cannot move, count instructions with callgrind: `LICD_BENCH_ONLY=<side>` sets up
//! `LICD_BENCH_ITERS` bundles, runs that many calls of one side only and exits; side `none`
//! sets up the same and calls nothing, so the per-call count is
//! `(Ir(side) - Ir(none)) / iters`:
//!
//! ```text
//! cargo bench -p licd-agent --bench accept
//! B=$(ls -t target/release/deps/accept-* | grep -v '\.d$' | head -1)
//! for side in none check handle verify verify2; do
//!   LICD_BENCH_ONLY=$side LICD_BENCH_ITERS=200 valgrind --tool=callgrind \
//!     --callgrind-out-file=/dev/null $B 2>&1 | grep 'Collected'
//! done
//! ```

#![allow(missing_docs)] // a bench binary
#![allow(clippy::unwrap_used)] // a failed set-up should stop the bench loudly

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use licd_agent::enforce::{AcceptanceRules, Effect, Enforcer, Input};
use licd_protocol::envelope::{seal_bundle, signing_input, Envelope};
use licd_protocol::{
    DeviceId, GrantBundle, KeyId, LicenseId, PublicKey, ServiceGrant, ServiceName,
    SignerCertificate, Sku, TenantId, TrustStore,
};

const SERVICES: [&str; 5] = ["wifi", "vpn", "ids", "guest-portal", "mesh"];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Pre-sealed bundles with seq 1..=n for one device, and what checking them needs.
struct Fixture {
    rules: AcceptanceRules,
    bundles: Vec<Vec<u8>>,
    now: u64,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let ca = SigningKey::from_bytes(&[31; 32]);
        let signing = SigningKey::from_bytes(&[32; 32]);
        let device_key = SigningKey::from_bytes(&[33; 32]);
        let cert =
            SignerCertificate::issue(&ca, PublicKey::from(&signing.verifying_key()), 0, u64::MAX);
        let now = unix_now();
        let device_key_id: KeyId = PublicKey::from(&device_key.verifying_key()).id();
        let bundles = (1..=n as u64)
            .map(|seq| {
                let bundle = GrantBundle {
                    device: DeviceId::new("ap-1").unwrap(),
                    device_key: device_key_id,
                    tenant: TenantId::new("acme").unwrap(),
                    seq,
                    issued_at: now,
                    refresh_after: now + 1_800,
                    grants: SERVICES
                        .iter()
                        .map(|s| ServiceGrant {
                            service: ServiceName::new(*s).unwrap(),
                            license: LicenseId::new(format!("lic-{s}")).unwrap(),
                            sku: Sku::new("SKU-BENCH").unwrap(),
                            not_before: now - 60,
                            not_after: now + 365 * 86_400,
                            lease_until: now + 3_600,
                            grace: 600,
                            vm_allowance: None,
                        })
                        .collect(),
                    withheld: vec![],
                };
                seal_bundle(&bundle, &signing, &cert)
            })
            .collect();
        let rules = AcceptanceRules {
            trust: TrustStore::new(vec![PublicKey::from(&ca.verifying_key())]),
            device: DeviceId::new("ap-1").unwrap(),
            device_key: device_key_id,
            future_tolerance: 300,
        };
        Self {
            rules,
            bundles,
            now,
        }
    }

    fn enforcer(&self) -> Enforcer {
        Enforcer::new(
            self.rules.clone(),
            SERVICES.map(|s| ServiceName::new(s).unwrap()),
        )
    }
}

/// The bare signature checks of one envelope: (key, signed bytes, signature) of the envelope
/// and of its signer certificate.
struct Bare {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    cert_key: VerifyingKey,
    cert_message: Vec<u8>,
    cert_signature: Signature,
}

impl Bare {
    fn of(raw: &[u8], cert_issuer: &SigningKey, cert: &SignerCertificate) -> Self {
        let env = Envelope::parse(raw).unwrap();
        let sig: [u8; 64] = raw[raw.len() - 64..].try_into().unwrap();
        // The certificate's signed bytes: its domain ‖ body (the wire form is body ‖
        // signature); checked below by verifying them.
        let cert_bytes = cert.to_bytes();
        let cert_sig: [u8; 64] = cert_bytes[cert_bytes.len() - 64..].try_into().unwrap();
        let cert_message = cert_bytes[..cert_bytes.len() - 64].to_vec();
        let mut domain_message = licd_protocol::cert::CERT_DOMAIN.to_vec();
        domain_message.extend_from_slice(&cert_message);
        let bare = Self {
            key: VerifyingKey::from_bytes(&env.signer.0).unwrap(),
            message: signing_input(env.kind, env.payload),
            signature: Signature::from_bytes(&sig),
            cert_key: cert_issuer.verifying_key(),
            cert_message: domain_message,
            cert_signature: Signature::from_bytes(&cert_sig),
        };
        assert!(bare.verify_envelope() && bare.verify_cert());
        bare
    }

    fn verify_envelope(&self) -> bool {
        black_box(&self.key)
            .verify_strict(black_box(&self.message), black_box(&self.signature))
            .is_ok()
    }

    fn verify_cert(&self) -> bool {
        black_box(&self.cert_key)
            .verify_strict(
                black_box(&self.cert_message),
                black_box(&self.cert_signature),
            )
            .is_ok()
    }
}

/// Sorted per-call durations.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }
    fn pct(&self, p: usize) -> Duration {
        self.0[(self.0.len() * p / 100).min(self.0.len() - 1)]
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_nanos() as f64 / 1e3)
}

fn row(name: &str, s: &Samples, base: &Samples) {
    println!(
        "{name:<52} p50 {:>9} p99 {:>9} | verify_strict p50 {:>9} p99 {:>9} | ratio p50 {:.2}× p99 {:.2}×",
        us(s.pct(50)),
        us(s.pct(99)),
        us(base.pct(50)),
        us(base.pct(99)),
        s.pct(50).as_secs_f64() / base.pct(50).as_secs_f64(),
        s.pct(99).as_secs_f64() / base.pct(99).as_secs_f64(),
    );
}

fn main() {
    let ca = SigningKey::from_bytes(&[31; 32]);
    let signing = SigningKey::from_bytes(&[32; 32]);
    let cert =
        SignerCertificate::issue(&ca, PublicKey::from(&signing.verifying_key()), 0, u64::MAX);

    // Instruction-count mode (callgrind): one side only, then exit.
    if let Ok(side) = std::env::var("LICD_BENCH_ONLY") {
        let iters: usize = std::env::var("LICD_BENCH_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let f = Fixture::new(iters.max(1));
        let bare = Bare::of(&f.bundles[0], &ca, &cert);
        let mut enforcer = f.enforcer();
        for raw in f.bundles.iter().take(iters) {
            match side.as_str() {
                "check" => assert!(f.rules.check(black_box(raw), f.now).is_ok()),
                "handle" => {
                    let fx = enforcer.handle(f.now, Input::Bundle(black_box(raw)));
                    assert!(fx.iter().any(|e| matches!(e, Effect::Accepted { .. })));
                }
                "verify" => assert!(bare.verify_envelope()),
                "verify2" => assert!(bare.verify_envelope() && bare.verify_cert()),
                "none" => {}
                other => {
                    panic!("LICD_BENCH_ONLY={other}: one of none, check, handle, verify, verify2")
                }
            }
        }
        println!("{side}: {iters} calls");
        return;
    }

    let n = 3_000;
    let f = Fixture::new(n);
    println!(
        "licd-agent accept bench: {} bundles of {} bytes, 5 services ({} cores available)",
        n,
        f.bundles[0].len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let bare = Bare::of(&f.bundles[0], &ca, &cert);

    // check vs verify_strict, alternating.
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut enforcer = f.enforcer();
    for _ in 0..100 {
        black_box(f.rules.check(&f.bundles[0], f.now).unwrap());
        black_box(bare.verify_envelope());
    }
    for raw in &f.bundles {
        let t = Instant::now();
        black_box(f.rules.check(black_box(raw), f.now).unwrap());
        a.push(t.elapsed());
        let t = Instant::now();
        let fx = enforcer.handle(f.now, Input::Bundle(black_box(raw)));
        b.push(t.elapsed());
        assert!(fx.iter().any(|e| matches!(e, Effect::Accepted { .. })));
        let t = Instant::now();
        assert!(bare.verify_envelope());
        c.push(t.elapsed());
    }
    let (check, handle, verify) = (Samples::new(a), Samples::new(b), Samples::new(c));
    row("accept: AcceptanceRules::check", &check, &verify);
    row(
        "accept: Enforcer::handle(new bundle, seq+1)",
        &handle,
        &verify,
    );

    let (mut two, mut one) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        assert!(bare.verify_envelope() && bare.verify_cert());
        two.push(t.elapsed());
        let t = Instant::now();
        assert!(bare.verify_envelope());
        one.push(t.elapsed());
    }
    row(
        "reference: verify_strict ×2 (envelope + cert)",
        &Samples::new(two),
        &Samples::new(one),
    );
}
