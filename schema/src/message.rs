//! Protocol messages (docs/protocol.md sections 2 and 4 to 10): the envelope and
//! one typed payload per message type.
//!
//! A payload type serves both directions where the protocol uses one type
//! name for both (a `node.update` mutation and the `node.update` event share
//! `NodeUpdate`): fields only one side sets are optional.

use serde::{Deserialize, Serialize};

use crate::model::num;
use crate::model::{Edge, EdgeSet, Entity, Node, NodeSet, Props, Resolution, TextEdits};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1";

/// One message: routing fields around a typed payload (docs/protocol.md 2.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique per sender, 1 to 64 bytes; the idempotency key of a mutation.
    pub id: String,
    /// Sender's clock, milliseconds since the Unix epoch; informative only.
    pub timestamp: Option<u64>,
    /// Protocol version, `"1"`.
    pub version: Option<String>,
    /// Set by the server: the user the message is about (see docs/protocol.md 2.1).
    pub user_id: Option<String>,
    /// Set by the server: the session the message is about.
    pub session_id: Option<String>,
    /// Set by the server: the graph sequence number, where it applies.
    pub seq: Option<u64>,
    /// Optional client metadata.
    pub metadata: Option<Metadata>,
    /// The typed payload; its variant is the message `type`.
    pub body: Body,
}

impl Envelope {
    /// A message with just an id and a payload.
    pub fn new(id: impl Into<String>, body: Body) -> Self {
        Envelope {
            id: id.into(),
            timestamp: None,
            version: Some(PROTOCOL_VERSION.to_owned()),
            user_id: None,
            session_id: None,
            seq: None,
            metadata: None,
            body,
        }
    }

    /// The message type, e.g. `"node.create"`.
    pub fn type_name(&self) -> &'static str {
        self.body.message_type().name()
    }
}

/// Optional client metadata on an envelope.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The client's name and version, e.g. `gitmind-cli/0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// The client's Gonzai mood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gonzai_state: Option<String>,
    /// The graph region the client works in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Declares every message type once: its payload, its wire name, and the
/// dispatch code between them.
macro_rules! messages {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $name:literal, )*) => {
        /// The payload of a message; the variant is the message type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Body {
            $( $(#[$doc])* $variant($payload), )*
        }

        /// Every message type, without its payload.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $( $(#[$doc])* $variant, )*
        }

        impl MessageType {
            /// Every message type, in schema order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant,)*];

            /// The wire name, e.g. `"node.create"`.
            pub fn name(self) -> &'static str {
                match self { $( MessageType::$variant => $name, )* }
            }

            /// The type with this wire name.
            pub fn from_name(name: &str) -> Option<MessageType> {
                match name { $( $name => Some(MessageType::$variant), )* _ => None }
            }
        }

        impl Body {
            /// The message type of this payload.
            pub fn message_type(&self) -> MessageType {
                match self { $( Body::$variant(_) => MessageType::$variant, )* }
            }

            /// Parses a JSON payload of the given type.
            pub(crate) fn from_json_data(
                ty: MessageType,
                data: &str,
            ) -> Result<Body, serde_json::Error> {
                Ok(match ty { $( MessageType::$variant => Body::$variant(serde_json::from_str(data)?), )* })
            }

            /// Serializes the payload alone (the envelope's `data`).
            pub(crate) fn serialize_data<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( Body::$variant(p) => p.serialize(s), )* }
            }
        }
    };
}

