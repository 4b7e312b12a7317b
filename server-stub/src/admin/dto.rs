//! The admin API's JSON shapes, named as the seeds name them: camelCase Meraki fields for
//! subscriptions, entitlements and compliance (with "customer" where Meraki says
//! "organization"), the Aruba snake_case body for auto-licensing, Snow fields for licenses and
//! assignments. Conversions from the engine's views live here too; the OpenAPI document is
//! derived from these types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::query::{format_time, Link, Pagination};
#[allow(unused_imports)] // referenced by the `ToSchema` derives only
use super::schema::{ComputerRef, Id, Time};

/// Integers of request bodies, held to the range the document states (`int32`, at least 0 or
/// 1): a number out of it is a 400 naming the field, never stored or wrapped (issue 16 item 5).
/// Each field using one of these also states its bounds with `#[schema(minimum, maximum)]`.
pub(crate) mod bounded {
    use serde::de::{Error, Unexpected};
    use serde::{Deserialize, Deserializer};

    /// The largest integer a request may give (`int32`).
    pub const MAX: u32 = crate::engine::MAX_SEATS;

    fn check<E: Error>(v: i64, min: u32) -> Result<u32, E> {
        u32::try_from(v)
            .ok()
            .filter(|n| (min..=MAX).contains(n))
            .ok_or_else(|| {
                E::invalid_value(
                    Unexpected::Signed(v),
                    &format!("an integer from {min} to {MAX}").as_str(),
                )
            })
    }

    /// A JSON number that is an integer. JSON Schema's `integer` is any number without a
    /// fraction, so `5.0` and `5e0` are 5, as the document lets clients send them.
    fn integer<E: Error>(n: serde_json::Number) -> Result<i64, E> {
        if let Some(v) = n.as_i64() {
            return Ok(v);
        }
        match n.as_f64() {
            // A whole number within i64 converts exactly; `check` then bounds it.
            Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
            Some(f) if f.fract() == 0.0 => Err(E::invalid_value(
                Unexpected::Float(f),
                &format!("an integer from 0 to {MAX}").as_str(),
            )),
            Some(f) => Err(E::invalid_type(Unexpected::Float(f), &"an integer")),
            None => Err(E::invalid_type(Unexpected::Other("number"), &"an integer")),
        }
    }

    /// 0 to [`MAX`].
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        check(integer(serde_json::Number::deserialize(d)?)?, 0)
    }

    /// 1 to [`MAX`].
    pub fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        check(integer(serde_json::Number::deserialize(d)?)?, 1)
    }

    /// 1 to [`MAX`], or absent / null.
    pub fn positive_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|v| check(integer(v)?, 1))
            .transpose()
    }
}

/// Whether a customer is the MSP or a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CustomerKind {
    /// The managed-service provider (at most one).
    Msp,
    /// A tenant of the MSP.
    Tenant,
}

/// A customer (Aruba MSP or tenant; Meraki organization).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// Id: also the tenant level of its devices' MQTT topics.
    pub id: String,
    /// Display name.
    pub name: String,
    /// MSP or tenant.
    pub kind: CustomerKind,
    /// When it was created (ISO 8601).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Devices it has.
    pub devices: u32,
    /// Subscriptions it owns.
    pub subscriptions: u32,
}

/// A new customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Id (`[A-Za-z0-9._-]{1,64}`).
    #[schema(value_type = Id)]
    pub id: String,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Default `tenant`.
    #[serde(default)]
    pub kind: Option<CustomerKind>,
}

/// A change to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerUpdate {
    /// New display name.
    pub name: String,
}

/// A SKU of the entitlements catalogue (Meraki `getAdministeredLicensingSubscriptionEntitlements`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Product type (the device product class it is for).
    pub product_type: String,
    /// Product class (same as the product type in this stub).
    pub product_class: String,
    /// Feature tier (not modelled: always null).
    pub feature_tier: Option<String>,
    /// Add-on (not modelled: always false).
    pub is_add_on: bool,
    /// Free (always false).
    pub is_free: bool,
    /// The service a seat licenses.
    pub service: String,
    /// VMs one seat covers (per-VM SKUs, Snow `numberOfSupportedVirtualMachines`).
    pub vms_per_seat: Option<u32>,
}

