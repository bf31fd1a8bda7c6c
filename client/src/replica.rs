//! The client replica: a client's local copy of one graph, as pure logic
//! (no I/O, no clock), the counterpart of the server's graph owner
//! (docs/protocol.md 4.3, 5, 6).
//!
//! The replica keeps two things:
//!
//! - the **server state**: the graph as of [`Replica::server_seq`], built
//!   from a `graph.sync` and the events that follow it, in `seq` order, plus
//!   this client's own changes once their outcome says where they landed;
//! - the **pending** mutations: changes made here, applied optimistically,
//!   waiting for their outcome.
//!
//! What a user sees, [`Replica::node`], [`Replica::nodes`] and
//! [`Replica::edges`], is always the server state with the pending changes
//! applied on top, in order. A rolled-back change simply leaves the pending
//! list, so the view is again exactly the server's.
//!
//! # Text
//!
//! Text edits follow the classic OT client: at most one mutation editing a
//! node's text (or replacing it, creating or deleting the node) is in flight
//! per node; later text edits of that node wait, in order, and every
//! mutation after a waiting one waits too, so the server receives this
//! client's changes in the order they were made. Each remote operation on a
//! node's text transforms the pending ones ([`TextOp::transform_pair`], the
//! server's operation first, since it came first in server order). When a
//! text edit is confirmed, the pending copy has been transformed against
//! every operation the server applied before it, so it equals the operation
//! the server applied.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use gitmind_schema::message::{
    BatchOp, GraphSync, NodeCreate, NodeDelete, NodeUpdate, SyncMode, UpdateRollback,
};
use gitmind_schema::model::{Edge, Node, Resolution};
use gitmind_schema::ot::{Component, TextOp};
use gitmind_schema::{Body, Envelope};

