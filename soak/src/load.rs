//! The mixed load: writers change the graph on a fixed schedule, readers
//! watch it, everyone moves a cursor; and the log of faults that tells a
//! latency measured through a fault from one measured in steady state.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gitmind_client::client::ClientError;
use gitmind_client::{Client, Event, Events, Outcome, State};
use gitmind_schema::message::{BatchOp, NodeUpdate, RollbackReason, SyncMode};
use gitmind_schema::model::{Edge, Node, NodeSet, PropValue};
use gitmind_schema::ot::TextOp;
use gitmind_schema::Body;
use gitmind_testkit::Rng;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Changes one writer may have waiting for an outcome; past it the writer
/// skips its schedule and counts the skip (the generator fell behind).
const MAX_IN_FLIGHT: usize = 2_000;
/// Time allowed, once the load stops, for every change to get its outcome.
const DRAIN: Duration = Duration::from_secs(60);
/// Nodes that get a third of the changes.
const HOT_NODES: usize = 5;
/// How often each client moves its cursor.
const CURSOR_EVERY: Duration = Duration::from_millis(500);

/// Who a fault touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Everyone (a server restart).
    All,
    /// One client, by index.
    Client(usize),
}

struct Interval {
    who: Who,
    start: Instant,
    end: Option<Instant>,
}

/// Every time a client was not connected, and every server restart.
#[derive(Default)]
pub struct FaultLog {
    intervals: Mutex<Vec<Interval>>,
}

impl FaultLog {
    /// A fault starts now; returns its handle for [`FaultLog::close`].
    pub fn open(&self, who: Who) -> usize {
        let mut intervals = self.lock();
        intervals.push(Interval {
            who,
            start: Instant::now(),
            end: None,
        });
        intervals.len() - 1
    }

    /// The fault ends now.
    pub fn close(&self, handle: usize) {
        if let Some(i) = self.lock().get_mut(handle) {
            i.end = Some(Instant::now());
        }
    }

