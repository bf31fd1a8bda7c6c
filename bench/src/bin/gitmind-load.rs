//! `gitmind-load`: the load generator that reproduces Gitmind live's
//! performance targets (ARCHITECTURE.md, "Measured, not assumed").
//!
//! By default it starts a fresh `gitmind-server` from the same build with
//! its own data directory and measures that process; `--server URL
//! --server-pid PID` measures one already running. Every run prints a
//! summary and writes JSON and Markdown (with SVG plots) into
//! `perf-reports/`. Latency is measured from the time a message was
//! *scheduled* to be sent, so a stall in the generator or the server cannot
//! hide (no coordinated omission).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use gitmind_bench::conn::{self, Codec, Conn};
use gitmind_bench::machine::Machine;
use gitmind_bench::procstat::{self, CpuMeter};
use gitmind_bench::report::{self, Markdown, Percentiles};
use gitmind_bench::server::ServerUnderTest;
use gitmind_schema::message::{GraphSync, NodeCreate, NodeUpdate, SystemHeartbeat};
use gitmind_schema::model::{Node, NodeSet};
use gitmind_schema::{binary, json, Body, Envelope, Limits};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for Gitmind live")]
struct Args {
    /// Codec of every connection (default: half binary, half JSON).
    #[arg(long, global = true)]
    codec: Option<Codec>,
    /// How long to measure, in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    duration: u64,
    /// Also write the JSON result here.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    /// Measure this running server (`ws://HOST:PORT`) instead of starting one.
    #[arg(long, global = true, requires = "server_pid")]
    server: Option<String>,
    /// The process id of `--server`, for its memory and CPU.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Extra arguments for the server this program starts.
    #[arg(long, global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Report file name (default: `load-SCENARIO`).
    #[arg(long, global = true)]
    report: Option<String>,
    /// Generator threads that receive (writers send on a thread of their own).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// Open N connections and hold them: memory per connection, CPU, idle bandwidth.
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connections per graph (sessions in one graph see each other's presence).
        #[arg(long, default_value_t = 100)]
        per_graph: usize,
    },
    /// W writers at R updates/s each, S subscribers; write-to-delivery latency.
    Fanout {
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Writers.
        #[arg(long, default_value_t = 10)]
        writers: usize,
        /// Updates per second per writer.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// Raise the rate step by step until p99 passes 100 ms or anything is lost.
    Ramp {
        /// Subscribers.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Writers.
        #[arg(long, default_value_t = 10)]
        writers: usize,
        /// First total rate (updates/s over all writers).
        #[arg(long, default_value_t = 500.0)]
        start: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 5)]
        step: u64,
    },
    /// All clients lose their connection at once (server restart); time to resume.
    Reconnect {
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
}

/// The JSON result every scenario writes.
#[derive(Debug, Default, Serialize)]
struct LoadResult {
    scenario: String,
    codec: String,
    latency_us: Percentiles,
    confirm_latency_us: Percentiles,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    deliveries_per_sec: f64,
    updates_per_sec: f64,
    server: ServerStats,
    generator_cpu_percent: f64,
    generator_saturated: bool,
    /// Scenario-specific figures.
    details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize)]
struct ServerStats {
    cpu_percent: f64,
    rss_bytes: u64,
    rss_per_connection_bytes: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // 10,000 connections need more than the usual 1,024 descriptors.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut server = match (&args.server, args.server_pid) {
        (Some(url), Some(pid)) => {
            let addr = url
                .trim_start_matches("ws://")
                .trim_end_matches('/')
                .parse()
                .context("--server must be ws://HOST:PORT")?;
            ServerUnderTest::attach(addr, pid)
        }
        _ => ServerUnderTest::start(&args.server_args).await?,
    };
    let machine = Machine::describe();
    let generator = CpuMeter::start(std::process::id());
    let (name, mut result, mut md) = match args.scenario.clone() {
        Scenario::Idle {
            connections,
            per_graph,
        } => idle(&args, &server, connections, per_graph).await?,
        Scenario::Fanout {
            subscribers,
            writers,
            rate,
        } => fanout(&args, &server, subscribers, writers, rate).await?,
        Scenario::Ramp {
            subscribers,
            writers,
            start,
            step,
        } => ramp(&args, &server, subscribers, writers, start, step).await?,
        Scenario::Reconnect { clients } => reconnect(&args, &mut server, clients).await?,
    };
    result.generator_cpu_percent = generator.percent();
    result.generator_saturated |= result.generator_cpu_percent > 90.0 * args.threads as f64;
    result.codec = args
        .codec
        .map_or("mixed".into(), |c| format!("{c:?}").to_lowercase());
    let mut report = Markdown::new(&format!("gitmind-load {name}"), &machine);
    report.push(&std::mem::take(&mut md));
    report.push(&format!(
        "\ngenerator CPU: {:.1}% of one core{}\n",
        result.generator_cpu_percent,
        if result.generator_saturated {
            " (SATURATED: the figures are bounded by the generator)"
        } else {
            ""
        }
    ));
    let dir = report::reports_dir();
    let file = args
        .report
        .clone()
        .unwrap_or_else(|| format!("load-{name}"));
    report.write(&dir, &file, &result, args.json.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    println!("report: {}", dir.join(format!("{file}.md")).display());
    server.stop().await;
    Ok(())
}

