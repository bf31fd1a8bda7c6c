//! Sessions (ARCHITECTURE.md step 2): one WebSocket connection, its
//! identity, codec, presence throttle, outgoing queue and heartbeat.
//!
//! A session is one task on its shard. It owns its socket; the shard's
//! dispatcher fills its [`Outbox`] and wakes it. The task waits on the
//! socket, the outbox, its timer and the shutdown signal together, and
//! writes what is queued in as few frames and system calls as it can.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitmind_schema::message::{
    Chunk, GraphSync, PresenceState, PresenceStatus, RollbackReason, SyncMode, SystemError,
    SystemHeartbeat, SystemReconnect,
};
use gitmind_schema::model::{Edge, Node, PropValue, Props};
use gitmind_schema::{binary, json, Body, DecodeError, Envelope, ErrorCode, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::frames::FrameWriter;
use crate::hub::{self, HubCmd, Member};
use crate::metrics::Metrics;
use crate::shard::{Encoded, Shard};
use gitmind_owner::{Origin, SessionKey, SyncData};

/// Close code: the session's outgoing queue passed its limit.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// A snapshot or delta is cut into `graph.sync` chunks of about this many
/// bytes, well inside the frame limit.
const SYNC_CHUNK_BYTES: usize = 256 * 1024;

/// The wire codec a session speaks, from its negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `gitmind.v1.json`: text frames.
    Json = 0,
    /// `gitmind.v1.bin`: binary frames, FlatBuffers, optionally zstd.
    Binary = 1,
}

impl Codec {
    /// Encodes one envelope.
    pub fn encode(self, envelope: &Envelope) -> Bytes {
        match self {
            Codec::Json => json::encode(envelope),
            Codec::Binary => binary::encode(envelope),
        }
    }
}

/// One queued item.
enum Out {
    /// Bytes encoded for this session's codec: one envelope (JSON) or one
    /// frame (binary).
    Frame(Bytes),
    /// An ephemeral message that a newer one from the same sender and of
    /// the same kind replaces while it waits (`version` tells which).
    Ephemeral {
        key: (SessionKey, MessageType),
        version: u64,
        bytes: Bytes,
    },
    /// A `graph.sync` still to send, encoded a chunk at a time as the
    /// writer reaches it: a snapshot of any size streams out without being
    /// held encoded, and what is queued after it waits behind it.
    Sync(Box<SyncCursor>),
}

/// A session's outgoing queue, shared between its task and its shard's
/// dispatcher. Bounded: past `max_bytes` the session is a slow consumer,
/// its queue is dropped and it is closed with 4008 (it resumes with `since`
/// from the replay window, so nothing is lost).
pub struct Outbox {
    /// The session's codec.
    pub codec: Codec,
    /// The graph the session is on.
    pub graph: Arc<str>,
    /// The session's user, stamped on what is addressed to it.
    user_id: String,
    /// The session's id, stamped on what is addressed to it.
    session_id: String,
    queue: RefCell<VecDeque<Out>>,
    bytes: Cell<usize>,
    max_bytes: usize,
    slow: Cell<bool>,
    /// Latest version of each coalescable ephemeral message in the queue.
    latest: RefCell<HashMap<(SessionKey, MessageType), u64>>,
    next_version: Cell<u64>,
    /// The highest `seq` queued for the session (for heartbeats).
    seq: Cell<u64>,
    notify: Notify,
    /// Signalled when the session turns slow, to interrupt a blocked write.
    closing: Notify,
    metrics: Arc<Metrics>,
    shard: usize,
}

impl Outbox {
    /// An empty outbox for the session `member`.
    pub fn new(member: &Member, max_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Outbox {
            codec: member.codec,
            graph: member.graph.clone(),
            user_id: member.user_id.clone(),
            session_id: member.session_id.clone(),
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_bytes,
            slow: Cell::new(false),
            latest: RefCell::new(HashMap::new()),
            next_version: Cell::new(0),
            seq: Cell::new(0),
            notify: Notify::new(),
            closing: Notify::new(),
            metrics,
            shard: member.shard,
        }
    }

