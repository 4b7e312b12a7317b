//! The process helpers against the real `licd` binary: it is built (or taken from `LICD_BIN`)
//! once per test run, spawned with its output captured, and never outlives the test.

use std::time::Duration;

use licd_tests::{licd_bin, spawn_licd, TempState};

#[test]
fn licd_bin_gives_a_fresh_executable_that_answers_help() {
    let bin = licd_bin().unwrap();
    assert!(bin.is_file(), "{}", bin.display());
    // A second call reuses the first build.
    assert_eq!(licd_bin().unwrap(), bin);

    let state = TempState::new("help").unwrap();
    let mut licd = spawn_licd(&state, &["--help"]).unwrap();
    let status = licd.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}; log:\n{}", licd.log());
    assert!(!licd.log().is_empty());
}
