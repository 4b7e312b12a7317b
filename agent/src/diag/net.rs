//! The network probes of `licd diag`: name resolution, TCP connect, the TLS handshake (rustls
//! driven directly over a socket with the agent's own `ClientConfig`, so it fails exactly where
//! the daemon would, but with the reason and the server's chain in hand), and an MQTT session
//! with a client id of its own that subscribes to the device's grants, sends one signed report
//! and waits for the answer.
//!
//! The MQTT session must not disturb a running daemon: it uses a distinct client id (the broker
//! would otherwise disconnect the daemon), sets no last will and publishes no presence, and
//! never writes the cache. The controller's answer also reaches the daemon, which accepts it
//! as it would any newer bundle. The facts go back to `steps` for judging.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use licd_protocol::{Envelope, GrantBundle, UnixTime};
use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime as PkiTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
};

use super::steps::{BundleSeen, MqttOutcome, TcpOutcome, TlsFacts, TlsFailure};
use super::x509;
use crate::config::BrokerSettings;
use crate::enforce::AcceptanceRules;
use crate::session::DeviceTopics;
use crate::tls::{client_config, transport, TlsSettings};

/// How long diag waits for a retained bundle after the broker acknowledged the subscription
/// when it has no report to send. Brokers deliver retained messages right after the SUBACK, so
/// this only bounds the wait when there is none.
pub const RETAINED_WAIT: Duration = Duration::from_secs(2);

/// Same as the daemon: bigger than the envelope limit, so an oversized bundle is refused with
/// a reason instead of dropping the connection.
const MAX_INCOMING_PACKET: usize = 2 * 1024 * 1024;

/// Resolves `host:port`; the time it took.
pub async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> (Result<Vec<SocketAddr>, String>, Duration) {
    let start = Instant::now();
    let r = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    };
    (r, start.elapsed())
}

/// Connects to each address in turn; the first success, or the last failure.
pub async fn tcp_connect(addrs: &[SocketAddr], timeout: Duration) -> TcpOutcome {
    let mut last = None;
    for &addr in addrs {
        let start = Instant::now();
        let outcome =
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_stream)) => {
                    return TcpOutcome::Connected {
                        addr,
                        took: start.elapsed(),
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    TcpOutcome::Refused { addr }
                }
                Ok(Err(e)) => TcpOutcome::Error {
                    addr,
                    message: e.to_string(),
                },
                Err(_) => TcpOutcome::Timeout {
                    addr,
                    after: timeout,
                },
            };
        last = Some(outcome);
    }
    last.unwrap_or(TcpOutcome::Error {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        message: "no address to connect to".into(),
    })
}

/// Records whether the server asked for a client certificate, then answers as the agent's
/// own resolver would.
#[derive(Debug)]
struct AskRecorder {
    inner: Arc<dyn ResolvesClientCert>,
    asked: AtomicBool,
}

