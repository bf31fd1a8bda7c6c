//! A session's outgoing queue: what the shard's dispatcher queues for the
//! session and its task writes, bounded in bytes, with ephemeral messages
//! that a newer one replaces while they wait and a `graph.sync` streamed a
//! chunk at a time.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use gitmind_owner::{SessionKey, SyncData};
use gitmind_schema::message::PresenceState;
use gitmind_schema::{Body, Codec, Envelope, Limits, MessageType};
use tokio::sync::Notify;

use crate::fanout::{Digest, Refusal};
use crate::frames::Part;
use crate::metrics::Metrics;
use crate::sync_stream::{SyncCursor, SYNC_CHUNK_BYTES};
use crate::view::SessionView;

/// One queued item.
enum Out {
    /// Bytes encoded for this session's codec: one envelope (JSON) or one
    /// frame's payload (binary), or a run of them laid out once per shard.
    Frame(Part),
    /// An ephemeral message that a newer one from the same sender and of
    /// the same kind replaces while it waits (`version` tells which).
    Ephemeral {
        key: (SessionKey, MessageType),
        version: u64,
        bytes: Bytes,
    },
    /// A `graph.sync` still to send, encoded a chunk at a time as the
    /// writer reaches it: a snapshot of any size streams out without being
    /// held encoded, and what is queued after it waits behind it.
    Sync(Box<SyncCursor>),
    /// A presence digest, shared with every member: its notices are taken
    /// one by one as the writer reaches them, all but the session's own
    /// (`own`). One entry per member however many notices it holds, so ten
    /// thousand sessions leaving at once cost each remaining member a
    /// pointer, not ten thousand queue entries.
    Notices {
        digest: Arc<Digest>,
        own: SessionKey,
        next: usize,
        /// The bytes counted for it in the queue.
        len: usize,
    },
}

/// A session's outgoing queue, shared between its task and its shard's
/// dispatcher. Bounded: past `max_bytes` the session is a slow consumer,
/// its queue is dropped and it is closed with 4008 (it resumes with `since`
/// from the replay window, so nothing is lost).
pub struct Outbox {
    /// The session's codec.
    pub codec: Codec,
    /// What the session may see of its graph (`None`: all of it).
    pub view: SessionView,
    /// The graph the session is on.
    pub graph: Arc<str>,
    /// The session's user, stamped on what is addressed to it.
    user_id: String,
    /// The session's id, stamped on what is addressed to it.
    session_id: String,
    queue: RefCell<VecDeque<Out>>,
    bytes: Cell<usize>,
    max_bytes: usize,
    slow: Cell<bool>,
    /// Set when the hub cannot give the session its graph: it is closed.
    refused: Cell<Option<Refusal>>,
    /// Latest version of each coalescable ephemeral message in the queue.
    latest: RefCell<HashMap<(SessionKey, MessageType), u64>>,
    next_version: Cell<u64>,
    /// The highest `seq` queued for the session (for heartbeats).
    seq: Cell<u64>,
    /// Ids of the session's mutations sent on and not yet answered.
    in_flight: RefCell<HashSet<String>>,
    /// A `graph.sync` was asked of the hub and has not arrived yet.
    sync_asked: Cell<bool>,
    /// `graph.sync`s queued and not yet streamed out.
    syncs_queued: Cell<usize>,
    notify: Notify,
    /// Signalled when the session turns slow, to interrupt a blocked write.
    closing: Notify,
    metrics: Arc<Metrics>,
    shard: usize,
}

impl Outbox {
    /// An empty outbox for the session `member`.
    /// `user_id` and `session_id` are stamped on what is addressed to the
    /// session; its queued bytes count in shard `shard`'s gauge.
    pub fn new(
        codec: Codec,
        graph: Arc<str>,
        user_id: String,
        session_id: String,
        shard: usize,
        max_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Outbox {
            codec,
            view: None,
            graph,
            user_id,
            session_id,
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_bytes,
            slow: Cell::new(false),
            refused: Cell::new(None),
            latest: RefCell::new(HashMap::new()),
            next_version: Cell::new(0),
            seq: Cell::new(0),
            in_flight: RefCell::new(HashSet::new()),
            sync_asked: Cell::new(false),
            syncs_queued: Cell::new(0),
            notify: Notify::new(),
            closing: Notify::new(),
            metrics,
            shard,
        }
    }

