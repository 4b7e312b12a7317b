//! Whether the next report is extended (kind 11) or plain (kind 1): negotiated with the
//! controller, because one that predates PROTOCOL.md §17 drops extended reports and never
//! answers them (§17.6). Pure: time and the bundles accepted are inputs; the state is
//! persisted with the policy record so a restart neither probes an old controller again nor
//! forgets that the controller speaks policy.
//!
//! The rule (`extended_reports = "auto"`):
//! - send extended reports; a policy bundle (kind 10) accepted **confirms** the controller;
//! - fall back to plain reports when [`FALLBACK_AFTER`] extended reports in a row got no bundle
//!   and the first of them went at least the fallback span ago (the report interval, at most
//!   [`FALLBACK_SPAN_MAX`]) — so a controller or broker restart that loses a few reports does
//!   not cause it — or at once when a plain bundle (kind 2) is accepted after an extended
//!   report (the controller read the report but does not speak policy);
//! - after falling back, try extended reports again [`RETRY_EXTENDED_AFTER`] later, or at once
//!   when a bundle signed by another controller signing key is accepted (a new controller).

use std::fmt;

use licd_protocol::{KeyId, UnixTime};
use serde::{Deserialize, Serialize};

/// Extended reports in a row without an answer before falling back to plain reports.
pub const FALLBACK_AFTER: u32 = 3;
/// The unanswered extended reports must span the report interval, but never more than this
/// (seconds): a new device facing an old controller gets its first bundle within minutes.
pub const FALLBACK_SPAN_MAX: u64 = 600;
/// After falling back, extended reports are tried again this much later (seconds): an upgraded
/// controller is found within a day, an old one costs [`FALLBACK_AFTER`] lost reports a day.
pub const RETRY_EXTENDED_AFTER: u64 = 86_400;

/// The `[enforce] extended_reports` setting: `"auto"` (negotiated, the default), `true`
/// (always) or `false` (never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExtendedReports {
    /// Negotiated with the controller (module doc).
    #[default]
    Auto,
    /// Always extended (a controller known to speak §17).
    Always,
    /// Never: plain reports only.
    Never,
}

impl ExtendedReports {
    /// The name shown in status.
    pub fn name(self) -> &'static str {
        match self {
            ExtendedReports::Auto => "auto",
            ExtendedReports::Always => "always",
            ExtendedReports::Never => "never",
        }
    }
}

impl<'de> Deserialize<'de> for ExtendedReports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ExtendedReports;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\", true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    ExtendedReports::Always
                } else {
                    ExtendedReports::Never
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "auto" => Ok(ExtendedReports::Auto),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Why the report kind changed (the shell logs one line for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// A policy bundle was accepted: the controller speaks policy.
    Confirmed,
    /// Extended reports went unanswered: plain reports from now on.
    NoAnswer {
        /// Extended reports sent without a bundle.
        reports: u32,
        /// Seconds since the first of them.
        secs: u64,
    },
    /// A plain bundle was accepted after an extended report: plain reports from now on.
    PlainAnswer,
    /// Extended reports are tried again.
    Retry {
        /// A bundle from another controller signing key (else: [`RETRY_EXTENDED_AFTER`] passed).
        new_signer: bool,
    },
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Negotiated::Confirmed => f.write_str("the controller answered with a policy bundle: it speaks policy (extended reports)"),
            Negotiated::NoAnswer { reports, secs } => write!(
                f,
                "{reports} extended reports over {secs} s got no answer: the controller may predate policy; sending plain reports, trying again in 24 h"
            ),
            Negotiated::PlainAnswer => f.write_str(
                "the controller answered an extended report with a plain bundle: it does not speak policy; sending plain reports, trying again in 24 h",
            ),
            Negotiated::Retry { new_signer: true } => f.write_str(
                "a bundle from another controller signing key: trying extended reports again",
            ),
            Negotiated::Retry { new_signer: false } => {
                f.write_str("24 h since falling back to plain reports: trying extended reports again")
            }
        }
    }
}

