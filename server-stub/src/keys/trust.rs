//! The controller's side of the trust chain: rotating the signing key (`keys rotate`), revoking
//! signing keys with a root-signed revocation list (`keys revoke`), rotating the root with a
//! statement signed by the old and the new root (`keys rotate-root`), and publishing the signed
//! trust messages retained on `licd/v1/trust/{revocations,roots}` ([`publish_retained`]).
//!
//! Files added to the key directory (next to `root.key`, `signing.key`, `signing.cert`):
//! - `revocations.v1.bin`: the newest signed revocation list (the envelope as published);
//! - `roots.v1.bin`: the newest signed root rotation statement;
//! - `*.retired-<unix time>`: keys and certificates replaced by a rotation, kept (mode 0600)
//!   so that an operator can still name them (`keys revoke`) or inspect them; delete them when
//!   no agent can hold a bundle they signed any more.
//!
//! A running `licd-stub serve` loads its signer at start: restart it after `keys rotate` or
//! `keys rotate-root` so that new bundles are signed by the new key / chain.

use std::fs;
use std::path::Path;
use std::time::Duration;

use licd_protocol::revocation::seal_revocations;
use licd_protocol::rotation::seal_rotation;
use licd_protocol::topic::{TRUST_REVOCATIONS, TRUST_ROOTS};
use licd_protocol::{
    Envelope, KeyId, MessageKind, PublicKey, RevocationList, RootRotation, UnixTime,
};

use super::{
    certify, io, random_key, read_seed, write_secret, KeyError, CERT_FILE,
    DEFAULT_CERT_VALIDITY_SECS, ROOT_FILE, SIGNING_FILE,
};

/// The newest signed revocation list.
pub const REVOCATIONS_FILE: &str = "revocations.v1.bin";
/// The newest signed root rotation statement.
pub const ROOTS_FILE: &str = "roots.v1.bin";

/// What `keys rotate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// The signing key replaced (still valid until its certificate ends, unless revoked).
    pub old: KeyId,
    /// The new signing key.
    pub new: KeyId,
    /// End of the new key's certificate.
    pub not_after: UnixTime,
}

/// What `keys rotate-root` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRotated {
    /// The retired root.
    pub old: PublicKey,
    /// The new root (what new agents pin).
    pub new: PublicKey,
    /// The statement's seq.
    pub seq: u64,
    /// The signed statement (publish it retained on `licd/v1/trust/roots`).
    pub statement: Vec<u8>,
    /// The revocation list re-signed by the new root, if there was one (publish it retained on
    /// `licd/v1/trust/revocations`).
    pub revocations: Option<Vec<u8>>,
}

fn retire(dir: &Path, name: &str, now: UnixTime) -> Result<(), KeyError> {
    let from = dir.join(name);
    let mut to = dir.join(format!("{name}.retired-{now}"));
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{name}.retired-{now}.{n}"));
        n += 1;
    }
    fs::rename(&from, &to).map_err(io(&from))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// `keys rotate`: a new signing key certified by the root (validity one year from an hour
/// ago); the old key and certificate are kept as `*.retired-<now>`. Returns the key ids.
pub fn rotate_signing_key(dir: &Path, now: UnixTime) -> Result<Rotated, KeyError> {
    let old = super::load_signer(dir)?;
    let root = read_seed(&dir.join(ROOT_FILE))?;
    let key = random_key()?;
    let cert = certify(&root, &key, now, DEFAULT_CERT_VALIDITY_SECS);
    retire(dir, SIGNING_FILE, now)?;
    retire(dir, CERT_FILE, now)?;
    write_secret(&dir.join(SIGNING_FILE), key.as_bytes())?;
    write_secret(&dir.join(CERT_FILE), &cert.to_bytes())?;
    Ok(Rotated {
        old: old.certificate().body.subject.id(),
        new: cert.body.subject.id(),
        not_after: cert.body.not_after,
    })
}

