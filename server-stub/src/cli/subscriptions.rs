//! `subscriptions`: list, show, add, claim, validate a claim key, bind customers.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{
    BindRequest, BindResponse, ClaimKeyRequest, ClaimRequest, NewSubscription,
    NewSubscriptionEntitlement, Subscription,
};
use serde_json::Value;

use super::client::Client;
use super::table::{print_table, s};
use super::{decode, output, qs};

/// `subscriptions`.
#[derive(Debug, Args)]
pub struct Subscriptions {
    #[command(subcommand)]
    cmd: Option<SubscriptionsCmd>,
}

#[derive(Debug, Subcommand)]
enum SubscriptionsCmd {
    /// List subscriptions (the default), following every page.
    List {
        /// Owned by or bound to these customers.
        #[arg(long = "customer", value_delimiter = ',')]
        customers: Vec<String>,
        /// unclaimed, inactive, active, expired.
        #[arg(long = "status", value_delimiter = ',')]
        statuses: Vec<String>,
        /// With entitlements for these SKUs.
        #[arg(long = "sku", value_delimiter = ',')]
        skus: Vec<String>,
        /// With entitlements for these product types.
        #[arg(long = "product-type", value_delimiter = ',')]
        product_types: Vec<String>,
        /// Name contains.
        #[arg(long)]
        name: Option<String>,
        /// Page size asked of the API (3-1000).
        #[arg(long, default_value_t = 1000)]
        per_page: u32,
    },
    /// Show a subscription.
    Show {
        /// Subscription id.
        id: String,
    },
    /// Add a subscription: owned (--owner) or claimable (--claim-key).
    Add {
        /// Subscription id.
        id: String,
        /// Seats per SKU, e.g. --seats LIC-AP=10 (repeatable).
        #[arg(long = "seats", value_name = "SKU=N", required = true)]
        seats: Vec<String>,
        /// Term end (ISO 8601, e.g. 2027-06-30, or unix seconds).
        #[arg(long)]
        end: String,
        /// Term start (default now).
        #[arg(long)]
        start: Option<String>,
        /// Owner.
        #[arg(long, conflicts_with = "claim_key")]
        owner: Option<String>,
        /// Claim key, to claim later.
        #[arg(long)]
        claim_key: Option<String>,
        /// Name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Claim a subscription by its claim key.
    Claim {
        /// Claim key.
        claim_key: String,
        /// Customer claiming it.
        #[arg(long)]
        customer: String,
        /// Only check; change nothing.
        #[arg(long)]
        validate: bool,
    },
    /// Find the subscription a claim key belongs to (and check it is unclaimed).
    Validate {
        /// Claim key.
        claim_key: String,
    },
    /// Bind customers to a subscription (their devices may use its seats).
    Bind {
        /// Subscription id.
        id: String,
        /// Customers (repeatable or comma-separated).
        #[arg(long = "customer", value_delimiter = ',', required = true)]
        customers: Vec<String>,
        /// Only report problems and missing seats; change nothing.
        #[arg(long)]
        validate: bool,
    },
}

fn print_subscriptions(items: &[Subscription]) {
    let rows = items
        .iter()
        .map(|v| {
            let skus: Vec<String> = v
                .entitlements
                .iter()
                .map(|e| {
                    format!(
                        "{} {}/{}",
                        s(&e.sku),
                        s(&e.seats.assigned),
                        s(&e.seats.limit)
                    )
                })
                .collect();
            vec![
                s(&v.subscription_id),
                s(&v.name),
                s(&v.customer_id),
                s(&v.status),
                s(&v.end_date),
                skus.join(", "),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "OWNER",
            "STATUS",
            "ENDS",
            "SEATS (used/limit)",
        ],
        rows,
    );
}

pub(super) async fn run(api: Client, c: Subscriptions, json_out: bool) -> Result<()> {
    let cmd = c.cmd.unwrap_or(SubscriptionsCmd::List {
        customers: vec![],
        statuses: vec![],
        skus: vec![],
        product_types: vec![],
        name: None,
        per_page: 1000,
    });
    let v = match cmd {
        SubscriptionsCmd::List {
            customers,
            statuses,
            skus,
            product_types,
            name,
            per_page,
        } => {
            let per_page = per_page.to_string();
            let (cu, st, sk, pt) = (
                customers.join(","),
                statuses.join(","),
                skus.join(","),
                product_types.join(","),
            );
            let mut pairs = vec![("perPage", per_page.as_str())];
            for (k, v) in [
                ("customerIds", cu.as_str()),
                ("statuses", st.as_str()),
                ("skus", sk.as_str()),
                ("productTypes", pt.as_str()),
                ("name", name.as_deref().unwrap_or("")),
            ] {
                if !v.is_empty() {
                    pairs.push((k, v));
                }
            }
            let items = api
                .get_all_pages(&format!("/api/v1/subscriptions{}", qs(&pairs)))
                .await?;
            return output(Value::Array(items), json_out, |all: Vec<Subscription>| {
                print_subscriptions(&all)
            });
        }
        SubscriptionsCmd::Show { id } => api.get(&format!("/api/v1/subscriptions/{id}")).await?,
        SubscriptionsCmd::Add {
            id,
            seats,
            end,
            start,
            owner,
            claim_key,
            name,
        } => {
            let mut entitlements = Vec::new();
            for s in &seats {
                let (sku, n) = s
                    .split_once('=')
                    .with_context(|| format!("--seats {s:?}: expected SKU=N, e.g. LIC-AP=10"))?;
                let limit: u32 = n
                    .parse()
                    .with_context(|| format!("--seats {s:?}: N must be a number"))?;
                entitlements.push(NewSubscriptionEntitlement {
                    sku: sku.to_string(),
                    limit,
                });
            }
            let new = NewSubscription {
                subscription_id: id,
                name,
                customer_id: owner,
                claim_key,
                start_date: start,
                end_date: end,
                entitlements,
            };
            api.post("/api/v1/subscriptions", &new).await?
        }
        SubscriptionsCmd::Claim {
            claim_key,
            customer,
            validate,
        } => {
            let path = if validate {
                "/api/v1/subscriptions/claim?validate=true"
            } else {
                "/api/v1/subscriptions/claim"
            };
            let req = ClaimRequest {
                claim_key: claim_key.clone(),
                customer_id: customer.clone(),
            };
            let v = api.post(path, &req).await?;
            if validate && !json_out {
                // The answer shows the subscription as it would be once claimed: say so, and
                // not as a table that reads like a claim that happened.
                let sub: Subscription = decode(v)?;
                let seats: Vec<String> = sub
                    .entitlements
                    .iter()
                    .map(|e| format!("{} x {}", s(&e.seats.limit), s(&e.sku)))
                    .collect();
                println!(
                    "validated only, nothing changed: claim key {claim_key} would give {customer} \
                     subscription {} ({}; ends {}; {})",
                    s(&sub.subscription_id),
                    s(&sub.name),
                    s(&sub.end_date),
                    seats.join(", ")
                );
                return Ok(());
            }
            v
        }
        SubscriptionsCmd::Validate { claim_key } => {
            api.post(
                "/api/v1/subscriptions/claimKey/validate",
                &ClaimKeyRequest { claim_key },
            )
            .await?
        }
        SubscriptionsCmd::Bind {
            id,
            customers,
            validate,
        } => {
            let q = if validate { "?validate=true" } else { "" };
            let v = api
                .post(
                    &format!("/api/v1/subscriptions/{id}/bind{q}"),
                    &BindRequest {
                        customer_ids: customers,
                    },
                )
                .await?;
            return output(v, json_out, |b: BindResponse| {
                let names: Vec<String> = b.customers.iter().map(|c| s(&c.id)).collect();
                let verb = if validate { "would be bound" } else { "bound" };
                println!("{id}: {verb}: {}", names.join(", "));
                for e in &b.errors {
                    println!("  problem: {}", s(e));
                }
                for i in &b.insufficient_entitlements {
                    println!("  missing: {} x {}", s(&i.quantity), s(&i.sku));
                }
            });
        }
    };
    output(v, json_out, |sub: Subscription| {
        print_subscriptions(std::slice::from_ref(&sub))
    })
}
