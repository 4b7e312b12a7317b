//! Table-driven tests of the enforcement core with real signatures and a hand-set time.

use super::*;
use ed25519_dalek::SigningKey;
use licd_protocol::envelope::seal_bundle;
use licd_protocol::{
    DeviceId, LicenseId, PublicKey, ServiceGrant, SignerCertificate, Sku, TenantId, TrustStore,
    Withheld, WithheldReason,
};

const T0: UnixTime = 1_800_000_000;
const LEASE: u64 = 3_600;
const GRACE: u64 = 600;

struct Fixture {
    signing: SigningKey,
    cert: SignerCertificate,
    device_key: SigningKey,
    rules: AcceptanceRules,
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

impl Fixture {
    fn new() -> Self {
        let root = key(1);
        let signing = key(2);
        let cert = SignerCertificate::issue(
            &root,
            PublicKey::from(&signing.verifying_key()),
            T0 - 86_400,
            T0 + 365 * 86_400,
        );
        let device_key = key(3);
        let rules = AcceptanceRules {
            trust: TrustStore::new(vec![PublicKey::from(&root.verifying_key())]),
            device: DeviceId::new("ap-1").unwrap(),
            device_key: PublicKey::from(&device_key.verifying_key()).id(),
            future_tolerance: 300,
        };
        Self {
            signing,
            cert,
            device_key,
            rules,
        }
    }

    fn enforcer(&self, wanted: &[&str]) -> Enforcer {
        Enforcer::new(self.rules.clone(), wanted.iter().map(|s| svc(s)))
    }

    /// An enforcer whose broker connection came up at `T0 - 60` (reports go only then).
    fn connected(&self, wanted: &[&str]) -> Enforcer {
        let mut e = self.enforcer(wanted);
        e.handle(T0 - 60, Input::Connected);
        e
    }

    fn bundle(&self, seq: u64, issued_at: UnixTime, grants: Vec<ServiceGrant>) -> GrantBundle {
        GrantBundle {
            device: self.rules.device.clone(),
            device_key: PublicKey::from(&self.device_key.verifying_key()).id(),
            tenant: TenantId::new("acme").unwrap(),
            seq,
            issued_at,
            refresh_after: issued_at + LEASE / 2,
            grants,
            withheld: vec![],
        }
    }

    fn seal(&self, b: &GrantBundle) -> Vec<u8> {
        seal_bundle(b, &self.signing, &self.cert)
    }
}

fn grant(service: &str, issued_at: UnixTime) -> ServiceGrant {
    ServiceGrant {
        service: svc(service),
        license: LicenseId::new("lic-1").unwrap(),
        sku: Sku::new("SKU-1").unwrap(),
        not_before: issued_at - 10,
        not_after: issued_at + 365 * 86_400,
        lease_until: issued_at + LEASE,
        grace: GRACE,
        vm_allowance: None,
    }
}

fn state_after(e: &mut Enforcer, now: UnixTime, service: &str) -> ServiceState {
    e.handle(now, Input::Tick);
    e.state(&svc(service))
}

#[test]
fn a_service_nobody_granted_is_unlicensed_never_granted() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let effects = e.handle(T0, Input::Tick);
    assert_eq!(
        effects,
        vec![Effect::Changed {
            service: svc("wifi"),
            from: None,
            to: ServiceState::Unlicensed {
                reason: Reason::NeverGranted
            }
        }]
    );
    assert_eq!(e.next_deadline(), None);
}

#[test]
fn lease_boundaries_are_exact() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let raw = f.seal(&f.bundle(1, T0, vec![grant("wifi", T0)]));
    let effects = e.handle(T0, Input::Bundle(&raw));
    assert!(effects.contains(&Effect::Persist(raw.clone())));
    assert_eq!(e.next_deadline(), Some(T0 + LEASE));
    let cases = [
        (T0, ServiceState::Licensed { until: T0 + LEASE }),
        (T0 + LEASE - 1, ServiceState::Licensed { until: T0 + LEASE }),
        (
            T0 + LEASE,
            ServiceState::Grace {
                until: T0 + LEASE + GRACE,
                reason: Reason::LeaseExpired,
            },
        ),
        (
            T0 + LEASE + GRACE - 1,
            ServiceState::Grace {
                until: T0 + LEASE + GRACE,
                reason: Reason::LeaseExpired,
            },
        ),
        (
            T0 + LEASE + GRACE,
            ServiceState::Unlicensed {
                reason: Reason::LeaseExpired,
            },
        ),
    ];
    for (now, expected) in cases {
        assert_eq!(state_after(&mut e, now, "wifi"), expected, "at {now}");
    }
}

