//! The fleet simulator: N real agents (the agent library's daemon,
//! [`licd_agent::daemon::run_with`], one tokio task each, many per process) against a real
//! mosquitto and the stub controller, with a same-run baseline — a bare MQTT request/response echo with the same number of clients and
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
//! 4. relay, with [`FleetOptions::relay`]: the same number of new devices licensed by a site
//!    relay (`licd_stub::relay`, a delegation of as many seats) through the same broker;
//! 5. baseline again (after the agents stopped, to free their sockets), so drift in the
//!    machine's load shows.
//!
//! What it leaves to others: the agent's behaviour (this only observes its status watch) and
//! the broker (started through [`crate::mosquitto`]). The binary `licd-fleet` prints a table or
//! JSON; `tests/tests/fleet.rs` runs a short version.
//!
//! Modules: [`report`] (the figures, table and JSON), [`proc`] (CPU and memory from `/proc`),
//! [`drive`] (per-client bookkeeping and the loop every phase runs), [`baseline`] (bare echo
//! and floor), [`controller`] (the stub with the fleet's ledger), [`agents`] (the fleet phase)
//! and [`storm`] (the broker restart); [`workers`] runs the fleet phase across processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use licd_protocol::ServiceName;
use tokio::runtime::Runtime;

use crate::mosquitto::{Mosquitto, MosquittoConfig};

mod agents;
mod baseline;
mod controller;
mod drive;
mod proc;
mod report;
mod storm;
mod workers;

pub use controller::{start_controller, start_controller_with};
pub use proc::vm_rss;
pub use report::{Convergence, FleetReport, Storm};
pub use workers::{merge, run_worker, run_workers, WorkerResult, WorkerRole};

/// The services every simulated device wants (and the ledger licenses).
pub const SERVICES: [&str; 5] = ["wifi", "vpn", "ids", "guest-portal", "mesh"];
/// Tenant of the simulated devices.
pub const TENANT: &str = "fleet";
/// Tenant of the devices a site relay licenses (`--relay`): another tenant, so nothing the
/// controller's run left retained on the broker reaches them.
const SITE_TENANT: &str = "fleet-site";
/// Site of the devices a site relay licenses.
const SITE: &str = "fleet-site-1";
/// Product class of the devices and the catalogue entries (auto-licensing matches on it).
pub const PRODUCT_CLASS: &str = "wireless";
/// Name of the controller's runtime threads; their CPU is the controller's CPU.
pub const CONTROLLER_THREAD: &str = "licd-ctl";
/// Name of the agents' runtime threads.
const AGENT_THREAD: &str = "licd-fleet";
/// File descriptors kept free beyond one per client (mosquitto, ledger, stdio, runtimes).
const FD_MARGIN: u64 = 256;

/// The default connect window: under mosquitto 2.0's fixed listen backlog of 100 (`ss -ltn`
/// shows it). At 128, fast clients overflowed it and waited for SYN retransmits: a bare echo
/// of 2,000 clients took 1.04 s instead of 0.28 s, which flattered every ratio to it.
pub const CONNECT_WINDOW: usize = 96;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

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
    /// After the controller's fleet, license the same number of new devices through a site
    /// relay (a delegation of as many seats) on the same broker: the relay's throughput
    /// against the controller's in one run.
    pub relay: bool,
    /// With workers ([`run_workers`]): a real 3-node nats-server cluster
    /// ([`crate::NatsCluster`]) in place of mosquitto; every agent lists the three nodes and
    /// starts at a random one, the controller subscribes without `$share` (docs/STUB.md).
    pub nats: bool,
    /// With [`FleetOptions::nats`]: the nodes keep MQTT consumers as one in-memory copy
    /// ([`crate::nats::Consumers::Local`]) instead of replicated Raft groups.
    pub nats_local_consumers: bool,
    /// The agents subscribe at QoS 1 (their default); `false`: `[broker] subscribe_qos = 0`.
    pub subscribe_qos1: bool,
    /// Upper bound of every phase.
    pub phase_timeout: Duration,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Print the fleet phase's timeline (see [`agents`]) on stderr.
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
            relay: false,
            nats: false,
            nats_local_consumers: false,
            subscribe_qos1: true,
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
    let mut broker = start_broker(n, &[])?;
    let url = broker.url();
    let work = work_dir(opts)?;

    let samples = baseline::sample_messages();
    let mut out = FleetReport {
        devices: n,
        report_bytes: samples.report.len(),
        bundle_bytes: samples.bundle.len(),
        ..Default::default()
    };
    if opts.baseline {
        out.baseline_before = Some(baseline::phase(
            opts, &broker, "baseline", 1, &samples, None,
        )?);
        proc::settle(&broker);
    }
    if opts.floor {
        let dir = work.path().join("floor");
        out.floor = Some(baseline::phase(
            opts,
            &broker,
            "floor",
            3,
            &samples,
            Some(&dir),
        )?);
        proc::settle(&broker);
    }
    agents::phase(opts, &mut broker, &url, work.path(), &mut out)?;
    if opts.baseline {
        proc::settle(&broker);
        out.baseline_after = Some(baseline::phase(
            opts, &broker, "baseline", 2, &samples, None,
        )?);
    }
    Ok(out)
}

/// mosquitto for `n` clients, with deliberate limits: one connection per device, the
/// controller and the echo client, plus slack; memory bounded well above what N sessions with a
/// retained bundle each need (≈ 16 MB idle per 10k connections measured, plus the bundles).
/// `extra_ports`: more listeners on 127.0.0.1 (the workers spread over them: one destination
/// port has ~28,000 ephemeral source ports, `ip_local_port_range`, and its own listen backlog).
fn start_broker(n: usize, extra_ports: &[u16]) -> Result<Mosquitto, FleetError> {
    let memory_limit: u64 = 256 * 1024 * 1024 + n as u64 * 32 * 1024;
    let mut config = MosquittoConfig::plain()
        .with_line(format!("max_connections {}", n + 64))
        .with_line(format!("memory_limit {memory_limit}"))
        .with_line("connection_messages false");
    for p in extra_ports {
        config = config.with_line(format!("listener {p} 127.0.0.1"));
    }
    Mosquitto::start(config).map_err(err)
}

/// A fresh directory for state dirs and the ledger (see [`FleetOptions::work_dir`]).
fn work_dir(opts: &FleetOptions) -> Result<tempfile::TempDir, FleetError> {
    let base_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    tempfile::Builder::new()
        .prefix("licd-fleet-")
        .tempdir_in(&base_dir)
        .map_err(|e| err(format!("temp dir in {}: {e}", base_dir.display())))
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).expect("a valid service name")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
