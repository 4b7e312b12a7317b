//! `licd diag`: walks the licensing path step by step — config, state directory, device key,
//! identity, clock, daemon, cache, DNS, TCP, TLS, MQTT, the retained bundle, a report → grant
//! round trip, every service — and gives each step a verdict (ok / warn / fail), a figure and a
//! hint.
//!
//! Layout: [`steps`] is pure (facts in, verdicts out, unit-tested); [`net`] and the local
//! probes in this file gather the facts; [`render`] prints the human form; [`record`] is the
//! identity record the daemon leaves for the drift check. Diag is read-only: it creates no
//! state, never writes the cache, and its MQTT session uses its own client id (see [`net`]).
//!
//! Exit codes (monitoring-plugin convention): 0 every step ok (or skipped), 1 warnings only,
//! 2 at least one step failed; the binary uses 4 when diag itself cannot run.

pub mod net;
pub mod record;
pub mod remote;
pub mod render;
pub mod steps;
pub mod x509;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use licd_protocol::envelope::seal_report;
use licd_protocol::{DeviceReport, Envelope, KeyId, TrustStore, UnixTime};
use serde::Serialize;
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::Settings;
use crate::enforce::{AcceptanceRules, Enforcer, Input};
use crate::identity::{resolve_identity, DeviceKey, HostRoot, KeyError, DEFAULT_RESOLVE_TIMEOUT};
use crate::session::DeviceTopics;
use crate::status::AGENT_VERSION;
use crate::store::Store;
use steps::{CacheFacts, FileFacts, NtpSync, RecordedIdentity, Step, TcpOutcome, Verdict};

/// Exit code: everything ok.
pub const EXIT_OK: u8 = 0;
/// Exit code: warnings, nothing failed.
pub const EXIT_WARN: u8 = 1;
/// Exit code: at least one step failed.
pub const EXIT_FAIL: u8 = 2;

/// Default limit for each network wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the daemon's socket may take to answer.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// How diag runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Skip DNS, TCP, TLS and MQTT.
    pub offline: bool,
    /// Limit for each network wait (connect, handshake, CONNACK, the grant).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            offline: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The whole diagnosis: what `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Document version.
    pub v: u32,
    /// The worst verdict of any step.
    pub verdict: Verdict,
    /// The exit code `licd diag` returns.
    pub exit_code: u8,
    /// Agent version.
    pub agent_version: String,
    /// When diag ran (wall clock).
    pub at: UnixTime,
    /// Device id, when known.
    pub device: Option<String>,
    /// Tenant, when the config loaded.
    pub tenant: Option<String>,
    /// Network steps skipped.
    pub offline: bool,
    /// The steps in order.
    pub steps: Vec<Step>,
}

