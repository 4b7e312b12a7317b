//! `licd-stub delegate` and `licd-stub delegations list|show|return|revoke`: the admin API's
//! delegation routes from the command line. `delegate` asks the running controller to sign
//! the delegation and reserve its seats, then writes the file to carry to the site.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use licd_stub::admin::handlers::delegations::{DelegatedLease, Delegation};

use super::client::Client;
use super::table::print_table;
use super::{output, print_json};

/// `delegate`: the flags it has always had; the controller now signs and reserves.
#[derive(Debug, Args)]
pub struct DelegateArgs {
    /// The relay's public key (hex), as `licd-stub relay init` printed it.
    #[arg(long)]
    relay_key: String,
    /// The only tenant whose devices the relay may license.
    #[arg(long)]
    tenant: String,
    /// The site (devices there are configured with `site = "…"`).
    #[arg(long)]
    site: String,
    /// A seat pool, SERVICE=SEATS (repeat for several services, at most 16).
    #[arg(long = "service", required = true)]
    services: Vec<String>,
    /// Longest lease the relay may give, in seconds.
    #[arg(long, default_value_t = 3600)]
    max_lease_secs: u32,
    /// How long the delegation is valid, in days (capped by the signing key's certificate).
    #[arg(long, default_value_t = 30)]
    valid_days: u32,
    /// Reserve only seats of SKUs for this product class.
    #[arg(long)]
    product_class: Option<String>,
    /// Key directory: where the admin token is looked for (`<key dir>/admin.token`) unless
    /// --token-file is given.
    #[arg(long)]
    pub key_dir: Option<PathBuf>,
    /// Where to write the delegation file (the relay's `delegation.hex`).
    #[arg(long)]
    out: PathBuf,
    /// Write the delegation armored (`-----BEGIN LICD DELEGATION-----`, for `licd-stub relay
    /// import`) instead of hex.
    #[arg(long)]
    armor: bool,
}

/// `delegations`.
#[derive(Debug, Args)]
pub struct Delegations {
    #[command(subcommand)]
    cmd: DelegationsCmd,
}

#[derive(Debug, Subcommand)]
enum DelegationsCmd {
    /// List delegations: site, relay key, status, seats reserved.
    List,
    /// Show one delegation; --out writes its file again (the relay's `delegation.hex`).
    Show {
        /// Delegation id (`dlg-N`).
        id: String,
        /// Write the delegation file here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Write it armored (for `licd-stub relay import`) instead of hex.
        #[arg(long)]
        armor: bool,
    },
    /// Return a delegation: its seats are free again (the relay key is not revoked).
    Return {
        /// Delegation id.
        id: String,
    },
    /// Revoke a delegation: the relay key goes on the revocation list devices honour, and
    /// its seats are free.
    Revoke {
        /// Delegation id.
        id: String,
    },
    /// What the delegation's relay reported issuing (over its uplink).
    Leases {
        /// Delegation id.
        id: String,
    },
}

fn write_file(d: &Delegation, out: &std::path::Path, armor: bool) -> Result<()> {
    if armor {
        return std::fs::write(out, &d.armored)
            .with_context(|| format!("cannot write {}", out.display()));
    }
    let bytes = hex::decode(&d.delegation)
        .context("the controller's delegation is not hex (is the server the same version?)")?;
    licd_stub::relay::site::write_delegation_file(out, &bytes)?;
    Ok(())
}

fn seats(d: &Delegation) -> String {
    d.pools
        .iter()
        .map(|p| format!("{}={}", p.service, p.seats))
        .collect::<Vec<_>>()
        .join(" ")
}

