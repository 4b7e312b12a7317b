//! The records the engine keeps: customers, the SKU catalogue, subscriptions with their
//! entitlements, auto-licensing policies and devices with their seats. Plain data, serde-able
//! so the ledger can store it; the rules live in the sibling modules.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::{
    DeviceId, LicenseId, PublicKey, ServiceName, Sku, TenantId, UnixTime, Withheld,
};
use serde::{Deserialize, Serialize};

/// A device is named by its tenant and its id within the tenant.
pub type DeviceKey = (TenantId, DeviceId);

/// Whether a customer is the managed-service provider or one of its tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerKind {
    /// The MSP: at most one; its subscriptions serve every tenant.
    Msp,
    /// A tenant customer of the MSP.
    Tenant,
}

/// A customer (Aruba: MSP or tenant; Meraki: organization). Its id is the tenant level of its
/// devices' topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Id, also the topic level.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// MSP or tenant.
    pub kind: CustomerKind,
    /// When it was created.
    pub created_at: UnixTime,
}

/// One SKU of the catalogue (Meraki entitlements catalogue, Snow VM use rights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The SKU.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// The service a seat of this SKU licenses.
    pub service: ServiceName,
    /// The product class of devices the SKU is for (matched against a report's
    /// `product_class`).
    pub product_class: String,
    /// For per-VM licenses (Snow `numberOfSupportedVirtualMachines`): VMs one seat covers on a
    /// host. `None` = not counted per VM.
    pub vms_per_seat: Option<u32>,
}

/// Seats of one SKU in a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// The SKU (must be in the catalogue).
    pub sku: Sku,
    /// Seat limit.
    pub limit: u32,
}

/// A subscription (Meraki): a term and seats per SKU, owned by a customer once claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Id, carried in grants as the license id.
    pub id: LicenseId,
    /// Friendly name.
    pub name: String,
    /// Owner; `None` until claimed with its claim key.
    pub owner: Option<TenantId>,
    /// Claim key, if the subscription is (or was) claimable.
    pub claim_key: Option<String>,
    /// Start of the term (`not_before` of its grants).
    pub start: UnixTime,
    /// End of the term (`not_after` of its grants).
    pub end: UnixTime,
    /// Seats per SKU.
    pub entitlements: Vec<Entitlement>,
}

/// Where a subscription stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    /// Not claimed by any customer yet.
    Unclaimed,
    /// Claimed; its term has not started.
    Inactive,
    /// Claimed and within its term.
    Active,
    /// Its term has ended.
    Expired,
}

impl Subscription {
    /// Status at `now`.
    pub fn status(&self, now: UnixTime) -> SubscriptionStatus {
        if self.owner.is_none() {
            SubscriptionStatus::Unclaimed
        } else if now < self.start {
            SubscriptionStatus::Inactive
        } else if now >= self.end {
            SubscriptionStatus::Expired
        } else {
            SubscriptionStatus::Active
        }
    }
}

/// Auto-licensing of one service (Aruba seed 000/001).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoLicense {
    /// Enabled at the MSP level: tenants created later inherit it.
    pub inherit_to_new_tenants: bool,
    /// Customers it is enabled for.
    pub customers: BTreeSet<TenantId>,
    /// Assignment is paused: fewer seats than devices that need them.
    pub paused: bool,
}

/// A seat of a subscription held by a device for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    /// Subscription the seat comes from.
    pub subscription: LicenseId,
    /// SKU of the seat.
    pub sku: Sku,
    /// When it was assigned.
    pub since: UnixTime,
    /// When the seat stops being good although its subscription runs on: its license was
    /// moved to another organization (Meraki co-term move) and the source no longer holds
    /// enough seats. Grants carry it as their term end, so the device goes into grace.
    #[serde(default)]
    pub ends_at: Option<UnixTime>,
    /// Seats of the SKU this one stands for (Snow assignment `quantity`; auto-licensing
    /// assigns 1). A per-VM SKU covers `vms_per_seat × quantity` VMs.
    #[serde(default = "one")]
    pub quantity: u32,
    /// Made by an operator's Snow computer assignment (not by auto-licensing): it stays while
    /// the device stops wanting the service, and its removal revokes the service.
    #[serde(default)]
    pub assigned: Option<ComputerAssignment>,
    /// Given by a datacenter assignment of this datacenter (the device is placed in it): the
    /// datacenter assignment's quantity counts against the license, not this seat.
    #[serde(default)]
    pub datacenter: Option<String>,
}

fn one() -> u32 {
    1
}

impl Seat {
    /// A seat of one unit from `subscription`/`sku` since `since`, as auto-licensing gives.
    pub fn new(subscription: LicenseId, sku: Sku, since: UnixTime) -> Self {
        Self {
            subscription,
            sku,
            since,
            ends_at: None,
            quantity: 1,
            assigned: None,
            datacenter: None,
        }
    }

    /// Seats of the license this one uses: a datacenter's hosts use the datacenter
    /// assignment's, not their own.
    pub fn counted(&self) -> u32 {
        if self.datacenter.is_some() {
            0
        } else {
            self.quantity
        }
    }
}

/// What an operator's Snow computer assignment adds to a seat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerAssignment {
    /// The virtual machines the assignment names (Snow `virtualMachines`, VM ids). Agents
    /// report a VM count, not ids: the list is the operator's record, checked against the
    /// supported number in `invalidAssignmentReasons`.
    pub virtual_machines: Vec<String>,
}

