//! Golden vectors of the policy kinds (docs/PROTOCOL.md §17): a policy bundle (the 5-service
//! bundle with three policies and a usage acknowledgement) and an extended report (the typical
//! report with a seq, usage and compliance), for the golden keys. Checked both ways like
//! `golden.rs`: encoding today gives the stored bytes, and the stored bytes open to the
//! fixtures. Also the corpus seeds of the `policy` fuzz target.
//!
//! Regenerate after an intended change with
//! `LICD_BLESS=1 cargo test -p licd-protocol --test policy_golden`.

mod common;

use std::path::PathBuf;

use common::*;
use licd_protocol::envelope::{open_bundle, seal_bundle, seal_bytes, seal_report};
use licd_protocol::offline::{open_grant_answer, seal_grant_answer};
use licd_protocol::policy::{
    open_any_bundle, open_any_bundle_as_issued, open_extended_activation_request,
    open_extended_report, open_policy_bundle, seal_extended_activation_request,
    seal_extended_report, seal_policy_bundle,
};
use licd_protocol::{
    ComplianceReason, Envelope, Error, ExtendedActivationRequest, ExtendedReport, GrantAnswer,
    MessageKind, PolicyBundle, ServiceCompliance, ServicePolicy, ServiceSeconds, Standing,
    Strategy, Usage,
};
use serde_json::{json, Value};

const DAY: u64 = 86_400;

