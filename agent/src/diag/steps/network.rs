//! The network judges: DNS, TCP, TLS, MQTT, the retained bundle and the report → grant round
//! trip — verdicts over what [`crate::diag::net`] saw on the way to the broker.

use std::net::SocketAddr;
use std::time::Duration;

use licd_protocol::UnixTime;
use serde_json::json;

use super::{ms, Step, Verdict, CERT_WARN_BEFORE};
use crate::diag::x509::CertSummary;
use crate::status::fmt_time;

/// Name resolution of the broker host.
pub fn judge_dns(host: &str, result: &Result<Vec<SocketAddr>, String>, took: Duration) -> Step {
    const T: &str = "DNS";
    match result {
        Ok(addrs) if !addrs.is_empty() => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            Step::new(
                "dns",
                T,
                Verdict::Ok,
                format!("{host} -> {} in {}", list.join(" "), ms(took)),
            )
            .detail(json!({"addresses": list, "ms": took.as_secs_f64() * 1e3}))
        }
        Ok(_) => Step::new("dns", T, Verdict::Fail, format!("{host}: no addresses"))
            .hint("the name exists without A/AAAA records: check the broker host in broker.url"),
        Err(e) => Step::new("dns", T, Verdict::Fail, format!("{host}: {e}"))
            .hint("check broker.url, /etc/resolv.conf and the uplink"),
    }
}

/// The outcome of the TCP connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOutcome {
    /// Connected to `addr`.
    Connected {
        /// Address.
        addr: SocketAddr,
        /// Connect time.
        took: Duration,
    },
    /// Refused by `addr` (nobody listens).
    Refused {
        /// Address.
        addr: SocketAddr,
    },
    /// No answer in time (filtered, or the host is down).
    Timeout {
        /// Address.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// Another error.
    Error {
        /// Address.
        addr: SocketAddr,
        /// The OS message.
        message: String,
    },
}

