//! What a run measured and how it is shown: the per-phase figures ([`Convergence`], [`Storm`]),
//! the whole run ([`FleetReport`]) and its two renderings, the summary table and `--json`.
//! Measuring is left to the phases.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::SERVICES;

/// Latency percentiles and totals of one convergence phase.
#[derive(Debug, Clone, Default)]
pub struct Convergence {
    /// Clients that got their answer (licensed agents / echoed clients).
    pub done: usize,
    /// From the first start to the last answer.
    pub total: Duration,
    /// From the first start to the last ConnAck.
    pub all_connected: Duration,
    /// Report (request) sent → bundle applied (answer received), p50.
    pub p50: Duration,
    /// Same, p99.
    pub p99: Duration,
    /// Same, max.
    pub max: Duration,
    /// MQTT application messages (reports/requests and bundles/answers) per second over
    /// `total`.
    pub messages_per_sec: f64,
    /// CPU of the controller (or echo responder) threads during the phase.
    pub controller_cpu: Duration,
    /// CPU of mosquitto during the phase.
    pub broker_cpu: Duration,
    /// CPU of the clients' runtime threads (the agents, or the bare clients) during the phase.
    pub clients_cpu: Duration,
}

impl Convergence {
    fn json(&self) -> Value {
        json!({
            "done": self.done,
            "total_s": secs(self.total),
            "all_connected_s": secs(self.all_connected),
            "report_to_bundle_p50_ms": ms(self.p50),
            "report_to_bundle_p99_ms": ms(self.p99),
            "report_to_bundle_max_ms": ms(self.max),
            "messages_per_s": self.messages_per_sec.round(),
            "controller_cpu_s": secs(self.controller_cpu),
            "broker_cpu_s": secs(self.broker_cpu),
            "clients_cpu_s": secs(self.clients_cpu),
        })
    }
}

/// The broker restart with the fleet connected.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    /// SIGTERM to accepting connections again.
    pub broker_down: Duration,
    /// From the broker accepting again to every agent connected and reporting again.
    pub all_reconnected: Duration,
    /// From the broker accepting again to as many reports at the controller as there are
    /// agents. Not "every agent heard from": an agent whose first report after reconnecting
    /// went unanswered (the retained bundle it already holds came back) reports again, so this
    /// can come before the last agent is back ([`Storm::all_reconnected`] tracks that).
    pub all_reported: Duration,
    /// Reconnect attempts that failed (agents' `Disconnected` events beyond the first each).
    pub failed_attempts: u64,
    /// Agents that stopped licensing any service during the storm (must be 0).
    pub lost_license: usize,
    /// Reports the controller dropped (queue full) during the storm.
    pub reports_dropped: u64,
    /// Controller CPU during the storm.
    pub controller_cpu: Duration,
    /// mosquitto CPU during the storm (its second life).
    pub broker_cpu: Duration,
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Devices.
    pub devices: usize,
    /// Report envelope bytes (and baseline request bytes).
    pub report_bytes: usize,
    /// Bundle envelope bytes (and baseline answer bytes), 5 services.
    pub bundle_bytes: usize,
    /// Baseline before the fleet.
    pub baseline_before: Option<Convergence>,
    /// The echo clients doing the agent's unavoidable work too (see [`super::baseline`]).
    pub floor: Option<Convergence>,
    /// The fleet.
    pub fleet: Convergence,
    /// Baseline after the fleet.
    pub baseline_after: Option<Convergence>,
    /// Broker restart.
    pub storm: Option<Storm>,
    /// The same number of new devices licensed by a site relay (`--relay`).
    pub relay: Option<Convergence>,
    /// Reports the controller dropped while the fleet converged.
    pub reports_dropped: u64,
    /// Reports that took the place of their device's queued one (retries during a backlog).
    pub reports_replaced: u64,
    /// Bundles the controller published while the fleet converged.
    pub bundles_published: u64,
    /// This process's VmRSS with the fleet licensed (agents + controller), bytes.
    pub process_rss: u64,
    /// The broker's VmRSS with the fleet licensed, bytes (every node's, summed, on a cluster).
    pub broker_rss: u64,
    /// Which broker ran: empty for mosquitto, else e.g. `nats-server x3`.
    pub broker_name: String,
    /// With `--workers`: (pid, devices, licensed) of each worker process; empty when the fleet
    /// ran in this process. `process_rss` is then the sum over the workers and the parent.
    pub workers: Vec<(u32, usize, usize)>,
}

