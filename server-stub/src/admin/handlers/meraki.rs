//! Meraki licensing operations of seed 002 in the seed's own shapes (issue 21): compliance
//! statuses per subscription (`getAdministeredLicensingSubscriptionSubscriptionsComplianceStatuses`),
//! filtered by `organizationIds` and `subscriptionIds` (the per-customer view stays at
//! `GET /api/v1/compliance`), and co-term licenses: list an organization's, move some to
//! another organization (`remainderLicenses`, `movedLicenses`; see [`crate::engine::coterm`]).

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use crate::admin::dto::{status_str, SkuQuantity, SubscriptionRef};
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::params::{Describe, Item, ListParam, SubscriptionQuery, TextParam, PER_PAGE};
use crate::admin::query::{cursor_page, format_time, Params};
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::compliance::SubscriptionCompliance;
use crate::engine::coterm::LicenseMove;
use crate::engine::EngineError;

use super::{license_id, sku, tenant_id, tenant_ids};

/// The query of `GET /api/v1/subscriptions/compliance/statuses`.
pub struct ComplianceStatusQuery;

impl ComplianceStatusQuery {
    /// `organizationIds`.
    pub const ORGANIZATIONS: ListParam = ListParam {
        name: "organizationIds",
        description: "Organizations (customers) whose devices count (every customer the token \
                      sees when not given; an unknown one is a 404)",
        item: Item::Id,
    };
    /// `subscriptionIds`.
    pub const SUBSCRIPTIONS: ListParam = ListParam {
        name: "subscriptionIds",
        description: "Only these subscriptions (others, and unknown ids, are left out)",
        item: Item::Id,
    };
}

impl IntoParams for ComplianceStatusQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            Self::ORGANIZATIONS.parameter(),
            Self::SUBSCRIPTIONS.parameter(),
            PER_PAGE.parameter(),
            SubscriptionQuery::STARTING_AFTER.parameter(),
            SubscriptionQuery::ENDING_BEFORE.parameter(),
        ]
    }
}

/// Compliance of one subscription (Meraki `complianceStatuses` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionComplianceStatus {
    /// The subscription: id, name, status.
    pub subscription: SubscriptionRef,
    /// What its organizations' devices lack of it.
    pub violations: SubscriptionViolations,
}

/// Violations of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionViolations {
    /// By product class (empty: compliant).
    pub by_product_class: Vec<SubscriptionClassViolation>,
}

/// Devices of one product class short of a subscription's entitlements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionClassViolation {
    /// Product class.
    pub product_class: String,
    /// When the earliest of these violations runs out of grace (ISO 8601).
    #[schema(format = DateTime)]
    pub grace_period_ends_at: String,
    /// What is missing.
    pub missing: MissingEntitlements,
}

/// Missing entitlements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MissingEntitlements {
    /// SKU and seats missing.
    pub entitlements: Vec<SkuQuantity>,
}

impl From<SubscriptionCompliance> for SubscriptionComplianceStatus {
    fn from(c: SubscriptionCompliance) -> Self {
        Self {
            subscription: SubscriptionRef {
                id: c.subscription.id.to_string(),
                name: c.subscription.name,
                status: status_str(c.subscription.status).into(),
            },
            violations: SubscriptionViolations {
                by_product_class: c
                    .by_product_class
                    .into_iter()
                    .map(|v| SubscriptionClassViolation {
                        product_class: v.product_class,
                        grace_period_ends_at: format_time(v.grace_period_ends_at),
                        missing: MissingEntitlements {
                            entitlements: v
                                .missing
                                .into_iter()
                                .map(|(sku, quantity)| SkuQuantity {
                                    sku: sku.to_string(),
                                    quantity,
                                })
                                .collect(),
                        },
                    })
                    .collect(),
            },
        }
    }
}

