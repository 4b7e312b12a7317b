//! The fleet simulator: N real agents (the agent library's daemon, [`daemon::run_with`], one
//! tokio task each, many per process) against a real mosquitto and the stub controller, with a
//! same-run baseline — a bare MQTT request/response echo with the same number of clients and
//! the same message sizes through the same broker.
//!
//! Phases, in order (each bounded by [`FleetOptions::phase_timeout`]):
//! 1. baseline: N bare rumqttc clients connect, subscribe, publish a report-sized request; one
//!    echo client answers each with a bundle-sized retained message;
//! 2. fleet: the stub (own runtime, threads named `licd-ctl`, so its CPU can be read from
//!    `/proc/self/task`) with N seats of every service and auto-licensing on; N agents start
//!    with the same connect window as the baseline; done when every agent enforces a bundle
//!    that licenses all its services;
//! 3. storm: with N agents connected, mosquitto is restarted (SIGTERM, same port); done when
//!    every agent is connected again and the controller has had a report from each;
//! 4. baseline again (after the agents stopped, to free their sockets), so drift in the
//!    machine's load shows.
//!
//! What it leaves to others: the agent's behaviour (this only observes its status watch) and
//! the broker (started through [`crate::mosquitto`]). The binary `licd-fleet` prints a table or
//! JSON; `tests/tests/fleet.rs` runs a short version.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey};
use licd_agent::clock::SystemClock;
use licd_agent::config::Settings;
use licd_agent::daemon;
use licd_agent::identity::key::DeviceKey;
use licd_agent::identity::{resolve_identity_blocking, HostRoot, Identity};
use licd_agent::status::{Status, AGENT_VERSION};
use licd_agent::store::Store;
use licd_protocol::envelope::{open_bundle, open_report, seal_bundle, seal_report};
use licd_protocol::{
    DeviceId, DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceGrant, ServiceName,
    SignerCertificate, Sku, TenantId, TrustStore, UnixTime,
};
use licd_stub::engine::{CatalogEntry, CustomerKind, Entitlement, Selection, Subscription};
use licd_stub::session::StatsSnapshot;
use licd_stub::{BrokerMode, LedgerLocation, Signer, Stub, StubConfig, StubHandle};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::mosquitto::{Mosquitto, MosquittoConfig};

/// The services every simulated device wants (and the ledger licenses).
pub const SERVICES: [&str; 5] = ["wifi", "vpn", "ids", "guest-portal", "mesh"];
/// Tenant of the simulated devices.
const TENANT: &str = "fleet";
/// Product class of the devices and the catalogue entries (auto-licensing matches on it).
const PRODUCT_CLASS: &str = "wireless";
/// Name of the controller's runtime threads; their CPU is the controller's CPU.
pub const CONTROLLER_THREAD: &str = "licd-ctl";
/// Name of the agents' runtime threads.
const AGENT_THREAD: &str = "licd-fleet";
/// File descriptors kept free beyond one per client (mosquitto, ledger, stdio, runtimes).
const FD_MARGIN: u64 = 256;
/// Linux `USER_HZ`: the unit of utime/stime in `/proc/*/stat`.
const CLOCK_TICKS: f64 = 100.0;
/// The default connect window: under mosquitto 2.0's fixed listen backlog of 100 (`ss -ltn`
/// shows it). At 128, fast clients overflowed it and waited for SYN retransmits: a bare echo
/// of 2,000 clients took 1.04 s instead of 0.28 s, which flattered every ratio to it.
pub const CONNECT_WINDOW: usize = 96;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long stopping agents may take (each publishes "offline" and disconnects).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Simulated devices.
    pub devices: usize,
    /// Most clients between start and ConnAck at any time (fleet and baseline alike): a
    /// listen backlog overflow would otherwise turn into 1 s, 3 s, … SYN retransmits. Keep it
    /// under the broker's backlog: mosquitto 2.0 listens with 100 (see [`CONNECT_WINDOW`]).
    pub connect_window: usize,
    /// Worker threads of the agents' runtime.
    pub agent_threads: usize,
    /// Run the bare echo baseline (before and after the fleet).
    pub baseline: bool,
    /// Run the floor phase (see [`baseline`]) after the first baseline.
    pub floor: bool,
    /// Restart the broker with the fleet connected.
    pub storm: bool,
    /// Upper bound of every phase.
    pub phase_timeout: Duration,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Print the fleet phase's timeline (see [`timeline`]) on stderr.
    pub timeline: bool,
    /// Where the agents' state directories go (default: /dev/shm when present, else the
    /// system temp dir).
    pub work_dir: Option<PathBuf>,
}

impl FleetOptions {
    /// `devices` devices, everything on, no progress line.
    pub fn new(devices: usize) -> Self {
        Self {
            devices,
            connect_window: CONNECT_WINDOW,
            agent_threads: 2,
            baseline: true,
            floor: false,
            storm: true,
            phase_timeout: Duration::from_secs(300),
            progress: false,
            timeline: false,
            work_dir: None,
        }
    }
}

/// Why the simulation could not run or finish.
#[derive(Debug, thiserror::Error)]
#[error("fleet simulator: {0}")]
pub struct FleetError(pub String);

