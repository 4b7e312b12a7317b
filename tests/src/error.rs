//! The harness's error type: one variant per way a helper can fail, with the context a test
//! failure message needs.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result of a harness helper.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Why a harness helper failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation ({what}): {source}")]
    Pki {
        /// Which certificate.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A condition did not become true in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The condition waited for.
        what: String,
        /// How long the harness waited.
        after: Duration,
    },
    /// mosquitto exited or never accepted connections.
    #[error("mosquitto on port {port} {problem}; config {config}; log:\n{log}")]
    Broker {
        /// The broker's port.
        port: u16,
        /// What went wrong.
        problem: String,
        /// The generated config file.
        config: PathBuf,
        /// The broker's log so far.
        log: String,
    },
    /// PostgreSQL could not be set up, exited, or refused a command.
    #[error("PostgreSQL on port {port} {problem}; log:\n{log}")]
    Postgres {
        /// The server's port.
        port: u16,
        /// What went wrong.
        problem: String,
        /// The server's log so far.
        log: String,
    },
    /// Building or locating the `licd` binary failed.
    #[error("cannot get the licd binary: {0}")]
    Build(String),
    /// A real component (relay, key, delegation) could not be set up.
    #[error("set-up failed: {0}")]
    Setup(String),
}

impl HarnessError {
    /// An [`HarnessError::Io`] saying what the harness was doing.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
