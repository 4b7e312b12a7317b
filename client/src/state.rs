//! The answers of the socket protocol as types, and their parsing from the agent's JSON lines.
//! Parsing is strict about what a decision rests on (`state`, `until`) and lenient about
//! what may grow (an unknown reason is kept as text, unknown fields are ignored).

use std::fmt;

use serde_json::Value;

use crate::{ClientError, API_VERSION};

/// Why a service is in grace or unlicensed (the agent's `reason`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No bundle has ever granted it.
    NeverGranted,
    /// The controller has not renewed the lease in time.
    LeaseExpired,
    /// The entitlement term ended.
    TermEnded,
    /// The entitlement term has not started yet.
    NotYetValid,
    /// The host runs more VMs than the license covers.
    OverVmAllowance,
    /// No longer granted: a newer bundle left it out, or the bundle that granted it was
    /// dropped because its signer stopped being trusted.
    Revoked,
    /// The controller has no entitlement for it.
    NotEntitled,
    /// The controller paused assignment: fewer seats than devices.
    SeatsExhausted,
    /// An operator removed the license from this device.
    Unassigned,
    /// The controller does not know this device's tenant.
    UnknownTenant,
    /// A reason this client does not know (a newer agent), as the agent spelled it.
    Other(String),
}

impl Reason {
    /// Parses the agent's snake_case name; unknown names become [`Reason::Other`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "never_granted" => Reason::NeverGranted,
            "lease_expired" => Reason::LeaseExpired,
            "term_ended" => Reason::TermEnded,
            "not_yet_valid" => Reason::NotYetValid,
            "over_vm_allowance" => Reason::OverVmAllowance,
            "revoked" => Reason::Revoked,
            "not_entitled" => Reason::NotEntitled,
            "seats_exhausted" => Reason::SeatsExhausted,
            "unassigned" => Reason::Unassigned,
            "unknown_tenant" => Reason::UnknownTenant,
            other => Reason::Other(other.to_owned()),
        }
    }

    /// The agent's snake_case name.
    pub fn name(&self) -> &str {
        match self {
            Reason::NeverGranted => "never_granted",
            Reason::LeaseExpired => "lease_expired",
            Reason::TermEnded => "term_ended",
            Reason::NotYetValid => "not_yet_valid",
            Reason::OverVmAllowance => "over_vm_allowance",
            Reason::Revoked => "revoked",
            Reason::NotEntitled => "not_entitled",
            Reason::SeatsExhausted => "seats_exhausted",
            Reason::Unassigned => "unassigned",
            Reason::UnknownTenant => "unknown_tenant",
            Reason::Other(s) => s,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a service may run, as the agent decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Licensed until `until` (unix seconds: the earlier of lease end and term end).
    Licensed {
        /// When the license needs renewal or the term ends.
        until: u64,
    },
    /// Still allowed to run until `until`, because of `reason`.
    Grace {
        /// End of grace (unix seconds).
        until: u64,
        /// What started the grace period.
        reason: Reason,
    },
    /// Not allowed to run.
    Unlicensed {
        /// Why.
        reason: Reason,
    },
}

impl State {
    /// Licensed or in grace: the service may run.
    pub fn may_run(&self) -> bool {
        !matches!(self, State::Unlicensed { .. })
    }

    /// `licensed`, `grace` or `unlicensed`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Licensed { .. } => "licensed",
            State::Grace { .. } => "grace",
            State::Unlicensed { .. } => "unlicensed",
        }
    }

    /// The deadline, if the state has one.
    pub fn until(&self) -> Option<u64> {
        match self {
            State::Licensed { until } | State::Grace { until, .. } => Some(*until),
            State::Unlicensed { .. } => None,
        }
    }

    /// The reason, if the state has one.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            State::Licensed { .. } => None,
            State::Grace { reason, .. } | State::Unlicensed { reason } => Some(reason),
        }
    }

    /// Parses the `state`/`until`/`reason` fields of a check answer or event.
    pub(crate) fn from_json(v: &Value) -> Result<Self, ClientError> {
        let until = || {
            v["until"]
                .as_u64()
                .ok_or_else(|| ClientError::Protocol(format!("no \"until\" in {v}")))
        };
        let reason = || {
            v["reason"]
                .as_str()
                .map(Reason::from_name)
                .ok_or_else(|| ClientError::Protocol(format!("no \"reason\" in {v}")))
        };
        match v["state"].as_str() {
            Some("licensed") => Ok(State::Licensed { until: until()? }),
            Some("grace") => Ok(State::Grace {
                until: until()?,
                reason: reason()?,
            }),
            Some("unlicensed") => Ok(State::Unlicensed { reason: reason()? }),
            Some(other) => Err(ClientError::Protocol(format!("unknown state {other:?}"))),
            None => Err(ClientError::Protocol(format!("no \"state\" in {v}"))),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Licensed { until } => write!(f, "licensed until {until}"),
            State::Grace { until, reason } => write!(f, "grace until {until} ({reason})"),
            State::Unlicensed { reason } => write!(f, "unlicensed ({reason})"),
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running agent.
    Daemon,
    /// The agent's cache, evaluated read-only because no agent answered.
    Cache,
}

/// A whole check answer: the state and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The service asked about.
    pub service: String,
    /// Its state.
    pub state: State,
    /// Who decided.
    pub source: Source,
}

