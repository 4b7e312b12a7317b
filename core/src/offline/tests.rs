//! The file rules with real signatures and a hand-set time.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::enforce::{AcceptanceRules, Reason, ServiceState};
use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_bundle;
use licd_protocol::offline::{
    armor, seal_activation_request, seal_grant_answer, seal_release_receipt,
};
use licd_protocol::{
    DeviceId, GrantAnswer, GrantBundle, LicenseId, PublicKey, ReleaseReceipt, ServiceGrant,
    SignerCertificate, Sku, TenantId, TrustStore,
};
use proptest::prelude::*;

const T0: UnixTime = 1_800_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

struct Site {
    signing: SigningKey,
    cert: SignerCertificate,
    device_key: SigningKey,
    enforcer: Enforcer,
    trust: TrustState,
    offline: OfflineState,
}

fn site() -> Site {
    let root = key(1);
    let signing = key(2);
    let cert = SignerCertificate::issue(
        &root,
        PublicKey::from(&signing.verifying_key()),
        T0 - 86_400,
        T0 + 365 * 86_400,
    );
    let device_key = key(3);
    let roots = vec![PublicKey::from(&root.verifying_key())];
    let rules = AcceptanceRules {
        trust: TrustStore::new(roots.clone()),
        device: DeviceId::new("ap-1").unwrap(),
        device_key: PublicKey::from(&device_key.verifying_key()).id(),
        future_tolerance: 300,
    };
    Site {
        signing,
        cert,
        device_key,
        enforcer: Enforcer::new(rules, [svc("wifi"), svc("wids")]),
        trust: TrustState::new(roots),
        offline: OfflineState::default(),
    }
}

impl Site {
    fn bundle_for(&self, device: &str, seq: u64) -> Vec<u8> {
        let g = |s: &str| ServiceGrant {
            service: svc(s),
            license: LicenseId::new("lic-1").unwrap(),
            sku: Sku::new("SKU").unwrap(),
            not_before: T0 - 10,
            not_after: T0 + 86_400 * 30,
            lease_until: T0 + 86_400 * 7,
            grace: 600,
            vm_allowance: None,
        };
        let b = GrantBundle {
            device: DeviceId::new(device).unwrap(),
            device_key: PublicKey::from(&self.device_key.verifying_key()).id(),
            tenant: TenantId::new("acme").unwrap(),
            seq,
            issued_at: T0,
            refresh_after: T0 + 3_600,
            grants: vec![g("wifi"), g("wids")],
            withheld: vec![],
        };
        seal_bundle(&b, &self.signing, &self.cert)
    }

    fn bundle(&self, seq: u64) -> Vec<u8> {
        self.bundle_for("ap-1", seq)
    }

    fn answer(&self, seq: u64, nonce: Nonce) -> Vec<u8> {
        let a = GrantAnswer {
            device: DeviceId::new("ap-1").unwrap(),
            request_nonce: nonce,
            bundle: self.bundle(seq),
        };
        seal_grant_answer(&a, &self.signing, &self.cert)
    }

    fn import(&mut self, file: &[u8]) -> Result<ImportOutcome, ImportRefusal> {
        import(
            file,
            &mut self.enforcer,
            &mut self.trust,
            &mut self.offline,
            T0,
        )
    }

    fn state(&self, s: &str) -> ServiceState {
        self.enforcer.state(&svc(s))
    }
}

#[test]
fn an_answer_to_a_pending_request_is_imported_once() {
    let mut s = site();
    s.offline.add_pending([7; 16]);
    let file = s.answer(5, [7; 16]);
    let out = s.import(&file).unwrap();
    assert_eq!(
        out.imported,
        Imported::Bundle {
            seq: 5,
            answered_request: true
        }
    );
    assert!(out.offline_changed);
    assert!(out.effects.iter().any(|e| matches!(e, Effect::Persist(_))));
    assert!(s.offline.pending.is_empty());
    assert!(s.state("wifi").may_run());
    assert_eq!(s.import(&file).unwrap_err(), ImportRefusal::NotRequested);
}

#[test]
fn an_answer_to_a_request_never_made_changes_nothing() {
    let mut s = site();
    s.offline.add_pending([7; 16]);
    let e = s.import(&s.answer(5, [8; 16])).unwrap_err();
    assert_eq!(e, ImportRefusal::NotRequested);
    assert_eq!(e.code(), "not_requested");
    assert_eq!(s.enforcer.held_seq(), 0);
    assert_eq!(s.offline.pending, vec![[7; 16]]);
}

