//! The graph owner (ARCHITECTURE.md step 3): the single place where one
//! graph's changes are validated, ordered, merged with concurrent changes and
//! applied, as pure logic: mutations in, outcomes and events out, no I/O, no
//! clock, no thread.
//!
//! # Flow
//!
//! 1. [`Owner::submit`] validates a mutation (docs/protocol.md 3), resolves it
//!    against concurrent changes (4.2), applies it to the live graph and
//!    gives it the next `seq` ([`Submit::Ordered`]); or refuses it at once
//!    ([`Submit::Reply`] with `update.rollback`). A repeated mutation id gets
//!    its original outcome (4.4).
//! 2. [`Owner::take_group`] hands the changes ordered since its last call to
//!    the git persistence thread.
//! 3. [`Owner::committed`] is told when they are in git, and releases each
//!    change's outcome to its sender and its event to everyone else, both
//!    carrying the commit; [`Owner::commit_failed`] undoes every uncommitted
//!    change instead, and answers each with `update.rollback` `unavailable`.
//! 4. [`Owner::sync`] answers `graph.sync` as of the committed `seq`: never
//!    showing a change that is not yet in git.
//!
//! # Data structures
//!
//! - The live graph ([`graph::Live`]) is a set of plain hash maps, changed
//!   in place; every change records undo steps so a failing batch op or a
//!   failed commit can be undone exactly.
//! - The committed graph is a pair of persistent maps (`imbl`) of shared
//!   nodes and edges, updated from each committed change's writes, so a
//!   snapshot for `graph.sync` is an O(1) clone the caller can walk and
//!   encode off the owner's thread.
//! - The replay window, the text histories, the tombstones and the index of
//!   mutation ids hold at least the last `replay_changes` changes or
//!   `replay_ms` of them, whichever is more, and no more.

pub mod change;
mod graph;
mod history;
pub mod validate;

use std::collections::{HashMap, VecDeque};

use imbl::shared_ptr::DefaultSharedPtr;
use std::sync::Arc;

use gitmind_schema::message::{
    BatchOp, BatchUpdate, RollbackReason, UpdateConfirmed, UpdateConflictResolved, UpdateRollback,
};
use gitmind_schema::model::{Edge, Node, OpResolution, Resolution};
use gitmind_schema::{Body, Envelope};

use crate::change::{ChangeRecord, Group, Restored, Write};
use crate::graph::{Actor, ActorInfo, Cx, EdgeEntry, Live, Meta, NodeEntry, OpRef, Stamp, Tomb};
use crate::history::{CommittedChange, Idempotency, Refused, TextHistory, Window};
use crate::validate::Refusal;

/// How an owner behaves; `Default` gives the protocol's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerConfig {
    /// The edge types an edge may have (docs/protocol.md 3): by default the 12
    /// of the protocol; a deployment may add more.
    pub edge_types: Vec<String>,
    /// The replay window keeps at least this many changes...
    pub replay_changes: usize,
    /// ...or the changes of at least this many milliseconds, whichever is more.
    pub replay_ms: u64,
    /// The most ops in one `batch.update`.
    pub max_batch_ops: usize,
    /// The largest event or outcome, in bytes of either codec (the frame
    /// limit): a change whose event would be larger is refused.
    pub max_event_bytes: usize,
    /// The seed of every map's hasher ([`Hasher`]): the same seed and the
    /// same input give the same maps in the same order (a snapshot lists
    /// nodes in the same order). A server picks a random one at start, so
    /// that ids chosen by clients cannot be aimed at hash collisions.
    pub hash_seed: u64,
}

/// How the owner's maps hash: foldhash, seeded by [`OwnerConfig::hash_seed`].
pub type Hasher = foldhash::fast::FixedState;

/// A hash map of the owner.
pub(crate) type Map<K, V> = HashMap<K, V, Hasher>;

/// A persistent map of committed entities by id.
type Committed<T> = imbl::GenericHashMap<Arc<str>, Arc<T>, Hasher, DefaultSharedPtr>;

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            edge_types: validate::DEFAULT_EDGE_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            replay_changes: 100_000,
            replay_ms: 600_000,
            max_batch_ops: 1000,
            max_event_bytes: gitmind_schema::Limits::default().max_frame_bytes,
            hash_seed: 0,
        }
    }
}

/// The server's handle of a session; opaque to the owner, which only hands
/// it back in [`Release::recipients`] and [`Owner::commit_failed`].
pub type SessionKey = u64;

/// Who sent a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The server's handle of the session.
    pub session: SessionKey,
    /// The session's protocol id (`sessionId`).
    pub session_id: String,
    /// The session's user (`userId`).
    pub user_id: String,
}

/// What became of a submitted mutation.
// The envelope is not boxed: the API is shared with the server, and a
// `Submit` is moved once, straight to the sender.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Submit {
    /// Ordered as this `seq`; its outcome comes out of [`Owner::committed`]
    /// (or [`Owner::commit_failed`]). Also the answer to a repeat of a
    /// mutation that is still waiting for its commit: the repeating session
    /// then receives the outcome too.
    Ordered(u64),
    /// Send this outcome to the sender now: a rollback, or the original
    /// outcome of a repeated, already committed mutation.
    Reply(Envelope),
}

