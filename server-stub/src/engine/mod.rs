//! The licensing engine: customers, subscriptions, auto-licensing, per-VM counting and
//! compliance with the seed semantics (see `shared/seeds/README.md`), as pure logic.
//!
//! No I/O, no clock: every call takes `now` (unix seconds) and returns what the shell must do
//! ([`Effects`]: bundles to sign and publish), the way `rumqttc`'s state machine returns
//! packets to send. What changed is tracked in a [`Dirty`] set that the ledger drains after
//! each call and writes in one transaction — before the shell publishes anything, so a
//! bundle's `seq` is on disk before any device can see it.

pub mod assign;
pub mod compliance;
pub mod coterm;
pub mod delegation;
pub mod model;
pub mod select;
pub mod views;

mod alloc;
mod bundle;
pub mod manage;
pub mod offline;
pub mod ops;
pub mod outlook;
pub mod policy;
mod report;
pub mod usage;

#[cfg(test)]
mod assign_tests;
#[cfg(test)]
mod delegation_tests;
#[cfg(test)]
mod manage_tests;
#[cfg(test)]
mod offline_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod seed_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::{GrantBundle, KeyId, LicenseId, ServiceName, Sku, TenantId};
use serde::{Deserialize, Serialize};

pub use model::{
    AssignmentKind, AutoLicense, BundleBasis, BundleState, CatalogEntry, ComputerAssignment,
    Customer, CustomerKind, Device, DeviceKey, Entitlement, GrantBasis, Seat, SnowAssignment,
    SnowKey, Subscription, SubscriptionStatus,
};
pub use report::ANSWER_IN_FLIGHT_SECS;
pub use select::Selection;

/// One day in seconds.
pub const DAY: u64 = 24 * 60 * 60;

/// The most seats one SKU of a subscription may have: the admin API documents seat counts as
/// `int32`, so a larger number is refused rather than stored (issue 16 item 5).
pub const MAX_SEATS: u32 = i32::MAX.unsigned_abs();

/// How long grants last and how much slack devices get (policy, not protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePolicy {
    /// Seconds a bundle's lease runs from its issue: the device must hear from the controller
    /// again by then. Default 7 days.
    pub lease_secs: u64,
    /// Seconds a service keeps running after its lease or term ends. Default 30 days.
    pub grace_secs: u64,
    /// Lease of a bundle answering an activation request (licensing by file): the device
    /// cannot renew often. Default 90 days (config `offline_lease_days`).
    #[serde(default = "default_offline_lease")]
    pub offline_lease_secs: u64,
}

fn default_offline_lease() -> u64 {
    90 * DAY
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            lease_secs: 7 * DAY,
            grace_secs: 30 * DAY,
            offline_lease_secs: default_offline_lease(),
        }
    }
}

impl LeasePolicy {
    /// Seconds after issue when the device should report again: half the lease, so one missed
    /// refresh still leaves half a lease.
    pub fn refresh_secs(&self) -> u64 {
        (self.lease_secs / 2).max(1)
    }
}

