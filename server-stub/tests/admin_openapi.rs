//! `docs/openapi.json` is the admin API's OpenAPI document as the code generates it.
//! `LICD_UPDATE_OPENAPI=1 cargo test -p licd-stub --test admin_openapi` rewrites it.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn docs_openapi_json_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let generated = licd_stub::admin::openapi::json();
    if std::env::var_os("LICD_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run \
         `LICD_UPDATE_OPENAPI=1 cargo test -p licd-stub --test admin_openapi` and commit it"
    );
}

#[test]
fn every_route_of_the_router_is_in_the_document() {
    let doc: serde_json::Value = serde_json::from_str(&licd_stub::admin::openapi::json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/api/v1/customers",
        "/api/v1/customers/{id}",
        "/api/v1/entitlements",
        "/api/v1/subscriptions",
        "/api/v1/subscriptions/{id}",
        "/api/v1/subscriptions/claim",
        "/api/v1/subscriptions/claimKey/validate",
        "/api/v1/subscriptions/{id}/bind",
        "/api/v1/compliance",
        "/api/v1/auto-licensing",
        "/api/v1/auto-licensing/enable",
        "/api/v1/auto-licensing/unassign",
        "/api/v1/devices",
        "/api/v1/devices/{tenant}/{device}",
        "/api/v1/devices/{tenant}/{device}/reissue",
        "/api/v1/licenses",
        "/api/v1/licenses/bulkUpdate",
        "/api/v1/licenses/{id}/assignments",
        "/api/v1/assignments",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
