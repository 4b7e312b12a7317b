//! The local socket cannot be starved: a real `licd` keeps answering `licd check` and the Rust
//! client's check from the daemon (not the cache fallback) while 200 idle connections, 200
//! slowloris writers (both reopened as soon as the agent cuts them) and 200 watchers that
//! come and go crowd its socket; departed watchers give their slot back at once; watchers
//! past the watcher budget are refused with a message, and checks go on.

// Helpers outside `#[test]` functions unwrap too: in a test a panic is a failure with a message.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use licd_client::{Client, ClientError, Source, Watch};
use licd_tests::agent::Agent;
use licd_tests::{wait_for, Scene};

const T: Duration = Duration::from_secs(30);
/// How long a check may take under the crowd: `licd check` falls back to the cache after 2 s,
/// so an answer from the daemon is one within this.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const CROWD: usize = 200;

fn socket(agent: &Agent) -> PathBuf {
    agent.state.join("licd.sock")
}

/// Threads that keep misbehaving connections open until `stop`, reopening each as soon as
/// the agent cuts it; `opened` counts connections made.
struct Crowd {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Crowd {
    fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            opened: Arc::new(AtomicUsize::new(0)),
            threads: Vec::new(),
        }
    }

    /// `n` clients that connect and never send a byte.
    fn idle(&mut self, path: &Path, n: usize) {
        self.spawn(path, n, |mut s, stop| {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }

    /// `n` clients that send a request one byte every 50 ms and never finish the line.
    fn slowloris(&mut self, path: &Path, n: usize) {
        self.spawn(path, n, |mut s, stop| {
            let request = br#"{"v":1,"op":"check","service":"wifi"}"#;
            for b in request.iter().cycle() {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    fn spawn(&mut self, path: &Path, n: usize, client: fn(UnixStream, &AtomicBool)) {
        for _ in 0..n {
            let (path, stop, opened) = (path.to_owned(), self.stop.clone(), self.opened.clone());
            let thread = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match UnixStream::connect(&path) {
                            Ok(s) => {
                                opened.fetch_add(1, Ordering::Relaxed);
                                client(s, &stop);
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })
                .unwrap();
            self.threads.push(thread);
        }
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One `licd check` and one Rust-client check; both must come from the daemon in time.
fn checks_from_the_daemon(agent: &Agent, round: usize) -> (Duration, Duration) {
    let t = Instant::now();
    let (code, cli) = agent.check_cli("wifi", &[]).unwrap();
    let cli_took = t.elapsed();
    assert_eq!(
        (code, cli["source"].as_str()),
        (0, Some("daemon")),
        "round {round}: `licd check` fell back or failed after {cli_took:?}: {cli}"
    );
    let t = Instant::now();
    let verdict = Client::with_timeout(socket(agent), CHECK_TIMEOUT)
        .and_then(|mut c| c.verdict("wifi"))
        .unwrap_or_else(|e| panic!("round {round}: the client's check failed: {e}"));
    let client_took = t.elapsed();
    assert_eq!(verdict.source, Source::Daemon);
    assert!(verdict.state.may_run(), "{verdict:?}");
    assert!(client_took < CHECK_TIMEOUT, "{client_took:?}");
    (cli_took, client_took)
}

#[test]
fn checks_are_answered_by_the_daemon_under_idle_slow_and_departed_clients() {
    let scene = Scene::start().unwrap();
    let agent = scene.licensed_agent().unwrap();
    let path = socket(&agent);

    let mut crowd = Crowd::new();
    crowd.idle(&path, CROWD);
    crowd.slowloris(&path, CROWD);
    wait_for("the crowd to connect", T, || crowd.opened() >= 2 * CROWD).unwrap();

    // 200 watchers opened and dropped (services using licd_watch restarted 200 times in all),
    // eight at a time, while the checks run.
    let watchers: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..CROWD / 8 {
                    let watch = Watch::open(&path, T)
                        .unwrap_or_else(|e| panic!("watcher {t}/{i} was not confirmed: {e}"));
                    drop(watch);
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for round in 0..10 {
        samples.push(checks_from_the_daemon(&agent, round));
    }
    for w in watchers {
        w.join().unwrap();
    }
    for round in 10..15 {
        samples.push(checks_from_the_daemon(&agent, round));
    }
    let opened = crowd.opened();
    drop(crowd);
    let worst_cli = samples.iter().map(|s| s.0).max().unwrap();
    let worst_client = samples.iter().map(|s| s.1).max().unwrap();
    eprintln!(
        "under {CROWD} idle + {CROWD} slowloris ({opened} connections opened) and {CROWD} \
         departed watchers: slowest `licd check` {worst_cli:?}, slowest client check \
         {worst_client:?}"
    );
}

#[test]
fn watchers_past_the_budget_are_refused_and_departed_ones_are_reaped_at_once() {
    let scene = Scene::start().unwrap();
    let agent = scene.licensed_agent().unwrap();
    let path = socket(&agent);

    let budget = licd_agent::api::MAX_WATCHERS;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..budget + 10 {
        match Watch::open(&path, T) {
            Ok(w) => held.push(w),
            Err(ClientError::Refused(message)) => {
                assert!(message.contains("watchers"), "{message}");
                refused += 1;
            }
            Err(e) => panic!("watch neither confirmed nor refused: {e}"),
        }
    }
    assert_eq!((held.len(), refused), (budget, 10));
    // Checks are a separate budget: all watchers held, they are answered.
    checks_from_the_daemon(&agent, 0);

    // The watchers go (no state event follows): their slots come back without one.
    drop(held);
    let mut again = Vec::new();
    wait_for("the departed watchers' slots to come back", T, || {
        while again.len() < budget {
            match Watch::open(&path, T) {
                Ok(w) => again.push(w),
                Err(ClientError::Refused(_)) => return false,
                Err(e) => panic!("{e}"),
            }
        }
        true
    })
    .unwrap();
    checks_from_the_daemon(&agent, 1);
}
