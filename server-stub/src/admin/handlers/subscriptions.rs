//! Meraki subscriptions (seed 002): the entitlements catalogue, subscriptions listed with
//! filters and cursor pagination, created (labs), claimed by claim key, found by claim key,
//! customers bound to them, and compliance statuses.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;

use crate::admin::dto::{
    BindRequest, BindResponse, ClaimKeyRequest, ClaimRequest, ComplianceStatus, CustomerRef,
    Entitlement, NewEntitlement, NewSubscription, SkuQuantity, Subscription,
};
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::params::{
    ComplianceQuery, EntitlementQuery, SubscriptionQuery, ValidateQuery, VALIDATE,
};
use crate::admin::query::{cursor_page, parse_time, Params};
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::{self, CatalogEntry, Engine};

use super::{license_id, service, sku, tenant_id, tenant_ids};

fn entitlement(c: &CatalogEntry) -> Entitlement {
    Entitlement {
        sku: c.sku.to_string(),
        name: c.name.clone(),
        product_type: c.product_class.clone(),
        product_class: c.product_class.clone(),
        feature_tier: None,
        is_add_on: false,
        is_free: false,
        service: c.service.to_string(),
        vms_per_seat: c.vms_per_seat,
    }
}

/// List the entitlements catalogue (`skus` filters).
#[utoipa::path(get, path = "/api/v1/entitlements", tag = "subscriptions",
    params(EntitlementQuery),
    responses((status = 200, body = [Entitlement])),
    security(("bearer" = [])))]
