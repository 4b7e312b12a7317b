//! `customers`: the MSP and its tenants.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::print_json;
use super::table::{print_table, s};

/// `customers`.
#[derive(Debug, Args)]
pub struct Customers {
    #[command(subcommand)]
    cmd: Option<CustomersCmd>,
}

#[derive(Debug, Subcommand)]
enum CustomersCmd {
    /// List customers (the default).
    List,
    /// Add a customer (a tenant unless --msp).
    Add {
        /// Id, also the tenant level of its devices' topics.
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Make it the MSP.
        #[arg(long)]
        msp: bool,
    },
    /// Show a customer.
    Show {
        /// Customer id.
        id: String,
    },
    /// Rename a customer.
    Rename {
        /// Customer id.
        id: String,
        /// New name.
        name: String,
    },
    /// Remove a customer that owns no subscription and has no device.
    Remove {
        /// Customer id.
        id: String,
    },
}

fn customer_rows(v: &Value) -> Vec<Vec<String>> {
    let one = |c: &Value| {
        vec![
            s(&c["id"]),
            s(&c["name"]),
            s(&c["kind"]),
            s(&c["devices"]),
            s(&c["subscriptions"]),
        ]
    };
    match v.as_array() {
        Some(a) => a.iter().map(one).collect(),
        None => vec![one(v)],
    }
}

pub(super) async fn run(api: Client, c: Customers, json_out: bool) -> Result<()> {
    let v = match c.cmd.unwrap_or(CustomersCmd::List) {
        CustomersCmd::List => api.get("/api/v1/customers").await?,
        CustomersCmd::Add { id, name, msp } => {
            let kind = if msp { "msp" } else { "tenant" };
            api.post(
                "/api/v1/customers",
                json!({"id": id, "name": name, "kind": kind}),
            )
            .await?
        }
        CustomersCmd::Show { id } => api.get(&format!("/api/v1/customers/{id}")).await?,
        CustomersCmd::Rename { id, name } => {
            api.patch(&format!("/api/v1/customers/{id}"), json!({"name": name}))
                .await?
        }
        CustomersCmd::Remove { id } => {
            api.delete(&format!("/api/v1/customers/{id}")).await?;
            if !json_out {
                eprintln!("customer {id} removed");
            }
            return Ok(());
        }
    };
    if json_out {
        return print_json(&v);
    }
    print_table(
        &["ID", "NAME", "KIND", "DEVICES", "SUBSCRIPTIONS"],
        customer_rows(&v),
    );
    Ok(())
}