    /// Wakes the session's task to write.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Whether anything waits (a sync still streaming counts).
    pub fn has_more(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Queues a shared, pre-encoded graph event.
    pub fn push_shared(&self, bytes: Bytes, seq: u64) {
        self.seq.set(self.seq.get().max(seq));
        self.push(Out::Frame(bytes));
    }

    /// Encodes and queues a message addressed to this session alone (an
    /// outcome, a sync, a system message): it carries the session's own
    /// `userId` and `sessionId` (docs/protocol.md 2.1).
    pub fn push_envelope(&self, mut envelope: Envelope) {
        if let Some(seq) = envelope.seq {
            self.seq.set(self.seq.get().max(seq));
        }
        envelope.user_id = Some(self.user_id.clone());
        envelope.session_id = Some(self.session_id.clone());
        self.push(Out::Frame(self.codec.encode(&envelope)));
    }

    /// Queues an ephemeral message; under backlog, replaces the previous
    /// one of the same sender and kind still waiting (latest wins).
    pub fn push_ephemeral(&self, from: SessionKey, kind: MessageType, encoded: &Encoded) {
        let Some(bytes) = encoded.get(self.codec).cloned() else {
            return;
        };
        // Joins and leaves are never coalesced away: a client must see both.
        if self.queue.borrow().is_empty()
            || kind != MessageType::CursorMove && kind != MessageType::SelectionChange
        {
            return self.push(Out::Frame(bytes));
        }
        let version = self.next_version.get() + 1;
        self.next_version.set(version);
        self.latest.borrow_mut().insert((from, kind), version);
        self.push(Out::Ephemeral {
            key: (from, kind),
            version,
            bytes,
        });
    }

    /// Cuts a sync into chunks, encodes and queues them.
    pub fn push_sync(&self, sync: SyncData, presence: Vec<PresenceState>, heartbeat_ms: u64) {
        let cursor = SyncCursor::new(sync, presence, heartbeat_ms);
        self.seq.set(self.seq.get().max(cursor.seq));
        if !self.slow.get() {
            self.queue
                .borrow_mut()
                .push_back(Out::Sync(Box::new(cursor)));
        }
        self.wake();
    }

    fn push(&self, out: Out) {
        if self.slow.get() {
            return;
        }
        let len = match &out {
            Out::Frame(b) | Out::Ephemeral { bytes: b, .. } => b.len(),
            Out::Sync(_) => 0,
        };
        let bytes = self.bytes.get() + len;
        if bytes > self.max_bytes {
            self.slow.set(true);
            self.metrics.shards[self.shard]
                .queued_bytes
                .fetch_sub(self.bytes.get() as i64, Relaxed);
            self.bytes.set(0);
            self.queue.borrow_mut().clear();
            self.latest.borrow_mut().clear();
            self.closing.notify_one();
            self.wake();
            return;
        }
        self.bytes.set(bytes);
        self.metrics.shards[self.shard]
            .queued_bytes
            .fetch_add(len as i64, Relaxed);
        self.queue.borrow_mut().push_back(out);
    }

    /// Takes queued frames for one write: up to `limits.max_frame_bytes`
    /// bytes and `limits.max_envelopes` envelopes of JSON joined into one
    /// text frame (the limits a client holds a frame to), or binary frames
    /// as they are.
    fn take_batch(&self, limits: &gitmind_schema::Limits, into: &mut Vec<Bytes>) {
        let max_frame = limits.max_frame_bytes;
        let mut queue = self.queue.borrow_mut();
        let mut latest = self.latest.borrow_mut();
        let mut taken = 0;
        while let Some(out) = queue.front_mut() {
            if into.len() >= limits.max_envelopes {
                break;
            }
            let len = match out {
                Out::Frame(b) | Out::Ephemeral { bytes: b, .. } => b.len(),
                Out::Sync(cursor) => {
                    // Next chunk of a sync: made now, the cursor stays in
                    // front until its last chunk is out.
                    if taken > 0 && taken + 2 * SYNC_CHUNK_BYTES > max_frame {
                        break;
                    }
                    match cursor.next_envelope() {
                        Some(mut envelope) => {
                            envelope.user_id = Some(self.user_id.clone());
                            envelope.session_id = Some(self.session_id.clone());
                            let bytes = self.codec.encode(&envelope);
                            taken += bytes.len();
                            into.push(bytes);
                        }
                        None => {
                            queue.pop_front();
                        }
                    }
                    continue;
                }
            };
            if taken > 0 && taken + len > max_frame {
                break;
            }
            let Some(out) = queue.pop_front() else { break };
            self.bytes.set(self.bytes.get() - len);
            self.metrics.shards[self.shard]
                .queued_bytes
                .fetch_sub(len as i64, Relaxed);
            match out {
                Out::Sync(_) => {}
                Out::Frame(bytes) => into.push(bytes),
                Out::Ephemeral {
                    key,
                    version,
                    bytes,
                } => {
                    if latest.get(&key) == Some(&version) {
                        latest.remove(&key);
                        into.push(bytes);
                    }
                    // else: superseded by a newer one further back.
                }
            }
            taken += len;
        }
        // Give back what a burst grew, so an idle session holds nothing.
        if queue.is_empty() && queue.capacity() > 32 {
            *queue = VecDeque::new();
        }
        if latest.is_empty() && latest.capacity() > 0 {
            *latest = HashMap::new();
        }
    }
}

/// A `graph.sync` being sent: the snapshot or delta (shared, not copied),
/// where it was cut into chunks, and which chunk is next.
struct SyncCursor {
    mode: SyncMode,
    epoch: String,
    seq: u64,
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
    fn new(sync: SyncData, presence: Vec<PresenceState>, heartbeat_ms: u64) -> Self {
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
    fn next_envelope(&mut self) -> Option<Envelope> {
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
        let mut envelope =
            hub::stamped(format!("sync-{}-{index}", self.seq), Body::GraphSync(body));
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

/// What a session needs besides its socket.
pub struct SessionCtx {
    /// The server's configuration.
    pub config: Arc<Config>,
    /// The shard it lives on.
    pub shard: Shard,
    /// The hub's command channel.
    pub hub: crossbeam::channel::Sender<HubCmd>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
}

/// Why a session ended, for the close frame.
enum End {
    /// The connection broke.
    Gone,
    /// The client sent its close frame; the reply is queued.
    ClientClosed,
    /// The server closes on purpose; the client is told to come back.
    Reconnect { code: u16, reason: &'static str },
    /// Closed with this code, without an invitation to reconnect.
    Close { code: u16, reason: &'static str },
}

/// Runs one session from just after the WebSocket handshake to its end.
pub async fn run(
    mut ws: WebSocketStream<TcpStream>,
    member: Member,
    since: Option<(u64, String)>,
    ctx: SessionCtx,
) {
    let config = ctx.config.clone();
    let session = member.session;
    let graph = member.graph.clone();
    let codec = member.codec;
    let outbox = Rc::new(Outbox::new(
        &member,
        config.max_queue_bytes,
        ctx.metrics.clone(),
    ));
    ctx.shard.borrow_mut().add(session, outbox.clone());
    let origin = Origin {
        session,
        session_id: member.session_id.clone(),
        user_id: member.user_id.clone(),
    };
    if ctx.hub.send(HubCmd::Join { member, since }).is_err() {
        ctx.shard.borrow_mut().remove(session, &graph);
        return;
    }
    let mut state = State {
        ctx: &ctx,
        outbox: &outbox,
        origin,
        graph: graph.clone(),
        limits: config.limits(),
        errors: 0,
        errors_since: Instant::now(),
        last_sent: Instant::now(),
        last_received: Instant::now(),
        last_cursor: None,
        pending_cursor: None,
        writer: FrameWriter::default(),
    };
    let end = Box::pin(state.serve(&mut ws)).await;
    // A batch cut short by the close must be finished before anything else
    // goes on the wire; if the client does not take it in time, it gets no
    // close frame, only the end of the connection.
    let clean = !state.writer.in_flight()
        || matches!(
            tokio::time::timeout(Duration::from_secs(1), state.writer.drive(ws.get_mut())).await,
            Ok(Ok(()))
        );
    let end = if clean { end } else { End::Gone };
    // Out of the graph first: the others see the leave at once, not after
    // the closing handshake.
    ctx.shard.borrow_mut().remove(session, &graph);
    let _ = ctx.hub.send(HubCmd::Leave { graph, session });
    match end {
        End::Gone => {}
        End::ClientClosed => {
            // tungstenite queued the reply to the client's close; send it.
            let _ = tokio::time::timeout(CLOSE_LINGER, ws.flush()).await;
        }
        End::Reconnect { code, reason } => {
            let message = hub::stamped(
                "reconnect",
                Body::SystemReconnect(SystemReconnect {
                    reason: reason.to_owned(),
                    retry_after_ms: 500 + rand::random::<u64>() % 1500,
                }),
            );
            Box::pin(close(&mut ws, codec, Some(message), code, reason)).await;
        }
        End::Close { code, reason } => Box::pin(close(&mut ws, codec, None, code, reason)).await,
    }
}

/// How long a closing session waits for the client's side of the closing
/// handshake (and for its own last frames to go out).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Closes a session from the server's side (docs/protocol.md section 10):
/// an optional last message and the close frame; then the client's input
/// is read and dropped until its close frame (or the end of its stream)
/// and the TCP connection is shut down, its last bytes drained. A client
/// that is still sending when the close is decided so receives the close
/// frame and its code, never a reset that would discard them (a socket
/// closed with unread input sends RST). Bounded by [`CLOSE_LINGER`]: a
/// client that does not read cannot hold the session open.
async fn close(
    ws: &mut WebSocketStream<TcpStream>,
    codec: Codec,
    last: Option<Envelope>,
    code: u16,
    reason: &str,
) {
    let deadline = Instant::now() + CLOSE_LINGER;
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason.to_owned()),
    };
    let send = async {
        if let Some(last) = last {
            ws.feed(frame_of(codec, codec.encode(&last))).await?;
        }
        ws.send(Message::Close(Some(frame))).await
    };
    if !matches!(tokio::time::timeout_at(deadline, send).await, Ok(Ok(()))) {
        return;
    }
    // tungstenite still hands over data frames after our close frame: skip
    // them until the client's close. A stream that no longer parses (the
    // rest of an oversized frame) is drained as raw bytes below.
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    let tcp = ws.get_mut();
    let _ = tokio::time::timeout_at(deadline, async {
        // Our FIN, then the client's bytes until its own end of stream.
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One message for the socket from bytes encoded for `codec`.
fn frame_of(codec: Codec, bytes: Bytes) -> Message {
    match codec {
        // The JSON codec produces valid UTF-8; from_utf8 only checks it.
        Codec::Json => match Utf8Bytes::try_from(bytes) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Text(Utf8Bytes::from_static("[]")),
        },
        Codec::Binary => Message::Binary(bytes),
    }
}

/// A session's loop state.
struct State<'a> {
    ctx: &'a SessionCtx,
    outbox: &'a Outbox,
    origin: Origin,
    graph: Arc<str>,
    limits: gitmind_schema::Limits,
    errors: u32,
    errors_since: Instant,
    last_sent: Instant,
    last_received: Instant,
    last_cursor: Option<Instant>,
    pending_cursor: Option<Body>,
    /// The batch being written, kept across interruptions.
    writer: FrameWriter,
}

impl State<'_> {
    async fn serve(&mut self, ws: &mut WebSocketStream<TcpStream>) -> End {
        let config = self.ctx.config.clone();
        loop {
            let mut deadline = (self.last_sent + config.heartbeat())
                .min(self.last_received + config.idle_timeout());
            if let (Some(_), Some(last)) = (&self.pending_cursor, self.last_cursor) {
                deadline = deadline.min(last + self.cursor_interval());
            }
            tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => {
                    return End::Reconnect { code: 1001, reason: "shutdown" };
                }
                () = self.outbox.notify.notified() => {
                    if let Err(end) = Box::pin(self.write_or_close(ws)).await {
                        return end;
                    }
                }
                message = ws.next() => {
                    self.last_received = Instant::now();
                    match message {
                        None => return End::Gone,
                        Some(Ok(Message::Ping(_))) => {
                            // tungstenite queued the pong; send it now.
                            if Box::pin(ws.flush()).await.is_err() {
                                return End::Gone;
                            }
                        }
                        Some(Ok(message)) => {
                            if let Some(end) = self.receive(message) {
                                return end;
                            }
                        }
                        Some(Err(WsError::Capacity(_))) => {
                            return End::Close { code: 1009, reason: "frame too large" };
                        }
                        Some(Err(_)) => return End::Gone,
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if now >= self.last_received + config.idle_timeout() {
                        self.ctx.metrics.heartbeat_timeouts.fetch_add(1, Relaxed);
                        return End::Reconnect { code: 1001, reason: "heartbeat_timeout" };
                    }
                    if let Some(body) = self.pending_cursor.take() {
                        if self.last_cursor.is_some_and(|t| now >= t + self.cursor_interval()) {
                            self.relay(body);
                        } else {
                            self.pending_cursor = Some(body);
                        }
                    }
                    if now >= self.last_sent + config.heartbeat() {
                        let seq = self.outbox.seq.get();
                        let mut beat = hub::stamped("hb", Body::SystemHeartbeat(SystemHeartbeat {
                            seq: Some(seq),
                            server_time: Some(hub::now_ms()),
                        }));
                        // The latest seq, on the envelope too (docs/protocol.md 2.1).
                        beat.seq = Some(seq);
                        self.outbox.push_envelope(beat);
                        if let Err(end) = Box::pin(self.write_or_close(ws)).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    fn cursor_interval(&self) -> Duration {
        Duration::from_millis(1000 / u64::from(self.ctx.config.cursor_rate.max(1)))
    }

    /// Writes what is queued, unless the session turned slow or the server
    /// shuts down: a write blocked on a client that does not read is
    /// abandoned for the close.
    async fn write_or_close(&mut self, ws: &mut WebSocketStream<TcpStream>) -> Result<(), End> {
        let (outbox, shutdown) = (self.outbox, self.ctx.shutdown.clone());
        let slow = End::Reconnect {
            code: CLOSE_SLOW_CONSUMER,
            reason: "slow_consumer",
        };
        if outbox.slow.get() {
            self.ctx.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
            return Err(slow);
        }
        tokio::select! {
            result = self.write(ws) => result,
            () = outbox.closing.notified() => {
                self.ctx.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
                Err(slow)
            }
            () = shutdown.cancelled() => Err(End::Reconnect { code: 1001, reason: "shutdown" }),
        }
    }

    /// Writes what is queued: up to a frame limit's worth of JSON as one
    /// text frame, or binary messages a frame each, with vectored writes
    /// straight from the shared buffers.
    async fn write(&mut self, ws: &mut WebSocketStream<TcpStream>) -> Result<(), End> {
        let codec = self.outbox.codec;
        let counters = self.ctx.metrics.codec(codec);
        // A few batches per wake-up, then yield to the other sessions.
        for _ in 0..16 {
            if !self.writer.in_flight() {
                let mut batch = Vec::new();
                self.outbox.take_batch(&self.limits, &mut batch);
                if batch.is_empty() {
                    break;
                }
                counters.messages_out.fetch_add(batch.len() as u64, Relaxed);
                match codec {
                    Codec::Json => self.writer.json(batch),
                    Codec::Binary => self.writer.binary(batch),
                }
                counters
                    .bytes_out
                    .fetch_add(self.writer.batch_len() as u64, Relaxed);
            }
            self.writer
                .drive(ws.get_mut())
                .await
                .map_err(|_| End::Gone)?;
        }
        self.last_sent = Instant::now();
        if self.outbox.has_more() {
            self.outbox.wake();
        }
        Ok(())
    }

    /// Handles one incoming WebSocket message (pings are answered by the loop).
    fn receive(&mut self, message: Message) -> Option<End> {
        let decoded = match &message {
            Message::Text(text) => {
                self.count_in(Codec::Json, text.len());
                json::decode(text.as_str(), &self.limits)
            }
            Message::Binary(bytes) => {
                self.count_in(Codec::Binary, bytes.len());
                binary::decode(bytes, &self.limits)
            }
            Message::Close(_) => return Some(End::ClientClosed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
        };
        let envelopes = match decoded {
            Ok(envelopes) => envelopes,
            Err(error) => return self.refuse(error),
        };
        for envelope in envelopes {
            let end = match envelope {
                Ok(envelope) => self.handle(envelope),
                Err(error) => match error.failed_mutation() {
                    Some(id) => {
                        let id = id.to_owned();
                        self.refuse_mutation(id, error)
                    }
                    None => self.refuse(error),
                },
            };
            if end.is_some() {
                return end;
            }
        }
        None
    }

    fn count_in(&self, codec: Codec, len: usize) {
        let counters = self.ctx.metrics.codec(codec);
        counters.messages_in.fetch_add(1, Relaxed);
        counters.bytes_in.fetch_add(len as u64, Relaxed);
    }

    /// Handles one decoded envelope.
    fn handle(&mut self, envelope: Envelope) -> Option<End> {
        let ty = envelope.body.message_type();
        let id = envelope.id;
        if ty.is_mutation() {
            let cmd = HubCmd::Mutate {
                graph: self.graph.clone(),
                origin: self.origin.clone(),
                mutation_id: id.clone(),
                body: envelope.body,
            };
            self.send_mutation(cmd, &id);
            return None;
        }
        match envelope.body {
            Body::GraphSync(request) => {
                let since = match (request.since, request.epoch) {
                    (Some(since), Some(epoch)) => Some((since, epoch)),
                    (None, None) => None,
                    _ => {
                        return self.refuse(
                            DecodeError::invalid(
                                "graph.sync needs both `since` and `epoch`, or neither",
                            )
                            .with_reference(Some(id)),
                        )
                    }
                };
                let cmd = HubCmd::Resync {
                    graph: self.graph.clone(),
                    session: self.origin.session,
                    since,
                };
                if self.ctx.hub.try_send(cmd).is_err() {
                    // Never dropped in silence: the client asks again.
                    self.push_error(
                        ErrorCode::RateLimited,
                        "the server is busy; ask for the sync again shortly".into(),
                        Some(id),
                        Some(1000),
                    );
                }
                None
            }
            body @ (Body::UserPresence(_) | Body::CursorMove(_) | Body::SelectionChange(_)) => {
                if let Err(message) = validate_presence(&body) {
                    let code = if message.contains("limit") {
                        ErrorCode::TooLarge
                    } else {
                        ErrorCode::Invalid
                    };
                    return self.refuse(DecodeError::new(code, message).with_reference(Some(id)));
                }
                if matches!(body, Body::CursorMove(_)) {
                    let now = Instant::now();
                    if self
                        .last_cursor
                        .is_some_and(|t| now < t + self.cursor_interval())
                    {
                        // Faster than the rate: keep the latest, send it when due.
                        self.pending_cursor = Some(body);
                        return None;
                    }
                }
                self.relay(body);
                None
            }
            Body::SystemHeartbeat(_) => None,
            Body::RegionSubscribe(_)
            | Body::RegionUnsubscribe(_)
            | Body::QuerySubscribe(_)
            | Body::QueryUnsubscribe(_)
            | Body::GonzaiSuggestion(_)
            | Body::ChaosTrigger(_) => self.refuse(
                DecodeError::invalid(format!(
                    "`{}` is not available on this server yet",
                    ty.name()
                ))
                .with_reference(Some(id)),
            ),
            _ => self.refuse(
                DecodeError::invalid(format!(
                    "`{}` is sent by the server, not by clients",
                    ty.name()
                ))
                .with_reference(Some(id)),
            ),
        }
    }

    /// Sends an ephemeral message on to the hub.
    fn relay(&mut self, body: Body) {
        if matches!(body, Body::CursorMove(_)) {
            self.last_cursor = Some(Instant::now());
        }
        // Ephemeral: under overload it may be dropped (docs/protocol.md 8).
        let _ = self.ctx.hub.try_send(HubCmd::Presence {
            graph: self.graph.clone(),
            session: self.origin.session,
            body,
        });
    }

    /// Hands a mutation (or its refusal) to the hub; when the hub's queue
    /// is full it is settled at once as `unavailable`, which a client
    /// retries.
    fn send_mutation(&mut self, cmd: HubCmd, mutation_id: &str) {
        if self.ctx.hub.try_send(cmd).is_err() {
            self.outbox.push_envelope(hub::unavailable(
                mutation_id,
                "the server is overloaded; retry shortly",
            ));
            self.outbox.wake();
        }
    }

    /// Settles a mutation whose data did not decode with `update.rollback`
    /// (docs/protocol.md 4.1), through the owner, which remembers it for a
    /// resent id (4.4). It counts toward the error budget like any bad
    /// message.
    fn refuse_mutation(&mut self, mutation_id: String, error: DecodeError) -> Option<End> {
        if let Some(end) = self.count_error(error.code) {
            return Some(end);
        }
        let reason = match error.code {
            ErrorCode::TooLarge => RollbackReason::TooLarge,
            _ => RollbackReason::Invalid,
        };
        let cmd = HubCmd::Refuse {
            graph: self.graph.clone(),
            origin: self.origin.clone(),
            mutation_id: mutation_id.clone(),
            reason,
            message: error.message,
        };
        self.send_mutation(cmd, &mutation_id);
        None
    }

    /// Counts one bad message; past the budget the session is closed with
    /// 1008 (docs/protocol.md section 10).
    fn count_error(&mut self, code: ErrorCode) -> Option<End> {
        self.ctx.metrics.error(code);
        let now = Instant::now();
        if now.duration_since(self.errors_since) > Duration::from_secs(60) {
            self.errors = 0;
            self.errors_since = now;
        }
        self.errors += 1;
        if self.errors > self.ctx.config.max_errors_per_minute {
            self.ctx.metrics.policy_closes.fetch_add(1, Relaxed);
            return Some(End::Close {
                code: 1008,
                reason: "too many bad messages",
            });
        }
        None
    }

    /// Answers a message that could not be taken with `system.error`;
    /// closes the session (1008) past the error budget.
    fn refuse(&mut self, error: DecodeError) -> Option<End> {
        if let Some(end) = self.count_error(error.code) {
            return Some(end);
        }
        self.push_error(error.code, error.message, error.reference, None);
        None
    }

    /// Queues a `system.error` for this session.
    fn push_error(
        &mut self,
        code: ErrorCode,
        message: String,
        reference: Option<String>,
        retry_after_ms: Option<u64>,
    ) {
        let message = hub::stamped(
            format!("e-{}", self.errors),
            Body::SystemError(SystemError {
                code,
                message,
                reference,
                retry_after_ms,
            }),
        );
        self.outbox.push_envelope(message);
        self.outbox.wake();
    }
}

/// Checks an ephemeral message (docs/protocol.md 8); the error names the field.
fn validate_presence(body: &Body) -> Result<(), String> {
    fn text(field: &str, value: Option<&String>, max: usize) -> Result<(), String> {
        match value {
            Some(v) if v.len() > max => {
                Err(format!("{field} is {} bytes; the limit is {max}", v.len()))
            }
            Some(v) if v.chars().any(char::is_control) => {
                Err(format!("{field} has control characters"))
            }
            _ => Ok(()),
        }
    }
    match body {
        Body::UserPresence(p) => {
            if matches!(p.status, PresenceStatus::Joined | PresenceStatus::Left) {
                return Err(
                    "user.presence status `joined` and `left` are sent by the server".into(),
                );
            }
            text("focus", p.focus.as_ref(), 256)?;
            text("displayName", p.display_name.as_ref(), 128)?;
            text("color", p.color.as_ref(), 32)?;
            match p.chaos_affinity {
                Some(a) if !(0.0..=1.0).contains(&a) => {
                    Err("chaosAffinity must be a number from 0 to 1".into())
                }
                _ => Ok(()),
            }
        }
        Body::CursorMove(c) => {
            if !c.x.is_finite() || !c.y.is_finite() {
                return Err("cursor x and y must be finite numbers".into());
            }
            text("nodeId", c.node_id.as_ref(), 256)
        }
        Body::SelectionChange(s) => {
            if s.nodes.len() + s.edges.len() > 1000 {
                return Err(format!(
                    "selection has {} ids; the limit is 1000",
                    s.nodes.len() + s.edges.len()
                ));
            }
            for id in s.nodes.iter().chain(&s.edges) {
                text("selection id", Some(id), 1024)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::{CursorMove, UserPresence};

    fn outbox(max: usize) -> Outbox {
        let member = Member {
            session: 1,
            shard: 0,
            codec: Codec::Json,
            graph: "g".into(),
            user_id: "u".into(),
            session_id: "s".into(),
        };
        Outbox::new(&member, max, Arc::new(Metrics::new(1)))
    }

    fn cursor(x: f64) -> Encoded {
        let env = Envelope::new(
            "c",
            Body::CursorMove(CursorMove {
                x,
                y: 0.0,
                node_id: None,
            }),
        );
        Encoded {
            json: Some(json::encode(&env)),
            bin: None,
        }
    }

    #[test]
    fn a_backlog_goes_out_in_frames_of_at_most_the_envelope_limit() {
        // Found by the soak test: after a restart, a JSON client's backlog
        // of small events went out as one array of 2,383 messages, which the
        // client (rightly) refused as over the limit of 1,000.
        let out = outbox(1 << 24);
        for _ in 0..2_500 {
            out.push_shared(Bytes::from_static(b"{}"), 1);
        }
        let limits = gitmind_schema::Limits::default();
        let mut sizes = Vec::new();
        loop {
            let mut batch = Vec::new();
            out.take_batch(&limits, &mut batch);
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn cursor_moves_coalesce_under_backlog() {
        let out = outbox(1 << 20);
        out.push_shared(Bytes::from_static(b"{}"), 1);
        for x in 0..5 {
            out.push_ephemeral(7, MessageType::CursorMove, &cursor(f64::from(x)));
        }
        let mut batch = Vec::new();
        out.take_batch(&gitmind_schema::Limits::default(), &mut batch);
        assert_eq!(batch.len(), 2, "the event and only the latest cursor");
        assert!(std::str::from_utf8(&batch[1]).unwrap().contains("\"x\":4"));
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn queue_past_its_limit_marks_slow_and_drops_everything() {
        let out = outbox(10);
        out.push_shared(Bytes::from_static(b"12345678"), 1);
        assert!(!out.slow.get());
        out.push_shared(Bytes::from_static(b"12345"), 2);
        assert!(out.slow.get());
        assert_eq!(out.queued_bytes(), 0);
        out.push_shared(Bytes::from_static(b"1"), 3);
        assert_eq!(
            out.queued_bytes(),
            0,
            "nothing is queued for a closing session"
        );
    }

    #[test]
    fn a_sync_larger_than_the_queue_limit_streams_without_turning_slow() {
        let out = outbox(64 * 1024);
        let nodes: Vec<Arc<Node>> = (0..3000)
            .map(|i| {
                Arc::new(Node {
                    id: format!("n:{i}"),
                    content: Some("x".repeat(500)),
                    ..Node::default()
                })
            })
            .collect();
        out.push_shared(Bytes::from_static(b"{}"), 1);
        out.push_sync(
            SyncData::Snapshot {
                epoch: "e".into(),
                seq: 9,
                nodes: nodes.into(),
                edges: Vec::new().into(),
            },
            Vec::new(),
            25_000,
        );
        out.push_shared(Bytes::from_static(b"{\"after\":1}"), 10);
        assert!(
            !out.slow.get(),
            "a sync is not counted against the queue limit"
        );
        let (mut frames, mut total) = (Vec::new(), 0);
        while out.has_more() {
            let mut batch = Vec::new();
            out.take_batch(&gitmind_schema::Limits::default(), &mut batch);
            assert!(
                batch.iter().map(Bytes::len).sum::<usize>() <= 1 << 20,
                "each write within the frame limit"
            );
            frames.extend(batch);
        }
        assert_eq!(
            &frames[0][..],
            b"{}",
            "what was queued before the sync goes first"
        );
        assert_eq!(
            &frames[frames.len() - 1][..],
            b"{\"after\":1}",
            "what was queued after it waits for its last chunk"
        );
        for frame in &frames[1..frames.len() - 1] {
            let envelope = json::decode_one(
                std::str::from_utf8(frame).unwrap(),
                &gitmind_schema::Limits::default(),
            )
            .unwrap();
            let Body::GraphSync(s) = envelope.body else {
                panic!()
            };
            total += s.nodes.unwrap().len();
        }
        assert_eq!(total, 3000);
    }

    #[test]
    fn large_snapshot_is_cut_into_chunks_within_the_frame_limit() {
        let nodes: Vec<Arc<Node>> = (0..2000)
            .map(|i| {
                Arc::new(Node {
                    id: format!("n:{i}"),
                    content: Some("x".repeat(500)),
                    ..Node::default()
                })
            })
            .collect();
        let sync = SyncData::Snapshot {
            epoch: "e".into(),
            seq: 9,
            nodes: nodes.into(),
            edges: Vec::new().into(),
        };
        let mut cursor = SyncCursor::new(sync, Vec::new(), 25_000);
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