/// Why the replica could not take a message. The connection layer answers
/// every one of them the same way: it asks the server for a `graph.sync`
/// from [`Replica::server_seq`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// An event skipped a `seq`.
    #[error("expected seq {expected} next, got {got}")]
    Gap {
        /// The `seq` the next event should have.
        expected: u64,
        /// The `seq` it had.
        got: u64,
    },
    /// An event the replica already has.
    #[error("event seq {0} was already applied")]
    Duplicate(u64),
    /// An event without a `seq`.
    #[error("event has no seq")]
    NoSeq,
    /// A delta for another epoch (history) of the graph.
    #[error("delta sync for epoch {got} does not match the replica's epoch {expected:?}")]
    EpochMismatch {
        /// The replica's epoch.
        expected: Option<String>,
        /// The sync's epoch.
        got: String,
    },
    /// The server state does not match what a message expects (an update
    /// of a node it does not have, a text operation that does not fit).
    #[error("replica diverged from the server: {0}")]
    Diverged(String),
    /// An own change whose result the replica cannot reproduce (a batch
    /// with text edits that waited across a snapshot); it was dropped from
    /// pending, and the next sync brings its event.
    #[error("the result of own change {0} cannot be reproduced locally; resync")]
    Unreproducible(String),
    /// A local text operation made for a text of another length than the
    /// node's text as this client sees it (it was computed from an older
    /// view): refused at once, never sent.
    #[error("text operation on node `{id}` is for a text of {op} characters; the text has {text}")]
    TextMismatch {
        /// The node.
        id: String,
        /// The length the operation expects.
        op: u64,
        /// The length of the text as shown.
        text: u64,
    },
    /// `local_mutation` was given something that is not a mutation.
    #[error("`{0}` is not a mutation")]
    NotAMutation(&'static str),
    /// A message that is neither an outcome nor an event where one was expected.
    #[error("`{0}` is not what was expected here")]
    Unexpected(&'static str),
}

/// The graph as of some `seq`: nodes, edges, and which edges touch each node.
#[derive(Debug, Clone, Default, PartialEq)]
struct Graph {
    nodes: HashMap<String, Node>,
    edges: HashMap<String, Edge>,
    adjacency: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    fn insert_edge(&mut self, edge: Edge) {
        let id = edge_id(&edge);
        for end in [&edge.source, &edge.target] {
            self.adjacency
                .entry(end.clone())
                .or_default()
                .insert(id.clone());
        }
        self.edges.insert(id, edge);
    }

    fn remove_edge(&mut self, id: &str) {
        if let Some(edge) = self.edges.remove(id) {
            for end in [&edge.source, &edge.target] {
                if let Some(set) = self.adjacency.get_mut(end) {
                    set.remove(id);
                    if set.is_empty() {
                        self.adjacency.remove(end);
                    }
                }
            }
        }
    }

    /// Removes a node and every edge that touches it.
    fn remove_node(&mut self, id: &str) {
        self.nodes.remove(id);
        let touching: Vec<String> = self
            .adjacency
            .get(id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for e in touching {
            self.remove_edge(&e);
        }
    }

    fn node_mut(&mut self, id: &str) -> Result<&mut Node, ReplicaError> {
        self.nodes
            .get_mut(id)
            .ok_or_else(|| ReplicaError::Diverged(format!("node `{id}` is not in the replica")))
    }

    fn edge_mut(&mut self, id: &str) -> Result<&mut Edge, ReplicaError> {
        self.edges
            .get_mut(id)
            .ok_or_else(|| ReplicaError::Diverged(format!("edge `{id}` is not in the replica")))
    }
}

/// The id of an edge, set or made from its triple.
fn edge_id(edge: &Edge) -> String {
    edge.id
        .clone()
        .unwrap_or_else(|| Edge::make_id(&edge.source, &edge.edge_type, &edge.target))
}

/// A change made here, waiting for its outcome.
#[derive(Debug, Clone)]
struct Pending {
    /// The mutation id.
    id: String,
    /// The mutation; its text operations are kept rebased on the server
    /// state as of `base`.
    body: Body,
    /// The server `seq` its text operations are relative to.
    base: u64,
    /// Whether it was handed out to be sent.
    sent: bool,
    /// Its text could not be kept rebased (a snapshot replaced the server
    /// state under it): only the server's word on it can be trusted.
    broken: bool,
}

/// The ops of a mutation body, as a slice (one for a single mutation).
fn ops_of(body: &Body) -> Vec<OpView<'_>> {
    match body {
        Body::BatchUpdate(b) => b.ops.iter().map(OpView::Batch).collect(),
        other => vec![OpView::Single(other)],
    }
}

/// One op, borrowed.
#[derive(Clone, Copy)]
enum OpView<'a> {
    Single(&'a Body),
    Batch(&'a BatchOp),
}

/// One op, owned form helpers.
enum Op<'a> {
    NodeCreate(&'a NodeCreate),
    NodeUpdate(&'a NodeUpdate),
    NodeDelete(&'a NodeDelete),
    EdgeCreate(&'a Edge),
    EdgeUpdate(Option<String>, Option<&'a gitmind_schema::model::EdgeSet>),
    EdgeDelete(Option<String>),
    Other,
}

impl<'a> OpView<'a> {
    fn op(self) -> Op<'a> {
        match self {
            OpView::Single(Body::NodeCreate(o)) | OpView::Batch(BatchOp::NodeCreate(o)) => {
                Op::NodeCreate(o)
            }
            OpView::Single(Body::NodeUpdate(o)) | OpView::Batch(BatchOp::NodeUpdate(o)) => {
                Op::NodeUpdate(o)
            }
            OpView::Single(Body::NodeDelete(o)) | OpView::Batch(BatchOp::NodeDelete(o)) => {
                Op::NodeDelete(o)
            }
            OpView::Single(Body::EdgeCreate(o)) | OpView::Batch(BatchOp::EdgeCreate(o)) => {
                Op::EdgeCreate(&o.edge)
            }
            OpView::Single(Body::EdgeUpdate(o)) | OpView::Batch(BatchOp::EdgeUpdate(o)) => {
                Op::EdgeUpdate(o.edge_id(), o.set.as_ref())
            }
            OpView::Single(Body::EdgeDelete(o)) | OpView::Batch(BatchOp::EdgeDelete(o)) => {
                Op::EdgeDelete(o.edge_id())
            }
            OpView::Single(_) => Op::Other,
        }
    }
}

/// The text operations of a body, mutable, with the node each edits.
fn text_ops_mut(body: &mut Body) -> Vec<(&str, &mut TextOp)> {
    fn of(u: &mut NodeUpdate) -> Option<(&str, &mut TextOp)> {
        let op = u.text.as_mut()?.content.as_mut()?;
        Some((u.id.as_str(), op))
    }
    match body {
        Body::NodeUpdate(u) => of(u).into_iter().collect(),
        Body::BatchUpdate(b) => b
            .ops
            .iter_mut()
            .filter_map(|op| match op {
                BatchOp::NodeUpdate(u) => of(u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// How an op affects a node's text, for rebasing.
enum TextEffect<'a> {
    /// It edits the text with this operation.
    Edit(&'a TextOp),
    /// It replaces (sets, creates with content, deletes) the whole text:
    /// nothing after it depends on the text before.
    Replace,
    /// It does not touch the text.
    None,
}

fn text_effect<'a>(op: OpView<'a>, node: &str) -> TextEffect<'a> {
    match op.op() {
        Op::NodeCreate(c) if c.node.id == node && c.node.content.is_some() => TextEffect::Replace,
        Op::NodeDelete(d) if d.id == node => TextEffect::Replace,
        Op::NodeUpdate(u) if u.id == node => {
            if u.set.as_ref().is_some_and(|s| s.content.is_some()) {
                return TextEffect::Replace;
            }
            match u.text.as_ref().and_then(|t| t.content.as_ref()) {
                Some(t) => TextEffect::Edit(t),
                None => TextEffect::None,
            }
        }
        _ => TextEffect::None,
    }
}

/// The nodes whose text a mutation touches (edits, replaces, creates, deletes).
fn text_nodes(body: &Body) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops_of(body) {
        match op.op() {
            Op::NodeCreate(c) => out.push(c.node.id.clone()),
            Op::NodeDelete(d) => out.push(d.id.clone()),
            Op::NodeUpdate(u)
                if u.text.is_some() || u.set.as_ref().is_some_and(|s| s.content.is_some()) =>
            {
                out.push(u.id.clone());
            }
            _ => {}
        }
    }
    out
}

/// The nodes a mutation edits with text operations.
fn text_edited_nodes(body: &Body) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops_of(body) {
        if let Op::NodeUpdate(u) = op.op() {
            if u.text.as_ref().is_some_and(|t| t.content.is_some()) {
                out.push(u.id.clone());
            }
        }
    }
    out
}

/// The operation that undoes `op` on the text it was applied to (`before`).
fn invert(op: &TextOp, before: &str) -> Option<TextOp> {
    let chars: Vec<char> = before.chars().collect();
    let mut inv = TextOp::new();
    let mut pos = 0usize;
    for c in op.components() {
        match c {
            Component::Retain(n) => {
                let n = usize::try_from(*n).ok()?;
                inv.retain(n as u64);
                pos += n;
            }
            Component::Insert(s) => {
                inv.delete(s.chars().count() as u64);
            }
            Component::Delete(n) => {
                let n = usize::try_from(*n).ok()?;
                let deleted: String = chars.get(pos..pos + n)?.iter().collect();
                inv.insert(&deleted);
                pos += n;
            }
        }
    }
    (pos == chars.len()).then_some(inv)
}

/// The operation that turns `old` into `new` by replacing it whole.
fn replacement(old: &str, new: &str) -> TextOp {
    let mut op = TextOp::new();
    op.delete(old.chars().count() as u64).insert(new);
    op
}

/// A client's local graph: server state plus pending optimistic changes.
/// See the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Replica {
    epoch: Option<String>,
    seq: u64,
    user_id: Option<String>,
    server: Graph,
    pending: VecDeque<Pending>,
    /// The pending changes applied on top of the server state, made when
    /// first read after a change: a burst of events and outcomes (a
    /// reconnect settling hundreds of pending changes) costs one rebuild,
    /// not one per message.
    view: OnceCell<View>,
    /// Waiting changes dropped unsent (see [`Replica::take_dropped`]).
    dropped: Vec<String>,
}

/// What the pending changes make of the server state: the entities they
/// touch, as they would be after them; every other entity is the server's.
#[derive(Debug, Clone, Default)]
struct View {
    /// Node ids whose view is in `graph` (absent there: deleted).
    nodes: HashSet<String>,
    /// Edge ids whose view is in `graph` (absent there: deleted).
    edges: HashSet<String>,
    /// The touched entities after the pending changes.
    graph: Graph,
}

impl Replica {
    /// An empty replica, before its first `graph.sync`.
    pub fn new() -> Self {
        Replica::default()
    }

    /// Tells the replica its own user id (the `userId` of the first
    /// `graph.sync`), so it recognizes its own changes among replayed events.
    pub fn set_user(&mut self, user_id: &str) {
        self.user_id = Some(user_id.to_owned());
    }

    /// The graph's epoch, once synced.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The `seq` of the server state: ask `graph.sync` with `since` this.
    pub fn server_seq(&self) -> u64 {
        self.seq
    }

    /// A node as this client sees it (server state plus pending changes).
    pub fn node(&self, id: &str) -> Option<&Node> {
        let view = self.view();
        if view.nodes.contains(id) {
            return view.graph.nodes.get(id);
        }
        self.server.nodes.get(id)
    }

    /// Every node as this client sees it.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        let view = self.view();
        let server = self
            .server
            .nodes
            .values()
            .filter(|n| !view.nodes.contains(&n.id));
        server.chain(view.graph.nodes.values())
    }

    /// An edge as this client sees it.
    pub fn edge(&self, id: &str) -> Option<&Edge> {
        let view = self.view();
        if view.edges.contains(id) {
            return view.graph.edges.get(id);
        }
        self.server.edges.get(id)
    }

    /// Every edge as this client sees it.
    pub fn edges(&self) -> impl Iterator<Item = &Edge> + '_ {
        let view = self.view();
        let server = self
            .server
            .edges
            .iter()
            .filter(|(id, _)| !view.edges.contains(*id))
            .map(|(_, e)| e);
        server.chain(view.graph.edges.values())
    }

    fn view(&self) -> &View {
        self.view.get_or_init(|| self.build_view())
    }

    /// Every node as the server has it, as of [`Replica::server_seq`].
    pub fn server_nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.server.nodes.values()
    }

    /// Every edge as the server has it, as of [`Replica::server_seq`].
    pub fn server_edges(&self) -> impl Iterator<Item = &Edge> + '_ {
        self.server.edges.values()
    }

    /// How many changes wait for an outcome (sent or not yet sent).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Takes a `graph.sync` from the server: a snapshot replaces the server
    /// state; a delta applies its events in order. Pending changes stay and
    /// are shown on top. Returns the changes that may be sent now (see
    /// [`Replica::local_mutation`]); send [`Replica::pending`] too after a
    /// reconnect.
    ///
    /// # Errors
    /// A delta for another epoch, or whose events do not follow the
    /// replica's `seq`: the connection layer asks for a snapshot.
    pub fn apply_sync(&mut self, sync: &GraphSync) -> Result<Vec<Envelope>, ReplicaError> {
        let seq = sync.seq.unwrap_or(0);
        match sync.mode {
            Some(SyncMode::Delta) => {
                let epoch = sync.epoch.clone().unwrap_or_default();
                if self.epoch.as_deref() != Some(epoch.as_str()) {
                    return Err(ReplicaError::EpochMismatch {
                        expected: self.epoch.clone(),
                        got: epoch,
                    });
                }
                for event in sync.events.iter().flatten() {
                    if event.seq.is_some_and(|s| s <= self.seq) {
                        continue;
                    }
                    self.apply_event(event)?;
                }
                // A delta in several chunks reaches `seq` with its last.
                if sync.is_last_chunk() && self.seq < seq {
                    return Err(ReplicaError::Gap {
                        expected: self.seq + 1,
                        got: seq,
                    });
                }
            }
            _ => {
                if sync.chunk.is_none_or(|c| c.index == 0) {
                    self.server = Graph::default();
                    for p in &mut self.pending {
                        if p.base != seq || self.epoch != sync.epoch {
                            p.broken = true;
                        }
                    }
                }
                for node in sync.nodes.iter().flatten() {
                    self.server.nodes.insert(node.id.clone(), node.clone());
                }
                for edge in sync.edges.iter().flatten() {
                    self.server.insert_edge(edge.clone());
                }
                self.epoch = sync.epoch.clone();
                self.seq = seq;
            }
        }
        self.view.take();
        Ok(self.release())
    }

    /// Applies one graph event from another session (or one of this
    /// client's own, replayed by a delta sync, which settles it). Returns
    /// the changes that may be sent now.
    ///
    /// # Errors
    /// A gap or a duplicate `seq`, or an event the server state cannot take:
    /// the connection layer resyncs.
    pub fn apply_event(&mut self, event: &Envelope) -> Result<Vec<Envelope>, ReplicaError> {
        let seq = event.seq.ok_or(ReplicaError::NoSeq)?;
        if seq <= self.seq {
            return Err(ReplicaError::Duplicate(seq));
        }
        if seq != self.seq + 1 {
            return Err(ReplicaError::Gap {
                expected: self.seq + 1,
                got: seq,
            });
        }
        let own = self.user_id.is_some()
            && event.user_id == self.user_id
            && self.pending.iter().any(|p| p.id == event.id);
        let ops: Vec<BatchOp> = match &event.body {
            Body::BatchUpdate(b) => b.ops.clone(),
            Body::NodeCreate(o) => vec![BatchOp::NodeCreate(o.clone())],
            Body::NodeUpdate(o) => vec![BatchOp::NodeUpdate(o.clone())],
            Body::NodeDelete(o) => vec![BatchOp::NodeDelete(o.clone())],
            Body::EdgeCreate(o) => vec![BatchOp::EdgeCreate(o.clone())],
            Body::EdgeUpdate(o) => vec![BatchOp::EdgeUpdate(o.clone())],
            Body::EdgeDelete(o) => vec![BatchOp::EdgeDelete(o.clone())],
            other => return Err(ReplicaError::Unexpected(other.message_type().name())),
        };
        if own {
            // Our own change, as the server applied it: the pending copy
            // goes, and nothing pending is rebased over it (later pending
            // changes were made on top of it).
            self.pending.retain(|p| p.id != event.id);
            for op in &ops {
                self.apply_event_op(op, false)?;
            }
        } else {
            for op in &ops {
                self.apply_event_op(op, true)?;
            }
        }
        self.seq = seq;
        for p in &mut self.pending {
            if !p.broken {
                p.base = seq;
            }
        }
        self.view.take();
        Ok(self.release())
    }

    /// Applies one op of an event to the server state; `rebase`: transform
    /// the pending text operations over its effect on text.
    fn apply_event_op(&mut self, op: &BatchOp, rebase: bool) -> Result<(), ReplicaError> {
        match op {
            BatchOp::NodeCreate(c) => {
                let content = c.node.content.clone().unwrap_or_default();
                self.server.nodes.insert(c.node.id.clone(), c.node.clone());
                if rebase && !content.is_empty() {
                    let mut r = TextOp::new();
                    r.insert(&content);
                    self.rebase_pending(&c.node.id, r, 0);
                }
            }
            BatchOp::NodeUpdate(u) => {
                let node = self.server.node_mut(&u.id)?;
                let before = node.content.clone().unwrap_or_default();
                if let Some(set) = &u.set {
                    node.apply_set(set);
                }
                let mut remote = None;
                if let Some(op) = u.text.as_ref().and_then(|t| t.content.as_ref()) {
                    let after = op.apply(&before).map_err(|e| {
                        ReplicaError::Diverged(format!("text of node `{}`: {e}", u.id))
                    })?;
                    node.content = Some(after);
                    remote = Some(op.clone());
                } else if let Some(new) = u.set.as_ref().and_then(|s| s.content.as_ref()) {
                    remote = Some(replacement(&before, new));
                }
                if let Some(rev) = u.rev {
                    node.rev = Some(rev);
                }
                if u.updated_at.is_some() {
                    node.updated_at = u.updated_at;
                }
                if u.updated_by.is_some() {
                    node.updated_by.clone_from(&u.updated_by);
                }
                if let (true, Some(r)) = (rebase, remote) {
                    self.rebase_pending(&u.id, r, 0);
                }
            }
            BatchOp::NodeDelete(d) => {
                // Its edges go with it (docs/protocol.md section 5).
                self.server.remove_node(&d.id);
                self.orphan_text(&d.id, 0);
            }
            BatchOp::EdgeCreate(c) => {
                let mut edge = c.edge.clone();
                edge.id = Some(edge_id(&edge));
                self.server.insert_edge(edge);
            }
            BatchOp::EdgeUpdate(u) => {
                let id = u
                    .edge_id()
                    .ok_or_else(|| ReplicaError::Diverged("edge.update without id".into()))?;
                let edge = self.server.edge_mut(&id)?;
                if let Some(set) = &u.set {
                    edge.apply_set(set);
                }
                if let Some(rev) = u.rev {
                    edge.rev = Some(rev);
                }
                if u.updated_at.is_some() {
                    edge.updated_at = u.updated_at;
                }
                if u.updated_by.is_some() {
                    edge.updated_by.clone_from(&u.updated_by);
                }
            }
            BatchOp::EdgeDelete(d) => {
                if let Some(id) = d.edge_id() {
                    self.server.remove_edge(&id);
                }
            }
        }
        Ok(())
    }

    /// The node's text was lost under the pending changes from index
    /// `from` on (deleted, or replaced by a refused change): their edits of
    /// it can no longer be rebased.
    fn orphan_text(&mut self, node: &str, from: usize) {
        for p in self.pending.iter_mut().skip(from) {
            if text_edited_nodes(&p.body).iter().any(|n| n == node) {
                p.broken = true;
            }
        }
    }

    /// Transforms the pending text operations on `node`, from index `from`
    /// on, over an operation `r` on the text they were made on (a remote
    /// operation the server applied before them, or the undoing of a
    /// refused change before them).
    fn rebase_pending(&mut self, node: &str, mut r: TextOp, from: usize) {
        'pending: for p in self.pending.iter_mut().skip(from) {
            if p.broken {
                continue;
            }
            // Walk this mutation's ops in order: an op that replaces the
            // text hides `r` from everything after it.
            let effects: Vec<bool> = ops_of(&p.body)
                .into_iter()
                .filter_map(|op| match text_effect(op, node) {
                    TextEffect::Edit(_) => Some(true),
                    TextEffect::Replace => Some(false),
                    TextEffect::None => None,
                })
                .collect();
            let mut edits = text_ops_mut(&mut p.body)
                .into_iter()
                .filter(|(id, _)| *id == node);
            for is_edit in effects {
                if !is_edit {
                    break 'pending;
                }
                let Some((_, op)) = edits.next() else {
                    break 'pending;
                };
                match TextOp::transform_pair(&r, op) {
                    Ok((r2, op2)) => {
                        *op = op2;
                        r = r2;
                    }
                    Err(_) => {
                        p.broken = true;
                        break 'pending;
                    }
                }
            }
        }
    }

    /// Makes a change here: applies it at once on top of the server state
    /// and keeps it pending. Returns the envelope to send now, or `None`
    /// when it must wait (behind an in-flight text edit of the same node, or
    /// behind a change that waits); it then comes out of
    /// [`Replica::settle`]. `body`'s `baseSeq` is set by the replica.
    ///
    /// Text operations in `body` are relative to the text as
    /// [`Replica::node`] shows it.
    ///
    /// # Errors
    /// `body` is not one of the seven mutation types.
    pub fn local_mutation(
        &mut self,
        id: &str,
        body: Body,
    ) -> Result<Option<Envelope>, ReplicaError> {
        if !body.message_type().is_mutation() {
            return Err(ReplicaError::NotAMutation(body.message_type().name()));
        }
        // The first text operation on each node must fit the text as shown
        // (later ones in a batch apply to the text the earlier ones made).
        let mut seen: Vec<&str> = Vec::new();
        for op in ops_of(&body) {
            let Op::NodeUpdate(u) = op.op() else { continue };
            let Some(t) = u.text.as_ref().and_then(|t| t.content.as_ref()) else {
                continue;
            };
            if seen.contains(&u.id.as_str()) {
                continue;
            }
            seen.push(&u.id);
            if let Some(node) = self.node(&u.id) {
                let text = node.content.as_deref().unwrap_or("").chars().count() as u64;
                if t.base_len() != text {
                    return Err(ReplicaError::TextMismatch {
                        id: u.id.clone(),
                        op: t.base_len(),
                        text,
                    });
                }
            }
        }
        self.pending.push_back(Pending {
            id: id.to_owned(),
            body,
            base: self.seq,
            sent: false,
            broken: false,
        });
        self.view.take();
        Ok(self.release().pop())
    }

    /// The pending changes that may be sent now, in order, marked sent.
    ///
    /// A waiting text edit whose text was lost under it (its node deleted,
    /// or a snapshot replaced the state it was made on) is dropped instead:
    /// the server would refuse it, or apply it to a text it was not made for.
    fn release(&mut self) -> Vec<Envelope> {
        let mut out = Vec::new();
        let mut k = 0;
        while k < self.pending.len() {
            if self.pending[k].sent {
                k += 1;
                continue;
            }
            let edited = text_edited_nodes(&self.pending[k].body);
            let blocked = self.pending.iter().take(k).any(|earlier| {
                earlier.sent && text_nodes(&earlier.body).iter().any(|n| edited.contains(n))
            });
            if blocked {
                break;
            }
            if !edited.is_empty()
                && (self.pending[k].broken || !self.text_fits(&self.pending[k].body))
            {
                if let Some(p) = self.pending.remove(k) {
                    self.undo_under(&p.body, k);
                    self.dropped.push(p.id);
                }
                continue;
            }
            self.pending[k].sent = true;
            self.pending[k].base = self.seq;
            out.push(self.envelope(&self.pending[k]));
            k += 1;
        }
        if !self.dropped.is_empty() {
            self.view.take();
        }
        out
    }

    /// Whether the first text edit of each node in `body` is made on the
    /// server's text of that node (a waiting edit is sent only when every
    /// earlier change to that text is settled, so it must be).
    fn text_fits(&self, body: &Body) -> bool {
        // Nodes whose text this body already edited or replaced: later
        // edits of them build on that, not on the server's text.
        let mut seen: Vec<&str> = Vec::new();
        for op in ops_of(body) {
            match op.op() {
                Op::NodeUpdate(u) => {
                    let edit = u.text.as_ref().and_then(|t| t.content.as_ref());
                    let replaces = u.set.as_ref().is_some_and(|s| s.content.is_some());
                    if let (Some(t), false) = (edit, seen.contains(&u.id.as_str())) {
                        if let Some(node) = self.server.nodes.get(&u.id) {
                            let len = node.content.as_deref().unwrap_or("").chars().count() as u64;
                            if t.base_len() != len {
                                return false;
                            }
                        }
                    }
                    if edit.is_some() || replaces {
                        seen.push(&u.id);
                    }
                }
                Op::NodeCreate(c) => seen.push(&c.node.id),
                Op::NodeDelete(d) => seen.push(&d.id),
                _ => {}
            }
        }
        true
    }

    /// The ids of waiting changes dropped without being sent since the last
    /// call (text edits of a node deleted under them): tell the user, as for
    /// a rollback.
    pub fn take_dropped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dropped)
    }

    /// The envelope of a pending change, with its current `baseSeq`.
    fn envelope(&self, p: &Pending) -> Envelope {
        let mut body = p.body.clone();
        let base = Some(p.base);
        match &mut body {
            Body::NodeCreate(b) => b.base_seq = base,
            Body::NodeUpdate(b) => b.base_seq = base,
            Body::NodeDelete(b) => b.base_seq = base,
            Body::EdgeCreate(b) => b.base_seq = base,
            Body::EdgeUpdate(b) => b.base_seq = base,
            Body::EdgeDelete(b) => b.base_seq = base,
            Body::BatchUpdate(b) => b.base_seq = base,
            _ => {}
        }
        Envelope::new(p.id.clone(), body)
    }

    /// The changes sent and not yet settled, to send again after a
    /// reconnect (and after the sync that follows it): the server answers a
    /// repeat with its original outcome, so nothing is applied twice.
    pub fn pending(&self) -> Vec<Envelope> {
        self.pending
            .iter()
            .filter(|p| p.sent)
            .map(|p| self.envelope(p))
            .collect()
    }

    /// Takes the outcome of one of this client's changes: confirmed (keep
    /// it, with the text as the server applied it), conflict resolved (keep
    /// it, with the server's final values) or rolled back (undo it). Returns
    /// the changes that may be sent now.
    ///
    /// An outcome for a change the replica no longer holds (answered twice
    /// after a resend, or already seen in a sync) is ignored.
    ///
    /// # Errors
    /// The outcome's `seq` does not follow the replica's, or the change
    /// cannot be reproduced on the server state: resync.
    pub fn settle(&mut self, outcome: &Envelope) -> Result<Vec<Envelope>, ReplicaError> {
        let (reference, seq, text, resolution) = match &outcome.body {
            Body::UpdateConfirmed(c) => (&c.reference, Some(c.seq), c.text.as_ref(), None),
            Body::UpdateConflictResolved(c) => (
                &c.reference,
                Some(c.seq),
                c.text.as_ref(),
                Some(&c.resolution),
            ),
            Body::UpdateRollback(r) => (&r.reference, None, None, None),
            other => return Err(ReplicaError::Unexpected(other.message_type().name())),
        };
        let Some(index) = self.pending.iter().position(|p| p.id == *reference) else {
            return Ok(self.release());
        };
        match seq {
            None => {
                if let Body::UpdateRollback(r) = &outcome.body {
                    self.rolled_back(index, r);
                }
            }
            Some(seq) if seq <= self.seq => {
                // Already part of the server state (a sync brought it).
                self.pending.remove(index);
            }
            Some(seq) if seq != self.seq + 1 => {
                return Err(ReplicaError::Gap {
                    expected: self.seq + 1,
                    got: seq,
                });
            }
            Some(seq) => {
                let Some(p) = self.pending.remove(index) else {
                    return Ok(Vec::new());
                };
                let at = outcome.timestamp.unwrap_or(0);
                let user = outcome
                    .user_id
                    .clone()
                    .or_else(|| self.user_id.clone())
                    .unwrap_or_default();
                let server_text = text.and_then(|t| t.content.as_ref());
                let is_batch = matches!(p.body, Body::BatchUpdate(_));
                if p.broken && is_batch && !text_edited_nodes(&p.body).is_empty() {
                    self.view.take();
                    return Err(ReplicaError::Unreproducible(p.id));
                }
                let scratch = &mut self.server;
                for (i, op) in ops_of(&p.body).into_iter().enumerate() {
                    let text = if is_batch { None } else { server_text };
                    apply_own(scratch, op, seq, at, &user, text)?;
                    if let Some(r) = resolution {
                        let r = if is_batch {
                            r.ops
                                .iter()
                                .flatten()
                                .find(|o| o.index as usize == i)
                                .map(|o| &o.resolution)
                        } else {
                            Some(r)
                        };
                        if let Some(r) = r {
                            apply_resolution(scratch, op, r);
                        }
                    }
                }
                self.seq = seq;
                for p in &mut self.pending {
                    if !p.broken {
                        p.base = seq;
                    }
                }
                for op in ops_of(&p.body) {
                    if let Op::NodeDelete(d) = op.op() {
                        self.orphan_text(&d.id, 0);
                    }
                }
            }
        }
        self.view.take();
        Ok(self.release())
    }

    /// Undoes a rolled-back change: it leaves pending, and the text edits
    /// waiting behind it on the same nodes are transformed over its undoing.
    fn rolled_back(&mut self, index: usize, _rollback: &UpdateRollback) {
        let Some(p) = self.pending.remove(index) else {
            return;
        };
        self.undo_under(&p.body, index);
    }

    /// A pending change left without being applied (refused, or dropped
    /// unsent): the changes after it, from `index` on, were made on top of
    /// its text edits, so they are rebased over their undoing, or dropped
    /// where the text cannot be restored.
    fn undo_under(&mut self, body: &Body, index: usize) {
        for node in text_nodes(body) {
            match self.undo_text(body, &node) {
                Some(inverse) => self.rebase_pending(&node, inverse, index),
                // The text the waiting edits were made on never existed on
                // the server (a replacement, a create or a delete that was
                // refused): they cannot be rebased, so they are dropped.
                None => self.orphan_text(&node, index),
            }
        }
    }

    /// The operation that undoes a rolled-back change's edits of `node`'s
    /// text, relative to the text with them applied; `None` when the change
    /// replaced the text or its edits do not fit the server's text.
    fn undo_text(&self, body: &Body, node: &str) -> Option<TextOp> {
        let before = self
            .server
            .nodes
            .get(node)?
            .content
            .clone()
            .unwrap_or_default();
        let mut forward: Option<TextOp> = None;
        for op in ops_of(body) {
            match text_effect(op, node) {
                TextEffect::Edit(t) => {
                    forward = Some(match forward {
                        None => t.clone(),
                        Some(f) => f.compose(t).ok()?,
                    });
                }
                TextEffect::Replace => return None,
                TextEffect::None => {}
            }
        }
        let forward = forward?;
        forward.apply(&before).ok()?;
        invert(&forward, &before)
    }

    /// The view: copies the entities the pending changes touch (and the
    /// edges of nodes they delete) and applies the changes to them.
    fn build_view(&self) -> View {
        let mut view = View::default();
        for p in &self.pending {
            for op in ops_of(&p.body) {
                match op.op() {
                    Op::NodeCreate(c) => {
                        view.nodes.insert(c.node.id.clone());
                    }
                    Op::NodeUpdate(u) => {
                        view.nodes.insert(u.id.clone());
                    }
                    Op::NodeDelete(d) => {
                        view.nodes.insert(d.id.clone());
                        view.edges.extend(
                            self.server
                                .adjacency
                                .get(&d.id)
                                .into_iter()
                                .flatten()
                                .cloned(),
                        );
                    }
                    Op::EdgeCreate(e) => {
                        view.nodes.insert(e.source.clone());
                        view.nodes.insert(e.target.clone());
                        view.edges.insert(edge_id(e));
                    }
                    Op::EdgeUpdate(Some(id), _) | Op::EdgeDelete(Some(id)) => {
                        view.edges.insert(id);
                    }
                    _ => {}
                }
            }
        }
        for id in &view.nodes {
            if let Some(n) = self.server.nodes.get(id) {
                view.graph.nodes.insert(id.clone(), n.clone());
            }
        }
        for id in &view.edges {
            if let Some(e) = self.server.edges.get(id) {
                view.graph.insert_edge(e.clone());
            }
        }
        for p in &self.pending {
            for op in ops_of(&p.body) {
                apply_optimistic(&mut view.graph, op);
            }
        }
        // Edges a pending node delete removed in the view.
        view.edges.extend(view.graph.edges.keys().cloned());
        view
    }
}

