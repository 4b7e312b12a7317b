//! Handlers of the admin API, one module per seed area, and what they share: id parsing
//! (a malformed id is a 400), liveness, and the JSON 404 and 405 for unknown paths and methods.

pub mod auto_license;
pub mod customers;
pub mod delegations;
pub mod devices;
pub mod licenses;
pub mod meraki;
pub mod offline;
pub mod policy;
pub mod snow;
pub mod subscriptions;
pub mod usage;

use axum::extract::State;
use axum::Json;
use licd_protocol::{DeviceId, LicenseId, ServiceName, Sku, TenantId};

use super::dto::Health;
use super::error::{ApiError, ApiResult};
use super::App;

pub(crate) fn tenant_id(s: &str) -> ApiResult<TenantId> {
    TenantId::new(s).map_err(|e| ApiError::bad_request(format!("customer id {s:?}: {e}")))
}

pub(crate) fn device_id(s: &str) -> ApiResult<DeviceId> {
    DeviceId::new(s).map_err(|e| ApiError::bad_request(format!("device id {s:?}: {e}")))
}

pub(crate) fn license_id(s: &str) -> ApiResult<LicenseId> {
    LicenseId::new(s).map_err(|e| ApiError::bad_request(format!("subscription id {s:?}: {e}")))
}

pub(crate) fn sku(s: &str) -> ApiResult<Sku> {
    Sku::new(s).map_err(|e| ApiError::bad_request(format!("SKU {s:?}: {e}")))
}

pub(crate) fn service(s: &str) -> ApiResult<ServiceName> {
    ServiceName::new(s).map_err(|e| ApiError::bad_request(format!("service {s:?}: {e}")))
}

pub(crate) fn tenant_ids(v: &[String]) -> ApiResult<Vec<TenantId>> {
    v.iter().map(|s| tenant_id(s)).collect()
}

/// Liveness (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The controller runs", body = Health)))]
pub async fn health(State(app): State<App>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        broker_connected: app.stub().is_connected(),
    })
}

/// A known path with a method it does not take: a JSON 405 (axum adds `Allow`), decided
/// before the token is checked, so the answer does not depend on the token.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{method} is not supported on {}; the Allow header lists what is, /openapi.json \
         describes the API",
        uri.path()
    ))
}

/// Unknown path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint {}; the API is described at /openapi.json",
        uri.path()
    ))
}
