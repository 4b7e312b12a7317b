//! Configuration: the typed [`StubConfig`] the library runs on, and the TOML file form
//! ([`FileConfig`], unknown keys refused) the binary reads and validates into it once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use licd_protocol::topic::DEFAULT_SHARE_GROUP;
use licd_protocol::UnixTime;
use rumqttc::QoS;
use serde::Deserialize;

use crate::engine::LeasePolicy;
use crate::keys::Signer;

/// Default address of the embedded broker's plain MQTT listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

/// Where the controller's time comes from. Terms, leases and certificates use wall time.
#[derive(Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// A clock the caller sets (tests, demos that fast-forward).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `now`, with the handle that moves it.
    pub fn manual(now: UnixTime) -> (Self, Arc<AtomicU64>) {
        let cell = Arc::new(AtomicU64::new(now));
        (Self::Manual(cell.clone()), cell)
    }

    /// Current unix time in seconds.
    pub fn now(&self) -> UnixTime {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            Clock::Manual(c) => c.load(Ordering::SeqCst),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clock::System => f.write_str("Clock::System"),
            Clock::Manual(c) => write!(f, "Clock::Manual({})", c.load(Ordering::SeqCst)),
        }
    }
}

/// Devices whose reports may wait for the controller's worker at once: a fleet's start-up
/// storm fits (a waiting report is ~300 B: 20 MB at most), so a device's first report is not
/// dropped because others came first.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// Where the ledger lives.
#[derive(Debug, Clone)]
pub enum LedgerLocation {
    /// A SQLite file, created on first start.
    File(PathBuf),
    /// A PostgreSQL database (created tables on first start), shareable by replicas.
    Postgres {
        /// `postgres://user:password@host:port/db`.
        url: String,
        /// How long a ledger call retries a lost server before it fails.
        retry: Duration,
    },
    /// In memory: lost on exit (tests, throwaway demos).
    InMemory,
}

/// Where the signing keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A key directory made by `licd-stub keys init`.
    Dir(PathBuf),
    /// A given signer (tests: [`Signer::ephemeral`]).
    Signer(Box<Signer>),
}

/// Which broker the controller talks to.
#[derive(Debug, Clone)]
pub enum BrokerMode {
    /// Start rumqttd in this process, plain MQTT on `listen` (port 0 = pick a free port).
    Embedded {
        /// Listener address.
        listen: SocketAddr,
        /// An extra TLS listener (builds with the `broker-tls` feature only).
        tls: Option<crate::broker::EmbeddedTls>,
    },
    /// Connect to a running broker: `mqtt://host:port` or `mqtts://host:port`.
    External {
        /// Broker URL.
        url: String,
        /// PEM file of CA certificates for `mqtts://` (default: the system's roots).
        ca_file: Option<PathBuf>,
        /// Username and password, if the broker wants them.
        credentials: Option<(String, String)>,
    },
}

/// How the controller subscribes to reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportSubscription {
    /// `$share/{group}/licd/v1/+/+/report`: replicas split the load.
    Shared(String),
    /// `licd/v1/+/+/report`: a single controller, or a broker without shared subscriptions.
    Plain,
}

/// Everything [`crate::Stub::start`] needs, validated.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// Ledger location.
    pub ledger: LedgerLocation,
    /// Keys.
    pub keys: KeySource,
    /// Lease and grace lengths.
    pub lease: LeasePolicy,
    /// Broker.
    pub broker: BrokerMode,
    /// Report subscription.
    pub subscription: ReportSubscription,
    /// QoS of the controller's subscriptions (reports, relay reports, diagnostics answers):
    /// 1 by default. 0 on nats-server, where every QoS 1 subscription is a JetStream consumer
    /// that may not be re-created for minutes after a node is lost (docs/STUB.md); the agents
    /// publish their reports at QoS 1 either way, and retry one nobody answered.
    pub subscribe_qos: QoS,
    /// MQTT client id of the controller.
    pub client_id: String,
    /// Devices whose report may wait between the MQTT loop and the worker (one report each: a
    /// retry takes its waiting report's place); beyond it reports are dropped (devices report
    /// again). [`DEFAULT_QUEUE_CAPACITY`] unless a test or a bench says otherwise.
    pub queue_capacity: usize,
    /// How long `start` waits for the broker and the subscription.
    pub connect_timeout: Duration,
    /// Wall clock.
    pub clock: Clock,
    /// Speak the policy kinds (PROTOCOL.md §17): answer extended reports with policy bundles.
    /// `false` behaves as a controller predating §17: extended reports and extended
    /// activation requests are refused as an unknown kind, every bundle is plain.
    pub policy_kinds: bool,
}