#[test]
fn entering_grace_asks_for_a_report_once() {
    let f = Fixture::new();
    let mut e = f.connected(&["wifi", "poe"]);
    let raw = f.seal(&f.bundle(1, T0, vec![grant("wifi", T0), grant("poe", T0)]));
    e.handle(T0, Input::Bundle(&raw));
    let effects = e.handle(T0 + LEASE, Input::Tick);
    let reports = effects
        .iter()
        .filter(|e| matches!(e, Effect::Report(ReportCause::GraceStarted)))
        .count();
    assert_eq!(reports, 1);
    // No second report (the grace time counted since is persisted, nothing else happens).
    assert!(e
        .handle(T0 + LEASE + 1, Input::Tick)
        .iter()
        .all(|e| matches!(e, Effect::PersistPolicy(_))));
}

#[test]
fn term_end_before_lease_end_reads_term_ended() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let mut g = grant("wifi", T0);
    g.not_after = T0 + 100;
    e.handle(T0, Input::Bundle(&f.seal(&f.bundle(1, T0, vec![g]))));
    assert_eq!(
        state_after(&mut e, T0 + 100, "wifi"),
        ServiceState::Grace {
            until: T0 + 100 + GRACE,
            reason: Reason::TermEnded
        }
    );
    assert_eq!(
        state_after(&mut e, T0 + 100 + GRACE, "wifi"),
        ServiceState::Unlicensed {
            reason: Reason::TermEnded
        }
    );
}

#[test]
fn a_term_that_has_not_started_is_unlicensed_until_it_does() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let mut g = grant("wifi", T0);
    g.not_before = T0 + 50;
    e.handle(T0, Input::Bundle(&f.seal(&f.bundle(1, T0, vec![g]))));
    assert_eq!(
        e.state(&svc("wifi")),
        ServiceState::Unlicensed {
            reason: Reason::NotYetValid
        }
    );
    assert_eq!(e.next_deadline(), Some(T0 + 50));
    assert!(state_after(&mut e, T0 + 50, "wifi").may_run());
}

#[test]
fn vm_count_over_the_allowance_starts_grace_and_back_under_restores_the_license() {
    let f = Fixture::new();
    let mut e = f.connected(&["hv"]);
    let mut g = grant("hv", T0);
    g.vm_allowance = Some(4);
    e.handle(T0, Input::Bundle(&f.seal(&f.bundle(1, T0, vec![g]))));
    let effects = e.handle(T0 + 10, Input::VmCount(Some(5)));
    assert!(effects.contains(&Effect::Report(ReportCause::VmCountChanged)));
    assert_eq!(
        e.state(&svc("hv")),
        ServiceState::Grace {
            until: T0 + 10 + GRACE,
            reason: Reason::OverVmAllowance
        }
    );
    // Still over at the end of grace: unlicensed.
    assert_eq!(
        state_after(&mut e, T0 + 10 + GRACE, "hv"),
        ServiceState::Unlicensed {
            reason: Reason::OverVmAllowance
        }
    );
    // Back under: licensed again.
    e.handle(T0 + 10 + GRACE + 1, Input::VmCount(Some(4)));
    assert_eq!(
        e.state(&svc("hv")),
        ServiceState::Licensed { until: T0 + LEASE }
    );
}

#[test]
fn a_newer_bundle_without_a_service_revokes_it_at_once() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    e.handle(
        T0,
        Input::Bundle(&f.seal(&f.bundle(1, T0, vec![grant("wifi", T0), grant("poe", T0)]))),
    );
    assert!(e.state(&svc("poe")).may_run());
    e.handle(
        T0 + 5,
        Input::Bundle(&f.seal(&f.bundle(2, T0 + 5, vec![grant("wifi", T0 + 5)]))),
    );
    assert_eq!(
        e.state(&svc("poe")),
        ServiceState::Unlicensed {
            reason: Reason::Revoked
        }
    );
}

