//! Licensing policy per SKU and per subscription (issue 20; issue 18's `offline_lease_days`):
//! `GET`/`PUT /api/v1/entitlements/{sku}/policy` and `…/subscriptions/{id}/policy`. A PUT
//! replaces the policy (fields left out inherit: subscription → SKU → controller default; an
//! empty body clears it); devices whose grants change get new bundles at once. Setting policy
//! is the MSP's (a tenant token may read its own subscriptions' policy, 403 on PUT).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use licd_protocol::{LicenseId, Sku};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::admin::error::{ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::policy::{EffectivePolicy, Policy, Strategy, MAX_WARN_BEFORE_SECS};
use crate::engine::{Engine, EngineError, DAY};

use super::{license_id, sku};

/// The policy routes, for [`crate::admin::router`].
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/entitlements/{sku}/policy",
            get(show_sku).put(set_sku),
        )
        .route(
            "/api/v1/subscriptions/{id}/policy",
            get(show_subscription).put(set_subscription),
        )
}

/// Expiry strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyStrategy {
    /// Grace, then the service stops (the default).
    Restrict,
    /// Grace, then the service keeps running, shown non-compliant with the reason.
    Advisory,
    /// No grace when the term ends or the license is revoked.
    Immediate,
}

impl From<PolicyStrategy> for Strategy {
    fn from(s: PolicyStrategy) -> Self {
        match s {
            PolicyStrategy::Restrict => Strategy::Restrict,
            PolicyStrategy::Advisory => Strategy::Advisory,
            PolicyStrategy::Immediate => Strategy::Immediate,
        }
    }
}

impl From<Strategy> for PolicyStrategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::Restrict => PolicyStrategy::Restrict,
            Strategy::Advisory => PolicyStrategy::Advisory,
            Strategy::Immediate => PolicyStrategy::Immediate,
        }
    }
}

/// A policy as set (a field left out inherits from the SKU, then the controller). Read
/// through a JSON object only (serde would take an array for a struct), with integers as the
/// document's `integer` (`132.0` is 132).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    try_from = "serde_json::Map<String, serde_json::Value>"
)]
pub struct PolicySettings {
    /// What the device does when the term ends, the lease runs out, the license is revoked
    /// or the host runs more VMs than tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<PolicyStrategy>,
    /// VMs tolerated in percent of the allowance: within it the service is licensed with an
    /// overage warning; above it, grace then the strategy. 100 = no overage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 1000)]
    pub overage_tolerance_pct: Option<u32>,
    /// Expiring-soon thresholds in seconds before the term end, strictly descending (the
    /// device warns once per threshold crossed), e.g. `[2592000, 604800]` = 30 and 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 8, value_type = Option<Vec<WarnBefore>>)]
    pub warn_before_secs: Option<Vec<u64>>,
    /// Lease of a grant file (licensing by file), in days; the controller's
    /// `offline_lease_days` when set nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub offline_lease_days: Option<u32>,
}

/// The fields of [`PolicySettings`] as read from a JSON object.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFields {
    #[serde(default)]
    strategy: Option<PolicyStrategy>,
    #[serde(default, deserialize_with = "crate::admin::dto::bounded::positive_opt")]
    overage_tolerance_pct: Option<u32>,
    #[serde(default, deserialize_with = "thresholds")]
    warn_before_secs: Option<Vec<u64>>,
    #[serde(default, deserialize_with = "crate::admin::dto::bounded::positive_opt")]
    offline_lease_days: Option<u32>,
}

