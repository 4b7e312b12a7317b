//! Site delegations (issue 23): a bundle signed by a site issuer (relay) is accepted only
//! within the constraints its delegation states, and every way of overstepping them, or of
//! forging, reusing or outliving the delegation, is refused with its own reason.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use licd_protocol::delegation::{Breach, DELEGATION_DOMAIN};
use licd_protocol::envelope::{
    open_bundle, open_bundle_as_issued, seal_bundle_delegated, seal_bytes_delegated,
};
use licd_protocol::revocation::seal_revocations;
use licd_protocol::{
    Constraints, Delegation, Error, GrantBundle, MessageKind, RevocationList, SeatPool,
    SignerCertificate, SiteId, TrustStore,
};

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// The delegation's window: from a day before NOW to 30 days after.
const D_NOT_BEFORE: u64 = NOW - DAY;
const D_NOT_AFTER: u64 = NOW + 30 * DAY;

fn relay_key() -> SigningKey {
    SigningKey::from_bytes(&[0x55; 32])
}

fn site(s: &str) -> SiteId {
    SiteId::new(s).expect("valid id")
}

fn constraints() -> Constraints {
    Constraints {
        tenant: tenant(),
        site: site("plant-7"),
        max_lease: 2 * HOUR,
        pools: vec![
            SeatPool {
                service: svc("wifi-ap"),
                seats: 5,
            },
            SeatPool {
                service: svc("wids"),
                seats: 2,
            },
        ],
    }
}

fn delegation_with(c: Constraints) -> Delegation {
    Delegation::issue(
        &signing_key(),
        public(&relay_key()),
        D_NOT_BEFORE,
        D_NOT_AFTER,
        c,
    )
    .expect("valid delegation")
}

fn delegation() -> Delegation {
    delegation_with(constraints())
}

/// A device at `plant-7` pinning the root.
fn site_trust() -> TrustStore {
    let mut t = trust();
    t.set_site(Some(site("plant-7")));
    t
}

/// What a relay would issue: `wifi-ap` and `wids` with one-hour leases from NOW.
fn relay_bundle() -> GrantBundle {
    let mut b = five_service_bundle();
    b.issued_at = NOW;
    b.refresh_after = NOW + HOUR / 2;
    b.grants
        .retain(|g| matches!(g.service.as_str(), "wifi-ap" | "wids"));
    for g in &mut b.grants {
        g.lease_until = NOW + HOUR;
    }
    b
}

fn sealed(b: &GrantBundle, d: &Delegation) -> Vec<u8> {
    seal_bundle_delegated(b, &relay_key(), &signing_cert(), d)
}

fn breach(bytes: &[u8], trust: &TrustStore) -> Breach {
    match open_bundle(bytes, trust, NOW) {
        Err(Error::DelegationBreach(b)) => b,
        other => panic!("expected a delegation breach, got {other:?}"),
    }
}

#[test]
fn a_bundle_within_its_delegation_is_accepted_and_names_the_site_issuer() {
    let bytes = sealed(&relay_bundle(), &delegation());
    let (bundle, signer) = open_bundle(&bytes, &site_trust(), NOW).expect("accepted");
    assert_eq!(bundle, relay_bundle());
    assert_eq!(
        signer.signer,
        public(&signing_key()).id(),
        "the delegating key"
    );
    assert_eq!(signer.site_issuer, Some(public(&relay_key()).id()));
    // The cache rule evaluates the same chain at the bundle's issued_at.
    let (_, cached) = open_bundle_as_issued(&bytes, &site_trust()).expect("accepted from cache");
    assert_eq!(cached.site_issuer, Some(public(&relay_key()).id()));
}

