//! ISO 8601 times of the admin API: formatting, the accepted forms (and the pattern the
//! OpenAPI document states for them), parsing by the `time` crate.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
}
