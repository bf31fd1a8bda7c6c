//! Server configuration: every knob with a default that needs no thought,
//! so `gitmind-server` with no arguments serves on 127.0.0.1:7432 with its
//! data in `./gitmind-data`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use gitmind_schema::Limits;
use serde::Deserialize;

use crate::auth::AuthConfig;

/// The default port (docs/protocol.md section 1).
pub const DEFAULT_PORT: u16 = 7432;

/// How connections are spread over shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptMode {
    /// One acceptor hands each connection to the shard with the fewest.
    Handoff,
    /// Every shard accepts on its own socket (SO_REUSEPORT); the kernel
    /// spreads connections by hashing their addresses.
    Reuseport,
}

/// What the shards do their socket I/O with (docs/architecture.md,
/// "I/O backends").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IoBackend {
    /// Readiness (epoll) through tokio's reactor.
    #[default]
    Epoll,
    /// Completions (io_uring) through tokio-uring, for plain TCP; TLS
    /// connections stay on epoll. Needs the `uring` cargo feature (Linux).
    Uring,
}

/// Everything the server can be told. Deserializes from a TOML file whose
/// keys are the field names; missing keys keep their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub addr: IpAddr,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Serve non-loopback addresses although authentication is off.
    pub insecure_open: bool,
    /// Authentication and the origins and hosts allowed (docs/security.md);
    /// the `[auth]` table of the TOML file.
    pub auth: AuthConfig,
    /// Number of shards (one pinned thread each); 0 means one per core.
    pub shards: usize,
    /// How connections reach shards.
    pub accept: AcceptMode,
    /// What the shards do their socket I/O with.
    pub io: IoBackend,
    /// Where the git repository lives.
    pub data_dir: PathBuf,
    /// fsync each commit before confirming it.
    pub fsync: bool,
    /// Listen backlog: bursts of connects beyond it wait for SYN retries.
    pub backlog: u32,
    /// Connections refused (429) beyond this many, those still in their
    /// handshake included.
    pub max_connections: usize,
    /// Connections from one client address refused (429) beyond this many.
    pub max_connections_per_ip: usize,
    /// Connections of one user refused (429) beyond this many.
    pub max_connections_per_user: usize,
    /// Handshakes per second of one user (a burst of as many is allowed);
    /// beyond it, 429 with `Retry-After`.
    pub handshake_rate_per_user: u32,
    /// Mutations per second of one user over all its sessions (a burst of
    /// as many is allowed); beyond it, `update.rollback` `rate_limited`.
    pub mutation_rate_per_user: u32,
    /// Presence, cursor and selection messages per second of one user over
    /// all its sessions, as received (before coalescing); beyond it,
    /// `system.error` `rate_limited`.
    pub ephemeral_rate_per_user: u32,
    /// Frame, envelope and nesting limits.
    pub max_frame_bytes: usize,
    /// Envelopes in one frame, ops in one batch.
    pub max_envelopes: usize,
    /// JSON nesting depth.
    pub max_json_depth: usize,
    /// A session's outgoing queue beyond this many bytes counts as slow.
    pub max_queue_bytes: usize,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_ms: u64,
    /// Extra time past two heartbeats before a silent session is closed.
    pub heartbeat_grace_ms: u64,
    /// Time allowed for a client to send its HTTP request head (with TLS,
    /// to finish its TLS handshake and send the head).
    pub handshake_timeout_ms: u64,
    /// Time allowed for sessions to close on shutdown.
    pub shutdown_timeout_ms: u64,
    /// Errors per minute before a session is closed with 1008.
    pub max_errors_per_minute: u32,
    /// After a session is closed with 1008, its user's handshakes are
    /// refused (429) for this many milliseconds.
    pub policy_close_cooldown_ms: u64,
    /// Cursor messages relayed per second per session; faster ones coalesce.
    pub cursor_rate: u32,
    /// `user.presence` and `selection.change` relayed per second per
    /// session, each; faster ones coalesce.
    pub presence_rate: u32,
    /// `gonzai.suggestion` asks answered per session per second; beyond
    /// it, `system.error` `rate_limited`.
    pub gonzai_asks_per_second: u32,
    /// Whether committed changes are weighed against each session's focus
    /// for `gonzai.discover` (`false`: Gonzai stays off the commit path).
    pub gonzai_discoveries: bool,
    /// A committed change is sent as `gonzai.discover` to each session whose
    /// focus it is more relevant to than this (0 to 1).
    pub gonzai_discover_threshold: f64,
    /// `gonzai.discover` sent per session per second, at most.
    pub gonzai_discoveries_per_second: u32,
    /// The seed of chaos's draws (`None`: from the clock).
    pub gonzai_seed: Option<u64>,
    /// Tests: a graph's Gonzai build waits this long before it starts (0).
    pub gonzai_build_delay_ms: u64,
    /// A session's `chaos.trigger` is taken at most once per this many
    /// milliseconds; sooner, `system.error` `rate_limited`.
    pub chaos_interval_ms: u64,
    /// Joins, leaves and presence changes of a graph go out together, as
    /// one digest per this many milliseconds.
    pub presence_tick_ms: u64,
    /// Mutations of one session sent on and not yet answered; past it a
    /// mutation is rolled back `rate_limited`, so one client cannot fill the
    /// hub's queue that every session shares.
    pub max_mutations_in_flight: usize,
    /// Graphs held open at once (each an owner with its replay window).
    /// A session asking for one more first makes idle graphs give way
    /// (the oldest first); with none idle it is refused with 1013.
    pub max_open_graphs: usize,
    /// A graph with no session and nothing waiting for git is unloaded
    /// after this many milliseconds; it loads again when asked for.
    pub graph_idle_unload_ms: u64,
    /// Edge types beyond the protocol's twelve.
    pub extra_edge_types: Vec<String>,
    /// Changes kept for resume, at least.
    pub replay_changes: usize,
    /// Milliseconds of changes kept for resume, at least.
    pub replay_ms: u64,
    /// The WebSocket layer's own read buffer per connection, held for the
    /// connection's life (memory per idle client). 0: none; the stream
    /// then reads up to 4 KiB per system call and holds what is left only
    /// until it is taken (`tls::Stream`).
    pub read_buffer_bytes: usize,
    /// `--cluster`: the NATS server (with JetStream) of a cluster of servers
    /// sharing the graphs (docs/scale-out.md); `None`, the default: this
    /// server alone, no NATS.
    pub cluster: Option<String>,
    /// `--node`: this server's name in the cluster (letters, digits, `-`,
    /// `_`), unique among its nodes.
    pub node: Option<String>,
    /// TLS certificate chain (PEM, the server's certificate first). With
    /// [`Config::tls_key`], the port speaks only TLS (`wss://`, `https://`).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1), with [`Config::tls_cert`].
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Config {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            insecure_open: false,
            auth: AuthConfig::default(),
            shards: 0,
            accept: AcceptMode::Handoff,
            io: IoBackend::default(),
            data_dir: PathBuf::from("gitmind-data"),
            fsync: true,
            backlog: 4096,
            max_connections: 100_000,
            max_connections_per_ip: 1024,
            max_connections_per_user: 256,
            handshake_rate_per_user: 50,
            mutation_rate_per_user: 2000,
            ephemeral_rate_per_user: 200,
            max_frame_bytes: limits.max_frame_bytes,
            max_envelopes: limits.max_envelopes,
            max_json_depth: limits.max_depth,
            max_queue_bytes: 8 << 20,
            heartbeat_ms: 25_000,
            heartbeat_grace_ms: 5_000,
            handshake_timeout_ms: 10_000,
            shutdown_timeout_ms: 5_000,
            max_errors_per_minute: 100,
            policy_close_cooldown_ms: 10_000,
            cursor_rate: 30,
            presence_rate: 10,
            gonzai_asks_per_second: 20,
            gonzai_discoveries: true,
            gonzai_discover_threshold: 0.7,
            gonzai_discoveries_per_second: 2,
            gonzai_seed: None,
            gonzai_build_delay_ms: 0,
            chaos_interval_ms: 1000,
            presence_tick_ms: 100,
            max_mutations_in_flight: 1000,
            max_open_graphs: 10_000,
            graph_idle_unload_ms: 60_000,
            extra_edge_types: Vec::new(),
            replay_changes: 100_000,
            replay_ms: 600_000,
            read_buffer_bytes: 0,
            tls_cert: None,
            tls_key: None,
            cluster: None,
            node: None,
        }
    }
}