#[test]
fn a_withheld_service_carries_the_controllers_reason() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let mut b = f.bundle(1, T0, vec![]);
    b.withheld.push(Withheld {
        service: svc("wifi"),
        reason: WithheldReason::SeatsExhausted,
    });
    e.handle(T0, Input::Bundle(&f.seal(&b)));
    assert_eq!(
        e.state(&svc("wifi")),
        ServiceState::Unlicensed {
            reason: Reason::SeatsExhausted
        }
    );
}

#[test]
fn a_bundle_arriving_in_grace_renews_the_license() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    e.handle(
        T0,
        Input::Bundle(&f.seal(&f.bundle(1, T0, vec![grant("wifi", T0)]))),
    );
    assert!(matches!(
        state_after(&mut e, T0 + LEASE + 1, "wifi"),
        ServiceState::Grace { .. }
    ));
    let now = T0 + LEASE + 2;
    let effects = e.handle(
        now,
        Input::Bundle(&f.seal(&f.bundle(2, now, vec![grant("wifi", now)]))),
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Changed {
            to: ServiceState::Licensed { .. },
            ..
        }
    )));
    assert_eq!(
        e.state(&svc("wifi")),
        ServiceState::Licensed { until: now + LEASE }
    );
}

#[test]
fn refused_bundles_change_nothing_and_say_why() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let first = f.seal(&f.bundle(5, T0, vec![grant("wifi", T0)]));
    e.handle(T0, Input::Bundle(&first));
    let before = e.snapshot();

    let mut other_device = f.bundle(6, T0, vec![]);
    other_device.device = DeviceId::new("ap-2").unwrap();
    let mut other_key = f.bundle(6, T0, vec![]);
    other_key.device_key = PublicKey([9; 32]).id();
    let forged = {
        let mut raw = f.seal(&f.bundle(6, T0, vec![]));
        let n = raw.len();
        raw[n - 1] ^= 1;
        raw
    };
    let unknown_root = {
        let rogue = key(7);
        let cert =
            SignerCertificate::issue(&rogue, PublicKey::from(&rogue.verifying_key()), 0, u64::MAX);
        seal_bundle(&f.bundle(6, T0, vec![]), &rogue, &cert)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (f.seal(&f.bundle(4, T0, vec![])), "stale"),
        (f.seal(&f.bundle(5, T0, vec![])), "stale"),
        (f.seal(&other_device), "wrong_device"),
        (f.seal(&other_key), "wrong_device_key"),
        (f.seal(&f.bundle(6, T0 + 302, vec![])), "from_the_future"),
        (forged, "bad_signature"),
        (unknown_root, "untrusted_signer"),
        (b"garbage".to_vec(), "bad_version"),
        (vec![1u8; 70 * 1024], "oversized"),
        (vec![], "malformed"),
    ];
    for (i, (raw, code)) in cases.iter().enumerate() {
        let effects = e.handle(T0 + 1, Input::Bundle(raw));
        match effects.as_slice() {
            [Effect::Refused(r)] => assert_eq!(r.code(), *code, "case {i}: {r}"),
            other => panic!("case {i}: {other:?}"),
        }
    }
    let after = e.snapshot();
    assert_eq!(after.services, before.services);
    assert_eq!(after.bundle, before.bundle);
    assert_eq!(after.refusals.total, cases.len() as u64);
}

#[test]
fn the_same_retained_bundle_delivered_again_is_ignored_quietly() {
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let raw = f.seal(&f.bundle(1, T0, vec![grant("wifi", T0)]));
    e.handle(T0, Input::Bundle(&raw));
    assert!(e.handle(T0 + 1, Input::Bundle(&raw)).is_empty());
    assert_eq!(e.snapshot().refusals.total, 0);
}

#[test]
fn restore_applies_the_same_rules_as_a_live_bundle() {
    let f = Fixture::new();
    let raw = f.seal(&f.bundle(3, T0, vec![grant("wifi", T0)]));
    let mut e = f.enforcer(&["wifi"]);
    e.restore(&raw, T0 + 10).unwrap();
    assert!(e.state(&svc("wifi")).may_run());
    assert_eq!(e.held_seq(), 3);
    // Only a newer bundle replaces it.
    let r = e.handle(T0 + 11, Input::Bundle(&f.seal(&f.bundle(3, T0, vec![]))));
    assert!(matches!(
        r.as_slice(),
        [Effect::Refused(Refusal::Stale { .. })]
    ));

    let mut other = f.bundle(3, T0, vec![]);
    other.device = DeviceId::new("ap-9").unwrap();
    let mut e = f.enforcer(&["wifi"]);
    assert!(matches!(
        e.restore(&f.seal(&other), T0),
        Err(Refusal::WrongDevice { .. })
    ));
    assert!(e.held().is_none());
}