/// Applies an own confirmed op to the server state exactly as the owner
/// did: same defaults, same merge of a create into an existing entity,
/// same server fields (`seq`, the outcome's time, this user).
fn apply_own(
    g: &mut Graph,
    op: OpView<'_>,
    seq: u64,
    at: u64,
    user: &str,
    text: Option<&TextOp>,
) -> Result<(), ReplicaError> {
    match op.op() {
        Op::NodeCreate(c) => {
            if let Some(node) = g.nodes.get_mut(&c.node.id) {
                node.apply_set(&c.node.as_set());
                node.touch(seq, at, user);
            } else {
                let mut node = c.node.clone();
                node.fill_defaults();
                node.rev = Some(seq);
                node.created_at = Some(at);
                node.updated_at = Some(at);
                node.created_by = Some(user.to_owned());
                node.updated_by = Some(user.to_owned());
                g.nodes.insert(node.id.clone(), node);
            }
        }
        Op::NodeUpdate(u) => {
            let node = g.node_mut(&u.id)?;
            if let Some(set) = &u.set {
                node.apply_set(set);
            }
            if let Some(op) = text.or_else(|| u.text.as_ref().and_then(|t| t.content.as_ref())) {
                let before = node.content.clone().unwrap_or_default();
                let after = op.apply(&before).map_err(|e| {
                    ReplicaError::Diverged(format!("own text edit of node `{}`: {e}", u.id))
                })?;
                node.content = Some(after);
            }
            node.touch(seq, at, user);
        }
        Op::NodeDelete(d) => g.remove_node(&d.id),
        Op::EdgeCreate(e) => {
            let id = edge_id(e);
            if let Some(edge) = g.edges.get_mut(&id) {
                edge.apply_set(&e.as_set());
                edge.touch(seq, at, user);
            } else {
                let mut edge = e.clone();
                edge.id = Some(id);
                edge.fill_defaults();
                edge.rev = Some(seq);
                edge.created_at = Some(at);
                edge.updated_at = Some(at);
                edge.created_by = Some(user.to_owned());
                edge.updated_by = Some(user.to_owned());
                g.insert_edge(edge);
            }
        }
        Op::EdgeUpdate(id, set) => {
            let id = id.ok_or_else(|| ReplicaError::Diverged("edge.update without id".into()))?;
            let edge = g.edge_mut(&id)?;
            if let Some(set) = set {
                edge.apply_set(set);
            }
            edge.touch(seq, at, user);
        }
        Op::EdgeDelete(id) => {
            if let Some(id) = id {
                g.remove_edge(&id);
            }
        }
        Op::Other => {}
    }
    Ok(())
}

