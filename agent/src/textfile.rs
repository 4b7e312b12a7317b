//! `licd status --format prometheus`: the status as Prometheus text exposition format 0.0.4,
//! the format node_exporter's textfile collector reads (no port on the device: node_exporter,
//! already there on most servers, publishes the file). Pure: a status document (the JSON the
//! daemon answers, or the from-cache status serialised the same way) in, text out; writing the
//! file atomically is the caller's job.
//!
//! Hand-written rather than a metrics crate: a dozen lines of a stable format keep the
//! firmware agent's dependency tree as it is. Label values are escaped as the format says
//! (`\\`, `\"`, `\n`).

use std::fmt::Write as _;

use serde_json::Value;

/// The metrics, one family after another, each with `# HELP` and `# TYPE`.
pub fn render(status: &Value) -> String {
    let mut out = Out::default();
    let text = |k: &str| status[k].as_str().unwrap_or("");

    out.family("licd_info", "gauge", "Identity of this agent (always 1)");
    out.sample(
        "licd_info",
        &[
            ("device", text("device")),
            ("tenant", text("tenant")),
            ("version", text("agent_version")),
            ("source", text("source")),
        ],
        1.0,
    );

    let services: Vec<&Value> = status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    out.family(
        "licd_service_state",
        "gauge",
        "1 for the state each service is in (licensed, grace, unlicensed) and why",
    );
    for s in &services {
        out.sample(
            "licd_service_state",
            &[
                ("service", s["service"].as_str().unwrap_or("?")),
                ("state", s["state"].as_str().unwrap_or("unknown")),
                ("reason", s["reason"].as_str().unwrap_or("")),
            ],
            1.0,
        );
    }
    out.family(
        "licd_service_may_run",
        "gauge",
        "1 while the service may run (licensed, in grace, or non-compliant under an advisory \
         policy)",
    );
    for s in &services {
        let may_run = matches!(
            s["state"].as_str(),
            Some("licensed" | "grace" | "non_compliant")
        );
        out.sample(
            "licd_service_may_run",
            &[("service", s["service"].as_str().unwrap_or("?"))],
            f64::from(u8::from(may_run)),
        );
    }
    out.family(
        "licd_service_deadline_seconds",
        "gauge",
        "Unix time the service's current state ends (licensed: renewal or term end; grace: \
         end of grace); absent when unlicensed",
    );
    for s in &services {
        if let Some(until) = s["until"].as_u64() {
            out.sample(
                "licd_service_deadline_seconds",
                &[("service", s["service"].as_str().unwrap_or("?"))],
                until as f64,
            );
        }
    }
    out.family(
        "licd_service_term_end_seconds",
        "gauge",
        "Unix time the service's entitlement term ends (its grant's not_after); absent when not \
         granted",
    );
    for s in &services {
        if let Some(end) = s["term_ends_at"].as_u64() {
            out.sample(
                "licd_service_term_end_seconds",
                &[("service", s["service"].as_str().unwrap_or("?"))],
                end as f64,
            );
        }
    }
    out.family(
        "licd_service_warning",
        "gauge",
        "1 for each warning on a service that may run: overage (VMs over the allowance within \
         the tolerance), expiring_soon (a threshold of the grant's policy crossed), \
         non_compliant (advisory policy past grace)",
    );
    for s in &services {
        for w in s["warnings"].as_array().into_iter().flatten() {
            out.sample(
                "licd_service_warning",
                &[
                    ("service", s["service"].as_str().unwrap_or("?")),
                    ("warning", w["warning"].as_str().unwrap_or("?")),
                ],
                1.0,
            );
        }
    }

    let refusals = &status["refusals"]["by_topic"];
    out.family(
        "licd_refused_messages_total",
        "counter",
        "Messages the agent refused since it started (bad signature, replay, wrong device, …), \
         by topic",
    );
    for topic in ["grants", "trust", "diag_request", "other"] {
        out.sample(
            "licd_refused_messages_total",
            &[("topic", topic)],
            refusals[topic].as_u64().unwrap_or(0) as f64,
        );
    }

    let clock = &status["clock"];
    out.gauge(
        "licd_clock_rollback",
        "1 when the wall clock was found set back behind the trusted-time mark",
        f64::from(u8::from(clock["rollback"] == Value::Bool(true))),
    );
    let now = clock["now"].as_u64();
    if let Some(now) = now {
        out.gauge(
            "licd_clock_now_seconds",
            "The agent's trusted time (unix seconds) when this was written",
            now as f64,
        );
    }

    out.gauge(
        "licd_cache_problem",
        "1 when the cached bundle is there but unusable (see `licd status`)",
        f64::from(u8::from(
            status.get("cache_problem").is_some_and(|p| !p.is_null()),
        )),
    );
    let bundle = status.get("bundle").filter(|b| !b.is_null());
    if let Some(b) = bundle {
        out.gauge(
            "licd_bundle_seq",
            "seq of the grant bundle in force",
            b["seq"].as_u64().unwrap_or(0) as f64,
        );
        if let Some(issued) = b["issued_at"].as_u64() {
            out.gauge(
                "licd_bundle_issued_seconds",
                "Unix time the controller issued the bundle in force",
                issued as f64,
            );
            if let Some(now) = now {
                out.gauge(
                    "licd_cache_age_seconds",
                    "Age of the cached bundle in force (trusted time minus its issue time)",
                    now.saturating_sub(issued) as f64,
                );
            }
        }
    }

    if let Some(c) = status.get("connection").filter(|c| !c.is_null()) {
        out.gauge(
            "licd_broker_connected",
            "1 while the daemon is connected to the broker",
            f64::from(u8::from(c["connected"] == Value::Bool(true))),
        );
        out.family(
            "licd_reports_sent_total",
            "counter",
            "Reports the daemon sent since it started",
        );
        out.sample(
            "licd_reports_sent_total",
            &[],
            c["reports_sent"].as_u64().unwrap_or(0) as f64,
        );
        if let Some(at) = c["last_bundle_at"].as_u64() {
            out.gauge(
                "licd_last_bundle_received_seconds",
                "Unix time (trusted) the controller was last heard from",
                at as f64,
            );
        }
    }
    out.0
}

