//! `licd-stub`: the stub licensing controller for licd agents (binary). Thin: parses the
//! command line, sets up logging, and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use licd_stub::config::FileConfig;

mod cli;

/// Stub licensing controller for licd agents: an embedded MQTT broker (or an external one), a
/// SQLite ledger of customers, subscriptions, auto-licensing and devices, and an ed25519
/// signer that sends every device its signed grant bundle.
///
/// First run:
///   licd-stub keys init                 # root + signing key in ./keys (mode 0600)
///   licd-stub keys export-root          # the root public key agents must pin
///   licd-stub serve                     # embedded broker on 127.0.0.1:1883, ledger ./licd-stub.db,
///                                       # admin API on 127.0.0.1:8180 (token: keys/admin.token)
///   licd-stub customers                 # then: subscriptions, auto-license, devices, compliance …
///
/// For fleets and load tests use an external broker (mosquitto): --broker mqtt://host:1883.
/// For replicas: --ledger postgres://licd@db/licd on each, one shared subscription group.
#[derive(Debug, Parser)]
#[command(name = "licd-stub", version, verbatim_doc_comment)]
struct Cli {
    /// TOML configuration file (keys: ledger, key_dir, lease_secs, grace_secs, listen, broker,
    /// ca_file, username, password, shared_subscription, share_group, subscribe_qos, client_id;
    /// docs/STUB.md lists them all). Command-line options override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// How the admin subcommands reach the API (global: before or after the subcommand).
    #[command(flatten)]
    client: cli::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller until ctrl-c.
    Serve(ServeArgs),
    /// Manage the controller's keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A site relay: a delegated issuer that licenses a disconnected site's devices from the
    /// seat pools of its delegation (docs/OPERATIONS.md "Site relays").
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Delegate seat pools to a site relay through the running controller's admin API: the
    /// controller signs the delegation and reserves its seats in the ledger; writes the file to
    /// carry to the site (the relay's `delegation.hex`).
    Delegate(cli::DelegateArgs),
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// Create the relay's key in its directory (refuses to overwrite) and print its public
    /// key: give that to the controller's operator for `licd-stub delegate --relay-key`.
    Init {
        /// Relay directory (created with mode 0700).
        #[arg(long, default_value = "relay")]
        dir: PathBuf,
    },
    /// Run the relay until ctrl-c: an embedded broker (or --broker) for the site's devices,
    /// bundles signed under the delegation in DIR/delegation.hex.
    Run(RelayRunArgs),
    /// Install a delegation carried to the site: the armored or binary file (`licd-stub
    /// delegations show --armor`) or the hex file `licd-stub delegate` wrote. Checks that it is
    /// for this relay's key and signed by a certified controller key, then writes
    /// DIR/delegation.hex (restart `relay run` to use it; with --uplink it renews itself).
    Import {
        /// The delegation file.
        file: PathBuf,
        /// Relay directory.
        #[arg(long, default_value = "relay")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RelayRunArgs {
    /// Relay directory (relay.key, delegation.hex; seats are saved there as pools.json).
    #[arg(long, default_value = "relay")]
    dir: PathBuf,
    /// Use this external broker (mqtt://host:port or mqtts://host:port) instead of the
    /// embedded one. The nodes of a clustered broker comma-separated
    /// (mqtt://a:1883,mqtt://b:1883): the connection fails over to the next node when one fails.
    #[arg(long)]
    broker: Option<String>,
    /// Listener of the embedded broker (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    listen: SocketAddr,
    /// Lease of each bundle in seconds (capped by the delegation's maximum lease). A device
    /// that goes away frees its seat when its lease and grace have run out.
    #[arg(long, default_value_t = 3600)]
    lease_secs: u64,
    /// Grace each grant carries, in seconds.
    #[arg(long, default_value_t = 0)]
    grace_secs: u64,
    /// The controller's broker (mqtt://host:port or mqtts://host:port), when the site has an
    /// uplink: renewed delegations arrive from there. Without it (or while it is down) the
    /// relay works on the delegation it holds until it ends.
    #[arg(long)]
    uplink: Option<String>,
    /// CA certificate (PEM) for an mqtts:// uplink (default: the system's roots).
    #[arg(long)]
    uplink_ca_file: Option<PathBuf>,
    /// Seconds between reports of what the relay issued while the uplink is up (one is also
    /// sent whenever it comes back).
    #[arg(long, default_value_t = 30)]
    uplink_report_secs: u64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Use this external broker (mqtt://host:port or mqtts://host:port) instead of the
    /// embedded one. The nodes of a clustered broker comma-separated
    /// (mqtt://a:1883,mqtt://b:1883): the connection fails over to the next node when one fails.
    #[arg(long)]
    broker: Option<String>,
    /// Listener of the embedded broker (port 0 = any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Ledger: a SQLite file, created on first start, or a PostgreSQL database
    /// (postgres://user:password@host:port/db) that replicas share; TLS with
    /// ?sslmode=verify-full&sslrootcert=CA.pem (the server's name is checked).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Key directory made by `keys init`.
    #[arg(long)]
    key_dir: Option<PathBuf>,
    /// Lease of each bundle in seconds (default 604800 = 7 days).
    #[arg(long)]
    lease_secs: Option<u64>,
    /// Grace after lease or term end in seconds (default 2592000 = 30 days).
    #[arg(long)]
    grace_secs: Option<u64>,
    /// Subscribe to licd/v1/+/+/report instead of the shared $share/<group>/… filter (for
    /// brokers without shared subscriptions).
    #[arg(long)]
    no_shared_subscription: bool,
    /// Listener of the admin HTTP API (default 127.0.0.1:8180; port 0 = any free port).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Do not start the admin HTTP API.
    #[arg(long)]
    no_admin: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the root key and a signing key certified by it (refuses to overwrite).
    Init {
        /// Key directory (created with mode 0700).
        #[arg(long)]
        key_dir: Option<PathBuf>,
    },
    /// Make the key directory of one controller replica: a new signing key certified by the
    /// root in --key-dir, without the root (each replica signs with its own key).
    Replica {
        /// Key directory holding the root.
        #[arg(long)]
        key_dir: Option<PathBuf>,
        /// The replica's new key directory (created with mode 0700).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the root public key (hex) that agents pin.
    ExportRoot {
        /// Key directory.
        #[arg(long)]
        key_dir: Option<PathBuf>,
    },
    /// Replace the signing key by a new one certified by the root (the old one stays valid
    /// until its certificate ends unless revoked). Restart `serve` to sign with it.
    Rotate {
        /// Key directory.
        #[arg(long)]
        key_dir: Option<PathBuf>,
    },
    /// Revoke a signing key (32 hex digits, its key id): a new root-signed revocation list,
    /// saved in the key directory and published retained on licd/v1/trust/revocations.
    Revoke {
        /// Key id of the signing key to revoke.
        key_id: String,
        /// Key directory.
        #[arg(long)]
        key_dir: Option<PathBuf>,
        /// Broker to publish on (mqtt://host:port); without it, only the file is written
        /// (publish later with `keys publish`).
        #[arg(long)]
        broker: Option<String>,
    },
    /// Replace the root: a statement signed by the old and the new root, the signing key
    /// re-certified by the new root, the revocation list re-signed; published retained on
    /// licd/v1/trust/roots (and revocations). Restart `serve` afterwards.
    RotateRoot {
        /// Key directory.
        #[arg(long)]
        key_dir: Option<PathBuf>,
        /// Broker to publish on (mqtt://host:port).
        #[arg(long)]
        broker: Option<String>,
    },
    /// (Re)publish the saved trust messages (root rotation, revocation list), retained.
    Publish {
        /// Key directory.
        #[arg(long)]
        key_dir: Option<PathBuf>,
        /// Broker to publish on (mqtt://host:port).
        #[arg(long)]
        broker: String,
    },
}

/// `keys rotate | revoke | rotate-root | publish` (see `licd_stub::keys::trust`).
fn run_trust_keys(command: KeysCommand, default_dir: Option<PathBuf>) -> Result<()> {
    use licd_stub::keys::trust;
    let dir_of = |d: Option<PathBuf>| {
        d.or(default_dir.clone())
            .unwrap_or_else(|| PathBuf::from("keys"))
    };
    let publish = |broker: Option<String>, dir: &std::path::Path| -> Result<()> {
        let Some(url) = broker else {
            println!("not published (no --broker): run `licd-stub keys publish --broker URL`");
            return Ok(());
        };
        let messages = trust::trust_messages(dir)?;
        let n = messages.len();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        rt.block_on(trust::publish_retained(
            &url,
            messages,
            std::time::Duration::from_secs(10),
        ))
        .with_context(|| format!("publishing to {url}"))?;
        println!("published {n} trust message(s), retained, to {url}");
        Ok(())
    };
    match command {
        KeysCommand::Rotate { key_dir } => {
            let dir = dir_of(key_dir);
            let r = trust::rotate_signing_key(&dir, now())
                .with_context(|| format!("rotating the signing key in {}", dir.display()))?;
            println!(
                "old signing key {}
new signing key {}",
                r.old, r.new
            );
            println!("restart `licd-stub serve` to sign new bundles with it");
            Ok(())
        }
        KeysCommand::Revoke {
            key_id,
            key_dir,
            broker,
        } => {
            let dir = dir_of(key_dir);
            let id = trust::parse_key_id(&key_id)
                .with_context(|| format!("{key_id:?} is not a key id (32 hex digits)"))?;
            let (list, _) = trust::revoke(&dir, id, now())
                .with_context(|| format!("revoking {key_id} with the root in {}", dir.display()))?;
            println!(
                "revocation list version {} revokes {} key(s)",
                list.version,
                list.revoked.len()
            );
            publish(broker, &dir)
        }
        KeysCommand::RotateRoot { key_dir, broker } => {
            let dir = dir_of(key_dir);
            let r = trust::rotate_root(&dir, now())
                .with_context(|| format!("rotating the root in {}", dir.display()))?;
            println!(
                "root rotation {}: {} -> {}
new root (pin it in new firmware/config): {}",
                r.seq,
                r.old.id(),
                r.new.id(),
                r.new.to_hex()
            );
            publish(broker, &dir)
        }
        KeysCommand::Publish { key_dir, broker } => {
            let dir = dir_of(key_dir);
            publish(Some(broker), &dir)
        }
        KeysCommand::Init { .. } | KeysCommand::ExportRoot { .. } | KeysCommand::Replica { .. } => {
            Ok(())
        }
    }
}

/// `relay run`.
fn run_relay(args: RelayRunArgs) -> Result<()> {
    use licd_stub::relay::{pool::LeaseTerms, run};
    let broker = match args.broker {
        Some(url) => licd_stub::BrokerMode::External {
            url,
            ca_file: None,
            credentials: None,
        },
        None => licd_stub::BrokerMode::Embedded {
            listen: args.listen,
            tls: None,
        },
    };
    let config = run::RelayConfig {
        dir: args.dir,
        broker,
        terms: LeaseTerms {
            lease_secs: args.lease_secs,
            grace_secs: args.grace_secs,
        },
        clock: licd_stub::Clock::System,
        client_id: format!("licd-relay-{}", std::process::id()),
        connect_timeout: std::time::Duration::from_secs(10),
        uplink: args.uplink.map(|url| licd_stub::BrokerMode::External {
            url,
            ca_file: args.uplink_ca_file,
            credentials: None,
        }),
        uplink_report_every: std::time::Duration::from_secs(args.uplink_report_secs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c; stopping");
        }
    };
    runtime
        .block_on(run::serve(config, ctrl_c))
        .context("licd-stub relay run")
}

fn init_logging(format: &str) -> Result<()> {
    init_logging_with(format, "info,rumqttd=warn,rumqttc=warn")
}

/// Logging to stderr with `default` as the filter unless `RUST_LOG` is set.
fn init_logging_with(format: &str, default: &str) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?;
    // rumqttc logs through `log`. tracing-subscriber installs the bridge itself when its
    // `tracing-log` feature is on (rumqttd turns it on); otherwise install it here.
    let _ = tracing_log::LogTracer::init();
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// User errors are one line on stderr (`licd-stub: what failed: why`), exit 1. Never anyhow's
/// `Debug` form: it spreads the causes over lines and, with `RUST_BACKTRACE=1` in the
/// environment, appends a backtrace that says nothing to a user.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("licd-stub: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `e` with its causes, `: `-joined, on one line (a cause's own line breaks included).
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format)?;
    let mut file = match &cli.config {
        Some(p) => FileConfig::read(p).context("reading the configuration file")?,
        None => FileConfig::default(),
    };
    match cli.command {
        Command::Keys(KeysCommand::Init { key_dir }) => {
            let dir = key_dir
                .or(file.key_dir)
                .unwrap_or_else(|| PathBuf::from("keys"));
            let root = licd_stub::keys::init(&dir, now())
                .with_context(|| format!("creating keys in {}", dir.display()))?;
            println!("{}", root.to_hex());
            if let Some(f) = cli::admin_token_after_init(&dir, now())? {
                eprintln!("admin API token written to {}", f.display());
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Replica { key_dir, out }) => {
            let dir = key_dir
                .or(file.key_dir)
                .unwrap_or_else(|| PathBuf::from("keys"));
            let key = licd_stub::keys::init_replica(&dir, &out, now()).with_context(|| {
                format!(
                    "making a replica key in {} with the root in {}",
                    out.display(),
                    dir.display()
                )
            })?;
            println!("{}", key.id());
            eprintln!(
                "copy the admin token store ({}) next to it if this replica serves the admin API",
                dir.join(licd_stub::admin::token::TOKEN_STORE_FILE)
                    .display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::ExportRoot { key_dir }) => {
            let dir = key_dir
                .or(file.key_dir)
                .unwrap_or_else(|| PathBuf::from("keys"));
            let root = licd_stub::keys::root_public_key(&dir).with_context(|| {
                format!(
                    "reading the root key in {} (run `licd-stub keys init`?)",
                    dir.display()
                )
            })?;
            println!("{}", root.to_hex());
            Ok(())
        }
        Command::Keys(
            command @ (KeysCommand::Rotate { .. }
            | KeysCommand::Revoke { .. }
            | KeysCommand::RotateRoot { .. }
            | KeysCommand::Publish { .. }),
        ) => run_trust_keys(command, file.key_dir),
        Command::Admin(cmd) => cli::run(cmd, &cli.client, file.key_dir, now()),
        Command::Relay(RelayCommand::Init { dir }) => {
            let key = licd_stub::relay::site::init(&dir)
                .with_context(|| format!("creating the relay key in {}", dir.display()))?;
            println!("{}", key.to_hex());
            eprintln!(
                "relay key {} created in {}: give the line above to the controller's operator \
                 (licd-stub delegate --relay-key …) and put the delegation file they return at {}",
                key.id(),
                dir.display(),
                dir.join(licd_stub::relay::site::DELEGATION_FILE).display()
            );
            Ok(())
        }
        Command::Relay(RelayCommand::Run(args)) => run_relay(args),
        Command::Relay(RelayCommand::Import { file, dir }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let delegation = licd_stub::relay::site::read_delegation(&bytes)
                .map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))?;
            let site = licd_stub::relay::site::install(&dir, delegation)
                .with_context(|| format!("installing the delegation in {}", dir.display()))?;
            let b = &site.delegation.body;
            println!(
                "delegation for site {} (tenant {}, valid until {}) installed as {}: restart \
                 `licd-stub relay run` to use it",
                b.constraints.site,
                b.constraints.tenant,
                b.not_after,
                dir.join(licd_stub::relay::site::DELEGATION_FILE).display()
            );
            Ok(())
        }
        Command::Delegate(args) => cli::delegate(args, &cli.client, file.key_dir),
        Command::Serve(args) => {
            file.broker = args.broker.or(file.broker);
            file.listen = args.listen.or(file.listen);
            file.ledger = args.ledger.or(file.ledger);
            file.key_dir = args.key_dir.or(file.key_dir);
            file.lease_secs = args.lease_secs.or(file.lease_secs);
            file.grace_secs = args.grace_secs.or(file.grace_secs);
            if args.no_shared_subscription {
                file.shared_subscription = Some(false);
            }
            let admin_listen = match args.admin_listen.or(file.admin_listen) {
                Some(a) => a,
                None => licd_stub::admin::DEFAULT_ADMIN_LISTEN
                    .parse()
                    .context("default admin listener")?,
            };
            let config = file.into_config().context("invalid configuration")?;
            if let licd_stub::KeySource::Dir(dir) = &config.keys {
                if !dir.join("signing.key").exists() {
                    anyhow::bail!(
                        "no signing key in {}: run `licd-stub keys init --key-dir {}` first",
                        dir.display(),
                        dir.display()
                    );
                }
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let ctrl_c = async {
                if let Err(e) = tokio::signal::ctrl_c().await {
                    tracing::error!(error = %e, "cannot listen for ctrl-c; stopping");
                }
            };
            let store = match &config.keys {
                licd_stub::KeySource::Dir(dir) => {
                    dir.join(licd_stub::admin::token::TOKEN_STORE_FILE)
                }
                licd_stub::KeySource::Signer(_) => {
                    PathBuf::from(licd_stub::admin::token::TOKEN_STORE_FILE)
                }
            };
            let admin = licd_stub::admin::AdminConfig::new(admin_listen, store);
            if args.no_admin {
                runtime.block_on(licd_stub::serve(config, ctrl_c))
            } else {
                runtime.block_on(licd_stub::admin::serve_with_admin(config, admin, ctrl_c))
            }
            .context("licd-stub serve")
        }
    }
}
