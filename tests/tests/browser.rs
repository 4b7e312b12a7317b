//! The dashboard in a real browser (issue 22): headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`) against the real stub controller — its ledger, signer, admin
//! server and dashboard — on a real mosquitto, with a real `licd` agent. The controller
//! reaches the broker through a [`Relay`] the test cuts, so only the controller's link goes
//! down and the agent stays connected.
//!
//! One scenario, every step waited on as a DOM condition with a timeout:
//! 1. sign in with an admin token; the overview lists the device, `wifi` granted and
//!    licensed on the device;
//! 2. cut the controller's broker link: the page says the link is down (SSE) and, when the
//!    lease runs out, shows the device in grace (the page refreshes at the deadline it was
//!    given) — and the agent itself says grace;
//! 3. heal the link: the device is licensed again, live;
//! 4. on the device page, run remote diagnostics and see the device's answer;
//! 5. unassign `wifi` from a second tab and watch the first tab's row change without a reload.
//!
//! Screenshots of the main pages go to `target/screenshots/` (see README: "Dashboard").
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver`
//! (`scripts/test.sh` installs them); without them the test fails saying so, unless
//! `LICD_SKIP_BROWSER=1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use licd_protocol::{LicenseId, ServiceName, Sku, TenantId};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::config::BrokerMode;
use licd_stub::engine::{
    CatalogEntry, CustomerKind, Entitlement, LeasePolicy, Selection, Subscription,
};
use licd_stub::{Signer, Stub, StubConfig, StubHandle};
use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::relay::Relay;
use licd_tests::{Mosquitto, MosquittoConfig};

/// Waits on the browser and the agent.
const T: Duration = Duration::from_secs(30);
/// The controller's lease: short, so the cut link shows as grace within seconds.
const LEASE_SECS: u64 = 4;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// The first of `candidates` that exists.
fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Chromium's binary and chromedriver, or `None` when the test is skipped on purpose.
/// Panics with what to install when they are missing.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    if std::env::var("LICD_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("LICD_SKIP_BROWSER=1: browser test skipped");
        return None;
    }
    // LICD_CHROMIUM / LICD_CHROMEDRIVER name other installs. Debian's /usr/bin/chromium is a
    // wrapper script; the binary is under /usr/lib/chromium.
    let from_env = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .map(|p| p.is_file().then_some(p))
    };
    let chromium = from_env("LICD_CHROMIUM")
        .unwrap_or_else(|| find_binary(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]));
    let driver = from_env("LICD_CHROMEDRIVER").unwrap_or_else(|| {
        find_binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
    });
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => panic!(
            "the browser test needs Chromium and chromedriver (found chromium: {c:?}, \
             chromedriver: {d:?}): run scripts/test.sh, which installs them, or \
             `apt-get install chromium chromium-driver` (LICD_CHROMIUM and LICD_CHROMEDRIVER \
             name other installs); set LICD_SKIP_BROWSER=1 to skip it"
        ),
    }
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Driver {
    /// Starts chromedriver on a port that was free a moment ago (chromedriver cannot take
    /// port 0), and retries with another port when it could not bind that one.
    fn start(binary: &Path, dir: &Path) -> Self {
        let mut last = String::new();
        for attempt in 0..5 {
            let port = {
                let probe = TcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap().port()
            };
            let log = dir.join(format!("chromedriver-{attempt}.log"));
            let child = Command::new(binary)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
            let mut driver = Driver { child, port, log };
            let deadline = Instant::now() + T;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = driver.child.try_wait() {
                    last = format!(
                        "chromedriver exited ({status}) on port {port}: {}",
                        std::fs::read_to_string(&driver.log).unwrap_or_default()
                    );
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return driver;
                }
                // Waiting on a child process to listen: nothing to subscribe to.
                std::thread::sleep(Duration::from_millis(50));
            }
            if last.is_empty() {
                panic!("chromedriver did not listen on port {port} within {T:?}");
            }
        }
        panic!("chromedriver did not start: {last}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with its own throwaway profile.
async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let args = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        // Without these Chromium reaches for the network (updates, sync, safe browsing),
        // which a closed CI network refuses, slowly.
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": chromium, "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "WebDriver session: {e}\nchromedriver log:\n{}",
                std::fs::read_to_string(&driver.log).unwrap_or_default()
            )
        })
}

/// Waits until `css` matches an element; panics with `what` and the page's text on timeout.
async fn wait_css(c: &Client, what: &str, css: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(T).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let text = match c.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("waiting for {what} ({css}): {e}\npage:\n{text}");
        }
    }
}