fn status(d: &Delegation) -> String {
    serde_json::to_value(d.status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Runs `delegate` against the admin API.
pub async fn delegate(api: Client, a: DelegateArgs, json_out: bool) -> Result<()> {
    let mut pools = Vec::new();
    for s in &a.services {
        let (service, seats) = s
            .split_once('=')
            .with_context(|| format!("--service {s:?}: expected SERVICE=SEATS"))?;
        let seats: u32 = seats
            .parse()
            .with_context(|| format!("--service {s:?}: seats must be a number"))?;
        pools.push(json!({"service": service, "seats": seats}));
    }
    let mut body = json!({
        "relayKey": a.relay_key,
        "customerId": a.tenant,
        "siteId": a.site,
        "pools": pools,
        "maxLeaseSecs": a.max_lease_secs,
        "validDays": a.valid_days,
    });
    if let Some(pc) = a.product_class {
        body["productClass"] = json!(pc);
    }
    let v = api.post("/api/v1/delegations", &body).await?;
    let d: Delegation = super::decode(v.clone())?;
    write_file(&d, &a.out, a.armor)?;
    if json_out {
        return print_json(&v);
    }
    println!(
        "delegation {} for relay {} at site {} ({}, valid until {}) written to {}: seats \
         reserved in the controller's ledger. Carry it to the site and put it in the relay's \
         directory as {} (or `licd-stub relay import`).",
        d.id,
        d.relay_key_id,
        d.site_id,
        seats(&d),
        d.valid_until,
        a.out.display(),
        licd_stub::relay::site::DELEGATION_FILE
    );
    Ok(())
}

/// Runs one `delegations` command against the admin API.
pub async fn run(api: Client, c: Delegations, json_out: bool) -> Result<()> {
    match c.cmd {
        DelegationsCmd::List => {
            let v = api.get("/api/v1/delegations").await?;
            output(v, json_out, |ds: Vec<Delegation>| {
                let rows = ds
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.customer_id.clone(),
                            d.site_id.clone(),
                            d.relay_key_id.clone(),
                            status(d),
                            seats(d),
                            d.valid_until.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "ID",
                        "CUSTOMER",
                        "SITE",
                        "RELAY KEY",
                        "STATUS",
                        "SEATS",
                        "UNTIL",
                    ],
                    rows,
                );
            })
        }
        DelegationsCmd::Show { id, out, armor } => {
            let v = api.get(&format!("/api/v1/delegations/{id}")).await?;
            let d: Delegation = super::decode(v.clone())?;
            if let Some(out) = &out {
                write_file(&d, out, armor)?;
            }
            if json_out {
                return print_json(&v);
            }
            println!(
                "delegation {} ({}): customer {}, site {}, relay key {}",
                d.id,
                status(&d),
                d.customer_id,
                d.site_id,
                d.relay_key_id
            );
            println!(
                "valid {} .. {}, leases up to {} s",
                d.valid_from, d.valid_until, d.max_lease_secs
            );
            for p in &d.pools {
                let from = p
                    .reserved
                    .iter()
                    .map(|r| format!("{} {}×{}", r.subscription_id, r.sku, r.seats))
                    .collect::<Vec<_>>()
                    .join(", ");
                println!("  {}: {} seats reserved from {from}", p.service, p.seats);
            }
            if let Some(out) = out {
                println!("delegation file written to {}", out.display());
            }
            Ok(())
        }
        DelegationsCmd::Return { id } => {
            let v = api
                .post(&format!("/api/v1/delegations/{id}/return"), &json!({}))
                .await?;
            output(v, json_out, |d: Delegation| {
                println!(
                    "delegation {} returned: {} seats free again",
                    d.id,
                    seats(&d)
                );
            })
        }
        DelegationsCmd::Leases { id } => {
            let v = api.get(&format!("/api/v1/delegations/{id}/leases")).await?;
            output(v, json_out, |ls: Vec<DelegatedLease>| {
                let rows = ls
                    .iter()
                    .map(|l| {
                        vec![
                            l.n.to_string(),
                            l.device_id.clone(),
                            l.service.clone(),
                            l.bundle_seq.to_string(),
                            l.issued_at.clone(),
                            l.lease_until.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &["N", "DEVICE", "SERVICE", "SEQ", "ISSUED", "LEASE UNTIL"],
                    rows,
                );
            })
        }
        DelegationsCmd::Revoke { id } => {
            let v = api
                .post(&format!("/api/v1/delegations/{id}/revoke"), &json!({}))
                .await?;
            output(v, json_out, |d: Delegation| {
                println!(
                    "delegation {} revoked: relay key {} is on revocation list version {} \
                     (published retained on licd/v1/trust/revocations); {} seats free again",
                    d.id,
                    d.relay_key_id,
                    d.revocation_list_version.unwrap_or_default(),
                    seats(&d)
                );
            })
        }
    }
}
