//! The controller core, without the network: verify a report received on a topic, apply it to
//! the engine, store the changes in the ledger, and seal the resulting bundles into
//! [`Publication`]s for the MQTT session to send. Operator operations go through
//! [`Controller::apply`] so they follow the same order: engine, ledger, then signatures.
//!
//! Replicas (several controllers on one PostgreSQL ledger): every operation is a *turn* —
//! the ledger's turn lock is taken, and if the ledger's generation moved since this
//! controller last saw it (another replica wrote), the engine catches up from the ledger
//! first (the devices the change log names when only devices changed, else everything);
//! then the engine decides, the changes and the next generation are committed, and only
//! then are bundles sealed and published. Report signatures are checked before the turn. Seat allocation is therefore serial across
//! replicas (assigned ≤ limit under any interleaving), and each device's `seq` comes from
//! the newest committed state (never reused, never lower). On SQLite a turn is just the
//! save, as before.

use licd_protocol::envelope::{open_report, Envelope};
use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::policy::{open_extended_report, seal_policy_bundle, ExtendedReport};
use licd_protocol::MessageKind;
use licd_protocol::{DeviceReport, GrantBundle, Topic, TopicKind, UnixTime};

use crate::engine::{Effects, Engine, EngineError, LeasePolicy, ReportRefused};
use crate::keys::Signer;
use crate::ledger::{Ledger, LedgerError};

pub mod delegation;
pub mod offline;

/// A sealed bundle to publish, QoS 1 and retained, on its device's grants topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// `licd/v1/{tenant}/{device}/grants`.
    pub topic: String,
    /// The signed envelope.
    pub payload: Vec<u8>,
    /// The bundle's `seq` (for logs).
    pub seq: u64,
}

/// A report whose size, topic, envelope and signature were checked ([`Opener::open`]), to be
/// applied by [`Controller::apply_opened`].
#[derive(Debug)]
pub struct Opened {
    report: DeviceReport,
    /// The extended report (issue 20) it came in, if it was one.
    extended: Option<ExtendedReport>,
}

/// Why a received report was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Larger than the protocol's envelope limit; not parsed at all.
    #[error("report of {0} bytes is over the envelope limit")]
    Oversized(usize),
    /// Not a licd v1 report topic.
    #[error("not a report topic: {0}")]
    Topic(licd_protocol::Error),
    /// The envelope or its signature is invalid.
    #[error("invalid report: {0}")]
    Envelope(licd_protocol::Error),
    /// The report names another tenant or device than its topic.
    #[error("report for {tenant}/{device} arrived on another device's topic")]
    TopicMismatch {
        /// Tenant in the report.
        tenant: String,
        /// Device in the report.
        device: String,
    },
    /// The engine refused it (e.g. the device key is not the pinned one).
    #[error(transparent)]
    Refused(#[from] ReportRefused),
    /// The ledger could not store the result; nothing was published.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ReportError {
    /// A stable short code for metrics (`licd_stub_reports_refused_total{code=…}`).
    pub fn code(&self) -> crate::metrics::RefusalCode {
        match self {
            Self::Oversized(_) => crate::metrics::OVERSIZED,
            Self::Topic(_) => "bad_topic",
            Self::Envelope(_) => "bad_envelope",
            Self::TopicMismatch { .. } => "topic_mismatch",
            Self::Refused(ReportRefused::KeyMismatch { .. }) => "key_mismatch",
            Self::Refused(ReportRefused::SeqExhausted) => "seq_exhausted",
            Self::Ledger(_) => crate::metrics::LEDGER,
        }
    }
}

/// Why an operator operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The engine refused it; nothing changed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The ledger could not store it; nothing was published.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What checking a report needs of the controller (whether it speaks the policy kinds): a
/// copy, so the next batch's signatures are checked on another thread while the controller
/// applies the last one ([`crate::session`]'s worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opener {
    policy_kinds: bool,
}