messages! {
    /// Create a node; as an event, the node with all its fields.
    NodeCreate(NodeCreate) = "node.create",
    /// Change a node's fields or text; as an event, only what changed.
    NodeUpdate(NodeUpdate) = "node.update",
    /// Delete a node and every edge that touches it.
    NodeDelete(NodeDelete) = "node.delete",
    /// Create an edge.
    EdgeCreate(EdgeCreate) = "edge.create",
    /// Change an edge's fields.
    EdgeUpdate(EdgeUpdate) = "edge.update",
    /// Delete an edge.
    EdgeDelete(EdgeDelete) = "edge.delete",
    /// Up to 1,000 mutations applied atomically as one change.
    BatchUpdate(BatchUpdate) = "batch.update",
    /// Sync: the server's first message (snapshot or delta), or a client's request for one.
    GraphSync(GraphSync) = "graph.sync",
    /// Outcome: the mutation was applied as sent (text possibly transformed).
    UpdateConfirmed(UpdateConfirmed) = "update.confirmed",
    /// Outcome: the mutation was applied, merged with concurrent changes.
    UpdateConflictResolved(UpdateConflictResolved) = "update.conflict_resolved",
    /// Outcome: nothing was applied.
    UpdateRollback(UpdateRollback) = "update.rollback",
    /// A session's presence.
    UserPresence(UserPresence) = "user.presence",
    /// A session's cursor.
    CursorMove(CursorMove) = "cursor.move",
    /// A session's selection.
    SelectionChange(SelectionChange) = "selection.change",
    /// (later) Subscribe to a region of the graph.
    RegionSubscribe(RegionSubscribe) = "region.subscribe",
    /// (later) Drop a region subscription.
    RegionUnsubscribe(RegionUnsubscribe) = "region.unsubscribe",
    /// (later) The contents of a region, answering a subscribe.
    RegionSync(RegionSync) = "region.sync",
    /// (later) A node entered a subscribed region.
    RegionEnter(RegionEnter) = "region.enter",
    /// (later) A node left a subscribed region.
    RegionLeave(RegionLeave) = "region.leave",
    /// (later) Subscribe to a live query.
    QuerySubscribe(QuerySubscribe) = "query.subscribe",
    /// (later) Drop a live query.
    QueryUnsubscribe(QueryUnsubscribe) = "query.unsubscribe",
    /// (later) The results of a live query, and what changed in them.
    QueryResults(QueryResults) = "query.results",
    /// (later) Gonzai noticed a relevant change.
    GonzaiDiscover(GonzaiDiscover) = "gonzai.discover",
    /// (later) Link suggestions: asked for, answered, or shared.
    GonzaiSuggestion(GonzaiSuggestion) = "gonzai.suggestion",
    /// (later) Chaos mode, spreading.
    ChaosTrigger(ChaosTrigger) = "chaos.trigger",
    /// Keep-alive, both ways.
    SystemHeartbeat(SystemHeartbeat) = "system.heartbeat",
    /// A message could not be taken.
    SystemError(SystemError) = "system.error",
    /// The server is about to close the session on purpose.
    SystemReconnect(SystemReconnect) = "system.reconnect",
}

impl MessageType {
    /// Whether this type is a graph mutation when a client sends it.
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            MessageType::NodeCreate
                | MessageType::NodeUpdate
                | MessageType::NodeDelete
                | MessageType::EdgeCreate
                | MessageType::EdgeUpdate
                | MessageType::EdgeDelete
                | MessageType::BatchUpdate
        )
    }
}

/// `node.create`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCreate {
    /// Mutation: the highest `seq` the client had applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The node.
    pub node: Node,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// `node.update`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeUpdate {
    /// Mutation: the highest `seq` the client had applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The node's id.
    pub id: String,
    /// Fields to set (event: the fields that changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<NodeSet>,
    /// Text operations (event: as applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextEdits>,
    /// Event: the node's new `rev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// Event: the change time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Event: who changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// `node.delete`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeDelete {
    /// Mutation: the highest `seq` the client had applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The node's id. Every edge that touches the node goes with it;
    /// the event does not list them (docs/protocol.md section 5).
    pub id: String,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// `edge.create`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeCreate {
    /// Mutation: the highest `seq` the client had applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The edge.
    pub edge: Edge,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// The id of the edge a message names: `id`, or the id made from
/// `source`, `type` and `target` (docs/protocol.md section 4); `None` when
/// neither is complete.
pub fn edge_key(
    id: &Option<String>,
    source: &Option<String>,
    edge_type: &Option<String>,
    target: &Option<String>,
) -> Option<String> {
    if let Some(id) = id {
        return Some(id.clone());
    }
    match (source, edge_type, target) {
        (Some(s), Some(t), Some(d)) => Some(Edge::make_id(s, t, d)),
        _ => None,
    }
}

