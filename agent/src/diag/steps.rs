//! The pure half of `licd diag`: facts in, a [`Step`] (verdict, figure, hint) out. The probes
//! (`local`, `net`) gather the facts; nothing here touches files, clocks or the network, so
//! every verdict is unit-tested with made-up facts.

use std::net::SocketAddr;
use std::time::Duration;

use licd_protocol::UnixTime;
use serde::Serialize;
use serde_json::{json, Value};

use super::x509::CertSummary;
use crate::enforce::{Reason, ServiceState, ServiceStatus};
use crate::identity::{FingerprintFact, HostFingerprint};
use crate::status::fmt_time;

/// How a step went. Ordered from harmless to bad, so the worst verdict is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not run (`--offline`, or an earlier step failed).
    Skip,
    /// Works.
    Ok,
    /// Works now, but will not for long or is not as it should be.
    Warn,
    /// Broken.
    Fail,
}

impl Verdict {
    /// The label printed in the verdict column.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Skip => "skip",
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One diagnostic step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Stable id for scripts and tests: `config`, `tls`, `service.wifi`, …
    pub id: String,
    /// Short title for the human output.
    pub title: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found, with the figure that matters (times, names, counts).
    pub figure: String,
    /// What to do about it (for warn and fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Structured facts behind the figure.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl Step {
    /// A step with no hint and no detail.
    pub fn new(id: &str, title: &str, verdict: Verdict, figure: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            verdict,
            figure: figure.into(),
            hint: None,
            detail: Value::Null,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds structured detail.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    /// A skipped step with the reason as its figure.
    pub fn skip(id: &str, title: &str, why: impl Into<String>) -> Self {
        Self::new(id, title, Verdict::Skip, why)
    }
}

/// Milliseconds with one decimal, for figures.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1_000.0)
}

/// `3d 4h`, `5h 10m`, `12m`, `40s`: a rough human duration.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

// ---------------------------------------------------------------------------------------------
// Local steps

/// Facts about a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// A directory.
    pub is_dir: bool,
}

/// The state directory: `None` when it does not exist; `uid` is the uid diag runs as (if
/// known).
pub fn judge_state_dir(
    path: &str,
    dir: Result<Option<FileFacts>, String>,
    uid: Option<u32>,
) -> Step {
    const T: &str = "state dir";
    match dir {
        Err(e) => Step::new("state_dir", T, Verdict::Fail, format!("{path}: {e}"))
            .hint("licd must be able to read and write its state directory (state_dir)"),
        Ok(None) => Step::new(
            "state_dir",
            T,
            Verdict::Warn,
            format!("{path} does not exist"),
        )
        .hint("`licd run` creates it on first start (mode 0700); nothing was ever licensed here"),
        Ok(Some(f)) if !f.is_dir => Step::new(
            "state_dir",
            T,
            Verdict::Fail,
            format!("{path} is not a directory"),
        )
        .hint("move the file away or point state_dir at a directory"),
        Ok(Some(f)) => {
            let figure = format!("{path}: mode {:04o}, owner uid {}", f.mode, f.uid);
            if f.mode & 0o077 != 0 {
                Step::new("state_dir", T, Verdict::Warn, figure)
                    .hint(format!("others can look into it: chmod 700 {path}"))
            } else if uid.is_some_and(|u| u != f.uid && u != 0) {
                Step::new("state_dir", T, Verdict::Warn, figure)
                    .hint("owned by another user: run diag as the user licd runs as (or root)")
            } else {
                Step::new("state_dir", T, Verdict::Ok, figure)
            }
        }
    }
}

/// The device key: the file's facts (`None`: missing) and whether it loaded (its key id).
pub fn judge_key(path: &str, file: Option<FileFacts>, loaded: Result<String, String>) -> Step {
    const T: &str = "device key";
    let Some(f) = file else {
        return Step::new(
            "device_key",
            T,
            Verdict::Warn,
            format!("{path} does not exist"),
        )
        .hint(
            "`licd run` creates the device key on first start; until then no report can be signed",
        );
    };
    match loaded {
        Err(e) => Step::new("device_key", T, Verdict::Fail, e).hint(
            "restore device.key from a backup, or move it away and re-enrol the new key id with the controller",
        ),
        Ok(id) => {
            let figure = format!("key id {id}, mode {:04o}", f.mode);
            if f.mode & 0o077 != 0 {
                Step::new("device_key", T, Verdict::Warn, figure)
                    .hint(format!("the secret key is readable by others: chmod 600 {path}"))
            } else {
                Step::new("device_key", T, Verdict::Ok, figure)
            }
        }
    }
}

