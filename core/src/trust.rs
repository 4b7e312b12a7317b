//! The agent's trust state: the roots it pins and the signing keys it refuses, moved forward by
//! the signed trust messages it receives on `licd/v1/trust/{roots,revocations}` — root
//! rotation statements (signed by the old and the new root) and root-signed revocation lists.
//!
//! [`TrustState`] is pure: [`TrustState::handle`] takes the received bytes and says whether the
//! trust changed; the daemon then writes [`TrustState::encode`] to [`TRUST_FILE`] (atomically)
//! and hands [`TrustState::store`] to the enforcer, which re-checks the bundle it holds.
//!
//! The file is a versioned postcard record ([`TrustFile`], `trust.v2.bin`). The first layout,
//! `trust.v1.bin` (a magic line, then kind byte, u32 length and envelope per record), is still
//! read when no v2 file is there — an upgraded device keeps its trust — and still written beside
//! the v2 file for one release, so rolling the agent back by one version keeps it too
//! (docs/OPERATIONS.md §8).
//!
//! Rules:
//! - the pinned roots start as the config's `roots` and follow every accepted rotation: a
//!   config root that was rotated away is **not** trusted any more (it is kept only as
//!   *retired*, for the cache rule of [`licd_protocol::TrustStore::authorize_as_issued`]);
//! - a revocation list is accepted only with a higher `version` than the one held;
//! - the state file holds the accepted messages themselves, in the order they were accepted
//!   (every rotation, then the newest revocation list where it was accepted). The disk is not
//!   trusted: at start each record goes through the same checks again, starting from the
//!   config roots; a record that fails is dropped (and logged), which can only lose trust,
//!   never add it;
//! - a revocation list refused only because its root is not pinned *yet* (it arrived before
//!   the rotation that pins that root — two retained topics have no delivery order) is kept
//!   aside and retried after the next accepted rotation.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::{Error, MessageKind, PublicKey, TrustStore, TrustTopic};

use serde::{Deserialize, Serialize};

use crate::store::{write_atomic, StoreError};

/// File name of the trust state in the state directory.
pub const TRUST_FILE: &str = "trust.v2.bin";

/// File name of the first layout, read when [`TRUST_FILE`] is missing and written beside it
/// for one release (rollback).
pub const TRUST_FILE_V1: &str = "trust.v1.bin";

/// First bytes of [`TRUST_FILE_V1`].
const MAGIC: &[u8] = b"licd trust v1\n";

/// The version [`TrustFile::version`] says.
const FILE_VERSION: u32 = 2;

/// The contents of [`TRUST_FILE`], postcard-encoded.
#[derive(Debug, Serialize, Deserialize)]
struct TrustFile {
    /// [`FILE_VERSION`]; a file naming another version is refused as not understood.
    version: u32,
    /// The accepted messages, in the order they were accepted.
    records: Vec<FileRecord>,
}

/// One record of a [`TrustFile`].
#[derive(Debug, Serialize, Deserialize)]
struct FileRecord {
    /// [`MessageKind::to_byte`] of a revocation list or a root rotation.
    kind: u8,
    /// The envelope, exactly as received.
    raw: Vec<u8>,
}

/// Most records kept: every rotation ever accepted plus one revocation list. Root rotations are
/// rare (years apart); past this the file is refused as corrupt rather than read without bound.
pub const MAX_RECORDS: usize = 64;

/// One accepted trust message, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    kind: MessageKind,
    raw: Vec<u8>,
}

/// What a trust message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The very message already in force (a retained message delivered again): nothing to do.
    AlreadyHeld,
    /// A newer revocation list is in force.
    Revocations {
        /// Its version.
        version: u64,
        /// How many signing keys it revokes.
        revoked: usize,
    },
    /// A root rotation was applied (and, when `revocations` is set, a revocation list that had
    /// been waiting for that root too).
    Rotation {
        /// The rotation's seq.
        seq: u64,
        /// The retired root.
        previous: PublicKey,
        /// The root now pinned.
        next: PublicKey,
        /// Version of a waiting revocation list accepted after the rotation.
        revocations: Option<u64>,
    },
}

