//! Refused messages, whatever topic they arrived on: counted in status per topic, and logged
//! through one limiter.
//!
//! Everything the agent subscribes to can carry junk: its grants topic, the two trust topics
//! (and anything else under `licd/v1/trust/+`), its diag-request topic. Every refusal is
//! counted ([`RefusalStats`], in `licd status`), and [`RefusalLimiter`] decides which are
//! logged at warn level: the first of each topic, then at most one per topic per period with
//! the number held back since; the rest go to debug level. A flood on one topic therefore
//! costs a few log lines, and cannot hide the first refusal on another.
//!
//! Pure: the limiter takes the time since boot as an argument.

use std::time::Duration;

use licd_protocol::UnixTime;
use serde::Serialize;

/// Where a refused message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The device's grants topic.
    Grants,
    /// A trust topic (root rotations, revocation lists).
    Trust,
    /// The device's diag-request topic.
    DiagRequest,
    /// Any other topic a subscription matched (e.g. `licd/v1/trust/<unknown>`).
    Other,
}

impl Channel {
    const COUNT: usize = 4;

    fn index(self) -> usize {
        match self {
            Channel::Grants => 0,
            Channel::Trust => 1,
            Channel::DiagRequest => 2,
            Channel::Other => 3,
        }
    }

    /// What is refused, for the log line.
    pub fn what(self) -> &'static str {
        match self {
            Channel::Grants => "grant bundle refused; license state unchanged",
            Channel::Trust => "trust message refused; trust unchanged",
            Channel::DiagRequest => "diagnostic request refused; not answered",
            Channel::Other => "message on an unexpected topic refused; ignored",
        }
    }
}

/// Refused messages per topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TopicCounts {
    /// On the grants topic (bundles, including a held bundle dropped after a trust change).
    pub grants: u64,
    /// On the trust topics.
    pub trust: u64,
    /// On the diag-request topic.
    pub diag_request: u64,
    /// On any other topic.
    pub other: u64,
}

/// Counts of refused messages, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefusalStats {
    /// Messages refused since start, all topics.
    pub total: u64,
    /// The same, per topic.
    pub by_topic: TopicCounts,
    /// Topic of the last refusal.
    pub last_topic: Option<Channel>,
    /// Code of the last refusal.
    pub last_code: Option<&'static str>,
    /// Message of the last refusal.
    pub last_message: Option<String>,
    /// When it happened.
    pub last_at: Option<UnixTime>,
}

impl RefusalStats {
    /// Counts one refusal.
    pub fn count(&mut self, channel: Channel, code: &'static str, message: String, now: UnixTime) {
        self.total += 1;
        let slot = match channel {
            Channel::Grants => &mut self.by_topic.grants,
            Channel::Trust => &mut self.by_topic.trust,
            Channel::DiagRequest => &mut self.by_topic.diag_request,
            Channel::Other => &mut self.by_topic.other,
        };
        *slot += 1;
        self.last_topic = Some(channel);
        self.last_code = Some(code);
        self.last_message = Some(message);
        self.last_at = Some(now);
    }
}

/// How to log one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// At warn level, saying how many refusals on the same topic were held back since the
    /// last warning.
    Warn {
        /// Refusals logged at debug level since.
        suppressed: u64,
    },
    /// At debug level.
    Debug,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    warned_at: Option<Duration>,
    suppressed: u64,
}

/// The one rate limit on refusal warnings (see the module docs).
#[derive(Debug, Clone)]
pub struct RefusalLimiter {
    every: Duration,
    slots: [Slot; Channel::COUNT],
}

impl RefusalLimiter {
    /// At most one warning per topic per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            slots: [Slot::default(); Channel::COUNT],
        }
    }

    /// How to log a refusal on `channel` at time since boot `boot`.
    pub fn decide(&mut self, channel: Channel, boot: Duration) -> LogLevel {
        let slot = &mut self.slots[channel.index()];
        let due = slot
            .warned_at
            .is_none_or(|at| boot.saturating_sub(at) >= self.every);
        if due {
            slot.warned_at = Some(boot);
            LogLevel::Warn {
                suppressed: std::mem::take(&mut slot.suppressed),
            }
        } else {
            slot.suppressed += 1;
            LogLevel::Debug
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Channel; 4] = [
        Channel::Grants,
        Channel::Trust,
        Channel::DiagRequest,
        Channel::Other,
    ];

    #[test]
    fn a_flood_on_every_topic_warns_once_per_topic_per_period_and_counts_all() {
        let every = Duration::from_secs(10);
        let mut limiter = RefusalLimiter::new(every);
        let mut stats = RefusalStats::default();
        let mut warnings = 0u64;
        let mut suppressed_reported = 0u64;
        // 1,000 refusals per topic per second for 35 s.
        for ms in 0..35_000u64 {
            for channel in ALL {
                stats.count(channel, "malformed", "junk".into(), ms / 1000);
                match limiter.decide(channel, Duration::from_millis(ms)) {
                    LogLevel::Warn { suppressed } => {
                        warnings += 1;
                        suppressed_reported += suppressed;
                    }
                    LogLevel::Debug => {}
                }
            }
        }
        // At 0, 10, 20 and 30 s on each of the four topics.
        assert_eq!(warnings, 16);
        assert_eq!(stats.total, 4 * 35_000);
        assert_eq!(stats.by_topic.grants, 35_000);
        assert_eq!(stats.by_topic.trust, 35_000);
        assert_eq!(stats.by_topic.diag_request, 35_000);
        assert_eq!(stats.by_topic.other, 35_000);
        assert_eq!(stats.last_topic, Some(Channel::Other));
        // Every refusal is either warned or reported as held back by a later warning, except
        // the tail after the last warning.
        assert_eq!(warnings + suppressed_reported, 4 * 30_001);
    }

    #[test]
    fn a_flood_on_one_topic_does_not_hide_the_first_refusal_on_another() {
        let mut limiter = RefusalLimiter::new(Duration::from_secs(10));
        let t = Duration::from_secs(100);
        assert_eq!(
            limiter.decide(Channel::Trust, t),
            LogLevel::Warn { suppressed: 0 }
        );
        for _ in 0..1_000 {
            assert_eq!(limiter.decide(Channel::Trust, t), LogLevel::Debug);
        }
        assert_eq!(
            limiter.decide(Channel::Grants, t),
            LogLevel::Warn { suppressed: 0 }
        );
        assert_eq!(
            limiter.decide(Channel::Trust, t + Duration::from_secs(10)),
            LogLevel::Warn { suppressed: 1_000 }
        );
    }
}
