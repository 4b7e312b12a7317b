//! Query strings of the admin API: lists in the Meraki forms (`statuses[]=a&statuses[]=b`,
//! `statuses=a,b`), date ranges (`startDate[gte]=…`), ISO 8601 times, Snow filters
//! (`status -eq "active" -and sku -eq "LIC-AP"`), and the two pagination styles: Meraki cursors
//! (`perPage`, `startingAfter`, `endingBefore`, HTTP `Link`) and Snow page numbers
//! (`page_number`, `page_size`). Pure functions over strings.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use utoipa::ToSchema;

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

/// The latest time the API takes or shows, `9999-12-31T23:59:59Z`: four-digit years only.
pub const MAX_TIME: u64 = 253_402_300_799;

/// Formats unix seconds as RFC 3339 / ISO 8601 UTC, e.g. `2027-06-30T00:00:00Z` (a time past
/// [`MAX_TIME`] shows as `MAX_TIME`).
pub fn format_time(t: u64) -> String {
    i64::try_from(t.min(MAX_TIME))
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_string())
}

/// What [`parse_time`] accepts, for the OpenAPI document: unix seconds (up to 12 digits, at
/// most [`MAX_TIME`]); a date `2027-06-30` (years 1970 to 9999, real dates only, midnight UTC);
/// a time `2027-06-30T12:00:00Z` (fraction up to nanoseconds; `+00:00` for `Z` too), or with
/// another offset `2027-06-30T14:00:00+02:00` in the years 1971 to 9998 (where no offset can
/// take it out of range). Built from [`MAX_TIME`]; `tests/admin_patterns.rs` checks it
/// against the parser.
pub static TIME_PATTERN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // A date of `years`: any month and day every year has (February up to the 28th), or the
    // 29th of February of a leap year (all of them lie in 1971..=9998).
    let date = |years: &str| {
        format!(
            concat!(
                "(?:{years}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
                "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
                "|(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])",
                "|(?:[2468][048]|[3579][26])00)-02-29)"
            ),
            years = years
        )
    };
    let time = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?";
    let other_offset = concat!(
        r"(?:-(?:[01][0-9]|2[0-3]):[0-5][0-9]",
        r"|\+(?:(?:0[1-9]|1[0-9]|2[0-3]):[0-5][0-9]|00:(?:0[1-9]|[1-5][0-9])))"
    );
    format!(
        r"^(?:{seconds}|{any_year}(?:{time}(?:Z|\+00:00))?|{inner_year}{time}{other_offset})$",
        seconds = digits_at_most(&MAX_TIME.to_string()),
        any_year = date("(?:19[7-9][0-9]|[2-9][0-9]{3})"),
        inner_year =
            date("(?:197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"),
    )
});

/// A pattern (no anchors) for the decimal strings of at most `max.len()` digits whose value is
/// at most `max` (leading zeros allowed).
fn digits_at_most(max: &str) -> String {
    let n = max.len();
    let mut alternatives = vec![format!("[0-9]{{1,{}}}", n - 1)];
    for (i, d) in max.bytes().enumerate() {
        if d > b'0' {
            let rest = n - i - 1;
            alternatives.push(format!(
                "{}[0-{}]{}",
                &max[..i],
                char::from(d - 1),
                if rest > 0 {
                    format!("[0-9]{{{rest}}}")
                } else {
                    String::new()
                }
            ));
        }
    }
    alternatives.push(max.to_string());
    format!("(?:{})", alternatives.join("|"))
}

