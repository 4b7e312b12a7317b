//! Admin API tests: every endpoint over real HTTP against a running stub (embedded broker,
//! in-memory ledger, admin server on 127.0.0.1:0), and every error code the API uses.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{now, svc, test_config};
use licd_protocol::{DeviceId, DeviceReport, PublicKey, TenantId};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer, RateLimit};
use licd_stub::{Stub, StubHandle};
use serde_json::{json, Value};

struct Lab {
    stub: Arc<StubHandle>,
    server: AdminServer,
    http: reqwest::Client,
    admin: String,
    read: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut AdminConfig)) -> Self {
        Self::start_full(|_| {}, tweak).await
    }

    async fn start_full(
        stub_tweak: impl FnOnce(&mut licd_stub::StubConfig),
        tweak: impl FnOnce(&mut AdminConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TOKEN_STORE_FILE);
        let admin = token::create(&store, "ops", TokenKind::Admin, 1).unwrap();
        let read = token::create(&store, "viewer", TokenKind::Read, 1).unwrap();
        let mut stub_config = test_config();
        stub_tweak(&mut stub_config);
        let stub = Arc::new(Stub::start(stub_config).await.unwrap());
        let mut config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), store);
        tweak(&mut config);
        let server = AdminServer::start(stub.clone(), config).await.unwrap();
        Self {
            stub,
            server,
            http: reqwest::Client::new(),
            admin,
            read,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v, headers)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self
            .call(reqwest::Method::GET, path, Some(&self.admin), None)
            .await;
        (s, v)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .call(reqwest::Method::POST, path, Some(&self.admin), Some(body))
            .await;
        (s, v)
    }

    /// MSP `msp`, tenants `acme` and `beta`, SKUs `LIC-AP` (wifi, ap) and `LIC-HV` (hv,
    /// server, 4 VMs per seat), subscription `SUB-1` of the MSP with 2 AP seats and 1 HV seat.
    async fn seed(&self) {
        for (id, kind) in [("msp", "msp"), ("acme", "tenant"), ("beta", "tenant")] {
            let (s, v) = self
                .post(
                    "/api/v1/customers",
                    json!({"id": id, "name": id.to_uppercase(), "kind": kind}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        let (s, v) = self
            .post(
                "/api/v1/entitlements",
                json!({"sku": "LIC-AP", "service": "wifi", "productClass": "ap"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, _) = self
            .post(
                "/api/v1/entitlements",
                json!({"sku": "LIC-HV", "service": "hv", "productClass": "server", "vmsPerSeat": 4}),
            )
            .await;
        assert_eq!(s, 201);
        let (s, v) = self
            .post(
                "/api/v1/subscriptions",
                json!({"subscriptionId": "SUB-1", "name": "Lab MSP", "customerId": "msp",
                       "startDate": "2020-01-01T00:00:00Z", "endDate": "2099-01-01",
                       "entitlements": [{"sku": "LIC-AP", "limit": 2}, {"sku": "LIC-HV", "limit": 1}]}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["status"], "active");
    }

    /// A device report applied straight to the engine (as the MQTT worker would).
    async fn report(
        &self,
        tenant: &str,
        device: &str,
        class: &str,
        services: &[&str],
        vms: Option<u32>,
    ) {
        let seed = device
            .bytes()
            .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let r = DeviceReport {
            device: DeviceId::new(device).unwrap(),
            tenant: TenantId::new(tenant).unwrap(),
            device_key: PublicKey::from(&key.verifying_key()),
            model: "M-1".into(),
            serial: format!("SN-{device}"),
            product_class: class.into(),
            firmware_version: "1.0".into(),
            agent_version: "0.1.0".into(),
            vm_count: vms,
            services_wanted: services.iter().map(|s| svc(s)).collect(),
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

    async fn stop(self) {
        self.server.shutdown().await;
        if let Ok(stub) = Arc::try_unwrap(self.stub) {
            stub.shutdown().await;
        }
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_and_read_tokens_get_403_on_writes() {
    let lab = Lab::start().await;
    let (s, v, h) = lab
        .call(reqwest::Method::GET, "/api/v1/customers", None, None)
        .await;
    assert_eq!(s, 401);
    assert_eq!(code(&v), "unauthorized");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("token create"));
    assert!(h.contains_key("x-request-id"));
    let (s, _, _) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/customers",
            Some("lst_admin_nope"),
            None,
        )
        .await;
    assert_eq!(s, 401);
    let (s, v, _) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/customers",
            Some(&lab.read),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([]));
    let (s, v, _) = lab
        .call(
            reqwest::Method::POST,
            "/api/v1/customers",
            Some(&lab.read),
            Some(json!({"id": "x"})),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(code(&v), "forbidden");
    // Meta routes need no token; unknown paths are a JSON 404.
    let (s, v, _) = lab.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v, _) = lab.call(reqwest::Method::GET, "/nope", None, None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    lab.stop().await;
}

/// Issue 16 item 10 (server part): a method a path does not take is a JSON 405 with `Allow`,
/// whatever the token (none, unknown, read, admin), decided before the token is checked; a
/// path segment that does not decode is a JSON 400. Every error has the JSON shape.
#[tokio::test]
async fn an_unsupported_method_is_a_json_405_whatever_the_token() {
    let lab = Lab::start().await;
    let bogus = "lst_admin_nope".to_string();
    for token in [None, Some(&bogus), Some(&lab.read), Some(&lab.admin)] {
        for (method, path) in [
            (reqwest::Method::PUT, "/api/v1/customers"),
            (reqwest::Method::DELETE, "/api/v1/subscriptions"),
            (reqwest::Method::GET, "/api/v1/licenses/bulkUpdate"),
            (reqwest::Method::OPTIONS, "/api/v1/devices"),
            (reqwest::Method::POST, "/healthz"),
            (reqwest::Method::DELETE, "/openapi.json"),
        ] {
            let (s, v, h) = lab
                .call(method.clone(), path, token.map(String::as_str), None)
                .await;
            assert_eq!(
                (s, code(&v)),
                (405, "method_not_allowed"),
                "{method} {path}: {v}"
            );
            assert!(h.contains_key("allow"), "{method} {path}");
            assert!(h.contains_key("x-request-id"));
        }
    }
    let (s, v) = lab.get("/api/v1/customers/%FF").await;
    assert_eq!((s, code(&v)), (400, "invalid_request"), "{v}");
    lab.stop().await;
}

#[tokio::test]
async fn a_token_made_while_the_api_runs_works_at_once() {
    let lab = Lab::start().await;
    let store = lab._dir.path().join(TOKEN_STORE_FILE);
    let t = token::create(&store, "late", TokenKind::Read, 2).unwrap();
    let (s, _, _) = lab
        .call(reqwest::Method::GET, "/api/v1/customers", Some(&t), None)
        .await;
    assert_eq!(s, 200);
    lab.stop().await;
}

#[tokio::test]
async fn a_token_past_its_bucket_gets_429_with_retry_after() {
    let lab = Lab::start_with(|c| {
        c.rate_limit = RateLimit {
            burst: 3,
            per_second: 0,
        }
    })
    .await;
    for _ in 0..3 {
        assert_eq!(lab.get("/api/v1/customers").await.0, 200);
    }
    let (s, v, h) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/customers",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (429, "rate_limited"));
    assert!(h.contains_key("retry-after"));
    // Another token has its own bucket.
    let (s, _, _) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/customers",
            Some(&lab.read),
            None,
        )
        .await;
    assert_eq!(s, 200);
    lab.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_bad_json_400() {
    let lab = Lab::start_with(|c| c.body_limit = 1024).await;
    let big = "x".repeat(4096);
    let (s, v) = lab
        .post("/api/v1/customers", json!({"id": "a", "name": big}))
        .await;
    assert_eq!((s, code(&v)), (413, "payload_too_large"));
    let resp = lab
        .http
        .post(lab.url("/api/v1/customers"))
        .bearer_auth(&lab.admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "invalid_request");
    lab.stop().await;
}

#[tokio::test]
async fn customers_are_created_listed_shown_renamed_and_removed() {
    let lab = Lab::start().await;
    lab.seed().await;
    let (s, v) = lab.get("/api/v1/customers").await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (s, v) = lab.get("/api/v1/customers/msp").await;
    assert_eq!((s, v["kind"].as_str()), (200, Some("msp")));
    assert_eq!(v["subscriptions"], 1);
    let (s, v, _) = lab
        .call(
            reqwest::Method::PATCH,
            "/api/v1/customers/beta",
            Some(&lab.admin),
            Some(json!({"name": "Beta Corp"})),
        )
        .await;
    assert_eq!((s, v["name"].as_str()), (200, Some("Beta Corp")));
    // 409: duplicate id, second MSP, removing a customer in use.
    let (s, v) = lab.post("/api/v1/customers", json!({"id": "beta"})).await;
    assert_eq!((s, code(&v)), (409, "conflict"));
    let (s, _) = lab
        .post("/api/v1/customers", json!({"id": "msp2", "kind": "msp"}))
        .await;
    assert_eq!(s, 409);
    let (s, _, _) = lab
        .call(
            reqwest::Method::DELETE,
            "/api/v1/customers/msp",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(s, 409);
    // 400: malformed id.
    let (s, v) = lab.post("/api/v1/customers", json!({"id": "bad/id"})).await;
    assert_eq!((s, code(&v)), (400, "invalid_request"));
    let (s, _, _) = lab
        .call(
            reqwest::Method::DELETE,
            "/api/v1/customers/beta",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = lab.get("/api/v1/customers/beta").await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    lab.stop().await;
}

#[tokio::test]
async fn entitlements_catalogue_lists_and_filters_skus() {
    let lab = Lab::start().await;
    lab.seed().await;
    let (s, v) = lab.get("/api/v1/entitlements").await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (_, v) = lab.get("/api/v1/entitlements?skus[]=LIC-HV").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["productType"], "server");
    assert_eq!(v[0]["vmsPerSeat"], 4);
    assert_eq!(v[0]["isAddOn"], false);
    let (s, _) = lab
        .post(
            "/api/v1/entitlements",
            json!({"sku": "LIC-AP", "service": "wifi", "productClass": "ap"}),
        )
        .await;
    assert_eq!(s, 409);
    lab.stop().await;
}

#[tokio::test]
async fn subscriptions_filter_and_page_with_cursors_and_link_headers() {
    let lab = Lab::start().await;
    lab.seed().await;
    for i in 2..=7 {
        let (s, v) = lab
            .post(
                "/api/v1/subscriptions",
                json!({"subscriptionId": format!("SUB-{i}"), "name": format!("Extra {i}"),
                       "customerId": if i % 2 == 0 { "acme" } else { "beta" },
                       "startDate": format!("202{i}-01-01"), "endDate": "2099-01-01T00:00:00Z",
                       "entitlements": [{"sku": "LIC-AP", "limit": i}]}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v, h) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/subscriptions?perPage=3",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["SUB-1", "SUB-2", "SUB-3"]);
    let link = h["link"].to_str().unwrap();
    assert!(link.contains("rel=first") && link.contains("startingAfter=SUB-3>; rel=next"));
    let (_, v, h) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/subscriptions?perPage=3&startingAfter=SUB-6",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(v[0]["subscriptionId"], "SUB-7");
    let link = h["link"].to_str().unwrap();
    assert!(link.contains("endingBefore=SUB-7>; rel=prev") && !link.contains("rel=next"));
    let (_, v, _) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/subscriptions?perPage=3&endingBefore=SUB-4",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(v.as_array().unwrap().len(), 3);
    // Filters.
    let (_, v) = lab.get("/api/v1/subscriptions?customerIds=beta").await;
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (_, v) = lab
        .get("/api/v1/subscriptions?statuses[]=active&productTypes[]=server")
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (_, v) = lab.get("/api/v1/subscriptions?skus=LIC-HV").await;
    assert_eq!(v[0]["subscriptionId"], "SUB-1");
    let (_, v) = lab.get("/api/v1/subscriptions?name=extra%205").await;
    assert_eq!(v[0]["subscriptionId"], "SUB-5");
    let (_, v) = lab
        .get("/api/v1/subscriptions?startDate[gte]=2024-01-01&startDate[lt]=2026-01-01")
        .await;
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["SUB-4", "SUB-5"]);
    let (_, v) = lab
        .get("/api/v1/subscriptions?endDate[lt]=2030-01-01")
        .await;
    assert_eq!(v, json!([]));
    // 400s.
    for bad in [
        "perPage=2",
        "perPage=1001",
        "statuses=bogus",
        "startDate[gte]=yesterday",
    ] {
        let (s, v) = lab.get(&format!("/api/v1/subscriptions?{bad}")).await;
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{bad}");
    }
    // Detail and 404.
    let (s, v) = lab.get("/api/v1/subscriptions/SUB-1").await;
    assert_eq!(s, 200);
    assert_eq!(v["counts"]["seats"]["limit"], 3);
    assert_eq!(v["startDate"], "2020-01-01T00:00:00Z");
    assert_eq!(lab.get("/api/v1/subscriptions/NOPE").await.0, 404);
    // Create: 404 unknown SKU, 409 existing id, 400 missing owner and key.
    let base = json!({"subscriptionId": "SUB-X", "customerId": "acme", "endDate": "2099-01-01",
                      "entitlements": [{"sku": "LIC-NONE", "limit": 1}]});
    assert_eq!(lab.post("/api/v1/subscriptions", base).await.0, 404);
    let dup = json!({"subscriptionId": "SUB-1", "customerId": "acme", "endDate": "2099-01-01",
                     "entitlements": []});
    assert_eq!(lab.post("/api/v1/subscriptions", dup).await.0, 409);
    let neither = json!({"subscriptionId": "SUB-Y", "endDate": "2099-01-01", "entitlements": []});
    assert_eq!(lab.post("/api/v1/subscriptions", neither).await.0, 400);
    lab.stop().await;
}

/// Issue 16 item 1: a cursor at or after the last id (or before the first) used to index past
/// the end of the list and panic, killing the controller. Each is an empty page with links that
/// lead back, and the stub keeps answering.
#[tokio::test]
async fn a_cursor_past_either_end_is_an_empty_page_not_a_crash() {
    let lab = Lab::start().await;
    lab.seed().await;
    for i in 2..=7 {
        let (s, v) = lab
            .post(
                "/api/v1/subscriptions",
                json!({"subscriptionId": format!("SUB-{i}"), "customerId": "acme",
                       "endDate": "2099-01-01", "entitlements": []}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    for q in [
        "startingAfter=zzz",
        "startingAfter=SUB-7",
        "perPage=3&startingAfter=SUB-7",
        "subscriptionIds=SUB-1&startingAfter=SUB-1",
        "subscriptionIds=SUB-1,SUB-2&startingAfter=SUB-2&perPage=3",
        "endingBefore=AAA",
        "endingBefore=SUB-1",
        "startingAfter=SUB-7&endingBefore=SUB-1",
    ] {
        let (s, v, h) = lab
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/subscriptions?{q}"),
                Some(&lab.read),
                None,
            )
            .await;
        assert_eq!((s, v.clone()), (200, json!([])), "{q}");
        let link = h["link"].to_str().unwrap();
        assert!(
            link.contains("rel=first") && !link.contains("rel=next"),
            "{q}: {link}"
        );
    }
    // Past the end, `prev` leads to the last page.
    let (_, _, h) = lab
        .call(
            reqwest::Method::GET,
            "/api/v1/subscriptions?perPage=3&startingAfter=zzz",
            Some(&lab.read),
            None,
        )
        .await;
    let link = h["link"].to_str().unwrap();
    assert!(link.contains("startingAfter=SUB-4>; rel=prev"), "{link}");
    // Between two ids that are neighbours: empty too; the stub still answers.
    let (s, v) = lab
        .get("/api/v1/subscriptions?startingAfter=SUB-2&endingBefore=SUB-3")
        .await;
    assert_eq!((s, v), (200, json!([])));
    assert_eq!(lab.get("/api/v1/customers").await.0, 200);
    lab.stop().await;
}

#[tokio::test]
async fn a_claim_key_validates_claims_once_then_conflicts() {
    let lab = Lab::start().await;
    lab.seed().await;
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-C", "claimKey": "Z2AA-BBBB-CCCC", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": 5}]}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (201, Some("unclaimed")));
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/claimKey/validate",
            json!({"claimKey": "Z2AA-BBBB-CCCC"}),
        )
        .await;
    assert_eq!((s, v["subscriptionId"].as_str()), (200, Some("SUB-C")));
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/claim?validate=true",
            json!({"claimKey": "Z2AA-BBBB-CCCC", "customerId": "acme"}),
        )
        .await;
    assert_eq!((s, v["customerId"].as_str()), (200, Some("acme")));
    assert_eq!(
        v["status"], "active",
        "the status it would have once claimed"
    );
    let (_, v) = lab.get("/api/v1/subscriptions/SUB-C").await;
    assert_eq!(v["status"], "unclaimed", "validate changed nothing");
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/claim",
            json!({"claimKey": "Z2AA-BBBB-CCCC", "customerId": "acme"}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("active")));
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/claim",
            json!({"claimKey": "Z2AA-BBBB-CCCC", "customerId": "beta"}),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"));
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions/claimKey/validate",
            json!({"claimKey": "Z2AA-BBBB-CCCC"}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions/claim",
            json!({"claimKey": "nope", "customerId": "acme"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = lab
        .post("/api/v1/subscriptions/claim", json!({"customerId": "acme"}))
        .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("claimKey"));
    lab.stop().await;
}

#[tokio::test]
async fn auto_licensing_needs_services_pauses_without_seats_and_unassigns() {
    let lab = Lab::start().await;
    lab.seed().await;
    // 400 naming services (missing and empty), 404 unknown customer or service.
    let (s, v) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"include_customers": ["acme"]}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_request"));
    assert!(v["error"]["message"].as_str().unwrap().contains("services"));
    let (s, v) = lab
        .post("/api/v1/auto-licensing/unassign", json!({"services": []}))
        .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("services"));
    let (s, _) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi"], "include_customers": ["nobody"]}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["fax"]}),
        )
        .await;
    assert_eq!(s, 404);

    // Three APs want wifi, two seats: paused.
    for d in ["ap1", "ap2", "ap3"] {
        lab.report("acme", d, "ap", &["wifi"], None).await;
    }
    let (s, v) = lab
        .post(
            "/api/v1/auto-licensing/enable?validate=true",
            json!({"services": ["wifi"], "exclude_customers": ["beta"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["paused"], json!(["wifi"]));
    assert_eq!(v["insufficient_entitlements"][0]["quantity"], 1);
    assert_eq!(v["validate"], true);
    assert_eq!(lab.get("/api/v1/auto-licensing").await.1, json!([]));

    let (s, v) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi"]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["paused"], json!(["wifi"]));
    assert_eq!(v["inherit_to_new_tenants"], true);
    let (_, v) = lab.get("/api/v1/auto-licensing").await;
    assert_eq!(v[0]["paused"], true);
    let (_, v) = lab.get("/api/v1/compliance?customerIds=acme").await;
    assert_eq!(v[0]["compliant"], false);
    assert_eq!(v[0]["pausedServices"], json!(["wifi"]));
    assert_eq!(
        v[0]["violations"]["byProductClass"][0]["missing"]["entitlements"][0]["quantity"],
        3
    );
    assert!(v[0]["violations"]["byProductClass"][0]["gracePeriodEndsAt"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // One device leaves; at the next change (enable again) the pause lifts and both
    // remaining devices get seats.
    lab.report("acme", "ap3", "ap", &[], None).await;
    let (s, v) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi"]}),
        )
        .await;
    assert_eq!((s, v["paused"].clone()), (200, json!([])));
    assert_eq!(v["seats_assigned"], 2);
    let (_, v) = lab.get("/api/v1/compliance").await;
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(
        v.as_array().unwrap().iter().all(|c| c["compliant"] == true),
        "{v}"
    );

    let (s, v) = lab
        .post(
            "/api/v1/auto-licensing/unassign",
            json!({"services": ["wifi"], "include_customers": ["acme"]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["seats_released"], 2);
    assert_eq!(v["customers"], json!(["acme"]));
    let (_, v) = lab.get("/api/v1/devices/acme/ap1").await;
    assert_eq!(v["services"][0]["reason"], "Unassigned");
    lab.stop().await;
}

/// Issue 16 item 3: every request body refuses a field it does not know with a 400 naming it
/// (a typo such as `include_customer` used to be ignored, widening the request to every
/// customer). Driven by the OpenAPI document, so a new body is covered when it is added.
#[tokio::test]
async fn every_request_body_refuses_an_unknown_field_by_name() {
    let lab = Lab::start().await;
    lab.seed().await;
    let doc: Value = serde_json::from_str(&licd_stub::admin::openapi::json()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // JSON bodies only: a file upload (`application/octet-stream`, licensing by file)
            // has no fields to mistype; its garbage is a 422 (`offline_files`, the fuzz gate).
            if op["requestBody"]["content"]
                .get("application/json")
                .is_none()
            {
                continue;
            }
            let path = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // A list body (Snow's replace-all) gets the typo in its item.
            let body =
                if op["requestBody"]["content"]["application/json"]["schema"]["type"] == "array" {
                    json!([{"zz_typo": true}])
                } else {
                    json!({"zz_typo": true})
                };
            let (s, v, _) = lab
                .call(method.clone(), &path, Some(&lab.admin), Some(body))
                .await;
            assert_eq!(
                (s, code(&v)),
                (400, "invalid_request"),
                "{method} {path}: {v}"
            );
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("zz_typo"), "{method} {path}: {msg}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} bodies in the document");
    // The typos of the issue, and typos inside nested objects.
    for (path, body, field) in [
        (
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi"], "include_customer": ["acme"]}),
            "include_customer",
        ),
        (
            "/api/v1/auto-licensing/unassign",
            json!({"services": ["wifi"], "exclude_customer": ["acme"]}),
            "exclude_customer",
        ),
        (
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "All", "body": {"quantity": 1, "qty": 2}}),
            "qty",
        ),
        (
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-T", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": 1, "seats": 9}]}),
            "seats",
        ),
    ] {
        let (s, v) = lab.post(path, body).await;
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    assert_eq!(lab.get("/api/v1/auto-licensing").await.1, json!([]));
    assert_eq!(lab.get("/api/v1/subscriptions/SUB-T").await.0, 404);
    // Ids with scope All would be ignored, changing every license: refused too.
    let (s, v) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "All", "ids": ["SUB-1:LIC-HV"], "body": {"quantity": 7}}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_request"), "{v}");
    let (_, v) = lab.get("/api/v1/licenses").await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["quantity"] != 7),
        "{v}"
    );
    lab.stop().await;
}

/// Issue 16 item 3: seed 000 defines `include_customers` and `exclude_customers` each alone;
/// both together, or an empty list (which would mean every customer), is a 400 that changes
/// nothing.
#[tokio::test]
async fn include_with_exclude_or_an_empty_list_is_refused() {
    let lab = Lab::start().await;
    lab.seed().await;
    for path in [
        "/api/v1/auto-licensing/enable",
        "/api/v1/auto-licensing/enable?validate=true",
        "/api/v1/auto-licensing/unassign",
    ] {
        for (body, says) in [
            (
                json!({"services": ["wifi"], "include_customers": ["acme"],
                       "exclude_customers": ["beta"]}),
                "not both",
            ),
            (
                json!({"services": ["wifi"], "include_customers": []}),
                "include_customers must not be empty",
            ),
            (
                json!({"services": ["wifi"], "exclude_customers": []}),
                "exclude_customers must not be empty",
            ),
        ] {
            let (s, v) = lab.post(path, body).await;
            assert_eq!((s, code(&v)), (400, "invalid_request"), "{path}: {v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(says),
                "{v}"
            );
        }
    }
    assert_eq!(lab.get("/api/v1/auto-licensing").await.1, json!([]));
    lab.stop().await;
}

/// Issue 16 item 4, seed 000: "License assignment is not supported for the MSP owned
/// devices". Enabling for everyone, for all but a tenant, or naming the MSP licenses the
/// tenants' devices and not the MSP's (withheld `NotEntitled`); the MSP's count in the pause.
#[tokio::test]
async fn auto_licensing_never_licenses_the_msps_own_devices() {
    let lab = Lab::start().await;
    lab.seed().await;
    lab.report("msp", "m1", "ap", &["wifi"], None).await;
    lab.report("acme", "a1", "ap", &["wifi"], None).await;
    for body in [
        json!({"services": ["wifi"]}),
        json!({"services": ["wifi"], "exclude_customers": ["beta"]}),
        json!({"services": ["wifi"], "include_customers": ["msp", "acme"]}),
    ] {
        let (s, v) = lab
            .post("/api/v1/auto-licensing/enable", body.clone())
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["paused"], json!([]), "{body}: 2 seats cover both devices");
        let (_, m) = lab.get("/api/v1/devices/msp/m1").await;
        assert_eq!(m["services"][0]["state"], "withheld", "{body}: {m}");
        assert_eq!(m["services"][0]["reason"], "NotEntitled");
        let (_, a) = lab.get("/api/v1/devices/acme/a1").await;
        assert_eq!(a["services"][0]["state"], "granted", "{body}: {a}");
        let (_, sub) = lab.get("/api/v1/subscriptions/SUB-1").await;
        assert_eq!(sub["entitlements"][0]["seats"]["assigned"], 1);
    }
    // A third device wanting wifi: 3 devices counted (the MSP's too), 2 seats: paused.
    lab.report("beta", "b1", "ap", &["wifi"], None).await;
    let (_, v) = lab.get("/api/v1/auto-licensing").await;
    assert_eq!(v[0]["paused"], true, "{v}");
    lab.stop().await;
}

