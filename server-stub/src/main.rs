//! `licd-stub`: the stub licensing controller for licd agents (binary). Thin: parses the
//! command line, sets up logging, and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use licd_stub::config::FileConfig;

mod cli;
mod demo;

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
#[derive(Debug, Parser)]
#[command(name = "licd-stub", version, verbatim_doc_comment)]
struct Cli {
    /// TOML configuration file (keys: ledger, key_dir, lease_secs, grace_secs, listen, broker,
    /// ca_file, username, password, shared_subscription, share_group, client_id). Command-line
    /// options override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
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
    #[command(flatten)]
    Admin(cli::AdminCommand),
    /// Run the demo: the stub with its embedded broker, a demo MSP with two tenants, four real
    /// agents; shows grants, a paused service, an unassign and a controller outage with grace.
    /// Ends by itself in under a minute and removes its files.
    Demo {
        /// Lease of each bundle in seconds (short, so the outage shows grace quickly).
        #[arg(long, default_value_t = 8)]
        lease_secs: u64,
        /// Grace after the lease in seconds.
        #[arg(long, default_value_t = 20)]
        grace_secs: u64,
        /// Keep the demo's files (configs, agent logs, ledger) and print where they are.
        #[arg(long)]
        keep: bool,
    },
    /// Run the licd agent daemon from this binary (used by the demo).
    #[command(hide = true)]
    Agent {
        /// Agent config file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Use this external broker (mqtt://host:port or mqtts://host:port) instead of the
    /// embedded one.
    #[arg(long)]
    broker: Option<String>,
    /// Listener of the embedded broker (port 0 = any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Ledger file (SQLite), created on first start.
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
        KeysCommand::Init { .. } | KeysCommand::ExportRoot { .. } => Ok(()),
    }
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

/// Errors print as one line (`{:#}`): returning them from `main` would print `{:?}`, which adds
/// a stack of frames when RUST_BACKTRACE is set.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("licd-stub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Demo {
            lease_secs,
            grace_secs,
            keep,
        } => {
            // The demo narrates on stdout; only problems go to the log.
            init_logging_with(&cli.log_format, "warn,rumqttd=off,rumqttc=error")?;
            let options = demo::DemoOptions {
                lease_secs: *lease_secs,
                grace_secs: *grace_secs,
                keep: *keep,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            return runtime.block_on(demo::run(options));
        }
        Command::Agent { config } => {
            init_logging_with(&cli.log_format, "info,rumqttc=warn")?;
            return demo::run_agent(config);
        }
        _ => init_logging(&cli.log_format)?,
    }
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
        Command::Demo { .. } | Command::Agent { .. } => Ok(()),
        Command::Admin(cmd) => cli::run(cmd, file.key_dir, now()),
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