/// Parses what [`TIME_PATTERN`] describes into unix seconds: unix seconds, a date
/// (`2027-06-30`, midnight UTC) or an RFC 3339 time (`2027-06-30T00:00:00Z`; another offset is
/// converted to UTC, a fraction dropped), from 1970 to [`MAX_TIME`]. The syntax is checked
/// here, the calendar by the `time` crate: a date that does not exist (`2027-02-31`) is
/// refused, not rolled over.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let expected =
        "expected a date like 2027-06-30, a time like 2027-06-30T00:00:00Z, or unix seconds";
    let bad = |why: &str| format!("{s:?}: {why}; {expected}");
    let out_of_range = || format!("{s:?}: out of range (1970-01-01 to 9999-12-31)");
    let digits = |x: &str, n: usize| -> Result<u16, String> {
        if x.len() == n && x.bytes().all(|b| b.is_ascii_digit()) {
            x.parse().map_err(|_| bad("not a number"))
        } else {
            Err(bad(&format!("{x:?} is not {n} digits")))
        }
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .filter(|t| s.len() <= 12 && *t <= MAX_TIME)
            .ok_or_else(out_of_range);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a date"));
    };
    let (y, m, d) = (digits(y, 4)?, digits(m, 2)?, digits(d, 2)?);
    if y < 1970 {
        return Err(out_of_range());
    }
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(|| bad("month must be in the range 1..=12"))?;
    let day = u8::try_from(d).map_err(|_| bad("day must be in the range 1..=31"))?;
    let date =
        Date::from_calendar_date(i32::from(y), month, day).map_err(|e| bad(&e.to_string()))?;
    let small = |v: u16| u8::try_from(v).unwrap_or(u8::MAX);
    let mut at = Time::MIDNIGHT;
    let mut offset = 0i64;
    if let Some(t) = time {
        let (t, utc) = match t.strip_suffix('Z') {
            Some(t) => (t, true),
            None => {
                let at = t
                    .rfind(['+', '-'])
                    .ok_or_else(|| bad("give the offset (Z for UTC)"))?;
                let (t, off) = t.split_at(at);
                let (sign, hhmm) = off.split_at(1);
                let (hh, mm) = hhmm
                    .split_once(':')
                    .ok_or_else(|| bad("the offset is +HH:MM or -HH:MM"))?;
                let (hh, mm) = (digits(hh, 2)?, digits(mm, 2)?);
                if hh > 23 || mm > 59 {
                    return Err(bad("the offset is at most 23:59"));
                }
                offset =
                    (i64::from(hh) * 3600 + i64::from(mm) * 60) * if sign == "-" { -1 } else { 1 };
                (t, sign == "+" && offset == 0)
            }
        };
        // Another offset could move the time out of 1970..=9999: the document allows one only
        // in the years where it cannot.
        if !utc && !(1971..=9998).contains(&y) {
            return Err(out_of_range());
        }
        let (hms, fraction) = match t.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (t, None),
        };
        if let Some(f) = fraction {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("a fraction of a second is 1 to 9 digits"));
            }
        }
        let mut hms = hms.split(':');
        let (Some(h), Some(mi), Some(se), None) = (hms.next(), hms.next(), hms.next(), hms.next())
        else {
            return Err(bad("the time is HH:MM:SS"));
        };
        let (h, mi, se) = (digits(h, 2)?, digits(mi, 2)?, digits(se, 2)?);
        at = Time::from_hms(small(h), small(mi), small(se)).map_err(|e| bad(&e.to_string()))?;
    }
    let local = PrimitiveDateTime::new(date, at)
        .assume_utc()
        .unix_timestamp();
    u64::try_from(local - offset)
        .ok()
        .filter(|t| *t <= MAX_TIME)
        .ok_or_else(out_of_range)
}

/// One condition of a Snow filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Field name (as in the JSON items).
    pub field: String,
    /// `true` for `-eq`, `false` for `-ne`.
    pub equal: bool,
    /// Value to compare with (case-insensitive).
    pub value: String,
}

