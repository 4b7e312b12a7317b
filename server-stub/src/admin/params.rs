//! The query parameters of the admin API, each described once: a handler reads a parameter
//! through its descriptor (bounds, default, what an item must look like) and the OpenAPI
//! document lists the same descriptor (the `*Query` types below implement
//! [`utoipa::IntoParams`]), so the document and the server cannot disagree.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, Required};
use utoipa::IntoParams;

use super::dto::{Assignment, Device, License};
use super::error::{ApiError, ApiResult};
use super::query::{parse_filter, Condition, Params, TimeRange};
use super::schema::{filter_pattern, properties_of, reference, Id, Time};

/// What a parameter's describes, for the document.
pub trait Describe {
    /// The OpenAPI parameter.
    fn parameter(&self) -> Parameter;
}

fn query(name: &str, description: String, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// An integer in `min..=max`, `default` when absent.
#[derive(Debug, Clone, Copy)]
pub struct IntParam {
    /// Name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Value when absent.
    pub default: u32,
    /// Smallest accepted.
    pub min: u32,
    /// Largest accepted.
    pub max: u32,
}

impl IntParam {
    /// The value (400 when it is not an integer in range).
    pub fn read(&self, p: &Params) -> ApiResult<u32> {
        p.int_in(self.name, self.default, self.min, self.max)
    }
}

impl Describe for IntParam {
    fn parameter(&self) -> Parameter {
        query(
            self.name,
            format!(
                "{} ({}-{}, default {})",
                self.description, self.min, self.max, self.default
            ),
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(self.min))
                .maximum(Some(self.max))
                .default(Some(self.default.into())),
        )
    }
}

/// What each value of a [`ListParam`] or [`TextParam`] must be.
#[derive(Debug, Clone, Copy)]
pub enum Item {
    /// An identifier (400 otherwise).
    Id,
    /// One of these words (400 otherwise).
    OneOf(&'static [&'static str]),
    /// Any text (compared, never refused).
    Text,
}

impl Item {
    fn check(&self, name: &str, v: &str) -> ApiResult<()> {
        match self {
            Item::Id => licd_protocol::id::validate(v)
                .map_err(|e| ApiError::bad_request(format!("{name}: {v:?}: {e}"))),
            Item::OneOf(words) if !words.contains(&v) => Err(ApiError::bad_request(format!(
                "{name}: {v:?} is not one of {}",
                words.join(", ")
            ))),
            Item::OneOf(_) | Item::Text => Ok(()),
        }
    }

    fn schema(&self) -> RefOr<Schema> {
        match self {
            Item::Id => reference::<Id>(),
            Item::OneOf(words) => ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(words.iter().copied()))
                .into(),
            Item::Text => ObjectBuilder::new().schema_type(Type::String).into(),
        }
    }
}

/// One value.
#[derive(Debug, Clone, Copy)]
pub struct TextParam {
    /// Name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// What it must be.
    pub item: Item,
}

impl TextParam {
    /// The value, if given (400 when it is not what [`TextParam::item`] says).
    pub fn read<'p>(&self, p: &'p Params) -> ApiResult<Option<&'p str>> {
        let v = p.get(self.name);
        if let Some(v) = v {
            self.item.check(self.name, v)?;
        }
        Ok(v)
    }
}

impl Describe for TextParam {
    fn parameter(&self) -> Parameter {
        query(self.name, self.description.into(), self.item.schema())
    }
}

/// A list: `k=a&k=b` (how the document spells it), also `k[]=a` and `k=a,b`.
#[derive(Debug, Clone, Copy)]
pub struct ListParam {
    /// Name.
    pub name: &'static str,
    /// What it selects.
    pub description: &'static str,
    /// What each value must be.
    pub item: Item,
}

impl ListParam {
    /// The values in order (400 when one is not what [`ListParam::item`] says; an empty
    /// value is refused too, unless the items are free text).
    pub fn read(&self, p: &Params) -> ApiResult<Vec<String>> {
        let values = p.list(self.name);
        for v in &values {
            self.item.check(self.name, v)?;
        }
        Ok(match self.item {
            Item::Text => values.into_iter().filter(|v| !v.is_empty()).collect(),
            _ => values,
        })
    }
}

impl Describe for ListParam {
    fn parameter(&self) -> Parameter {
        query(
            self.name,
            format!(
                "{} (`{n}=a&{n}=b`; `{n}[]=a` and `{n}=a,b` work too)",
                self.description,
                n = self.name
            ),
            ArrayBuilder::new().items(self.item.schema()),
        )
    }
}

/// `true` or `false`, false when absent.
#[derive(Debug, Clone, Copy)]
pub struct FlagParam {
    /// Name.
    pub name: &'static str,
    /// What `true` does.
    pub description: &'static str,
}

impl FlagParam {
    /// The value (400 unless `true` or `false`).
    pub fn read(&self, p: &Params) -> ApiResult<bool> {
        p.flag(self.name)
    }
}

