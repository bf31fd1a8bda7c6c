//! Memory and CPU of a process, from `/proc/PID`.

use std::time::Instant;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's resident memory in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: ") state ppid ..."
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Measures a process's CPU use over an interval.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    start_cpu: f64,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid` now.
    pub fn start(pid: u32) -> Self {
        CpuMeter {
            pid,
            start_cpu: cpu_seconds(pid).unwrap_or(0.0),
            start: Instant::now(),
        }
    }

    /// Percent of one core used since the start.
    pub fn percent(&self) -> f64 {
        let used = cpu_seconds(self.pid).unwrap_or(self.start_cpu) - self.start_cpu;
        100.0 * used / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}
