//! The fleet across processes (`licd-fleet --workers N`): past ~19,700 agents one process runs
//! out of file descriptors (one MQTT connection each, `ulimit -n` 20,000 here), so the parent
//! starts mosquitto (one listener per worker) and the controller, re-executes its own binary N
//! times as workers, each running a slice of the device range under its own fd limit, and
//! merges the one JSON line each worker prints into one [`FleetReport`].
//!
//! Protocol between them, deliberately plain: the parent passes the broker URL, the root key
//! and the slice as arguments; a worker prints one line when its agents are all licensed
//! ([`WorkerResult`], or `{"error": …}`) and keeps them connected until its stdin closes, so no
//! agent leaves the broker while another worker's agents still converge. Times are wall-clock
//! microseconds since the Unix epoch (one machine, one clock), so the parent can place every
//! worker's events on its own time line.
//!
//! With [`FleetOptions::nats`] the broker is a real 3-node nats-server cluster instead
//! (one process per node, each under its own fd limit): every agent lists the three nodes and
//! starts at a random one, the controller lists them too and subscribes without `$share`.
//!
//! With [`FleetOptions::floor`] the floor phase runs across the workers first (the same
//! brokers; the responder in the parent, the floor clients in the workers, which spread them
//! over the nodes in turn and subscribe at the agents' QoS), so fleet / floor compares like
//! with like. Left out on purpose: the baseline and storm phases (they stay single-process).

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use licd_agent::clock::SystemClock;
use licd_agent::daemon;
use licd_agent::identity::{resolve_identity_blocking, HostRoot};
use licd_protocol::topic::DEFAULT_SHARE_GROUP;
use licd_protocol::PublicKey;
use licd_stub::ReportSubscription;
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::mosquitto::Mosquitto;
use crate::nats::Consumers;
use crate::NatsCluster;

use super::agents::{agent_settings, device, watch_agent, STOP_TIMEOUT};
use super::baseline::{sample_messages, spawn_client, start_responder, ClientPlan, Endpoints};
use super::controller::start_controller_with;
use super::drive::{drive, percentile, Tracker};
use super::proc::{process_cpu, threads_cpu, vm_rss};
use super::report::{Convergence, FleetReport};
use super::{
    check_fd_limit, err, runtime, start_broker, FleetError, FleetOptions, AGENT_THREAD,
    CONTROLLER_THREAD, FD_MARGIN, TENANT,
};

/// What one worker measured, printed by it as one JSON line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    /// The worker's process id (the parent checks each slice ran in a process of its own).
    pub pid: u32,
    /// First device index of its slice.
    pub first: usize,
    /// Devices in its slice.
    pub count: usize,
    /// Agents licensed for every service.
    pub done: usize,
    /// When its last agent connected, µs since the epoch.
    pub last_connect_us: u64,
    /// When its last agent was licensed, µs since the epoch.
    pub last_done_us: u64,
    /// Report → bundle applied of each licensed agent, µs.
    pub latencies_us: Vec<u64>,
    /// CPU of its agents' runtime threads, µs.
    pub agents_cpu_us: u64,
    /// Its VmRSS with its agents licensed, bytes.
    pub rss: u64,
}