/// A new SKU for the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEntitlement {
    /// SKU.
    #[schema(value_type = Id)]
    pub sku: String,
    /// Name (default: the SKU).
    #[serde(default)]
    pub name: Option<String>,
    /// Service a seat licenses.
    #[schema(value_type = Id)]
    pub service: String,
    /// Product class of the devices it is for (matched against their reports).
    #[schema(min_length = 1)]
    pub product_class: String,
    /// VMs one seat covers, for per-VM licenses.
    #[serde(default, deserialize_with = "bounded::positive_opt")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub vms_per_seat: Option<u32>,
}

/// Seat counts (of a subscription: sums over its SKUs, hence 64-bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Seats {
    /// In use.
    pub assigned: u64,
    /// Reserved by site delegations (issue 23): neither free nor held by a device here.
    #[serde(default)]
    pub reserved: u64,
    /// Free.
    pub available: u64,
    /// Bought.
    pub limit: u64,
}

impl From<crate::engine::views::SeatCounts> for Seats {
    fn from(s: crate::engine::views::SeatCounts) -> Self {
        Self {
            assigned: s.assigned,
            reserved: s.reserved,
            available: s.available,
            limit: s.limit,
        }
    }
}

/// A SKU of a subscription with its seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEntitlement {
    /// SKU.
    pub sku: String,
    /// Service it licenses (null if the SKU left the catalogue).
    pub service: Option<String>,
    /// Product class.
    pub product_class: String,
    /// Seats.
    pub seats: Seats,
}

/// Counts of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionCounts {
    /// Seats over all SKUs.
    pub seats: Seats,
    /// Customers using it: the owner and those bound to it.
    pub customers: u32,
}

/// A subscription (Meraki shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Id (the license id in grants).
    pub subscription_id: String,
    /// Name.
    pub name: String,
    /// `unclaimed`, `inactive`, `active` or `expired`.
    pub status: String,
    /// Owner (null until claimed).
    pub customer_id: Option<String>,
    /// Customers bound to it besides the owner.
    pub bound_customer_ids: Vec<String>,
    /// Term start (ISO 8601).
    #[schema(format = DateTime)]
    pub start_date: String,
    /// Term end (ISO 8601).
    #[schema(format = DateTime)]
    pub end_date: String,
    /// `termed` (every subscription of the stub has a term).
    #[serde(rename = "type")]
    pub kind: String,
    /// Product types it has entitlements for.
    pub product_types: Vec<String>,
    /// Seats per SKU.
    pub entitlements: Vec<SubscriptionEntitlement>,
    /// Totals.
    pub counts: SubscriptionCounts,
}

impl Subscription {
    /// From the engine's view and the bound customers.
    pub fn from_view(v: crate::engine::views::SubscriptionView, bound: Vec<String>) -> Self {
        let customers = u32::try_from(bound.len())
            .unwrap_or(u32::MAX)
            .saturating_add(u32::from(v.owner.is_some()));
        Self {
            subscription_id: v.id.to_string(),
            name: v.name,
            status: status_str(v.status).to_string(),
            customer_id: v.owner.map(|o| o.to_string()),
            bound_customer_ids: bound,
            start_date: format_time(v.start),
            end_date: format_time(v.end),
            kind: "termed".into(),
            product_types: v.product_classes,
            entitlements: v
                .entitlements
                .into_iter()
                .map(|e| SubscriptionEntitlement {
                    sku: e.sku.to_string(),
                    service: e.service.map(|s| s.to_string()),
                    product_class: e.product_class,
                    seats: e.seats.into(),
                })
                .collect(),
            counts: SubscriptionCounts {
                seats: v.seats.into(),
                customers,
            },
        }
    }
}

/// Status word of a subscription.
pub fn status_str(s: crate::engine::SubscriptionStatus) -> &'static str {
    use crate::engine::SubscriptionStatus as S;
    match s {
        S::Unclaimed => "unclaimed",
        S::Inactive => "inactive",
        S::Active => "active",
        S::Expired => "expired",
    }
}

/// Seats of one SKU in a new subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriptionEntitlement {
    /// SKU (must be in the catalogue).
    #[schema(value_type = Id)]
    pub sku: String,
    /// Seats.
    #[serde(deserialize_with = "bounded::count")]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub limit: u32,
}

