//! Site delegations (issue 23): delegate seat pools to a site relay (the controller signs the
//! delegation and reserves the seats), list and show them, return them (seats freed) or revoke
//! them (seats freed, the relay key on the revocation list devices honour). The routes live
//! here, merged into the API by [`routes`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use licd_protocol::{PublicKey, SiteId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::admin::dto::bounded;
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::query::format_time;
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::controller::delegation::NewDelegation;
use crate::engine::delegation::DelegationRecord;

use super::{service, tenant_id};

/// The delegation routes, for [`crate::admin::router`].
pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/delegations", get(list).post(create))
        .route("/api/v1/delegations/{id}", get(show))
        .route("/api/v1/delegations/{id}/return", post(return_delegation))
        .route("/api/v1/delegations/{id}/revoke", post(revoke))
        .route("/api/v1/delegations/{id}/leases", get(leases))
}

/// Seats of one service to delegate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPool {
    /// Service (some SKU of the catalogue must license it).
    #[schema(value_type = Id)]
    pub service: String,
    /// Seats: reserved in the controller's ledger for as long as the delegation runs.
    #[serde(deserialize_with = "bounded::positive")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub seats: u32,
}

/// A delegation to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDelegationBody {
    /// The relay's ed25519 public key, 64 hex digits (`licd-stub relay init` printed it).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub relay_key: String,
    /// The only customer (tenant) whose devices the relay may license; its seats are
    /// reserved (its own subscriptions first, then those it is bound to, then the MSP's).
    #[schema(value_type = Id)]
    pub customer_id: String,
    /// The site (devices there are configured with `site = "…"`).
    #[schema(value_type = Id)]
    pub site_id: String,
    /// Seat pools, one per service, 1 to 16, services unique (422 otherwise).
    #[schema(min_items = 1, max_items = 16)]
    pub pools: Vec<NewPool>,
    /// Longest lease the relay may give, seconds (default 3600).
    #[serde(default, deserialize_with = "bounded::positive_opt")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub max_lease_secs: Option<u32>,
    /// How long it is valid from now, days (default 30; capped by the signing key's
    /// certificate).
    #[serde(default, deserialize_with = "bounded::positive_opt")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub valid_days: Option<u32>,
    /// Reserve only seats of SKUs for this product class.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub product_class: Option<String>,
}

/// Seats reserved from one subscription's SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservedSeats {
    /// Subscription.
    pub subscription_id: String,
    /// SKU.
    pub sku: String,
    /// Seats.
    pub seats: u32,
}

/// A delegated seat pool and where its seats are reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegatedPool {
    /// Service.
    pub service: String,
    /// Seats.
    pub seats: u32,
    /// Where they are reserved.
    pub reserved: Vec<ReservedSeats>,
}

/// Where a delegation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DelegationStatus {
    /// In force: its seats are reserved.
    Active,
    /// Its window has ended: seats free, devices refuse the relay's bundles.
    Expired,
    /// Returned: seats free (the relay key is not revoked).
    Returned,
    /// Revoked: seats free, the relay key on the revocation list.
    Revoked,
}

/// A site delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delegation {
    /// Id.
    pub id: String,
    /// Customer (tenant).
    pub customer_id: String,
    /// Site.
    pub site_id: String,
    /// The relay's public key, hex.
    pub relay_key: String,
    /// The relay key's id (what a revocation list names).
    pub relay_key_id: String,
    /// Where it stands.
    pub status: DelegationStatus,
    /// Longest lease the relay may give, seconds.
    pub max_lease_secs: u64,
    /// Valid from (ISO 8601).
    #[schema(format = DateTime)]
    pub valid_from: String,
    /// Valid until, exclusive (ISO 8601).
    #[schema(format = DateTime)]
    pub valid_until: String,
    /// When it was made (ISO 8601).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it was returned or revoked (ISO 8601).
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    /// Seat pools.
    pub pools: Vec<DelegatedPool>,
    /// The signed delegation, hex: the controller key's certificate followed by the
    /// delegation — the relay's `delegation.hex`.
    pub delegation: String,
    /// The same delegation as an armored kind-12 file (`-----BEGIN LICD DELEGATION-----`),
    /// for `licd-stub relay import`; also published retained on
    /// `licd/v1/{tenant}/{site}/delegation` for a relay with an uplink.
    pub armored: String,
    /// After a revocation: the version of the revocation list that names the relay key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_list_version: Option<u64>,
}