/// A committed change, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The change's `seq`.
    pub seq: u64,
    /// Who receives `outcome`: the sender, and any session of the same user
    /// that repeated the mutation id while it waited for its commit. Every
    /// other session of the graph receives `event`.
    pub recipients: Vec<SessionKey>,
    /// `update.confirmed` or `update.conflict_resolved`, with `commit`. Its
    /// `sessionId` is the sender's; a server that sends it to a repeating
    /// session may put that session's id there.
    pub outcome: Envelope,
    /// The graph event, with `commit` in its data.
    pub event: Envelope,
}

/// Nodes or edges of a committed snapshot: an O(1) clone of the owner's
/// persistent map, to walk and encode anywhere.
#[derive(Debug, Clone)]
pub struct Entities<T: Clone>(Committed<T>);

impl<T: Clone> Entities<T> {
    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each of them, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> + '_ {
        self.0.values()
    }

    /// The one with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<T>> {
        self.0.get(id)
    }
}

/// What has an id in a snapshot.
pub trait Keyed {
    /// The id.
    fn key(&self) -> String;
}

impl Keyed for Node {
    fn key(&self) -> String {
        self.id.clone()
    }
}

impl Keyed for Edge {
    fn key(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| Edge::make_id(&self.source, &self.edge_type, &self.target))
    }
}

impl<T: Clone + Keyed> From<Vec<Arc<T>>> for Entities<T> {
    fn from(all: Vec<Arc<T>>) -> Self {
        Entities(
            all.into_iter()
                .map(|e| (Arc::from(e.key().as_str()), e))
                .collect(),
        )
    }
}

/// The nodes or edges of a snapshot, by value.
#[allow(missing_debug_implementations)]
pub struct IntoIter<T: Clone>(imbl::hashmap::ConsumingIter<(Arc<str>, Arc<T>), DefaultSharedPtr>);

impl<T: Clone> Iterator for IntoIter<T> {
    type Item = Arc<T>;

    fn next(&mut self) -> Option<Arc<T>> {
        self.0.next().map(|(_, v)| v)
    }
}

impl<T: Clone> IntoIterator for Entities<T> {
    type Item = Arc<T>;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter(self.0.into_iter())
    }
}

impl<'a, T: Clone> IntoIterator for &'a Entities<T> {
    type Item = &'a Arc<T>;
    type IntoIter = imbl::hashmap::Values<'a, Arc<str>, Arc<T>, DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.values()
    }
}

impl<T: Clone> Default for Entities<T> {
    fn default() -> Self {
        Entities(Committed::default())
    }
}

/// What a `graph.sync` carries (docs/protocol.md 6), as of the committed `seq`.
#[derive(Debug, Clone)]
pub enum SyncData {
    /// The whole committed graph.
    Snapshot {
        /// The graph's epoch.
        epoch: String,
        /// The committed `seq` it is as of.
        seq: u64,
        /// Every node.
        nodes: Entities<Node>,
        /// Every edge.
        edges: Entities<Edge>,
    },
    /// The committed events after the client's `since`, in order.
    Delta {
        /// The graph's epoch.
        epoch: String,
        /// The committed `seq` it brings the client to.
        seq: u64,
        /// The events, with `commit`.
        events: Vec<Envelope>,
    },
}

impl SyncData {
    /// A snapshot as the JSON body of `GET /v1/graphs/{graph}`:
    /// `{epoch, seq, nodes, edges}`, nodes and edges sorted by id so the
    /// same graph always reads the same; `None` for a delta.
    pub fn snapshot_json(&self) -> Option<Vec<u8>> {
        #[derive(serde::Serialize)]
        struct Snapshot<'a> {
            epoch: &'a str,
            seq: u64,
            nodes: Vec<&'a Node>,
            edges: Vec<&'a Edge>,
        }
        let SyncData::Snapshot {
            epoch,
            seq,
            nodes,
            edges,
        } = self
        else {
            return None;
        };
        let mut nodes: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
        nodes.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<&Edge> = edges.iter().map(|e| &**e).collect();
        edges.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let snapshot = Snapshot {
            epoch,
            seq: *seq,
            nodes,
            edges,
        };
        // Nodes and edges are plain data with string keys: this cannot fail.
        serde_json::to_vec(&snapshot).ok()
    }
}

/// A change ordered but not yet committed.
#[derive(Debug)]
struct Pending {
    /// The change.
    record: Arc<ChangeRecord>,
    /// How to undo it if its commit fails.
    undo: Vec<graph::Undo>,
    /// Who receives its outcome.
    recipients: Vec<SessionKey>,
}

/// The most sessions whose actor is cached before the cache is cleared.
const MAX_CACHED_ACTORS: usize = 65_536;

/// The owner of one graph. See the [module documentation](self).
#[derive(Debug)]
pub struct Owner {
    graph: String,
    epoch: String,
    config: OwnerConfig,
    live: Live,
    committed_nodes: Committed<Node>,
    committed_edges: Committed<Edge>,
    ordered_seq: u64,
    committed_seq: u64,
    /// Uncommitted changes, in `seq` order (the first is `committed_seq + 1`).
    pending: VecDeque<Pending>,
    /// How many of `pending` were handed out by `take_group`.
    taken: usize,
    window: Window,
    idempotency: Idempotency,
    /// The rollbacks given within the window, for resent ids (4.4).
    refused: Refused,
    actors: Map<SessionKey, Actor>,
    /// The latest time seen, for the window's time bound.
    now_ms: u64,
    /// Counter for rollback ids.
    rollbacks: u64,
}