/// A new subscription (labs: what the vendor's order system would create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSubscription {
    /// Id.
    #[schema(value_type = Id)]
    pub subscription_id: String,
    /// Name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Owner; leave out and give a `claimKey` for a subscription to claim later.
    #[serde(default)]
    #[schema(value_type = Option<Id>)]
    pub customer_id: Option<String>,
    /// Claim key.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub claim_key: Option<String>,
    /// Term start (default now).
    #[serde(default)]
    #[schema(value_type = Option<Time>)]
    pub start_date: Option<String>,
    /// Term end, not before the start (422 otherwise).
    #[schema(value_type = Time)]
    pub end_date: String,
    /// Seats per SKU.
    pub entitlements: Vec<NewSubscriptionEntitlement>,
}

/// Claim a subscription by claim key (`?validate=true`: dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// The subscription's claim key.
    pub claim_key: String,
    /// The customer claiming it.
    #[schema(value_type = Id)]
    pub customer_id: String,
}

/// Find a subscription by claim key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimKeyRequest {
    /// The claim key.
    pub claim_key: String,
}

/// Bind customers to a subscription (`?validate=true`: dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindRequest {
    /// Customers whose devices may use the subscription's seats.
    #[schema(value_type = Vec<Id>, min_items = 1)]
    pub customer_ids: Vec<String>,
}

/// A customer named in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerRef {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// Seats of a SKU (Meraki `insufficientEntitlements` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SkuQuantity {
    /// SKU.
    pub sku: String,
    /// Seats.
    pub quantity: u32,
}

/// Result of a bind (Meraki `bindAdministeredLicensingSubscriptionSubscription`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindResponse {
    /// The subscription.
    pub subscription_id: String,
    /// Customers bound to it (after the bind, or as they would be).
    pub customers: Vec<CustomerRef>,
    /// Licensing problems, in words.
    pub errors: Vec<String>,
    /// Seats missing.
    pub insufficient_entitlements: Vec<SkuQuantity>,
    /// Whether this was a dry run.
    pub validate: bool,
}

/// A subscription in a compliance status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionRef {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
}

/// Missing seats of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MissingEntitlement {
    /// SKU that would cover it (null if the catalogue has none for the class).
    pub sku: Option<String>,
    /// Service.
    pub service: String,
    /// Seats missing.
    pub quantity: u32,
}

/// What is missing for a product class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Missing {
    /// Entitlements.
    pub entitlements: Vec<MissingEntitlement>,
}

/// Violations of one product class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductClassViolation {
    /// Product class.
    pub product_class: String,
    /// When the earliest violation runs out of grace (ISO 8601).
    #[schema(format = DateTime)]
    pub grace_period_ends_at: String,
    /// Devices concerned.
    pub devices: u32,
    /// What is missing.
    pub missing: Missing,
}

/// Violations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violations {
    /// By product class.
    pub by_product_class: Vec<ProductClassViolation>,
}

/// A host running more VMs than its seat covers (Snow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmOveruse {
    /// Device.
    pub device_id: String,
    /// Service.
    pub service: String,
    /// VMs it runs (the device's unsigned 32-bit count).
    #[schema(value_type = u64)]
    pub vm_count: u32,
    /// VMs its seat covers.
    pub allowance: u32,
    /// VMs its policy tolerates (allowance × overage tolerance; issue 20).
    pub tolerated: u32,
}

/// A grant whose term ends soon (issue 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringGrant {
    /// Device.
    pub device_id: String,
    /// Service.
    pub service: String,
    /// Subscription of the seat.
    pub subscription_id: String,
    /// SKU of the seat.
    pub sku: String,
    /// When the term ends (ISO 8601).
    #[schema(format = DateTime)]
    pub not_after: String,
    /// Seconds left.
    pub seconds_left: u64,
    /// The smallest expiring-soon threshold of its policy crossed now, in seconds (null: none).
    pub threshold_secs: Option<u64>,
}

/// A service as its device reports it (extended reports, issue 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReportedStanding {
    /// Device.
    pub device_id: String,
    /// Service.
    pub service: String,
    /// `grace`, `non_compliant` (advisory past grace: still running, not compliant) or
    /// `unlicensed`.
    pub standing: String,
    /// Why (`term_ended`, `lease_expired`, `over_vm_allowance`, …).
    pub reason: Option<String>,
    /// VMs over the allowance within the tolerance.
    pub overage_vms: Option<u32>,
    /// The smallest expiring-soon threshold crossed, in seconds.
    pub expiring_within_secs: Option<u64>,
}