pub async fn entitlements(
    State(app): State<App>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<Entitlement>>> {
    let skus = EntitlementQuery::SKUS.read(&Params::parse(q.as_deref()))?;
    Ok(Json(app.stub().with_engine(|e| {
        e.state()
            .catalog
            .values()
            .filter(|c| skus.is_empty() || skus.iter().any(|s| s == c.sku.as_str()))
            .map(entitlement)
            .collect()
    })?))
}

/// Add a SKU to the catalogue.
#[utoipa::path(post, path = "/api/v1/entitlements", tag = "subscriptions",
    request_body = NewEntitlement,
    responses((status = 201, body = Entitlement),
              (status = 409, description = "The SKU exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_entitlement(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<NewEntitlement>,
) -> ApiResult<(StatusCode, Json<Entitlement>)> {
    scope.msp_only("changing the catalogue")?;
    if req.product_class.is_empty() {
        return Err(ApiError::bad_request("productClass must not be empty"));
    }
    if req.vms_per_seat == Some(0) {
        return Err(ApiError::bad_request("vmsPerSeat must be at least 1"));
    }
    let entry = CatalogEntry {
        sku: sku(&req.sku)?,
        name: req.name.unwrap_or_else(|| req.sku.clone()),
        service: service(&req.service)?,
        product_class: req.product_class,
        vms_per_seat: req.vms_per_seat,
    };
    let out = entitlement(&entry);
    app.stub().add_catalog_entry(entry).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// A subscription as `scope` may see it: 404 when it does not, and only the bound customers
/// it sees.
fn sub_view(
    e: &Engine,
    scope: &TokenScope,
    id: &licd_protocol::LicenseId,
    now: u64,
) -> ApiResult<Subscription> {
    scope.subscription(e, id)?;
    let v = e.subscription_view(id, now)?;
    Ok(Subscription::from_view(v, bound_names(e, scope, id)))
}

fn bound_names(e: &Engine, scope: &TokenScope, id: &licd_protocol::LicenseId) -> Vec<String> {
    e.bound_customers(id)
        .iter()
        .filter(|c| scope.sees(c))
        .map(|c| c.to_string())
        .collect()
}

/// The subscription of a claim key; one owned by a customer the token does not see is
/// answered like an unknown key (its 409 would tell that the key exists).
fn claim_key_owner(
    e: &Engine,
    scope: &TokenScope,
    key: &str,
) -> ApiResult<licd_protocol::LicenseId> {
    let s = e
        .state()
        .subscriptions
        .values()
        .find(|s| s.claim_key.as_deref() == Some(key))
        .filter(|s| s.owner.is_none() || scope.sees_subscription(s))
        .ok_or(engine::EngineError::UnknownClaimKey)?;
    Ok(s.id.clone())
}

/// List subscriptions with filters and cursor pagination (HTTP `Link`: first, prev, next).
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "subscriptions",
    params(SubscriptionQuery),
    responses((status = 200, body = [Subscription],
               headers(("Link" = String, description = "first, prev, next pages (RFC 8288)"))),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<(HeaderMap, Json<Vec<Subscription>>)> {
    let p = Params::parse(q.as_deref());
    let ids = SubscriptionQuery::IDS.read(&p)?;
    let customers = SubscriptionQuery::CUSTOMERS.read(&p)?;
    let statuses = SubscriptionQuery::STATUSES.read(&p)?;
    let types = SubscriptionQuery::PRODUCT_TYPES.read(&p)?;
    let skus = SubscriptionQuery::SKUS.read(&p)?;
    let name = SubscriptionQuery::NAME.read(&p)?.map(str::to_lowercase);
    let start = SubscriptionQuery::START.read(&p)?;
    let end = SubscriptionQuery::END.read(&p)?;
    let now = app.stub().now();
    let all: Vec<(u64, u64, Subscription)> = app.stub().with_engine(|e| {
        e.state()
            .subscriptions
            .values()
            .filter(|s| scope.sees_subscription(s))
            .filter_map(|s| Some((s.start, s.end, sub_view(e, &scope, &s.id, now).ok()?)))
            .collect()
    })?;
    let items: Vec<Subscription> = all
        .into_iter()
        .filter(|(s, en, v)| {
            (ids.is_empty() || ids.contains(&v.subscription_id))
                && (customers.is_empty()
                    || customers.iter().any(|c| {
                        v.customer_id.as_ref() == Some(c) || v.bound_customer_ids.contains(c)
                    }))
                && (statuses.is_empty() || statuses.contains(&v.status))
                && (types.is_empty() || v.product_types.iter().any(|t| types.contains(t)))
                && (skus.is_empty() || v.entitlements.iter().any(|e| skus.contains(&e.sku)))
                && name
                    .as_ref()
                    .is_none_or(|n| v.name.to_lowercase().contains(n))
                && start.contains(*s)
                && end.contains(*en)
        })
        .map(|(_, _, v)| v)
        .collect();
    let (page, link) = cursor_page(
        items,
        |s| s.subscription_id.clone(),
        &p,
        "/api/v1/subscriptions",
    )?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, v);
    }
    Ok((headers, Json(page)))
}

/// Create a subscription (owned by `customerId`, or claimable by `claimKey`). The MSP's
/// tokens only (403 for a tenant token).
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "subscriptions",
    request_body = NewSubscription,
    responses((status = 201, body = Subscription),
              (status = 404, description = "Unknown customer or SKU", body = ErrorBody),
              (status = 409, description = "The id or the claim key is taken", body = ErrorBody),
              (status = 422, description = "The term ends before it starts, or a SKU is listed twice", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<NewSubscription>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let id = license_id(&req.subscription_id)?;
    scope.msp_only("creating subscriptions")?;
    let start = match &req.start_date {
        Some(s) => parse_time(s).map_err(|e| ApiError::bad_request(format!("startDate: {e}")))?,
        None => app.stub().now(),
    };
    let end =
        parse_time(&req.end_date).map_err(|e| ApiError::bad_request(format!("endDate: {e}")))?;
    if req.customer_id.is_none() && req.claim_key.is_none() {
        return Err(ApiError::bad_request(
            "give customerId (owned) or claimKey (to claim later)",
        ));
    }
    if req.claim_key.as_deref() == Some("") {
        return Err(ApiError::bad_request("claimKey must not be empty"));
    }
    let mut entitlements = Vec::new();
    for e in &req.entitlements {
        entitlements.push(engine::Entitlement {
            sku: sku(&e.sku)?,
            limit: e.limit,
        });
    }
    let sub = engine::Subscription {
        id: id.clone(),
        name: req.name.unwrap_or_else(|| req.subscription_id.clone()),
        owner: req.customer_id.as_deref().map(tenant_id).transpose()?,
        claim_key: req.claim_key,
        start,
        end,
        entitlements,
    };
    app.stub().add_subscription(sub).await?;
    let now = app.stub().now();
    let v = app
        .stub()
        .with_engine(|e| sub_view(e, &scope, &id, now))??;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Show a subscription.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = Id, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription),
              (status = 400, description = "The id is not an id", body = ErrorBody),
              (status = 404, description = "No such subscription", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Subscription>> {
    let id = license_id(&id)?;
    let now = app.stub().now();
    Ok(Json(
        app.stub()
            .with_engine(|e| sub_view(e, &scope, &id, now))??,
    ))
}

/// Claim a subscription into a customer by its claim key (`validate=true`: dry run).
#[utoipa::path(post, path = "/api/v1/subscriptions/claim", tag = "subscriptions",
    params(ValidateQuery),
    request_body = ClaimRequest,
    responses((status = 200, body = Subscription),
              (status = 404, description = "Unknown claim key or customer", body = ErrorBody),
              (status = 409, description = "Already claimed", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn claim(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> ApiResult<Json<Subscription>> {
    let validate = VALIDATE.read(&Params::parse(q.as_deref()))?;
    let customer = tenant_id(&req.customer_id)?;
    if scope.tenant().is_some() {
        // The engine looks at the customer first, then the key: so does this.
        scope.customer(&customer)?;
        app.stub()
            .with_engine(|e| claim_key_owner(e, &scope, &req.claim_key))??;
    }
    let v = app
        .stub()
        .claim(&req.claim_key, &customer, validate)
        .await?;
    let bound = app.stub().with_engine(|e| bound_names(e, &scope, &v.id))?;
    Ok(Json(Subscription::from_view(v, bound)))
}

/// Find a subscription by claim key (Meraki validate claim key).
#[utoipa::path(post, path = "/api/v1/subscriptions/claimKey/validate", tag = "subscriptions",
    request_body = ClaimKeyRequest,
    responses((status = 200, body = Subscription),
              (status = 404, description = "Unknown claim key", body = ErrorBody),
              (status = 409, description = "Already claimed", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn validate_claim_key(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<ClaimKeyRequest>,
) -> ApiResult<Json<Subscription>> {
    let now = app.stub().now();
    let v = app.stub().with_engine(|e| {
        let id = claim_key_owner(e, &scope, &req.claim_key)?;
        if e.state()
            .subscriptions
            .get(&id)
            .is_some_and(|s| s.owner.is_some())
        {
            return Err(ApiError::from(engine::EngineError::AlreadyClaimed(id)));
        }
        let v = e.subscription_view(&id, now)?;
        Ok(Subscription::from_view(v, bound_names(e, &scope, &id)))
    })??;
    Ok(Json(v))
}

/// Bind customers to a subscription: their devices may use its seats after their own
/// subscriptions' (`validate=true`: dry run listing `errors` and `insufficientEntitlements`).
#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/bind", tag = "subscriptions",
    params(("id" = Id, Path, description = "Subscription id"), ValidateQuery),
    request_body = BindRequest,
    responses((status = 200, body = BindResponse),
              (status = 404, description = "Unknown subscription or customer", body = ErrorBody),
              (status = 409, description = "The subscription is not claimed", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn bind(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
    ApiJson(req): ApiJson<BindRequest>,
) -> ApiResult<Json<BindResponse>> {
    let validate = VALIDATE.read(&Params::parse(q.as_deref()))?;
    let id = license_id(&id)?;
    let customers = tenant_ids(&req.customer_ids)?;
    if scope.tenant().is_some() {
        app.stub().with_engine(|e| scope.subscription(e, &id))??;
        scope.customers(&customers)?;
    }
    let r = app
        .stub()
        .apply(move |e, now| e.bind_customers(&id, &customers, validate, now))
        .await?;
    let names = app.stub().with_engine(|e| {
        r.customers
            .iter()
            .map(|c| CustomerRef {
                id: c.to_string(),
                name: e
                    .state()
                    .customers
                    .get(c)
                    .map(|x| x.name.clone())
                    .unwrap_or_default(),
            })
            .collect()
    })?;
    Ok(Json(BindResponse {
        subscription_id: r.subscription.to_string(),
        customers: names,
        errors: r.errors,
        insufficient_entitlements: r
            .insufficient_entitlements
            .into_iter()
            .map(|i| SkuQuantity {
                sku: i.sku.to_string(),
                quantity: i.quantity,
            })
            .collect(),
        validate,
    }))
}

/// Compliance statuses of customers (all when `customerIds` is not given): violations, paused
/// services, VM over-use (and overage within tolerance), grants expiring soon
/// (`expiringWithinDays`, else each grant's policy thresholds), and what devices report of
/// their own services (an advisory service past grace is `non_compliant`).
#[utoipa::path(get, path = "/api/v1/compliance", tag = "subscriptions",
    params(ComplianceQuery),
    responses((status = 200, body = [ComplianceStatus]),
              (status = 400, description = "A customer id is not an id, or expiringWithinDays is out of range", body = ErrorBody),
              (status = 404, description = "No such customer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn compliance(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<ComplianceStatus>>> {
    let p = Params::parse(q.as_deref());
    let ids = tenant_ids(&ComplianceQuery::CUSTOMERS.read(&p)?)?;
    // Absent: each grant's own thresholds decide; given: that many days for every grant.
    let within = match p.get(ComplianceQuery::EXPIRING_WITHIN_DAYS.name) {
        Some(_) => Some(u64::from(ComplianceQuery::EXPIRING_WITHIN_DAYS.read(&p)?) * engine::DAY),
        None => None,
    };
    scope.customers(&ids)?;
    let now = app.stub().now();
    let out: Result<Vec<ComplianceStatus>, engine::EngineError> = app.stub().with_engine(|e| {
        let ids = if ids.is_empty() {
            e.state()
                .customers
                .keys()
                .filter(|c| scope.sees(c))
                .cloned()
                .collect()
        } else {
            ids
        };
        ids.iter()
            .map(|c| {
                e.compliance_with(c, now, within)
                    .map(|r| ComplianceStatus::at(r, now))
            })
            .collect()
    })?;
    Ok(Json(out?))
}