impl StubConfig {
    /// In-memory ledger, the given signer, embedded broker on a free loopback port, default
    /// policy: what tests start from.
    pub fn for_tests(signer: Signer) -> Self {
        Self {
            ledger: LedgerLocation::InMemory,
            keys: KeySource::Signer(Box::new(signer)),
            lease: LeasePolicy::default(),
            broker: BrokerMode::Embedded {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls: None,
            },
            subscription: ReportSubscription::Shared(DEFAULT_SHARE_GROUP.to_string()),
            subscribe_qos: QoS::AtLeastOnce,
            client_id: "licd-stub".to_string(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            connect_timeout: Duration::from_secs(10),
            clock: Clock::System,
            policy_kinds: true,
        }
    }
}

/// The TOML configuration file. Every key is optional; unknown keys are an error.
///
/// ```toml
/// ledger = "/var/lib/licd-stub/ledger.db"   # SQLite file, created on first start
/// # ledger = "postgres://licd:pw@db.example:5432/licd"  # or PostgreSQL (replicas share it);
/// #   add ?sslmode=verify-full&sslrootcert=/etc/licd-stub/db-ca.pem for TLS
/// # ledger_retry_secs = 30                  # PostgreSQL: retry a lost server this long
/// key_dir = "/var/lib/licd-stub/keys"       # made by `licd-stub keys init`
/// lease_secs = 604800                       # 7 days
/// grace_secs = 2592000                      # 30 days
/// offline_lease_days = 90                   # lease of a grant file (licensing by file)
/// listen = "127.0.0.1:1883"                 # embedded broker (ignored with `broker`)
/// # tls_listen = "127.0.0.1:8883"           # embedded TLS listener (feature broker-tls)
/// # tls_cert = "server.pem"
/// # tls_key = "server.key"
/// # broker = "mqtt://127.0.0.1:1883"        # use an external broker instead; the nodes of a
///                                           # cluster comma-separated, failed over in turn
/// # ca_file = "/etc/licd-stub/ca.pem"       # for mqtts:// brokers
/// # username = "licd-stub"
/// # password = "..."
/// shared_subscription = true                # $share/<share_group>/licd/v1/+/+/report
/// share_group = "licd-controllers"
/// subscribe_qos = 1                         # 0 on nats-server (docs/STUB.md)
/// client_id = "licd-stub"
/// admin_listen = "127.0.0.1:8180"           # admin HTTP API (loopback by default)
/// policy_kinds = true                       # false: act as a controller predating policy
///                                           # (PROTOCOL.md §17.6), e.g. to stage a rollout
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Ledger: a SQLite file, or a `postgres://` / `postgresql://` URL (TLS with libpq's
    /// `sslmode=verify-full` and `sslrootcert=FILE`).
    pub ledger: Option<PathBuf>,
    /// PostgreSQL ledger: how long a call retries a lost server (default 30 s).
    pub ledger_retry_secs: Option<u64>,
    /// Key directory.
    pub key_dir: Option<PathBuf>,
    /// Lease length in seconds.
    pub lease_secs: Option<u64>,
    /// Grace length in seconds.
    pub grace_secs: Option<u64>,
    /// Lease of a grant file answering an activation request, in days (default 90).
    pub offline_lease_days: Option<u64>,
    /// Embedded broker listener.
    pub listen: Option<SocketAddr>,
    /// TLS listener of the embedded broker (feature `broker-tls`); needs `tls_cert`/`tls_key`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    pub tls_key: Option<PathBuf>,
    /// External broker URL.
    pub broker: Option<String>,
    /// CA file for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Broker username.
    pub username: Option<String>,
    /// Broker password.
    pub password: Option<String>,
    /// Use a shared subscription for reports.
    pub shared_subscription: Option<bool>,
    /// Shared-subscription group.
    pub share_group: Option<String>,
    /// QoS of the controller's subscriptions, 0 or 1 (default 1).
    pub subscribe_qos: Option<u8>,
    /// MQTT client id.
    pub client_id: Option<String>,
    /// Listener of the admin HTTP API (`licd-stub serve`; default 127.0.0.1:8180).
    pub admin_listen: Option<SocketAddr>,
    /// Speak the policy kinds (default true); see [`StubConfig::policy_kinds`].
    pub policy_kinds: Option<bool>,
}

/// Why a configuration is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// File.
        path: PathBuf,
        /// Error (shown in the message, not as a source: once).
        error: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Line (1-based) where the TOML parser stopped.
        line: usize,
        /// Column (1-based, in characters).
        column: usize,
        /// What is wrong: the parser's one-line message (no source snippet).
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = text.get(..at).unwrap_or("");
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line: before.matches('\n').count() + 1,
                column: before.get(line_start..).map_or(0, |l| l.chars().count()) + 1,
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Validates into a [`StubConfig`] (system clock, keys from `key_dir`).
    pub fn into_config(self) -> Result<StubConfig, ConfigError> {
        let defaults = LeasePolicy::default();
        let lease = LeasePolicy {
            lease_secs: self.lease_secs.unwrap_or(defaults.lease_secs),
            grace_secs: self.grace_secs.unwrap_or(defaults.grace_secs),
            offline_lease_secs: match self.offline_lease_days {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "offline_lease_days must be at least 1".into(),
                    ))
                }
                Some(d) => d.saturating_mul(86_400),
                None => defaults.offline_lease_secs,
            },
        };
        if lease.lease_secs == 0 {
            return Err(ConfigError::Invalid("lease_secs must be at least 1".into()));
        }
        let broker = match self.broker {
            Some(url) => {
                crate::session::split_urls(&url).map_err(ConfigError::Invalid)?;
                BrokerMode::External {
                    url,
                    ca_file: self.ca_file,
                    credentials: self
                        .username
                        .map(|u| (u, self.password.unwrap_or_default())),
                }
            }
            None => BrokerMode::Embedded {
                listen: self.listen.unwrap_or_else(|| {
                    DEFAULT_LISTEN
                        .parse()
                        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1883)))
                }),
                tls: match (self.tls_listen, self.tls_cert, self.tls_key) {
                    (None, None, None) => None,
                    (Some(listen), Some(cert), Some(key)) => {
                        Some(crate::broker::EmbeddedTls { listen, cert, key })
                    }
                    _ => {
                        return Err(ConfigError::Invalid(
                            "tls_listen, tls_cert and tls_key go together".into(),
                        ))
                    }
                },
            },
        };
        let group = self
            .share_group
            .unwrap_or_else(|| DEFAULT_SHARE_GROUP.to_string());
        if group.is_empty() || group.contains(['/', '+', '#']) {
            return Err(ConfigError::Invalid(format!(
                "share_group {group:?} must be non-empty without / + #"
            )));
        }
        let ledger = self.ledger.unwrap_or_else(|| PathBuf::from("licd-stub.db"));
        let ledger = match ledger.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                LedgerLocation::Postgres {
                    url: url.to_string(),
                    retry: self
                        .ledger_retry_secs
                        .map_or(crate::ledger::pg::DEFAULT_RETRY, Duration::from_secs),
                }
            }
            _ if self.ledger_retry_secs.is_some() => {
                return Err(ConfigError::Invalid(
                    "ledger_retry_secs applies to a postgres:// ledger only".into(),
                ))
            }
            _ => LedgerLocation::File(ledger),
        };
        Ok(StubConfig {
            ledger,
            keys: KeySource::Dir(self.key_dir.unwrap_or_else(|| PathBuf::from("keys"))),
            lease,
            broker,
            subscription: if self.shared_subscription.unwrap_or(true) {
                ReportSubscription::Shared(group)
            } else {
                ReportSubscription::Plain
            },
            subscribe_qos: match self.subscribe_qos {
                None | Some(1) => QoS::AtLeastOnce,
                Some(0) => QoS::AtMostOnce,
                Some(n) => {
                    return Err(ConfigError::Invalid(format!(
                        "subscribe_qos = {n}: 0 or 1 (2 is not supported)"
                    )))
                }
            },
            client_id: self.client_id.unwrap_or_else(|| "licd-stub".to_string()),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            connect_timeout: Duration::from_secs(10),
            clock: Clock::System,
            policy_kinds: self.policy_kinds.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_defaults_fill_the_rest() {
        assert!(toml::from_str::<FileConfig>("lease = 3").is_err());
        let c: FileConfig = toml::from_str("lease_secs = 5\nshared_subscription = false").unwrap();
        let c = c.into_config().unwrap();
        assert_eq!(c.lease.lease_secs, 5);
        assert_eq!(c.lease.grace_secs, LeasePolicy::default().grace_secs);
        assert_eq!(c.subscription, ReportSubscription::Plain);
        assert!(matches!(c.broker, BrokerMode::Embedded { .. }));
        assert!(c.policy_kinds, "policy kinds on by default");
        let old: FileConfig = toml::from_str("policy_kinds = false").unwrap();
        assert!(!old.into_config().unwrap().policy_kinds);
        let bad: FileConfig = toml::from_str("broker = \"tcp://x:1\"").unwrap();
        assert!(bad.into_config().is_err());
    }

    #[test]
    fn subscriptions_are_qos_1_unless_the_file_says_0() {
        let qos = |text: &str| {
            toml::from_str::<FileConfig>(text)
                .unwrap()
                .into_config()
                .map(|c| c.subscribe_qos)
        };
        assert_eq!(qos("").unwrap(), QoS::AtLeastOnce);
        assert_eq!(qos("subscribe_qos = 1").unwrap(), QoS::AtLeastOnce);
        assert_eq!(qos("subscribe_qos = 0").unwrap(), QoS::AtMostOnce);
        assert!(matches!(
            qos("subscribe_qos = 2"),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn a_postgres_url_picks_the_postgres_ledger_and_a_path_stays_sqlite() {
        let c: FileConfig =
            toml::from_str("ledger = \"postgres://licd@db:5432/licd\"\nledger_retry_secs = 5")
                .unwrap();
        match c.into_config().unwrap().ledger {
            LedgerLocation::Postgres { url, retry } => {
                assert_eq!(url, "postgres://licd@db:5432/licd");
                assert_eq!(retry, Duration::from_secs(5));
            }
            other => panic!("{other:?}"),
        }
        let c: FileConfig = toml::from_str("ledger = \"/var/lib/x.db\"").unwrap();
        assert!(matches!(
            c.into_config().unwrap().ledger,
            LedgerLocation::File(_)
        ));
        let c: FileConfig = toml::from_str("ledger = \"x.db\"\nledger_retry_secs = 5").unwrap();
        assert!(matches!(c.into_config(), Err(ConfigError::Invalid(_))));
    }

    /// A bad file is one line, said once, naming the file, line and column (was: the TOML
    /// crate's multi-line snippet twice, and the OS error twice).
    #[test]
    fn file_errors_are_one_line_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("stub.toml");
        for (text, wanted) in [
            ("lease_secs = 5\nledger = \n", ":2:10: "),
            ("lease_secs = 5\nfoo = 1\n", ":2:1: unknown field `foo`"),
            ("lease_secs = \"x\"\n", ":1:14: "),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = anyhow::Error::new(FileConfig::read(&f).unwrap_err());
            let shown = format!("{e:#}");
            assert!(!shown.contains('\n'), "{shown}");
            assert!(shown.contains(&format!("stub.toml{wanted}")), "{shown}");
            // No source to print again after the message.
            assert_eq!(shown, format!("{e}"));
        }
        let e = anyhow::Error::new(FileConfig::read(&dir.path().join("none.toml")).unwrap_err());
        let shown = format!("{e:#}");
        assert_eq!(shown.matches("os error 2").count(), 1, "{shown}");
    }
}
