//! The error type of the stub's runtime ([`crate::Stub`], [`crate::serve`]).

use crate::broker::BrokerError;
use crate::controller::ApplyError;
use crate::engine::EngineError;
use crate::keys::KeyError;
use crate::ledger::LedgerError;

/// Why the stub could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StubError {
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Keys are missing or invalid.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// No connection and subscription to the broker within the connect timeout.
    #[error("no connection to the MQTT broker within {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// The engine refused an operation; nothing changed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The controller's state is unusable after a panic in another thread.
    #[error("controller state poisoned by a panic")]
    Poisoned,
    /// The site relay's files are unusable (see [`crate::relay::site::SiteError`]).
    #[error("relay: {0}")]
    Relay(crate::relay::site::SiteError),
    /// An operation the controller cannot do as it is set up (the message says what to do
    /// instead); nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// A file (licensing by file) was refused; nothing changed.
    #[error("{0}")]
    Offline(String, OfflineKind),
}

/// What kind of refusal a file got (the admin API's status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineKind {
    /// The file does not open (damaged, forged, wrong kind): 422.
    Invalid,
    /// It names a device the controller does not know: 404.
    NotFound,
    /// A replay, a receipt for a bundle never issued, another key than the pinned one: 409.
    Conflict,
}

// Not `#[from]`: that would also make the error its `source()`, and the one-line messages
// of the binaries would print its text twice.
impl From<crate::relay::site::SiteError> for StubError {
    fn from(e: crate::relay::site::SiteError) -> Self {
        StubError::Relay(e)
    }
}

impl From<ApplyError> for StubError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Engine(e) => StubError::Engine(e),
            ApplyError::Ledger(e) => StubError::Ledger(e),
        }
    }
}