impl Owner {
    /// An owner of an empty graph.
    pub fn new(graph: &str, epoch: String, config: OwnerConfig) -> Owner {
        let hasher = Hasher::with_seed(config.hash_seed);
        Owner {
            graph: graph.to_owned(),
            epoch,
            config,
            live: Live::with_hasher(&hasher),
            committed_nodes: Committed::with_hasher(hasher.clone()),
            committed_edges: Committed::with_hasher(hasher.clone()),
            ordered_seq: 0,
            committed_seq: 0,
            pending: VecDeque::new(),
            taken: 0,
            window: Window::default(),
            idempotency: Idempotency::with_hasher(hasher.clone()),
            refused: Refused::with_hasher(hasher.clone()),
            actors: Map::with_hasher(hasher),
            now_ms: 0,
            rollbacks: 0,
        }
    }

    /// Rebuilds an owner from what persistence found in git: the graph as
    /// committed, its `seq` and epoch, and from the journal the replay
    /// window, the concurrency metadata (who changed which field when), the
    /// text histories, the tombstones and the mutation ids.
    ///
    /// What happened before the journal is not known: entities older than
    /// it count as existing since `seq` 0, and their text history starts at
    /// the journal's start.
    pub fn restore(restored: Restored, config: OwnerConfig) -> Owner {
        let Restored {
            graph,
            epoch,
            seq,
            nodes,
            edges,
            journal,
        } = restored;
        let mut owner = Owner::new(&graph, epoch, config);
        let journal_floor = journal.first().map_or(seq, |r| r.seq.saturating_sub(1));
        for node in nodes {
            let id = node.id.clone();
            let node = Arc::new(node);
            owner
                .committed_nodes
                .insert(Arc::from(id.as_str()), Arc::clone(&node));
            let entry = NodeEntry {
                node,
                meta: Meta::default(),
                text: TextHistory::starting_at(journal_floor),
                edges: Default::default(),
            };
            owner.live.nodes.insert(id, entry);
        }
        for mut edge in edges {
            let id = edge
                .id
                .clone()
                .unwrap_or_else(|| Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
            edge.id = Some(id.clone());
            for end in [&edge.source, &edge.target] {
                if let Some(n) = owner.live.nodes.get_mut(end) {
                    n.edges.insert(id.clone());
                }
            }
            let edge = Arc::new(edge);
            owner
                .committed_edges
                .insert(Arc::from(id.as_str()), Arc::clone(&edge));
            owner.live.edges.insert(
                id,
                EdgeEntry {
                    edge,
                    meta: Meta::default(),
                },
            );
        }
        owner.ordered_seq = seq;
        owner.committed_seq = seq;
        owner.window.floor = journal_floor;
        let mut actors: HashMap<(String, String), Actor> = HashMap::new();
        // The length of each node's content as the journal goes, where known.
        let mut lengths: HashMap<String, u64> = HashMap::new();
        for record in journal {
            let actor = actors
                .entry((record.session_id.clone(), record.user_id.clone()))
                .or_insert_with(|| {
                    Arc::new(ActorInfo {
                        session_id: record.session_id.clone(),
                        user_id: record.user_id.clone(),
                    })
                })
                .clone();
            let stamp = Stamp {
                seq: record.seq,
                actor,
            };
            match &record.event.body {
                Body::BatchUpdate(b) => {
                    for op in &b.ops {
                        owner.replay_op(OpRef::of(op), &stamp, &mut lengths);
                    }
                }
                body => {
                    if let Some(op) = op_of_body(body) {
                        owner.replay_op(op, &stamp, &mut lengths);
                    }
                }
            }
            // The edges deleted with a node are named only by the writes.
            for write in &record.writes {
                if let Write::EdgeDeleted(id) = write {
                    let tomb = Tomb {
                        seq: record.seq,
                        actor: Arc::clone(&stamp.actor),
                    };
                    owner.live.edge_tombs.insert(id.clone(), tomb);
                }
            }
            owner
                .idempotency
                .insert(&record.user_id, &record.mutation_id, record.seq);
            owner.now_ms = owner.now_ms.max(record.at_ms);
            let commit: Arc<str> = Arc::from(commit_of(&record.outcome).unwrap_or_default());
            owner.window.changes.push_back(CommittedChange {
                record: Arc::new(record),
                commit,
            });
        }
        owner
    }

    /// Rebuilds the metadata one journaled event op implies.
    fn replay_op(&mut self, op: OpRef<'_>, stamp: &Stamp, lengths: &mut HashMap<String, u64>) {
        let seq = stamp.seq;
        match op {
            OpRef::NodeCreate(c) => {
                let id = &c.node.id;
                lengths.insert(
                    id.clone(),
                    c.node
                        .content
                        .as_deref()
                        .map_or(0, |s| s.chars().count() as u64),
                );
                if let Some(e) = self.live.nodes.get_mut(id) {
                    e.meta = Meta {
                        created: Some(stamp.clone()),
                        ..Meta::default()
                    };
                    for slot in &mut e.meta.fields {
                        slot.record(stamp.clone());
                    }
                    for key in c.node.props.iter().flat_map(|p| p.keys()) {
                        e.meta
                            .props
                            .entry(key.clone())
                            .or_default()
                            .record(stamp.clone());
                    }
                    e.text = TextHistory::starting_at(seq);
                }
            }
            OpRef::NodeUpdate(u) => {
                let Some(e) = self.live.nodes.get_mut(&u.id) else {
                    return;
                };
                if let Some(set) = &u.set {
                    e.meta
                        .stamp_set(&graph::node_fields_given(set), set.props.as_ref(), stamp);
                    if let Some(new) = &set.content {
                        let new_len = new.chars().count() as u64;
                        match lengths.get(&u.id) {
                            Some(old) => {
                                let mut op = gitmind_schema::ot::TextOp::new();
                                op.delete(*old).insert(new);
                                e.text.ops.push_back((seq, op));
                            }
                            None => e.text = TextHistory::starting_at(seq),
                        }
                        lengths.insert(u.id.clone(), new_len);
                    }
                }
                if let Some(op) = u.text.as_ref().and_then(|t| t.content.as_ref()) {
                    e.meta.fields[2].record(stamp.clone());
                    if !op.is_noop() {
                        e.text.ops.push_back((seq, op.clone()));
                    }
                    lengths.insert(u.id.clone(), op.target_len());
                }
            }
            OpRef::NodeDelete(d) => {
                lengths.remove(&d.id);
                let tomb = Tomb {
                    seq,
                    actor: Arc::clone(&stamp.actor),
                };
                self.live.node_tombs.insert(d.id.clone(), tomb);
            }
            OpRef::EdgeCreate(c) => {
                let id = c.edge.id.clone().unwrap_or_else(|| {
                    Edge::make_id(&c.edge.source, &c.edge.edge_type, &c.edge.target)
                });
                if let Some(e) = self.live.edges.get_mut(&id) {
                    e.meta = Meta {
                        created: Some(stamp.clone()),
                        ..Meta::default()
                    };
                    for slot in e.meta.fields.iter_mut().take(graph::EDGE_FIELDS.len()) {
                        slot.record(stamp.clone());
                    }
                    for key in c.edge.props.iter().flat_map(|p| p.keys()) {
                        e.meta
                            .props
                            .entry(key.clone())
                            .or_default()
                            .record(stamp.clone());
                    }
                }
            }
            OpRef::EdgeUpdate(u) => {
                let Some(id) = u.edge_id() else { return };
                let Some(e) = self.live.edges.get_mut(&id) else {
                    return;
                };
                if let Some(set) = &u.set {
                    e.meta
                        .stamp_set(&graph::edge_fields_given(set), set.props.as_ref(), stamp);
                }
            }
            OpRef::EdgeDelete(d) => {
                if let Some(id) = d.edge_id() {
                    self.live.edge_tombs.insert(
                        id,
                        Tomb {
                            seq,
                            actor: Arc::clone(&stamp.actor),
                        },
                    );
                }
            }
        }
    }

    /// The graph's name.
    pub fn graph(&self) -> &str {
        &self.graph
    }

    /// The graph's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last `seq` known to be in git.
    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    /// The last `seq` given to a change (committed or not).
    pub fn ordered_seq(&self) -> u64 {
        self.ordered_seq
    }

    /// The configuration.
    pub fn config(&self) -> &OwnerConfig {
        &self.config
    }

    /// Takes one mutation from `origin`: `body` is one of the seven mutation
    /// types (anything else is refused as `invalid`), `mutation_id` its
    /// envelope id, `now_ms` the server's clock (stored as the change's time).
    pub fn submit(&mut self, origin: Origin, mutation_id: &str, body: Body, now_ms: u64) -> Submit {
        let idem_key = self.idempotency.key(&origin.user_id, mutation_id);
        if let Some(answer) = self.settled_before(&origin, mutation_id, idem_key, now_ms) {
            return answer;
        }
        let (base, batch) = match &body {
            Body::NodeCreate(m) => (m.base_seq, None),
            Body::NodeUpdate(m) => (m.base_seq, None),
            Body::NodeDelete(m) => (m.base_seq, None),
            Body::EdgeCreate(m) => (m.base_seq, None),
            Body::EdgeUpdate(m) => (m.base_seq, None),
            Body::EdgeDelete(m) => (m.base_seq, None),
            Body::BatchUpdate(b) => (b.base_seq, Some(b)),
            other => {
                let message = format!("`{}` is not a mutation", other.message_type().name());
                return self.rollback(
                    &origin,
                    mutation_id,
                    now_ms,
                    Refusal::invalid(message),
                    None,
                );
            }
        };
        let Some(base) = base else {
            return self.rollback(
                &origin,
                mutation_id,
                now_ms,
                Refusal::invalid("data.baseSeq is missing"),
                None,
            );
        };
        if base > self.ordered_seq {
            let message = format!(
                "data.baseSeq {base} is ahead of the graph's seq {}",
                self.ordered_seq
            );
            return self.rollback(
                &origin,
                mutation_id,
                now_ms,
                Refusal::invalid(message),
                None,
            );
        }
        if let Some(b) = batch {
            if b.ops.is_empty() {
                return self.rollback(
                    &origin,
                    mutation_id,
                    now_ms,
                    Refusal::invalid("batch.update has no ops"),
                    None,
                );
            }
            if b.ops.len() > self.config.max_batch_ops {
                let message = format!(
                    "batch.update has {} ops; the limit is {}",
                    b.ops.len(),
                    self.config.max_batch_ops
                );
                return self.rollback(
                    &origin,
                    mutation_id,
                    now_ms,
                    Refusal::too_large(message),
                    None,
                );
            }
        }
        let actor = self.actor(&origin);
        let seq = self.ordered_seq + 1;
        let edge_types = std::mem::take(&mut self.config.edge_types);
        let mut cx = Cx {
            seq,
            at_ms: now_ms,
            base,
            actor: &actor,
            edge_types: &edge_types,
            index: None,
            undo: Vec::new(),
            writes: Vec::new(),
            text: HashMap::new(),
        };
        let result = match batch {
            None => op_of_body(&body)
                .map(|op| {
                    self.live
                        .apply(&mut cx, op)
                        .map(|a| vec![a])
                        .map_err(|r| (r, None))
                })
                .unwrap_or_else(|| Err((Refusal::invalid("not a mutation"), None))),
            Some(b) => self.apply_batch(&mut cx, b),
        };
        let Cx { undo, writes, .. } = cx;
        self.config.edge_types = edge_types;
        let applied = match result {
            Ok(applied) => applied,
            Err((refusal, index)) => {
                self.live.revert(undo);
                return self.rollback(&origin, mutation_id, now_ms, refusal, index);
            }
        };
        let writes = if batch.is_some() {
            dedupe_writes(writes)
        } else {
            writes
        };
        let record = self.build_record(
            &origin,
            mutation_id,
            seq,
            now_ms,
            batch.is_some(),
            applied,
            writes,
        );
        if may_outgrow_a_frame(&body) {
            if let Err(refusal) = self.fits_in_a_frame(&record) {
                self.live.revert(undo);
                return self.rollback(&origin, mutation_id, now_ms, refusal, None);
            }
        }
        self.idempotency.insert_by_key(idem_key, seq);
        self.pending.push_back(Pending {
            record: Arc::new(record),
            undo,
            recipients: vec![origin.session],
        });
        self.ordered_seq = seq;
        Submit::Ordered(seq)
    }

    /// Applies every op of a batch, stopping at the first refusal.
    fn apply_batch(
        &mut self,
        cx: &mut Cx<'_>,
        batch: &BatchUpdate,
    ) -> Result<Vec<graph::Applied>, (Refusal, Option<u32>)> {
        let mut out = Vec::with_capacity(batch.ops.len());
        for (i, op) in batch.ops.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            cx.index = Some(index);
            let op = OpRef::of(op);
            match self.live.apply(cx, op) {
                Ok(a) => out.push(a),
                Err(mut r) => {
                    r.message = format!("op {i} ({}): {}", op.type_name(), r.message);
                    return Err((r, Some(index)));
                }
            }
        }
        Ok(out)
    }

