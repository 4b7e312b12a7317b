//! Devices: list (filters and page numbers), detail (identity, last report, VM count, each
//! service's grant and state, bundle seq), the re-issue action and remote diagnostics.

use axum::extract::{RawQuery, State};
use axum::Json;

use crate::admin::dto::{Device, DevicePage, ReissueResponse};
use crate::admin::error::{ApiError, ApiPath, ApiResult, ErrorBody};
use crate::admin::params::{DeviceQuery, DiagQuery, DEVICE_FILTER, TIMEOUT_SECS};
use crate::admin::query::{apply_filter, page_numbers, Params};
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::{Engine, EngineError};

use super::{device_id, tenant_id};

fn device(e: &Engine, t: &licd_protocol::TenantId, d: &licd_protocol::DeviceId) -> Option<Device> {
    let rec = e.state().devices.get(&(t.clone(), d.clone()))?;
    Some(Device::new(rec, e.device_view(t, d)?))
}

/// List devices (`customerId`; Snow `filter` on any field, e.g. `productClass -eq "ap"`;
/// `page_number`, `page_size`).
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    params(DeviceQuery),
    responses((status = 200, body = DevicePage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<App>,
    scope: TokenScope,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<DevicePage>> {
    let p = Params::parse(q.as_deref());
    let tenant = DeviceQuery::CUSTOMER.read(&p)?.map(tenant_id).transpose()?;
    let conds = DEVICE_FILTER.read(&p)?;
    let items: Vec<Device> = app.stub().with_engine(|e| {
        e.state()
            .devices
            .keys()
            .filter(|(t, _)| scope.sees(t) && tenant.as_ref().is_none_or(|x| x == t))
            .filter_map(|(t, d)| device(e, t, d))
            .collect()
    })?;
    let items = apply_filter(items, &conds)?;
    let (items, pagination, links) = page_numbers(items, &p, "/api/v1/devices")?;
    Ok(Json(DevicePage {
        items,
        pagination,
        links,
    }))
}

/// Show a device.
#[utoipa::path(get, path = "/api/v1/devices/{tenant}/{device}", tag = "devices",
    params(("tenant" = Id, Path, description = "Tenant id"),
           ("device" = Id, Path, description = "Device id")),
    responses((status = 200, body = Device),
              (status = 400, description = "An id is not an id", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath((t, d)): ApiPath<(String, String)>,
) -> ApiResult<Json<Device>> {
    let (t, d) = (tenant_id(&t)?, device_id(&d)?);
    let found = if scope.sees(&t) {
        app.stub().with_engine(|e| device(e, &t, &d))?
    } else {
        None
    };
    found
        .map(Json)
        .ok_or_else(|| EngineError::UnknownDevice(t, d).into())
}

/// Issue the device a fresh bundle (new `seq`, new lease) even if nothing changed.
#[utoipa::path(post, path = "/api/v1/devices/{tenant}/{device}/reissue", tag = "devices",
    params(("tenant" = Id, Path, description = "Tenant id"),
           ("device" = Id, Path, description = "Device id")),
    responses((status = 200, body = ReissueResponse),
              (status = 400, description = "An id is not an id", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody),
              (status = 409, description = "The device's seq is exhausted", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reissue(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath((t, d)): ApiPath<(String, String)>,
) -> ApiResult<Json<ReissueResponse>> {
    let (t, d) = (tenant_id(&t)?, device_id(&d)?);
    if !scope.sees(&t) {
        return Err(EngineError::UnknownDevice(t, d).into());
    }
    app.stub().reissue(&t, &d).await?;
    let seq = app
        .stub()
        .with_engine(|e| {
            e.state()
                .devices
                .get(&(t.clone(), d.clone()))
                .map(|x| x.bundle.seq)
        })?
        .unwrap_or(0);
    Ok(Json(ReissueResponse {
        tenant_id: t.to_string(),
        device_id: d.to_string(),
        bundle_seq: seq,
    }))
}

/// A device's diagnostic report, fetched over MQTT (see [`crate::diag`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiagReport {
    /// Tenant.
    pub tenant_id: String,
    /// Device.
    pub device_id: String,
    /// When the device made it (its trusted time).
    pub generated_at: u64,
    /// The device's `licd diag --json --offline` document, verified against its pinned key.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

/// Ask the device for its diagnostic report over MQTT and wait for its signed answer
/// (`timeoutSecs`, 1-25, default 20). At once: 409 `device_offline` when the device's presence
/// says it is offline; 429 `rate_limited` with `Retry-After` when this controller asked it less
/// than a minute ago (a device answers one request a minute). 504 when no answer comes in
/// time: the device refused the request (its log says why) or is unreachable.
#[utoipa::path(post, path = "/api/v1/devices/{tenant}/{device}/diag", tag = "devices",
    params(("tenant" = Id, Path, description = "Tenant id"),
           ("device" = Id, Path, description = "Device id"), DiagQuery),
    responses((status = 200, body = DiagReport),
              (status = 400, description = "An id or timeoutSecs is invalid", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody),
              (status = 409, description = "The device is offline (`device_offline`)", body = ErrorBody),
              (status = 429, description = "The device was asked less than a minute ago (`rate_limited`, `Retry-After`)", body = ErrorBody),
              (status = 504, description = "No answer in time", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn diag(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath((t, d)): ApiPath<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<DiagReport>> {
    let (t, d) = (tenant_id(&t)?, device_id(&d)?);
    let secs = TIMEOUT_SECS.read(&Params::parse(q.as_deref()))?;
    if !scope.sees(&t) {
        return Err(unknown_device(&t, &d));
    }
    let timeout = std::time::Duration::from_secs(u64::from(secs));
    match app.stub().request_diag(&t, &d, timeout).await {
        Ok(r) => Ok(Json(DiagReport {
            tenant_id: r.tenant.to_string(),
            device_id: r.device.to_string(),
            generated_at: r.generated_at,
            report: serde_json::from_str(&r.report).unwrap_or(serde_json::Value::String(r.report)),
        })),
        Err(crate::diag::DiagError::UnknownDevice { .. }) => Err(unknown_device(&t, &d)),
        Err(e @ crate::diag::DiagError::Offline { .. }) => Err(ApiError {
            status: axum::http::StatusCode::CONFLICT,
            code: "device_offline",
            message: e.to_string(),
            retry_after: None,
        }),
        Err(e @ crate::diag::DiagError::RateLimited { retry_after, .. }) => Err(ApiError {
            status: axum::http::StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: e.to_string(),
            retry_after: Some(retry_after),
        }),
        Err(e @ crate::diag::DiagError::Timeout { .. }) => Err(ApiError {
            status: axum::http::StatusCode::GATEWAY_TIMEOUT,
            code: "timeout",
            message: e.to_string(),
            retry_after: None,
        }),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The 404 of a device diag cannot reach, also for another tenant's device.
fn unknown_device(t: &licd_protocol::TenantId, d: &licd_protocol::DeviceId) -> ApiError {
    EngineError::UnknownDevice(t.clone(), d.clone()).into()
}
