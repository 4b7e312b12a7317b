//! The lab engineer's subcommands of `licd-stub`: `customers`, `catalog`, `subscriptions`,
//! `auto-license`, `unassign`, `devices`, `compliance`, `licenses` talk to a running stub's
//! admin API over HTTP (reqwest, plain HTTP on loopback); `token` manages the API's bearer
//! tokens locally. Human tables by default, `--json` for scripts; errors say what to fix.

mod client;
mod meraki;
mod table;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use licd_stub::admin::token::{self, TokenKind, ADMIN_TOKEN_FILE, TOKEN_STORE_FILE};
use serde_json::{json, Value};

use client::Client;
use table::{print_table, s};

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
    /// Meraki compliance statuses per subscription (what each lacks, by product class).
    #[command(name = "compliance-statuses")]
    ComplianceStatuses(meraki::ComplianceStatuses),
    /// Meraki co-term licenses: list an organization's, move seats to another.
    Coterm(meraki::Coterm),
    /// Admin API bearer tokens (local: the token store in the key directory).
    Token(TokenArgs),
}

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

/// `devices`.
#[derive(Debug, Args)]
pub struct Devices {
    #[command(subcommand)]
    cmd: Option<DevicesCmd>,
}

#[derive(Debug, Subcommand)]
enum DevicesCmd {
    /// List devices (the default).
    List {
        /// Only this tenant's.
        #[arg(long)]
        customer: Option<String>,
        /// Snow filter, e.g. 'productClass -eq "ap"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Show a device: identity, last report, VMs, each service, bundle seq.
    Show {
        /// Tenant id.
        tenant: String,
        /// Device id.
        device: String,
    },
    /// Issue the device a fresh bundle.
    Reissue {
        /// Tenant id.
        tenant: String,
        /// Device id.
        device: String,
    },
    /// Ask the device for its diagnostic report over MQTT (signed request, answer verified
    /// against the pinned key); prints each step and verdict, `--json` the raw document.
    Diag {
        /// Device id.
        device: String,
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Seconds to wait for the answer (1-25).
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
}

/// `compliance`.
#[derive(Debug, Args)]
pub struct Compliance {
    /// Customers (default: all).
    customers: Vec<String>,
}

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

/// `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Key directory holding the token store (default: the config's key_dir, or ./keys).
    #[arg(long, global = true)]
    key_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: TokenCmd,
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Make a token; writes it to a token file (mode 0600) and prints where.
    Create {
        /// Name: who or what uses it.
        #[arg(long, default_value = "admin")]
        name: String,
        /// admin (everything) or read (GET only).
        #[arg(long, default_value = "admin")]
        kind: TokenKind,
        /// Scope the token to one customer (tenant): it sees and changes only that customer's
        /// devices, subscriptions and licenses. Without it the token is the MSP's (everything).
        #[arg(long)]
        tenant: Option<licd_protocol::TenantId>,
        /// Token file (default: <key dir>/<name>.token).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing token file.
        #[arg(long)]
        force: bool,
        /// Also print the token on stdout.
        #[arg(long)]
        print: bool,
    },
    /// List tokens (names and kinds; tokens themselves are never stored).
    List,
    /// Revoke a token by name (takes effect at once on a running stub).
    Revoke {
        /// Token name.
        name: String,
    },
}

/// The key directory: `--key-dir`, else the config's, else `./keys`.
fn key_dir(arg: Option<PathBuf>, config: Option<PathBuf>) -> PathBuf {
    arg.or(config).unwrap_or_else(|| PathBuf::from("keys"))
}

/// Makes the first admin token after `keys init` (unless there is a token file already);
/// returns where it was written.
pub fn admin_token_after_init(dir: &Path, now: u64) -> Result<Option<PathBuf>> {
    let file = dir.join(ADMIN_TOKEN_FILE);
    let store = dir.join(TOKEN_STORE_FILE);
    if file.exists() || !token::load(&store)?.is_empty() {
        return Ok(None);
    }
    let t = token::create(&store, "admin", TokenKind::Admin, now)?;
    token::write_token_file(&file, &t, false)?;
    Ok(Some(file))
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
        return run_token(t, config_key_dir, now);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_client(cmd, args, config_key_dir))
}

