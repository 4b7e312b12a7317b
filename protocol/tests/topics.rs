//! The MQTT topic scheme `licd/v1/{tenant}/{device}/{report|grants|presence}`: building from
//! any valid ids parses back to the same topic, and everything else is refused with the
//! reason.

use licd_protocol::topic::{report_filter, shared_report_filter, DEFAULT_SHARE_GROUP};
use licd_protocol::{DeviceId, Error, IdError, TenantId, Topic, TopicKind};
use proptest::prelude::*;

fn id_string() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}".prop_filter("'.' and '..' are refused", |s| s != "." && s != "..")
}

fn kind() -> impl Strategy<Value = TopicKind> {
    prop_oneof![
        Just(TopicKind::Report),
        Just(TopicKind::Grants),
        Just(TopicKind::Presence)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn build_then_parse_round_trips(tenant in id_string(), device in id_string(), kind in kind()) {
        let topic = Topic::new(
            &TenantId::new(tenant.clone()).unwrap(),
            &DeviceId::new(device.clone()).unwrap(),
            kind,
        );
        let s = topic.to_topic_string();
        prop_assert_eq!(&s, &format!("licd/v1/{tenant}/{device}/{}", kind.as_str()));
        prop_assert_eq!(&topic.to_string(), &s);
        prop_assert_eq!(Topic::parse(&s).unwrap(), topic);
    }

    #[test]
    fn a_wildcard_anywhere_is_refused(
        tenant in id_string(), device in id_string(), kind in kind(),
        wildcard in prop_oneof![Just('+'), Just('#')], at in any::<prop::sample::Index>(),
    ) {
        let mut s = format!("licd/v1/{tenant}/{device}/{}", kind.as_str());
        let at = at.index(s.len() + 1);
        s.insert(at, wildcard);
        prop_assert_eq!(
            Topic::parse(&s),
            Err(Error::BadTopic("wildcards are not allowed in a topic name"))
        );
    }

    #[test]
    fn a_character_outside_the_id_alphabet_is_refused(
        // Shorter than the limit, so the length check (which comes first) passes.
        tenant in "[A-Za-z0-9_-]{1,40}", device in "[A-Za-z0-9_-]{1,40}",
        bad in any::<char>().prop_filter("outside the alphabet and not / + #", |c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | '#'))
        }),
    ) {
        let s = format!("licd/v1/{tenant}{bad}/{device}/grants");
        prop_assert_eq!(Topic::parse(&s), Err(Error::Id(IdError::BadChar(bad))));
        let s = format!("licd/v1/{tenant}/{bad}{device}/grants");
        prop_assert_eq!(Topic::parse(&s), Err(Error::Id(IdError::BadChar(bad))));
    }

    #[test]
    fn wrong_arity_is_refused(
        levels in prop::collection::vec(id_string(), 0..8),
    ) {
        prop_assume!(levels.len() != 3);
        let s = format!("licd/v1/{}", levels.join("/"));
        let err = Topic::parse(&s).unwrap_err();
        prop_assert_eq!(err, Error::BadTopic("expected licd/v1/{tenant}/{device}/{leaf}"));
    }

    #[test]
    fn an_unknown_leaf_is_refused(tenant in id_string(), device in id_string(), leaf in id_string()) {
        prop_assume!(!["report", "grants", "presence"].contains(&leaf.as_str()));
        let s = format!("licd/v1/{tenant}/{device}/{leaf}");
        prop_assert_eq!(Topic::parse(&s), Err(Error::BadTopic("unknown topic leaf")));
    }
}

#[test]
fn the_documented_examples_hold() {
    let t = TenantId::new("acme").unwrap();
    let d = DeviceId::new("ap-1").unwrap();
    for (kind, s) in [
        (TopicKind::Report, "licd/v1/acme/ap-1/report"),
        (TopicKind::Grants, "licd/v1/acme/ap-1/grants"),
        (TopicKind::Presence, "licd/v1/acme/ap-1/presence"),
    ] {
        assert_eq!(Topic::new(&t, &d, kind).to_topic_string(), s);
        assert_eq!(Topic::parse(s).unwrap(), Topic::new(&t, &d, kind));
    }
    assert_eq!(report_filter(), "licd/v1/+/+/report");
    assert_eq!(
        shared_report_filter(DEFAULT_SHARE_GROUP),
        "$share/licd-controllers/licd/v1/+/+/report"
    );
}

#[test]
fn rejection_cases_give_the_reason() {
    let cases: &[(&str, Error)] = &[
        ("", Error::BadTopic("topic does not start with licd/v1/")),
        (
            "licd",
            Error::BadTopic("topic does not start with licd/v1/"),
        ),
        (
            "licd/v2/acme/ap-1/grants",
            Error::BadTopic("topic does not start with licd/v1/"),
        ),
        (
            "LICD/v1/acme/ap-1/grants",
            Error::BadTopic("topic does not start with licd/v1/"),
        ),
        (
            "/licd/v1/acme/ap-1/grants",
            Error::BadTopic("topic does not start with licd/v1/"),
        ),
        (
            "licd/v1",
            Error::BadTopic("expected licd/v1/{tenant}/{device}/{leaf}"),
        ),
        (
            "licd/v1/acme/ap-1",
            Error::BadTopic("expected licd/v1/{tenant}/{device}/{leaf}"),
        ),
        (
            "licd/v1/acme/ap-1/grants/",
            Error::BadTopic("expected licd/v1/{tenant}/{device}/{leaf}"),
        ),
        (
            "licd/v1/acme/ap-1/grants/x",
            Error::BadTopic("expected licd/v1/{tenant}/{device}/{leaf}"),
        ),
        (
            "licd/v1/acme/ap-1/Grants",
            Error::BadTopic("unknown topic leaf"),
        ),
        ("licd/v1/acme/ap-1/", Error::BadTopic("unknown topic leaf")),
        (
            "licd/v1/+/+/report",
            Error::BadTopic("wildcards are not allowed in a topic name"),
        ),
        (
            "licd/v1/acme/#",
            Error::BadTopic("wildcards are not allowed in a topic name"),
        ),
        (
            "$share/g/licd/v1/+/+/report",
            Error::BadTopic("wildcards are not allowed in a topic name"),
        ),
        ("licd/v1//ap-1/grants", Error::Id(IdError::Empty)),
        ("licd/v1/acme//grants", Error::Id(IdError::Empty)),
        ("licd/v1/../ap-1/grants", Error::Id(IdError::Dots)),
        ("licd/v1/acme/./grants", Error::Id(IdError::Dots)),
        (
            "licd/v1/ac me/ap-1/grants",
            Error::Id(IdError::BadChar(' ')),
        ),
        (
            "licd/v1/acme/ap\u{0}1/grants",
            Error::Id(IdError::BadChar('\0')),
        ),
        ("licd/v1/acmé/ap-1/grants", Error::Id(IdError::BadChar('é'))),
    ];
    for (topic, want) in cases {
        assert_eq!(&Topic::parse(topic).unwrap_err(), want, "{topic:?}");
    }
    let long = "x".repeat(65);
    assert_eq!(
        Topic::parse(&format!("licd/v1/{long}/ap-1/grants")),
        Err(Error::Id(IdError::TooLong(65)))
    );
    assert_eq!(
        Topic::parse(&format!("licd/v1/acme/{long}/grants")),
        Err(Error::Id(IdError::TooLong(65)))
    );
    // 64 is the longest allowed.
    let max = "x".repeat(64);
    assert!(Topic::parse(&format!("licd/v1/{max}/{max}/presence")).is_ok());
}