#[test]
fn a_delegation_round_trips_and_refuses_every_other_length() {
    let d = delegation();
    let bytes = d.to_bytes();
    assert_eq!(bytes.len(), 185, "the size docs/PROTOCOL.md §17.2 gives");
    assert_eq!(Delegation::parse(&bytes).expect("parses"), d);
    d.verify().expect("signed by the controller key");
    for len in 0..bytes.len() {
        assert!(
            Delegation::parse(&bytes[..len]).is_err(),
            "{len} bytes parsed"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Delegation::parse(&longer),
        Err(Error::Truncated(_))
    ));
}

#[test]
fn every_flipped_bit_of_a_delegation_is_refused() {
    let bundle = relay_bundle();
    let good = sealed(&bundle, &delegation());
    let cert_len = signing_cert().to_bytes().len();
    let d_len = delegation().to_bytes().len();
    // The delegation sits after version, kind, signer (32), length (2) and the certificate.
    let start = 1 + 1 + 32 + 2 + cert_len;
    for i in start..start + d_len {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            assert!(
                open_bundle(&bad, &site_trust(), NOW).is_err(),
                "flipping bit {bit} of byte {i} went unnoticed"
            );
        }
    }
}

#[test]
fn each_constraint_is_checked_by_the_device() {
    let d = delegation();
    let t = site_trust();

    let mut other_tenant = relay_bundle();
    other_tenant.tenant = licd_protocol::TenantId::new("other-co").expect("valid id");
    assert!(matches!(
        breach(&sealed(&other_tenant, &d), &t),
        Breach::Tenant { .. }
    ));

    let mut extra_service = relay_bundle();
    let mut poe = extra_service.grants[0].clone();
    poe.service = svc("poe-plus");
    extra_service.grants.push(poe);
    assert_eq!(
        breach(&sealed(&extra_service, &d), &t),
        Breach::Service(svc("poe-plus"))
    );

    let mut too_long = relay_bundle();
    too_long.grants[1].lease_until = NOW + 2 * HOUR + 1;
    assert_eq!(
        breach(&sealed(&too_long, &d), &t),
        Breach::LeaseTooLong {
            service: svc("wids"),
            lease_until: NOW + 2 * HOUR + 1,
            max: NOW + 2 * HOUR,
        }
    );
    // Exactly the maximum is allowed.
    let mut at_max = relay_bundle();
    at_max.grants[1].lease_until = NOW + 2 * HOUR;
    open_bundle(&sealed(&at_max, &d), &t, NOW).expect("a lease of exactly max_lease");

    // A delegation ending an hour from NOW with a 2-hour max lease: a 90-minute lease
    // outlives it.
    let short = Delegation::issue(
        &signing_key(),
        public(&relay_key()),
        D_NOT_BEFORE,
        NOW + HOUR,
        constraints(),
    )
    .expect("valid");
    let mut outlives = relay_bundle();
    outlives.grants[0].lease_until = NOW + HOUR + HOUR / 2;
    assert!(matches!(
        breach(&sealed(&outlives, &short), &t),
        Breach::LeaseOutlivesDelegation { .. }
    ));

    let mut backdated = relay_bundle();
    backdated.issued_at = D_NOT_BEFORE - 1;
    for g in &mut backdated.grants {
        g.lease_until = D_NOT_BEFORE;
    }
    assert!(matches!(
        breach(&sealed(&backdated, &d), &t),
        Breach::IssuedOutside { .. }
    ));
}

#[test]
fn a_device_at_another_site_or_at_none_refuses_a_site_issuer() {
    let bytes = sealed(&relay_bundle(), &delegation());
    let mut elsewhere = trust();
    elsewhere.set_site(Some(site("plant-8")));
    assert_eq!(
        breach(&bytes, &elsewhere),
        Breach::Site {
            device: Some(site("plant-8")),
            delegated: site("plant-7"),
        }
    );
    assert_eq!(
        breach(&bytes, &trust()),
        Breach::Site {
            device: None,
            delegated: site("plant-7"),
        }
    );
    // A bundle from the controller itself does not depend on the site.
    let direct =
        licd_protocol::envelope::seal_bundle(&relay_bundle(), &signing_key(), &signing_cert());
    open_bundle(&direct, &site_trust(), NOW).expect("controller bundles are site-free");
}

