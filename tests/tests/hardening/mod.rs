//! Helpers shared by the hardening scenarios (`hostile_input`, `clock_attacks`, `faults`,
//! `broker_acl`): a raw MQTT publisher that can send what the test controller cannot (large
//! payloads, any topic, counted acknowledgements), the agent's pid and memory, and bundle
//! builders. Each scenario file includes this module; not every one uses every helper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use licd_protocol::envelope::seal_bundle;
use licd_protocol::GrantBundle;
use licd_tests::agent::Agent;
use licd_tests::controller::ControllerKeys;
use licd_tests::wait_for;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, Transport};

/// Default wait for anything the agent does in reaction to a message.
pub const T: Duration = Duration::from_secs(30);

#[allow(unused_imports)]
pub use licd_tests::runtime;

// Not every test file that includes this module uses both.
#[allow(unused_imports)]
pub use licd_tests::agent::{grants_topic, topic};

/// Seals `bundle` with the controller's certified signing key.
pub fn seal(keys: &ControllerKeys, bundle: &GrantBundle) -> Vec<u8> {
    seal_bundle(bundle, &keys.signing, &keys.cert)
}

/// Messages a [`Publisher`] received: (topic, payload).
type Inbox = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A raw MQTT client (QoS 1) that counts acknowledgements and received messages. Packets up to
/// 4 MiB both ways, so it can send payloads the test controller's client refuses to.
pub struct Publisher {
    client: AsyncClient,
    acks: Arc<AtomicU64>,
    subacks: Arc<std::sync::Mutex<Vec<Vec<rumqttc::SubscribeReasonCode>>>>,
    received: Inbox,
    connacks: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects to the plain broker on 127.0.0.1:`port` as `client_id`.
    pub fn plain(port: u16, client_id: &str) -> Self {
        Self::with_transport(port, client_id, None)
    }

    /// Connects with a transport (TLS / mutual TLS) when given.
    pub fn with_transport(port: u16, client_id: &str, transport: Option<Transport>) -> Self {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_max_packet_size(4 << 20, 4 << 20);
        if let Some(t) = transport {
            opts.set_transport(t);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let acks = Arc::new(AtomicU64::new(0));
        let connacks = Arc::new(AtomicU64::new(0));
        let subacks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let received: Inbox = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, c, s, r) = (
            acks.clone(),
            connacks.clone(),
            subacks.clone(),
            received.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        s.lock().unwrap().push(ack.return_codes);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        r.lock()
                            .unwrap()
                            .push((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            client,
            acks,
            subacks,
            received,
            connacks,
            task,
        }
    }

    /// Waits until the broker has accepted the connection.
    pub fn wait_connected(&self) {
        wait_for("the publisher to connect", T, || {
            self.connacks.load(Ordering::SeqCst) > 0
        })
        .unwrap();
    }

    /// Queues a QoS 1 publish.
    pub async fn publish(&self, topic: &str, bytes: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, bytes)
            .await
            .unwrap();
    }

    /// Subscribes (QoS 1).
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    /// PUBACKs received so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::SeqCst)
    }

    /// SUBACK return codes so far, one list per SUBSCRIBE.
    pub fn subacks(&self) -> Vec<Vec<rumqttc::SubscribeReasonCode>> {
        self.subacks.lock().unwrap().clone()
    }

    /// Messages received so far: (topic, payload).
    pub fn received(&self) -> Vec<(String, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }

    /// Publishes and waits for the broker's PUBACK (the broker has taken the message).
    pub async fn publish_acked(&self, topic: &str, bytes: Vec<u8>, retain: bool) {
        let before = self.acks();
        self.publish(topic, bytes, retain).await;
        licd_tests::wait_for_async("the broker to acknowledge a publish", T, || async {
            self.acks() > before
        })
        .await
        .unwrap();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pid of `agent`'s `licd` process: the one process whose working directory is the
/// agent's private directory (the harness starts it there) and whose executable is `licd`.
pub fn agent_pid(agent: &Agent) -> Option<u32> {
    let want = std::fs::canonicalize(agent.state.path()).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
        let exe = std::fs::read_link(e.path().join("exe")).ok()?;
        (cwd == want && exe.file_name()? == "licd").then_some(pid)
    })
}

/// `VmRSS` of `pid` in KiB, from `/proc/<pid>/status`.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The agent's status, failing with its log when it does not answer.
pub fn status(agent: &Agent) -> serde_json::Value {
    agent
        .status()
        .unwrap_or_else(|| panic!("the agent does not answer\n{}", agent.log()))
}

/// Waits until the agent's status satisfies `pred`.
pub fn wait_status(agent: &Agent, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    wait_for(what, T, || agent.status().is_some_and(|s| pred(&s)))
        .unwrap_or_else(|e| panic!("{e}; last status {:?}\n{}", agent.status(), agent.log()));
}
