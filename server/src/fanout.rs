//! Fan-out (docs/architecture.md, "The data path"): what the hub sends each
//! shard, and the lock-free ring it goes through.
//!
//! The hub encodes every event once per codec in use ([`Encoded`]) and
//! pushes one message per shard with sessions on the graph; each shard's
//! dispatcher drains its ring in order and appends the shared buffers to
//! its sessions' outboxes. Nothing is encoded per recipient except outcomes
//! and syncs, which go to one session each. One hub and one FIFO ring per
//! shard make the order: a session's `graph.sync` is queued at the exact
//! point of the event stream it describes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use gitmind_owner::change::ChangeRecord;
use gitmind_owner::{SessionKey, SyncData};
use gitmind_schema::message::PresenceState;
use gitmind_schema::{Codec, Envelope, MessageType, PerCodec};
use tokio::sync::Notify;

use crate::view::{SessionView, View};

/// Capacity of each hub-to-shard ring, in messages.
const RING_CAPACITY: usize = 1 << 16;

/// A session as the hub and its shard route to it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The server's handle of the session.
    pub session: SessionKey,
    /// The shard it lives on.
    pub shard: usize,
    /// Its codec.
    pub codec: Codec,
    /// The graph it is on.
    pub graph: Arc<str>,
    /// Its user.
    pub user_id: String,
    /// Its session id.
    pub session_id: String,
    /// What it may see of the graph (`None`: all of it).
    pub view: SessionView,
}

/// A message encoded once for each codec that has sessions.
pub type Encoded = PerCodec<Option<Bytes>>;

/// Encodes `envelope` for each codec with at least one session in `in_use`.
pub fn encode(envelope: &Envelope, in_use: PerCodec<usize>) -> Encoded {
    PerCodec::from_fn(|codec| (in_use[codec] > 0).then(|| codec.encode(envelope)))
}

/// Presence notices of one tick, each with the session it is about.
pub type Digest = Vec<(SessionKey, Encoded)>;

/// Encodes each notice once for each codec in use. The subject of a notice
/// is the session in its envelope; the hub gives it alongside.
pub fn encode_digest(notices: Vec<(SessionKey, Envelope)>, in_use: PerCodec<usize>) -> Digest {
    notices
        .into_iter()
        .map(|(session, notice)| (session, encode(&notice, in_use)))
        .collect()
}

/// One committed change, ready for fan-out.
#[derive(Debug)]
pub struct Released {
    /// Its `seq`.
    pub seq: u64,
    /// Sessions that get the outcome instead of the event.
    pub recipients: Vec<SessionKey>,
    /// The change, shared with the owner's replay window: its outcome
    /// ([`Released::outcome`]) is encoded by the recipient's shard in its
    /// codec.
    pub change: Arc<ChangeRecord>,
    /// The event, encoded once, for the sessions that see everything.
    pub event: Encoded,
    /// The event as each other view on the graph sees it, encoded once per
    /// view (`None`: out of that view).
    pub views: Vec<(Arc<View>, Option<Encoded>)>,
    /// The group of each session whose regions cut the change
    /// (see the `subscriptions` module); such a session takes its group's cut
    /// instead of `event` or its view's.
    pub groups: Arc<HashMap<SessionKey, usize>>,
    /// The event as each group sees it, encoded once per group (`None`:
    /// nothing of it in the group's regions).
    pub cuts: Vec<Option<Encoded>>,
    /// What some sessions get after this change: region enters and leaves,
    /// query results.
    pub extras: HashMap<SessionKey, Vec<Envelope>>,
}

impl Released {
    /// The outcome, for `recipients`.
    pub fn outcome(&self) -> &Envelope {
        &self.change.outcome
    }

    /// The event's bytes for `session`, of `view` and `codec`.
    pub fn event_for(
        &self,
        session: SessionKey,
        view: Option<&Arc<View>>,
        codec: Codec,
    ) -> Option<&Bytes> {
        if let Some(&group) = self.groups.get(&session) {
            return self.cuts.get(group)?.as_ref()?[codec].as_ref();
        }
        match view {
            None => self.event[codec].as_ref(),
            Some(view) => self
                .views
                .iter()
                .find(|(v, _)| v == view)
                .and_then(|(_, encoded)| encoded.as_ref()?[codec].as_ref()),
        }
    }
}

/// Why the hub cannot give a session its graph: the session is closed
/// (docs/protocol.md 10.3 and 10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The hub holds `max_open_graphs` graphs and none is idle: the client
    /// is told to come back later (`too_many_graphs`, 1013).
    TooManyGraphs,
    /// The graph could not be read from git (1011; the cause is logged).
    LoadFailed,
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
        presence: Vec<Arc<PresenceState>>,
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
    /// A session that joined cannot have its graph (it gets no sync).
    Refused {
        /// The session.
        session: SessionKey,
        /// Why.
        refusal: Refusal,
    },
    /// A graph's presence notices of one tick (joins, leaves, changes), for
    /// every synced session of the graph but each notice's own subject.
    Digest {
        /// The graph.
        graph: Arc<str>,
        /// The notices, each encoded once ([`encode_digest`]).
        notices: Arc<Digest>,
    },
    /// A cursor or selection of session `from`, for the others.
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

/// A hub-to-shard ring: the hub holds a clone to send, the shard's
/// dispatcher receives.
#[derive(Clone)]
pub struct ShardLink {
    ring: Arc<ArrayQueue<ShardMsg>>,
    notify: Arc<Notify>,
}

impl ShardLink {
    /// A new, empty ring.
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

    /// Waits until the hub has sent something (for the shard).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// The next message, in the order sent (for the shard).
    pub fn pop(&self) -> Option<ShardMsg> {
        self.ring.pop()
    }
}

impl Default for ShardLink {
    fn default() -> Self {
        Self::new()
    }
}