#[test]
fn a_delegation_is_valid_only_in_its_window_at_the_devices_time() {
    let bytes = sealed(&relay_bundle(), &delegation());
    assert_eq!(
        open_bundle(&bytes, &site_trust(), D_NOT_AFTER),
        Err(Error::DelegationExpired {
            not_after: D_NOT_AFTER,
            now: D_NOT_AFTER,
        })
    );
    assert_eq!(
        open_bundle(&bytes, &site_trust(), D_NOT_BEFORE - 1),
        Err(Error::DelegationNotYetValid {
            not_before: D_NOT_BEFORE,
            now: D_NOT_BEFORE - 1,
        })
    );
}

#[test]
fn a_delegation_from_a_key_the_root_did_not_certify_is_refused() {
    // The stranger delegates to the relay, but the envelope carries the controller's
    // certificate: the chain does not link.
    let forged = Delegation::issue(
        &stranger_key(),
        public(&relay_key()),
        D_NOT_BEFORE,
        D_NOT_AFTER,
        constraints(),
    )
    .expect("valid");
    assert!(matches!(
        open_bundle(&sealed(&relay_bundle(), &forged), &site_trust(), NOW),
        Err(Error::CertificateMismatch { .. })
    ));
    // The stranger certifies itself with a self-made "root": unknown signer.
    let self_cert = SignerCertificate::issue(
        &stranger_key(),
        public(&stranger_key()),
        CERT_NOT_BEFORE,
        CERT_NOT_AFTER,
    );
    let bytes = seal_bundle_delegated(&relay_bundle(), &relay_key(), &self_cert, &forged);
    assert!(matches!(
        open_bundle(&bytes, &site_trust(), NOW),
        Err(Error::UnknownSigner(_))
    ));
}

#[test]
fn a_bundle_signed_by_another_key_than_the_delegated_one_is_refused() {
    let bytes = seal_bundle_delegated(
        &relay_bundle(),
        &stranger_key(),
        &signing_cert(),
        &delegation(),
    );
    assert!(matches!(
        open_bundle(&bytes, &site_trust(), NOW),
        Err(Error::CertificateMismatch { .. })
    ));
}

#[test]
fn revoking_the_site_issuer_or_the_controller_key_cuts_the_site_off() {
    let bytes = sealed(&relay_bundle(), &delegation());
    for revoked in [public(&relay_key()).id(), public(&signing_key()).id()] {
        let mut t = site_trust();
        let list = RevocationList {
            version: 1,
            issued_at: NOW,
            revoked: vec![revoked],
        };
        t.accept_revocations(&seal_revocations(&list, &root_key()))
            .expect("root-signed list");
        assert_eq!(
            open_bundle(&bytes, &t, NOW),
            Err(Error::SignerRevoked(revoked))
        );
        assert_eq!(
            open_bundle_as_issued(&bytes, &t),
            Err(Error::SignerRevoked(revoked)),
            "revocation applies to cached bundles too"
        );
    }
}

#[test]
fn a_site_issuer_signs_grants_only() {
    let bytes = seal_bytes_delegated(
        MessageKind::DiagRequest,
        &relay_key(),
        &signing_cert(),
        &delegation(),
        b"x",
    );
    let env = licd_protocol::Envelope::parse(&bytes).expect("framing");
    assert_eq!(
        site_trust().authorize(&env, NOW),
        Err(Error::Invalid("a site issuer signs grants only"))
    );
}

#[test]
fn a_build_that_predates_delegations_refuses_the_chain_as_a_malformed_certificate() {
    // Such a build parses the whole certificate field as one 145-byte certificate.
    let mut chain = signing_cert().to_bytes();
    chain.extend_from_slice(&delegation().to_bytes());
    assert_eq!(
        SignerCertificate::parse(&chain),
        Err(Error::Truncated("certificate is not 145 bytes"))
    );
}