/// Compliance of a customer (Meraki `complianceStatuses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceStatus {
    /// Customer.
    pub customer_id: String,
    /// Nothing missing, paused or over-used.
    pub compliant: bool,
    /// Its subscriptions.
    pub subscriptions: Vec<SubscriptionRef>,
    /// Violations.
    pub violations: Violations,
    /// Auto-licensed services paused for lack of seats.
    pub paused_services: Vec<String>,
    /// VM over-use: above what the policy tolerates.
    pub vm_overuse: Vec<VmOveruse>,
    /// Over the allowance but within the tolerance: licensed with a warning.
    #[serde(default)]
    pub vm_overage_warnings: Vec<VmOveruse>,
    /// Grants whose term ends soon: within `expiringWithinDays`, or (when not given) within
    /// the largest expiring-soon threshold of their policy. A warning, not a violation.
    #[serde(default)]
    pub expiring: Vec<ExpiringGrant>,
    /// Services the devices report as not licensed; `non_compliant` (an advisory service
    /// past grace) makes the customer not compliant.
    #[serde(default)]
    pub device_reported: Vec<DeviceReportedStanding>,
}

fn vm_overuse(o: crate::engine::compliance::VmOveruse) -> VmOveruse {
    VmOveruse {
        device_id: o.device.to_string(),
        service: o.service.to_string(),
        vm_count: o.vm_count,
        allowance: o.allowance,
        tolerated: o.tolerated,
    }
}

impl ComplianceStatus {
    /// The view of `r` at `now` (for the seconds left of expiring grants).
    pub fn at(r: crate::engine::compliance::ComplianceReport, now: u64) -> Self {
        let expiring = r
            .expiring
            .iter()
            .map(|x| ExpiringGrant {
                device_id: x.device.to_string(),
                service: x.service.to_string(),
                subscription_id: x.subscription.to_string(),
                sku: x.sku.to_string(),
                not_after: format_time(x.not_after),
                seconds_left: x.not_after.saturating_sub(now),
                threshold_secs: x.threshold,
            })
            .collect();
        Self {
            expiring,
            ..Self::from(r)
        }
    }
}

impl From<crate::engine::compliance::ComplianceReport> for ComplianceStatus {
    fn from(r: crate::engine::compliance::ComplianceReport) -> Self {
        Self {
            vm_overage_warnings: r.vm_overage_warnings.into_iter().map(vm_overuse).collect(),
            expiring: Vec::new(),
            device_reported: r
                .device_reported
                .into_iter()
                .map(|d| DeviceReportedStanding {
                    device_id: d.device.to_string(),
                    service: d.service.to_string(),
                    standing: d.report.standing,
                    reason: d.report.reason,
                    overage_vms: d.report.overage_vms,
                    expiring_within_secs: d.report.expiring_within,
                })
                .collect(),
            customer_id: r.customer.to_string(),
            compliant: r.compliant,
            subscriptions: r
                .subscriptions
                .into_iter()
                .map(|s| SubscriptionRef {
                    id: s.id.to_string(),
                    name: s.name,
                    status: status_str(s.status).into(),
                })
                .collect(),
            violations: Violations {
                by_product_class: r
                    .violations
                    .into_iter()
                    .map(|v| ProductClassViolation {
                        product_class: v.product_class,
                        grace_period_ends_at: format_time(v.grace_period_ends_at),
                        devices: v.devices,
                        missing: Missing {
                            entitlements: v
                                .missing
                                .into_iter()
                                .map(|m| MissingEntitlement {
                                    sku: m.sku.map(|s| s.to_string()),
                                    service: m.service.to_string(),
                                    quantity: m.quantity,
                                })
                                .collect(),
                        },
                    })
                    .collect(),
            },
            paused_services: r.paused_services.iter().map(|s| s.to_string()).collect(),
            vm_overuse: r.vm_overuse.into_iter().map(vm_overuse).collect(),
        }
    }
}