    /// The original outcome of a repeated `(user, mutation id)`, if any.
    fn repeated(&mut self, origin: &Origin, mutation_id: &str, key: u64) -> Option<Submit> {
        let seq = self.idempotency.candidates_by_key(key).find(|seq| {
            self.record(*seq)
                .is_some_and(|r| r.user_id == origin.user_id && r.mutation_id == mutation_id)
        })?;
        if seq > self.committed_seq {
            let index = usize::try_from(seq - self.committed_seq - 1).ok()?;
            let pending = self.pending.get_mut(index)?;
            if !pending.recipients.contains(&origin.session) {
                pending.recipients.push(origin.session);
            }
            return Some(Submit::Ordered(seq));
        }
        let change = self.window.get(seq)?;
        let mut outcome = with_commit(&change.record.outcome, &change.commit);
        outcome.user_id = Some(origin.user_id.clone());
        outcome.session_id = Some(origin.session_id.clone());
        Some(Submit::Reply(outcome))
    }

    /// A mutation the server refused before it reached the owner (its data
    /// did not decode): answered like any refusal, and remembered, unless
    /// the id was settled already, in which case that first outcome is the
    /// answer (4.4). `reason` should not be transient (`unavailable`,
    /// `rate_limited`): those are not remembered.
    pub fn refuse(
        &mut self,
        origin: Origin,
        mutation_id: &str,
        reason: RollbackReason,
        message: String,
        now_ms: u64,
    ) -> Submit {
        let idem_key = self.idempotency.key(&origin.user_id, mutation_id);
        if let Some(answer) = self.settled_before(&origin, mutation_id, idem_key, now_ms) {
            return answer;
        }
        self.rollback(
            &origin,
            mutation_id,
            now_ms,
            Refusal::new(reason, message),
            None,
        )
    }

