//! The report schedule: when the agent tells the controller about itself. Pure, driven by the
//! trusted time the enforcer is handed; the shell only carries out the [`super::Effect::Report`]
//! it returns and wakes at [`ReportSchedule::next`].
//!
//! Rules (they were the daemon shell's before; `docs/OPERATIONS.md` describes them to users):
//! - on connecting, report at once (the controller answers with a bundle);
//! - no more than the report interval passes between two reports while connected;
//! - a report the controller answered (a bundle was accepted since) is followed by the next one
//!   at the bundle's `refresh_after`, never sooner than [`MIN_REPORT_GAP`] nor later than the
//!   report interval;
//! - an unanswered report is retried after [`FIRST_REPORT_RETRY`], doubling up to
//!   [`MAX_REPORT_RETRY`] (or the interval, if shorter);
//! - every delay loses 0–10 % to jitter (whole seconds), so a fleet given the same
//!   `refresh_after` does not report in lockstep;
//! - a report wanted for a cause (grace started, VM count changed, …) goes at once, unless the
//!   last one went less than [`MIN_REPORT_GAP`] ago: then it goes when the gap has passed. So no
//!   two reports are ever closer than the gap, whatever the inputs;
//! - while disconnected nothing is scheduled and causes are dropped: the report sent on
//!   connecting carries the state as it is then.

use licd_protocol::UnixTime;

use super::ReportCause;

/// First retry of a report nobody answered, seconds; doubles up to the report interval. Short,
/// because the usual cause is benign: after a broker restart, reports sent before the
/// controller has re-subscribed are lost (the fleet simulator measured 10,000 agents waiting
/// out a 30 s retry).
pub const FIRST_REPORT_RETRY: u64 = 5;
/// Longest wait before an unanswered report is retried, seconds. Without it the retry doubled
/// up to the report interval (an hour by default), so a device whose answer was lost — a QoS 0
/// bundle dropped by a busy broker node, a controller failing over mid-publish — waited up to
/// that hour: at 50,000 agents on a nats-server cluster, 72 stragglers did. A fleet whose
/// controller is down then reports once per 5 minutes per device instead of once per hour,
/// jittered: 50,000 devices are ~170 small messages/s, which a broker takes in its stride.
pub const MAX_REPORT_RETRY: u64 = 300;
/// Reports are never closer together than this many seconds, whatever a bundle's
/// `refresh_after` says or how many causes come up.
pub const MIN_REPORT_GAP: u64 = 2;
/// The report interval when none is configured (the config's default).
pub const DEFAULT_REPORT_INTERVAL: u64 = 3_600;

/// The schedule's parameters, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportPolicy {
    /// Longest time between two reports while connected (the config's report interval).
    pub interval: u64,
    /// See [`FIRST_REPORT_RETRY`].
    pub first_retry: u64,
    /// See [`MAX_REPORT_RETRY`].
    pub max_retry: u64,
    /// See [`MIN_REPORT_GAP`].
    pub min_gap: u64,
}

impl ReportPolicy {
    /// The default retry and gap, with `interval` (seconds) as the report interval.
    pub fn with_interval(interval: u64) -> Self {
        Self {
            interval,
            ..Self::default()
        }
    }
}

impl Default for ReportPolicy {
    fn default() -> Self {
        Self {
            interval: DEFAULT_REPORT_INTERVAL,
            first_retry: FIRST_REPORT_RETRY,
            max_retry: MAX_REPORT_RETRY,
            min_gap: MIN_REPORT_GAP,
        }
    }
}

/// When the next report goes, and what the schedule needs to know to decide it.
#[derive(Debug, Clone)]
pub struct ReportSchedule {
    policy: ReportPolicy,
    connected: bool,
    /// Reports sent since the last accepted bundle (the retry doubles with each).
    unanswered: u32,
    /// When the next report is due (`None`: disconnected).
    next: Option<UnixTime>,
    /// When the last report went (the gap counts from it, across reconnects).
    last_sent: Option<UnixTime>,
    /// `(last_sent, unanswered)` before the last report, for [`ReportSchedule::not_queued`].
    undo: Option<(Option<UnixTime>, u32)>,
    /// A cause held back by the gap; it goes at `next`.
    pending: Option<ReportCause>,
    /// xorshift64 state for the jitter (seeded by the shell: randomness is an input).
    rng: u64,
}

impl ReportSchedule {
    /// A disconnected schedule; `seed` drives the jitter (any value, 0 included).
    pub fn new(policy: ReportPolicy, seed: u64) -> Self {
        Self {
            policy,
            connected: false,
            unanswered: 0,
            next: None,
            last_sent: None,
            undo: None,
            pending: None,
            // xorshift has one fixed point, 0.
            rng: seed | 1,
        }
    }

