//! One ordered change of a graph, as the graph owner hands it to the git
//! persistence thread and keeps it for the replay window.
//!
//! This is the seam between the owner (ordering, in memory, no I/O) and
//! persistence (git, on its own thread): everything git needs to write a
//! commit and to rebuild the owner after a restart is here.

use std::sync::Arc;

use gitmind_schema::model::{Edge, Node};
use gitmind_schema::{Body, Envelope};

/// One committed (or about to be committed) change: one `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// The change's sequence number in its graph.
    pub seq: u64,
    /// When the owner ordered it (server clock, milliseconds since the epoch).
    pub at_ms: u64,
    /// The user who made it.
    pub user_id: String,
    /// The session that sent it.
    pub session_id: String,
    /// The mutation's envelope `id`: the idempotency key with `user_id`.
    pub mutation_id: String,
    /// The event every other session receives: its type and delta data,
    /// `seq`, `userId`, `sessionId`. `data.commit` is `None` until committed,
    /// then the commit's id ([`ChangeRecord::fill_commit`]).
    pub event: Envelope,
    /// The outcome the sender receives (`update.confirmed` or
    /// `update.conflict_resolved`); `commit` is empty until committed.
    pub outcome: Envelope,
    /// The state after the change of every entity it touched, in order.
    pub writes: Vec<Write>,
}

impl ChangeRecord {
    /// Fills in the id of the git commit that holds the change, in its
    /// event and its outcome.
    pub fn fill_commit(&mut self, commit: &str) {
        fill_commit(&mut self.event, commit);
        fill_commit(&mut self.outcome, commit);
    }

    /// The id of the git commit that holds the change; empty until it is
    /// committed.
    pub fn commit(&self) -> &str {
        match &self.outcome.body {
            Body::UpdateConfirmed(b) => &b.commit,
            Body::UpdateConflictResolved(b) => &b.commit,
            _ => "",
        }
    }
}

/// Fills in the commit id of a change's event (`data.commit`) or outcome
/// (`commit`); any other message is left as it is.
pub fn fill_commit(envelope: &mut Envelope, commit: &str) {
    let event = || Some(commit.to_owned());
    match &mut envelope.body {
        Body::NodeCreate(b) => b.commit = event(),
        Body::NodeUpdate(b) => b.commit = event(),
        Body::NodeDelete(b) => b.commit = event(),
        Body::EdgeCreate(b) => b.commit = event(),
        Body::EdgeUpdate(b) => b.commit = event(),
        Body::EdgeDelete(b) => b.commit = event(),
        Body::BatchUpdate(b) => b.commit = event(),
        Body::UpdateConfirmed(b) => commit.clone_into(&mut b.commit),
        Body::UpdateConflictResolved(b) => commit.clone_into(&mut b.commit),
        _ => {}
    }
}

/// The state of one entity after a change: what git writes into the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// The node, whole, as it now is.
    Node(Arc<Node>),
    /// The node with this id was deleted.
    NodeDeleted(String),
    /// The edge, whole, as it now is (its `id` is set).
    Edge(Arc<Edge>),
    /// The edge with this id was deleted.
    EdgeDeleted(String),
}

/// The changes the owner ordered since it last handed some over: the unit
/// the persistence thread commits (it may merge several into one commit).
#[derive(Debug, Clone)]
pub struct Group {
    /// The graph's name.
    pub graph: String,
    /// The graph's epoch.
    pub epoch: String,
    /// Consecutive changes, oldest first.
    pub changes: Vec<Arc<ChangeRecord>>,
}

/// A graph as persistence found it on start: what the owner is rebuilt from.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The graph's name.
    pub graph: String,
    /// Its epoch.
    pub epoch: String,
    /// The last committed `seq`.
    pub seq: u64,
    /// Every node, as committed.
    pub nodes: Vec<Node>,
    /// Every edge, as committed.
    pub edges: Vec<Edge>,
    /// The journal of the most recent changes (the replay window), oldest
    /// first, with `commit` filled in on their events and outcomes. Their
    /// `writes` hold only the deletions (`NodeDeleted`, `EdgeDeleted`: the
    /// edges deleted with a node are known from nowhere else); the rest is
    /// in git already, and the current state of every entity is in `nodes`
    /// and `edges`.
    pub journal: Vec<ChangeRecord>,
}
