//! Memory and CPU of a process, from `/proc/PID`, once or as a [`Trace`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

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
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The CPU time (user + system) in a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name, which may contain spaces: ") state ppid ..."
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The CPU time each thread of a process has used, by thread name
/// (threads of one name added up): which thread is busy, not only how
/// busy the process is.
#[derive(Debug, Clone)]
pub struct Threads {
    at: Instant,
    cpu_seconds: BTreeMap<String, f64>,
}

impl Threads {
    /// Reads the threads of `pid` now (none if it is gone).
    pub fn read(pid: u32) -> Self {
        let mut cpu_seconds = BTreeMap::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let path = task.path();
            let read = |file: &str| std::fs::read_to_string(path.join(file)).ok();
            let (Some(name), Some(stat)) = (read("comm"), read("stat")) else {
                continue;
            };
            if let Some(seconds) = stat_cpu_seconds(&stat) {
                *cpu_seconds.entry(name.trim().to_owned()).or_default() += seconds;
            }
        }
        Threads {
            at: Instant::now(),
            cpu_seconds,
        }
    }

    /// Percent of one core each thread name used since `earlier`, busiest
    /// first.
    pub fn since(&self, earlier: &Threads) -> Vec<(String, f64)> {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let mut busy: Vec<(String, f64)> = self
            .cpu_seconds
            .iter()
            .map(|(name, now)| {
                let before = earlier.cpu_seconds.get(name).copied().unwrap_or(0.0);
                (name.clone(), 100.0 * (now - before).max(0.0) / seconds)
            })
            .collect();
        busy.sort_by(|a, b| b.1.total_cmp(&a.1));
        busy
    }
}

/// The whole machine's CPU time from `/proc/stat`, over all cores: what
/// every process used, and what the hypervisor took (steal). On a shared
/// machine, what the processes measured did not use was someone else's.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    at: Instant,
    busy_seconds: f64,
    steal_seconds: f64,
}

impl MachineCpu {
    /// Reads it now.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy_seconds, steal_seconds) = machine_cpu_seconds(stat.lines().next()?)?;
        Some(MachineCpu {
            at: Instant::now(),
            busy_seconds,
            steal_seconds,
        })
    }

    /// Percent of one core busy and stolen since `earlier`.
    pub fn since(&self, earlier: &MachineCpu) -> (f64, f64) {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        (
            100.0 * (self.busy_seconds - earlier.busy_seconds) / seconds,
            100.0 * (self.steal_seconds - earlier.steal_seconds) / seconds,
        )
    }
}

/// Busy and stolen seconds from the `cpu` line of `/proc/stat`: user,
/// nice, system, irq and softirq are busy (guest time is inside user);
/// idle and iowait are not.
fn machine_cpu_seconds(line: &str) -> Option<(f64, f64)> {
    let ticks: Vec<f64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    Some((busy / TICKS_PER_SECOND, field(7) / TICKS_PER_SECOND))
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
        100.0 * self.seconds() / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// CPU seconds used since the start.
    pub fn seconds(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(self.start_cpu) - self.start_cpu
    }
}

/// One sample of a process's memory and CPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the trace started.
    pub at_secs: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// CPU time used since the process started, in seconds.
    pub cpu_seconds: f64,
}

/// A process's memory and CPU sampled at a fixed interval, to show how
/// they moved during a run (its start, peak and end), not only where they
/// ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
}

impl Trace {
    /// The last sample taken at or before `at_secs` (the first one when
    /// none was).
    pub fn at(&self, at_secs: f64) -> Option<Sample> {
        self.samples
            .iter()
            .take_while(|s| s.at_secs <= at_secs)
            .last()
            .or(self.samples.first())
            .copied()
    }

    /// The sample of the highest RSS between `from` and `to` seconds.
    pub fn peak(&self, from: f64, to: f64) -> Option<Sample> {
        self.samples
            .iter()
            .filter(|s| (from..=to).contains(&s.at_secs))
            .max_by_key(|s| s.rss_bytes)
            .copied()
    }