/// Thresholds: integers (`60.0` is 60) from 1 to [`MAX_WARN_BEFORE_SECS`].
fn thresholds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    use serde::de::{Error, Unexpected};
    let Some(list) = Option::<Vec<serde_json::Number>>::deserialize(d)? else {
        return Ok(None);
    };
    let expected = format!("an integer from 1 to {MAX_WARN_BEFORE_SECS}");
    list.into_iter()
        .map(|n| {
            let v = match (n.as_u64(), n.as_f64()) {
                (Some(v), _) => Some(v),
                (None, Some(f))
                    if f.fract() == 0.0 && f >= 1.0 && f <= MAX_WARN_BEFORE_SECS as f64 =>
                {
                    Some(f as u64)
                }
                _ => None,
            };
            v.filter(|v| (1..=MAX_WARN_BEFORE_SECS).contains(v))
                .ok_or_else(|| {
                    D::Error::invalid_value(Unexpected::Other(&n.to_string()), &expected.as_str())
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for PolicySettings {
    type Error = serde_json::Error;

    fn try_from(m: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        use serde::de::Error;
        // Field by field, so a refusal names the field it is about.
        for (k, v) in &m {
            let one = serde_json::Map::from_iter([(k.clone(), v.clone())]);
            serde_json::from_value::<PolicyFields>(serde_json::Value::Object(one))
                .map_err(|e| serde_json::Error::custom(format!("{k}: {e}")))?;
        }
        let f: PolicyFields = serde_json::from_value(serde_json::Value::Object(m))?;
        Ok(Self {
            strategy: f.strategy,
            overage_tolerance_pct: f.overage_tolerance_pct,
            warn_before_secs: f.warn_before_secs,
            offline_lease_days: f.offline_lease_days,
        })
    }
}

/// A threshold: seconds before the term end (1 s to ten years).
pub struct WarnBefore;

impl PartialSchema for WarnBefore {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("Seconds before the term end"))
            .minimum(Some(1))
            .maximum(Some(MAX_WARN_BEFORE_SECS))
            .into()
    }
}

impl ToSchema for WarnBefore {}

impl From<PolicySettings> for Policy {
    fn from(p: PolicySettings) -> Self {
        Policy {
            strategy: p.strategy.map(Strategy::from),
            // Above u16 is above the 1000 % cap: refused by the policy's own check.
            overage_tolerance_pct: p
                .overage_tolerance_pct
                .map(|t| u16::try_from(t).unwrap_or(u16::MAX)),
            warn_before: p.warn_before_secs,
            offline_lease_days: p.offline_lease_days,
        }
    }
}

impl From<Policy> for PolicySettings {
    fn from(p: Policy) -> Self {
        PolicySettings {
            strategy: p.strategy.map(PolicyStrategy::from),
            overage_tolerance_pct: p.overage_tolerance_pct.map(u32::from),
            warn_before_secs: p.warn_before,
            offline_lease_days: p.offline_lease_days,
        }
    }
}

/// The policy a grant of one SKU carries, every field decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectivePolicyView {
    /// The SKU.
    #[schema(value_type = Id)]
    pub sku: String,
    /// Expiry strategy.
    pub strategy: PolicyStrategy,
    /// Overage tolerance, percent of the allowance.
    pub overage_tolerance_pct: u16,
    /// Expiring-soon thresholds, seconds before the term end.
    pub warn_before_secs: Vec<u64>,
    /// Lease of a grant file in days.
    pub offline_lease_days: u64,
}

/// A SKU's or a subscription's policy: what is set on it and what its grants carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// `sku` or `subscription`.
    pub scope: String,
    /// The SKU or subscription id.
    #[schema(value_type = Id)]
    pub id: String,
    /// The fields set on it (others inherit).
    pub policy: PolicySettings,
    /// What its grants carry, per SKU (a subscription: each SKU it entitles).
    pub effective: Vec<EffectivePolicyView>,
}

fn effective(e: &Engine, sku: &Sku, p: EffectivePolicy) -> EffectivePolicyView {
    let offline = p
        .offline_lease_secs
        .unwrap_or(e.lease_policy().offline_lease_secs);
    EffectivePolicyView {
        sku: sku.to_string(),
        strategy: p.strategy.into(),
        overage_tolerance_pct: p.overage_tolerance_pct,
        warn_before_secs: p.warn_before,
        offline_lease_days: offline / DAY,
    }
}

fn sku_view(e: &Engine, s: &Sku) -> ApiResult<PolicyView> {
    if !e.state().catalog.contains_key(s) {
        return Err(EngineError::UnknownSku(s.clone()).into());
    }
    let set = e.sku_policy(s);
    Ok(PolicyView {
        scope: "sku".into(),
        id: s.to_string(),
        effective: vec![effective(e, s, EffectivePolicy::from(&set))],
        policy: set.into(),
    })
}

