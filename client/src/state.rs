//! The answers of the socket protocol as the client hands them out. The wire types are
//! `licd_core::api`'s (the daemon writes the same types), so the states, reasons and sources
//! here are the agent's own: a field renamed on one side is a compile error, not a value that
//! silently reads as missing. Unknown fields are ignored and a reason from a newer agent reads
//! as [`Reason::Other`]; a state the client cannot understand is refused.

use licd_core::api::{CheckAnswer, EventLine, WatchEvent};
use serde_json::Value;

pub use licd_core::enforce::{Reason, ServiceState as State};
pub use licd_core::status::Source;

use crate::{ClientError, API_VERSION};

fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ClientError> {
    T::deserialize(v).map_err(|e| ClientError::Protocol(format!("{e} in {v}")))
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
        let a: CheckAnswer = parse(v)?;
        Ok(Self {
            service: a.service,
            state: a.state,
            source: a.source,
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
        let line: EventLine = parse(v)?;
        Ok(match line.event {
            WatchEvent::Changed(e) => Event::Changed {
                service: e.service,
                state: e.state,
            },
            WatchEvent::Lagged { missed } => Event::Lagged { missed },
        })
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

    fn answer(state: Value) -> Value {
        let mut v = json!({"v":1,"ok":true,"service":"wifi","may_run":true});
        v.as_object_mut()
            .unwrap()
            .extend(state.as_object().unwrap().clone());
        v
    }

    #[test]
    fn grace_may_run_and_unlicensed_may_not() {
        let g = answer(json!({"state":"grace","until":5,"reason":"lease_expired"}));
        let u = answer(json!({"state":"unlicensed","reason":"revoked"}));
        assert!(Verdict::from_json(&g).unwrap().state.may_run());
        assert_eq!(
            Verdict::from_json(&u).unwrap().state,
            State::Unlicensed {
                reason: Reason::Revoked
            }
        );
        assert!(!Verdict::from_json(&u).unwrap().state.may_run());
    }

    #[test]
    fn an_unknown_reason_reads_as_other_but_an_unknown_state_is_refused() {
        let v = answer(json!({"state":"unlicensed","reason":"moon_phase"}));
        assert_eq!(
            Verdict::from_json(&v).unwrap().state.reason(),
            Some(Reason::Other)
        );
        let v = answer(json!({"state":"maybe"}));
        assert!(matches!(
            Verdict::from_json(&v),
            Err(ClientError::Protocol(_))
        ));
        let v = answer(json!({"state":"licensed"}));
        assert!(
            matches!(Verdict::from_json(&v), Err(ClientError::Protocol(_))),
            "a licensed answer without its deadline is refused"
        );
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
