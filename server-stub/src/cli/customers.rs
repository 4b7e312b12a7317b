//! `customers`: the MSP and its tenants.

use anyhow::Result;
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{Customer, CustomerKind, CustomerUpdate, NewCustomer};

use super::client::Client;
use super::output;
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

fn print_customers(customers: &[Customer]) {
    let kind = |k: CustomerKind| match k {
        CustomerKind::Msp => "msp",
        CustomerKind::Tenant => "tenant",
    };
    let rows = customers
        .iter()
        .map(|c| {
            vec![
                s(&c.id),
                s(&c.name),
                s(kind(c.kind)),
                s(&c.devices),
                s(&c.subscriptions),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "KIND", "DEVICES", "SUBSCRIPTIONS"], rows);
}

pub(super) async fn run(api: Client, c: Customers, json_out: bool) -> Result<()> {
    let one = match c.cmd.unwrap_or(CustomersCmd::List) {
        CustomersCmd::List => {
            let v = api.get("/api/v1/customers").await?;
            return output(v, json_out, |all: Vec<Customer>| print_customers(&all));
        }
        CustomersCmd::Add { id, name, msp } => {
            let kind = if msp {
                CustomerKind::Msp
            } else {
                CustomerKind::Tenant
            };
            let new = NewCustomer {
                id,
                name,
                kind: Some(kind),
            };
            api.post("/api/v1/customers", &new).await?
        }
        CustomersCmd::Show { id } => api.get(&format!("/api/v1/customers/{id}")).await?,
        CustomersCmd::Rename { id, name } => {
            api.patch(&format!("/api/v1/customers/{id}"), &CustomerUpdate { name })
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
    output(one, json_out, |c: Customer| {
        print_customers(std::slice::from_ref(&c))
    })
}