/// A record of the state file dropped at load, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The record's kind.
    pub kind: MessageKind,
    /// Why it no longer verifies.
    pub error: Error,
}

/// Roots and revocations in force, and the accepted messages that put them there.
#[derive(Debug, Clone)]
pub struct TrustState {
    store: TrustStore,
    records: Vec<Record>,
    pending_revocations: Option<Vec<u8>>,
}

impl TrustState {
    /// The trust of a fresh agent: the config roots, nothing revoked.
    pub fn new(config_roots: Vec<PublicKey>) -> Self {
        Self {
            store: TrustStore::new(config_roots),
            records: Vec::new(),
            pending_revocations: None,
        }
    }

    /// Rebuilds the state from the config roots and a [`TRUST_FILE`]'s contents, replaying
    /// every record through the same checks as a live message. Records that fail are dropped
    /// and returned; a file that is not a trust file at all is an error (the caller sets it
    /// aside and starts from the config roots).
    pub fn decode(
        config_roots: Vec<PublicKey>,
        bytes: &[u8],
    ) -> Result<(Self, Vec<Dropped>), &'static str> {
        Self::replay(config_roots, parse_file(bytes)?)
    }

    /// [`TrustState::decode`] for the first layout ([`TRUST_FILE_V1`]).
    pub fn decode_v1(
        config_roots: Vec<PublicKey>,
        bytes: &[u8],
    ) -> Result<(Self, Vec<Dropped>), &'static str> {
        Self::replay(config_roots, parse_file_v1(bytes)?)
    }

    fn replay(
        config_roots: Vec<PublicKey>,
        records: Vec<Record>,
    ) -> Result<(Self, Vec<Dropped>), &'static str> {
        let mut state = Self::new(config_roots);
        let mut dropped = Vec::new();
        for r in records {
            let result = match r.kind {
                MessageKind::Revocations => state.accept_revocations(&r.raw).map(|_| ()),
                MessageKind::RootRotation => state.accept_rotation(&r.raw).map(|_| ()),
                // parse_file keeps only the two trust kinds.
                _ => Err(Error::Invalid("not a trust message")),
            };
            if let Err(error) = result {
                dropped.push(Dropped {
                    kind: r.kind,
                    error,
                });
            }
        }
        state.pending_revocations = None;
        Ok((state, dropped))
    }

    /// The [`TRUST_FILE`] contents: a postcard [`TrustFile`].
    pub fn encode(&self) -> Vec<u8> {
        let file = TrustFile {
            version: FILE_VERSION,
            records: self
                .records
                .iter()
                .map(|r| FileRecord {
                    kind: r.kind.to_byte(),
                    raw: r.raw.clone(),
                })
                .collect(),
        };
        // Serializing plain integers and byte strings into a Vec cannot fail.
        postcard::to_stdvec(&file).unwrap_or_default()
    }

    /// The [`TRUST_FILE_V1`] contents: [`MAGIC`], then per record its kind byte, its length
    /// (u32 BE) and the envelope exactly as received.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in &self.records {
            out.push(r.kind.to_byte());
            // Envelopes are at most 64 KiB (checked when they were accepted).
            out.extend_from_slice(&(r.raw.len() as u32).to_be_bytes());
            out.extend_from_slice(&r.raw);
        }
        out
    }

    /// The trust store in force (roots, retired roots, revocations).
    pub fn store(&self) -> &TrustStore {
        &self.store
    }

    /// Handles a message received on a trust topic. `Err`: refused, nothing changed.
    ///
    /// The message in force of each kind (the newest rotation, the revocation list), delivered
    /// again byte for byte, is [`Accepted::AlreadyHeld`]: the broker redelivers the retained
    /// message on every connect. An earlier rotation that was applied and superseded is a
    /// replay and is refused with [`Error::RotationRollback`] (docs/PROTOCOL.md §10.1), as any
    /// statement with a seq not above the last one applied.
    pub fn handle(&mut self, topic: TrustTopic, bytes: &[u8]) -> Result<Accepted, Error> {
        let in_force = |kind| self.records.iter().rev().find(|r| r.kind == kind);
        if [MessageKind::RootRotation, MessageKind::Revocations]
            .into_iter()
            .any(|kind| in_force(kind).is_some_and(|r| r.raw == bytes))
        {
            return Ok(Accepted::AlreadyHeld);
        }
        if self.records.iter().any(|r| r.raw == bytes) {
            // Only rotations are kept once superseded. Every record decoded when it was
            // accepted; 0 would still be a rollback.
            let seq = licd_protocol::Envelope::parse(bytes)
                .and_then(|env| env.decode::<licd_protocol::RootRotation>())
                .map_or(0, |r| r.seq);
            return Err(Error::RotationRollback {
                seq,
                current: self.store.rotation_seq(),
            });
        }
        match topic {
            TrustTopic::Revocations => match self.accept_revocations(bytes) {
                Err(e @ Error::NotSignedByRoot(_)) => {
                    // Perhaps signed by a root whose rotation statement has not arrived yet.
                    self.pending_revocations = Some(bytes.to_vec());
                    Err(e)
                }
                other => other,
            },
            TrustTopic::Roots => {
                let accepted = self.accept_rotation(bytes)?;
                let Accepted::Rotation {
                    seq,
                    previous,
                    next,
                    ..
                } = accepted
                else {
                    return Ok(accepted);
                };
                let revocations = self.pending_revocations.take().and_then(|raw| {
                    match self.accept_revocations(&raw) {
                        Ok(Accepted::Revocations { version, .. }) => Some(version),
                        _ => None,
                    }
                });
                Ok(Accepted::Rotation {
                    seq,
                    previous,
                    next,
                    revocations,
                })
            }
            _ => Err(Error::BadTopic("unknown trust topic")),
        }
    }

    fn accept_revocations(&mut self, bytes: &[u8]) -> Result<Accepted, Error> {
        let list = self.store.accept_revocations(bytes)?;
        let accepted = Accepted::Revocations {
            version: list.version,
            revoked: list.revoked.len(),
        };
        self.records.retain(|r| r.kind != MessageKind::Revocations);
        self.records.push(Record {
            kind: MessageKind::Revocations,
            raw: bytes.to_vec(),
        });
        Ok(accepted)
    }

    fn accept_rotation(&mut self, bytes: &[u8]) -> Result<Accepted, Error> {
        if self.records.len() >= MAX_RECORDS {
            return Err(Error::Invalid("too many root rotations held"));
        }
        let r = self.store.accept_rotation(bytes)?;
        self.records.push(Record {
            kind: MessageKind::RootRotation,
            raw: bytes.to_vec(),
        });
        Ok(Accepted::Rotation {
            seq: r.seq,
            previous: r.previous,
            next: r.next,
            revocations: None,
        })
    }
}

