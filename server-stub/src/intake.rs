//! The queue between a controller's MQTT session and its worker: bounded by the devices
//! waiting, and a device's newer report takes the place of its queued one.
//!
//! Why not a plain channel: under a report storm (a fleet starting, a broker node returning)
//! the worker falls behind and every device still waiting retries (5 s, 10 s, 20 s, …). In a
//! channel each retry is one more item: the queue filled with copies, later devices' first
//! reports were dropped, and each drop cost that device another retry — 263,687 reports
//! dropped while 50,000 agents converged on a nats-server cluster (BENCHMARKS.md). Here a
//! retry replaces the waiting copy (the newer report says at least as much: a report is a
//! snapshot, and usage travels in every report until acknowledged, PROTOCOL.md §17.3), so
//! the queue holds one report per device and drops only when more devices than its capacity
//! wait at once. Site relays' reports are numbered and acknowledged one by one: never replaced.
//!
//! Signatures are checked later, by the worker: a forged copy takes a genuine report's place
//! only on a topic its sender may publish to, and the broker's ACL gives each device its own
//! (docs/SECURITY.md). Without the ACL a flood of forgeries could drop any device's reports
//! from a plain channel too — and every other device's along with them.
//!
//! [`Queue`] is the logic (no I/O, no async); [`channel`] shares it between the two tasks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::session::Incoming;

/// What became of an offered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued at the back.
    Queued,
    /// Took the place of the same device's queued report (which is dropped).
    Replaced,
    /// Dropped: the queue holds as many reports as it may.
    Full,
}

/// Where a report waits: its device's topic, or a number of its own (never replaced).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Device(String),
    Own(u64),
}

/// The reports waiting, in arrival order of each slot's first report.
#[derive(Debug)]
pub(crate) struct Queue {
    order: VecDeque<Slot>,
    waiting: HashMap<Slot, Incoming>,
    capacity: usize,
    next_own: u64,
    closed: bool,
}

impl Queue {
    /// An empty queue holding at most `capacity` reports (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            waiting: HashMap::new(),
            capacity: capacity.max(1),
            next_own: 0,
            closed: false,
        }
    }

    /// Offers a report: a device's report replaces that device's waiting one, in its place;
    /// anything else queues at the back if there is room.
    pub(crate) fn offer(&mut self, item: Incoming) -> Offered {
        let slot = if Self::is_replaceable(&item.topic) {
            Slot::Device(item.topic.clone())
        } else {
            self.next_own += 1;
            Slot::Own(self.next_own)
        };
        if let Some(waiting) = self.waiting.get_mut(&slot) {
            *waiting = item;
            return Offered::Replaced;
        }
        if self.waiting.len() >= self.capacity {
            return Offered::Full;
        }
        self.order.push_back(slot.clone());
        self.waiting.insert(slot, item);
        Offered::Queued
    }

    /// Takes up to `max` reports, oldest first.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Incoming> {
        let n = max.min(self.order.len());
        self.order
            .drain(..n)
            .filter_map(|slot| self.waiting.remove(&slot))
            .collect()
    }

    /// Reports waiting.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// A device's own report (topic `licd/v1/{tenant}/{device}/report…`): anything but a site
    /// relay's numbered report.
    fn is_replaceable(topic: &str) -> bool {
        !topic.ends_with(&format!("/{}", licd_protocol::topic::RELAY_REPORT_LEAF))
    }
}

/// An intake of `capacity` reports: the session offers to the [`Producer`], the worker takes
/// from the [`Consumer`]. Dropping the producer (the session ended, however) closes it.
pub(crate) fn channel(capacity: usize) -> (Producer, Consumer) {
    let intake = Arc::new(Intake::new(capacity));
    (Producer(intake.clone()), Consumer(intake))
}

/// The session's end of an intake (see [`channel`]).
#[derive(Debug)]
pub(crate) struct Producer(Arc<Intake>);

impl Producer {
    /// See [`Queue::offer`].
    pub(crate) fn offer(&self, item: Incoming) -> Offered {
        self.0.offer(item)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The worker's end of an intake (see [`channel`]).
#[derive(Debug)]
pub(crate) struct Consumer(Arc<Intake>);

impl Consumer {
    /// Waits for reports and takes up to `max`, oldest first; `None` once the producer is
    /// gone and nothing waits.
    pub(crate) async fn take(&self, max: usize) -> Option<Vec<Incoming>> {
        self.0.take(max).await
    }
}

/// A [`Queue`] shared by one producer (the MQTT session) and one consumer (the worker).
#[derive(Debug)]
struct Intake {
    queue: Mutex<Queue>,
    ready: tokio::sync::Notify,
}

impl Intake {
    fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::new(capacity)),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Offers a report (see [`Queue::offer`]) and wakes the worker.
    fn offer(&self, item: Incoming) -> Offered {
        let offered = self.lock().offer(item);
        if offered == Offered::Queued {
            self.ready.notify_one();
        }
        offered
    }

    /// Waits for reports and takes up to `max`; `None` once closed and empty.
    async fn take(&self, max: usize) -> Option<Vec<Incoming>> {
        loop {
            {
                let mut q = self.lock();
                if q.len() > 0 {
                    return Some(q.take(max));
                }
                if q.closed {
                    return None;
                }
            }
            // One consumer: a wake-up given while it was not waiting is kept for it.
            self.ready.notified().await;
        }
    }

    /// No more reports will come: the worker ends once it has taken the waiting ones.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds plain data; a panic elsewhere cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(topic: &str, payload: u8) -> Incoming {
        Incoming {
            topic: topic.into(),
            payload: vec![payload],
        }
    }