impl EdgeUpdate {
    /// The id of the edge this update names.
    pub fn edge_id(&self) -> Option<String> {
        edge_key(&self.id, &self.source, &self.edge_type, &self.target)
    }
}

impl EdgeDelete {
    /// The id of the edge this delete names.
    pub fn edge_id(&self) -> Option<String> {
        edge_key(&self.id, &self.source, &self.edge_type, &self.target)
    }
}

/// `edge.update`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeUpdate {
    /// Mutation: the highest `seq` the client had applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The edge's id (or give `source`, `type` and `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The edge's source, when named by its triple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The edge's type, when named by its triple.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub edge_type: Option<String>,
    /// The edge's target, when named by its triple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Fields to set (event: the fields that changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<EdgeSet>,
    /// Event: the edge's new `rev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// Event: the change time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Event: who changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// `edge.delete`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeDelete {
    /// Mutation: the highest `seq` the client had applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The edge's id (or give `source`, `type` and `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The edge's source, when named by its triple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The edge's type, when named by its triple.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub edge_type: Option<String>,
    /// The edge's target, when named by its triple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// One op of a `batch.update`: any mutation but a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum BatchOp {
    /// `node.create`.
    #[serde(rename = "node.create")]
    NodeCreate(NodeCreate),
    /// `node.update`.
    #[serde(rename = "node.update")]
    NodeUpdate(NodeUpdate),
    /// `node.delete`.
    #[serde(rename = "node.delete")]
    NodeDelete(NodeDelete),
    /// `edge.create`.
    #[serde(rename = "edge.create")]
    EdgeCreate(EdgeCreate),
    /// `edge.update`.
    #[serde(rename = "edge.update")]
    EdgeUpdate(EdgeUpdate),
    /// `edge.delete`.
    #[serde(rename = "edge.delete")]
    EdgeDelete(EdgeDelete),
}

impl From<BatchOp> for Body {
    /// The op as a message of its own.
    fn from(op: BatchOp) -> Body {
        match op {
            BatchOp::NodeCreate(o) => Body::NodeCreate(o),
            BatchOp::NodeUpdate(o) => Body::NodeUpdate(o),
            BatchOp::NodeDelete(o) => Body::NodeDelete(o),
            BatchOp::EdgeCreate(o) => Body::EdgeCreate(o),
            BatchOp::EdgeUpdate(o) => Body::EdgeUpdate(o),
            BatchOp::EdgeDelete(o) => Body::EdgeDelete(o),
        }
    }
}

/// `batch.update`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchUpdate {
    /// Mutation: the highest `seq` the client had applied (for every op).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_seq: Option<u64>,
    /// The ops, applied in order, all or none.
    pub ops: Vec<BatchOp>,
    /// Event: the git commit that holds the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What a `graph.sync` from the server carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// The whole graph as of `seq`.
    Snapshot,
    /// The events after the client's `since`.
    Delta,
}

/// One part of a sync split over several messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// 0-based index of this part.
    pub index: u32,
    /// How many parts there are.
    pub count: u32,
}

/// `graph.sync`: from the server, a snapshot or a delta; from a client,
/// `{since, epoch}` to ask for one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphSync {
    /// Server: snapshot or delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SyncMode>,
    /// The graph's history id (client: the epoch of `since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Server: the graph's `seq` this sync brings the client to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Client: resume after this `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Snapshot: the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Node>>,
    /// Snapshot: the edges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<Edge>>,
    /// Delta: the events after `since`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Envelope>>,
    /// Server: the presence of every session in the graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<PresenceState>>,
    /// Server: the heartbeat interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Server: which part of a split sync this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Chunk>,
}

impl GraphSync {
    /// Whether this is the whole sync or its last chunk: the sync is
    /// complete, and the graph is at `seq`, once it is taken.
    pub fn is_last_chunk(&self) -> bool {
        self.chunk.is_none_or(|c| c.index + 1 == c.count)
    }
}

