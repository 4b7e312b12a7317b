//! The lab CLI against a running stub: the `licd-stub` binary talks to an admin API started
//! in this process on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::test_config;
use licd_stub::admin::token::{self, TokenKind, TOKEN_STORE_FILE};
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::Stub;

async fn run(url: String, token_file: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_licd-stub"))
            .args(&args)
            .env("LICD_STUB_ADMIN_URL", url)
            .env("LICD_STUB_TOKEN_FILE", token_file)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn token_file(dir: &Path, kind: TokenKind, name: &str) -> PathBuf {
    let t = token::create(&dir.join(TOKEN_STORE_FILE), name, kind, 1).unwrap();
    let f = dir.join(format!("{name}.token"));
    token::write_token_file(&f, &t, false).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_is_set_up_and_inspected_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let admin = token_file(dir.path(), TokenKind::Admin, "ops");
    let read = token_file(dir.path(), TokenKind::Read, "viewer");
    let stub = Arc::new(Stub::start(test_config()).await.unwrap());
    let server = AdminServer::start(
        stub.clone(),
        AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join(TOKEN_STORE_FILE),
        ),
    )
    .await
    .unwrap();
    let url = server.url();

    ok(&run(
        url.clone(),
        admin.clone(),
        &["customers", "add", "msp", "--msp"],
    )
    .await);
    ok(&run(
        url.clone(),
        admin.clone(),
        &["customers", "add", "acme", "--name", "Acme"],
    )
    .await);
    ok(&run(
        url.clone(),
        admin.clone(),
        &[
            "catalog",
            "add",
            "LIC-AP",
            "--service",
            "wifi",
            "--class",
            "ap",
        ],
    )
    .await);
    ok(&run(
        url.clone(),
        admin.clone(),
        &[
            "subscriptions",
            "add",
            "SUB-1",
            "--owner",
            "msp",
            "--seats",
            "LIC-AP=5",
            "--end",
            "2099-01-01",
        ],
    )
    .await);

    // Tables for people, JSON for scripts.
    let table = ok(&run(url.clone(), read.clone(), &["customers"]).await);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("acme") && table.contains("Acme"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&ok(&run(
        url.clone(),
        read.clone(),
        &["subscriptions", "list", "--json", "--per-page", "3"],
    )
    .await))
    .unwrap();
    assert_eq!(json[0]["subscriptionId"], "SUB-1");

    let out = ok(&run(
        url.clone(),
        admin.clone(),
        &[
            "auto-license",
            "enable",
            "--service",
            "wifi",
            "--include",
            "acme",
        ],
    )
    .await);
    assert!(out.contains("enabled wifi for 1 customer(s)"), "{out}");
    let out = ok(&run(url.clone(), read.clone(), &["compliance", "acme"]).await);
    assert!(out.contains("acme: compliant"), "{out}");

    // Errors say what to fix.
    let o = run(url.clone(), read.clone(), &["customers", "add", "beta"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("403") && err.contains("admin token"), "{err}");
    let o = run(url.clone(), dir.path().join("missing.token"), &["devices"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no admin token") && err.contains("token create"),
        "{err}"
    );
    let o = run(
        url.clone(),
        admin.clone(),
        &["auto-license", "enable", "--service", "fax"],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("404") && err.contains("fax"), "{err}");

    server.shutdown().await;
    if let Ok(stub) = Arc::try_unwrap(stub) {
        stub.shutdown().await;
    }
}

#[tokio::test]
async fn token_create_writes_a_private_file_and_list_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().to_str().unwrap().to_string();
    let none = dir.path().join("none");
    let o = run(
        "http://127.0.0.1:1".into(),
        none.clone(),
        &[
            "token",
            "create",
            "--key-dir",
            &keys,
            "--name",
            "ci",
            "--kind",
            "read",
        ],
    )
    .await;
    ok(&o);
    let t = token::read_token_file(&dir.path().join("ci.token")).unwrap();
    assert!(t.starts_with("lst_read_"));
    let list = ok(&run(
        "http://127.0.0.1:1".into(),
        none.clone(),
        &["token", "list", "--key-dir", &keys],
    )
    .await);
    assert!(list.contains("ci") && list.contains("read") && !list.contains(&t));
    // A stopped API: the error says where it looked.
    let o = run(
        "http://127.0.0.1:1".into(),
        dir.path().join("ci.token"),
        &["customers"],
    )
    .await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("licd-stub serve"));
}
