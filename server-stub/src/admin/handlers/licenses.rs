//! Snow-style licenses and assignments (seed 003, the subset that matters to devices): a
//! license is the seats of one SKU in one subscription (`<subscriptionId>:<sku>`), an
//! assignment is a device's seat (`<tenant>:<device>:<service>`) with its quantity and VM use
//! rights. Lists take `page_number`/`page_size` and `field -eq "value"` filters; bulk update
//! sets the seat count of licenses chosen with scope `Only`, `All` or `AllExcept`.

use std::collections::BTreeSet;

use axum::extract::{RawQuery, State};
use axum::Json;

use crate::admin::dto::{
    Assignment, AssignmentPage, BulkUpdateRequest, BulkUpdateResponse, Failure, License,
    LicensePage, Scope,
};
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::params::{AssignmentQuery, LicenseQuery, ASSIGNMENT_FILTER, LICENSE_FILTER};
use crate::admin::query::{apply_filter, format_time, page_numbers, Params};
use crate::admin::schema::LicenseRef;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::Engine;

use super::{license_id, sku};

/// The licenses `scope` sees: those of the subscriptions it sees.
fn licenses(e: &Engine, scope: &TokenScope, now: u64) -> Vec<License> {
    let mut out = Vec::new();
    for s in e
        .state()
        .subscriptions
        .values()
        .filter(|s| scope.sees_subscription(s))
    {
        for ent in &s.entitlements {
            let cat = e.state().catalog.get(&ent.sku);
            let assigned = e.assigned_seats(&s.id, &ent.sku);
            out.push(License {
                id: format!("{}:{}", s.id, ent.sku),
                subscription_id: s.id.to_string(),
                sku: ent.sku.to_string(),
                service: cat.map(|c| c.service.to_string()),
                product_class: cat.map(|c| c.product_class.clone()).unwrap_or_default(),
                customer_id: s.owner.as_ref().map(|o| o.to_string()),
                quantity: ent.limit,
                assigned,
                // Seats reserved by site delegations are not available either.
                available: ent.limit.saturating_sub(e.used_seats(&s.id, &ent.sku, now)),
                has_vm_use_rights: cat.is_some_and(|c| c.vms_per_seat.is_some()),
                number_of_supported_virtual_machines: cat.and_then(|c| c.vms_per_seat),
                subscription_valid_from: format_time(s.start),
                subscription_valid_to: format_time(s.end),
                status: crate::admin::dto::status_str(s.status(now)).into(),
            });
        }
    }
    out
}

/// The seats of the devices `scope` sees.
fn assignments_in(e: &Engine, scope: &TokenScope) -> Vec<Assignment> {
    let mut out = Vec::new();
    for d in e.state().devices.values().filter(|d| scope.sees(&d.tenant)) {
        for (service, seat) in &d.seats {
            let vms = e
                .state()
                .catalog
                .get(&seat.sku)
                .and_then(|c| c.vms_per_seat);
            out.push(Assignment {
                id: format!("{}:{}:{}", d.tenant, d.id, service),
                license_id: format!("{}:{}", seat.subscription, seat.sku),
                subscription_id: seat.subscription.to_string(),
                sku: seat.sku.to_string(),
                service: service.to_string(),
                customer_id: d.tenant.to_string(),
                computer_id: d.id.to_string(),
                quantity: 1,
                has_vm_use_rights: vms.is_some(),
                number_of_supported_virtual_machines: vms,
                virtual_machines: d.vm_count,
                over_vm_allowance: matches!((d.vm_count, vms), (Some(n), Some(a)) if n > a),
                assigned_at: format_time(seat.since),
            });
        }
    }
    out
}

