//! The MQTT topic scheme of protocol v1:
//! `licd/v1/{tenant}/{device}/{report|grants|presence|diag-request|diag-response}` per device, and two global, retained
//! trust topics of four levels, `licd/v1/trust/{revocations|roots}` ([`TrustTopic`]), which can
//! never be mistaken for a five-level device topic.
//!
//! Building from validated ids cannot produce a wildcard; parsing refuses wildcards, wrong
//! arity and unknown leaves, so a topic from the broker is checked before it is trusted.

use alloc::format;
use alloc::string::String;

use crate::error::Error;
use crate::id::{DeviceId, TenantId};

/// First two levels of every licd v1 topic.
pub const PREFIX: &str = "licd/v1";

/// Default group name controllers share their report subscription under.
pub const DEFAULT_SHARE_GROUP: &str = "licd-controllers";

/// The leaf of a device topic: what flows on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicKind {
    /// Agent → controller, signed [`crate::DeviceReport`], QoS 1.
    Report,
    /// Controller → agent, signed [`crate::GrantBundle`], QoS 1, retained.
    Grants,
    /// Agent's retained `online` / last-will `offline`.
    Presence,
    /// Controller → agent, signed [`crate::DiagRequest`], QoS 1, not retained.
    DiagRequest,
    /// Agent → controller, signed [`crate::DiagResponse`], QoS 1, not retained.
    DiagResponse,
}

impl TopicKind {
    /// The topic leaf.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Report => "report",
            TopicKind::Grants => "grants",
            TopicKind::Presence => "presence",
            TopicKind::DiagRequest => "diag-request",
            TopicKind::DiagResponse => "diag-response",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "report" => TopicKind::Report,
            "grants" => TopicKind::Grants,
            "presence" => TopicKind::Presence,
            "diag-request" => TopicKind::DiagRequest,
            "diag-response" => TopicKind::DiagResponse,
            _ => return None,
        })
    }
}

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// Tenant level.
    pub tenant: TenantId,
    /// Device level.
    pub device: DeviceId,
    /// Leaf.
    pub kind: TopicKind,
}

impl Topic {
    /// A topic for `device` of `tenant`.
    pub fn new(tenant: &TenantId, device: &DeviceId, kind: TopicKind) -> Self {
        Self {
            tenant: tenant.clone(),
            device: device.clone(),
            kind,
        }
    }

    /// The topic string, e.g. `licd/v1/acme/ap-1/grants`.
    pub fn to_topic_string(&self) -> String {
        format!(
            "{PREFIX}/{}/{}/{}",
            self.tenant,
            self.device,
            self.kind.as_str()
        )
    }

    /// Parses a topic received from the broker. Refuses anything that is not exactly
    /// `licd/v1/{id}/{id}/{leaf}`.
    pub fn parse(topic: &str) -> Result<Self, Error> {
        if topic.contains(['+', '#']) {
            return Err(Error::BadTopic("wildcards are not allowed in a topic name"));
        }
        let mut parts = topic.split('/');
        let (Some("licd"), Some("v1")) = (parts.next(), parts.next()) else {
            return Err(Error::BadTopic("topic does not start with licd/v1/"));
        };
        let (Some(tenant), Some(device), Some(leaf), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::BadTopic("expected licd/v1/{tenant}/{device}/{leaf}"));
        };
        let kind = TopicKind::parse(leaf).ok_or(Error::BadTopic("unknown topic leaf"))?;
        Ok(Self {
            tenant: TenantId::new(tenant)?,
            device: DeviceId::new(device)?,
            kind,
        })
    }
}

impl core::fmt::Display for Topic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_topic_string())
    }
}

/// The leaf of a site's delegation topic.
pub const DELEGATION_LEAF: &str = "delegation";

