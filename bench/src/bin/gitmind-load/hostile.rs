//! `hostile`: the honest load of `fanout` (subscribers and writers on one
//! graph, delivery latency, every confirmed update owed to every
//! subscriber) while five kinds of attacker hit the same server at once
//! (issue #13):
//!
//! 1. sync flood: sessions in the honest graph asking for `graph.sync`
//!    far faster than the server serves them;
//! 2. graph-name flood: connections to ever new graph names, each closed
//!    once its sync came, up to a bounded count;
//! 3. junk: thousands of malformed frames a second (every kind of
//!    `system.error`, a malformed mutation, a zstd bomb, frames over the
//!    limit), reconnecting whenever closed;
//! 4. slowloris: upgrade requests dribbled a byte at a time;
//! 5. presence storm: sessions in the honest graph sending cursors,
//!    selections and presence as fast as they are told.
//!
//! Each attacker counts what the server did to it; a witness session
//! counts what the presence storm became on the honest side; the server's
//! RSS and CPU are sampled every second. The report ends in one verdict per
//! target. The attackers connect from source addresses of their own
//! (127.0.B.x, one block per kind), so the server's cap per address meets
//! them and not the honest clients.
//!
//! One file per concern under `hostile/`: [`flood`] the scheduled sender
//! that three attackers share, [`frames`] what they send, [`graph_flood`],
//! [`slowloris`], [`witness`], [`tally`] the counters, [`verdict`] the
//! judging and [`markdown`] the report.

mod flood;
mod frames;
mod graph_flood;
mod markdown;
mod slowloris;
mod tally;
mod verdict;
mod witness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use gitmind_bench::conn::{self, source_addr_in};
use gitmind_bench::metrics;
use gitmind_bench::procstat::{self, CpuMeter, MachineCpu, Threads};
use gitmind_bench::report;
use gitmind_bench::server::ServerUnderTest;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clients::codec_of;
use crate::fleet::{self, drive};
use crate::result::{LoadResult, ServerStats};
use crate::Args;

use flood::Flood;
use frames::{Junk, Junkyard};
use graph_flood::GraphFlood;
use slowloris::Slowloris;
use tally::Tally;
use verdict::verdicts;

/// What `gitmind-load hostile` takes: the honest load, each attacker's
/// strength, and the bars.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Honest subscribers on the graph.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Honest writers on the graph.
    #[arg(long, default_value_t = 10)]
    writers: usize,
    /// Honest updates per second, over all writers.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Sessions in the honest graph flooding it with `graph.sync` requests.
    #[arg(long, default_value_t = 4)]
    sync_flooders: usize,
    /// Frames per second of each sync flooder, each of two `graph.sync`
    /// requests.
    #[arg(long, default_value_t = 1000.0)]
    sync_rate: f64,
    /// Tasks opening new graph names one after the other.
    #[arg(long, default_value_t = 4)]
    graph_flooders: usize,
    /// Graph names the graph flood opens at most (and again, alone, after
    /// the run, to measure the memory a name keeps).
    #[arg(long, default_value_t = 5000)]
    graph_names: usize,
    /// Connections sending junk frames. Each is closed after the error
    /// budget and spends a reconnect before its next, so a few more than
    /// the rate alone needs.
    #[arg(long, default_value_t = 8)]
    junk_connections: usize,
    /// Junk frames per second, over all junk connections.
    #[arg(long, default_value_t = 10_000.0)]
    junk_rate: f64,
    /// The kinds of junk sent, in turn (default: every kind).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Junk::CYCLE)]
    junk_kinds: Vec<Junk>,
    /// Every this many connections of a junk sender opens with a frame over
    /// the frame limit (0: never).
    #[arg(long, default_value_t = 10)]
    oversized_every: u64,
    /// Slowloris connections held at once.
    #[arg(long, default_value_t = 256)]
    slowloris: usize,
    /// Milliseconds between two bytes of a slowloris request head.
    #[arg(long, default_value_t = 1000)]
    slowloris_byte_ms: u64,
    /// Sessions in the honest graph storming it with presence.
    #[arg(long, default_value_t = 4)]
    stormers: usize,
    /// Presence messages per second of each stormer (cursor moves,
    /// selections and presence changes in turn).
    #[arg(long, default_value_t = 3000.0)]
    storm_rate: f64,
    /// The bar for the honest write -> delivery p99, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    p99_ms: f64,
    /// How far the server's RSS may grow over its level before the attack,
    /// in MiB, to count as bounded.
    #[arg(long, default_value_t = 256)]
    rss_budget_mib: u64,
}

