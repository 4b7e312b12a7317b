//! The OpenAPI 3 document of the admin API, generated from the handlers' annotations, the
//! [`dto`](super::dto) types, the [`params`](super::params) descriptors and the
//! [`schema`](super::schema) pieces with `utoipa`, served at `/openapi.json` and committed as
//! `docs/openapi.json` (a test keeps the two equal; `LICD_UPDATE_OPENAPI=1` rewrites it).
//!
//! The document states every rule the server enforces, so that a 400 always means "the
//! request is not what the document allows" (`scripts/fuzz-admin-api.sh` holds the server to
//! it): [`ErrorResponses`] adds the refusals every route can give, [`CrossFieldRules`] the
//! rules that tie two fields of a body together.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, HttpMethod, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorBody;
use super::handlers;
use super::params::LICENSE_FILTER;
use super::schema::{ComputerRef, Id, LicenseRef, Time};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "licd-stub admin API",
        description = "Admin HTTP/JSON API of the licd stub controller: Aruba MSP auto-licensing, \
Meraki subscriptions (claim, bind, compliance, entitlements), Snow-style licenses and \
assignments, customers and devices. Every /api route needs `Authorization: Bearer <token>` \
(`licd-stub token create`); read tokens may only GET. Errors are \
`{\"error\": {\"code\", \"message\"}}`, every one listed with its operation. This document \
states every rule the server enforces: a 400 always means a request it does not allow, a 422 \
a request it allows whose values contradict each other. A method a path does not list is a \
405 with `Allow`, whatever the token; an unknown path a 404.",
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
        handlers::offline::grant,
        handlers::offline::return_receipt,
        handlers::delegations::create,
        handlers::delegations::list,
        handlers::delegations::show,
        handlers::delegations::return_delegation,
        handlers::delegations::revoke,
        handlers::delegations::leases,
        handlers::meraki::compliance_statuses,
        handlers::meraki::coterm_licenses,
        handlers::meraki::move_coterm_licenses,
        crate::metrics::serve,
        handlers::snow::assignment_types,
        handlers::snow::summary,
        handlers::snow::list_computers,
        handlers::snow::add_computer,
        handlers::snow::replace_computers,
        handlers::snow::delete_computers,
        handlers::snow::show_computer,
        handlers::snow::replace_computer,
        handlers::snow::delete_computer,
        handlers::snow::list_datacenters,
        handlers::snow::add_datacenter,
        handlers::snow::replace_datacenters,
        handlers::snow::delete_datacenters,
        handlers::snow::show_datacenter,
        handlers::snow::replace_datacenter,
        handlers::snow::delete_datacenter,
        handlers::snow::list_organizations,
        handlers::snow::add_organization,
        handlers::snow::replace_organizations,
        handlers::snow::delete_organizations,
        handlers::snow::show_organization,
        handlers::snow::replace_organization,
        handlers::snow::delete_organization,
        handlers::snow::show_site,
        handlers::snow::add_site,
        handlers::snow::replace_site,
        handlers::snow::delete_site,
        handlers::snow::list_users,
        handlers::snow::add_user,
        handlers::snow::replace_users,
        handlers::snow::delete_users,
        handlers::snow::show_user,
        handlers::snow::delete_user,
        handlers::snow::show_placement,
        handlers::snow::place,
        handlers::snow::unplace,
        handlers::policy::show_sku,
        handlers::policy::set_sku,
        handlers::policy::show_subscription,
        handlers::policy::set_subscription,
        handlers::usage::list,
    ),
    components(schemas(Id, Time, LicenseRef, ComputerRef, ErrorBody)),
    modifiers(&BearerAuth, &ErrorResponses, &CrossFieldRules),
    tags(
        (name = "customers", description = "The MSP and its tenants"),
        (name = "subscriptions", description = "Meraki subscriptions, entitlements, claim, bind, compliance (seed 002)"),
        (name = "auto-licensing", description = "Aruba MSP auto-licensing and unassign (seeds 000, 001)"),
        (name = "devices", description = "Devices, their grants and bundles"),
        (name = "licenses", description = "Snow-style licenses, assignments, bulk update (seed 003)"),
        (name = "delegations", description = "Site delegations: seat pools delegated to a site relay, reserved in the ledger, returned or revoked (issue 23)"),
        (name = "offline", description = "Licensing by file: activation requests, grant files, release receipts (issue 18)"),
        (name = "policy", description = "Licensing policy per SKU or subscription: expiry strategy, overage tolerance, expiring-soon thresholds, offline lease; usage reported by devices, counted once (issue 20)"),
        (name = "meta", description = "Liveness and metrics"),
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

/// Adds the refusals that do not depend on the operation, as shared responses: 401, 429 and
/// 500 on every `/api` route, 403 on every `/api` route but `GET` (read tokens), 400 and 413 on
/// every route with a body. An operation's own description of a code wins.
struct ErrorResponses;

const SHARED_RESPONSES: [(&str, &str, &str); 6] = [
    (
        "400",
        "BadRequest",
        "The request is not what this document allows: the body is not JSON, or a field or \
         parameter is missing or invalid (the message names it)",
    ),
    (
        "401",
        "Unauthorized",
        "No bearer token, or an unknown or revoked one",
    ),
    ("403", "Forbidden", "A read token (it may only GET), or a tenant token asking for what only the MSP's tokens may do"),
    (
        "413",
        "PayloadTooLarge",
        "The body is over the admin API's limit (64 KiB by default)",
    ),
    (
        "429",
        "RateLimited",
        "The token's bucket is empty (200 at once, 100 a second); `Retry-After` says when to \
         retry",
    ),
    (
        "500",
        "InternalError",
        "A fault of the controller, logged under the request id the body and `x-request-id` \
         carry",
    ),
];

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(Ref::from_schema_name(ErrorBody::name())))),
        )
        .build()
}

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (_, name, description) in SHARED_RESPONSES {
            components
                .responses
                .insert(name.to_string(), RefOr::T(error_response(description)));
        }
        let add = |op: &mut Operation, code: &str| {
            let Some((_, name, _)) = SHARED_RESPONSES.iter().find(|(c, _, _)| *c == code) else {
                return;
            };
            op.responses
                .responses
                .entry(code.to_string())
                .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            // `/metrics` sits behind the same token check and rate limit as the API.
            let api = path.starts_with("/api/") || path == "/metrics";
            for (method, op) in [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Patch, item.patch.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                if op.request_body.is_some() {
                    add(op, "400");
                    add(op, "413");
                }
                if api {
                    add(op, "401");
                    if method != HttpMethod::Get {
                        add(op, "403");
                    }
                    add(op, "429");
                }
                add(op, "500");
            }
        }
    }
}

