//! The daemon: start-up ([`run`], [`run_with`], [`run_linked`]: identity, key, binding, the
//! state restored from the state directory, the socket, the broker link), the loop
//! (`run_loop`) and a clean shutdown. The licensing decisions, and when to report, are the
//! enforcer's (`licd-core`). Also the read-only, from-cache evaluation that `licd check` uses
//! when no daemon answers.
//!
//! - `restore.rs`: the state loaded at start, and the unusable files set aside;
//! - `run_loop.rs`: the `select!` loop that turns events into enforcer inputs and carries out
//!   the effects.

mod restore;
mod run_loop;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use self::restore::Core;
use self::run_loop::Daemon;
use crate::api::{ApiError, ApiServer};
use crate::clock::Clock;
use crate::config::Settings;
use crate::hooks::Hooks;
use crate::identity::{
    resolve_identity, DeviceKey, HostRoot, Identity, IdentityError, KeyError,
    DEFAULT_RESOLVE_TIMEOUT,
};
use crate::offline::{self as files, OfflineError, StateLock};
use crate::refusal::RefusalLimiter;
use crate::session::{self, DeviceTopics, Outbox, SessionEvent, OFFLINE};
use crate::status::{ConnectionStatus, Source, Status, AGENT_VERSION};
use crate::store::{Store, StoreError};
use crate::tls::TlsError;
use licd_core::cache::{self, Binding, Problem};
use rumqttc::QoS;

/// Refusals are logged at warn level at most this often per topic (a flood of bad messages
/// must not flood the log; see [`crate::refusal`]).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a clean shutdown waits for "offline" to reach the broker.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// Why the daemon could not start (it does not stop for anything after that).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// State directory or cache.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Device key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// TLS set-up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Local API socket.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The state directory's lock (a `licd import` holding it too long).
    #[error(transparent)]
    Offline(#[from] OfflineError),
}

