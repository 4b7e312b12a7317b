//! The seed operations of issue 21 end to end: the real stub (embedded broker, ledger, rules,
//! admin API over HTTP) and real `licd` agents, each change checked on the devices with
//! `licd check --json`, not only in the API's answers.
//!
//! - tenant isolation: a tenant's admin token cannot touch another tenant's devices (the other
//!   agent stays licensed, its bundle unchanged) and does change its own.

use std::sync::Arc;
use std::time::Duration;

use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// A running stub with its admin API, the MSP's admin token and one admin token per tenant.
struct Lab {
    rt: tokio::runtime::Runtime,
    stub: Arc<StubHandle>,
    server: Option<AdminServer>,
    http: reqwest::Client,
    msp: String,
    tenant_tokens: Vec<(String, String)>,
    now: u64,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// MSP `msp`, `tenants`, SKU `LIC-WIFI` (service `wifi`, class `wireless`, the test
    /// agents' class); lease and grace as given.
    fn start(tenants: &[&str], lease: LeasePolicy) -> Self {
        let rt = licd_tests::runtime();
        let now = licd_tests::controller::unix_now();
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TOKEN_STORE_FILE);
        let msp = token::create(&store, "msp", TokenKind::Admin, now).unwrap();
        let tenant_tokens = tenants
            .iter()
            .map(|t| {
                let tok = token::create_scoped(
                    &store,
                    &format!("{t}-ops"),
                    TokenKind::Admin,
                    Some(&tid(t)),
                    now,
                )
                .unwrap();
                (t.to_string(), tok)
            })
            .collect();
        let mut config = StubConfig::for_tests(Signer::ephemeral(now).unwrap());
        config.lease = lease;
        let (stub, server) = rt.block_on(async {
            let stub = Arc::new(Stub::start(config).await.unwrap());
            stub.add_customer(tid("msp"), "MSP", CustomerKind::Msp)
                .await
                .unwrap();
            for t in tenants {
                stub.add_customer(tid(t), t, CustomerKind::Tenant)
                    .await
                    .unwrap();
            }
            stub.add_catalog_entry(CatalogEntry {
                sku: Sku::new("LIC-WIFI").unwrap(),
                name: "Wi-Fi".into(),
                service: svc("wifi"),
                product_class: "wireless".into(),
                vms_per_seat: None,
            })
            .await
            .unwrap();
            let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), store);
            let server = AdminServer::start(stub.clone(), config).await.unwrap();
            (stub, server)
        });
        Self {
            rt,
            stub,
            server: Some(server),
            http: reqwest::Client::new(),
            msp,
            tenant_tokens,
            now,
            _dir: dir,
        }
    }

    /// The lab of every test here: tenants `tenant-a` and `tenant-b` under the MSP, a 60 s
    /// lease and `grace_secs` of grace; `seats` adds the subscriptions, then auto-licensing
    /// for wifi is turned on for everyone.
    fn two_tenants(grace_secs: u64, seats: impl FnOnce(&Lab)) -> Self {
        let lab = Self::start(
            &["tenant-a", "tenant-b"],
            LeasePolicy {
                lease_secs: 60,
                grace_secs,
                ..LeasePolicy::default()
            },
        );
        seats(&lab);
        lab.auto_license_all();
        lab
    }

    fn token_of(&self, tenant: &str) -> &str {
        &self
            .tenant_tokens
            .iter()
            .find(|(t, _)| t == tenant)
            .unwrap()
            .1
    }

    fn subscription(&self, id: &str, owner: &str, seats: u32) {
        self.rt
            .block_on(self.stub.add_subscription(Subscription {
                id: LicenseId::new(id).unwrap(),
                name: id.into(),
                owner: Some(tid(owner)),
                claim_key: None,
                start: self.now - 60,
                end: self.now + 86_400,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-WIFI").unwrap(),
                    limit: seats,
                }],
            }))
            .unwrap();
    }

    fn auto_license_all(&self) {
        self.rt
            .block_on(
                self.stub
                    .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false),
            )
            .unwrap();
    }

    /// An agent of `tenant` named `device` wanting wifi.
    fn agent(&self, tenant: &str, device: &str) -> Agent {
        let port = self.stub.broker_addr().unwrap().port();
        let mut options = AgentOptions::plain(port, &self.stub.root_public_key().to_hex());
        options.tenant = tenant.into();
        options.device_id = device.into();
        options.services = vec!["wifi".into()];
        Agent::start(&options).unwrap()
    }

    /// [`Lab::agent`], waited on until `licd check wifi` says licensed; that answer too.
    fn licensed_agent(&self, tenant: &str, device: &str) -> (Agent, Value) {
        let agent = self.agent(tenant, device);
        let check = wait_check(&agent, &format!("{device} licensed"), licensed);
        (agent, check)
    }

    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.server.as_ref().unwrap().url());
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method.parse().unwrap(), url)
                .bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    fn stop(mut self) {
        let server = self.server.take().unwrap();
        self.rt.block_on(server.shutdown());
        let stub = self.stub.clone();
        drop(self.stub);
        if let Ok(stub) = Arc::try_unwrap(stub) {
            self.rt.block_on(stub.shutdown());
        }
    }
}

