//! TLS client configuration for the agent's MQTT connection.
//!
//! Turns typed [`TlsSettings`] into a [`rumqttc::Transport`]: `mqtts://` (the default) uses rustls
//! with the `ring` provider chosen explicitly (no process-wide default provider is installed or
//! needed), trusting either a configured CA PEM file or the system roots, optionally presenting a
//! client certificate (mutual TLS) and optionally checking the server certificate against a name
//! other than the broker host. Plain `mqtt://` is produced only when the caller says insecure
//! transport is allowed.
//!
//! This module reads the files named in the settings and nothing else: parsing the broker URL,
//! deciding `allow_insecure` and logging configuration belong to the config and session modules.
//!
//! # Server name override
//!
//! rumqttc 0.25 has no hook for the TLS server name: it always uses the broker host from
//! `MqttOptions` both as the SNI value and as the name the certificate is checked against. When
//! [`TlsSettings::server_name`] is set, this module installs a certificate verifier that performs
//! the normal WebPKI verification (chain to the configured roots, validity, key usage) but checks
//! the certificate against the override name instead of the broker host. The SNI sent on the wire
//! is still the broker host (none at all when the host is an IP address); a broker that routes by
//! SNI must be reached by its real name instead.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use licd_core::config::TlsSettings;

/// The broker URL scheme: TLS (`mqtts://`, the default) or plain TCP (`mqtt://`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme {
    /// MQTT over TLS (`mqtts://` or `ssl://`).
    #[default]
    Mqtts,
    /// MQTT over plain TCP (`mqtt://` or `tcp://`); allowed only with `allow_insecure`.
    Mqtt,
}

impl Scheme {
    /// The scheme for a URL scheme string (`"mqtts"`, `"ssl"`, `"mqtt"`, `"tcp"`), if known.
    pub fn from_url_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "mqtts" | "ssl" => Some(Self::Mqtts),
            "mqtt" | "tcp" => Some(Self::Mqtt),
            _ => None,
        }
    }

    /// The IANA port for the scheme: 8883 for TLS, 1883 for plain TCP.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Mqtts => 8883,
            Self::Mqtt => 1883,
        }
    }
}

