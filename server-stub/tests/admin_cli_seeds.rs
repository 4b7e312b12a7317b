//! The CLI of issue 21 against a running stub: a tenant token made with `token create
//! --tenant`, `compliance-statuses`, `coterm list` and `coterm move`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use common::{now, test_config};
use licd_stub::admin::token::TOKEN_STORE_FILE;
use licd_stub::admin::{AdminConfig, AdminServer};
use licd_stub::Stub;

async fn run(url: &str, token_file: Option<&PathBuf>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_licd-stub"));
    cmd.args(args)
        .env_remove("LICD_STUB_TOKEN_FILE")
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LOG", "error")
        .env("LICD_STUB_ADMIN_URL", url);
    if let Some(f) = token_file {
        cmd.env("LICD_STUB_TOKEN_FILE", f);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_tokens_compliance_statuses_and_co_term_moves_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().display().to_string();
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
    let msp_file = dir.path().join("msp.token");
    let acme_file = dir.path().join("acme-ops.token");
    let m = msp_file.display().to_string();
    let a = acme_file.display().to_string();
    ok(&run(
        &url,
        None,
        &[
            "token",
            "create",
            "--key-dir",
            &keys,
            "--name",
            "msp",
            "--out",
            &m,
        ],
    )
    .await);
    ok(&run(
        &url,
        None,
        &[
            "token",
            "create",
            "--key-dir",
            &keys,
            "--name",
            "acme-ops",
            "--tenant",
            "acme",
            "--out",
            &a,
        ],
    )
    .await);
    let list = ok(&run(&url, None, &["token", "list", "--key-dir", &keys]).await);
    assert!(list.contains("acme-ops") && list.contains("acme"), "{list}");
    let bad = run(
        &url,
        None,
        &[
            "token",
            "create",
            "--key-dir",
            &keys,
            "--name",
            "x",
            "--tenant",
            "a/b",
        ],
    )
    .await;
    assert!(
        !bad.status.success(),
        "a tenant that is not an id is refused"
    );

    let msp = Some(&msp_file);
    let end = (now() + 400 * 86_400).to_string();
    for args in [
        vec!["customers", "add", "msp", "--msp"],
        vec!["customers", "add", "acme"],
        vec!["customers", "add", "beta"],
        vec![
            "catalog",
            "add",
            "LIC-AP",
            "--service",
            "wifi",
            "--class",
            "ap",
        ],
        vec![
            "subscriptions",
            "add",
            "SUB-1",
            "--owner",
            "acme",
            "--seats",
            "LIC-AP=3",
            "--end",
            &end,
        ],
    ] {
        ok(&run(&url, msp, &args).await);
    }
    let out = ok(&run(&url, msp, &["coterm", "list", "acme"]).await);
    assert!(out.contains("SUB-1") && out.contains("LIC-AP=3"), "{out}");
    let out = ok(&run(
        &url,
        msp,
        &[
            "coterm",
            "move",
            "acme",
            "--to",
            "beta",
            "--license",
            "SUB-1:LIC-AP=1",
            "--json",
        ],
    )
    .await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["remainderLicenses"][0]["counts"][0]["count"], 2, "{v}");
    assert_eq!(v["movedLicenses"][0]["organizationId"], "beta", "{v}");
    let out = ok(&run(
        &url,
        msp,
        &["compliance-statuses", "--org", "acme", "--org", "beta"],
    )
    .await);
    assert!(
        out.contains("SUB-1") && out.contains("SUB-1-m1") && out.contains("compliant"),
        "{out}"
    );
    // acme's token: its own licenses; beta's are as unknown as a missing organization.
    let acme = Some(&acme_file);
    let out = ok(&run(
        &url,
        acme,
        &["coterm", "list", "acme", "--expired", "false"],
    )
    .await);
    assert!(out.contains("SUB-1"), "{out}");
    let other = run(&url, acme, &["coterm", "list", "beta"]).await;
    let missing = run(&url, acme, &["coterm", "list", "nobody"]).await;
    assert!(!other.status.success());
    assert_eq!(
        String::from_utf8_lossy(&other.stderr).replace("beta", "X"),
        String::from_utf8_lossy(&missing.stderr).replace("nobody", "X")
    );
    server.shutdown().await;
    if let Ok(stub) = Arc::try_unwrap(stub) {
        stub.shutdown().await;
    }
}

/// Snow assignments from the CLI (issue 21 item 3): assign a license to a computer and to a
/// datacenter its host is placed in, list, summary, types, set-assignments, unassign; errors
/// are one line naming what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snow_assignments_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().display().to_string();
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
    let token_file = dir.path().join("msp.token");
    let t = token_file.display().to_string();
    ok(&run(
        &url,
        None,
        &[
            "token",
            "create",
            "--key-dir",
            &keys,
            "--name",
            "msp",
            "--out",
            &t,
        ],
    )
    .await);
    let msp = Some(&token_file);
    let end = (now() + 400 * 86_400).to_string();
    for args in [
        vec!["customers", "add", "msp", "--msp"],
        vec!["customers", "add", "acme"],
        vec![
            "catalog",
            "add",
            "LIC-HV",
            "--service",
            "hv",
            "--class",
            "server",
            "--vms-per-seat",
            "4",
        ],
        vec![
            "subscriptions",
            "add",
            "SUB-1",
            "--owner",
            "acme",
            "--seats",
            "LIC-HV=3",
            "--end",
            &end,
        ],
    ] {
        ok(&run(&url, msp, &args).await);
    }
    // Two hosts report (as the MQTT worker would apply them).
    for (n, d) in [(3u8, "h-1"), (4, "h-2")] {
        let key = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
        let r = licd_protocol::DeviceReport {
            device: licd_protocol::DeviceId::new(d).unwrap(),
            tenant: licd_protocol::TenantId::new("acme").unwrap(),
            device_key: licd_protocol::PublicKey::from(&key.verifying_key()),
            model: "M".into(),
            serial: "S".into(),
            product_class: "server".into(),
            firmware_version: "1".into(),
            agent_version: "0.1".into(),
            vm_count: Some(2),
            services_wanted: [licd_protocol::ServiceName::new("hv").unwrap()].into(),
            bundle_seq: 0,
            clock: now(),
            uptime: 1,
            clock_rollback: false,
        };
        stub.apply(move |e, now| {
            let fx = e
                .handle_report(&r, now)
                .map_err(|_| licd_stub::engine::EngineError::SeqExhausted)?;
            Ok(((), fx))
        })
        .await
        .unwrap();
    }
    let lic = "SUB-1:LIC-HV";
    let out = ok(&run(
        &url,
        msp,
        &[
            "licenses",
            "assign",
            lic,
            "--computer",
            "acme:h-1",
            "--quantity",
            "2",
            "--vm",
            "vm-1",
        ],
    )
    .await);
    assert!(
        out.contains("assigned SUB-1:LIC-HV to computers acme:h-1"),
        "{out}"
    );
    let out = ok(&run(&url, msp, &["licenses", "assigned", lic, "computers"]).await);
    assert!(out.contains("acme:h-1") && out.contains("8"), "{out}");
    ok(&run(
        &url,
        msp,
        &["licenses", "place", "acme", "h-2", "--datacenter", "dc-1"],
    )
    .await);
    ok(&run(
        &url,
        msp,
        &["licenses", "assign", lic, "--datacenter", "dc-1"],
    )
    .await);
    let out = ok(&run(
        &url,
        msp,
        &["licenses", "assigned", lic, "datacenters", "--json"],
    )
    .await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v[0]["coveredComputers"],
        serde_json::json!(["acme:h-2"]),
        "{v}"
    );
    let out = ok(&run(&url, msp, &["devices", "show", "acme", "h-2", "--json"]).await);
    assert!(out.contains("granted"), "h-2 is covered by dc-1: {out}");
    ok(&run(
        &url,
        msp,
        &["licenses", "set-assignments", lic, "users", "u-1", "u-2"],
    )
    .await);
    let out = ok(&run(&url, msp, &["licenses", "summary", lic, "--json"]).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["hasUserAssignment"].as_bool(),
            v["hasSiteAssignment"].as_bool()
        ),
        (Some(true), Some(false)),
        "{v}"
    );
    let out = ok(&run(&url, msp, &["licenses", "assignment-types"]).await);
    assert!(out.contains("datacenter") && out.contains("user"), "{out}");
    // Unassign one computer: its service is withheld; --all users removes them all.
    ok(&run(
        &url,
        msp,
        &["licenses", "unassign", lic, "--computer", "acme:h-1"],
    )
    .await);
    let out = ok(&run(&url, msp, &["devices", "show", "acme", "h-1", "--json"]).await);
    assert!(out.contains("Unassigned"), "{out}");
    ok(&run(&url, msp, &["licenses", "unassign", lic, "--all", "users"]).await);
    let out = ok(&run(&url, msp, &["licenses", "assigned", lic, "users", "--json"]).await);
    assert_eq!(out.trim(), "[]");
    // An error is one line naming what failed; the seats of a license are not exceeded.
    let bad = run(
        &url,
        msp,
        &[
            "licenses",
            "assign",
            lic,
            "--computer",
            "acme:h-1",
            "--quantity",
            "9",
        ],
    )
    .await;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("409") && err.contains("free seats"), "{err}");
    let bad = run(
        &url,
        msp,
        &[
            "licenses",
            "assign",
            lic,
            "--computer",
            "acme:h-1",
            "--user",
            "u",
        ],
    )
    .await;
    assert!(!bad.status.success(), "one target at a time");
    server.shutdown().await;
    if let Ok(stub) = Arc::try_unwrap(stub) {
        stub.shutdown().await;
    }
}