    /// Percent of one core used between `from` and `to` seconds (from the
    /// samples nearest to them).
    pub fn cpu_percent(&self, from: f64, to: f64) -> f64 {
        match (self.at(from), self.at(to)) {
            (Some(a), Some(b)) if b.at_secs > a.at_secs => {
                100.0 * (b.cpu_seconds - a.cpu_seconds) / (b.at_secs - a.at_secs)
            }
            _ => 0.0,
        }
    }

    /// The highest CPU use over one interval between two samples, percent
    /// of one core.
    pub fn peak_cpu_percent(&self) -> f64 {
        self.samples
            .windows(2)
            .map(|w| 100.0 * (w[1].cpu_seconds - w[0].cpu_seconds) / (w[1].at_secs - w[0].at_secs))
            .fold(0.0, f64::max)
    }
}

/// Samples `pid`'s RSS and CPU every `every` until `stop` fires (or its
/// sender is dropped), or the process is gone.
pub async fn trace(pid: u32, every: Duration, stop: tokio::sync::oneshot::Receiver<()>) -> Trace {
    let start = Instant::now();
    let mut trace = Trace::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let (Some(rss_bytes), Some(cpu_seconds)) = (rss_bytes(pid), cpu_seconds(pid)) else {
                    break;
                };
                trace.samples.push(Sample {
                    at_secs: start.elapsed().as_secs_f64(),
                    rss_bytes,
                    cpu_seconds,
                });
            }
        }
    }
    trace
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(at_secs: f64, rss_mib: u64, cpu_seconds: f64) -> Sample {
        Sample {
            at_secs,
            rss_bytes: rss_mib << 20,
            cpu_seconds,
        }
    }

    #[test]
    fn a_trace_reads_its_start_peak_end_and_cpu() {
        let trace = Trace {
            samples: vec![
                sample(0.0, 10, 1.0),
                sample(1.0, 30, 1.5),
                sample(2.0, 20, 1.6),
                sample(3.0, 25, 2.6),
            ],
        };
        assert_eq!(trace.at(0.5).unwrap().rss_bytes, 10 << 20);
        assert_eq!(trace.at(9.0).unwrap().rss_bytes, 25 << 20);
        assert_eq!(trace.peak(0.0, 3.0).unwrap().rss_bytes, 30 << 20);
        assert_eq!(trace.peak(1.5, 3.0).unwrap().rss_bytes, 25 << 20);
        assert!((trace.cpu_percent(1.0, 3.0) - 55.0).abs() < 1e-9);
        assert!((trace.peak_cpu_percent() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn machine_cpu_is_read_off_the_cpu_line() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let line = "cpu  100 20 30 5000 40 5 5 15 7 0";
        assert_eq!(machine_cpu_seconds(line), Some((1.6, 0.15)));
        assert_eq!(machine_cpu_seconds("cpu0 1 2 3"), None);
        assert!(MachineCpu::read().is_some());
    }

    #[test]
    fn the_busiest_thread_of_this_process_is_the_one_that_spins() {
        let before = Threads::read(std::process::id());
        let spinner = std::thread::Builder::new()
            .name("spinner".into())
            .spawn(|| {
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < Duration::from_millis(300) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                // Read while the thread still exists.
                Threads::read(std::process::id())
            })
            .unwrap();
        let after = spinner.join().unwrap();
        let busy = after.since(&before);
        assert_eq!(busy[0].0, "spinner", "{busy:?}");
        assert!(busy[0].1 > 10.0, "{busy:?}");
    }

    #[tokio::test]
    async fn tracing_this_process_samples_until_stopped() {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(trace(
            std::process::id(),
            Duration::from_millis(10),
            stopped,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let trace = task.await.unwrap();
        assert!(trace.samples.len() >= 3, "{} samples", trace.samples.len());
        assert!(trace.samples.iter().all(|s| s.rss_bytes > 0));
        assert!(trace
            .samples
            .windows(2)
            .all(|w| w[0].at_secs < w[1].at_secs));
    }
}
