//! Validated identifiers. Every id that can end up in an MQTT topic or a log line is one of
//! these newtypes, so nothing outside `[A-Za-z0-9._-]{1,64}` gets that far.

use alloc::string::String;
use core::fmt;

use crate::limits::MAX_ID_LEN;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Empty string.
    #[error("identifier is empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`].
    #[error("identifier is {0} bytes long, the limit is 64")]
    TooLong(usize),
    /// A character outside `[A-Za-z0-9._-]` (MQTT wildcards and separators among them).
    #[error("identifier contains {0:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar(char),
    /// `.` and `..` are refused: they read as paths in logs and file names.
    #[error("identifier may not be '.' or '..'")]
    Dots,
}

/// What [`validate`] accepts, as a regular expression in the common subset of ECMA 262 (JSON
/// Schema, OpenAPI), Python and Rust syntax: 1 to 64 of `[A-Za-z0-9._-]`, but not `.` or `..`
/// (spelled without look-ahead, which not every engine has). The admin API's OpenAPI document
/// uses it for every id; a test in `licd-stub` checks that it and [`validate`] agree.
pub const ID_PATTERN: &str = "^(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$";

/// Checks `s` against `[A-Za-z0-9._-]{1,64}` (and refuses `.` / `..`).
pub fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError::BadChar(c));
    }
    if s == "." || s == ".." {
        return Err(IdError::Dots);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A tenant (customer) of the controller; the first level of a device's topics.
    TenantId
);
id_type!(
    /// A device's identity, unique within its tenant.
    DeviceId
);
id_type!(
    /// A licensable service (feature) of a device, e.g. `wifi-ap`, `poe-plus`.
    ServiceName
);
id_type!(
    /// A product SKU from the controller's catalogue.
    Sku
);
id_type!(
    /// A license or subscription id on the controller.
    LicenseId
);
id_type!(
    /// A site: the place a delegated site issuer (relay) licenses devices at (issue 23).
    SiteId
);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn valid_identifiers_are_accepted() {
        for s in ["a", "AP-515_x.1", "0", &"x".repeat(64), "..."] {
            assert!(DeviceId::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn invalid_identifiers_are_refused_with_the_reason() {
        assert_eq!(DeviceId::new(""), Err(IdError::Empty));
        assert_eq!(DeviceId::new("x".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(DeviceId::new("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(DeviceId::new("+"), Err(IdError::BadChar('+')));
        assert_eq!(DeviceId::new("#"), Err(IdError::BadChar('#')));
        assert_eq!(DeviceId::new("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(DeviceId::new("é"), Err(IdError::BadChar('é')));
        assert_eq!(DeviceId::new(".."), Err(IdError::Dots));
        assert_eq!(DeviceId::new("."), Err(IdError::Dots));
    }

    #[test]
    fn deserializing_an_invalid_identifier_fails() {
        let bytes = postcard::to_allocvec(&"a/b".to_string()).unwrap();
        assert!(postcard::from_bytes::<DeviceId>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"ok".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<DeviceId>(&bytes).unwrap().as_str(),
            "ok"
        );
    }
}
