//! `devices`: list, show, re-issue a bundle, remote diagnostics.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::table::{print_table, s};
use super::{print_json, qs};

/// `devices`.
#[derive(Debug, Args)]
pub struct Devices {
    #[command(subcommand)]
    cmd: Option<DevicesCmd>,
}

#[derive(Debug, Subcommand)]
enum DevicesCmd {
    /// List devices (the default).
    List {
        /// Only this tenant's.
        #[arg(long)]
        customer: Option<String>,
        /// Snow filter, e.g. 'productClass -eq "ap"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Show a device: identity, last report, VMs, each service, bundle seq.
    Show {
        /// Tenant id.
        tenant: String,
        /// Device id.
        device: String,
    },
    /// Issue the device a fresh bundle.
    Reissue {
        /// Tenant id.
        tenant: String,
        /// Device id.
        device: String,
    },
    /// Ask the device for its diagnostic report over MQTT (signed request, answer verified
    /// against the pinned key); prints each step and verdict, `--json` the raw document.
    Diag {
        /// Device id.
        device: String,
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Seconds to wait for the answer (1-25).
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
}

pub(super) async fn run(api: Client, c: Devices, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(DevicesCmd::List {
        customer: None,
        filter: None,
    }) {
        DevicesCmd::List { customer, filter } => {
            let mut pairs = vec![];
            if let Some(c) = &customer {
                pairs.push(("customerId", c.as_str()));
            }
            if let Some(f) = &filter {
                pairs.push(("filter", f.as_str()));
            }
            let items = api
                .get_all_numbered(&format!("/api/v1/devices{}", qs(&pairs)))
                .await?;
            if json_out {
                return print_json(&Value::Array(items));
            }
            let rows = items
                .iter()
                .map(|d| {
                    let services: Vec<String> = d["services"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| match x["state"].as_str() {
                            Some("granted") => format!("{}+", s(&x["service"])),
                            _ => format!("{}-({})", s(&x["service"]), s(&x["reason"])),
                        })
                        .collect();
                    vec![
                        s(&d["tenantId"]),
                        s(&d["deviceId"]),
                        s(&d["productClass"]),
                        s(&d["vmCount"]),
                        s(&d["bundle"]["seq"]),
                        s(&d["lastReportAt"]),
                        services.join(" "),
                    ]
                })
                .collect();
            print_table(
                &[
                    "TENANT",
                    "DEVICE",
                    "CLASS",
                    "VMS",
                    "SEQ",
                    "LAST REPORT",
                    "SERVICES",
                ],
                rows,
            );
            Ok(())
        }
        DevicesCmd::Show { tenant, device } => {
            let d = api
                .get(&format!("/api/v1/devices/{tenant}/{device}"))
                .await?;
            if json_out {
                return print_json(&d);
            }
            for (k, v) in [
                (
                    "device",
                    format!("{}/{}", s(&d["tenantId"]), s(&d["deviceId"])),
                ),
                ("model", s(&d["model"])),
                ("serial", s(&d["serial"])),
                ("class", s(&d["productClass"])),
                ("firmware", s(&d["firmwareVersion"])),
                ("agent", s(&d["agentVersion"])),
                ("vms", s(&d["vmCount"])),
                ("key", s(&d["deviceKey"])),
                ("last report", s(&d["lastReportAt"])),
                (
                    "bundle",
                    format!(
                        "seq {} (device holds {}), issued {}",
                        s(&d["bundle"]["seq"]),
                        s(&d["bundle"]["reportedSeq"]),
                        s(&d["bundle"]["issuedAt"])
                    ),
                ),
            ] {
                println!("{k:12} {v}");
            }
            let rows = d["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    vec![
                        s(&x["service"]),
                        s(&x["state"]),
                        s(&x["subscriptionId"]),
                        s(&x["sku"]),
                        s(&x["vmAllowance"]),
                        s(&x["reason"]),
                    ]
                })
                .collect();
            println!();
            print_table(
                &[
                    "SERVICE",
                    "STATE",
                    "SUBSCRIPTION",
                    "SKU",
                    "VM ALLOWANCE",
                    "REASON",
                ],
                rows,
            );
            Ok(())
        }
        DevicesCmd::Diag {
            device,
            tenant,
            timeout,
        } => {
            let v = api
                .post(
                    &format!("/api/v1/devices/{tenant}/{device}/diag?timeoutSecs={timeout}"),
                    json!({}),
                )
                .await?;
            if json_out {
                return print_json(&v["report"]);
            }
            let response = licd_protocol::DiagResponse {
                device: licd_protocol::DeviceId::new(&device)?,
                tenant: licd_protocol::TenantId::new(&tenant)?,
                request_id: [0; 16],
                generated_at: v["generatedAt"].as_u64().unwrap_or(0),
                report: v["report"].to_string(),
            };
            print!("{}", licd_stub::diag::render(&response));
            Ok(())
        }
        DevicesCmd::Reissue { tenant, device } => {
            let v = api
                .post(
                    &format!("/api/v1/devices/{tenant}/{device}/reissue"),
                    json!({}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            println!(
                "{tenant}/{device}: bundle seq {} published",
                s(&v["bundleSeq"])
            );
            Ok(())
        }
    }
}
