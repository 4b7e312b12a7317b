//! Sampling `/proc`: CPU time of this process's threads by name and of another process (the
//! broker), resident memory, and waiting for the broker to go idle between phases.

use std::path::Path;
use std::time::{Duration, Instant};

use super::PROGRESS_EVERY;
use crate::mosquitto::Mosquitto;

/// Linux `USER_HZ`: the unit of utime/stime in `/proc/*/stat`.
pub(super) const CLOCK_TICKS: f64 = 100.0;

/// CPU time of this process's threads whose name starts with `prefix`.
pub(super) fn threads_cpu(prefix: &str) -> Duration {
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            if let Some((comm, t)) = read_stat(&task.path().join("stat")) {
                if comm.starts_with(prefix) {
                    ticks += t;
                }
            }
        }
    }
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS)
}

/// CPU time of process `pid`.
pub(super) fn process_cpu(pid: Option<u32>) -> Duration {
    let ticks = pid
        .and_then(|p| read_stat(Path::new(&format!("/proc/{p}/stat"))))
        .map_or(0, |(_, t)| t);
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS)
}

/// Waits until the broker is idle (under 10 ms of CPU in 250 ms, at most 60 s): the clients
/// of a phase that just ended are still being cleaned up there (mosquitto removes each from
/// every subscriber list it was on), and that work must not be billed to the next phase.
pub(super) fn settle(broker: &Mosquitto) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = process_cpu(broker.pid());
    while Instant::now() < deadline {
        std::thread::sleep(PROGRESS_EVERY);
        let now = process_cpu(broker.pid());
        if now.saturating_sub(last) < Duration::from_millis(10) {
            return;
        }
        last = now;
    }
}

/// (comm, utime + stime) from a `/proc/.../stat` file.
pub(super) fn read_stat(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm start at field 3 (state); utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// VmRSS of `/proc/<pid>/status` ("self" for this process), bytes.
pub fn vm_rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
