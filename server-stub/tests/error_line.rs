//! A user error from `licd-stub` is one line on stderr, also with RUST_BACKTRACE set (returning
//! the error from `main` printed anyhow's `{:?}`: "Error:", "Caused by:" and a stack of
//! frames).

// Helpers unwrap too: in a test a panic is a failure with a message.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_user_error_is_one_line_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for backtrace in ["0", "1", "full"] {
        let out = Command::new(env!("CARGO_BIN_EXE_licd-stub"))
            .arg("--config")
            .arg(&missing)
            .args(["keys", "export-root"])
            .env("RUST_BACKTRACE", backtrace)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "RUST_BACKTRACE={backtrace}:\n{stderr}"
        );
        assert!(stderr.starts_with("licd-stub: "), "{stderr}");
        assert!(stderr.contains("missing.toml"), "{stderr}");
    }
}
