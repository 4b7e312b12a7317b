//! `compliance`: compliance of customers.

use anyhow::Result;
use clap::Args;
use licd_stub::admin::dto::ComplianceStatus;

use super::client::Client;
use super::table::s;
use super::{output, qs};

/// `compliance`.
#[derive(Debug, Args)]
pub struct Compliance {
    /// Customers (default: all).
    customers: Vec<String>,
    /// List grants whose term ends within this many days (default: each grant's policy
    /// thresholds).
    #[arg(long)]
    expiring_within_days: Option<u32>,
}

pub(super) async fn run(api: Client, c: Compliance, json_out: bool) -> Result<()> {
    let q = c.customers.join(",");
    let days = c.expiring_within_days.map(|d| d.to_string());
    let mut pairs = Vec::new();
    if !q.is_empty() {
        pairs.push(("customerIds", q.as_str()));
    }
    if let Some(d) = &days {
        pairs.push(("expiringWithinDays", d.as_str()));
    }
    let path = format!("/api/v1/compliance{}", qs(&pairs));
    let v = api.get(&path).await?;
    output(v, json_out, |all: Vec<ComplianceStatus>| {
        all.iter().for_each(print_status)
    })
}

fn print_status(c: &ComplianceStatus) {
    let state = if c.compliant {
        "compliant"
    } else {
        "NOT compliant"
    };
    println!("{}: {state}", s(&c.customer_id));
    for p in &c.paused_services {
        println!("  paused: {} (too few seats for every device)", s(p));
    }
    for v in &c.violations.by_product_class {
        for m in &v.missing.entitlements {
            println!(
                "  {} missing {} x {} ({}) for {} device(s); grace ends {}",
                s(&v.product_class),
                s(&m.quantity),
                s(&m.sku),
                s(&m.service),
                s(&v.devices),
                s(&v.grace_period_ends_at)
            );
        }
    }
    for o in &c.vm_overuse {
        println!(
            "  {} runs {} VMs, {} covers {} (tolerates {})",
            s(&o.device_id),
            s(&o.vm_count),
            s(&o.service),
            s(&o.allowance),
            s(&o.tolerated)
        );
    }
    for o in &c.vm_overage_warnings {
        println!(
            "  warning: {} runs {} VMs, {} covers {}, within the tolerated {}",
            s(&o.device_id),
            s(&o.vm_count),
            s(&o.service),
            s(&o.allowance),
            s(&o.tolerated)
        );
    }
    for r in &c.device_reported {
        println!(
            "  {} reports {} {} ({})",
            s(&r.device_id),
            s(&r.service),
            s(&r.standing),
            s(&r.reason)
        );
    }
    for x in &c.expiring {
        println!(
            "  expiring: {} {} ({}/{}) ends {} ({} s left)",
            s(&x.device_id),
            s(&x.service),
            s(&x.subscription_id),
            s(&x.sku),
            s(&x.not_after),
            s(&x.seconds_left)
        );
    }
}