/// The record the daemon left, as diag sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedIdentity {
    /// Device id recorded.
    pub device: String,
    /// Key id recorded.
    pub device_key: String,
    /// Fingerprint recorded.
    pub fingerprint: HostFingerprint,
    /// When.
    pub written_at: UnixTime,
}

/// Identity now vs the daemon's record: a changed device id or key means the controller no
/// longer recognises the device; drifted host facts mean a derived id may change.
pub fn judge_identity(
    device: &str,
    source: &str,
    key_id: Option<&str>,
    fingerprint: &HostFingerprint,
    record: Result<Option<RecordedIdentity>, String>,
) -> Step {
    const T: &str = "identity";
    let figure = format!(
        "device {device} ({source}), fingerprint {}",
        fingerprint.summary()
    );
    let detail = json!({"device": device, "source": source, "fingerprint": fingerprint});
    let rec = match record {
        Err(e) => {
            return Step::new(
                "identity",
                T,
                Verdict::Warn,
                format!("{figure}; record: {e}"),
            )
            .hint("the daemon rewrites identity.v1.json at its next start")
            .detail(detail)
        }
        Ok(None) => {
            return Step::new(
                "identity",
                T,
                Verdict::Ok,
                format!("{figure}; no earlier run recorded"),
            )
            .detail(detail)
        }
        Ok(Some(r)) => r,
    };
    let since = fmt_time(rec.written_at);
    if rec.device != device {
        return Step::new(
            "identity",
            T,
            Verdict::Fail,
            format!("device id changed: {} since {since}, now {device}", rec.device),
        )
        .hint("the controller knows the old id; set identity.device_id to keep it, or re-register the device")
        .detail(detail);
    }
    if let Some(key) = key_id.filter(|k| *k != rec.device_key) {
        return Step::new(
            "identity",
            T,
            Verdict::Fail,
            format!(
                "device key changed: {} since {since}, now {key}",
                rec.device_key
            ),
        )
        .hint("bundles are bound to the old key; register the new key id with the controller")
        .detail(detail);
    }
    let drift = fingerprint.drift(&rec.fingerprint);
    if drift.is_empty() {
        return Step::new(
            "identity",
            T,
            Verdict::Ok,
            format!("{figure}; unchanged since {since}"),
        )
        .detail(detail);
    }
    let names: Vec<&str> = drift.iter().map(|f: &FingerprintFact| f.name()).collect();
    let hint = if source == "config" {
        "the id is configured, so it stays; check the host was not cloned or its hardware swapped"
    } else {
        "the derived device id may change with these facts: set identity.device_id to pin it"
    };
    Step::new(
        "identity",
        T,
        Verdict::Warn,
        format!("{figure}; changed since {since}: {}", names.join(", ")),
    )
    .hint(hint)
    .detail(detail)
}

/// Whether the system clock is synchronised (NTP), as far as diag can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NtpSync {
    /// Synchronised.
    Yes,
    /// Not synchronised.
    No,
    /// No way to tell on this system.
    Unknown,
}

/// Wall clock vs the persisted high-water mark. Any wall clock more than `tolerance` behind
/// the mark was set back (the daemon flags a rollback in its next report).
pub fn judge_clock(
    wall: UnixTime,
    mark: Result<Option<UnixTime>, String>,
    tolerance: u64,
    ntp: NtpSync,
) -> Step {
    const T: &str = "clock";
    let ntp_s = match ntp {
        NtpSync::Yes => "NTP synced",
        NtpSync::No => "NTP not synced",
        NtpSync::Unknown => "NTP unknown",
    };
    let mark = match mark {
        Err(e) => return Step::new(
            "clock",
            T,
            Verdict::Warn,
            format!("wall {}, mark unreadable: {e}", fmt_time(wall)),
        )
        .hint("the daemon sets the damaged time mark aside and restarts it from the cached bundle")
        .detail(json!({"wall": wall, "ntp": ntp})),
        Ok(m) => m,
    };
    let detail = json!({"wall": wall, "mark": mark, "ntp": ntp, "rollback": mark.is_some_and(|m| wall.saturating_add(tolerance) < m)});
    let mark_s = mark.map_or("none".into(), fmt_time);
    let figure = format!("wall {}, mark {mark_s}, {ntp_s}", fmt_time(wall));
    if let Some(m) = mark.filter(|&m| wall.saturating_add(tolerance) < m) {
        return Step::new(
            "clock",
            T,
            Verdict::Fail,
            format!("{figure}: SET BACK by {}", human_duration(m - wall)),
        )
        .hint("the clock is behind the newest time licd has seen; licd keeps counting from the mark and reports the rollback. Fix NTP (or the RTC) and the flag clears")
        .detail(detail);
    }
    // 2020-01-01: a wall clock before this never was set (a device without RTC after boot).
    if wall < 1_577_836_800 {
        return Step::new("clock", T, Verdict::Warn, figure)
            .hint("the wall clock was never set (no RTC, no NTP yet); licd uses the mark meanwhile")
            .detail(detail);
    }
    if ntp == NtpSync::No {
        return Step::new("clock", T, Verdict::Warn, figure)
            .hint("enable NTP: a drifting clock shortens or lengthens leases")
            .detail(detail);
    }
    Step::new("clock", T, Verdict::Ok, figure).detail(detail)
}

