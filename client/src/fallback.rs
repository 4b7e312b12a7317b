//! Checking with a fallback to the agent's cache (feature `cache-fallback`): ask the running
//! agent, and when none answers, evaluate its cache read-only with the agent's own rules
//! (`licd_core::cache::read_only`, the path `licd check` takes), so a service is not denied
//! just because the agent is restarting. Nothing here probes the host or needs a runtime: the
//! device the cache is bound to comes from the binding file the daemon writes.
//!
//! Rules, the same as `licd check`:
//! - the socket path comes from the agent's config file (`[api] socket`; an empty one
//!   disables the socket and every answer comes from the cache);
//! - the cache is used when the agent cannot be reached or does not answer in time
//!   (not running, refused, permission denied, timeout, closed, I/O error);
//! - an agent that answers is believed, even when it refuses the request or speaks a newer
//!   version: those errors are returned, never papered over by older local rules;
//! - a cache that is there but unusable (truncated, another device's, no device key) is
//!   [`ClientError::Cache`] naming the file and the reason, as `licd check` exits 4 for it —
//!   not an "unlicensed, never granted" verdict.
//!
//! Reading the cache needs read access to the agent's state directory (bundle, binding, time
//! mark, trust state; not the private key), like `licd check` run by the same user.

use std::path::Path;
use std::time::Duration;

use licd_core::clock::{Clock, SystemClock};
use licd_core::config::Settings;

use crate::state::check_answer;
use crate::{Client, ClientError, Verdict, DEFAULT_TIMEOUT};

/// Checks `service` with the agent configured by `config`, or from its cache when the agent
/// does not answer within [`DEFAULT_TIMEOUT`]. The verdict's `source` says which.
pub fn check(config: &Path, service: &str) -> Result<Verdict, ClientError> {
    check_with_timeout(config, service, DEFAULT_TIMEOUT)
}

/// [`check`] with a timeout for the agent.
pub fn check_with_timeout(
    config: &Path,
    service: &str,
    timeout: Duration,
) -> Result<Verdict, ClientError> {
    crate::validate_service(service)?;
    let settings = Settings::load(config).map_err(|e| ClientError::Cache(e.to_string()))?;
    if let Some(socket) = settings.socket.as_deref() {
        match Client::with_timeout(socket, timeout).and_then(|mut c| c.verdict(service)) {
            Err(e) if falls_back(&e) => {}
            other => return other,
        }
    }
    from_cache(settings, service)
}

/// Evaluates `service` from the cache only, ignoring any running agent.
pub fn check_cache_only(config: &Path, service: &str) -> Result<Verdict, ClientError> {
    crate::validate_service(service)?;
    let settings = Settings::load(config).map_err(|e| ClientError::Cache(e.to_string()))?;
    from_cache(settings, service)
}

/// Whether the error means "no agent answered" rather than "the agent said no".
fn falls_back(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::NotRunning { .. }
            | ClientError::PermissionDenied { .. }
            | ClientError::Timeout { .. }
            | ClientError::Closed { .. }
            | ClientError::Io { .. }
    )
}

fn from_cache(settings: Settings, service: &str) -> Result<Verdict, ClientError> {
    let (status, _) =
        licd_core::cache::read_only(&settings, SystemClock.wall(), SystemClock.boot())
            .map_err(|e| ClientError::Cache(e.to_string()))?;
    // As `licd check`: a cache that is there but unusable is an error, not "never granted".
    if let Some(problem) = &status.cache_problem {
        return Err(ClientError::Cache(problem.to_string()));
    }
    // The agent's own answer type: the cache answer is byte for byte what the daemon would
    // send for the same status.
    let answer = licd_core::api::CheckAnswer::new(service, status.state(service), status.source);
    let answer = serde_json::to_value(answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
    check_answer(&answer)?;
    Verdict::from_json(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_socket_matches_the_agents_default() {
        let settings = Settings::from_toml(
            "tenant = \"acme\"\nservices = [\"wifi\"]\n\
             roots = [\"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"]\n\
             [broker]\nurl = \"mqtts://broker.example.com\"\n",
        )
        .unwrap();
        assert_eq!(
            settings.socket.as_deref(),
            Some(Path::new(crate::DEFAULT_SOCKET))
        );
    }

    #[test]
    fn only_transport_failures_fall_back() {
        assert!(falls_back(&ClientError::NotRunning {
            path: "/x".into(),
            error: std::io::ErrorKind::NotFound.into()
        }));
        assert!(!falls_back(&ClientError::Refused("no".into())));
        assert!(!falls_back(&ClientError::UnsupportedVersion {
            agent: 2,
            supported: 1
        }));
    }
}
