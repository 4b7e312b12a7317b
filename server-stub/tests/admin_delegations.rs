//! Site delegations through the admin API (issue 23): the controller signs a delegation and
//! reserves its seats in the ledger (visible in the subscription's counts, not available to
//! devices here, kept across a restart); returning it frees the seats for a waiting device;
//! revoking it puts the relay key on the revocation list.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{now, svc, test_config};
use licd_protocol::cert::CERT_LEN;
use licd_protocol::{
    Delegation, DeviceId, DeviceReport, LicenseId, PublicKey, SignerCertificate, Sku, TenantId,
};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::config::{KeySource, LedgerLocation};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::{Stub, StubHandle};
use serde_json::{json, Value};

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

struct Lab {
    stub: Arc<StubHandle>,
    server: AdminServer,
    http: reqwest::Client,
    token: String,
}

impl Lab {
    async fn start(dir: &std::path::Path) -> Self {
        let keys = dir.join("keys");
        if !keys.exists() {
            licd_stub::keys::init(&keys, now()).unwrap();
        }
        let store = dir.join(TOKEN_STORE_FILE);
        let name = format!("msp-{}", usize::from(store.exists()));
        let token = token::create(&store, &name, TokenKind::Admin, 1).unwrap();
        let mut config = test_config();
        config.keys = KeySource::Dir(keys);
        config.ledger = LedgerLocation::File(dir.join("ledger.db"));
        let stub = Arc::new(Stub::start(config).await.unwrap());
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
            token,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.url()))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn report(&self, device: &str, seed: u8) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let r = DeviceReport {
            device: DeviceId::new(device).unwrap(),
            tenant: tid("acme"),
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

    fn licensed(&self, device: &str) -> bool {
        self.stub
            .with_engine(|e| {
                e.state().devices[&(tid("acme"), DeviceId::new(device).unwrap())]
                    .seats
                    .contains_key(&svc("wifi"))
            })
            .unwrap()
    }

    async fn stop(self) {
        self.server.shutdown().await;
        if let Ok(stub) = Arc::try_unwrap(self.stub) {
            stub.shutdown().await;
        }
    }
}

fn relay_key(seed: u8) -> PublicKey {
    PublicKey::from(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key())
}

fn new_delegation(seed: u8, seats: u32) -> Value {
    json!({
        "relayKey": relay_key(seed).to_hex(),
        "customerId": "acme",
        "siteId": "plant-7",
        "pools": [{"service": "wifi", "seats": seats}],
        "maxLeaseSecs": 600,
        "validDays": 7
    })
}

async fn seats_of(lab: &Lab) -> Value {
    let (s, sub) = lab.get("/api/v1/subscriptions/SUB-A").await;
    assert_eq!(s, 200, "{sub}");
    sub["entitlements"][0]["seats"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_seats_are_reserved_across_a_restart_and_freed_by_return_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path()).await;
    lab.stub
        .add_customer(tid("msp"), "MSP", CustomerKind::Msp)
        .await
        .unwrap();
    lab.stub
        .add_customer(tid("acme"), "Acme", CustomerKind::Tenant)
        .await
        .unwrap();
    lab.stub
        .add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-AP").unwrap(),
            name: "AP".into(),
            service: svc("wifi"),
            product_class: "ap".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
    lab.stub
        .add_subscription(Subscription {
            id: LicenseId::new("SUB-A").unwrap(),
            name: "A".into(),
            owner: Some(tid("acme")),
            claim_key: None,
            start: now() - 60,
            end: now() + 60 * 86_400,
            entitlements: vec![Entitlement {
                sku: Sku::new("LIC-AP").unwrap(),
                limit: 3,
            }],
        })
        .await
        .unwrap();
    lab.stub
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
        .await
        .unwrap();

    // Delegate 2 of the 3 seats: signed by the controller's key, reserved from SUB-A.
    let (s, d) = lab.post("/api/v1/delegations", new_delegation(1, 2)).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["id"], "dlg-1");
    assert_eq!(d["status"], "active");
    assert_eq!(
        d["pools"][0]["reserved"],
        json!([{"subscriptionId": "SUB-A", "sku": "LIC-AP", "seats": 2}])
    );
    let bytes = hex::decode(d["delegation"].as_str().unwrap()).unwrap();
    let cert = SignerCertificate::parse(&bytes[..CERT_LEN]).unwrap();
    let delegation = Delegation::parse(&bytes[CERT_LEN..]).unwrap();
    delegation.verify().unwrap();
    assert_eq!(delegation.body.issuer, cert.body.subject);
    assert_eq!(delegation.body.subject, relay_key(1));
    assert_eq!(delegation.body.constraints.pools[0].seats, 2);
    assert_eq!(
        seats_of(&lab).await,
        json!({"assigned": 0, "reserved": 2, "available": 1, "limit": 3})
    );
    // More than is free is refused with the reason; nothing more is reserved.
    let (s, e) = lab.post("/api/v1/delegations", new_delegation(2, 2)).await;
    assert_eq!(s, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 are free"),
        "{e}"
    );
    assert_eq!(seats_of(&lab).await["reserved"], 2);
    // A malformed relay key is a 400, a valid-looking one that is not a key a 422.
    let mut bad = new_delegation(1, 1);
    bad["relayKey"] = json!("zz");
    assert_eq!(lab.post("/api/v1/delegations", bad).await.0, 400);

    // The tenant's devices here get only the seat left.
    lab.report("ap-1", 11).await;
    assert!(lab.licensed("ap-1"));
    lab.report("ap-2", 12).await;
    assert!(!lab.licensed("ap-2"), "a reserved seat went to a device");

    // Across a restart the reservation stands.
    lab.stop().await;
    let lab = Lab::start(dir.path()).await;
    let (s, list) = lab.get("/api/v1/delegations").await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["delegation"], d["delegation"]);
    assert_eq!(
        seats_of(&lab).await,
        json!({"assigned": 1, "reserved": 2, "available": 0, "limit": 3})
    );

    // Returned: the waiting device gets a seat at once; returning twice is a 409.
    let (s, r) = lab
        .post("/api/v1/delegations/dlg-1/return", json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "returned");
    assert!(lab.licensed("ap-2"));
    assert_eq!(seats_of(&lab).await["reserved"], 0);
    let (s, _) = lab
        .post("/api/v1/delegations/dlg-1/return", json!({}))
        .await;
    assert_eq!(s, 409);

    // Revoked: the relay key on the root-signed revocation list, the seat free.
    let (s, d2) = lab.post("/api/v1/delegations", new_delegation(3, 1)).await;
    assert_eq!(s, 201, "{d2}");
    assert_eq!(seats_of(&lab).await["reserved"], 1);
    let (s, v) = lab
        .post("/api/v1/delegations/dlg-2/revoke", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revocationListVersion"], 1);
    let list = licd_stub::keys::trust::current_revocations(&dir.path().join("keys"))
        .unwrap()
        .unwrap();
    assert_eq!(list.revoked, [relay_key(3).id()]);
    assert_eq!(seats_of(&lab).await["reserved"], 0);
    let (s, _) = lab
        .post("/api/v1/delegations/dlg-2/revoke", json!({}))
        .await;
    assert_eq!(s, 409);
    let (s, _) = lab.get("/api/v1/delegations/dlg-9").await;
    assert_eq!(s, 404);
    lab.stop().await;
}

