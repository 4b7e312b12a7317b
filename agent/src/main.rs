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
use licd_agent::offline::{self, StateLock};
use licd_agent::status::fmt_time;
use serde_json::{json, Value};

/// Exit code: the service may not run.
const EXIT_UNLICENSED: u8 = 1;
/// Exit code: in grace, with `--strict`.
const EXIT_GRACE_STRICT: u8 = 3;
/// Exit code: licd itself failed (config, state dir…).
const EXIT_ERROR: u8 = 4;
/// Exit code of `import`/`release`: refused by the rules (nothing changed).
const EXIT_REFUSED: u8 = 1;
/// Exit code of `import`: the file is not usable (damaged, truncated, not a grant file).
const EXIT_UNUSABLE_FILE: u8 = 2;

/// How long `request`/`import`/`release` wait for the daemon's answer (it may wait up to 5 s
/// for the state directory's lock).
const FILE_SOCKET_TIMEOUT: Duration = Duration::from_secs(15);

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
                  3 in grace with --strict, 4 error. Of `import`: 0 imported, 1 refused, \
                  2 not a usable file, 4 error.\n\
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
    /// Licensing by file: write a signed activation request to carry to the controller
    /// (a renewal is a new request). Exit 0 written, 4 error.
    Request {
        /// A service to ask for (repeat the option; default: the configured services).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write armored text (a serial console, a web form) instead of binary.
        #[arg(long)]
        armor: bool,
    },
    /// Licensing by file: import a grant file or a trust statement (binary or armored), with
    /// the same rules as from the broker. Exit 0 imported, 1 refused by the rules, 2 not a
    /// usable file, 4 error.
    Import {
        /// The grant file or trust statement.
        file: PathBuf,
    },
    /// Licensing by file: give licenses back (they stop being licensed here) and write a
    /// signed release receipt for the controller. Exit 0 released, 1 refused, 4 error.
    Release {
        /// The services to give back.
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
        /// The receipt file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write armored text instead of binary.
        #[arg(long)]
        armor: bool,
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
        Command::Request {
            services,
            out,
            armor,
        } => request(&cli.config, services, &out, armor),
        Command::Import { file } => import(&cli.config, &file),
        Command::Release {
            services,
            out,
            armor,
        } => release(&cli.config, services, &out, armor),
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
    // rumqttc logs through `log`; route it into tracing. Set here, once, and not by
    // `SubscriberInitExt::init`: with tracing-subscriber's `tracing-log` feature on (feature
    // unification in a workspace build turns it on) that would set it a second time and panic.
    let _ = tracing_log::LogTracer::init();
    use tracing_subscriber::layer::SubscriberExt as _;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    // Only fails if a subscriber is already set, and then logging already works.
    let _ = match format.unwrap_or(settings.log.format) {
        #[cfg(feature = "json-logs")]
        LogFormat::Json => tracing::subscriber::set_global_default(registry.with(layer.json())),
        #[cfg(not(feature = "json-logs"))]
        LogFormat::Json => {
            let set = tracing::subscriber::set_global_default(registry.with(layer));
            tracing::warn!("built without the json-logs feature; logging as text");
            set
        }
        LogFormat::Human => tracing::subscriber::set_global_default(registry.with(layer)),
    };
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
        // Advisory past grace: the service runs, licensed with a warning (OPERATIONS.md §5).
        Some("grace" | "non_compliant") if strict => EXIT_GRACE_STRICT,
        Some("grace" | "non_compliant") => 0,
        _ => EXIT_UNLICENSED,
    })
}

fn describe_state(v: &Value) -> String {
    let until = v["until"].as_u64().map(fmt_time).unwrap_or_default();
    let reason = v["reason"].as_str().unwrap_or_default().replace('_', " ");
    match v["state"].as_str() {
        Some("licensed") => format!("licensed until {until}"),
        Some("grace") => format!("GRACE until {until} ({reason})"),
        Some("non_compliant") => format!("NON-COMPLIANT, running (advisory: {reason})"),
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
    let now = clock["now"].as_u64().unwrap_or(0);
    for svc in status["services"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {}{}",
            svc["service"].as_str().unwrap_or("?"),
            describe_state(svc),
            describe_policy(svc, now)
        );
    }
}

