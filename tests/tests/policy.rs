//! Licensing policy end to end (issue 20): the real stub controller (ledger, policy per SKU,
//! usage windows) and real `licd` processes, devices checked with `licd check --json`. Time is
//! injected the way the other end-to-end tests do it: terms that end seconds after the start,
//! a grace of seconds, a short lease so devices report often.
//!
//! - an advisory service runs past grace: non-compliant on the device (still may run) and in
//!   the controller's compliance (reported by the device);
//! - an immediate service stops at its term end while a restrict one of the same term is in
//!   grace;
//! - 125 % tolerance on a 4-VM allowance: 4 licensed, 5 licensed with an overage warning, 6 in
//!   grace, on the device and in compliance;
//! - usage (grace seconds) survives a kill -9 of the agent and a controller restart and is
//!   counted once;
//! - an expiring-soon hook fires exactly once per threshold, across an agent restart;
//! - an agent with the default `extended_reports = "auto"` gets policy bundles from the stub
//!   and falls back to plain reports (licensed, once, also across a restart) with a stub
//!   configured as a controller predating §17 (`policy_kinds = false`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::config::{BrokerMode, LedgerLocation};
use licd_stub::engine::policy::{Policy, Strategy};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::ledger::UsageQuery;
use licd_stub::{KeySource, Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::controller::unix_now;
use licd_tests::mosquitto::{Mosquitto, MosquittoConfig};
use licd_tests::wait_for;
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

/// What a lab needs: SKUs (sku, service, VMs per seat, policy), the term's end from now, the
/// lease and grace, and where the broker and ledger are.
struct Lab<'a> {
    skus: &'a [(&'a str, &'a str, Option<u32>, Policy)],
    term_ends_in: u64,
    lease: u64,
    grace: u64,
    broker: Option<String>,
    ledger: Option<PathBuf>,
    signer: Signer,
}

impl Lab<'_> {
    fn config(&self) -> StubConfig {
        let mut config = StubConfig::for_tests(self.signer.clone());
        config.keys = KeySource::Signer(Box::new(self.signer.clone()));
        config.lease = LeasePolicy {
            lease_secs: self.lease,
            grace_secs: self.grace,
            ..LeasePolicy::default()
        };
        if let Some(url) = &self.broker {
            config.broker = BrokerMode::External {
                url: url.clone(),
                ca_file: None,
                credentials: None,
            };
        }
        if let Some(path) = &self.ledger {
            config.ledger = LedgerLocation::File(path.clone());
        }
        config
    }

    /// Starts the stub and sets up MSP, tenant acme, the SKUs with their policies and one
    /// subscription of acme with 5 seats of each, auto-licensing on.
    fn start(&self, rt: &tokio::runtime::Runtime) -> StubHandle {
        self.start_speaking(rt, true)
    }

    /// [`Lab::start`] with `policy_kinds` set (`false`: a controller predating §17).
    fn start_speaking(&self, rt: &tokio::runtime::Runtime, policy_kinds: bool) -> StubHandle {
        // The agent binary is built (once) before the term starts counting: a term of seconds
        // must not run out while cargo builds.
        licd_tests::licd_bin().unwrap();
        let now = unix_now();
        let mut config = self.config();
        config.policy_kinds = policy_kinds;
        rt.block_on(async {
            let stub = Stub::start(config).await.unwrap();
            stub.add_customer(TenantId::new("msp").unwrap(), "MSP", CustomerKind::Msp)
                .await
                .unwrap();
            stub.add_customer(acme(), "Acme", CustomerKind::Tenant)
                .await
                .unwrap();
            for (sku, service, vms, _) in self.skus {
                stub.add_catalog_entry(CatalogEntry {
                    sku: Sku::new(*sku).unwrap(),
                    name: (*sku).into(),
                    service: svc(service),
                    product_class: "wireless".into(),
                    vms_per_seat: *vms,
                })
                .await
                .unwrap();
            }
            stub.add_subscription(Subscription {
                id: LicenseId::new("SUB-1").unwrap(),
                name: "acme".into(),
                owner: Some(acme()),
                claim_key: None,
                start: now - 60,
                end: now + self.term_ends_in,
                entitlements: self
                    .skus
                    .iter()
                    .map(|(sku, ..)| Entitlement {
                        sku: Sku::new(*sku).unwrap(),
                        limit: 5,
                    })
                    .collect(),
            })
            .await
            .unwrap();
            for (sku, _, _, policy) in self.skus {
                let (sku, policy) = (Sku::new(*sku).unwrap(), policy.clone());
                stub.apply(move |e, now| Ok(((), e.set_sku_policy(&sku, policy, now)?)))
                    .await
                    .unwrap();
            }
            let services: Vec<ServiceName> = self.skus.iter().map(|(_, s, ..)| svc(s)).collect();
            stub.enable_auto_licensing(&Selection::all(), &services, false)
                .await
                .unwrap();
            stub
        })
    }

    /// Starts the stub again over the same ledger, keys and broker (a controller restart).
    fn restart(&self, rt: &tokio::runtime::Runtime) -> StubHandle {
        rt.block_on(Stub::start(self.config())).unwrap()
    }
}

