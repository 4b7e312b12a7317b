//! `licd-fleet`: the fleet simulator from the command line (see `licd_tests::fleet`). Runs N
//! real licd agents in this process against a fresh mosquitto and the stub controller, with a
//! bare MQTT echo baseline of the same size before and after; prints a progress line while it
//! runs, then a table (or `--json`).
//!
//! ```text
//! cargo run --profile bench -p licd-tests --bin licd-fleet -- --devices 10000
//! licd-fleet --devices 50000 --workers 4      # past one process's fd limit (floor, fleet phases)
//! licd-fleet --devices 1000 --relay           # then as many devices through a site relay
//! licd-fleet --devices 30000 --workers 3 --nats  # on a 3-node nats-server cluster
//! licd-fleet --devices 20000 --workers 3 --nats --subscribe-qos 0 --floor  # and fleet / floor
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use licd_protocol::PublicKey;
use licd_tests::fleet::{
    run, run_worker, run_workers, start_controller, FleetOptions, WorkerRole, CONNECT_WINDOW,
};

/// Fleet simulator: N real licd agents against mosquitto and the stub controller, compared
/// with a bare MQTT request/response echo of the same size through the same broker.
#[derive(Debug, Parser)]
#[command(name = "licd-fleet", version)]
struct Args {
    /// Simulated devices (one MQTT connection each; `ulimit -n` must allow them).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Most clients connecting at once (fleet and baseline alike); keep it under the broker's
    /// listen backlog (mosquitto: 100).
    #[arg(long, default_value_t = CONNECT_WINDOW)]
    connect_window: usize,
    /// Worker threads of the agents' runtime.
    #[arg(long, default_value_t = 2)]
    agent_threads: usize,
    /// Skip the bare echo baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also run the floor phase after the first baseline: the echo doing the signatures and
    /// fsyncs the design requires and nothing else. Clients: device key generated and written
    /// with fsync, time mark written, request signed, the answer (a real sealed bundle) opened
    /// — two signature checks — and written to a cache with fsync, with the agent's own code;
    /// responder: a report's signature checked and a bundle signed per request. With
    /// --workers or --nats it runs across the worker processes, before the fleet phase.
    #[arg(long)]
    floor: bool,
    /// Skip the broker restart.
    #[arg(long)]
    no_storm: bool,
    /// Then license as many new devices through a site relay (a delegation of as many seats,
    /// same broker) and compare its time with the controller's.
    #[arg(long)]
    relay: bool,
    /// Upper bound of each phase, seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Print the result as JSON on stdout (no progress line).
    #[arg(long)]
    json: bool,
    /// Also print the fleet phase every 250 ms on stderr: reports sent by the agents,
    /// received and applied by the controller, agents licensed (to see where a stall is).
    #[arg(long)]
    timeline: bool,
    /// Only start the stub controller against this broker (mqtt://host:port) with the
    /// fleet's ledger (tenant `fleet`, services wifi, vpn, ids, guest-portal, mesh, product
    /// class `wireless`), print `root <hex>` and run until killed (cross/size-report.sh).
    #[arg(long, value_name = "URL")]
    controller_only: Option<String>,
    /// Run the agents in this many worker processes (this binary re-run), each under its own
    /// fd limit, the broker and the controller in this one; the results are merged into one
    /// report. The floor (with --floor) and fleet phases only: no baseline or storm.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Run on a real 3-node nats-server cluster (MQTT on clustered JetStream, started from
    /// /usr/bin/nats-server on loopback) instead of mosquitto: every agent lists the three
    /// nodes and starts at a random one; the controller subscribes without `$share`. Implies
    /// the workers' mode (floor and fleet phases only), even with `--workers 1`.
    #[arg(long)]
    nats: bool,
    /// With --nats: MQTT consumers (three per agent) as one in-memory copy
    /// (`consumer_replicas: 1`, `consumer_memory_storage: true`) instead of a replicated Raft
    /// group each; retained grants and sessions stay replicated.
    #[arg(long, requires = "nats")]
    nats_local_consumers: bool,
    /// QoS of the agents' subscriptions (`[broker] subscribe_qos`): 1 (their default) or 0.
    /// On nats-server every QoS 1 subscription is a JetStream consumer (docs/STUB.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    subscribe_qos: u8,
    /// Where the agents' state directories go (default /dev/shm, else the temp dir).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// Worker mode (set by `--workers`): the broker(s) to connect to.
    #[arg(long, hide = true, requires = "worker_first")]
    worker_url: Option<String>,
    /// Worker mode: run floor clients (the floor phase) instead of agents.
    #[arg(
        long,
        hide = true,
        requires = "worker_url",
        conflicts_with = "worker_root"
    )]
    worker_floor: bool,
    /// Worker mode: the root key the agents pin, hex.
    #[arg(long, hide = true)]
    worker_root: Option<String>,
    /// Worker mode: the first device index of this worker's slice (`--devices` of them).
    #[arg(long, hide = true)]
    worker_first: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(url) = &args.controller_only {
        return controller_only(url, args.devices);
    }
    let mut opts = FleetOptions {
        devices: args.devices,
        connect_window: args.connect_window.max(1),
        agent_threads: args.agent_threads.max(1),
        baseline: !args.no_baseline,
        timeline: args.timeline,
        floor: args.floor,
        storm: !args.no_storm,
        relay: args.relay,
        nats: args.nats,
        nats_local_consumers: args.nats_local_consumers,
        subscribe_qos1: args.subscribe_qos == 1,
        phase_timeout: Duration::from_secs(args.timeout_secs),
        progress: !args.json,
        work_dir: args.work_dir.clone(),
    };
    if let (Some(url), Some(first)) = (&args.worker_url, args.worker_first) {
        opts.progress = false;
        let role = if args.worker_floor {
            WorkerRole::Floor
        } else {
            match args.worker_root.as_deref().map(PublicKey::from_hex) {
                Some(Ok(root)) => WorkerRole::Agents(root),
                _ => {
                    eprintln!("licd-fleet worker: --worker-root (a public key in hex) is needed");
                    return ExitCode::FAILURE;
                }
            }
        };
        return match run_worker(&opts, url, &role, first, args.devices) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = if args.workers > 1 || args.nats {
        if opts.baseline || opts.storm || opts.relay {
            eprintln!(
                "licd-fleet: with --workers, the floor (with --floor) and fleet phases only (no baseline, storm or relay)"
            );
        }
        std::env::current_exe()
            .map_err(|e| licd_tests::fleet::FleetError(format!("this executable: {e}")))
            .and_then(|exe| run_workers(&opts, &exe, args.workers))
    } else {
        run(&opts)
    };
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn controller_only(url: &str, seats: usize) -> ExitCode {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    match start_controller(url, seats, dir.path()) {
        Ok((_runtime, stub)) => {
            println!("root {}", stub.root_public_key().to_hex());
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
