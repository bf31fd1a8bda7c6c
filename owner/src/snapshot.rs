//! What the owner shows of the committed graph: `graph.sync` as a snapshot
//! or a delta (docs/protocol.md 6), and the snapshot's JSON for
//! `GET /v1/graphs/{graph}`.

use std::sync::Arc;

use gitmind_schema::model::{Edge, Node};
use gitmind_schema::Envelope;

use imbl::shared_ptr::DefaultSharedPtr;

use crate::{Committed, Owner};

/// Nodes or edges of a committed snapshot: an O(1) clone of the owner's
/// persistent map, to walk and encode anywhere.
#[derive(Debug, Clone)]
pub struct Entities<T: Clone>(pub(crate) Committed<T>);

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
        self.snapshot_json_of(|_| true)
    }

    /// [`SyncData::snapshot_json`] of the nodes `may_read` accepts, and of
    /// the edges between them.
    pub fn snapshot_json_of(&self, may_read: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
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
        let mut nodes: Vec<&Node> = nodes
            .iter()
            .map(|n| &**n)
            .filter(|n| may_read(&n.id))
            .collect();
        nodes.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<&Edge> = edges
            .iter()
            .map(|e| &**e)
            .filter(|e| may_read(&e.source) && may_read(&e.target))
            .collect();
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

impl Owner {
    /// What a `graph.sync` carries, as of the committed `seq` (never showing
    /// an uncommitted change): the events after `since` when its epoch is
    /// this graph's and the window reaches back to it (`since` equal to the
    /// committed `seq` gives no events), else the whole graph.
    pub fn sync(&self, since: Option<(u64, &str)>) -> SyncData {
        if let Some((since, epoch)) = since {
            if epoch == self.epoch && since <= self.committed_seq {
                if let Some(changes) = self.window.after(since) {
                    let events = changes
                        .take_while(|c| c.seq <= self.committed_seq)
                        .map(|c| c.event.clone())
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
