//! The demo: the whole system on one machine in under a minute. It starts the stub controller
//! with its embedded broker and a throwaway ledger, sets up an MSP with two tenants and
//! subscriptions (one with too few seats), starts real agent processes (this binary re-run as
//! `licd-demo agent`, which runs the licd agent library), and narrates what they do: reports,
//! grants, a paused service, an unassign, a controller outage with grace, and recovery. It
//! cleans up after itself.
//!
//! Also `licd-demo agent --config FILE`: the licd daemon run from this binary, so the demo
//! needs nothing but `cargo run -p licd-demo`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use licd_protocol::{DeviceId, LicenseId, ServiceName, Sku, TenantId};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{BrokerMode, KeySource, LedgerLocation, Signer, Stub, StubConfig, StubHandle};
use serde_json::json;

/// Demo timing and size.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Lease of each bundle, seconds.
    pub lease_secs: u64,
    /// Grace after the lease, seconds.
    pub grace_secs: u64,
    /// Keep the working directory (configs, logs, ledger) instead of removing it.
    pub keep: bool,
}

const SERVICES: [&str; 2] = ["wifi-ap", "poe-plus"];
/// (tenant, device) of each demo agent.
const DEVICES: [(&str, &str); 4] = [
    ("acme", "acme-ap-1"),
    ("acme", "acme-ap-2"),
    ("globex", "globex-ap-1"),
    ("globex", "globex-ap-2"),
];
/// Longest any phase waits for the agents before the demo gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

