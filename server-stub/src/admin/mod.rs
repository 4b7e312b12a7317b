//! The admin HTTP/JSON API (issue 6): axum on the stub's tokio runtime, over a running
//! [`StubHandle`]. It exposes the seed operations — Aruba auto-licensing enable/unassign,
//! Meraki subscriptions (list with filters and cursor pagination, claim, bind, compliance,
//! entitlements catalogue), Snow-style licenses and assignments (page numbers, `-eq` filters,
//! bulk update with scope) — plus customers and devices, and its own OpenAPI document at
//! `/openapi.json`.
//!
//! - [`token`]: bearer tokens (only their SHA-256 is stored), kinds `admin` and `read`;
//! - [`auth`]: request ids, token check (constant time), per-token rate limit, rights;
//! - [`scope`]: tenant isolation (what a tenant token sees);
//! - [`error`]: `{ "error": { "code", "message" } }` bodies and the JSON extractor;
//! - [`query`]: query strings, ISO 8601 times, filters and both pagination styles;
//! - [`params`]: each query parameter described once, for the handler and the document;
//! - [`schema`]: the document's schemas built from the parsers' constants (ids, times, filters);
//! - [`dto`]: the JSON shapes (what the OpenAPI document describes);
//! - [`handlers`]: one module per seed area; [`openapi`]: the document.
//!
//! The API changes the ledger only through [`StubHandle::apply`] and friends, so every change
//! is stored before any bundle it causes is published. It is loopback-only by default and
//! speaks plain HTTP: put a TLS proxy in front to expose it.

pub mod auth;
pub mod dto;
pub mod error;
pub mod handlers;
pub mod openapi;
pub mod params;
pub mod query;
pub mod schema;
pub mod scope;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::stub::StubHandle;

/// Default address of the admin API: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8180";

/// Default cap on request bodies (413 above it).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// A token bucket per bearer token: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: u32,
}

impl Default for RateLimit {
    /// 200 at once, 100 per second: far above what a lab script does, low enough that a
    /// runaway loop is told to slow down.
    fn default() -> Self {
        Self {
            burst: 200,
            per_second: 100,
        }
    }
}

/// How the admin API runs.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listener (port 0 = any free port; [`AdminServer::addr`] says which).
    pub listen: SocketAddr,
    /// The token store (`admin-tokens.json`, see [`token`]); re-read when it changes.
    pub token_store: PathBuf,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Rate limit per token.
    pub rate_limit: RateLimit,
}

impl AdminConfig {
    /// Defaults for everything but the listener and the token store.
    pub fn new(listen: SocketAddr, token_store: PathBuf) -> Self {
        Self {
            listen,
            token_store,
            body_limit: DEFAULT_BODY_LIMIT,
            rate_limit: RateLimit::default(),
        }
    }
}

/// Why the admin API did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The listener could not be bound.
    #[error("admin API: cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct App(pub(crate) Arc<AppInner>);

#[derive(Debug)]
pub(crate) struct AppInner {
    pub(crate) stub: Arc<StubHandle>,
    pub(crate) tokens: token::Verifier,
    pub(crate) buckets: Mutex<auth::Buckets>,
    pub(crate) rate_limit: RateLimit,
    pub(crate) request_seq: AtomicU64,
    pub(crate) request_prefix: u32,
}

impl App {
    /// The stub the API runs over.
    pub fn stub(&self) -> &StubHandle {
        &self.0.stub
    }
}

/// The routes (with authentication, limits and request ids) over `stub`.
pub fn router(stub: Arc<StubHandle>, config: &AdminConfig) -> Router {
    let mut prefix = [0u8; 4];
    // A random prefix keeps request ids of two runs apart; a counter is enough otherwise.
    let _ = getrandom::fill(&mut prefix);
    let app = App(Arc::new(AppInner {
        stub,
        tokens: token::Verifier::new(config.token_store.clone()),
        buckets: Mutex::new(auth::Buckets::default()),
        rate_limit: config.rate_limit,
        request_seq: AtomicU64::new(0),
        request_prefix: u32::from_be_bytes(prefix),
    }));
    use handlers::{auto_license, customers, devices, licenses, subscriptions};
    let api = Router::new()
        .route(
            "/api/v1/customers",
            get(customers::list).post(customers::create),
        )
        .route(
            "/api/v1/customers/{id}",
            get(customers::show)
                .patch(customers::update)
                .delete(customers::remove),
        )
        .route(
            "/api/v1/entitlements",
            get(subscriptions::entitlements).post(subscriptions::add_entitlement),
        )
        .route(
            "/api/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route("/api/v1/subscriptions/claim", post(subscriptions::claim))
        .route(
            "/api/v1/subscriptions/claimKey/validate",
            post(subscriptions::validate_claim_key),
        )
        .route("/api/v1/subscriptions/{id}", get(subscriptions::show))
        .route("/api/v1/subscriptions/{id}/bind", post(subscriptions::bind))
        .route("/api/v1/compliance", get(subscriptions::compliance))
        .route("/api/v1/auto-licensing", get(auto_license::policies))
        .route("/api/v1/auto-licensing/enable", post(auto_license::enable))
        .route(
            "/api/v1/auto-licensing/unassign",
            post(auto_license::unassign),
        )
        .route("/api/v1/devices", get(devices::list))
        .route("/api/v1/devices/{tenant}/{device}", get(devices::show))
        .route(
            "/api/v1/devices/{tenant}/{device}/reissue",
            post(devices::reissue),
        )
        .route(
            "/api/v1/devices/{tenant}/{device}/diag",
            post(devices::diag),
        )
        .route("/api/v1/licenses", get(licenses::list))
        .route("/api/v1/licenses/bulkUpdate", post(licenses::bulk_update))
        .route(
            "/api/v1/licenses/{id}/assignments",
            get(licenses::assignments_of),
        )
        .route("/api/v1/assignments", get(licenses::assignments))
        .merge(handlers::offline::routes())
        .merge(handlers::delegations::routes())
        .merge(handlers::policy::routes())
        .merge(handlers::usage::routes())
        // Issue 21's seed operations, each module with its own routes.
        .merge(handlers::meraki::routes())
        .merge(handlers::snow::routes())
        // Behind the token check like the API: labels name tenants, devices, subscriptions.
        .route("/metrics", get(crate::metrics::serve));
    #[cfg(test)]
    let api = api
        .route("/api/v1/test/panic", get(tests::panics))
        .route("/api/v1/test/panic-reading", get(tests::panics_reading));
    // A route layer runs only for a path and method that match: an unknown path is a 404 and
    // a method the path does not take a 405 whatever the token (issue 16 item 10).
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        auth::authorize,
    ));
    api.route("/openapi.json", get(openapi::serve))
        // The dashboard: its own sign-in (session cookie), not the bearer-token layer above.
        .nest_service("/ui", crate::ui::router(app.clone()))
        .route("/healthz", get(handlers::health))
        .fallback(handlers::not_found)
        // After every route: it applies to the routes there are.
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        // A handler that panics answers 500 (logged with the request id, outside this layer)
        // and the server keeps serving; this needs `panic = "unwind"` (issue 16 item 2).
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::request_id,
        ))
        .with_state(app)
}

