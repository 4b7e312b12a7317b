//! Licensing by file (`licd request`, `licd import`, `licd release`): the device's memory of
//! the requests it made and of what it gave back, and the import rules.
//!
//! An imported grant goes through exactly the rules of a bundle from MQTT
//! ([`Enforcer::import_bundle`]), plus the file rules of docs/PROTOCOL.md §16.5: a grant
//! answer must answer a **pending** request of this device (its nonce is consumed), and no
//! bundle at or below the **release floor** is taken again. Trust statements are applied as
//! from their MQTT topics. Pure: the shell reads and writes the state file ([`OFFLINE_FILE`],
//! [`OfflineState::load`]/[`OfflineState::save`]) under its lock and carries out the effects.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use licd_protocol::offline::{decode_file, label, open_grant_answer};
use licd_protocol::{Envelope, MessageKind, Nonce, ServiceName, TrustTopic, UnixTime};

use crate::enforce::{Effect, Enforcer, Refusal};
use crate::store::{write_atomic, StoreError};
use crate::trust::{Accepted, TrustState};

/// File name of the offline state in the state directory.
pub const OFFLINE_FILE: &str = "offline.v1";

/// Most requests remembered as pending; a new request past it forgets the oldest (whose answer
/// is then refused as not requested: make a new request).
pub const MAX_PENDING: usize = 16;

/// Largest offline state file read (16 pending lines and 64 services are about 5 KiB).
const MAX_OFFLINE_LEN: u64 = 16 * 1024;

/// Services given back with `licd release` from the bundle of `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Seq of the bundle they were released from: the floor below which (and at which) no
    /// bundle is accepted again.
    pub seq: u64,
    /// The services released.
    pub services: BTreeSet<ServiceName>,
}

/// Why `licd release` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// No bundle is held: there is nothing to give back.
    #[error("no grant is held, so there is nothing to release")]
    NothingHeld,
    /// No service was named.
    #[error("name at least one service to release")]
    NoService,
    /// The held bundle does not grant the service.
    #[error("{service} is not granted by the held bundle (seq {seq}), so it cannot be released")]
    NotGranted {
        /// The service.
        service: ServiceName,
        /// Seq held.
        seq: u64,
    },
    /// The service was released from the held bundle already.
    #[error("{service} was already released from the held bundle (seq {seq})")]
    AlreadyReleased {
        /// The service.
        service: ServiceName,
        /// Seq held.
        seq: u64,
    },
}

impl ReleaseError {
    /// A stable short code.
    pub fn code(&self) -> &'static str {
        match self {
            ReleaseError::NothingHeld => "nothing_held",
            ReleaseError::NoService => "no_service",
            ReleaseError::NotGranted { .. } => "not_granted",
            ReleaseError::AlreadyReleased { .. } => "already_released",
        }
    }
}

/// What the device remembers about files: the requests it is waiting for answers to, and the
/// last release.
///
/// On disk ([`OFFLINE_FILE`]), text, one fact a line:
/// `pending <32 hex digits>` (oldest first) and `released <seq> <service> …`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineState {
    /// Nonces of requests not answered yet, oldest first, at most [`MAX_PENDING`].
    pub pending: Vec<Nonce>,
    /// The last release, if any.
    pub release: Option<Release>,
}