/// Parses `field -eq "value"` conditions joined by `-and` (`-ne` for not equal; operators in
/// any case; values in double or single quotes; spaces between the parts), naming only
/// `fields`. Exactly what [`super::schema::filter_pattern`] describes.
pub fn parse_filter(s: &str, fields: &[String]) -> Result<Vec<Condition>, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "filter {s:?}: {why}; expected e.g. status -eq \"active\" -and sku -eq \"LIC-AP\""
        ))
    };
    let mut out = Vec::new();
    let mut rest = s.trim_matches(' ');
    while !rest.is_empty() {
        let (field, r) = rest
            .split_once(' ')
            .ok_or_else(|| bad("incomplete condition"))?;
        if !fields.iter().any(|f| f == field) {
            return Err(bad(&format!(
                "unknown field {field:?}; fields: {}",
                fields.join(", ")
            )));
        }
        let (op, r) = r
            .trim_start_matches(' ')
            .split_once(' ')
            .ok_or_else(|| bad("missing value"))?;
        let equal = if op.eq_ignore_ascii_case("-eq") {
            true
        } else if op.eq_ignore_ascii_case("-ne") {
            false
        } else {
            return Err(bad(&format!("unsupported operator {op}")));
        };
        let r = r.trim_start_matches(' ');
        let quote = r
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| bad("the value must be quoted"))?;
        let body = &r[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| bad("unterminated quoted value"))?;
        out.push(Condition {
            field: field.to_string(),
            equal,
            value: body[..end].to_string(),
        });
        rest = &body[end + 1..];
        if rest.is_empty() {
            break;
        }
        let and = after_spaces(rest).ok_or_else(|| bad("join conditions with -and"))?;
        rest = match and.get(..4) {
            Some(word) if word.eq_ignore_ascii_case("-and") => after_spaces(&and[4..])
                .filter(|r| !r.is_empty())
                .ok_or_else(|| bad("a condition must follow -and"))?,
            _ => return Err(bad("join conditions with -and")),
        };
    }
    Ok(out)
}

/// What follows one or more spaces at the start of `r` (`None` without one).
fn after_spaces(r: &str) -> Option<&str> {
    let rest = r.trim_start_matches(' ');
    (rest.len() < r.len()).then_some(rest)
}

/// Keeps the items matching every condition; a field no item has is a 400.
pub fn apply_filter<T: Serialize>(items: Vec<T>, conds: &[Condition]) -> Result<Vec<T>, ApiError> {
    if conds.is_empty() {
        return Ok(items);
    }
    let mut out = Vec::new();
    for item in items {
        let v =
            serde_json::to_value(&item).map_err(|e| ApiError::internal(format!("filter: {e}")))?;
        let mut keep = true;
        for c in conds {
            let Some(field) = v.get(&c.field) else {
                let fields: Vec<&str> = v
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                return Err(ApiError::bad_request(format!(
                    "filter: unknown field {:?}; fields: {}",
                    c.field,
                    fields.join(", ")
                )));
            };
            let text = match field {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "null".to_string(),
                other => other.to_string(),
            };
            if text.eq_ignore_ascii_case(&c.value) != c.equal {
                keep = false;
            }
        }
        if keep {
            out.push(item);
        }
    }
    Ok(out)
}

/// Page-number pagination (Snow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    /// Page (from 1).
    pub page_number: u32,
    /// Items per page.
    pub page_size: u32,
    /// Items over all pages.
    pub total_items: u32,
    /// Pages.
    pub total_pages: u32,
}

/// A link to another page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Link {
    /// `self`, `first`, `prev`, `next` or `last`.
    pub rel: String,
    /// Path and query.
    pub href: String,
}