impl Describe for FlagParam {
    fn parameter(&self) -> Parameter {
        query(
            self.name,
            self.description.into(),
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .default(Some(false.into())),
        )
    }
}

/// A time range: `name` (equal), `name[gt]`, `name[gte]`, `name[lt]`, `name[lte]`.
#[derive(Debug, Clone, Copy)]
pub struct RangeParam {
    /// Name.
    pub name: &'static str,
    /// What it bounds.
    pub description: &'static str,
}

const RANGE_SUFFIXES: [(&str, &str); 5] = [
    ("", "equal to"),
    ("[gt]", "after"),
    ("[gte]", "at or after"),
    ("[lt]", "before"),
    ("[lte]", "at or before"),
];

impl RangeParam {
    /// The range (400 when a bound is not a time).
    pub fn read(&self, p: &Params) -> ApiResult<TimeRange> {
        p.range(self.name)
    }

    /// One parameter per bound.
    pub fn parameters(&self) -> Vec<Parameter> {
        RANGE_SUFFIXES
            .iter()
            .map(|(suffix, words)| {
                query(
                    &format!("{}{suffix}", self.name),
                    format!("{} {words} this time", self.description),
                    reference::<Time>(),
                )
            })
            .collect()
    }
}

/// A Snow filter over the fields of `T` (the listed item).
#[derive(Debug, Clone, Copy)]
pub struct FilterParam {
    /// The fields a condition may name.
    pub fields: fn() -> Vec<String>,
    /// An example.
    pub example: &'static str,
}

impl FilterParam {
    /// The conditions (400 when the filter does not parse or names an unknown field).
    pub fn read(&self, p: &Params) -> ApiResult<Vec<Condition>> {
        self.parse(p.get("filter").unwrap_or(""))
    }

    /// Parses a filter given elsewhere than the query (bulk update's body).
    pub fn parse(&self, filter: &str) -> ApiResult<Vec<Condition>> {
        parse_filter(filter, &(self.fields)())
    }

    /// The schema of the filter string.
    pub fn schema(&self) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(filter_pattern(&(self.fields)())))
            .examples([self.example])
            .into()
    }
}

impl Describe for FilterParam {
    fn parameter(&self) -> Parameter {
        query(
            "filter",
            format!(
                "Conditions `field -eq \"value\"` (or `-ne`; case-insensitive values) joined by \
                 `-and`, on the item's fields: {}. E.g. `{}`",
                (self.fields)().join(", "),
                self.example
            ),
            self.schema(),
        )
    }
}

/// Page number (Snow; `int32` like every number of the API).
pub const PAGE_NUMBER: IntParam = IntParam {
    name: "page_number",
    description: "Page, from 1",
    default: 1,
    min: 1,
    max: i32::MAX.unsigned_abs(),
};

/// Page size (Snow).
pub const PAGE_SIZE: IntParam = IntParam {
    name: "page_size",
    description: "Items per page",
    default: 100,
    min: 1,
    max: 1000,
};

/// Entries per page (Meraki cursors).
pub const PER_PAGE: IntParam = IntParam {
    name: "perPage",
    description: "Entries per page",
    default: 1000,
    min: 3,
    max: 1000,
};

/// Seconds a remote diagnostic request waits.
pub const TIMEOUT_SECS: IntParam = IntParam {
    name: "timeoutSecs",
    description: "Seconds to wait for the device's answer",
    default: 20,
    min: 1,
    max: 25,
};

/// Dry run.
pub const VALIDATE: FlagParam = FlagParam {
    name: "validate",
    description: "Only check and report what would happen; change nothing",
};

/// Devices' filter.
pub const DEVICE_FILTER: FilterParam = FilterParam {
    fields: properties_of::<Device>,
    example: "productClass -eq \"ap\" -and model -ne \"AP-515\"",
};

/// Licenses' filter.
pub const LICENSE_FILTER: FilterParam = FilterParam {
    fields: properties_of::<License>,
    example: "status -eq \"active\" -and sku -eq \"LIC-AP\"",
};

/// Assignments' filter.
pub const ASSIGNMENT_FILTER: FilterParam = FilterParam {
    fields: properties_of::<Assignment>,
    example: "customerId -eq \"acme\" -and hasVmUseRights -eq \"true\"",
};

/// The words of a subscription's status.
pub const STATUSES: &[&str] = &["unclaimed", "inactive", "active", "expired"];

/// The query of `GET /api/v1/subscriptions`.
pub struct SubscriptionQuery;