/// Takes the server's final values of conflicting fields.
fn apply_resolution(g: &mut Graph, op: OpView<'_>, r: &Resolution) {
    let node_id = match op.op() {
        Op::NodeCreate(c) => Some(c.node.id.clone()),
        Op::NodeUpdate(u) => Some(u.id.clone()),
        _ => None,
    };
    if let Some(node) = node_id.and_then(|id| g.nodes.get_mut(&id)) {
        if r.kind.is_some() {
            node.kind.clone_from(&r.kind);
        }
        if r.label.is_some() {
            node.label.clone_from(&r.label);
        }
        if r.content.is_some() {
            node.content.clone_from(&r.content);
        }
        if r.x.is_some() {
            node.x = r.x;
        }
        if r.y.is_some() {
            node.y = r.y;
        }
        if let Some(p) = &r.props {
            gitmind_schema::model::apply_props_patch(&mut node.props, p);
        }
        return;
    }
    let edge_id = match op.op() {
        Op::EdgeCreate(e) => Some(edge_id(e)),
        Op::EdgeUpdate(id, _) => id,
        _ => None,
    };
    if let Some(edge) = edge_id.and_then(|id| g.edges.get_mut(&id)) {
        if r.confidence.is_some() {
            edge.confidence = r.confidence;
        }
        if r.rationale.is_some() {
            edge.rationale.clone_from(&r.rationale);
        }
        if r.bidirectional.is_some() {
            edge.bidirectional = r.bidirectional;
        }
        if let Some(p) = &r.props {
            gitmind_schema::model::apply_props_patch(&mut edge.props, p);
        }
    }
}

