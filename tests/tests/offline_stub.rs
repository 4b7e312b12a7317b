//! Licensing by file end to end: the real stub controller (ledger, seat rules) and real agent
//! processes that never reach a broker. A device is licensed by file and renews; a second
//! device finds no seat; the first releases, the controller frees the seat once (a replayed
//! receipt is refused) and the second gets it by file; then the second is given a broker and
//! continues from the seq it imported, with no gap.
//!
//! A device that speaks policy (the default, `extended_reports = "auto"`) writes extended
//! requests (kind 15): the grant file carries a policy bundle, and the usage the request
//! carried is acknowledged (the next request opens its window at it); a controller predating
//! policy refuses such a request cleanly, and a plain one from a device set to `false` works.
//!
//! The cross smoke (`cross/smoke.sh`) also runs
//! `a_device_with_no_network_is_licensed_by_a_grant_file_from_the_stub_cli` with `LICD_BIN`
//! set to an emulated firmware build: the grant file is made on the host by the real
//! `licd-stub offline grant` and imported under qemu with no network at all.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::{free_port, wait_for};

const T: Duration = Duration::from_secs(30);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// The stub with one wifi seat for tenant acme and auto-licensing on.
fn stub(rt: &tokio::runtime::Runtime) -> StubHandle {
    stub_speaking(rt, true)
}

