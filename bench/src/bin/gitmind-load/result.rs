//! The JSON result every scenario writes (beside its Markdown report).

use gitmind_bench::report::Percentiles;
use serde::Serialize;

/// The JSON result every scenario writes.
#[derive(Debug, Default, Serialize)]
pub struct LoadResult {
    /// The scenario's name.
    pub scenario: String,
    /// `bin`, `json` or `mixed`.
    pub codec: String,
    /// Write -> delivery, microseconds.
    pub latency_us: Percentiles,
    /// Write -> confirmation, microseconds.
    pub confirm_latency_us: Percentiles,
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries received.
    pub received: u64,
    /// Deliveries that never came.
    pub lost: u64,
    /// Deliveries that came twice or more.
    pub duplicates: u64,
    /// Deliveries per second over all subscribers.
    pub deliveries_per_sec: f64,
    /// Updates sent per second over all writers.
    pub updates_per_sec: f64,
    /// The server's CPU and memory.
    pub server: ServerStats,
    /// This program's CPU, percent of one core.
    pub generator_cpu_percent: f64,
    /// True when the generator, not the server, bounded the figures.
    pub generator_saturated: bool,
    /// Scenario-specific figures.
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// What the server used.
#[derive(Debug, Default, Serialize)]
pub struct ServerStats {
    /// Percent of one core.
    pub cpu_percent: f64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Resident memory divided by the connections held.
    pub rss_per_connection_bytes: f64,
}
