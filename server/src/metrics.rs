//! Counters and gauges for `GET /metrics` (Prometheus text format).
//!
//! Plain atomics, updated where things happen and read only when scraped:
//! no locks on any hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use gitmind_schema::{Codec, ErrorCode, PerCodec};

/// Upper bounds of the fan-out latency histogram buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Per codec counters.
#[derive(Debug, Default)]
pub struct CodecCounters {
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Bytes received (frame payloads).
    pub bytes_in: AtomicU64,
    /// Messages sent.
    pub messages_out: AtomicU64,
    /// Bytes sent (frame payloads).
    pub bytes_out: AtomicU64,
}

/// Per shard gauges.
#[derive(Debug, Default)]
pub struct ShardGauges {
    /// Open sessions.
    pub connections: AtomicI64,
    /// Bytes waiting in the sessions' outgoing queues.
    pub queued_bytes: AtomicI64,
}

/// One session counted in its shard's `connections` gauge; dropping it
/// (however the session ends) counts it out.
#[derive(Debug)]
pub struct OpenSession {
    metrics: Arc<Metrics>,
    shard: usize,
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.metrics.shards[self.shard]
            .connections
            .fetch_sub(1, Relaxed);
    }
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    /// One entry per shard.
    pub shards: Vec<ShardGauges>,
    /// Traffic per codec.
    pub codecs: PerCodec<CodecCounters>,
    /// `system.error`s sent, by code (index: position in `ErrorCode::ALL`).
    pub errors: [AtomicU64; 7],
    /// Sessions closed as slow consumers (4008).
    pub slow_consumer_closes: AtomicU64,
    /// Sessions closed for too many errors (1008).
    pub policy_closes: AtomicU64,
    /// Sessions closed for silence past the heartbeat timeout.
    pub heartbeat_timeouts: AtomicU64,
    /// Handshakes refused, any status.
    pub handshakes_refused: AtomicU64,
    /// TLS handshakes that failed or timed out (plain HTTP on the TLS port
    /// included).
    pub tls_handshake_failures: AtomicU64,
    /// Certificate reloads that failed (the previous certificate stayed).
    pub tls_reload_failures: AtomicU64,
    /// Sessions opened since the start.
    pub sessions_opened: AtomicU64,
    /// Times the allocator was asked to give freed memory back (the trim thread).
    pub memory_trims: AtomicU64,
    /// Changes committed and released.
    pub changes_committed: AtomicU64,
    /// Committed groups looked at for regions and queries (graphs with a
    /// subscribed session).
    pub region_groups: AtomicU64,
    /// Region cuts of events encoded (once per distinct cut of a change,
    /// shared by every session whose regions cut it so).
    pub region_cuts_encoded: AtomicU64,
    /// Mutations rolled back.
    pub rollbacks: AtomicU64,
    /// Commits that failed.
    pub commit_failures: AtomicU64,
    /// Graphs held open by the hub, those being loaded included: what
    /// `max_open_graphs` bounds.
    pub graphs_open: AtomicI64,
    /// Graphs read back from git on demand.
    pub graph_loads: AtomicU64,
    /// Graphs released: idle long enough, or giving way under the cap.
    pub graph_unloads: AtomicU64,
    /// Sessions refused because no more graphs could be opened (1013).
    pub graph_refusals: AtomicU64,
    /// Fan-out latency: from the hub releasing a commit to a shard queueing it.
    fanout: Histogram,
    /// The cluster's, shown only with `--cluster`.
    pub cluster: ClusterMetrics,
}

/// A latency histogram, in buckets from 50 µs to 250 ms.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Its Prometheus exposition as `gitmind_{name}`.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(
            out,
            "# HELP gitmind_{name} {help}\n# TYPE gitmind_{name} histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                out,
                "gitmind_{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "gitmind_{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "gitmind_{name}_sum {sum}");
        let _ = writeln!(out, "gitmind_{name}_count {count}");
    }
}