/// The 500 of a request whose handler panicked; the request-id layer logs the panic message.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    error::ApiError::internal(format!("request handler panicked: {what}")).into_response()
}

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `config.listen` and serves the API over `stub` until [`AdminServer::shutdown`].
    pub async fn start(stub: Arc<StubHandle>, config: AdminConfig) -> Result<Self, AdminError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| AdminError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AdminError::Bind {
            addr: config.listen,
            source,
        })?;
        if !config.token_store.exists() {
            tracing::warn!(
                store = %config.token_store.display(),
                "no admin tokens yet: every request is refused until `licd-stub token create`"
            );
        }
        let app = router(stub, &config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        tracing::info!(%addr, "admin API listening");
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:8180`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Runs the stub and its admin API until `shutdown` completes (what `licd-stub serve` runs).
pub async fn serve_with_admin(
    config: crate::StubConfig,
    admin: AdminConfig,
    shutdown: impl std::future::Future,
) -> Result<(), crate::StubError> {
    let stub = Arc::new(crate::Stub::start(config).await?);
    let server = match AdminServer::start(stub.clone(), admin).await {
        Ok(s) => s,
        Err(e) => {
            if let Ok(stub) = Arc::try_unwrap(stub) {
                stub.shutdown().await;
            }
            return Err(crate::StubError::Config(e.to_string()));
        }
    };
    shutdown.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    match Arc::try_unwrap(stub) {
        Ok(stub) => stub.shutdown().await,
        Err(_) => tracing::warn!("stub still referenced at shutdown; leaving its tasks to exit"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A route that exists only in this crate's unit tests.
    pub(super) async fn panics() -> &'static str {
        panic!("injected by the catch-panic test")
    }

    /// Another: a panic while the engine's lock is held for reading.
    pub(super) async fn panics_reading(
        axum::extract::State(app): axum::extract::State<App>,
    ) -> &'static str {
        let _ = app
            .stub()
            .with_engine(|_| -> () { panic!("injected while reading the engine") });
        "unreachable"
    }

    /// Issue 16 item 2: a request whose handler panics gets a JSON 500 with its request id,
    /// and the same server answers the next request (no abort, no dropped connection, no
    /// poisoned lock when the panic happened while reading the engine).
    #[tokio::test]
    async fn a_panicking_request_is_a_500_and_the_next_one_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(token::TOKEN_STORE_FILE);
        let admin = token::create(&store, "ops", token::TokenKind::Admin, 1).unwrap();
        let signer = crate::Signer::ephemeral(1_800_000_000).unwrap();
        let stub = Arc::new(
            crate::Stub::start(crate::StubConfig::for_tests(signer))
                .await
                .unwrap(),
        );
        let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), store);
        let server = AdminServer::start(stub.clone(), config).await.unwrap();
        let http = reqwest::Client::new();
        let get = |path: &str| {
            http.get(format!("{}{path}", server.url()))
                .bearer_auth(&admin)
                .send()
        };
        for path in ["/api/v1/test/panic", "/api/v1/test/panic-reading"].repeat(2) {
            let resp = get(path).await.unwrap();
            assert_eq!(resp.status().as_u16(), 500);
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            let body: error::ErrorBody = resp.json().await.unwrap();
            assert_eq!(body.error.code, "internal_error");
            assert_eq!(body.error.request_id.as_deref(), Some(id.as_str()));
            assert!(
                !body.error.message.contains("injected"),
                "the panic stays in the log"
            );
            // Served, and the engine's lock is not poisoned (that would be a 500 for ever).
            let resp = get("/api/v1/customers").await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "after {path}");
        }
        server.shutdown().await;
        if let Ok(stub) = Arc::try_unwrap(stub) {
            stub.shutdown().await;
        }
    }
}