#[test]
fn bad_constraints_cannot_be_issued_or_parsed() {
    let mut empty = constraints();
    empty.pools.clear();
    let mut twice = constraints();
    twice.pools.push(twice.pools[0].clone());
    let mut no_seats = constraints();
    no_seats.pools[0].seats = 0;
    let mut no_lease = constraints();
    no_lease.max_lease = 0;
    for c in [empty, twice, no_seats, no_lease] {
        assert!(matches!(
            Delegation::issue(
                &signing_key(),
                public(&relay_key()),
                D_NOT_BEFORE,
                D_NOT_AFTER,
                c,
            ),
            Err(Error::Invalid(_))
        ));
    }
    assert!(Delegation::issue(
        &signing_key(),
        public(&relay_key()),
        NOW,
        NOW,
        constraints()
    )
    .is_err());
    // The domain string is its own.
    assert_eq!(DELEGATION_DOMAIN, b"licd/v1 site delegation\0");
}

#[test]
fn the_any_kind_bundle_paths_check_the_delegation_too() {
    use licd_protocol::policy::{
        open_any_bundle, open_any_bundle_as_issued, open_any_bundle_memo, PolicyBundle,
    };
    let mut too_long = relay_bundle();
    too_long.grants[0].lease_until = NOW + 3 * HOUR;
    let plain = sealed(&too_long, &delegation());
    let policy = seal_bytes_delegated(
        MessageKind::PolicyBundle,
        &relay_key(),
        &signing_cert(),
        &delegation(),
        &postcard::to_allocvec(&PolicyBundle::plain(too_long)).unwrap(),
    );
    for bytes in [&plain, &policy] {
        let breach = |r: Result<_, Error>| match r {
            Err(Error::DelegationBreach(Breach::LeaseTooLong { .. })) => {}
            other => panic!("expected LeaseTooLong, got {other:?}"),
        };
        breach(open_any_bundle(bytes, &site_trust(), NOW));
        breach(open_any_bundle_memo(
            bytes,
            &site_trust(),
            NOW,
            &mut Default::default(),
        ));
        breach(open_any_bundle_as_issued(bytes, &site_trust()));
    }
    // Within the delegation, a policy bundle from the relay is accepted.
    let ok = seal_bytes_delegated(
        MessageKind::PolicyBundle,
        &relay_key(),
        &signing_cert(),
        &delegation(),
        &postcard::to_allocvec(&PolicyBundle::plain(relay_bundle())).unwrap(),
    );
    let (b, signer) = open_any_bundle(&ok, &site_trust(), NOW).expect("accepted");
    assert_eq!(b.bundle, relay_bundle());
    assert_eq!(signer.site_issuer, Some(public(&relay_key()).id()));
}