    /// Wakes the session's task to write.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Waits until something is queued for the session to write.
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Whether the queue passed its limit: the session is a slow consumer
    /// and must be closed (its queue was dropped).
    pub fn is_slow(&self) -> bool {
        self.slow.get()
    }

    /// Why the hub could not give the session its graph, if it could not:
    /// the session must be closed.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refused.get()
    }

    /// Notes that the hub cannot give the session its graph, and wakes the
    /// session to close.
    pub fn refuse(&self, refusal: Refusal) {
        self.refused.set(Some(refusal));
        self.wake();
    }

    /// Waits until the session turns slow (to interrupt a blocked write).
    pub async fn turned_slow(&self) {
        self.closing.notified().await;
    }

    /// The highest `seq` queued for the session (for heartbeats).
    pub fn latest_seq(&self) -> u64 {
        self.seq.get()
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Whether anything waits (a sync still streaming counts).
    pub fn has_more(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Notes mutation `id` as sent on, unless `max` are already waiting for
    /// their outcome: then it must not go (`false`). A resent id that is
    /// still waiting counts once.
    pub fn mutation_sent(&self, id: &str, max: usize) -> bool {
        let mut in_flight = self.in_flight.borrow_mut();
        if in_flight.contains(id) {
            return true;
        }
        if in_flight.len() >= max {
            return false;
        }
        in_flight.insert(id.to_owned());
        true
    }

    /// Whether a `graph.sync` is on its way: asked of the hub, or queued
    /// and still streaming. One at a time: a flood of requests cannot
    /// make the server copy snapshots without bound.
    pub fn sync_busy(&self) -> bool {
        self.sync_asked.get() || self.syncs_queued.get() > 0
    }

    /// Notes that a `graph.sync` was asked of the hub.
    pub fn sync_asked(&self) {
        self.sync_asked.set(true);
    }

    /// Queues shared, pre-encoded graph events: one, or a run of them,
    /// the last of which is at `seq`.
    pub fn push_shared(&self, part: Part, seq: u64) {
        self.seq.set(self.seq.get().max(seq));
        self.push(Out::Frame(part));
    }

    /// Encodes and queues a message addressed to this session alone (an
    /// outcome, a sync, a system message): it carries the session's own
    /// `userId` and `sessionId` (docs/protocol.md 2.1).
    pub fn push_envelope(&self, mut envelope: Envelope) {
        if let Some(seq) = envelope.seq {
            self.seq.set(self.seq.get().max(seq));
        }
        if let Some(reference) = outcome_of(&envelope.body) {
            let mut in_flight = self.in_flight.borrow_mut();
            in_flight.remove(reference);
            if in_flight.is_empty() && in_flight.capacity() > 16 {
                *in_flight = HashSet::new();
            }
        }
        envelope.user_id = Some(self.user_id.clone());
        envelope.session_id = Some(self.session_id.clone());
        self.push(Out::Frame(Part::One(self.codec.encode(&envelope))));
    }

    /// Queues the presence notices of a digest about sessions other than
    /// `own` (`session`'s own notices are not echoed back to it).
    pub fn push_notices(&self, own: SessionKey, digest: &Arc<Digest>) {
        let len = digest
            .iter()
            .filter(|(about, _)| *about != own)
            .filter_map(|(_, encoded)| encoded[self.codec].as_ref())
            .map(Bytes::len)
            .sum();
        if len > 0 {
            self.push(Out::Notices {
                digest: Arc::clone(digest),
                own,
                next: 0,
                len,
            });
        }
    }

    /// Queues an ephemeral message of `kind` from session `from`. When
    /// `coalesce` and a backlog waits, it replaces the previous one of the
    /// same sender and kind still waiting (latest wins).
    pub fn push_ephemeral(
        &self,
        from: SessionKey,
        kind: MessageType,
        bytes: Bytes,
        coalesce: bool,
    ) {
        if !coalesce || self.queue.borrow().is_empty() {
            return self.push(Out::Frame(Part::One(bytes)));
        }
        let version = self.next_version.get() + 1;
        self.next_version.set(version);
        self.latest.borrow_mut().insert((from, kind), version);
        self.push(Out::Ephemeral {
            key: (from, kind),
            version,
            bytes,
        });
    }

    /// Cuts a sync into chunks, encodes and queues them.
    pub fn push_sync(&self, sync: SyncData, presence: Vec<Arc<PresenceState>>, heartbeat_ms: u64) {
        self.sync_asked.set(false);
        let cursor = SyncCursor::new(sync, presence, heartbeat_ms);
        self.seq.set(self.seq.get().max(cursor.seq));
        if !self.slow.get() {
            self.queue
                .borrow_mut()
                .push_back(Out::Sync(Box::new(cursor)));
            self.syncs_queued.set(self.syncs_queued.get() + 1);
        }
        self.wake();
    }

    fn push(&self, out: Out) {
        if self.slow.get() {
            return;
        }
        let len = match &out {
            Out::Frame(part) => part.bytes().len(),
            Out::Ephemeral { bytes, .. } => bytes.len(),
            Out::Notices { len, .. } => *len,
            Out::Sync(_) => 0,
        };
        let bytes = self.bytes.get() + len;
        if bytes > self.max_bytes {
            self.slow.set(true);
            self.metrics.shards[self.shard]
                .queued_bytes
                .fetch_sub(self.bytes.get() as i64, Relaxed);
            self.bytes.set(0);
            self.queue.borrow_mut().clear();
            self.syncs_queued.set(0);
            self.latest.borrow_mut().clear();
            self.closing.notify_one();
            self.wake();
            return;
        }
        self.bytes.set(bytes);
        self.metrics.shards[self.shard]
            .queued_bytes
            .fetch_add(len as i64, Relaxed);
        self.queue.borrow_mut().push_back(out);
    }

    /// Frees the queue's buffer if nothing waits (for a session gone quiet;
    /// not after each write, where the next push would allocate it again).
    pub fn trim(&self) {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            *queue = VecDeque::new();
        }
    }

    /// Takes queued frames for one write: up to `limits.max_frame_bytes`
    /// bytes and `limits.max_envelopes` envelopes of JSON joined into one
    /// text frame (the limits a client holds a frame to), or binary frames
    /// as they are. A run is taken whole (the shard makes none larger than
    /// the limits); the messages taken are counted in `messages`.
    pub fn take_batch(&self, limits: &Limits, into: &mut Vec<Part>) {
        let max_frame = limits.max_frame_bytes;
        let mut queue = self.queue.borrow_mut();
        let mut latest = self.latest.borrow_mut();
        let (mut taken, mut messages) = (0, 0);
        while let Some(out) = queue.front_mut() {
            if messages >= limits.max_envelopes {
                break;
            }
            let len = match out {
                Out::Frame(part) => {
                    if messages > 0 && messages + part.messages() > limits.max_envelopes {
                        break;
                    }
                    part.bytes().len()
                }
                Out::Ephemeral { bytes, .. } => bytes.len(),
                Out::Notices {
                    digest,
                    own,
                    next,
                    len,
                } => {
                    // As many of the digest's notices as fit; it stays in
                    // front until the last one is out.
                    while let Some((about, encoded)) = digest.get(*next) {
                        let Some(bytes) = encoded[self.codec].as_ref() else {
                            *next += 1;
                            continue;
                        };
                        if about == own {
                            *next += 1;
                            continue;
                        }
                        if messages >= limits.max_envelopes
                            || (taken > 0 && taken + bytes.len() > max_frame)
                        {
                            break;
                        }
                        into.push(Part::One(bytes.clone()));
                        taken += bytes.len();
                        messages += 1;
                        *next += 1;
                    }
                    if *next < digest.len() {
                        break;
                    }
                    let len = *len;
                    queue.pop_front();
                    self.bytes.set(self.bytes.get() - len);
                    self.metrics.shards[self.shard]
                        .queued_bytes
                        .fetch_sub(len as i64, Relaxed);
                    continue;
                }
                Out::Sync(cursor) => {
                    // Next chunk of a sync: made now, the cursor stays in
                    // front until its last chunk is out.
                    if taken > 0 && taken + 2 * SYNC_CHUNK_BYTES > max_frame {
                        break;
                    }
                    match cursor.next_envelope() {
                        Some(mut envelope) => {
                            envelope.user_id = Some(self.user_id.clone());
                            envelope.session_id = Some(self.session_id.clone());
                            let bytes = self.codec.encode(&envelope);
                            taken += bytes.len();
                            messages += 1;
                            into.push(Part::One(bytes));
                        }
                        None => {
                            queue.pop_front();
                            self.syncs_queued.set(self.syncs_queued.get() - 1);
                            if queue.is_empty() {
                                // A join's sync is often the last thing a
                                // session gets for a while: hold no queue.
                                *queue = VecDeque::new();
                            }
                        }
                    }
                    continue;
                }
            };
            if taken > 0 && taken + len > max_frame {
                break;
            }
            let Some(out) = queue.pop_front() else { break };
            self.bytes.set(self.bytes.get() - len);
            self.metrics.shards[self.shard]
                .queued_bytes
                .fetch_sub(len as i64, Relaxed);
            match out {
                Out::Sync(_) | Out::Notices { .. } => {}
                Out::Frame(part) => {
                    messages += part.messages();
                    into.push(part);
                }
                Out::Ephemeral {
                    key,
                    version,
                    bytes,
                } => {
                    if latest.get(&key) == Some(&version) {
                        latest.remove(&key);
                        messages += 1;
                        into.push(Part::One(bytes));
                    }
                    // else: superseded by a newer one further back.
                }
            }
            taken += len;
        }
        // Give back what a burst grew, so an idle session holds nothing.
        if queue.is_empty() && queue.capacity() > 32 {
            *queue = VecDeque::new();
        }
        if latest.is_empty() && latest.capacity() > 0 {
            *latest = HashMap::new();
        }
    }
}