#[tokio::test]
async fn bind_validates_then_binds_a_tenant_to_another_customers_subscription() {
    let lab = Lab::start().await;
    lab.seed().await;
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-A", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": 1}]}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi"], "include_customers": ["beta"]}),
        )
        .await;
    assert_eq!(s, 200);
    lab.report("beta", "b1", "ap", &["wifi"], None).await;
    lab.report("beta", "b2", "ap", &["wifi"], None).await;
    lab.report("beta", "b3", "ap", &["wifi"], None).await;
    // b1 and b2 took the MSP's two seats; b3 and b4 wait (paused); SUB-A has one seat.
    lab.report("beta", "b4", "ap", &["wifi"], None).await;
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/SUB-A/bind?validate=true",
            json!({"customerIds": ["beta"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["errors"], json!(["Insufficient licenses"]));
    assert_eq!(
        v["insufficientEntitlements"],
        json!([{"sku": "LIC-AP", "quantity": 1}])
    );
    assert_eq!(v["customers"][0]["id"], "beta");
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/SUB-A/bind",
            json!({"customerIds": ["beta"]}),
        )
        .await;
    assert_eq!((s, v["validate"].as_bool()), (200, Some(false)));
    let (_, v) = lab.get("/api/v1/subscriptions/SUB-A").await;
    assert_eq!(v["boundCustomerIds"], json!(["beta"]));
    assert_eq!(v["counts"]["customers"], 2);
    let (_, v) = lab.get("/api/v1/subscriptions?customerIds=beta").await;
    assert_eq!(v[0]["subscriptionId"], "SUB-A");
    // Errors: 400 no customers, 404 unknown subscription/customer, 409 unclaimed.
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions/SUB-A/bind",
            json!({"customerIds": []}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions/NOPE/bind",
            json!({"customerIds": ["beta"]}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions/SUB-A/bind",
            json!({"customerIds": ["zz"]}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-U", "claimKey": "K1", "endDate": "2099-01-01",
                   "entitlements": []}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions/SUB-U/bind",
            json!({"customerIds": ["beta"]}),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"));
    lab.stop().await;
}

#[tokio::test]
async fn devices_list_show_and_reissue_with_vm_counts() {
    let lab = Lab::start().await;
    lab.seed().await;
    let (s, _) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi", "hv"]}),
        )
        .await;
    assert_eq!(s, 200);
    lab.report("acme", "ap1", "ap", &["wifi"], None).await;
    lab.report("acme", "host1", "server", &["hv"], Some(6))
        .await;
    lab.report("beta", "ap2", "ap", &["wifi"], None).await;
    let (s, v) = lab.get("/api/v1/devices").await;
    assert_eq!(s, 200);
    assert_eq!(v["pagination"]["total_items"], 3);
    let (_, v) = lab
        .get("/api/v1/devices?customerId=acme&page_size=1&page_number=2")
        .await;
    assert_eq!(v["items"][0]["deviceId"], "host1");
    assert_eq!(v["pagination"]["total_pages"], 2);
    assert!(v["_links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["rel"] == "prev"));
    let (_, v) = lab
        .get("/api/v1/devices?filter=productClass%20-eq%20%22server%22")
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (s, _) = lab.get("/api/v1/devices?filter=nope%20-eq%20%22x%22").await;
    assert_eq!(s, 400);

    let (s, v) = lab.get("/api/v1/devices/acme/host1").await;
    assert_eq!(s, 200);
    assert_eq!(v["vmCount"], 6);
    assert_eq!(v["serial"], "SN-host1");
    assert_eq!(v["services"][0]["state"], "granted");
    assert_eq!(v["services"][0]["vmAllowance"], 4);
    assert_eq!(v["services"][0]["overVmAllowance"], true);
    let seq = v["bundle"]["seq"].as_u64().unwrap();
    assert!(seq >= 1);
    let (_, c) = lab.get("/api/v1/compliance?customerIds=acme").await;
    assert_eq!(c[0]["vmOveruse"][0]["deviceId"], "host1");

    let (s, v) = lab
        .post("/api/v1/devices/acme/host1/reissue", json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["bundleSeq"].as_u64().unwrap(), seq + 1);
    assert_eq!(lab.get("/api/v1/devices/acme/nope").await.0, 404);
    assert_eq!(
        lab.post("/api/v1/devices/acme/nope/reissue", json!({}))
            .await
            .0,
        404
    );
    lab.stop().await;
}

#[tokio::test]
async fn licenses_and_assignments_page_filter_and_bulk_update_by_scope() {
    let lab = Lab::start().await;
    lab.seed().await;
    let (s, _) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-2", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": 1}]}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = lab
        .post(
            "/api/v1/auto-licensing/enable",
            json!({"services": ["wifi", "hv"]}),
        )
        .await;
    assert_eq!(s, 200);
    lab.report("acme", "ap1", "ap", &["wifi"], None).await;
    lab.report("acme", "host1", "server", &["hv"], Some(2))
        .await;

    let (s, v) = lab.get("/api/v1/licenses").await;
    assert_eq!(s, 200);
    assert_eq!(v["pagination"]["total_items"], 3);
    let (_, v) = lab
        .get("/api/v1/licenses?filter=sku%20-eq%20%22LIC-HV%22")
        .await;
    let hv = &v["items"][0];
    assert_eq!(hv["id"], "SUB-1:LIC-HV");
    assert_eq!(hv["hasVmUseRights"], true);
    assert_eq!(hv["numberOfSupportedVirtualMachines"], 4);
    assert_eq!(hv["assigned"], 1);

    let (_, v) = lab.get("/api/v1/assignments?page_size=1").await;
    assert_eq!(v["pagination"]["total_items"], 2);
    let (_, v) = lab
        .get("/api/v1/assignments?filter=hasVmUseRights%20-eq%20%22true%22")
        .await;
    assert_eq!(v["items"][0]["computerId"], "host1");
    assert_eq!(v["items"][0]["virtualMachines"], 2);
    assert_eq!(v["items"][0]["quantity"], 1);
    // ap1 uses its own tenant's subscription first.
    let (s, v) = lab.get("/api/v1/licenses/SUB-2:LIC-AP/assignments").await;
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["id"], "acme:ap1:wifi");
    assert_eq!(
        lab.get("/api/v1/licenses/SUB-9:LIC-AP/assignments").await.0,
        404
    );
    assert_eq!(lab.get("/api/v1/assignments?page_size=0").await.0, 400);

    // Only: one id and one unknown. AllExcept: every other. All + filter.
    let (s, v) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "Only", "ids": ["SUB-1:LIC-AP", "NOPE:X"], "body": {"quantity": 5}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["successCount"].as_u64(), v["failedCount"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "AllExcept", "ids": ["SUB-1:LIC-AP"], "body": {"quantity": 0}}),
        )
        .await;
    // Both other licenses have a seat assigned: lowering to 0 fails for each.
    assert_eq!(v["failedCount"], 2);
    assert!(v["failureReason"].as_str().unwrap().contains("assigned"));
    let (_, v) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "All", "filter": "sku -eq 'LIC-HV'", "body": {"quantity": 3}}),
        )
        .await;
    assert_eq!(v["successCount"], 1);
    let (_, v) = lab.get("/api/v1/subscriptions/SUB-1").await;
    assert_eq!(v["counts"]["seats"]["limit"], 8);
    let (s, _) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "Only", "body": {"quantity": 3}}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "Some", "ids": [], "body": {"quantity": 3}}),
        )
        .await;
    assert_eq!(s, 400);
    lab.stop().await;
}

