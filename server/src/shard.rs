//! Shards (ARCHITECTURE.md steps 1 and 5): one OS thread per core, pinned,
//! each running a single-threaded tokio runtime. A connection is accepted
//! onto one shard and lives there all its life.
//!
//! The hub talks to a shard through a bounded lock-free ring
//! ([`ShardLink`]); the shard's dispatcher drains it in order and appends
//! the shared, already encoded buffers to each local session's outgoing
//! queue. Nothing is encoded per recipient except outcomes and syncs, which
//! go to one session each.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use gitmind_schema::{binary, json, Envelope, MessageType};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::session::{Codec, Outbox};
use gitmind_owner::{SessionKey, SyncData};
use gitmind_schema::message::PresenceState;

/// Capacity of each hub-to-shard ring, in messages.
const RING_CAPACITY: usize = 1 << 16;

/// A message encoded once per codec in use.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// The JSON text, when a JSON session needs it.
    pub json: Option<Bytes>,
    /// The binary frame, when a binary session needs it.
    pub bin: Option<Bytes>,
}

impl Encoded {
    /// Encodes `envelope` for the codecs with sessions (`[json, binary]`).
    pub fn of(envelope: &Envelope, per_codec: [usize; 2]) -> Self {
        Encoded {
            json: (per_codec[0] > 0).then(|| json::encode(envelope)),
            bin: (per_codec[1] > 0).then(|| binary::encode(envelope)),
        }
    }

    /// The bytes for one codec.
    pub fn get(&self, codec: Codec) -> Option<&Bytes> {
        match codec {
            Codec::Json => self.json.as_ref(),
            Codec::Binary => self.bin.as_ref(),
        }
    }
}

/// One committed change, ready for fan-out.
#[derive(Debug)]
pub struct Released {
    /// Its `seq`.
    pub seq: u64,
    /// Sessions that get the outcome instead of the event.
    pub recipients: Vec<SessionKey>,
    /// The outcome, encoded by the recipient's shard in its codec.
    pub outcome: Envelope,
    /// The event, encoded once.
    pub event: Encoded,
}

/// What the hub sends a shard.
// `Sync` is the large one and the rarest (one per join or resync); boxing it
// would cost an allocation per message on the ring for nothing.
#[allow(clippy::large_enum_variant)]
pub enum ShardMsg {
    /// A session's `graph.sync`: after it, the session receives the graph's events.
    Sync {
        /// The session.
        session: SessionKey,
        /// Snapshot or delta.
        sync: SyncData,
        /// Presence of the graph's other sessions.
        presence: Vec<PresenceState>,
        /// The heartbeat interval to announce.
        heartbeat_ms: u64,
    },
    /// Committed changes of one graph, in `seq` order.
    Committed {
        /// The graph.
        graph: Arc<str>,
        /// The changes.
        items: Arc<Vec<Released>>,
        /// When the hub released them (for the fan-out latency metric).
        at: Instant,
    },
    /// An outcome for one session, outside the commit stream (a rollback,
    /// or the stored outcome of a repeated mutation id).
    Outcome {
        /// The session.
        session: SessionKey,
        /// The outcome.
        outcome: Envelope,
    },
    /// Presence, cursor or selection of session `from`, for the others.
    Ephemeral {
        /// The graph.
        graph: Arc<str>,
        /// The sender.
        from: SessionKey,
        /// Which kind, for coalescing.
        kind: MessageType,
        /// The message, encoded once.
        encoded: Arc<Encoded>,
    },
}

/// The hub's end of a shard's ring.
#[derive(Clone)]
pub struct ShardLink {
    ring: Arc<ArrayQueue<ShardMsg>>,
    notify: Arc<Notify>,
}