/// The TCP connect step.
pub fn judge_tcp(outcome: &TcpOutcome) -> Step {
    const T: &str = "TCP connect";
    match outcome {
        TcpOutcome::Connected { addr, took } => {
            let v = if *took > Duration::from_secs(1) {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            let s = Step::new("tcp", T, v, format!("{addr} in {}", ms(*took)))
                .detail(json!({"addr": addr.to_string(), "ms": took.as_secs_f64() * 1e3}));
            if v == Verdict::Warn {
                s.hint("slow network path: expect slow reconnects")
            } else {
                s
            }
        }
        TcpOutcome::Refused { addr } => Step::new(
            "tcp",
            T,
            Verdict::Fail,
            format!("{addr}: connection refused"),
        )
        .hint("nothing listens there: is the broker running, and is the port in broker.url right?"),
        TcpOutcome::Timeout { addr, after } => Step::new(
            "tcp",
            T,
            Verdict::Fail,
            format!("{addr}: no answer within {}s", after.as_secs()),
        )
        .hint("a firewall drops the connection, or the host is down"),
        TcpOutcome::Error { addr, message } => {
            Step::new("tcp", T, Verdict::Fail, format!("{addr}: {message}"))
                .hint("check routing to the broker")
        }
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The TLS settings could not be loaded (CA file, client key…).
    Setup(String),
    /// The chain does not lead to a trusted CA.
    UnknownIssuer,
    /// A trusted CA has the issuer's name, but its key did not sign the certificate (another
    /// CA with the same name: a lab CA regenerated, a staging CA).
    WrongCaKey,
    /// The server certificate expired.
    Expired,
    /// The server certificate is not valid yet.
    NotYetValid,
    /// The certificate is not for the expected name.
    NameMismatch,
    /// Another certificate problem.
    BadCertificate(String),
    /// The server sent an alert.
    Alert(String),
    /// Nothing came back in time.
    Timeout,
    /// Anything else (I/O, protocol).
    Other(String),
}

/// What the TLS probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// The name checked (server_name override, or the broker host).
    pub name: String,
    /// Negotiated protocol version.
    pub version: Option<String>,
    /// Negotiated cipher suite.
    pub cipher: Option<String>,
    /// The server's chain, leaf first (when it could be read).
    pub chain: Vec<CertSummary>,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// A client certificate is configured.
    pub client_cert_configured: bool,
    /// Handshake time.
    pub took: Duration,
    /// Success, or why not.
    pub result: Result<(), TlsFailure>,
}

/// The TLS handshake step.
pub fn judge_tls(f: &TlsFacts, now: UnixTime) -> Step {
    const T: &str = "TLS";
    let leaf = f.chain.first();
    let leaf_s = leaf.map(|c| {
        format!(
            "cert {} (issuer {}), expires {}{}",
            c.subject,
            c.issuer,
            fmt_time(c.not_after),
            if c.names.is_empty() {
                String::new()
            } else {
                format!(", for {}", c.names.join(" "))
            }
        )
    });
    let detail = json!({
        "name": f.name,
        "version": f.version,
        "cipher": f.cipher,
        "chain": f.chain,
        "client_cert_requested": f.client_cert_requested,
        "client_cert_configured": f.client_cert_configured,
        "ms": f.took.as_secs_f64() * 1e3,
    });
    let with_leaf = |s: String| match &leaf_s {
        Some(l) => format!("{s}; server sent {l}"),
        None => s,
    };
    let fail = |figure: String, hint: &str| {
        Step::new("tls", T, Verdict::Fail, with_leaf(figure))
            .hint(hint)
            .detail(detail.clone())
    };
    match &f.result {
        Err(TlsFailure::Setup(e)) => Step::new("tls", T, Verdict::Fail, e.clone())
            .hint("fix the file named in [broker] (ca_file, client_cert, client_key)"),
        Err(TlsFailure::UnknownIssuer) => fail(
            "certificate not signed by a trusted CA".into(),
            "broker.ca_file does not hold the CA that signed the broker's certificate (or the system roots lack it)",
        ),
        Err(TlsFailure::WrongCaKey) => fail(
            "certificate not signed by the trusted CA (same issuer name, different key)".into(),
            "broker.ca_file holds another CA of the same name (regenerated?): install the CA that signed the broker's certificate",
        ),
        Err(TlsFailure::Expired) => fail("server certificate expired".into(), "renew the broker certificate; also check this device's clock"),
        Err(TlsFailure::NotYetValid) => fail("server certificate not valid yet".into(), "check this device's clock (NTP), then the certificate dates"),
        Err(TlsFailure::NameMismatch) => fail(
            format!("certificate is not valid for {:?}", f.name),
            "connect by a name the certificate lists, or set broker.server_name to one of them",
        ),
        Err(TlsFailure::BadCertificate(e)) => fail(format!("bad certificate: {e}"), "check the broker's certificate chain"),
        Err(TlsFailure::Alert(a)) => fail(
            format!("broker refused the handshake: {a}"),
            if f.client_cert_requested && !f.client_cert_configured {
                "the broker wants a client certificate: set broker.client_cert and client_key"
            } else {
                "the broker did not accept this client (client certificate? TLS version?)"
            },
        ),
        Err(TlsFailure::Timeout) => fail("no handshake answer in time".into(), "is this a TLS port? (mqtts:// is usually 8883)"),
        Err(TlsFailure::Other(e)) => fail(e.clone(), "is this a TLS port? (plain MQTT is usually 1883, TLS 8883)"),
        Ok(()) if f.client_cert_requested && !f.client_cert_configured => Step::new(
            "tls",
            T,
            Verdict::Fail,
            with_leaf("broker requires a client certificate and none is configured".into()),
        )
        .hint("set broker.client_cert and broker.client_key (mutual TLS)")
        .detail(detail),
        Ok(()) => {
            let figure = format!(
                "{} {} in {}{}",
                f.version.as_deref().unwrap_or("?"),
                f.cipher.as_deref().unwrap_or("?"),
                ms(f.took),
                leaf_s.as_ref().map(|l| format!("; {l}")).unwrap_or_default()
            );
            let soon = leaf.is_some_and(|c| c.not_after.saturating_sub(now) < CERT_WARN_BEFORE);
            if soon {
                Step::new("tls", T, Verdict::Warn, figure)
                    .hint("the broker certificate expires within 30 days: renew it")
                    .detail(detail)
            } else {
                Step::new("tls", T, Verdict::Ok, figure).detail(detail)
            }
        }
    }
}

/// The outcome of the MQTT CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttOutcome {
    /// ConnAck with return code 0.
    Accepted {
        /// Time to ConnAck.
        took: Duration,
    },
    /// ConnAck with a refusal code (`NotAuthorized`, `BadUserNamePassword`, …).
    Refused(String),
    /// The connection failed before a ConnAck (TLS, I/O).
    Failed(String),
    /// No ConnAck in time.
    Timeout(Duration),
}

/// The MQTT connect step.
pub fn judge_mqtt(o: &MqttOutcome, client_id: &str) -> Step {
    const T: &str = "MQTT connect";
    match o {
        MqttOutcome::Accepted { took } => Step::new(
            "mqtt",
            T,
            Verdict::Ok,
            format!("accepted as {client_id} in {}", ms(*took)),
        ),
        MqttOutcome::Refused(code) => {
            let hint = match code.as_str() {
                "NotAuthorized" => "the broker does not authorise this client: check broker.username / password_file, the client certificate, and the broker's ACL",
                "BadUserNamePassword" => "wrong user name or password: check broker.username and broker.password_file",
                "BadClientId" => "the broker refuses the client id: check its client-id rules",
                "ServiceUnavailable" => "the broker is up but not serving: check its logs",
                _ => "the broker refused the connection: check its log",
            };
            Step::new("mqtt", T, Verdict::Fail, format!("refused: {code}"))
                .hint(hint)
                .detail(json!({"return_code": code}))
        }
        MqttOutcome::Failed(e) => {
            let hint = if e.contains("CertificateRequired") || e.contains("certificate required") {
                "the broker wants a client certificate: set broker.client_cert and client_key"
            } else {
                "see the TCP/TLS steps above"
            };
            Step::new("mqtt", T, Verdict::Fail, e.clone()).hint(hint)
        }
        MqttOutcome::Timeout(after) => Step::new(
            "mqtt",
            T,
            Verdict::Fail,
            format!("no CONNACK within {}s", after.as_secs()),
        )
        .hint("the broker accepted TCP but does not speak MQTT there, or is overloaded"),
    }
}

