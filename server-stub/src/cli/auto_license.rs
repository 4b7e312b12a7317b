//! `auto-license` and `unassign`: Aruba auto-licensing of services for a customer selection.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::print_json;
use super::table::{print_table, s};

#[derive(Debug, Args)]
struct Selection {
    /// Services (repeatable or comma-separated), e.g. --service wifi,security.
    #[arg(long = "service", value_delimiter = ',', required = true)]
    services: Vec<String>,
    /// Only these customers.
    #[arg(long = "include", value_delimiter = ',', conflicts_with = "exclude")]
    include: Vec<String>,
    /// Every customer but these.
    #[arg(long = "exclude", value_delimiter = ',')]
    exclude: Vec<String>,
}

impl Selection {
    fn body(&self) -> Value {
        let mut b = json!({ "services": self.services });
        if !self.include.is_empty() {
            b["include_customers"] = json!(self.include);
        }
        if !self.exclude.is_empty() {
            b["exclude_customers"] = json!(self.exclude);
        }
        b
    }
}

/// `auto-license`.
#[derive(Debug, Args)]
pub struct AutoLicense {
    #[command(subcommand)]
    cmd: Option<AutoLicenseCmd>,
}

#[derive(Debug, Subcommand)]
enum AutoLicenseCmd {
    /// Show the policies in force (the default).
    Show,
    /// Enable auto-licensing (neither --include nor --exclude: every customer, and new
    /// tenants inherit it).
    Enable {
        #[command(flatten)]
        selection: Selection,
        /// Only report what would happen.
        #[arg(long)]
        validate: bool,
    },
    /// Disable it: the same as `unassign` (seats are released, auto-licensing turned off).
    Disable {
        #[command(flatten)]
        selection: Selection,
    },
}

/// `unassign`.
#[derive(Debug, Args)]
pub struct Unassign {
    #[command(flatten)]
    selection: Selection,
}

fn unassigned(v: &Value, json_out: bool) {
    if json_out {
        let _ = print_json(v);
        return;
    }
    println!(
        "unassigned {} from {}: {} seat(s) released",
        v["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect::<Vec<_>>()
            .join(", "),
        v["customers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect::<Vec<_>>()
            .join(", "),
        s(&v["seats_released"])
    );
}

pub(super) async fn run(api: Client, c: AutoLicense, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(AutoLicenseCmd::Show) {
        AutoLicenseCmd::Show => {
            let v = api.get("/api/v1/auto-licensing").await?;
            if json_out {
                return print_json(&v);
            }
            let rows = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let customers: Vec<String> = p["customers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    vec![
                        s(&p["service"]),
                        if p["paused"] == true {
                            "PAUSED"
                        } else {
                            "running"
                        }
                        .to_string(),
                        if p["inherit_to_new_tenants"] == true {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_string(),
                        customers.join(", "),
                    ]
                })
                .collect();
            print_table(&["SERVICE", "STATE", "NEW TENANTS", "CUSTOMERS"], rows);
            Ok(())
        }
        AutoLicenseCmd::Enable {
            selection,
            validate,
        } => {
            let q = if validate { "?validate=true" } else { "" };
            let v = api
                .post(
                    &format!("/api/v1/auto-licensing/enable{q}"),
                    selection.body(),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            let verb = if validate { "would enable" } else { "enabled" };
            println!(
                "{verb} {} for {} customer(s); {} seat(s) assigned",
                selection.services.join(", "),
                v["customers"].as_array().map_or(0, Vec::len),
                s(&v["seats_assigned"])
            );
            for p in v["paused"].as_array().into_iter().flatten() {
                println!("  PAUSED: {} (fewer seats than devices)", s(p));
            }
            for i in v["insufficient_entitlements"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "  missing {} x {} for {} ({})",
                    s(&i["quantity"]),
                    s(&i["sku"]),
                    s(&i["service"]),
                    s(&i["product_class"])
                );
            }
            Ok(())
        }
        AutoLicenseCmd::Disable { selection } => {
            let v = api
                .post("/api/v1/auto-licensing/unassign", selection.body())
                .await?;
            unassigned(&v, json_out);
            Ok(())
        }
    }
}

/// `unassign`: the same as `auto-license disable`.
pub(super) async fn unassign(api: Client, c: Unassign, json_out: bool) -> Result<()> {
    let v = api
        .post("/api/v1/auto-licensing/unassign", c.selection.body())
        .await?;
    unassigned(&v, json_out);
    Ok(())
}