    /// Advances the clock and answers a `(user, mutation id)` (whose
    /// [`Idempotency::key`] is `key`) settled before, applied or refused,
    /// with its first outcome (4.4).
    fn settled_before(
        &mut self,
        origin: &Origin,
        mutation_id: &str,
        key: u64,
        now_ms: u64,
    ) -> Option<Submit> {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(applied) = self.repeated(origin, mutation_id, key) {
            return Some(applied);
        }
        let body = UpdateRollback::clone(self.refused.get(key, &origin.user_id, mutation_id)?);
        Some(self.rollback_envelope(origin, now_ms, body))
    }

    /// How many rollbacks are remembered for resent ids.
    pub fn remembered_rollbacks(&self) -> usize {
        self.refused.len()
    }

    /// The record of change `seq`, pending or in the window.
    fn record(&self, seq: u64) -> Option<&Arc<ChangeRecord>> {
        if seq > self.committed_seq {
            let index = usize::try_from(seq - self.committed_seq - 1).ok()?;
            return self.pending.get(index).map(|p| &p.record);
        }
        self.window.get(seq).map(|c| &c.record)
    }

    /// The shared actor of a session.
    fn actor(&mut self, origin: &Origin) -> Actor {
        if let Some(a) = self.actors.get(&origin.session) {
            if a.session_id == origin.session_id && a.user_id == origin.user_id {
                return Arc::clone(a);
            }
        }
        if self.actors.len() >= MAX_CACHED_ACTORS {
            self.actors.clear();
        }
        let actor = Arc::new(ActorInfo {
            session_id: origin.session_id.clone(),
            user_id: origin.user_id.clone(),
        });
        self.actors.insert(origin.session, Arc::clone(&actor));
        actor
    }