impl Report {
    /// A report over `steps`; verdict and exit code follow from them.
    pub fn new(
        agent_version: &str,
        at: UnixTime,
        device: Option<String>,
        tenant: Option<String>,
        offline: bool,
        steps: Vec<Step>,
    ) -> Self {
        let verdict = steps
            .iter()
            .map(|s| s.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
            .max(Verdict::Ok);
        Self {
            v: 1,
            verdict,
            exit_code: exit_code(verdict),
            agent_version: agent_version.into(),
            at,
            device,
            tenant,
            offline,
            steps,
        }
    }

    /// The step with `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// The exit code for an overall verdict.
pub fn exit_code(worst: Verdict) -> u8 {
    match worst {
        Verdict::Skip | Verdict::Ok => EXIT_OK,
        Verdict::Warn => EXIT_WARN,
        Verdict::Fail => EXIT_FAIL,
    }
}

fn file_facts(path: &Path) -> Result<Option<FileFacts>, String> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileFacts {
            mode: m.permissions().mode() & 0o7777,
            uid: m.uid(),
            is_dir: m.is_dir(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The uid diag runs as: the owner of `/proc/self` (no `unsafe` needed).
fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// NTP synchronisation, best effort: systemd-timesyncd's flag file, then `timedatectl`.
async fn ntp_sync() -> NtpSync {
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        return NtpSync::Yes;
    }
    let mut cmd = tokio::process::Command::new("timedatectl");
    cmd.args(["show", "-p", "NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(2), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => NtpSync::Yes,
            "no" => NtpSync::No,
            _ => NtpSync::Unknown,
        },
        _ => NtpSync::Unknown,
    }
}

/// The cached bundle judged like the daemon judges it at start: signature, the chain as of the
/// bundle's `issued_at`, then (when the key is known) the device binding and `issued_at`.
pub fn cache_facts(
    raw: Result<Option<Vec<u8>>, String>,
    trust: &TrustStore,
    rules: Option<&AcceptanceRules>,
    now: UnixTime,
) -> CacheFacts {
    let raw = match raw {
        Err(e) => return CacheFacts::Unreadable(e),
        Ok(None) => return CacheFacts::Missing,
        Ok(Some(r)) => r,
    };
    // The cache rule: the chain as of the bundle's `issued_at` (as the daemon loads it).
    // Either bundle kind: a policy bundle (kind 10) is cached as received.
    let opened = licd_protocol::policy::open_any_bundle_as_issued(&raw, trust);
    let (bundle, signer) = match opened {
        Ok((b, signer)) => (b.bundle, signer),
        Err(e) => {
            let r = crate::enforce::Refusal::from(e);
            return CacheFacts::Refused {
                code: r.code(),
                message: r.to_string(),
            };
        }
    };
    if let Some(rules) = rules {
        if let Err(r) = rules.check_as_issued(&raw, now) {
            return CacheFacts::Refused {
                code: r.code(),
                message: r.to_string(),
            };
        }
    }
    let not_before = Envelope::parse(&raw)
        .ok()
        .and_then(|e| e.cert.map(|c| c.body.not_before))
        .unwrap_or(0);
    CacheFacts::Valid {
        seq: bundle.seq,
        issued_at: bundle.issued_at,
        signer: signer.signer.to_hex(),
        cert_not_before: not_before,
        cert_not_after: signer.cert_not_after,
    }
}

fn skip_network(steps: &mut Vec<Step>, from: usize, why: &str) {
    const NET: [(&str, &str); 7] = [
        ("dns", "DNS"),
        ("tcp", "TCP connect"),
        ("tls", "TLS"),
        ("mqtt", "MQTT connect"),
        ("retained", "retained bundle"),
        ("round_trip", "round trip"),
        ("", ""),
    ];
    for (id, title) in NET.iter().skip(from).filter(|(id, _)| !id.is_empty()) {
        steps.push(Step::skip(id, title, why));
    }
}

/// Runs every step for the config at `config_path`.
pub async fn run(config_path: &Path, options: &Options, clock: &dyn Clock) -> Report {
    match Settings::load(config_path) {
        Ok(settings) => {
            let source = config_path.display().to_string();
            run_with_settings(&source, &settings, options, clock).await
        }
        Err(e) => {
            let steps = vec![
                Step::new("config", "config", Verdict::Fail, e.to_string()).hint(
                    "fix the key named above (licd.example.toml documents every key); nothing else can be checked",
                ),
            ];
            Report::new(
                AGENT_VERSION,
                clock.wall(),
                None,
                None,
                options.offline,
                steps,
            )
        }
    }
}

/// Runs every step for already loaded `settings`; `source` names where they came from in the
/// config step (the path, or the daemon's running config for a remote request).
pub async fn run_with_settings(
    source: &str,
    settings: &Settings,
    options: &Options,
    clock: &dyn Clock,
) -> Report {
    let wall = clock.wall();
    let mut steps = Vec::new();
    let report = |steps, device, tenant| {
        Report::new(AGENT_VERSION, wall, device, tenant, options.offline, steps)
    };

    // Config.
    let b = &settings.broker;
    steps.push(Step::new(
        "config",
        "config",
        Verdict::Ok,
        format!(
            "{}: tenant {}, {} service(s), broker {}:{} ({}), {} root(s)",
            source,
            settings.tenant,
            settings.services.len(),
            b.host,
            b.port,
            match (&b.tls, &b.tls.as_ref().and_then(|t| t.client_cert.as_ref())) {
                (None, _) => "plain TCP",
                (Some(_), None) => "TLS",
                (Some(_), Some(_)) => "mutual TLS",
            },
            settings.roots.len()
        ),
    ));

    // State dir and key.
    let dir = &settings.state_dir;
    steps.push(steps::judge_state_dir(
        &dir.display().to_string(),
        file_facts(dir),
        own_uid(),
    ));
    let key_path = DeviceKey::path_in(dir);
    let key = DeviceKey::load(&key_path);
    steps.push(steps::judge_key(
        &key_path.display().to_string(),
        file_facts(&key_path).ok().flatten(),
        match &key {
            Ok(k) => Ok(k.id().to_hex()),
            Err(e) => Err(e.to_string()),
        },
    ));
    let key = match key {
        Ok(k) => Some(k),
        Err(KeyError::Missing { .. }) => None,
        Err(_) => None,
    };

    // Identity.
    let identity = match resolve_identity(
        &settings.identity,
        &HostRoot::system(),
        DEFAULT_RESOLVE_TIMEOUT,
    )
    .await
    {
        Ok(id) => {
            let rec = record::load(dir)
                .map(|r| {
                    r.map(|r| RecordedIdentity {
                        device: r.device,
                        device_key: r.device_key,
                        fingerprint: r.fingerprint,
                        written_at: r.written_at,
                    })
                })
                .map_err(|e| e.to_string());
            let source = serde_json::to_value(&id.device.source)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let key_hex = key.as_ref().map(|k| k.id().to_hex());
            steps.push(steps::judge_identity(
                id.device.id.as_str(),
                &source,
                key_hex.as_deref(),
                &id.device.fingerprint,
                rec,
            ));
            Some(id)
        }
        Err(e) => {
            steps.push(
                Step::new("identity", "identity", Verdict::Fail, e.to_string())
                    .hint("set identity.device_id in the config"),
            );
            None
        }
    };
    let device = identity.as_ref().map(|i| i.device.id.to_string());
    let tenant = Some(settings.tenant.to_string());

    // Clock.
    let store = Store::open_read_only(dir);
    let mark = store.load_mark().map_err(|e| e.to_string());
    let mark_value = mark.as_ref().ok().copied().flatten().unwrap_or(0);
    let ntp = ntp_sync().await;
    let clock_step = steps::judge_clock(wall, mark.clone(), settings.rollback_tolerance, ntp);
    let rollback = clock_step.detail["rollback"] == json!(true);
    steps.push(clock_step);
    let now = wall.max(mark_value);

    // Daemon.
    let daemon_status: Option<Value> = match &settings.socket {
        Some(path) if cfg!(feature = "socket-api") => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                crate::api::query(&path, &json!({"v": 1, "op": "status"}), SOCKET_TIMEOUT).ok()
            })
            .await
            .ok()
            .flatten()
            .filter(|a| a["ok"] == json!(true))
            .map(|a| a["status"].clone())
        }
        _ => None,
    };
    let socket_s = settings
        .socket
        .as_ref()
        .filter(|_| cfg!(feature = "socket-api"))
        .map(|p| p.display().to_string());
    steps.push(steps::judge_daemon(
        socket_s.as_deref(),
        daemon_status.as_ref(),
    ));

