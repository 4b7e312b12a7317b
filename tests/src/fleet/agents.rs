//! The fleet phase: N real agents (the agent library's daemon, one tokio task each) started
//! within the connect window against the controller, each watched through its status until it
//! licenses every service; then, with the fleet still connected, the storm if asked for.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use licd_agent::clock::SystemClock;
use licd_agent::config::Settings;
use licd_agent::daemon;
use licd_agent::identity::{resolve_identity_blocking, HostRoot, Identity};
use licd_agent::status::Status;
use licd_protocol::{DeviceId, PublicKey};
use licd_stub::session::StatsSnapshot;
use tokio::sync::watch;

use super::controller::start_controller;
use super::drive::{drive, summarize, Events, Kind, Tracker};
use super::proc::{process_cpu, threads_cpu, vm_rss};
use super::report::{Convergence, FleetReport};
use super::storm;
use super::{
    err, runtime, unix_now, FleetError, FleetOptions, AGENT_THREAD, CONTROLLER_THREAD,
    PRODUCT_CLASS, PROGRESS_EVERY, SERVICES, SITE, SITE_TENANT, TENANT,
};
use crate::mosquitto::Mosquitto;
use crate::site::{start_site_relay, SiteRelayOptions};
use licd_stub::relay::pool::LeaseTerms;
use licd_stub::relay::run::RelayHandle;
use licd_stub::{Clock, Signer, StubHandle};
use tokio::runtime::Runtime;

/// How long stopping agents may take (each publishes "offline" and disconnects).
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The agent config every simulated device shares (state dir and id are set per device); a
/// `site` for devices licensed by a site relay.
pub(super) fn agent_settings(
    url: &str,
    root: &PublicKey,
    dir: &Path,
    tenant: &str,
    site: Option<&str>,
) -> Result<Settings, FleetError> {
    let services = SERVICES.map(|s| format!("{s:?}")).join(", ");
    let site = site.map_or(String::new(), |s| format!("site = {s:?}\n"));
    // Several nodes of a cluster (comma-separated): `urls`, and the agent starts at a random one.
    let broker = if url.contains(',') {
        let nodes: Vec<String> = url.split(',').map(|u| format!("{u:?}")).collect();
        format!("urls = [{}]", nodes.join(", "))
    } else {
        format!("url = {url:?}")
    };
    let text = format!(
        "tenant = {tenant:?}\n{site}services = [{services}]\nstate_dir = {state:?}\nroots = [{root:?}]\n\n\
         [broker]\n{broker}\nallow_insecure = true\n\n\
         [api]\nsocket = \"\"\n\n\
         [identity]\ndevice_id = \"fleet-00000\"\nmodel = \"AP-FLEET\"\nserial = \"SN-00000\"\n\
         product_class = {PRODUCT_CLASS:?}\n",
        state = dir.join("template").display().to_string(),
        root = root.to_hex(),
    );
    Settings::from_toml(&text).map_err(|e| err(format!("agent config: {e}")))
}

/// One simulated device's settings and identity.
pub(super) fn device(
    settings: &Settings,
    identity: &Identity,
    dir: &Path,
    i: usize,
) -> Result<(Settings, Identity), FleetError> {
    let name = format!("fleet-{i:05}");
    let id = DeviceId::new(name.clone()).map_err(|e| err(format!("{name}: {e}")))?;
    let mut s = settings.clone();
    s.state_dir = dir.join(&name);
    s.identity.device_id = Some(name);
    s.identity.serial = Some(format!("SN-{i:05}"));
    let mut ident = identity.clone();
    ident.device.id = id;
    ident.product.serial.value = format!("SN-{i:05}");
    Ok((s, ident))
}

