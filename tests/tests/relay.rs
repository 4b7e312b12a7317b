//! A site relay end to end (issue 23): the controller delegates 5 seats of `wifi` to site
//! `plant-7` through its admin API (reserved in its ledger: the tenant cannot use them
//! elsewhere); the relay runs with the site's own (embedded) broker and its link to the
//! controller cut; 8 real agents at the site. Exactly 5 are licensed and never more (sampled
//! throughout); one licensed agent is stopped and, once its lease has run out, its seat floats
//! to a waiting agent. An agent configured for another site, pointed at the same relay, is
//! refused by its own acceptance rules with the precise reason. When the link comes back, the
//! relay reports what it issued and the controller's ledger shows it (admin API). Revoking the
//! relay's key (the controller's existing revocation list, delivered on the site broker) cuts
//! the site off.

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use licd_protocol::{DeviceId, DeviceReport, LicenseId, PublicKey, ServiceName, Sku, TenantId};
use licd_stub::admin::token;
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::relay::pool::LeaseTerms;
use licd_stub::relay::run::{self, RelayConfig, RelayHandle};
use licd_stub::relay::site;
use licd_stub::StubHandle;
use licd_stub::{BrokerMode, Clock, Signer};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::site::{start_site_relay, SiteRelayOptions};
use licd_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
/// Relay lease: short, so a seat floats within seconds.
const LEASE: u64 = 6;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// Starts a relay in `dir` (key and delegation in place) with its own embedded broker and,
/// optionally, an uplink to the controller's broker.
fn start_relay_in(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    uplink: Option<BrokerMode>,
) -> RelayHandle {
    rt.block_on(run::start(RelayConfig {
        dir: dir.to_path_buf(),
        broker: BrokerMode::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        },
        terms: LeaseTerms {
            lease_secs: LEASE,
            grace_secs: 0,
        },
        clock: Clock::System,
        client_id: "relay-test".into(),
        connect_timeout: Duration::from_secs(10),
        uplink,
        uplink_report_every: Duration::from_secs(1),
    }))
    .unwrap()
}

/// A relay whose delegation `signer` issued directly (no controller ledger).
fn start_relay_with(
    rt: &tokio::runtime::Runtime,
    signer: &Signer,
    dir: &Path,
    seats: u32,
) -> RelayHandle {
    rt.block_on(start_site_relay(
        signer,
        dir,
        SiteRelayOptions::wifi(seats, LEASE),
    ))
    .unwrap()
}

/// The controller: `licd-stub` with its admin API, tenant `acme` owning 5 seats of `wifi`.
struct Controller {
    stub: Arc<StubHandle>,
    admin: AdminServer,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Controller {
    fn start(rt: &tokio::runtime::Runtime, signer: &Signer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(token::TOKEN_STORE_FILE);
        let token = token::create(&store, "ops", token::TokenKind::Admin, 1).unwrap();
        rt.block_on(async {
            let stub = Arc::new(
                licd_stub::Stub::start(licd_stub::StubConfig::for_tests(signer.clone()))
                    .await
                    .unwrap(),
            );
            let now = licd_tests::controller::unix_now();
            stub.add_customer(TenantId::new("acme").unwrap(), "Acme", CustomerKind::Tenant)
                .await
                .unwrap();
            stub.add_catalog_entry(CatalogEntry {
                sku: Sku::new("LIC-AP").unwrap(),
                name: "AP".into(),
                service: svc("wifi"),
                product_class: "ap".into(),
                vms_per_seat: None,
            })
            .await
            .unwrap();
            stub.add_subscription(Subscription {
                id: LicenseId::new("SUB-A").unwrap(),
                name: "A".into(),
                owner: Some(TenantId::new("acme").unwrap()),
                claim_key: None,
                start: now - 60,
                end: now + 3 * 86_400,
                entitlements: vec![Entitlement {
                    sku: Sku::new("LIC-AP").unwrap(),
                    limit: 5,
                }],
            })
            .await
            .unwrap();
            stub.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
                .await
                .unwrap();
            let admin = AdminServer::start(
                stub.clone(),
                AdminConfig::new("127.0.0.1:0".parse().unwrap(), store),
            )
            .await
            .unwrap();
            Self {
                stub,
                admin,
                token,
                http: reqwest::Client::new(),
                _dir: dir,
            }
        })
    }

    fn call(
        &self,
        rt: &tokio::runtime::Runtime,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        rt.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.admin.url()))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    }

    fn get(&self, rt: &tokio::runtime::Runtime, path: &str) -> (u16, Value) {
        self.call(rt, reqwest::Method::GET, path, None)
    }

    fn post(&self, rt: &tokio::runtime::Runtime, path: &str, body: Value) -> (u16, Value) {
        self.call(rt, reqwest::Method::POST, path, Some(body))
    }

    /// A device of acme reporting to the controller itself (not at the site): does it get
    /// a `wifi` seat?
    fn device_elsewhere_gets_a_seat(&self, rt: &tokio::runtime::Runtime) -> bool {
        let key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
        let report = DeviceReport {
            device: DeviceId::new("ap-hq").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            device_key: PublicKey::from(&key.verifying_key()),
            model: "M".into(),
            serial: "S".into(),
            product_class: "ap".into(),
            firmware_version: "1".into(),
            agent_version: "0.1".into(),
            vm_count: None,
            services_wanted: [svc("wifi")].into(),
            bundle_seq: 0,
            clock: licd_tests::controller::unix_now(),
            uptime: 1,
            clock_rollback: false,
        };
        rt.block_on(self.stub.apply(move |e, now| {
            let fx = e
                .handle_report(&report, now)
                .map_err(|_| licd_stub::engine::EngineError::SeqExhausted)?;
            Ok(((), fx))
        }))
        .unwrap();
        self.stub
            .with_engine(|e| {
                e.state().devices[&(
                    TenantId::new("acme").unwrap(),
                    DeviceId::new("ap-hq").unwrap(),
                )]
                    .seats
                    .contains_key(&svc("wifi"))
            })
            .unwrap()
    }
}