#[test]
fn a_cached_bundle_restored_with_the_clock_in_1970_is_evaluated_at_its_signed_issue_time() {
    let f = Fixture::new();
    let raw = f.seal(&f.bundle(3, T0, vec![grant("wifi", T0)]));
    let mut e = f.enforcer(&["wifi"]);
    // No time mark and a wall clock at the epoch: the bundle's issued_at is the best time known.
    e.restore(&raw, 0).unwrap();
    assert!(e.state(&svc("wifi")).may_run());
    assert_eq!(e.snapshot().evaluated_at, T0);
    // A forged bundle gains nothing from the same rule: it still has to verify.
    let mut forged = raw.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut e = f.enforcer(&["wifi"]);
    assert!(matches!(
        e.restore(&forged, 0),
        Err(Refusal::Protocol(licd_protocol::Error::BadSignature))
    ));
    // Nor does a live bundle: what arrives over the network is checked at the time in hand
    // (here its certificate is not valid yet in 1970).
    let mut e = f.enforcer(&["wifi"]);
    let r = e.handle(0, Input::Bundle(&raw));
    assert!(matches!(r.as_slice(), [Effect::Refused(_)]), "{r:?}");
}

fn revoking(root: &SigningKey, version: u64, revoked: Vec<licd_protocol::KeyId>) -> Vec<u8> {
    licd_protocol::revocation::seal_revocations(
        &licd_protocol::RevocationList {
            version,
            issued_at: T0,
            revoked,
        },
        root,
    )
}

#[test]
fn a_held_bundle_whose_signer_gets_revoked_is_dropped_and_its_services_are_unlicensed() {
    let f = Fixture::new();
    let mut e = f.connected(&["wifi"]);
    e.handle(
        T0,
        Input::Bundle(&f.seal(&f.bundle(5, T0, vec![grant("wifi", T0)]))),
    );
    assert!(e.state(&svc("wifi")).may_run());
    let signer = PublicKey::from(&f.signing.verifying_key()).id();
    let mut trust = e.trust().clone();
    trust
        .accept_revocations(&revoking(&key(1), 1, vec![signer]))
        .unwrap();
    let effects = e.set_trust(trust, T0 + 5);
    assert!(
        effects.iter().any(|x| matches!(
            x,
            Effect::Distrusted {
                seq: 5,
                refusal: Refusal::Protocol(licd_protocol::Error::SignerRevoked(_))
            }
        )),
        "{effects:?}"
    );
    assert!(effects.contains(&Effect::Report(ReportCause::BundleDistrusted)));
    assert_eq!(
        e.state(&svc("wifi")),
        ServiceState::Unlicensed {
            reason: Reason::Revoked
        }
    );
    assert_eq!(e.held_seq(), 0);
    // Logged as the state change: it must not blame a newer bundle (there is none).
    let said = e.state(&svc("wifi")).to_string();
    assert!(
        !said.contains("by a newer grant bundle") && said.contains("signer"),
        "{said}"
    );
    assert_eq!(e.snapshot().refusals.last_code, Some("signer_revoked"));
    assert_eq!(e.snapshot().trust.revoked, vec![signer.to_hex()]);
    // The revoked key is refused live; anti-replay still counts from the dropped seq.
    let r = e.handle(T0 + 6, Input::Bundle(&f.seal(&f.bundle(6, T0, vec![]))));
    assert_eq!(
        r[0].clone(),
        Effect::Refused(Refusal::Protocol(licd_protocol::Error::SignerRevoked(
            signer
        )))
    );
    let new_key = key(7);
    let cert = SignerCertificate::issue(
        &key(1),
        PublicKey::from(&new_key.verifying_key()),
        T0 - 10,
        T0 + 86_400,
    );
    let old_seq = seal_bundle(&f.bundle(4, T0, vec![grant("wifi", T0)]), &new_key, &cert);
    assert!(matches!(
        e.handle(T0 + 7, Input::Bundle(&old_seq)).as_slice(),
        [Effect::Refused(Refusal::Stale { seq: 4, held: 5 })]
    ));
    let next = seal_bundle(&f.bundle(6, T0, vec![grant("wifi", T0)]), &new_key, &cert);
    e.handle(T0 + 8, Input::Bundle(&next));
    assert!(e.state(&svc("wifi")).may_run());
}

