//! Licensing by file (issue 18): an activation request handled by the same rules as a report
//! (key pinning, seats, auto-licensing) and always answered with a bundle whose lease is the
//! offline policy's; a release receipt that frees the device's seats once. The device is
//! marked offline, and each grant and release is kept in its history (`devices show`).

use std::collections::BTreeSet;

use licd_protocol::offline::open_release_receipt;
use licd_protocol::{
    ActivationRequest, ExtendedReport, GrantBundle, ReleaseReceipt, ServiceName, TenantId, UnixTime,
};
use serde::{Deserialize, Serialize};

use super::model::DeviceKey;
use super::{Effects, Engine, ReportRefused};

/// Most history entries kept per device (the oldest go first).
pub const MAX_HISTORY: usize = 64;
/// Most request and receipt nonces remembered per device (replays of older ones are refused by
/// their seq rules instead).
pub const MAX_NONCES: usize = 256;

/// What the controller remembers about a device licensed by file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineRecord {
    /// The device was last licensed by file (it cannot renew often).
    #[serde(default)]
    pub offline: bool,
    /// Nonces (hex) of requests answered and receipts applied: a replay is refused.
    #[serde(default)]
    pub nonces: Vec<String>,
    /// The last release's bundle seq (0: none): a receipt for an older bundle is refused.
    #[serde(default)]
    pub released_seq: u64,
    /// Grants by file and releases, oldest first: where each seat went.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// One event in a device's licensing history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (controller time).
    pub at: UnixTime,
    /// What happened, in words (`granted by file: seq 3, wifi (sub-1/LIC-AP)`,
    /// `released by receipt: wifi seat of sub-1/LIC-AP, bundle seq 3`).
    pub event: String,
}

impl OfflineRecord {
    fn seen(&self, nonce: &[u8; 16]) -> bool {
        self.nonces.contains(&hex(nonce))
    }

    fn remember(&mut self, nonce: &[u8; 16]) {
        self.nonces.push(hex(nonce));
        if self.nonces.len() > MAX_NONCES {
            self.nonces.remove(0);
        }
    }

    fn log(&mut self, at: UnixTime, event: String) {
        self.history.push(HistoryEntry { at, event });
        if self.history.len() > MAX_HISTORY {
            self.history.remove(0);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a file was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineRefused {
    /// The request's report is refused like a report would be (another key than the pinned
    /// one, seq exhausted).
    #[error("{0}")]
    Report(ReportRefused),
    /// The same request was answered already.
    #[error("this request was answered already (a replay): make a new request on the device")]
    ReplayedRequest,
    /// The receipt names a device this controller does not know.
    #[error("unknown device {device} of tenant {tenant}")]
    UnknownDevice {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
    },
    /// The receipt does not verify against the device's pinned key, or is malformed.
    #[error("release receipt refused: {0}")]
    Receipt(licd_protocol::Error),
    /// The same receipt was applied already.
    #[error("this release receipt was applied already (a replay); its seats were freed then")]
    ReplayedReceipt,
    /// The receipt is for a bundle this controller never issued to the device.
    #[error(
        "the receipt is for bundle seq {seq}, but this device was only ever issued seq {issued}"
    )]
    NeverIssued {
        /// Seq in the receipt.
        seq: u64,
        /// Highest seq issued.
        issued: u64,
    },
    /// The receipt is for a bundle older than one already released.
    #[error("the receipt is for bundle seq {seq}, older than the release of seq {released}")]
    OlderThanRelease {
        /// Seq in the receipt.
        seq: u64,
        /// Seq of the last release.
        released: u64,
    },
}

/// What a release receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The receipt.
    pub receipt: ReleaseReceipt,
    /// Services whose seats were freed (a service without a seat any more frees nothing).
    pub freed: Vec<ServiceName>,
}

