//! The lab engineer's subcommands of `licd-stub`: `customers`, `catalog`, `subscriptions`,
//! `auto-license`, `unassign`, `devices`, `compliance`, `licenses`, `policy`, `usage` talk to a running stub's
//! admin API over HTTP (reqwest, plain HTTP on loopback); `token` manages the API's bearer
//! tokens locally. Human tables by default, `--json` for scripts; errors say what to fix.
//!
//! One file per resource: its clap arguments and its `run`. Requests are built from, and
//! answers decoded into, the admin API's own types (`licd_stub::admin::dto`, the types the
//! OpenAPI document is generated from), so a field renamed on the server is a compile error
//! here, and an answer of another shape is an error naming the field, never an empty column.
//! `--json` prints the server's JSON as it came.

mod auto_license;
mod catalog;
mod client;
mod compliance;
mod customers;
mod delegations;
mod devices;
mod licenses;
mod meraki;
mod offline;
mod policy;
mod subscriptions;
mod table;
mod token;
mod usage;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use licd_stub::admin::token::{read_token_file, ADMIN_TOKEN_FILE};
use serde::de::DeserializeOwned;
use serde_json::Value;

use client::Client;

pub use auto_license::{AutoLicense, Unassign};
pub use catalog::Catalog;
pub use compliance::Compliance;
pub use customers::Customers;
pub use delegations::DelegateArgs;
pub use devices::Devices;
pub use licenses::Licenses;
pub use subscriptions::Subscriptions;
pub use token::{admin_token_after_init, TokenArgs};

/// Where and how to reach the admin API. Global: accepted before or after the subcommand
/// (`licd-stub --admin-url URL devices` and `licd-stub devices --admin-url URL`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Admin API client (admin subcommands)")]
pub struct ClientArgs {
    /// Base URL of the admin API (`licd-stub serve --admin-listen`).
    #[arg(
        long,
        global = true,
        env = "LICD_STUB_ADMIN_URL",
        default_value = "http://127.0.0.1:8180"
    )]
    admin_url: String,
    /// File with the bearer token (default: <key dir>/admin.token, made by `keys init`).
    #[arg(long, global = true, env = "LICD_STUB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
}

/// The admin subcommands (flattened into the binary's command list).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Customers: the MSP and its tenants (list, add, show, rename, remove).
    Customers(Customers),
    /// The entitlements catalogue: SKUs, the service each licenses, per-VM rights.
    Catalog(Catalog),
    /// Subscriptions: list (filters), show, add, claim, validate a claim key, bind customers.
    Subscriptions(Subscriptions),
    /// Aruba auto-licensing: enable for services and customers, disable (= unassign), show.
    #[command(name = "auto-license")]
    AutoLicense(AutoLicense),
    /// Remove service licenses from the selected customers' devices (MSP devices included).
    Unassign(Unassign),
    /// Devices: list, show one (grants, bundle seq), re-issue its bundle.
    Devices(Devices),
    /// Compliance of customers (all when none is named).
    Compliance(Compliance),
    /// Snow-style licenses and assignments; set seat counts in bulk.
    Licenses(Licenses),
    /// Licensing by file: answer an activation request with a grant file, apply a release
    /// receipt (`licd request` / `licd release` on the device).
    Offline(offline::Offline),
    /// Licensing policy per SKU or subscription: expiry strategy, overage tolerance,
    /// expiring-soon thresholds, offline lease (show, set, clear).
    Policy(policy::PolicyArgs),
    /// Usage reported by devices, counted once: grace seconds, peak VMs, refusals per window.
    Usage(usage::UsageArgs),
    /// Site delegations: list, show (and write the file again), return, revoke.
    Delegations(delegations::Delegations),
    /// Meraki compliance statuses per subscription (what each lacks, by product class).
    #[command(name = "compliance-statuses")]
    ComplianceStatuses(meraki::ComplianceStatuses),
    /// Meraki co-term licenses: list an organization's, move seats to another.
    Coterm(meraki::Coterm),
    /// Admin API bearer tokens (local: the token store in the key directory).
    Token(TokenArgs),
}

/// Runs an admin subcommand with the (global) connection options. `config_key_dir` is the
/// config file's `key_dir`.
pub fn run(
    cmd: AdminCommand,
    args: &ClientArgs,
    config_key_dir: Option<PathBuf>,
    now: u64,
) -> Result<()> {
    if let AdminCommand::Token(t) = cmd {
        return token::run(t, config_key_dir, now);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_client(cmd, args, config_key_dir))
}

fn client(args: &ClientArgs, config_key_dir: Option<PathBuf>) -> Result<Client> {
    let file = match &args.token_file {
        Some(f) => f.clone(),
        None => token::key_dir(None, config_key_dir).join(ADMIN_TOKEN_FILE),
    };
    if !file.exists() {
        bail!(
            "no admin token: {} does not exist; run `licd-stub token create` (or `keys init`) \
             or pass --token-file",
            file.display()
        );
    }
    let token = read_token_file(&file)
        .with_context(|| format!("reading the admin token from {}", file.display()))?;
    Client::new(&args.admin_url, token)
}

fn qs(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

async fn run_client(cmd: AdminCommand, args: &ClientArgs, cfg: Option<PathBuf>) -> Result<()> {
    let api = client(args, cfg)?;
    let json_out = args.json;
    match cmd {
        AdminCommand::Customers(c) => customers::run(api, c, json_out).await,
        AdminCommand::Catalog(c) => catalog::run(api, c, json_out).await,
        AdminCommand::Subscriptions(c) => subscriptions::run(api, c, json_out).await,
        AdminCommand::AutoLicense(c) => auto_license::run(api, c, json_out).await,
        AdminCommand::Unassign(c) => auto_license::unassign(api, c, json_out).await,
        AdminCommand::Devices(c) => devices::run(api, c, json_out).await,
        AdminCommand::Compliance(c) => compliance::run(api, c, json_out).await,
        AdminCommand::Licenses(c) => licenses::run(api, c, json_out).await,
        AdminCommand::Offline(c) => offline::run(api, c, json_out).await,
        AdminCommand::Delegations(c) => delegations::run(api, c, json_out).await,
        AdminCommand::Policy(c) => policy::run(api, c, json_out).await,
        AdminCommand::Usage(c) => usage::run(api, c, json_out).await,
        AdminCommand::ComplianceStatuses(c) => meraki::compliance_statuses(&api, c, json_out).await,
        AdminCommand::Coterm(c) => meraki::coterm(&api, c, json_out).await,
        AdminCommand::Token(_) => Ok(()),
    }
}

/// `delegate`: a client of the admin API like the admin subcommands; its `--key-dir` says
/// where the admin token is (before the configuration file's `key_dir`).
pub fn delegate(a: DelegateArgs, args: &ClientArgs, config_key_dir: Option<PathBuf>) -> Result<()> {
    let api = client(args, a.key_dir.clone().or(config_key_dir))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(delegations::delegate(api, a, args.json))
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Decodes an admin API answer into the API's type for it.
fn decode<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        anyhow!(
            "the admin API's answer is not what this licd-stub expects: {e} (is the server \
             the same version? `--json` prints the answer as it is)"
        )
    })
}

/// Prints the answer as the server's JSON under `--json`; otherwise decodes it as `T` and
/// renders it.
fn output<T: DeserializeOwned>(v: Value, json_out: bool, render: impl FnOnce(T)) -> Result<()> {
    if json_out {
        return print_json(&v);
    }
    render(decode(v)?);
    Ok(())
}