#[derive(Default)]
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes only `\` and newlines.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn label_values_are_escaped_so_a_hostile_value_cannot_add_a_line() {
        let mut out = Out::default();
        out.sample("m", &[("k", "a\"b\\c\nd")], 1.0);
        assert_eq!(out.0, "m{k=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn a_grace_service_has_its_reason_and_deadline_and_the_cache_its_age() {
        let status = json!({
            "source": "daemon", "device": "ap-1", "tenant": "acme", "agent_version": "0.1.0",
            "clock": {"now": 1_000, "wall": 1_000, "mark": 1_000, "rollback": true},
            "services": [
                {"service": "wifi", "state": "grace", "until": 1_600, "reason": "lease_expired"},
                {"service": "poe", "state": "unlicensed", "reason": "unassigned"},
                {"service": "ids", "state": "non_compliant", "reason": "term_ended",
                 "term_ends_at": 900, "warnings": [{"warning": "non_compliant", "reason": "term_ended"}]}
            ],
            "bundle": {"seq": 7, "issued_at": 400},
            "refusals": {"total": 2, "by_topic": {"grants": 2, "trust": 0, "diag_request": 0, "other": 0}},
            "connection": {"connected": false, "reports_sent": 5, "last_bundle_at": 400}
        });
        let text = render(&status);
        for line in [
            "licd_service_state{service=\"wifi\",state=\"grace\",reason=\"lease_expired\"} 1",
            "licd_service_may_run{service=\"poe\"} 0",
            "licd_service_may_run{service=\"ids\"} 1",
            "licd_service_term_end_seconds{service=\"ids\"} 900",
            "licd_service_warning{service=\"ids\",warning=\"non_compliant\"} 1",
            "licd_service_deadline_seconds{service=\"wifi\"} 1600",
            "licd_refused_messages_total{topic=\"grants\"} 2",
            "licd_clock_rollback 1",
            "licd_cache_age_seconds 600",
            "licd_broker_connected 0",
            "licd_reports_sent_total 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("licd_service_deadline_seconds{service=\"poe\"}"));
    }
}