/// The codec of the i-th connection.
fn codec_of(args: &Args, i: usize) -> Codec {
    args.codec.unwrap_or(if i % 2 == 0 {
        Codec::Binary
    } else {
        Codec::Json
    })
}

/// Reads messages until a complete `graph.sync` (all chunks) arrived;
/// what came after it in the same frame is left for the next `recv`.
async fn read_sync(conn: &mut Conn) -> anyhow::Result<GraphSync> {
    let mut whole: Option<GraphSync> = None;
    loop {
        let Some(batch) = conn.recv().await? else {
            bail!("closed before graph.sync")
        };
        for (i, envelope) in batch.iter().enumerate() {
            let Body::GraphSync(part) = &envelope.body else {
                continue;
            };
            let part = part.clone();
            let last = part.is_last_chunk();
            match &mut whole {
                None => whole = Some(part),
                Some(w) => {
                    w.nodes
                        .get_or_insert_with(Vec::new)
                        .extend(part.nodes.unwrap_or_default());
                    w.edges
                        .get_or_insert_with(Vec::new)
                        .extend(part.edges.unwrap_or_default());
                    w.events
                        .get_or_insert_with(Vec::new)
                        .extend(part.events.unwrap_or_default());
                }
            }
            if last {
                conn.unread(&batch[i + 1..]);
                return whole.context("no sync");
            }
        }
    }
}

