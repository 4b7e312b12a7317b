//! The baseline phases: the bare MQTT echo with the fleet's client count and message sizes,
//! and the floor (the echo doing the signatures and fsyncs any agent must do, with the agent's
//! own code). The sample messages that give both their sizes live here too.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey};
use licd_agent::identity::key::DeviceKey;
use licd_agent::status::AGENT_VERSION;
use licd_agent::store::Store;
use licd_protocol::envelope::{open_bundle, open_report, seal_bundle, seal_report};
use licd_protocol::{
    DeviceId, DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceGrant, SignerCertificate,
    Sku, TenantId, TrustStore, UnixTime,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::drive::{drive, summarize, Events, Kind, Tracker};
use super::proc::{process_cpu, threads_cpu};
use super::report::Convergence;
use super::{
    err, runtime, svc, unix_now, FleetError, FleetOptions, AGENT_THREAD, CONTROLLER_THREAD,
    PRODUCT_CLASS, SERVICES, TENANT,
};
use crate::mosquitto::Mosquitto;

/// A report and a 5-service bundle as the agent and the stub produce them (the baseline sends
/// the same number of bytes; the floor phase opens the bundle), the bundle's root, its time.
pub(super) fn sample_messages() -> Samples {
    let key = SigningKey::from_bytes(&[9; 32]);
    let now = 1_800_000_000;
    let report = DeviceReport {
        device: DeviceId::new("fleet-00000").expect("valid id"),
        tenant: TenantId::new(TENANT).expect("valid id"),
        device_key: PublicKey::from(&key.verifying_key()),
        model: "AP-FLEET".into(),
        serial: "SN-00000".into(),
        product_class: PRODUCT_CLASS.into(),
        firmware_version: "unknown".into(),
        agent_version: AGENT_VERSION.into(),
        vm_count: None,
        services_wanted: SERVICES.map(svc).to_vec(),
        bundle_seq: 0,
        clock: now,
        uptime: 1_000,
        clock_rollback: false,
    };
    let cert = SignerCertificate::issue(&key, PublicKey::from(&key.verifying_key()), 0, now * 2);
    let bundle = GrantBundle {
        device: report.device.clone(),
        device_key: report.device_key.id(),
        tenant: report.tenant.clone(),
        seq: 1,
        issued_at: now,
        refresh_after: now + 302_400,
        grants: SERVICES
            .iter()
            .map(|s| ServiceGrant {
                service: svc(s),
                license: LicenseId::new("SUB-FLEET").expect("valid id"),
                sku: Sku::new(format!("SKU-{s}")).expect("valid id"),
                not_before: now - 86_400,
                not_after: now + 365 * 86_400,
                lease_until: now + 604_800,
                grace: 2_592_000,
                vm_allowance: None,
            })
            .collect(),
        withheld: vec![],
    };
    Samples {
        report: seal_report(&report, &key),
        bundle: seal_bundle(&bundle, &key, &cert),
        root: PublicKey::from(&key.verifying_key()),
        at: now,
        grant: bundle,
        key,
        cert,
    }
}

/// See [`sample_messages`].
#[derive(Debug, Clone)]
pub(super) struct Samples {
    pub(super) report: Vec<u8>,
    pub(super) bundle: Vec<u8>,
    root: PublicKey,
    at: UnixTime,
    grant: GrantBundle,
    key: SigningKey,
    cert: SignerCertificate,
}

impl Samples {
    /// What a controller must do per report at least: check its signature, sign a bundle.
    fn controller_work(&self) -> Result<Vec<u8>, String> {
        open_report(&self.report).map_err(|e| e.to_string())?;
        Ok(seal_bundle(&self.grant, &self.key, &self.cert))
    }
}

/// The bare MQTT echo: N clients, one responder, same broker, same sizes, same window.
///
/// With `floor` (a directory), each client also does the work any agent must do that bare
/// messaging does not, with the agent's own code: before connecting it creates its state
/// directory and device key (generated, written with fsync) and writes its time mark; it signs
/// its request; on the answer — a real sealed bundle: the responder checks a report's signature
/// and signs the bundle for every request, the least a controller does — it opens the bundle
/// (two signature checks, decode) and writes it to its cache with fsync. What is left between
/// this and the fleet is the implementation's overhead: the agent's (enforcement, status,
/// identity record, tasks) and the controller's (ledger, seat rules).
pub(super) fn phase(
    opts: &FleetOptions,
    broker: &Mosquitto,
    phase: &'static str,
    round: u32,
    samples: &Samples,
    floor: Option<&Path>,
) -> Result<Convergence, FleetError> {
    let n = opts.devices;
    let prefix = format!("fleetbase{round}");
    let ctl = runtime(1, CONTROLLER_THREAD)?;
    let clients = runtime(opts.agent_threads, AGENT_THREAD)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let at = Endpoints(vec![(broker.host().to_string(), broker.port())]);
    start_responder(&ctl, &at, &prefix, samples, floor.is_some(), n, &stop_rx)?;

    let (tx, rx) = std_mpsc::channel();
    let mut tracker = Tracker::new(n);
    let cpu0 = threads_cpu(CONTROLLER_THREAD);
    let bcpu0 = process_cpu(broker.pid());
    let acpu0 = threads_cpu(AGENT_THREAD);
    let started = Instant::now();
    let plan = ClientPlan::new(&prefix, samples, floor, QoS::AtLeastOnce);
    let spawn = |i: usize| spawn_client(&clients, &plan, &at, i, i, tx.clone(), stop_rx.clone());
    let result = drive(opts, phase, &rx, &mut tracker, spawn, n, |t| t.done == n);
    let total = started.elapsed();
    let conv = summarize(
        &mut tracker,
        started,
        total,
        2 * n as u64,
        threads_cpu(CONTROLLER_THREAD).saturating_sub(cpu0),
        process_cpu(broker.pid()).saturating_sub(bcpu0),
        threads_cpu(AGENT_THREAD).saturating_sub(acpu0),
    );
    stop_tx.send_replace(true);
    clients.shutdown_timeout(Duration::from_secs(5));
    ctl.shutdown_timeout(Duration::from_secs(5));
    result.map(|()| conv)
}

/// The brokers echo clients connect to: client `i` takes `i % len` (one mosquitto listener,
/// or the nodes of a cluster in turn).
#[derive(Debug, Clone)]
pub(super) struct Endpoints(pub(super) Vec<(String, u16)>);

impl Endpoints {
    /// From a comma-separated list of `mqtt://host:port` URLs.
    pub(super) fn parse(urls: &str) -> Result<Self, FleetError> {
        let parsed = urls
            .split(',')
            .map(|u| {
                let rest = u.trim().strip_prefix("mqtt://").unwrap_or(u.trim());
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| err(format!("broker URL without a port: {u}")))?;
                let port = port
                    .parse()
                    .map_err(|_| err(format!("broker URL with a bad port: {u}")))?;
                Ok((host.to_string(), port))
            })
            .collect::<Result<Vec<_>, FleetError>>()?;
        if parsed.is_empty() {
            return Err(err("no broker URL"));
        }
        Ok(Self(parsed))
    }

    fn of(&self, i: usize) -> (String, u16) {
        self.0[i % self.0.len()].clone()
    }
}

