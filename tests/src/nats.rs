//! A real 3-node `nats-server` cluster for tests: the clustered MQTT broker of issue 19.
//!
//! Each node gets its own generated config in one temp dir — a free client, HTTP monitoring,
//! cluster route and MQTT port on 127.0.0.1, a JetStream store (NATS keeps MQTT sessions and
//! retained messages in JetStream, so it must be on, and clustered) and routes to the other two
//! nodes. [`NatsCluster::start`] returns once every node's MQTT listener answers a CONNECT with
//! an accepted CONNACK, which needs the routes up and a JetStream meta leader elected: no fixed
//! sleeps. A node can be killed (`SIGKILL`) and started again on the same ports and store.
//!
//! What nats-server's MQTT does with licd's usage is in docs/STUB.md ("A clustered broker:
//! nats-server"); `tests/tests/nats_cluster.rs` holds it to that table.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{free_port, LOOPBACK};
use crate::pki::Pki;
use crate::state::read_lossy;
use crate::wait::POLL_INTERVAL;
use crate::{HarnessError, Result};

/// Where Debian's `nats-server` package installs the server; `PATH` is searched when absent.
pub const DEFAULT_BINARY: &str = "/usr/bin/nats-server";

/// How long a starting cluster gets until every node's MQTT listener accepts a session. A
/// JetStream meta leader election takes a few seconds on a loaded 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Number of nodes.
pub const NODES: usize = 3;

/// Where the nodes keep the JetStream consumer behind each MQTT QoS 1 subscription (licd's
/// agents make three each: grants, trust, diag requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumers {
    /// nats-server's default: replicated like the streams (R3 on this cluster, each consumer a
    /// Raft group of its own, on disk). What the tests run.
    Replicated,
    /// `consumer_replicas: 1`, `consumer_memory_storage: true`: one copy in memory. licd's
    /// sessions are clean, so a consumer dies with its connection anyway and nothing is lost
    /// with a node that a client was not connected to… provided the one copy lives where the
    /// client is (not verified here; docs/STUB.md). Retained grants and sessions stay R3.
    Local,
}

/// Ports of one node.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    http: u16,
    route: u16,
    mqtt: u16,
}

/// One node: its ports, files and process.
#[derive(Debug)]
struct Node {
    name: String,
    ports: Ports,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// A running 3-node cluster owned by one test; every node is killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    tls: bool,
}

impl NatsCluster {
    /// Starts three nodes with plain MQTT listeners and waits until each accepts MQTT sessions.
    pub fn start() -> Result<Self> {
        Self::start_with(None, Consumers::Replicated)
    }

    /// Like [`NatsCluster::start`], the MQTT listeners with TLS from `pki` (its server
    /// certificate; clients trust `pki.ca_cert`).
    pub fn start_tls(pki: &Pki) -> Result<Self> {
        Self::start_with(Some(pki), Consumers::Replicated)
    }

    /// Like [`NatsCluster::start`], with the MQTT consumers (one per QoS 1 subscription) as
    /// `consumers` says: [`Consumers::Local`] for a large fleet (see there).
    pub fn start_with_consumers(consumers: Consumers) -> Result<Self> {
        Self::start_with(None, consumers)
    }

