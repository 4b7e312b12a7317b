//! Start-up state: what the daemon loads from the state directory through
//! [`licd_core::cache::restore`] — the time mark, trust state, VM record and cached bundle —
//! and the files it sets aside when they cannot be used. The loop ([`super::run_loop`]) keeps
//! this state current.

use std::sync::Arc;

use licd_protocol::UnixTime;

use crate::clock::{Clock, TrustedTime};
use crate::config::Settings;
use crate::enforce::{Effect, Enforcer};
use crate::status::{CacheProblem, ConnectionStatus, Source, Status};
use crate::store::Store;
use crate::trust::TrustState;
use licd_core::cache::{self, Binding, Problem};

/// What both the daemon and the from-cache path load: the state restored by
/// [`licd_core::cache::restore`] and what is needed to keep it current.
pub(super) struct Core {
    pub(super) store: Store,
    pub(super) binding: Binding,
    pub(super) time: TrustedTime,
    pub(super) enforcer: Enforcer,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: Settings,
    /// Roots and revocations (config roots moved forward by accepted trust messages).
    pub(super) trust: TrustState,
    /// The cached bundle found at start could not be used (cleared once a new one is cached).
    pub(super) cache_problem: Option<CacheProblem>,
}

impl Core {
    /// Restores the state for `binding`. `writable` (the daemon): log each problem and set the
    /// unusable files aside; read-only callers get the problems back instead.
    pub(super) fn restore(
        settings: Settings,
        clock: Arc<dyn Clock>,
        store: Store,
        binding: Binding,
        writable: bool,
    ) -> (Self, Vec<Effect>, Vec<Problem>) {
        let restored = cache::restore(&settings, &binding, &store, clock.wall(), clock.boot());
        let mut core = Self {
            store,
            binding,
            time: restored.time,
            enforcer: restored.enforcer,
            clock,
            settings,
            trust: restored.trust,
            cache_problem: restored.cache_problem,
        };
        if writable {
            for problem in &restored.problems {
                core.set_aside(problem);
            }
            // A device upgraded from an agent that wrote only trust.v1.bin: write the v2 file
            // once, so later starts read it.
            match crate::trust::migrate(core.store.dir(), &core.trust) {
                Ok(true) => tracing::info!("trust state migrated to trust.v2.bin"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write trust.v2.bin; the trust state is read from trust.v1.bin again at the next start")
                }
            }
        }
        (core, restored.effects, restored.problems)
    }

    /// Logs a problem found at start and moves the file aside: whatever sits at the cache path
    /// (garbage, a directory, another device's bundle) would otherwise be met again at every
    /// start, and an unreadable one would make every later write fail.
    fn set_aside(&mut self, problem: &Problem) {
        let now = self.time.mark();
        match problem {
            Problem::MarkUnreadable(e) => {
                tracing::warn!(error = %e, "time mark unreadable; starting from the cached bundle's time");
                let _ = self.store.set_aside_mark(self.clock.wall());
            }
            Problem::VmRecordUnreadable(e) => {
                tracing::warn!(error = %e, "VM record unreadable; the VM count is unknown until the probe reads it");
                let _ = self.store.set_aside_vm_record(now);
            }
            Problem::PolicyRecordUnreadable(e) => {
                tracing::warn!(error = %e, "policy record unreadable; usage not yet acknowledged is lost, report seqs start afresh");
                let _ = self.store.set_aside_policy_record(now);
            }
            Problem::TrustUnreadable(problem) => {
                tracing::warn!(%problem, "trust state unreadable; starting from the config roots")
            }
            Problem::TrustDropped(d) => {
                tracing::warn!(kind = ?d.kind, reason = %d.error, "stored trust message no longer verifies; dropped")
            }
            Problem::OfflineUnreadable(e) => {
                tracing::warn!(error = %e, "offline state unreadable; pending requests and the release record are lost");
                let _ = self.store.set_aside_offline(now);
            }
            Problem::BundleRefused(refusal) => {
                tracing::warn!(reason = %refusal, code = refusal.code(), "cached bundle refused; starting without it")
            }
            Problem::BundleUnreadable(e) => {
                tracing::warn!(error = %e, "cache unreadable; starting without it")
            }
        }
        if problem.is_bundle() {
            match self.store.set_aside_bundle(now) {
                Ok(to) => {
                    tracing::warn!(moved_to = %to.display(), "cached bundle set aside");
                    if let Some(p) = self.cache_problem.as_mut() {
                        p.set_aside_to = Some(to.display().to_string());
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot set the unusable cache aside; new bundles will not survive a restart")
                }
            }
        }
    }

    pub(super) fn now(&mut self) -> UnixTime {
        let r = self.time.observe(self.clock.wall(), self.clock.boot());
        r.now
    }

    pub(super) fn status(&self, source: Source, connection: Option<ConnectionStatus>) -> Status {
        let mut status = cache::status_of(
            source,
            &self.settings,
            &self.binding,
            &self.time,
            self.clock.wall(),
            &self.enforcer,
        );
        status.connection = connection;
        status.cache_problem = self.cache_problem.clone();
        status
    }
}
