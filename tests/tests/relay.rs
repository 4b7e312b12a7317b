//! A site relay end to end (issue 23): the controller delegates 5 seats of `wifi` to site
//! `plant-7`; the relay runs with the site's own (embedded) broker and no link to the
//! controller; 8 real agents at the site. Exactly 5 are licensed and never more (sampled
//! throughout); one licensed agent is stopped and, once its lease has run out, its seat floats
//! to a waiting agent. An agent configured for another site, pointed at the same relay, is
//! refused by its own acceptance rules with the precise reason. Revoking the relay's key (the
//! controller's existing revocation list, delivered on the site broker) cuts the site off.

use std::path::Path;
use std::time::{Duration, Instant};

use licd_protocol::{Constraints, SeatPool, ServiceName, SiteId, TenantId};
use licd_stub::relay::pool::LeaseTerms;
use licd_stub::relay::run::{self, RelayConfig, RelayHandle};
use licd_stub::relay::site;
use licd_stub::{BrokerMode, Clock, Signer};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::wait_for;

const T: Duration = Duration::from_secs(60);
/// Relay lease: short, so a seat floats within seconds.
const LEASE: u64 = 6;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn start_relay(rt: &tokio::runtime::Runtime, signer: &Signer, dir: &Path) -> RelayHandle {
    start_relay_with(rt, signer, dir, 5)
}

fn start_relay_with(
    rt: &tokio::runtime::Runtime,
    signer: &Signer,
    dir: &Path,
    seats: u32,
) -> RelayHandle {
    let now = licd_tests::controller::unix_now();
    let relay_key = site::init(dir).unwrap();
    let constraints = Constraints {
        tenant: TenantId::new("acme").unwrap(),
        site: SiteId::new("plant-7").unwrap(),
        max_lease: 60,
        pools: vec![SeatPool {
            service: svc("wifi"),
            seats,
        }],
    };
    let bytes = site::delegate(signer, relay_key, constraints, now - 60, 3_600).unwrap();
    site::write_delegation_file(&dir.join(site::DELEGATION_FILE), &bytes).unwrap();
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
        uplink: None,
        uplink_report_every: Duration::from_secs(1),
    }))
    .unwrap()
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
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&rt, &signer, dir.path());
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
