//! A site relay's uplink reports (issue 23, docs/PROTOCOL.md §18.5) at the controller: what
//! the relay issued under a delegation this controller holds is stored once and acknowledged;
//! a replayed, forged or overstepping report, one under a delegation this controller did not
//! issue, or under a revoked one, changes nothing.
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use licd_protocol::delegation::{open_delegation, open_relay_ack, seal_relay_report};
use licd_protocol::{
    Constraints, Delegation, DeviceId, IssuedLease, LicenseId, PublicKey, RelayReport, SeatPool,
    ServiceName, SiteId, Sku, TenantId,
};
use licd_stub::controller::delegation::{NewDelegation, RelayReportError};
use licd_stub::controller::Controller;
use licd_stub::engine::delegation::DelegationState;
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Subscription};
use licd_stub::ledger::Ledger;
use licd_stub::Signer;

const T0: u64 = 1_800_000_000;
const TOPIC: &str = "licd/v1/acme/plant-7/relay-report";

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn controller(signer: Signer) -> Controller {
    let mut c = Controller::open(
        Ledger::open_in_memory().unwrap(),
        signer,
        LeasePolicy::default(),
    )
    .unwrap();
    c.apply(T0, |e, now| {
        let _ = e.add_customer(tid("acme"), "Acme", CustomerKind::Tenant, now)?;
        e.add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-AP").unwrap(),
            name: "AP".into(),
            service: svc("wifi"),
            product_class: "ap".into(),
            vms_per_seat: None,
        })?;
        let fx = e.add_subscription(
            Subscription {
                id: LicenseId::new("SUB-A").unwrap(),
                name: "A".into(),
                owner: Some(tid("acme")),
                claim_key: None,
                start: T0 - 60,
                end: T0 + 90 * 86_400,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-AP").unwrap(),
                    limit: 10,
                }],
            },
            now,
        )?;
        Ok(((), fx))
    })
    .unwrap();
    c
}

fn lease(n: u64, device: &str, issued_at: u64, lease: u64) -> IssuedLease {
    IssuedLease {
        n,
        device: DeviceId::new(device).unwrap(),
        service: svc("wifi"),
        bundle_seq: n,
        issued_at,
        lease_until: issued_at + lease,
    }
}

fn report(leases: Vec<IssuedLease>) -> RelayReport {
    RelayReport {
        tenant: tid("acme"),
        site: SiteId::new("plant-7").unwrap(),
        sent_at: T0 + 100,
        leases,
    }
}

#[test]
fn relay_reports_are_stored_once_acknowledged_and_forged_or_replayed_ones_change_nothing() {
    let signer = Signer::ephemeral(T0 - 86_400).unwrap();
    let mut c = controller(signer.clone());
    let relay = SigningKey::from_bytes(&[9; 32]);
    let d = c
        .delegate(
            NewDelegation {
                relay_key: PublicKey::from(&relay.verifying_key()),
                tenant: tid("acme"),
                site: SiteId::new("plant-7").unwrap(),
                pools: vec![(svc("wifi"), 3)],
                product_class: None,
                max_lease: 600,
                valid_secs: 7 * 86_400,
            },
            T0,
        )
        .unwrap();
    let file = open_delegation(&d.signed).unwrap();
    let seal = |r: &RelayReport| seal_relay_report(r, &relay, &file.cert, &file.delegation);
    let stored = |c: &Controller| c.ledger().delegated_leases(&d.id).unwrap().len();

    // Two leases: stored, acknowledged through 2, signed by the controller key.
    let good = seal(&report(vec![
        lease(1, "ap-1", T0 + 10, 600),
        lease(2, "ap-2", T0 + 20, 300),
    ]));
    let (ack, n) = c.handle_relay_report(TOPIC, &good, T0 + 100).unwrap();
    assert_eq!((n, stored(&c)), (2, 2));
    assert_eq!(ack.topic, "licd/v1/acme/plant-7/relay-ack");
    let (a, by) = open_relay_ack(&ack.payload).unwrap();
    assert_eq!(
        (a.through, a.relay),
        (2, PublicKey::from(&relay.verifying_key()).id())
    );
    assert_eq!(by, file.delegation.body.issuer);
    // Replayed: nothing new, the same acknowledgement.
    let (again, _) = c.handle_relay_report(TOPIC, &good, T0 + 200).unwrap();
    assert_eq!(open_relay_ack(&again.payload).unwrap().0.through, 2);
    assert_eq!(stored(&c), 2);
    let rows = c.ledger().delegated_leases(&d.id).unwrap();
    assert_eq!(
        rows[0].reported_at,
        T0 + 100,
        "the first report's row stays as it was"
    );

    // Forged: each refused with its reason, nothing stored.
    let err = |c: &mut Controller, topic: &str, bytes: &[u8]| {
        c.handle_relay_report(topic, bytes, T0 + 300).unwrap_err()
    };
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        err(&mut c, TOPIC, &flipped),
        RelayReportError::Invalid { .. }
    ));
    let stranger = SigningKey::from_bytes(&[10; 32]);
    let not_the_relay = seal_relay_report(
        &report(vec![lease(3, "ap-3", T0 + 30, 60)]),
        &stranger,
        &file.cert,
        &file.delegation,
    );
    assert!(matches!(
        err(&mut c, TOPIC, &not_the_relay),
        RelayReportError::Invalid { .. }
    ));
    // A delegation to the same relay key that this controller never issued (another
    // controller's key, or one signed by ours but not in the ledger).
    let rogue = Delegation::issue(
        signer.key(),
        PublicKey::from(&relay.verifying_key()),
        T0,
        T0 + 86_400,
        Constraints {
            tenant: tid("acme"),
            site: SiteId::new("plant-7").unwrap(),
            max_lease: 99_999,
            pools: vec![SeatPool {
                service: svc("wifi"),
                seats: 1000,
            }],
        },
    )
    .unwrap();
    let under_rogue = seal_relay_report(
        &report(vec![lease(3, "ap-3", T0 + 30, 60)]),
        &relay,
        &file.cert,
        &rogue,
    );
    assert!(matches!(
        err(&mut c, TOPIC, &under_rogue),
        RelayReportError::UnknownDelegation(_)
    ));
    // Leases the delegation does not allow: too long, another service, outside its window.
    let too_long = seal(&report(vec![lease(3, "ap-3", T0 + 30, 601)]));
    assert!(matches!(
        err(&mut c, TOPIC, &too_long),
        RelayReportError::Lease { .. }
    ));
    let mut other = lease(3, "ap-3", T0 + 30, 60);
    other.service = svc("wids");
    assert!(matches!(
        err(&mut c, TOPIC, &seal(&report(vec![other]))),
        RelayReportError::Lease { .. }
    ));
    let before = seal(&report(vec![lease(3, "ap-3", T0 - 1, 60)]));
    assert!(matches!(
        err(&mut c, TOPIC, &before),
        RelayReportError::Lease { .. }
    ));
    // On another site's topic.
    assert!(matches!(
        err(&mut c, "licd/v1/acme/plant-8/relay-report", &good),
        RelayReportError::Topic(_)
    ));
    assert_eq!(stored(&c), 2, "nothing refused was stored");

    // Revoked: the relay's reports are refused from then on.
    let _ = c
        .end_delegation(&d.id, None, DelegationState::Revoked, T0 + 400)
        .unwrap();
    let late = seal(&report(vec![lease(3, "ap-3", T0 + 30, 60)]));
    assert!(matches!(
        err(&mut c, TOPIC, &late),
        RelayReportError::Revoked(_)
    ));
    assert_eq!(stored(&c), 2);
}