/// Where the screenshots go: `target/screenshots/` of the workspace (or `$CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a PNG of the page (or of the element `css`, scrolled into view) as `name`.png.
async fn screenshot(c: &Client, name: &str, css: Option<&str>) {
    let png = match css {
        None => c.screenshot().await.unwrap(),
        Some(css) => c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .screenshot()
            .await
            .unwrap(),
    };
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// The stub on mosquitto through `relay`, seeded: MSP `msp`, tenant `acme`, SKU `LIC-WIFI`
/// (service `wifi`) with 5 seats, SKU `LIC-POE` with none, auto-licensing `wifi` for all.
async fn start_stub(relay: &Relay, now: u64) -> Arc<StubHandle> {
    let mut config = StubConfig::for_tests(Signer::ephemeral(now).unwrap());
    config.broker = BrokerMode::External {
        url: format!("mqtt://127.0.0.1:{}", relay.port()),
        ca_file: None,
        credentials: None,
    };
    config.lease = LeasePolicy {
        lease_secs: LEASE_SECS,
        grace_secs: 600,
        ..LeasePolicy::default()
    };
    let stub = Arc::new(Stub::start(config).await.unwrap());
    stub.add_customer(tid("msp"), "MSP", CustomerKind::Msp)
        .await
        .unwrap();
    stub.add_customer(tid("acme"), "Acme Corp", CustomerKind::Tenant)
        .await
        .unwrap();
    for (sku, service) in [("LIC-WIFI", "wifi"), ("LIC-POE", "poe")] {
        stub.add_catalog_entry(CatalogEntry {
            sku: Sku::new(sku).unwrap(),
            name: sku.into(),
            service: svc(service),
            product_class: "wireless".into(),
            vms_per_seat: None,
        })
        .await
        .unwrap();
    }
    stub.add_subscription(Subscription {
        id: LicenseId::new("SUB-ACME").unwrap(),
        name: "Acme wireless".into(),
        owner: Some(tid("acme")),
        claim_key: None,
        start: now - 3600,
        end: now + 365 * 86_400,
        entitlements: vec![Entitlement {
            sku: Sku::new("LIC-WIFI").unwrap(),
            limit: 5,
        }],
    })
    .await
    .unwrap();
    stub.enable_auto_licensing(&Selection::all(), &[svc("wifi")], false)
        .await
        .unwrap();
    stub
}

const ROW: &str = r#"tr[data-device="acme/ap-1"]"#;

#[test]
fn an_operator_signs_in_watches_grace_runs_diagnostics_and_unassigns_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let started = Instant::now();
    let rt = licd_tests::runtime();
    let now = licd_tests::controller::unix_now();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(TOKEN_STORE_FILE);
    let admin = token::create(&store, "ops-admin", TokenKind::Admin, now).unwrap();

    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let (relay, stub, server) = rt.block_on(async {
        let relay = Relay::start(broker.port()).await.unwrap();
        let stub = start_stub(&relay, now).await;
        let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), store);
        let server = AdminServer::start(stub.clone(), config).await.unwrap();
        (relay, stub, server)
    });
    let mut options = AgentOptions::plain(broker.port(), &stub.root_public_key().to_hex());
    options.services = vec!["wifi".into(), "poe".into()];
    // Unanswered reports are retried at most this far apart, so the agent is heard soon
    // after the link heals (the config's minimum).
    options.extra = "[enforce]\nreport_interval_secs = 10\n".into();
    let agent = Agent::start(&options).unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();

    let driver = Driver::start(&chromedriver, dir.path());
    let profile = dir.path().join("chromium-profile");
    let base = server.url();
    let c = rt.block_on(browser(&driver, &chromium, &profile));

    // 1. Sign in; the overview lists the device, granted and licensed.
    rt.block_on(async {
        c.goto(&format!("{base}/ui/")).await.unwrap();
        let token_field = wait_css(&c, "the sign-in page", "#token").await;
        token_field.send_keys(&admin).await.unwrap();
        c.find(Locator::Css("#sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let who = wait_css(&c, "the overview, signed in", "#who").await;
        assert_eq!(who.text().await.unwrap(), "ops-admin");
        wait_css(
            &c,
            "wifi granted",
            &format!(r#"{ROW} td.services [data-service="wifi"][data-state="granted"]"#),
        )
        .await;
        wait_css(
            &c,
            "poe withheld",
            &format!(r#"{ROW} td.services [data-service="poe"][data-state="withheld"]"#),
        )
        .await;
        wait_css(
            &c,
            "wifi licensed on the device",
            &format!(r#"{ROW} td.expected [data-service="wifi"][data-expected="licensed"]"#),
        )
        .await;
        wait_css(&c, "the link up", r#"#broker-link[data-connected="true"]"#).await;
        screenshot(&c, "01-overview", None).await;
        // Set in this page only: still there later means the page was never reloaded.
        c.execute("window.licdNoReload = 42;", vec![])
            .await
            .unwrap();
    });

    eprintln!("step 2 at {:?}", started.elapsed());
    // 2. Cut the controller's broker link: down at once, grace when the lease runs out.
    let cut_at = Instant::now();
    relay.cut();
    rt.block_on(async {
        wait_css(
            &c,
            "the link down",
            r#"#broker-link[data-connected="false"]"#,
        )
        .await;
        wait_css(
            &c,
            "wifi in grace on the device",
            &format!(r#"{ROW} td.expected [data-service="wifi"][data-expected="grace"]"#),
        )
        .await;
    });
    eprintln!("grace shown {:?} after the cut", cut_at.elapsed());
    agent.wait_state("wifi", "grace", T).unwrap();
    rt.block_on(screenshot(&c, "02-devices-grace", Some("#devices")));

    eprintln!("step 3 at {:?}", started.elapsed());
    // 3. Heal it: the agent's next report is answered and the row says licensed again.
    relay.heal();
    rt.block_on(async {
        wait_css(
            &c,
            "the link up again",
            r#"#broker-link[data-connected="true"]"#,
        )
        .await;
        wait_css(
            &c,
            "wifi licensed again",
            &format!(r#"{ROW} td.expected [data-service="wifi"][data-expected="licensed"]"#),
        )
        .await;
    });
    agent.wait_state("wifi", "licensed", T).unwrap();

    eprintln!("step 4 at {:?}", started.elapsed());
    // 4. The device page: run diagnostics, see the device's answer.
    rt.block_on(async {
        let overview = c.window().await.unwrap();
        let tab = c.new_window(true).await.unwrap();
        c.switch_to_window(tab.handle).await.unwrap();
        c.goto(&format!("{base}/ui/devices/acme/ap-1")).await.unwrap();
        wait_css(&c, "the device page", "#device-id").await;
        wait_css(
            &c,
            "wifi licensed on the device page",
            r#"#device-expected [data-service="wifi"][data-expected="licensed"]"#,
        )
        .await;
        c.find(Locator::Css("#run-diag-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let result = wait_css(&c, "the diagnostics result", "#diag-result").await;
        let text = result.text().await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("diagnostics are JSON ({e}): {text}"));
        assert!(text.contains("ap-1"), "the device's own report: {text}");
        assert!(report.is_object(), "{text}");
        screenshot(&c, "03-device-diagnostics", None).await;

        eprintln!("step 5 at {:?}", started.elapsed());
        // 5. Unassign wifi from this tab; the overview tab changes by itself.
        c.goto(&format!("{base}/ui/")).await.unwrap();
        wait_css(&c, "the auto-licensing form", "#al-service")
            .await
            .send_keys("wifi")
            .await
            .unwrap();
        c.find(Locator::Css("#al-unassign"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_css(&c, "the overview after unassigning", "#events-section").await;
        c.close_window().await.unwrap();
        c.switch_to_window(overview).await.unwrap();
        wait_css(
            &c,
            "wifi withheld (unassigned), live",
            &format!(
                r#"{ROW} td.services [data-service="wifi"][data-state="withheld"][data-reason="unassigned"]"#
            ),
        )
        .await;
        // The same render: the newest bundle grants nothing, so nothing is expected to run.
        let expected = c
            .find_all(Locator::Css(&format!(
                r#"{ROW} td.expected [data-service="wifi"]"#
            )))
            .await
            .unwrap();
        assert!(expected.is_empty(), "wifi still expected on the device");
        let kept = c.execute("return window.licdNoReload;", vec![]).await.unwrap();
        assert_eq!(kept, serde_json::json!(42), "the row changed without a reload");
        let feed = c
            .find(Locator::Css("#events"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(feed.contains("unassign wifi for all customers"), "{feed}");
        screenshot(&c, "04-devices-unassigned", Some("#devices")).await;
        screenshot(&c, "05-subscriptions", Some("#subscriptions")).await;
        screenshot(&c, "06-compliance", Some("#compliance")).await;
    });
    agent.wait_state("wifi", "unlicensed", T).unwrap();

    rt.block_on(async {
        c.close().await.unwrap();
        server.shutdown().await;
        if let Ok(stub) = Arc::try_unwrap(stub) {
            stub.shutdown().await;
        }
    });
    drop(relay);
    eprintln!("browser scenario took {:?}", started.elapsed());
}
