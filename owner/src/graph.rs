//! The owner's working graph and how one op of a change is applied to it
//! (docs/protocol.md 3, 4.2).
//!
//! The live graph holds every ordered change, committed or not. Beside each
//! entity it keeps what concurrency needs: who last changed each field and
//! when ([`Stamps`]), when the entity was created, and for nodes the recent
//! text operations on `content` and the edges that touch it. Deleted ids
//! leave a [`Tomb`] so a late update learns it lost to a delete.
//!
//! Every mutation of the live graph pushes an [`Undo`] entry first, so a
//! failing op undoes its batch, and a failed commit undoes every uncommitted
//! change, restoring the committed state exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use gitmind_schema::message::{
    BatchOp, Conflict, EdgeCreate, EdgeDelete, EdgeUpdate, NodeCreate, NodeDelete, NodeUpdate,
    RollbackReason,
};
use gitmind_schema::model::{
    Edge, EdgeSet, Entity, Node, NodeSet, PropsPatch, Resolution, TextEdits,
};
use gitmind_schema::ot::TextOp;

use crate::change::Write;
use crate::history::TextHistory;
use crate::validate::{self, Refusal, MAX_CONTENT_BYTES};
use crate::{Hasher, Map};

/// Who made a change: its session and user, shared by every stamp it leaves.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ActorInfo {
    /// The session's id.
    pub session_id: String,
    /// The user's id.
    pub user_id: String,
}

/// A shared [`ActorInfo`].
pub(crate) type Actor = Arc<ActorInfo>;

/// Whether two actors are the same session.
fn same_session(a: &Actor, b: &Actor) -> bool {
    Arc::ptr_eq(a, b) || a.session_id == b.session_id
}

/// One change to a field: its `seq` and who made it.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    /// The change's `seq`.
    pub seq: u64,
    /// Who made it.
    pub actor: Actor,
}

/// The latest change of a field, and the latest one by any other session:
/// enough to answer "did a session other than S change it after baseSeq?"
/// exactly, in constant space.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamps {
    last: Option<Stamp>,
    other: Option<Stamp>,
}

impl Stamps {
    /// Records a change of the field.
    pub fn record(&mut self, stamp: Stamp) {
        if let Some(last) = &self.last {
            if !same_session(&last.actor, &stamp.actor) {
                self.other = self.last.take();
            }
        }
        self.last = Some(stamp);
    }

    /// The latest change after `base` by a session other than `actor`'s.
    pub fn conflict(&self, base: u64, actor: &Actor) -> Option<&Stamp> {
        let last = self.last.as_ref()?;
        let candidate = if same_session(&last.actor, actor) {
            self.other.as_ref()?
        } else {
            last
        };
        (candidate.seq > base).then_some(candidate)
    }
}

/// Field slots of [`Meta::fields`] for a node.
pub(crate) const NODE_FIELDS: [&str; 5] = ["kind", "label", "content", "x", "y"];
/// Field slots of [`Meta::fields`] for an edge.
pub(crate) const EDGE_FIELDS: [&str; 3] = ["confidence", "rationale", "bidirectional"];
const KIND: usize = 0;
const LABEL: usize = 1;
const CONTENT: usize = 2;
const X: usize = 3;
const Y: usize = 4;
const CONFIDENCE: usize = 0;
const RATIONALE: usize = 1;
const BIDIRECTIONAL: usize = 2;

/// A field of an entity, where stamps are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    /// A plain field, by slot.
    Field(usize),
    /// A property, by key.
    Prop(String),
    /// The entity's existence (a create merged into another's create).
    Id,
}

/// Concurrency metadata of one entity.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    /// The create of this incarnation (`None`: before the known history).
    pub created: Option<Stamp>,
    /// Plain fields, by slot ([`NODE_FIELDS`] or [`EDGE_FIELDS`]).
    pub fields: [Stamps; 5],
    /// Properties, by key (removed keys included).
    pub props: BTreeMap<String, Stamps>,
}

/// Which of a node's plain fields (by slot, [`NODE_FIELDS`]) a set gives.
pub(crate) fn node_fields_given(set: &NodeSet) -> [bool; 5] {
    [
        set.kind.is_some(),
        set.label.is_some(),
        set.content.is_some(),
        set.x.is_some(),
        set.y.is_some(),
    ]
}

/// Which of an edge's plain fields (by slot, [`EDGE_FIELDS`]) a set gives.
pub(crate) fn edge_fields_given(set: &EdgeSet) -> [bool; 3] {
    [
        set.confidence.is_some(),
        set.rationale.is_some(),
        set.bidirectional.is_some(),
    ]
}

impl Meta {
    /// Stamps every field among `given` and every `props` key with `stamp`
    /// (rebuilding field history from the journal).
    pub fn stamp_set(&mut self, given: &[bool], props: Option<&PropsPatch>, stamp: &Stamp) {
        for (slot, _) in given.iter().enumerate().filter(|(_, g)| **g) {
            self.fields[slot].record(stamp.clone());
        }
        for key in props.iter().flat_map(|p| p.keys()) {
            self.props
                .entry(key.clone())
                .or_default()
                .record(stamp.clone());
        }
    }