/// Evaluates the cache read-only, as `licd check` does when the daemon is not running
/// ([`licd_core::cache::read_only`] at the clock's time).
pub fn status_from_cache(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<(Status, Vec<Problem>), RunError> {
    Ok(cache::read_only(&settings, clock.wall(), clock.boot())?)
}

/// Runs the daemon until `shutdown` resolves. Returns an error only for start-up failures
/// (state dir, key, identity, TLS files, socket); after that it keeps running through broker
/// outages, bad messages and disk errors.
pub async fn run(
    settings: Settings,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let identity = resolve_identity(
        &settings.identity,
        &HostRoot::system(),
        DEFAULT_RESOLVE_TIMEOUT,
    )
    .await?;
    run_with(settings, clock, identity, |_| {}, shutdown).await
}

/// [`run`] with the identity already resolved; `on_status` gets a receiver of the daemon's
/// status (updated on every change, as the local API sees it) once the state is loaded. For
/// hosts of many simulated agents in one process (the fleet simulator in `tests/`): resolving
/// the host identity runs a bounded probe thread per call, and a watch replaces a socket per
/// agent.
pub async fn run_with(
    settings: Settings,
    clock: Arc<dyn Clock>,
    identity: Identity,
    on_status: impl FnOnce(watch::Receiver<Arc<Status>>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let connect = |settings: &Settings, client_id: &str, topics: &DeviceTopics| {
        let nodes = session::node_options(&settings.broker, client_id, topics)?;
        if settings.broker.tls.is_none() {
            tracing::warn!("broker connection is NOT encrypted (allow_insecure = true)");
        }
        let (tx, rx) = mpsc::channel(64);
        let qos = if settings.broker.subscribe_qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let (client, task) = session::start(
            nodes,
            settings.broker.reconnect_max,
            qos,
            topics.clone(),
            tx,
        );
        Ok(Link {
            events: rx,
            outbox: Outbox::Mqtt(client),
            session: Some(task),
        })
    };
    serve(settings, clock, identity, connect, on_status, shutdown).await
}

/// How the daemon reaches the broker: the session's events in, an [`Outbox`] out.
#[derive(Debug)]
pub struct Link {
    /// What the session reports ([`session::start`]'s task, or a test).
    pub events: mpsc::Receiver<SessionEvent>,
    /// Where publishes go.
    pub outbox: Outbox,
    /// The session task, awaited (bounded) at shutdown so "offline" gets out.
    pub session: Option<JoinHandle<()>>,
}

/// [`run_with`] over a [`Link`] the caller made: no broker, no MQTT session. For in-process
/// tests of the daemon loop (paused time, a channel for each direction) and simulators.
pub async fn run_linked(
    settings: Settings,
    clock: Arc<dyn Clock>,
    identity: Identity,
    link: Link,
    on_status: impl FnOnce(watch::Receiver<Arc<Status>>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let connect = |_: &Settings, _: &str, _: &DeviceTopics| Ok(link);
    serve(settings, clock, identity, connect, on_status, shutdown).await
}

/// Loads the state, binds the socket, connects through `connect`, then runs the loop until
/// `shutdown`.
async fn serve(
    settings: Settings,
    clock: Arc<dyn Clock>,
    identity: Identity,
    connect: impl FnOnce(&Settings, &str, &DeviceTopics) -> Result<Link, RunError>,
    on_status: impl FnOnce(watch::Receiver<Arc<Status>>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let store = Store::open(&settings.state_dir)?;
    let key = DeviceKey::load_or_create(&settings.state_dir)?;
    tracing::info!(
        device = %identity.device.id,
        source = ?identity.device.source,
        tenant = %settings.tenant,
        device_key = %key.id(),
        "licd {AGENT_VERSION} starting"
    );
    // The identity this start used, for `licd diag`'s drift check (informational only).
    let record =
        crate::diag::record::IdentityRecord::new(&identity, key.id().to_hex(), clock.wall());
    if let Err(e) = crate::diag::record::save_if_changed(&settings.state_dir, &record) {
        tracing::warn!(error = %e, "cannot write the identity record (used by licd diag)");
    }
    // What `licd check` and the client libraries read when this daemon is not running.
    let binding = Binding {
        device: identity.device.id.clone(),
        device_key: key.public(),
    };
    if let Err(e) = binding.save_if_changed(&settings.state_dir) {
        tracing::warn!(error = %e, "cannot write the device binding (read by licd check when the daemon is down)");
    }
    // No `licd import` with the daemon stopped may write while this start restores the state,
    // nor after it, until the socket answers (from then on such a command goes through it).
    // A state directory that cannot hold the lock file (read-only, full) is not a reason to
    // stop enforcing: no `licd import` can write there either.
    let start_lock = match StateLock::acquire(&settings.state_dir, files::START_LOCK_WAIT) {
        Ok(lock) => Some(lock),
        Err(e @ OfflineError::Busy { .. }) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot lock the state directory; starting without the lock");
            None
        }
    };
    let (core, effects, _) = Core::restore(settings, clock, store, binding, true);
    let topics = DeviceTopics::new(&core.settings.tenant, &identity.device.id);
    let client_id = format!("licd-{}-{}", core.settings.tenant, identity.device.id);

    // Events feed the socket API's watchers; without a socket nobody reads them, and 10,000
    // agents in one fleet process should not each allocate 256 slots.
    let capacity = if core.settings.socket.is_some() {
        256
    } else {
        1
    };
    let (events, _) = broadcast::channel(capacity);
    let (status_tx, status_rx) = watch::channel(Arc::new(core.status(Source::Daemon, None)));
    on_status(status_rx.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (files_tx, files_rx) = mpsc::channel(4);
    let api_task = match &core.settings.socket {
        Some(path) if cfg!(feature = "socket-api") => {
            let server = ApiServer::bind(path).await?;
            let mut stop = stop_rx.clone();
            let events = events.clone();
            Some(tokio::spawn(server.serve(
                status_rx,
                events,
                Some(files_tx),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        Some(path) => {
            tracing::warn!(
                socket = %path.display(),
                "built without the socket-api feature: no socket; `licd check` reads the cache"
            );
            None
        }
        None => None,
    };

    let link = match connect(&core.settings, &client_id, &topics) {
        Ok(link) => link,
        Err(e) => {
            let _ = stop_tx.send(true);
            if let Some(t) = api_task {
                let _ = t.await;
            }
            return Err(e);
        }
    };
    let client = link.outbox;
    let hooks = Hooks::start(core.settings.hook.clone(), core.settings.hook_timeout);
    // Until a node answers, every node the session may try; then the one it is on.
    let broker = core
        .settings
        .broker
        .nodes()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let remote_diag = crate::diag::remote::Responder::new(
        core.settings.clone(),
        core.clock.clone(),
        identity.device.id.clone(),
        key.signing.clone(),
        client.clone(),
        topics.diag_response.clone(),
    );
    let mut daemon = Daemon {
        core,
        key,
        identity,
        client,
        remote_diag,
        topics,
        events,
        hooks,
        status_tx,
        connection: ConnectionStatus {
            broker,
            ..Default::default()
        },
        mark_saved: 0,
        refusals: RefusalLimiter::new(REFUSAL_LOG_EVERY),
    };
    drop(start_lock);
    daemon.apply(effects);
    daemon.log_summary("enforcing from cache");
    daemon.save_mark();
    daemon.main_loop(link.events, files_rx, shutdown).await;

    // Clean shutdown: "offline" (the broker sends no will for a clean disconnect), then
    // disconnect, flush, socket removal.
    if daemon.connection.connected {
        let _ = daemon.client.try_publish(
            daemon.topics.presence.clone(),
            QoS::AtLeastOnce,
            true,
            OFFLINE.to_vec(),
        );
        let _ = daemon.client.try_disconnect();
        if let Some(task) = link.session {
            let _ = tokio::time::timeout(SHUTDOWN_FLUSH, task).await;
        }
    } else if let Some(task) = link.session {
        task.abort();
    }
    daemon.save_mark();
    let now = daemon.core.now();
    if let Some(record) = daemon.core.enforcer.flush_policy(now) {
        if let Err(e) = daemon.core.store.save_policy_record(&record) {
            tracing::warn!(error = %e, "cannot write the policy record at shutdown; usage since the last write is lost");
        }
    }
    let _ = stop_tx.send(true);
    if let Some(t) = api_task {
        let _ = t.await;
    }
    tracing::info!("licd stopped");
    Ok(())
}

/// Whether `path` looks like a config that exists (for friendlier CLI errors).
pub fn config_exists(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests;