/// Why a TLS transport could not be built. Each variant names one reason and the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `mqtt://` was asked for but the configuration does not allow insecure transport.
    #[error("plain mqtt:// is not allowed: use mqtts:// or set allow_insecure = true")]
    InsecureNotAllowed,
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {error}")]
    CaFileUnreadable {
        /// The configured CA file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The CA file is not well-formed PEM.
    #[error("CA file {path} is not valid PEM: {error}")]
    CaFileMalformed {
        /// The configured CA file.
        path: PathBuf,
        /// The PEM parser's error.
        error: io::Error,
    },
    /// The CA file holds no certificate that could be used as a trust anchor.
    #[error("CA file {path} contains no usable certificate ({rejected} rejected)")]
    NoCaCertificates {
        /// The configured CA file.
        path: PathBuf,
        /// How many `CERTIFICATE` blocks were found but could not be parsed.
        rejected: usize,
    },
    /// No CA file is configured and the system store has no usable root certificate.
    #[error("no usable root certificate in the system store{details}; configure a CA file")]
    NoSystemRoots {
        /// What went wrong while loading the store, formatted for the message (may be empty).
        details: String,
    },
    /// A client certificate is configured without a client key.
    #[error("client certificate {cert} is configured without a client key")]
    ClientCertWithoutKey {
        /// The configured client certificate.
        cert: PathBuf,
    },
    /// A client key is configured without a client certificate.
    #[error("client key {key} is configured without a client certificate")]
    ClientKeyWithoutCert {
        /// The configured client key.
        key: PathBuf,
    },
    /// The client certificate file could not be read.
    #[error("cannot read client certificate {path}: {error}")]
    ClientCertUnreadable {
        /// The configured client certificate.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The client certificate file is not well-formed PEM.
    #[error("client certificate {path} is not valid PEM: {error}")]
    ClientCertMalformed {
        /// The configured client certificate.
        path: PathBuf,
        /// The PEM parser's error.
        error: io::Error,
    },
    /// The client certificate file holds no certificate.
    #[error("client certificate file {path} contains no certificate")]
    NoClientCertificate {
        /// The configured client certificate.
        path: PathBuf,
    },
    /// The client key file could not be read.
    #[error("cannot read client key {path}: {error}")]
    ClientKeyUnreadable {
        /// The configured client key.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The client key file is not well-formed PEM.
    #[error("client key {path} is not valid PEM: {error}")]
    ClientKeyMalformed {
        /// The configured client key.
        path: PathBuf,
        /// The PEM parser's error.
        error: io::Error,
    },
    /// The client key file holds no private key.
    #[error("client key file {path} contains no private key")]
    NoClientKey {
        /// The configured client key.
        path: PathBuf,
    },
    /// rustls refused the key: an unsupported key type, or it does not match the certificate.
    #[error("client key {path} rejected: {error}")]
    ClientKeyRejected {
        /// The configured client key.
        path: PathBuf,
        /// rustls's reason.
        error: rustls::Error,
    },
    /// The server name override is not a valid DNS name or IP address.
    #[error("server name override {name:?} is not a valid DNS name or IP address")]
    InvalidServerName {
        /// The configured override.
        name: String,
    },
    /// rustls could not set up the protocol versions or the certificate verifier.
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The rumqttc transport for `scheme`: TLS from `settings`, or plain TCP if and only if the
/// scheme is `mqtt://` and `allow_insecure` is true (the caller logs the warning).
pub fn transport_for(
    scheme: Scheme,
    allow_insecure: bool,
    settings: &TlsSettings,
) -> Result<Transport, TlsError> {
    match scheme {
        Scheme::Mqtts => transport(settings),
        Scheme::Mqtt if allow_insecure => Ok(Transport::Tcp),
        Scheme::Mqtt => Err(TlsError::InsecureNotAllowed),
    }
}

/// The rumqttc TLS transport for `settings` (always TLS; see [`transport_for`] for `mqtt://`).
pub fn transport(settings: &TlsSettings) -> Result<Transport, TlsError> {
    let config = client_config(settings)?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    )))
}

/// The rustls client configuration for `settings`, with the `ring` provider.
pub fn client_config(settings: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(match &settings.ca_file {
        Some(path) => roots_from_file(path)?,
        None => roots_from_native(rustls_native_certs::load_native_certs())?,
    });
    let identity = client_identity(settings)?;

    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &settings.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let expected = ServerName::try_from(name.clone())
                .map_err(|_| TlsError::InvalidServerName { name: name.clone() })?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExpectedNameVerifier {
                    inner,
                    expected,
                }))
        }
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((key_path, certs, key)) => {
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|error| TlsError::ClientKeyRejected {
                    path: key_path.to_path_buf(),
                    error,
                })
        }
    }
}

/// Trust anchors from a CA PEM file: every parsable certificate in it.
fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = fs::read(path).map_err(|error| TlsError::CaFileUnreadable {
        path: path.to_path_buf(),
        error,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::CaFileMalformed {
            path: path.to_path_buf(),
            error,
        })?;
    let mut roots = RootCertStore::empty();
    let (_added, rejected) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(TlsError::NoCaCertificates {
            path: path.to_path_buf(),
            rejected,
        });
    }
    Ok(roots)
}

/// Trust anchors from the system store. Partial failures are tolerated while some root loads.
fn roots_from_native(
    loaded: rustls_native_certs::CertificateResult,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (_added, rejected) = roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        let mut details = Vec::new();
        if rejected > 0 {
            details.push(format!("{rejected} certificate(s) rejected"));
        }
        details.extend(loaded.errors.iter().map(ToString::to_string));
        let details = if details.is_empty() {
            String::new()
        } else {
            format!(" ({})", details.join("; "))
        };
        return Err(TlsError::NoSystemRoots { details });
    }
    if !loaded.errors.is_empty() {
        tracing::warn!(
            errors = loaded.errors.len(),
            roots = roots.len(),
            "some system root certificates could not be loaded"
        );
    }
    Ok(roots)
}

