//! Delegated seats in the ledger (issue 23): reserved at delegation time from the subscription
//! the allocator would choose, counted as used by every other seat decision, freed when the
//! delegation is returned, revoked or over.

use licd_protocol::SiteId;

use super::delegation::{DelegationRequest, DelegationState};
use super::tests::{add_sub, fixture, key_of, lic, report, sku, svc, t, T0};
use super::*;

fn request(tenant: &str, seats: u32) -> DelegationRequest {
    DelegationRequest {
        tenant: t(tenant),
        site: SiteId::new("plant-7").unwrap(),
        relay_key: key_of(42),
        pools: vec![(svc("wifi"), seats)],
        product_class: None,
        max_lease: 3600,
        not_before: T0,
        not_after: T0 + 30 * DAY,
    }
}

#[test]
fn delegated_seats_come_from_the_tenants_own_subscription_first_and_count_as_used() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-MSP", "msp", "LIC-AP", 10);
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 3);
    let (d, fx) = e.add_delegation(&request("a", 5), vec![1, 2], T0).unwrap();
    assert!(fx.publish.is_empty());
    assert_eq!(d.id, "dlg-1");
    assert_eq!(d.state, DelegationState::Active);
    // The tenant's own 3 first, then 2 of the MSP's.
    let r = &d.pools[0].reserved;
    assert_eq!(
        r.iter()
            .map(|r| (r.subscription.as_str(), r.seats))
            .collect::<Vec<_>>(),
        [("S-A", 3), ("S-MSP", 2)]
    );
    assert_eq!(e.reserved_seats(&lic("S-A"), &sku("LIC-AP"), T0), 3);
    assert_eq!(e.used_seats(&lic("S-MSP"), &sku("LIC-AP"), T0), 2);
    assert_eq!(e.assigned_seats(&lic("S-MSP"), &sku("LIC-AP")), 0);
    assert!(e.take_dirty().delegations.contains("dlg-1"));
}

#[test]
fn a_delegation_that_cannot_be_covered_is_refused_and_nothing_is_reserved() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 3);
    let _ = e.take_dirty();
    let err = e.add_delegation(&request("a", 4), vec![], T0).unwrap_err();
    assert_eq!(
        err,
        EngineError::NotEnoughForDelegation {
            service: svc("wifi"),
            seats: 4,
            free: 3
        }
    );
    assert!(e.state().delegations.is_empty());
    assert!(e.take_dirty().is_empty());
    assert_eq!(e.used_seats(&lic("S-A"), &sku("LIC-AP"), T0), 0);
    // Another tenant's subscription is not the tenant's to delegate.
    let err = e.add_delegation(&request("b", 1), vec![], T0).unwrap_err();
    assert!(matches!(
        err,
        EngineError::NotEnoughForDelegation { free: 0, .. }
    ));
    // A subscription ending before the delegation does not back it.
    let mut short = request("a", 1);
    short.not_after = T0 + 400 * DAY;
    let err = e.add_delegation(&short, vec![], T0).unwrap_err();
    assert!(matches!(
        err,
        EngineError::NotEnoughForDelegation { free: 0, .. }
    ));
    // Unknown tenant, unknown service, a service twice, an empty pool.
    assert_eq!(
        e.add_delegation(&request("zz", 1), vec![], T0).unwrap_err(),
        EngineError::UnknownCustomer(t("zz"))
    );
    let mut bad = request("a", 1);
    bad.pools = vec![(svc("fax"), 1)];
    assert_eq!(
        e.add_delegation(&bad, vec![], T0).unwrap_err(),
        EngineError::UnknownService(svc("fax"))
    );
    bad.pools = vec![(svc("wifi"), 1), (svc("wifi"), 1)];
    assert!(matches!(
        e.add_delegation(&bad, vec![], T0).unwrap_err(),
        EngineError::InvalidDelegation(_)
    ));
    bad.pools = vec![(svc("wifi"), 0)];
    assert!(matches!(
        e.add_delegation(&bad, vec![], T0).unwrap_err(),
        EngineError::InvalidDelegation(_)
    ));
}