fn view(d: &DelegationRecord, now: u64) -> Delegation {
    Delegation {
        id: d.id.clone(),
        customer_id: d.tenant.to_string(),
        site_id: d.site.to_string(),
        relay_key: d.relay_key.to_hex(),
        relay_key_id: d.relay_key.id().to_string(),
        status: match d.state_at(now) {
            "expired" => DelegationStatus::Expired,
            "returned" => DelegationStatus::Returned,
            "revoked" => DelegationStatus::Revoked,
            _ => DelegationStatus::Active,
        },
        max_lease_secs: d.max_lease,
        valid_from: format_time(d.not_before),
        valid_until: format_time(d.not_after),
        created_at: format_time(d.created_at),
        ended_at: d.ended_at.map(format_time),
        pools: d
            .pools
            .iter()
            .map(|p| DelegatedPool {
                service: p.service.to_string(),
                seats: p.seats,
                reserved: p
                    .reserved
                    .iter()
                    .map(|r| ReservedSeats {
                        subscription_id: r.subscription.to_string(),
                        sku: r.sku.to_string(),
                        seats: r.seats,
                    })
                    .collect(),
            })
            .collect(),
        delegation: hex::encode(d.chain().unwrap_or_default()),
        armored: licd_protocol::offline::armor(&d.signed).unwrap_or_default(),
        revocation_list_version: None,
    }
}

fn one(app: &App, scope: &TokenScope, id: &str) -> ApiResult<Delegation> {
    let now = app.stub().now();
    app.stub()
        .with_engine(|e| e.delegation(id, scope.tenant()).map(|d| view(d, now)))?
        .map_err(Into::into)
}

/// Delegate seat pools to a site relay: the seats are reserved in the ledger (no device
/// elsewhere can take them until the delegation ends, is returned or revoked) and the
/// delegation is signed by the controller's signing key. A tenant token delegates its own
/// customer's seats only.
#[utoipa::path(post, path = "/api/v1/delegations", tag = "delegations",
    request_body = NewDelegationBody,
    responses((status = 201, body = Delegation),
              (status = 404, description = "Unknown customer, or no SKU licenses a service", body = ErrorBody),
              (status = 409, description = "Not enough free seats in subscriptions active for the whole delegation (the message says how many are free)", body = ErrorBody),
              (status = 422, description = "A service listed twice, more than 16 pools, or the relay key is not an ed25519 public key", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<NewDelegationBody>,
) -> ApiResult<(StatusCode, Json<Delegation>)> {
    let tenant = tenant_id(&req.customer_id)?;
    let site = SiteId::new(req.site_id.as_str())
        .map_err(|e| ApiError::bad_request(format!("site id {:?}: {e}", req.site_id)))?;
    let relay_key = PublicKey::from_hex(&req.relay_key)
        .map_err(|_| ApiError::bad_request("relayKey: expected 64 hex digits"))?;
    let mut pools = Vec::with_capacity(req.pools.len());
    for p in &req.pools {
        pools.push((service(&p.service)?, p.seats));
    }
    if pools.is_empty() {
        return Err(ApiError::bad_request("pools: give at least one"));
    }
    if pools.len() > licd_protocol::limits::MAX_DELEGATED_SERVICES {
        return Err(ApiError::bad_request("pools: at most 16"));
    }
    if req.product_class.as_deref() == Some("") {
        return Err(ApiError::bad_request("productClass must not be empty"));
    }
    scope.customer(&tenant)?;
    let d = app
        .stub()
        .delegate(NewDelegation {
            relay_key,
            tenant,
            site,
            pools,
            product_class: req.product_class,
            max_lease: u64::from(req.max_lease_secs.unwrap_or(3600)),
            valid_secs: u64::from(req.valid_days.unwrap_or(30)).saturating_mul(86_400),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view(&d, app.stub().now()))))
}

