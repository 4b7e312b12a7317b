//! Usage and compliance from extended reports, over a real broker and the admin API
//! (issue 20): an extended report is answered with a policy bundle acknowledging it, a plain
//! report with a plain bundle; usage is counted once across duplicates, a closed window and a
//! controller restart (`GET /api/v1/usage`); compliance shows what devices report (advisory
//! past grace = not compliant) and grants expiring soon.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{now, setup_with, svc, test_config, Device};
use licd_protocol::envelope::Envelope;
use licd_protocol::policy::{open_any_bundle, seal_extended_report};
use licd_protocol::{
    ComplianceReason, ExtendedReport, MessageKind, PolicyBundle, ServiceCompliance, ServiceSeconds,
    Standing, TenantId, TrustStore, Usage,
};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::config::LedgerLocation;
use licd_stub::{Stub, StubHandle};
use rumqttc::Packet;
use serde_json::{json, Value};

struct Lab {
    stub: Arc<StubHandle>,
    server: AdminServer,
    http: reqwest::Client,
    admin: String,
    other_tenant: String,
}

impl Lab {
    async fn start(dir: &std::path::Path, seed: bool, signer: &licd_stub::Signer) -> Self {
        let store = dir.join(TOKEN_STORE_FILE);
        let admin = if seed {
            token::create(&store, "ops", TokenKind::Admin, 1).unwrap()
        } else {
            std::fs::read_to_string(dir.join("admin.tok")).unwrap()
        };
        std::fs::write(dir.join("admin.tok"), &admin).unwrap();
        let other_tenant = token::create_scoped(
            &store,
            &format!("other-{seed}"),
            TokenKind::Read,
            Some(&TenantId::new("other").unwrap()),
            1,
        )
        .unwrap();
        let mut config = test_config();
        // The same keys across the restart, as a controller with a key directory has.
        config.keys = licd_stub::config::KeySource::Signer(Box::new(signer.clone()));
        config.ledger = LedgerLocation::File(dir.join("ledger.db"));
        let stub = Arc::new(if seed {
            let s = setup_with(config).await;
            s.add_customer(
                TenantId::new("other").unwrap(),
                "Other",
                licd_stub::engine::CustomerKind::Tenant,
            )
            .await
            .unwrap();
            s
        } else {
            Stub::start(config).await.unwrap()
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
            other_tenant,
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
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self
            .call(&self.admin, reqwest::Method::GET, path, None)
            .await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    async fn stop(self) {
        self.server.shutdown().await;
        if let Ok(stub) = Arc::try_unwrap(self.stub) {
            stub.shutdown().await;
        }
    }
}

fn extended(dev: &Device, seq: u64, window: u64, grace: u64, held: u64) -> ExtendedReport {
    let mut report = dev.report(&["wifi"], held);
    // A report sent again carries its first clock: what tells a duplicate from a device that
    // lost its record and started over (PROTOCOL.md §17.3).
    report.clock = 1_700_000_000 + seq;
    ExtendedReport {
        report,
        report_seq: seq,
        usage: Usage {
            window,
            peak_vm_count: Some(u32::try_from(seq).unwrap()),
            refusals: 1,
            grace_seconds: vec![ServiceSeconds {
                service: svc("wifi"),
                seconds: grace,
            }],
        },
        compliance: vec![ServiceCompliance {
            service: svc("wifi"),
            standing: Standing::NonCompliant,
            reason: Some(ComplianceReason::TermEnded),
            overage_vms: None,
            expiring_within: None,
        }],
    }
}

async fn send_extended(dev: &Device, r: &ExtendedReport) {
    let topic = licd_protocol::Topic::new(&dev.tenant, &dev.id, licd_protocol::TopicKind::Report)
        .to_topic_string();
    dev.client
        .publish(
            topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            seal_extended_report(r, &dev.key),
        )
        .await
        .unwrap();
}

/// The next bundle of either kind, with its envelope kind.
async fn next_any(dev: &mut Device, trust: &TrustStore) -> (MessageKind, PolicyBundle) {
    let Packet::Publish(p) = dev.wait_for(|p| matches!(p, Packet::Publish(_))).await else {
        unreachable!()
    };
    let kind = Envelope::parse(&p.payload).unwrap().kind;
    let (b, _) = open_any_bundle(&p.payload, trust, now()).unwrap();
    (kind, b)
}

fn grace_total(v: &Value) -> u64 {
    v["totals"]["graceSeconds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["service"] == "wifi")
        .map(|g| g["seconds"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_reports_get_policy_bundles_and_usage_is_counted_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let signer = licd_stub::Signer::ephemeral(now()).unwrap();
    let lab = Lab::start(dir.path(), true, &signer).await;
    let trust = TrustStore::new(vec![lab.stub.root_public_key()]);
    let (s, v) = lab
        .call(
            &lab.admin,
            reqwest::Method::PUT,
            "/api/v1/entitlements/LIC-AP/policy",
            Some(json!({"strategy": "advisory", "warnBeforeSecs": [172800]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // An older agent: a plain report, a plain bundle.
    let mut old = Device::connect(&lab.stub, "acme", "ap-old", 3).await;
    old.send(&old.report(&["wifi"], 0), &old.key.clone()).await;
    let (kind, _) = next_any(&mut old, &trust).await;
    assert_eq!(kind, MessageKind::Grants);

    let mut dev = Device::connect(&lab.stub, "acme", "ap1", 7).await;
    send_extended(&dev, &extended(&dev, 1, 0, 600, 0)).await;
    let (kind, b1) = next_any(&mut dev, &trust).await;
    assert_eq!(kind, MessageKind::PolicyBundle);
    assert_eq!(b1.usage_ack, 1);
    assert_eq!(b1.policies.len(), 1);
    assert_eq!(b1.policies[0].strategy, licd_protocol::Strategy::Advisory);
    assert_eq!(b1.policies[0].warn_before, vec![172800]);
    // The device applied ack 1: report 2 opens window 1 and closes window 0 at report 1.
    send_extended(&dev, &extended(&dev, 2, 1, 300, b1.bundle.seq)).await;
    let (_, b2) = next_any(&mut dev, &trust).await;
    assert_eq!(b2.usage_ack, 2);
    let v = lab.get("/api/v1/usage?customerId=acme").await;
    assert_eq!(grace_total(&v), 900, "{v}");
    assert_eq!(v["totals"]["windows"], 2, "{v}");
    assert_eq!(v["items"][0]["closed"], true, "{v}");
    assert_eq!(v["items"][0]["reportSeq"], 1, "{v}");

    // Compliance: the device says wifi is non-compliant (advisory past grace); the grant
    // (term ends in a day) is within the policy's 2-day threshold.
    let c = lab.get("/api/v1/compliance?customerIds=acme").await;
    assert_eq!(c[0]["compliant"], false, "{c}");
    assert_eq!(c[0]["deviceReported"][0]["deviceId"], "ap1", "{c}");
    assert_eq!(
        c[0]["deviceReported"][0]["standing"], "non_compliant",
        "{c}"
    );
    assert_eq!(c[0]["deviceReported"][0]["reason"], "term_ended", "{c}");
    let expiring: Vec<&str> = c[0]["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(expiring, ["ap-old", "ap1"], "{c}");
    assert_eq!(c[0]["expiring"][0]["thresholdSecs"], 172800, "{c}");
    let c = lab
        .get("/api/v1/compliance?customerIds=acme&expiringWithinDays=0")
        .await;
    assert!(c[0]["expiring"].as_array().unwrap().is_empty(), "{c}");
    let (s, _) = lab
        .call(
            &lab.admin,
            reqwest::Method::GET,
            "/api/v1/compliance?expiringWithinDays=-1",
            None,
        )
        .await;
    assert_eq!(s, 400);

    // Another tenant's token finds acme as missing.
    let (s, v) = lab
        .call(
            &lab.other_tenant,
            reqwest::Method::GET,
            "/api/v1/usage?customerId=acme",
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = lab
        .call(
            &lab.other_tenant,
            reqwest::Method::GET,
            "/api/v1/usage",
            None,
        )
        .await;
    assert_eq!((s, v["totals"]["windows"].as_u64()), (200, Some(0)), "{v}");
    lab.stop().await;

    // Controller restart: the windows and the open window come back from the ledger.
    let lab = Lab::start(dir.path(), false, &signer).await;
    let mut dev = Device::connect(&lab.stub, "acme", "ap1", 7).await;
    // Report 2 delivered again, and report 1 of the closed window: nothing counted.
    send_extended(&dev, &extended(&dev, 2, 1, 300, b2.bundle.seq)).await;
    send_extended(&dev, &extended(&dev, 1, 0, 600, b2.bundle.seq)).await;
    // Report 3, window 1 still open (ack 2 was lost): 500 s since window 1 opened.
    send_extended(&dev, &extended(&dev, 3, 1, 500, b2.bundle.seq)).await;
    let (_, b3) = loop {
        let x = next_any(&mut dev, &trust).await;
        if x.1.usage_ack == 3 {
            break x;
        }
    };
    assert!(b3.bundle.seq > b2.bundle.seq);
    let v = lab.get("/api/v1/usage?customerId=acme&deviceId=ap1").await;
    assert_eq!(grace_total(&v), 1100, "600 + 500: {v}");
    assert_eq!(v["totals"]["peakVmCount"], 3, "{v}");
    let v = lab
        .get("/api/v1/usage?service=wifi&periodEnd[gte]=2000-01-01&periodEnd[lt]=2000-01-02")
        .await;
    assert_eq!(v["totals"]["windows"], 0, "{v}");
    let (s, v) = lab
        .call(
            &lab.admin,
            reqwest::Method::GET,
            "/api/v1/usage?periodEnd[gte]=yesterday",
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    lab.stop().await;
}