/// Aruba auto-licensing body (seeds 000 and 001): `services` required; neither list = every
/// customer (for enable: future tenants too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoLicenseRequest {
    /// Services, e.g. `["wifi", "security"]`. Required, non-empty.
    #[serde(default)]
    #[schema(value_type = Vec<Id>, required = true, min_items = 1)]
    pub services: Option<Vec<String>>,
    /// Only these customers.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Id>>, min_items = 1)]
    pub include_customers: Option<Vec<String>>,
    /// Every customer but these.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Id>>, min_items = 1)]
    pub exclude_customers: Option<Vec<String>>,
}

/// Seats missing for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Insufficient {
    /// Service.
    pub service: String,
    /// Product class of the devices short of seats.
    pub product_class: String,
    /// SKU that would cover them.
    pub sku: Option<String>,
    /// Seats missing.
    pub quantity: u32,
}

/// Result of enabling auto-licensing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AutoLicenseResponse {
    /// Services enabled.
    pub services: Vec<String>,
    /// Customers selected.
    pub customers: Vec<String>,
    /// Whether tenants created later inherit it (neither list given).
    pub inherit_to_new_tenants: bool,
    /// Services whose assignment is paused: fewer seats than devices.
    pub paused: Vec<String>,
    /// Seats missing to un-pause them.
    pub insufficient_entitlements: Vec<Insufficient>,
    /// Seats assigned by this call.
    pub seats_assigned: u32,
    /// Whether this was a dry run.
    pub validate: bool,
}

/// Result of an unassign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnassignResponse {
    /// Services unassigned.
    pub services: Vec<String>,
    /// Customers selected.
    pub customers: Vec<String>,
    /// Seats released.
    pub seats_released: u32,
}

/// Auto-licensing of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Service.
    pub service: String,
    /// Customers it is enabled for.
    pub customers: Vec<String>,
    /// Enabled for all: new tenants inherit it.
    pub inherit_to_new_tenants: bool,
    /// Paused for lack of seats.
    pub paused: bool,
}

/// One service of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceService {
    /// Service.
    pub service: String,
    /// `granted` or `withheld`.
    pub state: String,
    /// Subscription of the grant.
    pub subscription_id: Option<String>,
    /// SKU of the grant.
    pub sku: Option<String>,
    /// VMs the grant covers (per-VM SKUs).
    pub vm_allowance: Option<u32>,
    /// The host runs more VMs than the grant covers.
    pub over_vm_allowance: bool,
    /// Why it is withheld (`NotEntitled`, `SeatsExhausted`, `Unassigned`, `UnknownTenant`).
    pub reason: Option<String>,
}

/// The newest bundle of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleInfo {
    /// `seq` of the newest bundle issued (0 = none yet).
    pub seq: u64,
    /// `seq` the device said it holds.
    pub reported_seq: u64,
    /// When it was issued (ISO 8601; null if none).
    #[schema(format = DateTime)]
    pub issued_at: Option<String>,
    /// When the device should report again.
    #[schema(format = DateTime)]
    pub refresh_after: Option<String>,
}

/// A device (list item and detail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Tenant (customer id).
    pub tenant_id: String,
    /// Device id.
    pub device_id: String,
    /// Pinned device key (hex).
    pub device_key: String,
    /// Model.
    pub model: String,
    /// Serial.
    pub serial: String,
    /// Product class.
    pub product_class: String,
    /// Firmware version.
    pub firmware_version: String,
    /// Agent version.
    pub agent_version: String,
    /// VMs running, as last reported (the device's unsigned 32-bit count).
    #[schema(value_type = Option<u64>)]
    pub vm_count: Option<u32>,
    /// First report (ISO 8601).
    #[schema(format = DateTime)]
    pub first_seen: String,
    /// Last report (ISO 8601).
    #[schema(format = DateTime)]
    pub last_report_at: String,
    /// The device flagged a clock rollback.
    pub clock_rollback: bool,
    /// The tenant is not a known customer.
    pub unknown_tenant: bool,
    /// Its newest bundle.
    pub bundle: BundleInfo,
    /// Each service wanted or held.
    pub services: Vec<DeviceService>,
    /// Last licensed by file (an activation request), not over MQTT.
    pub offline: bool,
    /// Grants by file and releases, oldest first: where this device's seats went.
    pub history: Vec<HistoryEntry>,
}

/// One event of a device's licensing history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When (ISO 8601).
    #[schema(format = DateTime)]
    pub at: String,
    /// What happened.
    pub event: String,
}

