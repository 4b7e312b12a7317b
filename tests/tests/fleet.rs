//! The fleet simulator, short: 500 real agents in this process against a fresh mosquitto and
//! the stub controller, with the bare echo baseline and a broker restart. Checks that every
//! device is licensed, that every agent reconnects and reports after the restart without
//! losing a license, and that no report was dropped; prints the table. (The full 10,000-device
//! run is local: `cargo run --profile bench -p licd-tests --bin licd-fleet -- --devices 10000`.)

use std::time::Duration;

use licd_tests::fleet::{run, FleetOptions};

#[test]
fn five_hundred_agents_are_licensed_and_survive_a_broker_restart() {
    let mut opts = FleetOptions::new(500);
    opts.phase_timeout = Duration::from_secs(60);
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
}