/// Why an operation on the engine was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No such customer.
    #[error("unknown customer {0}")]
    UnknownCustomer(TenantId),
    /// A customer with that id exists.
    #[error("customer {0} already exists")]
    CustomerExists(TenantId),
    /// There is already an MSP.
    #[error("there is already an MSP customer ({0})")]
    MspExists(TenantId),
    /// No such subscription.
    #[error("unknown subscription {0}")]
    UnknownSubscription(LicenseId),
    /// A subscription with that id exists.
    #[error("subscription {0} already exists")]
    SubscriptionExists(LicenseId),
    /// The term ends before it starts.
    #[error("subscription term ends ({end}) before it starts ({start})")]
    InvalidTerm {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// No subscription has that claim key.
    #[error("no subscription has this claim key")]
    UnknownClaimKey,
    /// Another subscription already uses that claim key.
    #[error("claim key already used by subscription {0}")]
    ClaimKeyInUse(LicenseId),
    /// The subscription was claimed already.
    #[error("subscription {0} is already claimed")]
    AlreadyClaimed(LicenseId),
    /// A SKU not in the catalogue.
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    /// A SKU already in the catalogue.
    #[error("SKU {0} is already in the catalogue")]
    SkuExists(Sku),
    /// A service no SKU of the catalogue licenses.
    #[error("no SKU in the catalogue licenses service {0}")]
    UnknownService(ServiceName),
    /// The request names no service (`services` is required).
    #[error("services is required and must not be empty")]
    NoServices,
    /// No such device.
    #[error("unknown device {1} of tenant {0}")]
    UnknownDevice(TenantId, licd_protocol::DeviceId),
    /// The device's `seq` cannot be raised any further.
    #[error("bundle seq exhausted for this device")]
    SeqExhausted,
    /// The request names no customer.
    #[error("customer_ids is required and must not be empty")]
    NoCustomers,
    /// Both `include_customers` and `exclude_customers` given: the seeds give each a meaning
    /// alone and none together, so the request is refused rather than guessed at.
    #[error(
        "give include_customers or exclude_customers, not both (the seeds define no meaning \
         for both together)"
    )]
    IncludeAndExclude,
    /// The subscription has no owner yet (claim it first).
    #[error("subscription {0} is not claimed; claim it before binding customers to it")]
    Unclaimed(LicenseId),
    /// The customer still owns subscriptions or has devices.
    #[error("customer {0} is in use: {1}")]
    CustomerInUse(TenantId, String),
    /// The subscription has no entitlement for that SKU.
    #[error("subscription {0} has no entitlement for SKU {1}")]
    NotEntitled(LicenseId, Sku),
    /// A subscription lists the same SKU twice (its seats are one number per SKU).
    #[error("SKU {0} is listed twice; give each SKU once with all its seats")]
    DuplicateSku(Sku),
    /// A seat limit above [`MAX_SEATS`].
    #[error("{limit} seats of {sku} is more than the most a SKU may have ({MAX_SEATS})")]
    TooManySeats {
        /// SKU.
        sku: Sku,
        /// Limit asked for.
        limit: u32,
    },
    /// A delegation's seats cannot be reserved in full (issue 23).
    #[error(
        "cannot delegate {seats} seats of {service}: {free} are free in subscriptions active \
         for the whole delegation (the tenant's own, those it is bound to, the MSP's)"
    )]
    NotEnoughForDelegation {
        /// Service.
        service: ServiceName,
        /// Seats asked for.
        seats: u32,
        /// Seats that could be reserved.
        free: u32,
    },
    /// A delegation that breaks a rule (a service twice, an empty pool, an empty window).
    #[error("delegation: {0}")]
    InvalidDelegation(String),
    /// No such delegation.
    #[error("unknown delegation {0}")]
    UnknownDelegation(String),
    /// The delegation was returned or revoked already.
    #[error("delegation {id} is {state} already")]
    DelegationEnded {
        /// Id.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// A licensing policy with a value out of range (issue 20).
    #[error("invalid policy: {0}")]
    InvalidPolicy(policy::PolicyError),
    /// No license of the organization has that key (Meraki co-term move).
    #[error("the organization has no license with key {0:?}")]
    UnknownLicenseKey(String),
    /// No license `<subscriptionId>:<sku>` (Snow).
    #[error("unknown license {0:?} (ids are <subscriptionId>:<sku>)")]
    UnknownLicense(String),
    /// The license has no such assignment.
    #[error("license {license} has no {kind} assignment {id:?}")]
    UnknownAssignment {
        /// License.
        license: String,
        /// Kind of assignment.
        kind: &'static str,
        /// Assignment id.
        id: String,
    },
    /// The license already has that assignment (replace it instead).
    #[error("license {license} already has a {kind} assignment {id:?}; replace it with PUT")]
    AssignmentExists {
        /// License.
        license: String,
        /// Kind of assignment.
        kind: &'static str,
        /// Assignment id.
        id: String,
    },
    /// The license has fewer free seats than the assignment's quantity.
    #[error("license {license} has {free} free seats; the assignment needs {quantity}")]
    NotEnoughSeats {
        /// License.
        license: String,
        /// Seats free (counting those the replaced assignments give back).
        free: u64,
        /// Seats asked for.
        quantity: u64,
    },
    /// An assignment the license cannot have (wrong product class, a customer that may not
    /// use the subscription, a target named twice).
    #[error("assignment: {0}")]
    InvalidAssignment(String),
    /// A license move that cannot be done as asked.
    #[error("license move: {0}")]
    InvalidMove(String),
    /// A seat limit below the seats already assigned.
    #[error("{assigned} seats of {sku} are assigned; a limit of {limit} would take seats away (unassign first)")]
    SeatsInUse {
        /// SKU.
        sku: Sku,
        /// Seats assigned now.
        assigned: u32,
        /// Limit asked for.
        limit: u32,
    },
}

