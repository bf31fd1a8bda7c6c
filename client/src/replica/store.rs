//! The graph store: nodes, edges and which edges touch each node, and how
//! each kind of op lands in a graph: as the owner applied it (an own
//! confirmed change), with the owner's resolution of a conflict, or best
//! effort (a pending change shown on top).

use std::collections::{BTreeSet, HashMap};

use gitmind_schema::message::{BatchOp, NodeCreate, NodeDelete, NodeUpdate};
use gitmind_schema::model::{Edge, Node, Resolution};
use gitmind_schema::ot::TextOp;
use gitmind_schema::Body;

use super::ReplicaError;

/// The graph as of some `seq`: nodes, edges, and which edges touch each node.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Graph {
    /// The nodes, by id.
    pub(super) nodes: HashMap<String, Node>,
    /// The edges, by id (set or made from the triple).
    pub(super) edges: HashMap<String, Edge>,
    /// For each node, the ids of the edges that touch it.
    pub(super) adjacency: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub(super) fn insert_edge(&mut self, edge: Edge) {
        let id = edge_id(&edge);
        for end in [&edge.source, &edge.target] {
            self.adjacency
                .entry(end.clone())
                .or_default()
                .insert(id.clone());
        }
        self.edges.insert(id, edge);
    }

    pub(super) fn remove_edge(&mut self, id: &str) {
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
    pub(super) fn remove_node(&mut self, id: &str) {
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

    pub(super) fn node_mut(&mut self, id: &str) -> Result<&mut Node, ReplicaError> {
        self.nodes
            .get_mut(id)
            .ok_or_else(|| ReplicaError::Diverged(format!("node `{id}` is not in the replica")))
    }

    pub(super) fn edge_mut(&mut self, id: &str) -> Result<&mut Edge, ReplicaError> {
        self.edges
            .get_mut(id)
            .ok_or_else(|| ReplicaError::Diverged(format!("edge `{id}` is not in the replica")))
    }
}

/// The id of an edge, set or made from its triple.
pub(super) fn edge_id(edge: &Edge) -> String {
    edge.id
        .clone()
        .unwrap_or_else(|| Edge::make_id(&edge.source, &edge.edge_type, &edge.target))
}

/// The ops of a mutation body, as a slice (one for a single mutation).
pub(super) fn ops_of(body: &Body) -> Vec<OpView<'_>> {
    match body {
        Body::BatchUpdate(b) => b.ops.iter().map(OpView::Batch).collect(),
        other => vec![OpView::Single(other)],
    }
}

/// One op, borrowed.
#[derive(Clone, Copy)]
pub(super) enum OpView<'a> {
    Single(&'a Body),
    Batch(&'a BatchOp),
}

/// One op, owned form helpers.
pub(super) enum Op<'a> {
    NodeCreate(&'a NodeCreate),
    NodeUpdate(&'a NodeUpdate),
    NodeDelete(&'a NodeDelete),
    EdgeCreate(&'a Edge),
    EdgeUpdate(Option<String>, Option<&'a gitmind_schema::model::EdgeSet>),
    EdgeDelete(Option<String>),
    Other,
}

impl<'a> OpView<'a> {
    pub(super) fn op(self) -> Op<'a> {
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

/// Applies an own confirmed op to the server state exactly as the owner
/// did: same defaults, same merge of a create into an existing entity,
/// same server fields (`seq`, the outcome's time, this user).
pub(super) fn apply_own(
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
pub(super) fn apply_resolution(g: &mut Graph, op: OpView<'_>, r: &Resolution) {
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
pub(super) fn apply_optimistic(g: &mut Graph, op: OpView<'_>) {
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
