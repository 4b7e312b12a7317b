//! The agent's configuration: the TOML file as written (`Config`, unknown keys refused) and the
//! typed, validated [`Settings`] the rest of the agent uses. Validation happens once, here, so
//! a bad value is reported at start-up with the key that holds it.
//!
//! The documented example is `agent/licd.example.toml`; a test keeps it loadable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use licd_protocol::{PublicKey, ServiceName, SiteId, TenantId};
use serde::Deserialize;

pub use crate::enforce::ExtendedReports;

pub mod host;

pub use host::{IdentityConfig, VmProbeConfig};

/// Where the TLS trust and client identity come from; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) to trust; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate chain (leaf first) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client private key (PKCS#8, PKCS#1 or SEC1) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Name the broker certificate must be valid for, instead of the broker host.
    pub server_name: Option<String>,
}

mod locate;

/// Default path of the config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/licd/licd.toml";

/// A config that cannot be used, naming the file, the line and the key, on one line.
///
/// Every variant's message is whole (the OS or TOML reason included) and none has a
/// `source()`, so a `{:#}` chain of errors says each reason once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not TOML, or not TOML for this schema (unknown key, missing key, wrong
    /// type).
    #[error("config {}{}: {message}", path.display(), Location { line: *line, key: key.as_deref() })]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when it has one (a missing key has none).
        line: Option<usize>,
        /// The dotted key, e.g. `broker.url`, when it is known.
        key: Option<String>,
        /// What is wrong, one line.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("config {}{}: {message}", path.display(), Location { line: *line, key: Some(key) })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key, when the file has it (not for a default value).
        line: Option<usize>,
        /// The key, e.g. `broker.url`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// ` line 5, key `broker.url`` as the messages above print it.
struct Location<'a> {
    line: Option<usize>,
    key: Option<&'a str>,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = self.key {
            write!(f, ", key `{key}`")?;
        }
        Ok(())
    }
}

/// Where `from_toml` errors say they come from.
const NO_FILE: &str = "<text>";

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: PathBuf::from(NO_FILE),
        line: None,
        key,
        message: message.into(),
    }
}

impl ConfigError {
    /// The dotted key at fault, when known (e.g. `broker.url`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    /// The 1-based line at fault, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// Names `path` as the file and finds the line of the key in `text`.
    fn at(self, path: &Path, text: &str) -> Self {
        match self {
            ConfigError::Invalid {
                key, message, line, ..
            } => ConfigError::Invalid {
                path: path.to_path_buf(),
                // A missing key (`broker.url`): the line of its table.
                line: line.or_else(|| locate::line_of_key(text, key)).or_else(|| {
                    key.rsplit_once('.')
                        .and_then(|(table, _)| locate::line_of_key(text, table))
                }),
                key,
                message,
            },
            ConfigError::Parse {
                line, key, message, ..
            } => ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                key,
                message,
            },
            read @ ConfigError::Read { .. } => read,
        }
    }
}

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tenant (customer) this device belongs to.
    pub tenant: String,
    /// Site this device is at (issue 23): a site issuer (relay) delegated for this site may
    /// license it. Unset: only the controller itself may.
    #[serde(default)]
    pub site: Option<String>,
    /// Services this device wants licensed.
    #[serde(default)]
    pub services: Vec<String>,
    /// Where the device key, the cached bundle and the time mark live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Pinned root public keys (hex), from `licd-stub keys export-root` or the vendor.
    pub roots: Vec<String>,
    /// Broker connection.
    pub broker: BrokerConfig,
    /// Local API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Hook commands.
    #[serde(default)]
    pub hooks: HooksConfig,
    /// Enforcement tolerances and intervals.
    #[serde(default)]
    pub enforce: EnforceConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Device identity overrides.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// VM count probe.
    #[serde(default)]
    pub vm: VmProbeConfig,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/licd")
}