fn hex16(s: &str) -> Option<Nonce> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl OfflineState {
    /// Remembers a new request's nonce, forgetting the oldest past [`MAX_PENDING`].
    pub fn add_pending(&mut self, nonce: Nonce) {
        self.pending.push(nonce);
        if self.pending.len() > MAX_PENDING {
            let extra = self.pending.len() - MAX_PENDING;
            self.pending.drain(..extra);
        }
    }

    /// The text of [`OFFLINE_FILE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for n in &self.pending {
            out.push_str("pending ");
            for b in n {
                out.push_str(&format!("{b:02x}"));
            }
            out.push('\n');
        }
        if let Some(r) = &self.release {
            out.push_str(&format!("released {}", r.seq));
            for s in &r.services {
                out.push(' ');
                out.push_str(s.as_str());
            }
            out.push('\n');
        }
        out
    }

    /// Parses [`OfflineState::encode`]'s text; the error says what is wrong.
    pub fn decode(text: &str) -> Result<Self, String> {
        let mut state = Self::default();
        for (i, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("line {}: {why}", i + 1);
            let mut words = line.split(' ');
            match words.next() {
                Some("pending") => {
                    let nonce = words
                        .next()
                        .and_then(hex16)
                        .ok_or_else(|| bad("expected 32 hex digits after \"pending\""))?;
                    if words.next().is_some() {
                        return Err(bad("text after the nonce"));
                    }
                    state.add_pending(nonce);
                }
                Some("released") if state.release.is_none() => {
                    let seq = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| bad("expected a seq after \"released\""))?;
                    let services = words
                        .map(|w| ServiceName::new(w).map_err(|e| bad(&e.to_string())))
                        .collect::<Result<BTreeSet<_>, _>>()?;
                    if services.is_empty() {
                        return Err(bad("a release names no service"));
                    }
                    state.release = Some(Release { seq, services });
                }
                Some("released") => return Err(bad("a second \"released\" line")),
                _ => return Err(bad("expected \"pending\" or \"released\"")),
            }
        }
        Ok(state)
    }

    /// Path of the file in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(OFFLINE_FILE)
    }

    /// The state in `state_dir` (empty when the file is missing).
    pub fn load(state_dir: &Path) -> Result<Self, StoreError> {
        let path = Self::path_in(state_dir);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(error) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    error,
                })
            }
        };
        let mut text = String::new();
        file.take(MAX_OFFLINE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|error| StoreError::Io {
                op: "read",
                path: path.clone(),
                error,
            })?;
        if text.len() as u64 > MAX_OFFLINE_LEN {
            return Err(StoreError::Corrupt {
                path,
                why: format!("larger than {MAX_OFFLINE_LEN} bytes"),
            });
        }
        Self::decode(&text).map_err(|why| StoreError::Corrupt { path, why })
    }

    /// Writes the state atomically (the same write as the cache).
    pub fn save(&self, state_dir: &Path) -> Result<(), StoreError> {
        write_atomic(&Self::path_in(state_dir), self.encode().as_bytes(), 0o600)
    }
}

/// Why a file was not imported. Nothing changed after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportRefusal {
    /// The file is not a usable envelope, or a grant answer's signature or chain fails.
    #[error("{0}")]
    File(licd_protocol::Error),
    /// A file of a kind `licd import` does not take (a request, a receipt, a report…).
    #[error(
        "this is a {label} file ({kind:?}); licd import takes grant files and trust statements"
    )]
    NotImportable {
        /// Its kind.
        kind: MessageKind,
        /// Its label.
        label: &'static str,
    },
    /// A grant answer to a request this device has no record of (never made here, already
    /// answered, or forgotten past the 16 most recent).
    #[error("this grant answers a request this device did not make or already imported (make a new request with licd request)")]
    NotRequested,
    /// The bundle is not newer than the one whose services were released.
    #[error("grant seq {seq} is not newer than seq {released}, whose licenses were released")]
    Released {
        /// The file's seq.
        seq: u64,
        /// The release floor.
        released: u64,
    },
    /// The bundle's acceptance rules refused it (the same rules as from MQTT).
    #[error("{0}")]
    Bundle(Refusal),
    /// A trust statement the trust rules refused.
    #[error("trust statement refused: {0}")]
    Trust(licd_protocol::Error),
    /// The trust statement is the one in force already.
    #[error("this trust statement is already in force")]
    TrustAlreadyHeld,
}