/// `licd/v1/{tenant}/{site}/delegation`: the controller publishes a site's newest delegation
/// there, retained (kind 12), for the site's relay to take over its uplink.
pub fn delegation_topic(tenant: &TenantId, site: &crate::SiteId) -> String {
    format!("{PREFIX}/{tenant}/{site}/{DELEGATION_LEAF}")
}

/// The leaf a site relay publishes its reports on (kind 13).
pub const RELAY_REPORT_LEAF: &str = "relay-report";

/// The leaf the controller acknowledges a relay's reports on (kind 14, retained).
pub const RELAY_ACK_LEAF: &str = "relay-ack";

/// `licd/v1/{tenant}/{site}/{leaf}`: a site relay's uplink topics.
pub fn site_topic(tenant: &TenantId, site: &crate::SiteId, leaf: &str) -> String {
    format!("{PREFIX}/{tenant}/{site}/{leaf}")
}

/// The tenant and site of a site relay's uplink topic with leaf `leaf`
/// (`licd/v1/{tenant}/{site}/{leaf}`); `None` for anything else.
pub fn parse_site_topic(topic: &str, leaf: &str) -> Option<(TenantId, crate::SiteId)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (Some(tenant), Some(site), Some(l), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if l != leaf {
        return None;
    }
    Some((TenantId::new(tenant).ok()?, crate::SiteId::new(site).ok()?))
}

/// The retained topic of the newest root-signed revocation list (kind 3).
pub const TRUST_REVOCATIONS: &str = "licd/v1/trust/revocations";

/// The retained topic of the newest root rotation statement (kind 4).
pub const TRUST_ROOTS: &str = "licd/v1/trust/roots";

/// The one filter agents subscribe to for both trust topics. One shared filter instead of two
/// halves what a broker spends on it: every agent of a fleet subscribes to it, and mosquitto
/// (2.0) checks each new subscriber against every existing one of the same filter, so a fleet
/// of N costs it N²/2 comparisons per filter at connect (BENCHMARKS.md, fleet). Messages on
/// other `licd/v1/trust/` topics are refused by [`TrustTopic::parse`].
pub const TRUST_FILTER: &str = "licd/v1/trust/+";

/// A global trust topic: `licd/v1/trust/{revocations|roots}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustTopic {
    /// [`TRUST_REVOCATIONS`]: a [`crate::RevocationList`], signed by a root.
    Revocations,
    /// [`TRUST_ROOTS`]: a [`crate::RootRotation`], signed by the old and the new root.
    Roots,
}

impl TrustTopic {
    /// The topic string.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustTopic::Revocations => TRUST_REVOCATIONS,
            TrustTopic::Roots => TRUST_ROOTS,
        }
    }

    /// The message kind carried on this topic.
    pub fn kind(self) -> crate::MessageKind {
        match self {
            TrustTopic::Revocations => crate::MessageKind::Revocations,
            TrustTopic::Roots => crate::MessageKind::RootRotation,
        }
    }

    /// Parses a topic received from the broker: exactly one of the two trust topics
    /// (case-sensitive, no wildcards, no trailing level).
    pub fn parse(topic: &str) -> Result<Self, Error> {
        if topic.contains(['+', '#']) {
            return Err(Error::BadTopic("wildcards are not allowed in a topic name"));
        }
        match topic {
            TRUST_REVOCATIONS => Ok(TrustTopic::Revocations),
            TRUST_ROOTS => Ok(TrustTopic::Roots),
            _ if topic.starts_with("licd/v1/trust/") => Err(Error::BadTopic("unknown trust topic")),
            _ => Err(Error::BadTopic(
                "expected licd/v1/trust/{revocations|roots}",
            )),
        }
    }
}

impl core::fmt::Display for TrustTopic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The filter a controller subscribes to for every device's reports, shared among the
/// replicas of `group` so that a clustered broker splits the load between them:
/// `$share/{group}/licd/v1/+/+/report`.
pub fn shared_report_filter(group: &str) -> String {
    format!("$share/{group}/{PREFIX}/+/+/report")
}