/// Issue 16 item 5: numbers are held to the range the document states (int32 here), with a
/// 400 naming the field; a subscription's seat totals are exact sums, never saturated.
#[tokio::test]
async fn numbers_out_of_their_documented_range_are_refused_and_sums_do_not_saturate() {
    let lab = Lab::start().await;
    lab.seed().await;
    let max = i64::from(i32::MAX);
    for q in [max + 1, 4_294_967_295, 4_294_967_296, -1] {
        let (s, v) = lab
            .post(
                "/api/v1/licenses/bulkUpdate",
                json!({"scope": "All", "body": {"quantity": q}}),
            )
            .await;
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("quantity"),
            "{v}"
        );
    }
    let (_, v) = lab.get("/api/v1/licenses").await;
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["quantity"].as_i64() < Some(10)));
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-X", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": max + 1}]}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_request"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("limit"),
        "{v}"
    );
    for vms in [json!(0), json!(max + 1), json!(-4)] {
        let (s, v) = lab
            .post(
                "/api/v1/entitlements",
                json!({"sku": "LIC-V", "service": "v", "productClass": "vm", "vmsPerSeat": vms}),
            )
            .await;
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{vms}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("vmsPerSeat"),
            "{v}"
        );
    }
    let (s, _) = lab.get("/api/v1/licenses?page_number=2147483648").await;
    assert_eq!(s, 400);
    // Three SKUs at the largest count: the total is their sum (6442450941), past 32 bits.
    let (s, _) = lab
        .post(
            "/api/v1/entitlements",
            json!({"sku": "LIC-SW", "service": "sw", "productClass": "switch"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-BIG", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": max}, {"sku": "LIC-HV", "limit": max},
                                    {"sku": "LIC-SW", "limit": max}]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["counts"]["seats"]["limit"], 3 * max);
    assert_eq!(v["counts"]["seats"]["available"], 3 * max);
    let (s, v) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "Only", "ids": ["SUB-BIG:LIC-AP"], "body": {"quantity": max}}),
        )
        .await;
    assert_eq!((s, v["successCount"].as_i64()), (200, Some(1)), "{v}");
    lab.stop().await;
}