/// `[broker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `mqtts://host[:port]` (default port 8883) or, with `allow_insecure`, `mqtt://host[:port]`.
    #[serde(default)]
    pub url: Option<String>,
    /// Further nodes of a clustered broker, same form as `url` and the same scheme; with or
    /// without `url` (then `url` is one more node, listed first). The agent starts at a random
    /// node and moves to the next one whenever a connection fails or drops (see
    /// [`crate::failover`]).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Allow plain `mqtt://` (no TLS). For labs only.
    #[serde(default)]
    pub allow_insecure: bool,
    /// CA certificate(s) to trust (PEM); default: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// TLS server name to verify instead of the URL's host.
    pub server_name: Option<String>,
    /// MQTT user name.
    pub username: Option<String>,
    /// File holding the MQTT password (kept out of the config so the config can be world-readable).
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Upper bound of the reconnect backoff (full jitter below it).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
    /// QoS of the agent's subscriptions (grants, trust, diagnostics): 1 (default) or 0. With
    /// 0 a message lost while connected waits for the next retained delivery (every reconnect)
    /// or the next answered report; set it only where a QoS 1 subscription is costly for the
    /// broker (nats-server: one JetStream consumer each, docs/STUB.md).
    #[serde(default = "default_subscribe_qos")]
    pub subscribe_qos: u8,
}

fn default_subscribe_qos() -> u8 {
    1
}

fn default_reconnect_max() -> u64 {
    300
}

fn default_keep_alive() -> u64 {
    60
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket path; empty string disables the socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
        }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/licd/licd.sock")
}

/// `[hooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Command (argv) run on every state change, with `LICD_SERVICE`, `LICD_STATE`,
    /// `LICD_REASON`, `LICD_UNTIL` in its environment.
    #[serde(default)]
    pub on_change: Vec<String>,
    /// How long a hook may run before it is killed.
    #[serde(default = "default_hook_timeout")]
    pub timeout_secs: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            on_change: Vec::new(),
            timeout_secs: default_hook_timeout(),
        }
    }
}

fn default_hook_timeout() -> u64 {
    10
}

/// `[enforce]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforceConfig {
    /// How far a bundle's `issued_at` may lie ahead of trusted time (controller clock skew).
    #[serde(default = "default_tolerance")]
    pub future_tolerance_secs: u64,
    /// How far the wall clock may fall behind the high-water mark before it counts as set back.
    #[serde(default = "default_tolerance")]
    pub rollback_tolerance_secs: u64,
    /// Report interval while no bundle says when to report (`refresh_after`).
    #[serde(default = "default_report_interval")]
    pub report_interval_secs: u64,
    /// How often the VM probe runs.
    #[serde(default = "default_vm_interval")]
    pub vm_probe_interval_secs: u64,
    /// Extended reports (report seq, usage, compliance; PROTOCOL.md §17), answered by policy
    /// bundles: `"auto"` (the default) negotiates with the controller — extended, falling back
    /// to plain reports when a controller predating §17 leaves them unanswered (§17.6);
    /// `true` always, `false` never.
    #[serde(default)]
    pub extended_reports: ExtendedReports,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        Self {
            future_tolerance_secs: default_tolerance(),
            rollback_tolerance_secs: default_tolerance(),
            report_interval_secs: default_report_interval(),
            vm_probe_interval_secs: default_vm_interval(),
            extended_reports: ExtendedReports::Auto,
        }
    }
}

fn default_tolerance() -> u64 {
    300
}
fn default_report_interval() -> u64 {
    3_600
}
fn default_vm_interval() -> u64 {
    60
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Level filter (`RUST_LOG` syntax); `RUST_LOG` in the environment wins.
    #[serde(default = "default_level")]
    pub level: String,
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Most broker nodes in `[broker]`: a cluster has a handful; more is a mistake in the file.
pub const MAX_BROKER_NODES: usize = 16;

/// One node of the broker (a cluster has several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNode {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for BrokerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where and how to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Host name or address of the first node.
    pub host: String,
    /// TCP port of the first node.
    pub port: u16,
    /// The nodes after the first one (`[broker] urls`), in the file's order; all share the
    /// TLS settings and credentials below.
    pub more_nodes: Vec<BrokerNode>,
    /// TLS settings; `None` = plain TCP (only with `allow_insecure`).
    pub tls: Option<TlsSettings>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Reconnect backoff cap.
    pub reconnect_max: Duration,
    /// Subscriptions at QoS 1 (`false`: QoS 0, `subscribe_qos = 0`).
    pub subscribe_qos1: bool,
}