impl Engine {
    /// Answers an opened activation request: the report is applied as from MQTT, then a
    /// bundle is issued in any case (the answer), its lease the offline policy's. Returns the
    /// bundle for the grant file, and the effects (bundles for other devices whose seats
    /// changed; the device's own bundle is among them too, for a device that later connects).
    pub fn handle_offline_request(
        &mut self,
        request: &ActivationRequest,
        now: UnixTime,
    ) -> Result<(GrantBundle, Effects), OfflineRefused> {
        self.handle_offline_request_with(request, None, now)
    }

    /// [`Engine::handle_offline_request`] for a request carrying an extended report (its
    /// report part is `request.report`): its usage is counted once like an extended report's
    /// over MQTT, and the device's bundles become policy bundles acknowledging it.
    pub fn handle_offline_request_with(
        &mut self,
        request: &ActivationRequest,
        extended: Option<&ExtendedReport>,
        now: UnixTime,
    ) -> Result<(GrantBundle, Effects), OfflineRefused> {
        let report = &request.report;
        let key: DeviceKey = (report.tenant.clone(), report.device.clone());
        if self
            .state
            .devices
            .get(&key)
            .is_some_and(|d| d.offline.seen(&request.nonce))
        {
            return Err(OfflineRefused::ReplayedRequest);
        }
        // `issue` gives this device's bundle the offline lease (per grant: its policy's
        // `offline_lease_days`, else the controller's); other devices whose seats change
        // meanwhile keep the regular lease.
        self.answering_file = Some(key.clone());
        let result = self.answer_request(request, extended, &key, now);
        self.answering_file = None;
        result
    }

    /// A report over MQTT from a device marked offline: it is connected now. Clears the mark
    /// and notes it in the history; returns whether it was marked.
    pub(super) fn back_online(&mut self, key: &DeviceKey, now: UnixTime) -> bool {
        let Some(d) = self.state.devices.get_mut(key) else {
            return false;
        };
        if !d.offline.offline {
            return false;
        }
        d.offline.offline = false;
        let seq = d.bundle.seq;
        d.offline.log(
            now,
            format!(
                "reported over MQTT holding seq {}: licensed online again",
                d.reported_seq.max(seq)
            ),
        );
        self.dirty.devices.insert(key.clone());
        true
    }

    fn answer_request(
        &mut self,
        request: &ActivationRequest,
        extended: Option<&ExtendedReport>,
        key: &DeviceKey,
        now: UnixTime,
    ) -> Result<(GrantBundle, Effects), OfflineRefused> {
        let mut effects = self
            .handle_any_report(&request.report, extended, now)
            .map_err(OfflineRefused::Report)?;
        let bundle = match effects
            .publish
            .iter()
            .find(|b| b.device == key.1 && b.tenant == key.0)
        {
            Some(b) => b.clone(),
            None => {
                let basis = self
                    .basis(key)
                    .ok_or(OfflineRefused::Report(ReportRefused::SeqExhausted))?;
                let b = self
                    .issue(key, basis, now)
                    .ok_or(OfflineRefused::Report(ReportRefused::SeqExhausted))?;
                effects.publish.push(b.clone());
                b
            }
        };
        if let Some(d) = self.state.devices.get_mut(key) {
            d.offline.offline = true;
            d.offline.remember(&request.nonce);
            let what: Vec<String> = bundle
                .grants
                .iter()
                .map(|g| format!("{} ({}/{})", g.service, g.license, g.sku))
                .collect();
            d.offline.log(
                now,
                format!(
                    "granted by file: seq {}, {}",
                    bundle.seq,
                    if what.is_empty() {
                        "nothing".into()
                    } else {
                        what.join(", ")
                    }
                ),
            );
        }
        self.dirty.devices.insert(key.clone());
        Ok((bundle, effects))
    }

    /// Applies a release receipt (signed bytes): signed by the device's pinned key, not
    /// applied before, for a bundle this controller issued and not older than the last
    /// release. Frees the services' seats once, drops them from what the device wants, and
    /// lets auto-licensing give them to devices waiting for a seat.
    pub fn handle_release(
        &mut self,
        bytes: &[u8],
        now: UnixTime,
    ) -> Result<(Returned, Effects), OfflineRefused> {
        self.handle_release_of(bytes, None, now)
    }

