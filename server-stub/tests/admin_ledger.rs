//! The ledger keeps what the admin API's engine operations change: subscription bindings,
//! seat limits, renamed and removed customers survive a restart.
#![allow(clippy::unwrap_used)]

use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::controller::Controller;
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Effects, Entitlement, LeasePolicy, Subscription,
};
use licd_stub::ledger::Ledger;
use licd_stub::Signer;

const T0: u64 = 1_700_000_000;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[test]
fn bindings_seat_limits_and_customer_changes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let signer = Signer::ephemeral(T0).unwrap();
    let open = |signer: &Signer| {
        Controller::open(
            Ledger::open(&path).unwrap(),
            signer.clone(),
            LeasePolicy::default(),
        )
        .unwrap()
    };
    let mut c = open(&signer);
    c.apply(T0, |e, now| {
        let _ = e.add_customer(t("a"), "A", CustomerKind::Tenant, now)?;
        let _ = e.add_customer(t("b"), "B", CustomerKind::Tenant, now)?;
        let _ = e.add_customer(t("gone"), "G", CustomerKind::Tenant, now)?;
        e.add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-AP").unwrap(),
            name: "ap".into(),
            service: ServiceName::new("wifi").unwrap(),
            product_class: "ap".into(),
            vms_per_seat: None,
        })?;
        let fx = e.add_subscription(
            Subscription {
                id: LicenseId::new("SA").unwrap(),
                name: "sa".into(),
                owner: Some(t("a")),
                claim_key: None,
                start: now - 1,
                end: now + 1000,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-AP").unwrap(),
                    limit: 1,
                }],
            },
            now,
        )?;
        Ok(((), fx))
    })
    .unwrap();
    c.apply(T0, |e, now| {
        let (_, fx) = e.bind_customers(
            &LicenseId::new("SA").unwrap(),
            &[t("b"), t("gone")],
            false,
            now,
        )?;
        let more = e.set_seat_limit(
            &LicenseId::new("SA").unwrap(),
            &Sku::new("LIC-AP").unwrap(),
            7,
            now,
        )?;
        e.rename_customer(&t("b"), "Bee".into())?;
        e.remove_customer(&t("gone"))?;
        let mut all = Effects::default();
        all.publish.extend(fx.publish);
        all.publish.extend(more.publish);
        Ok(((), all))
    })
    .unwrap();
    let before = c.engine().state().clone();
    drop(c);
    let c = open(&signer);
    assert_eq!(c.engine().state(), &before);
    let st = c.engine().state();
    assert_eq!(st.bindings[&LicenseId::new("SA").unwrap()].len(), 1);
    assert_eq!(
        st.subscriptions[&LicenseId::new("SA").unwrap()].entitlements[0].limit,
        7
    );
    assert_eq!(st.customers[&t("b")].name, "Bee");
    assert!(!st.customers.contains_key(&t("gone")));
}
