//! Tenant isolation (issue 21 item 4): every operation of the OpenAPI document, generated from
//! `docs/openapi.json` (not a hand list), is called with tenant-a's tokens against tenant-b's
//! ids and against ids that do not exist. The two answers must be the same — status, error code,
//! message (ids aside) — and no answer may name one of tenant-b's objects; tenant-b's records
//! are unchanged afterwards, while the MSP's token sees them all.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{now, svc, test_config};
use licd_protocol::{DeviceId, DeviceReport, LicenseId, PublicKey, Sku, TenantId};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer, RateLimit};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::{Stub, StubHandle};
use serde_json::{json, Map, Value};

/// The ids a generated request names.
#[derive(Debug, Clone)]
struct Ids {
    customer: &'static str,
    device: &'static str,
    subscription: &'static str,
    claim_key: &'static str,
    license: &'static str,
    computer: &'static str,
    datacenter: &'static str,
    user: &'static str,
    delegation: &'static str,
}

/// Tenant-b's objects (they exist).
const B: Ids = Ids {
    customer: "tenant-b",
    device: "ap-b1",
    subscription: "SUB-B",
    claim_key: "KEY-B",
    license: "SUB-B:LIC-AP",
    computer: "tenant-b:ap-b1",
    datacenter: "dc-b",
    user: "user-b",
    delegation: "dlg-1",
};

/// Objects of the same shape that do not exist.
const Z: Ids = Ids {
    customer: "tenant-z",
    device: "ap-z1",
    subscription: "SUB-Z",
    claim_key: "KEY-Z",
    license: "SUB-Z:LIC-AP",
    computer: "tenant-z:ap-z1",
    datacenter: "dc-z",
    user: "user-z",
    delegation: "dlg-9",
};

/// Which id a parameter or property of this name carries, if any.
fn id_for(name: &str, ids: &Ids) -> Option<String> {
    let n = name.to_ascii_lowercase();
    let v = if n.contains("customer") || n.contains("organization") || n == "tenant" {
        ids.customer
    } else if n.contains("subscriptionid") {
        ids.subscription
    } else if n == "claimkey" {
        ids.claim_key
    } else if n == "device" || n.contains("deviceid") {
        ids.device
    } else if n == "ids" || n.contains("licenseid") {
        ids.license
    } else if n == "computerid" {
        ids.computer
    } else if n == "datacenterid" {
        ids.datacenter
    } else if n == "userid" {
        ids.user
    } else {
        return None;
    };
    Some(v.to_string())
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A value of `schema` for a property named `name`: ids from `ids`, the required properties
/// of objects plus those carrying ids (the first of each kind: `include_customers`, not
/// also `exclude_customers`), the first choice of enums and alternatives.
fn instance(doc: &Value, schema: &Value, name: &str, ids: &Ids) -> Value {
    let s = resolve(doc, schema);
    if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = json!({"type": "object", "properties": {}, "required": []});
        for p in parts {
            let p = resolve(doc, p);
            if let Some(props) = p.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    merged["properties"][k] = v.clone();
                }
            }
            if let Some(req) = p.get("required").and_then(Value::as_array) {
                merged["required"]
                    .as_array_mut()
                    .unwrap()
                    .extend(req.iter().cloned());
            }
        }
        return instance(doc, &merged, name, ids);
    }
    for alt in ["oneOf", "anyOf"] {
        if let Some(parts) = s.get(alt).and_then(Value::as_array) {
            let pick = parts
                .iter()
                .find(|p| resolve(doc, p).get("type") != Some(&json!("null")))
                .unwrap_or(&parts[0]);
            return instance(doc, pick, name, ids);
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    let ty = match s.get("type") {
        Some(Value::Array(ts)) => ts
            .iter()
            .find(|t| *t != "null")
            .and_then(Value::as_str)
            .unwrap_or("string"),
        Some(Value::String(t)) => t.as_str(),
        _ => "string",
    };
    match ty {
        "object" => {
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut out = Map::new();
            let mut kinds = Vec::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    let carries = id_for(k, ids);
                    let first_of_kind = carries.as_ref().is_some_and(|c| !kinds.contains(c));
                    if required.contains(&k.as_str()) || first_of_kind {
                        if let Some(c) = carries {
                            kinds.push(c);
                        }
                        out.insert(k.clone(), instance(doc, v, k, ids));
                    }
                }
            }
            Value::Object(out)
        }
        "array" => json!([instance(doc, &s["items"], name, ids)]),
        "integer" | "number" => json!(s.get("minimum").and_then(Value::as_u64).unwrap_or(1)),
        "boolean" => json!(false),
        _ => {
            if let Some(id) = id_for(name, ids) {
                json!(id)
            } else if name.contains("Date") || name == "end" || name == "start" {
                json!("2030-01-01")
            } else if name == "services" || name == "service" {
                json!("wifi")
            } else if name == "sku" || name == "skus" {
                json!("LIC-AP")
            } else {
                json!("x")
            }
        }
    }
}