#[test]
fn a_cached_bundle_loads_if_its_certificate_was_valid_when_it_was_issued() {
    let f = Fixture::new();
    // The certificate ended a day after the bundle was issued; the agent restarts a week later.
    let short = SignerCertificate::issue(
        &key(1),
        PublicKey::from(&f.signing.verifying_key()),
        T0 - 10,
        T0 + 86_400,
    );
    let b = f.bundle(3, T0, vec![grant("wifi", T0)]);
    let raw = seal_bundle(&b, &f.signing, &short);
    let later = T0 + 7 * 86_400;
    let mut e = f.enforcer(&["wifi"]);
    e.restore(&raw, later).unwrap();
    assert_eq!(e.held_seq(), 3);
    // The same bytes arriving live at that time are refused: the certificate has expired.
    let mut e = f.enforcer(&["wifi"]);
    assert!(matches!(
        e.handle(later, Input::Bundle(&raw)).as_slice(),
        [Effect::Refused(Refusal::Protocol(
            licd_protocol::Error::CertificateExpired { .. }
        ))]
    ));
    // Issued after the certificate ended: refused from the cache too.
    let late = seal_bundle(&f.bundle(4, T0 + 2 * 86_400, vec![]), &f.signing, &short);
    let mut e = f.enforcer(&["wifi"]);
    assert!(matches!(
        e.restore(&late, later),
        Err(Refusal::Protocol(
            licd_protocol::Error::CertificateExpired { .. }
        ))
    ));
}

/// A bundle granting `hv` with a VM allowance of 4, accepted at T0.
fn vm_enforcer(f: &Fixture) -> (Enforcer, Vec<u8>) {
    let mut e = f.enforcer(&["hv"]);
    let mut g = grant("hv", T0);
    g.vm_allowance = Some(4);
    let raw = f.seal(&f.bundle(1, T0, vec![g]));
    e.handle(T0, Input::Bundle(&raw));
    (e, raw)
}

#[test]
fn a_probe_failing_on_and_off_does_not_lift_or_extend_vm_overuse_grace() {
    let f = Fixture::new();
    let (mut e, _) = vm_enforcer(&f);
    e.handle(T0 + 10, Input::VmCount(Some(6)));
    let grace = ServiceState::Grace {
        until: T0 + 10 + GRACE,
        reason: Reason::OverVmAllowance,
    };
    assert_eq!(e.state(&svc("hv")), grace);
    // The probe prints garbage, then 6 again, then garbage...: the last known count stays in
    // force, the report keeps carrying it and the grace clock runs on from T0 + 10.
    for i in 0..20u64 {
        let now = T0 + 20 + i * 25;
        let reading = if i % 2 == 0 { None } else { Some(6) };
        let effects = e.handle(now, Input::VmCount(reading));
        assert!(
            !effects.contains(&Effect::Report(ReportCause::VmCountChanged)),
            "step {i}: {effects:?}"
        );
        assert_eq!(e.vm_count(), Some(6), "step {i}");
        if now < T0 + 10 + GRACE {
            assert_eq!(e.state(&svc("hv")), grace, "step {i} at {now}");
        } else {
            assert_eq!(
                e.state(&svc("hv")),
                ServiceState::Unlicensed {
                    reason: Reason::OverVmAllowance
                },
                "step {i} at {now}"
            );
        }
    }
}

/// One step of the probe-and-restart property below.
#[derive(Debug, Clone, Copy)]
enum VmStep {
    /// The probe counted this many VMs.
    Known(u32),
    /// The probe failed (garbage, error, timeout).
    Unknown,
    /// The agent restarted: a new enforcer from the persisted VM record and the cached bundle.
    Restart,
    /// Time passed.
    Tick,
}

fn vm_step() -> impl proptest::strategy::Strategy<Value = VmStep> {
    use proptest::prelude::*;
    prop_oneof![
        2 => (0u32..8).prop_map(VmStep::Known),
        3 => Just(VmStep::Unknown),
        1 => Just(VmStep::Restart),
        1 => Just(VmStep::Tick),
    ]
}

