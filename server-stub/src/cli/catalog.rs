//! `catalog`: the entitlements catalogue (SKUs).

use anyhow::Result;
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{Entitlement, NewEntitlement};

use super::client::Client;
use super::output;
use super::table::{print_table, s};

/// `catalog`.
#[derive(Debug, Args)]
pub struct Catalog {
    #[command(subcommand)]
    cmd: Option<CatalogCmd>,
}

#[derive(Debug, Subcommand)]
enum CatalogCmd {
    /// List SKUs (the default).
    List,
    /// Add a SKU.
    Add {
        /// SKU.
        sku: String,
        /// Service a seat licenses.
        #[arg(long)]
        service: String,
        /// Product class of the devices it is for.
        #[arg(long = "class")]
        product_class: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// VMs one seat covers (per-VM licenses).
        #[arg(long)]
        vms_per_seat: Option<u32>,
    },
}

fn print_entitlements(items: &[Entitlement]) {
    let rows = items
        .iter()
        .map(|e| {
            vec![
                s(&e.sku),
                s(&e.service),
                s(&e.product_class),
                s(&e.vms_per_seat),
                s(&e.name),
            ]
        })
        .collect();
    print_table(&["SKU", "SERVICE", "CLASS", "VMS/SEAT", "NAME"], rows);
}

pub(super) async fn run(api: Client, c: Catalog, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(CatalogCmd::List) {
        CatalogCmd::List => {
            let v = api.get("/api/v1/entitlements").await?;
            output(v, json_out, |all: Vec<Entitlement>| {
                print_entitlements(&all)
            })
        }
        CatalogCmd::Add {
            sku,
            service,
            product_class,
            name,
            vms_per_seat,
        } => {
            let new = NewEntitlement {
                sku,
                name,
                service,
                product_class,
                vms_per_seat,
            };
            let v = api.post("/api/v1/entitlements", &new).await?;
            output(v, json_out, |e: Entitlement| {
                print_entitlements(std::slice::from_ref(&e))
            })
        }
    }
}
