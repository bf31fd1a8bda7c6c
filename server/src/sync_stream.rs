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
    /// The graph's other sessions, sent in the first chunk.
    presence: Vec<PresenceState>,
    nodes: Vec<Arc<Node>>,
    edges: Vec<Arc<Edge>>,
    events: Vec<Envelope>,
    /// Where each chunk ends in nodes, then edges, then events (one running
    /// index over the three).
    ends: Vec<usize>,
    next: usize,
}

impl SyncCursor {
    /// Cuts a sync into chunks of about [`SYNC_CHUNK_BYTES`], well inside
    /// the frame limit; nothing is encoded yet.
    pub fn new(sync: SyncData, presence: Vec<PresenceState>, heartbeat_ms: u64) -> Self {
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
        let sizes = nodes
            .iter()
            .map(|n: &Arc<Node>| node_size(n))
            .chain(edges.iter().map(|e: &Arc<Edge>| edge_size(e)))
            .chain(events.iter().map(|e| json::encode(e).len()));
        let mut ends = Vec::new();
        // The first chunk carries the presence list too: an entity or event
        // that does not fit beside it starts the next chunk.
        let presence_bytes: usize = presence.iter().map(presence_size).sum();
        let (mut size, mut count) = (presence_bytes, 0usize);
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
        let (n, e) = (self.nodes.len(), self.edges.len());
        let mut body = GraphSync {
            mode: Some(self.mode),
            epoch: Some(self.epoch.clone()),
            seq: Some(self.seq),
            heartbeat_ms: Some(self.heartbeat_ms),
            ..GraphSync::default()
        };
        if self.mode == SyncMode::Snapshot {
            body.nodes = Some(
                self.nodes[start.min(n)..end.min(n)]
                    .iter()
                    .map(|x| Node::clone(x))
                    .collect(),
            );
            body.edges = Some(
                self.edges[start.clamp(n, n + e) - n..end.clamp(n, n + e) - n]
                    .iter()
                    .map(|x| Edge::clone(x))
                    .collect(),
            );
        } else {
            body.events = Some(self.events[start..end].to_vec());
        }
        if index == 0 {
            body.presence = Some(std::mem::take(&mut self.presence));
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
        let presence: Vec<PresenceState> = (0..700)
            .map(|i| PresenceState {
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
}