/// One request generated from the document.
#[derive(Debug)]
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

fn calls(doc: &Value, ids: &Ids) -> Vec<(String, Call)> {
    let mut out = Vec::new();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        if !template.starts_with("/api/") {
            continue;
        }
        for (method, op) in ops.as_object().unwrap() {
            let mut path = template.clone();
            let mut query = Vec::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let value = if p["in"] == "path" && name == "assignmentId" {
                    // A Snow assignment's id is its target's, by the kind before it.
                    let what = template.split("/{assignmentId}").next().unwrap();
                    Some(
                        match what.rsplit('/').next().unwrap() {
                            "computers" => ids.computer,
                            "datacenters" => ids.datacenter,
                            "organizations" | "site" => ids.customer,
                            "users" => ids.user,
                            other => panic!("an assignment of {other}: teach the walk what it is"),
                        }
                        .to_string(),
                    )
                } else if p["in"] == "path" && name == "id" {
                    // An `{id}` names what the segment before it lists.
                    let what = template.split("/{id}").next().unwrap();
                    Some(
                        match what.rsplit('/').next().unwrap() {
                            "customers" => ids.customer,
                            "subscriptions" => ids.subscription,
                            "licenses" => ids.license,
                            "delegations" => ids.delegation,
                            other => panic!("an {{id}} of {other}: teach the walk what it is"),
                        }
                        .to_string(),
                    )
                } else if p["in"] == "path" && name == "sku" {
                    // The catalogue is not a tenant's: the same existing SKU for both.
                    Some("LIC-AP".to_string())
                } else {
                    id_for(name, ids)
                };
                match (p["in"].as_str().unwrap(), value) {
                    ("path", Some(v)) => path = path.replace(&format!("{{{name}}}"), &v),
                    ("path", None) => panic!("path parameter {name} of {template}: no id for it"),
                    ("query", Some(v)) => query.push(format!("{name}={v}")),
                    _ => {}
                }
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let body = op["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|s| instance(doc, &Value::Object(s.clone()), "", ids));
            out.push((
                format!("{} {template}", method.to_uppercase()),
                Call {
                    method: method.to_uppercase().parse().unwrap(),
                    path,
                    body,
                },
            ));
        }
    }
    out
}

/// What `text` says with `from`'s ids written as `to`'s.
fn swap(text: &str, from: &Ids, to: &Ids) -> String {
    text.replace(from.license, to.license)
        .replace(from.delegation, to.delegation)
        .replace(from.computer, to.computer)
        .replace(from.datacenter, to.datacenter)
        .replace(from.user, to.user)
        .replace(from.subscription, to.subscription)
        .replace(from.claim_key, to.claim_key)
        .replace(from.device, to.device)
        .replace(from.customer, to.customer)
}