    const RELAY: &str = "licd/v1/acme/site-1/relay-report";

    #[test]
    fn a_retry_replaces_the_waiting_report_in_its_place_and_a_relays_reports_never_do() {
        assert!(RELAY.ends_with(licd_protocol::topic::RELAY_REPORT_LEAF));
        let mut q = Queue::new(3);
        assert_eq!(q.offer(item("licd/v1/a/ap1/report", 1)), Offered::Queued);
        assert_eq!(q.offer(item("licd/v1/a/ap2/report", 2)), Offered::Queued);
        assert_eq!(q.offer(item("licd/v1/a/ap1/report", 3)), Offered::Replaced);
        assert_eq!(q.offer(item(RELAY, 4)), Offered::Queued);
        assert_eq!(q.offer(item(RELAY, 5)), Offered::Full);
        // Full for new devices, still open to retries of waiting ones.
        assert_eq!(q.offer(item("licd/v1/a/ap3/report", 6)), Offered::Full);
        assert_eq!(q.offer(item("licd/v1/a/ap2/report", 7)), Offered::Replaced);
        let got: Vec<(String, u8)> = q
            .take(10)
            .into_iter()
            .map(|i| (i.topic, i.payload[0]))
            .collect();
        assert_eq!(
            got,
            [
                ("licd/v1/a/ap1/report".to_string(), 3),
                ("licd/v1/a/ap2/report".to_string(), 7),
                (RELAY.to_string(), 4),
            ]
        );
        assert_eq!(q.len(), 0);
    }

    proptest! {
        /// Whatever is offered: never more than the capacity waits, each device's newest
        /// offered report comes out (unless it was refused as full) exactly once, devices in
        /// the order they first queued, and every relay report taken is one that was queued.
        #[test]
        fn the_queue_keeps_each_devices_newest_report_once_within_its_capacity(
            ops in prop::collection::vec((0u8..6, any::<bool>(), 0usize..4), 0..200),
            capacity in 1usize..6,
        ) {
            let mut q = Queue::new(capacity);
            // The model: per slot key, the newest payload; the order of first queueing.
            let mut model: Vec<(String, u8)> = Vec::new();
            let mut n = 0u8;
            for (device, relay, take) in ops {
                n = n.wrapping_add(1);
                let topic = if relay {
                    format!("licd/v1/a/site{device}/{}", licd_protocol::topic::RELAY_REPORT_LEAF)
                } else {
                    format!("licd/v1/a/ap{device}/report")
                };
                let offered = q.offer(item(&topic, n));
                let waiting = model.iter().position(|(t, _)| *t == topic && !relay);
                let expect = match waiting {
                    Some(i) => {
                        model[i].1 = n;
                        Offered::Replaced
                    }
                    None if model.len() >= capacity => Offered::Full,
                    None => {
                        model.push((topic, n));
                        Offered::Queued
                    }
                };
                prop_assert_eq!(offered, expect);
                prop_assert!(q.len() <= capacity);
                let got: Vec<(String, u8)> =
                    q.take(take).into_iter().map(|i| (i.topic, i.payload[0])).collect();
                let k = got.len();
                prop_assert_eq!(&got[..], &model[..k]);
                model.drain(..k);
            }
            let rest: Vec<(String, u8)> =
                q.take(usize::MAX).into_iter().map(|i| (i.topic, i.payload[0])).collect();
            prop_assert_eq!(rest, model);
        }
    }

    #[tokio::test]
    async fn the_worker_wakes_for_a_report_and_ends_after_the_last_one_once_the_session_ends() {
        let (producer, consumer) = channel(4);
        let worker = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(batch) = consumer.take(2).await {
                got.extend(batch.into_iter().map(|i| i.payload[0]));
            }
            got
        });
        for n in 0..3 {
            assert_eq!(
                producer.offer(item(&format!("licd/v1/a/ap{n}/report"), n)),
                Offered::Queued
            );
            tokio::task::yield_now().await;
        }
        drop(producer);
        let consumer = worker;
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), consumer)
            .await
            .expect("the worker ends once closed")
            .expect("no panic");
        assert_eq!(got, [0, 1, 2]);
    }
}
