//! `licenses`: Snow-style licenses and assignments, seat counts in bulk.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{
    Assignment, BulkUpdateRequest, BulkUpdateResponse, License, LicenseUpdate, Scope,
};
use serde_json::Value;

use super::client::Client;
use super::table::{print_table, s};
use super::{output, qs};

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

fn print_licenses(licenses: Vec<License>) {
    let rows = licenses
        .iter()
        .map(|l| {
            vec![
                s(&l.id),
                s(&l.service),
                s(&l.customer_id),
                format!("{}/{}", s(&l.assigned), s(&l.quantity)),
                s(&l.number_of_supported_virtual_machines),
                s(&l.status),
            ]
        })
        .collect();
    print_table(
        &["LICENSE", "SERVICE", "OWNER", "USED", "VMS/SEAT", "STATUS"],
        rows,
    );
}

fn print_assignments(assignments: Vec<Assignment>) {
    let rows = assignments
        .iter()
        .map(|a| {
            vec![
                s(&a.customer_id),
                s(&a.computer_id),
                s(&a.service),
                s(&a.license_id),
                s(&a.virtual_machines),
                s(&a.number_of_supported_virtual_machines),
                s(&a.assigned_at),
            ]
        })
        .collect();
    print_table(
        &[
            "TENANT", "DEVICE", "SERVICE", "LICENSE", "VMS", "VMS/SEAT", "SINCE",
        ],
        rows,
    );
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
            output(Value::Array(items), json_out, print_licenses)
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
            output(Value::Array(items), json_out, print_assignments)
        }
        LicensesCmd::SetSeats {
            quantity,
            only,
            all_except,
            all,
            filter,
        } => {
            let (scope, ids) = if all {
                (Scope::All, vec![])
            } else if !all_except.is_empty() {
                (Scope::AllExcept, all_except)
            } else if !only.is_empty() {
                (Scope::Only, only)
            } else {
                bail!("choose the licenses: --only IDS, --all-except IDS or --all (ids from `licd-stub licenses`)");
            };
            let req = BulkUpdateRequest {
                filter,
                scope,
                ids,
                body: LicenseUpdate { quantity },
            };
            let v = api.post("/api/v1/licenses/bulkUpdate", &req).await?;
            output(v, json_out, |r: BulkUpdateResponse| {
                println!(
                    "{} updated, {} failed",
                    s(&r.success_count),
                    s(&r.failed_count)
                );
                for f in &r.failed {
                    println!("  {}: {}", s(&f.id), s(&f.reason));
                }
            })
        }
    }
}