impl Device {
    /// From the engine's record and view.
    pub fn new(d: &crate::engine::Device, v: crate::engine::views::DeviceView) -> Self {
        use crate::engine::views::ServiceState;
        let has_bundle = d.bundle.seq > 0;
        Self {
            tenant_id: d.tenant.to_string(),
            device_id: d.id.to_string(),
            device_key: v.key,
            model: d.model.clone(),
            serial: d.serial.clone(),
            product_class: d.product_class.clone(),
            firmware_version: d.firmware_version.clone(),
            agent_version: d.agent_version.clone(),
            vm_count: d.vm_count,
            first_seen: format_time(d.first_seen),
            last_report_at: format_time(d.last_report_at),
            clock_rollback: d.clock_rollback,
            unknown_tenant: v.unknown_tenant,
            offline: d.offline.offline,
            history: d
                .offline
                .history
                .iter()
                .map(|h| HistoryEntry {
                    at: format_time(h.at),
                    event: h.event.clone(),
                })
                .collect(),
            bundle: BundleInfo {
                seq: d.bundle.seq,
                reported_seq: d.reported_seq,
                issued_at: has_bundle.then(|| format_time(d.bundle.issued_at)),
                refresh_after: has_bundle.then(|| format_time(d.bundle.refresh_after)),
            },
            services: v
                .services
                .into_iter()
                .map(|(service, s)| match s {
                    ServiceState::Granted {
                        license,
                        sku,
                        vm_allowance,
                        over_vm_allowance,
                    } => DeviceService {
                        service: service.to_string(),
                        state: "granted".into(),
                        subscription_id: Some(license.to_string()),
                        sku: Some(sku.to_string()),
                        vm_allowance,
                        over_vm_allowance,
                        reason: None,
                    },
                    ServiceState::Withheld { reason } => DeviceService {
                        service: service.to_string(),
                        state: "withheld".into(),
                        subscription_id: None,
                        sku: None,
                        vm_allowance: None,
                        over_vm_allowance: false,
                        reason: Some(format!("{reason:?}")),
                    },
                })
                .collect(),
        }
    }
}

/// A page of devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DevicePage {
    /// Devices.
    pub items: Vec<Device>,
    /// Where this page is.
    pub pagination: Pagination,
    /// Other pages.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
}

/// A license (Snow): the seats of one SKU in one subscription. Its id is
/// `<subscriptionId>:<sku>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct License {
    /// `<subscriptionId>:<sku>`.
    pub id: String,
    /// Subscription.
    pub subscription_id: String,
    /// SKU.
    pub sku: String,
    /// Service.
    pub service: Option<String>,
    /// Product class.
    pub product_class: String,
    /// Owner.
    pub customer_id: Option<String>,
    /// Seats bought (what bulk update sets).
    pub quantity: u32,
    /// Seats assigned.
    pub assigned: u32,
    /// Seats free.
    pub available: u32,
    /// Counted per VM.
    pub has_vm_use_rights: bool,
    /// VMs one seat covers.
    pub number_of_supported_virtual_machines: Option<u32>,
    /// Term start (ISO 8601).
    #[schema(format = DateTime)]
    pub subscription_valid_from: String,
    /// Term end (ISO 8601).
    #[schema(format = DateTime)]
    pub subscription_valid_to: String,
    /// Status of the subscription.
    pub status: String,
}

/// A page of licenses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LicensePage {
    /// Licenses.
    pub items: Vec<License>,
    /// Where this page is.
    pub pagination: Pagination,
    /// Other pages.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
}

/// A license assigned to a device (Snow assignment to a computer). Its id is
/// `<tenant>:<device>:<service>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// `<tenant>:<device>:<service>`.
    pub id: String,
    /// License (`<subscriptionId>:<sku>`).
    pub license_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// SKU.
    pub sku: String,
    /// Service.
    pub service: String,
    /// Tenant of the device.
    pub customer_id: String,
    /// Device (Snow `computerId`).
    pub computer_id: String,
    /// Seats the device holds for it (one).
    pub quantity: u32,
    /// Counted per VM.
    pub has_vm_use_rights: bool,
    /// VMs the seat covers.
    pub number_of_supported_virtual_machines: Option<u32>,
    /// VMs the host runs (the device's unsigned 32-bit count).
    #[schema(value_type = Option<u64>)]
    pub virtual_machines: Option<u32>,
    /// More VMs than covered.
    pub over_vm_allowance: bool,
    /// Since when (ISO 8601).
    #[schema(format = DateTime)]
    pub assigned_at: String,
}