/// Applies a pending op to the view, best effort: what the server would
/// most likely do; an op that cannot apply (its node is gone, its text
/// operation no longer fits) shows nothing.
fn apply_optimistic(g: &mut Graph, op: OpView<'_>) {
    match op.op() {
        Op::NodeCreate(c) => {
            if let Some(node) = g.nodes.get_mut(&c.node.id) {
                node.apply_set(&c.node.as_set());
            } else {
                let mut node = c.node.clone();
                node.fill_defaults();
                g.nodes.insert(node.id.clone(), node);
            }
        }
        Op::NodeUpdate(u) => {
            let Some(node) = g.nodes.get_mut(&u.id) else {
                return;
            };
            if let Some(set) = &u.set {
                node.apply_set(set);
            }
            if let Some(op) = u.text.as_ref().and_then(|t| t.content.as_ref()) {
                if let Ok(after) = op.apply(node.content.as_deref().unwrap_or("")) {
                    node.content = Some(after);
                }
            }
        }
        Op::NodeDelete(d) => g.remove_node(&d.id),
        Op::EdgeCreate(e) => {
            let id = edge_id(e);
            if let Some(edge) = g.edges.get_mut(&id) {
                edge.apply_set(&e.as_set());
            } else if g.nodes.contains_key(&e.source) && g.nodes.contains_key(&e.target) {
                let mut edge = e.clone();
                edge.id = Some(id);
                edge.fill_defaults();
                g.insert_edge(edge);
            }
        }
        Op::EdgeUpdate(id, set) => {
            let (Some(id), Some(set)) = (id, set) else {
                return;
            };
            if let Some(edge) = g.edges.get_mut(&id) {
                edge.apply_set(set);
            }
        }
        Op::EdgeDelete(id) => {
            if let Some(id) = id {
                g.remove_edge(&id);
            }
        }
        Op::Other => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use gitmind_schema::message::{Chunk, UpdateConfirmed, UpdateConflictResolved};
    use gitmind_schema::model::{NodeSet, TextEdits};

    fn synced() -> Replica {
        let mut r = Replica::new();
        r.set_user("me");
        let node = Node {
            id: "c:a".into(),
            label: Some("a".into()),
            content: Some("hello".into()),
            ..Node::default()
        };
        let mut node = node;
        node.fill_defaults();
        r.apply_sync(&GraphSync {
            mode: Some(SyncMode::Snapshot),
            epoch: Some("e".into()),
            seq: Some(1),
            nodes: Some(vec![node]),
            edges: Some(vec![]),
            ..GraphSync::default()
        })
        .unwrap();
        r
    }

    fn text(id: &str, op: TextOp) -> Body {
        Body::NodeUpdate(NodeUpdate {
            id: id.into(),
            text: Some(TextEdits { content: Some(op) }),
            ..NodeUpdate::default()
        })
    }

    fn label(id: &str, l: &str) -> Body {
        Body::NodeUpdate(NodeUpdate {
            id: id.into(),
            set: Some(NodeSet {
                label: Some(l.into()),
                ..NodeSet::default()
            }),
            ..NodeUpdate::default()
        })
    }

    fn ins(before: u64, s: &str, after: u64) -> TextOp {
        let mut op = TextOp::new();
        op.retain(before).insert(s).retain(after);
        op
    }

    fn confirmed(reference: &str, seq: u64, text: Option<TextOp>) -> Envelope {
        let mut e = Envelope::new(
            format!("o-{seq}"),
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: reference.into(),
                seq,
                commit: "c".into(),
                rev: seq,
                text: text.map(|t| TextEdits { content: Some(t) }),
            }),
        );
        e.seq = Some(seq);
        e.timestamp = Some(500);
        e.user_id = Some("me".into());
        e
    }

    fn rollback(reference: &str) -> Envelope {
        Envelope::new(
            "r-1",
            Body::UpdateRollback(UpdateRollback {
                reference: reference.into(),
                reason: gitmind_schema::message::RollbackReason::Invalid,
                message: "no".into(),
                current: None,
                index: None,
                retry_after_ms: None,
            }),
        )
    }

    fn event(id: &str, user: &str, seq: u64, body: Body) -> Envelope {
        let mut e = Envelope::new(id, body);
        e.seq = Some(seq);
        e.user_id = Some(user.into());
        e
    }

    fn content(r: &Replica) -> String {
        r.node("c:a")
            .and_then(|n| n.content.clone())
            .unwrap_or_default()
    }

    #[test]
    fn local_change_shows_at_once_and_is_sent_with_base_seq() {
        let mut r = synced();
        let env = r
            .local_mutation("m1", label("c:a", "mine"))
            .unwrap()
            .unwrap();
        assert!(matches!(&env.body, Body::NodeUpdate(u) if u.base_seq == Some(1)));
        assert_eq!(r.node("c:a").unwrap().label.as_deref(), Some("mine"));
        assert_eq!(r.server_nodes().next().unwrap().label.as_deref(), Some("a"));
        assert_eq!(r.pending().len(), 1);
    }

    #[test]
    fn confirmed_change_joins_the_server_state_with_server_fields() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        r.settle(&confirmed("m1", 2, None)).unwrap();
        let n = r.server_nodes().next().unwrap();
        assert_eq!(
            (
                n.label.as_deref(),
                n.rev,
                n.updated_at,
                n.updated_by.as_deref()
            ),
            (Some("mine"), Some(2), Some(500), Some("me"))
        );
        assert_eq!((r.server_seq(), r.pending_count()), (2, 0));
    }

    #[test]
    fn rollback_leaves_exactly_the_server_state() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        r.local_mutation(
            "m2",
            Body::NodeDelete(NodeDelete {
                id: "c:a".into(),
                ..NodeDelete::default()
            }),
        )
        .unwrap();
        assert!(r.node("c:a").is_none());
        r.settle(&rollback("m2")).unwrap();
        r.settle(&rollback("m1")).unwrap();
        assert_eq!(r.node("c:a"), r.server_nodes().next());
        assert_eq!(r.pending_count(), 0);
    }

    #[test]
    fn conflict_resolved_takes_the_resolution() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        let mut e = Envelope::new(
            "o-2",
            Body::UpdateConflictResolved(UpdateConflictResolved {
                reference: "m1".into(),
                seq: 2,
                commit: "c".into(),
                rev: Some(2),
                conflicts: vec![],
                resolution: Resolution {
                    label: Some("final".into()),
                    ..Resolution::default()
                },
                text: None,
            }),
        );
        e.seq = Some(2);
        r.settle(&e).unwrap();
        assert_eq!(r.node("c:a").unwrap().label.as_deref(), Some("final"));
    }

    #[test]
    fn events_out_of_order_are_errors() {
        let mut r = synced();
        let ev = |seq| event("x", "other", seq, label("c:a", "o"));
        assert_eq!(
            r.apply_event(&ev(3)),
            Err(ReplicaError::Gap {
                expected: 2,
                got: 3
            })
        );
        r.apply_event(&ev(2)).unwrap();
        assert_eq!(r.apply_event(&ev(2)), Err(ReplicaError::Duplicate(2)));
    }

    #[test]
    fn remote_text_op_rebases_the_pending_one() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(5, "!", 0))).unwrap();
        r.apply_event(&event("x", "other", 2, text("c:a", ins(0, ">", 5))))
            .unwrap();
        assert_eq!(content(&r), ">hello!");
        // The confirmation carries the op as the server applied it.
        r.settle(&confirmed("m1", 3, Some(ins(6, "!", 0)))).unwrap();
        assert_eq!(content(&r), ">hello!");
        assert_eq!(
            r.server_nodes().next().unwrap().content.as_deref(),
            Some(">hello!")
        );
    }

    #[test]
    fn text_edit_waits_behind_an_in_flight_edit_of_the_same_node() {
        let mut r = synced();
        assert!(r
            .local_mutation("m1", text("c:a", ins(5, "1", 0)))
            .unwrap()
            .is_some());
        assert!(r
            .local_mutation("m2", text("c:a", ins(6, "2", 0)))
            .unwrap()
            .is_none());
        // A change after a waiting one waits too: order is kept.
        assert!(r.local_mutation("m3", label("c:a", "x")).unwrap().is_none());
        assert_eq!(content(&r), "hello12");
        r.apply_event(&event("x", "other", 2, text("c:a", ins(0, "<", 5))))
            .unwrap();
        assert_eq!(content(&r), "<hello12");
        let sent = r.settle(&confirmed("m1", 3, None)).unwrap();
        assert_eq!(sent.len(), 2);
        let Body::NodeUpdate(u) = &sent[0].body else {
            panic!()
        };
        assert_eq!(u.base_seq, Some(3));
        assert_eq!(
            u.text.as_ref().unwrap().content.as_ref(),
            Some(&ins(7, "2", 0))
        );
    }

    #[test]
    fn rolled_back_text_edit_is_undone_under_the_waiting_one() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(0, "abc", 5)))
            .unwrap();
        r.local_mutation("m2", text("c:a", ins(8, "!", 0))).unwrap();
        assert_eq!(content(&r), "abchello!");
        let sent = r.settle(&rollback("m1")).unwrap();
        assert_eq!(content(&r), "hello!");
        let Body::NodeUpdate(u) = &sent[0].body else {
            panic!()
        };
        assert_eq!(
            u.text.as_ref().unwrap().content.as_ref(),
            Some(&ins(5, "!", 0))
        );
    }

    #[test]
    fn waiting_edit_of_a_node_deleted_under_it_is_dropped() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(0, "a", 5))).unwrap();
        r.local_mutation("m2", text("c:a", ins(0, "b", 6))).unwrap();
        r.settle(&rollback("m1")).unwrap();
        let del = Body::NodeDelete(NodeDelete {
            id: "c:a".into(),
            ..NodeDelete::default()
        });
        let sent = r.apply_event(&event("x", "other", 2, del)).unwrap();
        assert!(sent.is_empty() || r.pending_count() == 1);
        // m2 was sent after m1's rollback; a new waiting edit is dropped.
        assert!(r.node("c:a").is_none());
    }

    #[test]
    fn resend_after_reconnect_carries_the_current_base_seq() {
        let mut r = synced();
        r.local_mutation("m1", text("c:a", ins(5, "!", 0))).unwrap();
        r.apply_event(&event("x", "other", 2, text("c:a", ins(0, ">", 5))))
            .unwrap();
        let resend = r.pending();
        let Body::NodeUpdate(u) = &resend[0].body else {
            panic!()
        };
        assert_eq!(u.base_seq, Some(2));
        assert_eq!(
            u.text.as_ref().unwrap().content.as_ref(),
            Some(&ins(6, "!", 0))
        );
    }

    #[test]
    fn own_event_replayed_by_a_delta_settles_the_change() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        let ev = event("m1", "me", 2, label("c:a", "mine"));
        r.apply_sync(&GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some("e".into()),
            seq: Some(2),
            events: Some(vec![ev]),
            ..GraphSync::default()
        })
        .unwrap();
        assert_eq!(r.pending_count(), 0);
        // The idempotent answer to the resend changes nothing.
        r.settle(&confirmed("m1", 2, None)).unwrap();
        assert_eq!(r.server_seq(), 2);
    }

    #[test]
    fn a_delta_in_chunks_reaches_its_seq_with_the_last_and_a_short_one_is_a_gap() {
        let chunk = |index, events: Vec<Envelope>| GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some("e".into()),
            seq: Some(3),
            events: Some(events),
            chunk: Some(Chunk { index, count: 2 }),
            ..GraphSync::default()
        };
        let mut r = synced();
        r.apply_sync(&chunk(0, vec![event("x", "you", 2, label("c:a", "two"))]))
            .unwrap();
        assert_eq!(r.server_seq(), 2);
        r.apply_sync(&chunk(1, vec![event("y", "you", 3, label("c:a", "three"))]))
            .unwrap();
        assert_eq!(r.server_seq(), 3);
        assert_eq!(
            r.node("c:a").and_then(|n| n.label.clone()).as_deref(),
            Some("three")
        );

        // A last chunk that stops short of `seq` leaves a gap.
        let mut r = synced();
        r.apply_sync(&chunk(0, vec![])).unwrap();
        assert!(matches!(
            r.apply_sync(&chunk(1, vec![event("x", "you", 2, label("c:a", "two"))])),
            Err(ReplicaError::Gap {
                expected: 3,
                got: 3
            })
        ));
    }

    #[test]
    fn delta_for_another_epoch_is_refused() {
        let mut r = synced();
        let sync = GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some("other".into()),
            seq: Some(1),
            ..GraphSync::default()
        };
        assert!(matches!(
            r.apply_sync(&sync),
            Err(ReplicaError::EpochMismatch { .. })
        ));
    }

    #[test]
    fn only_mutations_are_local_changes() {
        let mut r = synced();
        assert_eq!(
            r.local_mutation("m", Body::GraphSync(GraphSync::default())),
            Err(ReplicaError::NotAMutation("graph.sync"))
        );
    }

    #[test]
    fn invert_undoes_an_op() {
        let mut op = TextOp::new();
        op.retain(1).delete(2).insert("XY").retain(2);
        let after = op.apply("abcde").unwrap();
        let inv = invert(&op, "abcde").unwrap();
        assert_eq!(inv.apply(&after).unwrap(), "abcde");
        assert!(invert(&op, "ab").is_none());
    }
}
