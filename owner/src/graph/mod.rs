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
//!
//! - [`stamps`]: who changed what and when, for detecting conflicts.
//! - [`apply`]: one op applied, or refused.
//! - [`undo`]: the steps that take the graph back.

mod apply;
mod stamps;
mod undo;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use gitmind_schema::message::{
    BatchOp, Conflict, EdgeCreate, EdgeDelete, EdgeUpdate, NodeCreate, NodeDelete, NodeUpdate,
};
use gitmind_schema::model::{Edge, Entity, Node, PropsPatch, Resolution, TextEdits};
use gitmind_schema::ot::TextOp;

use crate::change::Write;
use crate::history::TextHistory;
use crate::{Hasher, Map};

pub(crate) use self::stamps::{
    edge_fields_given, node_fields_given, same_session, Actor, ActorInfo, FieldRef, Meta, Stamp,
    Stamps, BIDIRECTIONAL, CONFIDENCE, CONTENT, EDGE_FIELDS, KIND, LABEL, NODE_FIELDS, RATIONALE,
    X, Y,
};
pub(crate) use self::undo::Undo;

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

    /// The node as the server holds it, for a rollback's `current`.
    pub fn current_node(&self, id: &str) -> Option<Entity> {
        self.nodes.get(id).map(|e| Entity::Node((*e.node).clone()))
    }

    /// The edge as the server holds it, for a rollback's `current`.
    pub fn current_edge(&self, id: &str) -> Option<Entity> {
        self.edges.get(id).map(|e| Entity::Edge((*e.edge).clone()))
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

    #[test]
    fn replacement_deletes_everything_and_inserts() {
        let op = replacement("héllo", "new");
        assert_eq!(op.apply("héllo").ok().as_deref(), Some("new"));
        assert_eq!(op.base_len(), 5);
    }
}
