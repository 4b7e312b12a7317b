//! The dashboard (`/ui`) over HTTP against a running stub with a simulated device (real
//! broker, real signatures): sign-in trades a token for an HttpOnly, SameSite=Strict cookie;
//! pages need it; a hostile model string from a device is shown escaped; read tokens see but
//! cannot act; a form without this session's CSRF token is refused; an admin's unassign
//! reaches the device as a new bundle and the devices table shows the service withheld; the
//! live feed streams the bundle event and the operator action.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{setup, Device, WAIT};
use licd_protocol::TrustStore;
use licd_stub::admin::{token, AdminConfig, AdminServer};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

const HOSTILE_MODEL: &str = "<script>alert(\"pwned\")</script>";

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base,
            cookie: None,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = &self.cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    /// Signs in; returns the status and, on success, keeps the cookie.
    async fn sign_in(&mut self, token: &str) -> u16 {
        let resp = self.post("/ui/login", &[("token", token)]).await;
        let status = resp.status().as_u16();
        if let Some(set) = resp.headers().get(SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(set.contains("HttpOnly"), "{set}");
            assert!(set.contains("SameSite=Strict"), "{set}");
            self.cookie = Some(set.split(';').next().unwrap().to_string());
        }
        status
    }

    /// The page's CSRF token (from its forms).
    async fn csrf(&self) -> String {
        let page = self.get("/ui/").await.text().await.unwrap();
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &page[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

#[tokio::test]
async fn the_dashboard_signs_in_escapes_device_text_and_acts_only_for_admins_with_csrf() {
    let stub = Arc::new(setup().await);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(token::TOKEN_STORE_FILE);
    let admin = token::create(&store, "ops", token::TokenKind::Admin, 1).unwrap();
    let read = token::create(&store, "noc", token::TokenKind::Read, 1).unwrap();
    let server = AdminServer::start(
        stub.clone(),
        AdminConfig::new("127.0.0.1:0".parse().unwrap(), store),
    )
    .await
    .unwrap();

    // A device whose model is markup.
    let trust = TrustStore::new(vec![stub.root_public_key()]);
    let mut dev = Device::connect(&stub, "acme", "ap-7", 7).await;
    let mut report = dev.report(&["wifi"], 0);
    report.model = HOSTILE_MODEL.into();
    dev.send(&report, &dev.key.clone()).await;
    let first = dev.next_bundle(&trust).await;
    assert!(first.grants.iter().any(|g| g.service.as_str() == "wifi"));

    let mut browser = Browser::new(server.url());
    let resp = browser.get("/ui/").await;
    assert_eq!(
        resp.status().as_u16(),
        303,
        "signed out: to the sign-in page"
    );
    assert_eq!(resp.headers()[LOCATION], "/ui/login");
    assert_eq!(browser.sign_in("not-a-token").await, 401);
    assert!(browser.cookie.is_none());

    // Read token: sees everything, escaped.
    assert_eq!(browser.sign_in(&read).await, 303);
    let resp = browser.get("/ui/").await;
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("data-device=\"acme/ap-7\""), "{page}");
    assert!(page.contains("data-service=\"wifi\" data-state=\"granted\""));
    assert!(page.contains("id=\"rights\">read<"));
    let device_page = browser
        .get("/ui/devices/acme/ap-7")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        device_page.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"),
        "{device_page}"
    );
    assert!(!device_page.contains(HOSTILE_MODEL));
    let csrf = browser.csrf().await;
    let unassign = [
        ("csrf", csrf.as_str()),
        ("action", "unassign"),
        ("service", "wifi"),
        ("customer", "acme"),
    ];
    assert_eq!(
        browser
            .post("/ui/auto-licensing", &unassign)
            .await
            .status()
            .as_u16(),
        403,
        "a read token cannot act"
    );

    // Admin token: a forged form (no or another CSRF token) is refused; the real one acts.
    assert_eq!(browser.sign_in(&admin).await, 303);
    let csrf = browser.csrf().await;
    let forged = [
        ("csrf", "0000"),
        ("action", "unassign"),
        ("service", "wifi"),
        ("customer", "acme"),
    ];
    assert_eq!(
        browser
            .post("/ui/auto-licensing", &forged)
            .await
            .status()
            .as_u16(),
        403
    );
    let mut feed = browser.get("/ui/events").await;
    assert_eq!(feed.status().as_u16(), 200);
    let unassign = [
        ("csrf", csrf.as_str()),
        ("action", "unassign"),
        ("service", "wifi"),
        ("customer", "acme"),
    ];
    let resp = browser.post("/ui/auto-licensing", &unassign).await;
    assert_eq!(resp.status().as_u16(), 303);
    let revoked = dev.next_bundle(&trust).await;
    assert!(revoked.seq > first.seq);
    assert!(!revoked.grants.iter().any(|g| g.service.as_str() == "wifi"));
    let table = browser
        .get("/ui/fragments/devices")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        table.contains("data-service=\"wifi\" data-state=\"withheld\""),
        "{table}"
    );
    assert!(table.contains("withheld: unassigned"), "{table}");

    // The live feed carried the operator action and the bundle it caused.
    let mut seen = String::new();
    let got = tokio::time::timeout(WAIT, async {
        while !(seen.contains("\"kind\":\"bundle\"") && seen.contains("\"kind\":\"operator\"")) {
            match feed.chunk().await.unwrap() {
                Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
                None => break,
            }
        }
    })
    .await;
    assert!(got.is_ok(), "feed so far: {seen}");
    assert!(seen.contains("ap-7"), "{seen}");

    // Sign out ends the session.
    let csrf = browser.csrf().await;
    assert_eq!(
        browser
            .post("/ui/logout", &[("csrf", csrf.as_str())])
            .await
            .status()
            .as_u16(),
        303
    );
    assert_eq!(browser.get("/ui/").await.status().as_u16(), 303);
    drop(feed);
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .ok();
}