    // Cache.
    // The config roots moved forward by accepted rotations/revocations (trust.v2.bin), as
    // the daemon uses them.
    let trust = crate::trust::load(dir, settings.roots.clone())
        .0
        .store()
        .clone();
    let rules = match (&identity, &key) {
        (Some(id), Some(k)) => Some(AcceptanceRules {
            trust: trust.clone(),
            device: id.device.id.clone(),
            device_key: k.id(),
            future_tolerance: settings.future_tolerance,
        }),
        _ => None,
    };
    let cached = store.load_bundle().map_err(|e| e.to_string());
    let facts = cache_facts(cached.clone(), &trust, rules.as_ref(), now);
    let cached_seq = match &facts {
        CacheFacts::Valid { seq, .. } => *seq,
        _ => 0,
    };
    let mut last_heard = match &facts {
        CacheFacts::Valid { issued_at, .. } => Some(*issued_at),
        _ => None,
    };
    steps.extend(steps::judge_cache(&facts, now));

    // Network.
    let mut fresh_bundles = Vec::new();
    if options.offline {
        skip_network(&mut steps, 0, "--offline");
    } else {
        let t = options.timeout;
        let (addrs, took) = net::resolve(&b.host, b.port, t).await;
        steps.push(steps::judge_dns(&b.host, &addrs, took));
        let addrs = addrs.unwrap_or_default();
        if addrs.is_empty() {
            skip_network(&mut steps, 1, "DNS failed");
        } else {
            let tcp = net::tcp_connect(&addrs, t).await;
            steps.push(steps::judge_tcp(&tcp));
            match tcp {
                TcpOutcome::Connected { addr, .. } => {
                    let tls_ok = match &b.tls {
                        None => {
                            steps.push(
                                Step::new("tls", "TLS", Verdict::Warn, "not used: plain MQTT (allow_insecure)")
                                    .hint("licenses and credentials cross the network unencrypted: use mqtts:// outside labs"),
                            );
                            true
                        }
                        Some(tls) => {
                            let f = net::tls_handshake(addr, &b.host, tls, t).await;
                            let step = steps::judge_tls(&f, now);
                            let ok = step.verdict != Verdict::Fail;
                            steps.push(step);
                            ok
                        }
                    };
                    if !tls_ok {
                        skip_network(&mut steps, 3, "TLS failed");
                    } else if let Some(id) = &identity {
                        let topics = DeviceTopics::new(&settings.tenant, &id.device.id);
                        let client_id = format!(
                            "licd-diag-{}-{}-{:04x}",
                            settings.tenant,
                            id.device.id,
                            crate::backoff::os_random() % 0x10000
                        );
                        let report_bytes = key.as_ref().map(|k| {
                            let report = DeviceReport {
                                device: id.device.id.clone(),
                                tenant: settings.tenant.clone(),
                                device_key: k.public(),
                                model: id.product.model.value.clone(),
                                serial: id.product.serial.value.clone(),
                                product_class: id.product.product_class.value.clone(),
                                firmware_version: id.product.firmware_version.value.clone(),
                                agent_version: AGENT_VERSION.to_string(),
                                vm_count: None,
                                services_wanted: settings.services.clone(),
                                bundle_seq: cached_seq,
                                clock: now,
                                uptime: clock.boot().as_secs(),
                                clock_rollback: rollback,
                            };
                            seal_report(&report, &k.signing)
                        });
                        let has_report = report_bytes.is_some();
                        let m = net::mqtt_probe(net::MqttParams {
                            broker: b,
                            client_id: client_id.clone(),
                            topics: &topics,
                            timeout: t,
                            rules: rules.as_ref(),
                            now,
                            report: report_bytes,
                        })
                        .await;
                        match &m.connect {
                            Some(c) => steps.push(steps::judge_mqtt(c, &client_id)),
                            None => steps.push(Step::new(
                                "mqtt",
                                "MQTT connect",
                                Verdict::Fail,
                                "not attempted",
                            )),
                        }
                        match &m.subscribed {
                            None => skip_network(&mut steps, 4, "MQTT connect failed"),
                            Some(sub) => {
                                let waited = if has_report {
                                    t
                                } else {
                                    net::RETAINED_WAIT.min(t)
                                };
                                steps.push(steps::judge_retained(
                                    sub.clone(),
                                    m.retained.as_ref(),
                                    cached_seq,
                                    waited,
                                ));
                                if !has_report {
                                    steps.push(Step::skip(
                                        "round_trip",
                                        "round trip",
                                        "no device key to sign a report",
                                    ));
                                } else if sub.is_err() {
                                    steps.push(Step::skip(
                                        "round_trip",
                                        "round trip",
                                        "subscription refused",
                                    ));
                                } else {
                                    steps.push(steps::judge_round_trip(
                                        m.published.clone().unwrap_or(Ok(())),
                                        m.answer.as_ref(),
                                        m.retained
                                            .as_ref()
                                            .map_or(cached_seq, |r| r.seq.max(cached_seq)),
                                        t,
                                    ));
                                    if m.answer.as_ref().is_some_and(|a| a.check.is_ok()) {
                                        last_heard = Some(wall.max(now));
                                    }
                                }
                            }
                        }
                        fresh_bundles = m.bundles;
                    } else {
                        skip_network(&mut steps, 3, "no device id");
                    }
                }
                _ => skip_network(&mut steps, 2, "TCP connect failed"),
            }
        }
    }

