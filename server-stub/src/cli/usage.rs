//! `usage`: usage reported by devices, counted once (one row per usage window).

use anyhow::Result;
use clap::Args;
use licd_stub::admin::handlers::usage::{UsagePage, UsageRecord};

use super::client::Client;
use super::table::{print_table, s};
use super::{decode, print_json, qs};

/// `usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this customer's devices.
    #[arg(long)]
    customer: Option<String>,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only grace time of this service.
    #[arg(long)]
    service: Option<String>,
    /// Only windows reported at or after this time (2027-06-30, 2027-06-30T12:00:00Z or unix
    /// seconds).
    #[arg(long)]
    since: Option<String>,
    /// Only windows reported before this time.
    #[arg(long)]
    until: Option<String>,
}

fn grace(r: &UsageRecord) -> String {
    if r.grace_seconds.is_empty() {
        return "-".into();
    }
    r.grace_seconds
        .iter()
        .map(|g| format!("{}={}s", g.service, g.seconds))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) async fn run(api: Client, c: UsageArgs, json_out: bool) -> Result<()> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (k, v) in [
        ("customerId", &c.customer),
        ("deviceId", &c.device),
        ("service", &c.service),
        ("periodEnd[gte]", &c.since),
        ("periodEnd[lt]", &c.until),
    ] {
        if let Some(v) = v {
            pairs.push((k, v.as_str()));
        }
    }
    // Every page, so the table (and the totals line) cover everything that matched.
    let path = format!("/api/v1/usage{}", qs(&pairs));
    let first: UsagePage = {
        let v = api.get(&path).await?;
        if json_out {
            // The first page carries the totals over all pages; the items of all pages follow.
            let pages = api.get_all_numbered(&path).await?;
            let mut v = v;
            v["items"] = serde_json::Value::Array(pages);
            return print_json(&v);
        }
        decode(v)?
    };
    let items: Vec<UsageRecord> = api
        .get_all_numbered(&path)
        .await?
        .into_iter()
        .map(decode)
        .collect::<Result<_>>()?;
    let rows = items
        .iter()
        .map(|r| {
            vec![
                s(&r.customer_id),
                s(&r.device_id),
                format!("{}..{}", r.window_seq, r.report_seq),
                if r.closed { "closed" } else { "open" }.into(),
                s(&r.period_end),
                s(&r.peak_vm_count),
                s(&r.refusals),
                grace(r),
            ]
        })
        .collect();
    print_table(
        &[
            "CUSTOMER", "DEVICE", "REPORTS", "WINDOW", "REPORTED", "PEAK VMS", "REFUSALS", "GRACE",
        ],
        rows,
    );
    let t = &first.totals;
    let g: Vec<String> = t
        .grace_seconds
        .iter()
        .map(|g| format!("{}={}s", g.service, g.seconds))
        .collect();
    println!(
        "total: {} window(s) of {} device(s); grace {}; refusals {}; peak VMs {}",
        t.windows,
        t.devices,
        if g.is_empty() {
            "-".into()
        } else {
            g.join(",")
        },
        t.refusals,
        s(&t.peak_vm_count)
    );
    Ok(())
}
