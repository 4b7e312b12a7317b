//! The embedded MQTT broker: rumqttd 0.20 on its own OS thread.
//!
//! rumqttd's `start()` blocks, has no shutdown handle and no "ready" signal, and its listener
//! must be a concrete socket address. So: a port is picked first (bind `127.0.0.1:0`, read
//! the port, drop the socket), the broker thread is started, and we wait until the port
//! accepts TCP, with a timeout. The thread lives until the process exits. Shared subscriptions
//! (`$share/…`) work in rumqttd 0.20 (round-robin among the group); retained messages are not
//! sent to shared subscribers, which is fine: only agents read retained grants.
//!
//! Measured limits (issue 5): 10,000 idle connections cost rumqttd ~445 MB that it never
//! returns (mosquitto: ~16 MB). Use it for demos, CI and small labs; fleets and load tests
//! should use an external broker (`--broker`).
//!
//! Memory per message (issue 16): rumqttd's router appends every publish to an in-memory
//! commit log per subscription filter it matches, and keeps it there after delivery until the
//! log rotates: `max_segment_count` segments of `max_segment_size` bytes per filter, filters
//! never removed. The stub used to allow 10 x 4 MiB per filter, so each device's grants log
//! kept every re-issued bundle (~800 B each) up to 40 MiB per device. The log is only the
//! delivery buffer of subscribers that lag (the newest bundle also sits in the retained store,
//! one per topic), so it is bounded here: [`DEVICE_LOG`] for every filter, [`FAN_IN_LOG`] for
//! the two filters the controller reads every device's messages from. A subscriber further
//! behind than its log skips to the oldest message still held (rumqttd logs "jumping to
//! head"); the controller then loses reports, as it does when its own queue is full, and
//! devices report again.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::topic::{diag_response_filter, report_filter};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

/// Largest MQTT payload the embedded broker accepts: one envelope plus slack.
pub const MAX_PAYLOAD: usize = MAX_ENVELOPE_LEN + 1024;

/// In-memory log of every subscription filter but the controller's: a device's grants or
/// diag requests, the trust topics, anything else a client subscribes to. Two segments of
/// 16 KiB: ~40 bundles of backlog, ~33 KiB per filter at most (a segment may overshoot its
/// size by one message, so up to 2 x (16 KiB + [`MAX_PAYLOAD`]) with the largest messages).
pub const DEVICE_LOG: SegmentConfig = SegmentConfig {
    max_segment_size: 16 * 1024,
    max_segment_count: 2,
};

/// In-memory log of the filters the controller subscribes to, which every device publishes
/// into (reports, diag responses): four segments of 256 KiB, 1 MiB per filter (~3,000 reports
/// of backlog; the controller's own queue holds a report per device behind it).
pub const FAN_IN_LOG: SegmentConfig = SegmentConfig {
    max_segment_size: 256 * 1024,
    max_segment_count: 4,
};

/// Why the embedded broker did not come up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No free port could be picked.
    #[error("cannot pick a free port: {0}")]
    PickPort(std::io::Error),
    /// The broker thread could not be spawned.
    #[error("cannot spawn the broker thread: {0}")]
    Spawn(std::io::Error),
    /// The port did not accept connections in time (taken by another process, or rumqttd
    /// failed; its own log says why).
    #[error("embedded broker did not start listening on {0} in time")]
    NotListening(SocketAddr),
    /// TLS was asked for in a build without the `broker-tls` feature.
    #[error("this build has no TLS listener for the embedded broker (feature broker-tls)")]
    NoTls,
}

/// TLS listener of the embedded broker (feature `broker-tls`).
#[derive(Debug, Clone)]
pub struct EmbeddedTls {
    /// Listener address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Plain MQTT listener.
    pub addr: SocketAddr,
    /// TLS listener, when configured.
    pub tls_addr: Option<SocketAddr>,
}

/// `addr` itself, or `addr` with a free port if its port is 0.
pub fn concrete_addr(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = TcpListener::bind(addr).map_err(BrokerError::PickPort)?;
    l.local_addr().map_err(BrokerError::PickPort)
}