/// List delegations (a tenant token: its own).
#[utoipa::path(get, path = "/api/v1/delegations", tag = "delegations",
    responses((status = 200, body = [Delegation])),
    security(("bearer" = [])))]
pub async fn list(State(app): State<App>, scope: TokenScope) -> ApiResult<Json<Vec<Delegation>>> {
    let now = app.stub().now();
    Ok(Json(app.stub().with_engine(|e| {
        e.state()
            .delegations
            .values()
            .filter(|d| scope.sees(&d.tenant))
            .map(|d| view(d, now))
            .collect()
    })?))
}

/// Show a delegation, with the signed delegation to hand the relay again.
#[utoipa::path(get, path = "/api/v1/delegations/{id}", tag = "delegations",
    params(("id" = String, Path, description = "Delegation id")),
    responses((status = 200, body = Delegation),
              (status = 404, description = "No such delegation", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Delegation>> {
    Ok(Json(one(&app, &scope, &id)?))
}

/// Return a delegation: its seats are free again and devices waiting for them get them. The
/// relay key is not revoked (the relay could still license devices until the delegation's
/// window ends): for a lost or stolen relay, revoke.
#[utoipa::path(post, path = "/api/v1/delegations/{id}/return", tag = "delegations",
    params(("id" = String, Path, description = "Delegation id")),
    responses((status = 200, body = Delegation),
              (status = 404, description = "No such delegation", body = ErrorBody),
              (status = 409, description = "Returned or revoked already", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn return_delegation(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Delegation>> {
    let d = app.stub().return_delegation(&id, scope.tenant()).await?;
    Ok(Json(view(&d, app.stub().now())))
}

/// Revoke a delegation: the relay key goes on the root-signed revocation list (published
/// retained on `licd/v1/trust/revocations`; every device then refuses the relay), and this and
/// every other active delegation to that key end, their seats free.
#[utoipa::path(post, path = "/api/v1/delegations/{id}/revoke", tag = "delegations",
    params(("id" = String, Path, description = "Delegation id")),
    responses((status = 200, body = Delegation),
              (status = 404, description = "No such delegation", body = ErrorBody),
              (status = 409, description = "Returned or revoked already, or this controller cannot sign a revocation list (no root key in its key directory)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Delegation>> {
    let r = app.stub().revoke_delegation(&id, scope.tenant()).await?;
    let mut v = view(&r.delegation, app.stub().now());
    v.revocation_list_version = Some(r.revocation_list_version);
    Ok(Json(v))
}

/// A lease the delegation's relay reported issuing (over its uplink, acknowledged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegatedLease {
    /// The relay's number for it (increasing; a newer lease of the same device and service
    /// has a higher one).
    pub n: u64,
    /// Device.
    pub device_id: String,
    /// Service.
    pub service: String,
    /// The bundle's seq.
    pub bundle_seq: u64,
    /// When the relay issued it (ISO 8601).
    #[schema(format = DateTime)]
    pub issued_at: String,
    /// Its lease end (ISO 8601).
    #[schema(format = DateTime)]
    pub lease_until: String,
    /// When the controller received it (ISO 8601).
    #[schema(format = DateTime)]
    pub reported_at: String,
}

/// What the delegation's relay issued under it, as it reported over its uplink (each lease
/// once, in the relay's order).
#[utoipa::path(get, path = "/api/v1/delegations/{id}/leases", tag = "delegations",
    params(("id" = String, Path, description = "Delegation id")),
    responses((status = 200, body = [DelegatedLease]),
              (status = 404, description = "No such delegation", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn leases(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<DelegatedLease>>> {
    let rows = app.stub().delegated_leases(&id, scope.tenant())?;
    Ok(Json(
        rows.into_iter()
            .map(|l| DelegatedLease {
                n: l.n,
                device_id: l.device,
                service: l.service,
                bundle_seq: l.bundle_seq,
                issued_at: format_time(l.issued_at),
                lease_until: format_time(l.lease_until),
                reported_at: format_time(l.reported_at),
            })
            .collect(),
    ))
}
