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
//!
//! [`TextOp::transform_pair`]: gitmind_schema::ot::TextOp::transform_pair
//!
//! # Layout
//!
//! This file holds the types; their work is split by concern: `state` is
//! the state machine (syncs, events, outcomes, local changes), `text` the
//! OT client (which pending change may go out, and rebasing waiting text
//! edits), `store` the graph and how each kind of op lands in it, and
//! `view` what this client sees (the server state with the pending changes
//! on top).

use std::cell::OnceCell;
use std::collections::VecDeque;

use gitmind_schema::model::{Edge, Node};
use gitmind_schema::Body;

use self::store::Graph;
use self::view::View;

mod regions;
mod state;
mod store;
mod text;
mod view;

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
    /// The session's regions cut the graph (docs/protocol.md 7): events
    /// come with gaps in `seq`, and nodes come and go by region messages.
    partial: bool,
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
}

/// Helpers shared by the unit tests of the submodules.
#[cfg(test)]
mod fixtures {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use gitmind_schema::message::{
        GraphSync, NodeUpdate, SyncMode, UpdateConfirmed, UpdateRollback,
    };
    use gitmind_schema::model::{Node, NodeSet, TextEdits};
    use gitmind_schema::ot::TextOp;
    use gitmind_schema::{Body, Envelope};

    use super::Replica;

    pub(super) fn synced() -> Replica {
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

    pub(super) fn text(id: &str, op: TextOp) -> Body {
        Body::NodeUpdate(NodeUpdate {
            id: id.into(),
            text: Some(TextEdits { content: Some(op) }),
            ..NodeUpdate::default()
        })
    }

    pub(super) fn label(id: &str, l: &str) -> Body {
        Body::NodeUpdate(NodeUpdate {
            id: id.into(),
            set: Some(NodeSet {
                label: Some(l.into()),
                ..NodeSet::default()
            }),
            ..NodeUpdate::default()
        })
    }

    pub(super) fn ins(before: u64, s: &str, after: u64) -> TextOp {
        let mut op = TextOp::new();
        op.retain(before).insert(s).retain(after);
        op
    }

    pub(super) fn confirmed(reference: &str, seq: u64, text: Option<TextOp>) -> Envelope {
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

    pub(super) fn rollback(reference: &str) -> Envelope {
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

    pub(super) fn event(id: &str, user: &str, seq: u64, body: Body) -> Envelope {
        let mut e = Envelope::new(id, body);
        e.seq = Some(seq);
        e.user_id = Some(user.into());
        e
    }

    pub(super) fn content(r: &Replica) -> String {
        r.node("c:a")
            .and_then(|n| n.content.clone())
            .unwrap_or_default()
    }
}
