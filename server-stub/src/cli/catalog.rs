//! `catalog`: the entitlements catalogue (SKUs).

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::Client;
use super::print_json;
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

pub(super) async fn run(api: Client, c: Catalog, json_out: bool) -> Result<()> {
    let v = match c.cmd.unwrap_or(CatalogCmd::List) {
        CatalogCmd::List => api.get("/api/v1/entitlements").await?,
        CatalogCmd::Add {
            sku,
            service,
            product_class,
            name,
            vms_per_seat,
        } => {
            api.post(
                "/api/v1/entitlements",
                json!({"sku": sku, "service": service, "productClass": product_class,
                       "name": name, "vmsPerSeat": vms_per_seat}),
            )
            .await?
        }
    };
    if json_out {
        return print_json(&v);
    }
    let items = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    let rows = items
        .iter()
        .map(|e| {
            vec![
                s(&e["sku"]),
                s(&e["service"]),
                s(&e["productClass"]),
                s(&e["vmsPerSeat"]),
                s(&e["name"]),
            ]
        })
        .collect();
    print_table(&["SKU", "SERVICE", "CLASS", "VMS/SEAT", "NAME"], rows);
    Ok(())
}