/// List licenses (`filter`, `page_number`, `page_size`).
#[utoipa::path(get, path = "/api/v1/licenses", tag = "licenses",
    params(LicenseQuery),
    responses((status = 200, body = LicensePage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<LicensePage>> {
    let p = Params::parse(q.as_deref());
    let conds = LICENSE_FILTER.read(&p)?;
    let now = app.stub().now();
    let items = apply_filter(
        app.stub().with_engine(|e| licenses(e, &scope, now))?,
        &conds,
    )?;
    let (items, pagination, links) = page_numbers(items, &p, "/api/v1/licenses")?;
    Ok(Json(LicensePage {
        items,
        pagination,
        links,
    }))
}

/// List every assignment of licenses to devices (`filter`, `page_number`, `page_size`).
#[utoipa::path(get, path = "/api/v1/assignments", tag = "licenses",
    params(AssignmentQuery),
    responses((status = 200, body = AssignmentPage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn assignments(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<AssignmentPage>> {
    let p = Params::parse(q.as_deref());
    let conds = ASSIGNMENT_FILTER.read(&p)?;
    let items = apply_filter(
        app.stub().with_engine(|e| assignments_in(e, &scope))?,
        &conds,
    )?;
    let (items, pagination, links) = page_numbers(items, &p, "/api/v1/assignments")?;
    Ok(Json(AssignmentPage {
        items,
        pagination,
        links,
    }))
}

/// List the assignments of one license to devices.
#[utoipa::path(get, path = "/api/v1/licenses/{id}/assignments", tag = "licenses",
    params(("id" = LicenseRef, Path, description = "License id `<subscriptionId>:<sku>`"),
           AssignmentQuery),
    responses((status = 200, body = AssignmentPage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody),
              (status = 404, description = "No such license", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn assignments_of(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<AssignmentPage>> {
    let p = Params::parse(q.as_deref());
    let conds = ASSIGNMENT_FILTER.read(&p)?;
    let now = app.stub().now();
    let (known, all) = app.stub().with_engine(|e| {
        (
            licenses(e, &scope, now).iter().any(|l| l.id == id),
            assignments_in(e, &scope),
        )
    })?;
    if !known {
        return Err(ApiError::not_found(format!(
            "unknown license {id:?} (ids are <subscriptionId>:<sku>)"
        )));
    }
    let items = all.into_iter().filter(|a| a.license_id == id).collect();
    let items = apply_filter(items, &conds)?;
    let path = format!("/api/v1/licenses/{id}/assignments");
    let (items, pagination, links) = page_numbers(items, &p, &path)?;
    Ok(Json(AssignmentPage {
        items,
        pagination,
        links,
    }))
}

/// Set the seat count (`body.quantity`) of the licenses chosen by `scope` (`Only` / `All` /
/// `AllExcept` with `ids`; `ids` with `All` is a 400) and `filter`. A license with more seats assigned than the new count
/// fails (its devices keep their seats); the others are updated.
#[utoipa::path(post, path = "/api/v1/licenses/bulkUpdate", tag = "licenses",
    request_body = BulkUpdateRequest,
    responses((status = 200, body = BulkUpdateResponse)),
    security(("bearer" = [])))]
pub async fn bulk_update(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<BulkUpdateRequest>,
) -> ApiResult<Json<BulkUpdateResponse>> {
    if req.scope != Scope::All && req.ids.is_empty() {
        return Err(ApiError::bad_request(
            "ids is required for scope Only and AllExcept",
        ));
    }
    // Ids with scope All would be ignored and every license changed: more than was asked.
    if req.scope == Scope::All && !req.ids.is_empty() {
        return Err(ApiError::bad_request(
            "ids is only for scope Only and AllExcept; scope All takes every license (narrow it \
             with filter)",
        ));
    }
    let conds = LICENSE_FILTER.parse(req.filter.as_deref().unwrap_or(""))?;
    let now = app.stub().now();
    // Only the licenses the token sees: another tenant's is an unknown license.
    let all = app.stub().with_engine(|e| licenses(e, &scope, now))?;
    let known: BTreeSet<String> = all.iter().map(|l| l.id.clone()).collect();
    let ids: BTreeSet<&String> = req.ids.iter().collect();
    let mut failed = Vec::new();
    if req.scope == Scope::Only {
        for id in &ids {
            if !known.contains(*id) {
                failed.push(Failure {
                    id: (*id).clone(),
                    reason: "unknown license (ids are <subscriptionId>:<sku>)".into(),
                });
            }
        }
    }
    let chosen: Vec<License> = all
        .into_iter()
        .filter(|l| match req.scope {
            Scope::Only => ids.contains(&l.id),
            Scope::All => true,
            Scope::AllExcept => !ids.contains(&l.id),
        })
        .collect();
    let chosen = apply_filter(chosen, &conds)?;
    let mut targets = Vec::new();
    for l in &chosen {
        targets.push((l.id.clone(), license_id(&l.subscription_id)?, sku(&l.sku)?));
    }
    let quantity = req.body.quantity;
    let results = app
        .stub()
        .apply(move |e, now| {
            let mut fx = crate::engine::Effects::default();
            let mut results = Vec::new();
            for (id, sub, sku) in targets {
                match e.set_seat_limit(&sub, &sku, quantity, now) {
                    Ok(more) => {
                        fx.publish.extend(more.publish);
                        results.push((id, None));
                    }
                    Err(err) => results.push((id, Some(err.to_string()))),
                }
            }
            Ok((results, fx))
        })
        .await?;
    let mut success = 0u32;
    for (id, err) in results {
        match err {
            None => success = success.saturating_add(1),
            Some(reason) => failed.push(Failure { id, reason }),
        }
    }
    Ok(Json(BulkUpdateResponse {
        success_count: success,
        failed_count: u32::try_from(failed.len()).unwrap_or(u32::MAX),
        failure_reason: failed.first().map(|f| f.reason.clone()),
        failed,
    }))
}