/// The running daemon as its socket answers (`None`: nobody answered).
pub fn judge_daemon(socket: Option<&str>, status: Option<&Value>) -> Step {
    const T: &str = "daemon";
    let Some(path) = socket else {
        return Step::new("daemon", T, Verdict::Ok, "no socket configured; not asked");
    };
    let Some(s) = status else {
        return Step::new("daemon", T, Verdict::Warn, format!("no answer on {path}"))
            .hint("the daemon is not running (or cannot be reached): start it (`systemctl start licd`, `/etc/init.d/licd start`)");
    };
    let c = &s["connection"];
    if c["connected"] == json!(true) {
        let since = c["since"].as_u64().map(fmt_time).unwrap_or_default();
        Step::new(
            "daemon",
            T,
            Verdict::Ok,
            format!(
                "running, connected to {} since {since}",
                c["broker"].as_str().unwrap_or("?")
            ),
        )
    } else {
        let err = c["last_error"].as_str().unwrap_or("not connected yet");
        Step::new(
            "daemon",
            T,
            Verdict::Warn,
            format!("running, NOT connected: {err}"),
        )
        .hint("the broker steps below show where the path breaks")
    }
}

/// The cached bundle, judged with the same rules the daemon applies at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFacts {
    /// No cache file.
    Missing,
    /// It could not be read.
    Unreadable(String),
    /// It was refused (code and message of the refusal).
    Refused {
        /// Refusal code (`bad_signature`, `untrusted_signer`, …).
        code: &'static str,
        /// Refusal message.
        message: String,
    },
    /// It is valid.
    Valid {
        /// Its seq.
        seq: u64,
        /// Its issue time.
        issued_at: UnixTime,
        /// Signing key id.
        signer: String,
        /// Signer certificate window.
        cert_not_before: UnixTime,
        /// Signer certificate end.
        cert_not_after: UnixTime,
    },
}

/// How long before a signer certificate ends diag starts warning.
pub const CERT_WARN_BEFORE: u64 = 30 * 86_400;

/// The cache step and the signer-certificate step.
pub fn judge_cache(facts: &CacheFacts, now: UnixTime) -> Vec<Step> {
    const T: &str = "cache";
    const C: &str = "signer cert";
    match facts {
        CacheFacts::Missing => vec![
            Step::new("cache", T, Verdict::Warn, "no cached bundle")
                .hint("nothing granted yet: the daemon must reach the controller once"),
            Step::skip("signer_cert", C, "no bundle"),
        ],
        CacheFacts::Unreadable(e) => vec![
            Step::new("cache", T, Verdict::Fail, e.clone())
                .hint("the daemon sets an unreadable cache aside and waits for a new bundle"),
            Step::skip("signer_cert", C, "no bundle"),
        ],
        CacheFacts::Refused { code, message } => {
            let hint = match *code {
                "wrong_device" | "wrong_device_key" => "the bundle is for another device or key (copied state dir, re-keyed device): re-enrol with the controller",
                "untrusted_signer" | "signer_revoked" => "its signer does not chain to a pinned root: check `roots` in the config against the controller's export-root",
                "certificate_validity" => "the signer certificate is outside its window at the current time: check the clock, then the controller's signing key",
                _ => "the cache was damaged or tampered with; the daemon sets it aside and waits for a new bundle",
            };
            vec![
                Step::new(
                    "cache",
                    T,
                    Verdict::Fail,
                    format!("refused ({code}): {message}"),
                )
                .hint(hint)
                .detail(json!({"code": code})),
                Step::skip("signer_cert", C, "bundle refused"),
            ]
        }
        CacheFacts::Valid {
            seq,
            issued_at,
            signer,
            cert_not_before,
            cert_not_after,
        } => {
            let cache = Step::new(
                "cache",
                T,
                Verdict::Ok,
                format!(
                    "seq {seq}, issued {}, signature valid, bound to this device",
                    fmt_time(*issued_at)
                ),
            )
            .detail(json!({"seq": seq, "issued_at": issued_at, "signer": signer}));
            // Past year 9999 reads as "no end" (test and lab certificates use u64::MAX).
            let end = if *cert_not_after >= 253_402_300_800 {
                "no end".to_string()
            } else {
                fmt_time(*cert_not_after)
            };
            let window = format!("{signer}: valid {} .. {end}", fmt_time(*cert_not_before));
            let cert = if cert_not_after.saturating_sub(now) < CERT_WARN_BEFORE {
                Step::new(
                    "signer_cert",
                    C,
                    Verdict::Warn,
                    format!("{window}: ends in {}", human_duration(cert_not_after.saturating_sub(now))),
                )
                .hint("the controller must rotate its signing key (a new certificate from the root) before then")
            } else {
                Step::new("signer_cert", C, Verdict::Ok, window)
            };
            vec![cache, cert]
        }
    }
}