impl BrokerSettings {
    /// Every node, the first one first.
    pub fn nodes(&self) -> Vec<BrokerNode> {
        let first = BrokerNode {
            host: self.host.clone(),
            port: self.port,
        };
        std::iter::once(first)
            .chain(self.more_nodes.iter().cloned())
            .collect()
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tenant.
    pub tenant: TenantId,
    /// Site (see [`Config::site`]).
    pub site: Option<SiteId>,
    /// Wanted services.
    pub services: Vec<ServiceName>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Pinned roots.
    pub roots: Vec<PublicKey>,
    /// Broker.
    pub broker: BrokerSettings,
    /// Socket path (`None`: disabled).
    pub socket: Option<PathBuf>,
    /// Hook argv (empty: none).
    pub hook: Vec<String>,
    /// Hook timeout.
    pub hook_timeout: Duration,
    /// See [`EnforceConfig::future_tolerance_secs`].
    pub future_tolerance: u64,
    /// See [`EnforceConfig::rollback_tolerance_secs`].
    pub rollback_tolerance: u64,
    /// See [`EnforceConfig::report_interval_secs`].
    pub report_interval: Duration,
    /// See [`EnforceConfig::vm_probe_interval_secs`].
    pub vm_probe_interval: Duration,
    /// See [`EnforceConfig::extended_reports`].
    pub extended_reports: ExtendedReports,
    /// Logging.
    pub log: LogConfig,
    /// Identity overrides.
    pub identity: IdentityConfig,
    /// VM probe.
    pub vm: VmProbeConfig,
}

impl Settings {
    /// Reads and validates the config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text (errors name the file `<text>`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new(NO_FILE))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| locate::parse_error(text, &e).at(path, text))?;
        Self::validate(config).map_err(|e| e.at(path, text))
    }

    /// Validates a parsed config.
    pub fn validate(c: Config) -> Result<Self, ConfigError> {
        let tenant = TenantId::new(c.tenant.as_str())
            .map_err(|e| invalid("tenant", format!("{:?}: {e}", c.tenant)))?;
        let site = c
            .site
            .as_deref()
            .map(|s| SiteId::new(s).map_err(|e| invalid("site", format!("{s:?}: {e}"))))
            .transpose()?;
        let mut services = Vec::new();
        for s in &c.services {
            let s = ServiceName::new(s.as_str())
                .map_err(|e| invalid("services", format!("{s:?}: {e}")))?;
            if !services.contains(&s) {
                services.push(s);
            }
        }
        if services.len() > licd_protocol::limits::MAX_SERVICES {
            return Err(invalid("services", "more than 64 services"));
        }
        if c.roots.is_empty() {
            return Err(invalid(
                "roots",
                "pin at least one root public key (hex, from `licd-stub keys export-root` or your vendor)",
            ));
        }
        let roots = c
            .roots
            .iter()
            .map(|r| {
                let key = PublicKey::from_hex(r)
                    .map_err(|_| invalid("roots", format!("{r:?} is not 64 hex digits")))?;
                key.to_verifying_key()
                    .map_err(|_| invalid("roots", format!("{r:?} is not a valid ed25519 key")))?;
                Ok(key)
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if c.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "must not be empty"));
        }
        let broker = broker_settings(&c.broker)?;
        let socket = (!c.api.socket.as_os_str().is_empty()).then_some(c.api.socket);
        if c.hooks.timeout_secs == 0 {
            return Err(invalid("hooks.timeout_secs", "must be at least 1"));
        }
        let e = &c.enforce;
        if e.report_interval_secs < 10 {
            return Err(invalid(
                "enforce.report_interval_secs",
                "must be at least 10",
            ));
        }
        if e.vm_probe_interval_secs == 0 {
            return Err(invalid(
                "enforce.vm_probe_interval_secs",
                "must be at least 1",
            ));
        }
        check_log_filter(&c.log.level)
            .map_err(|err| invalid("log.level", format!("{:?}: {err}", c.log.level)))?;
        c.identity
            .validate()
            .map_err(|err| invalid(err.key(), err.to_string()))?;
        c.vm.validate()
            .map_err(|err| invalid(err.key(), err.to_string()))?;
        Ok(Settings {
            tenant,
            site,
            services,
            state_dir: c.state_dir,
            roots,
            broker,
            socket,
            hook: c.hooks.on_change,
            hook_timeout: Duration::from_secs(c.hooks.timeout_secs),
            future_tolerance: e.future_tolerance_secs,
            rollback_tolerance: e.rollback_tolerance_secs,
            report_interval: Duration::from_secs(e.report_interval_secs),
            vm_probe_interval: Duration::from_secs(e.vm_probe_interval_secs),
            extended_reports: e.extended_reports,
            log: c.log,
            identity: c.identity,
            vm: c.vm,
        })
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?}: expected human or json")),
        }
    }
}

