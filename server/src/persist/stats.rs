//! Counters of the persistence thread, read by the server's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds, in microseconds, of the commit duration histogram's
/// buckets (Prometheus `le`); a last bucket counts everything.
pub const DURATION_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

/// Live counters, updated by the persistence thread with relaxed atomics.
#[derive(Debug, Default)]
pub struct PersistStats {
    commits: AtomicU64,
    changes: AtomicU64,
    failures: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
    rounds: AtomicU64,
    duration_us_sum: AtomicU64,
    buckets: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    packs_merged: AtomicU64,
    queued_changes: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Commits written (one per graph per round, more when a round is split).
    pub commits: u64,
    /// Changes committed.
    pub changes: u64,
    /// Groups that failed to commit (I/O errors, refused ref updates).
    pub failures: u64,
    /// Groups refused before any I/O: queue full, out of order, bad name.
    pub refused: u64,
    /// Bytes of pack and index written.
    pub bytes: u64,
    /// Write rounds timed (each writes one pack and moves refs).
    pub rounds: u64,
    /// Sum of round durations, microseconds.
    pub duration_us_sum: u64,
    /// Rounds per duration bucket (not cumulative); the last is `+Inf`.
    pub buckets: Vec<u64>,
    /// Pack consolidations done.
    pub packs_merged: u64,
    /// Changes submitted and not yet taken by the thread.
    pub queued_changes: u64,
}

impl PersistStats {
    /// Counts a write round and its duration.
    pub(crate) fn round(&self, micros: u64) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.duration_us_sum.fetch_add(micros, Ordering::Relaxed);
        let i = DURATION_BUCKETS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(DURATION_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, commits: u64, changes: u64) {
        self.commits.fetch_add(commits, Ordering::Relaxed);
        self.changes.fetch_add(changes, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wrote(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn merged(&self) {
        self.packs_merged.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn queued(&self) -> &AtomicU64 {
        &self.queued_changes
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            commits: get(&self.commits),
            changes: get(&self.changes),
            failures: get(&self.failures),
            refused: get(&self.refused),
            bytes: get(&self.bytes),
            rounds: get(&self.rounds),
            duration_us_sum: get(&self.duration_us_sum),
            buckets: self.buckets.iter().map(get).collect(),
            packs_merged: get(&self.packs_merged),
            queued_changes: get(&self.queued_changes),
        }
    }
}

impl StatsSnapshot {
    /// The counters in Prometheus text format, names prefixed `gitmind_persist_`.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (name, help, v) in [
            ("commits_total", "Git commits written.", self.commits),
            ("changes_total", "Changes committed.", self.changes),
            (
                "failures_total",
                "Groups whose commit failed.",
                self.failures,
            ),
            (
                "refused_total",
                "Groups refused before writing.",
                self.refused,
            ),
            ("bytes_total", "Pack and index bytes written.", self.bytes),
            (
                "packs_merged_total",
                "Pack consolidations.",
                self.packs_merged,
            ),
        ] {
            let _ = writeln!(s, "# HELP gitmind_persist_{name} {help}\n# TYPE gitmind_persist_{name} counter\ngitmind_persist_{name} {v}");
        }
        let _ = writeln!(s, "# HELP gitmind_persist_queued_changes Changes waiting for the persistence thread.\n# TYPE gitmind_persist_queued_changes gauge\ngitmind_persist_queued_changes {}", self.queued_changes);
        let _ = writeln!(s, "# HELP gitmind_persist_round_seconds Time to write one group commit round (pack, fsync, refs).\n# TYPE gitmind_persist_round_seconds histogram");
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = DURATION_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(
                s,
                "gitmind_persist_round_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            s,
            "gitmind_persist_round_seconds_sum {}",
            self.duration_us_sum as f64 / 1e6
        );
        let _ = writeln!(s, "gitmind_persist_round_seconds_count {}", self.rounds);
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_text() {
        let s = PersistStats::default();
        s.round(100);
        s.round(3_000);
        s.round(10_000_000);
        let snap = s.snapshot();
        assert_eq!(snap.buckets[0], 1);
        assert_eq!(snap.buckets[4], 1);
        assert_eq!(snap.buckets[DURATION_BUCKETS_US.len()], 1);
        let text = snap.to_prometheus();
        assert!(
            text.contains("gitmind_persist_round_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("gitmind_persist_round_seconds_count 3"));
    }
}
