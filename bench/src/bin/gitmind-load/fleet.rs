//! The writers and subscribers of the fan-out scenarios (`fanout`,
//! `ramp`, `hostile`, and `peers` with the peers' protocols): connecting
//! them to one graph, and driving the writers on a fixed schedule while
//! the subscribers measure write -> delivery.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gitmind_bench::conn::{self, Codec, Conn};
use gitmind_bench::report::Percentiles;
use gitmind_schema::message::{NodeCreate, NodeUpdate, PresenceStatus, UserPresence};
use gitmind_schema::model::{Node, NodeSet};
use gitmind_schema::{binary, json, Body, Envelope, Limits};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{codec_of, graph_path, read_sync, send_heartbeat, CLIENT_HEARTBEAT};
use crate::Args;

/// The writers and subscribers of the fan-out scenarios.
pub struct Fleet {
    /// The graph they are all on.
    pub graph: String,
    /// What the subscribers received.
    tally: Tally,
    /// Write -> confirmation latency, at writers.
    confirm: Arc<Mutex<Histogram<u64>>>,
    confirmed: Arc<AtomicU64>,
    rolled_back: Arc<AtomicU64>,
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
}

/// A single-threaded runtime on a thread of its own, which lives as long
/// as the process.
pub fn dedicated_runtime(name: &str) -> anyhow::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// The sending half of a writer's connection.
pub type Sink =
    futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<TcpStream>, Message>;

/// Makes the message of a writer's next update, given the time it was
/// scheduled (µs since the fleet's start), which it carries.
pub type NextUpdate = Box<dyn FnMut(u64) -> anyhow::Result<Message> + Send>;

/// A writer's connection, between runs of [`drive`].
struct Writer {
    sink: Sink,
    next: NextUpdate,
}

/// What subscribers report to their fleet: each delivery's latency, the
/// gaps and repeats in what they received, and their end.
#[derive(Clone)]
pub struct Tally {
    /// When the fleet started: update times count from it.
    start: Instant,
    /// Write -> delivery latency, at every subscriber.
    delivery: Arc<Mutex<Histogram<u64>>>,
    /// The slowest write -> delivery (µs) of the updates scheduled in each
    /// second since `start`: when in a run the slow deliveries were.
    slowest_by_second: Arc<Vec<AtomicU64>>,
    received: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
    /// Subscribers whose connection ended (the server closed it).
    disconnected: Arc<AtomicU64>,
    /// `gonzai.discover` messages received (with `--gonzai-focus`).
    discoveries: Arc<AtomicU64>,
}

impl Tally {
    /// Microseconds since the fleet started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A delivery seen at `now_us` of an update scheduled at `at_us`:
    /// its latency goes into `local`, which [`Tally::flush`] adds up.
    pub fn delivered(&self, at_us: u64, now_us: u64, local: &mut Vec<u64>) {
        let latency = now_us.saturating_sub(at_us).max(1);
        local.push(latency);
        if let Some(slot) = self.slowest_by_second.get((at_us / 1_000_000) as usize) {
            slot.fetch_max(latency, Relaxed);
        }
    }

    /// Adds the deliveries in `local` to the fleet's, and empties it.
    pub fn flush(&self, local: &mut Vec<u64>) {
        if local.is_empty() {
            return;
        }
        self.received.fetch_add(local.len() as u64, Relaxed);
        if let Ok(mut h) = self.delivery.lock() {
            for v in local.drain(..) {
                let _ = h.record(v);
            }
        }
    }

    /// `n` deliveries that a gap in a subscriber's sequence shows missing.
    pub fn lost(&self, n: u64) {
        self.lost.fetch_add(n, Relaxed);
    }

    /// A delivery that came again.
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    /// A subscriber's connection ended.
    pub fn disconnected(&self) {
        self.disconnected.fetch_add(1, Relaxed);
    }
}

/// Seconds of a fleet's life whose slowest delivery is kept.
const SECONDS_KEPT: usize = 3600;

/// A send this far (µs) behind its schedule shows a saturated generator.
const SATURATED_LAG_US: u64 = 5_000;

pub fn histogram() -> Arc<Mutex<Histogram<u64>>> {
    // Up to 100 s in microseconds, 3 significant digits; never fails for these bounds.
    #[allow(clippy::expect_used)]
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
    ))
}

/// The node the `i`th subscriber (or writer) connects to: `--server` and
/// `--also-server` in turn.
fn node_of(args: &Args, addr: SocketAddr, i: usize) -> SocketAddr {
    if args.nodes.is_empty() {
        return addr;
    }
    args.nodes[i % args.nodes.len()]
}