impl FleetReport {
    /// Mean of the baseline runs' totals.
    pub fn baseline_total(&self) -> Option<Duration> {
        let runs: Vec<Duration> = [&self.baseline_before, &self.baseline_after]
            .into_iter()
            .flatten()
            .map(|c| c.total)
            .collect();
        (!runs.is_empty()).then(|| runs.iter().sum::<Duration>() / runs.len() as u32)
    }

    /// Fleet convergence time over the baseline's (mean of its runs).
    pub fn ratio(&self) -> Option<f64> {
        self.baseline_total()
            .map(|b| self.fleet.total.as_secs_f64() / b.as_secs_f64().max(1e-9))
    }

    /// The report as JSON (for `--json`).
    pub fn json(&self) -> Value {
        json!({
            "devices": self.devices,
            "services": SERVICES.len(),
            "report_bytes": self.report_bytes,
            "bundle_bytes": self.bundle_bytes,
            "fleet": self.fleet.json(),
            "baseline_before": self.baseline_before.as_ref().map(Convergence::json),
            "baseline_after": self.baseline_after.as_ref().map(Convergence::json),
            "baseline_mean_s": self.baseline_total().map(secs),
            "floor": self.floor.as_ref().map(Convergence::json),
            "ratio_fleet_to_baseline": self.ratio().map(|r| (r * 1000.0).round() / 1000.0),
            "controller_cpu_us_per_device": (self.fleet.controller_cpu.as_secs_f64() * 1e6
                / self.devices.max(1) as f64).round(),
            "reports_dropped": self.reports_dropped,
            "reports_replaced": self.reports_replaced,
            "bundles_published": self.bundles_published,
            "process_rss_bytes": self.process_rss,
            "process_rss_bytes_per_device": self.process_rss / self.devices.max(1) as u64,
            "broker_rss_bytes": self.broker_rss,
            "broker": if self.broker_name.is_empty() { "mosquitto" } else { &self.broker_name },
            "workers": self.workers.iter().map(|(pid, devices, done)| json!({
                "pid": pid, "devices": devices, "done": done,
            })).collect::<Vec<_>>(),
            "relay": self.relay.as_ref().map(Convergence::json),
            "ratio_relay_to_fleet": self.relay.as_ref().map(|r| {
                (r.total.as_secs_f64() / self.fleet.total.as_secs_f64().max(1e-9) * 1000.0).round() / 1000.0
            }),
            "storm": self.storm.as_ref().map(|s| json!({
                "broker_down_s": secs(s.broker_down),
                "all_reconnected_s": secs(s.all_reconnected),
                "all_reported_s": secs(s.all_reported),
                "failed_attempts": s.failed_attempts,
                "lost_license": s.lost_license,
                "reports_dropped": s.reports_dropped,
                "controller_cpu_s": secs(s.controller_cpu),
                "broker_cpu_s": secs(s.broker_cpu),
            })),
        })
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "licd fleet: {} devices × {} services; report {} B, bundle {} B",
            self.devices,
            SERVICES.len(),
            self.report_bytes,
            self.bundle_bytes
        );
        let _ = writeln!(
            t,
            "{:<20} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "phase",
            "total s",
            "connected s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "msg/s",
            "ctl cpu s",
            "mqtt cpu",
            "clients cpu"
        );
        let mut line = |name: &str, c: &Convergence| {
            let _ = writeln!(
                t,
                "{:<20} {:>9.2} {:>11.2} {:>9.1} {:>9.1} {:>9.1} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
                name,
                c.total.as_secs_f64(),
                c.all_connected.as_secs_f64(),
                ms(c.p50),
                ms(c.p99),
                ms(c.max),
                c.messages_per_sec,
                c.controller_cpu.as_secs_f64(),
                c.broker_cpu.as_secs_f64(),
                c.clients_cpu.as_secs_f64(),
            );
        };
        if let Some(b) = &self.baseline_before {
            line("baseline (before)", b);
        }
        if let Some(f) = &self.floor {
            line("floor (echo + work)", f);
        }
        line("fleet (real agents)", &self.fleet);
        if let Some(r) = &self.relay {
            line("site relay (agents)", r);
        }
        if let Some(b) = &self.baseline_after {
            line("baseline (after)", b);
        }
        if let Some(r) = self.ratio() {
            let _ = writeln!(
                t,
                "convergence ratio fleet / baseline mean: {r:.2}× (goal ≤ 1.5×)"
            );
        }
        if let Some(r) = &self.relay {
            let _ = writeln!(
                t,
                "site relay / controller: {:.2}× the time ({:.0} vs {:.0} devices licensed per second)",
                r.total.as_secs_f64() / self.fleet.total.as_secs_f64().max(1e-9),
                r.done as f64 / r.total.as_secs_f64().max(1e-9),
                self.fleet.done as f64 / self.fleet.total.as_secs_f64().max(1e-9),
            );
        }
        if let (Some(f), None) = (&self.floor, self.baseline_total()) {
            let _ = writeln!(
                t,
                "fleet / floor: {:.2}× (goal ≤ 1.15×)",
                self.fleet.total.as_secs_f64() / f.total.as_secs_f64().max(1e-9),
            );
        }
        if let (Some(f), Some(b)) = (&self.floor, self.baseline_total()) {
            let _ = writeln!(
                t,
                "floor / baseline mean: {:.2}× (what the agent's unavoidable crypto and fsyncs cost on the same cores); fleet / floor: {:.2}×",
                f.total.as_secs_f64() / b.as_secs_f64().max(1e-9),
                self.fleet.total.as_secs_f64() / f.total.as_secs_f64().max(1e-9),
            );
        }
        let _ = writeln!(
            t,
            "controller CPU {:.0} µs per device; reports dropped {}, replaced in the queue {}; bundles {}; RSS process {:.1} MiB ({:.1} KiB/device), {} {:.1} MiB",
            self.fleet.controller_cpu.as_secs_f64() * 1e6 / self.devices.max(1) as f64,
            self.reports_dropped,
            self.reports_replaced,
            self.bundles_published,
            self.process_rss as f64 / 1048576.0,
            self.process_rss as f64 / 1024.0 / self.devices.max(1) as f64,
            if self.broker_name.is_empty() {
                "mosquitto"
            } else {
                &self.broker_name
            },
            self.broker_rss as f64 / 1048576.0,
        );
        if !self.workers.is_empty() {
            let each: Vec<String> = self
                .workers
                .iter()
                .map(|(pid, devices, done)| format!("pid {pid}: {done}/{devices}"))
                .collect();
            let _ = writeln!(
                t,
                "{} worker processes (RSS summed over them and the parent): {}",
                self.workers.len(),
                each.join(", ")
            );
        }
        if let Some(s) = &self.storm {
            let _ = writeln!(
                t,
                "broker restart: down {:.2} s; every agent reconnected and reported {:.2} s and N reports at the controller {:.2} s after it was back; {} failed attempts; {} agents lost a license; {} reports dropped; ctl cpu {:.2} s, mqtt cpu {:.2} s",
                s.broker_down.as_secs_f64(),
                s.all_reconnected.as_secs_f64(),
                s.all_reported.as_secs_f64(),
                s.failed_attempts,
                s.lost_license,
                s.reports_dropped,
                s.controller_cpu.as_secs_f64(),
                s.broker_cpu.as_secs_f64(),
            );
        }
        t
    }
}

pub(super) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
