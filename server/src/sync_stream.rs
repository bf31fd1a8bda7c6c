//! A `graph.sync` on its way out (docs/protocol.md 6): a snapshot or delta
//! of any size, cut into chunks well inside the frame limit and encoded a
//! chunk at a time as the session's writer reaches it, so it is never held
//! encoded whole.

use std::sync::Arc;

use gitmind_owner::SyncData;
use gitmind_schema::message::{Chunk, GraphSync, PresenceState, SyncMode};
use gitmind_schema::model::{Edge, Node, PropValue, Props};
use gitmind_schema::{json, Body, Envelope};

use crate::stamp::stamped;

/// A snapshot or delta is cut into `graph.sync` chunks of about this many
/// bytes, well inside the frame limit.
pub(crate) const SYNC_CHUNK_BYTES: usize = 256 * 1024;

/// A `graph.sync` being sent: the snapshot or delta (shared, not copied),
/// where it was cut into chunks, and which chunk is next.
pub(crate) struct SyncCursor {
    mode: SyncMode,
    epoch: String,
    /// The `seq` it brings the session to.
    pub seq: u64,
    heartbeat_ms: u64,
    /// The graph's other sessions, spread over the first chunks.
    presence: Vec<Arc<PresenceState>>,
    nodes: Vec<Arc<Node>>,
    edges: Vec<Arc<Edge>>,
    events: Vec<Envelope>,
    /// Where each chunk ends in presence, then nodes, edges and events (one
    /// running index over the four).
    ends: Vec<usize>,
    next: usize,
}

impl SyncCursor {
    /// Cuts a sync into chunks of about [`SYNC_CHUNK_BYTES`], well inside
    /// the frame limit; nothing is encoded yet.
    pub fn new(sync: SyncData, presence: Vec<Arc<PresenceState>>, heartbeat_ms: u64) -> Self {
        let (mode, epoch, seq, nodes, edges, events) = match sync {
            SyncData::Snapshot {
                epoch,
                seq,
                nodes,
                edges,
            } => (
                SyncMode::Snapshot,
                epoch,
                seq,
                nodes.into_iter().collect(),
                edges.into_iter().collect(),
                Vec::new(),
            ),
            SyncData::Delta { epoch, seq, events } => {
                (SyncMode::Delta, epoch, seq, Vec::new(), Vec::new(), events)
            }
        };
        // One running index over presence, nodes, edges and events: the
        // presence of thousands of sessions is cut into chunks like entities.
        let sizes = presence
            .iter()
            .map(|p| presence_size(p))
            .chain(nodes.iter().map(|n: &Arc<Node>| node_size(n)))
            .chain(edges.iter().map(|e: &Arc<Edge>| edge_size(e)))
            .chain(events.iter().map(|e| json::encode(e).len()));
        let mut ends = Vec::new();
        let (mut size, mut count) = (0, 0usize);
        for (i, add) in sizes.enumerate() {
            if size > 0 && size + add > SYNC_CHUNK_BYTES {
                ends.push(i);
                size = 0;
            }
            size += add;
            count = i + 1;
        }
        ends.push(count);
        SyncCursor {
            mode,
            epoch,
            seq,
            heartbeat_ms,
            presence,
            nodes,
            edges,
            events,
            ends,
            next: 0,
        }
    }

    /// The next chunk's message, or `None` when all are out.
    pub fn next_envelope(&mut self) -> Option<Envelope> {
        let index = self.next;
        let end = *self.ends.get(index)?;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        self.next += 1;
        let (p, n, e) = (self.presence.len(), self.nodes.len(), self.edges.len());
        // The part of `items` (which start at `at` in the running index)
        // that this chunk holds.
        let part =
            |at: usize, len: usize| start.clamp(at, at + len) - at..end.clamp(at, at + len) - at;
        let mut body = GraphSync {
            mode: Some(self.mode),
            epoch: Some(self.epoch.clone()),
            seq: Some(self.seq),
            heartbeat_ms: Some(self.heartbeat_ms),
            ..GraphSync::default()
        };
        if self.mode == SyncMode::Snapshot {
            body.nodes = Some(
                self.nodes[part(p, n)]
                    .iter()
                    .map(|x| Node::clone(x))
                    .collect(),
            );
            body.edges = Some(
                self.edges[part(p + n, e)]
                    .iter()
                    .map(|x| Edge::clone(x))
                    .collect(),
            );
        } else {
            body.events = Some(self.events[part(p, self.events.len())].to_vec());
        }
        // The first chunk always says who is present; later ones add to it.
        let present = &self.presence[part(0, p)];
        if index == 0 || !present.is_empty() {
            body.presence = Some(present.iter().map(|p| PresenceState::clone(p)).collect());
        }
        let count = self.ends.len();
        if count > 1 {
            body.chunk = Some(Chunk {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                count: u32::try_from(count).unwrap_or(u32::MAX),
            });
        }
        let mut envelope = stamped(format!("sync-{}-{index}", self.seq), Body::GraphSync(body));
        envelope.seq = Some(self.seq);
        Some(envelope)
    }
}

/// A generous estimate of a node's encoded size (escaping can double text).
fn node_size(node: &Node) -> usize {
    let text = node.id.len()
        + node.label.as_ref().map_or(0, String::len)
        + node.content.as_ref().map_or(0, String::len)
        + props_size(node.props.as_ref());
    2 * text + 256
}

/// A generous estimate of an edge's encoded size.
fn edge_size(edge: &Edge) -> usize {
    let text = 2 * (edge.source.len() + edge.target.len())
        + edge.rationale.as_ref().map_or(0, String::len)
        + props_size(edge.props.as_ref());
    2 * text + 256
}