fn server(name: &str, listen: SocketAddr) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Starts the embedded broker when `mode` asks for one (on the blocking pool: [`start`] waits
/// for the port), for the controller and the site relay alike. `None` with an external broker.
pub(crate) async fn start_if_embedded(
    mode: &crate::config::BrokerMode,
    timeout: Duration,
) -> Result<Option<EmbeddedBroker>, crate::StubError> {
    let crate::config::BrokerMode::Embedded { listen, tls } = mode else {
        return Ok(None);
    };
    let (listen, tls) = (*listen, tls.clone());
    let broker = tokio::task::spawn_blocking(move || start(listen, tls, timeout))
        .await
        .map_err(|e| crate::StubError::Config(format!("broker start task: {e}")))??;
    Ok(Some(broker))
}

/// Starts rumqttd with a plain v4 listener on `listen` (port 0 = a free one) and optionally a
/// TLS listener, and waits up to `timeout` until it accepts connections.
pub fn start(
    listen: SocketAddr,
    tls: Option<EmbeddedTls>,
    timeout: Duration,
) -> Result<EmbeddedBroker, BrokerError> {
    let addr = concrete_addr(listen)?;
    let mut v4 = HashMap::new();
    v4.insert("1".to_string(), server("licd-plain", addr));
    let tls_addr = match tls {
        None => None,
        Some(tls) => Some(add_tls_listener(&mut v4, tls)?),
    };
    let config = Config {
        id: 0,
        router: router_config(),
        v4: Some(v4),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("licd-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Spawn)?;
    wait_listening(addr, timeout)?;
    if let Some(a) = tls_addr {
        wait_accepting(a, timeout)?;
    }
    tracing::info!(%addr, tls = ?tls_addr, "embedded broker listening");
    Ok(EmbeddedBroker { addr, tls_addr })
}

/// The router's limits: connections, and the per-filter logs (see the module doc).
fn router_config() -> RouterConfig {
    // rumqttd matches each new filter against these keys as if it were a topic, so the
    // controller's wildcard filters match themselves and no device's own filter matches them.
    let fan_in = [report_filter(), diag_response_filter()]
        .into_iter()
        .map(|f| (f, FAN_IN_LOG.clone()))
        .collect();
    RouterConfig {
        max_connections: 10_010,
        max_outgoing_packet_count: 200,
        max_segment_size: DEVICE_LOG.max_segment_size,
        max_segment_count: DEVICE_LOG.max_segment_count,
        custom_segment: Some(fan_in),
        ..RouterConfig::default()
    }
}

#[cfg(feature = "broker-tls")]
fn add_tls_listener(
    v4: &mut HashMap<String, ServerSettings>,
    tls: EmbeddedTls,
) -> Result<SocketAddr, BrokerError> {
    let a = concrete_addr(tls.listen)?;
    let mut s = server("licd-tls", a);
    s.tls = Some(rumqttd::TlsConfig::Rustls {
        capath: None,
        certpath: tls.cert.display().to_string(),
        keypath: tls.key.display().to_string(),
    });
    v4.insert("2".to_string(), s);
    Ok(a)
}

#[cfg(not(feature = "broker-tls"))]
fn add_tls_listener(
    _v4: &mut HashMap<String, ServerSettings>,
    _tls: EmbeddedTls,
) -> Result<SocketAddr, BrokerError> {
    Err(BrokerError::NoTls)
}

/// Waits until `addr` answers an MQTT CONNECT with a CONNACK (polling every 20 ms), up to
/// `timeout`. A bare TCP probe would work too, but rumqttd logs every connection closed before
/// its CONNECT as an error.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<(), BrokerError> {
    let deadline = Instant::now() + timeout;
    loop {
        if mqtt_probe(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `addr` accepts TCP (the TLS listener: an MQTT probe would need a TLS client).
fn wait_accepting(addr: SocketAddr, timeout: Duration) -> Result<(), BrokerError> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            return Err(BrokerError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s, client id `licd-probe`), then
/// closes (a DISCONNECT makes rumqttd log a spurious error).
fn mqtt_probe(addr: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    const CONNECT: &[u8] = &[
        0x10, 22, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 10, b'l', b'i', b'c', b'd',
        b'-', b'p', b'r', b'o', b'b', b'e',
    ];
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(CONNECT)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(std::io::Error::other("not an accepting MQTT broker"));
    }
    drop(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use licd_protocol::topic::TRUST_FILTER;

    /// The `custom_segment` keys rumqttd would apply to a new filter (it matches the filter
    /// against each key as if it were a topic); none: the router's defaults, [`DEVICE_LOG`].
    fn custom_for(filter: &str) -> Vec<String> {
        router_config()
            .custom_segment
            .unwrap_or_default()
            .into_keys()
            .filter(|key| rumqttd::protocol::matches(filter, key))
            .collect()
    }

    #[test]
    fn only_the_controllers_fan_in_filters_get_the_large_log() {
        for f in [report_filter(), diag_response_filter()] {
            assert_eq!(custom_for(&f), std::slice::from_ref(&f), "{f}");
        }
        for f in [
            "licd/v1/acme/ap-1/grants",
            "licd/v1/acme/ap-1/diag-request",
            "licd/v1/+/+/grants",
            TRUST_FILTER,
            "licd/v1/#",
            "#",
        ] {
            assert!(custom_for(f).is_empty(), "{f}");
        }
        let c = router_config();
        assert_eq!(c.max_segment_size, DEVICE_LOG.max_segment_size);
        assert_eq!(c.max_segment_count, DEVICE_LOG.max_segment_count);
    }
}