/// One service's state as a step: "grace ends …: controller not heard from since …".
pub fn judge_service(s: &ServiceStatus, wanted: bool, last_heard: Option<UnixTime>) -> Step {
    let id = format!("service.{}", s.service);
    let title = s.service.to_string();
    let heard = last_heard.map_or("never".to_string(), fmt_time);
    let detail = serde_json::to_value(s).unwrap_or(Value::Null);
    let hint_for = |r: Reason| match r {
        Reason::LeaseExpired => "the agent must reach the controller: see the broker steps",
        Reason::TermEnded => "renew the subscription on the controller",
        Reason::NotYetValid => "the term starts later; check the clock and the subscription dates",
        Reason::OverVmAllowance => "run fewer VMs or buy a license for more",
        Reason::Revoked | Reason::Unassigned => "assign a license to this device on the controller",
        Reason::NotEntitled | Reason::SeatsExhausted => {
            "add seats or a subscription for this service"
        }
        Reason::UnknownTenant => "check `tenant` in the config against the controller",
        Reason::NeverGranted => {
            "the controller has never granted it: check the round trip and the controller's policy"
        }
        Reason::Other => "this licd does not know the reason: upgrade it",
    };
    let step = match s.state {
        ServiceState::Licensed { until } => Step::new(
            &id,
            &title,
            Verdict::Ok,
            format!(
                "licensed until {}{}",
                fmt_time(until),
                s.license
                    .as_ref()
                    .map(|l| format!(", {l}"))
                    .unwrap_or_default()
            ),
        ),
        ServiceState::Grace { until, reason } => {
            let why = match reason {
                Reason::LeaseExpired => format!("controller not heard from since {heard}"),
                other => other.describe().to_string(),
            };
            Step::new(
                &id,
                &title,
                Verdict::Warn,
                format!("grace ends {}: {why}", fmt_time(until)),
            )
            .hint(hint_for(reason))
        }
        ServiceState::Unlicensed { reason } => {
            let why = match reason {
                Reason::LeaseExpired => {
                    format!("lease and grace over; controller not heard from since {heard}")
                }
                other => other.describe().to_string(),
            };
            let verdict = if wanted { Verdict::Fail } else { Verdict::Ok };
            let step = Step::new(&id, &title, verdict, format!("UNLICENSED: {why}"));
            if wanted {
                step.hint(hint_for(reason))
            } else {
                step
            }
        }
    };
    step.detail(detail)
}

// ---------------------------------------------------------------------------------------------
// Network steps

/// Name resolution of the broker host.
pub fn judge_dns(host: &str, result: &Result<Vec<SocketAddr>, String>, took: Duration) -> Step {
    const T: &str = "DNS";
    match result {
        Ok(addrs) if !addrs.is_empty() => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            Step::new(
                "dns",
                T,
                Verdict::Ok,
                format!("{host} -> {} in {}", list.join(" "), ms(took)),
            )
            .detail(json!({"addresses": list, "ms": took.as_secs_f64() * 1e3}))
        }
        Ok(_) => Step::new("dns", T, Verdict::Fail, format!("{host}: no addresses"))
            .hint("the name exists without A/AAAA records: check the broker host in broker.url"),
        Err(e) => Step::new("dns", T, Verdict::Fail, format!("{host}: {e}"))
            .hint("check broker.url, /etc/resolv.conf and the uplink"),
    }
}

