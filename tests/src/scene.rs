//! [`Scene`]: the set-up most agent scenarios share — a real mosquitto, the fixed controller
//! keys, a [`TestController`] answering reports with them, and agents configured to trust its
//! root — plus the runtime the controller runs on. A test states only what differs (a short
//! lease, TLS, extra agent config) and keeps its agents itself:
//!
//! ```no_run
//! # use std::time::Duration;
//! use licd_tests::controller::Policy;
//! use licd_tests::Scene;
//!
//! let scene = Scene::with_policy(Policy { lease: 4, grace: 3, ..Policy::default() }).unwrap();
//! let agent = scene.licensed_agent().unwrap();
//! let fresh = scene.bundle().unwrap().seq(scene.controller.seq() + 1).seal();
//! scene.publish_grants(&agent, fresh);
//! ```
//!
//! Agents are declared after the scene, so they stop before its broker and controller do.

use std::path::PathBuf;
use std::time::Duration;

use licd_protocol::DeviceReport;
use tokio::runtime::{EnterGuard, Runtime};

use crate::agent::{Agent, AgentOptions};
use crate::bundle::BundleBuilder;
use crate::controller::{unix_now, ControllerKeys, Policy, TestController};
use crate::{free_port, wait_for, HarnessError, Mosquitto, MosquittoConfig, Pki, Result};

/// How long scene helpers wait for an agent to get licensed or report.
pub const SCENE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the scene is built; [`Scene::builder`].
pub struct SceneBuilder {
    broker: MosquittoConfig,
    policy: Policy,
    keys: ControllerKeys,
    /// TLS: the CA file agents get and the client certificate they present (mutual TLS).
    tls: Option<(PathBuf, Option<(PathBuf, PathBuf)>)>,
}

impl SceneBuilder {
    /// What the controller grants.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The controller's keys (default [`ControllerKeys::fixed`]); agents pin their root.
    pub fn keys(mut self, keys: ControllerKeys) -> Self {
        self.keys = keys;
        self
    }

    /// A plain broker with this configuration (persistence, extra lines).
    pub fn broker(mut self, config: MosquittoConfig) -> Self {
        self.broker = config;
        self.tls = None;
        self
    }

    /// A TLS broker with a certificate from `pki`; agents connect with `mqtts://` and its CA,
    /// the controller through a plain listener of the same broker.
    pub fn tls(mut self, pki: &Pki) -> Self {
        self.broker = MosquittoConfig::tls(pki);
        self.tls = Some((pki.ca_cert.clone(), None));
        self
    }

    /// Mutual TLS: as [`Self::tls`], and agents present `pki`'s client certificate.
    pub fn mutual_tls(mut self, pki: &Pki) -> Self {
        self.broker = MosquittoConfig::mutual_tls(pki);
        let client = (pki.client.cert.clone(), pki.client.key.clone());
        self.tls = Some((pki.ca_cert.clone(), Some(client)));
        self
    }

    /// Starts the broker and the controller, and waits until the controller is subscribed
    /// (else the first report of an agent started at once goes unanswered until its retry).
    pub fn start(self) -> Result<Scene> {
        let rt = crate::runtime();
        let (broker, controller_port) = match &self.tls {
            None => {
                let broker = Mosquitto::start(self.broker)?;
                let port = broker.port();
                (broker, port)
            }
            Some(_) => {
                let plain = free_port()?;
                let config = self
                    .broker
                    .with_line(format!("listener {plain} 127.0.0.1\nallow_anonymous true"));
                (Mosquitto::start(config)?, plain)
            }
        };
        let controller = {
            // The controller's task is spawned on the scene's runtime.
            let _g = rt.enter();
            TestController::start(controller_port, self.keys, self.policy)
        };
        wait_for("the test controller to subscribe", SCENE_TIMEOUT, || {
            controller.is_subscribed()
        })?;
        Ok(Scene {
            controller,
            broker,
            tls: self.tls,
            rt,
        })
    }
}

