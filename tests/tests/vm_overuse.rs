//! VM over-use end to end with `probe = "command"` (issue 16, item 6): a real `licd` whose
//! probe is `cat FILE`, a real mosquitto and the test controller granting `wifi` with a VM
//! allowance of 4. The host runs 6 VMs, so `wifi` enters grace; then the probe fails on and
//! off (garbage in FILE) and the agent restarts while it fails. None of it may lift the
//! over-use or move the end of grace: the last known count stays in force (in status, marked
//! stale, and in the reports), and once grace ends the service is unlicensed.

use std::path::Path;
use std::time::Duration;

use licd_tests::agent::Agent;
use licd_tests::controller::{unix_now, Policy};
use licd_tests::{wait_for, Scene};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Grace long enough for the on-and-off phase and a restart, short enough to wait out.
const GRACE: u64 = 25;

fn set_vms(file: &Path, text: &str) {
    std::fs::write(file, text).unwrap();
}

fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, T, || agent.status().is_some_and(|s| pred(&s)))
        .unwrap_or_else(|e| panic!("{e}; last status {:?}\n{}", agent.status(), agent.log()));
    agent.status().unwrap()
}

/// `(state, until, reason)` of wifi.
fn wifi(agent: &Agent) -> (String, Option<u64>, String) {
    let a = agent
        .check("wifi")
        .unwrap_or_else(|| panic!("no answer\n{}", agent.log()));
    (
        a["state"].as_str().unwrap_or_default().to_owned(),
        a["until"].as_u64(),
        a["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn a_probe_failing_on_and_off_and_a_restart_neither_lift_vm_overuse_nor_extend_its_grace() {
    let scene = Scene::with_policy(Policy {
        grace: GRACE,
        vm_allowance: Some(4),
        ..Policy::default()
    })
    .unwrap();
    let controller = &scene.controller;
    let vm_file = tempfile::NamedTempFile::new().unwrap();
    set_vms(vm_file.path(), "6\n");
    let mut agent = scene
        .agent_with(|o| {
            o.extra = format!(
                "[enforce]\nvm_probe_interval_secs = 1\n\n[vm]\nprobe = \"command\"\nargv = [\"cat\", {:?}]\ntimeout_secs = 5\n",
                vm_file.path().display().to_string()
            );
        })
        .unwrap();

    // 6 VMs on a 4-VM allowance: grace.
    wait_status(&agent, "wifi in grace for VMs", |s| {
        s["services"][0]["state"] == "grace" && s["services"][0]["reason"] == "over_vm_allowance"
    });
    let (_, until, _) = wifi(&agent);
    let until = until.expect("grace has an end");
    assert!(until <= unix_now() + GRACE, "{until}");

    // The probe prints garbage, then 6 again, twice over: grace keeps its end.
    for round in 0..2 {
        set_vms(vm_file.path(), "lots of VMs\n");
        let s = wait_status(&agent, "the probe to fail", |s| s["vm"]["stale"] == true);
        assert_eq!(s["vm"]["count"], 6, "round {round}: {s}");
        assert_eq!(s["vm_count"], 6, "round {round}: {s}");
        assert_eq!(
            wifi(&agent),
            ("grace".into(), Some(until), "over_vm_allowance".into()),
            "round {round}: an unknown count lifted the over-use\n{}",
            agent.log()
        );
        set_vms(vm_file.path(), "6\n");
        wait_status(&agent, "the probe to work again", |s| {
            s["vm"]["stale"] == false
        });
        assert_eq!(
            wifi(&agent),
            ("grace".into(), Some(until), "over_vm_allowance".into()),
            "round {round}: a good reading after a bad one restarted grace"
        );
    }
    assert!(
        agent
            .log()
            .contains("VM count probe failed; the last known count stays in force"),
        "{}",
        agent.log()
    );

    // A restart while the probe fails: the persisted count and clock are back at once, and
    // the report sent on connect carries the last known count.
    set_vms(vm_file.path(), "garbage\n");
    wait_status(&agent, "the probe to fail", |s| s["vm"]["stale"] == true);
    let reports_before = controller.reports().len();
    agent.restart().unwrap();
    wait_status(&agent, "the restarted agent to report", |s| {
        s["connection"]["connected"] == true
    });
    wait_for("a report after the restart", T, || {
        controller.reports().len() > reports_before
    })
    .unwrap();
    assert!(
        controller.reports()[reports_before..]
            .iter()
            .all(|r| r.vm_count == Some(6)),
        "{:?}",
        controller.reports()[reports_before..]
            .iter()
            .map(|r| r.vm_count)
            .collect::<Vec<_>>()
    );
    let (state, until_after, _) = wifi(&agent);
    if unix_now() < until {
        assert_eq!(
            (state.as_str(), until_after),
            ("grace", Some(until)),
            "the restart restarted grace\n{}",
            agent.log()
        );
    }

    // Grace ends on time although the probe still fails.
    agent.wait_state("wifi", "unlicensed", T).unwrap();
    assert!(unix_now() >= until, "unlicensed before the end of grace");
    assert_eq!(
        wifi(&agent),
        ("unlicensed".into(), None, "over_vm_allowance".into())
    );
    let s = agent.status().unwrap();
    assert_eq!(s["vm"]["stale"], true, "{s}");
}