fn strategy(s: Strategy) -> Policy {
    Policy {
        strategy: Some(s),
        ..Policy::default()
    }
}

/// An agent that sends extended reports (so it gets policy bundles), with a VM probe reading
/// `vms` every second when given.
fn agent(stub_port: u16, root: &str, services: &[&str], vms: Option<&Path>) -> Agent {
    let mut o = AgentOptions::plain(stub_port, root);
    o.services = services.iter().map(|s| s.to_string()).collect();
    o.extra = "[enforce]\nextended_reports = true\nvm_probe_interval_secs = 1\n".into();
    if let Some(file) = vms {
        o.extra.push_str(&format!(
            "\n[vm]\nprobe = \"command\"\nargv = [\"cat\", {:?}]\ntimeout_secs = 5\n",
            file.display().to_string()
        ));
    }
    Agent::start(&o).unwrap()
}

/// The service's entry in `licd status`.
fn status_of(a: &Agent, service: &str) -> Value {
    let s = a.status().unwrap_or_default();
    s["services"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|x| x["service"] == service || x["name"] == service)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// `licd check SERVICE --json`: (exit code, answer).
fn check(a: &Agent, service: &str) -> (i32, Value) {
    a.check_cli(service, &[]).unwrap()
}

fn wait_check(a: &Agent, service: &str, what: &str, pred: impl Fn(i32, &Value) -> bool) -> Value {
    wait_for(what, T, || {
        let (code, v) = check(a, service);
        pred(code, &v)
    })
    .unwrap_or_else(|e| panic!("{e}: last {:?}\n{}", check(a, service), a.log()));
    check(a, service).1
}

#[test]
fn an_advisory_service_runs_past_grace_and_shows_non_compliant_on_the_device_and_in_compliance() {
    let rt = licd_tests::runtime();
    let lab = Lab {
        skus: &[("LIC-WIFI", "wifi", None, strategy(Strategy::Advisory))],
        term_ends_in: 15,
        // Short: the device reports every 3 s, so its non-compliance reaches the controller.
        lease: 6,
        grace: 3,
        broker: None,
        ledger: None,
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    let stub = lab.start(&rt);
    let port = stub.broker_addr().unwrap().port();
    let a = agent(port, &stub.root_public_key().to_hex(), &["wifi"], None);
    wait_check(&a, "wifi", "wifi licensed (advisory)", |code, v| {
        code == 0 && v["state"] == "licensed"
    });
    let st = status_of(&a, "wifi");
    assert_eq!(st["strategy"], "advisory", "{st}");
    // Term end, then 3 s of grace: non-compliant, and it still may run (exit 0).
    let v = wait_check(&a, "wifi", "wifi non-compliant", |_, v| {
        v["state"] == "non_compliant"
    });
    let (code, _) = check(&a, "wifi");
    assert_eq!(code, 0, "advisory: licensed with a warning, exit 0: {v}");
    assert_eq!(v["may_run"], true, "{v}");
    assert_eq!(v["reason"], "term_ended", "{v}");
    // The device says so in its next report; the controller's compliance shows it.
    wait_for("the controller to see the device non-compliant", T, || {
        stub.compliance(&acme()).is_ok_and(|c| {
            !c.compliant
                && c.device_reported.iter().any(|r| {
                    r.device.as_str() == "ap-1"
                        && r.service.as_str() == "wifi"
                        && r.report.standing == "non_compliant"
                        && r.report.reason.as_deref() == Some("term_ended")
                })
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", stub.compliance(&acme()), a.log()));
    rt.block_on(stub.shutdown());
}

#[test]
fn an_immediate_service_stops_at_term_end_while_a_restrict_one_of_the_same_term_is_in_grace() {
    let rt = licd_tests::runtime();
    let lab = Lab {
        skus: &[
            ("LIC-WIFI", "wifi", None, strategy(Strategy::Immediate)),
            ("LIC-POE", "poe", None, Policy::default()),
        ],
        term_ends_in: 15,
        lease: 60,
        grace: 120,
        broker: None,
        ledger: None,
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    let stub = lab.start(&rt);
    let port = stub.broker_addr().unwrap().port();
    let a = agent(
        port,
        &stub.root_public_key().to_hex(),
        &["wifi", "poe"],
        None,
    );
    wait_check(&a, "wifi", "wifi licensed (immediate)", |code, v| {
        code == 0 && v["state"] == "licensed"
    });
    let st = status_of(&a, "wifi");
    assert_eq!(st["strategy"], "immediate", "{st}");
    let v = wait_check(&a, "wifi", "wifi unlicensed at term end", |_, v| {
        v["state"] == "unlicensed"
    });
    assert_eq!(v["reason"], "term_ended", "{v}");
    assert_eq!(v["may_run"], false, "{v}");
    let (code, _) = check(&a, "wifi");
    assert_ne!(code, 0, "an unlicensed service is a non-zero exit");
    // The restrict service of the same term has its grace (120 s).
    let (code, p) = check(&a, "poe");
    assert_eq!((code, p["state"].as_str()), (0, Some("grace")), "{p}");
    assert_eq!(p["reason"], "term_ended", "{p}");
    rt.block_on(stub.shutdown());
}

#[test]
fn a_125_percent_tolerance_licenses_4_vms_warns_at_5_and_starts_grace_at_6() {
    let rt = licd_tests::runtime();
    let lab = Lab {
        skus: &[(
            "LIC-HV-4",
            "hv",
            Some(4),
            Policy {
                overage_tolerance_pct: Some(125),
                ..Policy::default()
            },
        )],
        term_ends_in: 86_400,
        lease: 60,
        grace: 300,
        broker: None,
        ledger: None,
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    let stub = lab.start(&rt);
    let port = stub.broker_addr().unwrap().port();
    let vms = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(vms.path(), "4\n").unwrap();
    let a = agent(
        port,
        &stub.root_public_key().to_hex(),
        &["hv"],
        Some(vms.path()),
    );
    let overage = |_: &Value| {
        status_of(&a, "hv")["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["warning"] == "overage"))
    };

    // 4 VMs: licensed, no warning; the controller sees nothing wrong.
    let v = wait_check(&a, "hv", "hv licensed at 4 VMs", |code, v| {
        code == 0 && v["state"] == "licensed"
    });
    assert!(!overage(&v), "{v}");
    wait_for("the controller to see 4 VMs", T, || {
        stub.compliance(&acme()).is_ok_and(|c| {
            c.vm_overuse.is_empty() && c.vm_overage_warnings.is_empty() && c.compliant
        }) && stub.devices(Some(&acme())).is_ok_and(|d| {
            d.iter()
                .any(|d| format!("{d:?}").contains("vm_count: Some(4)"))
        })
    })
    .unwrap();

    // 5 VMs: within 125 % of 4 — licensed with an overage warning, on both sides.
    std::fs::write(vms.path(), "5\n").unwrap();
    let v = wait_check(&a, "hv", "an overage warning at 5 VMs", |code, v| {
        code == 0 && v["state"] == "licensed" && overage(v)
    });
    let st = status_of(&a, "hv");
    let w = st["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warning"] == "overage")
        .unwrap();
    assert_eq!(
        (w["vms"].as_u64(), w["tolerated"].as_u64()),
        (Some(5), Some(5)),
        "{v} {w}"
    );
    wait_for("the controller's overage warning at 5 VMs", T, || {
        stub.compliance(&acme()).is_ok_and(|c| {
            c.compliant
                && c.vm_overuse.is_empty()
                && c.vm_overage_warnings
                    .iter()
                    .any(|o| o.vm_count == 5 && o.allowance == 4 && o.tolerated == 5)
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", stub.compliance(&acme())));

    // 6 VMs: above the tolerance — grace for over_vm_allowance, over-use at the controller.
    std::fs::write(vms.path(), "6\n").unwrap();
    let v = wait_check(&a, "hv", "grace at 6 VMs", |_, v| v["state"] == "grace");
    assert_eq!(v["reason"], "over_vm_allowance", "{v}");
    wait_for("the controller's over-use at 6 VMs", T, || {
        stub.compliance(&acme()).is_ok_and(|c| {
            !c.compliant
                && c.vm_overuse
                    .iter()
                    .any(|o| o.vm_count == 6 && o.tolerated == 5)
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", stub.compliance(&acme())));
    rt.block_on(stub.shutdown());
}

/// Grace seconds of `hv` the controller has recorded for ap-1, summed over its windows.
fn recorded_grace(stub: &StubHandle) -> u64 {
    let t = acme();
    stub.usage_windows(&UsageQuery {
        tenant: Some(&t),
        device: None,
        from: 0,
        to: u64::MAX,
    })
    .unwrap()
    .iter()
    .map(|w| {
        w.counters
            .grace_seconds
            .get(&svc("hv"))
            .copied()
            .unwrap_or(0)
    })
    .sum()
}

#[test]
fn usage_survives_a_kill_9_of_the_agent_and_a_controller_restart_and_is_counted_once() {
    let rt = licd_tests::runtime();
    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab {
        skus: &[("LIC-HV-4", "hv", Some(4), Policy::default())],
        term_ends_in: 86_400,
        // Reports every 2 s (half the lease): usage reaches the controller often.
        lease: 4,
        grace: 3600,
        broker: Some(broker.url()),
        ledger: Some(dir.path().join("ledger.db")),
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    let stub = lab.start(&rt);
    let vms = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(vms.path(), "6\n").unwrap();
    let mut a = agent(
        broker.port(),
        &stub.root_public_key().to_hex(),
        &["hv"],
        Some(vms.path()),
    );
    wait_check(&a, "hv", "grace at 6 VMs", |_, v| v["state"] == "grace");
    let grace_started = unix_now();
    wait_for("usage recorded", T, || recorded_grace(&stub) >= 3)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", recorded_grace(&stub), a.log()));
    let before_kill = recorded_grace(&stub);

    // kill -9 of the agent: it comes back with its persisted usage window.
    a.kill().unwrap();
    a.restart().unwrap();
    wait_for("usage recorded after the agent's restart", T, || {
        recorded_grace(&stub) >= before_kill + 3
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", recorded_grace(&stub), a.log()));

    // Controller restart over the same ledger: nothing lost, and the device's windows go on.
    let before_restart = recorded_grace(&stub);
    rt.block_on(stub.shutdown());
    let stub = lab.restart(&rt);
    assert!(
        recorded_grace(&stub) >= before_restart,
        "the ledger kept the usage: {} < {before_restart}",
        recorded_grace(&stub)
    );
    wait_for("usage recorded after the controller's restart", T, || {
        recorded_grace(&stub) >= before_restart + 3
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", recorded_grace(&stub), a.log()));

    // Counted once: never more grace than the wall clock has run since grace started (a
    // window counted twice would overshoot by whole windows).
    let total = recorded_grace(&stub);
    let elapsed = unix_now() - grace_started + 2;
    assert!(
        total <= elapsed,
        "recorded {total} s of grace in {elapsed} s: something counted twice"
    );
    let windows = stub
        .usage_windows(&UsageQuery {
            tenant: Some(&acme()),
            device: None,
            from: 0,
            to: u64::MAX,
        })
        .unwrap();
    assert!(
        windows.iter().filter(|w| w.closed).count() >= 1,
        "acknowledgements closed windows: {windows:?}"
    );
    assert_eq!(
        windows.iter().filter(|w| !w.closed).count(),
        1,
        "one open window: {windows:?}"
    );
    rt.block_on(stub.shutdown());
}

#[test]
fn an_expiring_soon_hook_fires_exactly_once_per_threshold_across_a_restart() {
    let rt = licd_tests::runtime();
    let warn = Policy {
        warn_before: Some(vec![20, 10]),
        ..Policy::default()
    };
    let lab = Lab {
        skus: &[("LIC-WIFI", "wifi", None, warn)],
        // Thresholds at 10 s and 20 s after the start; the term ends at 30 s.
        term_ends_in: 30,
        lease: 60,
        grace: 120,
        broker: None,
        ledger: None,
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    let stub = lab.start(&rt);
    let port = stub.broker_addr().unwrap().port();
    let hooks = tempfile::NamedTempFile::new().unwrap();
    let mut o = AgentOptions::plain(port, &stub.root_public_key().to_hex());
    o.extra = format!(
        "[enforce]\nextended_reports = true\n\n[hooks]\non_change = [\"sh\", \"-c\", \
         \"[ \\\"$LICD_EVENT\\\" = expiring_soon ] && echo $LICD_SERVICE $LICD_THRESHOLD_SECS >> {} || true\"]\n",
        hooks.path().display()
    );
    let mut a = Agent::start(&o).unwrap();
    let fired = || std::fs::read_to_string(hooks.path()).unwrap_or_default();
    wait_check(&a, "wifi", "wifi licensed with warnings", |code, v| {
        code == 0 && v["state"] == "licensed"
    });
    wait_for("the 20 s threshold's hook", T, || {
        fired().contains("wifi 20")
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", fired(), a.log()));
    // A restart between the thresholds: the first does not fire again, the second fires once.
    assert!(a.stop().unwrap());
    a.restart().unwrap();
    wait_for("the 10 s threshold's hook", T, || {
        fired().contains("wifi 10")
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", fired(), a.log()));
    // Up to the term's end: ticks and reports in between fire nothing more.
    wait_check(&a, "wifi", "wifi in grace after the term", |_, v| {
        v["state"] == "grace"
    });
    let lines: Vec<String> = fired().lines().map(str::to_owned).collect();
    assert_eq!(lines, vec!["wifi 20", "wifi 10"], "{}", a.log());
    rt.block_on(stub.shutdown());
}

/// An agent with the default `extended_reports` ("auto"), reporting every 10 s at most.
fn auto_agent(stub_port: u16, root: &str) -> Agent {
    let mut o = AgentOptions::plain(stub_port, root);
    o.services = vec!["wifi".into()];
    o.extra = "[enforce]\nreport_interval_secs = 10\n".into();
    Agent::start(&o).unwrap()
}

fn reports_of(a: &Agent) -> Value {
    a.status().unwrap_or_default()["reports"].clone()
}

#[test]
fn an_agent_left_at_auto_gets_policy_bundles_from_the_stub_and_keeps_sending_extended_reports() {
    let rt = licd_tests::runtime();
    let lab = Lab {
        skus: &[("LIC-WIFI", "wifi", None, strategy(Strategy::Advisory))],
        term_ends_in: 86_400,
        lease: 60,
        grace: 60,
        broker: None,
        ledger: None,
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    let stub = lab.start(&rt);
    let port = stub.broker_addr().unwrap().port();
    let mut a = auto_agent(port, &stub.root_public_key().to_hex());
    wait_check(&a, "wifi", "wifi licensed", |code, v| {
        code == 0 && v["state"] == "licensed"
    });
    // The policy came in the grant: the controller speaks policy.
    wait_for("a policy bundle", T, || {
        status_of(&a, "wifi")["strategy"] == "advisory"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", a.log()));
    let r = reports_of(&a);
    assert_eq!(
        (&r["kind"], &r["setting"], &r["confirmed"]),
        (
            &Value::from("extended"),
            &Value::from("auto"),
            &Value::from(true)
        ),
        "{r}"
    );
    // The controller saw extended reports from the device.
    assert!(sent_extended(&stub));
    // A restart keeps the confirmation (persisted), and reports stay extended.
    a.restart().unwrap();
    let r = wait_for_reports(&a);
    assert_eq!(
        (&r["kind"], &r["confirmed"]),
        (&Value::from("extended"), &Value::from(true)),
        "{r}"
    );
    assert!(!a.log().contains("plain reports"), "{}", a.log());
    rt.block_on(stub.shutdown());
}

/// Whether the controller's record of ap-1 says its last report was extended.
fn sent_extended(stub: &StubHandle) -> bool {
    stub.with_engine(|e| {
        e.state()
            .devices
            .values()
            .any(|d| d.id.as_str() == "ap-1" && d.usage.extended)
    })
    .unwrap_or(false)
}

/// The `reports` status of a (re)started agent, once its socket answers.
fn wait_for_reports(a: &Agent) -> Value {
    wait_for("the agent to answer", T, || a.status().is_some()).unwrap();
    reports_of(a)
}

#[test]
fn an_agent_left_at_auto_falls_back_to_plain_reports_once_with_a_controller_predating_policy() {
    let rt = licd_tests::runtime();
    let lab = Lab {
        skus: &[("LIC-WIFI", "wifi", None, strategy(Strategy::Immediate))],
        term_ends_in: 86_400,
        lease: 60,
        grace: 60,
        broker: None,
        ledger: None,
        signer: Signer::ephemeral(unix_now()).unwrap(),
    };
    // The real stub, configured as a controller predating §17: it refuses extended reports
    // as an unknown kind and never answers them.
    let stub = lab.start_speaking(&rt, false);
    let port = stub.broker_addr().unwrap().port();
    let mut a = auto_agent(port, &stub.root_public_key().to_hex());
    // Three extended reports (at 0, 5 and 15 s) get no answer over the 10 s span; the next
    // one is plain, and its plain bundle licenses the device.
    let started = std::time::Instant::now();
    wait_for(
        "wifi licensed after the fallback",
        Duration::from_secs(60),
        || check(&a, "wifi").1["state"] == "licensed",
    )
    .unwrap_or_else(|e| panic!("{e}: {}", a.log()));
    let took = started.elapsed();
    eprintln!("licensed after the fallback in {took:?}");
    assert!(
        took >= Duration::from_secs(8),
        "licensed after {took:?}: too soon to have fallen back"
    );
    let r = reports_of(&a);
    assert_eq!(
        (&r["kind"], &r["confirmed"]),
        (&Value::from("plain"), &Value::from(false)),
        "{r}"
    );
    let since = r["plain_since"].as_u64().expect("plain_since");
    let log = a.log();
    assert_eq!(
        log.matches("got no answer").count(),
        1,
        "one line says why: {log}"
    );
    // A plain bundle: the default policy (restrict), never the grant's immediate.
    assert_eq!(status_of(&a, "wifi")["strategy"], "restrict");
    assert!(!sent_extended(&stub));
    let refused = stub.stats().reports_refused;
    assert!(refused >= 3, "the extended reports were refused: {refused}");
    // A restart does not probe the old controller again: plain at once (the stub applies
    // the reports after the restart, refuses none).
    let before = stub.stats();
    a.restart().unwrap();
    let r = wait_for_reports(&a);
    assert_eq!(
        (&r["kind"], r["plain_since"].as_u64()),
        (&Value::from("plain"), Some(since)),
        "{r}"
    );
    wait_for("two reports after the restart", T, || {
        stub.stats().reports_applied >= before.reports_applied + 2
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", stub.stats(), a.log()));
    eprintln!("two reports after the restart at {:?}", started.elapsed());
    assert_eq!(stub.stats().reports_refused, before.reports_refused);
    assert_eq!(a.log().matches("got no answer").count(), 1, "{}", a.log());
    rt.block_on(stub.shutdown());
}