/// `licd check wifi --json` on the agent, until `pred` holds; the last answer.
fn wait_check(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    licd_tests::wait_for(what, T, || {
        last = agent
            .check_cli("wifi", &[])
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        pred(&last)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; last `licd check wifi --json`: {last}\n{}",
            agent.log()
        )
    });
    last
}

fn licensed(v: &Value) -> bool {
    v["state"] == "licensed"
}

#[test]
fn a_tenant_token_cannot_reach_another_tenant_s_device_and_does_reach_its_own() {
    let lab = Lab::two_tenants(60, |lab| {
        lab.subscription("SUB-A", "tenant-a", 2);
        lab.subscription("SUB-B", "tenant-b", 2);
    });
    let (a, _) = lab.licensed_agent("tenant-a", "ap-a1");
    let (b, before) = lab.licensed_agent("tenant-b", "ap-b1");
    let b_seq = |lab: &Lab| {
        let (s, d) = lab.call(&lab.msp, "GET", "/api/v1/devices/tenant-b/ap-b1", None);
        assert_eq!(s, 200, "{d}");
        d["bundle"]["seq"].as_u64().unwrap()
    };
    let seq = b_seq(&lab);

    // tenant-a's token against tenant-b: every change is answered as for nothing there.
    let tok_a = lab.token_of("tenant-a");
    let unassign_b = json!({"services": ["wifi"], "include_customers": ["tenant-b"]});
    for (method, path, body) in [
        ("POST", "/api/v1/auto-licensing/unassign", Some(unassign_b)),
        ("POST", "/api/v1/devices/tenant-b/ap-b1/reissue", None),
        (
            "POST",
            "/api/v1/licenses/bulkUpdate",
            Some(json!({"scope": "Only", "ids": ["SUB-B:LIC-WIFI"], "body": {"quantity": 0}})),
        ),
    ] {
        let (s, body) = lab.call(tok_a, method, path, body);
        assert!(
            s == 404 || body["failedCount"] == 1,
            "{method} {path}: {s} {body}"
        );
    }
    // An unassign for everyone would reach tenant-b: refused as a whole.
    let (s, body) = lab.call(
        tok_a,
        "POST",
        "/api/v1/auto-licensing/unassign",
        Some(json!({"services": ["wifi"]})),
    );
    assert_eq!(s, 403, "{body}");

    // tenant-a's own device: its token unassigns it, the agent sees the service revoked.
    let (s, body) = lab.call(
        tok_a,
        "POST",
        "/api/v1/auto-licensing/unassign",
        Some(json!({"services": ["wifi"], "include_customers": ["tenant-a"]})),
    );
    assert_eq!(s, 200, "{body}");
    let revoked = wait_check(&a, "ap-a1 unassigned", |v| v["state"] == "unlicensed");
    assert_eq!(revoked["reason"], "unassigned", "{revoked}");

    // tenant-b's agent: still licensed by the same bundle (nothing was re-issued to it).
    let after = b.check_cli("wifi", &[]).unwrap();
    assert_eq!(after.0, 0, "{}", after.1);
    assert_eq!(after.1["state"], "licensed");
    assert_eq!(after.1["license"], before["license"], "{}", after.1);
    assert_eq!(b_seq(&lab), seq, "tenant-b's bundle was not re-issued");
    lab.stop();
}