    /// An `update.rollback` for the origin.
    fn rollback(
        &mut self,
        origin: &Origin,
        mutation_id: &str,
        now_ms: u64,
        refusal: Refusal,
        index: Option<u32>,
    ) -> Submit {
        let body = UpdateRollback {
            reference: mutation_id.to_owned(),
            reason: refusal.reason,
            message: refusal.message,
            current: refusal.current.map(|c| *c),
            index,
            retry_after_ms: None,
        };
        // Settled for good, so a resend gets the same answer (4.4); only the
        // transient reasons are evaluated again.
        if !matches!(
            body.reason,
            RollbackReason::Unavailable | RollbackReason::RateLimited
        ) {
            let key = self.idempotency.key(&origin.user_id, mutation_id);
            self.refused
                .insert(key, &origin.user_id, mutation_id, body.clone(), now_ms);
            let horizon = self.now_ms.saturating_sub(self.config.replay_ms);
            self.refused.trim(self.config.replay_changes, horizon);
        }
        self.rollback_envelope(origin, now_ms, body)
    }

    /// The `update.rollback` envelope of `body`, addressed to `origin`.
    fn rollback_envelope(&mut self, origin: &Origin, now_ms: u64, body: UpdateRollback) -> Submit {
        self.rollbacks += 1;
        let mut env = Envelope::new(format!("r-{}", self.rollbacks), Body::UpdateRollback(body));
        env.timestamp = Some(now_ms);
        env.user_id = Some(origin.user_id.clone());
        env.session_id = Some(origin.session_id.clone());
        Submit::Reply(env)
    }