/// The revocation list in the key directory (checked against `root`), if any.
pub fn current_revocations(dir: &Path) -> Result<Option<RevocationList>, KeyError> {
    let path = dir.join(REVOCATIONS_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let invalid = |why: String| KeyError::Invalid {
        path: path.clone(),
        why,
    };
    let env = Envelope::parse(&bytes).map_err(|e| invalid(e.to_string()))?;
    env.expect_kind(MessageKind::Revocations)
        .and_then(|()| env.verify_signature())
        .map_err(|e| invalid(e.to_string()))?;
    let list: RevocationList = env.decode().map_err(|e| invalid(e.to_string()))?;
    Ok(Some(list))
}

/// Parses 32 hex digits into a key id.
pub fn parse_key_id(s: &str) -> Option<KeyId> {
    let s = s.trim();
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(KeyId(id))
}

/// `keys revoke KEYID`: a new revocation list (version + 1, the previous ids plus `id`),
/// signed by the root, saved as [`REVOCATIONS_FILE`]. Refuses to revoke the signing key in
/// use (rotate first, or every agent would refuse the next bundle). Returns the envelope.
pub fn revoke(dir: &Path, id: KeyId, now: UnixTime) -> Result<(RevocationList, Vec<u8>), KeyError> {
    let signer = super::load_signer(dir)?;
    if signer.certificate().body.subject.id() == id {
        return Err(KeyError::Invalid {
            path: dir.join(SIGNING_FILE),
            why: format!("{id} is the signing key in use: run `licd-stub keys rotate` first"),
        });
    }
    let root = read_seed(&dir.join(ROOT_FILE))?;
    let previous = current_revocations(dir)?;
    let mut revoked = previous
        .as_ref()
        .map(|l| l.revoked.clone())
        .unwrap_or_default();
    if !revoked.contains(&id) {
        revoked.push(id);
    }
    let list = RevocationList {
        version: previous.map_or(1, |l| l.version + 1),
        issued_at: now,
        revoked,
    };
    let bytes = seal_revocations(&list, &root);
    write_public(&dir.join(REVOCATIONS_FILE), &bytes)?;
    Ok((list, bytes))
}

fn last_rotation_seq(dir: &Path) -> Result<u64, KeyError> {
    let path = dir.join(ROOTS_FILE);
    match fs::read(&path) {
        Ok(bytes) => Envelope::parse(&bytes)
            .and_then(|env| env.decode::<RootRotation>())
            .map(|r| r.seq)
            .map_err(|e| KeyError::Invalid {
                path,
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// `keys rotate-root`: a new root; a statement "old → new" signed by the old root (payload)
/// and the new root (envelope), saved as [`ROOTS_FILE`]; the signing key re-certified by the
/// new root (same key, new `signing.cert`); the revocation list, if any, re-signed by the new
/// root with the next version. The old root key and certificate are kept as `*.retired-<now>`.
pub fn rotate_root(dir: &Path, now: UnixTime) -> Result<RootRotated, KeyError> {
    let signer = super::load_signer(dir)?;
    let old = read_seed(&dir.join(ROOT_FILE))?;
    let new = random_key()?;
    let new_pub = PublicKey::from(&new.verifying_key());
    let seq = last_rotation_seq(dir)? + 1;
    let statement = seal_rotation(&RootRotation::sign(&old, new_pub, seq, now), &new);
    let revocations = current_revocations(dir)?.map(|l| {
        seal_revocations(
            &RevocationList {
                version: l.version + 1,
                issued_at: now,
                revoked: l.revoked,
            },
            &new,
        )
    });
    let signing = read_seed(&dir.join(SIGNING_FILE))?;
    let cert = licd_protocol::SignerCertificate::issue(
        &new,
        PublicKey::from(&signing.verifying_key()),
        now.saturating_sub(super::CERT_BACKDATE_SECS),
        signer
            .certificate()
            .body
            .not_after
            .max(now + DEFAULT_CERT_VALIDITY_SECS),
    );
    retire(dir, ROOT_FILE, now)?;
    retire(dir, CERT_FILE, now)?;
    write_secret(&dir.join(ROOT_FILE), new.as_bytes())?;
    write_secret(&dir.join(CERT_FILE), &cert.to_bytes())?;
    write_public(&dir.join(ROOTS_FILE), &statement)?;
    if let Some(r) = &revocations {
        write_public(&dir.join(REVOCATIONS_FILE), r)?;
    }
    Ok(RootRotated {
        old: PublicKey::from(&old.verifying_key()),
        new: new_pub,
        seq,
        statement,
        revocations,
    })
}

/// The signed trust messages in the key directory, with their topics (roots first), for
/// publishing.
pub fn trust_messages(dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>, KeyError> {
    let mut out = Vec::new();
    for (file, topic) in [
        (ROOTS_FILE, TRUST_ROOTS),
        (REVOCATIONS_FILE, TRUST_REVOCATIONS),
    ] {
        let path = dir.join(file);
        match fs::read(&path) {
            Ok(b) => out.push((topic, b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(out)
}

/// Publishes `messages` retained (QoS 1) to the broker at `url` (`mqtt://host:port` or
/// `mqtts://…`) and waits for every acknowledgement (or `timeout`).
pub async fn publish_retained(
    url: &str,
    messages: Vec<(&'static str, Vec<u8>)>,
    timeout: Duration,
) -> Result<(), crate::StubError> {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let mode = crate::BrokerMode::External {
        url: url.to_string(),
        ca_file: None,
        credentials: None,
    };
    let client_id = format!("licd-stub-keys-{}", std::process::id());
    let opts = crate::session::mqtt_options(&mode, None, &client_id)?;
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let want = messages.len();
    let run = async {
        let mut acked = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for (topic, bytes) in &messages {
                        client
                            .publish(*topic, QoS::AtLeastOnce, true, bytes.clone())
                            .await
                            .map_err(|e| crate::StubError::Config(format!("publish: {e}")))?;
                    }
                    if want == 0 {
                        return Ok(());
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked >= want {
                        let _ = client.disconnect().await;
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(crate::StubError::Config(format!("broker {url}: {e}"))),
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| crate::StubError::ConnectTimeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use licd_protocol::{TrustStore, TrustTopic};

    #[test]
    fn rotate_revoke_and_rotate_root_make_messages_an_agent_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let kd = dir.path().join("keys");
        let root = super::super::init(&kd, 1_700_000_000).unwrap();
        let mut trust = TrustStore::new(vec![root]);
        let r = rotate_signing_key(&kd, 1_700_000_100).unwrap();
        assert_ne!(r.old, r.new);
        assert_eq!(
            super::super::load_signer(&kd)
                .unwrap()
                .certificate()
                .body
                .subject
                .id(),
            r.new
        );
        // Revoking the key in use is refused; the old one is fine.
        assert!(revoke(&kd, r.new, 1_700_000_200).is_err());
        let (list, bytes) = revoke(&kd, r.old, 1_700_000_200).unwrap();
        assert_eq!((list.version, list.revoked.clone()), (1, vec![r.old]));
        trust.accept_revocations(&bytes).unwrap();
        let (list2, _) = revoke(&kd, KeyId([5; 16]), 1_700_000_300).unwrap();
        assert_eq!(list2.version, 2);
        assert_eq!(list2.revoked.len(), 2);

        let rr = rotate_root(&kd, 1_700_000_400).unwrap();
        assert_eq!(rr.old, root);
        assert_eq!(super::super::root_public_key(&kd).unwrap(), rr.new);
        let mut agent = licd_agent_like(root);
        agent.accept_rotation(&rr.statement).unwrap();
        assert_eq!(agent.roots(), &[rr.new]);
        // The signing key now chains to the new root, and the list is re-signed by it (v3).
        let signer = super::super::load_signer(&kd).unwrap();
        assert_eq!(signer.certificate().body.issuer, rr.new);
        let l = agent
            .accept_revocations(rr.revocations.as_ref().unwrap())
            .unwrap();
        assert_eq!(l.version, 3);
        assert_eq!(
            trust_messages(&kd)
                .unwrap()
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
            vec![TrustTopic::Roots.as_str(), TrustTopic::Revocations.as_str()]
        );
        assert_eq!(rotate_root(&kd, 1_700_000_500).unwrap().seq, 2);
    }

    fn licd_agent_like(root: PublicKey) -> TrustStore {
        TrustStore::new(vec![root])
    }
}
