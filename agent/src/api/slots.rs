//! The local API's connection budgets. One-shot clients (`check`, `status`) and watchers are
//! counted apart, so neither kind can crowd out the other. A full one-shot budget makes room
//! by evicting a connection that has had its chance — an idle one first, else the oldest one
//! past [`Slots::grace`] — and never by refusing a newcomer: a newcomer waits (unaccepted, in
//! the kernel's queue) only until some connection's grace has run out. So idle, slow or
//! departed clients, however many, delay a check by at most their turnover, and cannot
//! block it.
//!
//! Pure bookkeeping: time is an argument, eviction is an `AbortHandle` of the connection's
//! task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How often at most the agent logs that it evicts connections.
const EVICTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The budgets and who holds them.
#[derive(Debug)]
pub(super) struct Slots {
    state: Mutex<State>,
    /// Signalled when a one-shot slot frees (its connection ended or became a watcher).
    freed: Notify,
    max_checks: usize,
    max_watchers: usize,
    grace: Duration,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    checks: HashMap<u64, Slot>,
    watchers: usize,
    /// Evictions not yet logged, and when the last log line was written.
    unlogged_evictions: u64,
    last_log: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    accepted: Instant,
    /// Set while the connection has been answered and waits for the first byte of its next
    /// request.
    idle_since: Option<Instant>,
    abort: Option<AbortHandle>,
}

/// What [`Slots::make_room`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// A one-shot slot is free (perhaps just made free).
    Ready,
    /// Every slot is held by a connection still in its grace: try again at this instant, or
    /// when a slot frees.
    WaitUntil(Instant),
}

impl Slots {
    /// Budgets of `max_checks` one-shot connections and `max_watchers` watchers; a one-shot
    /// connection may be evicted once idle, or once `grace` has passed since it was accepted.
    pub(super) fn new(max_checks: usize, max_watchers: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            freed: Notify::new(),
            max_checks,
            max_watchers,
            grace,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every point a panic could poison it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more one-shot connection at `now`, evicting one when the budget is
    /// full: the longest-idle connection, else the longest-held one past its grace.
    pub(super) fn make_room(&self, now: Instant) -> Room {
        let mut state = self.lock();
        if state.checks.len() < self.max_checks {
            return Room::Ready;
        }
        let idle = state
            .checks
            .iter()
            .filter_map(|(id, s)| s.idle_since.map(|t| (t, *id)))
            .min();
        let oldest = state.checks.iter().map(|(id, s)| (s.accepted, *id)).min();
        let victim = match (idle, oldest) {
            (Some((_, id)), _) => id,
            (None, Some((accepted, id))) if accepted + self.grace <= now => id,
            (None, Some((accepted, _))) => return Room::WaitUntil(accepted + self.grace),
            (None, None) => return Room::Ready,
        };
        if let Some(slot) = state.checks.remove(&victim) {
            if let Some(abort) = slot.abort {
                abort.abort();
            }
        }
        state.unlogged_evictions += 1;
        if state
            .last_log
            .is_none_or(|t| now.duration_since(t) >= EVICTION_LOG_INTERVAL)
        {
            tracing::warn!(
                budget = self.max_checks,
                evicted = state.unlogged_evictions,
                "local API: every one-shot connection slot is taken; evicting idle or slow clients to answer new ones"
            );
            state.unlogged_evictions = 0;
            state.last_log = Some(now);
        }
        Room::Ready
    }

    /// Takes a one-shot slot (after [`Slots::make_room`] said there is one).
    pub(super) fn admit(self: &Arc<Self>, now: Instant) -> Ticket {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.checks.insert(
            id,
            Slot {
                accepted: now,
                idle_since: None,
                abort: None,
            },
        );
        Ticket {
            slots: Arc::clone(self),
            id,
            watcher: false,
        }
    }

    /// Lets [`Slots::make_room`] end the connection holding slot `id`.
    pub(super) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(slot) = self.lock().checks.get_mut(&id) {
            slot.abort = Some(abort);
        }
    }