fn err(what: impl std::fmt::Display) -> FleetError {
    FleetError(what.to_string())
}

/// Latency percentiles and totals of one convergence phase.
#[derive(Debug, Clone, Default)]
pub struct Convergence {
    /// Clients that got their answer (licensed agents / echoed clients).
    pub done: usize,
    /// From the first start to the last answer.
    pub total: Duration,
    /// From the first start to the last ConnAck.
    pub all_connected: Duration,
    /// Report (request) sent → bundle applied (answer received), p50.
    pub p50: Duration,
    /// Same, p99.
    pub p99: Duration,
    /// Same, max.
    pub max: Duration,
    /// MQTT application messages (reports/requests and bundles/answers) per second over
    /// `total`.
    pub messages_per_sec: f64,
    /// CPU of the controller (or echo responder) threads during the phase.
    pub controller_cpu: Duration,
    /// CPU of mosquitto during the phase.
    pub broker_cpu: Duration,
    /// CPU of the clients' runtime threads (the agents, or the bare clients) during the phase.
    pub clients_cpu: Duration,
}

impl Convergence {
    fn json(&self) -> Value {
        json!({
            "done": self.done,
            "total_s": secs(self.total),
            "all_connected_s": secs(self.all_connected),
            "report_to_bundle_p50_ms": ms(self.p50),
            "report_to_bundle_p99_ms": ms(self.p99),
            "report_to_bundle_max_ms": ms(self.max),
            "messages_per_s": self.messages_per_sec.round(),
            "controller_cpu_s": secs(self.controller_cpu),
            "broker_cpu_s": secs(self.broker_cpu),
            "clients_cpu_s": secs(self.clients_cpu),
        })
    }
}

/// The broker restart with the fleet connected.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    /// SIGTERM to accepting connections again.
    pub broker_down: Duration,
    /// From the broker accepting again to every agent connected and reporting again.
    pub all_reconnected: Duration,
    /// From the broker accepting again to as many reports at the controller as there are
    /// agents. Not "every agent heard from": an agent whose first report after reconnecting
    /// went unanswered (the retained bundle it already holds came back) reports again, so this
    /// can come before the last agent is back ([`Storm::all_reconnected`] tracks that).
    pub all_reported: Duration,
    /// Reconnect attempts that failed (agents' `Disconnected` events beyond the first each).
    pub failed_attempts: u64,
    /// Agents that stopped licensing any service during the storm (must be 0).
    pub lost_license: usize,
    /// Reports the controller dropped (queue full) during the storm.
    pub reports_dropped: u64,
    /// Controller CPU during the storm.
    pub controller_cpu: Duration,
    /// mosquitto CPU during the storm (its second life).
    pub broker_cpu: Duration,
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Devices.
    pub devices: usize,
    /// Report envelope bytes (and baseline request bytes).
    pub report_bytes: usize,
    /// Bundle envelope bytes (and baseline answer bytes), 5 services.
    pub bundle_bytes: usize,
    /// Baseline before the fleet.
    pub baseline_before: Option<Convergence>,
    /// The echo clients doing the agent's unavoidable work too (see [`baseline`]).
    pub floor: Option<Convergence>,
    /// The fleet.
    pub fleet: Convergence,
    /// Baseline after the fleet.
    pub baseline_after: Option<Convergence>,
    /// Broker restart.
    pub storm: Option<Storm>,
    /// Reports the controller dropped while the fleet converged.
    pub reports_dropped: u64,
    /// This process's VmRSS with the fleet licensed (agents + controller), bytes.
    pub process_rss: u64,
    /// mosquitto's VmRSS with the fleet licensed, bytes.
    pub broker_rss: u64,
}

impl FleetReport {
    /// Mean of the baseline runs' totals.
    pub fn baseline_total(&self) -> Option<Duration> {
        let runs: Vec<Duration> = [&self.baseline_before, &self.baseline_after]
            .into_iter()
            .flatten()
            .map(|c| c.total)
            .collect();
        (!runs.is_empty()).then(|| runs.iter().sum::<Duration>() / runs.len() as u32)
    }

    /// Fleet convergence time over the baseline's (mean of its runs).
    pub fn ratio(&self) -> Option<f64> {
        self.baseline_total()
            .map(|b| self.fleet.total.as_secs_f64() / b.as_secs_f64().max(1e-9))
    }

