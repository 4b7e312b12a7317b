//! The pure half of `licd diag`: facts in, a [`Step`] (verdict, figure, hint) out. The probes
//! (the local ones in [`super`], the network ones in [`super::net`]) gather the facts; nothing
//! here touches files, clocks or the network, so every verdict is unit-tested with made-up
//! facts.
//!
//! This file holds what every judge shares (the verdict, the step, figure formatting); the
//! judges live in [`local`] (state directory, key, identity, clock, daemon, cache, services)
//! and [`network`] (DNS, TCP, TLS, MQTT, the retained bundle, the round trip), and
//! are re-exported here, so callers name them `steps::judge_*`.

mod local;
mod network;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use local::{
    judge_cache, judge_clock, judge_daemon, judge_identity, judge_key, judge_service,
    judge_state_dir, CacheFacts, FileFacts, NtpSync, RecordedIdentity,
};
pub use network::{
    judge_dns, judge_mqtt, judge_retained, judge_round_trip, judge_tcp, judge_tls, BundleSeen,
    MqttOutcome, TcpOutcome, TlsFacts, TlsFailure,
};

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

/// How long before a signer certificate ends diag starts warning.
pub const CERT_WARN_BEFORE: u64 = 30 * 86_400;
