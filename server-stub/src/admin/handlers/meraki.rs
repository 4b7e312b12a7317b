//! Meraki licensing operations of seed 002 in the seed's own shapes (issue 21): compliance
//! statuses per subscription (`getAdministeredLicensingSubscriptionSubscriptionsComplianceStatuses`),
//! filtered by `organizationIds` and `subscriptionIds`. The per-customer view stays at
//! `GET /api/v1/compliance`.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use crate::admin::dto::{status_str, SkuQuantity, SubscriptionRef};
use crate::admin::error::{ApiResult, ErrorBody};
use crate::admin::params::{Describe, Item, ListParam, SubscriptionQuery, PER_PAGE};
use crate::admin::query::{cursor_page, format_time, Params};
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::compliance::SubscriptionCompliance;

use super::{license_id, tenant_ids};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionComplianceStatus {
    /// The subscription: id, name, status.
    pub subscription: SubscriptionRef,
    /// What its organizations' devices lack of it.
    pub violations: SubscriptionViolations,
}

/// Violations of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionViolations {
    /// By product class (empty: compliant).
    pub by_product_class: Vec<SubscriptionClassViolation>,
}

/// Devices of one product class short of a subscription's entitlements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
    axum::Router::new().route(
        "/api/v1/subscriptions/compliance/statuses",
        axum::routing::get(compliance_statuses),
    )
}
