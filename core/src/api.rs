//! The local API's messages as types: what a client sends on the agent's unix socket and every
//! line the agent answers. The daemon serialises these, `licd-client` (and through it liblicd)
//! deserialises them, so a renamed field is a compile error on both sides, not an empty value.
//!
//! The transport (one JSON object per line, at most [`MAX_REQUEST_LEN`] bytes per request) is
//! the daemon's and the client's; docs/OPERATIONS.md describes the protocol for other clients.
//!
//! ```text
//! → {"v":1,"op":"check","service":"wifi-ap"}
//! ← {"v":1,"ok":true,"service":"wifi-ap","state":"licensed","until":1800003600,"may_run":true,"source":"daemon"}
//! → {"v":1,"op":"status"}
//! ← {"v":1,"ok":true,"status":{…}}
//! → {"v":1,"op":"watch"}
//! ← {"v":1,"ok":true,"watching":true}
//! ← {"v":1,"event":"changed","service":"wifi-ap","state":"grace","until":…,"reason":"lease_expired"}
//! ← {"v":1,"event":"lagged","missed":3}
//! ← {"v":1,"ok":false,"error":"…"}         (any refused request; the connection stays open)
//! → {"v":1,"op":"request","services":["wifi-ap"]}          (licensing by file)
//! ← {"v":1,"ok":true,"message":"…","file":"<base64 of the signed request>"}
//! → {"v":1,"op":"import","file":"<base64 of the file, binary or armored>"}
//! ← {"v":1,"ok":true,"message":"imported grant seq 7 …"}
//! ← {"v":1,"ok":false,"error":"…","code":"stale"}
//! → {"v":1,"op":"release","services":["poe-plus"]}
//! ← {"v":1,"ok":true,"message":"…","file":"<base64 of the signed receipt>"}
//! ```

use serde::{Deserialize, Serialize};

use crate::enforce::ServiceState;
use crate::status::Source;

/// Version of the socket protocol; a client refuses a higher major version.
pub const API_VERSION: u32 = 1;
/// Longest request line the agent accepts.
pub const MAX_REQUEST_LEN: usize = 4096;
/// Longest `import` request line: the largest armored file in base64 and its JSON frame
/// (every other request stays within [`MAX_REQUEST_LEN`]).
pub const MAX_IMPORT_REQUEST_LEN: usize = 128 * 1024;

fn one() -> u32 {
    1
}

/// A request line: the protocol version and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version the client speaks (1 when absent: the first clients did not send it).
    #[serde(default = "one")]
    pub v: u32,
    /// What is asked.
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    /// A request for `op` at this crate's [`API_VERSION`].
    pub fn new(op: Op) -> Self {
        Self { v: API_VERSION, op }
    }
}

/// The operations of the local API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// May `service` run?
    Check {
        /// The service, e.g. `wifi-ap`.
        service: String,
    },
    /// The whole status.
    Status,
    /// Stream state changes on this connection until it closes.
    Watch,
    /// Write a signed activation request (licensing by file) for `services` (the configured
    /// services when empty); the answer's `file` is its base64.
    Request {
        /// Services to ask for.
        #[serde(default)]
        services: Vec<String>,
    },
    /// Import a grant file or trust statement: `file` is the base64 of its bytes (binary or
    /// armored).
    Import {
        /// The file, base64.
        file: String,
    },
    /// Give `services` back; the answer's `file` is the base64 of the signed release receipt.
    Release {
        /// Services to release.
        services: Vec<String>,
    },
}

/// The answer to `request`, `import` or `release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAnswer {
    /// Protocol version.
    pub v: u32,
    /// Always true.
    pub ok: bool,
    /// What happened, for a person (one line).
    pub message: String,
    /// The file to write (base64 of the signed envelope), for `request` and `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl FileAnswer {
    /// An answer saying `message`, with `file` to write when there is one.
    pub fn new(message: impl Into<String>, file: Option<String>) -> Self {
        Self {
            v: API_VERSION,
            ok: true,
            message: message.into(),
            file,
        }
    }
}

/// The answer to a `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// Protocol version.
    pub v: u32,
    /// Always true (refusals are [`ErrorAnswer`]s).
    pub ok: bool,
    /// The service asked about.
    pub service: String,
    /// Its state, flattened: `state`, `until`, `reason`.
    #[serde(flatten)]
    pub state: ServiceState,
    /// Licensed or in grace.
    pub may_run: bool,
    /// The daemon, or its cache read by a client when no daemon answered. Answers without a
    /// source predate the field and came from the daemon.
    #[serde(default = "daemon")]
    pub source: Source,
    /// The grant's expiry strategy (`restrict`, `advisory`, `immediate`) when granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The grant's term end when granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_ends_at: Option<licd_protocol::UnixTime>,
    /// Warnings on a service that may run (overage, expiring soon, non-compliant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::enforce::Warning>,
}

fn daemon() -> Source {
    Source::Daemon
}

impl CheckAnswer {
    /// The answer for `service` in `state`, decided by `source`.
    pub fn new(service: &str, state: ServiceState, source: Source) -> Self {
        Self {
            v: API_VERSION,
            ok: true,
            service: service.to_owned(),
            may_run: state.may_run(),
            state,
            source,
            strategy: None,
            term_ends_at: None,
            warnings: Vec::new(),
        }
    }

