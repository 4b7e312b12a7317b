//! `licd diag` end to end: the real binary against a real mosquitto and a test controller that
//! signs real bundles. The healthy path over TLS with a running daemon (which diag must not
//! disturb), then one scenario per failure kind — broker down, a CA that did not sign the
//! broker's certificate, wrong MQTT credentials, mutual TLS without a client certificate, a
//! clock set back behind the time mark — each asserting the step verdicts in `--json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use licd_tests::controller::{unix_now, ControllerKeys};
use licd_tests::{licd_bin, runtime, Mosquitto, MosquittoConfig, Pki, Scene, TempState};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Runs `licd diag` with `args`; the exit code, the JSON document (with `--json`) and stdout.
fn diag(config: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(licd_bin().unwrap())
        .arg("--config")
        .arg(config)
        .arg("diag")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    eprintln!(
        "--- licd diag {args:?} (exit {:?}) ---\n{stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), json, stdout)
}

/// The verdict of step `id`.
fn verdict(report: &Value, id: &str) -> String {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .and_then(|s| s["verdict"].as_str())
        .unwrap_or("missing")
        .to_string()
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or(&Value::Null)
}

/// A config for an agent that never ran: state in `dir/state`, no socket.
struct Cfg {
    url: String,
    ca: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    credentials: Option<(String, PathBuf)>,
}

impl Cfg {
    fn url(url: String) -> Self {
        Self {
            url,
            ca: None,
            client: None,
            credentials: None,
        }
    }

    fn write(&self, dir: &TempState, root: &str) -> PathBuf {
        let mut broker = format!("url = {:?}\n", self.url);
        if self.url.starts_with("mqtt://") {
            broker.push_str("allow_insecure = true\n");
        }
        if let Some(ca) = &self.ca {
            broker.push_str(&format!("ca_file = {:?}\n", ca.display().to_string()));
        }
        if let Some((c, k)) = &self.client {
            broker.push_str(&format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                c.display().to_string(),
                k.display().to_string()
            ));
        }
        if let Some((user, file)) = &self.credentials {
            broker.push_str(&format!(
                "username = {user:?}\npassword_file = {:?}\n",
                file.display().to_string()
            ));
        }
        let text = format!(
            "tenant = \"acme\"\nservices = [\"wifi\"]\nstate_dir = {:?}\nroots = [{root:?}]\n\n\
             [broker]\n{broker}\n[api]\nsocket = \"\"\n\n[identity]\ndevice_id = \"ap-diag\"\n\
             model = \"AP-TEST\"\nserial = \"SN-TEST\"\n",
            dir.join("state").display().to_string(),
        );
        dir.write("licd.toml", text).unwrap()
    }
}

#[test]
fn a_healthy_device_passes_every_step_over_tls_without_disturbing_the_running_daemon() {
    let pki = Pki::generate().unwrap();
    let scene = Scene::builder().tls(&pki).start().unwrap();
    let controller = &scene.controller;
    let agent = scene.licensed_agent().unwrap();
    let seq_before = controller.seq();

    let (code, report, _) = diag(&agent.config_path(), &["--json"]);
    for id in [
        "config",
        "state_dir",
        "device_key",
        "identity",
        "clock",
        "daemon",
        "cache",
        "signer_cert",
        "dns",
        "tcp",
        "tls",
        "mqtt",
        "retained",
        "round_trip",
        "service.wifi",
    ] {
        assert_eq!(verdict(&report, id), "ok", "step {id}: {report:#}");
    }
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ok")));
    let tls = &step(&report, "tls")["detail"];
    assert!(
        tls["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLS")),
        "{tls}"
    );
    assert_eq!(tls["chain"][0]["subject"], "CN=licd test broker");
    assert!(step(&report, "identity")["figure"]
        .as_str()
        .is_some_and(|f| f.contains("unchanged since")));
    // The round trip got a new grant from the controller; the daemon took it too and stayed
    // connected (diag's own client id did not kick it off the broker).
    assert!(controller.seq() > seq_before);
    licd_tests::wait_for("the daemon to hold the diag round trip's grant", T, || {
        agent
            .status()
            .is_some_and(|s| s["bundle"]["seq"] == controller.seq())
    })
    .unwrap();
    let status = agent.status().unwrap();
    assert_eq!(status["connection"]["connected"], true, "{status}");
    assert!(
        !agent.log().contains("broker connection lost"),
        "{}",
        agent.log()
    );

    // The human form fits a serial console.
    let (code, _, text) = diag(&agent.config_path(), &[]);
    assert_eq!(code, 0);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains("ok    round trip"), "{text}");
}

