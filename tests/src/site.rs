//! [`SiteRelay`]: a real site relay (`licd_stub::relay`) with its own embedded broker on a free
//! loopback port, holding a delegation from a test signer: the set-up the relay scenarios
//! share (tests/tests/relay.rs, the clock attacks on a delegation in clock_attacks.rs, the
//! fleet's relay run).

use std::path::Path;
use std::time::Duration;

use licd_protocol::{Constraints, SeatPool, ServiceName, SiteId, TenantId, UnixTime};
use licd_stub::relay::pool::LeaseTerms;
use licd_stub::relay::run::{self, RelayConfig, RelayHandle};
use licd_stub::relay::site;
use licd_stub::{BrokerMode, Clock, Signer};

use crate::{HarnessError, Result};

/// What the delegation allows and how the relay leases.
#[derive(Debug, Clone)]
pub struct SiteRelayOptions {
    /// Tenant of the delegation.
    pub tenant: String,
    /// Site id of the delegation (the agents' `site`).
    pub site: String,
    /// Seats per service.
    pub pools: Vec<(String, u32)>,
    /// Longest lease the delegation allows, seconds.
    pub max_lease: u64,
    /// Start of the delegation's validity.
    pub valid_from: UnixTime,
    /// Length of the delegation's validity, seconds.
    pub valid_secs: u64,
    /// The relay's lease and grace.
    pub terms: LeaseTerms,
    /// The relay's clock.
    pub clock: Clock,
    /// An external broker (`mqtt://…`) instead of an embedded one on 127.0.0.1:0.
    pub broker: Option<String>,
    /// The relay's MQTT client id.
    pub client_id: String,
}

impl SiteRelayOptions {
    /// `acme` at `plant-7`: `seats` of `wifi`, leases of `lease` seconds without grace, a
    /// delegation valid from a minute ago for an hour, the system clock.
    pub fn wifi(seats: u32, lease: u64) -> Self {
        let now = crate::controller::unix_now();
        Self {
            tenant: "acme".into(),
            site: "plant-7".into(),
            pools: vec![("wifi".into(), seats)],
            max_lease: 60,
            valid_from: now.saturating_sub(60),
            valid_secs: 3_600,
            terms: LeaseTerms {
                lease_secs: lease,
                grace_secs: 0,
            },
            clock: Clock::System,
            broker: None,
            client_id: "relay-test".into(),
        }
    }
}

fn invalid(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("{what}: {e}"))
}

/// Creates the relay's key in `dir`, has `signer` delegate to it as `opts` says, and starts
/// the relay with an embedded broker on 127.0.0.1:0 (or the external one `opts` names). Waits
/// until it is subscribed.
pub async fn start_site_relay(
    signer: &Signer,
    dir: &Path,
    opts: SiteRelayOptions,
) -> Result<RelayHandle> {
    let relay_key = site::init(dir).map_err(|e| invalid("relay init", e))?;
    let pools = opts
        .pools
        .iter()
        .map(|(service, seats)| {
            Ok(SeatPool {
                service: ServiceName::new(service).map_err(|e| invalid("service", e))?,
                seats: *seats,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let constraints = Constraints {
        tenant: TenantId::new(&opts.tenant).map_err(|e| invalid("tenant", e))?,
        site: SiteId::new(&opts.site).map_err(|e| invalid("site", e))?,
        max_lease: opts.max_lease,
        pools,
    };
    let bytes = site::delegate(
        signer,
        relay_key,
        constraints,
        opts.valid_from,
        opts.valid_secs,
    )
    .map_err(|e| invalid("delegate", e))?;
    site::write_delegation_file(&dir.join(site::DELEGATION_FILE), &bytes)
        .map_err(|e| invalid("write the delegation", e))?;
    let broker = match opts.broker {
        Some(url) => BrokerMode::External {
            url,
            ca_file: None,
            credentials: None,
        },
        None => BrokerMode::Embedded {
            listen: "127.0.0.1:0".parse().map_err(|e| invalid("listen", e))?,
            tls: None,
        },
    };
    run::start(RelayConfig {
        dir: dir.to_path_buf(),
        broker,
        terms: opts.terms,
        clock: opts.clock,
        client_id: opts.client_id,
        uplink: None,
        uplink_report_every: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(10),
    })
    .await
    .map_err(|e| invalid("start the relay", e))
}