/// The outcome of the TCP connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOutcome {
    /// Connected to `addr`.
    Connected {
        /// Address.
        addr: SocketAddr,
        /// Connect time.
        took: Duration,
    },
    /// Refused by `addr` (nobody listens).
    Refused {
        /// Address.
        addr: SocketAddr,
    },
    /// No answer in time (filtered, or the host is down).
    Timeout {
        /// Address.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// Another error.
    Error {
        /// Address.
        addr: SocketAddr,
        /// The OS message.
        message: String,
    },
}

/// The TCP connect step.
pub fn judge_tcp(outcome: &TcpOutcome) -> Step {
    const T: &str = "TCP connect";
    match outcome {
        TcpOutcome::Connected { addr, took } => {
            let v = if *took > Duration::from_secs(1) {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            let s = Step::new("tcp", T, v, format!("{addr} in {}", ms(*took)))
                .detail(json!({"addr": addr.to_string(), "ms": took.as_secs_f64() * 1e3}));
            if v == Verdict::Warn {
                s.hint("slow network path: expect slow reconnects")
            } else {
                s
            }
        }
        TcpOutcome::Refused { addr } => Step::new(
            "tcp",
            T,
            Verdict::Fail,
            format!("{addr}: connection refused"),
        )
        .hint("nothing listens there: is the broker running, and is the port in broker.url right?"),
        TcpOutcome::Timeout { addr, after } => Step::new(
            "tcp",
            T,
            Verdict::Fail,
            format!("{addr}: no answer within {}s", after.as_secs()),
        )
        .hint("a firewall drops the connection, or the host is down"),
        TcpOutcome::Error { addr, message } => {
            Step::new("tcp", T, Verdict::Fail, format!("{addr}: {message}"))
                .hint("check routing to the broker")
        }
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The TLS settings could not be loaded (CA file, client key…).
    Setup(String),
    /// The chain does not lead to a trusted CA.
    UnknownIssuer,
    /// A trusted CA has the issuer's name, but its key did not sign the certificate (another
    /// CA with the same name: a lab CA regenerated, a staging CA).
    WrongCaKey,
    /// The server certificate expired.
    Expired,
    /// The server certificate is not valid yet.
    NotYetValid,
    /// The certificate is not for the expected name.
    NameMismatch,
    /// Another certificate problem.
    BadCertificate(String),
    /// The server sent an alert.
    Alert(String),
    /// Nothing came back in time.
    Timeout,
    /// Anything else (I/O, protocol).
    Other(String),
}

/// What the TLS probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// The name checked (server_name override, or the broker host).
    pub name: String,
    /// Negotiated protocol version.
    pub version: Option<String>,
    /// Negotiated cipher suite.
    pub cipher: Option<String>,
    /// The server's chain, leaf first (when it could be read).
    pub chain: Vec<CertSummary>,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// A client certificate is configured.
    pub client_cert_configured: bool,
    /// Handshake time.
    pub took: Duration,
    /// Success, or why not.
    pub result: Result<(), TlsFailure>,
}

/// The TLS handshake step.
pub fn judge_tls(f: &TlsFacts, now: UnixTime) -> Step {
    const T: &str = "TLS";
    let leaf = f.chain.first();
    let leaf_s = leaf.map(|c| {
        format!(
            "cert {} (issuer {}), expires {}{}",
            c.subject,
            c.issuer,
            fmt_time(c.not_after),
            if c.names.is_empty() {
                String::new()
            } else {
                format!(", for {}", c.names.join(" "))
            }
        )
    });
    let detail = json!({
        "name": f.name,
        "version": f.version,
        "cipher": f.cipher,
        "chain": f.chain,
        "client_cert_requested": f.client_cert_requested,
        "client_cert_configured": f.client_cert_configured,
        "ms": f.took.as_secs_f64() * 1e3,
    });
    let with_leaf = |s: String| match &leaf_s {
        Some(l) => format!("{s}; server sent {l}"),
        None => s,
    };
    let fail = |figure: String, hint: &str| {
        Step::new("tls", T, Verdict::Fail, with_leaf(figure))
            .hint(hint)
            .detail(detail.clone())
    };
    match &f.result {
        Err(TlsFailure::Setup(e)) => Step::new("tls", T, Verdict::Fail, e.clone())
            .hint("fix the file named in [broker] (ca_file, client_cert, client_key)"),
        Err(TlsFailure::UnknownIssuer) => fail(
            "certificate not signed by a trusted CA".into(),
            "broker.ca_file does not hold the CA that signed the broker's certificate (or the system roots lack it)",
        ),
        Err(TlsFailure::WrongCaKey) => fail(
            "certificate not signed by the trusted CA (same issuer name, different key)".into(),
            "broker.ca_file holds another CA of the same name (regenerated?): install the CA that signed the broker's certificate",
        ),
        Err(TlsFailure::Expired) => fail("server certificate expired".into(), "renew the broker certificate; also check this device's clock"),
        Err(TlsFailure::NotYetValid) => fail("server certificate not valid yet".into(), "check this device's clock (NTP), then the certificate dates"),
        Err(TlsFailure::NameMismatch) => fail(
            format!("certificate is not valid for {:?}", f.name),
            "connect by a name the certificate lists, or set broker.server_name to one of them",
        ),
        Err(TlsFailure::BadCertificate(e)) => fail(format!("bad certificate: {e}"), "check the broker's certificate chain"),
        Err(TlsFailure::Alert(a)) => fail(
            format!("broker refused the handshake: {a}"),
            if f.client_cert_requested && !f.client_cert_configured {
                "the broker wants a client certificate: set broker.client_cert and client_key"
            } else {
                "the broker did not accept this client (client certificate? TLS version?)"
            },
        ),
        Err(TlsFailure::Timeout) => fail("no handshake answer in time".into(), "is this a TLS port? (mqtts:// is usually 8883)"),
        Err(TlsFailure::Other(e)) => fail(e.clone(), "is this a TLS port? (plain MQTT is usually 1883, TLS 8883)"),
        Ok(()) if f.client_cert_requested && !f.client_cert_configured => Step::new(
            "tls",
            T,
            Verdict::Fail,
            with_leaf("broker requires a client certificate and none is configured".into()),
        )
        .hint("set broker.client_cert and broker.client_key (mutual TLS)")
        .detail(detail),
        Ok(()) => {
            let figure = format!(
                "{} {} in {}{}",
                f.version.as_deref().unwrap_or("?"),
                f.cipher.as_deref().unwrap_or("?"),
                ms(f.took),
                leaf_s.as_ref().map(|l| format!("; {l}")).unwrap_or_default()
            );
            let soon = leaf.is_some_and(|c| c.not_after.saturating_sub(now) < CERT_WARN_BEFORE);
            if soon {
                Step::new("tls", T, Verdict::Warn, figure)
                    .hint("the broker certificate expires within 30 days: renew it")
                    .detail(detail)
            } else {
                Step::new("tls", T, Verdict::Ok, figure).detail(detail)
            }
        }
    }
}

/// The outcome of the MQTT CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttOutcome {
    /// ConnAck with return code 0.
    Accepted {
        /// Time to ConnAck.
        took: Duration,
    },
    /// ConnAck with a refusal code (`NotAuthorized`, `BadUserNamePassword`, …).
    Refused(String),
    /// The connection failed before a ConnAck (TLS, I/O).
    Failed(String),
    /// No ConnAck in time.
    Timeout(Duration),
}

