//! `compliance`: compliance of customers.

use anyhow::Result;
use clap::Args;

use super::client::Client;
use super::table::s;
use super::{print_json, qs};

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
    if json_out {
        return print_json(&v);
    }
    for c in v.as_array().into_iter().flatten() {
        let state = if c["compliant"] == true {
            "compliant"
        } else {
            "NOT compliant"
        };
        println!("{}: {state}", s(&c["customerId"]));
        for p in c["pausedServices"].as_array().into_iter().flatten() {
            println!("  paused: {} (too few seats for every device)", s(p));
        }
        for v in c["violations"]["byProductClass"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for m in v["missing"]["entitlements"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "  {} missing {} x {} ({}) for {} device(s); grace ends {}",
                    s(&v["productClass"]),
                    s(&m["quantity"]),
                    s(&m["sku"]),
                    s(&m["service"]),
                    s(&v["devices"]),
                    s(&v["gracePeriodEndsAt"])
                );
            }
        }
        for o in c["vmOveruse"].as_array().into_iter().flatten() {
            println!(
                "  {} runs {} VMs, {} covers {}",
                s(&o["deviceId"]),
                s(&o["vmCount"]),
                s(&o["service"]),
                s(&o["allowance"])
            );
        }
    }
    Ok(())
}