/// A record's kind, if it is one of the two a trust file holds.
fn record_kind(byte: u8) -> Result<MessageKind, &'static str> {
    match MessageKind::from_byte(byte) {
        Ok(k @ (MessageKind::Revocations | MessageKind::RootRotation)) => Ok(k),
        _ => Err("unknown record kind"),
    }
}

fn parse_file(bytes: &[u8]) -> Result<Vec<Record>, &'static str> {
    let file: TrustFile = postcard::from_bytes(bytes).map_err(|_| "not a licd trust file")?;
    if file.version != FILE_VERSION {
        return Err("a trust file version this agent does not know");
    }
    if file.records.len() > MAX_RECORDS {
        return Err("too many records");
    }
    file.records
        .into_iter()
        .map(|r| {
            if r.raw.len() > MAX_ENVELOPE_LEN {
                return Err("record over the envelope limit");
            }
            Ok(Record {
                kind: record_kind(r.kind)?,
                raw: r.raw,
            })
        })
        .collect()
}

fn parse_file_v1(bytes: &[u8]) -> Result<Vec<Record>, &'static str> {
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a licd trust file (bad magic)")?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        if records.len() >= MAX_RECORDS {
            return Err("too many records");
        }
        let (&kind, tail) = rest.split_first().ok_or("truncated record")?;
        let kind = record_kind(kind)?;
        let (len, tail) = tail.split_at_checked(4).ok_or("truncated record length")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_ENVELOPE_LEN {
            return Err("record over the envelope limit");
        }
        let (raw, tail) = tail.split_at_checked(len).ok_or("truncated record")?;
        records.push(Record {
            kind,
            raw: raw.to_vec(),
        });
        rest = tail;
    }
    Ok(records)
}