/// `update.confirmed`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateConfirmed {
    /// The mutation's `id`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The change's `seq`.
    pub seq: u64,
    /// The git commit that holds it, full hex.
    pub commit: String,
    /// The entity's new `rev` (the change's `seq`).
    pub rev: u64,
    /// Text operations as finally applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextEdits>,
}

/// One field whose concurrent change was overwritten or merged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conflict {
    /// The field (`label`, or `props.key` for a property).
    pub field: String,
    /// The `seq` of the concurrent change.
    pub seq: u64,
    /// Who made it.
    pub user_id: String,
    /// Batches: the index of the op concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// `update.conflict_resolved`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateConflictResolved {
    /// The mutation's `id`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The change's `seq`.
    pub seq: u64,
    /// The git commit that holds it.
    pub commit: String,
    /// The entity's new `rev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// The concurrent changes it met.
    pub conflicts: Vec<Conflict>,
    /// Final values of the fields concerned.
    pub resolution: Resolution,
    /// Text operations as finally applied, when the change had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextEdits>,
}

/// Why a mutation was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// A value of the wrong type or pattern.
    Invalid,
    /// The entity does not exist.
    NotFound,
    /// The entity existed already at `baseSeq`.
    AlreadyExists,
    /// The entity was deleted after `baseSeq`.
    Deleted,
    /// Not allowed.
    Forbidden,
    /// Too many changes; retry after `retryAfterMs`.
    RateLimited,
    /// A value over a size or count limit.
    TooLarge,
    /// `baseSeq` is older than the history kept for a text field.
    Stale,
    /// The server could not store the change; retry.
    Unavailable,
}

/// `update.rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRollback {
    /// The mutation's `id`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Why.
    pub reason: RollbackReason,
    /// Which field and why, for a person.
    pub message: String,
    /// The entity as the server holds it, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Entity>,
    /// Batches: the index of the failing op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// `rate_limited`: when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl UpdateRollback {
    /// `unavailable`: the server could not take the mutation `reference`;
    /// nothing was applied and the client retries (after `retry_after_ms`
    /// when given).
    pub fn unavailable(
        reference: impl Into<String>,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
    ) -> Self {
        UpdateRollback {
            reference: reference.into(),
            reason: RollbackReason::Unavailable,
            message: message.into(),
            current: None,
            index: None,
            retry_after_ms,
        }
    }

    /// `rate_limited`: the mutation `reference` came too fast; nothing was
    /// applied and the client retries after `retry_after_ms`.
    pub fn rate_limited(
        reference: impl Into<String>,
        message: impl Into<String>,
        retry_after_ms: u64,
    ) -> Self {
        UpdateRollback {
            reason: RollbackReason::RateLimited,
            retry_after_ms: Some(retry_after_ms),
            ..UpdateRollback::unavailable(reference, message, None)
        }
    }
}

/// A session's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Working.
    Active,
    /// Idle.
    Idle,
    /// Away.
    Away,
    /// Server: the session arrived.
    Joined,
    /// Server: the session left (disconnect or timeout).
    Left,
}

/// `user.presence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPresence {
    /// The status.
    pub status: PresenceStatus,
    /// The node the user looks at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<String>,
    /// The name to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The colour to show, e.g. `#ff8800`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// How readily chaos mode spreads to this session (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub chaos_affinity: Option<f64>,
}

/// `cursor.move`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CursorMove {
    /// Position.
    #[serde(with = "num::req")]
    pub x: f64,
    /// Position.
    #[serde(with = "num::req")]
    pub y: f64,
    /// The node under the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// `selection.change`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectionChange {
    /// Selected node ids.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Selected edge ids.
    #[serde(default)]
    pub edges: Vec<String>,
}

/// The presence of one session, as `graph.sync` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceState {
    /// The session's user.
    pub user_id: String,
    /// The session.
    pub session_id: String,
    /// The latest presence it sent (`active` until it sends one).
    pub presence: UserPresence,
    /// Its latest cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorMove>,
    /// Its current selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionChange>,
}

/// (later) Which part of the graph a region holds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionFilter {
    /// Everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Nodes inside `[x0, y0, x1, y1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// These nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// The neighbourhood of a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub around: Option<Around>,
    /// Nodes whose id starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// (later) A node and its neighbours up to `depth` hops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Around {
    /// The centre.
    pub id: String,
    /// 1 to 3.
    pub depth: u32,
}

