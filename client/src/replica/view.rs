//! What this client sees: the server state with the pending changes
//! applied on top, in order, rebuilt lazily after a change.

use std::collections::HashSet;

use gitmind_schema::model::{Edge, Node};

use super::store::{apply_optimistic, edge_id, ops_of, Graph, Op};
use super::Replica;

/// What the pending changes make of the server state: the entities they
/// touch, as they would be after them; every other entity is the server's.
#[derive(Debug, Clone, Default)]
pub(super) struct View {
    /// Node ids whose view is in `graph` (absent there: deleted).
    nodes: HashSet<String>,
    /// Edge ids whose view is in `graph` (absent there: deleted).
    edges: HashSet<String>,
    /// The touched entities after the pending changes.
    graph: Graph,
}

impl Replica {
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
