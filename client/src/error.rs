//! Why a request to the agent failed. Each variant says what a caller can do about it; the
//! C library maps them one to one onto `licd_error`.

use std::path::PathBuf;
use std::time::Duration;

/// A failed request to the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No agent listens: the socket file is missing or nobody accepts on it.
    #[error("licd is not running: cannot connect to {}: {error}", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The OS error (not found, connection refused).
        error: std::io::Error,
    },
    /// The socket exists but this process may not use it.
    #[error(
        "not allowed to connect to {path} (the socket is mode 0660: run as licd's user or group)"
    )]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The agent did not answer in time.
    #[error("licd did not answer on {path} within {timeout:?}")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// Any other I/O error on the socket.
    #[error("I/O error on {}: {error}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The agent closed the connection (it stopped or restarted).
    #[error("licd closed the connection on {path}")]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// The agent speaks a newer major version of the socket protocol than this client.
    #[error(
        "licd speaks API version {agent}, this client only up to {supported}: upgrade licd-client"
    )]
    UnsupportedVersion {
        /// The version in the agent's answer.
        agent: u64,
        /// [`crate::API_VERSION`].
        supported: u32,
    },
    /// The agent refused the request (`"ok": false`), with its message.
    #[error("licd refused the request: {0}")]
    Refused(String),
    /// The answer was not what the protocol says (bad JSON, missing field, unknown state).
    #[error("malformed answer from licd: {0}")]
    Protocol(String),
    /// The cache could not be evaluated (`cache-fallback` only): config, state dir, key, or a
    /// cached bundle that is there but unusable (truncated, another device's).
    #[error("cannot answer from the cache: {0}")]
    Cache(String),
    /// The service name is not one licd accepts (`[A-Za-z0-9._-]{1,64}`, not `.` or `..`):
    /// refused before anything is asked, the same way on every path (the agent refuses it
    /// alike).
    #[error("invalid service name: {0}")]
    InvalidService(String),
}

impl ClientError {
    /// True when the agent is simply not there (socket missing or refused): the case in which
    /// answering from the cache is the right fallback.
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}