/// [`stub`] with `policy_kinds` set (`false`: a controller predating PROTOCOL.md §17).
fn stub_speaking(rt: &tokio::runtime::Runtime, policy_kinds: bool) -> StubHandle {
    let now = licd_tests::controller::unix_now();
    let mut config = StubConfig::for_tests(Signer::ephemeral(now).unwrap());
    config.policy_kinds = policy_kinds;
    rt.block_on(async {
        let stub = Stub::start(config).await.unwrap();
        let acme = TenantId::new("acme").unwrap();
        stub.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp)
            .await
            .unwrap();
        stub.add_customer(acme.clone(), "Acme", CustomerKind::Tenant)
            .await
            .unwrap();
        stub.add_catalog_entry(CatalogEntry {
            sku: Sku::new("LIC-WIFI").unwrap(),
            name: "wifi".into(),
            service: svc("wifi"),
            product_class: "wireless".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
        stub.add_subscription(Subscription {
            id: LicenseId::new("SUB-1").unwrap(),
            name: "acme".into(),
            owner: Some(acme),
            claim_key: None,
            start: now - 60,
            end: now + 365 * 86_400,
            entitlements: vec![Entitlement {
                sku: Sku::new("LIC-WIFI").unwrap(),
                limit: 1,
            }],
        })
        .await
        .unwrap();
        stub.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
            .await
            .unwrap();
        stub
    })
}

/// A device with no broker (its URL points at a closed port).
fn offline_agent(device: &str, root_hex: &str) -> Agent {
    let mut o = AgentOptions::plain(free_port().unwrap(), root_hex);
    o.device_id = device.into();
    let a = Agent::start(&o).unwrap();
    wait_for("the socket", T, || a.status().is_some()).unwrap();
    a
}

fn cli_ok(a: &Agent, args: &[&str]) -> String {
    let (code, out, err) = a.cli(args).unwrap();
    assert_eq!(code, 0, "licd {args:?}: {out}{err}");
    out
}

/// `licd request` → the controller → `licd import`; returns the import's output.
fn license_by_file(rt: &tokio::runtime::Runtime, stub: &StubHandle, a: &Agent, n: u32) -> String {
    let req = a.state.join(format!("req{n}.licd"));
    let grant = a.state.join(format!("grant{n}.licd"));
    cli_ok(a, &["request", "--armor", "--out", req.to_str().unwrap()]);
    let file = rt
        .block_on(stub.offline_grant(&std::fs::read(&req).unwrap(), None))
        .unwrap();
    std::fs::write(&grant, &file.file).unwrap();
    cli_ok(a, &["import", grant.to_str().unwrap()])
}

fn seq(a: &Agent) -> u64 {
    a.status().unwrap()["bundle"]["seq"].as_u64().unwrap_or(0)
}

#[test]
fn devices_without_a_broker_are_licensed_renewed_released_and_transferred_by_file() {
    let rt = licd_tests::runtime();
    let stub = stub(&rt);
    let root = stub.root_public_key().to_hex();

    // Device 1: licensed by file, then renewed with a higher seq.
    let a = offline_agent("ap-1", &root);
    let out = license_by_file(&rt, &stub, &a, 1);
    assert!(out.contains("answers a request"), "{out}");
    assert_eq!(a.state_of("wifi").as_deref(), Some("licensed"));
    let first = seq(&a);
    license_by_file(&rt, &stub, &a, 2);
    assert!(seq(&a) > first, "renewal raises the seq");
    let lease = a.check("wifi").unwrap()["until"].as_u64().unwrap();
    let now = licd_tests::controller::unix_now();
    assert!(
        lease > now + 80 * 86_400,
        "the offline lease (90 days): until {lease}"
    );

    // Device 2: the only seat is taken.
    let mut b = offline_agent("ap-2", &root);
    license_by_file(&rt, &stub, &b, 1);
    assert_eq!(b.check("wifi").unwrap()["reason"], "seats_exhausted");

    // Device 1 releases; the controller frees the seat once.
    let receipt = a.state.join("release.licd");
    cli_ok(&a, &["release", "wifi", "--out", receipt.to_str().unwrap()]);
    assert_eq!(a.check("wifi").unwrap()["reason"], "released");
    let bytes = std::fs::read(&receipt).unwrap();
    let returned = rt.block_on(stub.offline_return(&bytes, None)).unwrap();
    assert_eq!(returned.freed, vec![svc("wifi")]);
    let replay = rt.block_on(stub.offline_return(&bytes, None)).unwrap_err();
    assert!(replay.to_string().contains("replay"), "{replay}");
    let dev1 = stub
        .with_engine(|e| {
            e.state().devices[&(TenantId::new("acme").unwrap(), "ap-1".parse().unwrap())]
                .offline
                .history
                .clone()
        })
        .unwrap();
    assert!(
        dev1.iter().any(|h| h
            .event
            .contains("released by receipt: wifi seat of SUB-1/LIC-WIFI")),
        "{dev1:?}"
    );

    // The released seat licenses device 2.
    license_by_file(&rt, &stub, &b, 2);
    assert_eq!(b.state_of("wifi").as_deref(), Some("licensed"));
    let imported = seq(&b);

    // Device 2 gets a broker: it continues from the seq it imported, without a gap.
    let port = stub.broker_addr().unwrap().port();
    let config = b.state.read_to_string_lossy("licd.toml");
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("url = ") {
                format!("url = \"mqtt://127.0.0.1:{port}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    b.state.write("licd.toml", config).unwrap();
    b.restart().unwrap();
    wait_for("a bundle over MQTT", T, || {
        b.status()
            .is_some_and(|s| s["bundle"]["seq"].as_u64() == Some(imported + 1))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    assert_eq!(b.state_of("wifi").as_deref(), Some("licensed"));
    rt.block_on(stub.shutdown());
}

/// `licd-stub --admin-url URL --token-file F offline grant REQUEST --out GRANT`, the real CLI
/// an operator runs at the controller; asserts it succeeds and says where the file goes.
fn stub_cli_grant(admin: &AdminServer, token_file: &Path, request: &Path, grant: &Path) {
    let out = Command::new(licd_tests::stub_bin().unwrap())
        .arg("--admin-url")
        .arg(admin.url())
        .arg("--token-file")
        .arg(token_file)
        .args(["offline", "grant"])
        .arg(request)
        .arg("--out")
        .arg(grant)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "licd-stub offline grant: {text}");
    assert!(text.contains("licd import"), "{text}");
}

/// Runs `licd import FILE` and returns its output and wall time (the whole process, as an
/// operator sees it; under qemu in the cross smoke).
fn timed_import(a: &Agent, grant: &Path) -> (String, Duration) {
    let start = Instant::now();
    let out = cli_ok(a, &["import", grant.to_str().unwrap()]);
    (out, start.elapsed())
}

/// Issue 18, the cross smoke's scenario: a device that has no network at all (its broker URL
/// is a closed port) is licensed by carrying files. `licd request` on the device, the real
/// `licd-stub offline grant` CLI against the controller's admin API on the host, `licd import`
/// on the device: first through the running daemon, then (renewal) with the daemon stopped,
/// straight into the cache; `licd check` agrees each time. Prints the import wall times.
#[test]
fn a_device_with_no_network_is_licensed_by_a_grant_file_from_the_stub_cli() {
    let rt = licd_tests::runtime();
    let stub = Arc::new(stub(&rt));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(TOKEN_STORE_FILE);
    let now = licd_tests::controller::unix_now();
    let tok = token::create(&store, "ops", TokenKind::Admin, now).unwrap();
    let token_file = dir.path().join("admin.token");
    token::write_token_file(&token_file, &tok, false).unwrap();
    let admin = rt
        .block_on(AdminServer::start(
            stub.clone(),
            AdminConfig::new("127.0.0.1:0".parse().unwrap(), store),
        ))
        .unwrap();

    let mut a = offline_agent("ap-1", &stub.root_public_key().to_hex());
    let (code, _, _) = a.cli(&["check", "wifi"]).unwrap();
    assert_ne!(code, 0, "not licensed before any file");

    // Through the running daemon: in force at once.
    let req = a.state.join("ap-1.req");
    let grant = dir.path().join("ap-1.grant");
    let out = cli_ok(&a, &["request", "--out", req.to_str().unwrap()]);
    assert!(out.contains("licd-stub offline grant"), "{out}");
    stub_cli_grant(&admin, &token_file, &req, &grant);
    let (out, running) = timed_import(&a, &grant);
    assert!(out.contains("the daemon enforces it now"), "{out}");
    let (code, v) = a.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, &v["state"]), (0, &"licensed".into()), "{v}");
    let first = seq(&a);
    assert!(first > 0);

    // Renewal with the daemon stopped: the import writes the cache under the state-dir lock,
    // and `licd check` answers from it.
    a.stop().unwrap();
    let req = a.state.join("ap-1-renew.req");
    let grant = dir.path().join("ap-1-renew.grant");
    cli_ok(&a, &["request", "--armor", "--out", req.to_str().unwrap()]);
    stub_cli_grant(&admin, &token_file, &req, &grant);
    let (out, stopped) = timed_import(&a, &grant);
    assert!(out.contains("written to the cache"), "{out}");
    let (code, v) = a.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, &v["state"]), (0, &"licensed".into()), "{v}");
    let (_, status, _) = a.cli(&["status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["bundle"]["seq"].as_u64().unwrap_or(0) > first,
        "the renewal raised the seq: {status}"
    );
    println!(
        "licd import wall time: daemon running {} ms, daemon stopped {} ms",
        running.as_millis(),
        stopped.as_millis()
    );
    rt.block_on(admin.shutdown());
}

/// The request file `path` (armored or not), opened as an extended activation request.
fn extended_request(path: &Path) -> licd_protocol::ExtendedActivationRequest {
    let bytes = std::fs::read(path).unwrap();
    let raw = licd_protocol::offline::decode_file(&bytes).unwrap();
    licd_protocol::policy::open_extended_activation_request(&raw)
        .unwrap_or_else(|e| panic!("{}: not an extended request: {e}", path.display()))
}

/// The kind of the bundle inside a grant file answering a request.
fn answer_bundle_kind(file: &[u8]) -> licd_protocol::MessageKind {
    let raw = licd_protocol::offline::decode_file(file).unwrap();
    let answer: licd_protocol::GrantAnswer = licd_protocol::Envelope::parse(&raw)
        .unwrap()
        .decode()
        .unwrap();
    licd_protocol::Envelope::parse(&answer.bundle).unwrap().kind
}

/// Issue 20: a device licensed only by file gets its policy and has its usage acknowledged.
/// `licd request` writes an extended request (report seq 1, window 0); the grant file carries
/// a policy bundle (the SKU's advisory strategy shows on the device) acknowledging report 1;
/// the renewal request — with the daemon stopped, so the acknowledgement was persisted by the
/// stopped import — carries report 2 in the window opened at 1, and the controller closes
/// window 0 at report 1 (counted once).
#[test]
fn a_device_licensed_only_by_file_gets_its_policy_and_its_usage_acknowledged() {
    use licd_stub::engine::policy::{Policy, Strategy};
    let rt = licd_tests::runtime();
    let stub = stub(&rt);
    let sku = Sku::new("LIC-WIFI").unwrap();
    let policy = Policy {
        strategy: Some(Strategy::Advisory),
        ..Policy::default()
    };
    rt.block_on(stub.apply(move |e, now| Ok(((), e.set_sku_policy(&sku, policy, now)?))))
        .unwrap();
    let mut a = offline_agent("ap-1", &stub.root_public_key().to_hex());

    let req = a.state.join("req1.licd");
    cli_ok(&a, &["request", "--armor", "--out", req.to_str().unwrap()]);
    let r1 = extended_request(&req);
    assert_eq!((r1.report.report_seq, r1.report.usage.window), (1, 0));
    let file = rt
        .block_on(stub.offline_grant(&std::fs::read(&req).unwrap(), None))
        .unwrap();
    assert_eq!(
        answer_bundle_kind(&file.file),
        licd_protocol::MessageKind::PolicyBundle
    );
    let grant = a.state.join("grant1.licd");
    std::fs::write(&grant, &file.file).unwrap();
    cli_ok(&a, &["import", grant.to_str().unwrap()]);
    let (code, v) = a.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, &v["state"]), (0, &"licensed".into()), "{v}");
    let st = a.status().unwrap();
    let wifi = st["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "wifi").cloned())
        .unwrap_or_default();
    assert_eq!(wifi["strategy"], "advisory", "{st}");

    // Renewal with the daemon stopped.
    a.stop().unwrap();
    let req = a.state.join("req2.licd");
    cli_ok(&a, &["request", "--out", req.to_str().unwrap()]);
    let r2 = extended_request(&req);
    assert_eq!(
        (r2.report.report_seq, r2.report.usage.window),
        (2, 1),
        "report 1 was acknowledged"
    );
    let file = rt
        .block_on(stub.offline_grant(&std::fs::read(&req).unwrap(), None))
        .unwrap();
    let grant = a.state.join("grant2.licd");
    std::fs::write(&grant, &file.file).unwrap();
    cli_ok(&a, &["import", grant.to_str().unwrap()]);
    let req = a.state.join("req3.licd");
    cli_ok(&a, &["request", "--out", req.to_str().unwrap()]);
    let r3 = extended_request(&req);
    assert_eq!(
        (r3.report.report_seq, r3.report.usage.window),
        (3, 2),
        "the stopped import persisted the acknowledgement of report 2"
    );
    let acme = TenantId::new("acme").unwrap();
    let windows = stub
        .usage_windows(&licd_stub::ledger::UsageQuery {
            tenant: Some(&acme),
            device: None,
            from: 0,
            to: u64::MAX,
        })
        .unwrap();
    let summary: Vec<_> = windows
        .iter()
        .map(|w| (w.window, w.last_seq, w.closed))
        .collect();
    assert!(summary.contains(&(0, 1, true)), "{summary:?}");
    assert!(summary.contains(&(1, 2, false)), "{summary:?}");
    rt.block_on(stub.shutdown());
}