    /// The report as JSON (for `--json`).
    pub fn json(&self) -> Value {
        json!({
            "devices": self.devices,
            "services": SERVICES.len(),
            "report_bytes": self.report_bytes,
            "bundle_bytes": self.bundle_bytes,
            "fleet": self.fleet.json(),
            "baseline_before": self.baseline_before.as_ref().map(Convergence::json),
            "baseline_after": self.baseline_after.as_ref().map(Convergence::json),
            "baseline_mean_s": self.baseline_total().map(secs),
            "floor": self.floor.as_ref().map(Convergence::json),
            "ratio_fleet_to_baseline": self.ratio().map(|r| (r * 1000.0).round() / 1000.0),
            "controller_cpu_us_per_device": (self.fleet.controller_cpu.as_secs_f64() * 1e6
                / self.devices.max(1) as f64).round(),
            "reports_dropped": self.reports_dropped,
            "process_rss_bytes": self.process_rss,
            "process_rss_bytes_per_device": self.process_rss / self.devices.max(1) as u64,
            "broker_rss_bytes": self.broker_rss,
            "storm": self.storm.as_ref().map(|s| json!({
                "broker_down_s": secs(s.broker_down),
                "all_reconnected_s": secs(s.all_reconnected),
                "all_reported_s": secs(s.all_reported),
                "failed_attempts": s.failed_attempts,
                "lost_license": s.lost_license,
                "reports_dropped": s.reports_dropped,
                "controller_cpu_s": secs(s.controller_cpu),
                "broker_cpu_s": secs(s.broker_cpu),
            })),
        })
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "licd fleet: {} devices × {} services; report {} B, bundle {} B",
            self.devices,
            SERVICES.len(),
            self.report_bytes,
            self.bundle_bytes
        );
        let _ = writeln!(
            t,
            "{:<20} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "phase",
            "total s",
            "connected s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "msg/s",
            "ctl cpu s",
            "mqtt cpu",
            "clients cpu"
        );
        let mut line = |name: &str, c: &Convergence| {
            let _ = writeln!(
                t,
                "{:<20} {:>9.2} {:>11.2} {:>9.1} {:>9.1} {:>9.1} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
                name,
                c.total.as_secs_f64(),
                c.all_connected.as_secs_f64(),
                ms(c.p50),
                ms(c.p99),
                ms(c.max),
                c.messages_per_sec,
                c.controller_cpu.as_secs_f64(),
                c.broker_cpu.as_secs_f64(),
                c.clients_cpu.as_secs_f64(),
            );
        };
        if let Some(b) = &self.baseline_before {
            line("baseline (before)", b);
        }
        if let Some(f) = &self.floor {
            line("floor (echo + work)", f);
        }
        line("fleet (real agents)", &self.fleet);
        if let Some(b) = &self.baseline_after {
            line("baseline (after)", b);
        }
        if let Some(r) = self.ratio() {
            let _ = writeln!(
                t,
                "convergence ratio fleet / baseline mean: {r:.2}× (goal ≤ 1.5×)"
            );
        }
        if let (Some(f), Some(b)) = (&self.floor, self.baseline_total()) {
            let _ = writeln!(
                t,
                "floor / baseline mean: {:.2}× (what the agent's unavoidable crypto and fsyncs cost on the same cores); fleet / floor: {:.2}×",
                f.total.as_secs_f64() / b.as_secs_f64().max(1e-9),
                self.fleet.total.as_secs_f64() / f.total.as_secs_f64().max(1e-9),
            );
        }
        let _ = writeln!(
            t,
            "controller CPU {:.0} µs per device; reports dropped {}; RSS process {:.1} MiB ({:.1} KiB/device), mosquitto {:.1} MiB",
            self.fleet.controller_cpu.as_secs_f64() * 1e6 / self.devices.max(1) as f64,
            self.reports_dropped,
            self.process_rss as f64 / 1048576.0,
            self.process_rss as f64 / 1024.0 / self.devices.max(1) as f64,
            self.broker_rss as f64 / 1048576.0,
        );
        if let Some(s) = &self.storm {
            let _ = writeln!(
                t,
                "broker restart: down {:.2} s; every agent reconnected and reported {:.2} s and N reports at the controller {:.2} s after it was back; {} failed attempts; {} agents lost a license; {} reports dropped; ctl cpu {:.2} s, mqtt cpu {:.2} s",
                s.broker_down.as_secs_f64(),
                s.all_reconnected.as_secs_f64(),
                s.all_reported.as_secs_f64(),
                s.failed_attempts,
                s.lost_license,
                s.reports_dropped,
                s.controller_cpu.as_secs_f64(),
                s.broker_cpu.as_secs_f64(),
            );
        }
        t
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// What a client (agent or baseline) did, as seen by the collector.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connected,
    Disconnected,
    Report,
    /// Licensed for every service (agents) / answer received (baseline).
    Done,
    /// An agent stopped licensing some service.
    Lost,
}

type Events = std_mpsc::Sender<(usize, Kind, Instant)>;

/// Per-client bookkeeping of one phase.
struct Tracker {
    n: usize,
    connected: Vec<bool>,
    ever: Vec<bool>,
    /// Clients connected at least once: started clients beyond this hold the connect window.
    ever_connected: usize,
    connected_now: usize,
    last_connect: Option<Instant>,
    report_at: Vec<Option<Instant>>,
    done_at: Vec<Option<Instant>>,
    done: usize,
    latencies: Vec<Duration>,
    disconnects: u64,
    lost: Vec<bool>,
}

impl Tracker {
    fn new(n: usize) -> Self {
        Self {
            n,
            connected: vec![false; n],
            ever: vec![false; n],
            ever_connected: 0,
            connected_now: 0,
            last_connect: None,
            report_at: vec![None; n],
            done_at: vec![None; n],
            done: 0,
            latencies: Vec::new(),
            disconnects: 0,
            lost: vec![false; n],
        }
    }

