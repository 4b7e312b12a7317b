//! The daemon loop in process, with tokio's clock paused (mini-redis style): no broker — the
//! session's events go in through the [`Link`]'s channel and publishes come out of an
//! [`Outbox::Channel`] — and a [`Clock`] that reads tokio's paused time, so an hour of leases,
//! grace periods and report retries passes in milliseconds, exactly.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::{open_report, seal_bundle};
use licd_protocol::{
    DeviceReport, GrantBundle, LicenseId, PublicKey, ServiceGrant, ServiceName, SignerCertificate,
    Sku, TenantId, UnixTime,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{run_linked, Link, RunError};
use crate::clock::Clock;
use crate::config::Settings;
use crate::enforce::{Reason, ServiceState};
use crate::identity::{resolve_identity_blocking, DeviceKey, HostRoot};
use crate::session::{Outbox, Published, SessionEvent};
use crate::status::Status;

/// Wall time at the test's start.
const T0: UnixTime = 1_800_000_000;

/// Wall and boot time from tokio's clock: paused time moves both. `offset`: seconds of wall
/// time already passed before this daemon started (a restart).
#[derive(Debug)]
struct TokioClock {
    start: Instant,
    offset: u64,
}

impl Clock for TokioClock {
    fn wall(&self) -> UnixTime {
        T0 + self.offset + self.start.elapsed().as_secs()
    }

    fn boot(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A daemon running on a task, with both ends of its link.
struct Agent {
    _dir: tempfile::TempDir,
    start: Instant,
    events: mpsc::Sender<SessionEvent>,
    published: mpsc::Receiver<Published>,
    status: watch::Receiver<Arc<Status>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
    root: SigningKey,
    signing: SigningKey,
    device_key: PublicKey,
    offset: u64,
}

impl Agent {
    /// Starts a daemon wanting `wifi`, reporting at least every `interval` seconds.
    async fn start(interval: u64) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), interval).await
    }

    /// [`Agent::start`] on a state directory the test prepared.
    async fn start_in(dir: tempfile::TempDir, interval: u64) -> Self {
        Self::start_with(dir, interval, 0, "").await
    }

    /// [`Agent::start_in`] `offset` seconds after T0, with `enforce` lines added to
    /// `[enforce]`.
    async fn start_with(dir: tempfile::TempDir, interval: u64, offset: u64, enforce: &str) -> Self {
        let root = SigningKey::from_bytes(&[1; 32]);
        let signing = SigningKey::from_bytes(&[2; 32]);
        let text = format!(
            "tenant = \"acme\"\nservices = [\"wifi\"]\nstate_dir = {state:?}\nroots = [{root:?}]\n\n\
             [broker]\nurl = \"mqtt://127.0.0.1:1\"\nallow_insecure = true\n\n\
             [api]\nsocket = \"\"\n\n\
             [enforce]\nreport_interval_secs = {interval}\n{enforce}\n\n\
             [identity]\ndevice_id = \"ap-1\"\nmodel = \"AP-1\"\nserial = \"SN-1\"\nproduct_class = \"wireless\"\n",
            state = dir.path().display().to_string(),
            root = PublicKey::from(&root.verifying_key()).to_hex(),
        );
        let settings = Settings::from_toml(&text).expect("settings");
        let device_key = DeviceKey::load_or_create(dir.path())
            .expect("device key")
            .public();
        let identity =
            resolve_identity_blocking(&settings.identity, &HostRoot::at(dir.path().join("host")))
                .expect("identity");
        let (events, rx) = mpsc::channel(16);
        let (out, published) = mpsc::channel(64);
        let link = Link {
            events: rx,
            outbox: Outbox::Channel(out),
            session: None,
        };
        let start = Instant::now();
        let clock = Arc::new(TokioClock { start, offset });
        let (stop, stopped) = oneshot::channel();
        let (status_tx, status_rx) = oneshot::channel();
        let task = tokio::spawn(run_linked(
            settings,
            clock,
            identity,
            link,
            move |status| {
                let _ = status_tx.send(status);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let status = status_rx.await.expect("the daemon started");
        Self {
            _dir: dir,
            start,
            events,
            published,
            status,
            stop: Some(stop),
            task,
            root,
            signing,
            device_key,
            offset,
        }
    }

    /// Wall seconds since T0 (across restarts).
    fn wall(&self) -> u64 {
        self.offset + self.start.elapsed().as_secs()
    }

    /// Seconds since the start (tokio's paused clock).
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    async fn send(&self, ev: SessionEvent) {
        self.events.send(ev).await.expect("the daemon reads events");
    }

    /// The next report published within `within`, with the time it went.
    async fn next_report(&mut self, within: Duration) -> Option<(f64, DeviceReport)> {
        let end = Instant::now() + within;
        loop {
            let p = tokio::time::timeout_at(end, self.published.recv())
                .await
                .ok()??;
            if p.topic == "licd/v1/acme/ap-1/report" {
                // Extended or plain (`extended_reports = "auto"` negotiates): the report part.
                let report = match open_report(&p.payload) {
                    Ok(r) => r,
                    Err(_) => {
                        licd_protocol::policy::open_extended_report(&p.payload)
                            .expect("a signed report")
                            .report
                    }
                };
                return Some((self.elapsed(), report));
            }
        }
    }

    /// A signed bundle `seq` issued now: `wifi` with the lease and grace given.
    fn bundle(&self, seq: u64, refresh_in: u64, lease: u64, grace: u64) -> Vec<u8> {
        let now = T0 + self.wall();
        let cert = SignerCertificate::issue(
            &self.root,
            PublicKey::from(&self.signing.verifying_key()),
            T0 - 86_400,
            T0 + 365 * 86_400,
        );
        let b = GrantBundle {
            device: licd_protocol::DeviceId::new("ap-1").expect("id"),
            device_key: self.device_key.id(),
            tenant: TenantId::new("acme").expect("tenant"),
            seq,
            issued_at: now,
            refresh_after: now + refresh_in,
            grants: vec![ServiceGrant {
                service: ServiceName::new("wifi").expect("service"),
                license: LicenseId::new("lic-1").expect("license"),
                sku: Sku::new("SKU-1").expect("sku"),
                not_before: now - 10,
                not_after: now + 365 * 86_400,
                lease_until: now + lease,
                grace,
                vm_allowance: None,
            }],
            withheld: vec![],
        };
        seal_bundle(&b, &self.signing, &cert)
    }

    /// Waits (paused time) until `wifi`'s state satisfies `pred`; returns when, in seconds.
    async fn wifi_becomes(&mut self, within: Duration, pred: impl Fn(ServiceState) -> bool) -> f64 {
        tokio::time::timeout(within, self.status.wait_for(|s| pred(s.state("wifi"))))
            .await
            .expect("the state changes in time")
            .expect("the daemon runs");
        self.elapsed()
    }

    /// Stops cleanly and hands back the state directory (for a restart).
    async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("the daemon task")
            .expect("the daemon stops cleanly");
        self._dir
    }

    /// The next extended report published within `within`.
    async fn next_extended_report(
        &mut self,
        within: Duration,
    ) -> Option<licd_protocol::ExtendedReport> {
        let end = Instant::now() + within;
        loop {
            let p = tokio::time::timeout_at(end, self.published.recv())
                .await
                .ok()??;
            if p.topic == "licd/v1/acme/ap-1/report" {
                return Some(
                    licd_protocol::policy::open_extended_report(&p.payload)
                        .expect("a signed extended report"),
                );
            }
        }
    }

    /// A policy bundle `seq` issued now: `wifi` with the lease and grace given, a term ending
    /// at wall second `term_end`, warning `warn_before` seconds before it, acknowledging
    /// report `ack`.
    fn policy_bundle(
        &self,
        seq: u64,
        lease: u64,
        grace: u64,
        term_end: u64,
        warn_before: &[u64],
        ack: u64,
    ) -> Vec<u8> {
        let now = T0 + self.wall();
        let cert = SignerCertificate::issue(
            &self.root,
            PublicKey::from(&self.signing.verifying_key()),
            T0 - 86_400,
            T0 + 365 * 86_400,
        );
        let wifi = ServiceName::new("wifi").expect("service");
        let bundle = GrantBundle {
            device: licd_protocol::DeviceId::new("ap-1").expect("id"),
            device_key: self.device_key.id(),
            tenant: TenantId::new("acme").expect("tenant"),
            seq,
            issued_at: now,
            refresh_after: now + 3_000,
            grants: vec![ServiceGrant {
                service: wifi.clone(),
                license: LicenseId::new("lic-1").expect("license"),
                sku: Sku::new("SKU-1").expect("sku"),
                not_before: now - 10,
                not_after: T0 + term_end,
                lease_until: now + lease,
                grace,
                vm_allowance: None,
            }],
            withheld: vec![],
        };
        licd_protocol::policy::seal_policy_bundle(
            &licd_protocol::PolicyBundle {
                bundle,
                policies: vec![licd_protocol::ServicePolicy {
                    service: wifi,
                    strategy: licd_protocol::Strategy::Restrict,
                    overage_tolerance_pct: 100,
                    warn_before: warn_before.to_vec(),
                }],
                usage_ack: ack,
            },
            &self.signing,
            &cert,
        )
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("the daemon task")
            .expect("the daemon stops cleanly");
    }
}

fn licensed(s: ServiceState) -> bool {
    matches!(s, ServiceState::Licensed { .. })
}

#[tokio::test(start_paused = true)]
async fn a_connection_reports_at_once_and_unanswered_reports_back_off_from_five_seconds_to_five_minutes(
) {
    let mut a = Agent::start(600).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    let (at, first) = a
        .next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    assert!(at < 1.0, "the first report went at {at} s");
    assert_eq!(first.bundle_seq, 0);
    // Nobody answers: 5 s, then 10, 20, 40, 80, 160, then the 300 s cap (under the 600 s
    // interval); each less up to 10 % jitter (whole seconds) and up to 1 s late (trusted time
    // counts whole seconds).
    let mut last = at;
    for base in [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0] {
        let (t, _) = a
            .next_report(Duration::from_secs(700))
            .await
            .expect("a retry");
        let gap = t - last;
        assert!(
            gap >= (base * 0.9_f64).floor() - 1.0 && gap <= base + 1.0,
            "retry after {gap} s, expected about {base} s"
        );
        last = t;
    }
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_answered_report_is_followed_by_the_next_at_refresh_after() {
    let mut a = Agent::start(3_600).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    a.next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    let bundle = a.bundle(1, 100, 3_600, 600);
    a.send(SessionEvent::Grants(bundle)).await;
    a.wifi_becomes(Duration::from_secs(1), licensed).await;
    let (at, report) = a
        .next_report(Duration::from_secs(200))
        .await
        .expect("a report at refresh_after");
    assert_eq!(report.bundle_seq, 1, "the report names the bundle held");
    assert!(
        (89.0..=102.0).contains(&at),
        "reported at {at} s, refresh_after at 100 s"
    );
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_reported_while_disconnected_and_a_reconnect_reports_at_once() {
    let mut a = Agent::start(600).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    a.next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    a.send(SessionEvent::Disconnected {
        error: "connection reset".into(),
        retry_in: Duration::from_secs(1),
    })
    .await;
    assert!(
        a.next_report(Duration::from_secs(3_000)).await.is_none(),
        "a report while disconnected"
    );
    let back = a.elapsed();
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    let (at, _) = a
        .next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    assert!(at - back < 1.0);
    let status = a.status.borrow().clone();
    let c = status.connection.as_ref().expect("daemon status");
    assert!(c.connected);
    assert_eq!(c.reports_sent, 2);
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_lease_gives_grace_with_a_report_then_unlicensed_to_the_second() {
    let mut a = Agent::start(3_600).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    a.next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    // Refresh far away, so the only report before the lease ends is the one grace asks for.
    a.send(SessionEvent::Grants(a.bundle(1, 3_000, 60, 30)))
        .await;
    a.wifi_becomes(Duration::from_secs(1), licensed).await;
    let grace = a
        .wifi_becomes(Duration::from_secs(120), |s| {
            matches!(
                s,
                ServiceState::Grace {
                    reason: Reason::LeaseExpired,
                    ..
                }
            )
        })
        .await;
    assert!(
        (60.0..61.1).contains(&grace),
        "grace at {grace} s, lease ended at 60 s"
    );
    let (at, _) = a
        .next_report(Duration::from_secs(1))
        .await
        .expect("entering grace reports");
    assert!(at - grace < 0.1);
    let gone = a
        .wifi_becomes(Duration::from_secs(120), |s| {
            matches!(
                s,
                ServiceState::Unlicensed {
                    reason: Reason::LeaseExpired
                }
            )
        })
        .await;
    assert!(
        (90.0..91.1).contains(&gone),
        "unlicensed at {gone} s, grace ended at 90 s"
    );
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_bundle_arriving_mid_grace_licenses_again_and_the_old_grace_end_passes_quietly() {
    let mut a = Agent::start(3_600).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    a.next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    a.send(SessionEvent::Grants(a.bundle(1, 3_000, 60, 30)))
        .await;
    a.wifi_becomes(Duration::from_secs(61), |s| {
        matches!(s, ServiceState::Grace { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    a.send(SessionEvent::Grants(a.bundle(2, 3_000, 60, 30)))
        .await;
    let back = a.wifi_becomes(Duration::from_secs(1), licensed).await;
    assert!((75.0..76.0).contains(&back), "{back}");
    // Past the first bundle's grace end (90 s), the new lease (to ~135 s) holds.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let state = a.status.borrow().state("wifi");
    assert!(licensed(state), "{state:?} at {} s", a.elapsed());
    assert_eq!(
        a.status.borrow().enforcement.bundle.as_ref().map(|b| b.seq),
        Some(2)
    );
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_device_upgraded_with_only_a_v1_trust_file_keeps_its_rotated_root_and_gets_a_v2_file() {
    use licd_protocol::rotation::seal_rotation;
    use licd_protocol::{RootRotation, TrustTopic};

    let dir = tempfile::tempdir().expect("tempdir");
    // What the previous agent left: a rotation from the config root to another, in trust.v1.bin.
    let (old, new) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[5; 32]),
    );
    let statement = RootRotation::sign(&old, PublicKey::from(&new.verifying_key()), 1, T0 - 100);
    let mut state = crate::trust::TrustState::new(vec![PublicKey::from(&old.verifying_key())]);
    state
        .handle(TrustTopic::Roots, &seal_rotation(&statement, &new))
        .expect("rotation accepted");
    std::fs::write(crate::trust::v1_path_in(dir.path()), state.encode_v1()).expect("write v1");
    let v2 = crate::trust::path_in(dir.path());
    assert!(!v2.exists());

    let a = Agent::start_in(dir, 600).await;
    let trust = a.status.borrow().enforcement.trust.clone();
    assert_eq!(trust.rotation_seq, 1);
    assert_eq!(
        trust.roots,
        vec![PublicKey::from(&new.verifying_key()).id().to_hex()]
    );
    assert!(v2.exists(), "the v2 file is written at the first start");
    a.stop().await;
}

/// Collects what `tracing` logs on this thread while the guard lives (the paused-time runtime
/// runs the daemon's tasks on the test's thread).
fn capture_logs() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn count_lines(logs: &std::sync::Mutex<Vec<u8>>, needles: &[&str]) -> usize {
    let text = String::from_utf8(logs.lock().expect("log buffer").clone()).expect("utf-8");
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn expiring_soon_fires_once_per_threshold_across_a_restart() {
    let (logs, _guard) = capture_logs();
    let warn = ["license term ends soon", "service=wifi"];
    let mut a = Agent::start(3_600).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    a.next_report(Duration::from_secs(1))
        .await
        .expect("a report");
    // Term ends at 1 000 s; warnings 600 s and 300 s before it: at 400 s and 700 s.
    a.send(SessionEvent::Grants(a.policy_bundle(
        1,
        5_000,
        60,
        1_000,
        &[600, 300],
        0,
    )))
    .await;
    a.wifi_becomes(Duration::from_secs(1), licensed).await;
    tokio::time::sleep(Duration::from_secs(399)).await;
    assert_eq!(count_lines(&logs, &warn), 0, "fired early");
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(
        count_lines(&logs, &[&warn[..], &["threshold_secs=600"]].concat()),
        1
    );
    let status = a.status.borrow().clone();
    let wifi = &status.enforcement.services[0];
    assert_eq!(wifi.term_ends_at, Some(T0 + 1_000));
    assert_eq!(
        wifi.warnings,
        vec![crate::enforce::Warning::ExpiringSoon { threshold: 600 }]
    );

    // Restart at ~500 s: the 600 s threshold is not fired again; the 300 s one fires once.
    let wall = a.wall();
    let dir = a.stop_keeping_dir().await;
    let a = Agent::start_with(dir, 3_600, wall, "").await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(count_lines(&logs, &warn), 1, "re-fired after the restart");
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(
        count_lines(&logs, &[&warn[..], &["threshold_secs=300"]].concat()),
        1
    );
    assert_eq!(count_lines(&logs, &warn), 2);
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn usage_survives_a_restart_and_is_cleared_only_by_an_acknowledgement() {
    let ext = "extended_reports = true";
    let mut a = Agent::start_with(tempfile::tempdir().expect("tempdir"), 3_600, 0, ext).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    let r1 = a
        .next_extended_report(Duration::from_secs(1))
        .await
        .expect("a report");
    assert_eq!((r1.report_seq, r1.usage.window), (1, 0));
    // A plain bundle: lease 60 s, grace 1 000 s; no acknowledgement.
    a.send(SessionEvent::Grants(a.bundle(1, 3_000, 60, 1_000)))
        .await;
    a.wifi_becomes(Duration::from_secs(1), licensed).await;
    let r2 = a
        .next_extended_report(Duration::from_secs(70))
        .await
        .expect("grace reports");
    assert_eq!(r2.report_seq, 2);
    // Unanswered, report 2 is retried (5 s, 10 s, …): each carries the grace time so far.
    let end = Instant::now() + Duration::from_secs(400);
    let mut last = r2;
    while let Some(r) = a.next_extended_report(end - Instant::now()).await {
        assert!(r.report_seq > last.report_seq, "seqs strictly increase");
        assert_eq!(r.usage.window, 0, "nothing acknowledged");
        last = r;
    }

    // A clean restart ~460 s in: the seqs continue and the grace time is still there.
    let wall = a.wall();
    let dir = a.stop_keeping_dir().await;
    let mut a = Agent::start_with(dir, 3_600, wall, ext).await;
    a.send(SessionEvent::Connected {
        broker: "127.0.0.1:1883".into(),
    })
    .await;
    let r3 = a
        .next_extended_report(Duration::from_secs(1))
        .await
        .expect("a report");
    assert_eq!((r3.report_seq, r3.usage.window), (last.report_seq + 1, 0));
    let grace = r3.usage.grace_seconds[0].seconds;
    assert!(
        (395..=402).contains(&grace),
        "{grace} s of grace after the restart"
    );
    assert_eq!(r3.report.bundle_seq, 1);

    // A bundle acknowledging a report never sent changes nothing; one acknowledging the
    // report after the restart closes the window there: what it carried is gone, the
    // seconds since remain.
    a.send(SessionEvent::Grants(a.policy_bundle(
        2,
        3_000,
        60,
        900_000,
        &[],
        9_999,
    )))
    .await;
    let r = a
        .next_extended_report(Duration::from_secs(3_100))
        .await
        .expect("a report");
    assert_eq!(r.usage.window, 0, "an unknown seq acknowledged nothing");
    let acked = r.report_seq;
    a.send(SessionEvent::Grants(a.policy_bundle(
        3,
        3_000,
        60,
        900_000,
        &[],
        acked,
    )))
    .await;
    let r4 = a
        .next_extended_report(Duration::from_secs(3_100))
        .await
        .expect("a report");
    assert_eq!((r4.report_seq, r4.usage.window), (acked + 1, acked));
    let left: u64 = r4.usage.grace_seconds.iter().map(|g| g.seconds).sum();
    assert!(
        left <= 1,
        "{left} s left after the acknowledgement (licensed since)"
    );
    a.stop().await;
}