    /// Resolves when a one-shot slot frees (or has freed since the last call).
    pub(super) async fn freed(&self) {
        self.freed.notified().await;
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.checks.len(), state.watchers)
    }
}

/// A connection's hold on a slot, one-shot or watcher; given back when dropped (the
/// connection's task ends or is aborted).
#[derive(Debug)]
pub(super) struct Ticket {
    slots: Arc<Slots>,
    id: u64,
    watcher: bool,
}

impl Ticket {
    /// The slot's id (for [`Slots::set_abort`]).
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Marks the connection idle since `since` (answered, waiting for its next request), or
    /// busy again (`None`).
    pub(super) fn idle(&self, since: Option<Instant>) {
        if let Some(slot) = self.slots.lock().checks.get_mut(&self.id) {
            slot.idle_since = since;
        }
    }

    /// Moves the connection from the one-shot budget to the watchers'; false when that one is
    /// full (the connection stays one-shot).
    pub(super) fn become_watcher(&mut self) -> bool {
        if self.watcher {
            return true;
        }
        let mut state = self.slots.lock();
        if state.watchers >= self.slots.max_watchers {
            return false;
        }
        state.watchers += 1;
        state.checks.remove(&self.id);
        drop(state);
        self.watcher = true;
        self.slots.freed.notify_one();
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        if self.watcher {
            state.watchers = state.watchers.saturating_sub(1);
        } else if state.checks.remove(&self.id).is_some() {
            drop(state);
            self.slots.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(100);

    #[test]
    fn a_free_slot_is_ready_and_a_full_budget_waits_for_the_oldest_grace() {
        let slots = Slots::new(2, 1, GRACE);
        let t0 = Instant::now();
        assert_eq!(slots.make_room(t0), Room::Ready);
        let _a = slots.admit(t0);
        let _b = slots.admit(t0 + Duration::from_millis(10));
        assert_eq!(slots.make_room(t0), Room::WaitUntil(t0 + GRACE));
        assert_eq!(slots.counts(), (2, 0));
        // The grace of the oldest has run out: it goes, the newer one stays.
        assert_eq!(slots.make_room(t0 + GRACE), Room::Ready);
        assert_eq!(slots.counts(), (1, 0));
        let _c = slots.admit(t0 + GRACE);
        assert_eq!(
            slots.make_room(t0 + GRACE),
            Room::WaitUntil(t0 + Duration::from_millis(110))
        );
    }

    #[test]
    fn an_idle_connection_is_evicted_first_grace_or_not() {
        let slots = Slots::new(2, 1, GRACE);
        let t0 = Instant::now();
        let old = slots.admit(t0);
        let answered = slots.admit(t0 + Duration::from_millis(50));
        answered.idle(Some(t0 + Duration::from_millis(60)));
        assert_eq!(slots.make_room(t0 + Duration::from_millis(70)), Room::Ready);
        // The idle one went; the older busy one is still there.
        let state = slots.lock();
        assert!(state.checks.contains_key(&old.id()));
        assert!(!state.checks.contains_key(&answered.id()));
    }

    #[test]
    fn watchers_have_their_own_budget_and_give_it_back_when_they_go() {
        let slots = Slots::new(1, 1, GRACE);
        let t0 = Instant::now();
        let mut w = slots.admit(t0);
        assert!(w.become_watcher());
        assert_eq!(slots.counts(), (0, 1));
        // A watcher leaves the one-shot budget free.
        assert_eq!(slots.make_room(t0), Room::Ready);
        let mut second = slots.admit(t0);
        assert!(!second.become_watcher(), "the watcher budget is full");
        assert_eq!(slots.counts(), (1, 1));
        drop(w);
        assert_eq!(slots.counts(), (1, 0));
        assert!(second.become_watcher());
        drop(second);
        assert_eq!(slots.counts(), (0, 0));
    }
}