    fn on(&mut self, i: usize, kind: Kind, at: Instant) {
        if i >= self.n {
            return;
        }
        match kind {
            Kind::Connected => {
                if !self.connected[i] {
                    self.connected[i] = true;
                    self.connected_now += 1;
                }
                if !self.ever[i] {
                    self.ever[i] = true;
                    self.ever_connected += 1;
                }
                self.last_connect = Some(at);
            }
            Kind::Disconnected => {
                self.disconnects += 1;
                if self.connected[i] {
                    self.connected[i] = false;
                    self.connected_now -= 1;
                }
            }
            Kind::Report => {
                if self.done_at[i].is_none() {
                    self.report_at[i] = Some(at);
                }
            }
            Kind::Done => {
                if self.done_at[i].is_none() {
                    self.done_at[i] = Some(at);
                    self.done += 1;
                    if let Some(r) = self.report_at[i] {
                        self.latencies.push(at.saturating_duration_since(r));
                    }
                }
            }
            Kind::Lost => self.lost[i] = true,
        }
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// CPU time of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> Duration {
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            if let Some((comm, t)) = read_stat(&task.path().join("stat")) {
                if comm.starts_with(prefix) {
                    ticks += t;
                }
            }
        }
    }
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS)
}

/// CPU time of process `pid`.
fn process_cpu(pid: Option<u32>) -> Duration {
    let ticks = pid
        .and_then(|p| read_stat(Path::new(&format!("/proc/{p}/stat"))))
        .map_or(0, |(_, t)| t);
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS)
}

/// Waits until the broker is idle (under 10 ms of CPU in 250 ms, at most 60 s): the clients
/// of a phase that just ended are still being cleaned up there (mosquitto removes each from
/// every subscriber list it was on), and that work must not be billed to the next phase.
fn settle(broker: &Mosquitto) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = process_cpu(broker.pid());
    while Instant::now() < deadline {
        std::thread::sleep(PROGRESS_EVERY);
        let now = process_cpu(broker.pid());
        if now.saturating_sub(last) < Duration::from_millis(10) {
            return;
        }
        last = now;
    }
}

/// (comm, utime + stime) from a `/proc/.../stat` file.
fn read_stat(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm start at field 3 (state); utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// VmRSS of `/proc/<pid>/status` ("self" for this process), bytes.
pub fn vm_rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Prints a progress line when asked to.
struct Progress {
    on: bool,
    phase: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(on: bool, phase: &'static str) -> Self {
        let now = Instant::now();
        Self {
            on,
            phase,
            started: now,
            last: now - PROGRESS_EVERY,
        }
    }

    fn draw(&mut self, t: &Tracker, force: bool) {
        if !self.on || (!force && self.last.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last = Instant::now();
        let width = 30;
        let filled = (t.done * width) / t.n.max(1);
        eprint!(
            "\r{:<10} [{}{}] {:>6}/{} done, {:>6} connected, {:>6.1} s ",
            self.phase,
            "#".repeat(filled),
            "-".repeat(width - filled),
            t.done,
            t.n,
            t.connected_now,
            self.started.elapsed().as_secs_f64()
        );
        if force {
            eprintln!();
        }
    }
}

/// Drives one phase: starts clients through `spawn` within the connect window, feeds events to
/// the tracker, and returns when `finished` holds (or fails at the deadline).
fn drive(
    opts: &FleetOptions,
    phase: &'static str,
    rx: &std_mpsc::Receiver<(usize, Kind, Instant)>,
    tracker: &mut Tracker,
    mut spawn: impl FnMut(usize),
    to_spawn: usize,
    finished: impl Fn(&Tracker) -> bool,
) -> Result<(), FleetError> {
    let deadline = Instant::now() + opts.phase_timeout;
    let mut progress = Progress::new(opts.progress, phase);
    let mut spawned = 0;
    loop {
        while spawned < to_spawn
            && spawned - tracker.ever_connected.min(spawned) < opts.connect_window
        {
            spawn(spawned);
            spawned += 1;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((i, kind, at)) => {
                tracker.on(i, kind, at);
                // Drain what is queued before looking at the clock again.
                while let Ok((i, kind, at)) = rx.try_recv() {
                    tracker.on(i, kind, at);
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                return Err(err(format!("{phase}: every client task ended")))
            }
        }
        progress.draw(tracker, false);
        if spawned == to_spawn && finished(tracker) {
            progress.draw(tracker, true);
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.draw(tracker, true);
            return Err(err(format!(
                "{phase}: not finished after {:?}: {} of {} done, {} connected",
                opts.phase_timeout, tracker.done, tracker.n, tracker.connected_now
            )));
        }
    }
}

fn runtime(threads: usize, name: &str) -> Result<Runtime, FleetError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| err(format!("starting a runtime: {e}")))
}

fn check_fd_limit(devices: usize) -> Result<(), FleetError> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    if devices as u64 + FD_MARGIN > limit {
        return Err(err(format!(
            "{devices} clients need about {} file descriptors and `ulimit -n` is {limit}: \
             run fewer devices per process",
            devices as u64 + FD_MARGIN
        )));
    }
    Ok(())
}