proptest::proptest! {
    /// Failed probe readings and restarts change nothing: at every step, the service's state
    /// (and the count in force) is exactly what an agent that only ever saw the good readings,
    /// and never restarted, would have. So a probe failing on and off, or an agent restarted
    /// while over its allowance, never lifts over-use nor extends its grace.
    #[test]
    fn unknown_vm_readings_and_restarts_never_lift_or_extend_vm_overuse(
        steps in proptest::collection::vec((1u64..60, vm_step()), 1..60)
    ) {
        let f = Fixture::new();
        let (mut model, raw) = vm_enforcer(&f);
        let (mut real, _) = vm_enforcer(&f);
        let mut persisted: Option<VmRecord> = None;
        let keep = |effects: Vec<Effect>, persisted: &mut Option<VmRecord>| {
            for e in effects {
                if let Effect::PersistVm(r) = e {
                    *persisted = Some(r);
                }
            }
        };
        let mut now = T0;
        for (i, (dt, step)) in steps.into_iter().enumerate() {
            now += dt;
            match step {
                VmStep::Known(n) => {
                    model.handle(now, Input::VmCount(Some(n)));
                    keep(real.handle(now, Input::VmCount(Some(n))), &mut persisted);
                }
                VmStep::Unknown => {
                    model.handle(now, Input::Tick);
                    keep(real.handle(now, Input::VmCount(None)), &mut persisted);
                }
                VmStep::Restart => {
                    model.handle(now, Input::Tick);
                    real = f.enforcer(&["hv"]);
                    if let Some(r) = persisted.clone() {
                        real.restore_vm(r);
                    }
                    keep(real.restore(&raw, now).expect("the cached bundle loads"), &mut persisted);
                    keep(real.handle(now, Input::Tick), &mut persisted);
                }
                VmStep::Tick => {
                    model.handle(now, Input::Tick);
                    keep(real.handle(now, Input::Tick), &mut persisted);
                }
            }
            proptest::prop_assert_eq!(
                real.state(&svc("hv")),
                model.state(&svc("hv")),
                "step {} ({:?}) at T0 + {}", i, step, now - T0
            );
            proptest::prop_assert_eq!(real.vm_count(), model.vm_count());
        }
    }
}

#[test]
fn a_damaged_cache_or_a_distrusted_bundle_does_not_restart_the_vm_grace_clock() {
    let f = Fixture::new();
    let (mut e, raw) = vm_enforcer(&f);
    let mut record = None;
    for x in e.handle(T0 + 10, Input::VmCount(Some(6))) {
        if let Effect::PersistVm(r) = x {
            record = Some(r);
        }
    }
    let record = record.expect("the over-use clock is persisted");
    let grace = ServiceState::Grace {
        until: T0 + 10 + GRACE,
        reason: Reason::OverVmAllowance,
    };
    // Restart with the cache damaged: no bundle until the controller's comes again, and the
    // probe fails meanwhile.
    let mut e = f.enforcer(&["hv"]);
    e.restore_vm(record);
    let mut truncated = raw.clone();
    truncated.truncate(raw.len() / 2);
    assert!(e.restore(&truncated, T0 + 100).is_err());
    e.handle(T0 + 100, Input::Tick);
    e.handle(T0 + 110, Input::VmCount(None));
    // The same bundle (retained on the broker) arrives: grace ends when it would have.
    e.handle(T0 + 120, Input::Bundle(&raw));
    assert_eq!(e.state(&svc("hv")), grace);

    // The held bundle is distrusted (its signer revoked), then a bundle from a new signer with
    // the same allowance arrives: the clock runs on.
    let signer = PublicKey::from(&f.signing.verifying_key()).id();
    let mut trust = e.trust().clone();
    trust
        .accept_revocations(&revoking(&key(1), 1, vec![signer]))
        .unwrap();
    e.set_trust(trust, T0 + 130);
    let new_key = key(8);
    let cert = SignerCertificate::issue(
        &key(1),
        PublicKey::from(&new_key.verifying_key()),
        T0 - 10,
        T0 + 86_400,
    );
    let mut g = grant("hv", T0);
    g.vm_allowance = Some(4);
    let next = seal_bundle(&f.bundle(2, T0 + 140, vec![g.clone()]), &new_key, &cert);
    e.handle(T0 + 140, Input::Bundle(&next));
    assert_eq!(e.state(&svc("hv")), grace);
    // A bundle that changes the allowance (still exceeded) starts a fresh grace, as before.
    g.vm_allowance = Some(5);
    let changed = seal_bundle(&f.bundle(3, T0 + 150, vec![g]), &new_key, &cert);
    e.handle(T0 + 150, Input::Bundle(&changed));
    assert_eq!(
        e.state(&svc("hv")),
        ServiceState::Grace {
            until: T0 + 150 + GRACE,
            reason: Reason::OverVmAllowance,
        }
    );
}

