//! What nodes of a cluster send each other (docs/scale-out.md): a lease's
//! value, a forwarded mutation, an immediate answer, and a committed group
//! as published on its graph's stream subject.
//!
//! A group is one message: a JSON header (the change records without
//! their events), then each change's event encoded once per codec, each
//! prefixed by its length (`u32`, big-endian). The event bytes are what
//! every node's shards send as they are: encode once per cluster.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gitmind_owner::change::{ChangeRecord, Write};
use gitmind_schema::message::{PresenceState, RollbackReason};
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::{json, Codec, Envelope, Limits, PerCodec};
use serde::{Deserialize, Serialize};

use crate::fanout::Encoded;

/// A graph's lease, the value of its key in the lease bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node that owns the graph.
    pub node: String,
    /// The epoch it gives the graph when git has nothing of it: a
    /// follower of a graph not yet committed takes it from here.
    pub epoch: String,
}

/// A mutation a follower forwards to its graph's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The graph.
    pub graph: String,
    /// The sender's node.
    pub node: String,
    /// The sender's session key on its node.
    pub session: u64,
    /// The sender's `sessionId`.
    pub session_id: String,
    /// The sender's `userId`.
    pub user_id: String,
    /// The mutation's envelope id.
    pub mutation_id: String,
    /// The mutation, in the JSON codec; `None` for one whose data did not
    /// decode ([`Forward::refused`]).
    pub envelope: Option<String>,
    /// Why it was refused by the follower's session, and what was wrong.
    pub refused: Option<(RollbackReason, String)>,
}

/// An answer the owner sends straight back to the sender's node (a
/// rollback, or a repeat's outcome).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The graph.
    pub graph: String,
    /// The session key on the receiving node.
    pub session: u64,
    /// The answer, in the JSON codec.
    pub envelope: String,
}

/// What a node tells the others of its sessions on a graph (core NATS:
/// ephemeral, at most once, like presence itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    /// The graph.
    pub graph: String,
    /// The sender's node.
    pub node: String,
    /// What it says.
    pub news: News,
}

/// The news of a [`Presence`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum News {
    /// A cursor or a selection of one session, in JSON, as the sender's
    /// node relays it (with its `userId` and `sessionId`), by its session
    /// key on that node.
    Ephemeral(u64, String),
    /// The joins, leaves and presence changes of the node's sessions in one
    /// digest (`user.presence`, in JSON), each by its session key.
    Notices(Vec<(u64, String)>),
    /// Every session the node has on the graph, with its presence (no
    /// cursor nor selection: those travel live), sent every second: a node
    /// that opens the graph later learns them, and one that stops hearing
    /// it drops them.
    Roster(Vec<(u64, PresenceState)>),
}

/// A committed group, as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// The graph.
    pub graph: String,
    /// Its epoch.
    pub epoch: String,
    /// The git commit holding the changes.
    pub commit: String,
    /// The changes, in `seq` order.
    pub changes: Vec<Change>,
}

/// One change of a [`Group`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    /// Its `seq`.
    pub seq: u64,
    /// When the owner ordered it.
    pub at_ms: u64,
    /// Its user.
    pub user_id: String,
    /// Its session's `sessionId`.
    pub session_id: String,
    /// Its mutation id.
    pub mutation_id: String,
    /// The outcome its senders receive, with the commit, in JSON.
    pub outcome: String,
    /// The state of every entity it touched.
    pub writes: Vec<WireWrite>,
    /// Who receives the outcome: `(node, session key on that node)`.
    pub recipients: Vec<(String, u64)>,
    /// The event, with the commit, in both codecs (after the header).
    #[serde(skip)]
    pub event: Encoded,
}

/// [`Write`] as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WireWrite {
    Node(Node),
    NodeDeleted(String),
    Edge(Edge),
    EdgeDeleted(String),
}

/// A message that is not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// It ends before its length says.
    #[error("truncated cluster message")]
    Truncated,
    /// Its JSON is not what was expected.
    #[error("malformed cluster message: {0}")]
    Json(#[from] serde_json::Error),
    /// An envelope in it does not decode.
    #[error("malformed envelope in a cluster message: {0}")]
    Envelope(String),
}

impl From<&Write> for WireWrite {
    fn from(w: &Write) -> Self {
        match w {
            Write::Node(n) => WireWrite::Node((**n).clone()),
            Write::NodeDeleted(id) => WireWrite::NodeDeleted(id.clone()),
            Write::Edge(e) => WireWrite::Edge((**e).clone()),
            Write::EdgeDeleted(id) => WireWrite::EdgeDeleted(id.clone()),
        }
    }
}

