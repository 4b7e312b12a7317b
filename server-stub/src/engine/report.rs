//! Handling a verified device report: pin the device key on first contact (and refuse a
//! report signed by any other key after that), record the device, give it seats where
//! auto-licensing says so, and decide whether it needs a new bundle.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::{DeviceReport, ExtendedReport, UnixTime};

use super::model::{BundleState, Device, DeviceKey, SubscriptionStatus};
use super::{Effects, Engine, ReportRefused};

/// Seconds after a bundle's issue during which a report from a device that does not hold it
/// yet gets no new one: the bundle saying the same is on its way, and the report is most
/// likely the agent's retry (5 s, 10 s, 20 s, …) crossing it in a backlogged broker. Issuing
/// a new bundle for every such retry made the controller sign, store and publish up to five
/// bundles per device in a 50,000-agent storm, each stored again by the broker (issue 19's
/// fleet / floor). A device whose bundle really was lost gets a new one from its first report
/// after the window (its next retry: they back off from 5 s, so within one more retry
/// interval); a changed entitlement, a due refresh or a device reporting a seq above the
/// ledger's is answered at once, as before.
pub const ANSWER_IN_FLIGHT_SECS: u64 = 30;

impl Engine {
    /// Applies a report whose signature the shell has verified (and whose topic matched its
    /// tenant and device). A bundle is issued when the device's entitlements changed, when its
    /// refresh time has come, or when it does not hold the newest bundle and that bundle is
    /// older than [`ANSWER_IN_FLIGHT_SECS`].
    pub fn handle_report(
        &mut self,
        report: &DeviceReport,
        now: UnixTime,
    ) -> Result<Effects, ReportRefused> {
        self.handle_any_report(report, None, now)
    }

    /// [`Engine::handle_report`] for an extended report (issue 20): the report part the same,
    /// then its usage counted once and its compliance kept (see [`super::usage`]); the
    /// device's bundles become policy bundles. A report whose usage was stored gets a bundle
    /// acknowledging it.
    pub fn handle_extended_report(
        &mut self,
        report: &ExtendedReport,
        now: UnixTime,
    ) -> Result<Effects, ReportRefused> {
        self.handle_any_report(&report.report, Some(report), now)
    }

    pub(super) fn handle_any_report(
        &mut self,
        report: &DeviceReport,
        extended: Option<&ExtendedReport>,
        now: UnixTime,
    ) -> Result<Effects, ReportRefused> {
        let key: DeviceKey = (report.tenant.clone(), report.device.clone());
        if let Some(d) = self.state.devices.get(&key) {
            if d.key != report.device_key {
                return Err(ReportRefused::KeyMismatch {
                    pinned: d.key.id(),
                    got: report.device_key.id(),
                });
            }
            if d.bundle.seq.max(report.bundle_seq) == u64::MAX {
                return Err(ReportRefused::SeqExhausted);
            }
        } else if report.bundle_seq == u64::MAX {
            return Err(ReportRefused::SeqExhausted);
        }
        self.record(report, now);
        // Every extended report is answered, also one whose usage is ignored (a duplicate,
        // a late copy, a reset device not yet recognised): an agent negotiating the report
        // kind takes unanswered extended reports for a controller predating them
        // (PROTOCOL.md §17.6).
        let acknowledge = match extended {
            Some(ext) => {
                let outcome = self.record_usage(&key, ext, now);
                tracing::debug!(tenant = %key.0, device = %key.1, seq = ext.report_seq, ?outcome, "usage");
                true
            }
            None => false,
        };
        if let Some(d) = self.state.devices.get_mut(&key) {
            d.usage.extended = extended.is_some();
        }

        let mut touched = BTreeSet::new();
        let stale = self.release_stale_seats(&key);
        // A host placed in a datacenter is covered by its assignment before auto-licensing.
        self.cover_host(&key, now);
        for service in stale {
            let r = self.reconcile(&service, now);
            if r.pause_changed {
                touched.extend(self.devices_wanting(&service));
            } else {
                touched.extend(r.changed);
            }
        }
        for service in &report.services_wanted {
            touched.extend(self.reconcile_for(service, &key, now));
        }
        self.update_violations(&key, now);
        touched.remove(&key);
        let mut publish = self.refresh_bundles(&touched, now);

        let Some(basis) = self.basis(&key) else {
            return Ok(Effects { publish });
        };
        // A device licensed by file that now reports over MQTT gets a bundle with the regular
        // lease at once (continuing from the seq it imported).
        let back_online = self.answering_file.is_none() && self.back_online(&key, now);
        let due = back_online
            || acknowledge
            || self.state.devices.get(&key).is_some_and(|d| {
                d.bundle.basis.as_ref() != Some(&basis)
                    || now >= d.bundle.refresh_after
                    || d.reported_seq > d.bundle.seq
                    || (d.reported_seq < d.bundle.seq
                        && now >= d.bundle.issued_at.saturating_add(ANSWER_IN_FLIGHT_SECS))
            });
        if due {
            publish.extend(self.issue(&key, basis, now));
        }
        Ok(Effects { publish })
    }