fn epoch_us(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The wall-clock time of `at` (an `Instant` of this process), µs since the epoch.
fn instant_to_epoch_us(at: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    let back = now.saturating_duration_since(at);
    epoch_us(wall_now.checked_sub(back).unwrap_or(wall_now))
}

/// What a worker process runs.
#[derive(Debug, Clone)]
pub enum WorkerRole {
    /// Real agents pinning this root key (the fleet phase).
    Agents(PublicKey),
    /// Floor clients (the echo doing an agent's crypto and fsyncs; see `baseline`).
    Floor,
}

/// A worker: runs devices `first..first + count` against `url` (a comma-separated list of
/// brokers), prints one [`WorkerResult`] line on stdout once all are done (or `{"error": …}`
/// and fails), then keeps them connected until stdin closes.
pub fn run_worker(
    opts: &FleetOptions,
    url: &str,
    role: &WorkerRole,
    first: usize,
    count: usize,
) -> Result<(), FleetError> {
    let result = match role {
        WorkerRole::Agents(root) => converge_slice(opts, url, root, first, count)
            .map(|(r, running)| (r, Box::new(move || running.stop()) as StopSlice)),
        WorkerRole::Floor => floor_slice(opts, url, first, count),
    };
    let line = match &result {
        Ok((r, _)) => serde_json::to_string(r).map_err(err)?,
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| err(format!("writing the result: {e}")))?;
    drop(out);
    let (_, stop) = result?;
    // Stay connected until the parent has every worker's result (it closes our stdin then, or
    // dies, which closes it too).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    stop();
    Ok(())
}

/// Stops a worker's clients once the parent has every result.
type StopSlice = Box<dyn FnOnce()>;

/// Topic prefix of the floor phase across workers.
const FLOOR_PREFIX: &str = "fleetfloor";

/// A floor worker's slice: floor clients `first..first + count`, spread over the brokers in
/// `urls` in turn, answered by the parent's responder.
fn floor_slice(
    opts: &FleetOptions,
    urls: &str,
    first: usize,
    count: usize,
) -> Result<(WorkerResult, StopSlice), FleetError> {
    if count == 0 {
        return Err(err("a worker needs at least one device"));
    }
    check_fd_limit(count)?;
    let at = Endpoints::parse(urls)?;
    let work = super::work_dir(opts)?;
    let clients = runtime(opts.agent_threads, AGENT_THREAD)?;
    let samples = sample_messages();
    let qos = if opts.subscribe_qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let plan = ClientPlan::new(FLOOR_PREFIX, &samples, Some(work.path()), qos);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, rx) = std_mpsc::channel();
    let mut tracker = Tracker::new(count);
    let acpu0 = threads_cpu(AGENT_THREAD);
    let spawn = |j: usize| {
        spawn_client(
            &clients,
            &plan,
            &at,
            first + j,
            j,
            tx.clone(),
            stop_rx.clone(),
        )
    };
    drive(opts, "floor worker", &rx, &mut tracker, spawn, count, |t| {
        t.done == count
    })?;
    let result = slice_result(&tracker, first, count, acpu0);
    let stop = move || {
        stop_tx.send_replace(true);
        clients.shutdown_timeout(Duration::from_secs(5));
        drop(work);
    };
    Ok((result, Box::new(stop)))
}

/// A slice's figures from its tracker, times as wall clock (see the module docs).
fn slice_result(tracker: &Tracker, first: usize, count: usize, acpu0: Duration) -> WorkerResult {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let at = |i: Option<Instant>| i.map_or(0, |i| instant_to_epoch_us(i, now, wall));
    WorkerResult {
        pid: std::process::id(),
        first,
        count,
        done: tracker.done,
        last_connect_us: at(tracker.last_connect()),
        last_done_us: at(tracker.done_at.iter().flatten().max().copied()),
        latencies_us: tracker
            .latencies()
            .iter()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .collect(),
        agents_cpu_us: u64::try_from(threads_cpu(AGENT_THREAD).saturating_sub(acpu0).as_micros())
            .unwrap_or(u64::MAX),
        rss: vm_rss("self"),
    }
}

/// A worker's agents, kept running after convergence until [`Running::stop`].
struct Running {
    agents: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<Result<(), licd_agent::daemon::RunError>>>,
    _work: tempfile::TempDir,
}

