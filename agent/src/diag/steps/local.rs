//! The local judges: state directory, device key, identity, clock, daemon, cache and signer
//! certificate, and every service — verdicts over facts read on this machine. (The config step
//! has no judge: loading it is the verdict, in [`crate::diag`].)

use licd_protocol::UnixTime;
use serde::Serialize;
use serde_json::{json, Value};

use super::{human_duration, Step, Verdict, CERT_WARN_BEFORE};
use crate::enforce::{Reason, ServiceState, ServiceStatus};
use crate::identity::{FingerprintFact, HostFingerprint};
use crate::status::fmt_time;

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
        Reason::Released => {
            "given back with licd release: import a newer grant file to use it again"
        }
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
        ServiceState::NonCompliant { reason } => Step::new(
            &id,
            &title,
            Verdict::Warn,
            format!(
                "NON-COMPLIANT (advisory policy: keeps running): {}",
                reason.describe()
            ),
        )
        .hint(hint_for(reason)),
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
            strategy: None,
            term_ends_at: None,
            warnings: vec![],
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