/// (later) `region.subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionSubscribe {
    /// The client's name for the region.
    pub region_id: String,
    /// What the region holds.
    pub filter: RegionFilter,
}

/// (later) `region.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionUnsubscribe {
    /// The region.
    pub region_id: String,
}

/// (later) `region.sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionSync {
    /// The region.
    pub region_id: String,
    /// As of this `seq`.
    pub seq: u64,
    /// Its nodes.
    pub nodes: Vec<Node>,
    /// Its edges.
    pub edges: Vec<Edge>,
}

/// (later) `region.enter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionEnter {
    /// The region.
    pub region_id: String,
    /// The node, whole.
    pub node: Node,
}

/// (later) `region.leave`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionLeave {
    /// The region.
    pub region_id: String,
    /// The node that left.
    pub id: String,
}

/// (later) A live query.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Query {
    /// Nodes of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Nodes whose id starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Nodes whose label contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_contains: Option<String>,
    /// Nodes with these property values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Props>,
    /// Nodes with an edge of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_type: Option<String>,
    /// At most this many results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// (later) `query.subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuerySubscribe {
    /// The client's name for the query.
    pub query_id: String,
    /// The query.
    pub query: Query,
}

/// (later) `query.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryUnsubscribe {
    /// The query.
    pub query_id: String,
}

/// (later) `query.results`: node ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryResults {
    /// The query.
    pub query_id: String,
    /// As of this `seq`.
    pub seq: u64,
    /// The ids of every node in the result.
    pub results: Vec<String>,
    /// Ids that entered it since the last `query.results`.
    pub added: Vec<String>,
    /// Ids that left it.
    pub removed: Vec<String>,
}

/// (later) The change that excited Gonzai.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverEvent {
    /// Its message type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its `seq`.
    pub seq: u64,
    /// The entity it touched.
    pub id: String,
}

/// (later) `gonzai.discover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GonzaiDiscover {
    /// The change.
    pub event: DiscoverEvent,
    /// How relevant, 0 to 1.
    #[serde(with = "num::req")]
    pub relevance: f64,
    /// What Gonzai suggests.
    pub suggestion: String,
    /// How Gonzai shows it, e.g. `bounce-excitedly`.
    pub animation: String,
}

/// (later) One suggested link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suggestion {
    /// The node to link to.
    pub target: String,
    /// The edge type.
    #[serde(rename = "type")]
    pub edge_type: String,
    /// 0 to 1.
    #[serde(with = "num::req")]
    pub confidence: f64,
    /// Why.
    pub reason: String,
}

/// (later) `gonzai.suggestion`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GonzaiSuggestion {
    /// The node the suggestions are for.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_node: Option<String>,
    /// Ask: at most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Answer or share: the suggestions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Vec<Suggestion>>,
}

/// (later) `chaos.trigger`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChaosTrigger {
    /// How much chaos.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub intensity: Option<f64>,
    /// Server: who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Server: what to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `system.heartbeat`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemHeartbeat {
    /// Server: the graph's latest `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Server: its clock, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<u64>,
}

/// The code of a `system.error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame does not decode at all.
    BadFrame,
    /// A message of the wrong shape, type or pattern.
    Invalid,
    /// A `type` this server does not know.
    UnknownType,
    /// Too many messages.
    RateLimited,
    /// Over a size or count limit.
    TooLarge,
    /// Not allowed.
    Forbidden,
    /// The server failed; not the client's fault.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::Invalid,
        ErrorCode::UnknownType,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::Forbidden,
        ErrorCode::Internal,
    ];

    /// The wire name, e.g. `"bad_frame"`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::Invalid => "invalid",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
        }
    }
}

/// `system.error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The `id` of the message it concerns, when known.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `rate_limited`: when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `system.reconnect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemReconnect {
    /// Why: `shutdown`, `drain`, `slow_consumer`, ...
    pub reason: String,
    /// When to come back.
    pub retry_after_ms: u64,
}
