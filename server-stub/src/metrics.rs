//! Prometheus metrics of the stub controller, served as `GET /metrics` by the admin server
//! (OpenMetrics text, `prometheus-client`). Two kinds:
//!
//! - instruments updated as things happen ([`Instruments`], kept in the session's
//!   [`crate::session::Stats`]): refused reports by code, and the time each ledger
//!   transaction took (reports applied in a batch, operator changes);
//! - values read from the engine at scrape time ([`render`]): devices per tenant, per service
//!   and state, seats per subscription and SKU, the MQTT session's counters and whether it is
//!   connected now.
//!
//! Rates ("reports per second") are Prometheus' job: everything that grows is a counter.
//! Who may scrape is the admin API's business (a read token; docs/STUB.md says why).

use std::collections::BTreeMap;
use std::time::Duration;

use licd_protocol::WithheldReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::views::ServiceState;
use crate::error::StubError;
use crate::stub::StubHandle;

/// The `Content-Type` of [`render`]'s output (Prometheus 2.x and later negotiate it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label sets: a few `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// Upper bounds of the ledger latency buckets, in seconds: 0.5 ms to ~4 s. A report batch is
/// one SQLite transaction with an fsync (a few ms on a laptop SSD, more on a lab VM's disk).
const LEDGER_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096,
];

fn ledger_histogram() -> Histogram {
    Histogram::new(LEDGER_BUCKETS)
}

/// Why a report was refused, as a metric label (see
/// [`crate::controller::ReportError::code`]).
pub type RefusalCode = &'static str;

/// Refusal code of a report dropped before it was parsed, for being over the size limit.
pub const OVERSIZED: RefusalCode = "oversized";
/// Refusal code of reports refused because the ledger could not store their batch.
pub const LEDGER: RefusalCode = "ledger";

/// What a ledger transaction was for (the `op` label of the latency histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOp {
    /// A batch of device reports (the worker).
    ReportBatch,
    /// An operator change (admin API, CLI, tests).
    Operator,
}

impl LedgerOp {
    fn label(self) -> &'static str {
        match self {
            Self::ReportBatch => "report_batch",
            Self::Operator => "operator",
        }
    }
}

/// Instruments updated as things happen. Cheap to update from any task (atomics).
#[derive(Debug)]
pub struct Instruments {
    refusals: Family<Labels, Counter>,
    ledger: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Instruments {
    fn default() -> Self {
        Self {
            refusals: Family::default(),
            ledger: Family::new_with_constructor(ledger_histogram),
        }
    }
}

impl Instruments {
    /// Counts `n` reports refused for `code`.
    pub fn refused(&self, code: RefusalCode, n: u64) {
        self.refusals
            .get_or_create(&vec![("code".to_string(), code.to_string())])
            .inc_by(n);
    }

    /// Records how long a ledger transaction (engine change + SQLite commit) took.
    pub fn ledger_latency(&self, op: LedgerOp, took: Duration) {
        self.ledger
            .get_or_create(&vec![("op".to_string(), op.label().to_string())])
            .observe(took.as_secs_f64());
    }