/// A page of assignments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AssignmentPage {
    /// Assignments.
    pub items: Vec<Assignment>,
    /// Where this page is.
    pub pagination: Pagination,
    /// Other pages.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
}

/// Which licenses a bulk update touches (Snow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    /// Only the ids given.
    Only,
    /// Every license (that matches the filter, if given).
    All,
    /// Every license but the ids given.
    AllExcept,
}

/// The update a bulk update applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseUpdate {
    /// New seat count of each license (refused for a license with more seats assigned).
    #[serde(deserialize_with = "bounded::count")]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub quantity: u32,
}

/// Snow bulk update of licenses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkUpdateRequest {
    /// Narrows the licenses further, e.g. `sku -eq "LIC-AP"`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Which licenses.
    pub scope: Scope,
    /// License ids (`<subscriptionId>:<sku>`): required, non-empty, for `Only` and
    /// `AllExcept`.
    #[serde(default)]
    pub ids: Vec<String>,
    /// The update.
    pub body: LicenseUpdate,
}

/// A license the update failed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    /// License id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// Result of a bulk update (Snow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkUpdateResponse {
    /// Licenses updated.
    pub success_count: u32,
    /// Licenses not updated.
    pub failed_count: u32,
    /// Each failure.
    pub failed: Vec<Failure>,
    /// The first failure's reason (Snow's summary field).
    pub failure_reason: Option<String>,
}

/// A re-issued bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReissueResponse {
    /// Tenant.
    pub tenant_id: String,
    /// Device.
    pub device_id: String,
    /// `seq` of the new bundle.
    pub bundle_seq: u64,
}

/// Liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Whether the controller is connected to its broker and subscribed.
    pub broker_connected: bool,
}

/// One assignment type (Snow `GET …/assignmenttypes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentType {
    /// `computer`, `datacenter`, `organization`, `site` or `user`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether assignments of this type reach devices (computers and datacenters do).
    pub affects_devices: bool,
}

/// A page of assignment types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AssignmentTypePage {
    /// Types.
    pub items: Vec<AssignmentType>,
    /// Where this page is.
    pub pagination: Pagination,
    /// Other pages.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
}

/// A license's assignment to a computer (Snow; a device's seat of the license).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputerAssignment {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// Assignment id within the license: `<tenant>:<device>`.
    pub id: String,
    /// License (`<subscriptionId>:<sku>`).
    pub license_id: String,
    /// The service the license grants (Snow `applicationId`).
    pub application_id: String,
    /// Device id (Snow `computerId`).
    pub computer_id: String,
    /// Tenant of the device.
    pub customer_id: String,
    /// Seats of the license the computer holds.
    pub quantity: u32,
    /// VMs supported: `numberOfSupportedVirtualMachines` of the SKU × quantity.
    pub number_of_supported_virtual_machines: Option<u32>,
    /// The license counts VMs.
    pub has_vm_use_rights: bool,
    /// Why the assignment does not do what it says (empty when it does).
    pub invalid_assignment_reasons: Vec<String>,
    /// VM ids the assignment names.
    pub virtual_machines: Vec<String>,
    /// Made by auto-licensing, not by an operator.
    pub is_auto_allocated: bool,
}

/// A license's assignment to a datacenter (Snow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatacenterAssignment {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// Assignment id within the license: the datacenter id.
    pub id: String,
    /// License.
    pub license_id: String,
    /// The service the license grants.
    pub application_id: String,
    /// Datacenter.
    pub datacenter_id: String,
    /// Seats of the license it uses.
    pub quantity: u32,
    /// VMs supported over the datacenter's hosts.
    pub number_of_supported_virtual_machines: Option<u32>,
    /// The license counts VMs (without, it covers no host).
    pub has_vm_use_rights: bool,
    /// Why the assignment does not do what it says.
    pub invalid_assignment_reasons: Vec<String>,
    /// VM ids the assignment names.
    pub virtual_machines: Vec<String>,
    /// Hosts placed in the datacenter it covers now (`<tenant>:<device>`).
    pub covered_computers: Vec<String>,
}