struct Lab {
    stub: Arc<StubHandle>,
    server: AdminServer,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Lab {
    async fn call(&self, token: &str, c: &Call) -> (u16, Value) {
        let mut req = self
            .http
            .request(c.method.clone(), format!("{}{}", self.server.url(), c.path))
            .bearer_auth(token);
        if let Some(b) = &c.body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let c = Call {
            method: reqwest::Method::GET,
            path: path.into(),
            body: None,
        };
        self.call(token, &c).await
    }

    async fn report(&self, tenant: &str, device: &str) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[device.len() as u8 + 40; 32]);
        let r = DeviceReport {
            device: DeviceId::new(device).unwrap(),
            tenant: TenantId::new(tenant).unwrap(),
            device_key: PublicKey::from(&key.verifying_key()),
            model: "M-1".into(),
            serial: format!("SN-{device}"),
            product_class: "ap".into(),
            firmware_version: "1.0".into(),
            agent_version: "0.1.0".into(),
            vm_count: None,
            services_wanted: [svc("wifi")].into(),
            bundle_seq: 0,
            clock: now(),
            uptime: 1,
            clock_rollback: false,
        };
        self.stub
            .apply(move |e, now| {
                let fx = e
                    .handle_report(&r, now)
                    .map_err(|_| licd_stub::engine::EngineError::SeqExhausted)?;
                Ok(((), fx))
            })
            .await
            .unwrap();
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// MSP `msp`, tenants `tenant-a` and `tenant-b`, each with a subscription of its own (b's
/// claimed with a claim key) and a device holding a seat; tokens: the MSP's admin token,
/// tenant-a's admin and read tokens.
async fn lab() -> (Lab, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(TOKEN_STORE_FILE);
    let msp = token::create(&store, "msp", TokenKind::Admin, 1).unwrap();
    let a = tid("tenant-a");
    let a_admin = token::create_scoped(&store, "a-admin", TokenKind::Admin, Some(&a), 1).unwrap();
    let a_read = token::create_scoped(&store, "a-read", TokenKind::Read, Some(&a), 1).unwrap();
    let stub = Arc::new(Stub::start(test_config()).await.unwrap());
    stub.add_customer(tid("msp"), "MSP", CustomerKind::Msp)
        .await
        .unwrap();
    for t in ["tenant-a", "tenant-b"] {
        stub.add_customer(tid(t), t, CustomerKind::Tenant)
            .await
            .unwrap();
    }
    stub.add_catalog_entry(CatalogEntry {
        sku: Sku::new("LIC-AP").unwrap(),
        name: "AP".into(),
        service: svc("wifi"),
        product_class: "ap".into(),
        vms_per_seat: None,
    })
    .await
    .unwrap();
    for (id, owner, key) in [
        ("SUB-A", Some("tenant-a"), None),
        ("SUB-B", None, Some("KEY-B")),
        ("SUB-MSP", Some("msp"), None),
    ] {
        stub.add_subscription(Subscription {
            id: LicenseId::new(id).unwrap(),
            name: id.into(),
            owner: owner.map(tid),
            claim_key: key.map(String::from),
            start: now() - 60,
            // Long enough to back tenant-b's site delegation for its whole window.
            end: now() + 40 * 86_400,
            entitlements: vec![Entitlement {
                sku: Sku::new("LIC-AP").unwrap(),
                limit: 5,
            }],
        })
        .await
        .unwrap();
    }
    stub.claim("KEY-B", &tid("tenant-b"), false).await.unwrap();
    stub.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
        .await
        .unwrap();
    let mut config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), store);
    config.rate_limit = RateLimit {
        burst: 10_000,
        per_second: 10_000,
    };
    let server = AdminServer::start(stub.clone(), config).await.unwrap();
    let lab = Lab {
        stub,
        server,
        http: reqwest::Client::new(),
        _dir: dir,
    };
    lab.report("tenant-a", "ap-a1").await;
    lab.report("tenant-b", "ap-b1").await;
    // Tenant-b's Snow assignments of each kind, and its host placed in a datacenter.
    let lic = "/api/v1/licenses/SUB-B:LIC-AP/assignments";
    for (path, body) in [
        (
            "/datacenters",
            json!({"datacenterId": "dc-b", "quantity": 1}),
        ),
        (
            "/organizations",
            json!({"organizationId": "tenant-b", "quantity": 1}),
        ),
        ("/site", json!({"organizationId": "tenant-b"})),
        ("/users", json!({"userId": "user-b"})),
    ] {
        let call = Call {
            method: reqwest::Method::POST,
            path: format!("{lic}{path}"),
            body: Some(body),
        };
        let (s, b) = lab.call(&msp, &call).await;
        assert_eq!(s, 201, "{path}: {b}");
    }
    let call = Call {
        method: reqwest::Method::PUT,
        path: "/api/v1/devices/tenant-b/ap-b1/datacenter".into(),
        body: Some(json!({"datacenterId": "dc-b"})),
    };
    assert_eq!(lab.call(&msp, &call).await.0, 200);
    // Tenant-b's site delegation (issue 23): one seat reserved for its relay.
    let call = Call {
        method: reqwest::Method::POST,
        path: "/api/v1/delegations".into(),
        body: Some(json!({
            "relayKey": PublicKey::from(
                &ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
            )
            .to_hex(),
            "customerId": "tenant-b",
            "siteId": "plant-b",
            "pools": [{"service": "wifi", "seats": 1}],
            "validDays": 1
        })),
    };
    let (s, b) = lab.call(&msp, &call).await;
    assert_eq!((s, b["id"].as_str()), (201, Some(B.delegation)), "{b}");
    (lab, msp, a_admin, a_read)
}