/// The kinds of Snow license assignment (seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentKind {
    /// A device (Snow computer); kept as the device's [`Seat`].
    Computer,
    /// A datacenter: covers the hosts placed in it when the license has VM use rights.
    Datacenter,
    /// An organization (a customer): an allocation, no seat of a device.
    Organization,
    /// The license's site (one per license, named by an organization).
    Site,
    /// A user: recorded; devices do not report users.
    User,
}

impl AssignmentKind {
    /// Every kind, in the order of the assignment types list.
    pub const ALL: [AssignmentKind; 5] = [
        AssignmentKind::Computer,
        AssignmentKind::Datacenter,
        AssignmentKind::Organization,
        AssignmentKind::Site,
        AssignmentKind::User,
    ];

    /// The word used in the ledger and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentKind::Computer => "computer",
            AssignmentKind::Datacenter => "datacenter",
            AssignmentKind::Organization => "organization",
            AssignmentKind::Site => "site",
            AssignmentKind::User => "user",
        }
    }
}

/// A Snow assignment of a license to a datacenter, organization, site or user (computer
/// assignments are device seats). Keyed by license, kind and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnowAssignment {
    /// The license's subscription.
    pub subscription: LicenseId,
    /// The license's SKU.
    pub sku: Sku,
    /// What it is assigned to.
    pub kind: AssignmentKind,
    /// The datacenter, organization (customer) or user id.
    pub target: String,
    /// Quantity (datacenters: seats of the license it uses; organizations: allocated).
    pub quantity: u32,
    /// Virtual machines named (datacenters).
    #[serde(default)]
    pub virtual_machines: Vec<String>,
    /// When it was made.
    pub created_at: UnixTime,
}

/// A [`SnowAssignment`]'s key: `(<subscription>:<sku>, kind, target)`.
pub type SnowKey = (String, AssignmentKind, String);

impl SnowAssignment {
    /// Its key.
    pub fn key(&self) -> SnowKey {
        (
            format!("{}:{}", self.subscription, self.sku),
            self.kind,
            self.target.clone(),
        )
    }
}

/// What a device's bundle says, without the times that change on every issue. A new bundle is
/// issued when this changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleBasis {
    /// Granted services, sorted by service.
    pub grants: Vec<GrantBasis>,
    /// Withheld services, sorted by service.
    pub withheld: Vec<Withheld>,
}

/// One grant of a [`BundleBasis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBasis {
    /// Service.
    pub service: ServiceName,
    /// Subscription.
    pub license: LicenseId,
    /// SKU.
    pub sku: Sku,
    /// Term start.
    pub not_before: UnixTime,
    /// Term end.
    pub not_after: UnixTime,
    /// VM allowance for per-VM SKUs.
    pub vm_allowance: Option<u32>,
    /// The licensing policy of the grant (issue 20); bases stored before it existed read
    /// back as the default, the behaviour they were issued with.
    #[serde(default)]
    pub policy: super::policy::EffectivePolicy,
}

/// The last bundle issued to a device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleState {
    /// Its `seq` (0 = none issued yet). Never goes backwards.
    pub seq: u64,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When the device should report again.
    pub refresh_after: UnixTime,
    /// What it said.
    pub basis: Option<BundleBasis>,
}

/// A device as last reported, with its pinned key, seats and bundle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Tenant (may name an unknown customer: such devices get empty bundles).
    pub tenant: TenantId,
    /// Id.
    pub id: DeviceId,
    /// Device key pinned on first contact.
    pub key: PublicKey,
    /// Hardware model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Product class, matched against the catalogue.
    pub product_class: String,
    /// Firmware version.
    pub firmware_version: String,
    /// Agent version.
    pub agent_version: String,
    /// VMs running, as last reported.
    pub vm_count: Option<u32>,
    /// Services the device wants.
    pub services_wanted: BTreeSet<ServiceName>,
    /// First report.
    pub first_seen: UnixTime,
    /// Last report (controller time).
    pub last_report_at: UnixTime,
    /// The device's own clock in its last report.
    pub reported_clock: UnixTime,
    /// The device flagged a clock rollback in its last report.
    pub clock_rollback: bool,
    /// `seq` of the bundle the device said it holds.
    pub reported_seq: u64,
    /// Seats held, at most one per service.
    pub seats: BTreeMap<ServiceName, Seat>,
    /// Services an operator unassigned (until auto-licensing selects the device again).
    pub unassigned: BTreeSet<ServiceName>,
    /// Since when each wanted service has been out of compliance (no seat, or over its VM
    /// allowance).
    pub violation_since: BTreeMap<ServiceName, UnixTime>,
    /// Last bundle issued.
    pub bundle: BundleState,
    /// Licensing by file: offline flag, nonces seen, last release, history.
    pub offline: super::offline::OfflineRecord,
    /// The datacenter the host is placed in (Snow: its parent computer is a datacenter);
    /// datacenter assignments with VM use rights cover it.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// Policy kinds spoken, open usage window, compliance as the device reports it (issue 20).
    pub usage: super::usage::UsageState,
}

impl Device {
    /// Its key in the engine's maps.
    pub fn key(&self) -> DeviceKey {
        (self.tenant.clone(), self.id.clone())
    }
}