/// The negotiation's state (persisted with the policy record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiation {
    /// A policy bundle was accepted since extended reports were last (re)tried.
    pub confirmed: bool,
    /// Plain reports since this time (`None`: extended reports).
    pub plain_since: Option<UnixTime>,
    /// The controller signing key of the bundle held when it fell back.
    pub plain_signer: Option<KeyId>,
    /// Extended reports sent since the last bundle accepted.
    pub unanswered: u32,
    /// When the first of them went.
    pub unanswered_since: UnixTime,
}

impl Negotiation {
    /// Decides the kind of the report about to go at `now` (`true`: extended) and counts it.
    /// `span` is the report interval (capped at [`FALLBACK_SPAN_MAX`] here), `held` the
    /// signing key of the bundle held. Returns a change to log (and persist) when the decision
    /// changed the mode.
    pub fn next_report(
        &mut self,
        mode: ExtendedReports,
        now: UnixTime,
        span: u64,
        held: Option<KeyId>,
    ) -> (bool, Option<Negotiated>) {
        let mut change = None;
        match mode {
            ExtendedReports::Never => return (false, None),
            ExtendedReports::Always => {}
            ExtendedReports::Auto => {
                if let Some(since) = self.plain_since {
                    if now < since.saturating_add(RETRY_EXTENDED_AFTER) {
                        return (false, None);
                    }
                    self.retry();
                    change = Some(Negotiated::Retry { new_signer: false });
                } else if self.unanswered >= FALLBACK_AFTER
                    && now.saturating_sub(self.unanswered_since) >= span.min(FALLBACK_SPAN_MAX)
                {
                    let secs = now.saturating_sub(self.unanswered_since);
                    let reports = self.unanswered;
                    self.fall_back(now, held);
                    return (false, Some(Negotiated::NoAnswer { reports, secs }));
                }
            }
        }
        if self.unanswered == 0 {
            self.unanswered_since = now;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        (true, change)
    }

    /// The report [`Negotiation::next_report`] counted could not be queued: it does not count.
    pub fn not_queued(&mut self, extended: bool) {
        if extended {
            self.unanswered = self.unanswered.saturating_sub(1);
        }
    }

    /// A bundle was accepted (`with_policy`: kind 10), signed by `signer`.
    pub fn bundle_accepted(
        &mut self,
        mode: ExtendedReports,
        with_policy: bool,
        signer: KeyId,
        now: UnixTime,
    ) -> Option<Negotiated> {
        let after_extended = self.unanswered > 0;
        self.unanswered = 0;
        if mode != ExtendedReports::Auto {
            return None;
        }
        if with_policy {
            let was = (self.confirmed, self.plain_since);
            self.confirmed = true;
            self.plain_since = None;
            self.plain_signer = None;
            return (was != (true, None)).then_some(Negotiated::Confirmed);
        }
        match self.plain_since {
            Some(_) => match self.plain_signer {
                Some(s) if s != signer => {
                    self.retry();
                    Some(Negotiated::Retry { new_signer: true })
                }
                _ => {
                    self.plain_signer = Some(signer);
                    None
                }
            },
            None if after_extended => {
                self.fall_back(now, Some(signer));
                Some(Negotiated::PlainAnswer)
            }
            // A plain bundle nobody asked for (an operator's change pushed before the first
            // report): it says nothing about the controller yet.
            None => None,
        }
    }

    /// Whether the next report would be extended (for status; no change).
    pub fn extended(&self, mode: ExtendedReports) -> bool {
        match mode {
            ExtendedReports::Never => false,
            ExtendedReports::Always => true,
            ExtendedReports::Auto => self.plain_since.is_none(),
        }
    }

    fn fall_back(&mut self, now: UnixTime, signer: Option<KeyId>) {
        self.confirmed = false;
        self.plain_since = Some(now);
        self.plain_signer = signer;
        self.unanswered = 0;
    }

    fn retry(&mut self) {
        self.plain_since = None;
        self.plain_signer = None;
        self.unanswered = 0;
    }
}
