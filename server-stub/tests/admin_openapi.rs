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
        "/metrics",
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

/// Issue 16 item 10: the document states the rules the server enforces (the fuzz gate,
/// `scripts/fuzz-admin-api.sh`, holds the server to them) and every error it can answer.
#[test]
fn the_document_states_the_rules_and_the_errors() {
    let doc: serde_json::Value = serde_json::from_str(&licd_stub::admin::openapi::json()).unwrap();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let param = |path: &str, method: &str, name: &str| -> serde_json::Value {
        op(path, method)["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
            .clone()
    };
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let bounds = |p: serde_json::Value| {
        (
            p["schema"]["minimum"].clone(),
            p["schema"]["maximum"].clone(),
        )
    };

    assert_eq!(schema("Id")["pattern"], licd_protocol::id::ID_PATTERN);
    assert_eq!(
        schema("Time")["pattern"],
        *licd_stub::admin::query::TIME_PATTERN
    );
    for (path, method, name) in [
        ("/api/v1/customers/{id}", "get", "id"),
        ("/api/v1/subscriptions/{id}", "get", "id"),
        ("/api/v1/devices/{tenant}/{device}", "get", "device"),
        ("/api/v1/devices/{tenant}/{device}/diag", "post", "tenant"),
    ] {
        assert_eq!(
            param(path, method, name)["schema"]["$ref"],
            "#/components/schemas/Id",
            "{method} {path} {name}"
        );
        assert!(
            op(path, method)["responses"]["400"].is_object(),
            "{path}: 400 on a bad id"
        );
    }
    use serde_json::json;
    assert_eq!(
        bounds(param("/api/v1/subscriptions", "get", "perPage")),
        (json!(3), json!(1000))
    );
    assert_eq!(
        bounds(param("/api/v1/licenses", "get", "page_number")),
        (json!(1), json!(i32::MAX))
    );
    assert_eq!(
        bounds(param(
            "/api/v1/devices/{tenant}/{device}/diag",
            "post",
            "timeoutSecs"
        )),
        (json!(1), json!(25))
    );
    assert!(
        param("/api/v1/subscriptions", "get", "endDate[lte]")["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("/Time")
    );
    assert!(
        param("/api/v1/licenses", "get", "filter")["schema"]["pattern"]
            .as_str()
            .unwrap()
            .contains("subscriptionId")
    );
    // A body with rules across fields is "all of: the object, any of: the rules".
    let auto = schema("AutoLicenseRequest")["allOf"][0].clone();
    let rules = schema("AutoLicenseRequest")["allOf"][1].to_string();
    assert!(
        rules.contains("include_customers") && rules.contains("exclude_customers"),
        "not both lists: {rules}"
    );
    assert_eq!(auto["properties"]["services"]["minItems"], 1);
    assert!(auto["required"]
        .as_array()
        .unwrap()
        .contains(&json!("services")));
    let bulk = schema("BulkUpdateRequest").to_string();
    assert!(
        bulk.contains("anyOf") && bulk.contains("\"minItems\":1"),
        "{bulk}"
    );

    // Every error: 401/429/500 on every /api operation, 403 where a read token is refused,
    // 400/413 with a body; every error response is the JSON error body.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let codes = op["responses"].as_object().unwrap();
            let has = |c: &str| codes.contains_key(c);
            // `/metrics` is behind the token check and rate limit too; its GET refuses tenant
            // tokens (the metrics name every tenant), the one GET with a 403.
            let metrics = path == "/metrics";
            let api = path.starts_with("/api/") || metrics;
            assert!(has("500"), "{method} {path}: 500");
            assert!(
                !api || (has("401") && has("429")),
                "{method} {path}: 401, 429"
            );
            assert_eq!(
                (api && method != "get") || metrics,
                has("403"),
                "{method} {path}: 403"
            );
            if op.get("requestBody").is_some() {
                assert!(has("400") && has("413"), "{method} {path}: 400, 413");
            }
            for (code, r) in codes {
                if code.starts_with('4') || code.starts_with('5') {
                    let r = match r["$ref"].as_str() {
                        Some(name) => {
                            &doc["components"]["responses"][name.rsplit('/').next().unwrap()]
                        }
                        None => r,
                    };
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {code}"
                    );
                }
            }
        }
    }
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
