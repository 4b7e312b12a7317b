//! Driving one phase: the events clients send to the collector ([`Kind`]), the per-client
//! bookkeeping ([`Tracker`]), the progress line, the loop that starts clients within the
//! connect window until the phase is done ([`drive`]), and the phase's figures ([`summarize`]).
//! What a client is (agent or bare echo) is left to the phases.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use super::report::Convergence;
use super::{err, FleetError, FleetOptions, PROGRESS_EVERY};

/// What a client (agent or baseline) did, as seen by the collector.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Connected,
    Disconnected,
    Report,
    /// Licensed for every service (agents) / answer received (baseline).
    Done,
    /// An agent stopped licensing some service.
    Lost,
}

pub(super) type Events = std_mpsc::Sender<(usize, Kind, Instant)>;

/// Per-client bookkeeping of one phase.
pub(super) struct Tracker {
    n: usize,
    connected: Vec<bool>,
    ever: Vec<bool>,
    /// Clients connected at least once: started clients beyond this hold the connect window.
    ever_connected: usize,
    connected_now: usize,
    last_connect: Option<Instant>,
    pub(super) report_at: Vec<Option<Instant>>,
    pub(super) done_at: Vec<Option<Instant>>,
    pub(super) done: usize,
    latencies: Vec<Duration>,
    pub(super) disconnects: u64,
    pub(super) lost: Vec<bool>,
}

impl Tracker {
    pub(super) fn new(n: usize) -> Self {
        Self {
            n,
            connected: vec![false; n],
            ever: vec![false; n],
            ever_connected: 0,
            connected_now: 0,
            last_connect: None,
            report_at: vec![None; n],
            done_at: vec![None; n],
            done: 0,
            latencies: Vec::new(),
            disconnects: 0,
            lost: vec![false; n],
        }
    }

    /// When the last client connected (for the first time or again).
    pub(super) fn last_connect(&self) -> Option<Instant> {
        self.last_connect
    }

    /// Report → done of every client done so far, in the order they finished.
    pub(super) fn latencies(&self) -> &[Duration] {
        &self.latencies
    }

    pub(super) fn on(&mut self, i: usize, kind: Kind, at: Instant) {
        if i >= self.n {
            return;
        }
        match kind {
            Kind::Connected => {
                if !self.connected[i] {
                    self.connected[i] = true;
                    self.connected_now += 1;
                }
                if !self.ever[i] {
                    self.ever[i] = true;
                    self.ever_connected += 1;
                }
                self.last_connect = Some(at);
            }
            Kind::Disconnected => {
                self.disconnects += 1;
                if self.connected[i] {
                    self.connected[i] = false;
                    self.connected_now -= 1;
                }
            }
            Kind::Report => {
                if self.done_at[i].is_none() {
                    self.report_at[i] = Some(at);
                }
            }
            Kind::Done => {
                if self.done_at[i].is_none() {
                    self.done_at[i] = Some(at);
                    self.done += 1;
                    if let Some(r) = self.report_at[i] {
                        self.latencies.push(at.saturating_duration_since(r));
                    }
                }
            }
            Kind::Lost => self.lost[i] = true,
        }
    }
}

pub(super) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Prints a progress line when asked to.
pub(super) struct Progress {
    on: bool,
    phase: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub(super) fn new(on: bool, phase: &'static str) -> Self {
        let now = Instant::now();
        Self {
            on,
            phase,
            started: now,
            last: now - PROGRESS_EVERY,
        }
    }

    pub(super) fn draw(&mut self, t: &Tracker, force: bool) {
        if !self.on || (!force && self.last.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last = Instant::now();
        let width = 30;
        let filled = (t.done * width) / t.n.max(1);
        eprint!(
            "\r{:<10} [{}{}] {:>6}/{} done, {:>6} connected, {:>6.1} s ",
            self.phase,
            "#".repeat(filled),
            "-".repeat(width - filled),
            t.done,
            t.n,
            t.connected_now,
            self.started.elapsed().as_secs_f64()
        );
        if force {
            eprintln!();
        }
    }
}

/// Drives one phase: starts clients through `spawn` within the connect window, feeds events to
/// the tracker, and returns when `finished` holds (or fails at the deadline).
pub(super) fn drive(
    opts: &FleetOptions,
    phase: &'static str,
    rx: &std_mpsc::Receiver<(usize, Kind, Instant)>,
    tracker: &mut Tracker,
    mut spawn: impl FnMut(usize),
    to_spawn: usize,
    finished: impl Fn(&Tracker) -> bool,
) -> Result<(), FleetError> {
    let deadline = Instant::now() + opts.phase_timeout;
    let mut progress = Progress::new(opts.progress, phase);
    let mut spawned = 0;
    loop {
        while spawned < to_spawn
            && spawned - tracker.ever_connected.min(spawned) < opts.connect_window
        {
            spawn(spawned);
            spawned += 1;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok((i, kind, at)) => {
                tracker.on(i, kind, at);
                // Drain what is queued before looking at the clock again.
                while let Ok((i, kind, at)) = rx.try_recv() {
                    tracker.on(i, kind, at);
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                return Err(err(format!("{phase}: every client task ended")))
            }
        }
        progress.draw(tracker, false);
        if spawned == to_spawn && finished(tracker) {
            progress.draw(tracker, true);
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.draw(tracker, true);
            return Err(err(format!(
                "{phase}: not finished after {:?}: {} of {} done, {} connected",
                opts.phase_timeout, tracker.done, tracker.n, tracker.connected_now
            )));
        }
    }
}

pub(super) fn summarize(
    t: &mut Tracker,
    started: Instant,
    total: Duration,
    messages: u64,
    controller_cpu: Duration,
    broker_cpu: Duration,
    clients_cpu: Duration,
) -> Convergence {
    t.latencies.sort();
    Convergence {
        done: t.done,
        total,
        all_connected: t
            .last_connect
            .map_or(Duration::ZERO, |c| c.saturating_duration_since(started)),
        p50: percentile(&t.latencies, 50),
        p99: percentile(&t.latencies, 99),
        max: t.latencies.last().copied().unwrap_or_default(),
        messages_per_sec: messages as f64 / total.as_secs_f64().max(1e-9),
        controller_cpu,
        broker_cpu,
        clients_cpu,
    }
}
