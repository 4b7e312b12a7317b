//! The patterns the OpenAPI document gives for ids, times and filters accept exactly what the
//! admin API's parsers accept: strings drawn from each pattern parse, and arbitrary strings
//! over the characters that matter parse exactly when the pattern matches them. (The fuzz
//! gate, `scripts/fuzz-admin-api.sh`, checks the same from outside; these find a drift in
//! seconds and name the string.)
#![allow(clippy::unwrap_used)]

use licd_stub::admin::query::{parse_filter, parse_time, TIME_PATTERN};
use licd_stub::admin::schema::filter_pattern;
use std::sync::LazyLock;

use proptest::prelude::*;
use regex_automata::meta::Regex;

static ID: LazyLock<Regex> = LazyLock::new(|| regex(licd_protocol::id::ID_PATTERN));
static TIME: LazyLock<Regex> = LazyLock::new(|| regex(&TIME_PATTERN));
static FILTER: LazyLock<Regex> = LazyLock::new(|| regex(&filter_pattern(&fields())));

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap()
}

/// Strings `pattern` matches (proptest draws from a pattern without its `^…$`).
fn drawn_from(pattern: &str) -> impl Strategy<Value = String> {
    let inner = pattern
        .strip_prefix('^')
        .unwrap()
        .strip_suffix('$')
        .unwrap();
    prop::string::string_regex(inner).unwrap()
}

/// Strings over `alphabet` of up to `max` characters.
fn over(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..=max)
        .prop_map(|v| v.into_iter().collect())
}

fn fields() -> Vec<String> {
    ["sku", "status", "customerId"].map(String::from).to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn id_pattern_is_what_ids_accept(s in prop_oneof![
        over("a.-_Z9 /é", 4),
        over("a.", 66),
        drawn_from(licd_protocol::id::ID_PATTERN),
    ]) {
        prop_assert_eq!(ID.is_match(&s), licd_protocol::id::validate(&s).is_ok(), "{:?}", s);
    }

    #[test]
    fn time_pattern_is_what_the_time_parser_accepts(s in prop_oneof![
        over("0123456789-", 14),
        over("012-9T:.Z+", 24),
        "(19|20|21|24|99)[0-9]{2}-(0[0-9]|1[0-3])-(0[0-9]|[1-3][0-9])",
        "20[0-9]{2}-02-(2[89]|30)(T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,10})?(Z|\\+00:00|\\+01:00)?)?",
        "(1969|1970|1971|2027|9998|9999|10000)-(01|02|12)-(01|28|29|31)T(00|05|23|24):[0-5]9:[0-6]9([+-](00|01|23|24):(00|30|60)|Z|z)?",
        "[0-9]{11,13}",
        drawn_from(&TIME_PATTERN),
    ]) {
        prop_assert_eq!(TIME.is_match(&s), parse_time(&s).is_ok(), "{:?}", s);
    }

    #[test]
    fn filter_pattern_is_what_the_filter_parser_accepts(s in prop_oneof![
        over(" \"'-eqnadskuEQNAD", 30),
        "( *(sku|status|model|x) +-(eq|ne|EQ|gt|and) +(\"[a ']*\"|'[a \"]*'|a)( +-(and|AND|or) +)?){0,3} *",
        drawn_from(&filter_pattern(&fields())),
    ]) {
        prop_assert_eq!(FILTER.is_match(&s), parse_filter(&s, &fields()).is_ok(), "{:?}", s);
    }
}

#[test]
fn the_patterns_accept_the_documented_examples() {
    let time = regex(&TIME_PATTERN);
    for ok in [
        "2027-06-30",
        "2027-06-30T12:00:00Z",
        "2028-02-29T23:59:59.123456789+00:00",
        "2000-02-29",
        "1814313600",
        "253402300799",
        "2027-06-30T14:00:00+02:00",
        "1971-01-01T00:00:00-23:59",
    ] {
        assert!(time.is_match(ok) && parse_time(ok).is_ok(), "{ok}");
    }
    for bad in [
        "2027-02-29",
        "2100-02-29",
        "1969-12-31",
        "2027-06-30T24:00:00Z",
        "2027-06-30 12:00:00Z",
        "2027-06-30T12:00Z",
        "1970-01-01T00:00:00+01:00",
        "9999-12-31T23:00:00-01:00",
        "2027-06-30T12:00:00+24:00",
        "253402300800",
        "0000000000001",
    ] {
        assert!(!time.is_match(bad) && parse_time(bad).is_err(), "{bad}");
    }
    let filter = regex(&filter_pattern(&fields()));
    assert!(filter.is_match(r#"sku -eq "LIC-AP" -AND status -ne 'active'"#));
    assert!(!filter.is_match(r#"model -eq "x""#));
}
