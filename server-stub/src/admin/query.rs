//! Query strings of the admin API: lists in the Meraki forms (`statuses[]=a&statuses[]=b`,
//! `statuses=a,b`), date ranges (`startDate[gte]=…`), ISO 8601 times, Snow filters
//! (`status -eq "active" -and sku -eq "LIC-AP"`), and the two pagination styles: Meraki cursors
//! (`perPage`, `startingAfter`, `endingBefore`, HTTP `Link`) and Snow page numbers
//! (`page_number`, `page_size`). Pure functions over strings.

use serde::{Deserialize, Serialize};
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

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats unix seconds as ISO 8601 UTC, e.g. `2027-06-30T00:00:00Z`.
pub fn format_time(t: u64) -> String {
    let t = i64::try_from(t).unwrap_or(i64::MAX);
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// What [`parse_time`] accepts, for the OpenAPI document: unix seconds (1 to 11 digits), a UTC
/// date `2027-06-30` (years 1970 to 9999, real dates only) or a UTC time
/// `2027-06-30T12:00:00Z` (fraction up to nanoseconds; `+00:00` for `Z` too).
pub const TIME_PATTERN: &str = concat!(
    "^(?:[0-9]{1,11}|(?:",
    // A year and any month and day every year has (February up to the 28th)...
    "(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    // ...or the 29th of February of a leap year.
    "|(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])",
    "|(?:[2468][048]|[3579][26])00)-02-29)",
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|\+00:00))?)$",
);

/// Parses what [`TIME_PATTERN`] describes into unix seconds: unix seconds, `2027-06-30`, or
/// `2027-06-30T00:00:00Z` (a fraction is dropped).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{s:?}: expected a UTC time like 2027-06-30T00:00:00Z, a date like 2027-06-30, \
             or unix seconds"
        )
    };
    let digits = |x: &str, n: usize| -> Result<u32, String> {
        if x.len() == n && x.bytes().all(|b| b.is_ascii_digit()) {
            x.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if !s.is_empty() && s.len() <= 11 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d) = (digits(y, 4)?, digits(m, 2)?, digits(d, 2)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if y < 1970 || d == 0 || d > month_days {
        return Err(bad());
    }
    let mut secs = 0i64;
    if let Some(t) = time {
        let t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix("+00:00"))
            .ok_or_else(|| format!("{s:?}: give the time in UTC (…Z)"))?;
        let (hms, fraction) = match t.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (t, None),
        };
        if let Some(f) = fraction {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
        }
        let mut hms = hms.split(':');
        let (Some(h), Some(mi), Some(se), None) = (hms.next(), hms.next(), hms.next(), hms.next())
        else {
            return Err(bad());
        };
        let (h, mi, se) = (digits(h, 2)?, digits(mi, 2)?, digits(se, 2)?);
        if h > 23 || mi > 59 || se > 59 {
            return Err(bad());
        }
        secs = i64::from(h * 3600 + mi * 60 + se);
    }
    let t = days_from_civil(i64::from(y), m, d) * 86_400 + secs;
    u64::try_from(t).map_err(|_| bad())
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
    let number = params.int_in("page_number", 1, 1, u32::MAX)?;
    let size = params.int_in("page_size", 100, 1, 1000)?;
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
        assert!(parse_time("2027-13-01").is_err());
        assert!(parse_time("2027-02-29").is_err());
        assert_eq!(parse_time("2028-02-29").unwrap(), 1_835_395_200);
        assert!(parse_time(" 2027-06-30").is_err());
        assert!(parse_time("2027-6-30").is_err());
        assert!(parse_time("123456789012").is_err());
        assert!(parse_time("2027-06-30T00:00:00+02:00").is_err());
        assert!(parse_time("yesterday").is_err());
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