/// The source address block (127.0.B.x) of each attacker kind; honest
/// clients are in block 0 ([`conn::source_addr`]).
mod block {
    pub const SYNC: u8 = 1;
    pub const GRAPHS: u8 = 2;
    pub const JUNK: u8 = 3;
    pub const SLOW: u8 = 4;
    pub const STORM: u8 = 5;
}

/// The user id prefix of presence stormers, which the witness looks for.
const STORMER: &str = "storm";
/// How long the server gets to settle after the attack, before memory is
/// read again.
const SETTLE: Duration = Duration::from_secs(3);
/// Flooded graph names asked for afterwards, to see if the server still
/// holds them.
const HELD_SAMPLE: usize = 20;

/// The server's `graph_idle_unload_ms` in this scenario (its one setting
/// that is not the default, 60 s): a flooded name is released this long
/// after its session left, and the run waits that long, plus a margin, to
/// see it.
pub const GRAPH_IDLE: Duration = Duration::from_secs(5);

/// The server's limits the verdicts hold it to: its defaults, which is
/// what `gitmind-load` runs it with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bad messages a session may send in a minute (`max_errors_per_minute`).
    pub errors_per_minute: u64,
    /// Time for a request head (`handshake_timeout_ms`).
    pub handshake_timeout: Duration,
    /// Cursor moves relayed per second per session (`cursor_rate`).
    pub cursor_rate: f64,
    /// Selections and presence changes relayed per second per session,
    /// each (`presence_rate`).
    pub presence_rate: f64,
    /// The frame limit (`max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// The JSON nesting limit (`max_json_depth`).
    pub max_json_depth: usize,
}

impl From<&gitmind_server::Config> for Limits {
    fn from(c: &gitmind_server::Config) -> Self {
        Limits {
            errors_per_minute: u64::from(c.max_errors_per_minute),
            handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
            cursor_rate: f64::from(c.cursor_rate),
            presence_rate: f64::from(c.presence_rate),
            max_frame_bytes: c.max_frame_bytes,
            max_json_depth: c.max_json_depth,
        }
    }
}