    /// Builds the change record of an applied mutation.
    #[allow(clippy::too_many_arguments)]
    fn build_record(
        &self,
        origin: &Origin,
        mutation_id: &str,
        seq: u64,
        at_ms: u64,
        is_batch: bool,
        applied: Vec<graph::Applied>,
        writes: Vec<Write>,
    ) -> ChangeRecord {
        let mut conflicts = Vec::new();
        let mut resolution = Resolution::default();
        let mut text = None;
        let mut events = Vec::with_capacity(applied.len());
        for (i, a) in applied.into_iter().enumerate() {
            if let Some(concerned) = &a.concerned {
                let r = self.live.resolution(concerned);
                if is_batch {
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    resolution
                        .ops
                        .get_or_insert_with(Vec::new)
                        .push(OpResolution {
                            index,
                            resolution: r,
                        });
                } else {
                    resolution = r;
                }
            }
            conflicts.extend(a.conflicts);
            if !is_batch {
                text = a.text;
            }
            events.push(a.event);
        }
        let event_body = if is_batch {
            Body::BatchUpdate(BatchUpdate {
                base_seq: None,
                ops: events,
                commit: None,
            })
        } else {
            match events.pop() {
                Some(op) => body_of_op(op),
                None => Body::BatchUpdate(BatchUpdate::default()),
            }
        };
        let outcome_body = if conflicts.is_empty() {
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: mutation_id.to_owned(),
                seq,
                commit: String::new(),
                rev: seq,
                text,
            })
        } else {
            Body::UpdateConflictResolved(UpdateConflictResolved {
                reference: mutation_id.to_owned(),
                seq,
                commit: String::new(),
                rev: Some(seq),
                conflicts,
                resolution,
                text,
            })
        };
        let stamp = |mut env: Envelope| {
            env.timestamp = Some(at_ms);
            env.user_id = Some(origin.user_id.clone());
            env.session_id = Some(origin.session_id.clone());
            env.seq = Some(seq);
            env
        };
        ChangeRecord {
            seq,
            at_ms,
            user_id: origin.user_id.clone(),
            session_id: origin.session_id.clone(),
            mutation_id: mutation_id.to_owned(),
            event: stamp(Envelope::new(mutation_id, event_body)),
            outcome: stamp(Envelope::new(outcome_id(seq), outcome_body)),
            writes,
        }
    }

    /// Refuses (`too_large`) a change whose event or outcome would not fit
    /// in one frame in either codec once its commit id is filled in, or in
    /// the `graph.sync` chunk that replays it on a resume: no client could
    /// read it (docs/protocol.md section 5).
    fn fits_in_a_frame(&self, record: &ChangeRecord) -> Result<(), Refusal> {
        /// Room for the commit id, filled in after the check, and for the
        /// envelope of a `graph.sync` chunk holding the event alone.
        const WRAPPING: usize = 1024;
        let limit = self.config.max_event_bytes.saturating_sub(WRAPPING);
        for (what, envelope) in [("event", &record.event), ("outcome", &record.outcome)] {
            let json = gitmind_schema::json::encode(envelope).len();
            let flat = gitmind_schema::binary::encode_with(
                std::slice::from_ref(envelope),
                gitmind_schema::binary::Compression::Never,
            )
            .len();
            let size = json.max(flat);
            if size > limit {
                return Err(Refusal::too_large(format!(
                    "the change's {what} would be {size} bytes; the frame limit is {} bytes: split it",
                    self.config.max_event_bytes
                )));
            }
        }
        Ok(())
    }

    /// The changes ordered since the last call, for the persistence thread.
    pub fn take_group(&mut self) -> Option<Group> {
        if self.taken >= self.pending.len() {
            return None;
        }
        let changes = self
            .pending
            .iter()
            .skip(self.taken)
            .map(|p| Arc::clone(&p.record))
            .collect();
        self.taken = self.pending.len();
        Some(Group {
            graph: self.graph.clone(),
            epoch: self.epoch.clone(),
            changes,
        })
    }

    /// Persistence wrote every change up to `upto` in git commit `commit`:
    /// releases their outcomes and events, in `seq` order.
    pub fn committed(&mut self, upto: u64, commit: &str) -> Vec<Release> {
        let upto = upto.min(self.ordered_seq);
        if upto <= self.committed_seq {
            return Vec::new();
        }
        let commit: Arc<str> = Arc::from(commit);
        let mut releases =
            Vec::with_capacity(usize::try_from(upto - self.committed_seq).unwrap_or(0));
        while self.pending.front().is_some_and(|p| p.record.seq <= upto) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.taken = self.taken.saturating_sub(1);
            for w in &p.record.writes {
                match w {
                    Write::Node(n) => {
                        self.committed_nodes
                            .insert(Arc::from(n.id.as_str()), Arc::clone(n));
                    }
                    Write::NodeDeleted(id) => {
                        self.committed_nodes.remove(id.as_str());
                    }
                    Write::Edge(e) => {
                        let id = e.id.clone().unwrap_or_default();
                        self.committed_edges
                            .insert(Arc::from(id.as_str()), Arc::clone(e));
                    }
                    Write::EdgeDeleted(id) => {
                        self.committed_edges.remove(id.as_str());
                    }
                }
            }
            releases.push(Release {
                seq: p.record.seq,
                recipients: p.recipients,
                outcome: with_commit(&p.record.outcome, &commit),
                event: with_commit(&p.record.event, &commit),
            });
            self.committed_seq = p.record.seq;
            self.window.changes.push_back(CommittedChange {
                record: p.record,
                commit: Arc::clone(&commit),
            });
        }
        self.trim_window();
        releases
    }

    /// Drops what the replay window no longer needs to hold.
    fn trim_window(&mut self) {
        let horizon = self.now_ms.saturating_sub(self.config.replay_ms);
        while self.window.changes.len() > self.config.replay_changes
            && self
                .window
                .changes
                .front()
                .is_some_and(|c| c.record.at_ms < horizon)
        {
            let Some(old) = self.window.changes.pop_front() else {
                break;
            };
            let r = &old.record;
            self.window.floor = r.seq;
            self.idempotency.remove(&r.user_id, &r.mutation_id, r.seq);
            for w in &r.writes {
                match w {
                    Write::Node(n) => {
                        if let Some(e) = self.live.nodes.get_mut(&n.id) {
                            e.text.trim(r.seq);
                        }
                    }
                    Write::NodeDeleted(id) => {
                        if self.live.node_tombs.get(id).is_some_and(|t| t.seq <= r.seq) {
                            self.live.node_tombs.remove(id);
                        }
                    }
                    Write::EdgeDeleted(id) => {
                        if self.live.edge_tombs.get(id).is_some_and(|t| t.seq <= r.seq) {
                            self.live.edge_tombs.remove(id);
                        }
                    }
                    Write::Edge(_) => {}
                }
            }
        }
    }

    /// Persistence could not write a group: undoes every uncommitted change
    /// (those of earlier groups not yet committed too, since later changes
    /// may build on them), so the live graph is the committed graph again
    /// and `seq` goes back to the committed `seq`. Returns an
    /// `update.rollback` with reason `unavailable` for each recipient of
    /// each undone change, oldest first. Why the commit failed is for the
    /// server's log, not for clients: the message says only what to do.
    pub fn commit_failed(&mut self) -> Vec<(SessionKey, Envelope)> {
        let mut out = Vec::new();
        while let Some(p) = self.pending.pop_back() {
            self.live.revert(p.undo);
            let r = &p.record;
            self.idempotency.remove(&r.user_id, &r.mutation_id, r.seq);
            for session in p.recipients.iter().rev() {
                self.rollbacks += 1;
                let body = UpdateRollback {
                    reference: r.mutation_id.clone(),
                    reason: RollbackReason::Unavailable,
                    message: "the change could not be stored; nothing was applied, retry".into(),
                    current: None,
                    index: None,
                    retry_after_ms: Some(1000),
                };
                let mut env =
                    Envelope::new(format!("r-{}", self.rollbacks), Body::UpdateRollback(body));
                env.timestamp = Some(self.now_ms);
                env.user_id = Some(r.user_id.clone());
                env.session_id = Some(r.session_id.clone());
                out.push((*session, env));
            }
        }
        out.reverse();
        self.taken = 0;
        self.ordered_seq = self.committed_seq;
        out
    }

    /// What a `graph.sync` carries, as of the committed `seq` (never showing
    /// an uncommitted change): the events after `since` when its epoch is
    /// this graph's and the window reaches back to it (`since` equal to the
    /// committed `seq` gives no events), else the whole graph.
    pub fn sync(&self, since: Option<(u64, &str)>) -> SyncData {
        if let Some((since, epoch)) = since {
            if epoch == self.epoch && since <= self.committed_seq {
                if let Some(changes) = self.window.after(since) {
                    let events = changes
                        .take_while(|c| c.record.seq <= self.committed_seq)
                        .map(|c| with_commit(&c.record.event, &c.commit))
                        .collect();
                    return SyncData::Delta {
                        epoch: self.epoch.clone(),
                        seq: self.committed_seq,
                        events,
                    };
                }
            }
        }
        SyncData::Snapshot {
            epoch: self.epoch.clone(),
            seq: self.committed_seq,
            nodes: Entities(self.committed_nodes.clone()),
            edges: Entities(self.committed_edges.clone()),
        }
    }
}

