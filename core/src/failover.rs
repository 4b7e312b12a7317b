//! Which broker node to try next, and when: the one retry policy of [`crate::backoff`] spread
//! over the nodes of a clustered broker. Pure: the random numbers are passed in.
//!
//! The rules, and why:
//! - The first node is picked at random, so a fleet configured with the same list spreads over
//!   the cluster instead of piling onto the first node.
//! - Every failed attempt and every lost connection moves to the next node in the list (round
//!   robin): a node that just failed is the least likely to answer next, and the cluster's
//!   other nodes hold the same retained grants.
//! - The delay before each attempt is the backoff's, unchanged: a connection that held for
//!   [`RESET_AFTER`](crate::backoff::RESET_AFTER) starts over at ≤ 1 s (a lost node is left
//!   within a second, jittered so its devices do not land on the next node together); a
//!   cluster that is down as a whole is retried ever more slowly, never faster than with one
//!   node.
//! - A connection that holds stays where it is: no return to a "primary" when it comes back
//!   (that would move every device twice per node restart).

use std::time::Duration;

use crate::backoff::Backoff;

/// The rotation state: the node in use and the backoff.
#[derive(Debug, Clone)]
pub struct Failover {
    nodes: usize,
    current: usize,
    backoff: Backoff,
}

/// What to do after a failed attempt or a lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Index of the node to try next.
    pub node: usize,
    /// Whether that is another node than the one that failed (always, with more than one).
    pub switched: bool,
    /// How long to wait before the attempt.
    pub delay: Duration,
}

impl Failover {
    /// Rotation over `nodes` nodes (at least one is assumed: 0 counts as 1), starting at a node
    /// picked by `random`, with the backoff bounded by `cap`.
    pub fn new(nodes: usize, cap: Duration, random: u64) -> Self {
        let nodes = nodes.max(1);
        Self {
            nodes,
            current: (random % nodes as u64) as usize,
            backoff: Backoff::with_cap(cap),
        }
    }

    /// Index of the node in use (or about to be tried).
    pub fn current(&self) -> usize {
        self.current
    }

    /// The next node and the delay before trying it, after the current node's connection
    /// lasted `held` (`None`: the attempt never connected).
    pub fn after_disconnect(&mut self, held: Option<Duration>, random: u64) -> Retry {
        let delay = self.backoff.after_disconnect(held, random);
        let before = self.current;
        self.current = (self.current + 1) % self.nodes;
        Retry {
            node: self.current,
            switched: self.current != before,
            delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{BASE, RESET_AFTER};
    use proptest::prelude::*;

    #[test]
    fn a_single_node_is_retried_like_before_with_the_same_backoff() {
        let mut f = Failover::new(1, Duration::from_secs(300), 7);
        let mut b = Backoff::with_cap(Duration::from_secs(300));
        for i in 0..12 {
            let r = f.after_disconnect(None, 1_000_000 + i);
            assert_eq!((r.node, r.switched), (0, false));
            assert_eq!(r.delay, b.next_delay(1_000_000 + i));
        }
    }

    #[test]
    fn a_lost_node_that_held_is_left_within_a_second_for_the_next_one() {
        let mut f = Failover::new(3, Duration::from_secs(300), 0);
        assert_eq!(f.current(), 0);
        // A few failed attempts first, so the backoff has grown.
        for _ in 0..5 {
            f.after_disconnect(None, u64::MAX);
        }
        let on = f.current();
        let r = f.after_disconnect(Some(RESET_AFTER), u64::MAX);
        assert_eq!(r.node, (on + 1) % 3);
        assert!(r.switched);
        assert!(r.delay <= BASE, "{:?}", r.delay);
    }

    #[test]
    fn the_first_node_is_spread_by_the_random_number() {
        let firsts: std::collections::BTreeSet<usize> = (0..30u64)
            .map(|r| Failover::new(3, Duration::from_secs(1), r).current())
            .collect();
        assert_eq!(firsts.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(Failover::new(0, Duration::from_secs(1), 5).current(), 0);
    }

    proptest! {
        /// Whatever the outcomes: every node is tried once in any `nodes` consecutive attempts,
        /// each failure moves on (with more than one node), and no delay exceeds the backoff's
        /// bound for that attempt — so a cluster never makes a device retry faster than one
        /// broker would.
        #[test]
        fn every_node_is_tried_in_turn_and_no_delay_beats_the_backoff(
            nodes in 1usize..6,
            start in any::<u64>(),
            outcomes in proptest::collection::vec((proptest::option::of(0u64..120), any::<u64>()), 1..60),
        ) {
            let cap = Duration::from_secs(300);
            let mut f = Failover::new(nodes, cap, start);
            let mut bound = Backoff::with_cap(cap);
            let mut tried = vec![f.current()];
            for (held, random) in outcomes {
                let held = held.map(Duration::from_secs);
                let r = f.after_disconnect(held, random);
                prop_assert_eq!(r.node, f.current());
                prop_assert_eq!(r.switched, nodes > 1);
                prop_assert_eq!(r.node, (tried[tried.len() - 1] + 1) % nodes);
                // The same backoff fed the same inputs gives the same delay.
                prop_assert_eq!(r.delay, bound.after_disconnect(held, random));
                tried.push(r.node);
            }
            for window in tried.windows(nodes) {
                let mut seen = window.to_vec();
                seen.sort_unstable();
                seen.dedup();
                prop_assert_eq!(seen.len(), nodes);
            }
        }
    }
}