fn site_agent(port: u16, root: &str, device: &str, site: &str) -> Agent {
    let mut o = AgentOptions::plain(port, root);
    o.device_id = device.into();
    o.site = Some(site.into());
    o.log_level = "info".into();
    Agent::start(&o).unwrap()
}

fn licensed(agents: &[Agent]) -> usize {
    agents
        .iter()
        .filter(|a| a.state_of("wifi").as_deref() == Some("licensed"))
        .count()
}

#[test]
fn a_site_relay_licenses_exactly_its_pool_and_a_lapsed_seat_floats_to_a_waiting_device() {
    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let signer = Signer::ephemeral(now).unwrap();
    let root = signer.root_public_key().to_hex();
    let ctl = Controller::start(&rt, &signer);
    let dir = tempfile::tempdir().unwrap();
    let relay_key = site::init(dir.path()).unwrap();

    // The controller delegates 5 seats of wifi to plant-7 through its admin API: reserved in
    // its ledger, so the tenant cannot use them elsewhere.
    let (s, d) = ctl.post(
        &rt,
        "/api/v1/delegations",
        json!({
            "relayKey": relay_key.to_hex(), "customerId": "acme", "siteId": "plant-7",
            "pools": [{"service": "wifi", "seats": 5}], "maxLeaseSecs": 60, "validDays": 1
        }),
    );
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let (_, sub) = ctl.get(&rt, "/api/v1/subscriptions/SUB-A");
    assert_eq!(
        sub["entitlements"][0]["seats"],
        json!({"assigned": 0, "reserved": 5, "available": 0, "limit": 5}),
        "{sub}"
    );
    assert!(
        !ctl.device_elsewhere_gets_a_seat(&rt),
        "a reserved seat went elsewhere"
    );
    let (s, _) = ctl.post(
        &rt,
        "/api/v1/delegations",
        json!({
            "relayKey": relay_key.to_hex(), "customerId": "acme", "siteId": "plant-8",
            "pools": [{"service": "wifi", "seats": 1}], "validDays": 1
        }),
    );
    assert_eq!(s, 409, "the same seats delegated twice");
    // The armored delegation is carried to the site; the site's link to the controller is
    // cut (the relay's uplink goes through a cuttable TCP relay, cut from the start).
    let delegation = site::read_delegation(d["armored"].as_str().unwrap().as_bytes()).unwrap();
    site::install(dir.path(), delegation).unwrap();
    let ctl_port = ctl.stub.broker_addr().unwrap().port();
    let link = rt
        .block_on(licd_tests::relay::Relay::start(ctl_port))
        .unwrap();
    link.cut();
    let relay = start_relay_in(
        &rt,
        dir.path(),
        Some(BrokerMode::External {
            url: format!("mqtt://127.0.0.1:{}", link.port()),
            ca_file: None,
            credentials: None,
        }),
    );
    let port = relay.broker_addr().unwrap().port();

    let mut agents: Vec<Agent> = (0..8)
        .map(|n| site_agent(port, &root, &format!("ap-{n}"), "plant-7"))
        .collect();
    let mut max_seen = 0;
    wait_for(
        "5 of 8 agents licensed, 3 told the seats are exhausted",
        T,
        || {
            let n = licensed(&agents);
            max_seen = max_seen.max(n);
            let exhausted = agents
                .iter()
                .filter(|a| {
                    a.check("wifi")
                        .is_some_and(|c| c["reason"] == "seats_exhausted")
                })
                .count();
            n == 5 && exhausted == 3
        },
    )
    .unwrap();
    // One licensed agent goes away; its seat floats once its lease has run out.
    let gone = agents
        .iter()
        .position(|a| a.state_of("wifi").as_deref() == Some("licensed"))
        .unwrap();
    let mut stopped = agents.remove(gone);
    stopped.kill().unwrap();
    let killed_at = Instant::now();
    let waiting: Vec<usize> = (0..agents.len())
        .filter(|i| agents[*i].state_of("wifi").as_deref() != Some("licensed"))
        .collect();
    assert_eq!(waiting.len(), 3);
    wait_for("a waiting agent to get the floated seat", T, || {
        let n = licensed(&agents);
        max_seen = max_seen.max(n);
        n == 5
    })
    .unwrap();
    assert!(
        killed_at.elapsed() >= Duration::from_secs(LEASE - 1),
        "the seat floated before the stopped agent's lease could have ended"
    );
    // The site's link comes back while the sampling below goes on.
    link.heal();
    // Keep sampling through a few lease periods: never more than the pool.
    let until = Instant::now() + Duration::from_secs(2 * LEASE);
    while Instant::now() < until {
        let n = licensed(&agents);
        max_seen = max_seen.max(n);
        assert!(n <= 5, "{n} agents licensed on 5 seats");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(max_seen, 5, "never more than the pool, and the pool used");
    let wifi = svc("wifi");
    assert!(relay.occupied(&wifi, licd_tests::controller::unix_now()) <= 5);

    // Over the healed uplink the relay reports what it issued: the controller's ledger shows
    // the leases of the 6 devices that held a seat (the 5 first, the stopped one among them,
    // and the one the seat floated to), and no other device.
    let path = format!("/api/v1/delegations/{id}/leases");
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "the controller's ledger to show what the relay issued",
        T,
        || {
            let (s, leases) = ctl.get(&rt, &path);
            assert_eq!(s, 200, "{leases}");
            seen = leases
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["deviceId"].as_str().unwrap().to_string())
                .collect();
            seen.len() == 6
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    assert!(seen.iter().all(|d| d.starts_with("ap-")), "{seen:?}");

    // An agent at another site, on the same site broker, refuses the relay's bundle.
    let stranger = site_agent(port, &root, "ap-elsewhere", "plant-8");
    wait_for("the stranger to refuse the relay", T, || {
        stranger
            .status()
            .is_some_and(|s| s.to_string().contains("delegation_breach"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", stranger.status(), stranger.log()));
    assert_ne!(stranger.state_of("wifi").as_deref(), Some("licensed"));
    rt.block_on(relay.shutdown());
}

#[test]
fn revoking_the_relay_key_cuts_the_site_off_on_the_devices() {
    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let keys = tempfile::tempdir().unwrap();
    let key_dir = keys.path().join("keys");
    let root = licd_stub::keys::init(&key_dir, now).unwrap().to_hex();
    let signer = licd_stub::keys::load_signer(&key_dir).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay_with(&rt, &signer, dir.path(), 2);
    let port = relay.broker_addr().unwrap().port();
    let a = site_agent(port, &root, "ap-0", "plant-7");
    a.wait_state("wifi", "licensed", T).unwrap();

    // The controller's operator revokes the relay key; the list reaches the site's broker.
    let relay_id = site::public_key(dir.path()).unwrap().id();
    licd_stub::keys::trust::revoke(&key_dir, relay_id, now).unwrap();
    let messages = licd_stub::keys::trust::trust_messages(&key_dir).unwrap();
    rt.block_on(licd_stub::keys::trust::publish_retained(
        &format!("mqtt://127.0.0.1:{port}"),
        messages,
        Duration::from_secs(10),
    ))
    .unwrap();
    a.wait_state("wifi", "unlicensed", T).unwrap();
    assert_eq!(a.check("wifi").unwrap()["reason"], "revoked");
    // The relay keeps answering, and every bundle it sends is refused.
    let refused = wait_for("the agent to refuse the relay's next bundle", T, || {
        a.status()
            .is_some_and(|s| s.to_string().contains("signer_revoked"))
    });
    refused.unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", a.status(), a.log()));
    assert_eq!(a.state_of("wifi").as_deref(), Some("unlicensed"));
    rt.block_on(relay.shutdown());
}
