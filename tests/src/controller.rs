//! A minimal controller for agent scenarios: it subscribes to every report on a broker, checks
//! it with the real protocol code, and answers with a bundle signed by a real certified key,
//! granting what the test says with lease and grace lengths in seconds. Tests that need the
//! ledger and licensing rules use `licd-stub`; this one lets a test control every byte (short
//! leases, forged or replayed bundles, silence).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::{open_report, seal_bundle};
use licd_protocol::{
    DeviceReport, GrantBundle, PublicKey, ServiceName, SignerCertificate, Topic, TopicKind,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::bundle::BundleBuilder;

/// What the controller grants when a report comes in.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Services granted (to every device).
    pub services: Vec<String>,
    /// Lease length, seconds.
    pub lease: u64,
    /// Grace length, seconds.
    pub grace: u64,
    /// VM allowance on every grant.
    pub vm_allowance: Option<u32>,
    /// Answer reports at all (false: the controller is "down" while the broker is up).
    pub answer: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            services: vec!["wifi".into()],
            lease: 3_600,
            grace: 600,
            vm_allowance: None,
            answer: true,
        }
    }
}

/// Keys of a test controller: a root (agents pin it) and a signing key it certified.
#[derive(Clone)]
pub struct ControllerKeys {
    /// Root key.
    pub root: SigningKey,
    /// Signing key.
    pub signing: SigningKey,
    /// Certificate of the signing key.
    pub cert: SignerCertificate,
}

impl ControllerKeys {
    /// Keys from fixed seeds (deterministic across runs): the ones agents under test pin.
    pub fn fixed() -> Self {
        Self::from_seeds(11, 12)
    }

    /// A root and a signing key from one-byte seeds, the signing key certified for all time:
    /// another controller (a rogue one, for tests of refusals). Equal seeds make a key that
    /// certified itself.
    pub fn from_seeds(root: u8, signing: u8) -> Self {
        let root = SigningKey::from_bytes(&[root; 32]);
        let signing = SigningKey::from_bytes(&[signing; 32]);
        let cert = SignerCertificate::issue(
            &root,
            PublicKey::from(&signing.verifying_key()),
            0,
            u64::MAX,
        );
        Self {
            root,
            signing,
            cert,
        }
    }

    /// A certificate of the signing key by the root valid from `not_before` to `not_after`
    /// (expired or not yet valid ones, for tests).
    pub fn certificate(&self, not_before: u64, not_after: u64) -> SignerCertificate {
        SignerCertificate::issue(
            &self.root,
            PublicKey::from(&self.signing.verifying_key()),
            not_before,
            not_after,
        )
    }

    /// `bundle` sealed with the signing key and its certificate.
    pub fn seal(&self, bundle: &GrantBundle) -> Vec<u8> {
        seal_bundle(bundle, &self.signing, &self.cert)
    }

    /// The root public key in hex, for the agent's `roots`.
    pub fn root_hex(&self) -> String {
        PublicKey::from(&self.root.verifying_key()).to_hex()
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Default)]
struct Shared {
    reports: Vec<DeviceReport>,
    presence: Vec<(String, Vec<u8>)>,
    seq: u64,
    policy: Policy,
    /// SUBACKs since the last CONNACK (two: reports and presence).
    subacks: u32,
}

/// A running test controller.
pub struct TestController {
    client: AsyncClient,
    keys: Arc<ControllerKeys>,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestController {
    /// Connects to the plain broker at 127.0.0.1:`port` and starts answering reports.
    pub fn start(port: u16, keys: ControllerKeys, policy: Policy) -> Self {
        let mut opts = MqttOptions::new("test-controller", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let keys = Arc::new(keys);
        let shared = Arc::new(Mutex::new(Shared {
            policy,
            ..Default::default()
        }));
        let (c, k, s) = (client.clone(), keys.clone(), shared.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        s.lock().unwrap_or_else(|e| e.into_inner()).subacks = 0;
                        let _ = c.subscribe("licd/v1/+/+/report", QoS::AtLeastOnce).await;
                        let _ = c.subscribe("licd/v1/+/+/presence", QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.lock().unwrap_or_else(|e| e.into_inner()).subacks += 1;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/presence") => {
                        let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
                        g.presence.push((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // An extended report (agents negotiate, PROTOCOL.md §17.6) is read
                        // for its report part and answered with a plain bundle, like any
                        // controller that does not speak policy: the agent falls back.
                        let report = open_report(&p.payload).or_else(|_| {
                            licd_protocol::policy::open_extended_report(&p.payload)
                                .map(|x| x.report)
                        });
                        if let Ok(report) = report {
                            let answer = {
                                let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
                                g.reports.push(report.clone());
                                g.policy.answer.then(|| {
                                    g.seq += 1;
                                    bundle_for(&report, g.seq, &g.policy)
                                })
                            };
                            if let Some(bundle) = answer {
                                let raw = seal_bundle(&bundle, &k.signing, &k.cert);
                                let topic =
                                    Topic::new(&report.tenant, &report.device, TopicKind::Grants);
                                let _ = c
                                    .publish(topic.to_topic_string(), QoS::AtLeastOnce, true, raw)
                                    .await;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self {
            client,
            keys,
            shared,
            task,
        }
    }

    /// Changes the policy for the next reports.
    pub fn set_policy(&self, f: impl FnOnce(&mut Policy)) {
        f(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()).policy);
    }

    /// Reports received so far.
    pub fn reports(&self) -> Vec<DeviceReport> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reports
            .clone()
    }

    /// Presence messages seen so far: (topic, payload).
    pub fn presence(&self) -> Vec<(String, Vec<u8>)> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .presence
            .clone()
    }

    /// The controller's keys.
    pub fn keys(&self) -> &ControllerKeys {
        &self.keys
    }

    /// Publishes raw bytes on a device's grants topic (retained), as an attacker on the broker
    /// or a misbehaving controller would.
    pub async fn publish_raw(&self, topic: &str, bytes: Vec<u8>) {
        let _ = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, bytes)
            .await;
    }

    /// Whether the broker acknowledged both subscriptions (reports and presence) of the
    /// current connection: an agent started after this has its first report answered.
    pub fn is_subscribed(&self) -> bool {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subacks
            >= 2
    }

    /// Highest seq issued so far.
    pub fn seq(&self) -> u64 {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).seq
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bundle `policy` grants for `report` (service names that are not valid ids are left out).
pub fn bundle_for(report: &DeviceReport, seq: u64, policy: &Policy) -> GrantBundle {
    let services: Vec<&str> = policy
        .services
        .iter()
        .map(String::as_str)
        .filter(|s| ServiceName::new(*s).is_ok())
        .collect();
    BundleBuilder::for_report(report, unix_now())
        .seq(seq)
        .services(&services)
        .lease(policy.lease)
        .grace(policy.grace)
        .vm_allowance(policy.vm_allowance)
        .build()
}