/// The policy part of a service's status line: strategy (unless restrict), time to the term
/// end, warnings.
fn describe_policy(svc: &Value, now: u64) -> String {
    let mut out = String::new();
    if let Some(strategy) = svc["strategy"].as_str().filter(|s| *s != "restrict") {
        out.push_str(&format!(", {strategy}"));
    }
    if let Some(end) = svc["term_ends_at"].as_u64() {
        let left = end.saturating_sub(now);
        if left > 0 {
            out.push_str(&format!(
                ", term ends in {}d {}h",
                left / 86_400,
                left % 86_400 / 3_600
            ));
        }
    }
    for w in svc["warnings"].as_array().into_iter().flatten() {
        match w["warning"].as_str() {
            Some("overage") => out.push_str(&format!(
                ", OVERAGE {}/{} VMs (tolerated {})",
                w["vms"], w["allowance"], w["tolerated"]
            )),
            Some("expiring_soon") => out.push_str(&format!(
                ", EXPIRING SOON (warned {} d before the end)",
                w["threshold"].as_u64().unwrap_or(0) / 86_400
            )),
            _ => {}
        }
    }
    out
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

/// Who carries out a file operation: the running daemon (its answer), or this process under
/// the state directory's lock.
enum Route {
    Daemon(Value),
    Stopped(StateLock),
}

/// Asks the daemon when one answers; otherwise takes the lock. A daemon that starts while we
/// wait holds the lock until its socket answers, so after taking it we look once more.
fn route(settings: &Settings, request: &Value) -> anyhow::Result<Route> {
    let socket = settings
        .socket
        .as_ref()
        .filter(|_| cfg!(feature = "socket-api"));
    for _ in 0..2 {
        if let Some(path) = socket {
            match query(path, request, FILE_SOCKET_TIMEOUT) {
                Ok(v) => return Ok(Route::Daemon(v)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => anyhow::bail!(
                    "the daemon's socket {} does not answer ({e}); nothing was changed",
                    path.display()
                ),
            }
        }
        licd_agent::store::Store::open(&settings.state_dir)
            .context("cannot open the state directory")?;
        let lock = StateLock::acquire(&settings.state_dir, offline::LOCK_WAIT)?;
        match socket {
            Some(path) if std::os::unix::net::UnixStream::connect(path).is_ok() => drop(lock),
            _ => return Ok(Route::Stopped(lock)),
        }
    }
    anyhow::bail!(
        "a daemon is starting in {}; try again",
        settings.state_dir.display()
    )
}

/// The daemon's answer as (message, file), or its refusal as an exit code with the line
/// printed.
fn daemon_answer(answer: &Value, what: &str) -> Result<(String, Option<Vec<u8>>), u8> {
    use base64::Engine as _;
    if answer["ok"] == json!(true) {
        let message = answer["message"].as_str().unwrap_or_default().to_string();
        let file = match answer["file"].as_str() {
            None => None,
            Some(b) => match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    eprintln!("licd: the daemon's answer carries no valid file: {e}");
                    return Err(EXIT_ERROR);
                }
            },
        };
        return Ok((message, file));
    }
    let error = answer["error"].as_str().unwrap_or("refused by the daemon");
    Err(refused(what, answer["code"].as_str(), error))
}

/// Prints one line for a refusal and gives its exit code.
fn refused(what: &str, code: Option<&str>, error: &str) -> u8 {
    match code {
        Some(c) if offline::UNUSABLE_FILE_CODES.contains(&c) => {
            eprintln!("licd: {what} refused, not a usable file ({c}): {error}");
            EXIT_UNUSABLE_FILE
        }
        Some(c) if !matches!(c, "error" | "busy" | "unbound") => {
            eprintln!("licd: {what} refused ({c}): {error}; nothing was changed");
            EXIT_REFUSED
        }
        _ => {
            eprintln!("licd: {what} failed: {error}");
            EXIT_ERROR
        }
    }
}

fn stopped_result<T>(what: &str, r: Result<T, offline::OfflineError>) -> Result<T, u8> {
    r.map_err(|e| refused(what, Some(e.code()), &e.to_string()))
}

/// Writes `bytes` (armored when asked) to `out` atomically; returns the size written.
fn write_out(out: &Path, bytes: &[u8], armor: bool) -> anyhow::Result<usize> {
    let data = if armor {
        licd_protocol::offline::armor(bytes)
            .context("cannot armor the file")?
            .into_bytes()
    } else {
        bytes.to_vec()
    };
    licd_agent::store::write_atomic(out, &data, 0o644)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(data.len())
}

