//! Snow license assignments (seed 003): a license (`<subscriptionId>:<sku>`) assigned to
//! computers, datacenters, organizations, sites and users; add, replace or delete one, replace
//! or delete all of a kind; the summary and the reasons an assignment is invalid.
//!
//! What reaches devices: a **computer** assignment is the device's seat of the license (with a
//! quantity, so a per-VM SKU covers `vms_per_seat × quantity` VMs); deleting it revokes the
//! service on that device (the next bundle withholds it `Unassigned`, and auto-licensing does
//! not hand it back until an operator assigns or enables it again). A **datacenter**
//! assignment uses its quantity of the license's seats and, when the license has VM use
//! rights, covers every host placed in that datacenter that wants the license's service and
//! holds no other seat for it. Organization, site and user assignments are records only:
//! devices report no users or sites, and an organization allocation does not choose seats.
//!
//! Pure like the rest of the engine: every change takes `now` and returns [`Effects`].

use std::collections::BTreeSet;

use licd_protocol::{LicenseId, ServiceName, Sku, UnixTime};

use super::model::{
    AssignmentKind, CatalogEntry, ComputerAssignment, DeviceKey, Seat, SnowAssignment, SnowKey,
    Subscription, SubscriptionStatus,
};
use super::{Effects, Engine, EngineError};

/// A license named by its subscription and SKU.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LicenseRef {
    /// Subscription.
    pub subscription: LicenseId,
    /// SKU.
    pub sku: Sku,
}

impl std::fmt::Display for LicenseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.subscription, self.sku)
    }
}

/// What one assignment asks for (a computer's or a datacenter's, an organization's, a
/// site's or a user's: the fields a kind does not have are left at their defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRequest {
    /// The target: a device for computers, else the datacenter/organization/user id.
    pub target: Target,
    /// Quantity (at least 1).
    pub quantity: u32,
    /// Virtual machine ids.
    pub virtual_machines: Vec<String>,
}

/// What an assignment is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A device (Snow computer).
    Computer(DeviceKey),
    /// A datacenter, organization, site (by organization) or user id.
    Other(AssignmentKind, String),
}

impl Target {
    fn kind(&self) -> AssignmentKind {
        match self {
            Target::Computer(_) => AssignmentKind::Computer,
            Target::Other(k, _) => *k,
        }
    }

    /// The assignment id of this target within its license: `<tenant>:<device>` for a
    /// computer, the target's id otherwise.
    pub fn id(&self) -> String {
        match self {
            Target::Computer((t, d)) => format!("{t}:{d}"),
            Target::Other(_, id) => id.clone(),
        }
    }
}

/// Whether a put adds a new assignment or replaces one that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Add: the assignment must not exist (409).
    Add,
    /// Replace: the assignment must exist (404).
    Replace,
}

/// One assignment as the engine shows it (any kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentView {
    /// The license.
    pub license: LicenseRef,
    /// Kind.
    pub kind: AssignmentKind,
    /// Id within the license (see [`Target::id`]).
    pub id: String,
    /// For computers, the device.
    pub device: Option<DeviceKey>,
    /// Quantity.
    pub quantity: u32,
    /// Virtual machine ids named.
    pub virtual_machines: Vec<String>,
    /// Whether the license has VM use rights (a per-VM SKU).
    pub has_vm_use_rights: bool,
    /// VMs the assignment supports (`vms_per_seat × quantity`), for licenses with VM use
    /// rights.
    pub number_of_supported_virtual_machines: Option<u32>,
    /// Why the assignment does not do what it says (empty when it does).
    pub invalid_reasons: Vec<&'static str>,
    /// Made by auto-licensing (a computer's seat no operator assigned).
    pub is_auto_allocated: bool,
    /// Hosts a datacenter assignment covers now.
    pub covered_hosts: Vec<DeviceKey>,
}

/// Which kinds of assignment a license has (Snow assignments summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssignmentSummary {
    /// Computers.
    pub computer: bool,
    /// Datacenters.
    pub datacenter: bool,
    /// Organizations.
    pub organization: bool,
    /// Site.
    pub site: bool,
    /// Users.
    pub user: bool,
}