    fn start_with(pki: Option<&Pki>, consumers: Consumers) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("licd-nats-")
            .tempdir()
            .map_err(|e| HarnessError::io("create the cluster's temporary directory", e))?;
        let ports: Vec<Ports> = (0..NODES)
            .map(|_| {
                Ok(Ports {
                    client: free_port()?,
                    http: free_port()?,
                    route: free_port()?,
                    mqtt: free_port()?,
                })
            })
            .collect::<Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{}", p.route))
            .collect();
        let mut nodes = Vec::with_capacity(NODES);
        for (i, p) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config_path = dir.path().join(format!("{name}.conf"));
            let text = render(&name, *p, &routes, &dir.path().join(&name), pki, consumers);
            fs::write(&config_path, text)
                .map_err(|e| HarnessError::io(format!("write {}", config_path.display()), e))?;
            nodes.push(Node {
                log_path: dir.path().join(format!("{name}.log")),
                name,
                ports: *p,
                config_path,
                child: None,
            });
        }
        let mut cluster = Self {
            dir,
            nodes,
            tls: pki.is_some(),
        };
        for i in 0..NODES {
            cluster.spawn(i)?;
        }
        cluster.wait_ready((0..NODES).collect())?;
        Ok(cluster)
    }

    /// The MQTT port of node `i` (0-based).
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes.get(i).map_or(0, |n| n.ports.mqtt)
    }

    /// The broker URL of node `i`: `mqtt://127.0.0.1:PORT` (`mqtts://` with TLS).
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.mqtt_port(i))
    }

    /// Every node's URL, node 0 first.
    pub fn urls(&self) -> Vec<String> {
        (0..NODES).map(|i| self.url(i)).collect()
    }

    /// `127.0.0.1:PORT` of node `i`, as the agent's status names the node it is on.
    pub fn node_name(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.mqtt_port(i))
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes
            .get(i)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
    }

    /// The cluster's directory (configs, logs, JetStream stores).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        self.nodes
            .get(i)
            .map_or_else(String::new, |n| read_lossy(&n.log_path))
    }

    /// Kills node `i` abruptly (`SIGKILL`): its clients see their connections reset, their
    /// last wills are the cluster's to send. A no-op when it is not running.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let Some(node) = self.nodes.get_mut(i) else {
            return Ok(());
        };
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| HarnessError::io("wait for nats-server to exit", e))?;
        }
        Ok(())
    }

    /// Starts a killed node again on its ports and JetStream store, and waits until it accepts
    /// MQTT sessions again.
    pub fn start_again(&mut self, i: usize) -> Result<()> {
        if self.nodes.get_mut(i).is_some_and(|n| n.child.is_some()) {
            return Err(self.error(i, "is already running"));
        }
        self.spawn(i)?;
        self.wait_ready(vec![i])
    }

    /// The monitoring endpoint `path` of node `i` (e.g. `/jsz`), parsed.
    pub fn monitor(&self, i: usize, path: &str) -> Result<serde_json::Value> {
        let port = self.nodes.get(i).map_or(0, |n| n.ports.http);
        let body = http_get(port, path)?;
        serde_json::from_str(&body).map_err(|e| {
            HarnessError::io(
                format!("parse {path} of node {i}"),
                std::io::Error::other(e.to_string()),
            )
        })
    }

    /// Client connections (NATS and MQTT) on node `i` now, from `/varz`.
    pub fn connections(&self, i: usize) -> Result<u64> {
        let v = self.monitor(i, "/varz")?;
        Ok(v.get("connections")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0))
    }

    /// Whether node `i` is ready for MQTT: plain, a CONNECT gets an accepted CONNACK; with TLS
    /// (which the raw probe cannot speak), the listener is up and the node knows the JetStream
    /// meta leader.
    fn is_ready(&self, i: usize) -> bool {
        let port = self.mqtt_port(i);
        if !self.tls {
            return mqtt_accepts(port);
        }
        let leader = self.monitor(i, "/jsz").ok().and_then(|v| {
            v.pointer("/meta_cluster/leader")
                .and_then(serde_json::Value::as_str)
                .map(|l| !l.is_empty())
        });
        leader == Some(true) && crate::net::is_listening(port)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let Some(node) = self.nodes.get_mut(i) else {
            return Err(HarnessError::Build(format!("no node {i}")));
        };
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|e| HarnessError::io(format!("open {}", node.log_path.display()), e))?;
        writeln!(log, "==== licd-tests: start of {} ====", node.name)
            .map_err(|e| HarnessError::io("write the node log header", e))?;
        let stderr = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicate the node log handle", e))?;
        let child = Command::new(binary())
            .arg("-c")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| {
                let what = format!(
                    "spawn {} (is nats-server installed? scripts/test.sh installs it)",
                    binary().display()
                );
                HarnessError::io(what, e)
            })?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until each node in `which` accepts an MQTT session (CONNECT → CONNACK accepted).
    fn wait_ready(&mut self, which: Vec<usize>) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in which {
            loop {
                if let Some(Some(child)) = self.nodes.get_mut(i).map(|n| n.child.as_mut()) {
                    if let Ok(Some(status)) = child.try_wait() {
                        if let Some(n) = self.nodes.get_mut(i) {
                            n.child = None;
                        }
                        return Err(self.error(i, &format!("exited during start-up ({status})")));
                    }
                }
                if self.is_ready(i) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(self.error(
                        i,
                        &format!("did not accept MQTT sessions within {START_TIMEOUT:?}"),
                    ));
                }
                std::thread::sleep(POLL_INTERVAL * 5);
            }
        }
        Ok(())
    }

    fn error(&self, i: usize, problem: &str) -> HarnessError {
        let (port, config) = self.nodes.get(i).map_or((0, PathBuf::new()), |n| {
            (n.ports.mqtt, n.config_path.clone())
        });
        HarnessError::Broker {
            port,
            problem: format!("(nats-server node {}) {problem}", i + 1),
            config,
            log: self.log(i),
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.kill(i);
        }
    }
}