/// Why a device report was refused. The report changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportRefused {
    /// The report is signed by another key than the one pinned for the device.
    #[error("device key {got} differs from the pinned key {pinned}")]
    KeyMismatch {
        /// Pinned key.
        pinned: KeyId,
        /// Key of the report.
        got: KeyId,
    },
    /// The device's `seq` cannot be raised any further (it reported `u64::MAX`).
    #[error("bundle seq exhausted for this device")]
    SeqExhausted,
}

/// What the shell must do after an engine call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "bundles in Effects must be signed and published"]
pub struct Effects {
    /// New bundles, each to be sealed and published retained to its device's grants topic
    /// (after the ledger has stored the engine's changes).
    pub publish: Vec<GrantBundle>,
}

/// Records changed since the last [`Engine::take_dirty`], by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Customers.
    pub customers: BTreeSet<TenantId>,
    /// Catalogue entries.
    pub catalog: BTreeSet<Sku>,
    /// Subscriptions.
    pub subscriptions: BTreeSet<LicenseId>,
    /// Auto-licensing policies.
    pub policies: BTreeSet<ServiceName>,
    /// Devices (identity, key, seats, bundle state).
    pub devices: BTreeSet<DeviceKey>,
    /// Of `devices`, those first seen since the last commit: the ledger holds no rows of
    /// them, so storing them deletes none (on PostgreSQL a delete that finds nothing still
    /// probes an index per device and table: a third of a turn of new devices).
    pub new_devices: BTreeSet<DeviceKey>,
    /// Snow assignments to datacenters, organizations, sites and users.
    pub snow: BTreeSet<SnowKey>,
    /// SKU policies (issue 20).
    pub sku_policies: BTreeSet<Sku>,
    /// Subscription policies (issue 20).
    pub subscription_policies: BTreeSet<LicenseId>,
    /// Usage windows to upsert into the history, in order (issue 20).
    pub usage_windows: Vec<usage::UsageWindow>,
    /// Site delegations (issue 23).
    pub delegations: BTreeSet<String>,
}

impl Dirty {
    /// Whether only devices changed (and usage history, which is not engine state): another
    /// replica then catches up by reloading these devices alone ([`Engine::replace_devices`]).
    pub fn only_devices(&self) -> bool {
        self.customers.is_empty()
            && self.catalog.is_empty()
            && self.subscriptions.is_empty()
            && self.policies.is_empty()
            && self.snow.is_empty()
            && self.sku_policies.is_empty()
            && self.subscription_policies.is_empty()
            && self.delegations.is_empty()
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.only_devices() && self.devices.is_empty() && self.usage_windows.is_empty()
    }
}

/// Everything the engine knows; what the ledger stores and loads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Customers by id.
    pub customers: BTreeMap<TenantId, Customer>,
    /// Catalogue by SKU.
    pub catalog: BTreeMap<Sku, CatalogEntry>,
    /// Subscriptions by id.
    pub subscriptions: BTreeMap<LicenseId, Subscription>,
    /// Auto-licensing policy per service.
    pub policies: BTreeMap<ServiceName, AutoLicense>,
    /// Devices by (tenant, device).
    pub devices: BTreeMap<DeviceKey, Device>,
    /// Customers bound to a subscription they do not own (Meraki bind): their devices may use
    /// its seats after their own subscriptions' and before the MSP's. Stored with the
    /// subscription (a subscription in [`Dirty::subscriptions`] has its bindings written too).
    pub bindings: BTreeMap<LicenseId, BTreeSet<TenantId>>,
    /// Snow assignments to datacenters, organizations, sites and users (computer assignments
    /// are the devices' seats).
    pub snow: BTreeMap<SnowKey, SnowAssignment>,
    /// Licensing policy per catalogue SKU: the default of its seats (issue 20).
    pub sku_policies: BTreeMap<Sku, policy::Policy>,
    /// Licensing policy per subscription: overrides its SKUs' field by field (issue 20).
    pub subscription_policies: BTreeMap<LicenseId, policy::Policy>,
    /// Site delegations by id (issue 23): their reservations count as used seats.
    pub delegations: BTreeMap<String, delegation::DelegationRecord>,
}