/// Runs the simulation.
pub fn run(opts: &FleetOptions) -> Result<FleetReport, FleetError> {
    if opts.devices == 0 {
        return Err(err("--devices must be at least 1"));
    }
    check_fd_limit(opts.devices)?;
    let n = opts.devices;
    // mosquitto with deliberate limits: one connection per device, the controller and the
    // echo client, plus slack; memory bounded well above what N sessions with a retained
    // bundle each need (≈ 16 MB idle per 10k connections measured, plus the bundles).
    let memory_limit: u64 = 256 * 1024 * 1024 + n as u64 * 32 * 1024;
    let config = MosquittoConfig::plain()
        .with_line(format!("max_connections {}", n + 64))
        .with_line(format!("memory_limit {memory_limit}"))
        .with_line("connection_messages false");
    let mut broker = Mosquitto::start(config).map_err(err)?;
    let url = broker.url();

    let base_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let work = tempfile::Builder::new()
        .prefix("licd-fleet-")
        .tempdir_in(&base_dir)
        .map_err(|e| err(format!("temp dir in {}: {e}", base_dir.display())))?;

    let samples = sample_messages();
    let mut out = FleetReport {
        devices: n,
        report_bytes: samples.report.len(),
        bundle_bytes: samples.bundle.len(),
        ..Default::default()
    };
    if opts.baseline {
        out.baseline_before = Some(baseline(opts, &broker, "baseline", 1, &samples, None)?);
        settle(&broker);
    }
    if opts.floor {
        let dir = work.path().join("floor");
        out.floor = Some(baseline(opts, &broker, "floor", 3, &samples, Some(&dir))?);
        settle(&broker);
    }
    fleet(opts, &mut broker, &url, work.path(), &mut out)?;
    if opts.baseline {
        settle(&broker);
        out.baseline_after = Some(baseline(opts, &broker, "baseline", 2, &samples, None)?);
    }
    Ok(out)
}

/// A report and a 5-service bundle as the agent and the stub produce them (the baseline sends
/// the same number of bytes; the floor phase opens the bundle), the bundle's root, its time.
fn sample_messages() -> Samples {
    let key = SigningKey::from_bytes(&[9; 32]);
    let now = 1_800_000_000;
    let report = DeviceReport {
        device: DeviceId::new("fleet-00000").expect("valid id"),
        tenant: TenantId::new(TENANT).expect("valid id"),
        device_key: PublicKey::from(&key.verifying_key()),
        model: "AP-FLEET".into(),
        serial: "SN-00000".into(),
        product_class: PRODUCT_CLASS.into(),
        firmware_version: "unknown".into(),
        agent_version: AGENT_VERSION.into(),
        vm_count: None,
        services_wanted: SERVICES.map(svc).to_vec(),
        bundle_seq: 0,
        clock: now,
        uptime: 1_000,
        clock_rollback: false,
    };
    let cert = SignerCertificate::issue(&key, PublicKey::from(&key.verifying_key()), 0, now * 2);
    let bundle = GrantBundle {
        device: report.device.clone(),
        device_key: report.device_key.id(),
        tenant: report.tenant.clone(),
        seq: 1,
        issued_at: now,
        refresh_after: now + 302_400,
        grants: SERVICES
            .iter()
            .map(|s| ServiceGrant {
                service: svc(s),
                license: LicenseId::new("SUB-FLEET").expect("valid id"),
                sku: Sku::new(format!("SKU-{s}")).expect("valid id"),
                not_before: now - 86_400,
                not_after: now + 365 * 86_400,
                lease_until: now + 604_800,
                grace: 2_592_000,
                vm_allowance: None,
            })
            .collect(),
        withheld: vec![],
    };
    Samples {
        report: seal_report(&report, &key),
        bundle: seal_bundle(&bundle, &key, &cert),
        root: PublicKey::from(&key.verifying_key()),
        at: now,
        grant: bundle,
        key,
        cert,
    }
}

/// See [`sample_messages`].
#[derive(Debug, Clone)]
struct Samples {
    report: Vec<u8>,
    bundle: Vec<u8>,
    root: PublicKey,
    at: UnixTime,
    grant: GrantBundle,
    key: SigningKey,
    cert: SignerCertificate,
}

impl Samples {
    /// What a controller must do per report at least: check its signature, sign a bundle.
    fn controller_work(&self) -> Result<Vec<u8>, String> {
        open_report(&self.report).map_err(|e| e.to_string())?;
        Ok(seal_bundle(&self.grant, &self.key, &self.cert))
    }
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).expect("a valid service name")
}