impl SubscriptionQuery {
    /// `subscriptionIds`.
    pub const IDS: ListParam = ListParam {
        name: "subscriptionIds",
        description: "Only these subscriptions",
        item: Item::Text,
    };
    /// `customerIds`.
    pub const CUSTOMERS: ListParam = ListParam {
        name: "customerIds",
        description: "Only subscriptions these customers own or are bound to (Meraki \
                      organizationIds)",
        item: Item::Text,
    };
    /// `statuses`.
    pub const STATUSES: ListParam = ListParam {
        name: "statuses",
        description: "Only subscriptions in these statuses",
        item: Item::OneOf(STATUSES),
    };
    /// `productTypes`.
    pub const PRODUCT_TYPES: ListParam = ListParam {
        name: "productTypes",
        description: "Only subscriptions with entitlements for these product types",
        item: Item::Text,
    };
    /// `skus`.
    pub const SKUS: ListParam = ListParam {
        name: "skus",
        description: "Only subscriptions with entitlements for these SKUs",
        item: Item::Text,
    };
    /// `name`.
    pub const NAME: TextParam = TextParam {
        name: "name",
        description: "Only subscriptions whose name contains this (case-insensitive)",
        item: Item::Text,
    };
    /// `startingAfter`.
    pub const STARTING_AFTER: TextParam = TextParam {
        name: "startingAfter",
        description: "Cursor from the Link header: the page after this subscription id",
        item: Item::Text,
    };
    /// `endingBefore`.
    pub const ENDING_BEFORE: TextParam = TextParam {
        name: "endingBefore",
        description: "Cursor from the Link header: the page before this subscription id",
        item: Item::Text,
    };
    /// `startDate…`.
    pub const START: RangeParam = RangeParam {
        name: "startDate",
        description: "Only subscriptions whose term starts",
    };
    /// `endDate…`.
    pub const END: RangeParam = RangeParam {
        name: "endDate",
        description: "Only subscriptions whose term ends",
    };
}

impl IntoParams for SubscriptionQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut v = vec![
            PER_PAGE.parameter(),
            Self::STARTING_AFTER.parameter(),
            Self::ENDING_BEFORE.parameter(),
            Self::IDS.parameter(),
            Self::CUSTOMERS.parameter(),
            Self::STATUSES.parameter(),
            Self::PRODUCT_TYPES.parameter(),
            Self::SKUS.parameter(),
            Self::NAME.parameter(),
        ];
        v.extend(Self::START.parameters());
        v.extend(Self::END.parameters());
        v
    }
}

/// The query of `GET /api/v1/entitlements`.
pub struct EntitlementQuery;

impl EntitlementQuery {
    /// `skus`.
    pub const SKUS: ListParam = ListParam {
        name: "skus",
        description: "Only these SKUs",
        item: Item::Text,
    };
}

impl IntoParams for EntitlementQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![Self::SKUS.parameter()]
    }
}

/// The query of `GET /api/v1/compliance`.
pub struct ComplianceQuery;

impl ComplianceQuery {
    /// `customerIds`.
    pub const CUSTOMERS: ListParam = ListParam {
        name: "customerIds",
        description: "Only these customers (all when not given; an unknown one is a 404)",
        item: Item::Id,
    };
}

impl ComplianceQuery {
    /// `expiringWithinDays` (issue 20).
    pub const EXPIRING_WITHIN_DAYS: IntParam = IntParam {
        name: "expiringWithinDays",
        description: "List grants whose term ends within this many days in `expiring` (when \
                      not given: within the largest expiring-soon threshold of each grant's \
                      policy)",
        default: 30,
        min: 0,
        max: 3650,
    };
}

impl IntoParams for ComplianceQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            Self::CUSTOMERS.parameter(),
            Self::EXPIRING_WITHIN_DAYS.parameter(),
        ]
    }
}

/// The query of `GET /api/v1/devices`.
pub struct DeviceQuery;

impl DeviceQuery {
    /// `customerId`.
    pub const CUSTOMER: TextParam = TextParam {
        name: "customerId",
        description: "Only this tenant's devices",
        item: Item::Id,
    };
}

impl IntoParams for DeviceQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            Self::CUSTOMER.parameter(),
            DEVICE_FILTER.parameter(),
            PAGE_NUMBER.parameter(),
            PAGE_SIZE.parameter(),
        ]
    }
}

/// The query of `GET /api/v1/licenses`.
pub struct LicenseQuery;

impl IntoParams for LicenseQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            LICENSE_FILTER.parameter(),
            PAGE_NUMBER.parameter(),
            PAGE_SIZE.parameter(),
        ]
    }
}

/// The query of the assignment lists.
pub struct AssignmentQuery;

impl IntoParams for AssignmentQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ASSIGNMENT_FILTER.parameter(),
            PAGE_NUMBER.parameter(),
            PAGE_SIZE.parameter(),
        ]
    }
}

/// The query of the operations with a dry run.
pub struct ValidateQuery;

impl IntoParams for ValidateQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![VALIDATE.parameter()]
    }
}

/// The query of `POST …/diag`.
pub struct DiagQuery;

impl IntoParams for DiagQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![TIMEOUT_SECS.parameter()]
    }
}
