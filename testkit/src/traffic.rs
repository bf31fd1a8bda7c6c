//! Realistic protocol traffic made from a real graph, for the zstd
//! dictionary trainer (`schema/examples/train_dict.rs`), the codec
//! benchmarks and size reports.
//!
//! [`Traffic`] turns the nodes and edges of a [`Dataset`] into messages of
//! every kind a live session sees, from a seed, so that the same seed gives
//! the same messages on every machine. The dataset comes from
//! [`read_dataset`] (the client's one dataset reader, with limits) or,
//! where the file may be missing, [`builtin_dataset`].

use std::collections::BTreeMap;
use std::path::Path;

use gitmind_client::dataset::{Item, Reader};
use gitmind_schema::message::*;
use gitmind_schema::model::{
    Edge, EdgeSet, Node, NodeSet, PropValue, Props, PropsPatch, TextEdits,
};
use gitmind_schema::ot::TextOp;

pub use gitmind_client::dataset::{Dataset, DatasetError};

use crate::rng::Rng;

/// Reads the dataset at `path`, keeping the first `max_nodes` nodes and
/// stopping at the edge after the first `max_edges` edges: a sample of the
/// real graph that is quick to read.
///
/// # Errors
/// The file cannot be read, or a line is not a node or an edge.
pub fn read_dataset(
    path: impl AsRef<Path>,
    max_nodes: usize,
    max_edges: usize,
) -> Result<Dataset, DatasetError> {
    let mut data = Dataset::default();
    for line in Reader::open(path)? {
        match line?.item {
            Item::Node(node) => {
                if data.nodes.len() < max_nodes {
                    data.nodes.push(node);
                }
            }
            Item::Edge(edge) => {
                if data.edges.len() >= max_edges {
                    break;
                }
                data.edges.push(edge);
            }
        }
    }
    Ok(data)
}

/// The kinds of message [`Traffic`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `node.update` setting label, position or props (mutation or event).
    NodeUpdate,
    /// `node.update` editing the content with a text operation.
    TextEdit,
    /// `node.create` (mutation or event).
    NodeCreate,
    /// `node.delete`.
    NodeDelete,
    /// `edge.create` (mutation or event).
    EdgeCreate,
    /// `edge.update`.
    EdgeUpdate,
    /// `edge.delete`.
    EdgeDelete,
    /// `cursor.move`.
    Cursor,
    /// `user.presence`.
    Presence,
    /// `selection.change`.
    Selection,
    /// An outcome: confirmed, conflict resolved or rolled back.
    Outcome,
    /// `system.heartbeat`.
    Heartbeat,
    /// `batch.update`.
    Batch,
}

/// What the traffic of a live graph looks like, roughly: mostly cursors
/// and small node changes, some text, fewer creates and deletes.
const MIX: &[(Kind, u32)] = &[
    (Kind::NodeUpdate, 22),
    (Kind::TextEdit, 14),
    (Kind::NodeCreate, 8),
    (Kind::NodeDelete, 2),
    (Kind::EdgeCreate, 8),
    (Kind::EdgeUpdate, 2),
    (Kind::EdgeDelete, 3),
    (Kind::Cursor, 16),
    (Kind::Presence, 4),
    (Kind::Selection, 4),
    (Kind::Outcome, 12),
    (Kind::Heartbeat, 2),
    (Kind::Batch, 3),
];

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dmitri", "eun-ji", "farah", "gonzai", "anon-17", "anon-204",
];
const CLIENTS: &[&str] = &[
    "gitmind-cli/0.1",
    "gitmind-web/0.3.2",
    "gitmind-client/0.1.0",
    "gitmind-load/0.1",
];
const MOODS: &[&str] = &["curious", "focused", "excited", "sleepy"];
const EDGE_TYPES: &[&str] = &[
    "depends-on",
    "relates-to",
    "augments",
    "implements",
    "blocks",
    "belongs-to",
    "documents",
    "references",
];
const WORDS: &[&str] = &[
    "the",
    "library",
    "package",
    "provides",
    "support",
    "for",
    "a",
    "tool",
    "data",
    "files",
    "development",
    "documentation",
    "this",
    "module",
    "contains",
    "version",
    "Python",
    "Perl",
    "shared",
    "runtime",
    "headers",
    "plugin",
    "interface",
    " ",
    ", ",
    ". ",
    "\n",
];