    /// The fields among `given` (by slot, named by `names`) and the `props`
    /// keys that another session changed after the change's `baseSeq`: the
    /// conflicts it meets, and which fields they concern.
    fn conflicts(
        &self,
        given: &[bool],
        names: &[&str],
        props: Option<&PropsPatch>,
        cx: &Cx<'_>,
    ) -> (Vec<Conflict>, Vec<FieldRef>) {
        let mut conflicts = Vec::new();
        let mut concerned = Vec::new();
        for (slot, _) in given.iter().enumerate().filter(|(_, g)| **g) {
            if let Some(s) = self.fields[slot].conflict(cx.base, cx.actor) {
                conflicts.push(cx.conflict(names[slot].to_owned(), s));
                concerned.push(FieldRef::Field(slot));
            }
        }
        for key in props.iter().flat_map(|p| p.keys()) {
            if let Some(s) = self
                .props
                .get(key)
                .and_then(|s| s.conflict(cx.base, cx.actor))
            {
                conflicts.push(cx.conflict(format!("props.{key}"), s));
                concerned.push(FieldRef::Prop(key.clone()));
            }
        }
        (conflicts, concerned)
    }

    /// The `seq` of the create (0 when it is older than the known history).
    pub fn created_seq(&self) -> u64 {
        self.created.as_ref().map_or(0, |s| s.seq)
    }

    /// Records a change of `field`, returning what to restore on undo.
    fn record(&mut self, field: FieldRef, stamp: Stamp) -> (FieldRef, Option<Stamps>) {
        let prev = match &field {
            FieldRef::Field(i) => {
                let slot = &mut self.fields[*i];
                let prev = slot.clone();
                slot.record(stamp);
                Some(prev)
            }
            FieldRef::Prop(k) => {
                if let Some(slot) = self.props.get_mut(k) {
                    let prev = slot.clone();
                    slot.record(stamp);
                    Some(prev)
                } else {
                    let mut slot = Stamps::default();
                    slot.record(stamp);
                    self.props.insert(k.clone(), slot);
                    None
                }
            }
            FieldRef::Id => None,
        };
        (field, prev)
    }

    /// Puts a field's stamps back as they were.
    fn restore(&mut self, field: FieldRef, prev: Option<Stamps>) {
        match (field, prev) {
            (FieldRef::Field(i), Some(p)) => self.fields[i] = p,
            (FieldRef::Prop(k), Some(p)) => {
                self.props.insert(k, p);
            }
            (FieldRef::Prop(k), None) => {
                self.props.remove(&k);
            }
            _ => {}
        }
    }

    /// Forgets the stamps of properties that no longer exist and are older
    /// than `floor`, so removed keys do not pile up.
    fn prune_props(&mut self, present: impl Fn(&str) -> bool, floor: u64) {
        self.props
            .retain(|k, s| present(k) || s.last.as_ref().is_some_and(|l| l.seq > floor));
    }
}

/// A node with what the owner keeps beside it.
#[derive(Debug, Clone)]
pub(crate) struct NodeEntry {
    /// The node, complete.
    pub node: Arc<Node>,
    /// Concurrency metadata.
    pub meta: Meta,
    /// Recent operations on `content`.
    pub text: TextHistory,
    /// The ids of the edges that touch it.
    pub edges: BTreeSet<String>,
}

/// An edge with what the owner keeps beside it.
#[derive(Debug, Clone)]
pub(crate) struct EdgeEntry {
    /// The edge, complete (its `id` set).
    pub edge: Arc<Edge>,
    /// Concurrency metadata.
    pub meta: Meta,
}

/// What is left of a deleted entity: when, and by whom.
#[derive(Debug, Clone)]
pub(crate) struct Tomb {
    /// The deleting change's `seq`.
    pub seq: u64,
    /// Who deleted it.
    pub actor: Actor,
}

/// One step back: what to do to undo one change to the live graph.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Undo a create: remove the node.
    RemoveNode(String),
    /// Undo a delete: put the node back.
    PutNode(String, Box<NodeEntry>),
    /// Undo an update: the node (which holds its id), its stamps, its text
    /// history.
    Node {
        node: Arc<Node>,
        stamps: Vec<(FieldRef, Option<Stamps>)>,
        text_pushed: bool,
    },
    /// Undo a create: remove the edge.
    RemoveEdge(String),
    /// Undo a delete: put the edge back.
    PutEdge(String, Box<EdgeEntry>),
    /// Undo an update.
    Edge {
        id: String,
        edge: Arc<Edge>,
        stamps: Vec<(FieldRef, Option<Stamps>)>,
    },
    /// Undo a link: remove `edge` from `node`'s adjacency.
    Unlink { node: String, edge: String },
    /// Undo an unlink.
    Link { node: String, edge: String },
    /// Undo a node delete's tombstone.
    NodeTomb { id: String, prev: Option<Tomb> },
    /// Undo an edge delete's tombstone.
    EdgeTomb { id: String, prev: Option<Tomb> },
}