impl Opener {
    /// Size, topic, envelope and signature, topic/report agreement: everything about a report
    /// that needs no engine.
    pub fn open(&self, topic: &str, payload: &[u8]) -> Result<Opened, ReportError> {
        if payload.len() > MAX_ENVELOPE_LEN {
            return Err(ReportError::Oversized(payload.len()));
        }
        let t = Topic::parse(topic).map_err(ReportError::Topic)?;
        if t.kind != TopicKind::Report {
            return Err(ReportError::Topic(licd_protocol::Error::BadTopic(
                "not a report topic",
            )));
        }
        // A new agent sends extended reports (issue 20), an older one plain reports: each
        // opens by its own rules, and the answer is of the matching bundle kind.
        let extended = match Envelope::parse(payload) {
            Ok(env) if env.kind == MessageKind::ExtendedReport && !self.policy_kinds => {
                // What a controller predating §17 answers: nothing it can read.
                return Err(ReportError::Envelope(licd_protocol::Error::UnknownKind(
                    MessageKind::ExtendedReport.to_byte(),
                )));
            }
            Ok(env) if env.kind == MessageKind::ExtendedReport => {
                Some(open_extended_report(payload).map_err(ReportError::Envelope)?)
            }
            _ => None,
        };
        let report = match &extended {
            Some(x) => x.report.clone(),
            None => open_report(payload).map_err(ReportError::Envelope)?,
        };
        if report.tenant != t.tenant || report.device != t.device {
            return Err(ReportError::TopicMismatch {
                tenant: report.tenant.to_string(),
                device: report.device.to_string(),
            });
        }
        Ok(Opened { report, extended })
    }

    /// [`Opener::open`] for each of `items` (topic, payload), in order.
    pub fn open_batch(&self, items: &[(&str, &[u8])]) -> Vec<Result<Opened, ReportError>> {
        items
            .iter()
            .map(|(topic, payload)| self.open(topic, payload))
            .collect()
    }
}

/// Engine + ledger + signer. Not thread-safe on its own; the runtime keeps it in a mutex.
#[derive(Debug)]
pub struct Controller {
    engine: Engine,
    ledger: Ledger,
    signer: Signer,
    /// See [`crate::StubConfig::policy_kinds`].
    policy_kinds: bool,
    /// The ledger generation the engine's state is from (PostgreSQL; `None`: unknown, reload
    /// at the next turn, or SQLite).
    seen: Option<i64>,
    /// How this replica caught up with the others so far.
    catch_ups: CatchUps,
}

/// How often a replica caught up with what the others wrote (PostgreSQL; zero on SQLite).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUps {
    /// By reloading only the devices the change log named.
    pub devices: u64,
    /// By reloading the whole ledger (something besides devices changed, the log did not
    /// cover the span, or this replica's view was unknown).
    pub whole: u64,
}

impl Controller {
    /// Loads the engine's state from `ledger`.
    pub fn open(ledger: Ledger, signer: Signer, lease: LeasePolicy) -> Result<Self, LedgerError> {
        // The generation first: a write between the two makes the next turn reload.
        let seen = ledger.generation()?;
        let state = ledger.load()?;
        tracing::info!(
            customers = state.customers.len(),
            subscriptions = state.subscriptions.len(),
            devices = state.devices.len(),
            "ledger loaded"
        );
        Ok(Self {
            engine: Engine::from_state(state, lease),
            ledger,
            signer,
            policy_kinds: true,
            seen,
            catch_ups: CatchUps::default(),
        })
    }

    /// Speaks the policy kinds (PROTOCOL.md §17, the default) or not: with `false` it behaves
    /// as a controller predating §17 — extended reports and extended activation requests are
    /// refused as an unknown kind (so agents negotiating fall back to plain reports, §17.6),
    /// and every bundle is plain. Set before the report worker starts: it opens reports with
    /// the [`Opener`] it took then.
    pub fn set_policy_kinds(&mut self, on: bool) {
        self.policy_kinds = on;
    }

    /// Whether it speaks the policy kinds.
    pub fn policy_kinds(&self) -> bool {
        self.policy_kinds
    }

    /// What checks reports for this controller, without it.
    pub fn opener(&self) -> Opener {
        Opener {
            policy_kinds: self.policy_kinds,
        }
    }