#[test]
fn an_accepted_bundle_says_persist_accepted_and_witness_each_on_its_own() {
    // The shell may carry effects out in any order: each accept effect carries what it needs.
    let f = Fixture::new();
    let mut e = f.enforcer(&["wifi"]);
    let raw = f.seal(&f.bundle(3, T0 + 100, vec![grant("wifi", T0 + 100)]));
    let effects = e.handle(T0, Input::Bundle(&raw));
    assert!(effects.contains(&Effect::Persist(raw.clone())));
    assert!(effects.contains(&Effect::WitnessTime(T0 + 100)));
    assert!(effects
        .iter()
        .any(|x| matches!(x, Effect::Accepted { seq: 3, .. })));
    // Disconnected: the schedule asks for no report.
    assert!(!effects.iter().any(|x| matches!(x, Effect::Report(_))));
}

#[test]
fn a_connected_enforcer_reports_at_refresh_after_once_a_bundle_answers() {
    let f = Fixture::new();
    let mut e = f.connected(&["wifi"]);
    e.set_report_policy(ReportPolicy::with_interval(7_200), 1);
    e.handle(T0 - 60, Input::Connected);
    let raw = f.seal(&f.bundle(1, T0, vec![grant("wifi", T0)]));
    e.handle(T0, Input::Bundle(&raw));
    let due = e.report_schedule().next().unwrap();
    // refresh_after is T0 + LEASE / 2; jitter takes up to 10 %.
    assert!(
        (T0 + LEASE / 2 * 9 / 10..=T0 + LEASE / 2).contains(&due),
        "{due}"
    );
    assert_eq!(e.next_wake(), Some(due), "before the lease ends");
    assert!(e.handle(due - 1, Input::Tick).is_empty());
    assert_eq!(
        e.handle(due, Input::Tick),
        vec![Effect::Report(ReportCause::Scheduled)]
    );
}

/// A relay at site `plant-7`, delegated `wifi` for the tenant `acme` with leases of at most
/// two hours, for the 30 days from `T0 - 60`.
fn delegation(f: &Fixture) -> licd_protocol::Delegation {
    licd_protocol::Delegation::issue(
        &f.signing,
        PublicKey::from(&key(9).verifying_key()),
        T0 - 60,
        T0 + 30 * 86_400,
        licd_protocol::Constraints {
            tenant: TenantId::new("acme").unwrap(),
            site: licd_protocol::SiteId::new("plant-7").unwrap(),
            max_lease: 2 * LEASE,
            pools: vec![licd_protocol::SeatPool {
                service: svc("wifi"),
                seats: 5,
            }],
        },
    )
    .unwrap()
}

fn at_site(f: &Fixture, site: Option<&str>) -> Enforcer {
    let mut rules = f.rules.clone();
    rules
        .trust
        .set_site(site.map(|s| licd_protocol::SiteId::new(s).unwrap()));
    let mut e = Enforcer::new(rules, [svc("wifi")]);
    e.handle(T0 - 60, Input::Connected);
    e
}

fn relayed(f: &Fixture, b: &GrantBundle) -> Vec<u8> {
    licd_protocol::envelope::seal_bundle_delegated(b, &key(9), &f.cert, &delegation(f))
}

fn refusal_code(effects: &[Effect]) -> Option<&'static str> {
    effects.iter().find_map(|x| match x {
        Effect::Refused(r) => Some(r.code()),
        _ => None,
    })
}