/// The working graph: every ordered change applied.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Nodes by id.
    pub nodes: Map<String, NodeEntry>,
    /// Edges by id.
    pub edges: Map<String, EdgeEntry>,
    /// Deleted node ids, within the replay window.
    pub node_tombs: Map<String, Tomb>,
    /// Deleted edge ids, within the replay window.
    pub edge_tombs: Map<String, Tomb>,
}

/// The context of the change being applied: shared by its ops.
pub(crate) struct Cx<'a> {
    /// The change's `seq`.
    pub seq: u64,
    /// Its time.
    pub at_ms: u64,
    /// The mutation's `baseSeq`.
    pub base: u64,
    /// Who makes it.
    pub actor: &'a Actor,
    /// The configured edge types.
    pub edge_types: &'a [String],
    /// The 0-based op index within a batch (`None`: not a batch).
    pub index: Option<u32>,
    /// Steps to undo what the change did so far, in order.
    pub undo: Vec<Undo>,
    /// Writes for persistence, in order (may repeat an entity in a batch).
    pub writes: Vec<Write>,
    /// Per node touched by text in this change: the concurrent operations
    /// (after `baseSeq`) rebased over this change's own earlier operations,
    /// so a later op of the same batch sees the earlier ones' effects.
    pub text: HashMap<String, Vec<TextOp>>,
}

impl Cx<'_> {
    fn stamp(&self) -> Stamp {
        Stamp {
            seq: self.seq,
            actor: Arc::clone(self.actor),
        }
    }

    fn conflict(&self, field: String, stamp: &Stamp) -> Conflict {
        Conflict {
            field,
            seq: stamp.seq,
            user_id: stamp.actor.user_id.clone(),
            index: self.index,
        }
    }
}

/// Which entity an op concerned and which of its fields conflicted: the
/// outcome's `resolution` is read from the final state after the change.
#[derive(Debug)]
pub(crate) enum Concerned {
    /// Fields of a node.
    Node(String, Vec<FieldRef>),
    /// Fields of an edge.
    Edge(String, Vec<FieldRef>),
}

/// What one applied op yields.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The op as an event (delta form).
    pub event: BatchOp,
    /// The concurrent changes it met.
    pub conflicts: Vec<Conflict>,
    /// The fields concerned by those conflicts.
    pub concerned: Option<Concerned>,
    /// Its text operation as applied.
    pub text: Option<TextEdits>,
}

impl Applied {
    fn new(event: BatchOp) -> Self {
        Applied {
            event,
            conflicts: Vec::new(),
            concerned: None,
            text: None,
        }
    }
}