    /// Reloads the engine when another replica wrote to the ledger since this one last saw
    /// it (PostgreSQL; nothing to do on SQLite). Reads (admin API views) call it first, so
    /// every replica answers with the same view.
    pub fn refresh(&mut self) -> Result<(), LedgerError> {
        let now = self.ledger.generation()?;
        if now.is_some() && now != self.seen {
            self.catch_up(now)?;
        }
        Ok(())
    }

    /// Brings the engine to `generation`: by the devices other replicas changed since the one
    /// it is from, when only devices changed and the change log covers the span (a report's
    /// turn), else by reloading everything.
    fn catch_up(&mut self, generation: Option<i64>) -> Result<(), LedgerError> {
        if let (Some(seen), Some(now)) = (self.seen, generation) {
            if let Some(changed) = self.ledger.changed_devices(seen, now)? {
                tracing::debug!(
                    from = seen,
                    to = now,
                    devices = changed.len(),
                    "ledger moved on (another replica wrote); changed devices reloaded"
                );
                self.engine.replace_devices(changed);
                self.seen = generation;
                self.catch_ups.devices += 1;
                return Ok(());
            }
        }
        self.reload(generation)
    }

    fn reload(&mut self, generation: Option<i64>) -> Result<(), LedgerError> {
        let state = self.ledger.load()?;
        tracing::debug!(
            from = ?self.seen,
            to = ?generation,
            devices = state.devices.len(),
            "ledger moved on (another replica wrote); engine reloaded"
        );
        self.engine = Engine::from_state(state, self.engine.lease_policy());
        self.seen = generation;
        self.catch_ups.whole += 1;
        Ok(())
    }

    /// How this replica caught up with the others so far.
    pub fn catch_ups(&self) -> CatchUps {
        self.catch_ups
    }

    /// Starts a turn: takes the ledger's turn lock and catches up with other replicas.
    fn begin(&mut self) -> Result<(), LedgerError> {
        let generation = self.ledger.begin_turn()?;
        if generation.is_some() && generation != self.seen {
            if let Err(e) = self.catch_up(generation) {
                self.ledger.abort_turn();
                return Err(e);
            }
        }
        Ok(())
    }