impl Fleet {
    /// A fleet on `graph` with no connection yet.
    ///
    /// # Errors
    /// The writers' thread could not be started.
    pub fn new(graph: String) -> anyhow::Result<Fleet> {
        Ok(Fleet {
            graph,
            tally: Tally {
                start: Instant::now(),
                delivery: histogram(),
                slowest_by_second: Arc::new((0..SECONDS_KEPT).map(|_| AtomicU64::new(0)).collect()),
                received: Arc::new(AtomicU64::new(0)),
                lost: Arc::new(AtomicU64::new(0)),
                duplicates: Arc::new(AtomicU64::new(0)),
                disconnected: Arc::new(AtomicU64::new(0)),
                discoveries: Arc::new(AtomicU64::new(0)),
            },
            confirm: histogram(),
            confirmed: Arc::new(AtomicU64::new(0)),
            rolled_back: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
            send_lag: histogram(),
            writers: Vec::new(),
            writer_runtime: dedicated_runtime("load-writers")?,
        })
    }

    /// Where subscribers report.
    pub fn tally(&self) -> Tally {
        self.tally.clone()
    }

    /// The runtime writers send on (connect them there).
    pub fn writer_runtime(&self) -> &tokio::runtime::Handle {
        &self.writer_runtime
    }

    /// Adds a writer, which [`drive`] makes send `next`'s messages on `sink`.
    pub fn add_writer(&mut self, sink: Sink, next: NextUpdate) {
        self.writers.push(Writer { sink, next });
    }
}

