//! Licensing by file (issue 18): upload an activation request and get the grant file back;
//! upload a release receipt to free its seats. The files are the signed bytes `licd request`
//! and `licd release` write (binary or armored); the same engine, ledger and seat rules as a
//! connected device. The routes live here, merged into the API by [`routes`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::admin::error::{ApiError, ApiResult, ErrorBody};
use crate::admin::scope::TokenScope;
use crate::admin::App;

/// The file routes, for [`crate::admin::router`].
pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/offline/requests", post(grant))
        .route("/api/v1/offline/returns", post(return_receipt))
}

/// A file's bytes: binary, or armored text (`-----BEGIN LICD …-----`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct LicdFile(#[allow(dead_code)] Vec<u8>);

/// What a release receipt freed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReturnResponse {
    /// Tenant.
    pub tenant_id: String,
    /// Device.
    pub device_id: String,
    /// The bundle seq the device held when it released.
    pub bundle_seq: u64,
    /// Services the receipt names.
    pub released: Vec<String>,
    /// Services whose seats were freed (a service with no seat any more frees nothing).
    pub freed: Vec<String>,
}

fn body(bytes: &Bytes) -> ApiResult<&[u8]> {
    if bytes.is_empty() {
        // The document allows any bytes, so an empty body is a file that does not open (422),
        // not a request the document forbids (400).
        return Err(ApiError::unprocessable(
            "the body is empty: it must be the file `licd request` or `licd release` wrote",
        ));
    }
    Ok(bytes)
}

/// Answer an activation request (the file `licd request` wrote, binary or armored) with a
/// grant file for `licd import` on the device. Same seat rules as a connected device; the
/// device is marked offline and its lease is the policy's `offline_lease_days`.
#[utoipa::path(post, path = "/api/v1/offline/requests", tag = "offline",
    request_body(content = LicdFile, content_type = "application/octet-stream",
                 description = "The activation request file"),
    responses((status = 200, description = "The grant file: carry it to the device and run `licd import FILE`",
               content_type = "application/octet-stream", body = LicdFile),
              (status = 409, description = "The request was answered already (a replay), or it is signed by another key than the device's pinned one", body = ErrorBody),
              (status = 422, description = "Not a valid activation request (damaged, truncated, forged, another kind of file)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn grant(
    State(app): State<App>,
    scope: TokenScope,
    bytes: Bytes,
) -> ApiResult<impl IntoResponse> {
    let g = app
        .stub()
        .offline_grant(body(&bytes)?, scope.tenant())
        .await?;
    let name = format!(
        "attachment; filename=\"{}-grant-{}.licd\"",
        g.bundle.device, g.bundle.seq
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        g.file,
    ))
}

/// Apply a release receipt (the file `licd release` wrote): frees its seats once, for
/// devices waiting for one. A replayed or forged receipt, or one for a bundle the device
/// was never issued, is refused.
#[utoipa::path(post, path = "/api/v1/offline/returns", tag = "offline",
    request_body(content = LicdFile, content_type = "application/octet-stream",
                 description = "The release receipt file"),
    responses((status = 200, body = ReturnResponse),
              (status = 404, description = "The receipt names a device this controller does not know", body = ErrorBody),
              (status = 409, description = "A replayed receipt, one for a bundle never issued to the device, or older than its last release", body = ErrorBody),
              (status = 422, description = "Not a valid release receipt (damaged, forged, not signed by the device's pinned key)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn return_receipt(
    State(app): State<App>,
    scope: TokenScope,
    bytes: Bytes,
) -> ApiResult<Json<ReturnResponse>> {
    let r = app
        .stub()
        .offline_return(body(&bytes)?, scope.tenant())
        .await?;
    Ok(Json(ReturnResponse {
        tenant_id: r.receipt.tenant.to_string(),
        device_id: r.receipt.device.to_string(),
        bundle_seq: r.receipt.bundle_seq,
        released: r.receipt.services.iter().map(|s| s.to_string()).collect(),
        freed: r.freed.iter().map(|s| s.to_string()).collect(),
    }))
}