/// What tenant-b has, as the MSP sees it.
async fn snapshot(lab: &Lab, msp: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/customers/tenant-b",
        "/api/v1/devices/tenant-b/ap-b1",
        "/api/v1/subscriptions/SUB-B",
        "/api/v1/licenses/SUB-B:LIC-AP/assignments",
        "/api/v1/licenses/SUB-B:LIC-AP/assignments/computers",
        "/api/v1/licenses/SUB-B:LIC-AP/assignments/datacenters",
        "/api/v1/licenses/SUB-B:LIC-AP/assignments/organizations",
        "/api/v1/licenses/SUB-B:LIC-AP/assignments/site",
        "/api/v1/licenses/SUB-B:LIC-AP/assignments/users",
        "/api/v1/devices/tenant-b/ap-b1/datacenter",
        "/api/v1/auto-licensing",
        "/api/v1/delegations/dlg-1",
    ] {
        let (status, body) = lab.get(msp, path).await;
        assert_eq!(status, 200, "the MSP sees {path}: {body}");
        out.push(body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_finds_another_tenant_s_objects_exactly_as_missing_ones_on_every_operation()
{
    let (lab, msp, a_admin, a_read) = lab().await;
    let (_, doc) = lab
        .call(
            &msp,
            &Call {
                method: reqwest::Method::GET,
                path: "/openapi.json".into(),
                body: None,
            },
        )
        .await;
    let committed: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert!(
        doc == committed,
        "the server serves another document than docs/openapi.json (regenerate it)"
    );
    let before = snapshot(&lab, &msp).await;
    // The seat of tenant-b's device comes from its own subscription: the snapshot covers it.
    assert_eq!(
        before[3]["items"][0]["computerId"], "ap-b1",
        "{}",
        before[3]
    );

    let others = calls(&doc, &B);
    let missing = calls(&doc, &Z);
    assert!(others.len() >= 25, "every operation: {}", others.len());
    let mut walked = 0;
    for token in [&a_read, &a_admin] {
        for ((op, other), (_, ghost)) in others.iter().zip(&missing) {
            let (s_other, b_other) = lab.call(token, other).await;
            let (s_ghost, b_ghost) = lab.call(token, ghost).await;
            let text = b_other.to_string();
            assert_eq!(
                s_other, s_ghost,
                "{op}: another tenant's ids {} vs missing ids {}: {b_other} vs {b_ghost}",
                other.path, ghost.path
            );
            for id in [B.customer, B.device, B.subscription, B.claim_key] {
                // An answer may repeat an id the request named, as it does for a missing one.
                let named = other.path.contains(id)
                    || other
                        .body
                        .as_ref()
                        .is_some_and(|b| b.to_string().contains(id));
                assert!(
                    !text.contains(id) || named,
                    "{op}: the answer names {id}: {text}"
                );
            }
            if s_other >= 400 {
                assert_eq!(
                    b_other["error"]["code"], b_ghost["error"]["code"],
                    "{op}: {b_other} vs {b_ghost}"
                );
                assert_eq!(
                    swap(&b_other["error"]["message"].to_string(), &B, &Z),
                    b_ghost["error"]["message"].to_string(),
                    "{op}: the message tells them apart"
                );
            } else {
                assert_eq!(
                    swap(&text, &B, &Z),
                    b_ghost.to_string(),
                    "{op}: the answer tells them apart"
                );
            }
            walked += 1;
        }
    }
    assert_eq!(walked, 2 * others.len());

    // Nothing of tenant-b's changed (no reissue, no unassign, no rename, no bind).
    assert_eq!(snapshot(&lab, &msp).await, before);

    // The tenant's own objects are there for it, and the MSP's answers name tenant-b's: the
    // 404s above are the scope's, not a wrong id.
    let (s, list) = lab.get(&a_admin, "/api/v1/devices").await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["deviceId"], "ap-a1", "{list}");
    let (s, subs) = lab.get(&a_admin, "/api/v1/subscriptions").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = subs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["SUB-A"]);
    let (s, all) = lab.get(&msp, "/api/v1/customers").await;
    assert_eq!(s, 200);
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    for call in calls(&doc, &B)
        .iter()
        .filter(|(_, c)| c.method == reqwest::Method::GET)
    {
        let (s, body) = lab.call(&msp, &call.1).await;
        assert_eq!(s, 200, "the MSP: {}: {body}", call.0);
    }

    lab.server.shutdown().await;
    if let Ok(stub) = Arc::try_unwrap(lab.stub) {
        stub.shutdown().await;
    }
}