/// The config of one node.
fn render(
    name: &str,
    p: Ports,
    routes: &[String],
    store: &Path,
    pki: Option<&Pki>,
    consumers: Consumers,
) -> String {
    let mut c = String::new();
    // `writeln!` into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        c,
        "# Generated by licd-tests (tests/src/nats.rs) for one test."
    );
    let _ = writeln!(c, "server_name: {name}");
    let _ = writeln!(c, "listen: 127.0.0.1:{}", p.client);
    let _ = writeln!(c, "http: 127.0.0.1:{}", p.http);
    let _ = writeln!(
        c,
        "# MQTT sessions, retained messages and QoS 1 deliveries live in JetStream streams,\n\
         # replicated over the cluster."
    );
    let _ = writeln!(
        c,
        "jetstream {{ store_dir: {:?} }}",
        store.display().to_string()
    );
    let _ = writeln!(
        c,
        "cluster {{\n  name: licd\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}",
        p.route,
        routes.join(", ")
    );
    let _ = writeln!(c, "mqtt {{\n  listen: 127.0.0.1:{}", p.mqtt);
    if let Some(pki) = pki {
        let _ = writeln!(
            c,
            "  tls {{ cert_file: {:?}, key_file: {:?} }}",
            pki.server.cert.display().to_string(),
            pki.server.key.display().to_string()
        );
    }
    if consumers == Consumers::Local {
        let _ = writeln!(c, "  consumer_replicas: 1\n  consumer_memory_storage: true");
    }
    let _ = writeln!(c, "}}");
    c
}

/// Whether an MQTT CONNECT (3.1.1, clean session) on 127.0.0.1:`port` gets an accepted
/// CONNACK. NATS answers only once JetStream (clustered: a meta leader) can hold the session.
fn mqtt_accepts(port: u16) -> bool {
    let addr = (LOOPBACK, port).into();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let id = b"licd-probe";
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        30,
        0,
        id.len() as u8,
    ];
    body.extend_from_slice(id);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    let mut ack = [0u8; 4];
    let ok = s.write_all(&packet).is_ok()
        && s.read_exact(&mut ack).is_ok()
        && ack[0] == 0x20
        && ack[3] == 0;
    let _ = s.write_all(&[0xe0, 0]);
    ok
}

/// A plain HTTP/1.0 GET of 127.0.0.1:`port``path`; the body.
fn http_get(port: u16, path: &str) -> Result<String> {
    let what = || format!("GET http://127.0.0.1:{port}{path}");
    let addr = (LOOPBACK, port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| HarnessError::io(what(), e))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| HarnessError::io(what(), e))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| HarnessError::io(what(), e))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| HarnessError::io(what(), e))?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string()))
}

/// The nats-server binary: [`DEFAULT_BINARY`] when it exists, else `nats-server` from `PATH`.
pub fn binary() -> PathBuf {
    let default = Path::new(DEFAULT_BINARY);
    if default.exists() {
        default.to_path_buf()
    } else {
        PathBuf::from("nats-server")
    }
}