fn blessing() -> bool {
    std::env::var("LICD_BLESS").is_ok_and(|v| v == "1")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The 5-service bundle with an advisory, an immediate and a tolerant restrict policy
/// (wids and poe-plus have none: restrict, 100 %, no warnings), acknowledging report 17.
fn policy_bundle() -> PolicyBundle {
    PolicyBundle {
        bundle: five_service_bundle(),
        policies: vec![
            ServicePolicy {
                service: svc("wifi-ap"),
                strategy: Strategy::Advisory,
                overage_tolerance_pct: 100,
                warn_before: vec![30 * DAY, 7 * DAY],
            },
            ServicePolicy {
                service: svc("guest-portal"),
                strategy: Strategy::Immediate,
                overage_tolerance_pct: 100,
                warn_before: vec![DAY],
            },
            ServicePolicy {
                service: svc("analytics"),
                strategy: Strategy::Restrict,
                overage_tolerance_pct: 125,
                warn_before: vec![],
            },
        ],
        usage_ack: 17,
    }
}

/// The typical report as report 19 of a window opened at 17: a peak of 6 VMs, two refusals,
/// an hour of grace for analytics; wifi-ap expiring within 30 days, analytics non-compliant.
fn extended_report() -> ExtendedReport {
    ExtendedReport {
        report: typical_report(),
        report_seq: 19,
        usage: Usage {
            window: 17,
            peak_vm_count: Some(6),
            refusals: 2,
            grace_seconds: vec![ServiceSeconds {
                service: svc("analytics"),
                seconds: 3_600,
            }],
        },
        compliance: vec![
            ServiceCompliance {
                service: svc("wifi-ap"),
                standing: Standing::Licensed,
                reason: None,
                overage_vms: None,
                expiring_within: Some(30 * DAY),
            },
            ServiceCompliance {
                service: svc("analytics"),
                standing: Standing::NonCompliant,
                reason: Some(ComplianceReason::LeaseExpired),
                overage_vms: None,
                expiring_within: None,
            },
        ],
    }
}

/// The extended report as an activation request (§17.7), with the request vector's nonce.
fn extended_request() -> ExtendedActivationRequest {
    ExtendedActivationRequest {
        report: extended_report(),
        nonce: [0x55; 16],
    }
}

fn entry(kind: MessageKind, bytes: &[u8], message: Value) -> Value {
    let env = Envelope::parse(bytes).expect("parses");
    json!({
        "kind": format!("{kind:?}"),
        "kind_byte": kind.to_byte(),
        "message": message,
        "payload": hex::encode(env.payload),
        "payload_len": env.payload.len(),
        "envelope": hex::encode(bytes),
        "envelope_len": bytes.len(),
    })
}

fn sealed() -> (Vec<u8>, Vec<u8>) {
    (
        seal_policy_bundle(&policy_bundle(), &signing_key(), &signing_cert()),
        seal_extended_report(&extended_report(), &device_key()),
    )
}

#[test]
fn policy_kinds_match_the_golden_vector_both_ways() {
    let (bundle, report) = sealed();
    let request = seal_extended_activation_request(&extended_request(), &device_key());
    let expected = json!({
        "comment": "licd protocol v1 policy kinds for the golden keys (keys.json): the 5-service \
                    bundle (grant_bundle_5_services.json) with policies for wifi-ap (advisory, \
                    warn 30 d and 7 d), guest-portal (immediate, warn 1 d) and analytics \
                    (restrict, 125 %), acknowledging report 17; the typical report \
                    (device_report.json) as report 19 of the window opened at 17",
        "now": NOW,
        "policy_bundle": entry(MessageKind::PolicyBundle, &bundle,
            serde_json::to_value(policy_bundle()).expect("json")),
        "extended_report": entry(MessageKind::ExtendedReport, &report,
            serde_json::to_value(extended_report()).expect("json")),
        "extended_activation_request": entry(MessageKind::ExtendedActivationRequest, &request,
            serde_json::to_value(extended_request()).expect("json")),
    });
    let path = root().join("tests/vectors/policy.json");
    if blessing() {
        let text = serde_json::to_string_pretty(&expected).expect("json") + "\n";
        std::fs::write(&path, text).expect("write vector");
        let dir = root().join("../fuzz/corpus/policy");
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in [
            ("policy_bundle.bin", bundle.clone()),
            ("extended_report.bin", report.clone()),
            ("extended_activation_request.bin", request.clone()),
            (
                "policy_bundle.payload",
                Envelope::parse(&bundle).expect("p").payload.to_vec(),
            ),
            (
                "extended_report.payload",
                Envelope::parse(&report).expect("p").payload.to_vec(),
            ),
        ] {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
        return;
    }
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("read policy.json (bless it first)"),
    )
    .expect("json");
    for key in [
        "policy_bundle",
        "extended_report",
        "extended_activation_request",
    ] {
        assert_eq!(
            stored[key], expected[key],
            "WIRE CHANGE in policy.json `{key}` (needs a new protocol version)"
        );
    }
    let bytes = |k: &str| hex::decode(stored[k]["envelope"].as_str().expect("hex")).expect("hex");
    let (opened, _) =
        open_policy_bundle(&bytes("policy_bundle"), &trust(), NOW).expect("bundle opens");
    assert_eq!(opened, policy_bundle());
    assert_eq!(
        open_extended_report(&bytes("extended_report")),
        Ok(extended_report())
    );
    assert_eq!(
        open_extended_activation_request(&bytes("extended_activation_request")),
        Ok(extended_request())
    );
}

#[test]
fn an_extended_activation_request_is_the_extended_report_and_the_nonce_and_opens_only_as_its_kind()
{
    let request = seal_extended_activation_request(&extended_request(), &device_key());
    let report = seal_extended_report(&extended_report(), &device_key());
    let payload = |b: &[u8]| Envelope::parse(b).expect("parses").payload.to_vec();
    let mut expected = payload(&report);
    expected.extend([0x55; 16]);
    assert_eq!(payload(&request), expected);
    // Not a plain activation request: a build that knows kind 15 says so; one that predates
    // it refuses the byte itself (`UnknownKind(15)`) before anything else.
    assert!(matches!(
        licd_protocol::offline::open_activation_request(&request),
        Err(Error::WrongKind { .. })
    ));
    let sealed = seal_extended_activation_request(&extended_request(), &stranger_key());
    assert_eq!(
        open_extended_activation_request(&sealed),
        Err(Error::Invalid(
            "request is not signed by the device key it names"
        ))
    );
    let mut bad = extended_request();
    bad.report.report_seq = 0;
    bad.report.usage.window = 0;
    let sealed = seal_extended_activation_request(&bad, &device_key());
    assert_eq!(
        open_extended_activation_request(&sealed),
        Err(Error::Invalid("report seq 0"))
    );
    // Armored as a REQUEST, like kind 7.
    let text = licd_protocol::offline::armor(&request).expect("armor");
    assert!(text.starts_with("-----BEGIN LICD REQUEST-----"), "{text}");
    assert_eq!(
        licd_protocol::offline::decode_file(text.as_bytes())
            .expect("dearmors")
            .as_ref(),
        &request[..]
    );
}

#[test]
fn the_bundle_and_report_parts_are_byte_for_byte_the_plain_payloads() {
    let (bundle, report) = sealed();
    let plain_bundle = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    let plain_report = seal_report(&typical_report(), &device_key());
    let payload = |b: &[u8]| Envelope::parse(b).expect("parses").payload.to_vec();
    assert!(payload(&bundle).starts_with(&payload(&plain_bundle)));
    assert!(payload(&report).starts_with(&payload(&plain_report)));
}

#[test]
fn either_bundle_kind_opens_as_a_policy_bundle_and_a_plain_one_gets_default_policies() {
    let (policy, _) = sealed();
    let plain = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    assert_eq!(
        open_any_bundle(&policy, &trust(), NOW).expect("opens").0,
        policy_bundle()
    );
    assert_eq!(
        open_any_bundle_as_issued(&policy, &trust())
            .expect("opens")
            .0,
        policy_bundle()
    );
    let (p, _) = open_any_bundle(&plain, &trust(), NOW).expect("opens");
    assert_eq!(p, PolicyBundle::plain(five_service_bundle()));
    // The strict openers keep to their kind.
    assert!(matches!(
        open_policy_bundle(&plain, &trust(), NOW),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        open_bundle(&policy, &trust(), NOW),
        Err(Error::WrongKind { .. })
    ));
    let (_, report) = sealed();
    assert!(matches!(
        open_any_bundle(&report, &trust(), NOW),
        Err(Error::WrongKind { .. })
    ));
}

#[test]
fn a_grant_file_may_carry_a_policy_bundle() {
    let (policy, report) = sealed();
    let answer = |bundle| GrantAnswer {
        device: device(),
        request_nonce: [0x55; 16],
        bundle,
    };
    let file = seal_grant_answer(&answer(policy.clone()), &signing_key(), &signing_cert());
    let (a, _) = open_grant_answer(&file, &trust(), NOW).expect("opens");
    assert_eq!(a.bundle, policy);
    let file = seal_grant_answer(&answer(report), &signing_key(), &signing_cert());
    assert!(matches!(
        open_grant_answer(&file, &trust(), NOW),
        Err(Error::WrongKind { .. })
    ));
}

#[test]
fn a_malformed_policy_is_refused_even_when_signed_by_a_trusted_key() {
    let mut b = policy_bundle();
    b.policies[0].overage_tolerance_pct = 90;
    let sealed = seal_policy_bundle(&b, &signing_key(), &signing_cert());
    assert_eq!(
        open_any_bundle(&sealed, &trust(), NOW).map(|x| x.0),
        Err(Error::Invalid("overage tolerance below 100 %"))
    );
    let mut b = policy_bundle();
    b.policies[0].warn_before = vec![DAY, 30 * DAY];
    let sealed = seal_policy_bundle(&b, &signing_key(), &signing_cert());
    assert_eq!(
        open_any_bundle(&sealed, &trust(), NOW).map(|x| x.0),
        Err(Error::Invalid(
            "expiring-soon thresholds not strictly descending"
        ))
    );
    // An unknown strategy variant (3) does not decode.
    let mut payload = postcard::to_allocvec(&policy_bundle()).expect("encodes");
    let plain_len = postcard::to_allocvec(&five_service_bundle())
        .expect("encodes")
        .len();
    // policies count, then "wifi-ap" (1 + 7 bytes), then the strategy byte.
    let at = plain_len + 1 + 8;
    assert_eq!(payload[at], 1, "wifi-ap is advisory (variant 1)");
    payload[at] = 3;
    let sealed = seal_bytes(
        MessageKind::PolicyBundle,
        &signing_key(),
        Some(&signing_cert()),
        &payload,
    );
    assert!(matches!(
        open_any_bundle(&sealed, &trust(), NOW),
        Err(Error::Decode(_))
    ));
}

#[test]
fn an_extended_report_with_a_bad_window_or_signed_by_another_key_is_invalid() {
    let mut r = extended_report();
    r.usage.window = r.report_seq;
    let sealed = seal_extended_report(&r, &device_key());
    assert_eq!(
        open_extended_report(&sealed),
        Err(Error::Invalid(
            "usage window opens at or after the report's seq"
        ))
    );
    let sealed = seal_extended_report(&extended_report(), &stranger_key());
    assert_eq!(
        open_extended_report(&sealed),
        Err(Error::Invalid(
            "report is not signed by the device key it names"
        ))
    );
    let mut r = extended_report();
    r.compliance.push(r.compliance[0].clone());
    let sealed = seal_extended_report(&r, &device_key());
    assert_eq!(
        open_extended_report(&sealed),
        Err(Error::Invalid("a service's compliance is reported twice"))
    );
}

#[test]
fn the_largest_valid_policy_messages_fit_well_within_the_envelope_limit() {
    // Every limit at its maximum: 64 grants with 64-byte ids, 64 policies with 8 thresholds
    // of the largest value, a report with 64 grace and 64 compliance entries.
    let id = |i: usize| svc(&format!("{i:0>64}"));
    let mut bundle = five_service_bundle();
    let template = bundle.grants[0].clone();
    bundle.grants = (0..64)
        .map(|i| {
            let mut g = template.clone();
            g.service = id(i);
            g.license = licd_protocol::LicenseId::new(format!("{i:0>64}")).expect("id");
            g.sku = licd_protocol::Sku::new(format!("{i:0>64}")).expect("id");
            g.not_before = u64::MAX;
            g.not_after = u64::MAX;
            g.lease_until = u64::MAX;
            g.grace = u64::MAX;
            g.vm_allowance = Some(u32::MAX);
            g
        })
        .collect();
    bundle.seq = u64::MAX;
    let big = PolicyBundle {
        bundle,
        policies: (0..64)
            .map(|i| ServicePolicy {
                service: id(i),
                strategy: Strategy::Immediate,
                overage_tolerance_pct: 1_000,
                warn_before: (0..8).map(|k| u64::MAX - k).collect(),
            })
            .collect(),
        usage_ack: u64::MAX,
    };
    assert_eq!(big.validate(), Ok(()));
    let sealed_bundle = seal_policy_bundle(&big, &signing_key(), &signing_cert());
    let mut report = extended_report();
    report.report_seq = u64::MAX;
    report.usage = Usage {
        window: u64::MAX - 1,
        peak_vm_count: Some(u32::MAX),
        refusals: u32::MAX,
        grace_seconds: (0..64)
            .map(|i| ServiceSeconds {
                service: id(i),
                seconds: u64::MAX,
            })
            .collect(),
    };
    report.compliance = (0..64)
        .map(|i| ServiceCompliance {
            service: id(i),
            standing: Standing::NonCompliant,
            reason: Some(ComplianceReason::OverVmAllowance),
            overage_vms: Some(u32::MAX),
            expiring_within: Some(u64::MAX),
        })
        .collect();
    let sealed_report = seal_extended_report(&report, &device_key());
    println!(
        "largest policy bundle {} bytes, largest extended report (services of the typical \
         report) {} bytes",
        sealed_bundle.len(),
        sealed_report.len()
    );
    assert!(sealed_bundle.len() < 64 * 1024 / 2);
    assert!(sealed_report.len() < 64 * 1024 / 2);
    assert_eq!(
        open_any_bundle(&sealed_bundle, &trust(), NOW).map(|x| x.0),
        Ok(big)
    );
}

#[test]
fn encoded_sizes_of_the_policy_kinds() {
    let (bundle, report) = sealed();
    let plain = seal_bundle(&five_service_bundle(), &signing_key(), &signing_cert());
    let plain_report = seal_report(&typical_report(), &device_key());
    println!(
        "policy bundle {} bytes (plain {}), extended report {} bytes (plain {})",
        bundle.len(),
        plain.len(),
        report.len(),
        plain_report.len()
    );
    let request = seal_extended_activation_request(&extended_request(), &device_key());
    println!("extended activation request {} bytes", request.len());
    // Keep docs/PROTOCOL.md §17.5 in step with these.
    assert_eq!(bundle.len(), 636);
    assert_eq!(report.len(), 305);
    assert_eq!(request.len(), 321);
}
