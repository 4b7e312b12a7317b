//! `POST /api/v1/devices/{tenant}/{device}/diag` over real HTTP when no answer can come: a
//! device whose presence says offline gets 409 `device_offline` at once, and a device this
//! controller asked less than a minute ago gets 429 `rate_limited` with `Retry-After` at once
//! (the device answers one request a minute and would refuse silently); only an online device
//! that does not answer costs the full timeout (504). Devices are simulated: a report applied
//! to the engine pins the key, a raw MQTT client publishes the retained presence.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_config, Device};
use licd_protocol::{DeviceId, PublicKey, TenantId, Topic, TopicKind};
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::engine::CustomerKind;
use licd_stub::Stub;
use rumqttc::{Packet, QoS};
use serde_json::Value;

/// POSTs the diag request; returns status, body, `Retry-After` and how long it took.
async fn diag(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    timeout_secs: u64,
) -> (u16, Value, Option<String>, Duration) {
    let started = Instant::now();
    let resp = http
        .post(format!(
            "{url}/api/v1/devices/acme/ap-1/diag?timeoutSecs={timeout_secs}"
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, retry, started.elapsed())
}

#[tokio::test]
async fn an_offline_device_gets_409_and_a_device_asked_a_moment_ago_gets_429_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(TOKEN_STORE_FILE);
    let admin = token::create(&store, "ops", TokenKind::Admin, 1).unwrap();
    let stub = Arc::new(Stub::start(test_config()).await.unwrap());
    stub.add_customer(TenantId::new("acme").unwrap(), "Acme", CustomerKind::Tenant)
        .await
        .unwrap();
    let server = AdminServer::start(
        stub.clone(),
        AdminConfig::new("127.0.0.1:0".parse().unwrap(), store),
    )
    .await
    .unwrap();
    let url = server.url().to_string();
    let http = reqwest::Client::new();

    // The device reported once (its key is pinned), then went away: its will says offline.
    let mut device = Device::connect(&stub, "acme", "ap-1", 21).await;
    let report = device.report(&["wifi"], 0);
    stub.apply(move |e, now| {
        let fx = e
            .handle_report(&report, now)
            .map_err(|_| licd_stub::engine::EngineError::SeqExhausted)?;
        Ok(((), fx))
    })
    .await
    .unwrap();
    assert_eq!(
        stub.device(
            &TenantId::new("acme").unwrap(),
            &DeviceId::new("ap-1").unwrap()
        )
        .unwrap()
        .map(|d| d.key),
        Some(PublicKey::from(&device.key.verifying_key()).to_hex())
    );
    let presence = Topic::new(&device.tenant, &device.id, TopicKind::Presence).to_topic_string();
    let mut set_presence = async |word: &'static [u8]| {
        device
            .client
            .publish(presence.clone(), QoS::AtLeastOnce, true, word)
            .await
            .unwrap();
        device.wait_for(|p| matches!(p, Packet::PubAck(_))).await;
    };
    set_presence(b"offline").await;

    let (status, body, _, took) = diag(&http, &url, &admin, 20).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "device_offline", "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // An offline device was not asked: no rate limit follows.
    let (status, _, _, _) = diag(&http, &url, &admin, 20).await;
    assert_eq!(status, 409);

    // Online but silent (an agent that refuses): the full timeout, then 504.
    set_presence(b"online").await;
    let (status, body, _, took) = diag(&http, &url, &admin, 1).await;
    assert_eq!(status, 504, "{body}");
    assert!(took >= Duration::from_secs(1), "took {took:?}");

    // Asked a moment ago: 429 at once, with the seconds until the device takes another.
    let (status, body, retry, took) = diag(&http, &url, &admin, 20).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    server.shutdown().await;
    drop(stub);
}
