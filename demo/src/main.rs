//! `licd-demo`: the whole system on one machine in under a minute (see [`demo`]). A thin
//! binary: CLI, logging, the runtime.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// The licd demo: the stub controller with its embedded MQTT broker, a demo MSP with two
/// tenants, four real agent processes; shows grants, a paused service, an unassign and a
/// controller outage with grace. Ends by itself in under a minute and removes its files.
#[derive(Parser)]
#[command(name = "licd-demo", version)]
struct Cli {
    /// Lease of each bundle in seconds (short, so the outage shows grace quickly).
    #[arg(long, default_value_t = 8)]
    lease_secs: u64,
    /// Grace after the lease in seconds.
    #[arg(long, default_value_t = 20)]
    grace_secs: u64,
    /// Keep the demo's files (configs, agent logs, ledger) and print where they are.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the licd agent daemon from this binary (the demo starts its agents this way).
    #[command(hide = true)]
    Agent {
        /// Agent config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logging(default: &str) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?;
    // rumqttc logs through `log`.
    let _ = tracing_log::LogTracer::init();
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Command::Agent { config }) = &cli.command {
        init_logging("info,rumqttc=warn")?;
        return demo::run_agent(config);
    }
    // The demo narrates on stdout; only problems go to the log.
    init_logging("warn,rumqttd=off,rumqttc=error")?;
    let options = demo::DemoOptions {
        lease_secs: cli.lease_secs,
        grace_secs: cli.grace_secs,
        keep: cli.keep,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(demo::run(options))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line for a person; no backtrace even with RUST_BACKTRACE set.
            eprintln!("licd-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
