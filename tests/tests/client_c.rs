//! The C library end to end: `liblicd.a` (crate `licd-client-ffi`) is built, the examples in
//! `examples/c/` are compiled with the system `cc` against it and `include/licd.h`, and run
//! against a real `licd` on a real mosquitto with the test controller: a licensed service, an
//! unlicensed one, "not running", and a watch that sees a revocation. Waits are on
//! conditions with timeouts.

// Helpers outside `#[test]` functions (runtime, builds) unwrap too: in a test a panic is a
// failure with a message, which clippy.toml's allow-unwrap-in-tests means but does not cover.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use licd_tests::agent::{Agent, AgentOptions};
use licd_tests::controller::{ControllerKeys, Policy, TestController};
use licd_tests::process::workspace_root;
use licd_tests::{wait_for, Mosquitto, MosquittoConfig, TempState, TestProcess};

const T: Duration = Duration::from_secs(30);

use licd_tests::runtime;

/// Builds `licd-client-ffi` (debug) once and returns the path of `liblicd.a` cargo reports.
fn static_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--locked", "-p", "licd-client-ffi", "--lib"])
            .arg("--message-format=json-render-diagnostics")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building liblicd failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .flat_map(|m| {
                m["filenames"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|f| f.as_str().map(PathBuf::from))
            })
            .find(|f| f.file_name().is_some_and(|n| n == "liblicd.a"))
            .expect("cargo reported no liblicd.a")
    })
}

/// Compiles `examples/c/{name}.c` into `dir` with warnings as errors; returns the binary.
fn compile_example(name: &str, dir: &TempState) -> PathBuf {
    let root = workspace_root();
    let bin = dir.join(name);
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join(format!("examples/c/{name}.c")))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&bin)
        .output()
        .expect("cannot run the system cc");
    assert!(
        out.status.success(),
        "cc {name}.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn run(bin: &Path, args: &[&Path]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(bin).args(args).output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn the_c_example_says_licensed_unlicensed_and_not_running_with_licd_check_exit_codes() {
    let rt = runtime();
    let _g = rt.enter();
    let dir = TempState::new("client-c").unwrap();
    let check = compile_example("check", &dir);

    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let keys = ControllerKeys::fixed();
    let root = keys.root_hex();
    let _controller = TestController::start(broker.port(), keys, Policy::default());
    let mut agent = Agent::start(&AgentOptions::plain(broker.port(), &root)).unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();
    let socket = agent.state.join("licd.sock");
    let until = agent.check("wifi").unwrap()["until"].as_u64().unwrap();

    let (code, out, err) = run(&check, &[Path::new("wifi"), &socket]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("wifi licensed until={until} reason= source=daemon").as_str()
        ),
        "{err}"
    );
    let (code, out, err) = run(&check, &[Path::new("not-wanted"), &socket]);
    assert_eq!(
        (code, out.trim()),
        (
            1,
            "not-wanted unlicensed until=0 reason=never_granted source=daemon"
        ),
        "{err}"
    );

    assert!(agent.stop().unwrap());
    let (code, out, err) = run(&check, &[Path::new("wifi"), &socket]);
    assert_eq!((code, out.as_str()), (4, ""), "{err}");
    assert!(err.contains("licd is not running"), "{err}");
    assert!(err.contains("licd.sock"), "{err}");
}

#[test]
fn the_c_watch_example_sees_the_revocation_when_the_controller_stops_granting() {
    let rt = runtime();
    let _g = rt.enter();
    let dir = TempState::new("client-c-watch").unwrap();
    let watch = compile_example("watch", &dir);

    let broker = Mosquitto::start(MosquittoConfig::plain()).unwrap();
    let keys = ControllerKeys::fixed();
    let root = keys.root_hex();
    let policy = Policy {
        lease: 4,
        grace: 2,
        ..Policy::default()
    };
    let controller = TestController::start(broker.port(), keys, policy);
    let agent = Agent::start(&AgentOptions::plain(broker.port(), &root)).unwrap();
    agent.wait_state("wifi", "licensed", T).unwrap();

    let socket = agent.state.join("licd.sock");
    let mut command = Command::new(&watch);
    command.arg("wifi").arg(&socket);
    let mut watcher = TestProcess::spawn("watch.c", command, &dir.join("watch.log")).unwrap();
    // It checked the state once the watch was confirmed: from here no change is missed.
    wait_for("the C watcher to subscribe", T, || {
        watcher.log().contains("watching wifi licensed")
    })
    .unwrap();
    controller.set_policy(|p| p.services.clear());

    let status = watcher.wait_exit(T).unwrap();
    let log = watcher.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.lines()
            .any(|l| l == "changed wifi unlicensed until=0 reason=revoked"),
        "{log}"
    );
}
