//! Undo steps: every change to the live graph pushes one first, so a
//! refused op undoes its batch and a failed commit undoes every
//! uncommitted change, restoring the committed state exactly.

use std::sync::Arc;

use gitmind_schema::model::{Edge, Node};

use super::*;

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

impl Live {
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
}