/// The licensing engine. See the module docs.
#[derive(Debug, Clone)]
pub struct Engine {
    state: State,
    lease: LeasePolicy,
    /// Seats assigned per (subscription, SKU); derived from the devices' seats.
    assigned: BTreeMap<(LicenseId, Sku), u32>,
    dirty: Dirty,
    /// The device whose file request is being answered (its report is not a device coming
    /// online, and its bundle gets the offline lease).
    answering_file: Option<DeviceKey>,
}

impl Engine {
    /// An empty engine.
    pub fn new(lease: LeasePolicy) -> Self {
        Self::from_state(State::default(), lease)
    }

    /// An engine over `state` (as loaded by the ledger).
    pub fn from_state(state: State, lease: LeasePolicy) -> Self {
        let mut assigned: BTreeMap<(LicenseId, Sku), u32> = BTreeMap::new();
        for d in state.devices.values() {
            for seat in d.seats.values() {
                let n = assigned
                    .entry((seat.subscription.clone(), seat.sku.clone()))
                    .or_default();
                *n = n.saturating_add(seat.counted());
            }
        }
        // A datacenter assignment uses its quantity of the license's seats.
        for a in state.snow.values() {
            if a.kind == AssignmentKind::Datacenter {
                let n = assigned
                    .entry((a.subscription.clone(), a.sku.clone()))
                    .or_default();
                *n = n.saturating_add(a.quantity);
            }
        }
        Self {
            state,
            lease,
            assigned,
            dirty: Dirty::default(),
            answering_file: None,
        }
    }

    /// Puts devices another replica changed in place of this engine's copies (`None`: the
    /// ledger has none), keeping the seat counts derived from them exact: the partial form of
    /// [`Engine::from_state`], for when only devices changed ([`Dirty::only_devices`]).
    pub fn replace_devices(
        &mut self,
        changed: impl IntoIterator<Item = (DeviceKey, Option<Device>)>,
    ) {
        for (key, device) in changed {
            if let Some(old) = self.state.devices.remove(&key) {
                for seat in old.seats.values() {
                    let k = (seat.subscription.clone(), seat.sku.clone());
                    if let Some(n) = self.assigned.get_mut(&k) {
                        *n = n.saturating_sub(seat.counted());
                    }
                }
            }
            if let Some(d) = device {
                for seat in d.seats.values() {
                    let n = self
                        .assigned
                        .entry((seat.subscription.clone(), seat.sku.clone()))
                        .or_default();
                    *n = n.saturating_add(seat.counted());
                }
                self.state.devices.insert(key, d);
            }
        }
    }

    /// Read access to every record.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The lease policy in force.
    pub fn lease_policy(&self) -> LeasePolicy {
        self.lease
    }

    /// Changes the lease policy; bundles issued from now on use it.
    pub fn set_lease_policy(&mut self, lease: LeasePolicy) {
        self.lease = lease;
    }

    /// Drains the set of records changed since the last call.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// Marks records changed again (after the ledger failed to store them).
    pub fn mark_dirty(&mut self, dirty: Dirty) {
        self.dirty.customers.extend(dirty.customers);
        self.dirty.catalog.extend(dirty.catalog);
        self.dirty.subscriptions.extend(dirty.subscriptions);
        self.dirty.policies.extend(dirty.policies);
        self.dirty.devices.extend(dirty.devices);
        self.dirty.new_devices.extend(dirty.new_devices);
        self.dirty.snow.extend(dirty.snow);
        self.dirty.sku_policies.extend(dirty.sku_policies);
        self.dirty
            .subscription_policies
            .extend(dirty.subscription_policies);
        self.dirty.usage_windows.extend(dirty.usage_windows);
        self.dirty.delegations.extend(dirty.delegations);
    }

    /// Seats assigned from `sku` of subscription `sub`.
    pub fn assigned_seats(&self, sub: &LicenseId, sku: &Sku) -> u32 {
        self.assigned
            .get(&(sub.clone(), sku.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// The MSP customer, if there is one.
    pub fn msp(&self) -> Option<&Customer> {
        self.state
            .customers
            .values()
            .find(|c| c.kind == CustomerKind::Msp)
    }
}