#[test]
fn a_plain_grant_file_imports_and_the_same_or_an_older_one_is_refused() {
    let mut s = site();
    s.import(&s.bundle(5)).unwrap();
    let again = s.import(&s.bundle(5)).unwrap_err();
    assert_eq!(
        again,
        ImportRefusal::Bundle(Refusal::AlreadyHeld { seq: 5 })
    );
    assert_eq!(again.code(), "already_held");
    let older = s.import(&s.bundle(4)).unwrap_err();
    assert_eq!(
        older,
        ImportRefusal::Bundle(Refusal::Stale { seq: 4, held: 5 })
    );
    assert!(!older.is_unusable_file());
    assert_eq!(s.enforcer.held_seq(), 5);
}

#[test]
fn an_armored_grant_file_imports_and_a_mangled_one_is_an_unusable_file() {
    let mut s = site();
    let text = armor(&s.bundle(3)).unwrap();
    let mangled = text.replacen("\n", "\nx", 1);
    let e = s.import(mangled.as_bytes()).unwrap_err();
    assert!(e.is_unusable_file(), "{e}");
    assert_eq!(e.code(), "bad_armor");
    s.import(text.as_bytes()).unwrap();
    assert_eq!(s.enforcer.held_seq(), 3);
}

#[test]
fn another_devices_file_and_garbage_are_refused() {
    let mut s = site();
    let e = s.import(&s.bundle_for("ap-2", 5)).unwrap_err();
    assert_eq!(e.code(), "wrong_device");
    assert!(!e.is_unusable_file());
    for junk in [&b""[..], b"hello", &[1u8, 2, 3][..]] {
        let e = s.import(junk).unwrap_err();
        assert!(e.is_unusable_file(), "{junk:?}: {e}");
    }
    let mut flipped = s.bundle(5);
    flipped[300] ^= 4;
    assert_eq!(s.import(&flipped).unwrap_err().code(), "bad_signature");
    assert_eq!(s.enforcer.held_seq(), 0);
}

#[test]
fn requests_and_receipts_are_not_importable() {
    let mut s = site();
    let receipt = ReleaseReceipt {
        device: DeviceId::new("ap-1").unwrap(),
        tenant: TenantId::new("acme").unwrap(),
        bundle_seq: 1,
        services: vec![svc("wifi")],
        released_at: T0,
        nonce: [1; 16],
    };
    let e = s
        .import(&seal_release_receipt(&receipt, &s.device_key))
        .unwrap_err();
    assert!(matches!(
        e,
        ImportRefusal::NotImportable {
            label: "RELEASE",
            ..
        }
    ));
    let report = licd_protocol::DeviceReport {
        device: DeviceId::new("ap-1").unwrap(),
        tenant: TenantId::new("acme").unwrap(),
        device_key: PublicKey::from(&s.device_key.verifying_key()),
        model: "m".into(),
        serial: "s".into(),
        product_class: "wireless".into(),
        firmware_version: "1".into(),
        agent_version: "1".into(),
        vm_count: None,
        services_wanted: vec![],
        bundle_seq: 0,
        clock: T0,
        uptime: 1,
        clock_rollback: false,
    };
    let request = licd_protocol::ActivationRequest {
        report,
        nonce: [2; 16],
    };
    let e = s
        .import(&seal_activation_request(&request, &s.device_key))
        .unwrap_err();
    assert_eq!(e.code(), "not_importable");
    assert!(e.is_unusable_file());
}

#[test]
fn released_services_are_unlicensed_and_the_released_grant_cannot_come_back() {
    let mut s = site();
    s.import(&s.bundle(5)).unwrap();
    let (record, effects) = s.enforcer.release(&[svc("wifi")], T0).unwrap();
    assert_eq!(record.seq, 5);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Changed {
            to: ServiceState::Unlicensed {
                reason: Reason::Released
            },
            ..
        }
    )));
    assert_eq!(
        s.state("wifi"),
        ServiceState::Unlicensed {
            reason: Reason::Released
        }
    );
    assert!(s.state("wids").may_run(), "the other service keeps running");
    assert_eq!(
        s.enforcer.release(&[svc("wifi")], T0).unwrap_err().code(),
        "already_released"
    );
    assert_eq!(
        s.enforcer.release(&[svc("nope")], T0).unwrap_err().code(),
        "not_granted"
    );
    s.offline.release = Some(record.clone());

    // Even with the cache lost (a fresh enforcer holding nothing), the floor holds.
    let mut fresh = site();
    fresh.enforcer.set_release(Some(record.clone()));
    fresh.offline.release = Some(record);
    for seq in [4, 5] {
        assert_eq!(
            fresh.import(&fresh.bundle(seq)).unwrap_err(),
            ImportRefusal::Released { seq, released: 5 }
        );
    }
    // A newer grant puts its own grants in force again.
    s.import(&s.bundle(6)).unwrap();
    assert!(s.state("wifi").may_run());
}