/// A generator of realistic messages over a dataset.
#[derive(Debug)]
pub struct Traffic<'a> {
    data: &'a Dataset,
    rng: Rng,
    /// The graph's sequence number, growing as events are made.
    seq: u64,
    /// The server clock, milliseconds.
    now: u64,
    /// The commit of the current group commit, shared by nearby events.
    commit: String,
    /// A per-sender counter for message ids.
    counter: u64,
}

impl<'a> Traffic<'a> {
    /// Traffic over `data` (which must hold at least one node and one
    /// edge for every kind to appear), reproducible from `seed`.
    pub fn new(data: &'a Dataset, seed: u64) -> Traffic<'a> {
        let mut rng = Rng::new(seed);
        let commit = rng.hex(40);
        Traffic {
            data,
            rng,
            seq: 48_213,
            now: 1_764_158_000_000,
            commit,
            counter: 0,
        }
    }

    /// The next message of the mix.
    pub fn message(&mut self) -> Envelope {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut roll = u32::try_from(self.rng.below(total as usize)).unwrap_or(0);
        for (kind, weight) in MIX {
            if roll < *weight {
                return self.message_of(*kind);
            }
            roll -= weight;
        }
        self.message_of(Kind::Cursor)
    }

    /// A frame's worth of messages: one most of the time, sometimes a small
    /// batch, as a server's writer or a busy client sends them.
    pub fn frame(&mut self) -> Vec<Envelope> {
        let n = match self.rng.below(10) {
            0..=5 => 1,
            6 | 7 => 2 + self.rng.below(3),
            _ => 5 + self.rng.below(8),
        };
        (0..n).map(|_| self.message()).collect()
    }

    /// A message of one kind; the direction (a client's mutation or the
    /// server's event or outcome) is chosen at random.
    pub fn message_of(&mut self, kind: Kind) -> Envelope {
        self.now += 1 + self.rng.below(400) as u64;
        if self.rng.chance(0.3) {
            self.commit = self.rng.hex(40);
        }
        match kind {
            Kind::NodeUpdate => {
                if self.rng.chance(0.5) {
                    self.node_update_mutation()
                } else {
                    self.node_update_event()
                }
            }
            Kind::TextEdit => self.text_edit(),
            Kind::NodeCreate => self.node_create(),
            Kind::NodeDelete => self.node_delete(),
            Kind::EdgeCreate => self.edge_create(),
            Kind::EdgeUpdate => self.edge_update(),
            Kind::EdgeDelete => self.edge_delete(),
            Kind::Cursor => self.cursor(),
            Kind::Presence => self.presence(),
            Kind::Selection => self.selection(),
            Kind::Outcome => self.outcome(),
            Kind::Heartbeat => self.heartbeat(),
            Kind::Batch => self.batch(),
        }
    }

    /// A client's `node.update` of a real node: a new label, position or
    /// props, as a person editing the graph sends it.
    pub fn node_update_mutation(&mut self) -> Envelope {
        let (id, set) = self.node_set();
        let base_seq = self.seq.saturating_sub(self.rng.below(20) as u64);
        let body = Body::NodeUpdate(NodeUpdate {
            base_seq: Some(base_seq),
            id,
            set: Some(set),
            ..NodeUpdate::default()
        });
        self.client_envelope(body)
    }

    /// The `node.update` event the server broadcasts for such a change.
    pub fn node_update_event(&mut self) -> Envelope {
        let (id, set) = self.node_set();
        let user = self.user();
        self.seq += 1;
        let body = Body::NodeUpdate(NodeUpdate {
            id,
            set: Some(set),
            rev: Some(self.seq),
            updated_at: Some(self.now),
            updated_by: Some(user.clone()),
            commit: Some(self.commit.clone()),
            ..NodeUpdate::default()
        });
        self.event_envelope(body, user)
    }

    /// A sender-unique message id (ULID-like, 26 characters).
    fn message_id(&mut self) -> String {
        const B32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        self.counter += 1;
        let mut time = self.now;
        let mut id = [0u8; 26];
        for slot in id[..10].iter_mut().rev() {
            *slot = B32[(time % 32) as usize];
            time /= 32;
        }
        for slot in &mut id[10..] {
            *slot = B32[self.rng.below(32)];
        }
        String::from_utf8_lossy(&id).into_owned()
    }

    fn user(&mut self) -> String {
        (*self.rng.pick(USERS).unwrap_or(&"alice")).to_owned()
    }

    fn session(&mut self) -> String {
        format!("s-{}", self.rng.hex(4))
    }

    fn node(&mut self) -> Node {
        self.rng
            .pick(&self.data.nodes)
            .cloned()
            .unwrap_or_else(|| Node {
                id: "pkg:gitmind".into(),
                ..Node::default()
            })
    }

    fn edge(&mut self) -> Edge {
        self.rng
            .pick(&self.data.edges)
            .cloned()
            .unwrap_or_else(|| Edge {
                source: "pkg:gitmind".into(),
                edge_type: "depends-on".into(),
                target: "pkg:libgit2".into(),
                ..Edge::default()
            })
    }

    fn coordinate(&mut self) -> f64 {
        // Layouts are in pixels with a fraction, positive or negative.
        let whole = self.rng.below(4000) as f64 - 2000.0;
        whole + (self.rng.below(100) as f64) / 100.0
    }

    /// An envelope as a client sends it: id, timestamp, version, sometimes metadata.
    fn client_envelope(&mut self, body: Body) -> Envelope {
        let mut env = Envelope::new(self.message_id(), body);
        env.timestamp = Some(self.now);
        if self.rng.chance(0.3) {
            env.metadata = Some(Metadata {
                client_version: self.rng.pick(CLIENTS).map(|s| (*s).to_owned()),
                gonzai_state: self
                    .rng
                    .chance(0.5)
                    .then(|| self.rng.pick(MOODS).map(|s| (*s).to_owned()))
                    .flatten(),
                region: self
                    .rng
                    .chance(0.3)
                    .then(|| format!("r{}", self.rng.below(8))),
            });
        }
        env
    }

    /// An event as the server broadcasts it: the causing session's ids and `seq`.
    fn event_envelope(&mut self, body: Body, user: String) -> Envelope {
        let mut env = self.client_envelope(body);
        env.metadata = None;
        env.user_id = Some(user);
        env.session_id = Some(self.session());
        env.seq = Some(self.seq);
        env
    }

    /// An ephemeral relay: the sender's ids, no `seq`.
    fn relay_envelope(&mut self, body: Body) -> Envelope {
        let mut env = self.client_envelope(body);
        if self.rng.chance(0.6) {
            env.metadata = None;
            env.user_id = Some(self.user());
            env.session_id = Some(self.session());
        }
        env
    }

    fn node_set(&mut self) -> (String, NodeSet) {
        let node = self.node();
        let other = self.node();
        let mut set = NodeSet::default();
        match self.rng.below(5) {
            0 => set.label = other.label.or(Some("untitled".into())),
            1 | 2 => {
                set.x = Some(self.coordinate());
                set.y = Some(self.coordinate());
            }
            3 => set.props = Some(self.props_patch(&node)),
            _ => {
                set.label = node.label.as_ref().map(|l| format!("{l} (reviewed)"));
                set.x = Some(self.coordinate());
                set.y = Some(self.coordinate());
                set.props = Some(self.props_patch(&node));
            }
        }
        if self.rng.chance(0.05) {
            set.kind =
                Some(["document", "concept", "library", "tool"][self.rng.below(4)].to_owned());
        }
        (node.id, set)
    }

    fn props_patch(&mut self, node: &Node) -> PropsPatch {
        let mut patch = BTreeMap::new();
        let keys: Vec<String> = node
            .props
            .as_ref()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        match self.rng.below(5) {
            0 => {
                patch.insert(
                    "priority".to_owned(),
                    Some(PropValue::String("optional".into())),
                );
            }
            1 => {
                let v = format!(
                    "{}.{}.{}-{}",
                    self.rng.below(10),
                    self.rng.below(30),
                    self.rng.below(20),
                    1 + self.rng.below(4)
                );
                patch.insert("version".to_owned(), Some(PropValue::String(v)));
            }
            2 => {
                patch.insert(
                    "reviewed".to_owned(),
                    Some(PropValue::Bool(self.rng.chance(0.7))),
                );
            }
            3 => {
                let score = (self.rng.below(1000) as f64) / 1000.0;
                patch.insert("score".to_owned(), Some(PropValue::Number(score)));
            }
            _ => {
                let key = self
                    .rng
                    .pick(&keys)
                    .cloned()
                    .unwrap_or_else(|| "section".to_owned());
                patch.insert(key, None);
            }
        }
        patch
    }

    fn text_op(&mut self, text: &str) -> TextOp {
        let len = text.chars().count() as u64;
        let at = if len == 0 {
            0
        } else {
            self.rng.below(len as usize + 1) as u64
        };
        let mut op = TextOp::new();
        op.retain(at);
        let mut left = len - at;
        if left > 0 && self.rng.chance(0.35) {
            let cut = (1 + self.rng.below(12) as u64).min(left);
            op.delete(cut);
            left -= cut;
        }
        if self.rng.chance(0.8) {
            let words = 1 + self.rng.below(4);
            let mut insert = String::new();
            for _ in 0..words {
                insert.push_str(self.rng.pick(WORDS).unwrap_or(&"x"));
            }
            op.insert(&insert);
        }
        op.retain(left);
        op
    }

    fn text_edit(&mut self) -> Envelope {
        let node = self.node();
        let op = self.text_op(node.content.as_deref().unwrap_or(""));
        let text = Some(TextEdits { content: Some(op) });
        if self.rng.chance(0.5) {
            let base_seq = Some(self.seq.saturating_sub(self.rng.below(5) as u64));
            self.client_envelope(Body::NodeUpdate(NodeUpdate {
                base_seq,
                id: node.id,
                text,
                ..NodeUpdate::default()
            }))
        } else {
            let user = self.user();
            self.seq += 1;
            let body = Body::NodeUpdate(NodeUpdate {
                id: node.id,
                text,
                rev: Some(self.seq),
                updated_at: Some(self.now),
                updated_by: Some(user.clone()),
                commit: Some(self.commit.clone()),
                ..NodeUpdate::default()
            });
            self.event_envelope(body, user)
        }
    }

    fn node_create(&mut self) -> Envelope {
        let mut node = self.node();
        node.x = Some(self.coordinate());
        node.y = Some(self.coordinate());
        if self.rng.chance(0.5) {
            let base_seq = Some(self.seq);
            self.client_envelope(Body::NodeCreate(NodeCreate {
                base_seq,
                node,
                commit: None,
            }))
        } else {
            let user = self.user();
            self.seq += 1;
            node.rev = Some(self.seq);
            node.created_at = Some(self.now);
            node.updated_at = Some(self.now);
            node.created_by = Some(user.clone());
            node.updated_by = Some(user.clone());
            let body = Body::NodeCreate(NodeCreate {
                base_seq: None,
                node,
                commit: Some(self.commit.clone()),
            });
            self.event_envelope(body, user)
        }
    }

    fn node_delete(&mut self) -> Envelope {
        let node = self.node();
        if self.rng.chance(0.5) {
            let base_seq = Some(self.seq);
            self.client_envelope(Body::NodeDelete(NodeDelete {
                base_seq,
                id: node.id,
                ..NodeDelete::default()
            }))
        } else {
            let user = self.user();
            self.seq += 1;
            let body = Body::NodeDelete(NodeDelete {
                base_seq: None,
                id: node.id,
                commit: Some(self.commit.clone()),
            });
            self.event_envelope(body, user)
        }
    }

    fn edge_create(&mut self) -> Envelope {
        let mut edge = self.edge();
        if self.rng.chance(0.2) {
            edge.edge_type = (*self.rng.pick(EDGE_TYPES).unwrap_or(&"relates-to")).to_owned();
            edge.confidence = Some((self.rng.below(100) as f64) / 100.0);
            edge.rationale = Some("suggested by gonzai".into());
        }
        if self.rng.chance(0.5) {
            let base_seq = Some(self.seq);
            self.client_envelope(Body::EdgeCreate(EdgeCreate {
                base_seq,
                edge,
                commit: None,
            }))
        } else {
            let user = self.user();
            self.seq += 1;
            edge.id = Some(Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
            edge.rev = Some(self.seq);
            edge.created_at = Some(self.now);
            edge.updated_at = Some(self.now);
            edge.created_by = Some(user.clone());
            edge.updated_by = Some(user.clone());
            let body = Body::EdgeCreate(EdgeCreate {
                base_seq: None,
                edge,
                commit: Some(self.commit.clone()),
            });
            self.event_envelope(body, user)
        }
    }

    fn edge_update(&mut self) -> Envelope {
        let edge = self.edge();
        let set = EdgeSet {
            confidence: Some((self.rng.below(100) as f64) / 100.0),
            rationale: self
                .rng
                .chance(0.3)
                .then(|| "confirmed by maintainers".to_owned()),
            ..EdgeSet::default()
        };
        let id = Some(Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
        let base_seq = Some(self.seq);
        self.client_envelope(Body::EdgeUpdate(EdgeUpdate {
            base_seq,
            id,
            set: Some(set),
            ..EdgeUpdate::default()
        }))
    }

    fn edge_delete(&mut self) -> Envelope {
        let edge = self.edge();
        if self.rng.chance(0.5) {
            let base_seq = Some(self.seq);
            self.client_envelope(Body::EdgeDelete(EdgeDelete {
                base_seq,
                source: Some(edge.source),
                edge_type: Some(edge.edge_type),
                target: Some(edge.target),
                ..EdgeDelete::default()
            }))
        } else {
            let user = self.user();
            self.seq += 1;
            let id = Some(Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
            let body = Body::EdgeDelete(EdgeDelete {
                id,
                commit: Some(self.commit.clone()),
                ..EdgeDelete::default()
            });
            self.event_envelope(body, user)
        }
    }

    fn cursor(&mut self) -> Envelope {
        let node_id = self.rng.chance(0.4).then(|| self.node().id);
        let body = Body::CursorMove(CursorMove {
            x: self.coordinate(),
            y: self.coordinate(),
            node_id,
        });
        self.relay_envelope(body)
    }

    fn presence(&mut self) -> Envelope {
        let status = [
            PresenceStatus::Active,
            PresenceStatus::Idle,
            PresenceStatus::Away,
            PresenceStatus::Joined,
            PresenceStatus::Left,
        ][self.rng.below(5)];
        let focus = self.rng.chance(0.6).then(|| self.node().id);
        let user = self.user();
        let body = Body::UserPresence(UserPresence {
            status,
            focus,
            display_name: self
                .rng
                .chance(0.5)
                .then(|| format!("{}{}", user[..1].to_uppercase(), &user[1..])),
            color: self
                .rng
                .chance(0.5)
                .then(|| format!("#{}", self.rng.hex(6))),
            chaos_affinity: self
                .rng
                .chance(0.2)
                .then(|| (self.rng.below(10) as f64) / 10.0),
        });
        self.relay_envelope(body)
    }

    fn selection(&mut self) -> Envelope {
        let nodes = (0..self.rng.below(4)).map(|_| self.node().id).collect();
        let edges = (0..self.rng.below(2))
            .map(|_| {
                let e = self.edge();
                Edge::make_id(&e.source, &e.edge_type, &e.target)
            })
            .collect();
        self.relay_envelope(Body::SelectionChange(SelectionChange { nodes, edges }))
    }

    fn outcome(&mut self) -> Envelope {
        let reference = self.message_id();
        self.seq += 1;
        let body = match self.rng.below(10) {
            0..=6 => {
                let text = self.rng.chance(0.2).then(|| {
                    let node = self.node();
                    TextEdits {
                        content: Some(self.text_op(node.content.as_deref().unwrap_or(""))),
                    }
                });
                Body::UpdateConfirmed(UpdateConfirmed {
                    reference,
                    seq: self.seq,
                    commit: self.commit.clone(),
                    rev: self.seq,
                    text,
                })
            }
            7 | 8 => {
                let user = self.user();
                let label = self.node().label;
                Body::UpdateConflictResolved(UpdateConflictResolved {
                    reference,
                    seq: self.seq,
                    commit: self.commit.clone(),
                    rev: Some(self.seq),
                    conflicts: vec![Conflict {
                        field: "label".into(),
                        seq: self.seq - 1 - self.rng.below(5) as u64,
                        user_id: user,
                        index: None,
                    }],
                    resolution: gitmind_schema::model::Resolution {
                        label,
                        ..Default::default()
                    },
                    text: None,
                })
            }
            _ => {
                self.seq -= 1;
                let node = self.node();
                Body::UpdateRollback(UpdateRollback {
                    reference,
                    reason: RollbackReason::Deleted,
                    message: format!("node `{}` was deleted after baseSeq", node.id),
                    current: None,
                    index: None,
                    retry_after_ms: None,
                })
            }
        };
        let mut env = Envelope::new(self.message_id(), body);
        env.timestamp = Some(self.now);
        env.user_id = Some(self.user());
        env.session_id = Some(self.session());
        if let Body::UpdateConfirmed(UpdateConfirmed { seq, .. })
        | Body::UpdateConflictResolved(UpdateConflictResolved { seq, .. }) = &env.body
        {
            env.seq = Some(*seq);
        }
        env
    }

    fn heartbeat(&mut self) -> Envelope {
        if self.rng.chance(0.5) {
            let mut env = Envelope::new(
                self.message_id(),
                Body::SystemHeartbeat(SystemHeartbeat {
                    seq: Some(self.seq),
                    server_time: Some(self.now),
                }),
            );
            env.seq = Some(self.seq);
            env.user_id = Some(self.user());
            env.session_id = Some(self.session());
            env
        } else {
            self.client_envelope(Body::SystemHeartbeat(SystemHeartbeat::default()))
        }
    }

    fn batch(&mut self) -> Envelope {
        let n = 2 + self.rng.below(6);
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            ops.push(match self.rng.below(4) {
                0 => {
                    let mut node = self.node();
                    node.x = Some(self.coordinate());
                    node.y = Some(self.coordinate());
                    BatchOp::NodeCreate(NodeCreate {
                        base_seq: None,
                        node,
                        commit: None,
                    })
                }
                1 => BatchOp::EdgeCreate(EdgeCreate {
                    base_seq: None,
                    edge: self.edge(),
                    commit: None,
                }),
                _ => {
                    let (id, set) = self.node_set();
                    BatchOp::NodeUpdate(NodeUpdate {
                        id,
                        set: Some(set),
                        ..NodeUpdate::default()
                    })
                }
            });
        }
        let base_seq = Some(self.seq);
        self.client_envelope(Body::BatchUpdate(BatchUpdate {
            base_seq,
            ops,
            commit: None,
        }))
    }
}

/// A few real nodes (from Debian's package index) for tests and
/// benchmarks that must not depend on the dataset file.
pub fn builtin_dataset() -> Dataset {
    let node = |id: &str, kind: &str, label: &str, content: &str, props: &[(&str, &str)]| Node {
        id: id.into(),
        kind: Some(kind.into()),
        label: Some(label.into()),
        content: Some(content.into()),
        props: Some(
            props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), PropValue::String((*v).to_owned())))
                .collect::<Props>(),
        ),
        ..Node::default()
    };
    let nodes = vec![
        node(
            "pkg:0ad",
            "concept",
            "Real-time strategy game of ancient warfare",
            "0 A.D. (pronounced \"zero ey-dee\") is a free, open-source, cross-platform real-time strategy game of ancient warfare.",
            &[("section", "games"), ("priority", "optional"), ("version", "0.0.26-3")],
        ),
        node(
            "pkg:libgit2-1.5",
            "library",
            "low-level Git library",
            "libgit2 is a portable, pure C implementation of the Git distributed version control system core methods.",
            &[("section", "libs"), ("priority", "optional"), ("version", "1.5.1+ds-1")],
        ),
        node(
            "pkg:python3-requests",
            "library",
            "elegant and simple HTTP library for Python3, built for human beings",
            "Requests allow you to send HTTP/1.1 requests. You can add headers, form data, multipart files, and parameters with simple Python dictionaries.",
            &[("section", "python"), ("priority", "optional"), ("version", "2.28.1+dfsg-1")],
        ),
        node(
            "pkg:git",
            "tool",
            "fast, scalable, distributed revision control system",
            "Git is popular version control system designed to handle very large projects with speed and efficiency.",
            &[("section", "vcs"), ("priority", "optional"), ("version", "1:2.39.5-0+deb12u2")],
        ),
        node(
            "pkg:debian-reference-en",
            "document",
            "Debian system administration guide, English original version",
            "This Debian Reference (v2) is intended to provide a broad overview of the Debian system as a post-installation user's guide.",
            &[("section", "doc"), ("priority", "optional"), ("version", "2.101")],
        ),
    ];
    let edge = |s: &str, t: &str, d: &str| Edge {
        source: s.into(),
        edge_type: t.into(),
        target: d.into(),
        ..Edge::default()
    };
    let edges = vec![
        edge("pkg:git", "depends-on", "pkg:libc6"),
        edge("pkg:0ad", "depends-on", "pkg:0ad-data"),
        edge("pkg:python3-requests", "depends-on", "pkg:python3-urllib3"),
        edge("pkg:git", "relates-to", "pkg:less"),
    ];
    Dataset { nodes, edges }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_traffic() {
        let data = builtin_dataset();
        let a: Vec<_> = (0..50)
            .map({
                let mut t = Traffic::new(&data, 7);
                move |_| t.frame()
            })
            .collect();
        let b: Vec<_> = (0..50)
            .map({
                let mut t = Traffic::new(&data, 7);
                move |_| t.frame()
            })
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        let data = builtin_dataset();
        let mut t = Traffic::new(&data, 1);
        for &(kind, _) in MIX {
            for _ in 0..20 {
                let env = t.message_of(kind);
                let text = gitmind_schema::json::encode(&env);
                let back = gitmind_schema::json::decode_one(
                    std::str::from_utf8(&text).unwrap(),
                    &gitmind_schema::Limits::default(),
                );
                assert_eq!(back.unwrap(), env, "{kind:?}");
            }
        }
    }

    #[test]
    fn reads_a_sample_of_a_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let node = |id: &str| format!("{{\"node\": {{\"id\": \"{id}\"}}}}\n");
        let edge = |t: &str| {
            format!("{{\"edge\": {{\"source\": \"a\", \"type\": \"t\", \"target\": \"{t}\"}}}}\n")
        };
        let text = [
            node("a"),
            node("b"),
            node("c"),
            edge("b"),
            edge("c"),
            edge("d"),
        ]
        .concat();
        std::fs::write(&path, text + "not json\n").unwrap();
        let data = read_dataset(&path, 2, 2).unwrap();
        let ids: Vec<&str> = data.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(data.edges.len(), 2, "and stops before the bad line");
        assert!(read_dataset(&path, 10, 10).is_err());
    }
}
