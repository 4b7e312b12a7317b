//! `log.level` is validated at config load by `licd_core::config::check_log_filter` (the core
//! and the client libraries do not link the logging crates); the daemon then parses it with
//! `tracing_subscriber`'s `Targets`. The two must agree on every string, or a config that loads
//! would log at a level nobody asked for.

use licd_agent::config::check_log_filter;
use proptest::prelude::*;
use tracing_subscriber::filter::Targets;

fn agree(s: &str) {
    assert_eq!(
        check_log_filter(s).is_ok(),
        s.parse::<Targets>().is_ok(),
        "{s:?}: core says {:?}",
        check_log_filter(s)
    );
}

#[test]
fn documented_filters_and_known_mistakes_agree_with_the_logging_crate() {
    for s in [
        "info",
        "warn,rumqttc=error",
        "licd_agent=debug,info",
        "TRACE",
        "5",
        "+3",
        "6",
        "",
        ",",
        "verbose",
        "a=b",
        "a=info=x",
        "a[{x}]=info",
        "a[{x]=info",
        "a[{x}][{y}]=info",
        "=info",
        "a=",
    ] {
        agree(s);
    }
}

proptest! {
    #[test]
    fn any_filter_text_gets_the_same_verdict(s in "[a-z0-9_=,\\[\\]{}+:-]{0,24}") {
        agree(&s);
    }
}