/// Watches one agent's status and turns changes into events.
pub(super) async fn watch_agent(i: usize, mut rx: watch::Receiver<Arc<Status>>, tx: Events) {
    let (mut connected, mut reports, mut licensed) = (false, 0u64, false);
    loop {
        let (c, r, l) = {
            let s = rx.borrow_and_update();
            let conn = s.connection.as_ref();
            let l = s.enforcement.bundle.is_some()
                && !s.enforcement.services.is_empty()
                && s.enforcement.services.iter().all(|x| x.state.may_run());
            (
                conn.is_some_and(|c| c.connected),
                conn.map_or(0, |c| c.reports_sent),
                l,
            )
        };
        let now = Instant::now();
        if c != connected {
            connected = c;
            let k = if c {
                Kind::Connected
            } else {
                Kind::Disconnected
            };
            if tx.send((i, k, now)).is_err() {
                return;
            }
        }
        if r > reports {
            reports = r;
            let _ = tx.send((i, Kind::Report, now));
        }
        if l != licensed {
            licensed = l;
            let k = if l { Kind::Done } else { Kind::Lost };
            let _ = tx.send((i, k, now));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Who licenses the fleet: the stub controller, or (`--relay`) a site relay holding a
/// delegation of the same seats for the site's tenant.
enum Issuer {
    Controller(StubHandle),
    Relay(RelayHandle),
}

impl Issuer {
    fn stats(&self) -> StatsSnapshot {
        match self {
            Self::Controller(stub) => stub.stats(),
            Self::Relay(relay) => relay.stats(),
        }
    }
}

/// The agents of one convergence, still running.
struct Running {
    agents: Runtime,
    handles: Vec<tokio::task::JoinHandle<Result<(), daemon::RunError>>>,
    stop_tx: watch::Sender<bool>,
    rx: std_mpsc::Receiver<(usize, Kind, Instant)>,
    tracker: Tracker,
    /// Reports the issuer dropped (queue full) while the fleet converged.
    tracker_dropped: u64,
    /// The issuer's reports replaced in its queue and bundles published meanwhile.
    tracker_replaced: u64,
    tracker_bundles: u64,
}

impl Running {
    fn stop(self) {
        self.stop_tx.send_replace(true);
        let handles = self.handles;
        self.agents.block_on(async {
            let _ = tokio::time::timeout(STOP_TIMEOUT, async {
                for h in handles {
                    let _ = h.await;
                }
            })
            .await;
        });
        self.agents.shutdown_timeout(Duration::from_secs(5));
    }
}

pub(super) fn phase(
    opts: &FleetOptions,
    broker: &mut Mosquitto,
    url: &str,
    dir: &Path,
    out: &mut FleetReport,
) -> Result<(), FleetError> {
    let (ctl, stub) = start_controller(url, opts.devices, dir)?;
    let root = stub.root_public_key();
    let issuer = Issuer::Controller(stub);
    let mut settings = agent_settings(url, &root, dir, TENANT, None)?;
    settings.broker.subscribe_qos1 = opts.subscribe_qos1;
    let mut running = converge(
        opts,
        broker,
        &settings,
        dir,
        &issuer,
        "fleet",
        &mut out.fleet,
    )?;
    out.reports_dropped = running.tracker_dropped;
    out.reports_replaced = running.tracker_replaced;
    out.bundles_published = running.tracker_bundles;
    out.process_rss = vm_rss("self");
    out.broker_rss = broker.pid().map_or(0, |p| vm_rss(&p.to_string()));
    let Issuer::Controller(stub) = issuer else {
        unreachable!("built above")
    };
    if opts.storm {
        out.storm = Some(storm::phase(
            opts,
            broker,
            &stub,
            &running.rx,
            &mut running.tracker,
        )?);
    }
    running.stop();
    ctl.block_on(stub.shutdown());
    ctl.shutdown_timeout(Duration::from_secs(5));
    if opts.relay {
        out.relay = Some(relay_phase(opts, broker, url, &dir.join("site"))?);
    }
    Ok(())
}

/// The same fleet (new devices of another tenant, so nothing retained from the controller's
/// run reaches them) licensed by a site relay through the same broker: a delegation of
/// `devices` seats of every service to site [`SITE`], leases of an hour.
fn relay_phase(
    opts: &FleetOptions,
    broker: &mut Mosquitto,
    url: &str,
    dir: &Path,
) -> Result<Convergence, FleetError> {
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let rt = runtime(1, CONTROLLER_THREAD)?;
    let now = unix_now();
    let signer = Signer::ephemeral(now).map_err(err)?;
    let seats = u32::try_from(opts.devices).unwrap_or(u32::MAX);
    let site_opts = SiteRelayOptions {
        tenant: SITE_TENANT.into(),
        site: SITE.into(),
        pools: SERVICES.iter().map(|s| (s.to_string(), seats)).collect(),
        max_lease: 3_600,
        valid_from: now.saturating_sub(60),
        valid_secs: 86_400,
        terms: LeaseTerms {
            lease_secs: 3_600,
            grace_secs: 0,
        },
        clock: Clock::System,
        broker: Some(url.to_string()),
        client_id: "licd-fleet-relay".into(),
    };
    let relay = rt
        .block_on(start_site_relay(&signer, dir, site_opts))
        .map_err(|e| err(format!("site relay: {e}")))?;
    let issuer = Issuer::Relay(relay);
    let mut settings =
        agent_settings(url, &signer.root_public_key(), dir, SITE_TENANT, Some(SITE))?;
    settings.broker.subscribe_qos1 = opts.subscribe_qos1;
    let mut conv = Convergence::default();
    let running = converge(opts, broker, &settings, dir, &issuer, "relay", &mut conv);
    let Issuer::Relay(relay) = issuer else {
        unreachable!("built above")
    };
    if let Ok(r) = running {
        r.stop();
    }
    rt.block_on(relay.shutdown());
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(conv)
}

/// Starts `opts.devices` agents within the connect window and waits until every one licenses
/// all its services (or the phase times out); fills `conv`. The agents keep running.
fn converge(
    opts: &FleetOptions,
    broker: &Mosquitto,
    settings: &Settings,
    dir: &Path,
    issuer: &Issuer,
    label: &'static str,
    conv: &mut Convergence,
) -> Result<Running, FleetError> {
    let n = opts.devices;
    let agents = runtime(opts.agent_threads, AGENT_THREAD)?;
    let identity = resolve_identity_blocking(&settings.identity, &HostRoot::system())
        .map_err(|e| err(format!("identity: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, rx) = std_mpsc::channel();
    let mut tracker = Tracker::new(n);
    let mut handles = Vec::with_capacity(n);
    let mut failures = Vec::new();
    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let bcpu0 = process_cpu(broker.pid());
    let acpu0 = threads_cpu(AGENT_THREAD);
    let stats0 = issuer.stats();
    let started = Instant::now();
    let spawn = |i: usize| match device(settings, &identity, dir, i) {
        Ok((s, ident)) => {
            let mut stop = stop_rx.clone();
            let tx = tx.clone();
            handles.push(agents.spawn(async move {
                daemon::run_with(
                    s,
                    Arc::new(SystemClock),
                    ident,
                    move |status| {
                        tokio::spawn(watch_agent(i, status, tx));
                    },
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )
                .await
            }));
        }
        Err(e) => failures.push(e),
    };
    let sampling = AtomicBool::new(true);
    let (result, samples) = std::thread::scope(|sc| {
        let sampler = opts.timeline.then(|| {
            let sampling = &sampling;
            sc.spawn(move || {
                let mut samples = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    samples.push((started.elapsed(), issuer.stats()));
                    std::thread::sleep(PROGRESS_EVERY);
                }
                samples.push((started.elapsed(), issuer.stats()));
                samples
            })
        });
        let r = drive(opts, label, &rx, &mut tracker, spawn, n, |t| t.done == n);
        sampling.store(false, Ordering::Relaxed);
        (r, sampler.and_then(|h| h.join().ok()).unwrap_or_default())
    });
    if opts.timeline {
        eprint!("{}", timeline(&tracker, started, &stats0, &samples));
    }
    let total = started.elapsed();
    let stats = issuer.stats();
    let messages = (stats.reports_received - stats0.reports_received)
        + (stats.bundles_published - stats0.bundles_published);
    *conv = summarize(
        &mut tracker,
        started,
        total,
        messages,
        threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
        process_cpu(broker.pid()).saturating_sub(bcpu0),
        threads_cpu(AGENT_THREAD).saturating_sub(acpu0),
    );
    let running = Running {
        agents,
        handles,
        stop_tx,
        rx,
        tracker,
        tracker_dropped: stats.reports_dropped - stats0.reports_dropped,
        tracker_replaced: stats.reports_replaced - stats0.reports_replaced,
        tracker_bundles: stats.bundles_published - stats0.bundles_published,
    };
    if let Some(e) = failures.into_iter().next() {
        running.stop();
        return Err(e);
    }
    if let Err(e) = result {
        running.stop();
        return Err(e);
    }
    Ok(running)
}

/// The fleet phase as cumulative counts every [`PROGRESS_EVERY`]: reports the agents sent, the
/// controller received and applied, agents licensed. Shows where a stall is (a broker that
/// stops reading the controller, a controller behind its queue, agents slow to start).
pub(super) fn timeline(
    t: &Tracker,
    started: Instant,
    stats0: &StatsSnapshot,
    samples: &[(Duration, StatsSnapshot)],
) -> String {
    let upto = |times: &[Option<Instant>], at: Duration| {
        times
            .iter()
            .flatten()
            .filter(|x| x.saturating_duration_since(started) <= at)
            .count()
    };
    let mut out = format!(
        "{:>7} {:>10} {:>10} {:>10} {:>10}\n",
        "t s", "reported", "received", "applied", "licensed"
    );
    for (at, s) in samples {
        let _ = writeln!(
            out,
            "{:>7.2} {:>10} {:>10} {:>10} {:>10}",
            at.as_secs_f64(),
            upto(&t.report_at, *at),
            s.reports_received - stats0.reports_received,
            s.reports_applied - stats0.reports_applied,
            upto(&t.done_at, *at),
        );
    }
    out
}