/// Path of the trust file in `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(TRUST_FILE)
}

/// Path of the first layout's trust file in `state_dir`.
pub fn v1_path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(TRUST_FILE_V1)
}

/// Largest trust file read, either layout: every record at the envelope limit (a postcard
/// length prefix is at most 5 bytes, as the v1 kind and length are).
const MAX_FILE_LEN: usize = MAGIC.len() + 8 + MAX_RECORDS * (10 + MAX_ENVELOPE_LEN);

/// Loads the trust state from `state_dir` (the config roots when there is no file): from
/// [`TRUST_FILE`], or from [`TRUST_FILE_V1`] when a device upgraded from an agent that wrote
/// only that. Returns the state, the records dropped, and — when the file is unreadable or not
/// a trust file — why; the caller logs it and may set the file aside.
pub fn load(
    state_dir: &Path,
    config_roots: Vec<PublicKey>,
) -> (TrustState, Vec<Dropped>, Option<String>) {
    let mut path = path_in(state_dir);
    let mut decode: fn(_, &[u8]) -> _ = TrustState::decode;
    if !path.exists() && v1_path_in(state_dir).exists() {
        path = v1_path_in(state_dir);
        decode = TrustState::decode_v1;
    }
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return (TrustState::new(config_roots), Vec::new(), None)
        }
        Err(e) => {
            return (
                TrustState::new(config_roots),
                Vec::new(),
                Some(format!("read {}: {e}", path.display())),
            )
        }
    };
    if bytes.len() > MAX_FILE_LEN {
        return (
            TrustState::new(config_roots),
            Vec::new(),
            Some(format!("{} is larger than any trust file", path.display())),
        );
    }
    match decode(config_roots.clone(), &bytes) {
        Ok((state, dropped)) => (state, dropped, None),
        Err(why) => (
            TrustState::new(config_roots),
            Vec::new(),
            Some(format!("{} is corrupt: {why}", path.display())),
        ),
    }
}

/// Writes the trust state atomically (temp file, fsync, rename, fsync of the directory):
/// [`TRUST_FILE`], then [`TRUST_FILE_V1`] for an agent rolled back by one version. A power cut
/// between the two leaves the newer state in the file this agent reads.
pub fn save(state_dir: &Path, state: &TrustState) -> Result<(), StoreError> {
    write_atomic(&path_in(state_dir), &state.encode(), 0o600)?;
    write_atomic(&v1_path_in(state_dir), &state.encode_v1(), 0o600)
}