#[test]
fn reserved_seats_are_not_handed_to_devices_and_return_frees_them_for_a_waiting_device() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 2);
    let _ = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0)
        .unwrap();
    let _ = e.add_delegation(&request("a", 2), vec![], T0).unwrap();
    // Both seats are at the site: a device here gets none (auto-licensing pauses).
    let fx = e
        .handle_report(&report("a", "ap1", "ap", &["wifi"]), T0)
        .unwrap();
    assert!(fx.publish.iter().all(|b| b.grants.is_empty()));
    assert_eq!(e.assigned_seats(&lic("S-A"), &sku("LIC-AP")), 0);
    // Lowering the limit below the reservation is refused like below assigned seats.
    assert!(matches!(
        e.set_seat_limit(&lic("S-A"), &sku("LIC-AP"), 1, T0),
        Err(EngineError::SeatsInUse { assigned: 2, .. })
    ));
    // Returned: the waiting device gets a seat at once.
    let (d, fx) = e
        .end_delegation("dlg-1", None, DelegationState::Returned, T0 + 10)
        .unwrap();
    assert_eq!(d.state, DelegationState::Returned);
    assert_eq!(d.ended_at, Some(T0 + 10));
    assert!(fx
        .publish
        .iter()
        .any(|b| b.device.as_str() == "ap1" && b.grants.len() == 1));
    assert_eq!(e.reserved_seats(&lic("S-A"), &sku("LIC-AP"), T0 + 10), 0);
    // Once ended, it cannot be ended again.
    assert_eq!(
        e.end_delegation("dlg-1", None, DelegationState::Revoked, T0 + 11)
            .unwrap_err(),
        EngineError::DelegationEnded {
            id: "dlg-1".into(),
            state: "returned"
        }
    );
}

#[test]
fn a_delegation_past_its_window_reserves_nothing_and_reads_as_expired() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 2);
    let (d, _) = e.add_delegation(&request("a", 2), vec![], T0).unwrap();
    let end = T0 + 30 * DAY;
    assert_eq!(e.reserved_seats(&lic("S-A"), &sku("LIC-AP"), end - 1), 2);
    assert_eq!(e.reserved_seats(&lic("S-A"), &sku("LIC-AP"), end), 0);
    assert_eq!(d.state_at(end - 1), "active");
    assert_eq!(d.state_at(end), "expired");
}

#[test]
fn another_tenants_delegation_is_unknown_to_a_tenant_scope() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 2);
    let _ = e.add_delegation(&request("a", 1), vec![], T0).unwrap();
    assert!(e.delegation("dlg-1", Some(&t("a"))).is_ok());
    assert_eq!(
        e.delegation("dlg-1", Some(&t("b"))).unwrap_err(),
        EngineError::UnknownDelegation("dlg-1".into())
    );
    assert_eq!(
        e.end_delegation("dlg-1", Some(&t("b")), DelegationState::Revoked, T0)
            .unwrap_err(),
        EngineError::UnknownDelegation("dlg-1".into())
    );
    // Ids keep counting up.
    let (d2, _) = e.add_delegation(&request("a", 1), vec![], T0).unwrap();
    assert_eq!(d2.id, "dlg-2");
}

#[test]
fn revoking_a_relay_key_ends_every_active_delegation_to_it() {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S-A", "a", "LIC-AP", 4);
    let _ = e.add_delegation(&request("a", 1), vec![], T0).unwrap();
    let _ = e.add_delegation(&request("a", 2), vec![], T0).unwrap();
    let mut other = request("a", 1);
    other.relay_key = key_of(43);
    let _ = e.add_delegation(&other, vec![], T0).unwrap();
    assert_eq!(e.reserved_seats(&lic("S-A"), &sku("LIC-AP"), T0), 4);
    let _ = e
        .end_delegation("dlg-1", None, DelegationState::Revoked, T0)
        .unwrap();
    let st = |id: &str| e.state().delegations[id].state;
    assert_eq!(st("dlg-1"), DelegationState::Revoked);
    assert_eq!(st("dlg-2"), DelegationState::Revoked);
    assert_eq!(st("dlg-3"), DelegationState::Active);
    assert_eq!(e.reserved_seats(&lic("S-A"), &sku("LIC-AP"), T0), 1);
}
