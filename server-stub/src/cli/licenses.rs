//! `licenses`: Snow-style licenses and assignments, seat counts in bulk.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::table::{print_table, s};
use super::{print_json, qs};

/// `licenses`.
#[derive(Debug, Args)]
pub struct Licenses {
    #[command(subcommand)]
    cmd: Option<LicensesCmd>,
}

#[derive(Debug, Subcommand)]
enum LicensesCmd {
    /// List licenses: seats per subscription and SKU (the default).
    List {
        /// Snow filter, e.g. 'sku -eq "LIC-AP"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// List assignments of licenses to devices.
    Assignments {
        /// Only this license (`<subscription>:<sku>`).
        #[arg(long)]
        license: Option<String>,
        /// Snow filter, e.g. 'customerId -eq "acme"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Set the seat count of licenses: --only IDS, --all-except IDS, or --all.
    SetSeats {
        /// New seat count.
        quantity: u32,
        /// Only these license ids.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["all_except", "all"])]
        only: Vec<String>,
        /// Every license but these.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        all_except: Vec<String>,
        /// Every license.
        #[arg(long)]
        all: bool,
        /// Narrow with a Snow filter.
        #[arg(long)]
        filter: Option<String>,
    },
}

pub(super) async fn run(api: Client, c: Licenses, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(LicensesCmd::List { filter: None }) {
        LicensesCmd::List { filter } => {
            let q = filter
                .as_deref()
                .map(|f| qs(&[("filter", f)]))
                .unwrap_or_default();
            let items = api
                .get_all_numbered(&format!("/api/v1/licenses{q}"))
                .await?;
            if json_out {
                return print_json(&Value::Array(items));
            }
            let rows = items
                .iter()
                .map(|l| {
                    vec![
                        s(&l["id"]),
                        s(&l["service"]),
                        s(&l["customerId"]),
                        format!("{}/{}", s(&l["assigned"]), s(&l["quantity"])),
                        s(&l["numberOfSupportedVirtualMachines"]),
                        s(&l["status"]),
                    ]
                })
                .collect();
            print_table(
                &["LICENSE", "SERVICE", "OWNER", "USED", "VMS/SEAT", "STATUS"],
                rows,
            );
            Ok(())
        }
        LicensesCmd::Assignments { license, filter } => {
            let base = match &license {
                Some(l) => format!("/api/v1/licenses/{l}/assignments"),
                None => "/api/v1/assignments".to_string(),
            };
            let q = filter
                .as_deref()
                .map(|f| qs(&[("filter", f)]))
                .unwrap_or_default();
            let items = api.get_all_numbered(&format!("{base}{q}")).await?;
            if json_out {
                return print_json(&Value::Array(items));
            }
            let rows = items
                .iter()
                .map(|a| {
                    vec![
                        s(&a["customerId"]),
                        s(&a["computerId"]),
                        s(&a["service"]),
                        s(&a["licenseId"]),
                        s(&a["virtualMachines"]),
                        s(&a["numberOfSupportedVirtualMachines"]),
                        s(&a["assignedAt"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "TENANT", "DEVICE", "SERVICE", "LICENSE", "VMS", "VMS/SEAT", "SINCE",
                ],
                rows,
            );
            Ok(())
        }
        LicensesCmd::SetSeats {
            quantity,
            only,
            all_except,
            all,
            filter,
        } => {
            let (scope, ids) = if all {
                ("All", vec![])
            } else if !all_except.is_empty() {
                ("AllExcept", all_except)
            } else if !only.is_empty() {
                ("Only", only)
            } else {
                bail!("choose the licenses: --only IDS, --all-except IDS or --all (ids from `licd-stub licenses`)");
            };
            let v = api
                .post(
                    "/api/v1/licenses/bulkUpdate",
                    json!({"scope": scope, "ids": ids, "filter": filter,
                           "body": {"quantity": quantity}}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            println!(
                "{} updated, {} failed",
                s(&v["successCount"]),
                s(&v["failedCount"])
            );
            for f in v["failed"].as_array().into_iter().flatten() {
                println!("  {}: {}", s(&f["id"]), s(&f["reason"]));
            }
            Ok(())
        }
    }
}