/// Issue 16 item 15: a date that does not exist is a 400 in a body or a filter (2027-02-31 was
/// taken as 3 March); a real one is stored and shown as given.
#[tokio::test]
async fn a_date_that_does_not_exist_is_refused() {
    let lab = Lab::start().await;
    lab.seed().await;
    for (start, end) in [
        ("2027-01-01", "2027-02-31"),
        ("2027-02-29", "2028-01-01"),
        ("2027-01-01T00:00:00Z", "2027-04-31T00:00:00Z"),
        ("1969-12-31", "2027-01-01"),
        ("2027-01-01", "10000-01-01"),
    ] {
        let (s, v) = lab
            .post(
                "/api/v1/subscriptions",
                json!({"subscriptionId": "SUB-D", "customerId": "acme", "startDate": start,
                       "endDate": end, "entitlements": []}),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (400, "invalid_request"),
            "{start} {end}: {v}"
        );
    }
    for q in ["endDate[lt]=2027-02-31", "startDate=2027-02-30T00:00:00Z"] {
        let (s, v) = lab.get(&format!("/api/v1/subscriptions?{q}")).await;
        assert_eq!((s, code(&v)), (400, "invalid_request"), "{q}: {v}");
    }
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-D", "customerId": "acme", "startDate": "2028-02-29",
                   "endDate": "2028-03-01T12:00:00+02:00", "entitlements": []}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["startDate"], "2028-02-29T00:00:00Z");
    assert_eq!(v["endDate"], "2028-03-01T10:00:00Z");
    lab.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token() {
    let lab = Lab::start().await;
    let (s, v, _) = lab
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    assert!(v["paths"]["/api/v1/auto-licensing/enable"]["post"].is_object());
    lab.stop().await;
}

