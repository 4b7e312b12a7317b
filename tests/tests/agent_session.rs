//! The agent's MQTT session end to end: a real `licd` process, a real mosquitto (plain, TLS,
//! mutual TLS) and a test controller that signs real bundles. Short leases (seconds) let the
//! lease → grace → unlicensed path run in a few seconds; every wait is on a condition with a
//! timeout.

use std::time::{Duration, Instant};

use licd_tests::agent::grants_topic;
use licd_tests::controller::{ControllerKeys, Policy, TestController};
use licd_tests::{wait_for, Pki, Scene};

const T: Duration = Duration::from_secs(30);

#[test]
fn first_boot_reports_gets_a_grant_and_is_licensed_and_check_agrees() {
    let scene = Scene::start().unwrap();
    let started = Instant::now();
    let agent = scene.agent().unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    eprintln!(
        "cold start to first grant applied (plain): {:?}",
        started.elapsed()
    );

    let report = &scene.controller.reports()[0];
    assert_eq!(report.device.as_str(), "ap-1");
    assert_eq!(report.model, "AP-TEST");
    assert_eq!(report.services_wanted[0].as_str(), "wifi");
    // The CLI asks the daemon and agrees.
    let (code, answer) = agent.check_cli("wifi", &[]).unwrap();
    assert_eq!((code, answer["state"].as_str()), (0, Some("licensed")));
    assert_eq!(answer["source"], "daemon");
    let (code, _) = agent.check_cli("not-wanted", &[]).unwrap();
    assert_eq!(code, 1);
}

#[test]
fn broker_down_keeps_the_license_then_grace_then_unlicensed_and_renews_when_back() {
    let mut scene = Scene::with_policy(Policy {
        lease: 4,
        grace: 3,
        ..Policy::default()
    })
    .unwrap();
    let agent = scene.licensed_agent().unwrap();
    // Renewals keep it licensed while the controller answers (refresh at half the lease).
    wait_for("a renewal", T, || scene.controller.seq() >= 3).unwrap();
    assert_eq!(agent.state_of("wifi").as_deref(), Some("licensed"));

    scene.broker.stop().unwrap();
    agent.wait_state("wifi", "grace", T).unwrap();
    let answer = agent.check("wifi").unwrap();
    assert_eq!(answer["reason"], "lease_expired");
    agent.wait_state("wifi", "unlicensed", T).unwrap();
    assert_eq!(agent.check("wifi").unwrap()["reason"], "lease_expired");

    scene.broker.start_again().unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    let log = agent.log();
    assert!(log.contains("broker connection lost"), "{log}");
    assert!(log.contains("connected to broker"), "{log}");
}

#[test]
fn an_agent_restarted_with_the_broker_down_enforces_from_its_cache() {
    let mut scene = Scene::start().unwrap();
    let mut agent = scene.licensed_agent().unwrap();
    drop(scene.controller);
    scene.broker.stop().unwrap();
    assert!(agent.stop().unwrap(), "clean exit 0 on SIGTERM");

    // With no daemon, `licd check` evaluates the cache itself.
    let (code, answer) = agent.check_cli("wifi", &[]).unwrap();
    assert_eq!(
        (code, answer["source"].as_str()),
        (0, Some("cache")),
        "{answer}"
    );

    let started = Instant::now();
    agent.restart().unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    eprintln!(
        "cold start to enforcing from cache (broker down): {:?}",
        started.elapsed()
    );
    assert!(agent.log().contains("enforcing from cache"));
}

#[test]
fn the_retained_bundle_is_delivered_on_reconnect_and_a_forged_one_changes_nothing() {
    let scene = Scene::start().unwrap();
    let mut agent = scene.licensed_agent().unwrap();

    // Forged: signed by a key no root certified (it certified itself).
    let rogue = ControllerKeys::from_seeds(66, 66);
    let forged = scene
        .bundle()
        .unwrap()
        .seq(1_000)
        .no_grants()
        .signed_by(&rogue)
        .seal();
    scene.publish_raw(&grants_topic(), forged);
    wait_for("the forged bundle to be refused", T, || {
        agent.status().is_some_and(|s| s["refusals"]["total"] == 1)
    })
    .unwrap();
    let status = agent.status().unwrap();
    assert_eq!(
        status["refusals"]["last_code"], "untrusted_signer",
        "{status}"
    );
    assert_eq!(agent.state_of("wifi").as_deref(), Some("licensed"));
    scene.publish_raw(&grants_topic(), b"\x01garbage".to_vec());
    wait_for("garbage to be refused", T, || {
        agent.status().is_some_and(|s| s["refusals"]["total"] == 2)
    })
    .unwrap();
    assert_eq!(agent.state_of("wifi").as_deref(), Some("licensed"));

    // A real bundle retained on the broker reaches a restarted agent before any report is
    // answered: stop answering, restart, and the retained one still arrives.
    let good = scene
        .bundle()
        .unwrap()
        .seq(scene.controller.seq() + 10)
        .no_grants()
        .build();
    let raw = scene.keys().seal(&good);
    scene.controller.set_policy(|p| p.answer = false);
    scene.publish_raw(&grants_topic(), raw);
    agent.wait_state("wifi", "unlicensed", T).unwrap();
    assert_eq!(agent.check("wifi").unwrap()["reason"], "revoked");
    agent.restart().unwrap();
    wait_for("the restarted agent to hold the retained seq", T, || {
        agent
            .status()
            .is_some_and(|s| s["bundle"]["seq"] == good.seq && s["connection"]["connected"] == true)
    })
    .unwrap();
}