async fn idle(
    args: &Args,
    server: &ServerUnderTest,
    connections: usize,
    per_graph: usize,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let disconnects = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(connections);
    let tenth = (connections / 10).max(1);
    let mut rss_at_tenth = 0;
    let opened = Instant::now();
    for i in 0..connections {
        if i == tenth {
            wait_all_ready(&limit, 256).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_at_tenth = procstat::rss_bytes(server.pid).unwrap_or(0);
        }
        let permit = limit.clone().acquire_owned().await?;
        let (stop, received, disconnects, addr) = (
            stop.clone(),
            received.clone(),
            disconnects.clone(),
            server.addr,
        );
        let codec = codec_of(args, i);
        let path = format!("/v1/graphs/idle-{}?user=idle{i}", i / per_graph.max(1));
        tasks.push(tokio::spawn(async move {
            let mut conn = match Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await
            {
                Ok(conn) => conn,
                Err(e) => {
                    drop(permit);
                    return Err(e);
                }
            };
            let sync = read_sync(&mut conn).await;
            drop(permit);
            sync?;
            let mut counted = conn.bytes_in;
            while !stop.load(Relaxed) {
                let frame = tokio::time::timeout(Duration::from_millis(500), conn.recv()).await;
                received.fetch_add(conn.bytes_in - counted, Relaxed);
                counted = conn.bytes_in;
                match frame {
                    Err(_) => {}
                    Ok(Ok(Some(batch))) => {
                        if batch
                            .iter()
                            .any(|e| matches!(e.body, Body::SystemHeartbeat(_)))
                        {
                            let beat = Envelope::new(
                                "hb",
                                Body::SystemHeartbeat(SystemHeartbeat::default()),
                            );
                            conn.send(&beat).await?;
                        }
                    }
                    Ok(_) => {
                        disconnects.fetch_add(1, Relaxed);
                        return Ok(());
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    wait_all_ready(&limit, 256).await;
    let connect_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let spread = gitmind_bench::metrics::scrape(server.addr)
        .await
        .map(|m| gitmind_bench::metrics::per_shard(&m, "gitmind_connections"))
        .unwrap_or_default();
    let cpu = CpuMeter::start(server.pid);
    let hold = Instant::now();
    let bytes_before = received.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let cpu_percent = cpu.percent();
    let held = hold.elapsed().as_secs_f64();
    let bytes_held = received.load(Relaxed) - bytes_before;
    stop.store(true, Relaxed);
    let mut failed = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let per_connection =
        (rss.saturating_sub(rss_at_tenth)) as f64 / (connections - tenth).max(1) as f64;
    let bytes_per_client_sec = bytes_held as f64 / connections as f64 / held;
    let mut result = LoadResult {
        scenario: "idle".into(),
        server: ServerStats {
            cpu_percent,
            rss_bytes: rss,
            rss_per_connection_bytes: per_connection,
        },
        ..LoadResult::default()
    };
    let details = &mut result.details;
    details.insert("connections".into(), connections.into());
    details.insert("connections_failed".into(), failed.into());
    details.insert("disconnects".into(), disconnects.load(Relaxed).into());
    details.insert(
        "bytes_per_idle_client_per_sec".into(),
        bytes_per_client_sec.into(),
    );
    details.insert("connect_seconds".into(), connect_secs.into());
    details.insert("per_graph".into(), per_graph.into());
    details.insert("connections_per_shard".into(), spread.clone().into());
    let md = format!(
        "| measure | value |\n|---|---|\n\
         | connections held | {connections} ({failed} failed to open, {} disconnected while held) |\n\
         | time to open them | {connect_secs:.1} s |\n\
         | server memory per connection | {:.0} bytes ({:.2} KiB), from RSS at {tenth} and at {connections} connections |\n\
         | server RSS | {:.1} MiB |\n\
         | server CPU while idle | {cpu_percent:.2}% of one core over {held:.0} s |\n\
         | bytes per idle client per second | {bytes_per_client_sec:.1} |\n\
         | connections per shard | {spread:?} |\n\n\
         Sessions are spread over graphs of {per_graph} (each session sees the others' presence).\n",
        disconnects.load(Relaxed),
        per_connection,
        per_connection / 1024.0,
        rss as f64 / f64::from(1u32 << 20),
    );
    Ok(("idle", result, md))
}

/// Waits until every permit is back: all connections in flight are done.
async fn wait_all_ready(limit: &Semaphore, permits: u32) {
    if let Ok(all) = limit.acquire_many(permits).await {
        drop(all);
    }
}

/// One writer or subscriber of the fan-out scenarios.
struct Fleet {
    /// Write -> delivery latency, at every subscriber.
    delivery: Arc<Mutex<Histogram<u64>>>,
    /// Write -> confirmation latency, at writers.
    confirm: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
    confirmed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    /// How far behind schedule each send went out (µs): tokio's 1 ms
    /// timer adds up to about a millisecond; more is the generator's own
    /// saturation.
    send_lag: Arc<Mutex<Histogram<u64>>>,
    writers: Vec<Writer>,
    /// The runtime that writers send and read confirmations on: a thread
    /// of their own, so that a busy subscriber side cannot delay a send
    /// past its schedule.
    writer_runtime: tokio::runtime::Handle,
    start: Instant,
}

/// A single-threaded runtime on a thread of its own, which lives as long
/// as the process.
fn dedicated_runtime(name: &str) -> anyhow::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

struct Writer {
    sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
        Message,
    >,
    codec: Codec,
    node: String,
    seq: Arc<AtomicU64>,
}

/// A send this far (µs) behind its schedule shows a saturated generator.
const SATURATED_LAG_US: u64 = 5_000;

fn histogram() -> Arc<Mutex<Histogram<u64>>> {
    // Up to 100 s in microseconds, 3 significant digits; never fails for these bounds.
    #[allow(clippy::expect_used)]
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
    ))
}

/// Connects subscribers and writers to one graph; writers create their node.
async fn fleet(
    args: &Args,
    addr: SocketAddr,
    subscribers: usize,
    writers: usize,
) -> anyhow::Result<Fleet> {
    let graph = format!("fanout-{}", rand::random::<u32>());
    let start = Instant::now();
    let mut fleet = Fleet {
        delivery: histogram(),
        confirm: histogram(),
        received: Arc::new(AtomicU64::new(0)),
        lost: Arc::new(AtomicU64::new(0)),
        duplicates: Arc::new(AtomicU64::new(0)),
        confirmed: Arc::new(AtomicU64::new(0)),
        sent: Arc::new(AtomicU64::new(0)),
        send_lag: histogram(),
        writers: Vec::new(),
        writer_runtime: dedicated_runtime("load-writers")?,
        start,
    };
    let limit = Arc::new(Semaphore::new(128));
    let mut joins = Vec::new();
    for i in 0..subscribers {
        let permit = limit.clone().acquire_owned().await?;
        let codec = codec_of(args, i);
        let path = format!("/v1/graphs/{graph}?user=sub{i}");
        let (delivery, received, lost, duplicates) = (
            fleet.delivery.clone(),
            fleet.received.clone(),
            fleet.lost.clone(),
            fleet.duplicates.clone(),
        );
        joins.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await?;
            let sync = read_sync(&mut conn).await?;
            drop(permit);
            let mut last = sync.seq.unwrap_or(0);
            tokio::spawn(async move {
                let mut local = Vec::with_capacity(1024);
                while let Ok(Some(batch)) = conn.recv().await {
                    let now = start.elapsed().as_micros() as u64;
                    for e in batch.iter() {
                        if let Body::SystemHeartbeat(_) = e.body {
                            let _ = conn
                                .send(&Envelope::new(
                                    "hb",
                                    Body::SystemHeartbeat(SystemHeartbeat::default()),
                                ))
                                .await;
                            continue;
                        }
                        let Some(seq) = e.seq else { continue };
                        if seq <= last {
                            duplicates.fetch_add(1, Relaxed);
                            continue;
                        }
                        if seq > last + 1 {
                            lost.fetch_add(seq - last - 1, Relaxed);
                        }
                        last = seq;
                        if let Body::NodeUpdate(u) = &e.body {
                            if let Some(x) = u.set.as_ref().and_then(|s| s.x) {
                                local.push(now.saturating_sub(x as u64).max(1));
                            }
                        }
                    }
                    if !local.is_empty() {
                        received.fetch_add(local.len() as u64, Relaxed);
                        if let Ok(mut h) = delivery.lock() {
                            for v in local.drain(..) {
                                let _ = h.record(v);
                            }
                        }
                    }
                }
            });
            anyhow::Ok(())
        }));
    }
    for join in joins {
        join.await??;
    }
    for w in 0..writers {
        let i = subscribers + w;
        let codec = codec_of(args, i);
        let (graph, confirm, confirmed) = (
            graph.clone(),
            fleet.confirm.clone(),
            fleet.confirmed.clone(),
        );
        let writer = fleet.writer_runtime.spawn(async move {
            let mut conn = Conn::connect(
                addr,
                Some(conn::source_addr(i)),
                &format!("/v1/graphs/{graph}?user=writer{w}"),
                codec,
            )
            .await?;
            let sync = read_sync(&mut conn).await?;
            let node = format!("load:writer-{w}");
            let create = Envelope::new(
                format!("create-{w}"),
                Body::NodeCreate(NodeCreate {
                    base_seq: Some(sync.seq.unwrap_or(0)),
                    node: Node {
                        id: node.clone(),
                        label: Some(format!("writer {w}")),
                        ..Node::default()
                    },
                    commit: None,
                }),
            );
            conn.send(&create).await?;
            let seq = Arc::new(AtomicU64::new(sync.seq.unwrap_or(0)));
            let (sink, mut stream) = conn.ws.split();
            let seq_seen = seq.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let now = start.elapsed().as_micros() as u64;
                    let decoded = match message {
                        Message::Text(t) => json::decode(t.as_str(), &Limits::default()),
                        Message::Binary(b) => binary::decode(&b, &Limits::default()),
                        _ => continue,
                    };
                    let Ok(batch) = decoded else { continue };
                    for e in batch.into_iter().flatten() {
                        if let Some(s) = e.seq {
                            seq_seen.fetch_max(s, Relaxed);
                        }
                        if let Body::UpdateConfirmed(c) = &e.body {
                            // Mutation ids are "u-{scheduled µs}".
                            if let Some(at) = c
                                .reference
                                .strip_prefix("u-")
                                .and_then(|v| v.parse::<u64>().ok())
                            {
                                confirmed.fetch_add(1, Relaxed);
                                if let Ok(mut h) = confirm.lock() {
                                    let _ = h.record(now.saturating_sub(at).max(1));
                                }
                            }
                        }
                    }
                }
            });
            anyhow::Ok(Writer {
                sink,
                codec,
                node,
                seq,
            })
        });
        fleet.writers.push(writer.await??);
    }
    // Let the creates commit and the join storm settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(fleet)
}