/// One op of a mutation, borrowed from a single mutation or a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpRef<'a> {
    /// `node.create`.
    NodeCreate(&'a NodeCreate),
    /// `node.update`.
    NodeUpdate(&'a NodeUpdate),
    /// `node.delete`.
    NodeDelete(&'a NodeDelete),
    /// `edge.create`.
    EdgeCreate(&'a EdgeCreate),
    /// `edge.update`.
    EdgeUpdate(&'a EdgeUpdate),
    /// `edge.delete`.
    EdgeDelete(&'a EdgeDelete),
}

impl<'a> OpRef<'a> {
    /// The op of a batch entry.
    pub fn of(op: &'a BatchOp) -> Self {
        match op {
            BatchOp::NodeCreate(o) => OpRef::NodeCreate(o),
            BatchOp::NodeUpdate(o) => OpRef::NodeUpdate(o),
            BatchOp::NodeDelete(o) => OpRef::NodeDelete(o),
            BatchOp::EdgeCreate(o) => OpRef::EdgeCreate(o),
            BatchOp::EdgeUpdate(o) => OpRef::EdgeUpdate(o),
            BatchOp::EdgeDelete(o) => OpRef::EdgeDelete(o),
        }
    }

    /// Its wire type name.
    pub fn type_name(self) -> &'static str {
        match self {
            OpRef::NodeCreate(_) => "node.create",
            OpRef::NodeUpdate(_) => "node.update",
            OpRef::NodeDelete(_) => "node.delete",
            OpRef::EdgeCreate(_) => "edge.create",
            OpRef::EdgeUpdate(_) => "edge.update",
            OpRef::EdgeDelete(_) => "edge.delete",
        }
    }
}

/// The number of characters of a text.
fn chars(s: &str) -> u64 {
    s.chars().count() as u64
}

/// The operation that replaces `old` with `new` (how a `set.content` enters
/// the text history).
pub(crate) fn replacement(old: &str, new: &str) -> TextOp {
    let mut op = TextOp::new();
    op.delete(chars(old)).insert(new);
    op
}

impl Live {
    /// An empty graph whose maps hash with `hasher`.
    pub fn with_hasher(hasher: &Hasher) -> Self {
        Live {
            nodes: Map::with_hasher(hasher.clone()),
            edges: Map::with_hasher(hasher.clone()),
            node_tombs: Map::with_hasher(hasher.clone()),
            edge_tombs: Map::with_hasher(hasher.clone()),
        }
    }

    /// Applies one op of the change in `cx`, or refuses it. On refusal the
    /// live graph may hold part of the change: the caller undoes `cx.undo`.
    pub fn apply(&mut self, cx: &mut Cx<'_>, op: OpRef<'_>) -> Result<Applied, Refusal> {
        match op {
            OpRef::NodeCreate(o) => self.node_create(cx, o),
            OpRef::NodeUpdate(o) => self.node_update(cx, o),
            OpRef::NodeDelete(o) => self.node_delete(cx, o),
            OpRef::EdgeCreate(o) => self.edge_create(cx, o),
            OpRef::EdgeUpdate(o) => self.edge_update(cx, o),
            OpRef::EdgeDelete(o) => self.edge_delete(cx, o),
        }
    }

    /// The node as the server holds it, for a rollback's `current`.
    pub fn current_node(&self, id: &str) -> Option<Entity> {
        self.nodes.get(id).map(|e| Entity::Node((*e.node).clone()))
    }

    /// The edge as the server holds it, for a rollback's `current`.
    pub fn current_edge(&self, id: &str) -> Option<Entity> {
        self.edges.get(id).map(|e| Entity::Edge((*e.edge).clone()))
    }

    /// Why an op on a node that does not exist fails: `deleted` when it was
    /// deleted after `baseSeq`, else `not_found`.
    fn missing_node(&self, id: &str, base: u64, what: &str) -> Refusal {
        match self.node_tombs.get(id) {
            Some(t) if t.seq > base => Refusal::new(
                RollbackReason::Deleted,
                format!(
                    "{what} `{id}` was deleted at seq {} by {}",
                    t.seq, t.actor.user_id
                ),
            ),
            _ => Refusal::new(
                RollbackReason::NotFound,
                format!("{what} `{id}` does not exist"),
            ),
        }
    }

    /// As [`Live::missing_node`], for an edge.
    fn missing_edge(&self, id: &str, base: u64) -> Refusal {
        match self.edge_tombs.get(id) {
            Some(t) if t.seq > base => Refusal::new(
                RollbackReason::Deleted,
                format!(
                    "edge `{id}` was deleted at seq {} by {}",
                    t.seq, t.actor.user_id
                ),
            ),
            _ => Refusal::new(
                RollbackReason::NotFound,
                format!("edge `{id}` does not exist"),
            ),
        }
    }

    fn node_create(&mut self, cx: &mut Cx<'_>, op: &NodeCreate) -> Result<Applied, Refusal> {
        validate::node(&op.node)?;
        let id = &op.node.id;
        if let Some(entry) = self.nodes.get(id) {
            let created = entry.meta.created.clone();
            if entry.meta.created_seq() <= cx.base {
                return Err(Refusal::new(
                    RollbackReason::AlreadyExists,
                    format!("node `{id}` already existed at baseSeq {}", cx.base),
                )
                .with_current(self.current_node(id)));
            }
            // Created after baseSeq: the first create stands, this one is
            // merged into it as an update of the fields it sets.
            let set = op.node.as_set();
            let mut applied = self.update_node_fields(cx, id, Some(&set), None)?;
            if let Some(created) = created.filter(|c| !same_session(&c.actor, cx.actor)) {
                if applied.conflicts.is_empty() {
                    applied.conflicts.push(cx.conflict("id".into(), &created));
                    applied.concerned = Some(Concerned::Node(id.clone(), vec![FieldRef::Id]));
                }
            }
            return Ok(applied);
        }
        let mut node = op.node.clone();
        node.fill_defaults();
        node.rev = Some(cx.seq);
        node.created_at = Some(cx.at_ms);
        node.updated_at = Some(cx.at_ms);
        node.created_by = Some(cx.actor.user_id.clone());
        node.updated_by = Some(cx.actor.user_id.clone());
        let stamp = cx.stamp();
        let mut meta = Meta {
            created: Some(stamp.clone()),
            ..Meta::default()
        };
        for slot in &mut meta.fields {
            slot.record(stamp.clone());
        }
        for key in node.props.iter().flat_map(|p| p.keys()) {
            let mut s = Stamps::default();
            s.record(stamp.clone());
            meta.props.insert(key.clone(), s);
        }
        let node = Arc::new(node);
        let entry = NodeEntry {
            node: Arc::clone(&node),
            meta,
            text: TextHistory::starting_at(cx.seq),
            edges: BTreeSet::new(),
        };
        self.nodes.insert(id.clone(), entry);
        cx.undo.push(Undo::RemoveNode(id.clone()));
        cx.text.insert(id.clone(), Vec::new());
        cx.writes.push(Write::Node(Arc::clone(&node)));
        let event = NodeCreate {
            base_seq: None,
            node: (*node).clone(),
            commit: None,
        };
        Ok(Applied::new(BatchOp::NodeCreate(event)))
    }

    fn node_update(&mut self, cx: &mut Cx<'_>, op: &NodeUpdate) -> Result<Applied, Refusal> {
        validate::node_id(&op.id, "id")?;
        let set = op.set.as_ref().filter(|s| !s.is_empty());
        let text = op.text.as_ref().and_then(|t| t.content.as_ref());
        if set.is_none() && text.is_none() {
            return Err(Refusal::invalid(
                "node.update changes nothing: give `set` or `text`",
            ));
        }
        if let Some(set) = set {
            validate::node_set(set)?;
            if set.content.is_some() && text.is_some() {
                return Err(Refusal::invalid(
                    "node.update both replaces content (set.content) and edits it (text.content); send one",
                ));
            }
        }
        self.update_node_fields(cx, &op.id, set, text)
    }

    /// Applies `set` and a text operation to an existing node: conflicts,
    /// stamps, text history, undo, write and event.
    fn update_node_fields(
        &mut self,
        cx: &mut Cx<'_>,
        id: &str,
        set: Option<&NodeSet>,
        text: Option<&TextOp>,
    ) -> Result<Applied, Refusal> {
        let Some(entry) = self.nodes.get_mut(id) else {
            return Err(self.missing_node(id, cx.base, "node"));
        };
        let current = || Some(Entity::Node((*entry.node).clone()));
        if let Some(patch) = set.and_then(|s| s.props.as_ref()) {
            validate::props_count_after(&entry.node.props, patch, "node")
                .map_err(|r| r.with_current(current()))?;
        }
        // Text: transform against every op applied after baseSeq.
        let mut applied_text: Option<(TextOp, String)> = None;
        if let Some(op) = text {
            let concurrent = match cx.text.get_mut(id) {
                Some(v) => v,
                None => {
                    let Some(ops) = entry.text.since(cx.base) else {
                        return Err(Refusal::new(
                            RollbackReason::Stale,
                            format!(
                                "text.content of node `{id}` is based on seq {}, older than the text history kept (from seq {})",
                                cx.base, entry.text.floor
                            ),
                        )
                        .with_current(current()));
                    };
                    cx.text.entry(id.to_owned()).or_insert(ops)
                }
            };
            let mut op = op.clone();
            for c in concurrent.iter_mut() {
                let (c2, o2) = TextOp::transform_pair(c, &op).map_err(|_| {
                    Refusal::invalid(format!(
                        "text.content is for a text of {} characters; node `{id}` had {} at baseSeq {}",
                        op.base_len(),
                        c.base_len(),
                        cx.base
                    ))
                })?;
                *c = c2;
                op = o2;
            }
            let old = entry.node.content.as_deref().unwrap_or("");
            let new = op.apply(old).map_err(|_| {
                Refusal::invalid(format!(
                    "text.content is for a text of {} characters; node `{id}` has {}",
                    op.base_len(),
                    chars(old)
                ))
                .with_current(current())
            })?;
            if new.len() > MAX_CONTENT_BYTES {
                return Err(Refusal::too_large(format!(
                    "node.content would be {} bytes; the limit is {MAX_CONTENT_BYTES}",
                    new.len()
                ))
                .with_current(current()));
            }
            applied_text = Some((op, new));
        }
        // Conflicts: fields this op sets that another session changed after baseSeq.
        let (conflicts, concerned) = match set {
            Some(set) => entry.meta.conflicts(
                &node_fields_given(set),
                &NODE_FIELDS,
                set.props.as_ref(),
                cx,
            ),
            None => (Vec::new(), Vec::new()),
        };
        // Apply.
        let prev = Arc::clone(&entry.node);
        let node = Arc::make_mut(&mut entry.node);
        let old_content = set
            .filter(|s| s.content.is_some())
            .and_then(|_| node.content.clone());
        let mut changed = set.map(|s| node.apply_set(s)).unwrap_or_default();
        let mut text_pushed = false;
        let mut out_text = None;
        if let Some((op, new)) = applied_text {
            if !op.is_noop() {
                node.content = Some(new);
                entry.text.ops.push_back((cx.seq, op.clone()));
                text_pushed = true;
            }
            out_text = Some(TextEdits { content: Some(op) });
        }
        if let Some(new) = &changed.content {
            let old = old_content.unwrap_or_default();
            entry.text.ops.push_back((cx.seq, replacement(&old, new)));
            text_pushed = true;
            cx.text.insert(id.to_owned(), Vec::new());
        }
        node.touch(cx.seq, cx.at_ms, &cx.actor.user_id);
        // Stamps of what really changed.
        let stamp = cx.stamp();
        let mut stamps = Vec::new();
        let changed_slots = [
            changed.kind.is_some(),
            changed.label.is_some(),
            text_pushed,
            changed.x.is_some(),
            changed.y.is_some(),
        ];
        for (slot, _) in changed_slots.iter().enumerate().filter(|(_, c)| **c) {
            stamps.push(entry.meta.record(FieldRef::Field(slot), stamp.clone()));
        }
        for key in changed.props.iter().flat_map(|p| p.keys()) {
            stamps.push(
                entry
                    .meta
                    .record(FieldRef::Prop(key.clone()), stamp.clone()),
            );
        }
        if entry.meta.props.len() > 2 * validate::MAX_PROPS {
            let props = entry.node.props.clone().unwrap_or_default();
            entry.meta.prune_props(|k| props.contains_key(k), cx.base);
        }
        cx.undo.push(Undo::Node {
            node: prev,
            stamps,
            text_pushed,
        });
        cx.writes.push(Write::Node(Arc::clone(&entry.node)));
        let node = &entry.node;
        if changed.props.as_ref().is_some_and(PropsPatch::is_empty) {
            changed.props = None;
        }
        let event = NodeUpdate {
            base_seq: None,
            id: id.to_owned(),
            set: (!changed.is_empty()).then_some(changed),
            text: out_text.clone(),
            rev: node.rev,
            updated_at: node.updated_at,
            updated_by: node.updated_by.clone(),
            commit: None,
        };
        Ok(Applied {
            event: BatchOp::NodeUpdate(event),
            concerned: (!conflicts.is_empty()).then(|| Concerned::Node(id.to_owned(), concerned)),
            conflicts,
            text: out_text,
        })
    }

    fn node_delete(&mut self, cx: &mut Cx<'_>, op: &NodeDelete) -> Result<Applied, Refusal> {
        validate::node_id(&op.id, "id")?;
        let Some(entry) = self.nodes.remove(&op.id) else {
            return Err(self.missing_node(&op.id, cx.base, "node"));
        };
        let id = op.id.clone();
        for edge_id in &entry.edges {
            let Some(edge) = self.edges.remove(edge_id) else {
                continue;
            };
            // The node itself is already gone: only the other end is unlinked.
            self.bury_edge(cx, edge_id, edge);
        }
        cx.undo.push(Undo::PutNode(id.clone(), Box::new(entry)));
        let prev = self.node_tombs.insert(
            id.clone(),
            Tomb {
                seq: cx.seq,
                actor: Arc::clone(cx.actor),
            },
        );
        cx.undo.push(Undo::NodeTomb {
            id: id.clone(),
            prev,
        });
        cx.text.remove(&id);
        cx.writes.push(Write::NodeDeleted(id.clone()));
        // The event names the node alone: its edges go with it on every
        // client, however many there are (docs/protocol.md section 5).
        let event = NodeDelete {
            base_seq: None,
            id,
            commit: None,
        };
        Ok(Applied::new(BatchOp::NodeDelete(event)))
    }

    fn edge_create(&mut self, cx: &mut Cx<'_>, op: &EdgeCreate) -> Result<Applied, Refusal> {
        validate::edge(&op.edge, cx.edge_types)?;
        let id = Edge::make_id(&op.edge.source, &op.edge.edge_type, &op.edge.target);
        if let Some(entry) = self.edges.get(&id) {
            let created = entry.meta.created.clone();
            if entry.meta.created_seq() <= cx.base {
                return Err(Refusal::new(
                    RollbackReason::AlreadyExists,
                    format!("edge `{id}` already existed at baseSeq {}", cx.base),
                )
                .with_current(self.current_edge(&id)));
            }
            let set = op.edge.as_set();
            let mut applied = self.update_edge_fields(cx, &id, &set)?;
            if let Some(created) = created.filter(|c| !same_session(&c.actor, cx.actor)) {
                if applied.conflicts.is_empty() {
                    applied.conflicts.push(cx.conflict("id".into(), &created));
                    applied.concerned = Some(Concerned::Edge(id.clone(), vec![FieldRef::Id]));
                }
            }
            return Ok(applied);
        }
        for (end, what) in [
            (&op.edge.source, "edge.source"),
            (&op.edge.target, "edge.target"),
        ] {
            if !self.nodes.contains_key(end) {
                return Err(self.missing_node(end, cx.base, what));
            }
        }
        let mut edge = op.edge.clone();
        edge.id = Some(id.clone());
        edge.fill_defaults();
        edge.rev = Some(cx.seq);
        edge.created_at = Some(cx.at_ms);
        edge.updated_at = Some(cx.at_ms);
        edge.created_by = Some(cx.actor.user_id.clone());
        edge.updated_by = Some(cx.actor.user_id.clone());
        let stamp = cx.stamp();
        let mut meta = Meta {
            created: Some(stamp.clone()),
            ..Meta::default()
        };
        for slot in meta.fields.iter_mut().take(EDGE_FIELDS.len()) {
            slot.record(stamp.clone());
        }
        for key in edge.props.iter().flat_map(|p| p.keys()) {
            let mut s = Stamps::default();
            s.record(stamp.clone());
            meta.props.insert(key.clone(), s);
        }
        let edge = Arc::new(edge);
        for end in [&edge.source, &edge.target] {
            if let Some(n) = self.nodes.get_mut(end) {
                if n.edges.insert(id.clone()) {
                    cx.undo.push(Undo::Unlink {
                        node: end.clone(),
                        edge: id.clone(),
                    });
                }
            }
        }
        self.edges.insert(
            id.clone(),
            EdgeEntry {
                edge: Arc::clone(&edge),
                meta,
            },
        );
        cx.undo.push(Undo::RemoveEdge(id));
        cx.writes.push(Write::Edge(Arc::clone(&edge)));
        let event = EdgeCreate {
            base_seq: None,
            edge: (*edge).clone(),
            commit: None,
        };
        Ok(Applied::new(BatchOp::EdgeCreate(event)))
    }

    fn edge_update(&mut self, cx: &mut Cx<'_>, op: &EdgeUpdate) -> Result<Applied, Refusal> {
        let Some(id) = op.edge_id() else {
            return Err(Refusal::invalid(
                "edge.update names no edge: give `id`, or `source`, `type` and `target`",
            ));
        };
        let Some(set) = op.set.as_ref().filter(|s| !s.is_empty()) else {
            return Err(Refusal::invalid("edge.update changes nothing: give `set`"));
        };
        validate::edge_set(set)?;
        self.update_edge_fields(cx, &id, set)
    }

    /// Applies `set` to an existing edge: conflicts, stamps, undo, write, event.
    fn update_edge_fields(
        &mut self,
        cx: &mut Cx<'_>,
        id: &str,
        set: &EdgeSet,
    ) -> Result<Applied, Refusal> {
        let Some(entry) = self.edges.get_mut(id) else {
            return Err(self.missing_edge(id, cx.base));
        };
        if let Some(patch) = &set.props {
            validate::props_count_after(&entry.edge.props, patch, "edge")
                .map_err(|r| r.with_current(Some(Entity::Edge((*entry.edge).clone()))))?;
        }
        let (conflicts, concerned) = entry.meta.conflicts(
            &edge_fields_given(set),
            &EDGE_FIELDS,
            set.props.as_ref(),
            cx,
        );
        let prev = Arc::clone(&entry.edge);
        let edge = Arc::make_mut(&mut entry.edge);
        let changed = edge.apply_set(set);
        edge.touch(cx.seq, cx.at_ms, &cx.actor.user_id);
        let stamp = cx.stamp();
        let mut stamps = Vec::new();
        let changed_slots = [
            changed.confidence.is_some(),
            changed.rationale.is_some(),
            changed.bidirectional.is_some(),
        ];
        for (slot, _) in changed_slots.iter().enumerate().filter(|(_, c)| **c) {
            stamps.push(entry.meta.record(FieldRef::Field(slot), stamp.clone()));
        }
        for key in changed.props.iter().flat_map(|p| p.keys()) {
            stamps.push(
                entry
                    .meta
                    .record(FieldRef::Prop(key.clone()), stamp.clone()),
            );
        }
        if entry.meta.props.len() > 2 * validate::MAX_PROPS {
            let props = entry.edge.props.clone().unwrap_or_default();
            entry.meta.prune_props(|k| props.contains_key(k), cx.base);
        }
        cx.undo.push(Undo::Edge {
            id: id.to_owned(),
            edge: prev,
            stamps,
        });
        cx.writes.push(Write::Edge(Arc::clone(&entry.edge)));
        let edge = &entry.edge;
        let event = EdgeUpdate {
            base_seq: None,
            id: Some(id.to_owned()),
            source: None,
            edge_type: None,
            target: None,
            set: (!changed.is_empty()).then_some(changed),
            rev: edge.rev,
            updated_at: edge.updated_at,
            updated_by: edge.updated_by.clone(),
            commit: None,
        };
        Ok(Applied {
            event: BatchOp::EdgeUpdate(event),
            concerned: (!conflicts.is_empty()).then(|| Concerned::Edge(id.to_owned(), concerned)),
            conflicts,
            text: None,
        })
    }

    /// Finishes deleting an edge already taken out of `edges`: unlinks it
    /// from the endpoints still present, leaves a tombstone, writes the
    /// deletion, and records how to undo each step.
    fn bury_edge(&mut self, cx: &mut Cx<'_>, id: &str, entry: EdgeEntry) {
        for end in [&entry.edge.source, &entry.edge.target] {
            if let Some(n) = self.nodes.get_mut(end) {
                if n.edges.remove(id) {
                    cx.undo.push(Undo::Link {
                        node: end.clone(),
                        edge: id.to_owned(),
                    });
                }
            }
        }
        cx.undo.push(Undo::PutEdge(id.to_owned(), Box::new(entry)));
        let prev = self.edge_tombs.insert(
            id.to_owned(),
            Tomb {
                seq: cx.seq,
                actor: Arc::clone(cx.actor),
            },
        );
        cx.undo.push(Undo::EdgeTomb {
            id: id.to_owned(),
            prev,
        });
        cx.writes.push(Write::EdgeDeleted(id.to_owned()));
    }

    fn edge_delete(&mut self, cx: &mut Cx<'_>, op: &EdgeDelete) -> Result<Applied, Refusal> {
        let Some(id) = op.edge_id() else {
            return Err(Refusal::invalid(
                "edge.delete names no edge: give `id`, or `source`, `type` and `target`",
            ));
        };
        let Some(entry) = self.edges.remove(&id) else {
            return Err(self.missing_edge(&id, cx.base));
        };
        self.bury_edge(cx, &id, entry);
        let event = EdgeDelete {
            base_seq: None,
            id: Some(id),
            source: None,
            edge_type: None,
            target: None,
            commit: None,
        };
        Ok(Applied::new(BatchOp::EdgeDelete(event)))
    }

    /// Undoes steps, newest first.
    pub fn revert(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::RemoveNode(id) => {
                    self.nodes.remove(&id);
                }
                Undo::PutNode(id, entry) => {
                    self.nodes.insert(id, *entry);
                }
                Undo::Node {
                    node,
                    stamps,
                    text_pushed,
                } => {
                    if let Some(e) = self.nodes.get_mut(&node.id) {
                        e.node = node;
                        for (field, prev) in stamps.into_iter().rev() {
                            e.meta.restore(field, prev);
                        }
                        if text_pushed {
                            e.text.ops.pop_back();
                        }
                    }
                }
                Undo::RemoveEdge(id) => {
                    self.edges.remove(&id);
                }
                Undo::PutEdge(id, entry) => {
                    self.edges.insert(id, *entry);
                }
                Undo::Edge { id, edge, stamps } => {
                    if let Some(e) = self.edges.get_mut(&id) {
                        e.edge = edge;
                        for (field, prev) in stamps.into_iter().rev() {
                            e.meta.restore(field, prev);
                        }
                    }
                }
                Undo::Unlink { node, edge } => {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.edges.remove(&edge);
                    }
                }
                Undo::Link { node, edge } => {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.edges.insert(edge);
                    }
                }
                Undo::NodeTomb { id, prev } => match prev {
                    Some(t) => {
                        self.node_tombs.insert(id, t);
                    }
                    None => {
                        self.node_tombs.remove(&id);
                    }
                },
                Undo::EdgeTomb { id, prev } => match prev {
                    Some(t) => {
                        self.edge_tombs.insert(id, t);
                    }
                    None => {
                        self.edge_tombs.remove(&id);
                    }
                },
            }
        }
    }

    /// The final values of the fields an op concerned, read after the change.
    pub fn resolution(&self, concerned: &Concerned) -> Resolution {
        let mut r = Resolution::default();
        match concerned {
            Concerned::Node(id, fields) => {
                let Some(e) = self.nodes.get(id) else {
                    return r;
                };
                let n = &e.node;
                for f in fields {
                    match f {
                        FieldRef::Field(KIND) => r.kind = n.kind.clone(),
                        FieldRef::Field(LABEL) => r.label = n.label.clone(),
                        FieldRef::Field(CONTENT) => r.content = n.content.clone(),
                        FieldRef::Field(X) => r.x = n.x,
                        FieldRef::Field(Y) => r.y = n.y,
                        FieldRef::Prop(k) => {
                            let v = n.props.as_ref().and_then(|p| p.get(k)).cloned();
                            r.props
                                .get_or_insert_with(PropsPatch::new)
                                .insert(k.clone(), v);
                        }
                        _ => {}
                    }
                }
            }
            Concerned::Edge(id, fields) => {
                let Some(e) = self.edges.get(id) else {
                    return r;
                };
                let d = &e.edge;
                for f in fields {
                    match f {
                        FieldRef::Field(CONFIDENCE) => r.confidence = d.confidence,
                        FieldRef::Field(RATIONALE) => r.rationale = d.rationale.clone(),
                        FieldRef::Field(BIDIRECTIONAL) => r.bidirectional = d.bidirectional,
                        FieldRef::Prop(k) => {
                            let v = d.props.as_ref().and_then(|p| p.get(k)).cloned();
                            r.props
                                .get_or_insert_with(PropsPatch::new)
                                .insert(k.clone(), v);
                        }
                        _ => {}
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(session: &str) -> Actor {
        Arc::new(ActorInfo {
            session_id: session.into(),
            user_id: format!("user-{session}"),
        })
    }

    #[test]
    fn stamps_find_the_latest_change_by_another_session() {
        let (a, b, c) = (actor("a"), actor("b"), actor("c"));
        let mut s = Stamps::default();
        assert!(s.conflict(0, &a).is_none());
        s.record(Stamp {
            seq: 3,
            actor: b.clone(),
        });
        s.record(Stamp {
            seq: 5,
            actor: a.clone(),
        });
        // a asks with base 2: b changed it at 3.
        assert_eq!(s.conflict(2, &a).map(|s| s.seq), Some(3));
        assert!(s.conflict(3, &a).is_none());
        // b asks: a changed it at 5.
        assert_eq!(s.conflict(4, &b).map(|s| s.seq), Some(5));
        s.record(Stamp {
            seq: 6,
            actor: a.clone(),
        });
        assert_eq!(s.conflict(2, &a).map(|s| s.seq), Some(3));
        s.record(Stamp {
            seq: 7,
            actor: c.clone(),
        });
        assert_eq!(s.conflict(2, &a).map(|s| s.seq), Some(7));
        assert_eq!(s.conflict(2, &c).map(|s| s.seq), Some(6));
    }

    #[test]
    fn replacement_deletes_everything_and_inserts() {
        let op = replacement("héllo", "new");
        assert_eq!(op.apply("héllo").ok().as_deref(), Some("new"));
        assert_eq!(op.base_len(), 5);
    }
}