    fn record(&mut self, r: &DeviceReport, now: UnixTime) {
        let key: DeviceKey = (r.tenant.clone(), r.device.clone());
        let mut new = false;
        let d = self.state.devices.entry(key.clone()).or_insert_with(|| {
            new = true;
            tracing::info!(tenant = %r.tenant, device = %r.device, key = %r.device_key.id(), "new device, key pinned");
            Device {
                tenant: r.tenant.clone(),
                id: r.device.clone(),
                key: r.device_key,
                model: String::new(),
                serial: String::new(),
                product_class: String::new(),
                firmware_version: String::new(),
                agent_version: String::new(),
                vm_count: None,
                services_wanted: BTreeSet::new(),
                first_seen: now,
                last_report_at: now,
                reported_clock: 0,
                clock_rollback: false,
                reported_seq: 0,
                seats: BTreeMap::new(),
                unassigned: BTreeSet::new(),
                violation_since: BTreeMap::new(),
                bundle: BundleState::default(),
                offline: Default::default(),
                datacenter: None,
                usage: Default::default(),
            }
        });
        d.model.clone_from(&r.model);
        d.serial.clone_from(&r.serial);
        d.product_class.clone_from(&r.product_class);
        d.firmware_version.clone_from(&r.firmware_version);
        d.agent_version.clone_from(&r.agent_version);
        d.vm_count = r.vm_count;
        d.services_wanted = r.services_wanted.iter().cloned().collect();
        d.last_report_at = now;
        d.reported_clock = r.clock;
        d.clock_rollback = r.clock_rollback;
        d.reported_seq = r.bundle_seq;
        if new {
            self.dirty.new_devices.insert(key.clone());
        }
        self.dirty.devices.insert(key);
    }

    /// Returns to the pool the seats of services the device no longer wants, or whose SKU is
    /// for another product class than the device now reports. Returns those services.
    fn release_stale_seats(&mut self, key: &DeviceKey) -> Vec<licd_protocol::ServiceName> {
        let Some(d) = self.state.devices.get(key) else {
            return Vec::new();
        };
        let stale: Vec<_> = d
            .seats
            .iter()
            .filter(|(service, seat)| {
                // An operator's computer assignment stays while the service is not wanted.
                (!d.services_wanted.contains(*service) && seat.assigned.is_none())
                    || self
                        .state
                        .catalog
                        .get(&seat.sku)
                        .is_none_or(|c| c.product_class != d.product_class)
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in &stale {
            self.release_seat(key, service);
        }
        stale
    }

    /// Updates since when each wanted service of the device has been out of compliance: no
    /// seat, a seat whose term ended, or more VMs than the seat allows.
    pub(super) fn update_violations(&mut self, key: &DeviceKey, now: UnixTime) {
        let Some(d) = self.state.devices.get(key) else {
            return;
        };
        let violated: BTreeSet<_> = d
            .services_wanted
            .iter()
            .filter(|s| match d.seats.get(*s) {
                None => true,
                Some(seat) => {
                    let ended = self
                        .state
                        .subscriptions
                        .get(&seat.subscription)
                        .is_none_or(|sub| sub.status(now) == SubscriptionStatus::Expired);
                    let allowance = self.seat_vm_allowance(seat);
                    // Over the tolerance of the seat's policy (issue 20); within it the
                    // service is licensed with a warning.
                    let over = matches!((d.vm_count, allowance), (Some(n), Some(a))
                        if n > self.effective_policy(&seat.subscription, &seat.sku).tolerated_vms(a));
                    ended || over
                }
            })
            .cloned()
            .collect();
        let Some(d) = self.state.devices.get_mut(key) else {
            return;
        };
        let before = d.violation_since.clone();
        d.violation_since.retain(|s, _| violated.contains(s));
        for s in violated {
            d.violation_since.entry(s).or_insert(now);
        }
        if d.violation_since != before {
            self.dirty.devices.insert(key.clone());
        }
    }
}