/// Runs writers on a fixed schedule at `rate` per writer per second for
/// `duration`, then waits for deliveries to drain.
async fn drive(fleet: &mut Fleet, rate: f64, duration: Duration, subscribers: usize) -> StepResult {
    let (received0, lost0, dup0, sent0, confirmed0) = (
        fleet.received.load(Relaxed),
        fleet.lost.load(Relaxed),
        fleet.duplicates.load(Relaxed),
        fleet.sent.load(Relaxed),
        fleet.confirmed.load(Relaxed),
    );
    for h in [&fleet.delivery, &fleet.confirm, &fleet.send_lag] {
        if let Ok(mut h) = h.lock() {
            h.reset();
        }
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let began = Instant::now();
    let mut handles = Vec::new();
    for (w, writer) in fleet.writers.drain(..).enumerate() {
        let (start, sent, lag) = (fleet.start, fleet.sent.clone(), fleet.send_lag.clone());
        // Writers start staggered over one period so they do not send in lockstep.
        let offset = period.mul_f64(w as f64 / 16.0 % 1.0);
        handles.push(fleet.writer_runtime.spawn(async move {
            let mut writer = writer;
            let first = tokio::time::Instant::from_std(began) + offset;
            let mut k = 0u32;
            loop {
                let scheduled = first + period * k;
                if scheduled.duration_since(tokio::time::Instant::from_std(began)) >= duration {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                let behind = tokio::time::Instant::now().duration_since(scheduled);
                if let Ok(mut h) = lag.lock() {
                    let _ = h.record((behind.as_micros() as u64).max(1));
                }
                let at = scheduled.into_std().duration_since(start).as_micros() as u64;
                let update = Envelope::new(
                    format!("u-{at}"),
                    Body::NodeUpdate(NodeUpdate {
                        base_seq: Some(writer.seq.load(Relaxed)),
                        id: writer.node.clone(),
                        set: Some(NodeSet {
                            x: Some(at as f64),
                            ..NodeSet::default()
                        }),
                        ..NodeUpdate::default()
                    }),
                );
                let message = match writer.codec {
                    Codec::Binary => Message::Binary(binary::encode(&update)),
                    Codec::Json => match json::encode(&update).try_into() {
                        Ok(text) => Message::Text(text),
                        Err(_) => break,
                    },
                };
                if writer.sink.send(message).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Relaxed);
                k += 1;
            }
            writer
        }));
    }
    for handle in handles {
        if let Ok(writer) = handle.await {
            fleet.writers.push(writer);
        }
    }
    let sent = fleet.sent.load(Relaxed) - sent0;
    let expected = sent * subscribers as u64;
    // Drain: wait until every delivery arrived or nothing moved for 5 s.
    let mut last = 0;
    let mut still = Instant::now();
    while fleet.received.load(Relaxed) - received0 < expected
        && still.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fleet.received.load(Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let received = fleet.received.load(Relaxed) - received0;
    let delivery = fleet.delivery.lock().map(|h| h.clone()).ok();
    let confirm = fleet.confirm.lock().map(|h| h.clone()).ok();
    let send_lag = fleet.send_lag.lock().map(|h| h.clone()).ok();
    StepResult {
        rate_total: rate * fleet.writers.len() as f64,
        sent,
        confirmed: fleet.confirmed.load(Relaxed) - confirmed0,
        expected,
        received,
        lost: (fleet.lost.load(Relaxed) - lost0).max(expected.saturating_sub(received)),
        duplicates: fleet.duplicates.load(Relaxed) - dup0,
        deliveries_per_sec: received as f64 / duration.as_secs_f64().min(elapsed),
        delivery,
        confirm,
        send_lag,
    }
}

struct StepResult {
    rate_total: f64,
    sent: u64,
    confirmed: u64,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    deliveries_per_sec: f64,
    delivery: Option<Histogram<u64>>,
    confirm: Option<Histogram<u64>>,
    send_lag: Option<Histogram<u64>>,
}

impl StepResult {
    fn latency(&self) -> Percentiles {
        self.delivery
            .as_ref()
            .map(Percentiles::of)
            .unwrap_or_default()
    }

    fn send_lag(&self) -> Percentiles {
        self.send_lag
            .as_ref()
            .map(Percentiles::of)
            .unwrap_or_default()
    }

    /// Whether the generator fell behind its own schedule: more than 1% of
    /// the sends went out over 5 ms late (tokio's timer alone accounts
    /// for up to about 1 ms).
    fn generator_saturated(&self) -> bool {
        self.send_lag.as_ref().is_some_and(|h| {
            h.count_between(SATURATED_LAG_US, h.max().max(SATURATED_LAG_US)) * 100 > h.len()
        })
    }

    fn confirm_latency(&self) -> Percentiles {
        self.confirm
            .as_ref()
            .map(Percentiles::of)
            .unwrap_or_default()
    }
}

async fn fanout(
    args: &Args,
    server: &ServerUnderTest,
    subscribers: usize,
    writers: usize,
    rate: f64,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let mut fleet = fleet(args, server.addr, subscribers, writers).await?;
    let rss_before = procstat::rss_bytes(server.pid).unwrap_or(0);
    let cpu = CpuMeter::start(server.pid);
    let step = drive(
        &mut fleet,
        rate,
        Duration::from_secs(args.duration),
        subscribers,
    )
    .await;
    let cpu_percent = cpu.percent();
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let latency = step.latency();
    let confirm = step.confirm_latency();
    let send_lag = step.send_lag();
    let dir = report::reports_dir();
    if let (Some(d), Some(c)) = (&step.delivery, &step.confirm) {
        report::latency_svg(
            &dir.join(format!(
                "{}.svg",
                args.report.as_deref().unwrap_or("load-fanout")
            )),
            "fan-out latency",
            &[("write -> delivery", d), ("write -> confirmation", c)],
        )?;
    }
    let mut result = LoadResult {
        scenario: "fanout".into(),
        latency_us: latency,
        confirm_latency_us: confirm,
        expected: step.expected,
        received: step.received,
        lost: step.lost,
        duplicates: step.duplicates,
        deliveries_per_sec: step.deliveries_per_sec,
        updates_per_sec: step.sent as f64 / args.duration as f64,
        server: ServerStats {
            cpu_percent,
            rss_bytes: rss,
            rss_per_connection_bytes: rss_before as f64 / (subscribers + writers) as f64,
        },
        generator_saturated: step.generator_saturated(),
        ..LoadResult::default()
    };
    result
        .details
        .insert("subscribers".into(), subscribers.into());
    result.details.insert("writers".into(), writers.into());
    result.details.insert("rate_per_writer".into(), rate.into());
    result.details.insert(
        "send_lag_us".into(),
        serde_json::to_value(send_lag).unwrap_or_default(),
    );
    result
        .details
        .insert("confirmed".into(), step.confirmed.into());
    let md = format!(
        "{subscribers} subscribers, {writers} writers at {rate} updates/s each ({:.0} updates/s in all), {} s.\n\n\
         | measure | value |\n|---|---|\n\
         | write -> delivery | {} |\n\
         | write -> confirmation (git commit{}) | {} |\n\
         | updates sent / confirmed | {} / {} |\n\
         | deliveries expected / received | {} / {} |\n\
         | lost / duplicates | {} / {} |\n\
         | deliveries per second | {:.0} |\n\
         | server CPU | {:.1}% of one core |\n\
         | send lag behind schedule (generator) | {} |\n\n\
         ![latency]({}.svg)\n",
        step.rate_total,
        args.duration,
        latency.ms(),
        if args.server_args.iter().any(|a| a == "--no-fsync") { ", no fsync" } else { ", fsync" },
        confirm.ms(),
        step.sent,
        step.confirmed,
        step.expected,
        step.received,
        step.lost,
        step.duplicates,
        step.deliveries_per_sec,
        cpu_percent,
        send_lag.ms(),
        args.report.as_deref().unwrap_or("load-fanout"),
    );
    Ok(("fanout", result, md))
}

async fn ramp(
    args: &Args,
    server: &ServerUnderTest,
    subscribers: usize,
    writers: usize,
    start: f64,
    step_secs: u64,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    let mut fleet = fleet(args, server.addr, subscribers, writers).await?;
    let mut total = start;
    let mut held: Option<StepResult> = None;
    let mut md = format!(
        "{subscribers} subscribers, {writers} writers; each step {step_secs} s; a step holds when p99 < 100 ms and nothing is lost.\n\n\
         | total updates/s | p50 ms | p99 ms | lost | dup | deliveries/s | send lag p99 ms | held |\n|---|---|---|---|---|---|---|---|\n"
    );
    let deadline = Instant::now() + Duration::from_secs(args.duration.max(step_secs));
    loop {
        let step = drive(
            &mut fleet,
            total / writers as f64,
            Duration::from_secs(step_secs),
            subscribers,
        )
        .await;
        let p = step.latency();
        let ok = p.p99 < 100_000 && step.lost == 0 && step.duplicates == 0 && step.received > 0;
        md.push_str(&format!(
            "| {:.0} | {:.2} | {:.2} | {} | {} | {:.0} | {:.2} | {} |\n",
            total,
            p.p50 as f64 / 1e3,
            p.p99 as f64 / 1e3,
            step.lost,
            step.duplicates,
            step.deliveries_per_sec,
            step.send_lag().p99 as f64 / 1e3,
            if ok { "yes" } else { "no" }
        ));
        if !ok {
            break;
        }
        held = Some(step);
        total *= 1.5;
        if Instant::now() > deadline {
            md.push_str("\n(stopped by --duration before a step failed)\n");
            break;
        }
    }
    let mut result = LoadResult {
        scenario: "ramp".into(),
        ..LoadResult::default()
    };
    if let Some(step) = &held {
        result.latency_us = step.latency();
        result.confirm_latency_us = step.confirm_latency();
        result.expected = step.expected;
        result.received = step.received;
        result.deliveries_per_sec = step.deliveries_per_sec;
        result.updates_per_sec = step.rate_total;
        result.generator_saturated = step.generator_saturated();
        md.push_str(&format!(
            "\nhighest rate that held: **{:.0} updates/s**\n",
            step.rate_total
        ));
    } else {
        md.push_str("\nno step held\n");
    }
    result.details.insert(
        "highest_rate_held".into(),
        held.as_ref().map_or(0.0, |s| s.rate_total).into(),
    );
    Ok(("ramp", result, md))
}

async fn reconnect(
    args: &Args,
    server: &mut ServerUnderTest,
    clients: usize,
) -> anyhow::Result<(&'static str, LoadResult, String)> {
    if server.data.is_none() {
        bail!(
            "reconnect restarts the server, so it must be one this program started (no --server)"
        );
    }
    let graph = format!("reconnect-{}", rand::random::<u32>());
    let addr = server.addr;
    // A writer makes changes before the restart; every client must end with all of them, once.
    let mut writer = Conn::connect(
        addr,
        None,
        &format!("/v1/graphs/{graph}?user=writer"),
        Codec::Json,
    )
    .await?;
    read_sync(&mut writer).await?;
    let limit = Arc::new(Semaphore::new(128));
    let mut states = Vec::new();
    let mut tasks = Vec::new();
    let resumed_at: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let restart_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    for i in 0..clients {
        let permit = limit.clone().acquire_owned().await?;
        let codec = codec_of(args, i);
        let seen = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
        states.push(seen.clone());
        let (graph, resumed_at, restart_at) =
            (graph.clone(), resumed_at.clone(), restart_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(
                addr,
                Some(conn::source_addr(i)),
                &format!("/v1/graphs/{graph}?user=c{i}"),
                codec,
            )
            .await?;
            let sync = read_sync(&mut conn).await?;
            drop(permit);
            let epoch = sync.epoch.unwrap_or_default();
            let mut last = sync.seq.unwrap_or(0);
            let mut attempt = 0u32;
            loop {
                while let Ok(Some(batch)) = conn.recv().await {
                    for e in batch.iter() {
                        if let (Some(seq), true) = (e.seq, e.body.message_type().is_mutation()) {
                            if let Ok(mut s) = seen.lock() {
                                *s.entry(seq).or_default() += 1;
                            }
                            last = last.max(seq);
                        }
                    }
                }
                // Lost the connection: back off with full jitter and resume.
                loop {
                    attempt += 1;
                    let cap = Duration::from_millis(100 * 2u64.pow(attempt.min(5)));
                    tokio::time::sleep(cap.mul_f64(rand::random::<f64>())).await;
                    let path = format!("/v1/graphs/{graph}?user=c{i}&since={last}&epoch={epoch}");
                    if let Ok(mut c) =
                        Conn::connect(addr, Some(conn::source_addr(i)), &path, codec).await
                    {
                        if let Ok(sync) = read_sync(&mut c).await {
                            for e in sync.events.unwrap_or_default() {
                                if let Some(seq) = e.seq {
                                    if let Ok(mut s) = seen.lock() {
                                        *s.entry(seq).or_default() += 1;
                                    }
                                    last = last.max(seq);
                                }
                            }
                            if let (Ok(restart), Ok(mut r)) = (restart_at.lock(), resumed_at.lock())
                            {
                                if let Some(t) = *restart {
                                    r.push(t.elapsed().as_secs_f64());
                                }
                            }
                            conn = c;
                            attempt = 0;
                            break;
                        }
                    }
                    if attempt > 60 {
                        return anyhow::Ok(());
                    }
                }
            }
        }));
    }
    wait_all_ready(&limit, 128).await;
    let changes = 50u64;
    for k in 0..changes {
        let e = Envelope::new(
            format!("c-{k}"),
            Body::NodeCreate(NodeCreate {
                base_seq: Some(0),
                node: Node {
                    id: format!("load:before-{k}"),
                    ..Node::default()
                },
                commit: None,
            }),
        );
        writer.send(&e).await?;
    }
    let mut confirmed = 0;
    while confirmed < changes {
        let Some(batch) = writer.recv().await? else {
            break;
        };
        confirmed += batch
            .iter()
            .filter(|e| matches!(e.body, Body::UpdateConfirmed(_)))
            .count() as u64;
    }
    drop(writer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(mut r) = restart_at.lock() {
        *r = Some(Instant::now());
    }
    server
        .restart(gitmind_bench::server::Stop::Graceful)
        .await?;
    let restarted = Instant::now();
    let mut writer = Conn::connect(
        server.addr,
        None,
        &format!("/v1/graphs/{graph}?user=writer"),
        Codec::Json,
    )
    .await?;
    let sync = read_sync(&mut writer).await?;
    let base = sync.seq.unwrap_or(0);
    for k in 0..changes {
        let e = Envelope::new(
            format!("d-{k}"),
            Body::NodeCreate(NodeCreate {
                base_seq: Some(base),
                node: Node {
                    id: format!("load:after-{k}"),
                    ..Node::default()
                },
                commit: None,
            }),
        );
        writer.send(&e).await?;
    }
    // Wait until every client resumed and saw every change, bounded.
    let total = 2 * changes;
    let wait_until = Instant::now() + Duration::from_secs(args.duration.max(30));
    while Instant::now() < wait_until {
        let done = states
            .iter()
            .filter(|s| s.lock().is_ok_and(|s| s.len() as u64 >= total))
            .count();
        if done == clients {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_resumed = restarted.elapsed().as_secs_f64();
    let (mut lost, mut duplicates, mut complete) = (0u64, 0u64, 0usize);
    for s in &states {
        let Ok(s) = s.lock() else { continue };
        let have = (1..=total).filter(|seq| s.contains_key(seq)).count() as u64;
        lost += total - have;
        duplicates += s
            .values()
            .filter(|n| **n > 1)
            .map(|n| u64::from(n - 1))
            .sum::<u64>();
        if have == total {
            complete += 1;
        }
    }
    for task in tasks {
        task.abort();
    }
    let mut times = resumed_at.lock().map(|v| v.clone()).unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let p = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut result = LoadResult {
        scenario: "reconnect".into(),
        expected: total * clients as u64,
        received: total * clients as u64 - lost,
        lost,
        duplicates,
        ..LoadResult::default()
    };
    result.details.insert("clients".into(), clients.into());
    result
        .details
        .insert("clients_complete".into(), complete.into());
    result.details.insert("resumed".into(), times.len().into());
    result.details.insert("resume_p50_s".into(), p(0.5).into());
    result.details.insert(
        "resume_max_s".into(),
        times.last().copied().unwrap_or(f64::NAN).into(),
    );
    let md = format!(
        "{clients} clients on one graph; {changes} changes before a server restart (SIGTERM, same data and port), \
         {changes} after; each client resumes with `since`/`epoch` after a full-jitter backoff (cap 100 ms x 2^attempt).\n\n\
         | measure | value |\n|---|---|\n\
         | clients resumed | {} of {clients} |\n\
         | time from restart to resume: p50 / max | {:.2} s / {:.2} s |\n\
         | clients with every change exactly once | {complete} of {clients} |\n\
         | changes lost / duplicated (over all clients) | {lost} / {duplicates} |\n\
         | time until all complete (or the wait ended) | {all_resumed:.2} s |\n",
        times.len(),
        p(0.5),
        times.last().copied().unwrap_or(f64::NAN),
    );
    Ok(("reconnect", result, md))
}