    /// Adds the policy facts of `status` (strategy, term end, warnings).
    pub fn with_policy(mut self, status: &crate::enforce::ServiceStatus) -> Self {
        self.strategy = status.strategy.map(str::to_owned);
        self.term_ends_at = status.term_ends_at;
        self.warnings = status.warnings.clone();
        self
    }
}

/// The answer to a `status`: `status` is a [`crate::status::Status`] on the agent's side; a
/// client may read it as any type that deserialises from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer<S> {
    /// Protocol version.
    pub v: u32,
    /// Always true.
    pub ok: bool,
    /// The status.
    pub status: S,
}

impl<S> StatusAnswer<S> {
    /// The answer carrying `status`.
    pub fn new(status: S) -> Self {
        Self {
            v: API_VERSION,
            ok: true,
            status,
        }
    }
}

/// The first answer to a `watch`; events follow on the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAck {
    /// Protocol version.
    pub v: u32,
    /// Always true.
    pub ok: bool,
    /// Always true.
    pub watching: bool,
}

impl Default for WatchAck {
    fn default() -> Self {
        Self {
            v: API_VERSION,
            ok: true,
            watching: true,
        }
    }
}

/// A refused request; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// Protocol version.
    pub v: u32,
    /// Always false.
    pub ok: bool,
    /// Why, for a person.
    pub error: String,
    /// A stable short code for refusals that have one (an `import` refused: `stale`,
    /// `not_requested`, `bad_armor`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ErrorAnswer {
    /// A refusal saying `error`.
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self {
            v: API_VERSION,
            ok: false,
            error: error.to_string(),
            code: None,
        }
    }

    /// A refusal saying `error`, with its `code`.
    pub fn with_code(error: impl std::fmt::Display, code: &str) -> Self {
        Self {
            code: Some(code.to_owned()),
            ..Self::new(error)
        }
    }
}

/// A state change, as streamed to watchers and handed to hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The service.
    pub service: String,
    /// The new state, flattened: `state`, `until`, `reason`.
    #[serde(flatten)]
    pub state: ServiceState,
}

/// One line a watcher receives after the [`WatchAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// Protocol version.
    pub v: u32,
    /// The event.
    #[serde(flatten)]
    pub event: WatchEvent,
}

impl EventLine {
    /// The line carrying `event`.
    pub fn new(event: WatchEvent) -> Self {
        Self {
            v: API_VERSION,
            event,
        }
    }
}

/// What a watcher is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// A service changed state.
    Changed(Event),
    /// The watcher fell behind and `missed` events were dropped: re-read the states.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::enforce::Reason;

    #[test]
    fn requests_read_as_documented_and_v_defaults_to_one() {
        let r: Request =
            serde_json::from_value(json!({"v":1,"op":"check","service":"wifi-ap"})).unwrap();
        assert_eq!(
            r.op,
            Op::Check {
                service: "wifi-ap".into()
            }
        );
        let r: Request = serde_json::from_value(json!({"op":"status"})).unwrap();
        assert_eq!((r.v, r.op), (1, Op::Status));
        assert!(serde_json::from_value::<Request>(json!({"op":"check"})).is_err());
        assert!(serde_json::from_value::<Request>(json!({"op":"reboot"})).is_err());
    }

    #[test]
    fn a_check_answer_is_the_documented_line() {
        let a = CheckAnswer::new(
            "wifi-ap",
            ServiceState::Grace {
                until: 7,
                reason: Reason::LeaseExpired,
            },
            Source::Cache,
        );
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"v":1,"ok":true,"service":"wifi-ap","state":"grace","until":7,
                   "reason":"lease_expired","may_run":true,"source":"cache"})
        );
        let back: CheckAnswer = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn a_non_compliant_answer_may_run_and_carries_its_policy_and_warnings() {
        let status = crate::enforce::ServiceStatus {
            service: licd_protocol::ServiceName::new("ids").unwrap(),
            state: ServiceState::NonCompliant {
                reason: Reason::TermEnded,
            },
            license: None,
            strategy: Some("advisory"),
            term_ends_at: Some(900),
            warnings: vec![crate::enforce::Warning::NonCompliant {
                reason: Reason::TermEnded,
            }],
        };
        let a = CheckAnswer::new("ids", status.state, Source::Daemon).with_policy(&status);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"v":1,"ok":true,"service":"ids","state":"non_compliant","reason":"term_ended",
                   "may_run":true,"source":"daemon","strategy":"advisory","term_ends_at":900,
                   "warnings":[{"warning":"non_compliant","reason":"term_ended"}]})
        );
        let back: CheckAnswer = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn events_are_the_documented_lines() {
        let changed = EventLine::new(WatchEvent::Changed(Event {
            service: "wifi".into(),
            state: ServiceState::Unlicensed {
                reason: Reason::Revoked,
            },
        }));
        assert_eq!(
            serde_json::to_value(&changed).unwrap(),
            json!({"v":1,"event":"changed","service":"wifi","state":"unlicensed","reason":"revoked"})
        );
        let lagged = EventLine::new(WatchEvent::Lagged { missed: 3 });
        assert_eq!(
            serde_json::to_value(&lagged).unwrap(),
            json!({"v":1,"event":"lagged","missed":3})
        );
        for line in [changed, lagged] {
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(serde_json::from_str::<EventLine>(&text).unwrap(), line);
        }
    }
}
