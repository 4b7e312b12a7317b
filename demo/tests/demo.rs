//! The README's first command, `licd-demo`, runs to the end on its own: real agents get
//! grants, one service pauses, an unassign revokes, an outage shows grace, the controller comes
//! back. This is the same binary and the same run a new user gets.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_runs_to_the_end_and_shows_every_phase() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_licd-demo"))
        .output()
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}\n{stdout}\n{stderr}",
        out.status
    );
    for phase in [
        "signed grants arrive",
        "seats exhausted",
        "unassigned",
        "grace      (lease expired)",
        "Controller back",
        "demo finished",
    ] {
        assert!(stdout.contains(phase), "missing {phase:?} in:\n{stdout}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // It cleans up after itself: files are only kept with --keep or on failure.
    assert!(!stdout.contains("kept in"), "{stdout}");
}