/// Rules that tie fields of a body together, which `utoipa` cannot derive: bulk update's
/// `ids` (required for `Only` and `AllExcept`, refused with `All`; unknown ids are reported in
/// `failed`, not refused) and `filter` (the licenses' filter), a new subscription's owner or claim key,
/// auto-licensing's `include_customers` or `exclude_customers` (not both).
struct CrossFieldRules;

/// An object schema with only these properties set.
fn properties(props: &[(&str, RefOr<Schema>)], required: &[&str]) -> ObjectBuilder {
    let mut o = ObjectBuilder::new().schema_type(Type::Object);
    for (name, schema) in props {
        o = o.property(*name, schema.clone());
    }
    for name in required {
        o = o.required(*name);
    }
    o
}

/// Replaces component `name` with "all of: itself, any of `alternatives`".
fn any_of(openapi: &mut utoipa::openapi::OpenApi, name: &str, alternatives: Vec<ObjectBuilder>) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let Some(schema) = components.schemas.remove(name) else {
        return;
    };
    let mut any = AnyOfBuilder::new();
    for a in alternatives {
        any = any.item(a);
    }
    components.schemas.insert(
        name.to_string(),
        AllOfBuilder::new().item(schema).item(any).into(),
    );
}

impl Modify for CrossFieldRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let string = || -> RefOr<Schema> { ObjectBuilder::new().schema_type(Type::String).into() };
        let words = |w: &[&str]| -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(w.iter().copied()))
                .into()
        };
        if let Some(RefOr::T(Schema::Object(o))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("BulkUpdateRequest"))
        {
            if let Some(RefOr::T(Schema::Object(filter))) = o.properties.get_mut("filter") {
                if let RefOr::T(Schema::Object(pattern)) = LICENSE_FILTER.schema() {
                    filter.pattern = pattern.pattern;
                    filter.description = Some(
                        "Narrows the licenses further, e.g. `sku -eq \"LIC-AP\"` (the \
                              licenses' filter: see GET /api/v1/licenses)"
                            .into(),
                    );
                }
            }
        }
        any_of(
            openapi,
            "BulkUpdateRequest",
            vec![
                // All: no ids (they would be ignored).
                properties(
                    &[
                        ("scope", words(&["All"])),
                        ("ids", ArrayBuilder::new().max_items(Some(0)).into()),
                    ],
                    &[],
                ),
                // Only, AllExcept: at least one id.
                properties(
                    &[
                        ("scope", words(&["Only", "AllExcept"])),
                        (
                            "ids",
                            ArrayBuilder::new()
                                .items(string())
                                .min_items(Some(1))
                                .into(),
                        ),
                    ],
                    &["ids"],
                ),
            ],
        );
        let null = || -> RefOr<Schema> { ObjectBuilder::new().schema_type(Type::Null).into() };
        any_of(
            openapi,
            "AutoLicenseRequest",
            vec![
                properties(&[("include_customers", null())], &[]),
                properties(&[("exclude_customers", null())], &[]),
            ],
        );
        any_of(
            openapi,
            "NewSubscription",
            vec![
                properties(&[("customerId", string())], &["customerId"]),
                properties(&[("claimKey", string())], &["claimKey"]),
            ],
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