impl ImportRefusal {
    /// A stable short code for output and counters.
    pub fn code(&self) -> &'static str {
        match self {
            ImportRefusal::File(e) | ImportRefusal::Trust(e) => {
                if matches!(e, licd_protocol::Error::Armor(_)) {
                    "bad_armor"
                } else {
                    Refusal::Protocol(e.clone()).code()
                }
            }
            ImportRefusal::NotImportable { .. } => "not_importable",
            ImportRefusal::NotRequested => "not_requested",
            ImportRefusal::Released { .. } => "released",
            ImportRefusal::Bundle(r) => r.code(),
            ImportRefusal::TrustAlreadyHeld => "already_held",
        }
    }

    /// Whether the file itself is unusable (damaged, truncated, not a licd file, the wrong
    /// kind) rather than a good file the rules refuse: `licd import` exits 2 for these.
    pub fn is_unusable_file(&self) -> bool {
        use licd_protocol::Error as E;
        let unusable = |e: &E| {
            matches!(
                e,
                E::Oversized { .. }
                    | E::Truncated(_)
                    | E::BadVersion { .. }
                    | E::UnknownKind(_)
                    | E::WrongKind { .. }
                    | E::Decode(_)
                    | E::Invalid(_)
                    | E::Id(_)
                    | E::Armor(_)
            )
        };
        match self {
            ImportRefusal::File(e) | ImportRefusal::Trust(e) => unusable(e),
            ImportRefusal::Bundle(Refusal::Protocol(e)) => unusable(e),
            ImportRefusal::NotImportable { .. } => true,
            _ => false,
        }
    }
}

/// What an import put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A grant bundle.
    Bundle {
        /// Its seq.
        seq: u64,
        /// It answered one of this device's pending requests.
        answered_request: bool,
    },
    /// A trust statement.
    Trust(Accepted),
}

/// An accepted import: what it was and what the shell must carry out.
#[derive(Debug)]
pub struct ImportOutcome {
    /// What was put in force.
    pub imported: Imported,
    /// The enforcer's effects (persist the bundle, state changes…).
    pub effects: Vec<Effect>,
    /// The trust state changed: persist it.
    pub trust_changed: bool,
    /// The offline state changed (a pending request was answered): persist it.
    pub offline_changed: bool,
}

/// Imports one file (binary or armored) at trusted time `now`: a grant file through the
/// bundle rules and the file rules, a trust statement through the trust rules. On refusal
/// nothing changed.
pub fn import(
    file: &[u8],
    enforcer: &mut Enforcer,
    trust: &mut TrustState,
    offline: &mut OfflineState,
    now: UnixTime,
) -> Result<ImportOutcome, ImportRefusal> {
    let raw = decode_file(file).map_err(ImportRefusal::File)?;
    let env = Envelope::parse(&raw).map_err(ImportRefusal::File)?;
    let (bundle, answers) = match env.kind {
        MessageKind::Grants | MessageKind::PolicyBundle => (raw.to_vec(), None),
        MessageKind::GrantAnswer => {
            let (answer, _) =
                open_grant_answer(&raw, enforcer.trust(), now).map_err(ImportRefusal::File)?;
            if !offline.pending.contains(&answer.request_nonce) {
                return Err(ImportRefusal::NotRequested);
            }
            (answer.bundle, Some(answer.request_nonce))
        }
        MessageKind::Revocations | MessageKind::RootRotation => {
            let topic = if env.kind == MessageKind::Revocations {
                TrustTopic::Revocations
            } else {
                TrustTopic::Roots
            };
            let accepted = trust.handle(topic, &raw).map_err(ImportRefusal::Trust)?;
            if accepted == Accepted::AlreadyHeld {
                return Err(ImportRefusal::TrustAlreadyHeld);
            }
            let effects = enforcer.set_trust(trust.store().clone(), now);
            return Ok(ImportOutcome {
                imported: Imported::Trust(accepted),
                effects,
                trust_changed: true,
                offline_changed: false,
            });
        }
        kind => {
            return Err(ImportRefusal::NotImportable {
                kind,
                label: label(kind),
            })
        }
    };
    let effects = enforcer.import_bundle(&bundle, now).map_err(|r| match r {
        Refusal::Stale { seq, .. } => match &offline.release {
            Some(rel) if seq <= rel.seq => ImportRefusal::Released {
                seq,
                released: rel.seq,
            },
            _ => ImportRefusal::Bundle(r),
        },
        r => ImportRefusal::Bundle(r),
    })?;
    let seq = enforcer.held_seq();
    if let Some(nonce) = answers {
        offline.pending.retain(|n| *n != nonce);
    }
    Ok(ImportOutcome {
        imported: Imported::Bundle {
            seq,
            answered_request: answers.is_some(),
        },
        effects,
        trust_changed: false,
        offline_changed: answers.is_some(),
    })
}

#[cfg(test)]
mod tests;
