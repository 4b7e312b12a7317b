//! `devices`: list, show, re-issue a bundle, remote diagnostics.

use anyhow::Result;
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{Device, ReissueResponse};
use licd_stub::admin::handlers::devices::DiagReport;
use serde_json::{json, Value};

use super::client::Client;
use super::table::{print_table, s};
use super::{decode, output, print_json, qs};

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

fn print_list(devices: Vec<Device>) {
    let rows = devices
        .iter()
        .map(|d| {
            let services: Vec<String> = d
                .services
                .iter()
                .map(|x| match x.state.as_str() {
                    "granted" => format!("{}+", s(&x.service)),
                    _ => format!("{}-({})", s(&x.service), s(&x.reason)),
                })
                .collect();
            vec![
                s(&d.tenant_id),
                s(&d.device_id),
                s(&d.product_class),
                s(&d.vm_count),
                s(&d.bundle.seq),
                s(&d.last_report_at),
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
}

fn print_device(d: Device) {
    for (k, v) in [
        ("device", format!("{}/{}", s(&d.tenant_id), s(&d.device_id))),
        ("model", s(&d.model)),
        ("serial", s(&d.serial)),
        ("class", s(&d.product_class)),
        ("firmware", s(&d.firmware_version)),
        ("agent", s(&d.agent_version)),
        ("vms", s(&d.vm_count)),
        ("key", s(&d.device_key)),
        ("last report", s(&d.last_report_at)),
        (
            "bundle",
            format!(
                "seq {} (device holds {}), issued {}",
                s(&d.bundle.seq),
                s(&d.bundle.reported_seq),
                s(&d.bundle.issued_at)
            ),
        ),
    ] {
        println!("{k:12} {v}");
    }
    let rows = d
        .services
        .iter()
        .map(|x| {
            vec![
                s(&x.service),
                s(&x.state),
                s(&x.subscription_id),
                s(&x.sku),
                s(&x.vm_allowance),
                s(&x.reason),
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
    super::offline::print_history(&d);
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
            output(Value::Array(items), json_out, print_list)
        }
        DevicesCmd::Show { tenant, device } => {
            let d = api
                .get(&format!("/api/v1/devices/{tenant}/{device}"))
                .await?;
            output(d, json_out, print_device)
        }
        DevicesCmd::Diag {
            device,
            tenant,
            timeout,
        } => {
            let v = api
                .post(
                    &format!("/api/v1/devices/{tenant}/{device}/diag?timeoutSecs={timeout}"),
                    &json!({}),
                )
                .await?;
            let r: DiagReport = decode(v)?;
            if json_out {
                return print_json(&r.report);
            }
            let response = licd_protocol::DiagResponse {
                device: licd_protocol::DeviceId::new(&device)?,
                tenant: licd_protocol::TenantId::new(&tenant)?,
                request_id: [0; 16],
                generated_at: r.generated_at,
                report: r.report.to_string(),
            };
            print!("{}", licd_stub::diag::render(&response));
            Ok(())
        }
        DevicesCmd::Reissue { tenant, device } => {
            let v = api
                .post(
                    &format!("/api/v1/devices/{tenant}/{device}/reissue"),
                    &json!({}),
                )
                .await?;
            output(v, json_out, |r: ReissueResponse| {
                println!(
                    "{tenant}/{device}: bundle seq {} published",
                    s(&r.bundle_seq)
                );
            })
        }
    }
}