/// What a node of a cluster reports (docs/scale-out.md).
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Whether this server is in a cluster: nothing below is shown if not.
    pub enabled: AtomicBool,
    /// Graphs whose lease this node holds.
    pub graphs_owned: AtomicI64,
    /// Graphs this node follows.
    pub graphs_followed: AtomicI64,
    /// Leases taken over from a node that stopped renewing them.
    pub takeovers: AtomicU64,
    /// Leases this node could not renew.
    pub leases_lost: AtomicU64,
    /// Mutations forwarded to another node's owner.
    pub forwarded: AtomicU64,
    /// From forwarding a mutation to its outcome coming back.
    pub forward_latency: Histogram,
    /// Groups the followed streams still hold for this node (JetStream's
    /// count of pending messages, summed over the graphs followed).
    pub stream_pending: AtomicI64,
    /// From the owner's publish (JetStream's timestamp) to this node
    /// taking the group.
    pub stream_lag: Histogram,
}

impl ClusterMetrics {
    fn render(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        for (name, help, kind, value) in [
            (
                "graphs_owned",
                "Graphs whose lease this node holds.",
                "gauge",
                self.graphs_owned.load(Relaxed),
            ),
            (
                "graphs_followed",
                "Graphs this node follows.",
                "gauge",
                self.graphs_followed.load(Relaxed),
            ),
            (
                "stream_pending",
                "Groups the followed streams still hold for this node.",
                "gauge",
                self.stream_pending.load(Relaxed),
            ),
            (
                "takeovers_total",
                "Leases taken over from a node that stopped renewing them.",
                "counter",
                i64::try_from(self.takeovers.load(Relaxed)).unwrap_or(i64::MAX),
            ),
            (
                "leases_lost_total",
                "Leases this node could not renew.",
                "counter",
                i64::try_from(self.leases_lost.load(Relaxed)).unwrap_or(i64::MAX),
            ),
            (
                "forwarded_total",
                "Mutations forwarded to another node's owner.",
                "counter",
                i64::try_from(self.forwarded.load(Relaxed)).unwrap_or(i64::MAX),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP gitmind_cluster_{name} {help}\n# TYPE gitmind_cluster_{name} {kind}\ngitmind_cluster_{name} {value}"
            );
        }
        self.forward_latency.render(
            out,
            "cluster_forward_latency_seconds",
            "From forwarding a mutation to the owner to its outcome coming back.",
        );
        self.stream_lag.render(
            out,
            "cluster_stream_lag_seconds",
            "From the owner publishing a group to this node taking it.",
        );
    }
}