/// Invalid-assignment reasons (Snow `invalidAssignmentReasons`), as the API shows them.
pub mod reasons {
    /// The license's subscription is not active (unclaimed, not started or ended).
    pub const SUBSCRIPTION_NOT_ACTIVE: &str = "subscriptionNotActive";
    /// Virtual machines named for a license without VM use rights.
    pub const NO_VM_USE_RIGHTS: &str = "noVmUseRights";
    /// More virtual machines named than the assignment supports.
    pub const TOO_MANY_VIRTUAL_MACHINES: &str = "virtualMachinesExceedSupported";
    /// The computer (or the datacenter's hosts) runs more VMs than supported.
    pub const VM_OVERUSE: &str = "runningVirtualMachinesExceedSupported";
    /// The computer no longer wants the license's service.
    pub const NOT_WANTED: &str = "serviceNotWantedByComputer";
    /// A datacenter with no host placed in it.
    pub const NO_HOSTS: &str = "noHostsInDatacenter";
    /// The seat was moved away with its license (Meraki co-term move).
    pub const SEAT_ENDED: &str = "seatEnded";
}

impl Engine {
    /// The license `r`: its subscription and catalogue entry, or the 404 of an unknown license.
    pub fn license(&self, r: &LicenseRef) -> Result<(&Subscription, &CatalogEntry), EngineError> {
        let unknown = || EngineError::UnknownLicense(r.to_string());
        let sub = self
            .state
            .subscriptions
            .get(&r.subscription)
            .ok_or_else(unknown)?;
        if !sub.entitlements.iter().any(|e| e.sku == r.sku) {
            return Err(unknown());
        }
        let cat = self.state.catalog.get(&r.sku).ok_or_else(unknown)?;
        Ok((sub, cat))
    }

    fn limit_of(&self, r: &LicenseRef) -> u32 {
        self.state
            .subscriptions
            .get(&r.subscription)
            .and_then(|s| s.entitlements.iter().find(|e| e.sku == r.sku))
            .map_or(0, |e| e.limit)
    }

    /// VMs a seat covers: `vms_per_seat × quantity`; `None` = not counted (no per-VM SKU, or
    /// a datacenter's host, whose VMs the datacenter assignment covers).
    pub fn seat_vm_allowance(&self, seat: &Seat) -> Option<u32> {
        if seat.datacenter.is_some() {
            return None;
        }
        self.state
            .catalog
            .get(&seat.sku)
            .and_then(|c| c.vms_per_seat)
            .map(|v| v.saturating_mul(seat.quantity.max(1)))
    }

    /// Whether a device of `tenant` may use seats of `sub`: its own, one it is bound to, or
    /// the MSP's (the order auto-licensing uses).
    fn may_use(&self, tenant: &licd_protocol::TenantId, sub: &Subscription) -> bool {
        let msp = self.msp().map(|c| &c.id);
        sub.owner.as_ref() == Some(tenant)
            || self
                .state
                .bindings
                .get(&sub.id)
                .is_some_and(|b| b.contains(tenant))
            || (sub.owner.is_some() && sub.owner.as_ref() == msp)
    }

    /// Every assignment of `kind` of license `r`, by id.
    pub fn assignments_of(
        &self,
        r: &LicenseRef,
        kind: AssignmentKind,
        now: UnixTime,
    ) -> Result<Vec<AssignmentView>, EngineError> {
        self.license(r)?;
        let mut out = Vec::new();
        if kind == AssignmentKind::Computer {
            for d in self.state.devices.values() {
                for seat in d.seats.values() {
                    if seat.subscription == r.subscription
                        && seat.sku == r.sku
                        && seat.datacenter.is_none()
                    {
                        out.push(self.computer_view(r, &d.key(), seat, now));
                    }
                }
            }
        } else {
            let lic = r.to_string();
            for (k, a) in self.state.snow.range((lic.clone(), kind, String::new())..) {
                if k.0 != lic || k.1 != kind {
                    break;
                }
                out.push(self.record_view(r, a, now));
            }
        }
        Ok(out)
    }