impl ResolvesClientCert for AskRecorder {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.inner.resolve(root_hint_subjects, sigschemes)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// A verifier that only writes down the chain the server sent and then stops the handshake.
/// Used after a failed verification, to show what the server presented; it never lets a
/// connection through.
#[derive(Debug)]
struct ChainRecorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

const RECORDED: &str = "licd diag: chain recorded, handshake stopped";

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: PkiTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        Err(rustls::Error::General(RECORDED.into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(RECORDED.into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(RECORDED.into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Drives a blocking handshake to completion (and says goodbye politely).
fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<ClientConnection, io::Error> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    while conn.wants_write() {
        conn.complete_io(&mut sock)?;
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(conn)
}

fn classify(e: &io::Error) -> TlsFailure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::BadSignature => TlsFailure::WrongCaKey,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            other => TlsFailure::BadCertificate(format!("{other:?}")),
        },
        Some(rustls::Error::AlertReceived(a)) => TlsFailure::Alert(format!("{a:?}")),
        Some(other) => TlsFailure::Other(other.to_string()),
        None if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) =>
        {
            TlsFailure::Timeout
        }
        None => TlsFailure::Other(e.to_string()),
    }
}

fn chain_summaries(chain: &[CertificateDer<'_>]) -> Vec<x509::CertSummary> {
    chain.iter().filter_map(|c| x509::summarize(c)).collect()
}

fn tls_blocking(
    addr: SocketAddr,
    host: String,
    settings: TlsSettings,
    timeout: Duration,
) -> TlsFacts {
    let mut facts = TlsFacts {
        name: settings.server_name.clone().unwrap_or_else(|| host.clone()),
        version: None,
        cipher: None,
        chain: Vec::new(),
        client_cert_requested: false,
        client_cert_configured: settings.client_cert.is_some(),
        took: Duration::ZERO,
        result: Ok(()),
    };
    let mut config = match client_config(&settings) {
        Ok(c) => c,
        Err(e) => {
            facts.result = Err(TlsFailure::Setup(e.to_string()));
            return facts;
        }
    };
    let asked = Arc::new(AskRecorder {
        inner: Arc::clone(&config.client_auth_cert_resolver),
        asked: AtomicBool::new(false),
    });
    config.client_auth_cert_resolver = asked.clone();
    let start = Instant::now();
    let result = handshake(Arc::new(config), &host, addr, timeout);
    facts.took = start.elapsed();
    facts.client_cert_requested = asked.asked.load(Ordering::Relaxed);
    match result {
        Ok(conn) => {
            facts.version = conn.protocol_version().map(|v| format!("{v:?}"));
            facts.cipher = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            facts.chain = conn
                .peer_certificates()
                .map(chain_summaries)
                .unwrap_or_default();
        }
        Err(e) => {
            let failure = classify(&e);
            if matches!(
                failure,
                TlsFailure::UnknownIssuer
                    | TlsFailure::WrongCaKey
                    | TlsFailure::Expired
                    | TlsFailure::NotYetValid
                    | TlsFailure::NameMismatch
                    | TlsFailure::BadCertificate(_)
                    | TlsFailure::Alert(_)
            ) {
                facts.chain = record_chain(addr, &host, timeout);
            }
            facts.result = Err(failure);
        }
    }
    facts
}

/// A second handshake that stops at the server certificate, to show what the server sent.
fn record_chain(addr: SocketAddr, host: &str, timeout: Duration) -> Vec<x509::CertSummary> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(ChainRecorder {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let Ok(builder) =
        ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return Vec::new();
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let _ = handshake(Arc::new(config), host, addr, timeout);
    let chain = recorder.chain.lock().unwrap_or_else(|p| p.into_inner());
    chain_summaries(&chain)
}

/// The TLS handshake with the agent's client configuration.
pub async fn tls_handshake(
    addr: SocketAddr,
    host: &str,
    settings: &TlsSettings,
    timeout: Duration,
) -> TlsFacts {
    let (host, settings) = (host.to_string(), settings.clone());
    let name = settings.server_name.clone().unwrap_or_else(|| host.clone());
    let configured = settings.client_cert.is_some();
    tokio::task::spawn_blocking(move || tls_blocking(addr, host, settings, timeout))
        .await
        .unwrap_or_else(|e| TlsFacts {
            name,
            version: None,
            cipher: None,
            chain: Vec::new(),
            client_cert_requested: false,
            client_cert_configured: configured,
            took: Duration::ZERO,
            result: Err(TlsFailure::Other(format!("probe thread failed: {e}"))),
        })
}

/// What the MQTT probe needs.
pub struct MqttParams<'a> {
    /// Broker settings from the config.
    pub broker: &'a BrokerSettings,
    /// Client id (distinct from the daemon's).
    pub client_id: String,
    /// The device's topics.
    pub topics: &'a DeviceTopics,
    /// Limit for each wait.
    pub timeout: Duration,
    /// The rules bundles are checked with (`None`: no device key, nothing can be checked).
    pub rules: Option<&'a AcceptanceRules>,
    /// Trusted time for the checks.
    pub now: UnixTime,
    /// A signed report to send (`None`: no round trip).
    pub report: Option<Vec<u8>>,
}

/// What the MQTT probe found.
#[derive(Debug, Default)]
pub struct MqttFacts {
    /// The CONNECT outcome (`None` when the options could not be built).
    pub connect: Option<MqttOutcome>,
    /// The SUBACK (`None`: not reached).
    pub subscribed: Option<Result<(), String>>,
    /// The retained bundle delivered on subscribe.
    pub retained: Option<BundleSeen>,
    /// The report's PUBACK (`None`: not sent).
    pub published: Option<Result<(), String>>,
    /// The answer to the report.
    pub answer: Option<BundleSeen>,
    /// Valid bundles seen (raw), oldest first, for evaluating the services.
    pub bundles: Vec<Vec<u8>>,
}

fn check_bundle(raw: &[u8], params: &MqttParams<'_>, took: Duration) -> BundleSeen {
    let decoded_seq = || {
        Envelope::parse(raw)
            .and_then(|e| e.decode::<GrantBundle>())
            .map(|b| b.seq)
            .unwrap_or(0)
    };
    match params.rules {
        None => BundleSeen {
            seq: decoded_seq(),
            took,
            check: Err((
                "no_device_key",
                "cannot check the binding without the device key".into(),
            )),
        },
        Some(rules) => match rules.check(raw, params.now) {
            Ok((bundle, _)) => BundleSeen {
                seq: bundle.bundle.seq,
                took,
                check: Ok(()),
            },
            Err(r) => BundleSeen {
                seq: decoded_seq(),
                took,
                check: Err((r.code(), r.to_string())),
            },
        },
    }
}

/// Connects, subscribes to the grants topic, sends the report, and collects what comes back.
pub async fn mqtt_probe(params: MqttParams<'_>) -> MqttFacts {
    let mut facts = MqttFacts::default();
    let b = params.broker;
    let mut o = MqttOptions::new(params.client_id.clone(), b.host.clone(), b.port);
    o.set_keep_alive(b.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, 256 * 1024);
    if let Some(tls) = &b.tls {
        match transport(tls) {
            Ok(t) => {
                o.set_transport(t);
            }
            Err(e) => {
                facts.connect = Some(MqttOutcome::Failed(e.to_string()));
                return facts;
            }
        }
    }
    if let Some((user, pass)) = &b.credentials {
        o.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(params.timeout.as_secs().max(1));
    eventloop.set_network_options(net);

    // CONNECT.
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + params.timeout;
    let connect = loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => break MqttOutcome::Timeout(params.timeout),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                break MqttOutcome::Accepted {
                    took: start.elapsed(),
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                break MqttOutcome::Refused(format!("{code:?}"))
            }
            Ok(Err(e)) => break MqttOutcome::Failed(e.to_string()),
        }
    };
    let accepted = matches!(connect, MqttOutcome::Accepted { .. });
    facts.connect = Some(connect);
    if !accepted {
        return facts;
    }

    // SUBSCRIBE, then the report; retained (retain flag set) and live answers told apart.
    let _ = client.try_subscribe(params.topics.grants.clone(), QoS::AtLeastOnce);
    let mut sub_at = Instant::now();
    let mut report_at = None;
    let mut report_pending = params.report.clone();
    let mut deadline = tokio::time::Instant::now() + params.timeout;
    let mut waiting_answer = false;
    loop {
        let done = match (&facts.subscribed, waiting_answer) {
            (Some(Err(_)), _) => true,
            (Some(Ok(())), true) => {
                facts.answer.is_some() || facts.published.as_ref().is_some_and(Result::is_err)
            }
            (Some(Ok(())), false) => facts.retained.is_some(),
            (None, _) => false,
        };
        if done {
            break;
        }
        let ev = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                if facts.subscribed.is_none() {
                    facts.subscribed = Some(Err(e.to_string()));
                } else if waiting_answer && facts.published.is_none() {
                    facts.published = Some(Err(e.to_string()));
                }
                break;
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                facts.subscribed = Some(if refused {
                    Err("the broker answered SUBACK with failure (0x80)".into())
                } else {
                    Ok(())
                });
                sub_at = Instant::now();
                if refused {
                    continue;
                }
                match report_pending.take() {
                    Some(bytes) => {
                        let _ = client.try_publish(
                            params.topics.report.clone(),
                            QoS::AtLeastOnce,
                            false,
                            bytes,
                        );
                        report_at = Some(Instant::now());
                        waiting_answer = true;
                        deadline = tokio::time::Instant::now() + params.timeout;
                    }
                    None => {
                        deadline = tokio::time::Instant::now() + RETAINED_WAIT.min(params.timeout)
                    }
                }
            }
            Event::Incoming(Packet::PubAck(_)) if waiting_answer && facts.published.is_none() => {
                facts.published = Some(Ok(()));
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == params.topics.grants => {
                if p.retain && facts.retained.is_none() && facts.answer.is_none() {
                    let seen = check_bundle(&p.payload, &params, sub_at.elapsed());
                    if seen.check.is_ok() {
                        facts.bundles.push(p.payload.to_vec());
                    }
                    facts.retained = Some(seen);
                } else if !p.retain && waiting_answer && facts.answer.is_none() {
                    let took = report_at.map(|t| t.elapsed()).unwrap_or_default();
                    let seen = check_bundle(&p.payload, &params, took);
                    if seen.check.is_ok() {
                        facts.bundles.push(p.payload.to_vec());
                    }
                    facts.answer = Some(seen);
                }
            }
            _ => {}
        }
    }
    if facts.subscribed.is_none() {
        facts.subscribed = Some(Err(format!(
            "no SUBACK within {}s",
            params.timeout.as_secs()
        )));
    }
    if waiting_answer && facts.published.is_none() {
        facts.published = Some(Err(format!(
            "no PUBACK within {}s",
            params.timeout.as_secs()
        )));
    }

    // Polite disconnect, bounded.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    facts
}
