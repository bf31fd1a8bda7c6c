//! The replica of a session whose regions cut the graph (docs/protocol.md
//! 7): it holds what its regions hold. `region.sync` and `region.enter`
//! add nodes (and a sync's edges), `region.leave` removes a node and its
//! edges; events come with gaps in `seq` (the changes outside the regions),
//! which a partial replica takes without asking for a resync.

use gitmind_schema::{Body, Envelope};

use super::Replica;

impl Replica {
    /// Marks the replica partial (the program subscribed regions, or gave
    /// up the region `"all"`) or whole again.
    pub fn set_partial(&mut self, partial: bool) {
        self.partial = partial;
    }

    /// Whether the replica is partial.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Takes a `region.sync`, `region.enter` or `region.leave`; anything
    /// else is ignored. A region's nodes are added to what the replica
    /// holds (several regions may overlap); a leave removes the node,
    /// which may still be in another region of the session: the server
    /// sends a leave for each region, and the program that holds overlapping
    /// regions keeps them apart by `regionId`.
    pub fn apply_region(&mut self, envelope: &Envelope) {
        match &envelope.body {
            Body::RegionSync(sync) => {
                for node in &sync.nodes {
                    self.server.nodes.insert(node.id.clone(), node.clone());
                }
                for edge in &sync.edges {
                    self.server.insert_edge(edge.clone());
                }
            }
            Body::RegionEnter(enter) => {
                self.server
                    .nodes
                    .insert(enter.node.id.clone(), enter.node.clone());
            }
            Body::RegionLeave(leave) => self.server.remove_node(&leave.id),
            _ => return,
        }
        self.view.take();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::{RegionEnter, RegionLeave};
    use gitmind_schema::model::Node;

    #[test]
    fn region_messages_add_and_remove_nodes() {
        let mut r = Replica::new();
        r.set_partial(true);
        let node = Node {
            id: "c:a".into(),
            ..Node::default()
        };
        r.apply_region(&Envelope::new(
            "e",
            Body::RegionEnter(RegionEnter {
                region_id: "v".into(),
                node,
            }),
        ));
        assert_eq!(r.server_nodes().count(), 1);
        r.apply_region(&Envelope::new(
            "l",
            Body::RegionLeave(RegionLeave {
                region_id: "v".into(),
                id: "c:a".into(),
            }),
        ));
        assert_eq!(r.server_nodes().count(), 0);
        assert!(r.is_partial());
    }
}
