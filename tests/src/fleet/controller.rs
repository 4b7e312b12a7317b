//! The stub controller of the fleet, on a runtime of its own, with the fleet's ledger.

use std::path::Path;

use licd_protocol::topic::DEFAULT_SHARE_GROUP;
use licd_protocol::{LicenseId, Sku, TenantId};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::{
    BrokerMode, LedgerLocation, ReportSubscription, Signer, Stub, StubConfig, StubHandle,
};
use rumqttc::QoS;
use tokio::runtime::Runtime;

use super::{
    err, runtime, svc, unix_now, FleetError, CONTROLLER_THREAD, PRODUCT_CLASS, SERVICES, TENANT,
};

/// Starts the stub controller against the broker at `url` on its own runtime (threads named
/// [`CONTROLLER_THREAD`]), ledger in `dir`, with the fleet's ledger: tenant `fleet`, `seats`
/// seats of every service in [`SERVICES`], auto-licensing on. Also used alone by
/// `licd-fleet --controller-only` (cross/size-report.sh's idle agent).
pub fn start_controller(
    url: &str,
    seats: usize,
    dir: &Path,
) -> Result<(Runtime, StubHandle), FleetError> {
    let shared = ReportSubscription::Shared(DEFAULT_SHARE_GROUP.to_string());
    start_controller_with(url, seats, dir, shared, QoS::AtLeastOnce, None)
}

/// [`start_controller`] with the report subscription given: [`ReportSubscription::Plain`] on a
/// broker without shared subscriptions (nats-server, docs/STUB.md), and the QoS of its
/// subscriptions (0 on nats-server: no JetStream consumer to re-create after a node loss).
/// `url` may list the nodes of a cluster, comma-separated; `mqtts://` ones are trusted by
/// `ca_file` (PEM) when given, else by the system's roots.
pub fn start_controller_with(
    url: &str,
    seats: usize,
    dir: &Path,
    subscription: ReportSubscription,
    subscribe_qos: QoS,
    ca_file: Option<&Path>,
) -> Result<(Runtime, StubHandle), FleetError> {
    let ctl = runtime(1, CONTROLLER_THREAD)?;
    let signer = Signer::ephemeral(unix_now()).map_err(err)?;
    let mut config = StubConfig::for_tests(signer);
    config.broker = BrokerMode::External {
        url: url.to_string(),
        ca_file: ca_file.map(Path::to_path_buf),
        credentials: None,
    };
    config.ledger = LedgerLocation::File(dir.join("ledger.db"));
    config.subscription = subscription;
    config.subscribe_qos = subscribe_qos;
    // Sized for the fleet: every device reports at once, and a dropped report costs that
    // device a retry (5 s, doubling).
    config.queue_capacity = seats.max(1024);
    config.client_id = "licd-fleet-controller".into();
    let stub = ctl
        .block_on(Stub::start(config))
        .map_err(|e| err(format!("stub: {e}")))?;
    ctl.block_on(setup_ledger(&stub, seats))
        .map_err(|e| err(format!("ledger set-up: {e}")))?;
    Ok((ctl, stub))
}

/// Sets up the ledger: one MSP with one tenant, a catalogue entry per service, N seats of each,
/// auto-licensing for every customer.
pub(super) async fn setup_ledger(stub: &StubHandle, n: usize) -> Result<(), licd_stub::StubError> {
    let id = |s: &str| TenantId::new(s).expect("valid id");
    let sku = |s: &str| Sku::new(format!("SKU-{s}")).expect("valid id");
    stub.add_customer(id("fleet-msp"), "Fleet MSP", CustomerKind::Msp)
        .await?;
    stub.add_customer(id(TENANT), "Fleet", CustomerKind::Tenant)
        .await?;
    for s in SERVICES {
        stub.add_catalog_entry(CatalogEntry {
            sku: sku(s),
            name: format!("{s} license"),
            service: svc(s),
            product_class: PRODUCT_CLASS.into(),
            vms_per_seat: None,
        })
        .await?;
    }
    let now = stub.now();
    stub.add_subscription(Subscription {
        id: LicenseId::new("SUB-FLEET").expect("valid id"),
        name: "fleet subscription".into(),
        owner: Some(id(TENANT)),
        claim_key: None,
        start: now - 86_400,
        end: now + 365 * 86_400,
        entitlements: SERVICES
            .iter()
            .map(|s| Entitlement {
                sku: sku(s),
                limit: u32::try_from(n).unwrap_or(u32::MAX),
            })
            .collect(),
    })
    .await?;
    stub.enable_auto_licensing(&Selection::all(), &SERVICES.map(svc), false)
        .await?;
    Ok(())
}