/// Runs the `licd-stub` binary against the lab's admin API.
async fn cli(lab: &Lab, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let token = dir.join("cli.token");
    if !token.exists() {
        token::write_token_file(&token, &lab.token, false).unwrap();
    }
    let url = lab.server.url();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_licd-stub"))
            .args(&args)
            .env("LICD_STUB_ADMIN_URL", url)
            .env("LICD_STUB_TOKEN_FILE", token)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licd_stub_delegate_asks_the_controller_and_writes_a_file_the_relay_loads() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path()).await;
    for (id, kind) in [("msp", CustomerKind::Msp), ("acme", CustomerKind::Tenant)] {
        lab.stub.add_customer(tid(id), id, kind).await.unwrap();
    }
    lab.stub
        .add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-AP").unwrap(),
            name: "AP".into(),
            service: svc("wifi"),
            product_class: "ap".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
    lab.stub
        .add_subscription(Subscription {
            id: LicenseId::new("SUB-A").unwrap(),
            name: "A".into(),
            owner: Some(tid("msp")),
            claim_key: None,
            start: now() - 60,
            end: now() + 60 * 86_400,
            entitlements: vec![Entitlement {
                sku: Sku::new("LIC-AP").unwrap(),
                limit: 5,
            }],
        })
        .await
        .unwrap();
    let relay_dir = dir.path().join("relay");
    let key = licd_stub::relay::site::init(&relay_dir).unwrap().to_hex();
    let out = relay_dir.join(licd_stub::relay::site::DELEGATION_FILE);
    let o = cli(
        &lab,
        dir.path(),
        &[
            "delegate",
            "--relay-key",
            &key,
            "--tenant",
            "acme",
            "--site",
            "plant-7",
            "--service",
            "wifi=4",
            "--valid-days",
            "7",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("delegation dlg-1"));
    // The relay accepts the file: its key, signed by the certified controller key.
    let site = licd_stub::relay::site::Site::load(&relay_dir).unwrap();
    assert_eq!(site.delegation.body.constraints.pools[0].seats, 4);
    // The MSP's seats back the tenant's delegation (its own come first, it has none).
    let o = cli(&lab, dir.path(), &["delegations", "list", "--json"]).await;
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        list[0]["pools"][0]["reserved"][0]["subscriptionId"],
        "SUB-A"
    );
    // Too many seats: a one-line error with the reason, exit 1, no file.
    let o = cli(
        &lab,
        dir.path(),
        &[
            "delegate",
            "--relay-key",
            &key,
            "--tenant",
            "acme",
            "--site",
            "plant-7",
            "--service",
            "wifi=2",
            "--out",
            dir.path().join("no.hex").to_str().unwrap(),
        ],
    )
    .await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 are free"), "{err}");
    assert!(!dir.path().join("no.hex").exists());
    let o = cli(&lab, dir.path(), &["delegations", "return", "dlg-1"]).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("returned"));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_an_uplink_takes_a_renewed_delegation_the_controller_publishes() {
    use licd_stub::relay::pool::LeaseTerms;
    use licd_stub::relay::run::{self, RelayConfig};
    use licd_stub::relay::site;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(dir.path()).await;
    for (id, kind) in [("msp", CustomerKind::Msp), ("acme", CustomerKind::Tenant)] {
        lab.stub.add_customer(tid(id), id, kind).await.unwrap();
    }
    lab.stub
        .add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-AP").unwrap(),
            name: "AP".into(),
            service: svc("wifi"),
            product_class: "ap".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
    lab.stub
        .add_subscription(Subscription {
            id: LicenseId::new("SUB-A").unwrap(),
            name: "A".into(),
            owner: Some(tid("acme")),
            claim_key: None,
            start: now() - 60,
            end: now() + 60 * 86_400,
            entitlements: vec![Entitlement {
                sku: Sku::new("LIC-AP").unwrap(),
                limit: 10,
            }],
        })
        .await
        .unwrap();
    let relay_dir = dir.path().join("relay");
    let key = site::init(&relay_dir).unwrap().to_hex();
    let body = |seats: u32, days: u32| {
        json!({
            "relayKey": key, "customerId": "acme", "siteId": "plant-7",
            "pools": [{"service": "wifi", "seats": seats}], "validDays": days
        })
    };
    // The first delegation reaches the site as an armored file: `relay import`.
    let (s, d1) = lab.post("/api/v1/delegations", body(2, 7)).await;
    assert_eq!(s, 201, "{d1}");
    let armored = d1["armored"].as_str().unwrap();
    assert!(armored.starts_with("-----BEGIN LICD DELEGATION-----"));
    let file = dir.path().join("plant-7.asc");
    std::fs::write(&file, armored).unwrap();
    let o = cli(
        &lab,
        dir.path(),
        &[
            "relay",
            "import",
            file.to_str().unwrap(),
            "--dir",
            relay_dir.to_str().unwrap(),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A file for another relay's key is refused, and the one installed stays.
    let other = dir.path().join("other");
    site::init(&other).unwrap();
    let o = cli(
        &lab,
        dir.path(),
        &[
            "relay",
            "import",
            file.to_str().unwrap(),
            "--dir",
            other.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("this relay's key is"));

    let relay = run::start(RelayConfig {
        dir: relay_dir.clone(),
        broker: licd_stub::BrokerMode::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        },
        terms: LeaseTerms {
            lease_secs: 60,
            grace_secs: 0,
        },
        clock: licd_stub::Clock::System,
        client_id: "relay-uplink-test".into(),
        connect_timeout: std::time::Duration::from_secs(10),
        uplink: Some(licd_stub::BrokerMode::External {
            url: lab.stub.broker_url().to_string(),
            ca_file: None,
            credentials: None,
        }),
        uplink_report_every: std::time::Duration::from_millis(200),
    })
    .await
    .unwrap();
    assert_eq!(
        relay.delegation().unwrap().body.constraints.pools[0].seats,
        2
    );
    // The controller renews (3 seats, a longer window): the relay takes it over the uplink,
    // retained, and keeps it on disk.
    let (s, d2) = lab.post("/api/v1/delegations", body(3, 8)).await;
    assert_eq!(s, 201, "{d2}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while relay.delegation().unwrap().body.constraints.pools[0].seats != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not take the renewed delegation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let on_disk = std::fs::read_to_string(relay_dir.join(site::DELEGATION_FILE)).unwrap();
    assert_eq!(on_disk.trim(), d2["delegation"].as_str().unwrap());

    // A device at the site: the relay licenses it, reports the lease over the uplink, the
    // controller stores it under the renewal and acknowledges, and the relay forgets it.
    let mut dev =
        common::Device::connect_to(relay.broker_addr().unwrap(), "acme", "ap-9", 90).await;
    let r = dev.report(&["wifi"], 0);
    dev.send(&r, &dev.key.clone()).await;
    // Turning the device's event loop sends the report; the relay's bundle comes back.
    dev.wait_for(|p| matches!(p, rumqttc::Packet::Publish(_)))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let leases = loop {
        let (s, v) = lab.get("/api/v1/delegations/dlg-2/leases").await;
        assert_eq!(s, 200, "{v}");
        if v.as_array().is_some_and(|a| !a.is_empty()) && relay.unacknowledged() == 0 {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay's lease did not reach the controller: {v}, {} unacknowledged",
            relay.unacknowledged()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(leases[0]["deviceId"], "ap-9");
    assert_eq!(leases[0]["service"], "wifi");
    assert_eq!(leases[0]["n"], 1);
    relay.shutdown().await;
    lab.stop().await;
}