/// The bare MQTT echo: N clients, one responder, same broker, same sizes, same window.
///
/// With `floor` (a directory), each client also does the work any agent must do that bare
/// messaging does not, with the agent's own code: before connecting it creates its state
/// directory and device key (generated, written with fsync) and writes its time mark; it signs
/// its request; on the answer — a real sealed bundle: the responder checks a report's signature
/// and signs the bundle for every request, the least a controller does — it opens the bundle
/// (two signature checks, decode) and writes it to its cache with fsync. What is left between
/// this and the fleet is the implementation's overhead: the agent's (enforcement, status,
/// identity record, tasks) and the controller's (ledger, seat rules).
fn baseline(
    opts: &FleetOptions,
    broker: &Mosquitto,
    phase: &'static str,
    round: u32,
    samples: &Samples,
    floor: Option<&Path>,
) -> Result<Convergence, FleetError> {
    let (report_bytes, bundle_bytes) = (samples.report.len(), samples.bundle.len());
    let n = opts.devices;
    let prefix = format!("fleetbase{round}");
    let ctl = runtime(1, CONTROLLER_THREAD)?;
    let clients = runtime(opts.agent_threads, AGENT_THREAD)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (host, port) = (broker.host().to_string(), broker.port());

    // The responder: an event loop task and a publisher task, like the stub's session.
    let (ready_tx, ready_rx) = std_mpsc::channel();
    {
        let mut o = MqttOptions::new(format!("{prefix}-echo"), host.clone(), port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_request_channel_capacity(256);
        let (client, mut eventloop) = AsyncClient::new(o, 256);
        let answer = vec![0xa5u8; bundle_bytes];
        let work = floor.map(|_| samples.clone());
        let (work_tx, mut work_rx) = tokio::sync::mpsc::channel::<String>(n.max(1024));
        let filter = format!("{prefix}/+/req");
        let mut stop = stop_rx.clone();
        let sub_client = client.clone();
        ctl.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub_client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = p.topic.replacen("/req", "/resp", 1);
                        let _ = work_tx.try_send(topic);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        });
        ctl.spawn(async move {
            while let Some(topic) = work_rx.recv().await {
                let answer = match &work {
                    Some(w) => match w.controller_work() {
                        Ok(sealed) => sealed,
                        Err(e) => {
                            eprintln!("floor responder: {e}");
                            break;
                        }
                    },
                    None => answer.clone(),
                };
                if client
                    .publish(topic, QoS::AtLeastOnce, true, answer)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| err("baseline: the echo client did not subscribe within 10 s"))?;

    let (tx, rx) = std_mpsc::channel();
    let mut tracker = Tracker::new(n);
    let request = vec![0x5au8; report_bytes];
    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let bcpu0 = process_cpu(broker.pid());
    let acpu0 = threads_cpu(AGENT_THREAD);
    let started = Instant::now();
    let trust = TrustStore::new(vec![samples.root]);
    let spawn = |i: usize| {
        let tx = tx.clone();
        let mut stop = stop_rx.clone();
        let request = request.clone();
        let floor = floor.map(|d| (d.join(format!("{prefix}-{i}")), trust.clone(), samples.at));
        let mut o = MqttOptions::new(format!("{prefix}-{i}"), host.clone(), port);
        o.set_keep_alive(Duration::from_secs(60))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(o, 16);
        let (req, resp) = (format!("{prefix}/{i}/req"), format!("{prefix}/{i}/resp"));
        let presence = format!("{prefix}/{i}/presence");
        let filters = [
            resp.clone(),
            format!("{prefix}/trust/+"),
            format!("{prefix}/{i}/diag"),
        ]
        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
        clients.spawn(async move {
            let send = |k| tx.send((i, k, Instant::now()));
            let floor = match floor.map(|(dir, trust, at)| floor_start(&dir, trust, at)) {
                Some(Ok(f)) => Some(f),
                Some(Err(e)) => {
                    eprintln!("floor client {i}: cannot start: {e}");
                    return;
                }
                None => None,
            };
            loop {
                let ev = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // What the agent does on ConnAck: one SUBSCRIBE with its three
                        // filters (own answers, the fleet-wide trust filter, own diagnostics),
                        // a retained presence, then its report.
                        let _ = client.try_subscribe_many(filters.clone());
                        let _ = client.try_publish(
                            presence.clone(),
                            QoS::AtLeastOnce,
                            true,
                            b"online".to_vec(),
                        );
                        let _ = send(Kind::Connected);
                        if let Some(f) = &floor {
                            std::hint::black_box(f.key.signing.sign(&request));
                        }
                        let _ = client.try_publish(
                            req.clone(),
                            QoS::AtLeastOnce,
                            false,
                            request.clone(),
                        );
                        let _ = send(Kind::Report);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == resp => {
                        if let Some(f) = &floor {
                            if let Err(e) = f.answer(&p.payload) {
                                eprintln!("floor client {i}: {e}");
                                continue;
                            }
                        }
                        let _ = send(Kind::Done);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = send(Kind::Disconnected);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        });
    };
    let result = drive(opts, phase, &rx, &mut tracker, spawn, n, |t| t.done == n);
    let total = started.elapsed();
    let conv = summarize(
        &mut tracker,
        started,
        total,
        2 * n as u64,
        threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
        process_cpu(broker.pid()).saturating_sub(bcpu0),
        threads_cpu(AGENT_THREAD).saturating_sub(acpu0),
    );
    stop_tx.send_replace(true);
    clients.shutdown_timeout(Duration::from_secs(5));
    ctl.shutdown_timeout(Duration::from_secs(5));
    result.map(|()| conv)
}

/// One floor client's agent-side state (see [`baseline`]).
struct Floor {
    store: Store,
    key: DeviceKey,
    trust: TrustStore,
    /// The time the sample bundle is judged at.
    at: UnixTime,
}

fn floor_start(dir: &Path, trust: TrustStore, at: UnixTime) -> Result<Floor, String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let key = DeviceKey::load_or_create(dir).map_err(|e| e.to_string())?;
    store.save_mark(unix_now()).map_err(|e| e.to_string())?;
    Ok(Floor {
        store,
        key,
        trust,
        at,
    })
}

impl Floor {
    /// What an agent must do with a bundle: open it, keep it.
    fn answer(&self, raw: &[u8]) -> Result<(), String> {
        open_bundle(raw, &self.trust, self.at).map_err(|e| e.to_string())?;
        self.store.save_bundle(raw).map_err(|e| e.to_string())
    }
}

fn summarize(
    t: &mut Tracker,
    started: Instant,
    total: Duration,
    messages: u64,
    controller_cpu: Duration,
    broker_cpu: Duration,
    clients_cpu: Duration,
) -> Convergence {
    t.latencies.sort();
    Convergence {
        done: t.done,
        total,
        all_connected: t
            .last_connect
            .map_or(Duration::ZERO, |c| c.saturating_duration_since(started)),
        p50: percentile(&t.latencies, 50),
        p99: percentile(&t.latencies, 99),
        max: t.latencies.last().copied().unwrap_or_default(),
        messages_per_sec: messages as f64 / total.as_secs_f64().max(1e-9),
        controller_cpu,
        broker_cpu,
        clients_cpu,
    }
}

/// Sets up the ledger: one MSP with one tenant, a catalogue entry per service, N seats of each,
/// auto-licensing for every customer.
async fn setup_ledger(stub: &StubHandle, n: usize) -> Result<(), licd_stub::StubError> {
    let id = |s: &str| TenantId::new(s).expect("valid id");
    let sku = |s: &str| Sku::new(format!("SKU-{s}")).expect("valid id");
    stub.add_customer(id("fleet-msp"), "Fleet MSP", CustomerKind::Msp)
        .await?;
    stub.add_customer(id(TENANT), "Fleet", CustomerKind::Tenant)
        .await?;
    for s in SERVICES {
        stub.add_catalog_entry(CatalogEntry {
            sku: sku(s),
            name: format!("{s} license"),
            service: svc(s),
            product_class: PRODUCT_CLASS.into(),
            vms_per_seat: None,
        })
        .await?;
    }
    let now = stub.now();
    stub.add_subscription(Subscription {
        id: LicenseId::new("SUB-FLEET").expect("valid id"),
        name: "fleet subscription".into(),
        owner: Some(id(TENANT)),
        claim_key: None,
        start: now - 86_400,
        end: now + 365 * 86_400,
        entitlements: SERVICES
            .iter()
            .map(|s| Entitlement {
                sku: sku(s),
                limit: u32::try_from(n).unwrap_or(u32::MAX),
            })
            .collect(),
    })
    .await?;
    stub.enable_auto_licensing(&Selection::all(), &SERVICES.map(svc), false)
        .await?;
    Ok(())
}

/// The agent config every simulated device shares (state dir and id are set per device).
fn agent_settings(url: &str, root: &PublicKey, dir: &Path) -> Result<Settings, FleetError> {
    let services = SERVICES.map(|s| format!("{s:?}")).join(", ");
    let text = format!(
        "tenant = {TENANT:?}\nservices = [{services}]\nstate_dir = {state:?}\nroots = [{root:?}]\n\n\
         [broker]\nurl = {url:?}\nallow_insecure = true\n\n\
         [api]\nsocket = \"\"\n\n\
         [identity]\ndevice_id = \"fleet-00000\"\nmodel = \"AP-FLEET\"\nserial = \"SN-00000\"\n\
         product_class = {PRODUCT_CLASS:?}\n",
        state = dir.join("template").display().to_string(),
        root = root.to_hex(),
    );
    Settings::from_toml(&text).map_err(|e| err(format!("agent config: {e}")))
}

/// One simulated device's settings and identity.
fn device(
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
async fn watch_agent(i: usize, mut rx: watch::Receiver<Arc<Status>>, tx: Events) {
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

fn fleet(
    opts: &FleetOptions,
    broker: &mut Mosquitto,
    url: &str,
    dir: &Path,
    out: &mut FleetReport,
) -> Result<(), FleetError> {
    let n = opts.devices;
    let (ctl, stub) = start_controller(url, n, dir)?;
    let agents = runtime(opts.agent_threads, AGENT_THREAD)?;

    let settings = agent_settings(url, &stub.root_public_key(), dir)?;
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
    let stats0 = stub.stats();
    let started = Instant::now();
    let spawn = |i: usize| match device(&settings, &identity, dir, i) {
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
            let (stub, sampling) = (&stub, &sampling);
            sc.spawn(move || {
                let mut samples = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    samples.push((started.elapsed(), stub.stats()));
                    std::thread::sleep(PROGRESS_EVERY);
                }
                samples.push((started.elapsed(), stub.stats()));
                samples
            })
        });
        let r = drive(opts, "fleet", &rx, &mut tracker, spawn, n, |t| t.done == n);
        sampling.store(false, Ordering::Relaxed);
        (r, sampler.and_then(|h| h.join().ok()).unwrap_or_default())
    });
    if opts.timeline {
        eprint!("{}", timeline(&tracker, started, &stats0, &samples));
    }
    let total = started.elapsed();
    let stats = stub.stats();
    let messages = (stats.reports_received - stats0.reports_received)
        + (stats.bundles_published - stats0.bundles_published);
    out.fleet = summarize(
        &mut tracker,
        started,
        total,
        messages,
        threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
        process_cpu(broker.pid()).saturating_sub(bcpu0),
        threads_cpu(AGENT_THREAD).saturating_sub(acpu0),
    );
    out.reports_dropped = stats.reports_dropped - stats0.reports_dropped;
    out.process_rss = vm_rss("self");
    out.broker_rss = broker.pid().map_or(0, |p| vm_rss(&p.to_string()));
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    result?;

    if opts.storm {
        out.storm = Some(storm(opts, broker, &stub, &rx, &mut tracker)?);
    }

    stop_tx.send_replace(true);
    agents.block_on(async {
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            for h in handles {
                let _ = h.await;
            }
        })
        .await;
    });
    ctl.block_on(stub.shutdown());
    agents.shutdown_timeout(Duration::from_secs(5));
    ctl.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// The fleet phase as cumulative counts every [`PROGRESS_EVERY`]: reports the agents sent, the