/// The responder: an event loop task and a publisher task on `ctl`, like the stub's session,
/// subscribed to every client's requests under `prefix` at the first endpoint. With `floor`
/// it checks a report's signature and signs a bundle per request (see [`phase`]); else it
/// answers a bundle's worth of bytes. Returns once it is subscribed.
pub(super) fn start_responder(
    ctl: &Runtime,
    at: &Endpoints,
    prefix: &str,
    samples: &Samples,
    floor: bool,
    n: usize,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(), FleetError> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (host, port) = at.of(0);
    let mut o = MqttOptions::new(format!("{prefix}-echo"), host, port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_request_channel_capacity(256);
    let (client, mut eventloop) = AsyncClient::new(o, 256);
    let answer = vec![0xa5u8; samples.bundle.len()];
    let work = floor.then(|| samples.clone());
    let (work_tx, mut work_rx) = tokio::sync::mpsc::channel::<String>(n.max(1024));
    let filter = format!("{prefix}/+/req");
    let mut stop = stop_rx.clone();
    let sub_client = client.clone();
    ctl.spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub_client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.replacen("/req", "/resp", 1);
                    let _ = work_tx.try_send(topic);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    });
    ctl.spawn(async move {
        while let Some(topic) = work_rx.recv().await {
            let answer = match &work {
                Some(w) => match w.controller_work() {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        eprintln!("floor responder: {e}");
                        break;
                    }
                },
                None => answer.clone(),
            };
            if client
                .publish(topic, QoS::AtLeastOnce, true, answer)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| err("baseline: the echo client did not subscribe within 10 s"))
}

