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

/// Every schema a request body can hold, nested ones included, by name.
fn request_body_schemas(doc: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let schemas = &doc["components"]["schemas"];
    let mut todo: Vec<String> = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            if let Some(r) = body["$ref"].as_str() {
                todo.push(r.to_string());
            }
        }
    }
    assert!(!todo.is_empty());
    let mut seen = std::collections::BTreeMap::new();
    while let Some(r) = todo.pop() {
        let name = r.trim_start_matches("#/components/schemas/").to_string();
        if seen.contains_key(&name) {
            continue;
        }
        let schema = schemas[&name].clone();
        // Follow every $ref below this schema (properties, array items, ...).
        let mut stack = vec![schema.clone()];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                        todo.push(r.to_string());
                    }
                    stack.extend(o.into_iter().map(|(_, v)| v));
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        seen.insert(name, schema);
    }
    seen.into_iter().collect()
}

/// Issue 16 item 3: every object a request body can hold, nested ones included, refuses
/// unknown fields (`#[serde(deny_unknown_fields)]`, which the document states as
/// `additionalProperties: false`): a typo is a 400, never a field silently left at its default.
#[test]
fn every_request_body_object_refuses_unknown_fields() {
    let doc: serde_json::Value = serde_json::from_str(&licd_stub::admin::openapi::json()).unwrap();
    let schemas = request_body_schemas(&doc);
    for (name, schema) in &schemas {
        if schema["type"] == "object" {
            assert_eq!(
                schema["additionalProperties"],
                serde_json::Value::Bool(false),
                "{name} accepts unknown fields: add #[serde(deny_unknown_fields)]"
            );
        }
    }
    let names: Vec<&str> = schemas.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"LicenseUpdate") && names.contains(&"NewSubscriptionEntitlement"));
}

/// Issue 16 item 5: every integer a request body can hold states its range, and the range
/// fits its format (what the server enforces, see the `bounded` deserializers in dto.rs).
#[test]
fn every_request_body_integer_states_its_bounds() {
    let doc: serde_json::Value = serde_json::from_str(&licd_stub::admin::openapi::json()).unwrap();
    let mut checked = 0;
    for (name, schema) in request_body_schemas(&doc) {
        let Some(props) = schema["properties"].as_object() else {
            continue;
        };
        for (field, p) in props {
            let is_int = p["type"] == "integer"
                || p["type"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "integer"));
            if !is_int {
                continue;
            }
            let (min, max) = (p["minimum"].as_i64(), p["maximum"].as_i64());
            assert!(
                min.is_some() && max.is_some(),
                "{name}.{field}: state minimum and maximum (and bound it in the deserializer)"
            );
            if p["format"] == "int32" {
                assert!(
                    max <= Some(i64::from(i32::MAX)),
                    "{name}.{field}: over int32"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked}");
}
