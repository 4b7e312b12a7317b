//! `auto-license` and `unassign`: Aruba auto-licensing of services for a customer selection.

use anyhow::Result;
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{AutoLicenseRequest, AutoLicenseResponse, Policy, UnassignResponse};

use super::client::Client;
use super::output;
use super::table::{print_table, s};

/// Services and the customer selection of seeds 000/001.
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
    /// The request: a list left empty on the command line is left out.
    fn body(&self) -> AutoLicenseRequest {
        let given = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
        AutoLicenseRequest {
            services: Some(self.services.clone()),
            include_customers: given(&self.include),
            exclude_customers: given(&self.exclude),
        }
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

fn print_unassigned(u: UnassignResponse) {
    println!(
        "unassigned {} from {}: {} seat(s) released",
        u.services.join(", "),
        u.customers.join(", "),
        s(&u.seats_released)
    );
}

pub(super) async fn run(api: Client, c: AutoLicense, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(AutoLicenseCmd::Show) {
        AutoLicenseCmd::Show => {
            let v = api.get("/api/v1/auto-licensing").await?;
            output(v, json_out, |policies: Vec<Policy>| {
                let rows = policies
                    .into_iter()
                    .map(|p| {
                        vec![
                            s(&p.service),
                            if p.paused { "PAUSED" } else { "running" }.to_string(),
                            if p.inherit_to_new_tenants {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_string(),
                            p.customers.join(", "),
                        ]
                    })
                    .collect();
                print_table(&["SERVICE", "STATE", "NEW TENANTS", "CUSTOMERS"], rows);
            })
        }
        AutoLicenseCmd::Enable {
            selection,
            validate,
        } => {
            let q = if validate { "?validate=true" } else { "" };
            let v = api
                .post(
                    &format!("/api/v1/auto-licensing/enable{q}"),
                    &selection.body(),
                )
                .await?;
            output(v, json_out, |r: AutoLicenseResponse| {
                let verb = if validate { "would enable" } else { "enabled" };
                println!(
                    "{verb} {} for {} customer(s); {} seat(s) assigned",
                    selection.services.join(", "),
                    r.customers.len(),
                    s(&r.seats_assigned)
                );
                for p in &r.paused {
                    println!("  PAUSED: {} (fewer seats than devices)", s(p));
                }
                for i in &r.insufficient_entitlements {
                    println!(
                        "  missing {} x {} for {} ({})",
                        s(&i.quantity),
                        s(&i.sku),
                        s(&i.service),
                        s(&i.product_class)
                    );
                }
            })
        }
        AutoLicenseCmd::Disable { selection } => {
            unassign(api, Unassign { selection }, json_out).await
        }
    }
}

/// `unassign`: the same as `auto-license disable`.
pub(super) async fn unassign(api: Client, c: Unassign, json_out: bool) -> Result<()> {
    let v = api
        .post("/api/v1/auto-licensing/unassign", &c.selection.body())
        .await?;
    output(v, json_out, print_unassigned)
}