/// The MQTT connect step.
pub fn judge_mqtt(o: &MqttOutcome, client_id: &str) -> Step {
    const T: &str = "MQTT connect";
    match o {
        MqttOutcome::Accepted { took } => Step::new(
            "mqtt",
            T,
            Verdict::Ok,
            format!("accepted as {client_id} in {}", ms(*took)),
        ),
        MqttOutcome::Refused(code) => {
            let hint = match code.as_str() {
                "NotAuthorized" => "the broker does not authorise this client: check broker.username / password_file, the client certificate, and the broker's ACL",
                "BadUserNamePassword" => "wrong user name or password: check broker.username and broker.password_file",
                "BadClientId" => "the broker refuses the client id: check its client-id rules",
                "ServiceUnavailable" => "the broker is up but not serving: check its logs",
                _ => "the broker refused the connection: check its log",
            };
            Step::new("mqtt", T, Verdict::Fail, format!("refused: {code}"))
                .hint(hint)
                .detail(json!({"return_code": code}))
        }
        MqttOutcome::Failed(e) => {
            let hint = if e.contains("CertificateRequired") || e.contains("certificate required") {
                "the broker wants a client certificate: set broker.client_cert and client_key"
            } else {
                "see the TCP/TLS steps above"
            };
            Step::new("mqtt", T, Verdict::Fail, e.clone()).hint(hint)
        }
        MqttOutcome::Timeout(after) => Step::new(
            "mqtt",
            T,
            Verdict::Fail,
            format!("no CONNACK within {}s", after.as_secs()),
        )
        .hint("the broker accepted TCP but does not speak MQTT there, or is overloaded"),
    }
}

/// A bundle seen on the grants topic during diag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSeen {
    /// Its seq (0 when it could not be decoded).
    pub seq: u64,
    /// Time from subscribe / report to arrival.
    pub took: Duration,
    /// Accepted by the rules, or the refusal (code, message).
    pub check: Result<(), (&'static str, String)>,
}