fn run_token(t: TokenArgs, config_key_dir: Option<PathBuf>, now: u64) -> Result<()> {
    let dir = key_dir(t.key_dir, config_key_dir);
    let store = dir.join(TOKEN_STORE_FILE);
    match t.cmd {
        TokenCmd::Create {
            name,
            kind,
            tenant,
            out,
            force,
            print,
        } => {
            let out = out.unwrap_or_else(|| dir.join(format!("{name}.token")));
            if out.exists() && !force {
                bail!(
                    "{} exists; pass --out FILE for another token file or --force to replace it",
                    out.display()
                );
            }
            let t = token::create_scoped(&store, &name, kind, tenant.as_ref(), now)?;
            token::write_token_file(&out, &t, force)?;
            eprintln!(
                "{} token {name:?} written to {} (pass it with --token-file)",
                kind.as_str(),
                out.display()
            );
            if print {
                println!("{t}");
            }
            Ok(())
        }
        TokenCmd::List => {
            let rows = token::load(&store)?
                .into_iter()
                .map(|r| {
                    vec![
                        r.name,
                        r.kind.as_str().to_string(),
                        r.tenant.unwrap_or_else(|| "(all: MSP)".into()),
                        licd_stub::admin::query::format_time(r.created_at),
                    ]
                })
                .collect();
            print_table(&["NAME", "KIND", "TENANT", "CREATED"], rows);
            Ok(())
        }
        TokenCmd::Revoke { name } => {
            if !token::revoke(&store, &name)? {
                bail!(
                    "no token named {name:?} in {} (see `licd-stub token list`)",
                    store.display()
                );
            }
            eprintln!("token {name:?} revoked");
            Ok(())
        }
    }
}

fn client(args: &ClientArgs, config_key_dir: Option<PathBuf>) -> Result<Client> {
    let file = match &args.token_file {
        Some(f) => f.clone(),
        None => key_dir(None, config_key_dir).join(ADMIN_TOKEN_FILE),
    };
    if !file.exists() {
        bail!(
            "no admin token: {} does not exist; run `licd-stub token create` (or `keys init`) \
             or pass --token-file",
            file.display()
        );
    }
    let token = token::read_token_file(&file)
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
        AdminCommand::Customers(c) => customers(api, c, json_out).await,
        AdminCommand::Catalog(c) => catalog(api, c, json_out).await,
        AdminCommand::Subscriptions(c) => subscriptions(api, c, json_out).await,
        AdminCommand::AutoLicense(c) => auto_license(api, c, json_out).await,
        AdminCommand::Unassign(c) => {
            let v = api
                .post("/api/v1/auto-licensing/unassign", c.selection.body())
                .await?;
            unassigned(&v, json_out);
            Ok(())
        }
        AdminCommand::Devices(c) => devices(api, c, json_out).await,
        AdminCommand::Compliance(c) => {
            let q = c.customers.join(",");
            let path = if q.is_empty() {
                "/api/v1/compliance".to_string()
            } else {
                format!("/api/v1/compliance{}", qs(&[("customerIds", &q)]))
            };
            let v = api.get(&path).await?;
            if json_out {
                return print_json(&v);
            }
            for c in v.as_array().into_iter().flatten() {
                let state = if c["compliant"] == true {
                    "compliant"
                } else {
                    "NOT compliant"
                };
                println!("{}: {state}", s(&c["customerId"]));
                for p in c["pausedServices"].as_array().into_iter().flatten() {
                    println!("  paused: {} (too few seats for every device)", s(p));
                }
                for v in c["violations"]["byProductClass"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    for m in v["missing"]["entitlements"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        println!(
                            "  {} missing {} x {} ({}) for {} device(s); grace ends {}",
                            s(&v["productClass"]),
                            s(&m["quantity"]),
                            s(&m["sku"]),
                            s(&m["service"]),
                            s(&v["devices"]),
                            s(&v["gracePeriodEndsAt"])
                        );
                    }
                }
                for o in c["vmOveruse"].as_array().into_iter().flatten() {
                    println!(
                        "  {} runs {} VMs, {} covers {}",
                        s(&o["deviceId"]),
                        s(&o["vmCount"]),
                        s(&o["service"]),
                        s(&o["allowance"])
                    );
                }
            }
            Ok(())
        }
        AdminCommand::Licenses(c) => licenses(api, c, json_out).await,
        AdminCommand::ComplianceStatuses(c) => meraki::compliance_statuses(&api, c, json_out).await,
        AdminCommand::Coterm(c) => meraki::coterm(&api, c, json_out).await,
        AdminCommand::Token(_) => Ok(()),
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
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

async fn customers(api: Client, c: Customers, json_out: bool) -> Result<()> {
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

async fn catalog(api: Client, c: Catalog, json_out: bool) -> Result<()> {
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

fn subscription_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|v| {
            let skus: Vec<String> = v["entitlements"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{} {}/{}",
                        s(&e["sku"]),
                        s(&e["seats"]["assigned"]),
                        s(&e["seats"]["limit"])
                    )
                })
                .collect();
            vec![
                s(&v["subscriptionId"]),
                s(&v["name"]),
                s(&v["customerId"]),
                s(&v["status"]),
                s(&v["endDate"]),
                skus.join(", "),
            ]
        })
        .collect()
}

