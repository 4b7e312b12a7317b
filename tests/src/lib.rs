//! `licd-tests`: the end-to-end test harness for licd.
//!
//! Helpers for tests that run real brokers and real processes on loopback:
//! - [`pki`]: a throwaway CA with server and client certificates as PEM files (rcgen);
//! - [`mosquitto`]: a real mosquitto on a free 127.0.0.1 port, plain, TLS or mutual TLS, that
//!   can be stopped and restarted on the same port;
//! - [`nats`]: a real 3-node nats-server cluster (MQTT on clustered JetStream) on loopback,
//!   whose nodes can be killed and started again;
//! - [`scene`]: a broker, the controller keys, a [`controller::TestController`] and agents
//!   that trust it — the set-up agent scenarios share;
//! - [`bundle`]: [`BundleBuilder`], signed grant bundles from defaults a test overrides;
//! - [`wait`]: waiting on a condition with a timeout (no fixed sleeps);
//! - [`postgres`]: a real PostgreSQL cluster in a temp dir on a free port, a fresh database
//!   per test, stoppable and restartable (the controller's PostgreSQL ledger);
//! - [`net`]: free loopback ports;
//! - [`relay`]: a TCP relay a test cuts and heals (the controller's broker link alone);
//! - [`site`]: a site relay with its own embedded broker and a delegation from a test signer;
//! - [`state`]: a temporary state directory for an agent;
//! - [`process`]: the freshly built `licd` binary and child processes that are killed on drop;
//! - [`fleet`]: the fleet simulator (N real agents in one process against mosquitto and the
//!   stub, with a bare-echo baseline; binary `licd-fleet`).
//!
//! Every helper returns [`HarnessError`] with enough context (log excerpts, paths) for a failing
//! test to explain itself. The scenarios themselves live in `tests/tests/`.

pub mod agent;
pub mod bundle;
pub mod controller;
pub mod error;
pub mod fleet;
pub mod mosquitto;
pub mod nats;
pub mod net;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod relay;
pub mod scene;
pub mod site;
pub mod state;
pub mod wait;

pub use bundle::BundleBuilder;
pub use error::{HarnessError, Result};
pub use mosquitto::{BrokerSecurity, Mosquitto, MosquittoConfig};
pub use nats::NatsCluster;
pub use net::free_port;
pub use pki::{CertFiles, Pki};
pub use postgres::Postgres;
pub use process::{licd_bin, spawn_licd, stub_bin, TestProcess};
pub use scene::{Scene, SceneBuilder};
pub use state::TempState;
pub use wait::{wait_for, wait_for_async};

/// The runtime scenario tests run the test controller on: one worker thread, so the test's own
/// blocking waits (on the main thread) never starve it. Panics if the runtime cannot start (a
/// test failure with its reason).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test controller")
}
