//! The fleet simulator, short: 500 real agents in this process against a fresh mosquitto and
//! the stub controller, with the bare echo baseline and a broker restart. Checks that every
//! device is licensed, that every agent reconnects and reports after the restart without
//! losing a license, and that no report was dropped; then as many new devices through a site
//! relay with exactly as many seats (`licd-fleet --relay`); prints the table. (The full 10,000-device
//! run is local: `cargo run --profile bench -p licd-tests --bin licd-fleet -- --devices 10000`.)
//! Also a small fleet across two worker processes (`licd-fleet --workers`), and their merge.

use std::path::Path;
use std::time::Duration;

use licd_tests::fleet::{merge, run, run_workers, FleetOptions, WorkerResult};

#[test]
fn five_hundred_agents_are_licensed_and_survive_a_broker_restart() {
    let mut opts = FleetOptions::new(500);
    opts.phase_timeout = Duration::from_secs(60);
    opts.relay = true;
    let report = run(&opts).expect("the fleet run completes");
    println!("{}", report.table());
    println!("{}", report.json());
    assert_eq!(report.fleet.done, 500, "every device licensed");
    assert_eq!(report.reports_dropped, 0);
    let storm = report.storm.as_ref().expect("the storm ran");
    assert_eq!(
        storm.lost_license, 0,
        "no license lost while the broker restarted"
    );
    let baseline = report.baseline_before.as_ref().expect("the baseline ran");
    assert_eq!(baseline.done, 500);
    assert!(report.ratio().is_some());
    // Then 500 new devices through a site relay holding 500 seats of each service: all of
    // them licensed (every seat used, none twice).
    let relay = report.relay.as_ref().expect("the relay phase ran");
    assert_eq!(relay.done, 500, "every device licensed by the site relay");
}

/// `licd-fleet --workers 2`: the agents of one fleet in two worker processes (this package's
/// binary re-run), against one mosquitto (a listener per worker) and one stub controller;
/// each worker's one-line result is merged into one report.
#[test]
fn a_small_fleet_across_two_worker_processes_is_licensed_and_merged_into_one_report() {
    let mut opts = FleetOptions::new(200);
    opts.phase_timeout = Duration::from_secs(60);
    let report = run_workers(&opts, Path::new(env!("CARGO_BIN_EXE_licd-fleet")), 2)
        .expect("the fleet run completes");
    println!("{}", report.table());
    assert_eq!(report.fleet.done, 200, "every device licensed");
    assert_eq!(report.reports_dropped, 0);
    // Two processes of their own, 100 devices each, every one licensed.
    assert_eq!(report.workers.len(), 2, "{:?}", report.workers);
    assert_ne!(report.workers[0].0, report.workers[1].0);
    for (pid, devices, done) in &report.workers {
        assert_ne!(*pid, std::process::id());
        assert_eq!((*devices, *done), (100, 100));
    }
    assert!(report.fleet.total > Duration::ZERO && report.fleet.total < opts.phase_timeout);
    assert!(report.fleet.p50 <= report.fleet.p99 && report.fleet.p99 <= report.fleet.max);
    assert!(
        report.fleet.clients_cpu > Duration::ZERO,
        "the workers' CPU is summed"
    );
}

/// The merge on its own: sums, times from the parent's start, percentiles over all latencies.
#[test]
fn merging_worker_results_sums_counts_and_takes_the_last_worker_s_times() {
    let start = 1_000_000_000u64;
    let w = |pid, first, done, connect_ms: u64, done_ms: u64, lat_ms: &[u64]| WorkerResult {
        pid,
        first,
        count: done,
        done,
        last_connect_us: start + connect_ms * 1000,
        last_done_us: start + done_ms * 1000,
        latencies_us: lat_ms.iter().map(|m| m * 1000).collect(),
        agents_cpu_us: 2_000_000,
        rss: 10 << 20,
    };
    let results = [
        w(11, 0, 3, 900, 1_500, &[10, 20, 30]),
        w(12, 3, 2, 1_200, 1_400, &[40, 50]),
    ];
    let r = merge(
        5,
        &results,
        start,
        Duration::from_secs(9),
        Default::default(),
        10,
    );
    assert_eq!(r.fleet.done, 5);
    assert_eq!(r.fleet.total, Duration::from_millis(1_500));
    assert_eq!(r.fleet.all_connected, Duration::from_millis(1_200));
    assert_eq!(r.fleet.p50, Duration::from_millis(30));
    assert_eq!(r.fleet.max, Duration::from_millis(50));
    assert_eq!(r.fleet.clients_cpu, Duration::from_secs(4));
    assert_eq!(r.process_rss, 20 << 20);
    assert_eq!(r.workers, vec![(11, 3, 3), (12, 2, 2)]);
}

/// `licd-fleet --nats --floor`: the same fleet across two workers on a real 3-node nats-server
/// cluster (every agent lists the three nodes and subscribes at QoS 0, the controller
/// subscribes without `$share`), after the floor phase across the same workers and nodes.
#[test]
fn a_small_fleet_on_a_nats_cluster_across_workers_is_licensed() {
    let mut opts = FleetOptions::new(60);
    opts.nats = true;
    opts.floor = true;
    // `[broker] subscribe_qos = 0`: what a large fleet on nats-server needs (docs/STUB.md).
    opts.subscribe_qos1 = false;
    opts.phase_timeout = Duration::from_secs(120);
    let report = run_workers(&opts, Path::new(env!("CARGO_BIN_EXE_licd-fleet")), 2)
        .expect("the fleet run completes");
    println!("{}", report.table());
    assert_eq!(report.fleet.done, 60, "every device licensed");
    let floor = report.floor.as_ref().expect("the floor phase ran");
    assert_eq!(floor.done, 60, "every floor client answered");
    assert_eq!(report.broker_name, "nats-server x3");
    assert_eq!(report.workers.len(), 2, "{:?}", report.workers);
    assert!(
        report.broker_rss > 0 && report.fleet.broker_cpu > Duration::ZERO,
        "the three nodes are measured"
    );
}