    /// The engine (read-only).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The ledger (read-only).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Checks, verifies and applies a report received on `topic`. Order: size, topic, envelope
    /// and signature, topic/report agreement, engine (pinned key), ledger, then sealing.
    pub fn handle_report_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: UnixTime,
    ) -> Result<(DeviceReport, Vec<Publication>), ReportError> {
        let (mut results, pubs) = self.handle_report_batch(&[(topic, payload)], now)?;
        match results.pop() {
            Some(Ok(report)) => Ok((report, pubs)),
            Some(Err(e)) => Err(e),
            None => Err(ReportError::Topic(licd_protocol::Error::BadTopic(
                "empty batch",
            ))),
        }
    }

    /// Applies several reports, then stores all their changes in one transaction and seals
    /// the bundles: the same steps as [`Controller::handle_report_message`], with one commit
    /// per batch instead of one per report. Returns each report's outcome, in order.
    #[allow(clippy::type_complexity)]
    pub fn handle_report_batch(
        &mut self,
        items: &[(&str, &[u8])],
        now: UnixTime,
    ) -> Result<(Vec<Result<DeviceReport, ReportError>>, Vec<Publication>), LedgerError> {
        // Signatures first, outside the turn: they need no ledger, so replicas check theirs
        // in parallel and the turn lock is held only for the engine and the writes.
        let opened = self.opener().open_batch(items);
        self.apply_opened(opened, now)
    }

    /// The second half of [`Controller::handle_report_batch`]: applies reports already
    /// opened (an error stays that report's outcome) in one turn, and seals their bundles.
    #[allow(clippy::type_complexity)]
    pub fn apply_opened(
        &mut self,
        opened: Vec<Result<Opened, ReportError>>,
        now: UnixTime,
    ) -> Result<(Vec<Result<DeviceReport, ReportError>>, Vec<Publication>), LedgerError> {
        self.begin()?;
        let mut effects = Effects::default();
        let results = opened
            .into_iter()
            .map(|opened| {
                let (report, fx) = self.apply_report(opened?, now)?;
                effects.publish.extend(fx.publish);
                Ok(report)
            })
            .collect();
        let pubs = self.commit(effects)?;
        Ok((results, pubs))
    }

    /// Applies an opened report to the engine (the pinned key, seats, bundle); a refusal is
    /// recorded in the ledger.
    fn apply_report(
        &mut self,
        opened: Opened,
        now: UnixTime,
    ) -> Result<(DeviceReport, Effects), ReportError> {
        let Opened { report, extended } = opened;
        let applied = match &extended {
            Some(x) => self.engine.handle_extended_report(x, now),
            None => self.engine.handle_report(&report, now),
        };
        match applied {
            Ok(effects) => Ok((report, effects)),
            Err(refused) => {
                let reason = refused.to_string();
                if let Err(e) = self.ledger.record_refused(
                    now,
                    report.tenant.as_str(),
                    report.device.as_str(),
                    &reason,
                ) {
                    tracing::warn!(error = %e, "could not record a refused report");
                }
                Err(refused.into())
            }
        }
    }

    /// Runs an operator operation on the engine, stores its changes, and seals its bundles.
    pub fn apply<T>(
        &mut self,
        now: UnixTime,
        op: impl FnOnce(&mut Engine, UnixTime) -> Result<(T, Effects), EngineError>,
    ) -> Result<(T, Vec<Publication>), ApplyError> {
        let (value, effects) = self.decide(|engine| op(engine, now).map_err(ApplyError::from))?;
        Ok((value, self.commit(effects)?))
    }

    /// Starts a turn and runs `op` on the caught-up engine; when `op` refuses, the turn ends
    /// with nothing written. The caller then calls [`Controller::commit`].
    pub(crate) fn decide<T, E: From<LedgerError>>(
        &mut self,
        op: impl FnOnce(&mut Engine) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin()?;
        op(&mut self.engine).inspect_err(|_| self.ledger.abort_turn())
    }

    /// Stores what changed, then seals. If storing fails, nothing is published and the engine
    /// goes back to what the ledger holds: the change did not happen, as the caller is told.
    /// (Kept in memory, a change the ledger refuses for good — a constraint — was retried by
    /// every later commit and refused them all: one bad request made the ledger read-only.)
    /// Only if the ledger cannot even be read are the changes kept, to be retried.
    pub(crate) fn commit(&mut self, effects: Effects) -> Result<Vec<Publication>, LedgerError> {
        let dirty = self.engine.take_dirty();
        let ended = self.ledger.end_turn(self.engine.state(), &dirty);
        if let Ok(generation) = ended {
            self.seen = generation;
        }
        if let Err(e) = ended {
            // Whatever another replica wrote meanwhile, the next turn reloads.
            self.seen = None;
            match self.ledger.load() {
                Ok(state) => {
                    tracing::error!(error = %e, "ledger refused a change; it is undone");
                    self.engine = Engine::from_state(state, self.engine.lease_policy());
                }
                Err(load) => {
                    tracing::error!(error = %e, reload = %load, "ledger failed; the change is kept to retry");
                    self.engine.mark_dirty(dirty);
                }
            }
            return Err(e);
        }
        Ok(effects.publish.iter().map(|b| self.seal(b)).collect())
    }

    /// Seals one bundle: a policy bundle (each service's policy, the usage acknowledgement)
    /// for a device whose last report was extended, a plain bundle for an older agent.
    pub fn seal(&self, b: &GrantBundle) -> Publication {
        let policy = self
            .policy_kinds
            .then(|| self.engine.policy_bundle(b))
            .flatten();
        let payload = match policy {
            Some(pb) => seal_policy_bundle(&pb, self.signer.key(), self.signer.cert()),
            None => self.signer.seal(&self.engine.plain_bundle(b)),
        };
        Publication {
            topic: Topic::new(&b.tenant, &b.device, TopicKind::Grants).to_topic_string(),
            payload,
            seq: b.seq,
        }
    }
}
