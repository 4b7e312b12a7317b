//! The OpenAPI 3 document of the admin API, generated from the handlers' annotations and the
//! [`dto`](super::dto) types with `utoipa`, served at `/openapi.json` and committed as
//! `docs/openapi.json` (a test keeps the two equal; `LICD_UPDATE_OPENAPI=1` rewrites it).

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "licd-stub admin API",
        description = "Admin HTTP/JSON API of the licd stub controller: Aruba MSP auto-licensing, \
Meraki subscriptions (claim, bind, compliance, entitlements), Snow-style licenses and \
assignments, customers and devices. Every /api route needs `Authorization: Bearer <token>` \
(`licd-stub token create`); read tokens may only GET. Errors are \
`{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        handlers::health,
        handlers::customers::list,
        handlers::customers::create,
        handlers::customers::show,
        handlers::customers::update,
        handlers::customers::remove,
        handlers::subscriptions::entitlements,
        handlers::subscriptions::add_entitlement,
        handlers::subscriptions::list,
        handlers::subscriptions::create,
        handlers::subscriptions::show,
        handlers::subscriptions::claim,
        handlers::subscriptions::validate_claim_key,
        handlers::subscriptions::bind,
        handlers::subscriptions::compliance,
        handlers::auto_license::enable,
        handlers::auto_license::unassign,
        handlers::auto_license::policies,
        handlers::devices::list,
        handlers::devices::show,
        handlers::devices::reissue,
        handlers::devices::diag,
        handlers::licenses::list,
        handlers::licenses::assignments,
        handlers::licenses::assignments_of,
        handlers::licenses::bulk_update,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "customers", description = "The MSP and its tenants"),
        (name = "subscriptions", description = "Meraki subscriptions, entitlements, claim, bind, compliance (seed 002)"),
        (name = "auto-licensing", description = "Aruba MSP auto-licensing and unassign (seeds 000, 001)"),
        (name = "devices", description = "Devices, their grants and bundles"),
        (name = "licenses", description = "Snow-style licenses, assignments, bulk update (seed 003)"),
        (name = "meta", description = "Liveness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as pretty JSON with a trailing newline (what `docs/openapi.json` holds).
pub fn json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// `GET /openapi.json` (no token needed).
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
