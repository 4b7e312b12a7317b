//! Aruba MSP auto-licensing (seeds 000 and 001): enable for `services` with
//! `include_customers` / `exclude_customers` (neither = everyone, future tenants too), unassign
//! with the same body, and the policies in force.

use axum::extract::{RawQuery, State};
use axum::Json;
use licd_protocol::{ServiceName, TenantId};

use crate::admin::dto::{
    AutoLicenseRequest, AutoLicenseResponse, Insufficient, Policy, UnassignResponse,
};
use crate::admin::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use crate::admin::params::{ValidateQuery, VALIDATE};
use crate::admin::query::Params;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::{Effects, Selection};

use super::{service, tenant_ids};

/// The checked parts of an auto-licensing body.
fn parse(req: &AutoLicenseRequest) -> ApiResult<(Selection, Vec<ServiceName>)> {
    let services = req.services.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "services is required: list the services to license, e.g. {\"services\": [\"wifi\"]}",
        )
    })?;
    if services.is_empty() {
        return Err(ApiError::bad_request(
            "services is required and must not be empty",
        ));
    }
    let services = services
        .iter()
        .map(|s| service(s))
        .collect::<ApiResult<Vec<_>>>()?;
    // An empty list given is not "no list": it would widen the request to every customer.
    for (name, list) in [
        ("include_customers", &req.include_customers),
        ("exclude_customers", &req.exclude_customers),
    ] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::bad_request(format!(
                "{name} must not be empty; leave it out to select every customer"
            )));
        }
    }
    let selection = Selection {
        include_customers: tenant_ids(req.include_customers.as_deref().unwrap_or_default())?,
        exclude_customers: tenant_ids(req.exclude_customers.as_deref().unwrap_or_default())?,
    };
    Ok((selection, services))
}

/// A tenant token selects its own customer by name: no list or an exclude list would reach
/// every other customer (403), a list naming another one is answered like an unknown customer.
fn within(scope: &TokenScope, selection: &Selection) -> ApiResult<()> {
    let Some(t) = scope.tenant() else {
        return Ok(());
    };
    if selection.include_customers.is_empty() || !selection.exclude_customers.is_empty() {
        return Err(ApiError::forbidden(format!(
            "this token is scoped to customer {t}: give include_customers: [\"{t}\"] (no list \
             or exclude_customers would reach other customers)"
        )));
    }
    scope.customers(&selection.include_customers)
}

fn strings<T: ToString>(v: impl IntoIterator<Item = T>) -> Vec<String> {
    v.into_iter().map(|x| x.to_string()).collect()
}

/// Enable auto-licensing of `services` for the selected customers and assign seats to their
/// devices, except the MSP's own devices, which get none (seed 000). Assignment is paused for
/// a service when the seats are fewer than the devices that need them, the MSP's counted
/// (`paused`, `insufficient_entitlements`). `validate=true`: dry run.
#[utoipa::path(post, path = "/api/v1/auto-licensing/enable", tag = "auto-licensing",
    params(ValidateQuery),
    request_body = AutoLicenseRequest,
    responses((status = 200, body = AutoLicenseResponse),
              (status = 404, description = "Unknown customer, or a service no SKU licenses", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn enable(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
    ApiJson(req): ApiJson<AutoLicenseRequest>,
) -> ApiResult<Json<AutoLicenseResponse>> {
    let validate = VALIDATE.read(&Params::parse(q.as_deref()))?;
    let (selection, services) = parse(&req)?;
    within(&scope, &selection)?;
    let customers: Vec<TenantId> = app
        .stub()
        .with_engine(|e| selection.resolve(&e.state().customers))??
        .into_iter()
        .collect();
    let r = app
        .stub()
        .enable_auto_licensing(&selection, &services, validate)
        .await?;
    Ok(Json(AutoLicenseResponse {
        services: strings(&services),
        customers: strings(&customers),
        inherit_to_new_tenants: selection.is_all(),
        paused: strings(&r.paused),
        insufficient_entitlements: r
            .insufficient_entitlements
            .into_iter()
            .map(|i| Insufficient {
                service: i.service.to_string(),
                product_class: i.product_class,
                sku: i.sku.map(|s| s.to_string()),
                quantity: i.quantity,
            })
            .collect(),
        seats_assigned: r.seats_assigned,
        validate,
    }))
}

/// Remove the licenses of `services` from every device of the selected customers (MSP
/// devices included) and turn their auto-licensing off.
#[utoipa::path(post, path = "/api/v1/auto-licensing/unassign", tag = "auto-licensing",
    request_body = AutoLicenseRequest,
    responses((status = 200, body = UnassignResponse),
              (status = 404, description = "Unknown customer, or a service no SKU licenses", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unassign(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<AutoLicenseRequest>,
) -> ApiResult<Json<UnassignResponse>> {
    let (selection, services) = parse(&req)?;
    within(&scope, &selection)?;
    let (customers, released) = app
        .stub()
        .apply(move |e, now| {
            let customers = selection.resolve(&e.state().customers)?;
            let seats = |e: &crate::engine::Engine| -> usize {
                e.state()
                    .devices
                    .values()
                    .map(|d| d.seats.keys().filter(|s| services.contains(s)).count())
                    .sum()
            };
            let before = seats(e);
            let fx: Effects = e.unassign(&selection, &services, now)?;
            let released = before.saturating_sub(seats(e));
            Ok(((customers, (released, services)), fx))
        })
        .await?;
    let (released, services) = released;
    Ok(Json(UnassignResponse {
        services: strings(&services),
        customers: strings(&customers),
        seats_released: u32::try_from(released).unwrap_or(u32::MAX),
    }))
}

/// Auto-licensing policies in force, per service.
#[utoipa::path(get, path = "/api/v1/auto-licensing", tag = "auto-licensing",
    responses((status = 200, body = [Policy])),
    security(("bearer" = [])))]
pub async fn policies(State(app): State<App>, scope: TokenScope) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(app.stub().with_engine(|e| {
        e.state()
            .policies
            .iter()
            .map(|(s, p)| Policy {
                service: s.to_string(),
                customers: strings(p.customers.iter().filter(|c| scope.sees(c))),
                inherit_to_new_tenants: p.inherit_to_new_tenants,
                paused: p.paused,
            })
            .collect()
    })?))
}