impl From<WireWrite> for Write {
    fn from(w: WireWrite) -> Self {
        match w {
            WireWrite::Node(n) => Write::Node(Arc::new(n)),
            WireWrite::NodeDeleted(id) => Write::NodeDeleted(id),
            WireWrite::Edge(e) => Write::Edge(Arc::new(e)),
            WireWrite::EdgeDeleted(id) => Write::EdgeDeleted(id),
        }
    }
}

impl Group {
    /// The message published on the graph's subject.
    pub fn encode(&self) -> Bytes {
        // Plain data with string keys: serialising cannot fail.
        let header = serde_json::to_vec(self).unwrap_or_default();
        let mut out = BytesMut::with_capacity(header.len() + 64 * self.changes.len());
        put(&mut out, &header);
        for change in &self.changes {
            for codec in [Codec::Json, Codec::Binary] {
                put(&mut out, change.event[codec].as_deref().unwrap_or_default());
            }
        }
        out.freeze()
    }

    /// Reads a published message back.
    ///
    /// # Errors
    /// [`WireError`] when it is not one.
    pub fn decode(mut payload: Bytes) -> Result<Group, WireError> {
        let header = take(&mut payload)?;
        let mut group: Group = serde_json::from_slice(&header)?;
        for change in &mut group.changes {
            for codec in [Codec::Json, Codec::Binary] {
                change.event[codec] = Some(take(&mut payload)?);
            }
        }
        Ok(group)
    }
}

impl Change {
    /// The change as the owner recorded it, for a follower's replica.
    ///
    /// # Errors
    /// [`WireError::Envelope`] when its event or outcome does not decode.
    pub fn record(&self) -> Result<ChangeRecord, WireError> {
        let event = self.event[Codec::Json].as_deref().unwrap_or_default();
        let event = std::str::from_utf8(event).map_err(|e| WireError::Envelope(e.to_string()))?;
        Ok(ChangeRecord {
            seq: self.seq,
            at_ms: self.at_ms,
            user_id: self.user_id.clone(),
            session_id: self.session_id.clone(),
            mutation_id: self.mutation_id.clone(),
            event: envelope(event)?,
            outcome: envelope(&self.outcome)?,
            writes: self.writes.iter().cloned().map(Write::from).collect(),
        })
    }
}

/// An envelope from its JSON text (a cluster's own message: frame limits
/// do not apply, its size was bounded where it was made).
///
/// # Errors
/// [`WireError::Envelope`] when it does not decode.
pub fn envelope(text: &str) -> Result<Envelope, WireError> {
    let limits = Limits {
        max_frame_bytes: usize::MAX,
        ..Limits::default()
    };
    json::decode_one(text, &limits).map_err(|e| WireError::Envelope(e.to_string()))
}

/// An envelope in the JSON codec, as text.
pub fn json_text(envelope: &Envelope) -> String {
    String::from_utf8_lossy(&json::encode(envelope)).into_owned()
}

/// Both codecs' encodings of an event.
pub fn encode_both(envelope: &Envelope) -> Encoded {
    PerCodec::from_fn(|codec| Some(codec.encode(envelope)))
}

fn put(out: &mut BytesMut, part: &[u8]) {
    out.put_u32(u32::try_from(part.len()).unwrap_or(u32::MAX));
    out.put_slice(part);
}

fn take(payload: &mut Bytes) -> Result<Bytes, WireError> {
    if payload.remaining() < 4 {
        return Err(WireError::Truncated);
    }
    let len = payload.get_u32() as usize;
    if payload.remaining() < len {
        return Err(WireError::Truncated);
    }
    Ok(payload.split_to(len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gitmind_schema::message::NodeCreate;
    use gitmind_schema::Body;

    #[test]
    fn a_group_reads_back_as_it_was_written() {
        let node = Node {
            id: "c:a".into(),
            ..Node::default()
        };
        let mut event = Envelope::new(
            "e1",
            Body::NodeCreate(NodeCreate {
                base_seq: None,
                node: node.clone(),
                commit: Some("c0ffee".into()),
            }),
        );
        event.seq = Some(1);
        let group = Group {
            graph: "g".into(),
            epoch: "e".into(),
            commit: "c0ffee".into(),
            changes: vec![Change {
                seq: 1,
                at_ms: 5,
                user_id: "u".into(),
                session_id: "s".into(),
                mutation_id: "m".into(),
                outcome: json_text(&event),
                writes: vec![WireWrite::Node(node)],
                recipients: vec![("a".into(), 7)],
                event: encode_both(&event),
            }],
        };
        let back = Group::decode(group.encode()).unwrap();
        assert_eq!(back.changes[0].event, group.changes[0].event);
        assert_eq!(back.changes[0].recipients, group.changes[0].recipients);
        let record = back.changes[0].record().unwrap();
        assert_eq!(record.event, event);
        assert!(Group::decode(group.encode().slice(..10)).is_err());
    }
}