/// The client certificate chain and key, when both are configured.
type Identity<'a> = (
    &'a Path,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
);

/// Loads the client certificate and key for mutual TLS; `None` when neither is configured.
fn client_identity(settings: &TlsSettings) -> Result<Option<Identity<'_>>, TlsError> {
    let (cert_path, key_path) = match (&settings.client_cert, &settings.client_key) {
        (None, None) => return Ok(None),
        (Some(cert), None) => return Err(TlsError::ClientCertWithoutKey { cert: cert.clone() }),
        (None, Some(key)) => return Err(TlsError::ClientKeyWithoutCert { key: key.clone() }),
        (Some(cert), Some(key)) => (cert.as_path(), key.as_path()),
    };

    let pem = fs::read(cert_path).map_err(|error| TlsError::ClientCertUnreadable {
        path: cert_path.to_path_buf(),
        error,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::ClientCertMalformed {
            path: cert_path.to_path_buf(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoClientCertificate {
            path: cert_path.to_path_buf(),
        });
    }

    let pem = fs::read(key_path).map_err(|error| TlsError::ClientKeyUnreadable {
        path: key_path.to_path_buf(),
        error,
    })?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|error| TlsError::ClientKeyMalformed {
            path: key_path.to_path_buf(),
            error,
        })?
        .ok_or_else(|| TlsError::NoClientKey {
            path: key_path.to_path_buf(),
        })?;
    Ok(Some((key_path, certs, key)))
}

/// Full WebPKI verification of the server certificate, against a configured name instead of
/// the host rumqttc connected to (see the module docs).
#[derive(Debug)]
struct ExpectedNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: ServerName<'static>,
}