/// Meraki compliance per subscription (seed 002's shape), filtered by `organizationIds` and
/// `subscriptionIds`: a tenant with one seat and two APs — the second AP's agent is unlicensed
/// and the subscription lists one `LIC-WIFI` missing for class `wireless`; one more seat and
/// the second agent is licensed, the violation gone.
#[test]
fn compliance_per_subscription_names_what_the_devices_lack_and_clears_when_they_have_it() {
    let lab = Lab::two_tenants(3600, |lab| {
        lab.subscription("SUB-A", "tenant-a", 1);
        lab.subscription("SUB-B", "tenant-b", 1);
    });
    let (_a1, _) = lab.licensed_agent("tenant-a", "ap-a1");
    let a2 = lab.agent("tenant-a", "ap-a2");
    let short = wait_check(&a2, "ap-a2 refused a seat", |v| {
        v["reason"] == "seats_exhausted"
    });
    assert_eq!(short["state"], "unlicensed", "{short}");

    let statuses = |query: &str| {
        let (s, body) = lab.call(
            &lab.msp,
            "GET",
            &format!("/api/v1/subscriptions/compliance/statuses?{query}"),
            None,
        );
        assert_eq!(s, 200, "{body}");
        body
    };
    let all = statuses("organizationIds=tenant-a,tenant-b");
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscription"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["SUB-A", "SUB-B"], "{all}");
    let a = &all[0];
    assert_eq!(a["subscription"]["status"], "active");
    let v = &a["violations"]["byProductClass"];
    assert_eq!(v.as_array().unwrap().len(), 1, "{a}");
    assert_eq!(v[0]["productClass"], "wireless");
    assert_eq!(
        v[0]["missing"]["entitlements"],
        json!([{"sku": "LIC-WIFI", "quantity": 1}])
    );
    assert!(v[0]["gracePeriodEndsAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(all[1]["violations"]["byProductClass"], json!([]), "{all}");
    // subscriptionIds narrows (it used to be ignored); organizationIds too.
    assert_eq!(
        statuses("organizationIds=tenant-a&subscriptionIds=SUB-B"),
        json!([])
    );
    assert_eq!(
        statuses("organizationIds=tenant-b")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // tenant-b's token sees its own subscription only, and not tenant-a at all.
    let tok_b = lab.token_of("tenant-b");
    let (s, mine) = lab.call(
        tok_b,
        "GET",
        "/api/v1/subscriptions/compliance/statuses",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["subscription"]["id"], "SUB-B");
    let (s, _) = lab.call(
        tok_b,
        "GET",
        "/api/v1/subscriptions/compliance/statuses?organizationIds=tenant-a",
        None,
    );
    assert_eq!(s, 404);

    // One more seat: the paused service resumes, ap-a2 is licensed, SUB-A is compliant.
    let (s, body) = lab.call(
        &lab.msp,
        "POST",
        "/api/v1/licenses/bulkUpdate",
        Some(json!({"scope": "Only", "ids": ["SUB-A:LIC-WIFI"], "body": {"quantity": 2}})),
    );
    assert_eq!((s, &body["successCount"]), (200, &json!(1)), "{body}");
    // The pause lifts at the next change the engine sees: the device's next report.
    let (s, body) = lab.call(
        &lab.msp,
        "POST",
        "/api/v1/auto-licensing/enable",
        Some(json!({"services": ["wifi"]})),
    );
    assert_eq!(s, 200, "{body}");
    wait_check(&a2, "ap-a2 licensed", licensed);
    let a = statuses("organizationIds=tenant-a&subscriptionIds=SUB-A");
    assert_eq!(a[0]["violations"]["byProductClass"], json!([]), "{a}");
    lab.stop();
}

/// Meraki co-term licenses: the list with its filters, and a move of one seat to another
/// organization — the source keeps one seat for two devices, so the device assigned last goes
/// into grace with `term_ended` on the device and out of compliance; the other stays licensed;
/// the destination holds a new license with the moved seat.
#[test]
fn moving_a_co_term_license_away_puts_the_source_s_extra_device_into_grace() {
    let lab = Lab::two_tenants(3600, |lab| {
        lab.rt
            .block_on(lab.stub.add_subscription(Subscription {
                id: LicenseId::new("SUB-A").unwrap(),
                name: "Tenant A".into(),
                owner: None,
                claim_key: Some("Z2AA-BBBB-CCCC".into()),
                start: lab.now - 60,
                end: lab.now + 365 * 86_400,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-WIFI").unwrap(),
                    limit: 2,
                }],
            }))
            .unwrap();
        lab.rt
            .block_on(lab.stub.claim("Z2AA-BBBB-CCCC", &tid("tenant-a"), false))
            .unwrap();
    });
    let (a1, _) = lab.licensed_agent("tenant-a", "ap-a1");
    let (a2, _) = lab.licensed_agent("tenant-a", "ap-a2");

    let list = |org: &str, query: &str| {
        let (s, body) = lab.call(
            &lab.msp,
            "GET",
            &format!("/api/v1/organizations/{org}/licensing/coterm/licenses{query}"),
            None,
        );
        assert_eq!(s, 200, "{body}");
        body
    };
    let before = list("tenant-a", "");
    assert_eq!(before[0]["key"], "Z2AA-BBBB-CCCC", "{before}");
    assert_eq!(
        before[0]["counts"],
        json!([{"model": "LIC-WIFI", "count": 2}])
    );
    assert_eq!(before[0]["duration"], 365);
    assert_eq!(list("tenant-a", "?expired=true"), json!([]));
    assert_eq!(
        list("tenant-a", "?invalidated=false")
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (s, moved) = lab.call(
        &lab.msp,
        "POST",
        "/api/v1/organizations/tenant-a/licensing/coterm/licenses/move",
        Some(json!({
            "destination": {"organizationId": "tenant-b", "mode": "addDevices"},
            "licenses": [{"key": "Z2AA-BBBB-CCCC", "counts": [{"model": "LIC-WIFI", "count": 1}]}]
        })),
    );
    assert_eq!(s, 200, "{moved}");
    assert_eq!(
        moved["remainderLicenses"][0]["counts"],
        json!([{"model": "LIC-WIFI", "count": 1}]),
        "{moved}"
    );
    assert_eq!(moved["movedLicenses"][0]["organizationId"], "tenant-b");
    assert_eq!(
        moved["movedLicenses"][0]["counts"],
        json!([{"model": "LIC-WIFI", "count": 1}])
    );
    assert_eq!(list("tenant-b", "").as_array().unwrap().len(), 1);

    // The device assigned last (ap-a2) is past what tenant-a still holds: grace, with the
    // reason on the device; ap-a1 keeps running licensed.
    let grace = wait_check(&a2, "ap-a2 in grace", |v| v["state"] == "grace");
    assert_eq!(grace["reason"], "term_ended", "{grace}");
    assert_eq!(grace["may_run"], true, "{grace}");
    let (code, still) = a1.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, &still["state"]), (0, &json!("licensed")), "{still}");
    // ... and out of compliance: the source subscription lacks one seat.
    let (s, c) = lab.call(
        &lab.msp,
        "GET",
        "/api/v1/subscriptions/compliance/statuses?organizationIds=tenant-a",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(
        c[0]["violations"]["byProductClass"][0]["missing"]["entitlements"],
        json!([{"sku": "LIC-WIFI", "quantity": 1}]),
        "{c}"
    );
    // Moving more seats than the license has left is refused and changes nothing.
    let (s, body) = lab.call(
        &lab.msp,
        "POST",
        "/api/v1/organizations/tenant-a/licensing/coterm/licenses/move",
        Some(json!({
            "destination": {"organizationId": "tenant-b", "mode": "renew"},
            "licenses": [{"key": "Z2AA-BBBB-CCCC", "counts": [{"model": "LIC-WIFI", "count": 2}]}]
        })),
    );
    assert_eq!(s, 422, "{body}");
    lab.stop();
}

/// Snow computer assignments (seed 003): deleting one computer's assignment of a license
/// revokes the service on that device only — its agent reports it unlicensed, `unassigned` —
/// while the other device keeps its bundle; adding it again licenses the device again.
#[test]
fn deleting_a_computer_assignment_revokes_the_service_on_that_device_only() {
    let lab = Lab::start(
        &["tenant-a"],
        LeasePolicy {
            lease_secs: 60,
            grace_secs: 3600,
            ..LeasePolicy::default()
        },
    );
    lab.subscription("SUB-A", "tenant-a", 2);
    lab.auto_license_all();
    let a1 = lab.agent("tenant-a", "ap-a1");
    let a2 = lab.agent("tenant-a", "ap-a2");
    wait_check(&a1, "ap-a1 licensed", licensed);
    let before = wait_check(&a2, "ap-a2 licensed", licensed);
    let seq_of = |lab: &Lab, d: &str| {
        let (s, v) = lab.call(
            &lab.msp,
            "GET",
            &format!("/api/v1/devices/tenant-a/{d}"),
            None,
        );
        assert_eq!(s, 200, "{v}");
        v["bundle"]["seq"].as_u64().unwrap()
    };
    let a2_seq = seq_of(&lab, "ap-a2");
    let base = "/api/v1/licenses/SUB-A:LIC-WIFI/assignments/computers";
    let (s, list) = lab.call(&lab.msp, "GET", base, None);
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");

    // The tenant's own token removes it (tenant scoping applies to assignments too).
    let tok = lab.token_of("tenant-a");
    let (s, body) = lab.call(tok, "DELETE", &format!("{base}/tenant-a:ap-a1"), None);
    assert_eq!(s, 204, "{body}");
    let revoked = wait_check(&a1, "ap-a1 revoked", |v| v["state"] == "unlicensed");
    assert_eq!(revoked["reason"], "unassigned", "{revoked}");
    let after = a2.check_cli("wifi", &[]).unwrap();
    assert_eq!(after.1["state"], "licensed", "{}", after.1);
    assert_eq!(after.1["license"], before["license"]);
    assert_eq!(
        seq_of(&lab, "ap-a2"),
        a2_seq,
        "ap-a2's bundle was not re-issued"
    );

    // Assigned again by the operator: licensed again.
    let (s, body) = lab.call(
        tok,
        "POST",
        base,
        Some(json!({"computerId": "tenant-a:ap-a1", "quantity": 1})),
    );
    assert_eq!(s, 201, "{body}");
    wait_check(&a1, "ap-a1 licensed again", licensed);
    lab.stop();
}

/// Snow datacenter assignments (seed 003): a license with VM use rights assigned to a
/// datacenter licenses the hosts placed in it — their agents report licensed — and not a
/// host elsewhere; taking a host out of the datacenter revokes it there.
#[test]
fn a_datacenter_assignment_with_vm_use_rights_licenses_the_hosts_placed_in_it() {
    let lab = Lab::start(
        &["tenant-a"],
        LeasePolicy {
            lease_secs: 60,
            grace_secs: 3600,
            ..LeasePolicy::default()
        },
    );
    lab.rt.block_on(async {
        lab.stub
            .add_catalog_entry(CatalogEntry {
                sku: Sku::new("LIC-WIFI-DC").unwrap(),
                name: "Wi-Fi, datacenter (VM use rights)".into(),
                service: svc("wifi"),
                product_class: "wireless".into(),
                vms_per_seat: Some(16),
            })
            .await
            .unwrap();
        lab.stub
            .add_subscription(Subscription {
                id: LicenseId::new("SUB-DC").unwrap(),
                name: "Datacenter".into(),
                owner: Some(tid("tenant-a")),
                claim_key: None,
                start: lab.now - 60,
                end: lab.now + 86_400,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-WIFI-DC").unwrap(),
                    limit: 1,
                }],
            })
            .await
            .unwrap();
    });
    let hosts: Vec<Agent> = ["h-1", "h-2", "h-3"]
        .iter()
        .map(|d| lab.agent("tenant-a", d))
        .collect();
    for h in &hosts {
        // Its first bundle (nothing for it yet) says the controller knows the host.
        let v = wait_check(h, "host reported, not entitled", |v| {
            v["reason"] == "not_entitled"
        });
        assert_eq!(v["state"], "unlicensed", "{v}");
    }
    for d in ["h-1", "h-2"] {
        let (s, body) = lab.call(
            &lab.msp,
            "PUT",
            &format!("/api/v1/devices/tenant-a/{d}/datacenter"),
            Some(json!({"datacenterId": "dc-north"})),
        );
        assert_eq!(s, 200, "{body}");
    }
    let (s, body) = lab.call(
        &lab.msp,
        "POST",
        "/api/v1/licenses/SUB-DC:LIC-WIFI-DC/assignments/datacenters",
        Some(json!({"datacenterId": "dc-north", "quantity": 1})),
    );
    assert_eq!(s, 201, "{body}");
    for (h, d) in hosts[..2].iter().zip(["h-1", "h-2"]) {
        wait_check(h, "host in dc-north licensed", licensed);
        let (s, v) = lab.call(
            &lab.msp,
            "GET",
            &format!("/api/v1/devices/tenant-a/{d}"),
            None,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["services"][0]["subscriptionId"], "SUB-DC", "{v}");
        // The datacenter's VM use rights cover the host's VMs: no allowance per host.
        assert_eq!(v["services"][0]["vmAllowance"], Value::Null, "{v}");
    }
    let v = hosts[2].check_cli("wifi", &[]).unwrap().1;
    assert_eq!(
        v["state"], "unlicensed",
        "h-3 is not in the datacenter: {v}"
    );
    let (s, a) = lab.call(
        &lab.msp,
        "GET",
        "/api/v1/licenses/SUB-DC:LIC-WIFI-DC/assignments/datacenters/dc-north",
        None,
    );
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["coveredComputers"],
        json!(["tenant-a:h-1", "tenant-a:h-2"])
    );
    // h-2 leaves the datacenter: its agent is told at once.
    let (s, body) = lab.call(
        &lab.msp,
        "DELETE",
        "/api/v1/devices/tenant-a/h-2/datacenter",
        None,
    );
    assert_eq!(s, 200, "{body}");
    wait_check(&hosts[1], "h-2 out of the datacenter", |v| {
        v["state"] == "unlicensed"
    });
    assert_eq!(
        hosts[0].check_cli("wifi", &[]).unwrap().1["state"],
        "licensed"
    );
    lab.stop();
}
