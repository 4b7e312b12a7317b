//! The storm phase: mosquitto restarted (SIGTERM, same port) with the fleet connected; done
//! when every agent has reported again and the controller has had as many reports as agents.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use licd_stub::StubHandle;

use super::drive::{Kind, Progress, Tracker};
use super::proc::{process_cpu, threads_cpu};
use super::report::Storm;
use super::{err, FleetError, FleetOptions, CONTROLLER_THREAD};
use crate::mosquitto::Mosquitto;

pub(super) fn phase(
    opts: &FleetOptions,
    broker: &mut Mosquitto,
    stub: &StubHandle,
    rx: &std_mpsc::Receiver<(usize, Kind, Instant)>,
    tracker: &mut Tracker,
) -> Result<Storm, FleetError> {
    let n = opts.devices;
    let stats0 = stub.stats();
    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let disconnects0 = tracker.disconnects;
    let t0 = Instant::now();
    broker.restart().map_err(err)?;
    let up = Instant::now();
    let bcpu0 = process_cpu(broker.pid());
    let mut reconnected_at = None;
    let mut reported_at = None;
    let deadline = up + opts.phase_timeout;
    let mut progress = Progress::new(opts.progress, "storm");
    // An agent is back when it has sent a report after the restart: it reports on every
    // ConnAck, and `reports_sent` only grows (a connected → disconnected → connected flip can
    // fall between two looks at its status watch; the counter cannot).
    let mut back = vec![false; n];
    let mut back_count = 0;
    loop {
        while let Ok((i, kind, at)) = rx.try_recv() {
            if matches!(kind, Kind::Report) && at >= t0 && i < n && !back[i] {
                back[i] = true;
                back_count += 1;
            }
            tracker.on(i, kind, at);
        }
        let now = Instant::now();
        if back_count == n && reconnected_at.is_none() {
            reconnected_at = Some(now);
        }
        let reports = stub.stats().reports_received - stats0.reports_received;
        if reports >= n as u64 && reported_at.is_none() {
            reported_at = Some(now);
        }
        progress.draw(tracker, false);
        if reconnected_at.is_some() && reported_at.is_some() {
            progress.draw(tracker, true);
            break;
        }
        if now >= deadline {
            progress.draw(tracker, true);
            return Err(err(format!(
                "storm: after {:?} {back_count} of {n} agents back, {reports} reports at the controller",
                opts.phase_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = stub.stats();
    let since = |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t.saturating_duration_since(up));
    Ok(Storm {
        broker_down: up.saturating_duration_since(t0),
        all_reconnected: since(reconnected_at),
        all_reported: since(reported_at),
        failed_attempts: (tracker.disconnects - disconnects0).saturating_sub(n as u64),
        lost_license: tracker.lost.iter().filter(|l| **l).count(),
        reports_dropped: stats.reports_dropped - stats0.reports_dropped,
        controller_cpu: threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
        broker_cpu: process_cpu(broker.pid()).saturating_sub(bcpu0),
    })
}