/// Cuts one page out of `items` by `page_number`/`page_size` (default 1 and 100, size at
/// most 1000) and makes the links to its neighbours.
pub fn page_numbers<T>(
    items: Vec<T>,
    params: &Params,
    path: &str,
) -> Result<(Vec<T>, Pagination, Vec<Link>), ApiError> {
    // The document says int32.
    let number = super::params::PAGE_NUMBER.read(params)?;
    let size = super::params::PAGE_SIZE.read(params)?;
    let total = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let pages = total.div_ceil(size).max(1);
    let start = usize::try_from(u64::from(number - 1) * u64::from(size)).unwrap_or(usize::MAX);
    let page: Vec<T> = items.into_iter().skip(start).take(size as usize).collect();
    let link = |rel: &str, n: u32| {
        let mut pairs = params.encode_without(&["page_number", "page_size"]);
        pairs.push(("page_number".into(), n.to_string()));
        pairs.push(("page_size".into(), size.to_string()));
        Link {
            rel: rel.to_string(),
            href: href(path, &pairs),
        }
    };
    let mut links = vec![link("self", number), link("first", 1)];
    if number > 1 {
        links.push(link("prev", (number - 1).min(pages)));
    }
    if number < pages {
        links.push(link("next", number + 1));
    }
    links.push(link("last", pages));
    Ok((
        page,
        Pagination {
            page_number: number,
            page_size: size,
            total_items: total,
            total_pages: pages,
        },
        links,
    ))
}

fn href(path: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{q}")
}

