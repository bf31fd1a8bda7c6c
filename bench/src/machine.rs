//! The facts of the machine a measurement ran on, for every report.

use serde::Serialize;

/// Where and when a measurement ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// CPU model name.
    pub cpu: String,
    /// The git commit of the code measured (with `-dirty` if modified).
    pub commit: String,
}

impl Machine {
    /// Reads the facts of this machine.
    pub fn describe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            memory_bytes,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
            commit: commit(),
        }
    }

    /// One line for a report.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB memory, Linux {}, commit {}",
            self.cores,
            self.cpu,
            self.memory_bytes as f64 / f64::from(1u32 << 30),
            self.kernel,
            self.commit
        )
    }
}

/// The current commit, marked dirty when the code has changes (the
/// measurements in `perf-reports/` are not code).
fn commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = run(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ":(top,exclude)perf-reports",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}