fn svc(s: &str) -> Result<ServiceName> {
    ServiceName::new(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

fn tenant(s: &str) -> Result<TenantId> {
    TenantId::new(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One agent process.
struct DemoAgent {
    tenant: String,
    device: String,
    dir: PathBuf,
    child: Child,
}

impl DemoAgent {
    fn socket(&self) -> PathBuf {
        self.dir.join("licd.sock")
    }

    /// `service → (state, reason)` as the agent answers over its socket.
    fn states(&self) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for s in SERVICES {
            let answer = licd_agent::api::query(
                &self.socket(),
                &json!({"v": 1, "op": "check", "service": s}),
                Duration::from_secs(1),
            );
            let (state, reason) = match answer {
                Ok(v) => (
                    v["state"].as_str().unwrap_or("?").to_string(),
                    v["reason"].as_str().unwrap_or("").to_string(),
                ),
                Err(_) => ("down".to_string(), String::new()),
            };
            out.insert(s.to_string(), (state, reason));
        }
        out
    }

    fn stop(&mut self) {
        // SIGTERM for a clean stop ("offline" presence, cache flushed); SIGKILL if it hangs.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Prints state changes as they happen, and the table on request.
struct Narrator {
    started: Instant,
    seen: BTreeMap<(String, String), (String, String)>,
}

impl Narrator {
    fn say(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    fn phase(&self, title: &str) {
        println!();
        self.say(&format!("== {title}"));
    }

    /// Polls every agent once, prints what changed, and returns what it saw.
    fn poll(&mut self, agents: &[DemoAgent]) -> Vec<BTreeMap<String, (String, String)>> {
        let mut all = Vec::with_capacity(agents.len());
        for a in agents {
            let states = a.states();
            for (service, now) in &states {
                let key = (a.device.clone(), service.clone());
                if self.seen.get(&key) != Some(now) {
                    let reason = if now.1.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", now.1.replace('_', " "))
                    };
                    self.say(&format!(
                        "{:<12} {:<9} {:<10}{reason}",
                        a.device, service, now.0
                    ));
                    self.seen.insert(key, now.clone());
                }
            }
            all.push(states);
        }
        all
    }

    /// Polls until `done` holds for every agent, printing changes; fails after the phase
    /// timeout.
    async fn until(
        &mut self,
        agents: &[DemoAgent],
        what: &str,
        done: impl Fn(&DemoAgent, &BTreeMap<String, (String, String)>) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let states = self.poll(agents);
            if agents.iter().zip(&states).all(|(a, st)| done(a, st)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("demo: timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Keeps narrating changes for `d`.
    async fn watch_for(&mut self, agents: &[DemoAgent], d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.poll(agents);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn table(&self, agents: &[DemoAgent]) {
        println!();
        println!(
            "  {:<8} {:<12} {:<26} {:<26}",
            "tenant", "device", SERVICES[0], SERVICES[1]
        );
        for a in agents {
            let st = a.states();
            let cell = |s: &str| {
                st.get(s)
                    .map(|(state, reason)| {
                        if reason.is_empty() {
                            state.clone()
                        } else {
                            format!("{state} ({})", reason.replace('_', " "))
                        }
                    })
                    .unwrap_or_default()
            };
            println!(
                "  {:<8} {:<12} {:<26} {:<26}",
                a.tenant,
                a.device,
                cell(SERVICES[0]),
                cell(SERVICES[1])
            );
        }
        println!();
    }
}

fn agent_config(
    dir: &Path,
    broker: SocketAddr,
    root_hex: &str,
    tenant: &str,
    device: &str,
) -> String {
    let services = SERVICES.map(|s| format!("{s:?}")).join(", ");
    format!(
        "tenant = {tenant:?}\nservices = [{services}]\nstate_dir = {state:?}\nroots = [{root_hex:?}]\n\n\
         [broker]\nurl = \"mqtt://{broker}\"\nallow_insecure = true\nreconnect_max_secs = 2\nkeep_alive_secs = 10\n\n\
         [api]\nsocket = {socket:?}\n\n[log]\nlevel = \"info\"\n\n\
         [identity]\ndevice_id = {device:?}\nmodel = \"AP-515\"\nserial = \"SN-{device}\"\nproduct_class = \"wireless\"\n",
        state = dir.join("state").display().to_string(),
        socket = dir.join("licd.sock").display().to_string(),
    )
}

async fn setup_ledger(stub: &StubHandle) -> Result<()> {
    let now = unix_now();
    stub.add_customer(tenant("demo-msp")?, "Demo MSP", CustomerKind::Msp)
        .await?;
    stub.add_customer(tenant("acme")?, "Acme Corp", CustomerKind::Tenant)
        .await?;
    stub.add_customer(tenant("globex")?, "Globex", CustomerKind::Tenant)
        .await?;
    for (sku, service, name) in [
        ("AP-LIC-1Y", "wifi-ap", "Wi-Fi AP license, 1 year"),
        ("POE-LIC-1Y", "poe-plus", "PoE+ budget license, 1 year"),
    ] {
        stub.add_catalog_entry(CatalogEntry {
            sku: Sku::new(sku).map_err(|e| anyhow::anyhow!("{e}"))?,
            name: name.into(),
            service: svc(service)?,
            product_class: "wireless".into(),
            vms_per_seat: None,
        })
        .await?;
    }
    let sub = |id: &str, owner: &str, ap: u32, poe: u32| -> Result<Subscription> {
        Ok(Subscription {
            id: LicenseId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?,
            name: format!("{owner} subscription"),
            owner: Some(tenant(owner)?),
            claim_key: None,
            start: now - 86_400,
            end: now + 365 * 86_400,
            entitlements: vec![
                Entitlement {
                    sku: Sku::new("AP-LIC-1Y").map_err(|e| anyhow::anyhow!("{e}"))?,
                    limit: ap,
                },
                Entitlement {
                    sku: Sku::new("POE-LIC-1Y").map_err(|e| anyhow::anyhow!("{e}"))?,
                    limit: poe,
                },
            ],
        })
    };
    // PoE+: 3 seats in all for 4 APs. Aruba's rule: auto-assignment is paused while the total
    // tokens are fewer than the total devices (MSP and tenants together).
    stub.add_subscription(sub("SUB-ACME", "acme", 5, 1)?)
        .await?;
    stub.add_subscription(sub("SUB-GLOBEX", "globex", 2, 2)?)
        .await?;
    stub.enable_auto_licensing(
        &Selection::all(),
        &[svc("wifi-ap")?, svc("poe-plus")?],
        false,
    )
    .await?;
    Ok(())
}

fn stub_config(
    ledger: &Path,
    signer: &Signer,
    lease: LeasePolicy,
    broker: BrokerMode,
) -> StubConfig {
    let mut config = StubConfig::for_tests(signer.clone());
    config.ledger = LedgerLocation::File(ledger.to_path_buf());
    config.keys = KeySource::Signer(Box::new(signer.clone()));
    config.lease = lease;
    config.broker = broker;
    config
}

/// Runs the demo; returns when it is over (or failed).
pub async fn run(options: DemoOptions) -> Result<()> {
    let work = std::env::temp_dir().join(format!("licd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = run_in(&work, &options).await;
    if options.keep || result.is_err() {
        println!(
            "demo files (configs, agent logs, ledger) kept in {}",
            work.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

async fn run_in(work: &Path, options: &DemoOptions) -> Result<()> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut n = Narrator {
        started: Instant::now(),
        seen: BTreeMap::new(),
    };
    let lease = LeasePolicy {
        lease_secs: options.lease_secs,
        grace_secs: options.grace_secs,
    };
    let signer = Signer::ephemeral(unix_now()).context("generating demo keys")?;
    let ledger = work.join("ledger.db");

    n.phase("Starting the stub controller with its embedded MQTT broker");
    let stub = Stub::start(stub_config(
        &ledger,
        &signer,
        lease,
        BrokerMode::Embedded {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        },
    ))
    .await
    .context("starting the stub")?;
    let broker = stub
        .broker_addr()
        .context("the embedded broker has no address")?;
    let root_hex = stub.root_public_key().to_hex();
    n.say(&format!(
        "broker on {broker}; agents pin root key {}",
        &root_hex[..16]
    ));
    setup_ledger(&stub).await?;
    n.say("ledger: MSP demo-msp; tenant acme: 5 AP seats, 1 PoE+ seat; tenant globex: 2 + 2");
    n.say("       4 APs want PoE+ but there are 3 PoE+ seats in all: that assignment will pause");
    n.say(&format!(
        "auto-licensing on for wifi-ap and poe-plus; lease {}s, grace {}s",
        options.lease_secs, options.grace_secs
    ));

    n.phase("Starting four licd agents (real processes)");
    let mut agents = Vec::new();
    for (t, d) in DEVICES {
        let dir = work.join(d);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("licd.toml");
        std::fs::write(&config, agent_config(&dir, broker, &root_hex, t, d))?;
        let log = std::fs::File::create(dir.join("licd.log"))?;
        let child = Command::new(&exe)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting an agent")?;
        agents.push(DemoAgent {
            tenant: t.into(),
            device: d.into(),
            dir,
            child,
        });
    }

    n.phase("Devices report; signed grants arrive");
    n.until(&agents, "every device's grants", |a, st| {
        let wifi = st.get("wifi-ap").is_some_and(|s| s.0 == "licensed");
        // PoE+ is licensed, or paused for lack of seats (acme has one seat for two APs).
        let poe_decided = st
            .get("poe-plus")
            .is_some_and(|s| s.0 == "licensed" || s.1 == "seats_exhausted");
        let _ = a;
        wifi && poe_decided
    })
    .await?;
    n.table(&agents);
    let compliance = stub.compliance(&tenant("acme")?)?;
    n.say("three APs took the three PoE+ seats as they reported; the fourth found none, so the");
    n.say("rule paused PoE+ auto-assignment for everyone (seats already held are kept)");
    n.say(&format!(
        "acme compliance: compliant={}, paused for lack of seats: [{}]",
        compliance.compliant,
        compliance
            .paused_services
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    n.phase("Operator unassigns wifi-ap from tenant globex (seed 001 semantics)");
    stub.unassign(&Selection::only([tenant("globex")?]), &[svc("wifi-ap")?])
        .await?;
    n.until(&agents, "globex's wifi-ap to be revoked", |a, st| {
        a.tenant != "globex" || st.get("wifi-ap").is_some_and(|s| s.0 == "unlicensed")
    })
    .await?;

    n.phase(&format!(
        "Controller outage: the controller stops (broker stays up); leases end within {}s",
        options.lease_secs
    ));
    stub.shutdown().await;
    n.until(&agents, "grace on every still-licensed service", |_, st| {
        st.values().all(|s| s.0 != "licensed")
    })
    .await?;
    n.say("services in grace keep running; the controller comes back before grace ends");
    n.watch_for(&agents, Duration::from_secs(2)).await;
    n.table(&agents);

    n.phase("Controller back: it re-issues every device's bundle");
    let stub = Stub::start(stub_config(
        &ledger,
        &signer,
        lease,
        BrokerMode::External {
            url: format!("mqtt://{broker}"),
            ca_file: None,
            credentials: None,
        },
    ))
    .await
    .context("restarting the controller")?;
    for (t, d) in DEVICES {
        stub.reissue(
            &tenant(t)?,
            &DeviceId::new(d).map_err(|e| anyhow::anyhow!("{e}"))?,
        )
        .await?;
    }
    n.until(&agents, "licenses renewed", |a, st| {
        st.get("wifi-ap")
            .is_some_and(|s| s.0 == "licensed" || (a.tenant == "globex" && s.0 == "unlicensed"))
            && st.values().all(|s| s.0 != "grace")
    })
    .await?;
    n.table(&agents);

    n.phase("Stopping the agents and the controller");
    for a in &mut agents {
        a.stop();
    }
    stub.shutdown().await;
    n.say("demo finished: every step above was real MQTT, real signatures and real files");
    Ok(())
}

/// `licd-demo agent`: runs the licd agent daemon from this binary until SIGTERM/SIGINT.
pub fn run_agent(config: &Path) -> Result<()> {
    let settings = licd_agent::config::Settings::load(config)
        .with_context(|| format!("loading {}", config.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(licd_agent::daemon::run(
            settings,
            Arc::new(licd_agent::clock::SystemClock),
            async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                            return;
                        }
                    };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            },
        ))
        .context("the agent stopped with an error")?;
    Ok(())
}
