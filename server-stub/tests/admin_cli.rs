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
    let token_file = token_file.display().to_string();
    run_env(
        args,
        &[
            ("LICD_STUB_ADMIN_URL", &url),
            ("LICD_STUB_TOKEN_FILE", &token_file),
        ],
    )
    .await
}

/// Runs the binary with only `env` set of its own variables (no admin URL or token file
/// from the environment unless given).
async fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_licd-stub"))
            .args(&args)
            .env_remove("LICD_STUB_ADMIN_URL")
            .env_remove("LICD_STUB_TOKEN_FILE")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("RUST_LOG", "error")
            .envs(env)
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

    // `claim --validate` says first that it only validated, and does not show the
    // subscription as if it were claimed (it printed the table, owner acme, status active,
    // before a note on stderr).
    ok(&run(
        url.clone(),
        admin.clone(),
        &[
            "subscriptions",
            "add",
            "SUB-2",
            "--claim-key",
            "KEY-2",
            "--seats",
            "LIC-AP=2",
            "--end",
            "2099-01-01",
        ],
    )
    .await);
    let out = ok(&run(
        url.clone(),
        admin.clone(),
        &[
            "subscriptions",
            "claim",
            "KEY-2",
            "--customer",
            "acme",
            "--validate",
        ],
    )
    .await);
    assert!(
        out.starts_with("validated only, nothing changed: "),
        "{out}"
    );
    assert!(out.contains("SUB-2") && out.contains("acme"), "{out}");
    assert!(!out.contains("OWNER") && !out.contains("active"), "{out}");
    let out = ok(&run(
        url.clone(),
        read.clone(),
        &["subscriptions", "show", "SUB-2"],
    )
    .await);
    assert!(out.contains("unclaimed"), "{out}");

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

/// `licd-stub --admin-url URL devices` works as well as `licd-stub devices --admin-url URL`:
/// the connection options are global (they were refused before the subcommand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_options_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let read = token_file(dir.path(), TokenKind::Read, "viewer");
    let read = read.to_str().unwrap().to_string();
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
    let opts = ["--admin-url", &url, "--token-file", &read];
    for args in [
        [&opts[..], &["devices"]].concat(),
        [&["devices"], &opts[..]].concat(),
        [&opts[..2], &["devices", "list"], &opts[2..]].concat(),
        [&opts[..], &["--json", "customers"]].concat(),
        [&["customers"], &opts[..], &["--json"]].concat(),
    ] {
        let out = ok(&run_env(&args, &[]).await);
        if args.contains(&"--json") {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert!(v.is_array(), "{args:?}: {out}");
        } else {
            assert!(out.starts_with("TENANT"), "{args:?}: {out}");
        }
    }
    server.shutdown().await;
    if let Ok(stub) = Arc::try_unwrap(stub) {
        stub.shutdown().await;
    }
}

/// User errors are one line on stderr, even with `RUST_BACKTRACE=1` in the environment (it
/// printed anyhow's debug form: causes on separate lines and a stack of `<unknown>` frames).
#[tokio::test]
async fn user_errors_are_one_line_even_with_rust_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TokenKind::Read, "viewer");
    let token = token.to_str().unwrap().to_string();
    let bad_config = dir.path().join("stub.toml");
    std::fs::write(&bad_config, "ledger = \n").unwrap();
    let bad_config = bad_config.to_str().unwrap().to_string();
    let missing = dir.path().join("missing.token");
    let missing = missing.to_str().unwrap().to_string();
    for (args, wanted) in [
        // The API is not running.
        (
            vec![
                "--admin-url",
                "http://127.0.0.1:1",
                "--token-file",
                &token,
                "customers",
            ],
            "licd-stub serve",
        ),
        // No token file.
        (vec!["--token-file", &missing, "devices"], "no admin token"),
        // A bad configuration file: file, line and column, once.
        (
            vec!["--config", &bad_config, "customers"],
            "stub.toml:1:10: ",
        ),
        // An unknown key directory.
        (
            vec!["keys", "export-root", "--key-dir", &missing],
            "reading the root key",
        ),
    ] {
        for backtrace in ["1", "full"] {
            let o = run_env(
                &args,
                &[
                    ("RUST_BACKTRACE", backtrace),
                    ("RUST_LIB_BACKTRACE", backtrace),
                ],
            )
            .await;
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.lines().count(), 1, "{args:?}:\n{err}");
            assert!(err.starts_with("licd-stub: "), "{args:?}: {err}");
            assert!(err.contains(wanted), "{args:?}: {err}");
            assert!(
                !err.contains("backtrace") && !err.contains("<unknown>"),
                "{err}"
            );
        }
    }
}

/// The CLI reads answers through the admin API's own types: a server whose answer has a field
/// renamed (another version) makes the command fail naming the field, where reading untyped
/// JSON printed `-` in that column and exited 0. `--json` still prints the answer as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_renamed_field_is_an_error_naming_it_not_an_empty_column() {
    use axum::routing::get;
    use licd_stub::admin::dto::{Customer, CustomerKind};

    let dir = tempfile::tempdir().unwrap();
    let admin = token_file(dir.path(), TokenKind::Admin, "ops");
    // The real shape of a customer, with `name` renamed as another server version might.
    let mut answer = serde_json::to_value(vec![Customer {
        id: "acme".into(),
        name: "Acme".into(),
        kind: CustomerKind::Tenant,
        created_at: "2026-01-01T00:00:00Z".into(),
        devices: 0,
        subscriptions: 0,
    }])
    .unwrap();
    let name = answer[0].as_object_mut().unwrap().remove("name").unwrap();
    answer[0]["displayName"] = name;
    let served = answer.clone();
    let app = axum::Router::new().route(
        "/api/v1/customers",
        get(move || {
            let v = served.clone();
            async move { axum::Json(v) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let o = run(url.clone(), admin.clone(), &["customers"]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.contains("missing field `name`") && err.contains("--json"),
        "{err}"
    );

    let out = ok(&run(url, admin, &["customers", "--json"]).await);
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed, answer);
    server.abort();
}