/// A 500 is only for real faults: here the ledger failing under the API (its table dropped
/// behind the controller's back). The body names the request id, also in the header.
#[tokio::test]
async fn a_real_fault_is_a_500_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let lab = Lab::start_full(
        |c| c.ledger = licd_stub::LedgerLocation::File(db.clone()),
        |_| {},
    )
    .await;
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("DROP TABLE customers").unwrap();
    let (s, v, h) = lab
        .call(
            reqwest::Method::POST,
            "/api/v1/customers",
            Some(&lab.admin),
            Some(json!({"id": "acme"})),
        )
        .await;
    assert_eq!((s, code(&v)), (500, "internal_error"));
    let id = h["x-request-id"].to_str().unwrap();
    assert_eq!(v["error"]["requestId"], id);
    assert!(!v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("customers"));
    lab.stop().await;
}

/// Issue 16 item 10: the server refuses exactly what the OpenAPI document does not allow — no
/// trimming or dropping of list items, no `1`/`0`/empty for booleans, a filter field checked
/// whether or not there are items, `timeoutSecs` read like every other parameter — and a
/// body the document allows whose values contradict each other is a 422, not a 400.
#[tokio::test]
async fn the_server_refuses_exactly_what_the_document_does_not_allow() {
    let lab = Lab::start().await;
    lab.seed().await;
    for (path, why) in [
        // The assignments list is empty: the field is checked anyway.
        (
            "/api/v1/assignments?filter=model%20-eq%20%22x%22",
            "unknown filter field",
        ),
        (
            "/api/v1/subscriptions?statuses=%20active",
            "a spaced status",
        ),
        ("/api/v1/subscriptions?statuses=active,", "an empty status"),
        ("/api/v1/compliance?customerIds=", "an empty customer id"),
        ("/api/v1/compliance?customerIds=acme,,beta", "an empty item"),
        (
            "/api/v1/subscriptions?endDate%5Blt%5D=2027-02-30",
            "30 February",
        ),
        (
            "/api/v1/subscriptions?endDate=%202027-01-01",
            "a spaced date",
        ),
        (
            "/api/v1/devices?customerId=a%20b",
            "a customer id with a space",
        ),
    ] {
        let (s, v) = lab.get(path).await;
        assert_eq!(s, 400, "{why}: {path} -> {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{why}");
    }
    for flag in ["1", "0", "", "yes"] {
        let (s, v) = lab
            .post(
                &format!("/api/v1/auto-licensing/enable?validate={flag}"),
                json!({"services": ["wifi"]}),
            )
            .await;
        assert_eq!(s, 400, "validate={flag:?}: {v}");
    }
    let (s, v) = lab
        .post(
            "/api/v1/auto-licensing/enable?validate=true",
            json!({"services": ["wifi"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["validate"], true);
    // Allowed by the document, so never a 400.
    let (s, v) = lab
        .get("/api/v1/subscriptions?statuses=active&statuses=expired&endDate%5Bgte%5D=2028-02-29T00:00:00.5Z")
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = lab.get("/api/v1/assignments?filter=%20customerId%20-EQ%20'acme'%20%20-and%20hasVmUseRights%20-ne%20%22true%22%20").await;
    assert_eq!(s, 200, "{v}");
    // timeoutSecs percent-encoded is still 20 seconds: the device is unknown (404), not a 400.
    let (s, v, _) = lab
        .call(
            reqwest::Method::POST,
            "/api/v1/devices/acme/nobody/diag?timeoutSecs=%32%30",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-9", "customerId": "acme",
                   "startDate": "2030-01-01", "endDate": "2029-12-31", "entitlements": []}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "unprocessable");
    // JSON Schema's integer is any number without a fraction: 3.0 and 2e0 are allowed.
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-8", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": 3.0}, {"sku": "LIC-HV", "limit": 2e0}]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["counts"]["seats"]["limit"], 5);
    let (s, v) = lab
        .post(
            "/api/v1/licenses/bulkUpdate",
            json!({"scope": "Only", "ids": ["SUB-8:LIC-AP"], "body": {"quantity": 2.5}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
}

/// Found by the fuzz gate: a subscription listing one SKU twice was taken by the engine, the
/// ledger (one row per subscription and SKU) refused to store it, and the change stayed in
/// memory to be retried — so every later write failed too (500s until a restart). The SKU
/// twice is now a 422, and a change the ledger refuses is undone, not retried forever.
#[tokio::test]
async fn a_change_the_ledger_refuses_is_undone_and_later_writes_go_through() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let lab = Lab::start_full(
        |c| c.ledger = licd_stub::LedgerLocation::File(db.clone()),
        |_| {},
    )
    .await;
    lab.seed().await;
    let (s, v) = lab
        .post(
            "/api/v1/subscriptions",
            json!({"subscriptionId": "SUB-2", "customerId": "acme", "endDate": "2099-01-01",
                   "entitlements": [{"sku": "LIC-AP", "limit": 1}, {"sku": "LIC-AP", "limit": 2}]}),
        )
        .await;
    assert_eq!((s, code(&v)), (422, "unprocessable"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("LIC-AP"));
    let (s, v) = lab.post("/api/v1/customers", json!({"id": "gamma"})).await;
    assert_eq!(s, 201, "the next write: {v}");

    // Any change the ledger refuses (here a trigger stands for a constraint the engine does
    // not know) is a 500 that leaves nothing behind: the next writes are stored.
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse_evil BEFORE INSERT ON customers WHEN NEW.id = 'evil'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let (s, v) = lab.post("/api/v1/customers", json!({"id": "evil"})).await;
    assert_eq!((s, code(&v)), (500, "internal_error"), "{v}");
    let (s, v) = lab.get("/api/v1/customers/evil").await;
    assert_eq!(s, 404, "the refused change is undone: {v}");
    for id in ["delta", "epsilon"] {
        let (s, v) = lab.post("/api/v1/customers", json!({"id": id})).await;
        assert_eq!(s, 201, "{id}: {v}");
    }
    let stored: i64 = other
        .query_row(
            "SELECT COUNT(*) FROM customers WHERE id IN ('gamma', 'delta', 'epsilon')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 3);
    lab.stop().await;
}

/// The state of `service` on a device, as `GET /api/v1/devices/{t}/{d}` shows it.
async fn service_state(lab: &Lab, tenant: &str, device: &str, service: &str) -> Value {
    let (s, v) = lab.get(&format!("/api/v1/devices/{tenant}/{device}")).await;
    assert_eq!(s, 200, "{v}");
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["service"] == service)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Issue 21 item 3: a license's computer assignments over HTTP — add (and its refusals),
/// list with the seed's filter and paging, show, replace, delete one (the device's service is
/// withheld `Unassigned`), the summary, delete all.
#[tokio::test]
async fn snow_computer_assignments_add_list_show_replace_and_delete() {
    let lab = Lab::start().await;
    lab.seed().await;
    for d in ["ap-1", "ap-2"] {
        lab.report("acme", d, "ap", &["wifi"], None).await;
    }
    let base = "/api/v1/licenses/SUB-1:LIC-AP/assignments/computers";
    let (s, v) = lab.post(base, json!({"computerId": "acme:ap-1"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["id"], "acme:ap-1");
    let (s, v) = lab.post(base, json!({"computerId": "acme:ap-1"})).await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    // One seat is left: a quantity of 2 does not fit.
    let (s, v) = lab
        .post(base, json!({"computerId": "ap-2", "quantity": 2}))
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("1 free"));
    let (s, v) = lab
        .post(
            base,
            json!({"computerId": "ap-2", "virtualMachines": ["vm-1"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        service_state(&lab, "acme", "ap-2", "wifi").await["state"],
        "granted"
    );
    // The list, the seed's filter and page numbers.
    let (s, v) = lab.get(base).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let (s, v) = lab
        .get(&format!(
            "{base}?filter=computerId%20-eq%20%22ap-2%22&page_number=1&page_size=1"
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"][0]["computerId"], "ap-2");
    assert_eq!(v["items"][0]["applicationId"], "wifi");
    // VMs named for a license without VM use rights.
    assert_eq!(
        v["items"][0]["invalidAssignmentReasons"],
        json!(["noVmUseRights"])
    );
    let (s, v) = lab.get(&format!("{base}?page_size=1&page_number=2")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pagination"]["total_pages"], 2);
    let (s, v) = lab
        .get(&format!("{base}?filter=colour%20-eq%20%22x%22"))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_request"), "{v}");
    // Show and replace one.
    let (s, v) = lab.get(&format!("{base}/acme:ap-1")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["quantity"].as_u64(), v["isAutoAllocated"].as_bool()),
        (Some(1), Some(false))
    );
    let (s, v, _) = lab
        .call(
            reqwest::Method::PUT,
            &format!("{base}/acme:ap-1"),
            Some(&lab.admin),
            Some(json!({"computerId": "acme:ap-2"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (422, "unprocessable"),
        "a replace does not move: {v}"
    );
    // Refusals: unknown computer, license, malformed ids.
    for (path, body, status) in [
        (base.to_string(), json!({"computerId": "acme:nope"}), 422),
        (
            base.replace("SUB-1", "SUB-9"),
            json!({"computerId": "acme:ap-1"}),
            404,
        ),
        (
            base.replace("SUB-1:LIC-AP", "SUB-1"),
            json!({"computerId": "acme:ap-1"}),
            400,
        ),
        (base.to_string(), json!({"computerId": "a b"}), 400),
        (
            base.to_string(),
            json!({"computerId": "acme:ap-1", "quantity": 0}),
            400,
        ),
        (
            base.to_string(),
            json!({"computerId": "acme:ap-1", "virtualMachines": ["../x"]}),
            400,
        ),
    ] {
        let (s, v) = lab.post(&path, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {v}");
    }
    // Delete one: that device's service is withheld Unassigned, the other keeps it.
    let (s, _, _) = lab
        .call(
            reqwest::Method::DELETE,
            &format!("{base}/acme:ap-1"),
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let st = service_state(&lab, "acme", "ap-1", "wifi").await;
    assert_eq!(
        (st["state"].as_str(), st["reason"].as_str()),
        (Some("withheld"), Some("Unassigned")),
        "{st}"
    );
    assert_eq!(
        service_state(&lab, "acme", "ap-2", "wifi").await["state"],
        "granted"
    );
    let (s, v) = lab
        .get("/api/v1/licenses/SUB-1:LIC-AP/assignments/summary")
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hasComputerAssignment"], true);
    assert_eq!(v["hasSiteAssignment"], false);
    // Replace all with ap-1 only: ap-2 loses the service, ap-1 gets it back.
    let (s, v, _) = lab
        .call(
            reqwest::Method::PUT,
            base,
            Some(&lab.admin),
            Some(json!([{"computerId": "acme:ap-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        service_state(&lab, "acme", "ap-1", "wifi").await["state"],
        "granted"
    );
    assert_eq!(
        service_state(&lab, "acme", "ap-2", "wifi").await["state"],
        "withheld"
    );
    let (s, _, _) = lab
        .call(reqwest::Method::DELETE, base, Some(&lab.admin), None)
        .await;
    assert_eq!(s, 204);
    let (_, v) = lab.get(base).await;
    assert_eq!(v["items"], json!([]));
    // A read token reads but does not change.
    let (s, _, _) = lab
        .call(
            reqwest::Method::POST,
            base,
            Some(&lab.read),
            Some(json!({"computerId": "acme:ap-1"})),
        )
        .await;
    assert_eq!(s, 403);
    lab.stop().await;
}

/// Issue 21 item 3: a host placed in a datacenter is licensed by the datacenter's assignment
/// (the license has VM use rights); organization, site and user assignments; assignment types.
#[tokio::test]
async fn snow_datacenter_organization_site_and_user_assignments() {
    let lab = Lab::start().await;
    lab.seed().await;
    lab.report("beta", "h-1", "server", &["hv"], Some(3)).await;
    assert_eq!(
        service_state(&lab, "beta", "h-1", "hv").await["state"],
        "withheld"
    );
    let (s, v, _) = lab
        .call(
            reqwest::Method::PUT,
            "/api/v1/devices/beta/h-1/datacenter",
            Some(&lab.admin),
            Some(json!({"datacenterId": "dc-1"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["datacenterId"], "dc-1");
    let lic = "/api/v1/licenses/SUB-1:LIC-HV/assignments";
    let (s, v) = lab
        .post(
            &format!("{lic}/datacenters"),
            json!({"datacenterId": "dc-1", "quantity": 1, "virtualMachines": ["vm-1"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let st = service_state(&lab, "beta", "h-1", "hv").await;
    assert_eq!(st["state"], "granted", "{st}");
    let (s, v) = lab.get(&format!("{lic}/datacenters/dc-1")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["coveredComputers"], json!(["beta:h-1"]));
    assert_eq!(v["hasVmUseRights"], true);
    assert_eq!(v["numberOfSupportedVirtualMachines"], 4);
    assert_eq!(v["invalidAssignmentReasons"], json!([]));
    // The license's only seat is the datacenter's now.
    let (s, v) = lab
        .post(
            &format!("{lic}/datacenters"),
            json!({"datacenterId": "dc-2"}),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    // Taken out of the datacenter, the host loses the service.
    let (s, v, _) = lab
        .call(
            reqwest::Method::DELETE,
            "/api/v1/devices/beta/h-1/datacenter",
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["datacenterId"], Value::Null);
    assert_eq!(
        service_state(&lab, "beta", "h-1", "hv").await["state"],
        "withheld"
    );
    // Organizations, the site, users.
    let (s, v) = lab
        .post(
            &format!("{lic}/organizations"),
            json!({"organizationId": "beta", "quantity": 3}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = lab
        .post(
            &format!("{lic}/organizations"),
            json!({"organizationId": "ghost"}),
        )
        .await;
    assert_eq!((s, code(&v)), (422, "unprocessable"), "{v}");
    let (s, v) = lab
        .post(&format!("{lic}/site"), json!({"organizationId": "beta"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = lab
        .post(&format!("{lic}/site"), json!({"organizationId": "acme"}))
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    let (s, v) = lab.get(&format!("{lic}/site")).await;
    assert_eq!(
        (s, v["organizationId"].as_str()),
        (200, Some("beta")),
        "{v}"
    );
    let (s, v) = lab
        .post(&format!("{lic}/users"), json!({"userId": "u-1"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = lab.get(&format!("{lic}/summary")).await;
    assert_eq!(s, 200, "{v}");
    for k in ["Organization", "Site", "User", "Datacenter"] {
        assert_eq!(v[format!("has{k}Assignment")], true, "{k}: {v}");
    }
    let (s, v, _) = lab
        .call(
            reqwest::Method::PUT,
            &format!("{lic}/users"),
            Some(&lab.admin),
            Some(json!([])),
        )
        .await;
    assert_eq!((s, v["items"].clone()), (200, json!([])), "{v}");
    let (s, v) = lab
        .get("/api/v1/licenses/assignmenttypes?filter=affectsDevices%20-eq%20%22true%22")
        .await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["computer", "datacenter"]);
    lab.stop().await;
}