/// Checks a `log.level` filter the way the daemon's log filter (`tracing_subscriber`'s
/// `Targets`) will parse it, so a bad one is refused at load with its key — by every reader of
/// the config, the client libraries included, which do not link the logging crates. A list of
/// `level`, `target` or `target=level` separated by commas; a level is `off`, `error`, `warn`,
/// `info`, `debug`, `trace` (any case) or 0–5. The agent's tests hold this to the real parser.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    fn is_level(s: &str) -> bool {
        s.parse::<usize>().is_ok_and(|n| n <= 5)
            || s.is_empty()
            || ["off", "error", "warn", "info", "debug", "trace"]
                .iter()
                .any(|l| s.eq_ignore_ascii_case(l))
    }
    for directive in filter.split(',') {
        let mut parts = directive.split('=');
        let target = parts.next().unwrap_or_default();
        let Some(level) = parts.next() else { continue };
        if parts.next().is_some() {
            return Err("too many '=' in filter directive, expected 0 or 1".into());
        }
        let mut t = target.split("[{");
        t.next();
        if let Some(fields) = t.next() {
            if t.next().is_some() {
                return Err("too many '[{' in filter directive, expected 0 or 1".into());
            }
            if !fields.ends_with("}]") {
                return Err("expected fields list to end with '}]'".into());
            }
        }
        if !is_level(level) {
            return Err(format!(
                "{level:?} is not a level (off, error, warn, info, debug, trace)"
            ));
        }
    }
    Ok(())
}

fn broker_settings(b: &BrokerConfig) -> Result<BrokerSettings, ConfigError> {
    let key = if b.url.is_some() || b.urls.is_empty() {
        "broker.url"
    } else {
        "broker.urls"
    };
    let all: Vec<&String> = b.url.iter().chain(&b.urls).collect();
    if all.is_empty() {
        return Err(invalid(
            "broker.url",
            "required key is missing: url = \"mqtts://host[:port]\" (or urls = [...] for the nodes of a cluster)",
        ));
    }
    if all.len() > MAX_BROKER_NODES {
        return Err(invalid(
            "broker.urls",
            format!("{} broker nodes; at most {MAX_BROKER_NODES}", all.len()),
        ));
    }
    let mut nodes: Vec<BrokerNode> = Vec::with_capacity(all.len());
    let mut scheme_tls = None;
    for (i, url) in all.into_iter().enumerate() {
        let key = if i == 0 { key } else { "broker.urls" };
        let (tls, node) = parse_broker_url(url, b.allow_insecure, key)?;
        match scheme_tls {
            Some(first) if first != tls => {
                return Err(invalid(
                    key,
                    format!("{url:?}: every broker node needs the same scheme (all mqtts:// or all mqtt://)"),
                ))
            }
            _ => scheme_tls = Some(tls),
        }
        if nodes.contains(&node) {
            return Err(invalid(
                key,
                format!("{url:?}: broker node {node} is listed twice"),
            ));
        }
        nodes.push(node);
    }
    let tls = scheme_tls.unwrap_or(true);
    let mut nodes = nodes.into_iter();
    let Some(BrokerNode { host, port }) = nodes.next() else {
        return Err(invalid("broker.url", "no broker node"));
    };
    let more_nodes: Vec<BrokerNode> = nodes.collect();
    let credentials = match (&b.username, &b.password_file) {
        (None, None) => None,
        (Some(user), Some(file)) => {
            let pw = std::fs::read_to_string(file)
                .map_err(|e| invalid("broker.password_file", format!("{}: {e}", file.display())))?;
            Some((user.clone(), pw.trim_end_matches(['\r', '\n']).to_string()))
        }
        (Some(user), None) => Some((user.clone(), String::new())),
        (None, Some(_)) => {
            return Err(invalid(
                "broker.username",
                "password_file is set without a username",
            ))
        }
    };
    if b.client_cert.is_some() != b.client_key.is_some() {
        return Err(invalid(
            "broker.client_cert",
            "client_cert and client_key go together: set both for mutual TLS, or neither",
        ));
    }
    if b.reconnect_max_secs == 0 {
        return Err(invalid("broker.reconnect_max_secs", "must be at least 1"));
    }
    if b.keep_alive_secs < 5 {
        return Err(invalid("broker.keep_alive_secs", "must be at least 5"));
    }
    if b.subscribe_qos > 1 {
        return Err(invalid("broker.subscribe_qos", "must be 0 or 1"));
    }
    Ok(BrokerSettings {
        host,
        port,
        more_nodes,
        tls: tls.then(|| TlsSettings {
            ca_file: b.ca_file.clone(),
            client_cert: b.client_cert.clone(),
            client_key: b.client_key.clone(),
            server_name: b.server_name.clone(),
        }),
        credentials,
        keep_alive: Duration::from_secs(b.keep_alive_secs),
        reconnect_max: Duration::from_secs(b.reconnect_max_secs),
        subscribe_qos1: b.subscribe_qos == 1,
    })
}