impl Config {
    /// The socket address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The decoder limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_envelopes: self.max_envelopes,
            max_depth: self.max_json_depth,
        }
    }

    /// Shards to run: the configured number, or one per core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// How long a graph stays open with no session and nothing pending.
    pub fn graph_idle_unload(&self) -> Duration {
        Duration::from_millis(self.graph_idle_unload_ms)
    }

    /// How long a session may stay silent: twice the heartbeat plus grace.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.saturating_mul(2) + self.heartbeat_grace_ms)
    }

    /// Checks the configuration as a whole.
    ///
    /// # Errors
    /// A sentence saying what is wrong and how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        if !self.addr.is_loopback() && !self.insecure_open && !self.auth.enabled() {
            return Err(format!(
                "refusing to serve {} without authentication: anyone who can reach it could change \
                 every graph; bind a loopback address or pass --insecure-open",
                self.addr
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(
                "TLS needs both a certificate and a key: pass --tls-cert and --tls-key \
                 together (or neither, for plain ws://)"
                    .into(),
            );
        }
        if let Some(url) = &self.cluster {
            let node = self.node.as_deref().unwrap_or_default();
            if node.is_empty()
                || !node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "--cluster {url} needs --node NAME: this server's name in the cluster \
                     (letters, digits, '-', '_')"
                ));
            }
        }
        if self.io == IoBackend::Uring && !cfg!(all(feature = "uring", target_os = "linux")) {
            return Err(
                "--io uring needs a server built with the `uring` cargo feature on Linux \
                 (cargo build --release -p gitmind-server --features uring); or use --io epoll"
                    .into(),
            );
        }
        if self.max_frame_bytes < 1024 || self.max_envelopes == 0 || self.max_json_depth < 4 {
            return Err("limits are too small to carry a single message".into());
        }
        if self.heartbeat_ms == 0 || self.presence_tick_ms == 0 {
            return Err("heartbeat_ms and presence_tick_ms must be positive".into());
        }
        if self.max_mutations_in_flight == 0
            || self.max_connections_per_ip == 0
            || self.max_connections_per_user == 0
            || self.max_open_graphs == 0
        {
            return Err(
                "max_mutations_in_flight, max_open_graphs and the connection caps must be positive"
                    .into(),
            );
        }
        if self.handshake_rate_per_user == 0
            || self.mutation_rate_per_user == 0
            || self.ephemeral_rate_per_user == 0
            || self.gonzai_asks_per_second == 0
            || self.gonzai_discoveries_per_second == 0
        {
            return Err("the rates per user must be positive".into());
        }
        Ok(())
    }
}
