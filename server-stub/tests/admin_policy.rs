//! Licensing policy over the admin API (issue 20): GET/PUT per SKU and subscription, values
//! out of range refused with the reason (400, 422 for thresholds out of order), tenant tokens
//! read their own subscriptions' policy and set none, a change re-issues the bundles of the
//! devices it covers, and the ledger keeps it across a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{setup_with, test_config, Device};
use licd_protocol::{LicenseId, TenantId, TrustStore};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::config::LedgerLocation;
use licd_stub::StubHandle;
use serde_json::{json, Value};

struct Lab {
    stub: Arc<StubHandle>,
    server: AdminServer,
    http: reqwest::Client,
    admin: String,
    tenant: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    async fn start(ledger: Option<std::path::PathBuf>) -> Self {
        Self::start_with(ledger, true).await
    }

    /// `seed`: set up the customers, catalogue and subscription (not on a restart).
    async fn start_with(ledger: Option<std::path::PathBuf>, seed: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TOKEN_STORE_FILE);
        let admin = token::create(&store, "ops", TokenKind::Admin, 1).unwrap();
        let tenant = token::create_scoped(
            &store,
            "acme",
            TokenKind::Admin,
            Some(&TenantId::new("acme").unwrap()),
            1,
        )
        .unwrap();
        let mut config = test_config();
        if let Some(path) = ledger {
            config.ledger = LedgerLocation::File(path);
        }
        let stub = Arc::new(if seed {
            setup_with(config).await
        } else {
            licd_stub::Stub::start(config).await.unwrap()
        });
        let server = AdminServer::start(
            stub.clone(),
            AdminConfig::new("127.0.0.1:0".parse().unwrap(), store),
        )
        .await
        .unwrap();
        Self {
            stub,
            server,
            http: reqwest::Client::new(),
            admin,
            tenant,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.url()))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(&self.admin, reqwest::Method::PUT, path, Some(body))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(&self.admin, reqwest::Method::GET, path, None)
            .await
    }

    async fn stop(self) {
        self.server.shutdown().await;
        if let Ok(stub) = Arc::try_unwrap(self.stub) {
            stub.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_policy_overrides_its_sku_policy_field_by_field() {
    let lab = Lab::start(None).await;
    let (s, v) = lab.get("/api/v1/entitlements/LIC-AP/policy").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["policy"], json!({}));
    assert_eq!(v["effective"][0]["strategy"], "restrict");
    assert_eq!(v["effective"][0]["overageTolerancePct"], 100);
    assert_eq!(
        v["effective"][0]["offlineLeaseDays"], 90,
        "the controller default"
    );

    let (s, v) = lab
        .put(
            "/api/v1/entitlements/LIC-AP/policy",
            json!({"strategy": "advisory", "overageTolerancePct": 125, "offlineLeaseDays": 30}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["policy"]["strategy"], "advisory");
    let (s, v) = lab
        .put(
            "/api/v1/subscriptions/SUB-1/policy",
            json!({"strategy": "immediate", "warnBeforeSecs": [2592000, 604800]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let ap = v["effective"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sku"] == "LIC-AP")
        .unwrap()
        .clone();
    assert_eq!(
        ap,
        json!({"sku": "LIC-AP", "strategy": "immediate", "overageTolerancePct": 125,
               "warnBeforeSecs": [2592000, 604800], "offlineLeaseDays": 30})
    );
    // LIC-SEC has no SKU policy: only the subscription's fields.
    let sec = v["effective"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sku"] == "LIC-SEC")
        .unwrap()
        .clone();
    assert_eq!(sec["overageTolerancePct"], 100);
    assert_eq!(sec["offlineLeaseDays"], 90);

    // An empty body clears the subscription's policy: the SKU's applies again.
    let (s, v) = lab
        .put("/api/v1/subscriptions/SUB-1/policy", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["policy"], json!({}));
    assert_eq!(v["effective"][0]["strategy"], "advisory");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_values_are_refused_with_the_reason_and_change_nothing() {
    let lab = Lab::start(None).await;
    let path = "/api/v1/subscriptions/SUB-1/policy";
    for (body, status, says) in [
        (json!({"overageTolerancePct": 99}), 400, "below 100"),
        (json!({"overageTolerancePct": 1001}), 400, "above the most"),
        (
            json!({"strategy": "lenient"}),
            400,
            "strategy: unknown variant",
        ),
        (
            json!({"warnBeforeSecs": [0]}),
            400,
            "warnBeforeSecs: invalid value: 0",
        ),
        (
            json!({"warnBeforeSecs": [1, 2, 3, 4, 5, 6, 7, 8, 9]}),
            400,
            "at most 8",
        ),
        (
            json!({"offlineLeaseDays": 0}),
            400,
            "offlineLeaseDays: invalid value",
        ),
        (json!({"offlineLeaseDays": 3651}), 400, "above the most"),
        (json!({"graceDays": 3}), 400, "graceDays"),
        (
            json!({"warnBeforeSecs": [604800, 2592000]}),
            422,
            "strictly descending",
        ),
        (
            json!({"warnBeforeSecs": [60, 60]}),
            422,
            "strictly descending",
        ),
    ] {
        let (s, v) = lab.put(path, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    // JSON Schema's integer: 132.0 is 132.
    let (s, v) = lab
        .put(
            path,
            json!({"overageTolerancePct": 132.0, "warnBeforeSecs": [60.0]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["policy"]["overageTolerancePct"], 132, "{v}");
    let (s, _) = lab.put(path, json!({})).await;
    assert_eq!(s, 200);
    let (s, v) = lab
        .put(
            "/api/v1/entitlements/NOPE/policy",
            json!({"strategy": "advisory"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (s, v) = lab
        .put(
            "/api/v1/subscriptions/NOPE/policy",
            json!({"strategy": "advisory"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, v) = lab.get(path).await;
    assert_eq!(v["policy"], json!({}), "nothing was stored");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_reads_its_own_subscription_policy_and_sets_none() {
    let lab = Lab::start(None).await;
    // SUB-1 is the MSP's: for acme's token it does not exist.
    let (s, v) = lab
        .call(
            &lab.tenant,
            reqwest::Method::GET,
            "/api/v1/subscriptions/SUB-1/policy",
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, missing) = lab
        .call(
            &lab.tenant,
            reqwest::Method::GET,
            "/api/v1/subscriptions/SUB-9/policy",
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .replace("SUB-1", "SUB-9"),
        missing["error"]["message"].as_str().unwrap()
    );
    let (s, v) = lab
        .call(
            &lab.tenant,
            reqwest::Method::PUT,
            "/api/v1/entitlements/LIC-AP/policy",
            Some(json!({"strategy": "advisory"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // Its own subscription: readable, but policy is the MSP's to set.
    lab.stub
        .add_subscription(licd_stub::engine::Subscription {
            id: LicenseId::new("SUB-ACME").unwrap(),
            name: "acme".into(),
            owner: Some(TenantId::new("acme").unwrap()),
            claim_key: None,
            start: common::now() - 60,
            end: common::now() + 86_400,
            entitlements: vec![],
        })
        .await
        .unwrap();
    let (s, v) = lab
        .call(
            &lab.tenant,
            reqwest::Method::GET,
            "/api/v1/subscriptions/SUB-ACME/policy",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = lab
        .call(
            &lab.tenant,
            reqwest::Method::PUT,
            "/api/v1/subscriptions/SUB-ACME/policy",
            Some(json!({"strategy": "advisory"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_reissues_the_bundle_and_survives_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let lab = Lab::start(Some(ledger.clone())).await;
    let trust = TrustStore::new(vec![lab.stub.root_public_key()]);
    let mut dev = Device::connect(&lab.stub, "acme", "ap1", 7).await;
    dev.send(&dev.report(&["wifi"], 0), &dev.key.clone()).await;
    let b1 = dev.next_bundle(&trust).await;
    let (s, v) = lab
        .put(
            "/api/v1/subscriptions/SUB-1/policy",
            json!({"strategy": "advisory", "offlineLeaseDays": 12}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let b2 = dev.next_bundle(&trust).await;
    assert_eq!(b2.seq, b1.seq + 1, "the policy change re-issued the bundle");
    lab.stop().await;

    let lab = Lab::start_with(Some(ledger), false).await;
    let (s, v) = lab.get("/api/v1/subscriptions/SUB-1/policy").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["policy"],
        json!({"strategy": "advisory", "offlineLeaseDays": 12})
    );
    lab.stop().await;
}