pub async fn run(
    args: &Args,
    server: &ServerUnderTest,
    o: &Options,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    anyhow::ensure!(
        o.writers > 0 && o.rate > 0.0,
        "the honest load needs writers and a rate"
    );
    let limits = Limits::from(&gitmind_server::Config::default());
    let mut fleet = fleet::connect(args, server.addr, o.subscribers, o.writers).await?;
    let honest = o.subscribers + o.writers;
    let witness = witness::connect(
        server.addr,
        conn::source_addr(honest),
        &fleet.graph,
        codec_of(args, honest),
    )
    .await?;
    let metrics_before = metrics::scrape(server.addr).await.unwrap_or_default();
    let runtime = fleet::dedicated_runtime("load-attackers")?;
    let (stop_trace, trace_stopped) = tokio::sync::oneshot::channel();
    let trace = tokio::spawn(procstat::trace(
        server.pid,
        Duration::from_secs(1),
        trace_stopped,
    ));
    let rss_start = procstat::rss_bytes(server.pid).unwrap_or(0);
    let threads_before = (Threads::read(server.pid), Threads::read(std::process::id()));
    let machine_before = MachineCpu::read();
    let began = Instant::now();
    let window = Duration::from_secs(args.duration);
    let until = began + window;
    let mut attack = Attack::launch(&runtime, args, server.addr, &fleet.graph, o, limits, until);
    let witnessed = runtime.spawn(witness::watch(witness, STORMER.into(), until));
    let cpu = CpuMeter::start(server.pid);
    let step = drive(&mut fleet, o.rate / o.writers as f64, window, o.subscribers).await;
    let cpu_percent = cpu.percent();
    // The attack ends at `until`; the honest deliveries drain after it.
    let drained = began.elapsed().as_secs_f64();
    let busy = Busy::new(
        Threads::read(server.pid).since(&threads_before.0),
        Threads::read(std::process::id()).since(&threads_before.1),
        machine_before.zip(MachineCpu::read()),
    );
    attack.join(until).await;
    let seen = witnessed.await.unwrap_or_default();
    tokio::time::sleep(SETTLE).await;
    let rss_settled = procstat::rss_bytes(server.pid).unwrap_or(0);
    // Released once idle for GRAPH_IDLE, counted from its session's
    // leave. Asked once: a request for a graph starts its idle time again.
    tokio::time::sleep(GRAPH_IDLE).await;
    let (held, asked) = graph_flood::still_held(server.addr, &attack.graphs, HELD_SAMPLE).await;
    // The memory one graph name keeps: the same flood again, alone.
    let alone = Arc::new(GraphFlood::new(
        format!("{}-alone", attack.graphs.prefix),
        o.graph_names,
    ));
    let alone_until = Instant::now() + window;
    let tasks: Vec<_> = (0..o.graph_flooders.max(1))
        .map(|k| {
            runtime.spawn(graph_flood::run(
                server.addr,
                block::GRAPHS,
                codec_of(args, k),
                alone_until,
                alone.clone(),
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_alone = procstat::rss_bytes(server.pid).unwrap_or(0);
    let metrics_after = metrics::scrape(server.addr).await.unwrap_or_default();
    let _ = stop_trace.send(());
    let trace = trace.await.unwrap_or_default();

    let memory = Memory {
        start: rss_start,
        peak: trace.peak(0.0, drained).map_or(rss_start, |s| s.rss_bytes),
        peak_at_secs: trace.peak(0.0, drained).map_or(0.0, |s| s.at_secs),
        end_of_attack: trace.at(window.as_secs_f64()).map_or(0, |s| s.rss_bytes),
        settled: rss_settled,
        alone_opened: alone.opened().len() as u64,
        after_alone: rss_alone,
        held,
        asked,
        cpu_percent: trace.cpu_percent(0.0, window.as_secs_f64()),
        peak_cpu_percent: trace.peak_cpu_percent(),
    };
    let reports = attack.reports(&seen);
    let verdicts = verdicts(o, limits, &step, &reports, &memory);
    let server_counters = counter_deltas(&metrics_before, &metrics_after);

    let name = args.report.as_deref().unwrap_or("load-hostile");
    if let (Some(d), Some(c)) = (&step.delivery, &step.confirm) {
        report::latency_svg(
            &report::reports_dir().join(format!("{name}.svg")),
            "honest fan-out latency under attack",
            &[("write -> delivery", d), ("write -> confirmation", c)],
        )?;
    }
    let mut result = LoadResult {
        scenario: "hostile".into(),
        latency_us: step.latency(),
        confirm_latency_us: step.confirm_latency(),
        expected: step.confirmed * o.subscribers as u64,
        received: step.received,
        lost: step.confirmed_lost(),
        duplicates: step.duplicates,
        deliveries_per_sec: step.deliveries_per_sec,
        updates_per_sec: step.sent as f64 / args.duration as f64,
        server: ServerStats {
            cpu_percent,
            rss_bytes: memory.peak,
            rss_per_connection_bytes: 0.0,
        },
        generator_saturated: step.generator_saturated(),
        ..LoadResult::default()
    };
    let details = &mut result.details;
    let mut put = |key: &str, value: serde_json::Value| {
        details.insert(key.into(), value);
    };
    put("subscribers", o.subscribers.into());
    put("writers", o.writers.into());
    put("rate_total", o.rate.into());
    put("sent", step.sent.into());
    put("confirmed", step.confirmed.into());
    put("rolled_back", step.rolled_back.into());
    put("subscribers_disconnected", step.disconnected.into());
    put("passed", verdict::all_met(&verdicts).into());
    put("verdicts", serde_json::to_value(&verdicts)?);
    put("attackers", serde_json::to_value(&reports)?);
    put("memory", serde_json::to_value(&memory)?);
    put("cpu_percent", serde_json::to_value(&busy)?);
    put(
        "slowest_delivery_by_second_us",
        serde_json::to_value(&step.slowest_by_second)?,
    );
    put("server_counters", serde_json::to_value(&server_counters)?);
    put("rss_trace", serde_json::to_value(&trace)?);
    put(
        "send_lag_us",
        serde_json::to_value(step.send_lag()).unwrap_or_default(),
    );
    let md = markdown::markdown(
        args,
        o,
        limits,
        &step,
        cpu_percent,
        &reports,
        &verdicts,
        &memory,
        &busy,
        &server_counters,
        name,
    );
    Ok(("hostile", result, md))
}

/// The attackers of one run, while they run.
struct Attack {
    sync: Arc<Tally>,
    storm: Arc<Tally>,
    junk: Arc<Tally>,
    /// Frames over the limit the junk senders sent.
    oversized: Arc<AtomicU64>,
    junk_bomb_bytes: usize,
    graphs: Arc<GraphFlood>,
    slow: Arc<Slowloris>,
    tasks: Vec<JoinHandle<()>>,
    options: Options,
    seconds: f64,
}

impl Attack {
    /// Starts every attacker on `runtime`; each stops by itself at `until`.
    fn launch(
        runtime: &tokio::runtime::Handle,
        args: &Args,
        server: SocketAddr,
        graph: &str,
        o: &Options,
        limits: Limits,
        until: Instant,
    ) -> Attack {
        let yard = Arc::new(Junkyard::new(limits.max_frame_bytes, limits.max_json_depth));
        let mut attack = Attack {
            sync: Arc::default(),
            storm: Arc::default(),
            junk: Arc::default(),
            oversized: Arc::default(),
            junk_bomb_bytes: yard.bomb_bytes(),
            graphs: Arc::new(GraphFlood::new(format!("{graph}-flood"), o.graph_names)),
            slow: Arc::default(),
            tasks: Vec::new(),
            options: o.clone(),
            seconds: until.duration_since(Instant::now()).as_secs_f64(),
        };
        let flood = |block: u8, k: usize, path: String, rate: f64| Flood {
            server,
            source: source_addr_in(block, k),
            path,
            codec: codec_of(args, k),
            rate,
            until,
        };
        for k in 0..o.sync_flooders {
            let f = flood(
                block::SYNC,
                k,
                format!("/v1/graphs/{graph}?user=syncflood{k}"),
                o.sync_rate,
            );
            attack
                .tasks
                .push(runtime.spawn(flood::run(f, attack.sync.clone(), |shot| {
                    frames::sync_request(shot.codec, shot.serial)
                })));
        }
        for k in 0..o.stormers {
            let f = flood(
                block::STORM,
                k,
                format!("/v1/graphs/{graph}?user={STORMER}{k}"),
                o.storm_rate,
            );
            attack
                .tasks
                .push(runtime.spawn(flood::run(f, attack.storm.clone(), |shot| {
                    frames::presence(shot.codec, shot.serial)
                })));
        }
        let senders = o.junk_connections.max(1) as u64;
        for k in 0..o.junk_connections {
            let f = flood(
                block::JUNK,
                k,
                format!("/v1/graphs/{graph}-junk?user=junk{k}"),
                o.junk_rate / senders as f64,
            );
            let (yard, oversized, every, kinds) = (
                yard.clone(),
                attack.oversized.clone(),
                o.oversized_every,
                o.junk_kinds.clone(),
            );
            attack.tasks.push(
                runtime.spawn(flood::run(f, attack.junk.clone(), move |shot| {
                    if every > 0 && shot.life % every == every - 1 && shot.index == 0 {
                        oversized.fetch_add(1, Relaxed);
                        return Ok(yard.oversized());
                    }
                    let Some(&junk) = kinds.get((shot.serial % kinds.len().max(1) as u64) as usize)
                    else {
                        anyhow::bail!("no kind of junk to send");
                    };
                    Ok(yard.frame(junk, shot.serial * senders + k as u64))
                })),
            );
        }
        for k in 0..o.graph_flooders {
            attack.tasks.push(runtime.spawn(graph_flood::run(
                server,
                block::GRAPHS,
                codec_of(args, k),
                until,
                attack.graphs.clone(),
            )));
        }
        let every = Duration::from_millis(o.slowloris_byte_ms.max(1));
        for k in 0..o.slowloris {
            let (slow, path) = (
                attack.slow.clone(),
                format!("/v1/graphs/{graph}-slow?user=slow{k}"),
            );
            // Spread over one byte interval, so they do not write in lockstep.
            let offset = every.mul_f64(k as f64 / o.slowloris as f64);
            attack.tasks.push(runtime.spawn(async move {
                tokio::time::sleep(offset).await;
                slowloris::run(
                    server,
                    source_addr_in(block::SLOW, k),
                    path,
                    every,
                    until,
                    slow,
                )
                .await;
            }));
        }
        attack
    }

    /// Waits for every attacker to stop (they stop at `until`; a task
    /// still running well after is abandoned).
    async fn join(&mut self, until: Instant) {
        let give_up = until + flood::CLOSE_WAIT * 4;
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(give_up, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// What each attacker sent and got.
    fn reports(&self, seen: &witness::Seen) -> Reports {
        let o = &self.options;
        Reports {
            seconds: self.seconds,
            sync_flood: Sessions {
                sessions: o.sync_flooders,
                rate_each: o.sync_rate,
                tally: self.sync.report(),
            },
            graph_flood: self.graphs.report(),
            junk: Junked {
                connections: o.junk_connections,
                kinds: o.junk_kinds.clone(),
                rate_total: o.junk_rate,
                oversized_sent: self.oversized.load(Relaxed),
                zstd_bomb_bytes: self.junk_bomb_bytes,
                tally: self.junk.report(),
            },
            slowloris: self.slow.report(),
            presence_storm: Storm {
                sessions: Sessions {
                    sessions: o.stormers,
                    rate_each: o.storm_rate,
                    tally: self.storm.report(),
                },
                relayed: seen.clone(),
            },
        }
    }
}

/// What every attacker sent and got, for the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Reports {
    /// How long they ran.
    seconds: f64,
    sync_flood: Sessions,
    graph_flood: graph_flood::GraphFloodReport,
    junk: Junked,
    slowloris: slowloris::SlowlorisReport,
    presence_storm: Storm,
}

/// Flooding sessions: how many, how fast, what they got.
#[derive(Debug, Clone, Serialize)]
struct Sessions {
    sessions: usize,
    /// Messages per second each was told to send.
    rate_each: f64,
    tally: tally::TallyReport,
}

impl Sessions {
    /// Messages per second each actually sent.
    fn sent_rate_each(&self, seconds: f64) -> f64 {
        self.tally.sent as f64 / self.sessions.max(1) as f64 / seconds.max(1e-9)
    }
}

/// The junk senders.
#[derive(Debug, Clone, Serialize)]
struct Junked {
    connections: usize,
    kinds: Vec<Junk>,
    rate_total: f64,
    oversized_sent: u64,
    zstd_bomb_bytes: usize,
    tally: tally::TallyReport,
}

/// The presence stormers and what the witness saw of them.
#[derive(Debug, Clone, Serialize)]
struct Storm {
    sessions: Sessions,
    relayed: witness::Seen,
}

/// CPU per thread name during the attack and the drain, busiest first.
#[derive(Debug, Clone, Serialize)]
struct Busy {
    server: Vec<(String, f64)>,
    generator: Vec<(String, f64)>,
    /// The whole machine: percent of one core busy, over all cores.
    machine: f64,
    /// Taken by the hypervisor (steal), percent of one core.
    stolen: f64,
    /// Busy in processes other than the server and this program.
    others: f64,
    /// The machine's cores.
    cores: usize,
}

impl Busy {
    /// The server's and the generator's threads, and the machine's CPU
    /// read before and after (`None` when `/proc/stat` could not be read).
    fn new(
        server: Vec<(String, f64)>,
        generator: Vec<(String, f64)>,
        machine: Option<(MachineCpu, MachineCpu)>,
    ) -> Self {
        let (machine, stolen) = machine.map_or((0.0, 0.0), |(before, after)| after.since(&before));
        let ours: f64 = server.iter().chain(&generator).map(|(_, p)| p).sum();
        Busy {
            server,
            generator,
            machine,
            stolen,
            others: (machine - ours).max(0.0),
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        }
    }

    /// Percent of one core the server used.
    fn server_total(&self) -> f64 {
        self.server.iter().map(|(_, p)| p).sum()
    }

    /// Percent of one core this program used.
    fn generator_total(&self) -> f64 {
        self.generator.iter().map(|(_, p)| p).sum()
    }
}

/// The server's memory around the attack.
#[derive(Debug, Clone, Serialize)]
struct Memory {
    /// RSS when the attack began (the honest clients connected).
    start: u64,
    /// The highest RSS sampled during the attack and the drain of honest
    /// deliveries after it.
    peak: u64,
    /// When, in seconds after the attack began.
    peak_at_secs: f64,
    /// RSS at the end of the attack.
    end_of_attack: u64,
    /// RSS once the server settled after it.
    settled: u64,
    /// Names opened by the graph flood run again alone after the attack.
    alone_opened: u64,
    /// RSS after that flood.
    after_alone: u64,
    /// Of `asked` graph names flooded during the attack, how many the
    /// server still held afterwards.
    held: usize,
    asked: usize,
    /// The server's CPU during the attack, percent of one core.
    cpu_percent: f64,
    /// Its highest CPU over one second.
    peak_cpu_percent: f64,
}

impl Memory {
    /// RSS kept per graph name by the lone flood, in bytes.
    fn per_graph_name(&self) -> f64 {
        (self.after_alone as f64 - self.settled as f64) / self.alone_opened.max(1) as f64
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn joined<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the server's own counters moved during the run.
fn counter_deltas(before: &[(String, f64)], after: &[(String, f64)]) -> BTreeMap<String, f64> {
    const COUNTERS: [&str; 8] = [
        "gitmind_errors_total",
        "gitmind_policy_closes_total",
        "gitmind_slow_consumer_closes_total",
        "gitmind_heartbeat_timeouts_total",
        "gitmind_handshakes_refused_total",
        "gitmind_rollbacks_total",
        "gitmind_changes_committed_total",
        "gitmind_messages_in_total",
    ];
    let before: BTreeMap<&str, f64> = before.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    after
        .iter()
        .filter(|(k, _)| {
            COUNTERS.iter().any(|c| {
                k.strip_prefix(c)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
        })
        .map(|(k, v)| {
            (
                k.clone(),
                v - before.get(k.as_str()).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Each attacker against a real server in this process, judged by the
    //! run's own verdicts; and the verdicts on figures that must fail.

    use clap::Parser as _;

    use super::verdict::{junk_verdict, slowloris_verdict, storm_verdict, sync_verdict};
    use super::*;
    use crate::Scenario;

    struct TestServer {
        server: Option<gitmind_server::Server>,
        _dir: tempfile::TempDir,
        addr: SocketAddr,
        limits: Limits,
    }

    impl TestServer {
        fn start(tweak: impl FnOnce(&mut gitmind_server::Config)) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut config = gitmind_server::Config {
                port: 0,
                shards: 2,
                fsync: false,
                data_dir: dir.path().join("data"),
                ..gitmind_server::Config::default()
            };
            tweak(&mut config);
            let limits = Limits::from(&config);
            let server = gitmind_server::Server::start(config).unwrap();
            TestServer {
                addr: server.local_addr(),
                server: Some(server),
                _dir: dir,
                limits,
            }
        }

        async fn stop(mut self) {
            let server = self.server.take().unwrap();
            tokio::task::spawn_blocking(move || server.shutdown())
                .await
                .unwrap();
        }
    }

    /// `gitmind-load hostile` with every attacker off but those `flags`
    /// turn on.
    fn args(flags: &[&str]) -> (Args, Options) {
        let attackers = [
            "--sync-flooders",
            "--graph-flooders",
            "--junk-connections",
            "--slowloris",
            "--stormers",
        ];
        let off = attackers
            .iter()
            .filter(|a| !flags.contains(a))
            .flat_map(|a| [*a, "0"]);
        let args = Args::parse_from(
            ["gitmind-load", "hostile"]
                .into_iter()
                .chain(off)
                .chain(flags.iter().copied()),
        );
        let Scenario::Hostile(options) = args.scenario.clone() else {
            panic!("not the hostile scenario");
        };
        (args, options)
    }

    /// Runs the attackers `flags` turn on against `server` for `secs`,
    /// with a witness on their graph.
    async fn attack(server: &TestServer, flags: &[&str], secs: f64) -> Reports {
        let (args, o) = args(flags);
        let graph = format!("t{}", rand::random::<u32>());
        let witness = witness::connect(server.addr, conn::source_addr(0), &graph, Codec::Json)
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let runtime = tokio::runtime::Handle::current();
        let mut attack = Attack::launch(
            &runtime,
            &args,
            server.addr,
            &graph,
            &o,
            server.limits,
            until,
        );
        let seen = tokio::spawn(witness::watch(witness, STORMER.into(), until));
        attack.join(until).await;
        attack.reports(&seen.await.unwrap())
    }

    use gitmind_bench::conn::Codec;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn junk_is_closed_within_the_error_budget_and_oversized_frames_with_1009() {
        let server = TestServer::start(|_| {});
        let r = attack(
            &server,
            &[
                "--junk-connections",
                "2",
                "--junk-rate",
                "4000",
                "--oversized-every",
                "3",
            ],
            1.5,
        )
        .await;
        let verdict = junk_verdict(&r.junk, server.limits, r.seconds);
        assert!(verdict.pass, "{verdict:?}");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_flood_gets_one_sync_at_a_time_and_rate_limited_for_the_rest() {
        let server = TestServer::start(|_| {});
        let r = attack(
            &server,
            &["--sync-flooders", "2", "--sync-rate", "500"],
            1.5,
        )
        .await;
        let verdict = sync_verdict(&r.sync_flood, r.seconds);
        assert!(verdict.pass, "{verdict:?}");
        assert!(r.sync_flood.tally.syncs > 0, "{verdict:?}");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_presence_storm_is_relayed_no_faster_than_the_session_limits() {
        let server = TestServer::start(|_| {});
        let r = attack(&server, &["--stormers", "2", "--storm-rate", "600"], 2.0).await;
        let verdict = storm_verdict(&r.presence_storm, server.limits, r.seconds);
        assert!(verdict.pass, "{verdict:?}");
        assert_eq!(r.presence_storm.relayed.per_sender.len(), 2);
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slowloris_heads_are_cut_after_the_handshake_time() {
        let server = TestServer::start(|c| c.handshake_timeout_ms = 300);
        let r = attack(
            &server,
            &["--slowloris", "4", "--slowloris-byte-ms", "50"],
            1.5,
        )
        .await;
        let verdict = slowloris_verdict(&r.slowloris, server.limits);
        assert!(verdict.pass, "{verdict:?}");
        assert!(
            r.slowloris.lived_us.p50 >= 300_000,
            "cut before the handshake time: {verdict:?}"
        );
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_graph_flood_opens_every_name_and_they_can_be_asked_for() {
        let server = TestServer::start(|_| {});
        let (args, o) = args(&["--graph-flooders", "2", "--graph-names", "30"]);
        let until = Instant::now() + Duration::from_secs(5);
        let runtime = tokio::runtime::Handle::current();
        let mut attack =
            Attack::launch(&runtime, &args, server.addr, "g", &o, server.limits, until);
        attack.join(until).await;
        let report = attack.graphs.report();
        assert_eq!(report.opened, 30, "{report:?}");
        assert!(report.tally.refused.is_empty(), "{report:?}");
        let (_, asked) = graph_flood::still_held(server.addr, &attack.graphs, 10).await;
        assert_eq!(asked, 10);
        server.stop().await;
    }
}