/// Cuts one page out of `items` (ordered by `key` here) with Meraki cursors: `perPage`
/// (3..1000, default 1000), `startingAfter` / `endingBefore` (keys, which need not exist:
/// a cursor past either end is an empty page). Both cursors together select the keys
/// between them. Returns the page and the value of an HTTP `Link` header with `first`, `prev`
/// and `next` as they apply.
pub fn cursor_page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    params: &Params,
    path: &str,
) -> Result<(Vec<T>, String), ApiError> {
    let per_page = usize::try_from(super::params::PER_PAGE.read(params)?).unwrap_or(1000);
    let mut keyed: Vec<(String, T)> = items.into_iter().map(|i| (key(&i), i)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let (keys, items): (Vec<String>, Vec<T>) = keyed.into_iter().unzip();
    let (start, end) = cursor_window(
        &keys,
        per_page,
        params.get("startingAfter"),
        params.get("endingBefore"),
    );
    let link = |rel: &str, cursor: Option<(&str, &str)>| {
        let mut pairs = params.encode_without(&["startingAfter", "endingBefore", "perPage"]);
        pairs.push(("perPage".into(), per_page.to_string()));
        if let Some((k, v)) = cursor {
            pairs.push((k.into(), v.into()));
        }
        format!("<{}>; rel={rel}", href(path, &pairs))
    };
    let mut links = vec![link("first", None)];
    if start > 0 {
        // The page before `start`: "ending before" the key at `start`, or — past the end —
        // the last page, which starts after the key `per_page` places before the end.
        let prev = match keys.get(start) {
            Some(k) => Some(("endingBefore", k.as_str())),
            None => keys
                .len()
                .checked_sub(per_page + 1)
                .and_then(|i| keys.get(i))
                .map(|k| ("startingAfter", k.as_str())),
        };
        links.push(link("prev", prev));
    }
    if end < keys.len() {
        if let Some(last) = end.checked_sub(1).and_then(|i| keys.get(i)) {
            links.push(link("next", Some(("startingAfter", last.as_str()))));
        }
    }
    let page = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    Ok((page, links.join(", ")))
}

/// The window `start..end` of the sorted `keys` a cursor request selects: after `after`,
/// before `before`, at most `per_page` of them — the first ones, or the last ones when only
/// `before` is given. Always `start <= end <= keys.len()`.
fn cursor_window(
    keys: &[String],
    per_page: usize,
    after: Option<&str>,
    before: Option<&str>,
) -> (usize, usize) {
    let lo = after.map_or(0, |a| keys.partition_point(|k| k.as_str() <= a));
    let hi = before
        .map_or(keys.len(), |b| keys.partition_point(|k| k.as_str() < b))
        .max(lo);
    if after.is_none() && before.is_some() {
        (hi.saturating_sub(per_page), hi)
    } else {
        (lo, hi.min(lo.saturating_add(per_page)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::{any, prop_oneof, Just, Strategy};

    #[test]
    fn times_round_trip_through_iso_8601() {
        for t in [0u64, 86_399, 951_782_400, 1_700_000_000, 1_814_313_600] {
            assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        }
        assert_eq!(format_time(1_814_313_600), "2027-06-30T00:00:00Z");
        assert_eq!(parse_time("2027-06-30").unwrap(), 1_814_313_600);
        assert_eq!(
            parse_time("2027-06-30T00:00:00.250+00:00").unwrap(),
            1_814_313_600
        );
        assert_eq!(parse_time("12").unwrap(), 12);
        // Another offset is the same instant in UTC (from 1971 to 9998, where it cannot leave
        // the range).
        assert_eq!(
            parse_time("2027-06-30T02:00:00+02:00").unwrap(),
            1_814_313_600
        );
        assert!(parse_time("1970-01-01T05:00:00+01:00").is_err());
        assert_eq!(parse_time("1970-01-01T05:00:00+00:00").unwrap(), 18_000);
        assert!(parse_time(" 2027-06-30").is_err(), "nothing is trimmed");
        assert_eq!(parse_time("2028-02-29").unwrap(), 1_835_395_200);
        assert_eq!(format_time(MAX_TIME), "9999-12-31T23:59:59Z");
        assert_eq!(format_time(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(parse_time("9999-12-31T23:59:59Z").unwrap(), MAX_TIME);
    }

    /// Issue 16 item 15: a date that does not exist is refused, not rolled over (2027-02-31
    /// was taken as 3 March), and so is anything outside 1970..=9999.
    #[test]
    fn dates_that_do_not_exist_are_refused() {
        for bad in [
            "2027-02-31",
            "2027-02-29",
            "2100-02-29",
            "2027-04-31",
            "2027-02-31T00:00:00Z",
            "2027-13-01",
            "2027-00-10",
            "2027-06-00",
            "2027-06-30T24:00:00Z",
            "2027-06-30T23:60:00Z",
            "2027-06-30T00:00Z",
            "1969-12-31",
            "1969-12-31T23:59:59Z",
            "10000-01-01",
            "253402300800",
            "99999999999999999999",
            "2027-6-30",
            "2027-06-30T00:00:00",
            "yesterday",
            "",
        ] {
            assert!(
                parse_time(bad).is_err(),
                "{bad} accepted as {:?}",
                parse_time(bad)
            );
        }
        let e = parse_time("2027-02-31").unwrap_err();
        assert!(e.contains("day"), "{e}");
    }

    proptest::proptest! {
        /// Every time the API can show reads back as itself.
        #[test]
        fn formatted_times_parse_back(t in 0..=MAX_TIME) {
            proptest::prop_assert_eq!(parse_time(&format_time(t)).unwrap(), t);
            let date = &format_time(t)[..10];
            proptest::prop_assert_eq!(parse_time(date).unwrap(), t - t % 86_400);
        }
    }

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

    #[test]
    fn filters_parse_eq_ne_and_and() {
        let fields = ["status".to_string(), "sku".to_string()];
        let c = parse_filter(r#" status -eq "active"  -and sku -NE 'LIC-AP' "#, &fields).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].equal && !c[1].equal);
        assert_eq!(c[1].value, "LIC-AP");
        assert!(parse_filter("  ", &fields).unwrap().is_empty());
        for bad in [
            "status",
            "status -gt \"x\"",
            "status -eq x",
            "status -eq \"x\" sku -eq \"y\"",
            "status -eq \"x\"-and sku -eq \"y\"",
            "status -eq \"x\" -and",
            "status\t-eq \"x\"",
            "model -eq \"x\"",
            "status -eq \"x\" -andsku -eq \"y\"",
        ] {
            assert!(parse_filter(bad, &fields).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursor_pages_walk_forward_and_back_with_links() {
        let items: Vec<String> = (1..=7).map(|i| format!("S{i}")).collect();
        let p = Params::parse(Some("perPage=3"));
        let (page, link) = cursor_page(items.clone(), |s| s.clone(), &p, "/x").unwrap();
        assert_eq!(page, ["S1", "S2", "S3"]);
        assert!(link.contains("startingAfter=S3>; rel=next") && !link.contains("rel=prev"));
        let p = Params::parse(Some("perPage=3&startingAfter=S3"));
        let (page, link) = cursor_page(items.clone(), |s| s.clone(), &p, "/x").unwrap();
        assert_eq!(page, ["S4", "S5", "S6"]);
        assert!(link.contains("endingBefore=S4>; rel=prev"));
        let p = Params::parse(Some("perPage=3&endingBefore=S4"));
        let (page, _) = cursor_page(items.clone(), |s| s.clone(), &p, "/x").unwrap();
        assert_eq!(page, ["S1", "S2", "S3"]);
        let p = Params::parse(Some("perPage=2"));
        assert!(cursor_page(items, |s| s.clone(), &p, "/x").is_err());
    }

    /// The `(rel, query)` pairs of a `Link` header made by [`cursor_page`].
    fn links(header: &str) -> Vec<(String, Params)> {
        header
            .split(", ")
            .map(|l| {
                let (target, rel) = l.split_once(">; rel=").unwrap();
                let query = target.trim_start_matches('<').split_once('?').map(|x| x.1);
                (rel.to_string(), Params::parse(query))
            })
            .collect()
    }

    fn rel<'a>(links: &'a [(String, Params)], name: &str) -> Option<&'a Params> {
        links.iter().find(|(r, _)| r == name).map(|(_, p)| p)
    }

    fn query(pairs: &[(&str, Option<&str>)]) -> Params {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        Params::parse(Some(&q.finish()))
    }

    fn ids() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[A-Z][A-Z0-9-]{0,3}", 0..25)
            .prop_map(|s| s.into_iter().collect())
    }

    /// A cursor: one of the ids, or any short string (before, between or after them).
    fn cursor(ids: Vec<String>) -> impl Strategy<Value = Option<String>> {
        let any = "[ -~]{0,5}".boxed();
        let picked = if ids.is_empty() {
            any.clone()
        } else {
            proptest::sample::select(ids).boxed()
        };
        proptest::option::of(prop_oneof![picked, any])
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Issue 16 item 1: no cursor, page size or id set panics; a page is a run of the
        /// sorted ids after `startingAfter` and before `endingBefore`, at most `perPage` long,
        /// and its `next` / `prev` links lead to the neighbouring runs.
        #[test]
        fn cursor_pages_never_panic_and_their_links_lead_to_the_neighbours(
            (ids, after, before) in ids().prop_flat_map(|ids| {
                (Just(ids.clone()), cursor(ids.clone()), cursor(ids))
            }),
            per_page in prop_oneof![3u32..12, any::<u32>()],
            shuffle in any::<u64>(),
        ) {
            // Items in any order: the paginator sorts them itself.
            let mut shuffled = ids.clone();
            let len = shuffled.len();
            if len > 1 {
                shuffled.rotate_left(usize::try_from(shuffle).unwrap_or(0) % len);
            }
            let n = per_page.to_string();
            let p = query(&[
                ("perPage", Some(&n)),
                ("startingAfter", after.as_deref()),
                ("endingBefore", before.as_deref()),
            ]);
            let Ok((page, header)) = cursor_page(shuffled, |s| s.clone(), &p, "/x") else {
                proptest::prop_assert!(!(3..=1000).contains(&per_page));
                return Ok(());
            };
            let per_page = per_page as usize;
            let selected: Vec<&String> = ids
                .iter()
                .filter(|k| after.as_ref().is_none_or(|a| *k > a))
                .filter(|k| before.as_ref().is_none_or(|b| *k < b))
                .collect();
            let expected: Vec<&String> = if after.is_none() && before.is_some() {
                selected[selected.len().saturating_sub(per_page)..].to_vec()
            } else {
                selected.into_iter().take(per_page).collect()
            };
            proptest::prop_assert_eq!(page.iter().collect::<Vec<_>>(), expected);
            let links = links(&header);
            proptest::prop_assert!(rel(&links, "first").is_some());
            let follow = |q: &Params| cursor_page(ids.clone(), |s| s.clone(), q, "/x").unwrap().0;
            let at = |k: &String| ids.iter().position(|x| x == k).unwrap();
            // Where the page starts and ends in the ids (an empty page sits after `after`).
            let lo = ids.iter().filter(|k| after.as_ref().is_some_and(|a| *k <= a)).count();
            let start = page.first().map_or(lo, at);
            let end = page.last().map_or(start, |l| at(l) + 1);
            match rel(&links, "next") {
                Some(q) => {
                    let next = follow(q);
                    proptest::prop_assert!(!next.is_empty());
                    proptest::prop_assert_eq!(at(&next[0]), end);
                }
                None => proptest::prop_assert!(
                    page.last().is_none_or(|l| at(l) + 1 == ids.len())
                        || before.is_some(),
                    "no next link though ids follow the page"
                ),
            }
            if let Some(q) = rel(&links, "prev") {
                let prev = follow(q);
                proptest::prop_assert!(!prev.is_empty());
                proptest::prop_assert_eq!(at(prev.last().unwrap()) + 1, start);
            }
        }

        /// Walking `next` from the first page visits every id once, in order; so does walking
        /// `prev` back from the page past the end.
        #[test]
        fn walking_the_links_visits_every_id_once(ids in ids(), per_page in 3u32..8) {
            let n = per_page.to_string();
            let mut seen = Vec::new();
            let mut q = query(&[("perPage", Some(&n))]);
            for _ in 0..=ids.len() {
                let (page, header) = cursor_page(ids.clone(), |s| s.clone(), &q, "/x").unwrap();
                seen.extend(page);
                match rel(&links(&header), "next") {
                    Some(next) => q = next.clone(),
                    None => break,
                }
            }
            proptest::prop_assert_eq!(&seen, &ids);
            let mut back: Vec<String> = Vec::new();
            let mut q = query(&[("perPage", Some(&n)), ("startingAfter", Some("~"))]);
            for _ in 0..=ids.len() + 1 {
                let (page, header) = cursor_page(ids.clone(), |s| s.clone(), &q, "/x").unwrap();
                back.splice(0..0, page);
                match rel(&links(&header), "prev") {
                    Some(prev) => q = prev.clone(),
                    None => break,
                }
            }
            proptest::prop_assert_eq!(&back, &ids);
        }

        /// Page numbers: any `page_number` / `page_size` is a page of the right slice or a 400.
        #[test]
        fn page_numbers_never_panic(
            count in 0usize..2500,
            number in prop_oneof![Just("1".to_string()), "[0-9]{1,11}", "[ -~]{0,4}"],
            size in prop_oneof![Just("3".to_string()), "[0-9]{1,5}", "[ -~]{0,4}"],
        ) {
            let items: Vec<usize> = (0..count).collect();
            let p = query(&[("page_number", Some(&number)), ("page_size", Some(&size))]);
            if let Ok((page, pg, links)) = page_numbers(items, &p, "/x") {
                let (n, s) = (pg.page_number as usize, pg.page_size as usize);
                let expected: Vec<usize> = (0..count).skip((n - 1) * s).take(s).collect();
                proptest::prop_assert_eq!(page, expected);
                proptest::prop_assert!(pg.total_pages >= 1);
                proptest::prop_assert!(links.iter().any(|l| l.rel == "last"));
            }
        }

        /// Filters and times: any text is parsed or refused, never a panic.
        #[test]
        fn filters_and_times_never_panic(s in "\\PC{0,40}") {
            let _ = parse_filter(&s, &["status".to_string()]);
            let _ = parse_time(&s);
            let _ = Params::parse(Some(&s)).range("d");
        }
    }
}