    /// The parameters in force.
    pub fn policy(&self) -> ReportPolicy {
        self.policy
    }

    /// When the next report is due (`None`: disconnected, nothing scheduled).
    pub fn next(&self) -> Option<UnixTime> {
        self.next
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Reports sent since the last accepted bundle.
    pub fn unanswered(&self) -> u32 {
        self.unanswered
    }

    /// The broker connection came up: the caller then asks for a report with
    /// [`ReportCause::Connected`].
    pub fn connect(&mut self) {
        self.connected = true;
    }

    /// The connection is down: nothing is scheduled until it is up again. The count of
    /// unanswered reports stays (a broker that drops every connection keeps the retry growing).
    pub fn disconnect(&mut self) {
        self.connected = false;
        self.next = None;
        self.pending = None;
        self.undo = None;
    }

    /// A bundle was accepted (the controller answered): the next report goes at `refresh`
    /// (the bundle's `refresh_after`), within the gap and the interval.
    pub fn answered(&mut self, now: UnixTime, refresh: Option<UnixTime>) {
        self.unanswered = 0;
        if self.connected {
            self.reschedule(now, refresh);
        }
    }

    /// Decides at `now` whether a report goes now, given the `causes` raised since the last
    /// call. Returns the causes of the report to send (empty: none; [`ReportCause::Scheduled`]
    /// when only the schedule asked). A returned report is counted as sent and the retry is
    /// scheduled; if the shell could not queue it, it calls [`ReportSchedule::not_queued`].
    pub fn poll(
        &mut self,
        now: UnixTime,
        mut causes: Vec<ReportCause>,
        refresh: Option<UnixTime>,
    ) -> Vec<ReportCause> {
        if !self.connected {
            return Vec::new();
        }
        if self.next.is_some_and(|t| now >= t) {
            let cause = self.pending.take().unwrap_or(ReportCause::Scheduled);
            if !causes.contains(&cause) {
                causes.insert(0, cause);
            }
        }
        if causes.is_empty() {
            return causes;
        }
        if let Some(last) = self.last_sent {
            let allowed = last.saturating_add(self.policy.min_gap);
            if now < allowed {
                // Too soon after the last report: it goes when the gap has passed.
                self.pending = self.pending.or(causes.first().copied());
                self.next = Some(self.next.map_or(allowed, |t| t.min(allowed)));
                return Vec::new();
            }
        }
        self.undo = Some((self.last_sent, self.unanswered));
        self.last_sent = Some(now);
        self.unanswered = self.unanswered.saturating_add(1);
        self.pending = None;
        self.reschedule(now, refresh);
        causes
    }

    /// The report [`ReportSchedule::poll`] returned could not be queued: it does not count as
    /// sent, and the next attempt follows the schedule as it was before it.
    pub fn not_queued(&mut self, now: UnixTime, refresh: Option<UnixTime>) {
        if let Some((last_sent, unanswered)) = self.undo.take() {
            self.last_sent = last_sent;
            self.unanswered = unanswered;
        }
        if self.connected {
            self.reschedule(now, refresh);
        }
    }

    /// The delay before the next report: to `refresh` when the last report was answered, else
    /// the retry for the number unanswered; then jitter.
    fn reschedule(&mut self, now: UnixTime, refresh: Option<UnixTime>) {
        let p = self.policy;
        let base = match refresh {
            Some(refresh) if self.unanswered == 0 => {
                refresh.saturating_sub(now).max(p.min_gap).min(p.interval)
            }
            _ => p
                .first_retry
                .saturating_mul(1 << self.unanswered.saturating_sub(1).min(16))
                .min(p.max_retry)
                .min(p.interval),
        };
        let jitter = base.saturating_mul(self.random() % 1_000) / 10_000;
        let mut at = now.saturating_add(base - jitter);
        if let Some(last) = self.last_sent {
            // Within the interval of the last report (a bundle answering late must not push
            // the next report past it), and never within the gap.
            at = at.min(last.saturating_add(p.interval));
            if self.pending.is_some() {
                // A cause held back by the gap goes as soon as the gap allows.
                at = at.min(last.saturating_add(p.min_gap));
            }
            at = at.max(last.saturating_add(p.min_gap));
        }
        self.next = Some(at);
    }

    fn random(&mut self) -> u64 {
        // xorshift64 (Marsaglia 2003): jitter needs spread, not secrecy.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: UnixTime = 1_800_000_000;

    fn connected(policy: ReportPolicy, seed: u64) -> ReportSchedule {
        let mut s = ReportSchedule::new(policy, seed);
        s.connect();
        s
    }

    #[test]
    fn connecting_reports_at_once_then_retries_after_five_seconds() {
        let mut s = connected(ReportPolicy::default(), 7);
        assert_eq!(
            s.poll(T0, vec![ReportCause::Connected], None),
            vec![ReportCause::Connected]
        );
        assert_eq!(s.unanswered(), 1);
        // 5 s less up to 10 % jitter, in whole seconds: 5.
        assert_eq!(s.next(), Some(T0 + 5));
        assert!(s.poll(T0 + 4, vec![], None).is_empty());
        assert_eq!(s.poll(T0 + 5, vec![], None), vec![ReportCause::Scheduled]);
        assert_eq!(s.next(), Some(T0 + 5 + 10), "doubled: 10 s, jitter < 1 s");
    }

    #[test]
    fn an_unanswered_report_is_retried_at_least_every_five_minutes_with_an_hour_interval() {
        let mut s = connected(ReportPolicy::default(), 7);
        let mut now = T0;
        s.poll(now, vec![ReportCause::Connected], None);
        let mut gaps = Vec::new();
        for _ in 0..20 {
            let next = s.next().unwrap();
            gaps.push(next - now);
            now = next;
            assert_eq!(s.poll(now, vec![], None), vec![ReportCause::Scheduled]);
        }
        // 5, 10, 20, … s less jitter, then 270–300 s for good: a lost answer costs 5 minutes,
        // not the hour's interval.
        assert!(gaps[..6].windows(2).all(|w| w[1] > w[0]), "{gaps:?}");
        assert!(
            gaps[7..]
                .iter()
                .all(|g| (270..=MAX_REPORT_RETRY).contains(g)),
            "{gaps:?}"
        );
    }

    #[test]
    fn an_answered_report_is_followed_by_one_at_refresh_after() {
        let mut s = connected(ReportPolicy::default(), 7);
        s.poll(T0, vec![ReportCause::Connected], None);
        s.answered(T0 + 1, Some(T0 + 1_000));
        let next = s.next().unwrap();
        // 999 s less 0–10 %.
        assert!((T0 + 1 + 900..=T0 + 1_000).contains(&next), "{next}");
        // A refresh_after in the past: not sooner than the gap after the last report.
        s.answered(T0 + 1, Some(T0 - 50));
        assert_eq!(s.next(), Some(T0 + 1 + MIN_REPORT_GAP));
        // One far ahead: the interval bounds it.
        s.answered(T0 + 1, Some(T0 + 100_000));
        assert!(s.next().unwrap() <= T0 + 1 + DEFAULT_REPORT_INTERVAL);
    }

    #[test]
    fn a_cause_within_the_gap_waits_for_it_and_keeps_its_name() {
        let mut s = connected(ReportPolicy::default(), 7);
        s.poll(T0, vec![ReportCause::Connected], None);
        assert!(s
            .poll(T0 + 1, vec![ReportCause::GraceStarted], None)
            .is_empty());
        assert_eq!(s.next(), Some(T0 + 2));
        assert_eq!(
            s.poll(T0 + 2, vec![], None),
            vec![ReportCause::GraceStarted]
        );
    }

    #[test]
    fn nothing_is_reported_or_scheduled_while_disconnected() {
        let mut s = connected(ReportPolicy::default(), 7);
        s.poll(T0, vec![ReportCause::Connected], None);
        s.disconnect();
        assert_eq!(s.next(), None);
        assert!(s
            .poll(T0 + 100, vec![ReportCause::GraceStarted], None)
            .is_empty());
        s.answered(T0 + 100, Some(T0 + 200));
        assert_eq!(s.next(), None);
    }

    #[test]
    fn a_report_that_could_not_be_queued_does_not_count_as_sent() {
        let mut s = connected(ReportPolicy::default(), 7);
        s.poll(T0, vec![ReportCause::Connected], None);
        s.answered(T0, Some(T0 + 1_000));
        assert_eq!(s.unanswered(), 0);
        let due = s.next().unwrap();
        assert_eq!(s.poll(due, vec![], None), vec![ReportCause::Scheduled]);
        assert_eq!(s.unanswered(), 1);
        s.not_queued(due, Some(T0 + 1_000));
        assert_eq!(s.unanswered(), 0);
        // Still answered: the next try at refresh_after again (or the gap after now).
        let next = s.next().unwrap();
        assert!(
            next > due && next <= (T0 + 1_000).max(due + MIN_REPORT_GAP),
            "{next}"
        );
    }

    /// One step of a random run.
    #[derive(Debug, Clone)]
    enum Step {
        Connect,
        Disconnect,
        Cause(ReportCause),
        /// A bundle arrived with `refresh_after` this many seconds ahead.
        Answer(u64),
        Tick,
        NotQueued,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => Just(Step::Connect),
            1 => Just(Step::Disconnect),
            2 => prop_oneof![
                Just(ReportCause::GraceStarted),
                Just(ReportCause::VmCountChanged),
                Just(ReportCause::BundleDistrusted),
            ]
            .prop_map(Step::Cause),
            2 => (0u64..10_000).prop_map(Step::Answer),
            6 => Just(Step::Tick),
            1 => Just(Step::NotQueued),
        ]
    }

    fn policy() -> impl Strategy<Value = ReportPolicy> {
        (10u64..5_000, 1u64..30, 1u64..1_000, 1u64..10).prop_map(
            |(interval, first_retry, max_retry, min_gap)| ReportPolicy {
                interval,
                first_retry,
                max_retry: max_retry.max(first_retry),
                min_gap,
            },
        )
    }

    proptest! {
        /// Whatever happens, two reports (counted when queued) are never closer than the gap.
        #[test]
        fn never_reports_more_often_than_the_gap(
            policy in policy(),
            seed: u64,
            steps in proptest::collection::vec((0u64..20, step()), 1..200),
        ) {
            let mut s = ReportSchedule::new(policy, seed);
            let mut now = T0;
            let mut refresh = None;
            let mut sent: Vec<UnixTime> = Vec::new();
            for (dt, step) in steps {
                now += dt;
                let mut causes = Vec::new();
                match step {
                    Step::Connect => { s.connect(); causes.push(ReportCause::Connected) }
                    Step::Disconnect => s.disconnect(),
                    Step::Cause(c) => causes.push(c),
                    Step::Answer(ahead) => { refresh = Some(now + ahead); s.answered(now, refresh) }
                    Step::Tick => {}
                    Step::NotQueued => {
                        if sent.last() == Some(&now) {
                            sent.pop();
                            s.not_queued(now, refresh);
                        }
                        continue;
                    }
                }
                if !s.poll(now, causes, refresh).is_empty() {
                    sent.push(now);
                }
            }
            for w in sent.windows(2) {
                prop_assert!(w[1] >= w[0] + policy.min_gap, "{sent:?}");
            }
        }

        /// While connected and ticked every second, no two reports are further apart than the
        /// interval (plus the tick), answered or not.
        #[test]
        fn always_reports_within_the_interval_while_connected(
            policy in policy(),
            seed: u64,
            answers in proptest::collection::vec((1u64..5_000, 0u64..20_000), 0..10),
        ) {
            let mut s = ReportSchedule::new(policy, seed);
            s.connect();
            let mut now = T0;
            let mut refresh = None;
            let mut last = now;
            prop_assert!(!s.poll(now, vec![ReportCause::Connected], refresh).is_empty());
            let mut answers = answers.into_iter();
            let mut answer_at = answers.next();
            for _ in 0..20_000 {
                now += 1;
                if let Some((at, ahead)) = answer_at {
                    if now >= T0 + at {
                        refresh = Some(now + ahead);
                        s.answered(now, refresh);
                        answer_at = answers.next();
                    }
                }
                prop_assert!(s.next().is_some_and(|t| t <= last + policy.interval));
                if !s.poll(now, vec![], refresh).is_empty() {
                    prop_assert!(now - last <= policy.interval, "gap {} at {now}", now - last);
                    last = now;
                }
            }
        }

        /// Unanswered reports are retried ever more slowly: no gap shorter than the one before
        /// (bar the jitter once at the cap), none longer than the cap (the longest retry or the
        /// interval, whichever is shorter), and they reach the cap.
        #[test]
        fn unanswered_reports_back_off(policy in policy(), seed: u64) {
            let mut s = ReportSchedule::new(policy, seed);
            s.connect();
            let mut now = T0;
            s.poll(now, vec![ReportCause::Connected], None);
            let mut gaps = Vec::new();
            let mut last = now;
            while gaps.len() < 16 {
                now = s.next().unwrap();
                prop_assert_eq!(s.poll(now, vec![], None), vec![ReportCause::Scheduled]);
                gaps.push(now - last);
                last = now;
            }
            let cap = policy.interval.min(policy.max_retry).max(policy.min_gap);
            let at_cap = (cap * 9 / 10).max(policy.min_gap);
            for w in gaps.windows(2) {
                prop_assert!(w[1] >= w[0].min(at_cap), "{gaps:?}");
                prop_assert!(w[1] <= cap, "{gaps:?}");
            }
            prop_assert!(gaps[15] >= at_cap, "{gaps:?}");
        }
    }
}