/// The same filter without the shared-subscription prefix, for brokers that lack it or for a
/// single controller.
pub fn report_filter() -> String {
    format!("{PREFIX}/+/+/report")
}

/// The filter a controller subscribes to for every device's diagnostic responses:
/// `licd/v1/+/+/diag-response` (plain, not shared: the replica that asked must get the answer).
pub fn diag_response_filter() -> String {
    format!("{PREFIX}/+/+/diag-response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TenantId, DeviceId) {
        (
            TenantId::new("acme").unwrap(),
            DeviceId::new("ap-1").unwrap(),
        )
    }

    #[test]
    fn build_then_parse_round_trips_for_every_kind() {
        let (t, d) = ids();
        for kind in [
            TopicKind::Report,
            TopicKind::Grants,
            TopicKind::Presence,
            TopicKind::DiagRequest,
            TopicKind::DiagResponse,
        ] {
            let topic = Topic::new(&t, &d, kind);
            assert_eq!(Topic::parse(&topic.to_topic_string()).unwrap(), topic);
        }
        assert_eq!(
            Topic::new(&t, &d, TopicKind::Grants).to_topic_string(),
            "licd/v1/acme/ap-1/grants"
        );
        assert_eq!(
            Topic::new(&t, &d, TopicKind::DiagRequest).to_topic_string(),
            "licd/v1/acme/ap-1/diag-request"
        );
        assert_eq!(diag_response_filter(), "licd/v1/+/+/diag-response");
    }

    #[test]
    fn parse_refuses_wildcards_arity_prefix_and_bad_ids() {
        let bad = [
            ("licd/v1/+/ap-1/grants", "wildcards"),
            ("licd/v1/acme/#", "wildcards"),
            ("licd/v1/acme/ap-1", "expected"),
            ("licd/v1/acme/ap-1/grants/x", "expected"),
            ("licd/v2/acme/ap-1/grants", "start"),
            ("other/v1/acme/ap-1/grants", "start"),
            ("licd/v1/acme/ap-1/nope", "leaf"),
            ("", "start"),
        ];
        for (topic, why) in bad {
            match Topic::parse(topic) {
                Err(Error::BadTopic(msg)) => assert!(msg.contains(why), "{topic}: {msg}"),
                other => panic!("{topic}: {other:?}"),
            }
        }
        assert!(matches!(
            Topic::parse("licd/v1//ap-1/grants"),
            Err(Error::Id(crate::IdError::Empty))
        ));
        assert!(matches!(
            Topic::parse("licd/v1/ac me/ap-1/grants"),
            Err(Error::Id(crate::IdError::BadChar(' ')))
        ));
    }

    #[test]
    fn trust_topics_round_trip_and_never_parse_as_device_topics() {
        for t in [TrustTopic::Revocations, TrustTopic::Roots] {
            assert_eq!(TrustTopic::parse(t.as_str()), Ok(t));
            // The agents' one filter covers it: same prefix, one more level.
            let (prefix, last) = t.as_str().rsplit_once('/').unwrap();
            assert_eq!(TRUST_FILTER, format!("{prefix}/+"));
            assert!(!last.contains(['/', '+', '#']));
            // Four levels: a device-topic parser refuses them.
            assert!(Topic::parse(t.as_str()).is_err());
        }
        for bad in [
            "licd/v1/trust/keys",
            "licd/v1/trust/roots/",
            "licd/v1/trust/+",
            "licd/v1/Trust/roots",
            "licd/v1/trust/revocations/grants",
            "licd/v1/acme/ap-1/grants",
        ] {
            assert!(
                matches!(TrustTopic::parse(bad), Err(Error::BadTopic(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn shared_filter_has_the_share_prefix() {
        assert_eq!(
            shared_report_filter(DEFAULT_SHARE_GROUP),
            "$share/licd-controllers/licd/v1/+/+/report"
        );
    }
}