const SUB_HEADERS: [&str; 6] = [
    "ID",
    "NAME",
    "OWNER",
    "STATUS",
    "ENDS",
    "SEATS (used/limit)",
];

async fn subscriptions(api: Client, c: Subscriptions, json_out: bool) -> Result<()> {
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
            if json_out {
                return print_json(&Value::Array(items));
            }
            print_table(&SUB_HEADERS, subscription_rows(&items));
            return Ok(());
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
            let mut ents = Vec::new();
            for s in &seats {
                let (sku, n) = s
                    .split_once('=')
                    .with_context(|| format!("--seats {s:?}: expected SKU=N, e.g. LIC-AP=10"))?;
                let n: u32 = n
                    .parse()
                    .with_context(|| format!("--seats {s:?}: N must be a number"))?;
                ents.push(json!({"sku": sku, "limit": n}));
            }
            api.post(
                "/api/v1/subscriptions",
                json!({"subscriptionId": id, "name": name, "customerId": owner,
                       "claimKey": claim_key, "startDate": start, "endDate": end,
                       "entitlements": ents}),
            )
            .await?
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
            let v = api
                .post(path, json!({"claimKey": claim_key, "customerId": customer}))
                .await?;
            if validate && !json_out {
                // The answer shows the subscription as it would be once claimed: say so, and
                // not as a table that reads like a claim that happened.
                let seats: Vec<String> = v["entitlements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| format!("{} x {}", s(&e["seats"]["limit"]), s(&e["sku"])))
                    .collect();
                println!(
                    "validated only, nothing changed: claim key {claim_key} would give {customer} \
                     subscription {} ({}; ends {}; {})",
                    s(&v["subscriptionId"]),
                    s(&v["name"]),
                    s(&v["endDate"]),
                    seats.join(", ")
                );
                return Ok(());
            }
            v
        }
        SubscriptionsCmd::Validate { claim_key } => {
            api.post(
                "/api/v1/subscriptions/claimKey/validate",
                json!({"claimKey": claim_key}),
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
                    json!({"customerIds": customers}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            let names: Vec<String> = v["customers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| s(&c["id"]))
                .collect();
            let verb = if validate { "would be bound" } else { "bound" };
            println!("{id}: {verb}: {}", names.join(", "));
            for e in v["errors"].as_array().into_iter().flatten() {
                println!("  problem: {}", s(e));
            }
            for i in v["insufficientEntitlements"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!("  missing: {} x {}", s(&i["quantity"]), s(&i["sku"]));
            }
            return Ok(());
        }
    };
    if json_out {
        return print_json(&v);
    }
    print_table(&SUB_HEADERS, subscription_rows(std::slice::from_ref(&v)));
    Ok(())
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

async fn auto_license(api: Client, c: AutoLicense, json_out: bool) -> Result<()> {
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

async fn devices(api: Client, c: Devices, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(DevicesCmd::List {
        customer: None,
        filter: None,
    }) {
        DevicesCmd::List { customer, filter } => {
            let mut pairs = vec![];
            if let Some(c) = &customer {
                pairs.push(("customerId", c.as_str()));
            }
            if let Some(f) = &filter {
                pairs.push(("filter", f.as_str()));
            }
            let items = api
                .get_all_numbered(&format!("/api/v1/devices{}", qs(&pairs)))
                .await?;
            if json_out {
                return print_json(&Value::Array(items));
            }
            let rows = items
                .iter()
                .map(|d| {
                    let services: Vec<String> = d["services"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| match x["state"].as_str() {
                            Some("granted") => format!("{}+", s(&x["service"])),
                            _ => format!("{}-({})", s(&x["service"]), s(&x["reason"])),
                        })
                        .collect();
                    vec![
                        s(&d["tenantId"]),
                        s(&d["deviceId"]),
                        s(&d["productClass"]),
                        s(&d["vmCount"]),
                        s(&d["bundle"]["seq"]),
                        s(&d["lastReportAt"]),
                        services.join(" "),
                    ]
                })
                .collect();
            print_table(
                &[
                    "TENANT",
                    "DEVICE",
                    "CLASS",
                    "VMS",
                    "SEQ",
                    "LAST REPORT",
                    "SERVICES",
                ],
                rows,
            );
            Ok(())
        }
        DevicesCmd::Show { tenant, device } => {
            let d = api
                .get(&format!("/api/v1/devices/{tenant}/{device}"))
                .await?;
            if json_out {
                return print_json(&d);
            }
            for (k, v) in [
                (
                    "device",
                    format!("{}/{}", s(&d["tenantId"]), s(&d["deviceId"])),
                ),
                ("model", s(&d["model"])),
                ("serial", s(&d["serial"])),
                ("class", s(&d["productClass"])),
                ("firmware", s(&d["firmwareVersion"])),
                ("agent", s(&d["agentVersion"])),
                ("vms", s(&d["vmCount"])),
                ("key", s(&d["deviceKey"])),
                ("last report", s(&d["lastReportAt"])),
                (
                    "bundle",
                    format!(
                        "seq {} (device holds {}), issued {}",
                        s(&d["bundle"]["seq"]),
                        s(&d["bundle"]["reportedSeq"]),
                        s(&d["bundle"]["issuedAt"])
                    ),
                ),
            ] {
                println!("{k:12} {v}");
            }
            let rows = d["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    vec![
                        s(&x["service"]),
                        s(&x["state"]),
                        s(&x["subscriptionId"]),
                        s(&x["sku"]),
                        s(&x["vmAllowance"]),
                        s(&x["reason"]),
                    ]
                })
                .collect();
            println!();
            print_table(
                &[
                    "SERVICE",
                    "STATE",
                    "SUBSCRIPTION",
                    "SKU",
                    "VM ALLOWANCE",
                    "REASON",
                ],
                rows,
            );
            Ok(())
        }
        DevicesCmd::Diag {
            device,
            tenant,
            timeout,
        } => {
            let v = api
                .post(
                    &format!("/api/v1/devices/{tenant}/{device}/diag?timeoutSecs={timeout}"),
                    json!({}),
                )
                .await?;
            if json_out {
                return print_json(&v["report"]);
            }
            let response = licd_protocol::DiagResponse {
                device: licd_protocol::DeviceId::new(&device)?,
                tenant: licd_protocol::TenantId::new(&tenant)?,
                request_id: [0; 16],
                generated_at: v["generatedAt"].as_u64().unwrap_or(0),
                report: v["report"].to_string(),
            };
            print!("{}", licd_stub::diag::render(&response));
            Ok(())
        }
        DevicesCmd::Reissue { tenant, device } => {
            let v = api
                .post(
                    &format!("/api/v1/devices/{tenant}/{device}/reissue"),
                    json!({}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            println!(
                "{tenant}/{device}: bundle seq {} published",
                s(&v["bundleSeq"])
            );
            Ok(())
        }
    }
}

async fn licenses(api: Client, c: Licenses, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(LicensesCmd::List { filter: None }) {
        LicensesCmd::List { filter } => {
            let q = filter
                .as_deref()
                .map(|f| qs(&[("filter", f)]))
                .unwrap_or_default();
            let items = api
                .get_all_numbered(&format!("/api/v1/licenses{q}"))
                .await?;
            if json_out {
                return print_json(&Value::Array(items));
            }
            let rows = items
                .iter()
                .map(|l| {
                    vec![
                        s(&l["id"]),
                        s(&l["service"]),
                        s(&l["customerId"]),
                        format!("{}/{}", s(&l["assigned"]), s(&l["quantity"])),
                        s(&l["numberOfSupportedVirtualMachines"]),
                        s(&l["status"]),
                    ]
                })
                .collect();
            print_table(
                &["LICENSE", "SERVICE", "OWNER", "USED", "VMS/SEAT", "STATUS"],
                rows,
            );
            Ok(())
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
            if json_out {
                return print_json(&Value::Array(items));
            }
            let rows = items
                .iter()
                .map(|a| {
                    vec![
                        s(&a["customerId"]),
                        s(&a["computerId"]),
                        s(&a["service"]),
                        s(&a["licenseId"]),
                        s(&a["virtualMachines"]),
                        s(&a["numberOfSupportedVirtualMachines"]),
                        s(&a["assignedAt"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "TENANT", "DEVICE", "SERVICE", "LICENSE", "VMS", "VMS/SEAT", "SINCE",
                ],
                rows,
            );
            Ok(())
        }
        LicensesCmd::SetSeats {
            quantity,
            only,
            all_except,
            all,
            filter,
        } => {
            let (scope, ids) = if all {
                ("All", vec![])
            } else if !all_except.is_empty() {
                ("AllExcept", all_except)
            } else if !only.is_empty() {
                ("Only", only)
            } else {
                bail!("choose the licenses: --only IDS, --all-except IDS or --all (ids from `licd-stub licenses`)");
            };
            let v = api
                .post(
                    "/api/v1/licenses/bulkUpdate",
                    json!({"scope": scope, "ids": ids, "filter": filter,
                           "body": {"quantity": quantity}}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            println!(
                "{} updated, {} failed",
                s(&v["successCount"]),
                s(&v["failedCount"])
            );
            for f in v["failed"].as_array().into_iter().flatten() {
                println!("  {}: {}", s(&f["id"]), s(&f["reason"]));
            }
            Ok(())
        }
    }
}
