//! Schemas of the OpenAPI document that `utoipa` cannot derive from a Rust type alone, built
//! from the same constants the admin API's parsers use: identifiers ([`Id`], from
//! [`licd_protocol::id::ID_PATTERN`]), license references ([`LicenseRef`]) and Snow filters
//! ([`filter_pattern`], whose fields are the properties of the listed item's own schema).
//! DTO fields point at them with `#[schema(value_type = Id)]`.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// An identifier: a customer (tenant), device, service, SKU or subscription id.
pub struct Id;

/// The id pattern without its anchors, to compose larger patterns.
fn id_core() -> &'static str {
    let p = licd_protocol::id::ID_PATTERN;
    p.strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or(p)
}

impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "1 to 64 of A-Z a-z 0-9 . _ - (not `.` or `..`); anything else is a 400",
            ))
            .pattern(Some(licd_protocol::id::ID_PATTERN))
            .min_length(Some(1))
            .max_length(Some(licd_protocol::limits::MAX_ID_LEN))
            .examples(["acme"])
            .into()
    }
}

impl ToSchema for Id {}

/// A license id, `<subscriptionId>:<sku>`.
pub struct LicenseRef;

impl PartialSchema for LicenseRef {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("`<subscriptionId>:<sku>`"))
            .pattern(Some(format!("^{core}:{core}$", core = id_core())))
            .examples(["SUB-1:LIC-AP"])
            .into()
    }
}

impl ToSchema for LicenseRef {}

/// A computer (device) reference: `<tenant>:<device>`, or a device id alone.
pub struct ComputerRef;

impl PartialSchema for ComputerRef {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`<tenant>:<device>`, or a device id alone when one device the token sees has it",
            ))
            .pattern(Some(format!("^(?:{core}:)?{core}$", core = id_core())))
            .examples(["acme:ap-1"])
            .into()
    }
}

impl ToSchema for ComputerRef {}

/// The property names of `T`'s schema (what a Snow filter may name: the item's JSON fields).
pub fn properties_of<T: PartialSchema>() -> Vec<String> {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The pattern of a Snow filter over `fields`: conditions `field -eq "value"` (or `-ne`, any
/// case; values in double or single quotes) joined by `-and`, separated by spaces. What
/// [`super::query::parse_filter`] accepts, exactly.
pub fn filter_pattern(fields: &[String]) -> String {
    let field = format!("(?:{})", fields.join("|"));
    let cond = format!("{field} +-(?:[eE][qQ]|[nN][eE]) +(?:\"[^\"]*\"|'[^']*')");
    format!("^ *(?:{cond}(?: +-[aA][nN][dD] +{cond})*)? *$")
}

/// A time given to the API (a query bound or a subscription's term).
pub struct Time;

impl PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A UTC date `2027-06-30`, a UTC time `2027-06-30T12:00:00Z`, or unix seconds",
            ))
            .pattern(Some(super::query::TIME_PATTERN.as_str()))
            .examples(["2027-06-30T00:00:00Z"])
            .into()
    }
}

impl ToSchema for Time {}

/// A reference to the component schema of `T`.
pub fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
}