/// Compliance statuses of subscriptions (seed 002): for each subscription serving one of
/// `organizationIds` (owned by it or bound to it), the devices of those organizations short of
/// its entitlements, by product class, with `gracePeriodEndsAt` and the missing SKUs.
/// `subscriptionIds` narrows the subscriptions; cursor pagination as for the subscriptions
/// list (HTTP `Link`).
#[utoipa::path(get, path = "/api/v1/subscriptions/compliance/statuses", tag = "subscriptions",
    params(ComplianceStatusQuery),
    responses((status = 200, body = [SubscriptionComplianceStatus],
               headers(("Link" = String, description = "first, prev, next pages (RFC 8288)"))),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody),
              (status = 404, description = "No such organization", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn compliance_statuses(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<(HeaderMap, Json<Vec<SubscriptionComplianceStatus>>)> {
    let p = Params::parse(q.as_deref());
    let orgs = tenant_ids(&ComplianceStatusQuery::ORGANIZATIONS.read(&p)?)?;
    let subs = ComplianceStatusQuery::SUBSCRIPTIONS
        .read(&p)?
        .iter()
        .map(|s| license_id(s))
        .collect::<ApiResult<Vec<_>>>()?;
    scope.customers(&orgs)?;
    let now = app.stub().now();
    let items = app.stub().with_engine(|e| {
        let orgs: Vec<_> = if orgs.is_empty() {
            e.state()
                .customers
                .keys()
                .filter(|c| scope.sees(c))
                .cloned()
                .collect()
        } else {
            orgs.clone()
        };
        for c in &orgs {
            if !e.state().customers.contains_key(c) {
                return Err(crate::engine::EngineError::UnknownCustomer(c.clone()).into());
            }
        }
        let bindings = &e.state().bindings;
        e.state()
            .subscriptions
            .values()
            .filter(|s| scope.sees_subscription(s))
            .filter(|s| subs.is_empty() || subs.contains(&s.id))
            .filter(|s| {
                orgs.iter().any(|c| {
                    s.owner.as_ref() == Some(c)
                        || bindings.get(&s.id).is_some_and(|b| b.contains(c))
                })
            })
            .map(|s| {
                e.subscription_compliance(&s.id, &orgs, now)
                    .map(SubscriptionComplianceStatus::from)
                    .map_err(Into::into)
            })
            .collect::<ApiResult<Vec<_>>>()
    })??;
    let (page, link) = cursor_page(
        items,
        |s| s.subscription.id.clone(),
        &p,
        "/api/v1/subscriptions/compliance/statuses",
    )?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, v);
    }
    Ok((headers, Json(page)))
}

/// This module's routes (merged into the API before its auth layer).
pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route(
            "/api/v1/subscriptions/compliance/statuses",
            axum::routing::get(compliance_statuses),
        )
        .route(
            "/api/v1/organizations/{organizationId}/licensing/coterm/licenses",
            axum::routing::get(coterm_licenses),
        )
        .route(
            "/api/v1/organizations/{organizationId}/licensing/coterm/licenses/move",
            axum::routing::post(move_coterm_licenses),
        )
}

/// The query of `GET …/coterm/licenses`.
pub struct CotermQuery;

const BOOLS: &[&str] = &["true", "false"];

impl CotermQuery {
    /// `invalidated`.
    pub const INVALIDATED: TextParam = TextParam {
        name: "invalidated",
        description: "Only licenses that are (true) or are not (false) invalidated",
        item: Item::OneOf(BOOLS),
    };
    /// `expired`.
    pub const EXPIRED: TextParam = TextParam {
        name: "expired",
        description: "Only licenses that are (true) or are not (false) expired",
        item: Item::OneOf(BOOLS),
    };
}

impl IntoParams for CotermQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            Self::INVALIDATED.parameter(),
            Self::EXPIRED.parameter(),
            PER_PAGE.parameter(),
            SubscriptionQuery::STARTING_AFTER.parameter(),
            SubscriptionQuery::ENDING_BEFORE.parameter(),
        ]
    }
}

/// An edition of a co-term license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CotermEdition {
    /// Edition (the SKU's name).
    pub edition: String,
    /// Product type (the SKU's product class).
    pub product_type: String,
}

/// Seats of one model (SKU) in a co-term license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CotermCount {
    /// Model: the SKU.
    pub model: String,
    /// Seats (0 once every seat moved away).
    pub count: u32,
}