    /// One assignment of license `r`, or the 404 of an unknown one.
    pub fn assignment(
        &self,
        r: &LicenseRef,
        kind: AssignmentKind,
        id: &str,
        now: UnixTime,
    ) -> Result<AssignmentView, EngineError> {
        self.assignments_of(r, kind, now)?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| EngineError::UnknownAssignment {
                license: r.to_string(),
                kind: kind.as_str(),
                id: id.to_string(),
            })
    }

    /// Which kinds of assignment license `r` has.
    pub fn assignment_summary(
        &self,
        r: &LicenseRef,
        now: UnixTime,
    ) -> Result<AssignmentSummary, EngineError> {
        let has = |k| self.assignments_of(r, k, now).map(|v| !v.is_empty());
        Ok(AssignmentSummary {
            computer: has(AssignmentKind::Computer)?,
            datacenter: has(AssignmentKind::Datacenter)?,
            organization: has(AssignmentKind::Organization)?,
            site: has(AssignmentKind::Site)?,
            user: has(AssignmentKind::User)?,
        })
    }

    fn computer_view(
        &self,
        r: &LicenseRef,
        key: &DeviceKey,
        seat: &Seat,
        now: UnixTime,
    ) -> AssignmentView {
        let cat = self.state.catalog.get(&r.sku);
        let rights = cat.is_some_and(|c| c.vms_per_seat.is_some());
        let supported = self.seat_vm_allowance(seat);
        let vms = seat
            .assigned
            .as_ref()
            .map(|a| a.virtual_machines.clone())
            .unwrap_or_default();
        let mut why = self.common_reasons(r, rights, supported, &vms, now);
        let d = self.state.devices.get(key);
        if let (Some(n), Some(a)) = (d.and_then(|d| d.vm_count), supported) {
            if n > a {
                why.push(reasons::VM_OVERUSE);
            }
        }
        if seat.ends_at.is_some_and(|end| end <= now) {
            why.push(reasons::SEAT_ENDED);
        }
        let service = cat.map(|c| &c.service);
        if d.is_some_and(|d| service.is_some_and(|s| !d.services_wanted.contains(s))) {
            why.push(reasons::NOT_WANTED);
        }
        AssignmentView {
            license: r.clone(),
            kind: AssignmentKind::Computer,
            id: format!("{}:{}", key.0, key.1),
            device: Some(key.clone()),
            quantity: seat.quantity,
            virtual_machines: vms,
            has_vm_use_rights: rights,
            number_of_supported_virtual_machines: supported,
            invalid_reasons: why,
            is_auto_allocated: seat.assigned.is_none(),
            covered_hosts: Vec::new(),
        }
    }

    fn record_view(&self, r: &LicenseRef, a: &SnowAssignment, now: UnixTime) -> AssignmentView {
        let cat = self.state.catalog.get(&r.sku);
        let rights = cat.is_some_and(|c| c.vms_per_seat.is_some());
        let counts_vms = matches!(a.kind, AssignmentKind::Datacenter);
        let supported = cat
            .and_then(|c| c.vms_per_seat)
            .filter(|_| counts_vms)
            .map(|v| v.saturating_mul(a.quantity.max(1)));
        let mut why = self.common_reasons(r, rights, supported, &a.virtual_machines, now);
        let mut covered = Vec::new();
        if a.kind == AssignmentKind::Datacenter {
            let hosts: Vec<_> = self
                .state
                .devices
                .values()
                .filter(|d| d.datacenter.as_deref() == Some(a.target.as_str()))
                .collect();
            if hosts.is_empty() {
                why.push(reasons::NO_HOSTS);
            }
            if !rights && !why.contains(&reasons::NO_VM_USE_RIGHTS) {
                why.push(reasons::NO_VM_USE_RIGHTS);
            }
            let running: u64 = hosts
                .iter()
                .map(|d| u64::from(d.vm_count.unwrap_or(0)))
                .sum();
            if supported.is_some_and(|s| running > u64::from(s)) {
                why.push(reasons::VM_OVERUSE);
            }
            covered = hosts
                .iter()
                .filter(|d| {
                    d.seats.values().any(|s| {
                        s.datacenter.as_deref() == Some(a.target.as_str())
                            && s.subscription == r.subscription
                            && s.sku == r.sku
                    })
                })
                .map(|d| d.key())
                .collect();
        }
        AssignmentView {
            license: r.clone(),
            kind: a.kind,
            id: a.target.clone(),
            device: None,
            quantity: a.quantity,
            virtual_machines: a.virtual_machines.clone(),
            has_vm_use_rights: rights,
            number_of_supported_virtual_machines: supported,
            invalid_reasons: why,
            is_auto_allocated: false,
            covered_hosts: covered,
        }
    }

    fn common_reasons(
        &self,
        r: &LicenseRef,
        rights: bool,
        supported: Option<u32>,
        vms: &[String],
        now: UnixTime,
    ) -> Vec<&'static str> {
        let mut why = Vec::new();
        if self
            .state
            .subscriptions
            .get(&r.subscription)
            .is_none_or(|s| s.status(now) != SubscriptionStatus::Active)
        {
            why.push(reasons::SUBSCRIPTION_NOT_ACTIVE);
        }
        if !vms.is_empty() && !rights {
            why.push(reasons::NO_VM_USE_RIGHTS);
        }
        if supported.is_some_and(|s| vms.len() > s as usize) {
            why.push(reasons::TOO_MANY_VIRTUAL_MACHINES);
        }
        why
    }

    /// Adds or replaces one assignment of license `r`. A computer assignment makes the
    /// device's seat of the license (taking the place of a seat auto-licensing gave it for the
    /// same service); a datacenter assignment uses `quantity` seats and covers the hosts
    /// placed there. Nothing changes when it is refused.
    pub fn put_assignment(
        &mut self,
        r: &LicenseRef,
        req: AssignmentRequest,
        mode: PutMode,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        self.atomically(|e| {
            e.put_one(r, req, mode, now)?;
            Ok(e.settle_all(now))
        })
    }

    /// Deletes one assignment of license `r` (404 when it has none with that id). Deleting a
    /// computer's revokes the service on that device.
    pub fn delete_assignment(
        &mut self,
        r: &LicenseRef,
        kind: AssignmentKind,
        id: &str,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        self.assignment(r, kind, id, now)?;
        self.atomically(|e| {
            e.delete_one(r, kind, id);
            Ok(e.settle_all(now))
        })
    }

    /// Replaces every assignment of `kind` of license `r` that `visible` selects (a tenant
    /// token's own; every one for the MSP) with `reqs` (all of them checked first: one bad
    /// request changes nothing). Computers left out lose the service.
    pub fn replace_assignments(
        &mut self,
        r: &LicenseRef,
        kind: AssignmentKind,
        reqs: Vec<AssignmentRequest>,
        visible: &dyn Fn(&AssignmentView) -> bool,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        self.license(r)?;
        let mut seen = BTreeSet::new();
        for q in &reqs {
            if q.target.kind() != kind {
                return Err(EngineError::InvalidAssignment(format!(
                    "a {} assignment in a list of {} assignments",
                    q.target.kind().as_str(),
                    kind.as_str()
                )));
            }
            if !seen.insert(q.target.id()) {
                return Err(EngineError::InvalidAssignment(format!(
                    "{} {:?} is listed twice",
                    kind.as_str(),
                    q.target.id()
                )));
            }
        }
        if kind == AssignmentKind::Site && reqs.len() > 1 {
            return Err(EngineError::InvalidAssignment(
                "a license has one site assignment".into(),
            ));
        }
        self.atomically(|e| {
            let ids: Vec<String> = e
                .assignments_of(r, kind, now)?
                .into_iter()
                .filter(|a| !a.is_auto_allocated && visible(a))
                .map(|a| a.id)
                .collect();
            for id in ids.iter().filter(|id| !seen.contains(*id)) {
                e.delete_one(r, kind, id);
            }
            for q in reqs {
                let exists = ids.contains(&q.target.id());
                let mode = if exists {
                    PutMode::Replace
                } else {
                    PutMode::Add
                };
                e.put_one(r, q, mode, now)?;
            }
            Ok(e.settle_all(now))
        })
    }

    /// Deletes every assignment of `kind` of license `r` that `visible` selects. For
    /// computers that is every seat of the license, auto-licensed ones included: each of those
    /// devices loses the service.
    pub fn delete_assignments(
        &mut self,
        r: &LicenseRef,
        kind: AssignmentKind,
        visible: &dyn Fn(&AssignmentView) -> bool,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        let ids: Vec<String> = self
            .assignments_of(r, kind, now)?
            .into_iter()
            .filter(|a| visible(a))
            .map(|a| a.id)
            .collect();
        self.atomically(|e| {
            for id in &ids {
                e.delete_one(r, kind, id);
            }
            tracing::info!(license = %r, kind = kind.as_str(), removed = ids.len(), "license assignments deleted");
            Ok(e.settle_all(now))
        })
    }

    /// Places a host in a datacenter (`None`: takes it out). Datacenter assignments with VM use
    /// rights cover the hosts placed in their datacenter.
    pub fn place_device(
        &mut self,
        key: &DeviceKey,
        datacenter: Option<String>,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        let d = self
            .state
            .devices
            .get_mut(key)
            .ok_or_else(|| EngineError::UnknownDevice(key.0.clone(), key.1.clone()))?;
        if d.datacenter != datacenter {
            tracing::info!(tenant = %key.0, device = %key.1, ?datacenter, "host placed");
            d.datacenter = datacenter;
            self.dirty.devices.insert(key.clone());
        }
        Ok(self.settle_all(now))
    }

    /// Runs `f` on the engine; when it fails, the engine is as before (the ledger has not
    /// seen anything yet: dirty marks are restored with the rest).
    fn atomically<T>(
        &mut self,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let before = self.clone();
        let r = f(self);
        if r.is_err() {
            *self = before;
        }
        r
    }

    fn put_one(
        &mut self,
        r: &LicenseRef,
        req: AssignmentRequest,
        mode: PutMode,
        now: UnixTime,
    ) -> Result<(), EngineError> {
        let (sub, cat) = self.license(r)?;
        let (sub, cat) = (sub.clone(), cat.clone());
        let kind = req.target.kind();
        let id = req.target.id();
        if req.quantity == 0 {
            return Err(EngineError::InvalidAssignment(
                "quantity must be at least 1".into(),
            ));
        }
        let exists = self.assignment(r, kind, &id, now).ok();
        // An auto-allocated seat is no operator's assignment: adding over it is allowed.
        let exists_explicit = exists.as_ref().is_some_and(|a| !a.is_auto_allocated);
        match (mode, exists_explicit) {
            (PutMode::Add, true) => {
                return Err(EngineError::AssignmentExists {
                    license: r.to_string(),
                    kind: kind.as_str(),
                    id,
                })
            }
            (PutMode::Replace, false) => {
                return Err(EngineError::UnknownAssignment {
                    license: r.to_string(),
                    kind: kind.as_str(),
                    id,
                })
            }
            _ => {}
        }
        if kind == AssignmentKind::Site && mode == PutMode::Add {
            if let Some(other) = self.assignments_of(r, kind, now)?.first() {
                return Err(EngineError::AssignmentExists {
                    license: r.to_string(),
                    kind: kind.as_str(),
                    id: other.id.clone(),
                });
            }
        }
        // Seats: what this assignment uses now is given back before counting.
        let uses_seats = matches!(kind, AssignmentKind::Computer | AssignmentKind::Datacenter);
        if uses_seats {
            let held = exists.as_ref().map_or(0, |a| a.quantity);
            let assigned = self.used_seats(&r.subscription, &r.sku, now);
            let free = u64::from(self.limit_of(r))
                .saturating_sub(u64::from(assigned).saturating_sub(u64::from(held)));
            if u64::from(req.quantity) > free {
                return Err(EngineError::NotEnoughSeats {
                    license: r.to_string(),
                    free,
                    quantity: u64::from(req.quantity),
                });
            }
        }
        match req.target {
            Target::Computer(key) => {
                let d = self
                    .state
                    .devices
                    .get(&key)
                    .ok_or_else(|| EngineError::UnknownDevice(key.0.clone(), key.1.clone()))?;
                if d.product_class != cat.product_class {
                    return Err(EngineError::InvalidAssignment(format!(
                        "license {r} is for product class {:?}; computer {id} is {:?}",
                        cat.product_class, d.product_class
                    )));
                }
                if !self.may_use(&key.0, &sub) {
                    return Err(EngineError::InvalidAssignment(format!(
                        "customer {} may not use subscription {} (not its own, bound or the \
                         MSP's)",
                        key.0, sub.id
                    )));
                }
                let service = cat.service.clone();
                self.release_seat(&key, &service);
                let seat = Seat {
                    quantity: req.quantity,
                    assigned: Some(ComputerAssignment {
                        virtual_machines: req.virtual_machines,
                    }),
                    ..Seat::new(r.subscription.clone(), r.sku.clone(), now)
                };
                let counted = seat.counted();
                if let Some(d) = self.state.devices.get_mut(&key) {
                    d.seats.insert(service.clone(), seat);
                    d.unassigned.remove(&service);
                }
                let n = self
                    .assigned
                    .entry((r.subscription.clone(), r.sku.clone()))
                    .or_default();
                *n = n.saturating_add(counted);
                self.dirty.devices.insert(key.clone());
                tracing::info!(license = %r, tenant = %key.0, device = %key.1, quantity = req.quantity, "license assigned to computer");
            }
            Target::Other(kind, target) => {
                if matches!(kind, AssignmentKind::Organization | AssignmentKind::Site) {
                    let customer = licd_protocol::TenantId::new(&target).map_err(|e| {
                        EngineError::InvalidAssignment(format!("organization id {target:?}: {e}"))
                    })?;
                    if !self.state.customers.contains_key(&customer) {
                        return Err(EngineError::UnknownCustomer(customer));
                    }
                    if !self.may_use(&customer, &sub) {
                        return Err(EngineError::InvalidAssignment(format!(
                            "organization {customer} may not use subscription {} (not its own, \
                             bound or the MSP's)",
                            sub.id
                        )));
                    }
                }
                if let Some(old) = exists.filter(|_| mode == PutMode::Replace || exists_explicit) {
                    self.delete_one(r, kind, &old.id);
                }
                let a = SnowAssignment {
                    subscription: r.subscription.clone(),
                    sku: r.sku.clone(),
                    kind,
                    target,
                    quantity: req.quantity,
                    virtual_machines: req.virtual_machines,
                    created_at: now,
                };
                if kind == AssignmentKind::Datacenter {
                    let n = self
                        .assigned
                        .entry((r.subscription.clone(), r.sku.clone()))
                        .or_default();
                    *n = n.saturating_add(a.quantity);
                }
                tracing::info!(license = %r, kind = kind.as_str(), target = %a.target, quantity = a.quantity, "license assigned");
                let key = a.key();
                self.state.snow.insert(key.clone(), a);
                self.dirty.snow.insert(key);
            }
        }
        Ok(())
    }

    /// Removes one assignment (which exists). A computer's seat goes, and the device's service
    /// is marked unassigned so auto-licensing does not give it back.
    fn delete_one(&mut self, r: &LicenseRef, kind: AssignmentKind, id: &str) {
        if kind == AssignmentKind::Computer {
            let Some(key) = self
                .state
                .devices
                .values()
                .find_map(|d| (format!("{}:{}", d.tenant, d.id) == id).then(|| d.key()))
            else {
                return;
            };
            let Some(service) = self.state.catalog.get(&r.sku).map(|c| c.service.clone()) else {
                return;
            };
            let holds = self
                .state
                .devices
                .get(&key)
                .and_then(|d| d.seats.get(&service))
                .is_some_and(|s| s.subscription == r.subscription && s.sku == r.sku);
            if holds {
                self.release_seat(&key, &service);
                if let Some(d) = self.state.devices.get_mut(&key) {
                    d.unassigned.insert(service.clone());
                }
                tracing::info!(license = %r, tenant = %key.0, device = %key.1, %service, "computer assignment removed: service revoked");
            }
            return;
        }
        let key: SnowKey = (r.to_string(), kind, id.to_string());
        if let Some(a) = self.state.snow.remove(&key) {
            if kind == AssignmentKind::Datacenter {
                if let Some(n) = self.assigned.get_mut(&(a.subscription, a.sku)) {
                    *n = n.saturating_sub(a.quantity);
                }
            }
            self.dirty.snow.insert(key);
            tracing::info!(license = %r, kind = kind.as_str(), target = id, "license assignment removed");
        }
    }

    /// Gives every host placed in a datacenter a seat from a datacenter assignment with VM use
    /// rights when it wants the service and holds no other seat for it, and takes such seats
    /// back when the assignment, the placement or the want is gone. Returns whether anything
    /// changed.
    pub(super) fn cover_datacenters(&mut self, now: UnixTime) -> bool {
        let mut changed = false;
        let keys: Vec<DeviceKey> = self.state.devices.keys().cloned().collect();
        for key in keys {
            changed |= self.cover_host(&key, now);
        }
        changed
    }

    /// [`Engine::cover_datacenters`] for one host.
    pub(super) fn cover_host(&mut self, key: &DeviceKey, now: UnixTime) -> bool {
        let Some(d) = self.state.devices.get(key) else {
            return false;
        };
        let mut drop: Vec<ServiceName> = Vec::new();
        let mut give: Vec<(ServiceName, SnowAssignment)> = Vec::new();
        // Seats from datacenters that no longer cover this host.
        for (service, seat) in &d.seats {
            let Some(dc) = &seat.datacenter else { continue };
            let still = d.datacenter.as_deref() == Some(dc.as_str())
                && d.services_wanted.contains(service)
                && self.covering(d, service, now).is_some_and(|a| {
                    a.target == *dc && a.subscription == seat.subscription && a.sku == seat.sku
                });
            if !still {
                drop.push(service.clone());
            }
        }
        if d.datacenter.is_some() && self.state.customers.contains_key(&d.tenant) {
            for service in &d.services_wanted {
                if d.seats.contains_key(service) && !drop.contains(service) {
                    continue;
                }
                if d.unassigned.contains(service) {
                    continue;
                }
                if let Some(a) = self.covering(d, service, now) {
                    give.push((service.clone(), a.clone()));
                }
            }
        }
        let changed = !drop.is_empty() || !give.is_empty();
        for service in drop {
            self.release_seat(key, &service);
        }
        for (service, a) in give {
            if let Some(d) = self.state.devices.get_mut(key) {
                d.seats.insert(
                    service,
                    Seat {
                        datacenter: Some(a.target.clone()),
                        ..Seat::new(a.subscription.clone(), a.sku.clone(), now)
                    },
                );
            }
        }
        if changed {
            self.dirty.devices.insert(key.clone());
        }
        changed
    }

    /// The datacenter assignment that covers host `d` for `service`: one of its datacenter,
    /// for a license with VM use rights of the service and the host's product class, whose
    /// subscription is active and the host's customer may use. The first by key.
    fn covering(
        &self,
        d: &super::model::Device,
        service: &ServiceName,
        now: UnixTime,
    ) -> Option<&SnowAssignment> {
        let dc = d.datacenter.as_deref()?;
        self.state.snow.values().find(|a| {
            a.kind == AssignmentKind::Datacenter
                && a.target == dc
                && self.state.catalog.get(&a.sku).is_some_and(|c| {
                    &c.service == service
                        && c.product_class == d.product_class
                        && c.vms_per_seat.is_some()
                })
                && self
                    .state
                    .subscriptions
                    .get(&a.subscription)
                    .is_some_and(|s| {
                        s.status(now) == SubscriptionStatus::Active && self.may_use(&d.tenant, s)
                    })
        })
    }
}