fn subscription_view(e: &Engine, scope: &TokenScope, id: &LicenseId) -> ApiResult<PolicyView> {
    scope.subscription(e, id)?;
    let sub = e
        .state()
        .subscriptions
        .get(id)
        .ok_or_else(|| EngineError::UnknownSubscription(id.clone()))?;
    Ok(PolicyView {
        scope: "subscription".into(),
        id: id.to_string(),
        policy: e.subscription_policy(id).into(),
        effective: sub
            .entitlements
            .iter()
            .map(|en| effective(e, &en.sku, e.effective_policy(id, &en.sku)))
            .collect(),
    })
}

/// The policy of a catalogue SKU: the default of every subscription's seats of it.
#[utoipa::path(get, path = "/api/v1/entitlements/{sku}/policy", tag = "policy",
    params(("sku" = Id, Path, description = "SKU of the catalogue")),
    responses((status = 200, body = PolicyView),
              (status = 400, description = "The SKU is not an id", body = ErrorBody),
              (status = 404, description = "No such SKU", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_sku(
    State(app): State<App>,
    ApiPath(s): ApiPath<String>,
) -> ApiResult<Json<PolicyView>> {
    let s = sku(&s)?;
    Ok(Json(app.stub().with_engine(|e| sku_view(e, &s))??))
}

/// Set (replace) the policy of a catalogue SKU; fields left out inherit the controller's
/// default, an empty body clears it. Devices whose grants change get new bundles. The MSP's
/// tokens only.
#[utoipa::path(put, path = "/api/v1/entitlements/{sku}/policy", tag = "policy",
    params(("sku" = Id, Path, description = "SKU of the catalogue")),
    request_body = PolicySettings,
    responses((status = 200, body = PolicyView),
              (status = 404, description = "No such SKU", body = ErrorBody),
              (status = 422, description = "warnBeforeSecs is not strictly descending", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_sku(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(s): ApiPath<String>,
    ApiJson(req): ApiJson<PolicySettings>,
) -> ApiResult<Json<PolicyView>> {
    let s = sku(&s)?;
    scope.msp_only("setting licensing policy")?;
    let target = s.clone();
    app.stub()
        .apply(move |e, now| Ok(((), e.set_sku_policy(&target, req.into(), now)?)))
        .await?;
    Ok(Json(app.stub().with_engine(|e| sku_view(e, &s))??))
}

/// The policy of a subscription: overrides its SKUs' field by field.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/policy", tag = "policy",
    params(("id" = Id, Path, description = "Subscription id")),
    responses((status = 200, body = PolicyView),
              (status = 400, description = "The id is not an id", body = ErrorBody),
              (status = 404, description = "No such subscription", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_subscription(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<PolicyView>> {
    let id = license_id(&id)?;
    Ok(Json(
        app.stub()
            .with_engine(|e| subscription_view(e, &scope, &id))??,
    ))
}

/// Set (replace) the policy of a subscription; fields left out inherit its SKUs' policy, an
/// empty body clears it. Devices whose grants change get new bundles. The MSP's tokens only.
#[utoipa::path(put, path = "/api/v1/subscriptions/{id}/policy", tag = "policy",
    params(("id" = Id, Path, description = "Subscription id")),
    request_body = PolicySettings,
    responses((status = 200, body = PolicyView),
              (status = 404, description = "No such subscription", body = ErrorBody),
              (status = 422, description = "warnBeforeSecs is not strictly descending", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_subscription(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PolicySettings>,
) -> ApiResult<Json<PolicyView>> {
    let id = license_id(&id)?;
    // Another tenant's subscription is a 404 like a missing one, before the 403.
    app.stub().with_engine(|e| scope.subscription(e, &id))??;
    scope.msp_only("setting licensing policy")?;
    let target = id.clone();
    app.stub()
        .apply(move |e, now| Ok(((), e.set_subscription_policy(&target, req.into(), now)?)))
        .await?;
    Ok(Json(
        app.stub()
            .with_engine(|e| subscription_view(e, &scope, &id))??,
    ))
}