impl Running {
    fn stop(self) {
        self.stop.send_replace(true);
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

fn converge_slice(
    opts: &FleetOptions,
    url: &str,
    root: &PublicKey,
    first: usize,
    count: usize,
) -> Result<(WorkerResult, Running), FleetError> {
    if count == 0 {
        return Err(err("a worker needs at least one device"));
    }
    check_fd_limit(count)?;
    let work = super::work_dir(opts)?;
    let dir = work.path();
    let agents = runtime(opts.agent_threads, AGENT_THREAD)?;
    let mut settings = agent_settings(url, root, dir, TENANT, None)?;
    settings.broker.subscribe_qos1 = opts.subscribe_qos1;
    let identity = resolve_identity_blocking(&settings.identity, &HostRoot::system())
        .map_err(|e| err(format!("identity: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, rx) = std_mpsc::channel();
    let mut tracker = Tracker::new(count);
    let mut handles = Vec::with_capacity(count);
    let mut failures = Vec::new();
    let acpu0 = threads_cpu(AGENT_THREAD);
    let spawn = |j: usize| match device(&settings, &identity, dir, first + j) {
        Ok((s, ident)) => {
            let mut stop = stop_rx.clone();
            let tx = tx.clone();
            handles.push(agents.spawn(async move {
                daemon::run_with(
                    s,
                    Arc::new(SystemClock),
                    ident,
                    move |status| {
                        tokio::spawn(watch_agent(j, status, tx));
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
    let r = drive(opts, "worker", &rx, &mut tracker, spawn, count, |t| {
        t.done == count
    });
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    r?;
    let result = slice_result(&tracker, first, count, acpu0);
    Ok((
        result,
        Running {
            agents,
            stop: stop_tx,
            handles,
            _work: work,
        },
    ))
}

/// A worker process and the thread reading its one line.
struct Worker {
    child: Child,
    line: std_mpsc::Receiver<std::io::Result<String>>,
}

/// The parent: the broker (mosquitto with one listener per worker, or a nats-server cluster),
/// the controller, `workers` worker processes of `exe` (this binary, run as `exe --worker …`),
/// their results merged.
pub fn run_workers(
    opts: &FleetOptions,
    exe: &Path,
    workers: usize,
) -> Result<FleetReport, FleetError> {
    let n = opts.devices;
    let workers = workers.clamp(1, n.max(1));
    if n == 0 {
        return Err(err("--devices must be at least 1"));
    }
    let brokers = Brokers::start(opts, n, workers)?;
    let work = super::work_dir(opts)?;
    let (ctl, stub) = start_controller_with(
        &brokers.controller_url(),
        n,
        work.path(),
        brokers.subscription(),
        brokers.subscribe_qos(),
        None,
    )?;
    let root = stub.root_public_key().to_hex();

    let floor = if opts.floor {
        Some(floor_phase(opts, exe, &brokers, workers)?)
    } else {
        None
    };

    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let bcpu0 = brokers.cpu();
    let stats0 = stub.stats();
    let (started, started_wall) = (Instant::now(), SystemTime::now());
    let running = spawn_workers(opts, exe, &brokers, workers, &["--worker-root", &root])?;
    let (results, failure) = collect(&running, started + opts.phase_timeout);
    let stats = stub.stats();
    let merged = failure.map_or_else(
        || {
            Ok(merge(
                n,
                &results,
                epoch_us(started_wall),
                started.elapsed(),
                Convergence {
                    messages_per_sec: 0.0,
                    controller_cpu: threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
                    broker_cpu: brokers.cpu().saturating_sub(bcpu0),
                    ..Default::default()
                },
                (stats.reports_received - stats0.reports_received)
                    + (stats.bundles_published - stats0.bundles_published),
            ))
        },
        Err,
    );
    // Every worker has answered (or one failed): let them stop their agents and exit.
    stop_workers(running);
    let mut report = merged?;
    report.floor = floor;
    let samples = super::baseline::sample_messages();
    report.report_bytes = samples.report.len();
    report.bundle_bytes = samples.bundle.len();
    report.reports_dropped = stats.reports_dropped - stats0.reports_dropped;
    report.reports_replaced = stats.reports_replaced - stats0.reports_replaced;
    report.bundles_published = stats.bundles_published - stats0.bundles_published;
    report.process_rss += vm_rss("self");
    report.broker_rss = brokers.rss();
    report.broker_name = brokers.name();
    ctl.block_on(stub.shutdown());
    ctl.shutdown_timeout(Duration::from_secs(5));
    Ok(report)
}

/// The floor phase across workers: the responder here (one client on the first broker, a
/// signature check and a bundle signed per request), the floor clients in `workers` worker
/// processes; their results merged like the fleet's.
fn floor_phase(
    opts: &FleetOptions,
    exe: &Path,
    brokers: &Brokers,
    workers: usize,
) -> Result<Convergence, FleetError> {
    let n = opts.devices;
    let ctl = runtime(1, CONTROLLER_THREAD)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let at = Endpoints::parse(&brokers.controller_url())?;
    let samples = sample_messages();
    start_responder(&ctl, &at, FLOOR_PREFIX, &samples, true, n, &stop_rx)?;
    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let bcpu0 = brokers.cpu();
    let (started, started_wall) = (Instant::now(), SystemTime::now());
    let running = spawn_workers(opts, exe, brokers, workers, &["--worker-floor"])?;
    let (results, failure) = collect(&running, started + opts.phase_timeout);
    let merged = failure.map_or_else(
        || {
            Ok(merge(
                n,
                &results,
                epoch_us(started_wall),
                started.elapsed(),
                Convergence {
                    controller_cpu: threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
                    broker_cpu: brokers.cpu().saturating_sub(bcpu0),
                    ..Default::default()
                },
                2 * n as u64,
            ))
        },
        Err,
    );
    stop_workers(running);
    stop_tx.send_replace(true);
    ctl.shutdown_timeout(Duration::from_secs(5));
    merged.map(|r| r.fleet)
}

/// Starts `workers` processes of `exe`, each with its slice of the devices, its broker URL(s)
/// and `role_args`.
fn spawn_workers(
    opts: &FleetOptions,
    exe: &Path,
    brokers: &Brokers,
    workers: usize,
    role_args: &[&str],
) -> Result<Vec<Worker>, FleetError> {
    let n = opts.devices;
    let mut running = Vec::with_capacity(workers);
    for w in 0..workers {
        let url = brokers.worker_url(w);
        let first = n * w / workers;
        let count = n * (w + 1) / workers - first;
        let mut cmd = Command::new(exe);
        cmd.args(["--worker-url", &url])
            .args(role_args)
            .args(["--worker-first", &first.to_string()])
            .args(["--devices", &count.to_string()])
            .args(["--agent-threads", &opts.agent_threads.to_string()])
            .args(["--connect-window", &opts.connect_window.to_string()])
            .args(["--timeout-secs", &opts.phase_timeout.as_secs().to_string()])
            .args([
                "--subscribe-qos",
                if opts.subscribe_qos1 { "1" } else { "0" },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(d) = &opts.work_dir {
            cmd.arg("--work-dir").arg(d);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("starting worker {w} ({}): {e}", exe.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| err("a worker without stdout"))?;
        let (tx, line) = std_mpsc::channel();
        std::thread::spawn(move || {
            let mut l = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut l).map(|_| l));
        });
        running.push(Worker { child, line });
    }
    Ok(running)
}

/// Every worker's result line, waiting until `bound` (plus slack for the workers' own
/// bound); stops at the first failure.
fn collect(running: &[Worker], bound: Instant) -> (Vec<WorkerResult>, Option<FleetError>) {
    let deadline = bound + Duration::from_secs(30);
    let mut results = Vec::with_capacity(running.len());
    for (w, worker) in running.iter().enumerate() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let parsed = match worker.line.recv_timeout(wait) {
            Ok(Ok(l)) => parse_line(&l).map_err(|e| err(format!("worker {w}: {e}"))),
            Ok(Err(e)) => Err(err(format!("worker {w}: reading its result: {e}"))),
            Err(_) => Err(err(format!("worker {w}: no result after {wait:?}"))),
        };
        match parsed {
            Ok(r) => results.push(r),
            Err(e) => return (results, Some(e)),
        }
    }
    (results, None)
}

/// Closes every worker's stdin (it then stops its clients and exits) and reaps it, killing
/// one that takes too long.
fn stop_workers(running: Vec<Worker>) {
    for mut w in running {
        drop(w.child.stdin.take());
        let end = Instant::now() + STOP_TIMEOUT + Duration::from_secs(10);
        while matches!(w.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
}

fn parse_line(line: &str) -> Result<WorkerResult, String> {
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("not a result line ({e}): {:?}", line.trim()))?;
    if let Some(e) = v.get("error") {
        return Err(e.as_str().unwrap_or("failed").to_string());
    }
    serde_json::from_value(v).map_err(|e| format!("not a result line: {e}"))
}

/// One report from the workers' results: counts and CPU summed, the percentiles of all
/// latencies together, the times from the parent's start (`started_us`) to the last worker's
/// last event. `base` carries the parent's own figures (controller, broker).
pub fn merge(
    devices: usize,
    results: &[WorkerResult],
    started_us: u64,
    elapsed: Duration,
    base: Convergence,
    messages: u64,
) -> FleetReport {
    let since = |us: u64| Duration::from_micros(us.saturating_sub(started_us));
    let mut latencies: Vec<Duration> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().map(|&u| Duration::from_micros(u)))
        .collect();
    latencies.sort();
    let total = results
        .iter()
        .map(|r| since(r.last_done_us))
        .max()
        .unwrap_or(elapsed);
    let fleet = Convergence {
        done: results.iter().map(|r| r.done).sum(),
        total,
        all_connected: results
            .iter()
            .map(|r| since(r.last_connect_us))
            .max()
            .unwrap_or_default(),
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        max: latencies.last().copied().unwrap_or_default(),
        messages_per_sec: messages as f64 / total.as_secs_f64().max(1e-9),
        clients_cpu: Duration::from_micros(results.iter().map(|r| r.agents_cpu_us).sum()),
        ..base
    };
    FleetReport {
        devices,
        fleet,
        process_rss: results.iter().map(|r| r.rss).sum(),
        workers: results.iter().map(|r| (r.pid, r.count, r.done)).collect(),
        ..Default::default()
    }
}

/// The broker of a run across workers.
enum Brokers {
    /// One mosquitto with a listener per worker (one destination port has ~28,000 ephemeral
    /// source ports): `urls[w]` is worker w's.
    Mosquitto {
        broker: Mosquitto,
        urls: Vec<String>,
    },
    /// A 3-node nats-server cluster: every agent lists the three nodes.
    Nats(NatsCluster),
}

impl Brokers {
    fn start(opts: &FleetOptions, n: usize, workers: usize) -> Result<Self, FleetError> {
        if opts.nats {
            // Each node holds about a third of the connections (agents start at a random
            // node); the nodes inherit this process's limit. 2 % of the fleet for an uneven
            // spread (the spread's standard deviation at 50,000 is ~105).
            let per_node = n / crate::nats::NODES + n / 50;
            raise_fd_limit(per_node as u64 + FD_MARGIN)?;
            let consumers = if opts.nats_local_consumers {
                Consumers::Local
            } else {
                Consumers::Replicated
            };
            return NatsCluster::start_with_consumers(consumers)
                .map(Self::Nats)
                .map_err(|e| err(format!("nats-server cluster: {e}")));
        }
        // The broker holds every connection: it may need more descriptors than one process is
        // given by default (a worker never does; see check_fd_limit there).
        raise_fd_limit(n as u64 + FD_MARGIN)?;
        let extra: Vec<u16> = (1..workers)
            .map(|_| crate::free_port().map_err(err))
            .collect::<Result<_, _>>()?;
        let broker = start_broker(n, &extra)?;
        let mut urls = vec![broker.url()];
        urls.extend(extra.iter().map(|p| format!("mqtt://127.0.0.1:{p}")));
        Ok(Self::Mosquitto { broker, urls })
    }

    /// Where the controller connects: mosquitto's first listener, or every node (it fails
    /// over between them).
    fn controller_url(&self) -> String {
        match self {
            Self::Mosquitto { broker, .. } => broker.url(),
            Self::Nats(c) => c.urls().join(","),
        }
    }

    /// nats-server delivers nothing to `$share` subscriptions (docs/STUB.md): one controller
    /// with a plain one there.
    fn subscription(&self) -> ReportSubscription {
        match self {
            Self::Mosquitto { .. } => ReportSubscription::Shared(DEFAULT_SHARE_GROUP.into()),
            Self::Nats(_) => ReportSubscription::Plain,
        }
    }

    /// The QoS of the controller's subscriptions: 0 on nats-server, where each QoS 1
    /// subscription is a JetStream consumer (docs/STUB.md), else 1.
    fn subscribe_qos(&self) -> QoS {
        match self {
            Self::Mosquitto { .. } => QoS::AtLeastOnce,
            Self::Nats(_) => QoS::AtMostOnce,
        }
    }

    /// What worker `w`'s agents connect to (a comma-separated list: every node).
    fn worker_url(&self, w: usize) -> String {
        match self {
            Self::Mosquitto { urls, .. } => urls.get(w).cloned().unwrap_or_default(),
            Self::Nats(c) => c.urls().join(","),
        }
    }

    fn pids(&self) -> Vec<Option<u32>> {
        match self {
            Self::Mosquitto { broker, .. } => vec![broker.pid()],
            Self::Nats(c) => (0..crate::nats::NODES).map(|i| c.pid(i)).collect(),
        }
    }

    /// CPU of every broker process so far.
    fn cpu(&self) -> Duration {
        self.pids().into_iter().map(process_cpu).sum()
    }

    /// VmRSS of every broker process, bytes.
    fn rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .flatten()
            .map(|p| vm_rss(&p.to_string()))
            .sum()
    }

    fn name(&self) -> String {
        match self {
            Self::Mosquitto { .. } => String::new(),
            Self::Nats(c) => format!("nats-server x{}", c.nodes()),
        }
    }
}

/// Raises this process's (and so its children's, the broker's) open-file limit to `need` when
/// it is lower: the soft limit up to the hard one, and the hard one too where allowed (root).
fn raise_fd_limit(need: u64) -> Result<(), FleetError> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    match cur.current {
        Some(c) if c < need => {}
        _ => return Ok(()), // unlimited, or enough
    }
    let hard = cur.maximum.map_or(need, |h| h.max(need));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(need),
            maximum: Some(hard),
        },
    )
    .map_err(|e| {
        err(format!(
            "the broker needs about {need} file descriptors and `ulimit -n` is {} (hard \
             limit {}; raising it failed: {e}): one broker process cannot hold this fleet here",
            cur.current.map_or("unlimited".into(), |c| c.to_string()),
            cur.maximum.map_or("unlimited".into(), |c| c.to_string()),
        ))
    })
}