/// Connects subscribers and writers to one graph; writers create their node.
pub async fn connect(
    args: &Args,
    addr: SocketAddr,
    subscribers: usize,
    writers: usize,
) -> anyhow::Result<Fleet> {
    let graph = format!("fanout-{}", rand::random::<u32>());
    let mut fleet = Fleet::new(graph.clone())?;
    let start = fleet.tally.start;
    let limit = Arc::new(Semaphore::new(128));
    let mut joins = Vec::new();
    for i in 0..subscribers {
        let permit = limit.clone().acquire_owned().await?;
        let node = node_of(args, addr, i);
        let codec = codec_of(args, i);
        let path = graph_path(args, &graph, &format!("sub{i}"), true);
        let focus =
            (args.gonzai_focus && writers > 0).then(|| format!("load:writer-{}", i % writers));
        let tally = fleet.tally();
        joins.push(tokio::spawn(async move {
            let mut conn = Conn::connect(node, Some(conn::source_addr(i)), &path, codec).await?;
            let sync = read_sync(&mut conn).await?;
            if let Some(focus) = focus {
                let presence = Body::UserPresence(UserPresence {
                    status: PresenceStatus::Active,
                    focus: Some(focus),
                    display_name: None,
                    color: None,
                    chaos_affinity: None,
                });
                conn.send(&Envelope::new("focus", presence)).await?;
            }
            drop(permit);
            let mut last = sync.seq.unwrap_or(0);
            tokio::spawn(async move {
                let mut local = Vec::with_capacity(1024);
                let mut last_beat = Instant::now();
                while let Ok(Some(batch)) = conn.recv().await {
                    let now = tally.now_us();
                    // Something at least every heartbeat interval, also
                    // while the server keeps sending and so sends no
                    // heartbeat to answer (docs/protocol.md 10.1).
                    if last_beat.elapsed() >= CLIENT_HEARTBEAT
                        || batch
                            .iter()
                            .any(|e| matches!(e.body, Body::SystemHeartbeat(_)))
                    {
                        let _ = send_heartbeat(&mut conn).await;
                        last_beat = Instant::now();
                    }
                    for e in batch.iter() {
                        if matches!(e.body, Body::GonzaiDiscover(_)) {
                            tally.discoveries.fetch_add(1, Relaxed);
                        }
                        // A server heartbeat carries the latest seq: not an event.
                        if matches!(e.body, Body::SystemHeartbeat(_)) {
                            continue;
                        }
                        let Some(seq) = e.seq else { continue };
                        if seq <= last {
                            tally.duplicate();
                            continue;
                        }
                        if seq > last + 1 {
                            tally.lost(seq - last - 1);
                        }
                        last = seq;
                        if let Body::NodeUpdate(u) = &e.body {
                            if let Some(x) = u.set.as_ref().and_then(|s| s.x) {
                                tally.delivered(x as u64, now, &mut local);
                            }
                        }
                    }
                    tally.flush(&mut local);
                }
                tally.disconnected();
            });
            anyhow::Ok(())
        }));
    }
    for join in joins {
        join.await??;
    }
    for w in 0..writers {
        let i = subscribers + w;
        let node = node_of(args, addr, w);
        let codec = codec_of(args, i);
        let (graph, confirm, confirmed, rolled_back) = (
            graph.clone(),
            fleet.confirm.clone(),
            fleet.confirmed.clone(),
            fleet.rolled_back.clone(),
        );
        let path = graph_path(args, &graph, &format!("writer{w}"), false);
        let writer = fleet.writer_runtime.spawn(async move {
            let mut conn = Conn::connect(node, Some(conn::source_addr(i)), &path, codec).await?;
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
            let next = next_update(codec, node, seq.clone());
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
                        if let Body::UpdateRollback(r) = &e.body {
                            if r.reference.starts_with("u-") {
                                rolled_back.fetch_add(1, Relaxed);
                            }
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
            anyhow::Ok((sink, next))
        });
        let (sink, next) = writer.await??;
        fleet.add_writer(sink, next);
    }
    // Let the creates commit and the join storm settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(fleet)
}

/// A Gitmind writer's updates: its node's `x` set to the time each was
/// scheduled, on the latest `seq` it saw, under the mutation id
/// `u-{scheduled µs}` that its confirmation names.
fn next_update(codec: Codec, node: String, seq: Arc<AtomicU64>) -> NextUpdate {
    Box::new(move |at| {
        let update = Envelope::new(
            format!("u-{at}"),
            Body::NodeUpdate(NodeUpdate {
                base_seq: Some(seq.load(Relaxed)),
                id: node.clone(),
                set: Some(NodeSet {
                    x: Some(at as f64),
                    ..NodeSet::default()
                }),
                ..NodeUpdate::default()
            }),
        );
        conn::message_of(codec, &update)
    })
}

/// Runs writers on a fixed schedule at `rate` per writer per second for
/// `duration`, then waits for deliveries to drain.
pub async fn drive(
    fleet: &mut Fleet,
    rate: f64,
    duration: Duration,
    subscribers: usize,
) -> StepResult {
    let (received0, lost0, dup0, sent0, confirmed0, rolled_back0, disconnected0) = (
        fleet.tally.received.load(Relaxed),
        fleet.tally.lost.load(Relaxed),
        fleet.tally.duplicates.load(Relaxed),
        fleet.sent.load(Relaxed),
        fleet.confirmed.load(Relaxed),
        fleet.rolled_back.load(Relaxed),
        fleet.tally.disconnected.load(Relaxed),
    );
    let discoveries0 = fleet.tally.discoveries.load(Relaxed);
    for h in [&fleet.tally.delivery, &fleet.confirm, &fleet.send_lag] {
        if let Ok(mut h) = h.lock() {
            h.reset();
        }
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let began = Instant::now();
    let mut handles = Vec::new();
    for (w, writer) in fleet.writers.drain(..).enumerate() {
        let (start, sent, lag) = (
            fleet.tally.start,
            fleet.sent.clone(),
            fleet.send_lag.clone(),
        );
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
                let Ok(message) = (writer.next)(at) else {
                    break;
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
    while fleet.tally.received.load(Relaxed) - received0 < expected
        && still.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fleet.tally.received.load(Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let received = fleet.tally.received.load(Relaxed) - received0;
    let delivery = fleet.tally.delivery.lock().map(|h| h.clone()).ok();
    let confirm = fleet.confirm.lock().map(|h| h.clone()).ok();
    let send_lag = fleet.send_lag.lock().map(|h| h.clone()).ok();
    let gaps = fleet.tally.lost.load(Relaxed) - lost0;
    let first = began.duration_since(fleet.tally.start).as_secs() as usize;
    let slowest_by_second = fleet
        .tally
        .slowest_by_second
        .iter()
        .skip(first)
        .take(duration.as_secs_f64().ceil() as usize)
        .map(|s| s.swap(0, Relaxed))
        .collect();
    StepResult {
        rate_total: rate * fleet.writers.len() as f64,
        sent,
        confirmed: fleet.confirmed.load(Relaxed) - confirmed0,
        rolled_back: fleet.rolled_back.load(Relaxed) - rolled_back0,
        expected,
        received,
        lost: gaps.max(expected.saturating_sub(received)),
        gaps,
        subscribers,
        disconnected: fleet.tally.disconnected.load(Relaxed) - disconnected0,
        duplicates: fleet.tally.duplicates.load(Relaxed) - dup0,
        discoveries: fleet.tally.discoveries.load(Relaxed) - discoveries0,
        deliveries_per_sec: received as f64 / duration.as_secs_f64().min(elapsed),
        delivery,
        confirm,
        send_lag,
        slowest_by_second,
    }
}

/// What one run of [`drive`] measured.
pub struct StepResult {
    /// Updates per second over all writers.
    pub rate_total: f64,
    /// Updates sent.
    pub sent: u64,
    /// Updates confirmed.
    pub confirmed: u64,
    /// Updates rolled back (refused by the server: nothing applied).
    pub rolled_back: u64,
    /// Deliveries expected: every update at every subscriber.
    pub expected: u64,
    /// Deliveries received.
    pub received: u64,
    /// Deliveries that never came.
    pub lost: u64,
    /// Deliveries missing from the subscribers' `seq`s (a gap in the
    /// stream), whether or not the writer heard of its update.
    pub gaps: u64,
    /// Subscribers measured.
    pub subscribers: usize,
    /// Subscribers whose connection ended during the run.
    pub disconnected: u64,
    /// Deliveries that came more than once.
    pub duplicates: u64,
    /// `gonzai.discover` messages the subscribers received.
    pub discoveries: u64,
    /// Deliveries per second over all subscribers.
    pub deliveries_per_sec: f64,
    /// Write -> delivery, microseconds.
    pub delivery: Option<Histogram<u64>>,
    /// Write -> confirmation, microseconds.
    pub confirm: Option<Histogram<u64>>,
    /// How far behind schedule sends went out, microseconds.
    pub send_lag: Option<Histogram<u64>>,
    /// The slowest write -> delivery (µs) of the updates scheduled in each
    /// second of the run, in order.
    pub slowest_by_second: Vec<u64>,
}

impl StepResult {
    /// Write -> delivery.
    pub fn latency(&self) -> Percentiles {
        self.delivery
            .as_ref()
            .map(Percentiles::of)
            .unwrap_or_default()
    }

    /// How far behind schedule sends went out.
    pub fn send_lag(&self) -> Percentiles {
        self.send_lag
            .as_ref()
            .map(Percentiles::of)
            .unwrap_or_default()
    }

    /// Whether the generator fell behind its own schedule: more than 1% of
    /// the sends went out over 5 ms late (tokio's timer alone accounts
    /// for up to about 1 ms).
    pub fn generator_saturated(&self) -> bool {
        self.send_lag.as_ref().is_some_and(|h| {
            h.count_between(SATURATED_LAG_US, h.max().max(SATURATED_LAG_US)) * 100 > h.len()
        })
    }

    /// Write -> confirmation.
    pub fn confirm_latency(&self) -> Percentiles {
        self.confirm
            .as_ref()
            .map(Percentiles::of)
            .unwrap_or_default()
    }

    /// Deliveries of confirmed updates that never came: the server
    /// confirmed an update (it is in git) and a subscriber did not get it,
    /// seen as a gap in its `seq`s or as fewer deliveries than confirmed
    /// updates times subscribers. An update rolled back is not owed to
    /// anyone.
    pub fn confirmed_lost(&self) -> u64 {
        let owed = self.confirmed * self.subscribers as u64;
        self.gaps.max(owed.saturating_sub(self.received))
    }

    /// The rows of a Markdown `| measure | value |` table that every
    /// fan-out report shows; `fsync` says how confirmations were committed.
    pub fn table_rows(&self, fsync: bool) -> String {
        format!(
            "{}| write -> confirmation (git commit{}) | {} |\n\
             | updates confirmed | {} |\n\
             | gonzai.discover received | {} |\n",
            self.delivery_rows(),
            if fsync { ", fsync" } else { ", no fsync" },
            self.confirm_latency().ms(),
            self.confirmed,
            self.discoveries,
        )
    }

    /// The rows of [`StepResult::table_rows`] about deliveries alone, for
    /// servers that confirm nothing (`peers`).
    pub fn delivery_rows(&self) -> String {
        format!(
            "| write -> delivery | {} |\n\
             | updates sent | {} |\n\
             | deliveries expected / received | {} / {} |\n\
             | lost / duplicates | {} / {} |\n\
             | deliveries per second | {:.0} |\n",
            self.latency().ms(),
            self.sent,
            self.expected,
            self.received,
            self.lost,
            self.duplicates,
            self.deliveries_per_sec,
        )
    }
}
