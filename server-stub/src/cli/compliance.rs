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
}

pub(super) async fn run(api: Client, c: Compliance, json_out: bool) -> Result<()> {
    let q = c.customers.join(",");
    let path = if q.is_empty() {
        "/api/v1/compliance".to_string()
    } else {
        format!("/api/v1/compliance{}", qs(&[("customerIds", &q)]))
    };
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
            "  {} runs {} VMs, {} covers {}",
            s(&o.device_id),
            s(&o.vm_count),
            s(&o.service),
            s(&o.allowance)
        );
    }
}