fn request(config: &Path, services: Vec<String>, out: &Path, armor: bool) -> anyhow::Result<u8> {
    let settings = load(config)?;
    let names = offline::service_names(&services)?;
    let req = json!({"v": 1, "op": "request", "services": services});
    let (message, bytes) = match route(&settings, &req)? {
        Route::Daemon(answer) => match daemon_answer(&answer, "request") {
            Ok((m, Some(b))) => (m, b),
            Ok((_, None)) => anyhow::bail!("the daemon's answer carries no request"),
            Err(code) => return Ok(code),
        },
        Route::Stopped(lock) => {
            let identity = resolve_identity_blocking(&settings)?;
            let clock = SystemClock;
            match stopped_result(
                "request",
                offline::request_stopped(&lock, &settings, &clock, &identity, names),
            ) {
                Ok(b) => ("activation request written".to_string(), b),
                Err(code) => return Ok(code),
            }
        }
    };
    let n = write_out(out, &bytes, armor)?;
    println!("{message}");
    println!(
        "wrote {} ({n} bytes{}). Carry it to the controller: `licd-stub offline grant {} --out grant.licd` \
         (or upload it: POST /api/v1/offline/requests), then bring the grant file back and run \
         `licd import grant.licd` here.",
        out.display(),
        if armor { ", armored" } else { "" },
        out.display()
    );
    Ok(0)
}

fn import(config: &Path, file: &Path) -> anyhow::Result<u8> {
    use base64::Engine as _;
    use std::io::Read;
    let settings = load(config)?;
    let limit = licd_protocol::offline::armor::MAX_ARMOR_LEN;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    if bytes.len() > limit {
        return Ok(refused(
            "import",
            Some("oversized"),
            &format!("{} is over {limit} bytes: not a licd file", file.display()),
        ));
    }
    let req = json!({
        "v": 1,
        "op": "import",
        "file": base64::engine::general_purpose::STANDARD.encode(&bytes),
    });
    let message = match route(&settings, &req)? {
        Route::Daemon(answer) => match daemon_answer(&answer, "import") {
            Ok((m, _)) => format!("{m}; the daemon enforces it now"),
            Err(code) => return Ok(code),
        },
        Route::Stopped(lock) => {
            let clock = SystemClock;
            match stopped_result(
                "import",
                offline::import_stopped(&lock, &settings, &clock, &bytes),
            ) {
                Ok(m) => format!("{m}; written to the cache, in force when the daemon starts"),
                Err(code) => return Ok(code),
            }
        }
    };
    println!("{message}");
    Ok(0)
}

fn release(config: &Path, services: Vec<String>, out: &Path, armor: bool) -> anyhow::Result<u8> {
    let settings = load(config)?;
    let names = offline::service_names(&services)?;
    let req = json!({"v": 1, "op": "release", "services": services});
    let (message, bytes) = match route(&settings, &req)? {
        Route::Daemon(answer) => match daemon_answer(&answer, "release") {
            Ok((m, Some(b))) => (m, b),
            Ok((_, None)) => anyhow::bail!("the daemon's answer carries no receipt"),
            Err(code) => return Ok(code),
        },
        Route::Stopped(lock) => {
            let clock = SystemClock;
            match stopped_result(
                "release",
                offline::release_stopped(&lock, &settings, &clock, &names),
            ) {
                Ok(b) => (format!("released {}", services.join(", ")), b),
                Err(code) => return Ok(code),
            }
        }
    };
    let n = write_out(out, &bytes, armor)?;
    println!("{message}");
    println!(
        "wrote {} ({n} bytes{}). Carry it to the controller: `licd-stub offline return {}` \
         (or upload it: POST /api/v1/offline/returns) to free the seats.",
        out.display(),
        if armor { ", armored" } else { "" },
        out.display()
    );
    Ok(0)
}

fn resolve_identity_blocking(
    settings: &Settings,
) -> anyhow::Result<licd_agent::identity::Identity> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let identity = rt.block_on(licd_agent::identity::resolve_identity(
        &settings.identity,
        &licd_agent::identity::HostRoot::system(),
        licd_agent::identity::DEFAULT_RESOLVE_TIMEOUT,
    ));
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    identity.context("cannot resolve the device identity")
}
