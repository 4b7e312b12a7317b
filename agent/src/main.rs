//! `licd`: the license-enforcement agent. A thin binary: CLI parsing, logging, signals; the
//! work is in the `licd_agent` library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use licd_agent::api::{check_answer, invalid_service, query};
use licd_agent::clock::SystemClock;
use licd_agent::config::{ConfigError, LogFormat, Settings, DEFAULT_CONFIG_PATH};
use licd_agent::status::fmt_time;
use serde_json::{json, Value};

/// Exit code: the service may not run.
const EXIT_UNLICENSED: u8 = 1;
/// Exit code: in grace, with `--strict`.
const EXIT_GRACE_STRICT: u8 = 3;
/// Exit code: licd itself failed (config, state dir…).
const EXIT_ERROR: u8 = 4;

/// How long `check`/`status` wait for the daemon before answering from the cache.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the end of `run` and `diag` waits for blocking-pool work. A host probe stuck in the
/// kernel keeps its pool thread (see `licd_agent::identity::bounded`), and dropping a runtime
/// would wait for it forever.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "licd",
    version,
    about = "License-enforcement agent: reports this device to the licensing controller, \
             receives signed license grants and says which services may run.",
    after_help = "Exit codes of `check`: 0 licensed (or in grace), 1 unlicensed, \
                  3 in grace with --strict, 4 error.\n\
                  Config reference: licd.example.toml next to the binary's docs."
)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short, global = true, env = "LICD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Log format (overrides log.format of the config).
    #[arg(long, global = true, value_name = "human|json")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon (the default when no command is given).
    Run,
    /// Is SERVICE licensed? Asks the daemon, or evaluates the cache if it is not running.
    Check {
        /// The service, e.g. wifi-ap.
        service: String,
        /// Print one JSON object instead of a line of text.
        #[arg(long)]
        json: bool,
        /// Exit 3 (not 0) while the service is in grace.
        #[arg(long)]
        strict: bool,
    },
    /// Identity, every service's state with deadlines and reasons, cache and clock facts.
    Status {
        /// Print JSON instead of text (the same as `--format json`).
        #[arg(long)]
        json: bool,
        /// Output format: human, json, or prometheus (node_exporter textfile collector).
        #[arg(long, value_name = "human|json|prometheus", conflicts_with = "json")]
        format: Option<StatusFormat>,
        /// Write the output to FILE atomically (temp file, fsync, rename; mode 0644) instead
        /// of stdout: what node_exporter's textfile directory needs (it must never read half
        /// a file).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Walk the licensing path step by step (config, state, identity, clock, cache, DNS, TCP,
    /// TLS, MQTT, grant round trip, services), each with a verdict, a figure and a hint.
    /// Exit 0 all ok, 1 warnings only, 2 something failed, 4 diag could not run.
    Diag {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Skip the network steps (DNS, TCP, TLS, MQTT, round trip).
        #[arg(long)]
        offline: bool,
        /// Seconds to wait for each network step (connect, handshake, CONNACK, the grant).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run_daemon(&cli.config, cli.log_format),
        Command::Check {
            service,
            json,
            strict,
        } => check(&cli.config, &service, json, strict),
        Command::Status {
            json,
            format,
            output,
        } => {
            let format = match (json, format) {
                (true, _) => StatusFormat::Json,
                (false, f) => f.unwrap_or(StatusFormat::Human),
            };
            status(&cli.config, format, output.as_deref())
        }
        Command::Diag {
            json,
            offline,
            timeout,
        } => diag(&cli.config, json, offline, timeout),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // `{:#}`: the message and its causes on one line. Never `{:?}`, which adds the
            // backtrace anyhow captures when RUST_BACKTRACE is set: a user error is one line.
            eprintln!("licd: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The settings, or one line naming the file, the line and the key at fault.
fn load(config: &Path) -> anyhow::Result<Settings> {
    Settings::load(config).map_err(|e| match e {
        ConfigError::Read { .. } => {
            anyhow::anyhow!("{e} (--config PATH or LICD_CONFIG names another file)")
        }
        other => anyhow::anyhow!("{other} (licd.example.toml documents every key)"),
    })
}

fn init_logging(settings: &Settings, format: Option<LogFormat>) {
    use tracing_subscriber::filter::Targets;
    // RUST_LOG wins over log.level when it parses; both were validated the same way.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| settings.log.level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // rumqttc logs through `log`; route it into tracing.
    let _ = tracing_log::LogTracer::init();
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match format.unwrap_or(settings.log.format) {
        #[cfg(feature = "json-logs")]
        LogFormat::Json => registry.with(layer.json()).init(),
        #[cfg(not(feature = "json-logs"))]
        LogFormat::Json => {
            registry.with(layer).init();
            tracing::warn!("built without the json-logs feature; logging as text");
        }
        LogFormat::Human => registry.with(layer).init(),
    }
}

fn run_daemon(config: &Path, format: Option<LogFormat>) -> anyhow::Result<u8> {
    let settings = load(config)?;
    init_logging(&settings, format);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ran = rt.block_on(async {
        let shutdown = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        licd_agent::daemon::run(settings, Arc::new(SystemClock), shutdown).await
    });
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    ran.context("licd could not start")?;
    Ok(0)
}

/// The daemon's answer to `request`, or `None` when no daemon answers.
fn ask_daemon(settings: &Settings, request: Value) -> Option<Value> {
    if !cfg!(feature = "socket-api") {
        return None;
    }
    let path = settings.socket.as_ref()?;
    query(path, &request, SOCKET_TIMEOUT).ok()
}

/// The status evaluated from the cache (no daemon answered). A cached bundle that cannot be
/// used is `status.cache_problem` (the callers answer it as an error, not as "never
/// granted"); the other problems (time mark, trust state, VM record) are warnings on stderr.
fn from_cache(settings: Settings) -> anyhow::Result<licd_agent::status::Status> {
    let (status, problems) = licd_agent::daemon::status_from_cache(settings, Arc::new(SystemClock))
        .context("cannot evaluate the cache")?;
    for p in problems.iter().filter(|p| !p.is_bundle()) {
        eprintln!("licd: warning: {p}");
    }
    Ok(status)
}

fn check(config: &Path, service: &str, as_json: bool, strict: bool) -> anyhow::Result<u8> {
    let settings = load(config)?;
    // Refused here as the daemon and the cache would refuse it: a name too long for a request
    // line must not get a different answer.
    if let Some(message) = invalid_service(service) {
        anyhow::bail!("{message}");
    }
    let answer = match ask_daemon(
        &settings,
        json!({"v": 1, "op": "check", "service": service}),
    ) {
        Some(a) => a,
        None => {
            let status = from_cache(settings)?;
            // A cache that is there but unusable is an error to report, not "never granted".
            if let Some(problem) = &status.cache_problem {
                anyhow::bail!("{problem}");
            }
            match check_answer(&status, service) {
                Ok(a) => serde_json::to_value(a),
                Err(e) => serde_json::to_value(e),
            }
            .context("cannot render the answer")?
        }
    };
    if answer["ok"] != json!(true) {
        anyhow::bail!(
            "{}",
            answer["error"]
                .as_str()
                .unwrap_or("daemon refused the request")
        );
    }
    if as_json {
        println!("{answer}");
    } else {
        println!("{service}: {}", describe_state(&answer));
    }
    Ok(match answer["state"].as_str() {
        Some("licensed") => 0,
        Some("grace") if strict => EXIT_GRACE_STRICT,
        Some("grace") => 0,
        _ => EXIT_UNLICENSED,
    })
}

fn describe_state(v: &Value) -> String {
    let until = v["until"].as_u64().map(fmt_time).unwrap_or_default();
    let reason = v["reason"].as_str().unwrap_or_default().replace('_', " ");
    match v["state"].as_str() {
        Some("licensed") => format!("licensed until {until}"),
        Some("grace") => format!("GRACE until {until} ({reason})"),
        Some("unlicensed") => format!("UNLICENSED ({reason})"),
        _ => "unknown".into(),
    }
}

/// How `licd status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatusFormat {
    /// Lines for a person.
    Human,
    /// The status document.
    Json,
    /// Prometheus text format 0.0.4 for node_exporter's textfile collector.
    Prometheus,
}

fn status(config: &Path, format: StatusFormat, output: Option<&Path>) -> anyhow::Result<u8> {
    let settings = load(config)?;
    let (status, cache_problem) = match ask_daemon(&settings, json!({"v": 1, "op": "status"})) {
        Some(a) if a["ok"] == json!(true) => (a["status"].clone(), None),
        _ => {
            let s = from_cache(settings)?;
            let problem = s.cache_problem.clone();
            (
                serde_json::to_value(s).context("cannot render status")?,
                problem,
            )
        }
    };
    // Answered from an unusable cache: print what is known, say what is wrong, exit 4.
    let code = match &cache_problem {
        Some(problem) => {
            eprintln!("licd: {problem}");
            EXIT_ERROR
        }
        None => 0,
    };
    let text = match format {
        StatusFormat::Json => format!("{status:#}\n"),
        StatusFormat::Prometheus => licd_agent::textfile::render(&status),
        StatusFormat::Human => {
            if output.is_some() {
                anyhow::bail!("--output needs --format json or prometheus");
            }
            print_status(&status);
            return Ok(code);
        }
    };
    match output {
        Some(path) => licd_agent::store::write_atomic(path, text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(code)
}

fn print_status(status: &Value) {
    let s = |k: &str| status[k].as_str().unwrap_or("?").to_string();
    println!("device      {} (tenant {})", s("device"), s("tenant"));
    println!("device key  {}", s("device_key"));
    println!("source      {}", s("source"));
    let clock = &status["clock"];
    println!(
        "clock       now {}  mark {}{}",
        clock["now"].as_u64().map(fmt_time).unwrap_or_default(),
        clock["mark"].as_u64().map(fmt_time).unwrap_or_default(),
        if clock["rollback"] == json!(true) {
            "  CLOCK SET BACK"
        } else {
            ""
        }
    );
    if let Some(c) = status.get("connection").filter(|c| !c.is_null()) {
        println!(
            "broker      {} {}{}",
            c["broker"].as_str().unwrap_or("?"),
            if c["connected"] == json!(true) {
                "connected"
            } else {
                "disconnected"
            },
            c["last_error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    if let Some(p) = status.get("cache_problem").filter(|p| !p.is_null()) {
        println!(
            "cache       UNUSABLE: {}",
            p["message"].as_str().unwrap_or("?")
        );
    }
    match status.get("bundle").filter(|b| !b.is_null()) {
        Some(b) => println!(
            "bundle      seq {} issued {} signer {}",
            b["seq"],
            b["issued_at"].as_u64().map(fmt_time).unwrap_or_default(),
            b["signer"].as_str().unwrap_or("?")
        ),
        None => println!("bundle      none"),
    }
    if let Some(vm) = status.get("vm").filter(|v| !v.is_null()) {
        let count = vm["count"]
            .as_u64()
            .map_or("unknown".into(), |n| n.to_string());
        let age = vm["age_secs"]
            .as_u64()
            .map_or(String::new(), |a| format!(", read {a} s ago"));
        let stale = if vm["stale"] == json!(true) {
            ", PROBE FAILING: last known count in force"
        } else {
            ""
        };
        println!("vms         {count}{age}{stale}");
    }
    let refusals = &status["refusals"];
    if refusals["total"].as_u64().unwrap_or(0) > 0 {
        println!(
            "refused     {} message(s), last: {}",
            refusals["total"],
            refusals["last_message"].as_str().unwrap_or("?")
        );
    }
    for svc in status["services"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {}",
            svc["service"].as_str().unwrap_or("?"),
            describe_state(svc)
        );
    }
}

fn diag(config: &Path, as_json: bool, offline: bool, timeout: u64) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = licd_agent::diag::Options {
        offline,
        timeout: Duration::from_secs(timeout),
    };
    let report = rt.block_on(licd_agent::diag::run(config, &options, &SystemClock));
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot render the report")?
        );
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", licd_agent::diag::render::human(&report, colour));
    }
    Ok(report.exit_code)
}