/// Writes [`TRUST_FILE`] once for a state that was loaded from [`TRUST_FILE_V1`] (an upgraded
/// device), so later starts read the v2 file. Returns whether it wrote.
pub fn migrate(state_dir: &Path, state: &TrustState) -> Result<bool, StoreError> {
    if path_in(state_dir).exists() || !v1_path_in(state_dir).exists() {
        return Ok(false);
    }
    write_atomic(&path_in(state_dir), &state.encode(), 0o600)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use licd_protocol::revocation::seal_revocations;
    use licd_protocol::rotation::seal_rotation;
    use licd_protocol::{KeyId, RevocationList, RootRotation};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }
    fn public(k: &SigningKey) -> PublicKey {
        PublicKey::from(&k.verifying_key())
    }
    fn list(version: u64, revoked: Vec<KeyId>, root: &SigningKey) -> Vec<u8> {
        seal_revocations(
            &RevocationList {
                version,
                issued_at: 10,
                revoked,
            },
            root,
        )
    }
    fn rotation(old: &SigningKey, new: &SigningKey, seq: u64) -> Vec<u8> {
        seal_rotation(&RootRotation::sign(old, public(new), seq, 100), new)
    }

    #[test]
    fn accepted_messages_survive_a_reload_and_are_checked_again() {
        let (a, b) = (key(1), key(2));
        let revoked = KeyId([9; 16]);
        let mut s = TrustState::new(vec![public(&a)]);
        assert!(matches!(
            s.handle(TrustTopic::Revocations, &list(1, vec![revoked], &a)),
            Ok(Accepted::Revocations { version: 1, .. })
        ));
        assert!(matches!(
            s.handle(TrustTopic::Roots, &rotation(&a, &b, 1)),
            Ok(Accepted::Rotation { seq: 1, .. })
        ));
        s.handle(TrustTopic::Revocations, &list(2, vec![revoked], &b))
            .unwrap();
        let (back, dropped) = TrustState::decode(vec![public(&a)], &s.encode()).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(back.store(), s.store());
        assert_eq!(back.store().roots(), &[public(&b)]);
        assert!(back.store().is_revoked(&revoked));
        // Redelivery of what is held is quiet; an older list is a rollback.
        let mut back = back;
        assert_eq!(
            back.handle(TrustTopic::Roots, &rotation(&a, &b, 1)),
            Ok(Accepted::AlreadyHeld)
        );
        assert_eq!(
            back.handle(TrustTopic::Revocations, &list(2, vec![revoked], &b)),
            Ok(Accepted::AlreadyHeld)
        );
        assert_eq!(
            back.handle(TrustTopic::Revocations, &list(1, vec![], &b)),
            Err(Error::RevocationRollback {
                version: 1,
                current: 2
            })
        );
    }

    #[test]
    fn a_replayed_superseded_rotation_is_refused_as_a_rollback() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut s = TrustState::new(vec![public(&a)]);
        let first = rotation(&a, &b, 1);
        let second = rotation(&b, &c, 2);
        s.handle(TrustTopic::Roots, &first).unwrap();
        s.handle(TrustTopic::Roots, &second).unwrap();
        assert_eq!(
            s.handle(TrustTopic::Roots, &first),
            Err(Error::RotationRollback { seq: 1, current: 2 })
        );
        // The statement in force is the retained one, redelivered on every connect.
        assert_eq!(
            s.handle(TrustTopic::Roots, &second),
            Ok(Accepted::AlreadyHeld)
        );
        assert_eq!(s.store().roots(), &[public(&c)]);
    }

    #[test]
    fn a_tampered_record_is_dropped_at_load_and_never_adds_trust() {
        let (a, b) = (key(1), key(2));
        let mut s = TrustState::new(vec![public(&a)]);
        s.handle(TrustTopic::Roots, &rotation(&a, &b, 1)).unwrap();
        let mut bytes = s.encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let (back, dropped) = TrustState::decode(vec![public(&a)], &bytes).unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].error, Error::BadSignature);
        assert_eq!(back.store().roots(), &[public(&a)]);
        assert!(TrustState::decode(vec![], b"garbage").is_err());
        assert!(TrustState::decode(vec![], &[MAGIC, &[3, 0, 0]].concat()).is_err());
        assert!(TrustState::decode_v1(vec![], &[MAGIC, &[3, 0, 0]].concat()).is_err());
    }

    #[test]
    fn a_list_from_a_root_not_pinned_yet_is_applied_after_its_rotation() {
        let (a, b) = (key(1), key(2));
        let mut s = TrustState::new(vec![public(&a)]);
        let early = list(5, vec![KeyId([7; 16])], &b);
        assert_eq!(
            s.handle(TrustTopic::Revocations, &early),
            Err(Error::NotSignedByRoot(public(&b).id()))
        );
        assert_eq!(
            s.handle(TrustTopic::Roots, &rotation(&a, &b, 1)),
            Ok(Accepted::Rotation {
                seq: 1,
                previous: public(&a),
                next: public(&b),
                revocations: Some(5)
            })
        );
        assert!(s.store().is_revoked(&KeyId([7; 16])));
    }

    /// A state with a rotation and a revocation list from the new root.
    fn rotated() -> (SigningKey, TrustState) {
        let (a, b) = (key(1), key(2));
        let mut s = TrustState::new(vec![public(&a)]);
        s.handle(TrustTopic::Roots, &rotation(&a, &b, 1)).unwrap();
        s.handle(TrustTopic::Revocations, &list(3, vec![KeyId([9; 16])], &b))
            .unwrap();
        (a, s)
    }

    #[test]
    fn an_upgraded_device_reads_its_v1_trust_file_and_migrates_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, s) = rotated();
        // What the previous agent left: the v1 layout only.
        fs::write(v1_path_in(dir.path()), s.encode_v1()).unwrap();
        let (back, dropped, problem) = load(dir.path(), vec![public(&a)]);
        assert!(dropped.is_empty() && problem.is_none(), "{problem:?}");
        assert_eq!(back.store(), s.store());
        assert!(migrate(dir.path(), &back).unwrap());
        assert!(!migrate(dir.path(), &back).unwrap(), "once");
        // From now on the v2 file is what is read: a damaged v1 file changes nothing.
        fs::write(v1_path_in(dir.path()), b"junk").unwrap();
        let (again, dropped, problem) = load(dir.path(), vec![public(&a)]);
        assert!(dropped.is_empty() && problem.is_none(), "{problem:?}");
        assert_eq!(again.store(), s.store());
        assert!(again.store().is_revoked(&KeyId([9; 16])));
    }

    #[test]
    fn save_writes_the_postcard_record_and_the_v1_file_for_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let (a, s) = rotated();
        save(dir.path(), &s).unwrap();
        let v2 = fs::read(path_in(dir.path())).unwrap();
        let v1 = fs::read(v1_path_in(dir.path())).unwrap();
        assert!(v1.starts_with(MAGIC));
        let file: TrustFile = postcard::from_bytes(&v2).unwrap();
        assert_eq!(file.version, FILE_VERSION);
        assert_eq!(file.records.len(), 2);
        let (from_v2, _) = TrustState::decode(vec![public(&a)], &v2).unwrap();
        let (from_v1, _) = TrustState::decode_v1(vec![public(&a)], &v1).unwrap();
        assert_eq!(from_v2.store(), s.store());
        assert_eq!(from_v1.store(), s.store());
        // Each reader refuses the other's layout rather than misread it.
        assert!(TrustState::decode(vec![public(&a)], &v1).is_err());
        assert!(TrustState::decode_v1(vec![public(&a)], &v2).is_err());
    }

    #[test]
    fn a_trust_file_of_another_version_or_past_the_limits_is_refused() {
        let encode = |version, records: Vec<FileRecord>| {
            postcard::to_stdvec(&TrustFile { version, records }).unwrap()
        };
        let rotation_kind = MessageKind::RootRotation.to_byte();
        assert_eq!(
            TrustState::decode(vec![], &encode(3, vec![])).err(),
            Some("a trust file version this agent does not know")
        );
        let big = FileRecord {
            kind: rotation_kind,
            raw: vec![0; MAX_ENVELOPE_LEN + 1],
        };
        assert_eq!(
            TrustState::decode(vec![], &encode(FILE_VERSION, vec![big])).err(),
            Some("record over the envelope limit")
        );
        let many = (0..=MAX_RECORDS)
            .map(|_| FileRecord {
                kind: rotation_kind,
                raw: vec![1],
            })
            .collect();
        assert_eq!(
            TrustState::decode(vec![], &encode(FILE_VERSION, many)).err(),
            Some("too many records")
        );
        let bundle = FileRecord {
            kind: MessageKind::Grants.to_byte(),
            raw: vec![1],
        };
        assert_eq!(
            TrustState::decode(vec![], &encode(FILE_VERSION, vec![bundle])).err(),
            Some("unknown record kind")
        );
        // A truncated file.
        let (_, s) = rotated();
        let bytes = s.encode();
        assert!(TrustState::decode(vec![], &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn save_then_load_from_a_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(1), key(2));
        let mut s = TrustState::new(vec![public(&a)]);
        s.handle(TrustTopic::Roots, &rotation(&a, &b, 1)).unwrap();
        save(dir.path(), &s).unwrap();
        let (back, dropped, problem) = load(dir.path(), vec![public(&a)]);
        assert!(dropped.is_empty() && problem.is_none());
        assert_eq!(back.store().roots(), &[public(&b)]);
        fs::write(path_in(dir.path()), b"junk").unwrap();
        let (back, _, problem) = load(dir.path(), vec![public(&a)]);
        assert!(problem.is_some());
        assert_eq!(back.store().roots(), &[public(&a)]);
    }
}