/// What every echo client of one phase shares.
pub(super) struct ClientPlan {
    prefix: String,
    request: Vec<u8>,
    /// Floor clients: where their state directories go, the trust they open bundles with.
    floor: Option<(PathBuf, TrustStore, UnixTime)>,
    /// QoS of their subscriptions (the agents' `[broker] subscribe_qos`).
    qos: QoS,
}

impl ClientPlan {
    pub(super) fn new(prefix: &str, samples: &Samples, floor: Option<&Path>, qos: QoS) -> Self {
        Self {
            prefix: prefix.to_string(),
            request: vec![0x5au8; samples.report.len()],
            floor: floor.map(|d| {
                (
                    d.to_path_buf(),
                    TrustStore::new(vec![samples.root]),
                    samples.at,
                )
            }),
            qos,
        }
    }
}

/// Starts echo client `id` (its topics and client id) on `clients`, reporting its events to
/// `tx` as client `slot` of the phase's tracker.
pub(super) fn spawn_client(
    clients: &Runtime,
    plan: &ClientPlan,
    at: &Endpoints,
    id: usize,
    slot: usize,
    tx: Events,
    mut stop: watch::Receiver<bool>,
) {
    let prefix = &plan.prefix;
    let request = plan.request.clone();
    let floor = plan
        .floor
        .as_ref()
        .map(|(d, trust, at)| (d.join(format!("{prefix}-{id}")), trust.clone(), *at));
    let (host, port) = at.of(id);
    let mut o = MqttOptions::new(format!("{prefix}-{id}"), host, port);
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let (req, resp) = (format!("{prefix}/{id}/req"), format!("{prefix}/{id}/resp"));
    let presence = format!("{prefix}/{id}/presence");
    let filters = [
        resp.clone(),
        format!("{prefix}/trust/+"),
        format!("{prefix}/{id}/diag"),
    ]
    .map(|f| SubscribeFilter::new(f, plan.qos));
    clients.spawn(async move {
        let send = |k| tx.send((slot, k, Instant::now()));
        let floor = match floor.map(|(dir, trust, at)| floor_start(&dir, trust, at)) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                eprintln!("floor client {id}: cannot start: {e}");
                return;
            }
            None => None,
        };
        loop {
            let ev = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // What the agent does on ConnAck: one SUBSCRIBE with its three
                    // filters (own answers, the fleet-wide trust filter, own diagnostics),
                    // a retained presence, then its report.
                    let _ = client.try_subscribe_many(filters.clone());
                    let _ = client.try_publish(
                        presence.clone(),
                        QoS::AtLeastOnce,
                        true,
                        b"online".to_vec(),
                    );
                    let _ = send(Kind::Connected);
                    if let Some(f) = &floor {
                        std::hint::black_box(f.key.signing.sign(&request));
                    }
                    let _ =
                        client.try_publish(req.clone(), QoS::AtLeastOnce, false, request.clone());
                    let _ = send(Kind::Report);
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == resp => {
                    if let Some(f) = &floor {
                        if let Err(e) = f.answer(&p.payload) {
                            eprintln!("floor client {id}: {e}");
                            continue;
                        }
                    }
                    let _ = send(Kind::Done);
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = send(Kind::Disconnected);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    });
}

/// One floor client's agent-side state (see [`phase`]).
pub(super) struct Floor {
    store: Store,
    key: DeviceKey,
    trust: TrustStore,
    /// The time the sample bundle is judged at.
    at: UnixTime,
}

pub(super) fn floor_start(dir: &Path, trust: TrustStore, at: UnixTime) -> Result<Floor, String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let key = DeviceKey::load_or_create(dir).map_err(|e| e.to_string())?;
    store.save_mark(unix_now()).map_err(|e| e.to_string())?;
    Ok(Floor {
        store,
        key,
        trust,
        at,
    })
}

impl Floor {
    /// What an agent must do with a bundle: open it, keep it.
    fn answer(&self, raw: &[u8]) -> Result<(), String> {
        open_bundle(raw, &self.trust, self.at).map_err(|e| e.to_string())?;
        self.store.save_bundle(raw).map_err(|e| e.to_string())
    }
}
