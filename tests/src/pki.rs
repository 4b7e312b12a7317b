//! A throwaway PKI for TLS tests: a CA, a server certificate for `127.0.0.1` and `localhost`,
//! and client certificates signed by the CA, written as PEM files (rcgen, ECDSA P-256).
//!
//! Certificates are valid from 1975 to 4096 (rcgen's defaults), so tests never depend on the
//! clock; expiry tests build their own parameters.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::{HarnessError, Result};

/// Names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// Common name of the default client certificate (mosquitto's `use_identity_as_username`
/// turns it into the MQTT user name).
pub const CLIENT_CN: &str = "licd-test-client";

/// A certificate and its private key as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// A CA with a server and a client certificate, all as PEM files in one directory.
pub struct Pki {
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM): the trust anchor for both sides.
    pub ca_cert: PathBuf,
    /// The server certificate (for [`SERVER_NAMES`]) and key.
    pub server: CertFiles,
    /// A client certificate (CN [`CLIENT_CN`]) and key, for mutual TLS.
    pub client: CertFiles,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca_cert", &self.ca_cert)
            .field("server", &self.server)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates a new PKI in its own temporary directory (removed when the `Pki` is dropped).
    pub fn generate() -> Result<Self> {
        let tempdir = tempfile::Builder::new()
            .prefix("licd-pki-")
            .tempdir()
            .map_err(|e| HarnessError::io("create a temporary PKI directory", e))?;
        let mut pki = Self::generate_in(tempdir.path())?;
        pki._tempdir = Some(tempdir);
        Ok(pki)
    }

    /// Generates a new PKI into `dir` (which must exist): `ca.pem`, `server.pem`,
    /// `server.key`, `client.pem`, `client.key`.
    pub fn generate_in(dir: &Path) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err("CA"))?;
        params.distinguished_name = common_name("licd test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(pki_err("CA key"))?;
        let ca = CertifiedIssuer::self_signed(params, key).map_err(pki_err("CA"))?;
        let ca_cert = write(dir, "ca.pem", &ca.pem())?;

        let mut pki = Self {
            dir: dir.to_path_buf(),
            _tempdir: None,
            ca,
            ca_cert,
            server: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            client: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
        };
        pki.server = pki.issue("server", "licd test broker", &SERVER_NAMES, Role::Server)?;
        pki.client = pki.issue_client("client", CLIENT_CN)?;
        Ok(pki)
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues another client certificate with common name `cn`, as `<file_stem>.pem` and
    /// `<file_stem>.key` in the PKI directory.
    pub fn issue_client(&self, file_stem: &str, cn: &str) -> Result<CertFiles> {
        self.issue(file_stem, cn, &[], Role::Client)
    }

    /// Issues another server certificate valid for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, file_stem: &str, names: &[&str]) -> Result<CertFiles> {
        self.issue(file_stem, "licd test broker", names, Role::Server)
    }

    fn issue(&self, file_stem: &str, cn: &str, names: &[&str], role: Role) -> Result<CertFiles> {
        let what = match role {
            Role::Server => "server certificate",
            Role::Client => "client certificate",
        };
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(pki_err(what))?;
        params.distinguished_name = common_name(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(pki_err(what))?;
        let cert = params.signed_by(&key, &self.ca).map_err(pki_err(what))?;
        Ok(CertFiles {
            cert: write(&self.dir, &format!("{file_stem}.pem"), &cert.pem())?,
            key: write(&self.dir, &format!("{file_stem}.key"), &key.serialize_pem())?,
        })
    }
}

#[derive(Clone, Copy)]
enum Role {
    Server,
    Client,
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn pki_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> HarnessError {
    move |source| HarnessError::Pki { what, source }
}

fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, pem).map_err(|e| HarnessError::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_every_pem_file() {
        let pki = Pki::generate().unwrap();
        for path in [
            &pki.ca_cert,
            &pki.server.cert,
            &pki.server.key,
            &pki.client.cert,
            &pki.client.key,
        ] {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
    }

    #[test]
    fn the_pki_directory_is_removed_on_drop() {
        let pki = Pki::generate().unwrap();
        let dir = pki.dir().to_path_buf();
        drop(pki);
        assert!(!dir.exists());
    }
}