#[test]
fn releasing_with_nothing_held_is_refused() {
    let mut s = site();
    assert_eq!(
        s.enforcer.release(&[svc("wifi")], T0).unwrap_err(),
        ReleaseError::NothingHeld
    );
}

#[test]
fn the_offline_state_round_trips_and_damage_is_named() {
    let mut st = OfflineState::default();
    for i in 0..20u8 {
        st.add_pending([i; 16]);
    }
    assert_eq!(st.pending.len(), MAX_PENDING);
    assert_eq!(st.pending[0], [4; 16], "the oldest are forgotten");
    st.release = Some(Release {
        seq: 9,
        services: [svc("wifi"), svc("wids")].into_iter().collect(),
    });
    assert_eq!(OfflineState::decode(&st.encode()), Ok(st.clone()));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        OfflineState::load(dir.path()).unwrap(),
        OfflineState::default()
    );
    st.save(dir.path()).unwrap();
    assert_eq!(OfflineState::load(dir.path()).unwrap(), st);
    for (junk, why) in [
        ("pending 12\n", "line 1: expected 32 hex digits"),
        ("released x wifi\n", "line 1: expected a seq"),
        ("released 3\n", "line 1: a release names no service"),
        ("released 3 a/b\n", "line 1: identifier"),
        ("released 3 a\nreleased 4 b\n", "line 2: a second"),
        ("hello\n", "line 1: expected \"pending\""),
    ] {
        let e = OfflineState::decode(junk).unwrap_err();
        assert!(e.starts_with(why), "{junk:?}: {e}");
    }
}

proptest! {
    /// Whatever files arrive in whatever order, with releases in between: the held seq only
    /// grows, and nothing at or below a release floor is ever accepted after the release.
    #[test]
    fn no_import_goes_back_below_the_held_seq_or_a_release(
        ops in proptest::collection::vec((1u64..12, any::<bool>()), 1..24)
    ) {
        let mut s = site();
        let mut floor = 0;
        let mut last = 0;
        for (seq, release) in ops {
            if release {
                if let Ok((r, _)) = s.enforcer.release(&[svc("wids")], T0) {
                    floor = r.seq;
                    s.offline.release = Some(r);
                }
                continue;
            }
            let before = s.enforcer.held_seq();
            match s.import(&s.bundle(seq)) {
                Ok(_) => {
                    prop_assert!(seq > before && seq > floor, "{seq} after {before}/{floor}");
                    last = seq;
                }
                Err(_) => prop_assert_eq!(s.enforcer.held_seq(), before),
            }
            prop_assert!(s.enforcer.held_seq() >= last);
        }
    }
}

#[test]
fn a_policy_bundle_imports_bare_or_inside_an_answer_armored_or_not() {
    use licd_protocol::policy::seal_policy_bundle;
    use licd_protocol::{PolicyBundle, ServicePolicy, Strategy};
    let mut s = site();
    let policy = |seq| {
        let plain = s.bundle(seq);
        let env = licd_protocol::Envelope::parse(&plain).unwrap();
        let bundle: GrantBundle = env.decode().unwrap();
        seal_policy_bundle(
            &PolicyBundle {
                bundle,
                policies: vec![ServicePolicy {
                    service: svc("wifi"),
                    strategy: Strategy::Advisory,
                    overage_tolerance_pct: 100,
                    warn_before: vec![86_400],
                }],
                usage_ack: 0,
            },
            &s.signing,
            &s.cert,
        )
    };
    let bare = policy(5);
    let armored = licd_protocol::offline::armor(&policy(6)).unwrap();
    let nonce = [7; 16];
    let answer = seal_grant_answer(
        &GrantAnswer {
            device: DeviceId::new("ap-1").unwrap(),
            request_nonce: nonce,
            bundle: policy(7),
        },
        &s.signing,
        &s.cert,
    );
    s.import(&bare).unwrap();
    assert_eq!(s.enforcer.held_seq(), 5);
    assert!(s.enforcer.held().is_some_and(|h| h.with_policy));
    s.import(armored.as_bytes()).unwrap();
    assert_eq!(s.enforcer.held_seq(), 6);
    s.offline.pending.push(nonce);
    s.import(&answer).unwrap();
    assert_eq!(s.enforcer.held_seq(), 7);
    assert_eq!(
        s.enforcer.snapshot().services[1].strategy,
        Some("advisory"),
        "wids has no entry, wifi (second in order) is advisory"
    );
}