    // Services: the cache, then whatever newer bundle diag saw, evaluated at trusted time.
    if let Some(heard) = daemon_status
        .as_ref()
        .and_then(|s| s["connection"]["last_bundle_at"].as_u64())
    {
        last_heard = Some(last_heard.map_or(heard, |h| h.max(heard)));
    }
    let device_id = identity
        .as_ref()
        .map(|i| i.device.id.clone())
        .or_else(|| licd_protocol::DeviceId::new("unknown").ok());
    let Some(device_id) = device_id else {
        return report(steps, device, tenant);
    };
    let device_rules = rules.clone().unwrap_or(AcceptanceRules {
        trust,
        device: device_id,
        device_key: KeyId([0; 16]),
        future_tolerance: settings.future_tolerance,
    });
    let mut enforcer = Enforcer::new(device_rules, settings.services.clone());
    if rules.is_some() {
        if let Ok(Some(raw)) = &cached {
            let _ = enforcer.restore(raw, now);
        }
        for raw in &fresh_bundles {
            let _ = enforcer.handle(now, Input::Bundle(raw));
        }
    }
    let _ = enforcer.handle(now, Input::Tick);
    let snapshot = enforcer.snapshot();
    for s in &snapshot.services {
        let wanted = settings.services.contains(&s.service);
        steps.push(steps::judge_service(s, wanted, last_heard));
    }
    if snapshot.services.is_empty() {
        steps.push(
            Step::new(
                "services",
                "services",
                Verdict::Warn,
                "no service wanted or granted",
            )
            .hint("list the services this device needs under `services` in the config"),
        );
    }
    report(steps, device, tenant)
}