impl Metrics {
    /// Metrics for this many shards.
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards).map(|_| ShardGauges::default()).collect(),
            codecs: PerCodec::default(),
            errors: Default::default(),
            slow_consumer_closes: AtomicU64::new(0),
            policy_closes: AtomicU64::new(0),
            heartbeat_timeouts: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            tls_reload_failures: AtomicU64::new(0),
            sessions_opened: AtomicU64::new(0),
            memory_trims: AtomicU64::new(0),
            changes_committed: AtomicU64::new(0),
            region_groups: AtomicU64::new(0),
            region_cuts_encoded: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            graphs_open: AtomicI64::new(0),
            graph_loads: AtomicU64::new(0),
            graph_unloads: AtomicU64::new(0),
            graph_refusals: AtomicU64::new(0),
            fanout: Histogram::default(),
            cluster: ClusterMetrics::default(),
        }
    }

    /// The counters of one codec.
    pub fn codec(&self, codec: Codec) -> &CodecCounters {
        &self.codecs[codec]
    }

    /// Counts a `system.error` sent.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Records one fan-out latency.
    pub fn fanout_latency(&self, latency: Duration) {
        self.fanout.record(latency);
    }

    /// Open sessions over all shards.
    pub fn connections(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.connections.load(Relaxed))
            .sum()
    }

    /// Counts a session open on `shard` until the returned guard is dropped.
    pub fn session_opened(self: &Arc<Self>, shard: usize) -> OpenSession {
        self.shards[shard].connections.fetch_add(1, Relaxed);
        self.sessions_opened.fetch_add(1, Relaxed);
        OpenSession {
            metrics: self.clone(),
            shard,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, i128)>| {
            let _ = writeln!(
                out,
                "# HELP gitmind_{name} {help}\n# TYPE gitmind_{name} {kind}"
            );
            for (labels, value) in rows {
                let _ = writeln!(out, "gitmind_{name}{labels} {value}");
            }
        };
        let per_shard = |f: &dyn Fn(&ShardGauges) -> i64| {
            self.shards
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("{{shard=\"{i}\"}}"), i128::from(f(s))))
                .collect::<Vec<_>>()
        };
        gauge(
            "connections",
            "Open WebSocket sessions.",
            "gauge",
            per_shard(&|s| s.connections.load(Relaxed)),
        );
        gauge(
            "queued_bytes",
            "Bytes waiting in outgoing session queues.",
            "gauge",
            per_shard(&|s| s.queued_bytes.load(Relaxed)),
        );
        gauge(
            "graphs_open",
            "Graphs held open, those loading included.",
            "gauge",
            vec![(String::new(), i128::from(self.graphs_open.load(Relaxed)))],
        );
        for (name, help, pick) in [
            ("messages_in_total", "Messages received.", 0),
            ("bytes_in_total", "Frame bytes received.", 1),
            ("messages_out_total", "Messages sent.", 2),
            ("bytes_out_total", "Frame bytes sent.", 3),
        ] {
            let rows = [Codec::Json, Codec::Binary]
                .iter()
                .map(|&codec| {
                    let c = &self.codecs[codec];
                    let v = [&c.messages_in, &c.bytes_in, &c.messages_out, &c.bytes_out][pick]
                        .load(Relaxed);
                    (format!("{{codec=\"{codec}\"}}"), i128::from(v))
                })
                .collect();
            gauge(name, help, "counter", rows);
        }
        let errors = ErrorCode::ALL
            .iter()
            .zip(&self.errors)
            .map(|(code, n)| {
                (
                    format!("{{code=\"{}\"}}", code.name()),
                    i128::from(n.load(Relaxed)),
                )
            })
            .collect();
        gauge(
            "errors_total",
            "system.error messages sent, by code.",
            "counter",
            errors,
        );
        for (name, help, v) in [
            (
                "slow_consumer_closes_total",
                "Sessions closed as slow consumers (4008).",
                &self.slow_consumer_closes,
            ),
            (
                "policy_closes_total",
                "Sessions closed for too many errors (1008).",
                &self.policy_closes,
            ),
            (
                "heartbeat_timeouts_total",
                "Sessions closed for silence.",
                &self.heartbeat_timeouts,
            ),
            (
                "handshakes_refused_total",
                "Handshakes refused.",
                &self.handshakes_refused,
            ),
            (
                "tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                &self.tls_handshake_failures,
            ),
            (
                "tls_reload_failures_total",
                "TLS certificate reloads that failed; the previous certificate stayed.",
                &self.tls_reload_failures,
            ),
            (
                "sessions_opened_total",
                "WebSocket sessions opened.",
                &self.sessions_opened,
            ),
            (
                "memory_trims_total",
                "Times freed memory was given back to the system after arrivals or departures.",
                &self.memory_trims,
            ),
            (
                "changes_committed_total",
                "Changes committed to git and released.",
                &self.changes_committed,
            ),
            (
                "region_groups_total",
                "Committed groups looked at for regions and live queries.",
                &self.region_groups,
            ),
            (
                "region_cuts_encoded_total",
                "Region cuts of events encoded, once per distinct cut of a change.",
                &self.region_cuts_encoded,
            ),
            ("rollbacks_total", "Mutations rolled back.", &self.rollbacks),
            (
                "commit_failures_total",
                "Git commits that failed.",
                &self.commit_failures,
            ),
            (
                "graph_loads_total",
                "Graphs read back from git on demand.",
                &self.graph_loads,
            ),
            (
                "graph_unloads_total",
                "Graphs released from memory.",
                &self.graph_unloads,
            ),
            (
                "graph_refusals_total",
                "Sessions refused: no more graphs could be opened (1013).",
                &self.graph_refusals,
            ),
        ] {
            gauge(
                name,
                help,
                "counter",
                vec![(String::new(), i128::from(v.load(Relaxed)))],
            );
        }
        self.fanout.render(
            &mut out,
            "fanout_latency_seconds",
            "From commit release to queueing at each shard.",
        );
        self.cluster.render(&mut out);
        out
    }
}