impl ServerCertVerifier for ExpectedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &self.expected,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Self-signed ECDSA P-256 certificate for `fixture.licd.test` (rcgen; valid 1975–4096).
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBYDCCAQagAwIBAgIUDQkH3PTE/S65viHQowe3wSkziZIwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTbGljZCB0bHMucnMgZml4dHVyZTAgFw03NTAxMDEwMDAwMDBa
GA80MDk2MDEwMTAwMDAwMFowHjEcMBoGA1UEAwwTbGljZCB0bHMucnMgZml4dHVy
ZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLvIcAnLw/ziqPjguMcom5jBc82K
H8nyX2x4dwIXWEfAqSkUlgzLG7hhhCY0pY1GGedKXpuSUTPS5bEdKQqJY4+jIDAe
MBwGA1UdEQQVMBOCEWZpeHR1cmUubGljZC50ZXN0MAoGCCqGSM49BAMCA0gAMEUC
IQDXJWvS19kgkrh0guyIhPnKCFtB5NO8lCD/WXEDUky95AIgby1CrNavjjww2Tmw
Gj+TaZcMrkDUki+X3z/EOTFCX34=
-----END CERTIFICATE-----
";

    /// The private key of [`CERT`] (PKCS#8).
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLxsUInwlL8vWxBWw
eFO+S9PUsX82dco+SAzAGGcQ0JmhRANCAAS7yHAJy8P84qj44LjHKJuYwXPNih/J
8l9seHcCF1hHwKkpFJYMyxu4YYQmNKWNRhnnSl6bklEz0uWxHSkKiWOP
-----END PRIVATE KEY-----
";

    /// Another P-256 key that does not match [`CERT`].
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwXj+89q7VWtRAPuA
4OKLe7Ov1QJ9eJ8P09QPf1NzMruhRANCAASd4DlHcP7+WXMps7Yak6Y9XGy5NxHE
AznuURZZScUoqAxZYqMiVWkInf+7T7QqB9zGmBeM8rouQzLgIKQRrpx0
-----END PRIVATE KEY-----
";

    /// A directory of fixture files; `missing` names a path that does not exist.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            fs::write(&path, contents).unwrap();
            path
        }

        fn missing(&self) -> PathBuf {
            self.dir.path().join("does-not-exist.pem")
        }

        /// Settings trusting [`CERT`] with no client identity.
        fn trusting_fixture(&self) -> TlsSettings {
            TlsSettings {
                ca_file: Some(self.write("ca.pem", CERT)),
                ..TlsSettings::default()
            }
        }
    }

    fn err(settings: &TlsSettings) -> TlsError {
        match client_config(settings) {
            Ok(_) => panic!("expected an error for {settings:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn url_schemes_map_to_tls_or_plain_with_their_default_ports() {
        assert_eq!(Scheme::from_url_scheme("mqtts"), Some(Scheme::Mqtts));
        assert_eq!(Scheme::from_url_scheme("ssl"), Some(Scheme::Mqtts));
        assert_eq!(Scheme::from_url_scheme("mqtt"), Some(Scheme::Mqtt));
        assert_eq!(Scheme::from_url_scheme("tcp"), Some(Scheme::Mqtt));
        assert_eq!(Scheme::from_url_scheme("http"), None);
        assert_eq!(Scheme::default(), Scheme::Mqtts);
        assert_eq!(Scheme::Mqtts.default_port(), 8883);
        assert_eq!(Scheme::Mqtt.default_port(), 1883);
    }

    #[test]
    fn plain_mqtt_is_refused_unless_insecure_is_allowed() {
        let settings = TlsSettings::default();
        assert!(matches!(
            transport_for(Scheme::Mqtt, false, &settings),
            Err(TlsError::InsecureNotAllowed)
        ));
        assert!(matches!(
            transport_for(Scheme::Mqtt, true, &settings),
            Ok(Transport::Tcp)
        ));
    }

    #[test]
    fn mqtts_with_a_ca_file_gives_a_rustls_transport() {
        let files = Files::new();
        let transport = transport_for(Scheme::Mqtts, false, &files.trusting_fixture()).unwrap();
        assert!(matches!(
            transport,
            Transport::Tls(TlsConfiguration::Rustls(_))
        ));
    }

    #[test]
    fn allow_insecure_does_not_turn_mqtts_into_plain_tcp() {
        let files = Files::new();
        let transport = transport_for(Scheme::Mqtts, true, &files.trusting_fixture()).unwrap();
        assert!(matches!(transport, Transport::Tls(_)));
    }

    #[test]
    fn a_missing_ca_file_is_reported_as_unreadable() {
        let files = Files::new();
        let settings = TlsSettings {
            ca_file: Some(files.missing()),
            ..TlsSettings::default()
        };
        assert!(
            matches!(err(&settings), TlsError::CaFileUnreadable { path, .. } if path == files.missing())
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            ca_file: Some(files.write("ca.pem", "just some text\n")),
            ..TlsSettings::default()
        };
        assert!(matches!(
            err(&settings),
            TlsError::NoCaCertificates { rejected: 0, .. }
        ));
    }

    #[test]
    fn a_ca_file_holding_only_a_key_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            ca_file: Some(files.write("ca.pem", KEY)),
            ..TlsSettings::default()
        };
        assert!(matches!(
            err(&settings),
            TlsError::NoCaCertificates { rejected: 0, .. }
        ));
    }

    #[test]
    fn a_ca_certificate_that_does_not_parse_is_counted_as_rejected() {
        let files = Files::new();
        let bogus = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
        let settings = TlsSettings {
            ca_file: Some(files.write("ca.pem", bogus)),
            ..TlsSettings::default()
        };
        assert!(matches!(
            err(&settings),
            TlsError::NoCaCertificates { rejected: 1, .. }
        ));
    }

    #[test]
    fn a_ca_file_with_broken_base64_is_malformed() {
        let files = Files::new();
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let settings = TlsSettings {
            ca_file: Some(files.write("ca.pem", broken)),
            ..TlsSettings::default()
        };
        assert!(matches!(err(&settings), TlsError::CaFileMalformed { .. }));
    }

    #[test]
    fn an_empty_system_store_is_reported_as_no_system_roots() {
        let empty = rustls_native_certs::CertificateResult::default();
        assert!(matches!(
            roots_from_native(empty),
            Err(TlsError::NoSystemRoots { details }) if details.is_empty()
        ));
    }

    #[test]
    fn a_system_store_of_unparsable_certificates_says_how_many_were_rejected() {
        let mut loaded = rustls_native_certs::CertificateResult::default();
        loaded.certs.push(CertificateDer::from(vec![1, 2, 3]));
        match roots_from_native(loaded) {
            Err(TlsError::NoSystemRoots { details }) => {
                assert!(details.contains("1 certificate(s) rejected"), "{details}");
            }
            other => panic!("expected NoSystemRoots, got {other:?}"),
        }
    }

    #[test]
    fn a_usable_system_root_is_enough() {
        let mut loaded = rustls_native_certs::CertificateResult::default();
        let der = rustls_pemfile::certs(&mut CERT.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        loaded.certs.push(der);
        assert_eq!(roots_from_native(loaded).unwrap().len(), 1);
    }

    #[test]
    fn a_client_certificate_without_a_key_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", CERT)),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::ClientCertWithoutKey { .. }
        ));
    }

    #[test]
    fn a_client_key_without_a_certificate_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            client_key: Some(files.write("client.key", KEY)),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::ClientKeyWithoutCert { .. }
        ));
    }

    #[test]
    fn a_matching_client_certificate_and_key_are_accepted() {
        let files = Files::new();
        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", CERT)),
            client_key: Some(files.write("client.key", KEY)),
            ..files.trusting_fixture()
        };
        let config = client_config(&settings).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_client_key_that_does_not_match_the_certificate_is_rejected() {
        let files = Files::new();
        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", CERT)),
            client_key: Some(files.write("client.key", OTHER_KEY)),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::ClientKeyRejected {
                error: rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch),
                ..
            }
        ));
    }

    #[test]
    fn unreadable_client_files_name_the_file() {
        let files = Files::new();
        let settings = TlsSettings {
            client_cert: Some(files.missing()),
            client_key: Some(files.write("client.key", KEY)),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::ClientCertUnreadable { .. }
        ));

        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", CERT)),
            client_key: Some(files.missing()),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::ClientKeyUnreadable { .. }
        ));
    }

    #[test]
    fn a_client_certificate_file_without_certificates_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", KEY)),
            client_key: Some(files.write("client.key", KEY)),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::NoClientCertificate { .. }
        ));
    }

    #[test]
    fn a_client_key_file_without_a_key_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", CERT)),
            client_key: Some(files.write("client.key", CERT)),
            ..files.trusting_fixture()
        };
        assert!(matches!(err(&settings), TlsError::NoClientKey { .. }));
    }

    #[test]
    fn a_client_key_with_broken_base64_is_malformed() {
        let files = Files::new();
        let broken = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
        let settings = TlsSettings {
            client_cert: Some(files.write("client.pem", CERT)),
            client_key: Some(files.write("client.key", broken)),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::ClientKeyMalformed { .. }
        ));
    }

    #[test]
    fn an_invalid_server_name_override_is_refused() {
        let files = Files::new();
        let settings = TlsSettings {
            server_name: Some("not a host name!".to_owned()),
            ..files.trusting_fixture()
        };
        assert!(matches!(
            err(&settings),
            TlsError::InvalidServerName { name } if name == "not a host name!"
        ));
    }

    #[test]
    fn a_dns_or_ip_server_name_override_is_accepted() {
        let files = Files::new();
        for name in ["fixture.licd.test", "127.0.0.1"] {
            let settings = TlsSettings {
                server_name: Some(name.to_owned()),
                ..files.trusting_fixture()
            };
            client_config(&settings).unwrap();
        }
    }

    #[test]
    fn errors_name_the_file_in_their_message() {
        let files = Files::new();
        let settings = TlsSettings {
            ca_file: Some(files.missing()),
            ..TlsSettings::default()
        };
        let message = err(&settings).to_string();
        assert!(message.contains("does-not-exist.pem"), "{message}");
    }
}
