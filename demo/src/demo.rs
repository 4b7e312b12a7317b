//! The demo: the whole system on one machine in under a minute. It starts the stub controller
//! with its embedded broker and a throwaway ledger, sets up an MSP with two tenants and
//! subscriptions (one with too few seats), starts real agent processes (this binary re-run as
//! `licd-demo agent`, which runs the licd agent library), and narrates what they do: reports,
//! grants, a paused service, an unassign, a controller outage with grace, and recovery; then an
//! air-gapped AP with no broker at all licensed by carrying files (request → grant → import).
//! It cleans up after itself.
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
use licd_core::api::{Op, Request as ApiRequest};
use licd_protocol::{DeviceId, LicenseId, ServiceName, Sku, TenantId};
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{BrokerMode, KeySource, LedgerLocation, Signer, Stub, StubConfig, StubHandle};

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
/// (tenant, device) of each demo agent, in the order they start: one after another, each once
/// the previous one has its grants, so the seat story is the same on every run. acme has one
/// PoE+ seat and globex two: the first three take them, and acme-ap-2, last, finds acme's seat
/// taken, which pauses PoE+ auto-assignment. (Started together, the order the reports happened
/// to arrive in decided how many seats were taken before the pause: 1, 2 or 3.)
const DEVICES: [(&str, &str); 4] = [
    ("acme", "acme-ap-1"),
    ("globex", "globex-ap-1"),
    ("globex", "globex-ap-2"),
    ("acme", "acme-ap-2"),
];
/// What the tables show for an agent whose socket does not answer (not a license state).
const NO_ANSWER: &str = "no answer";
/// Longest any phase waits for the agents before the demo gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

