//! Usage history (issue 20): `GET /api/v1/usage`, what devices reported in extended reports,
//! counted once (PROTOCOL.md §17.3): one item per usage window — closed windows final, a
//! device's open window at its latest report — so summing the items never counts a second
//! twice. Filters: customer, device, service, the time a window's value was reported; page
//! numbers like the devices list; `totals` over every matching window, not just the page.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use crate::admin::error::{ApiResult, ErrorBody};
use crate::admin::params::{Describe, Item, RangeParam, TextParam, PAGE_NUMBER, PAGE_SIZE};
use crate::admin::query::{format_time, page_numbers, Link, Pagination, Params};
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::ledger::UsageQuery as LedgerQuery;

use super::{device_id, service, tenant_id};

/// The usage routes, for [`crate::admin::router`].
pub fn routes() -> Router<App> {
    Router::new().route("/api/v1/usage", get(list))
}

/// The query of `GET /api/v1/usage`.
pub struct UsageQuery;

impl UsageQuery {
    /// `customerId`.
    pub const CUSTOMER: TextParam = TextParam {
        name: "customerId",
        description: "Only this customer's devices (an unknown one is a 404)",
        item: Item::Id,
    };
    /// `deviceId`.
    pub const DEVICE: TextParam = TextParam {
        name: "deviceId",
        description: "Only devices with this id",
        item: Item::Id,
    };
    /// `service`.
    pub const SERVICE: TextParam = TextParam {
        name: "service",
        description: "Only windows with grace time of this service (its entry alone is shown)",
        item: Item::Id,
    };
    /// `periodEnd…`.
    pub const PERIOD_END: RangeParam = RangeParam {
        name: "periodEnd",
        description: "Only windows whose value was reported",
    };
}

impl IntoParams for UsageQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut v = vec![
            Self::CUSTOMER.parameter(),
            Self::DEVICE.parameter(),
            Self::SERVICE.parameter(),
        ];
        v.extend(Self::PERIOD_END.parameters());
        v.push(PAGE_NUMBER.parameter());
        v.push(PAGE_SIZE.parameter());
        v
    }
}

/// Seconds of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceSeconds {
    /// Service.
    #[schema(value_type = Id)]
    pub service: String,
    /// Seconds.
    pub seconds: u64,
}

/// One usage window of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Customer (tenant).
    pub customer_id: String,
    /// Device.
    pub device_id: String,
    /// The report seq the window opened at (0: the device's first).
    pub window_seq: u64,
    /// The report whose counters are the window's value.
    pub report_seq: u64,
    /// Closed (final); open: the latest report so far, it may still grow.
    pub closed: bool,
    /// When the window opened (controller time).
    #[schema(format = DateTime)]
    pub period_start: String,
    /// When its value was reported (controller time).
    #[schema(format = DateTime)]
    pub period_end: String,
    /// The most VMs the device saw in the window.
    pub peak_vm_count: Option<u32>,
    /// Messages the agent refused in the window.
    pub refusals: u32,
    /// Seconds in grace per service.
    pub grace_seconds: Vec<ServiceSeconds>,
}

/// Sums over every matching window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// Windows matched.
    pub windows: u32,
    /// Devices matched.
    pub devices: u32,
    /// The most VMs any matched window saw.
    pub peak_vm_count: Option<u32>,
    /// Refusals, summed.
    pub refusals: u64,
    /// Grace seconds per service, summed.
    pub grace_seconds: Vec<ServiceSeconds>,
}

/// A page of usage windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsagePage {
    /// Windows, oldest value first.
    pub items: Vec<UsageRecord>,
    /// Sums over every matching window (all pages).
    pub totals: UsageTotals,
    /// Where this page is.
    pub pagination: Pagination,
    /// Other pages.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
}

/// Usage reported by devices, counted once: one item per usage window (closed windows
/// final, each device's open window at its latest report), oldest first, with `totals` over
/// every match. Devices send usage in extended reports (agents that know licensing policy).
#[utoipa::path(get, path = "/api/v1/usage", tag = "policy",
    params(UsageQuery),
    responses((status = 200, body = UsagePage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody),
              (status = 404, description = "No such customer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<UsagePage>> {
    let p = Params::parse(q.as_deref());
    let tenant = UsageQuery::CUSTOMER.read(&p)?.map(tenant_id).transpose()?;
    let device = UsageQuery::DEVICE.read(&p)?.map(device_id).transpose()?;
    let only = UsageQuery::SERVICE.read(&p)?.map(service).transpose()?;
    let range = UsageQuery::PERIOD_END.read(&p)?;
    if let Some(t) = &tenant {
        scope.customer(t)?;
        app.stub().with_engine(|e| {
            if e.state().customers.contains_key(t) {
                Ok(())
            } else {
                Err(crate::engine::EngineError::UnknownCustomer(t.clone()))
            }
        })??;
    }
    // The ledger narrows by the bounds it can; `contains` applies them exactly.
    let from = [range.eq, range.gte, range.gt.map(|x| x.saturating_add(1))]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
    let to = [range.eq, range.lte, range.lt.map(|x| x.saturating_sub(1))]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX);
    let windows = app.stub().usage_windows(&LedgerQuery {
        tenant: tenant.as_ref(),
        device: device.as_ref(),
        from,
        to,
    })?;
    let mut totals = UsageTotals::default();
    let mut per_service: BTreeMap<String, u64> = BTreeMap::new();
    let mut devices = std::collections::BTreeSet::new();
    let mut items = Vec::new();
    for w in windows {
        if !scope.sees(&w.device.0) || !range.contains(w.end) {
            continue;
        }
        let grace: Vec<ServiceSeconds> = w
            .counters
            .grace_seconds
            .iter()
            .filter(|(s, _)| only.as_ref().is_none_or(|o| o == *s))
            .map(|(s, secs)| ServiceSeconds {
                service: s.to_string(),
                seconds: *secs,
            })
            .collect();
        if only.is_some() && grace.is_empty() {
            continue;
        }
        totals.windows = totals.windows.saturating_add(1);
        totals.refusals = totals
            .refusals
            .saturating_add(u64::from(w.counters.refusals));
        totals.peak_vm_count = totals.peak_vm_count.max(w.counters.peak_vm_count);
        for g in &grace {
            let e = per_service.entry(g.service.clone()).or_default();
            *e = e.saturating_add(g.seconds);
        }
        devices.insert(w.device.clone());
        items.push(UsageRecord {
            customer_id: w.device.0.to_string(),
            device_id: w.device.1.to_string(),
            window_seq: w.window,
            report_seq: w.last_seq,
            closed: w.closed,
            period_start: format_time(w.start),
            period_end: format_time(w.end),
            peak_vm_count: w.counters.peak_vm_count,
            refusals: w.counters.refusals,
            grace_seconds: grace,
        });
    }
    totals.devices = u32::try_from(devices.len()).unwrap_or(u32::MAX);
    totals.grace_seconds = per_service
        .into_iter()
        .map(|(service, seconds)| ServiceSeconds { service, seconds })
        .collect();
    let (items, pagination, links) = page_numbers(items, &p, "/api/v1/usage")?;
    Ok(Json(UsagePage {
        items,
        totals,
        pagination,
        links,
    }))
}