#[test]
fn broker_down_fails_at_tcp_skips_the_rest_and_still_shows_the_cached_license() {
    let mut scene = Scene::start().unwrap();
    let mut agent = scene.licensed_agent().unwrap();
    assert!(agent.stop().unwrap());
    scene.broker.stop().unwrap();

    let (code, report, _) = diag(&agent.config_path(), &["--json", "--timeout", "5"]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(verdict(&report, "dns"), "ok");
    assert_eq!(verdict(&report, "tcp"), "fail");
    assert!(step(&report, "tcp")["figure"]
        .as_str()
        .is_some_and(|f| f.contains("refused")));
    for id in ["tls", "mqtt", "retained", "round_trip"] {
        assert_eq!(verdict(&report, id), "skip", "{id}");
    }
    assert_eq!(verdict(&report, "daemon"), "warn");
    assert_eq!(verdict(&report, "cache"), "ok");
    assert_eq!(verdict(&report, "service.wifi"), "ok");

    // Offline, nothing network-related fails: only the stopped daemon warns.
    let (code, report, _) = diag(&agent.config_path(), &["--json", "--offline"]);
    assert_eq!(verdict(&report, "tcp"), "skip");
    assert_eq!(
        (code, report["verdict"].as_str()),
        (1, Some("warn")),
        "{report:#}"
    );
}

#[test]
fn a_ca_that_did_not_sign_the_broker_certificate_fails_the_tls_step_and_names_the_issuer() {
    let _rt = runtime();
    let pki = Pki::generate().unwrap();
    let other = Pki::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::tls(&pki)).unwrap();
    let dir = TempState::new("diag").unwrap();
    let mut cfg = Cfg::url(broker.url());
    cfg.ca = Some(other.ca_cert.clone());
    let config = cfg.write(&dir, &ControllerKeys::fixed().root_hex());

    let (code, report, _) = diag(&config, &["--json", "--timeout", "5"]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "tcp"), "ok");
    assert_eq!(verdict(&report, "tls"), "fail", "{report:#}");
    let tls = step(&report, "tls");
    assert!(tls["figure"]
        .as_str()
        .is_some_and(|f| f.contains("not signed by") && f.contains("CN=licd test broker")));
    assert!(tls["hint"].as_str().is_some_and(|h| h.contains("ca_file")));
    assert_eq!(verdict(&report, "mqtt"), "skip");
}

#[test]
fn wrong_mqtt_credentials_fail_the_connect_step_with_the_return_code() {
    let _rt = runtime();
    let dir = TempState::new("diag").unwrap();
    let passwd = dir.join("mosquitto.passwd");
    let ok = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["device", "right-password"])
        .status()
        .unwrap();
    assert!(ok.success());
    let broker = Mosquitto::start(
        MosquittoConfig::plain()
            .with_line("allow_anonymous false")
            .with_line(format!("password_file {}", passwd.display())),
    )
    .unwrap();
    let wrong = dir.write("password", "wrong-password\n").unwrap();
    let mut cfg = Cfg::url(broker.url());
    cfg.credentials = Some(("device".into(), wrong));
    let config = cfg.write(&dir, &ControllerKeys::fixed().root_hex());

    let (code, report, _) = diag(&config, &["--json", "--timeout", "5"]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "tcp"), "ok");
    assert_eq!(verdict(&report, "mqtt"), "fail", "{report:#}");
    let rc = step(&report, "mqtt")["detail"]["return_code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        rc == "NotAuthorized" || rc == "BadUserNamePassword",
        "{report:#}"
    );
    assert_eq!(verdict(&report, "retained"), "skip");

    // The right password gets through to the subscription.
    let right = dir.write("password", "right-password\n").unwrap();
    cfg.credentials = Some(("device".into(), right));
    let config = cfg.write(&dir, &ControllerKeys::fixed().root_hex());
    let (_, report, _) = diag(&config, &["--json", "--timeout", "5"]);
    assert_eq!(verdict(&report, "mqtt"), "ok", "{report:#}");
}

#[test]
fn mutual_tls_without_a_client_certificate_fails_the_tls_step() {
    let _rt = runtime();
    let pki = Pki::generate().unwrap();
    let broker = Mosquitto::start(MosquittoConfig::mutual_tls(&pki)).unwrap();
    let dir = TempState::new("diag").unwrap();
    let mut cfg = Cfg::url(broker.url());
    cfg.ca = Some(pki.ca_cert.clone());
    let config = cfg.write(&dir, &ControllerKeys::fixed().root_hex());
    let (code, report, _) = diag(&config, &["--json", "--timeout", "5"]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "tls"), "fail", "{report:#}");
    assert_eq!(
        step(&report, "tls")["detail"]["client_cert_requested"],
        true
    );

    cfg.client = Some((pki.client.cert.clone(), pki.client.key.clone()));
    let config = cfg.write(&dir, &ControllerKeys::fixed().root_hex());
    let (_, report, _) = diag(&config, &["--json", "--timeout", "5"]);
    assert_eq!(verdict(&report, "tls"), "ok", "{report:#}");
    assert_eq!(verdict(&report, "mqtt"), "ok", "{report:#}");
}

#[test]
fn a_clock_behind_the_persisted_time_mark_fails_the_clock_step() {
    let dir = TempState::new("diag").unwrap();
    let config =
        Cfg::url("mqtt://127.0.0.1:1".into()).write(&dir, &ControllerKeys::fixed().root_hex());
    std::fs::create_dir(dir.join("state")).unwrap();
    let future = unix_now() + 10 * 86_400;
    dir.write("state/time-mark.v1", format!("{future}\n"))
        .unwrap();

    let (code, report, text) = diag(&config, &["--json", "--offline"]);
    assert_eq!(code, 2);
    assert_eq!(verdict(&report, "clock"), "fail", "{report:#}");
    let clock = step(&report, "clock");
    assert_eq!(clock["detail"]["rollback"], true);
    assert!(
        clock["figure"]
            .as_str()
            // 10 days less the second or so the test took: "9d 23h" or "10d 0h".
            .is_some_and(|f| f.contains("SET BACK by 9d") || f.contains("SET BACK by 10d")),
        "{clock}"
    );
    let behind =
        clock["detail"]["mark"].as_u64().unwrap() - clock["detail"]["wall"].as_u64().unwrap();
    assert!(behind > 9 * 86_400, "{clock}");
    assert!(!text.is_empty());
}