/// A broker, a controller and the runtime it runs on. Fields drop in order: the controller
/// stops before the broker, the runtime last.
pub struct Scene {
    /// The test controller: its reports, presence, policy and raw publishing.
    pub controller: TestController,
    /// The broker (stop it, start it again, read its log).
    pub broker: Mosquitto,
    tls: Option<(PathBuf, Option<(PathBuf, PathBuf)>)>,
    rt: Runtime,
}

impl Scene {
    /// A plain broker and a controller granting `wifi` by [`Policy::default`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A plain broker and a controller granting by `policy`.
    pub fn with_policy(policy: Policy) -> Result<Self> {
        Self::builder().policy(policy).start()
    }

    /// A scene to configure: plain broker, fixed keys, default policy unless changed.
    pub fn builder() -> SceneBuilder {
        SceneBuilder {
            broker: MosquittoConfig::plain(),
            policy: Policy::default(),
            keys: ControllerKeys::fixed(),
            tls: None,
        }
    }

    /// The runtime the controller runs on (`block_on` its async calls).
    pub fn rt(&self) -> &Runtime {
        &self.rt
    }

    /// Enters the runtime (for code that spawns onto it, e.g. a test MQTT client).
    pub fn enter(&self) -> EnterGuard<'_> {
        self.rt.enter()
    }

    /// The controller's keys.
    pub fn keys(&self) -> &ControllerKeys {
        self.controller.keys()
    }

    /// The root agents pin, in hex.
    pub fn root_hex(&self) -> String {
        self.keys().root_hex()
    }

    /// Options of an agent of this scene: device `acme`/`ap-1` wanting `wifi`, the broker's
    /// URL (`mqtts://` with the CA and client certificate under TLS), the controller's root.
    pub fn options(&self) -> AgentOptions {
        let mut o = AgentOptions::plain(self.broker.port(), &self.root_hex());
        if let Some((ca, client)) = &self.tls {
            o.broker_url = format!("mqtts://127.0.0.1:{}", self.broker.port());
            o.ca_file = Some(ca.clone());
            o.client_cert = client.clone();
        }
        o
    }

    /// Starts an agent with [`Self::options`].
    pub fn agent(&self) -> Result<Agent> {
        Agent::start(&self.options())
    }

    /// Starts an agent with [`Self::options`] changed by `change`.
    pub fn agent_with(&self, change: impl FnOnce(&mut AgentOptions)) -> Result<Agent> {
        let mut o = self.options();
        change(&mut o);
        Agent::start(&o)
    }

    /// Starts an agent with [`Self::options`] and waits until `wifi` is licensed.
    pub fn licensed_agent(&self) -> Result<Agent> {
        let agent = self.agent()?;
        agent.wait_state("wifi", "licensed", SCENE_TIMEOUT)?;
        Ok(agent)
    }

    /// The first report the controller received, waiting for one.
    pub fn first_report(&self) -> Result<DeviceReport> {
        wait_for("a report at the controller", SCENE_TIMEOUT, || {
            !self.controller.reports().is_empty()
        })?;
        self.controller
            .reports()
            .into_iter()
            .next()
            .ok_or_else(|| HarnessError::Timeout {
                what: "a report at the controller".into(),
                after: SCENE_TIMEOUT,
            })
    }

    /// A bundle for the device of the first report (its tenant, id and key), issued now and
    /// signed by the controller's keys; the test sets `seq` and what else differs.
    pub fn bundle(&self) -> Result<BundleBuilder> {
        Ok(BundleBuilder::for_report(&self.first_report()?, unix_now()).signed_by(self.keys()))
    }

    /// Publishes `bytes` retained on `agent`'s grants topic, as the controller (or an
    /// attacker on the broker) would.
    pub fn publish_grants(&self, agent: &Agent, bytes: Vec<u8>) {
        let topic = agent.grants_topic();
        self.publish_raw(&topic, bytes);
    }

    /// Publishes `bytes` retained on `topic` through the controller's connection.
    pub fn publish_raw(&self, topic: &str, bytes: Vec<u8>) {
        self.rt.block_on(self.controller.publish_raw(topic, bytes));
    }
}