/// controller received and applied, agents licensed. Shows where a stall is (a broker that
/// stops reading the controller, a controller behind its queue, agents slow to start).
fn timeline(
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

/// Starts the stub controller against the broker at `url` on its own runtime (threads named
/// [`CONTROLLER_THREAD`]), ledger in `dir`, with the fleet's ledger: tenant `fleet`, `seats`
/// seats of every service in [`SERVICES`], auto-licensing on. Also used alone by
/// `licd-fleet --controller-only` (cross/size-report.sh's idle agent).
pub fn start_controller(
    url: &str,
    seats: usize,
    dir: &Path,
) -> Result<(Runtime, StubHandle), FleetError> {
    let ctl = runtime(1, CONTROLLER_THREAD)?;
    let signer = Signer::ephemeral(unix_now()).map_err(err)?;
    let mut config = StubConfig::for_tests(signer);
    config.broker = BrokerMode::External {
        url: url.to_string(),
        ca_file: None,
        credentials: None,
    };
    config.ledger = LedgerLocation::File(dir.join("ledger.db"));
    // Sized for the fleet: every device reports at once, and a dropped report costs that
    // device a retry (5 s, doubling).
    config.queue_capacity = seats.max(1024);
    config.client_id = "licd-fleet-controller".into();
    let stub = ctl
        .block_on(Stub::start(config))
        .map_err(|e| err(format!("stub: {e}")))?;
    ctl.block_on(setup_ledger(&stub, seats))
        .map_err(|e| err(format!("ledger set-up: {e}")))?;
    Ok((ctl, stub))
}

fn storm(
    opts: &FleetOptions,
    broker: &mut Mosquitto,
    stub: &StubHandle,
    rx: &std_mpsc::Receiver<(usize, Kind, Instant)>,
    tracker: &mut Tracker,
) -> Result<Storm, FleetError> {
    let n = opts.devices;
    let stats0 = stub.stats();
    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let disconnects0 = tracker.disconnects;
    let t0 = Instant::now();
    broker.restart().map_err(err)?;
    let up = Instant::now();
    let bcpu0 = process_cpu(broker.pid());
    let mut reconnected_at = None;
    let mut reported_at = None;
    let deadline = up + opts.phase_timeout;
    let mut progress = Progress::new(opts.progress, "storm");
    // An agent is back when it has sent a report after the restart: it reports on every
    // ConnAck, and `reports_sent` only grows (a connected → disconnected → connected flip can
    // fall between two looks at its status watch; the counter cannot).
    let mut back = vec![false; n];
    let mut back_count = 0;
    loop {
        while let Ok((i, kind, at)) = rx.try_recv() {
            if matches!(kind, Kind::Report) && at >= t0 && i < n && !back[i] {
                back[i] = true;
                back_count += 1;
            }
            tracker.on(i, kind, at);
        }
        let now = Instant::now();
        if back_count == n && reconnected_at.is_none() {
            reconnected_at = Some(now);
        }
        let reports = stub.stats().reports_received - stats0.reports_received;
        if reports >= n as u64 && reported_at.is_none() {
            reported_at = Some(now);
        }
        progress.draw(tracker, false);
        if reconnected_at.is_some() && reported_at.is_some() {
            progress.draw(tracker, true);
            break;
        }
        if now >= deadline {
            progress.draw(tracker, true);
            return Err(err(format!(
                "storm: after {:?} {back_count} of {n} agents back, {reports} reports at the controller",
                opts.phase_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = stub.stats();
    let since = |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t.saturating_duration_since(up));
    Ok(Storm {
        broker_down: up.saturating_duration_since(t0),
        all_reconnected: since(reconnected_at),
        all_reported: since(reported_at),
        failed_attempts: (tracker.disconnects - disconnects0).saturating_sub(n as u64),
        lost_license: tracker.lost.iter().filter(|l| **l).count(),
        reports_dropped: stats.reports_dropped - stats0.reports_dropped,
        controller_cpu: threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
        broker_cpu: process_cpu(broker.pid()).saturating_sub(bcpu0),
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