#[test]
fn a_vm_count_change_triggers_a_new_report() {
    let scene = Scene::start().unwrap();
    let controller = &scene.controller;
    let vm_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(vm_file.path(), "2\n").unwrap();
    let agent = scene
        .agent_with(|o| {
            // vm_probe_interval_secs lives in [enforce]; the default (60 s) is too slow for a
            // test.
            o.extra = format!(
                "[enforce]\nvm_probe_interval_secs = 1\n\n[vm]\nprobe = \"command\"\nargv = [\"cat\", {:?}]\ntimeout_secs = 5\n",
                vm_file.path().display().to_string()
            );
        })
        .unwrap();
    wait_for("a report with 2 VMs", T, || {
        controller.reports().iter().any(|r| r.vm_count == Some(2))
    })
    .unwrap();
    std::fs::write(vm_file.path(), "7\n").unwrap();
    wait_for("a report with 7 VMs", T, || {
        controller.reports().iter().any(|r| r.vm_count == Some(7))
    })
    .map_err(|e| format!("{e}\n{}", agent.log()))
    .unwrap();
}

#[test]
fn tls_with_the_generated_ca_licenses_the_device() {
    let pki = Pki::generate().unwrap();
    // The controller connects to a plain listener of the same broker.
    let scene = Scene::builder().tls(&pki).start().unwrap();
    let started = Instant::now();
    let agent = scene.agent().unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    eprintln!(
        "cold start to first grant applied (TLS): {:?}",
        started.elapsed()
    );
}

#[test]
fn mutual_tls_refuses_an_agent_without_a_client_certificate_and_accepts_one_with_it() {
    let pki = Pki::generate().unwrap();
    let scene = Scene::builder().mutual_tls(&pki).start().unwrap();

    let without = scene.agent_with(|o| o.client_cert = None).unwrap();
    wait_for("the connection error to show in status", T, || {
        without
            .status()
            .is_some_and(|s| s["connection"]["last_error"].is_string())
    })
    .unwrap();
    assert_eq!(without.state_of("wifi").as_deref(), Some("unlicensed"));

    let with = scene.agent().unwrap();
    with.wait_state("wifi", "licensed", T).unwrap();
}

#[test]
fn presence_is_online_then_offline_on_a_clean_stop_and_the_will_says_offline_after_a_kill() {
    let scene = Scene::start().unwrap();
    let controller = &scene.controller;
    let hook_out = tempfile::NamedTempFile::new().unwrap();
    let mut agent = scene
        .agent_with(|o| {
            o.extra = format!(
                "[hooks]\non_change = [\"sh\", \"-c\", \"echo $LICD_SERVICE $LICD_STATE >> {}\"]\n",
                hook_out.path().display()
            );
        })
        .unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    let last_presence = |c: &TestController| c.presence().last().map(|(_, p)| p.clone());
    wait_for("presence online", T, || {
        last_presence(controller).as_deref() == Some(b"online")
    })
    .unwrap();
    // The hook saw the change to licensed.
    wait_for("the hook to run", T, || {
        std::fs::read_to_string(hook_out.path()).is_ok_and(|s| s.contains("wifi licensed"))
    })
    .unwrap();

    let t = Instant::now();
    assert!(agent.stop().unwrap());
    eprintln!("clean stop took {:?}", t.elapsed());
    wait_for("presence offline after SIGTERM", T, || {
        last_presence(controller).as_deref() == Some(b"offline")
    })
    .unwrap();

    agent.restart().unwrap();
    wait_for("presence online again", T, || {
        last_presence(controller).as_deref() == Some(b"online")
    })
    .unwrap();
    let t = Instant::now();
    agent.kill().unwrap();
    wait_for("the last will after SIGKILL", T, || {
        last_presence(controller).as_deref() == Some(b"offline")
    })
    .unwrap();
    eprintln!("will after kill took {:?}", t.elapsed());
}