fn svc(s: &str) -> Result<ServiceName> {
    ServiceName::new(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

fn tenant(s: &str) -> Result<TenantId> {
    TenantId::new(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

fn device_id(s: &str) -> Result<DeviceId> {
    DeviceId::new(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `service → (state, reason)` of one agent.
type States = BTreeMap<String, (String, String)>;

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

    /// The agent's local API, through the client library other processes use.
    fn client(&self) -> Option<licd_client::Client> {
        licd_client::Client::with_timeout(self.socket(), Duration::from_secs(1)).ok()
    }

    /// `service → (state, reason)` as the agent answers `check` over its socket; `None` while
    /// it does not answer (starting, stopped): no state is made up for it.
    fn states(&self) -> Option<States> {
        let mut client = self.client()?;
        let mut out = BTreeMap::new();
        for s in SERVICES {
            let state = client.check(s).ok()?;
            let reason = state.reason().map_or("", |r| r.name());
            out.insert(
                s.to_string(),
                (state.name().to_string(), reason.to_string()),
            );
        }
        Some(out)
    }

    /// `seq` of the bundle the agent holds (its `status`), if it answers and holds one.
    fn held_seq(&self) -> Option<u64> {
        let status = self.client()?.status().ok()?;
        status["bundle"]["seq"].as_u64()
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

    /// Polls every agent once, prints what changed, and returns what it saw (`None` for an
    /// agent that did not answer; nothing is printed for it).
    fn poll(&mut self, agents: &[DemoAgent]) -> Vec<Option<States>> {
        let mut all = Vec::with_capacity(agents.len());
        for a in agents {
            let states = a.states();
            for (service, now) in states.iter().flatten() {
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

    /// Polls until `done` holds for every agent (each answering), printing changes; fails
    /// after the phase timeout.
    async fn until(
        &mut self,
        agents: &[DemoAgent],
        what: &str,
        done: impl Fn(&DemoAgent, &States) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let states = self.poll(agents);
            if agents
                .iter()
                .zip(&states)
                .all(|(a, st)| st.as_ref().is_some_and(|st| done(a, st)))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("demo: timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every agent holds the newest bundle the controller issued it: what the
    /// agents then say is the controller's final word, not a moment in a race.
    async fn settle(&mut self, agents: &[DemoAgent], stub: &StubHandle) -> Result<()> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            self.poll(agents);
            let mut settled = true;
            for a in agents {
                let issued = stub
                    .device(&tenant(&a.tenant)?, &device_id(&a.device)?)?
                    .map(|d| d.bundle_seq);
                settled &= issued.is_some() && a.held_seq() == issued;
            }
            if settled {
                self.poll(agents);
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("demo: timed out waiting for every agent to hold its newest bundle");
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
        let mut rows: Vec<&DemoAgent> = agents.iter().collect();
        rows.sort_by(|a, b| (&a.tenant, &a.device).cmp(&(&b.tenant, &b.device)));
        for a in rows {
            let st = a.states();
            let cell = |s: &str| match &st {
                None => NO_ANSWER.to_string(),
                Some(st) => st
                    .get(s)
                    .map(|(state, reason)| {
                        if reason.is_empty() {
                            state.clone()
                        } else {
                            format!("{state} ({})", reason.replace('_', " "))
                        }
                    })
                    .unwrap_or_default(),
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

/// Says who holds a PoE+ seat and who does not, and why, from what the agents answer and the
/// controller's compliance view: never a story the run did not show.
fn narrate_seats(n: &Narrator, agents: &[DemoAgent], stub: &StubHandle) -> Result<()> {
    let service = "poe-plus";
    let (mut holders, mut without) = (Vec::new(), Vec::new());
    for a in agents {
        let states = a.states().context("an agent stopped answering")?;
        if states.get(service).is_some_and(|s| s.0 == "licensed") {
            holders.push(a.device.as_str());
        } else {
            without.push(a.device.as_str());
        }
    }
    let mut reports = Vec::new();
    for t in ["acme", "globex"] {
        reports.push((t, stub.compliance(&tenant(t)?)?));
    }
    let paused = reports
        .iter()
        .any(|(_, c)| c.paused_services.iter().any(|s| s.as_str() == service));
    n.say(&format!(
        "{} of the {} APs hold a PoE+ seat: {}",
        holders.len(),
        agents.len(),
        if holders.is_empty() {
            "none".to_string()
        } else {
            holders.join(", ")
        }
    ));
    if without.is_empty() {
        n.say("every AP got its seat; nothing is paused");
    } else if paused {
        n.say(&format!(
            "{} found no seat left, so the rule paused PoE+ auto-assignment for",
            without.join(", ")
        ));
        n.say("everyone: seats already held are kept, no new one is handed out");
    } else {
        n.say(&format!("{} got no PoE+ seat", without.join(", ")));
    }
    for (t, c) in &reports {
        let paused: Vec<&str> = c.paused_services.iter().map(|s| s.as_str()).collect();
        n.say(&format!(
            "{t} compliance: {}{}",
            if c.compliant {
                "compliant"
            } else {
                "NOT compliant"
            },
            if paused.is_empty() {
                String::new()
            } else {
                format!(" (paused for lack of seats: {})", paused.join(", "))
            }
        ));
    }
    Ok(())
}

fn agent_config(
    dir: &Path,
    broker: SocketAddr,
    root_hex: &str,
    tenant: &str,
    device: &str,
    services: &[&str],
) -> String {
    let services = services
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
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
        ..LeasePolicy::default()
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

    n.phase("Devices report; signed grants arrive");
    n.say("four licd agents (real processes) start one after another, each once the controller");
    n.say("has answered the one before");
    let mut agents = Vec::new();
    for (t, d) in DEVICES {
        let dir = work.join(d);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("licd.toml");
        std::fs::write(
            &config,
            agent_config(&dir, broker, &root_hex, t, d, &SERVICES),
        )?;
        agents.push(spawn_agent(&exe, t, d, dir)?);
        n.until(&agents, &format!("{d}'s grants"), |_, st| {
            let wifi = st.get("wifi-ap").is_some_and(|s| s.0 == "licensed");
            // PoE+ is licensed, or withheld with the controller's reason.
            let poe_decided = st
                .get("poe-plus")
                .is_some_and(|s| s.0 == "licensed" || s.1 != "never_granted");
            wifi && poe_decided
        })
        .await?;
    }
    n.settle(&agents, &stub).await?;
    n.table(&agents);
    narrate_seats(&n, &agents, &stub)?;
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
        stub.reissue(&tenant(t)?, &device_id(d)?).await?;
    }
    n.until(&agents, "licenses renewed", |a, st| {
        st.get("wifi-ap")
            .is_some_and(|s| s.0 == "licensed" || (a.tenant == "globex" && s.0 == "unlicensed"))
            && st.values().all(|s| s.0 != "grace")
    })
    .await?;
    n.table(&agents);

    file_licensing(&mut n, work, &exe, &stub, &root_hex).await?;

    n.phase("Stopping the agents and the controller");
    for a in &mut agents {
        a.stop();
    }
    stub.shutdown().await;
    n.say("demo finished: every step above was real MQTT, real signatures and real files");
    Ok(())
}

/// Starts `licd-demo agent` for the config in `dir`, its output in `dir/licd.log`.
fn spawn_agent(exe: &Path, tenant: &str, device: &str, dir: PathBuf) -> Result<DemoAgent> {
    let log = std::fs::File::create(dir.join("licd.log"))?;
    let child = Command::new(exe)
        .arg("agent")
        .arg("--config")
        .arg(dir.join("licd.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting an agent")?;
    Ok(DemoAgent {
        tenant: tenant.into(),
        device: device.into(),
        dir,
        child,
    })
}

/// One request on the agent's socket, as `licd request`/`licd import` send it when the daemon
/// runs (one JSON line each way; core/src/api.rs). The answer must say `ok`; a refusal is an
/// error with the agent's reason.
fn socket_call(agent: &DemoAgent, op: Op) -> Result<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(agent.socket())
        .with_context(|| format!("connecting to {}", agent.socket().display()))?;
    stream.set_read_timeout(Some(PHASE_TIMEOUT))?;
    let mut line = serde_json::to_string(&ApiRequest::new(op))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).context("the agent's answer is not JSON")?;
    if v["ok"] != true {
        bail!(
            "{}: {}",
            agent.device,
            v["error"].as_str().unwrap_or("refused")
        );
    }
    Ok(v)
}

/// The file licensing act (issue 18): a device with no broker at all gets its license by
/// carrying files, and the narration says which file goes where. The device's daemon runs
/// (its broker URL is a closed port), so the import takes effect at once, as `licd import`
/// does through the socket.
async fn file_licensing(
    n: &mut Narrator,
    work: &Path,
    exe: &Path,
    stub: &StubHandle,
    root_hex: &str,
) -> Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    const DEVICE: &str = "acme-ap-vault";
    n.phase("An air-gapped AP: licensed by carrying files, no broker at all");
    // A port nobody listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let dir = work.join(DEVICE);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("licd.toml"),
        agent_config(&dir, closed, root_hex, "acme", DEVICE, &["wifi-ap"]),
    )?;
    let agent = spawn_agent(exe, "acme", DEVICE, dir.clone())?;
    n.say(&format!(
        "its files are in {} (kept with --keep)",
        dir.display()
    ));
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let before = loop {
        if let Some(state) = agent.client().and_then(|mut c| c.check("wifi-ap").ok()) {
            break state;
        }
        if Instant::now() >= deadline {
            bail!("demo: {DEVICE} did not answer on its socket");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    n.say(&format!(
        "{DEVICE} (tenant acme) cannot reach any broker: wifi-ap {} ({})",
        before.name(),
        before.reason().map_or("", |r| r.name()).replace('_', " ")
    ));

    let answer = socket_call(
        &agent,
        Op::Request {
            services: vec!["wifi-ap".into()],
        },
    )?;
    let request = b64
        .decode(answer["file"].as_str().unwrap_or_default())
        .context("the agent's request file is not base64")?;
    let request_path = dir.join(format!("{DEVICE}.req"));
    std::fs::write(&request_path, &request)?;
    n.say(&format!(
        "1. on the device:     licd request --out {DEVICE}.req       ({} bytes, signed by the device key)",
        request.len()
    ));
    n.say("   carry it to the controller (USB stick, e-mail, web form; `--armor` makes it text)");

    let grant = stub
        .offline_grant(&request, None)
        .await
        .context("the controller refused the request")?;
    std::fs::write(dir.join(format!("{DEVICE}.grant")), &grant.file)?;
    n.say(&format!(
        "2. at the controller: licd-stub offline grant {DEVICE}.req --out {DEVICE}.grant   ({} bytes, seq {})",
        grant.file.len(),
        grant.bundle.seq
    ));
    n.say("   a seat of acme's subscription, leased for offline_lease_days; carry it back");

    let answer = socket_call(
        &agent,
        Op::Import {
            file: b64.encode(&grant.file),
        },
    )?;
    n.say(&format!(
        "3. on the device:     licd import {DEVICE}.grant → {}",
        answer["message"].as_str().unwrap_or_default()
    ));
    let after = agent
        .client()
        .context("the agent stopped answering")?
        .check("wifi-ap")?;
    n.say(&format!(
        "{DEVICE} wifi-ap {} by file; renewal is a new request before the lease ends",
        after.name()
    ));
    if after.name() != "licensed" {
        bail!("demo: {DEVICE} is not licensed after the import");
    }
    let mut agent = agent;
    agent.stop();
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