/// Seats of one model (SKU) to move.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveCount {
    /// Model: the SKU.
    #[schema(value_type = Id)]
    pub model: String,
    /// Seats (an integer: `2.0` is 2, as JSON Schema's `integer` allows).
    #[serde(deserialize_with = "crate::admin::dto::bounded::positive")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub count: u32,
}

/// A co-term license (Meraki `getOrganizationLicensingCotermLicenses` item): a claimed
/// subscription of the organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CotermLicense {
    /// License key: the subscription's claim key, or its id when it has none.
    pub key: String,
    /// Organization holding it.
    pub organization_id: String,
    /// Term in days.
    pub duration: u64,
    /// `addDevices`.
    pub mode: String,
    /// Term start (ISO 8601).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// When it was claimed; the stub records no claim time and gives the term start.
    #[schema(format = DateTime)]
    pub claimed_at: String,
    /// Every seat moved away.
    pub invalidated: bool,
    /// When it was invalidated (not recorded by the stub: null).
    #[schema(format = DateTime)]
    pub invalidated_at: Option<String>,
    /// Its term has ended.
    pub expired: bool,
    /// Editions (one per SKU).
    pub editions: Vec<CotermEdition>,
    /// Seats per model (SKU).
    pub counts: Vec<CotermCount>,
}

fn coterm_view(
    e: &crate::engine::Engine,
    s: &crate::engine::Subscription,
    now: u64,
) -> CotermLicense {
    let cat = |sku: &licd_protocol::Sku| e.state().catalog.get(sku);
    CotermLicense {
        key: crate::engine::Engine::coterm_key(s).to_string(),
        organization_id: s.owner.as_ref().map(|o| o.to_string()).unwrap_or_default(),
        duration: s.end.saturating_sub(s.start) / 86_400,
        mode: "addDevices".into(),
        started_at: format_time(s.start),
        claimed_at: format_time(s.start),
        invalidated: s.entitlements.iter().all(|x| x.limit == 0),
        invalidated_at: None,
        expired: s.status(now) == crate::engine::SubscriptionStatus::Expired,
        editions: s
            .entitlements
            .iter()
            .map(|x| CotermEdition {
                edition: cat(&x.sku).map_or_else(|| x.sku.to_string(), |c| c.name.clone()),
                product_type: cat(&x.sku)
                    .map(|c| c.product_class.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        counts: s
            .entitlements
            .iter()
            .map(|x| CotermCount {
                model: x.sku.to_string(),
                count: x.limit,
            })
            .collect(),
    }
}

/// List an organization's co-term licenses (`invalidated`, `expired`; cursor pagination by key,
/// HTTP `Link`).
#[utoipa::path(get, path = "/api/v1/organizations/{organizationId}/licensing/coterm/licenses", tag = "subscriptions",
    params(("organizationId" = Id, Path, description = "Organization (customer) id"), CotermQuery),
    responses((status = 200, body = [CotermLicense],
               headers(("Link" = String, description = "first, prev, next pages (RFC 8288)"))),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody),
              (status = 404, description = "No such organization", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn coterm_licenses(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(org): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<(HeaderMap, Json<Vec<CotermLicense>>)> {
    let org = tenant_id(&org)?;
    let p = Params::parse(q.as_deref());
    let invalidated = CotermQuery::INVALIDATED.read(&p)?.map(|v| v == "true");
    let expired = CotermQuery::EXPIRED.read(&p)?.map(|v| v == "true");
    scope.customer(&org)?;
    let now = app.stub().now();
    let items = app.stub().with_engine(|e| {
        if !e.state().customers.contains_key(&org) {
            return Err(EngineError::UnknownCustomer(org.clone()));
        }
        Ok(e.state()
            .subscriptions
            .values()
            .filter(|s| s.owner.as_ref() == Some(&org))
            .map(|s| coterm_view(e, s, now))
            .filter(|l| invalidated.is_none_or(|x| l.invalidated == x))
            .filter(|l| expired.is_none_or(|x| l.expired == x))
            .collect::<Vec<_>>())
    })??;
    let path = format!("/api/v1/organizations/{org}/licensing/coterm/licenses");
    let (page, link) = cursor_page(items, |l| l.key.clone(), &p, &path)?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, v);
    }
    Ok((headers, Json(page)))
}

/// Where moved licenses go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveDestination {
    /// The organization (customer) receiving the licenses.
    #[schema(value_type = Id)]
    pub organization_id: String,
    /// `addDevices` or `renew` (the stub does the same for both: new licenses in the
    /// destination with the source's term).
    pub mode: MoveMode,
}

/// Meraki's move modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum MoveMode {
    /// Add devices.
    AddDevices,
    /// Renew.
    Renew,
}

/// One license to move.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLicense {
    /// Its key.
    #[schema(min_length = 1)]
    pub key: String,
    /// Seats per model (SKU) to move.
    #[schema(min_items = 1)]
    pub counts: Vec<MoveCount>,
}