/// The kind-12 golden vector (docs/PROTOCOL.md §18.4): the test delegation sealed by the
/// controller key, binary and armored. Regenerate after an intended change with
/// `LICD_BLESS=1 cargo test -p licd-protocol --test delegation`; the same bytes seed the
/// `offline_file` and `armor` fuzz corpora.
#[test]
fn a_delegation_travels_as_a_kind_12_envelope_binary_or_armored_and_matches_its_vector() {
    use licd_protocol::delegation::{open_delegation, seal_delegation};
    use licd_protocol::offline::{armor, decode_file};
    let bytes = seal_delegation(&delegation(), &signing_key(), &signing_cert());
    assert_eq!(bytes[1], 12, "kind byte");
    let text = armor(&bytes).expect("armors");
    assert!(
        text.starts_with("-----BEGIN LICD DELEGATION-----\n"),
        "{text}"
    );
    let opened = open_delegation(&decode_file(text.as_bytes()).expect("dearmors")).expect("opens");
    assert_eq!(opened.delegation, delegation());
    assert_eq!(opened.cert, signing_cert());
    let mut chain = signing_cert().to_bytes();
    chain.extend_from_slice(&delegation().to_bytes());
    assert_eq!(opened.chain(), chain, "the relay's delegation.hex");

    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vector = root.join("tests/vectors/delegation.json");
    // Kinds 13 and 14: a relay report of one lease, signed by the relay key (seed 55…55) under
    // the test delegation, and the controller's acknowledgement of it.
    let report = licd_protocol::RelayReport {
        tenant: tenant(),
        site: site("plant-7"),
        sent_at: NOW,
        leases: vec![licd_protocol::IssuedLease {
            n: 1,
            device: device(),
            service: svc("wifi-ap"),
            bundle_seq: 3,
            issued_at: NOW,
            lease_until: NOW + HOUR,
        }],
    };
    let report_env = licd_protocol::delegation::seal_relay_report(
        &report,
        &relay_key(),
        &signing_cert(),
        &delegation(),
    );
    let opened = licd_protocol::delegation::open_relay_report(&report_env).expect("opens");
    assert_eq!(opened.report, report);
    let ack = licd_protocol::RelayAck {
        tenant: tenant(),
        site: site("plant-7"),
        relay: public(&relay_key()).id(),
        through: 1,
        acked_at: NOW + 1,
    };
    let ack_env = licd_protocol::delegation::seal_relay_ack(&ack, &signing_key(), &signing_cert());
    assert_eq!(
        licd_protocol::delegation::open_relay_ack(&ack_env).expect("opens"),
        (ack, public(&signing_key()))
    );
    let fresh = serde_json::json!({
        "description": "the test delegation (tenant acme-retail, site plant-7, max_lease 7200, wifi-ap x5, wids x2) sealed as kind 12 by the golden signing key with its certificate; a relay report (kind 13) of one lease signed by the relay key 55..55 under it; the acknowledgement (kind 14) through 1",
        "delegation": hex::encode(delegation().to_bytes()),
        "envelope": hex::encode(&bytes),
        "armored": text,
        "relay_report": hex::encode(&report_env),
        "relay_ack": hex::encode(&ack_env),
    });
    if std::env::var("LICD_BLESS").is_ok_and(|v| v == "1") {
        let pretty = serde_json::to_string_pretty(&fresh).expect("json") + "\n";
        std::fs::write(&vector, pretty).expect("write the vector");
        std::fs::write(
            root.join("../fuzz/corpus/offline_file/delegation.bin"),
            &bytes,
        )
        .expect("write a corpus seed");
        std::fs::write(root.join("../fuzz/corpus/armor/delegation.asc"), &text)
            .expect("write a corpus seed");
    }
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&vector).expect("the vector exists"))
            .expect("json");
    assert_eq!(stored, fresh, "kind 12 bytes changed: a wire change (§13)");

    // Every flipped bit of the envelope is refused; so is another kind, and a chain
    // (a relay cannot pass a delegation on).
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(open_delegation(&b).is_err(), "bit {i} flipped still opens");
    }
    let wrong = seal_bytes_delegated(
        MessageKind::Delegation,
        &relay_key(),
        &signing_cert(),
        &delegation(),
        &delegation().to_bytes(),
    );
    assert!(matches!(open_delegation(&wrong), Err(Error::Invalid(_))));
    let bundle = sealed(&relay_bundle(), &delegation());
    assert!(matches!(
        open_delegation(&bundle),
        Err(Error::WrongKind { .. })
    ));
    // Signed by another key than the one that issued the delegation.
    let stranger_cert = SignerCertificate::issue(
        &root_key(),
        public(&stranger_key()),
        CERT_NOT_BEFORE,
        CERT_NOT_AFTER,
    );
    let forged = seal_delegation(&delegation(), &stranger_key(), &stranger_cert);
    assert!(matches!(
        open_delegation(&forged),
        Err(Error::CertificateMismatch { .. })
    ));
}