/// The retained-bundle step: `subscribed` is the SubAck (Err: refused), `seen` what arrived.
pub fn judge_retained(
    subscribed: Result<(), String>,
    seen: Option<&BundleSeen>,
    cached_seq: u64,
    waited: Duration,
) -> Step {
    const T: &str = "retained bundle";
    if let Err(e) = subscribed {
        return Step::new(
            "retained",
            T,
            Verdict::Fail,
            format!("subscription refused: {e}"),
        )
        .hint("the broker's ACL does not let this device read its grants topic");
    }
    match seen {
        None if cached_seq == 0 => Step::new("retained", T, Verdict::Warn, format!("none within {}s", waited.as_secs()))
            .hint("the controller has not published for this device yet; it answers a report (next step)"),
        None => Step::new("retained", T, Verdict::Warn, format!("none within {}s, but the cache holds seq {cached_seq}", waited.as_secs()))
            .hint("the broker lost its retained messages (restart without persistence?); the controller republishes on the next report"),
        Some(b) => match &b.check {
            Err((code, msg)) => Step::new("retained", T, Verdict::Fail, format!("seq {} refused ({code}): {msg}", b.seq))
                .hint("the bundle the broker holds for this device is not acceptable: see the cache hints")
                .detail(json!({"seq": b.seq, "code": code})),
            Ok(()) if b.seq < cached_seq => Step::new("retained", T, Verdict::Warn, format!("seq {} is older than the cached seq {cached_seq}", b.seq))
                .hint("the controller may have lost state: it must issue a newer seq")
                .detail(json!({"seq": b.seq})),
            Ok(()) => Step::new("retained", T, Verdict::Ok, format!("seq {} valid, received in {}", b.seq, ms(b.took)))
                .detail(json!({"seq": b.seq})),
        },
    }
}

