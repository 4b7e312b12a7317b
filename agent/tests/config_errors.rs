//! The real `licd` binary given a config it cannot use: whatever is wrong (syntax, an unknown
//! key at the top or in a table, a missing required key, a wrong type, a bad value, a missing
//! file), stderr is exactly one line that names the file, the line and the key, says it once,
//! and stays one line with `RUST_BACKTRACE=1` in the environment.

// Helpers unwrap too: in a test a panic is a failure with a message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const ROOT: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// Runs `licd --config PATH check wifi` (and `licd run`) and returns stderr, checked to be
/// one line, for both commands and with and without `RUST_BACKTRACE`.
fn one_line_error(path: &Path) -> String {
    let mut seen = Vec::new();
    for args in [&["check", "wifi"][..], &["run"][..]] {
        for backtrace in [None, Some("1"), Some("full")] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_licd"));
            cmd.arg("--config")
                .arg(path)
                .args(args)
                .env_remove("LICD_CONFIG");
            match backtrace {
                Some(v) => cmd.env("RUST_BACKTRACE", v),
                None => cmd.env_remove("RUST_BACKTRACE"),
            };
            let out = cmd.output().expect("licd runs");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
            assert!(
                stderr.ends_with('\n') && stderr.lines().count() == 1,
                "{args:?} RUST_BACKTRACE={backtrace:?}: not one line:\n{stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}: stdout not empty");
            seen.push(stderr);
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "the same line every time: {seen:#?}");
    seen.remove(0)
}

/// Writes `text` to a config file, runs licd on it and checks its one line names the file,
/// `line` (when there is one) and `key`, and carries `fragment`.
fn assert_names(text: &str, line: Option<usize>, key: &str, fragment: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licd.toml");
    std::fs::write(&path, text).unwrap();
    let err = one_line_error(&path);
    assert!(err.contains(&path.display().to_string()), "file: {err}");
    if let Some(line) = line {
        assert!(err.contains(&format!("line {line},")), "line {line}: {err}");
    } else {
        assert!(!err.contains("line "), "no line expected: {err}");
    }
    assert!(err.contains(&format!("key `{key}`")), "key {key}: {err}");
    assert!(err.contains(fragment), "{fragment:?}: {err}");
    assert!(!err.contains(" | "), "no source snippet: {err}");
    assert_eq!(err.matches(fragment).count(), 1, "said once: {err}");
}

fn config(top: &str, broker: &str) -> String {
    format!("tenant = \"acme\"\nroots = [\"{ROOT}\"]\n{top}[broker]\nurl = \"mqtts://h\"\n{broker}")
}

#[test]
fn an_unknown_top_level_key_is_one_line_with_file_line_and_key() {
    assert_names(&config("colour = 1\n", ""), Some(3), "colour", "unknown");
}

#[test]
fn an_unknown_key_in_broker_is_one_line_with_file_line_and_key() {
    assert_names(
        &config("", "colour = 1\n"),
        Some(5),
        "broker.colour",
        "unknown",
    );
}

#[test]
fn a_missing_roots_or_tenant_names_the_key() {
    assert_names(
        "tenant = \"acme\"\n[broker]\nurl = \"mqtts://h\"\n",
        None,
        "roots",
        "missing",
    );
    assert_names(
        &format!("roots = [\"{ROOT}\"]\n[broker]\nurl = \"mqtts://h\"\n"),
        None,
        "tenant",
        "missing",
    );
    // A required key of a table: the line of the table's header.
    assert_names(
        &format!("tenant = \"acme\"\nroots = [\"{ROOT}\"]\n\n[broker]\nallow_insecure = true\n"),
        Some(4),
        "broker.url",
        "missing",
    );
}

#[test]
fn a_wrong_type_names_line_and_key() {
    assert_names(
        &format!("tenant = 5\nroots = [\"{ROOT}\"]\n[broker]\nurl = \"mqtts://h\"\n"),
        Some(1),
        "tenant",
        "invalid type",
    );
    assert_names(
        &config("", "keep_alive_secs = \"60\"\n"),
        Some(5),
        "broker.keep_alive_secs",
        "invalid type",
    );
}

#[test]
fn bad_toml_syntax_names_the_line() {
    assert_names(
        &format!("tenant = \"acme\"\nroots = [\"{ROOT}\"\n[broker]\nurl = \"mqtts://h\"\n"),
        Some(3),
        "roots",
        "comma",
    );
}

#[test]
fn a_bad_value_names_line_and_key() {
    assert_names(
        "tenant = \"acme\"\nroots = [\"abc\"]\n[broker]\nurl = \"mqtts://h\"\n",
        Some(2),
        "roots",
        "64 hex digits",
    );
    assert_names(
        &config("", "").replace("mqtts://h", "http://h"),
        Some(4),
        "broker.url",
        "scheme",
    );
    assert_names(
        &config("[identity]\nmodel = \"\"\n", ""),
        Some(4),
        "identity.model",
        "empty",
    );
}

#[test]
fn a_missing_file_says_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.toml");
    let err = one_line_error(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
