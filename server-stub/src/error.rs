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
}

impl From<ApplyError> for StubError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Engine(e) => StubError::Engine(e),
            ApplyError::Ledger(e) => StubError::Ledger(e),
        }
    }
}