/// The mutation an outcome answers, if `body` is an outcome.
fn outcome_of(body: &Body) -> Option<&str> {
    match body {
        Body::UpdateConfirmed(o) => Some(&o.reference),
        Body::UpdateConflictResolved(o) => Some(&o.reference),
        Body::UpdateRollback(o) => Some(&o.reference),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fanout::Encoded;
    use crate::sync_stream::test_snapshot;
    use gitmind_schema::json;
    use gitmind_schema::message::CursorMove;

    fn outbox(max: usize) -> Outbox {
        let metrics = Arc::new(Metrics::new(1));
        Outbox::new(
            Codec::Json,
            "g".into(),
            "u".into(),
            "s".into(),
            0,
            max,
            metrics,
        )
    }

    /// Takes batches until none is left.
    fn batches(out: &Outbox) -> Vec<Vec<Part>> {
        let mut batches = Vec::new();
        loop {
            let mut batch = Vec::new();
            out.take_batch(&Limits::default(), &mut batch);
            if batch.is_empty() {
                return batches;
            }
            batches.push(batch);
        }
    }

    fn one(bytes: &'static [u8]) -> Part {
        Part::One(Bytes::from_static(bytes))
    }

    fn cursor(x: f64) -> Bytes {
        let env = Envelope::new(
            "c",
            Body::CursorMove(CursorMove {
                x,
                y: 0.0,
                node_id: None,
            }),
        );
        json::encode(&env)
    }

    #[test]
    fn a_backlog_goes_out_in_frames_of_at_most_the_envelope_limit() {
        // Found by the soak test: after a restart, a JSON client's backlog
        // of small events went out as one array of 2,383 messages, which the
        // client (rightly) refused as over the limit of 1,000.
        let out = outbox(1 << 24);
        for _ in 0..2_500 {
            out.push_shared(one(b"{}"), 1);
        }
        let sizes: Vec<usize> = batches(&out).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn a_run_counts_its_messages_against_the_envelope_limit_and_is_taken_whole() {
        let out = outbox(1 << 24);
        let events = vec![Bytes::from_static(b"{}"); 400];
        for seq in 1..=3 {
            out.push_shared(Part::run(Codec::Json, events.iter()), seq);
        }
        assert_eq!(out.latest_seq(), 3);
        let runs: Vec<Vec<usize>> = batches(&out)
            .iter()
            .map(|batch| batch.iter().map(Part::messages).collect())
            .collect();
        assert_eq!(runs, [vec![400, 400], vec![400]]);
    }

    #[test]
    fn cursor_moves_coalesce_under_backlog() {
        let out = outbox(1 << 20);
        out.push_shared(one(b"{}"), 1);
        for x in 0..5 {
            out.push_ephemeral(7, MessageType::CursorMove, cursor(f64::from(x)), true);
        }
        let mut batch = Vec::new();
        out.take_batch(&Limits::default(), &mut batch);
        assert_eq!(batch.len(), 2, "the event and only the latest cursor");
        assert!(std::str::from_utf8(batch[1].bytes())
            .unwrap()
            .contains("\"x\":4"));
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn queue_past_its_limit_marks_slow_and_drops_everything() {
        let out = outbox(10);
        out.push_shared(one(b"12345678"), 1);
        assert!(!out.slow.get());
        out.push_shared(one(b"12345"), 2);
        assert!(out.slow.get());
        assert_eq!(out.queued_bytes(), 0);
        out.push_shared(one(b"1"), 3);
        assert_eq!(
            out.queued_bytes(),
            0,
            "nothing is queued for a closing session"
        );
    }

    #[test]
    fn a_sync_larger_than_the_queue_limit_streams_without_turning_slow() {
        let out = outbox(64 * 1024);
        out.push_shared(one(b"{}"), 1);
        out.push_sync(test_snapshot(3000), Vec::new(), 25_000);
        out.push_shared(one(b"{\"after\":1}"), 10);
        assert!(
            !out.slow.get(),
            "a sync is not counted against the queue limit"
        );
        let (mut frames, mut total) = (Vec::new(), 0);
        while out.has_more() {
            let mut batch = Vec::new();
            out.take_batch(&Limits::default(), &mut batch);
            assert!(
                batch.iter().map(|p| p.bytes().len()).sum::<usize>() <= 1 << 20,
                "each write within the frame limit"
            );
            frames.extend(batch);
        }
        assert_eq!(
            &frames[0].bytes()[..],
            b"{}",
            "what was queued before the sync goes first"
        );
        assert_eq!(
            &frames[frames.len() - 1].bytes()[..],
            b"{\"after\":1}",
            "what was queued after it waits for its last chunk"
        );
        for frame in &frames[1..frames.len() - 1] {
            let envelope = json::decode_one(
                std::str::from_utf8(frame.bytes()).unwrap(),
                &Limits::default(),
            )
            .unwrap();
            let Body::GraphSync(s) = envelope.body else {
                panic!()
            };
            total += s.nodes.unwrap().len();
        }
        assert_eq!(total, 3000);
    }

    #[test]
    fn a_sync_is_on_its_way_from_the_ask_until_its_last_chunk_is_taken() {
        let out = outbox(1 << 20);
        assert!(!out.sync_busy());
        out.sync_asked();
        assert!(out.sync_busy(), "asked");
        out.push_sync(test_snapshot(3000), Vec::new(), 25_000);
        assert!(out.sync_busy(), "queued");
        while out.has_more() {
            out.take_batch(&Limits::default(), &mut Vec::new());
        }
        assert!(!out.sync_busy(), "streamed out");
    }

    #[test]
    fn a_digest_is_one_queue_entry_taken_a_frame_at_a_time_without_the_own_notice() {
        let o = outbox(1 << 30);
        let digest: Arc<Digest> = Arc::new(
            (0..3000u64)
                .map(|about| {
                    let mut encoded = Encoded::default();
                    encoded[Codec::Json] = Some(cursor(about as f64));
                    (about, encoded)
                })
                .collect(),
        );
        o.push_notices(7, &digest);
        assert_eq!(o.queue.borrow().len(), 1, "one entry, not 3000");
        let limits = Limits::default();
        let (mut taken, mut batches) = (Vec::new(), 0);
        loop {
            let mut batch = Vec::new();
            o.take_batch(&limits, &mut batch);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= limits.max_envelopes);
            batches += 1;
            taken.extend(batch);
        }
        assert_eq!(taken.len(), 2999, "all but the session's own");
        assert!(!taken.contains(&Part::One(cursor(7.0))));
        assert!(batches >= 3, "cut at the envelope limit");
        assert_eq!(o.bytes.get(), 0);
        assert_eq!(o.queue.borrow().len(), 0);
    }
}