/// The report → grant round trip step.
pub fn judge_round_trip(
    published: Result<(), String>,
    seen: Option<&BundleSeen>,
    after_seq: u64,
    waited: Duration,
) -> Step {
    const T: &str = "round trip";
    if let Err(e) = published {
        return Step::new(
            "round_trip",
            T,
            Verdict::Fail,
            format!("report not delivered: {e}"),
        )
        .hint("the broker's ACL may not let this device publish its report topic");
    }
    match seen {
        None => Step::new("round_trip", T, Verdict::Fail, format!("report sent, no grant newer than seq {after_seq} within {}s", waited.as_secs()))
            .hint("the controller is not answering: is it running and subscribed to this broker? (leases run out without it)"),
        Some(b) => match &b.check {
            Err((code, msg)) => Step::new("round_trip", T, Verdict::Fail, format!("answer seq {} refused ({code}): {msg}", b.seq))
                .hint("the controller answers with a bundle this device cannot accept: check roots and the device key registration")
                .detail(json!({"seq": b.seq, "code": code})),
            Ok(()) => Step::new("round_trip", T, Verdict::Ok, format!("report -> grant seq {} in {}", b.seq, ms(b.took)))
                .detail(json!({"seq": b.seq, "ms": b.took.as_secs_f64() * 1e3})),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licd_protocol::ServiceName;

    const T0: UnixTime = 1_800_000_000;

    #[test]
    fn a_clock_behind_the_mark_by_more_than_the_tolerance_fails_as_set_back() {
        let s = judge_clock(T0 - 86_400, Ok(Some(T0)), 300, NtpSync::Unknown);
        assert_eq!(s.verdict, Verdict::Fail);
        assert!(s.figure.contains("SET BACK by 1d 0h"), "{}", s.figure);
        assert_eq!(s.detail["rollback"], true);
        let s = judge_clock(T0 - 200, Ok(Some(T0)), 300, NtpSync::Yes);
        assert_eq!(s.verdict, Verdict::Ok);
        assert_eq!(
            judge_clock(T0, Ok(None), 300, NtpSync::No).verdict,
            Verdict::Warn
        );
        assert_eq!(
            judge_clock(5, Ok(None), 300, NtpSync::Unknown).verdict,
            Verdict::Warn
        );
    }

    #[test]
    fn fingerprint_drift_warns_and_a_changed_key_fails() {
        let fp = HostFingerprint {
            machine_id: Some("a".into()),
            ..Default::default()
        };
        let rec = |fp: HostFingerprint, key: &str| RecordedIdentity {
            device: "ap-1".into(),
            device_key: key.into(),
            fingerprint: fp,
            written_at: T0,
        };
        let same = judge_identity(
            "ap-1",
            "machine_id",
            Some("k"),
            &fp,
            Ok(Some(rec(fp.clone(), "k"))),
        );
        assert_eq!(same.verdict, Verdict::Ok);
        let moved = HostFingerprint {
            machine_id: Some("b".into()),
            ..Default::default()
        };
        let drift = judge_identity(
            "ap-1",
            "machine_id",
            Some("k"),
            &moved,
            Ok(Some(rec(fp.clone(), "k"))),
        );
        assert_eq!(drift.verdict, Verdict::Warn);
        assert!(drift.figure.contains("machine-id"), "{}", drift.figure);
        let rekeyed = judge_identity(
            "ap-1",
            "machine_id",
            Some("k2"),
            &fp,
            Ok(Some(rec(fp.clone(), "k"))),
        );
        assert_eq!(rekeyed.verdict, Verdict::Fail);
        assert_eq!(
            judge_identity("ap-1", "config", None, &fp, Ok(None)).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn services_read_as_sentences_with_deadlines_and_reasons() {
        let svc = |state| ServiceStatus {
            service: ServiceName::new("wifi").unwrap(),
            state,
            license: None,
        };
        let grace = judge_service(
            &svc(ServiceState::Grace {
                until: T0,
                reason: Reason::LeaseExpired,
            }),
            true,
            Some(T0 - 3_600),
        );
        assert_eq!(grace.verdict, Verdict::Warn);
        assert_eq!(
            grace.figure,
            "grace ends 2027-01-15T08:00:00Z: controller not heard from since 2027-01-15T07:00:00Z"
        );
        let un = judge_service(
            &svc(ServiceState::Unlicensed {
                reason: Reason::NeverGranted,
            }),
            true,
            None,
        );
        assert_eq!(un.verdict, Verdict::Fail);
        let not_wanted = judge_service(
            &svc(ServiceState::Unlicensed {
                reason: Reason::Revoked,
            }),
            false,
            None,
        );
        assert_eq!(not_wanted.verdict, Verdict::Ok);
        assert_eq!(grace.id, "service.wifi");
    }

    #[test]
    fn a_signer_certificate_near_its_end_warns() {
        let valid = |end| CacheFacts::Valid {
            seq: 3,
            issued_at: T0,
            signer: "ab".into(),
            cert_not_before: 0,
            cert_not_after: end,
        };
        let steps = judge_cache(&valid(T0 + 86_400), T0);
        assert_eq!(
            (steps[0].verdict, steps[1].verdict),
            (Verdict::Ok, Verdict::Warn)
        );
        let steps = judge_cache(&valid(u64::MAX), T0);
        assert_eq!(steps[1].verdict, Verdict::Ok);
        assert_eq!(
            judge_cache(&CacheFacts::Missing, T0)[0].verdict,
            Verdict::Warn
        );
    }

    #[test]
    fn a_handshake_that_succeeds_without_the_wanted_client_certificate_fails() {
        let facts = TlsFacts {
            name: "b".into(),
            version: Some("TLSv1_3".into()),
            cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
            chain: vec![],
            client_cert_requested: true,
            client_cert_configured: false,
            took: Duration::from_millis(3),
            result: Ok(()),
        };
        assert_eq!(judge_tls(&facts, T0).verdict, Verdict::Fail);
        let ok = TlsFacts {
            client_cert_requested: false,
            ..facts.clone()
        };
        assert_eq!(judge_tls(&ok, T0).verdict, Verdict::Ok);
        let bad_ca = TlsFacts {
            result: Err(TlsFailure::UnknownIssuer),
            ..ok
        };
        let s = judge_tls(&bad_ca, T0);
        assert!(s.hint.unwrap().contains("ca_file"));
    }

    #[test]
    fn mqtt_refusal_codes_get_their_own_hints() {
        let s = judge_mqtt(&MqttOutcome::Refused("NotAuthorized".into()), "c");
        assert_eq!(s.verdict, Verdict::Fail);
        assert!(s.hint.unwrap().contains("password_file"));
        assert_eq!(s.detail["return_code"], "NotAuthorized");
    }

    #[test]
    fn the_state_dir_open_to_others_warns() {
        let f = |mode| {
            Ok(Some(FileFacts {
                mode,
                uid: 0,
                is_dir: true,
            }))
        };
        assert_eq!(
            judge_state_dir("/s", f(0o700), Some(0)).verdict,
            Verdict::Ok
        );
        assert_eq!(
            judge_state_dir("/s", f(0o755), Some(0)).verdict,
            Verdict::Warn
        );
        assert_eq!(judge_state_dir("/s", Ok(None), None).verdict, Verdict::Warn);
    }
}