/// Whether a mutation's event and outcome can grow past the frame limit:
/// a batch, or a text edit (its transformed operation). Any other single
/// op's event is bounded by the entity limits (docs/protocol.md section 3)
/// well below it, in either codec, so it is not measured on the hot path.
fn may_outgrow_a_frame(body: &Body) -> bool {
    match body {
        Body::BatchUpdate(_) => true,
        Body::NodeUpdate(u) => u.text.is_some(),
        _ => false,
    }
}

/// `o-{seq}`, the id of a change's outcome, without the formatting
/// machinery (this is on the path of every change).
fn outcome_id(seq: u64) -> String {
    let mut digits = [0u8; 20];
    let mut n = seq;
    let mut i = digits.len();
    loop {
        i -= 1;
        // n % 10 < 10: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        {
            digits[i] = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(2 + digits.len() - i);
    id.push_str("o-");
    for d in &digits[i..] {
        id.push(char::from(*d));
    }
    id
}

/// The op of a single (non-batch) mutation body.
fn op_of_body(body: &Body) -> Option<OpRef<'_>> {
    Some(match body {
        Body::NodeCreate(o) => OpRef::NodeCreate(o),
        Body::NodeUpdate(o) => OpRef::NodeUpdate(o),
        Body::NodeDelete(o) => OpRef::NodeDelete(o),
        Body::EdgeCreate(o) => OpRef::EdgeCreate(o),
        Body::EdgeUpdate(o) => OpRef::EdgeUpdate(o),
        Body::EdgeDelete(o) => OpRef::EdgeDelete(o),
        _ => return None,
    })
}

/// The body of a single event op.
fn body_of_op(op: BatchOp) -> Body {
    match op {
        BatchOp::NodeCreate(o) => Body::NodeCreate(o),
        BatchOp::NodeUpdate(o) => Body::NodeUpdate(o),
        BatchOp::NodeDelete(o) => Body::NodeDelete(o),
        BatchOp::EdgeCreate(o) => Body::EdgeCreate(o),
        BatchOp::EdgeUpdate(o) => Body::EdgeUpdate(o),
        BatchOp::EdgeDelete(o) => Body::EdgeDelete(o),
    }
}

/// A copy of an event or outcome with its `commit` filled in.
fn with_commit(env: &Envelope, commit: &str) -> Envelope {
    let mut env = env.clone();
    let c = Some(commit.to_owned());
    match &mut env.body {
        Body::NodeCreate(b) => b.commit = c,
        Body::NodeUpdate(b) => b.commit = c,
        Body::NodeDelete(b) => b.commit = c,
        Body::EdgeCreate(b) => b.commit = c,
        Body::EdgeUpdate(b) => b.commit = c,
        Body::EdgeDelete(b) => b.commit = c,
        Body::BatchUpdate(b) => b.commit = c,
        Body::UpdateConfirmed(b) => b.commit = commit.to_owned(),
        Body::UpdateConflictResolved(b) => b.commit = commit.to_owned(),
        _ => {}
    }
    env
}

/// The commit an outcome carries.
fn commit_of(env: &Envelope) -> Option<&str> {
    match &env.body {
        Body::UpdateConfirmed(b) => Some(&b.commit),
        Body::UpdateConflictResolved(b) => Some(&b.commit),
        _ => None,
    }
}

/// A batch's writes with each entity once, at its final state, in the order
/// entities were first touched.
fn dedupe_writes(writes: Vec<Write>) -> Vec<Write> {
    let mut at: HashMap<(bool, String), usize> = HashMap::with_capacity(writes.len());
    let mut out: Vec<Write> = Vec::with_capacity(writes.len());
    for w in writes {
        let key = match &w {
            Write::Node(n) => (true, n.id.clone()),
            Write::NodeDeleted(id) => (true, id.clone()),
            Write::Edge(e) => (false, e.id.clone().unwrap_or_default()),
            Write::EdgeDeleted(id) => (false, id.clone()),
        };
        match at.get(&key) {
            Some(i) => out[*i] = w,
            None => {
                at.insert(key, out.len());
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod outcome_id_tests {
    #[test]
    fn outcome_id_is_o_dash_seq() {
        for seq in [0, 7, 10, 12_345, u64::MAX] {
            assert_eq!(super::outcome_id(seq), format!("o-{seq}"));
        }
    }
}