/// The text of properties, keys and values (a value string may be 1 KiB).
fn props_size(props: Option<&Props>) -> usize {
    props.map_or(0, |p| {
        p.iter()
            .map(|(k, v)| {
                let value = match v {
                    PropValue::String(s) => s.len(),
                    PropValue::Number(_) | PropValue::Bool(_) => 0,
                };
                k.len() + value + 32
            })
            .sum()
    })
}

/// A generous estimate of one session's presence entry in a sync.
fn presence_size(p: &PresenceState) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let text = p.user_id.len()
        + p.session_id.len()
        + opt(&p.presence.focus)
        + opt(&p.presence.display_name)
        + opt(&p.presence.color)
        + p.cursor.as_ref().map_or(0, |c| opt(&c.node_id))
        + p.selection.as_ref().map_or(0, |s| {
            s.nodes.iter().chain(&s.edges).map(|id| id.len() + 3).sum()
        });
    2 * text + 256
}

/// A snapshot of `count` nodes with 500 bytes of content each, for tests.
#[cfg(test)]
pub(crate) fn test_snapshot(count: usize) -> SyncData {
    let nodes: Vec<Arc<Node>> = (0..count)
        .map(|i| {
            Arc::new(Node {
                id: format!("n:{i}"),
                content: Some("x".repeat(500)),
                ..Node::default()
            })
        })
        .collect();
    SyncData::Snapshot {
        epoch: "e".into(),
        seq: 9,
        nodes: nodes.into(),
        edges: Vec::new().into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::{PresenceStatus, UserPresence};

    #[test]
    fn large_snapshot_is_cut_into_chunks_within_the_frame_limit() {
        let mut cursor = SyncCursor::new(test_snapshot(2000), Vec::new(), 25_000);
        let messages: Vec<Envelope> = std::iter::from_fn(|| cursor.next_envelope()).collect();
        assert!(messages.len() > 1);
        let mut total = 0;
        for (i, m) in messages.iter().enumerate() {
            assert!(json::encode(m).len() < 1 << 20);
            let Body::GraphSync(s) = &m.body else {
                panic!()
            };
            assert_eq!(
                s.chunk,
                Some(Chunk {
                    index: i as u32,
                    count: messages.len() as u32
                })
            );
            assert_eq!(s.presence.is_some(), i == 0);
            total += s.nodes.as_ref().unwrap().len();
        }
        assert_eq!(total, 2000);
    }

    #[test]
    fn chunks_count_property_values_and_presence() {
        // 64 properties of 1 KiB each: most of such a node is its values.
        let props: Props = (0..64)
            .map(|k| (format!("k{k}"), PropValue::String("v".repeat(1024))))
            .collect();
        let nodes: Vec<Arc<Node>> = (0..100)
            .map(|i| {
                Arc::new(Node {
                    id: format!("n:{i}"),
                    props: Some(props.clone()),
                    ..Node::default()
                })
            })
            .collect();
        let presence: Vec<Arc<PresenceState>> = (0..700)
            .map(|i| {
                Arc::new(PresenceState {
                    user_id: format!("user-{i}"),
                    session_id: format!("s-{i}"),
                    presence: UserPresence {
                        status: PresenceStatus::Active,
                        focus: Some("f".repeat(256)),
                        display_name: None,
                        color: None,
                        chaos_affinity: None,
                    },
                    cursor: None,
                    selection: None,
                })
            })
            .collect();
        let sync = SyncData::Snapshot {
            epoch: "e".into(),
            seq: 9,
            nodes: nodes.into(),
            edges: Vec::new().into(),
        };
        let mut cursor = SyncCursor::new(sync, presence, 25_000);
        let messages: Vec<Envelope> = std::iter::from_fn(|| cursor.next_envelope()).collect();
        assert!(messages.len() > 2);
        for m in &messages {
            let len = json::encode(m).len();
            assert!(len <= SYNC_CHUNK_BYTES, "a chunk of {len} bytes");
        }
    }

    #[test]
    fn the_presence_of_ten_thousand_sessions_is_cut_into_chunks_too() {
        let presence: Vec<Arc<PresenceState>> = (0..10_000)
            .map(|i| {
                Arc::new(PresenceState {
                    user_id: format!("user-{i}"),
                    session_id: format!("s-{i}"),
                    presence: UserPresence {
                        status: PresenceStatus::Active,
                        focus: Some("f".repeat(100)),
                        display_name: Some(format!("User {i}")),
                        color: None,
                        chaos_affinity: None,
                    },
                    cursor: None,
                    selection: None,
                })
            })
            .collect();
        let mut cursor = SyncCursor::new(test_snapshot(10), presence, 25_000);
        let messages: Vec<Envelope> = std::iter::from_fn(|| cursor.next_envelope()).collect();
        assert!(messages.len() > 4, "{} chunks", messages.len());
        let (mut present, mut nodes) = (Vec::new(), 0);
        for (i, m) in messages.iter().enumerate() {
            let len = json::encode(m).len();
            assert!(len <= SYNC_CHUNK_BYTES, "chunk {i} is {len} bytes");
            let Body::GraphSync(s) = &m.body else {
                panic!()
            };
            assert!(
                i > 0 || s.presence.is_some(),
                "the first chunk says who is present"
            );
            present.extend(s.presence.clone().unwrap_or_default());
            nodes += s.nodes.as_ref().map_or(0, Vec::len);
        }
        assert_eq!(present.len(), 10_000);
        assert_eq!(present[9_999].session_id, "s-9999", "in order");
        assert_eq!(nodes, 10);
    }
}