impl ShardLink {
    /// A new ring and the link to it.
    pub fn new() -> Self {
        ShardLink {
            ring: Arc::new(ArrayQueue::new(RING_CAPACITY)),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Queues a message for the shard and wakes it. When the ring is full
    /// the hub waits for the shard: back-pressure, never loss.
    pub fn send(&self, mut msg: ShardMsg) {
        loop {
            match self.ring.push(msg) {
                Ok(()) => break,
                Err(back) => {
                    msg = back;
                    self.notify.notify_one();
                    std::thread::yield_now();
                }
            }
        }
        self.notify.notify_one();
    }
}

impl Default for ShardLink {
    fn default() -> Self {
        Self::new()
    }
}

/// A shard's sessions and which graph each is on.
pub struct ShardState {
    /// This shard's index.
    pub index: usize,
    /// Every session on this shard, synced or not.
    sessions: HashMap<SessionKey, Rc<Outbox>>,
    /// Synced sessions per graph: those that receive events.
    graphs: HashMap<Arc<str>, Vec<SessionKey>>,
    metrics: Arc<Metrics>,
}

/// Shared handle to a shard's state, for its tasks.
pub type Shard = Rc<RefCell<ShardState>>;

impl ShardState {
    /// An empty shard.
    pub fn new(index: usize, metrics: Arc<Metrics>) -> Shard {
        Rc::new(RefCell::new(ShardState {
            index,
            sessions: HashMap::new(),
            graphs: HashMap::new(),
            metrics,
        }))
    }

    /// Registers a session; it receives events once its sync arrives.
    pub fn add(&mut self, session: SessionKey, outbox: Rc<Outbox>) {
        self.sessions.insert(session, outbox);
    }

    /// Forgets a session.
    pub fn remove(&mut self, session: SessionKey, graph: &Arc<str>) {
        self.sessions.remove(&session);
        if let Some(list) = self.graphs.get_mut(graph) {
            list.retain(|s| *s != session);
            if list.is_empty() {
                self.graphs.remove(graph);
            }
        }
    }

    /// Applies one message from the hub.
    fn dispatch(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Sync {
                session,
                sync,
                presence,
                heartbeat_ms,
            } => {
                let Some(outbox) = self.sessions.get(&session) else {
                    return;
                };
                let graph = outbox.graph.clone();
                outbox.push_sync(sync, presence, heartbeat_ms);
                let list = self.graphs.entry(graph).or_default();
                if !list.contains(&session) {
                    list.push(session);
                }
            }
            ShardMsg::Committed { graph, items, at } => {
                let Some(list) = self.graphs.get(&graph) else {
                    return;
                };
                for session in list {
                    let Some(outbox) = self.sessions.get(session) else {
                        continue;
                    };
                    for item in items.iter() {
                        if item.recipients.contains(session) {
                            outbox.push_envelope(item.outcome.clone());
                        } else if let Some(bytes) = item.event.get(outbox.codec) {
                            outbox.push_shared(bytes.clone(), item.seq);
                        }
                    }
                    outbox.wake();
                }
                // Outcomes for recipients that are not (yet) synced still go out.
                for item in items.iter() {
                    for session in &item.recipients {
                        if !list.contains(session) {
                            if let Some(outbox) = self.sessions.get(session) {
                                outbox.push_envelope(item.outcome.clone());
                                outbox.wake();
                            }
                        }
                    }
                }
                self.metrics.fanout_latency(at.elapsed());
            }
            ShardMsg::Outcome { session, outcome } => {
                if let Some(outbox) = self.sessions.get(&session) {
                    outbox.push_envelope(outcome);
                    outbox.wake();
                }
            }
            ShardMsg::Ephemeral {
                graph,
                from,
                kind,
                encoded,
            } => {
                let Some(list) = self.graphs.get(&graph) else {
                    return;
                };
                for session in list.iter().filter(|s| **s != from) {
                    if let Some(outbox) = self.sessions.get(session) {
                        outbox.push_ephemeral(from, kind, &encoded);
                        outbox.wake();
                    }
                }
            }
        }
    }
}

/// The shard's dispatcher: drains the ring in order, forever (until its
/// runtime stops).
pub async fn dispatch_loop(shard: Shard, link: ShardLink) {
    loop {
        link.notify.notified().await;
        while let Some(msg) = link.ring.pop() {
            shard.borrow_mut().dispatch(msg);
        }
    }
}