impl Verdict {
    /// Parses a check answer (already checked for version and `ok`).
    pub(crate) fn from_json(v: &Value) -> Result<Self, ClientError> {
        let source = match v["source"].as_str() {
            Some("cache") => Source::Cache,
            // Answers without a source predate the field and came from the daemon.
            Some("daemon") | None => Source::Daemon,
            Some(other) => return Err(ClientError::Protocol(format!("unknown source {other:?}"))),
        };
        Ok(Self {
            service: v["service"].as_str().unwrap_or_default().to_owned(),
            state: State::from_json(v)?,
            source,
        })
    }
}

/// Something a [`crate::Watch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A service changed state.
    Changed {
        /// The service.
        service: String,
        /// Its new state.
        state: State,
    },
    /// The watcher fell behind and `missed` events were dropped by the agent: re-read the
    /// state of the services you care about.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

impl Event {
    /// Parses one event line (already checked for version).
    pub(crate) fn from_json(v: &Value) -> Result<Self, ClientError> {
        match v["event"].as_str() {
            Some("changed") => Ok(Event::Changed {
                service: v["service"]
                    .as_str()
                    .ok_or_else(|| ClientError::Protocol(format!("no \"service\" in {v}")))?
                    .to_owned(),
                state: State::from_json(v)?,
            }),
            Some("lagged") => Ok(Event::Lagged {
                missed: v["missed"].as_u64().unwrap_or(0),
            }),
            Some(other) => Err(ClientError::Protocol(format!("unknown event {other:?}"))),
            None => Err(ClientError::Protocol(format!("no \"event\" in {v}"))),
        }
    }
}

/// Checks the version of an answer line: a higher major version is refused, a missing one is
/// malformed.
pub(crate) fn check_version(v: &Value) -> Result<(), ClientError> {
    match v["v"].as_u64() {
        Some(agent) if agent > u64::from(API_VERSION) => Err(ClientError::UnsupportedVersion {
            agent,
            supported: API_VERSION,
        }),
        Some(_) => Ok(()),
        None => Err(ClientError::Protocol(format!("no version \"v\" in {v}"))),
    }
}

/// Checks version and `ok` of a request's answer.
pub(crate) fn check_answer(v: &Value) -> Result<(), ClientError> {
    check_version(v)?;
    match v["ok"].as_bool() {
        Some(true) => Ok(()),
        Some(false) => Err(ClientError::Refused(
            v["error"].as_str().unwrap_or("no message").to_owned(),
        )),
        None => Err(ClientError::Protocol(format!("no \"ok\" in {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_licensed_answer_parses_with_its_deadline_and_source() {
        let v = json!({"v":1,"ok":true,"service":"wifi","state":"licensed","until":1800,
                       "may_run":true,"source":"daemon"});
        check_answer(&v).unwrap();
        let verdict = Verdict::from_json(&v).unwrap();
        assert_eq!(verdict.state, State::Licensed { until: 1800 });
        assert_eq!(verdict.source, Source::Daemon);
        assert!(verdict.state.may_run());
    }

    #[test]
    fn grace_may_run_and_unlicensed_may_not() {
        let g = json!({"state":"grace","until":5,"reason":"lease_expired"});
        let u = json!({"state":"unlicensed","reason":"revoked"});
        assert!(State::from_json(&g).unwrap().may_run());
        assert_eq!(
            State::from_json(&u).unwrap(),
            State::Unlicensed {
                reason: Reason::Revoked
            }
        );
        assert!(!State::from_json(&u).unwrap().may_run());
    }

    #[test]
    fn an_unknown_reason_is_kept_but_an_unknown_state_is_refused() {
        let v = json!({"state":"unlicensed","reason":"moon_phase"});
        assert_eq!(
            State::from_json(&v).unwrap().reason(),
            Some(&Reason::Other("moon_phase".into()))
        );
        let v = json!({"state":"maybe"});
        assert!(matches!(
            State::from_json(&v),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn a_newer_major_version_is_refused_with_both_versions() {
        let v = json!({"v":2,"ok":true});
        match check_answer(&v) {
            Err(ClientError::UnsupportedVersion { agent, supported }) => {
                assert_eq!((agent, supported), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_answer(&json!({"ok":true})),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn a_refusal_carries_the_agents_message() {
        let v = json!({"v":1,"ok":false,"error":"check needs \"service\""});
        match check_answer(&v) {
            Err(ClientError::Refused(m)) => assert!(m.contains("needs")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_reason_name_round_trips() {
        for name in [
            "never_granted",
            "lease_expired",
            "term_ended",
            "not_yet_valid",
            "over_vm_allowance",
            "revoked",
            "not_entitled",
            "seats_exhausted",
            "unassigned",
            "unknown_tenant",
        ] {
            let r = Reason::from_name(name);
            assert!(!matches!(r, Reason::Other(_)), "{name}");
            assert_eq!(r.name(), name);
        }
    }

    #[test]
    fn events_parse() {
        let v = json!({"v":1,"event":"changed","service":"wifi","state":"unlicensed",
                       "reason":"revoked"});
        assert_eq!(
            Event::from_json(&v).unwrap(),
            Event::Changed {
                service: "wifi".into(),
                state: State::Unlicensed {
                    reason: Reason::Revoked
                }
            }
        );
        let v = json!({"v":1,"event":"lagged","missed":7});
        assert_eq!(Event::from_json(&v).unwrap(), Event::Lagged { missed: 7 });
    }
}