/// A bundle seen on the grants topic during diag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSeen {
    /// Its seq (0 when it could not be decoded).
    pub seq: u64,
    /// Time from subscribe / report to arrival.
    pub took: Duration,
    /// Accepted by the rules, or the refusal (code, message).
    pub check: Result<(), (&'static str, String)>,
}

/// The retained-bundle step: `subscribed` is the SubAck (Err: refused), `seen` what arrived.
pub fn judge_retained(
    subscribed: Result<(), String>,
    seen: Option<&BundleSeen>,
    cached_seq: u64,
    waited: Duration,
) -> Step {
    const T: &str = "retained bundle";
    if let Err(e) = subscribed {
        return Step::new(
            "retained",
            T,
            Verdict::Fail,
            format!("subscription refused: {e}"),
        )
        .hint("the broker's ACL does not let this device read its grants topic");
    }
    match seen {
        None if cached_seq == 0 => Step::new("retained", T, Verdict::Warn, format!("none within {}s", waited.as_secs()))
            .hint("the controller has not published for this device yet; it answers a report (next step)"),
        None => Step::new("retained", T, Verdict::Warn, format!("none within {}s, but the cache holds seq {cached_seq}", waited.as_secs()))
            .hint("the broker lost its retained messages (restart without persistence?); the controller republishes on the next report"),
        Some(b) => match &b.check {
            Err((code, msg)) => Step::new("retained", T, Verdict::Fail, format!("seq {} refused ({code}): {msg}", b.seq))
                .hint("the bundle the broker holds for this device is not acceptable: see the cache hints")
                .detail(json!({"seq": b.seq, "code": code})),
            Ok(()) if b.seq < cached_seq => Step::new("retained", T, Verdict::Warn, format!("seq {} is older than the cached seq {cached_seq}", b.seq))
                .hint("the controller may have lost state: it must issue a newer seq")
                .detail(json!({"seq": b.seq})),
            Ok(()) => Step::new("retained", T, Verdict::Ok, format!("seq {} valid, received in {}", b.seq, ms(b.took)))
                .detail(json!({"seq": b.seq})),
        },
    }
}

/// The report → grant round trip step.
pub fn judge_round_trip(
    published: Result<(), String>,
    seen: Option<&BundleSeen>,
    after_seq: u64,
    waited: Duration,
) -> Step {
    const T: &str = "round trip";
    if let Err(e) = published {
        return Step::new(
            "round_trip",
            T,
            Verdict::Fail,
            format!("report not delivered: {e}"),
        )
        .hint("the broker's ACL may not let this device publish its report topic");
    }
    match seen {
        None => Step::new("round_trip", T, Verdict::Fail, format!("report sent, no grant newer than seq {after_seq} within {}s", waited.as_secs()))
            .hint("the controller is not answering: is it running and subscribed to this broker? (leases run out without it)"),
        Some(b) => match &b.check {
            Err((code, msg)) => Step::new("round_trip", T, Verdict::Fail, format!("answer seq {} refused ({code}): {msg}", b.seq))
                .hint("the controller answers with a bundle this device cannot accept: check roots and the device key registration")
                .detail(json!({"seq": b.seq, "code": code})),
            Ok(()) => Step::new("round_trip", T, Verdict::Ok, format!("report -> grant seq {} in {}", b.seq, ms(b.took)))
                .detail(json!({"seq": b.seq, "ms": b.took.as_secs_f64() * 1e3})),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = 1_800_000_000;

    #[test]
    fn a_handshake_that_succeeds_without_the_wanted_client_certificate_fails() {
        let facts = TlsFacts {
            name: "b".into(),
            version: Some("TLSv1_3".into()),
            cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
            chain: vec![],
            client_cert_requested: true,
            client_cert_configured: false,
            took: Duration::from_millis(3),
            result: Ok(()),
        };
        assert_eq!(judge_tls(&facts, T0).verdict, Verdict::Fail);
        let ok = TlsFacts {
            client_cert_requested: false,
            ..facts.clone()
        };
        assert_eq!(judge_tls(&ok, T0).verdict, Verdict::Ok);
        let bad_ca = TlsFacts {
            result: Err(TlsFailure::UnknownIssuer),
            ..ok
        };
        let s = judge_tls(&bad_ca, T0);
        assert!(s.hint.unwrap().contains("ca_file"));
    }

    #[test]
    fn mqtt_refusal_codes_get_their_own_hints() {
        let s = judge_mqtt(&MqttOutcome::Refused("NotAuthorized".into()), "c");
        assert_eq!(s.verdict, Verdict::Fail);
        assert!(s.hint.unwrap().contains("password_file"));
        assert_eq!(s.detail["return_code"], "NotAuthorized");
    }
}