/// An extended request (kind 15) at a controller predating policy is refused cleanly — the
/// unknown kind named, nothing changed — and the same device set to `extended_reports =
/// false` writes a plain request that the controller answers with a plain bundle.
#[test]
fn a_controller_predating_policy_refuses_an_extended_request_cleanly_and_answers_a_plain_one() {
    let rt = licd_tests::runtime();
    let stub = stub_speaking(&rt, false);
    let root = stub.root_public_key().to_hex();
    let mut a = offline_agent("ap-1", &root);
    let req = a.state.join("req.licd");
    cli_ok(&a, &["request", "--armor", "--out", req.to_str().unwrap()]);
    let e = rt
        .block_on(stub.offline_grant(&std::fs::read(&req).unwrap(), None))
        .unwrap_err();
    assert!(e.to_string().contains("unknown message kind 15"), "{e}");
    assert!(stub.devices(None).unwrap().is_empty(), "nothing changed");

    a.stop().unwrap();
    let cfg = std::fs::read_to_string(a.config_path()).unwrap();
    let cfg = if cfg.contains("[enforce]") {
        cfg.replace("[enforce]", "[enforce]\nextended_reports = false")
    } else {
        format!("{cfg}\n[enforce]\nextended_reports = false\n")
    };
    std::fs::write(a.config_path(), cfg).unwrap();
    cli_ok(&a, &["request", "--out", req.to_str().unwrap()]);
    let file = rt
        .block_on(stub.offline_grant(&std::fs::read(&req).unwrap(), None))
        .unwrap();
    assert_eq!(
        answer_bundle_kind(&file.file),
        licd_protocol::MessageKind::Grants
    );
    let grant = a.state.join("grant.licd");
    std::fs::write(&grant, &file.file).unwrap();
    cli_ok(&a, &["import", grant.to_str().unwrap()]);
    let (code, v) = a.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, &v["state"]), (0, &"licensed".into()), "{v}");
    rt.block_on(stub.shutdown());
}