    /// Refused reports counted for `code` so far (tests, logs).
    pub fn refusals_of(&self, code: RefusalCode) -> u64 {
        self.refusals
            .get_or_create(&vec![("code".to_string(), code.to_string())])
            .get()
    }
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn withheld_label(r: WithheldReason) -> &'static str {
    match r {
        WithheldReason::NotEntitled => "not_entitled",
        WithheldReason::SeatsExhausted => "seats_exhausted",
        WithheldReason::Unassigned => "unassigned",
        WithheldReason::UnknownTenant => "unknown_tenant",
    }
}

/// Counts of the engine's records at one moment.
#[derive(Debug, Default)]
struct Census {
    devices: BTreeMap<String, i64>,
    services: BTreeMap<Labels, i64>,
    seats: Vec<(Labels, [i64; 3])>,
}

fn census(stub: &StubHandle) -> Result<Census, StubError> {
    let mut c = Census::default();
    for d in stub.devices(None)? {
        *c.devices.entry(d.tenant.to_string()).or_default() += 1;
        for (service, state) in &d.services {
            let (state, reason) = match state {
                ServiceState::Granted {
                    over_vm_allowance: true,
                    ..
                } => ("granted", "over_vm_allowance"),
                ServiceState::Granted { .. } => ("granted", "ok"),
                ServiceState::Withheld { reason } => ("withheld", withheld_label(*reason)),
            };
            let key = labels([
                ("tenant", d.tenant.as_str()),
                ("service", service.as_str()),
                ("state", state),
                ("reason", reason),
            ]);
            *c.services.entry(key).or_default() += 1;
        }
    }
    for s in stub.subscriptions()? {
        for e in &s.entitlements {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            c.seats.push((
                labels([("subscription", s.id.as_str()), ("sku", e.sku.as_str())]),
                [n(e.seats.assigned), n(e.seats.available), n(e.seats.limit)],
            ));
        }
    }
    Ok(c)
}

/// The stub's metrics now, in the OpenMetrics text format ([`CONTENT_TYPE`]).
pub fn render(stub: &StubHandle) -> Result<String, StubError> {
    let stats = stub.stats();
    let census = census(stub)?;
    let mut reg = Registry::with_prefix("licd_stub");

    let counters = [
        (
            "reports_received",
            "Report messages received from the broker",
            stats.reports_received,
        ),
        (
            "reports_applied",
            "Reports verified and applied to the ledger",
            stats.reports_applied,
        ),
        (
            "reports_dropped",
            "Reports dropped because the controller's queue was full (devices report again)",
            stats.reports_dropped,
        ),
        (
            "reports_replaced",
            "Reports that took the place of the same device's report still queued (a retry)",
            stats.reports_replaced,
        ),
        (
            "bundles_published",
            "Signed grant bundles handed to the MQTT client (QoS 1, retained)",
            stats.bundles_published,
        ),
        (
            "mqtt_connections",
            "Connections (ConnAcks) of the controller's MQTT session so far",
            stats.connections,
        ),
    ];
    for (name, help, value) in counters {
        reg.register(name, help, ConstCounter::new(value));
    }
    let catch_ups = stub.catch_ups()?;
    let caught_up = Family::<Labels, Counter>::default();
    caught_up
        .get_or_create(&labels([("kind", "devices")]))
        .inc_by(catch_ups.devices);
    caught_up
        .get_or_create(&labels([("kind", "whole")]))
        .inc_by(catch_ups.whole);
    reg.register(
        "replica_catch_ups",
        "Times this replica caught up with other replicas' writes (PostgreSQL): by the changed \
         devices alone, or by reloading the whole ledger",
        caught_up,
    );
    let instruments = stub.instruments();
    reg.register(
        "reports_refused",
        "Reports refused, by code (bad envelope or signature, topic mismatch, key mismatch, …)",
        instruments.refusals.clone(),
    );
    reg.register_with_unit(
        "ledger_transaction",
        "Time to apply and commit one ledger transaction (engine change + SQLite commit)",
        Unit::Seconds,
        instruments.ledger.clone(),
    );
    reg.register(
        "mqtt_connected",
        "1 while the controller's MQTT session is connected and subscribed",
        ConstGauge::new(i64::from(stub.is_connected())),
    );

    let devices = Family::<Labels, Gauge>::default();
    for (tenant, n) in &census.devices {
        devices.get_or_create(&labels([("tenant", tenant)])).set(*n);
    }
    reg.register("devices", "Devices known to the ledger, by tenant", devices);

    let services = Family::<Labels, Gauge>::default();
    for (key, n) in &census.services {
        services.get_or_create(key).set(*n);
    }
    reg.register(
        "device_services",
        "Devices by tenant, service and the controller's state for it (granted: ok or \
         over_vm_allowance; withheld: the reason)",
        services,
    );

    for (i, (name, help)) in [
        ("seats_assigned", "Seats in use, by subscription and SKU"),
        ("seats_available", "Seats free, by subscription and SKU"),
        ("seats_limit", "Seats bought, by subscription and SKU"),
    ]
    .into_iter()
    .enumerate()
    {
        let family = Family::<Labels, Gauge>::default();
        for (key, values) in &census.seats {
            family.get_or_create(key).set(values[i]);
        }
        reg.register(name, help, family);
    }

    let mut out = String::new();
    encode(&mut out, &reg).map_err(|_| StubError::Config("metrics encoding failed".into()))?;
    Ok(out)
}

/// `GET /metrics` (admin server, the MSP's read or admin token: the labels name every
/// tenant's devices and subscriptions, so a tenant-scoped token gets a 403).
#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "metrics",
    description = "The controller's metrics in the OpenMetrics text format (Prometheus scrapes \
it): reports and bundles, refusals by code, devices' services by state, seats per SKU, the MQTT \
session, ledger latency. The MSP's read or admin tokens only.",
    responses((status = 200, description = "OpenMetrics text", body = String,
               content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
              (status = 403, description = "A tenant token: the metrics name every tenant's devices",
               body = crate::admin::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn serve(
    axum::extract::State(app): axum::extract::State<crate::admin::App>,
    scope: crate::admin::scope::TokenScope,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(e) = scope.msp_only("metrics (they name every tenant's devices)") {
        return e.into_response();
    }
    match render(app.stub()) {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => crate::admin::error::ApiError::internal(format!("metrics: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_per_code_and_latency_lands_in_its_bucket() {
        let i = Instruments::default();
        i.refused("key_mismatch", 2);
        i.refused("key_mismatch", 1);
        i.refused(OVERSIZED, 1);
        assert_eq!(i.refusals_of("key_mismatch"), 3);
        assert_eq!(i.refusals_of(OVERSIZED), 1);
        assert_eq!(i.refusals_of("bad_envelope"), 0);
        i.ledger_latency(LedgerOp::Operator, Duration::from_millis(3));
        let mut reg = Registry::default();
        reg.register_with_unit("l", "h", Unit::Seconds, i.ledger.clone());
        let mut out = String::new();
        encode(&mut out, &reg).expect("encode");
        assert!(
            out.contains("l_seconds_bucket{le=\"0.002\",op=\"operator\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("l_seconds_bucket{le=\"0.004\",op=\"operator\"} 1"),
            "{out}"
        );
    }
}
