//! The stub against an external broker (mosquitto, when installed; the test is skipped
//! otherwise): reports arrive through the shared subscription, bundles go out retained, and
//! when the broker is restarted the controller reconnects by itself and keeps serving.

// Test helpers outside #[test] fns unwrap too: a panic is a test failure (see clippy.toml).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{setup_with, svc, test_config, Device, WAIT};
use licd_protocol::{TenantId, TrustStore};
use licd_stub::engine::Selection;
use licd_stub::BrokerMode;

struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mosquitto on `addr`; `None` if it is not installed.
fn mosquitto(addr: SocketAddr) -> Option<Mosquitto> {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} {}\nallow_anonymous true\npersistence false\n",
            addr.port(),
            addr.ip()
        ),
    )
    .unwrap();
    let child = ["mosquitto", "/usr/sbin/mosquitto"]
        .iter()
        .find_map(|bin| {
            Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        })?;
    let m = Mosquitto { child, _dir: dir };
    licd_stub::broker::wait_listening(addr, WAIT).unwrap();
    Some(m)
}

/// Polls `pred` every 20 ms until it holds, or panics after `WAIT`.
async fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT * 2, async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_serves_through_mosquitto_and_survives_a_broker_restart() {
    let addr = licd_stub::broker::concrete_addr("127.0.0.1:0".parse().unwrap()).unwrap();
    let Some(broker) = mosquitto(addr) else {
        eprintln!("mosquitto not installed; skipping");
        return;
    };
    let mut config = test_config();
    config.broker = BrokerMode::External {
        url: format!("mqtt://{addr}"),
        ca_file: None,
        credentials: None,
    };
    let stub = setup_with(config).await;
    assert_eq!(stub.broker_addr(), None);
    let trust = TrustStore::new(vec![stub.root_public_key()]);

    let mut dev = Device::connect_to(addr, "acme", "ap-1", 7).await;
    dev.send(&dev.report(&["wifi", "security"], 0), &dev.key.clone())
        .await;
    let b1 = dev.next_bundle(&trust).await;
    assert_eq!(b1.grants.len(), 2);

    // Restart the broker on the same port: the controller reconnects with backoff.
    drop(dev);
    drop(broker);
    wait_until("the stub to notice", || !stub.is_connected()).await;
    let _broker = mosquitto(addr).unwrap();
    wait_until("the stub to reconnect", || {
        stub.is_connected() && stub.stats().connections >= 2
    })
    .await;

    let mut dev = Device::connect_to(addr, "acme", "ap-1", 7).await;
    stub.unassign(
        &Selection::only([TenantId::new("acme").unwrap()]),
        &[svc("security")],
    )
    .await
    .unwrap();
    let b2 = dev.next_bundle(&trust).await;
    assert!(b2.seq > b1.seq);
    assert!(b2.grant(&svc("security")).is_none());
    stub.shutdown().await;
}
