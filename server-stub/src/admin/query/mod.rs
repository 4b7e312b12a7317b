//! Query strings of the admin API: lists in the Meraki forms (`statuses[]=a&statuses[]=b`,
//! `statuses=a,b`), date ranges (`startDate[gte]=…`), ISO 8601 times, Snow filters
//! (`status -eq "active" -and sku -eq "LIC-AP"`), and the two pagination styles: Meraki cursors
//! (`perPage`, `startingAfter`, `endingBefore`, HTTP `Link`) and Snow page numbers
//! (`page_number`, `page_size`). Pure functions over strings.
//!
//! Split by kind: `times.rs` (ISO 8601), `filter.rs` (Snow filters), `page.rs` (both pagination
//! styles); the query string itself ([`Params`]) is here.

mod filter;
mod page;
mod times;

pub use filter::{apply_filter, parse_filter, Condition};
pub use page::{cursor_page, page_numbers, Link, Pagination};
pub use times::{format_time, parse_time, MAX_TIME, TIME_PATTERN};

use super::error::ApiError;

/// A parsed query string: its pairs in order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a raw query string (`None` = no query).
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key` and `key[]`, commas splitting values, in order. Empty items are
    /// kept (so `k=` or `k=a,,b` can be refused) and nothing is trimmed.
    pub fn list(&self, key: &str) -> Vec<String> {
        let bracket = format!("{key}[]");
        self.0
            .iter()
            .filter(|(k, _)| *k == key || *k == bracket)
            .flat_map(|(_, v)| v.split(','))
            .map(str::to_string)
            .collect()
    }

    /// A boolean (`true` or `false`), `false` when absent.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key}={other:?}: expected true or false"
            ))),
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int_in(&self, key: &str, default: u32, min: u32, max: u32) -> Result<u32, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{key}={v:?}: expected an integer from {min} to {max}"
            ))),
        }
    }

    /// A time range from `key`, `key[gt]`, `key[gte]`, `key[lt]`, `key[lte]`.
    pub fn range(&self, key: &str) -> Result<TimeRange, ApiError> {
        let get = |suffix: &str| -> Result<Option<u64>, ApiError> {
            let k = format!("{key}{suffix}");
            self.get(&k)
                .map(|v| parse_time(v).map_err(|e| ApiError::bad_request(format!("{k}: {e}"))))
                .transpose()
        };
        Ok(TimeRange {
            eq: get("")?,
            gt: get("[gt]")?,
            gte: get("[gte]")?,
            lt: get("[lt]")?,
            lte: get("[lte]")?,
        })
    }

    /// The pairs without the given keys, re-encoded (for links to other pages).
    pub fn encode_without(&self, drop: &[&str]) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

/// Bounds on a time (each optional, all must hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Equal.
    pub eq: Option<u64>,
    /// After.
    pub gt: Option<u64>,
    /// At or after.
    pub gte: Option<u64>,
    /// Before.
    pub lt: Option<u64>,
    /// At or before.
    pub lte: Option<u64>,
}

impl TimeRange {
    /// Whether `t` is in the range.
    pub fn contains(&self, t: u64) -> bool {
        self.eq.is_none_or(|x| t == x)
            && self.gt.is_none_or(|x| t > x)
            && self.gte.is_none_or(|x| t >= x)
            && self.lt.is_none_or(|x| t < x)
            && self.lte.is_none_or(|x| t <= x)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lists_take_brackets_repeats_and_commas() {
        let p = Params::parse(Some("statuses[]=active&statuses[]=expired&skus=A,B&x=1"));
        assert_eq!(p.list("statuses"), ["active", "expired"]);
        assert_eq!(p.list("skus"), ["A", "B"]);
        assert!(p.list("none").is_empty());
        let r = Params::parse(Some("startDate[gte]=2027-01-01&startDate[lt]=2028-01-01"))
            .range("startDate")
            .unwrap();
        assert!(r.contains(parse_time("2027-06-30").unwrap()));
        assert!(!r.contains(parse_time("2028-01-01").unwrap()));
    }

    proptest::proptest! {

        /// Filters and times: any text is parsed or refused, never a panic.
        #[test]
        fn filters_and_times_never_panic(s in "\\PC{0,40}") {
            let _ = parse_filter(&s, &["status".to_string()]);
            let _ = parse_time(&s);
            let _ = Params::parse(Some(&s)).range("d");
        }
    }
}