/// A license's assignment to an organization (Snow; a customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationAssignment {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// Assignment id within the license: the organization id.
    pub id: String,
    /// License.
    pub license_id: String,
    /// The service the license grants.
    pub application_id: String,
    /// Organization (customer).
    pub organization_id: String,
    /// Quantity allocated.
    pub quantity: u32,
    /// Always false: made by an operator.
    pub is_auto_allocated: bool,
}

/// A license's site assignment (Snow; named by an organization).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteAssignment {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// Assignment id within the license: the organization id.
    pub id: String,
    /// License.
    pub license_id: String,
    /// The service the license grants.
    pub application_id: String,
    /// Organization.
    pub organization_id: String,
    /// Quantity.
    pub quantity: u32,
}

/// A license's assignment to a user (Snow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignment {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// Assignment id within the license: the user id.
    pub id: String,
    /// License.
    pub license_id: String,
    /// The service the license grants.
    pub application_id: String,
    /// User.
    pub user_id: String,
    /// Quantity (one).
    pub quantity: u32,
    /// Why the assignment does not do what it says.
    pub invalid_assignment_reasons: Vec<String>,
}

macro_rules! assignment_page {
    ($name:ident, $item:ty) => {
        /// A page of assignments.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            /// Assignments.
            pub items: Vec<$item>,
            /// Where this page is.
            pub pagination: Pagination,
            /// Other pages.
            #[serde(rename = "_links")]
            pub links: Vec<Link>,
        }
    };
}

assignment_page!(ComputerAssignmentPage, ComputerAssignment);
assignment_page!(DatacenterAssignmentPage, DatacenterAssignment);
assignment_page!(OrganizationAssignmentPage, OrganizationAssignment);
assignment_page!(UserAssignmentPage, UserAssignment);

/// Add or replace a computer assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputerAssignmentRequest {
    /// `<tenant>:<device>`, or a device id alone when one device the token sees has it.
    #[schema(value_type = ComputerRef)]
    pub computer_id: String,
    /// Seats of the license (default 1).
    #[serde(default, deserialize_with = "bounded::positive_opt")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub quantity: Option<u32>,
    /// VM ids the assignment names.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Id>>)]
    pub virtual_machines: Option<Vec<String>>,
}

/// Add or replace a datacenter assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatacenterAssignmentRequest {
    /// Datacenter id.
    #[schema(value_type = Id)]
    pub datacenter_id: String,
    /// Seats of the license (default 1).
    #[serde(default, deserialize_with = "bounded::positive_opt")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub quantity: Option<u32>,
    /// VM ids the assignment names.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Id>>)]
    pub virtual_machines: Option<Vec<String>>,
}

/// Add or replace an organization assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationAssignmentRequest {
    /// Organization (customer) id.
    #[schema(value_type = Id)]
    pub organization_id: String,
    /// Quantity allocated (default 1).
    #[serde(default, deserialize_with = "bounded::positive_opt")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub quantity: Option<u32>,
}

/// Add or replace the site assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteAssignmentRequest {
    /// Organization (customer) id.
    #[schema(value_type = Id)]
    pub organization_id: String,
}

/// Add a user assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAssignmentRequest {
    /// User id.
    #[schema(value_type = Id)]
    pub user_id: String,
}

/// An assignment made (Snow: its links and id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AssignmentCreated {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// Assignment id within the license.
    pub id: String,
}

/// Which kinds of assignment a license has (Snow assignments summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentSummary {
    /// Links.
    #[serde(rename = "_links")]
    pub links: Vec<Link>,
    /// License.
    pub license_id: String,
    /// Has organization assignments.
    pub has_organization_assignment: bool,
    /// Has computer assignments.
    pub has_computer_assignment: bool,
    /// Has user assignments.
    pub has_user_assignment: bool,
    /// Has a site assignment.
    pub has_site_assignment: bool,
    /// Has datacenter assignments.
    pub has_datacenter_assignment: bool,
}

/// Where a host is placed (Snow: a computer whose parent is a datacenter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Tenant.
    pub customer_id: String,
    /// Device (Snow `computerId`).
    pub computer_id: String,
    /// The datacenter it is placed in (Snow `parentComputerId` with
    /// `isParentComputerDatacenter`); null when it is in none.
    pub datacenter_id: Option<String>,
}

/// Place a host in a datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementRequest {
    /// Datacenter id.
    #[schema(value_type = Id)]
    pub datacenter_id: String,
}