#[test]
fn a_device_at_the_delegated_site_is_licensed_by_the_relay_and_keeps_its_site_across_trust_changes()
{
    let f = Fixture::new();
    let mut e = at_site(&f, Some("plant-7"));
    let effects = e.handle(
        T0,
        Input::Bundle(&relayed(&f, &f.bundle(1, T0, vec![grant("wifi", T0)]))),
    );
    assert_eq!(refusal_code(&effects), None, "{effects:?}");
    assert!(e.state(&svc("wifi")).may_run());

    // A trust update (here: an unrelated revocation) keeps the configured site, so the held
    // relay bundle stays in force...
    let mut trust = e.trust().clone();
    trust
        .accept_revocations(&revoking(
            &key(1),
            1,
            vec![PublicKey::from(&key(77).verifying_key()).id()],
        ))
        .unwrap();
    let effects = e.set_trust(trust, T0 + 5);
    assert!(
        !effects
            .iter()
            .any(|x| matches!(x, Effect::Distrusted { .. })),
        "{effects:?}"
    );
    assert!(e.state(&svc("wifi")).may_run());

    // ...and revoking the relay's key drops it.
    let relay = PublicKey::from(&key(9).verifying_key()).id();
    let mut trust = e.trust().clone();
    trust
        .accept_revocations(&revoking(&key(1), 2, vec![relay]))
        .unwrap();
    let effects = e.set_trust(trust, T0 + 10);
    assert!(
        effects.iter().any(|x| matches!(
            x,
            Effect::Distrusted {
                refusal: Refusal::Protocol(licd_protocol::Error::SignerRevoked(k)),
                ..
            } if *k == relay
        )),
        "{effects:?}"
    );
    assert!(!e.state(&svc("wifi")).may_run());
}

#[test]
fn a_relay_overstepping_its_delegation_is_refused_and_changes_nothing() {
    let f = Fixture::new();
    let mut e = at_site(&f, Some("plant-7"));
    e.handle(
        T0,
        Input::Bundle(&relayed(&f, &f.bundle(1, T0, vec![grant("wifi", T0)]))),
    );
    let before = e.state(&svc("wifi"));

    let mut too_long = grant("wifi", T0 + 10);
    too_long.lease_until = T0 + 10 + 2 * LEASE + 1;
    let mut other_service = grant("guest", T0 + 10);
    other_service.lease_until = T0 + 10 + LEASE;
    let mut other_tenant = f.bundle(2, T0 + 10, vec![grant("wifi", T0 + 10)]);
    other_tenant.tenant = TenantId::new("other").unwrap();
    for (what, bytes, code) in [
        (
            "lease too long",
            relayed(&f, &f.bundle(2, T0 + 10, vec![too_long])),
            "delegation_breach",
        ),
        (
            "service not delegated",
            relayed(
                &f,
                &f.bundle(2, T0 + 10, vec![grant("wifi", T0 + 10), other_service]),
            ),
            "delegation_breach",
        ),
        (
            "another tenant",
            relayed(&f, &other_tenant),
            "delegation_breach",
        ),
    ] {
        let effects = e.handle(T0 + 10, Input::Bundle(&bytes));
        assert_eq!(refusal_code(&effects), Some(code), "{what}: {effects:?}");
        assert_eq!(e.state(&svc("wifi")), before, "{what} changed the state");
        assert_eq!(e.held().map(|h| h.bundle.seq), Some(1), "{what}");
    }

    // After the delegation's end (trusted time: a clock set back does not move `now` back),
    // a new relay bundle is refused for the delegation's validity.
    let end = T0 + 30 * 86_400;
    let effects = e.handle(
        end,
        Input::Bundle(&relayed(
            &f,
            &f.bundle(3, end - 5, vec![grant("wifi", end - 5)]),
        )),
    );
    assert_eq!(
        refusal_code(&effects),
        Some("delegation_validity"),
        "{effects:?}"
    );
}

#[test]
fn a_device_without_a_site_or_at_another_refuses_every_relay() {
    let f = Fixture::new();
    for site in [None, Some("plant-8")] {
        let mut e = at_site(&f, site);
        let effects = e.handle(
            T0,
            Input::Bundle(&relayed(&f, &f.bundle(1, T0, vec![grant("wifi", T0)]))),
        );
        assert_eq!(
            refusal_code(&effects),
            Some("delegation_breach"),
            "{site:?}"
        );
        assert!(!e.state(&svc("wifi")).may_run());
    }
}

mod negotiate;
mod policy;