/// A tenant admin token changes its own customer's things: it unassigns its own device's seat
/// (the device's next bundle withholds the service) and cannot reach past its customer with an
/// unassign for everyone (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_changes_its_own_devices_and_no_one_else_s() {
    let (lab, msp, a_admin, _) = lab().await;
    let post = |path: &str, body: Value| Call {
        method: reqwest::Method::POST,
        path: path.into(),
        body: Some(body),
    };
    let (s, body) = lab
        .call(
            &a_admin,
            &post(
                "/api/v1/auto-licensing/unassign",
                json!({"services": ["wifi"]}),
            ),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("include_customers"),
        "{body}"
    );
    let (s, body) = lab
        .call(
            &a_admin,
            &post(
                "/api/v1/auto-licensing/unassign",
                json!({"services": ["wifi"], "include_customers": ["tenant-a"]}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["seats_released"], 1, "{body}");
    let (_, a) = lab.get(&msp, "/api/v1/devices/tenant-a/ap-a1").await;
    let (_, b) = lab.get(&msp, "/api/v1/devices/tenant-b/ap-b1").await;
    let text = a.to_string();
    assert!(text.contains("nassigned"), "{a}");
    assert!(
        b.to_string().contains("SUB-B"),
        "tenant-b keeps its seat: {b}"
    );
    lab.server.shutdown().await;
    if let Ok(stub) = Arc::try_unwrap(lab.stub) {
        stub.shutdown().await;
    }
}