    /// [`Engine::handle_release`] for a receipt of `tenant`'s devices only (a tenant-scoped
    /// admin token): another tenant's device is unknown, exactly as a device that does not
    /// exist, so the answer says nothing of what other tenants have.
    pub fn handle_release_of(
        &mut self,
        bytes: &[u8],
        tenant: Option<&TenantId>,
        now: UnixTime,
    ) -> Result<(Returned, Effects), OfflineRefused> {
        let claimed = licd_protocol::offline::peek_release_receipt_device(bytes)
            .map_err(OfflineRefused::Receipt)?;
        // The same device id may exist under several tenants: the pinned key decides.
        let candidates: Vec<_> = self
            .state
            .devices
            .iter()
            .filter(|((t, dev), _)| *dev == claimed && tenant.is_none_or(|only| only == t))
            .map(|(k, d)| (k.clone(), d.key))
            .collect();
        if candidates.is_empty() {
            return Err(OfflineRefused::UnknownDevice {
                tenant: "any".into(),
                device: claimed.to_string(),
            });
        }
        let mut last = None;
        let mut opened = None;
        for (k, pinned) in candidates {
            match open_release_receipt(bytes, &pinned) {
                Ok(r) if r.tenant == k.0 => {
                    opened = Some((k, r));
                    break;
                }
                Ok(_) => {
                    last = Some(licd_protocol::Error::Invalid(
                        "receipt names another tenant",
                    ))
                }
                Err(e) => last = Some(e),
            }
        }
        let Some((key, receipt)) = opened else {
            return Err(OfflineRefused::Receipt(
                last.unwrap_or(licd_protocol::Error::BadSignature),
            ));
        };
        let Some(d) = self.state.devices.get(&key) else {
            return Err(OfflineRefused::UnknownDevice {
                tenant: key.0.to_string(),
                device: key.1.to_string(),
            });
        };
        if d.offline.seen(&receipt.nonce) {
            return Err(OfflineRefused::ReplayedReceipt);
        }
        if receipt.bundle_seq > d.bundle.seq || receipt.bundle_seq == 0 {
            return Err(OfflineRefused::NeverIssued {
                seq: receipt.bundle_seq,
                issued: d.bundle.seq,
            });
        }
        if receipt.bundle_seq < d.offline.released_seq {
            return Err(OfflineRefused::OlderThanRelease {
                seq: receipt.bundle_seq,
                released: d.offline.released_seq,
            });
        }
        let mut freed = Vec::new();
        let mut events = Vec::new();
        for service in &receipt.services {
            let seat = self
                .state
                .devices
                .get(&key)
                .and_then(|d| d.seats.get(service).cloned());
            if let Some(seat) = seat {
                self.release_seat(&key, service);
                events.push(format!(
                    "released by receipt: {service} seat of {}/{}, bundle seq {}",
                    seat.subscription, seat.sku, receipt.bundle_seq
                ));
                freed.push(service.clone());
            }
        }
        if let Some(d) = self.state.devices.get_mut(&key) {
            for s in &receipt.services {
                d.services_wanted.remove(s);
            }
            d.offline.remember(&receipt.nonce);
            d.offline.released_seq = receipt.bundle_seq;
            if events.is_empty() {
                events.push(format!(
                    "release receipt for bundle seq {}: no seat to free",
                    receipt.bundle_seq
                ));
            }
            for e in events {
                d.offline.log(now, e);
            }
        }
        self.dirty.devices.insert(key.clone());
        // The freed seats go to devices waiting for them (a paused service may resume).
        let mut touched = BTreeSet::new();
        for service in &freed {
            let r = self.reconcile(service, now);
            if r.pause_changed {
                touched.extend(self.devices_wanting(service));
            } else {
                touched.extend(r.changed);
            }
        }
        touched.remove(&key);
        let publish = self.refresh_bundles(&touched, now);
        Ok((Returned { receipt, freed }, Effects { publish }))
    }
}