    /// Whether a fault touching any of `clients` overlapped `from..=to`.
    pub fn touched(&self, clients: &[usize], from: Instant, to: Instant) -> bool {
        self.lock().iter().rev().any(|i| {
            let relevant = match i.who {
                Who::All => true,
                Who::Client(c) => clients.contains(&c),
            };
            relevant && i.start <= to && i.end.is_none_or(|end| end >= from)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Interval>> {
        self.intervals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the load shares.
pub struct Shared {
    /// Time zero of the run: writers stamp their changes with microseconds
    /// since it, readers measure delivery against it.
    pub start: Instant,
    /// The faults so far.
    pub faults: FaultLog,
    /// Node ids of the starting graph.
    pub node_ids: Vec<String>,
    /// Edges of the starting graph.
    pub edges: Vec<Edge>,
}

impl Shared {
    fn micros(&self, at: Instant) -> u64 {
        micros(at.duration_since(self.start))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A latency histogram in microseconds, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The id of writer `w`'s counter node: every few changes the writer
/// sets its `n` (counting up) and `t` (the scheduled time), so readers
/// measure delivery, and the end check knows the value it must find.
pub fn counter_id(w: usize) -> String {
    format!("soak:w{w}")
}

/// The writer index of a counter node id.
fn counter_writer(id: &str) -> Option<usize> {
    id.strip_prefix("soak:w")?.parse().ok()
}

/// A change the server confirmed (or applied merged).
#[derive(Debug, Clone)]
pub struct Confirmed {
    /// The mutation's id.
    pub reference: String,
    /// Its `seq`.
    pub seq: u64,
    /// The commit it is in.
    pub commit: String,
}

/// What a writer saw.
pub struct WriterReport {
    /// Its client index.
    pub index: usize,
    /// Scheduled time to outcome, changes no fault touched.
    pub confirm: Histogram<u64>,
    /// The same, for changes a fault touched (reconnects, restarts).
    pub confirm_faulted: Histogram<u64>,
    /// Every change applied.
    pub applied: Vec<Confirmed>,
    /// The counter's confirmed values as (seq, n).
    pub counter: Vec<(u64, u64)>,
    /// Changes sent.
    pub sent: u64,
    /// Applied as sent.
    pub confirmed: u64,
    /// Applied, merged with concurrent changes.
    pub resolved: u64,
    /// Not applied, by reason.
    pub rolled_back: Vec<(RollbackReason, u64)>,
    /// Changes that got no outcome by the end.
    pub unresolved: u64,
    /// Scheduled changes skipped because too many were waiting.
    pub skipped: u64,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Counter(u64),
    Label,
    Text,
    Layout,
    EdgeCreate,
    EdgeDelete,
    NodeCreate,
    NodeDelete,
}

struct Done {
    op: Op,
    scheduled: Instant,
    finished: Instant,
    outcome: Result<Outcome, ClientError>,
    /// The entity created, to delete later.
    created: Option<String>,
}

/// A writer: `rate` changes a second on a fixed schedule (latency counts
/// from the scheduled time, so a stall is not hidden), until `stop`; then
/// it waits for every outcome.
pub async fn writer(
    index: usize,
    client: Client,
    shared: Arc<Shared>,
    rate: f64,
    seed: u64,
    stop: CancellationToken,
) -> WriterReport {
    let user = client.identity().0;
    let mut rng = Rng::new(seed);
    let mut report = WriterReport {
        index,
        confirm: histogram(),
        confirm_faulted: histogram(),
        applied: Vec::new(),
        counter: Vec::new(),
        sent: 0,
        confirmed: 0,
        resolved: 0,
        rolled_back: Vec::new(),
        unresolved: 0,
        skipped: 0,
    };
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now() + period.mul_f64(rng.unit());
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let (mut my_nodes, mut my_edges) = (Vec::new(), Vec::new());
    let mut counter = 0;
    let mut made = 0u64;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(done) = in_flight.join_next() => {
                if let Ok(done) = done {
                    record(&mut report, &shared, done, &mut my_nodes, &mut my_edges);
                }
            }
            () = tokio::time::sleep_until(next) => {
                let scheduled = next;
                next += period;
                if in_flight.len() >= MAX_IN_FLIGHT {
                    report.skipped += 1;
                    continue;
                }
                report.sent += 1;
                made += 1;
                let op = pick(&mut rng, &mut counter, &shared, &my_nodes, &my_edges);
                let change = build(op, &mut rng, &shared, &user, index, made, scheduled, &mut my_nodes, &mut my_edges);
                let client = client.clone();
                in_flight.spawn(async move {
                    let (outcome, created) = change.run(&client).await;
                    Done { op, scheduled, finished: Instant::now(), outcome, created }
                });
            }
        }
    }
    let deadline = Instant::now() + DRAIN;
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, in_flight.join_next()).await {
            Ok(Some(Ok(done))) => record(&mut report, &shared, done, &mut my_nodes, &mut my_edges),
            Ok(Some(Err(_))) => report.unresolved += 1,
            Ok(None) => break,
            Err(_) => {
                report.unresolved += in_flight.len() as u64;
                in_flight.abort_all();
                break;
            }
        }
    }
    report
}

/// The mix: a third counter changes (the latency probe), the rest spread
/// over every kind of change a person or Gonzai makes.
fn pick(
    rng: &mut Rng,
    counter: &mut u64,
    shared: &Shared,
    my_nodes: &[String],
    my_edges: &[String],
) -> Op {
    match rng.below(100) {
        0..35 => {
            *counter += 1;
            Op::Counter(*counter)
        }
        35..45 => Op::Label,
        45..65 => Op::Text,
        65..73 => Op::Layout,
        73..83 => Op::EdgeCreate,
        83..90 if !my_edges.is_empty() || (!shared.edges.is_empty() && rng.chance(0.3)) => {
            Op::EdgeDelete
        }
        90..96 => Op::NodeCreate,
        96..100 if !my_nodes.is_empty() => Op::NodeDelete,
        _ => Op::Text,
    }
}

/// One change, ready to send.
enum Change {
    Mutate(Box<Body>, Option<String>),
    Text(String, bool, f64, String),
}

impl Change {
    async fn run(self, client: &Client) -> (Result<Outcome, ClientError>, Option<String>) {
        match self {
            Change::Mutate(body, created) => (client.mutate(*body).await, created),
            Change::Text(id, delete, at, insert) => {
                let outcome = client
                    .edit_text(&id, move |text| text_op(text, delete, at, &insert))
                    .await;
                (outcome, None)
            }
        }
    }
}

/// Deletes 4 characters, or inserts `insert`, at fraction `at` of the text.
fn text_op(text: &str, delete: bool, at: f64, insert: &str) -> TextOp {
    let len = text.chars().count() as u64;
    let mut op = TextOp::new();
    if delete && len >= 4 {
        let pos = ((len - 4) as f64 * at) as u64;
        op.retain(pos).delete(4).retain(len - 4 - pos);
    } else {
        let pos = (len as f64 * at) as u64;
        op.retain(pos).insert(insert).retain(len - pos);
    }
    op
}

#[allow(clippy::too_many_arguments)]
fn build(
    op: Op,
    rng: &mut Rng,
    shared: &Shared,
    user: &str,
    index: usize,
    made: u64,
    scheduled: Instant,
    my_nodes: &mut Vec<String>,
    my_edges: &mut Vec<String>,
) -> Change {
    // A third of the changes go to a few hot nodes, as when a team works on
    // one document: there concurrent changes meet and are merged.
    let any_node = |rng: &mut Rng| {
        let n = shared.node_ids.len();
        let range = if rng.chance(1.0 / 3.0) {
            HOT_NODES.min(n)
        } else {
            n
        };
        shared.node_ids[rng.below(range)].clone()
    };
    let update = |id: String, set: NodeSet| NodeUpdate {
        id,
        set: Some(set),
        ..NodeUpdate::default()
    };
    let body = match op {
        Op::Counter(n) => {
            let props = [
                ("n".to_owned(), Some(PropValue::Number(n as f64))),
                (
                    "t".to_owned(),
                    Some(PropValue::Number(shared.micros(scheduled) as f64)),
                ),
            ];
            Body::NodeUpdate(update(
                counter_id(index),
                NodeSet {
                    props: Some(props.into_iter().collect()),
                    ..NodeSet::default()
                },
            ))
        }
        Op::Label => Body::NodeUpdate(update(
            any_node(rng),
            NodeSet {
                label: Some(format!("edited by {user}, change {made}")),
                ..NodeSet::default()
            },
        )),
        Op::Text => {
            return Change::Text(
                any_node(rng),
                rng.chance(0.4),
                rng.unit(),
                format!(" [{user} {made}]"),
            )
        }
        Op::Layout => Body::BatchUpdate(gitmind_schema::message::BatchUpdate {
            base_seq: None,
            ops: (0..3)
                .map(|_| {
                    BatchOp::NodeUpdate(update(
                        any_node(rng),
                        NodeSet {
                            x: Some(rng.uniform(-1000.0..1000.0)),
                            y: Some(rng.uniform(-1000.0..1000.0)),
                            ..NodeSet::default()
                        },
                    ))
                })
                .collect(),
            commit: None,
        }),
        Op::EdgeCreate => {
            let (source, target) = (any_node(rng), any_node(rng));
            let edge = Edge {
                source,
                edge_type: "relates-to".into(),
                target,
                confidence: Some(0.5),
                rationale: Some(format!("noticed by {user}")),
                ..Edge::default()
            };
            let id = Edge::make_id(&edge.source, &edge.edge_type, &edge.target);
            return Change::Mutate(
                Box::new(Body::EdgeCreate(gitmind_schema::message::EdgeCreate {
                    base_seq: None,
                    edge,
                    commit: None,
                })),
                Some(id),
            );
        }
        Op::EdgeDelete => {
            // Its own edges first; else one of the starting graph's, which
            // may be gone already (then it is rolled back: not found).
            let id = my_edges.pop().unwrap_or_else(|| {
                let e = &shared.edges[rng.below(shared.edges.len())];
                Edge::make_id(&e.source, &e.edge_type, &e.target)
            });
            Body::EdgeDelete(gitmind_schema::message::EdgeDelete {
                id: Some(id),
                ..Default::default()
            })
        }
        Op::NodeCreate => {
            let id = format!("soak:{user}:{made}");
            let node = Node {
                id: id.clone(),
                kind: Some("concept".into()),
                label: Some(format!("made by {user}")),
                content: Some(String::new()),
                ..Node::default()
            };
            return Change::Mutate(
                Box::new(Body::NodeCreate(gitmind_schema::message::NodeCreate {
                    base_seq: None,
                    node,
                    commit: None,
                })),
                Some(id),
            );
        }
        Op::NodeDelete => Body::NodeDelete(gitmind_schema::message::NodeDelete {
            id: my_nodes.swap_remove(rng.below(my_nodes.len())),
            ..Default::default()
        }),
    };
    Change::Mutate(Box::new(body), None)
}

fn record(
    report: &mut WriterReport,
    shared: &Shared,
    done: Done,
    my_nodes: &mut Vec<String>,
    my_edges: &mut Vec<String>,
) {
    let Ok(outcome) = done.outcome else {
        report.unresolved += 1;
        return;
    };
    let latency = micros(done.finished.duration_since(done.scheduled)).max(1);
    let faulted = shared
        .faults
        .touched(&[report.index], done.scheduled, done.finished);
    let h = if faulted {
        &mut report.confirm_faulted
    } else {
        &mut report.confirm
    };
    let _ = h.record(latency);
    let (reference, seq, commit) = match outcome {
        Outcome::Confirmed(c) => {
            report.confirmed += 1;
            (c.reference, c.seq, c.commit)
        }
        Outcome::Resolved(c) => {
            report.resolved += 1;
            (c.reference, c.seq, c.commit)
        }
        Outcome::RolledBack(r) => {
            match report.rolled_back.iter_mut().find(|(k, _)| *k == r.reason) {
                Some((_, n)) => *n += 1,
                None => report.rolled_back.push((r.reason, 1)),
            }
            return;
        }
    };
    if let Op::Counter(n) = done.op {
        report.counter.push((seq, n));
    }
    match (done.op, done.created) {
        (Op::NodeCreate, Some(id)) => my_nodes.push(id),
        (Op::EdgeCreate, Some(id)) => my_edges.push(id),
        _ => {}
    }
    report.applied.push(Confirmed {
        reference,
        seq,
        commit,
    });
}

/// What a reader saw.
pub struct ReaderReport {
    /// Whether its connection stalls now and then.
    pub slow: bool,
    /// Scheduled write to delivery here, counter changes no fault touched.
    pub delivery: Histogram<u64>,
    /// The same, for deliveries a fault touched.
    pub delivery_faulted: Histogram<u64>,
    /// Syncs after the first (resumes).
    pub resyncs: u64,
    /// Of those, the ones that took the whole graph.
    pub snapshots: u64,
    /// The slowest delivery outside faults: (latency, scheduled time since
    /// the run's start), in microseconds.
    pub slowest: (u64, u64),
}

/// Drains a client's events until `stop`, measuring delivery of the
/// writers' counter changes (the run reports the readers').
pub async fn drain(
    index: usize,
    mut events: Events,
    shared: Arc<Shared>,
    slow: bool,
    stop: CancellationToken,
) -> ReaderReport {
    let mut report = ReaderReport {
        slow,
        delivery: histogram(),
        delivery_faulted: histogram(),
        resyncs: 0,
        snapshots: 0,
        slowest: (0, 0),
    };
    let mut first = true;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            None => break,
            // The first is the client's first sync, not a resume.
            Some(Event::Synced { mode, .. }) => {
                if std::mem::replace(&mut first, false) {
                    continue;
                }
                report.resyncs += 1;
                report.snapshots += u64::from(mode == SyncMode::Snapshot);
            }
            Some(Event::Change(envelope)) => {
                let now = Instant::now();
                let Body::NodeUpdate(u) = &envelope.body else {
                    continue;
                };
                let (Some(writer), Some(t)) = (
                    counter_writer(&u.id),
                    u.set
                        .as_ref()
                        .and_then(|s| s.props.as_ref())
                        .and_then(|p| p.get("t"))
                        .and_then(|v| match v {
                            Some(PropValue::Number(t)) => Some(*t as u64),
                            _ => None,
                        }),
                ) else {
                    continue;
                };
                let scheduled = shared.start + Duration::from_micros(t);
                let latency = micros(now.duration_since(scheduled)).max(1);
                let faulted = shared.faults.touched(&[index, writer], scheduled, now);
                let h = if faulted {
                    &mut report.delivery_faulted
                } else {
                    report.slowest = report.slowest.max((latency, t));
                    &mut report.delivery
                };
                let _ = h.record(latency);
            }
            Some(_) => {}
        }
    }
    report
}

/// Logs every time `client` is not connected as a fault of client `index`,
/// and moves its cursor now and then, until `stop`. Returns how many times
/// it lost its connection.
pub async fn watch(
    index: usize,
    client: Client,
    shared: Arc<Shared>,
    seed: u64,
    stop: CancellationToken,
) -> u64 {
    let mut rng = Rng::new(seed);
    let mut state = client.state();
    let mut open = None;
    let mut lost = 0;
    let mut cursor = tokio::time::interval(CURSOR_EVERY);
    loop {
        let connected = matches!(*state.borrow_and_update(), State::Connected { .. });
        match (connected, open) {
            (false, None) => {
                lost += 1;
                open = Some(shared.faults.open(Who::Client(index)));
            }
            (true, Some(handle)) => {
                shared.faults.close(handle);
                open = None;
            }
            _ => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = state.changed() => if changed.is_err() { break },
            _ = cursor.tick() => {
                if connected {
                    let node = shared.node_ids[rng.below(shared.node_ids.len())].clone();
                    let _ = client.cursor(rng.uniform(0.0..1000.0), rng.uniform(0.0..1000.0), Some(node)).await;
                }
            }
        }
    }
    if let Some(handle) = open {
        shared.faults.close(handle);
    }
    lost
}