/// A move of co-term licenses (Meraki `moveOrganizationLicensingCotermLicenses`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Where to.
    pub destination: MoveDestination,
    /// What.
    #[schema(min_items = 1)]
    pub licenses: Vec<MoveLicense>,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveResponse {
    /// The source's licenses after the move.
    pub remainder_licenses: Vec<CotermLicense>,
    /// The destination's new licenses.
    pub moved_licenses: Vec<CotermLicense>,
}

/// Move seats of co-term licenses to another organization. The source license keeps the
/// rest (`remainderLicenses`), the destination gets new licenses with the moved seats and the
/// same term (`movedLicenses`). When the source then holds fewer seats than its devices use,
/// the seats assigned last end now: those devices go into grace (`term_ended`) and out of
/// compliance.
#[utoipa::path(post, path = "/api/v1/organizations/{organizationId}/licensing/coterm/licenses/move", tag = "subscriptions",
    params(("organizationId" = Id, Path, description = "Source organization (customer) id")),
    request_body = MoveRequest,
    responses((status = 200, body = MoveResponse),
              (status = 404, description = "Unknown organization, license key or model", body = ErrorBody),
              (status = 409, description = "A new license's key is taken", body = ErrorBody),
              (status = 422, description = "More seats than the license has, the source as destination, a model listed twice", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn move_coterm_licenses(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(org): ApiPath<String>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> ApiResult<Json<MoveResponse>> {
    let org = tenant_id(&org)?;
    let dest = tenant_id(&req.destination.organization_id)?;
    let mut moves = Vec::new();
    for l in &req.licenses {
        if l.key.is_empty() {
            return Err(ApiError::bad_request("licenses[].key must not be empty"));
        }
        if l.counts.is_empty() {
            return Err(ApiError::bad_request("licenses[].counts must not be empty"));
        }
        let mut counts = Vec::new();
        for c in &l.counts {
            if c.count == 0 || c.count > crate::engine::MAX_SEATS {
                return Err(ApiError::bad_request(format!(
                    "licenses[].counts[].count: {} is not in 1..={}",
                    c.count,
                    crate::engine::MAX_SEATS
                )));
            }
            counts.push((sku(&c.model)?, c.count));
        }
        moves.push(LicenseMove {
            key: l.key.clone(),
            counts,
        });
    }
    if req.licenses.is_empty() {
        return Err(ApiError::bad_request("licenses must not be empty"));
    }
    scope.customer(&org)?;
    scope.customer(&dest)?;
    let (src, d) = (org.clone(), dest.clone());
    let r = app
        .stub()
        .apply(move |e, now| e.move_licenses(&src, &d, &moves, now))
        .await?;
    let now = app.stub().now();
    let views = |ids: &[licd_protocol::LicenseId]| {
        app.stub().with_engine(|e| {
            ids.iter()
                .filter_map(|id| {
                    e.state()
                        .subscriptions
                        .get(id)
                        .map(|s| coterm_view(e, s, now))
                })
                .collect::<Vec<_>>()
        })
    };
    Ok(Json(MoveResponse {
        remainder_licenses: views(&r.remainder)?,
        moved_licenses: views(&r.moved)?,
    }))
}