/// One `mqtts://host[:port]` (or `mqtt://` with `allow_insecure`): whether it is TLS, and the
/// node. Errors name `key`.
fn parse_broker_url(
    url: &str,
    allow_insecure: bool,
    key: &'static str,
) -> Result<(bool, BrokerNode), ConfigError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(key, format!("{url:?}: expected mqtts://host[:port]")))?;
    let tls = match scheme {
        "mqtts" => true,
        "mqtt" if allow_insecure => false,
        "mqtt" => {
            return Err(invalid(
                key,
                "plain mqtt:// sends licenses unencrypted; use mqtts:// or set broker.allow_insecure = true (labs only)",
            ))
        }
        other => {
            return Err(invalid(
                key,
                format!("unknown scheme {other:?}; use mqtts:// (or mqtt:// with allow_insecure)"),
            ))
        }
    };
    let (host, port) = split_host_port(rest.trim_end_matches('/'))
        .ok_or_else(|| invalid(key, format!("{url:?}: expected host[:port]")))?;
    let port = port.unwrap_or(if tls { 8883 } else { 1883 });
    Ok((tls, BrokerNode { host, port }))
}

/// Splits `host[:port]`, `[v6][:port]`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (s, None),
    };
    if host.is_empty() || host.contains(['/', '@', ':', ' ']) {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn minimal(broker: &str) -> String {
        format!("tenant = \"acme\"\nroots = [\"{ROOT}\"]\nservices = [\"wifi\", \"wifi\"]\n[broker]\n{broker}\n")
    }

    #[test]
    fn a_minimal_config_gets_sane_defaults() {
        let s = Settings::from_toml(&minimal("url = \"mqtts://broker.example.com\"")).unwrap();
        assert_eq!(s.broker.host, "broker.example.com");
        assert_eq!(s.broker.port, 8883);
        assert!(s.broker.tls.is_some());
        assert_eq!(s.services.len(), 1, "duplicates are folded");
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/licd"));
        assert_eq!(s.socket, Some(PathBuf::from("/run/licd/licd.sock")));
        assert_eq!(s.future_tolerance, 300);
        assert_eq!(
            s.site, None,
            "no site: only the controller may license the device"
        );
    }

    #[test]
    fn extended_reports_is_auto_by_default_and_true_false_mean_always_never() {
        let with = |v: &str| {
            Settings::from_toml(&format!(
                "{}[enforce]\nextended_reports = {v}\n",
                minimal("url = \"mqtts://h\"")
            ))
        };
        let s = Settings::from_toml(&minimal("url = \"mqtts://h\"")).unwrap();
        assert_eq!(s.extended_reports, ExtendedReports::Auto);
        for (v, want) in [
            ("\"auto\"", ExtendedReports::Auto),
            ("true", ExtendedReports::Always),
            ("false", ExtendedReports::Never),
        ] {
            assert_eq!(with(v).unwrap().extended_reports, want, "{v}");
        }
        for bad in ["\"yes\"", "1"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("\"auto\", true or false"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/licd.example.toml");
        let s = Settings::load(&path).unwrap();
        assert_eq!(s.tenant.as_str(), "acme");
    }

    #[test]
    fn plain_mqtt_needs_allow_insecure() {
        let err = Settings::from_toml(&minimal("url = \"mqtt://127.0.0.1:1883\"")).unwrap_err();
        assert!(err.to_string().contains("allow_insecure"), "{err}");
        let s = Settings::from_toml(&minimal(
            "url = \"mqtt://127.0.0.1:1884\"\nallow_insecure = true",
        ))
        .unwrap();
        assert_eq!((s.broker.port, s.broker.tls.is_none()), (1884, true));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (minimal("url = \"http://x\""), "broker.url"),
            (minimal("url = \"mqtts://\""), "broker.url"),
            (minimal("url = \"mqtts://h:99999\""), "broker.url"),
            (
                minimal("url = \"mqtts://h\"\nclient_cert = \"/c.pem\""),
                "broker.client_cert",
            ),
            (
                format!("tenant = \"a/b\"\nroots = [\"{ROOT}\"]\n[broker]\nurl = \"mqtts://h\"\n"),
                "tenant",
            ),
            (
                "tenant = \"a\"\nroots = [\"abc\"]\n[broker]\nurl = \"mqtts://h\"\n".to_string(),
                "roots",
            ),
            (
                "tenant = \"a\"\nroots = []\n[broker]\nurl = \"mqtts://h\"\n".to_string(),
                "roots",
            ),            (
                format!("tenant = \"a\"\nsite = \"plant 7\"\nroots = [\"{ROOT}\"]\n[broker]\nurl = \"mqtts://h\"\n"),
                "site",
            ),
        ];
        for (text, key) in cases {
            match Settings::from_toml(&text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn subscriptions_are_qos_1_unless_the_file_says_0() {
        let qos1 = |extra: &str| {
            Settings::from_toml(&minimal(&format!("url = \"mqtts://a.example\"\n{extra}")))
                .map(|s| s.broker.subscribe_qos1)
        };
        assert!(qos1("").unwrap(), "QoS 1 by default");
        assert!(qos1("subscribe_qos = 1").unwrap());
        assert!(!qos1("subscribe_qos = 0").unwrap());
        let e = qos1("subscribe_qos = 2").unwrap_err().to_string();
        assert!(
            e.contains("broker.subscribe_qos") && e.contains("0 or 1"),
            "{e}"
        );
    }

    #[test]
    fn several_broker_urls_make_nodes_in_order_with_or_without_url() {
        let s = Settings::from_toml(&minimal(
            "urls = [\"mqtts://a.example\", \"mqtts://b.example:8884\", \"mqtts://[::1]\"]",
        ))
        .unwrap();
        let nodes: Vec<String> = s.broker.nodes().iter().map(|n| n.to_string()).collect();
        assert_eq!(nodes, ["a.example:8883", "b.example:8884", "[::1]:8883"]);
        assert_eq!((s.broker.host.as_str(), s.broker.port), ("a.example", 8883));

        let s = Settings::from_toml(&minimal(
            "url = \"mqtt://n1:1883\"\nurls = [\"mqtt://n2:1883\"]\nallow_insecure = true",
        ))
        .unwrap();
        let nodes: Vec<String> = s.broker.nodes().iter().map(|n| n.to_string()).collect();
        assert_eq!(nodes, ["n1:1883", "n2:1883"], "url first, then urls");
        assert!(s.broker.tls.is_none());
    }

    #[test]
    fn bad_broker_node_lists_are_refused_with_the_key_and_the_reason() {
        let cases = [
            ("urls = []", "broker.url", "required key is missing"),
            ("", "broker.url", "required key is missing"),
            (
                "urls = [\"mqtts://a\", \"mqtts://a:8883\"]",
                "broker.urls",
                "listed twice",
            ),
            (
                "urls = [\"mqtts://a\", \"mqtt://b\"]\nallow_insecure = true",
                "broker.urls",
                "same scheme",
            ),
            (
                "urls = [\"mqtts://a\", \"mqtt://b\"]",
                "broker.urls",
                "allow_insecure",
            ),
            (
                "urls = [\"mqtts://a\", \"b:1\"]",
                "broker.urls",
                "expected mqtts://",
            ),
            (
                "urls = [\"mqtts://a:x\"]",
                "broker.urls",
                "expected host[:port]",
            ),
            (
                "url = \"mqtts://a\"\nurls = [\"mqtts://a\"]",
                "broker.urls",
                "listed twice",
            ),
        ];
        for (broker, key, why) in cases {
            match Settings::from_toml(&minimal(broker)) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    assert_eq!(e.key(), Some(key), "{broker}: {e}");
                    assert!(e.to_string().contains(why), "{broker}: {e}");
                }
                other => panic!("{broker}: {other:?}"),
            }
        }
        let many: Vec<String> = (0..=MAX_BROKER_NODES)
            .map(|i| format!("\"mqtts://n{i}\""))
            .collect();
        let err = Settings::from_toml(&minimal(&format!("urls = [{}]", many.join(","))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 16"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Settings::from_toml(&format!("{}colour = 1\n", minimal("url = \"mqtts://h\"")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn ipv6_hosts_parse() {
        assert_eq!(
            split_host_port("[::1]:8883"),
            Some(("::1".to_string(), Some(8883)))
        );
        assert_eq!(split_host_port("[::1]"), Some(("::1".to_string(), None)));
        assert_eq!(split_host_port("h:1"), Some(("h".to_string(), Some(1))));
        assert_eq!(split_host_port("a:b:c"), None);
    }
}
