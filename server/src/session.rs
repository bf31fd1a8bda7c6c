//! Sessions (docs/architecture.md, "The data path"): one WebSocket
//! connection on its shard, from just after the handshake to its close.
//!
//! A session is one task. It owns its socket; the shard's dispatcher fills
//! its [`Outbox`] and wakes it. The task waits on the socket, the outbox,
//! its timer and the shutdown signal together, and writes what is queued in
//! as few frames and system calls as it can. Everything it registers (its
//! place on the shard and in the graph) is released by a guard, so even a
//! panic cannot leave a ghost member behind.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitmind_owner::{Origin, SessionKey};
use gitmind_schema::message::{
    ChaosTrigger, GonzaiSuggestion, RollbackReason, Suggestion, SystemError, SystemHeartbeat,
    SystemReconnect, UpdateRollback,
};
use gitmind_schema::{binary, json, Body, Codec, DecodeError, Envelope, ErrorCode, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::config::Config;
use crate::fanout::{Member, Refusal};
use crate::frames::{FrameWriter, Part};
use crate::gonzai;
use crate::hub::HubCmd;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::presence::{self, Throttles};
use crate::query;
use crate::quota::{self, Quotas};
use crate::region::{self, Counted};
use crate::shard::Shard;
use crate::stamp::{self, now_ms, stamped};
use crate::tls::Stream;

/// Close code: the session's outgoing queue passed its limit.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: the session's credentials expired.
pub const CLOSE_CREDENTIALS_EXPIRED: u16 = 4001;

/// Close code: the server cannot take the session now (RFC 6455's "try
/// again later"); here, no more graphs can be opened.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

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
    /// Rates per user.
    pub quotas: Arc<Quotas>,
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

/// A session's registration: on its shard (to receive) and with the hub
/// (in its graph's roster). [`Registration::leave`] ends it; dropping it
/// without leaving (a panic, or a task dropped at shutdown) leaves too.
struct Registration {
    shard: Shard,
    hub: crossbeam::channel::Sender<HubCmd>,
    session: SessionKey,
    graph: Arc<str>,
    left: bool,
}

impl Registration {
    /// Leaves the shard and the graph; waits for room in the hub's queue
    /// so the others always hear of it.
    fn leave(&mut self) {
        self.leave_shard();
        let _ = self.hub.send(self.leave_command());
        self.left = true;
    }

    fn leave_shard(&self) {
        match self.shard.try_borrow_mut() {
            Ok(mut shard) => shard.remove(self.session, &self.graph),
            // Only a panic inside a borrow of the shard on this thread gets
            // here; the dispatcher would then be gone too.
            Err(_) => tracing::error!(session = self.session, "shard busy: session not removed"),
        }
    }

    fn leave_command(&self) -> HubCmd {
        HubCmd::Leave {
            graph: self.graph.clone(),
            session: self.session,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        self.leave_shard();
        // Never block here: at shutdown the hub may itself be waiting for
        // this shard's ring, which no one drains any more.
        if self.hub.try_send(self.leave_command()).is_err() {
            tracing::warn!(session = self.session, "hub queue full: leave not sent");
        }
    }
}

/// A session from just after the WebSocket handshake: its connection,
/// its loop state and its place on its shard and in its graph.
///
/// Built by [`start`], outside any future, and boxed: the session's
/// future then holds one pointer to it. An `async fn` keeps its arguments
/// and the locals they move into side by side, so passing these as
/// arguments (or building them inside the future) costs every connection
/// their size twice.
pub struct Running {
    ws: WebSocketStream<Stream>,
    state: State,
    registration: Registration,
}

/// Registers a session on its shard and in its graph, and asks the hub to
/// join it; `None` when the hub is gone (the server is stopping).
pub fn start(
    ws: WebSocketStream<Stream>,
    member: Member,
    access: Access,
    since: Option<(u64, String)>,
    ctx: SessionCtx,
) -> Option<Box<Running>> {
    let config = ctx.config.clone();
    let session = member.session;
    let graph = member.graph.clone();
    let mut outbox = Outbox::new(
        member.codec,
        graph.clone(),
        member.user_id.clone(),
        member.session_id.clone(),
        member.shard,
        config.max_queue_bytes,
        ctx.metrics.clone(),
    );
    outbox.view = member.view.clone();
    let outbox = Rc::new(outbox);
    ctx.shard.borrow_mut().add(session, outbox.clone());
    let origin = Origin {
        session,
        session_id: member.session_id.clone(),
        user_id: member.user_id.clone(),
    };
    let registration = Registration {
        shard: Rc::clone(&ctx.shard),
        hub: ctx.hub.clone(),
        session,
        graph: graph.clone(),
        left: false,
    };
    ctx.hub.send(HubCmd::Join { member, since }).ok()?;
    let state = State {
        outbox,
        origin,
        graph,
        limits: config.limits(),
        errors: 0,
        errors_since: Instant::now(),
        last_sent: Instant::now(),
        last_received: Instant::now(),
        throttles: None,
        writer: FrameWriter::default(),
        gonzai_asks: (Instant::now(), 0),
        last_chaos: None,
        user: access.user_id.as_str().into(),
        expires: access.expires_at.map(|at| {
            let left = at.saturating_mul(1000).saturating_sub(now_ms());
            Instant::now() + Duration::from_millis(left)
        }),
        access,
        subscriptions: Counted::default(),
        ctx,
    };
    Some(Box::new(Running {
        ws,
        state,
        registration,
    }))
}

/// Runs a session [`start`]ed to its end.
pub async fn run(mut running: Box<Running>) {
    let end = Box::pin(running.state.serve(&mut running.ws)).await;
    // Boxed too: the session's future, which lives as long as the session,
    // is then as small as the pointers it holds.
    Box::pin(finish(&mut running, end)).await;
}

/// Ends a session: the batch being written, the graph left, the close.
async fn finish(running: &mut Running, end: End) {
    let Running {
        ws,
        state,
        registration,
    } = running;
    let codec = state.outbox.codec;
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
    registration.leave();
    match end {
        End::Gone => {}
        End::ClientClosed => {
            // tungstenite queued the reply to the client's close; send it.
            let _ = tokio::time::timeout(CLOSE_LINGER, ws.flush()).await;
        }
        End::Reconnect { code, reason } => {
            let message = stamped(
                "reconnect",
                Body::SystemReconnect(SystemReconnect {
                    reason: reason.to_owned(),
                    retry_after_ms: 500 + rand::random::<u64>() % 1500,
                }),
            );
            close(ws, codec, Some(message), code, reason).await;
        }
        End::Close { code, reason } => close(ws, codec, None, code, reason).await,
    }
}

/// How long a closing session waits for the client's side of the closing
/// handshake (and for its own last frames to go out).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Closes a session from the server's side (docs/protocol.md section 10):
/// an optional last message and the close frame; then the client's input
/// is read and dropped until its close frame (or the end of its stream)
/// and the connection is shut down (over TLS, close_notify first), its
/// last bytes drained. A client that is still sending when the close is
/// decided so receives the close frame and its code, never a reset that
/// would discard them (a socket closed with unread input sends RST).
/// Bounded by [`CLOSE_LINGER`]: a client that does not read cannot hold
/// the session open.
async fn close(
    ws: &mut WebSocketStream<Stream>,
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
    let stream = ws.get_mut();
    let _ = tokio::time::timeout_at(deadline, async {
        // Our FIN (after TLS's close_notify), then the client's bytes until
        // its own end of stream.
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
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
struct State {
    ctx: SessionCtx,
    outbox: Rc<Outbox>,
    origin: Origin,
    graph: Arc<str>,
    limits: Limits,
    errors: u32,
    errors_since: Instant,
    last_sent: Instant,
    last_received: Instant,
    /// The rate limits of what the session shows, from its first cursor,
    /// selection or presence on (most idle sessions send none).
    throttles: Option<Box<Throttles>>,
    /// The batch being written, kept across interruptions.
    writer: FrameWriter,
    /// What the session may do.
    access: Access,
    /// Its `gonzai.suggestion` asks: the current second's start and count.
    gonzai_asks: (Instant, u32),
    /// When its last `chaos.trigger` was taken.
    last_chaos: Option<Instant>,
    /// Its user, as the quotas know it.
    user: Arc<str>,
    /// When its credentials expire.
    expires: Option<Instant>,
    /// The ids of its regions and queries, for their limits.
    subscriptions: Counted,
}

impl State {
    async fn serve(&mut self, ws: &mut WebSocketStream<Stream>) -> End {
        let config = self.ctx.config.clone();
        loop {
            let mut deadline = (self.last_sent + config.heartbeat())
                .min(self.last_received + config.idle_timeout());
            if let Some(due) = self.throttles.as_ref().and_then(|t| t.deadline()) {
                deadline = deadline.min(due);
            }
            if let Some(expires) = self.expires {
                deadline = deadline.min(expires);
            }
            // The shard wakes every session when the server shuts down
            // (a future per session waiting on the token would cost each
            // idle connection its size).
            if self.ctx.shutdown.is_cancelled() {
                return End::Reconnect {
                    code: 1001,
                    reason: "shutdown",
                };
            }
            tokio::select! {
                biased;
                () = self.outbox.woken() => {
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
                    if self.expires.is_some_and(|at| now >= at) {
                        return End::Reconnect {
                            code: CLOSE_CREDENTIALS_EXPIRED,
                            reason: "credentials_expired",
                        };
                    }
                    if now >= self.last_received + config.idle_timeout() {
                        self.ctx.metrics.heartbeat_timeouts.fetch_add(1, Relaxed);
                        return End::Reconnect { code: 1001, reason: "heartbeat_timeout" };
                    }
                    let due: Vec<Body> = self.throttles.as_mut().map_or_else(Vec::new, |t| t.due(now).collect());
                    for body in due {
                        self.relay(body);
                    }
                    if now >= self.last_sent + config.heartbeat() {
                        let seq = self.outbox.latest_seq();
                        let mut beat = stamped("hb", Body::SystemHeartbeat(SystemHeartbeat {
                            seq: Some(seq),
                            server_time: Some(now_ms()),
                        }));
                        // The latest seq, on the envelope too (docs/protocol.md 2.1).
                        beat.seq = Some(seq);
                        self.outbox.push_envelope(beat);
                        if let Err(end) = Box::pin(self.write_or_close(ws)).await {
                            return end;
                        }
                    }
                    // Quiet for a while: give back what the last writes
                    // grew (here, not after each write, where the next
                    // write would allocate it again).
                    if !self.writer.in_flight() {
                        self.writer.trim();
                        self.outbox.trim();
                    }
                }
            }
        }
    }

    /// Writes what is queued, unless the session turned slow or the server
    /// shuts down: a write blocked on a client that does not read is
    /// abandoned for the close.
    async fn write_or_close(&mut self, ws: &mut WebSocketStream<Stream>) -> Result<(), End> {
        let (outbox, shutdown) = (Rc::clone(&self.outbox), self.ctx.shutdown.clone());
        let slow = End::Reconnect {
            code: CLOSE_SLOW_CONSUMER,
            reason: "slow_consumer",
        };
        match outbox.refusal() {
            Some(Refusal::TooManyGraphs) => {
                return Err(End::Reconnect {
                    code: CLOSE_TRY_AGAIN_LATER,
                    reason: "too_many_graphs",
                })
            }
            Some(Refusal::LoadFailed) => {
                return Err(End::Close {
                    code: 1011,
                    reason: "the graph cannot be loaded",
                })
            }
            None => {}
        }
        if outbox.is_slow() {
            self.ctx.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
            return Err(slow);
        }
        tokio::select! {
            result = self.write(ws) => result,
            () = outbox.turned_slow() => {
                self.ctx.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
                Err(slow)
            }
            () = shutdown.cancelled() => Err(End::Reconnect { code: 1001, reason: "shutdown" }),
        }
    }

    /// Writes what is queued: up to a frame limit's worth of JSON as one
    /// text frame, or binary messages a frame each, with vectored writes
    /// straight from the shared buffers.
    async fn write(&mut self, ws: &mut WebSocketStream<Stream>) -> Result<(), End> {
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
                let messages: usize = batch.iter().map(Part::messages).sum();
                counters.messages_out.fetch_add(messages as u64, Relaxed);
                self.writer.lay_out(codec, batch);
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
            if let Some(message) = self.access.refuses(&envelope.body) {
                let cmd = HubCmd::Refuse {
                    graph: self.graph.clone(),
                    origin: self.origin.clone(),
                    mutation_id: id.clone(),
                    reason: RollbackReason::Forbidden,
                    message,
                };
                self.send_mutation(cmd, &id);
                return None;
            }
            if let Err(wait) = self.ctx.quotas.mutation(&self.user) {
                let refused = UpdateRollback::rate_limited(
                    &id,
                    "too many mutations of this user; retry after retryAfterMs",
                    quota::retry_after_ms(wait),
                );
                self.outbox.push_envelope(stamp::rollback(refused));
                self.outbox.wake();
                return None;
            }
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
                if self.outbox.sync_busy() {
                    // One at a time: the one on its way is as of its time.
                    self.push_error(
                        ErrorCode::RateLimited,
                        "a graph.sync is already on its way; ask again after it".into(),
                        Some(id),
                        Some(1000),
                    );
                    return None;
                }
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
                } else {
                    self.outbox.sync_asked();
                }
                None
            }
            body @ (Body::UserPresence(_) | Body::CursorMove(_) | Body::SelectionChange(_)) => {
                if let Err(error) = presence::validate(&body) {
                    return self.refuse(error.with_reference(Some(id)));
                }
                if let Err(wait) = self.ctx.quotas.ephemeral(&self.user) {
                    if let Some(end) = self.count_error(ErrorCode::RateLimited) {
                        return Some(end);
                    }
                    self.push_error(
                        ErrorCode::RateLimited,
                        "too many presence, cursor and selection messages of this user".into(),
                        Some(id),
                        Some(quota::retry_after_ms(wait)),
                    );
                    return None;
                }
                // Faster than the rate: the latest waits until it is due.
                let config = &self.ctx.config;
                let body = self
                    .throttles
                    .get_or_insert_with(|| {
                        Box::new(Throttles::new(config.cursor_rate, config.presence_rate))
                    })
                    .offer(body, Instant::now())?;
                self.relay(body);
                None
            }
            Body::SystemHeartbeat(_) => None,
            body @ (Body::RegionSubscribe(_)
            | Body::RegionUnsubscribe(_)
            | Body::QuerySubscribe(_)
            | Body::QueryUnsubscribe(_)) => self.subscribe(body, id),
            Body::GonzaiSuggestion(ask) => self.gonzai_suggestion(id, ask),
            Body::ChaosTrigger(trigger) => self.chaos_trigger(id, trigger),
            _ => self.refuse(
                DecodeError::invalid(format!(
                    "`{}` is sent by the server, not by clients",
                    ty.name()
                ))
                .with_reference(Some(id)),
            ),
        }
    }

    /// Checks a `region.*` or `query.*` message against the limits
    /// (docs/protocol.md 7) and hands it to the hub.
    fn subscribe(&mut self, body: Body, id: String) -> Option<End> {
        let checked = match &body {
            Body::RegionSubscribe(m) => region::validate(&m.region_id, &m.filter)
                .and_then(|()| self.subscriptions.check_region(&m.region_id)),
            Body::QuerySubscribe(m) => query::validate(&m.query_id, &m.query)
                .and_then(|()| self.subscriptions.check_query(&m.query_id)),
            _ => Ok(()),
        };
        if let Err(error) = checked {
            return self.refuse(error.with_reference(Some(id)));
        }
        if self
            .ctx
            .hub
            .try_send(HubCmd::Subscribe {
                graph: self.graph.clone(),
                session: self.origin.session,
                body: body.clone(),
            })
            .is_err()
        {
            self.push_error(
                ErrorCode::RateLimited,
                "the server is busy; subscribe again shortly".into(),
                Some(id),
                Some(1000),
            );
            return None;
        }
        self.subscriptions.sent(&body);
        None
    }

    /// `gonzai.suggestion`: an ask (`for`, `limit`) or a share
    /// (`suggestions` alone) is checked here, at most
    /// `gonzai_asks_per_second` of both; the hub answers the ask and relays
    /// the share.
    fn gonzai_suggestion(&mut self, id: String, ask: GonzaiSuggestion) -> Option<End> {
        let Some(for_node) = ask.for_node else {
            return match ask.suggestions {
                Some(suggestions) if ask.limit.is_none() => self.gonzai_share(id, suggestions),
                Some(_) => self.refuse(
                    DecodeError::invalid("a shared `gonzai.suggestion` takes no `limit`")
                        .with_reference(Some(id)),
                ),
                None => self.refuse(
                    DecodeError::invalid("`gonzai.suggestion` needs `for`")
                        .with_reference(Some(id)),
                ),
            };
        };
        let limit = ask.limit.unwrap_or(gonzai::DEFAULT_LIMIT);
        if !(1..=gonzai::MAX_LIMIT).contains(&limit) {
            return self.refuse(
                DecodeError::invalid(format!(
                    "`limit` must be 1 to {}, not {limit}",
                    gonzai::MAX_LIMIT
                ))
                .with_reference(Some(id)),
            );
        }
        let cmd = HubCmd::Suggest {
            graph: self.graph.clone(),
            session: self.origin.session,
            id: id.clone(),
            for_node,
            limit,
            access: Box::new(self.access.clone()),
        };
        self.gonzai_send(id, cmd)
    }

    /// A shared `gonzai.suggestion {suggestions}`: at most
    /// [`gonzai::MAX_LIMIT`] suggestions, each with a target the session
    /// may read and a confidence of 0 to 1.
    fn gonzai_share(&mut self, id: String, suggestions: Vec<Suggestion>) -> Option<End> {
        let bad = if suggestions.len() > gonzai::MAX_LIMIT as usize {
            Some(format!(
                "at most {} shared suggestions, not {}",
                gonzai::MAX_LIMIT,
                suggestions.len()
            ))
        } else if let Some(s) = suggestions
            .iter()
            .find(|s| !(0.0..=1.0).contains(&s.confidence))
        {
            Some(format!("confidence {} is not 0 to 1", s.confidence))
        } else {
            suggestions
                .iter()
                .find(|s| s.target.is_empty() || !self.access.may_read(&s.target))
                .map(|s| format!("no node {:?} to suggest", s.target))
        };
        if let Some(message) = bad {
            return self.refuse(DecodeError::invalid(message).with_reference(Some(id)));
        }
        let cmd = HubCmd::Share {
            graph: self.graph.clone(),
            session: self.origin.session,
            id: id.clone(),
            suggestions,
        };
        self.gonzai_send(id, cmd)
    }

    /// Hands an ask or a share to the hub within `gonzai_asks_per_second`.
    fn gonzai_send(&mut self, id: String, cmd: HubCmd) -> Option<End> {
        let now = Instant::now();
        if now.duration_since(self.gonzai_asks.0) >= Duration::from_secs(1) {
            self.gonzai_asks = (now, 0);
        }
        self.gonzai_asks.1 += 1;
        let busy = if self.gonzai_asks.1 > self.ctx.config.gonzai_asks_per_second {
            Some("too many `gonzai.suggestion` asks from this session")
        } else {
            self.ctx
                .hub
                .try_send(cmd)
                .err()
                .map(|_| "the server is busy; ask again shortly")
        };
        if let Some(message) = busy {
            if let Some(end) = self.count_error(ErrorCode::RateLimited) {
                return Some(end);
            }
            self.push_error(ErrorCode::RateLimited, message.into(), Some(id), Some(1000));
        }
        None
    }

    /// `chaos.trigger`: `intensity` 0 to 1 (0.5 when not given), at most one
    /// per `chaos_interval_ms`; spread by the hub.
    fn chaos_trigger(&mut self, id: String, trigger: ChaosTrigger) -> Option<End> {
        let intensity = trigger.intensity.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&intensity)
            || trigger.initiator.is_some()
            || trigger.message.is_some()
        {
            return self.refuse(
                DecodeError::invalid("`chaos.trigger` takes only `intensity`, 0 to 1")
                    .with_reference(Some(id)),
            );
        }
        let now = Instant::now();
        let interval = Duration::from_millis(self.ctx.config.chaos_interval_ms);
        let early = self
            .last_chaos
            .is_some_and(|at| now.duration_since(at) < interval);
        let refused = if early {
            Some("chaos is already spreading from this session; wait a moment")
        } else {
            self.last_chaos = Some(now);
            let cmd = HubCmd::Chaos {
                graph: self.graph.clone(),
                session: self.origin.session,
                intensity,
            };
            self.ctx
                .hub
                .try_send(cmd)
                .err()
                .map(|_| "the server is busy; try again shortly")
        };
        if let Some(message) = refused {
            if let Some(end) = self.count_error(ErrorCode::RateLimited) {
                return Some(end);
            }
            let wait = u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            self.push_error(ErrorCode::RateLimited, message.into(), Some(id), Some(wait));
        }
        None
    }

    /// Sends an ephemeral message on to the hub.
    fn relay(&mut self, body: Body) {
        // Ephemeral: under overload it may be dropped (docs/protocol.md 8).
        let _ = self.ctx.hub.try_send(HubCmd::Presence {
            graph: self.graph.clone(),
            session: self.origin.session,
            body,
        });
    }

    /// Hands a mutation (or its refusal) to the hub. It is settled at once,
    /// and the client retries, when the session already has its share of
    /// mutations waiting for an outcome (`rate_limited`), or when the hub's
    /// queue is full (`unavailable`).
    fn send_mutation(&mut self, cmd: HubCmd, mutation_id: &str) {
        let max = self.ctx.config.max_mutations_in_flight;
        let refused = if !self.outbox.mutation_sent(mutation_id, max) {
            UpdateRollback::rate_limited(
                mutation_id,
                format!("{max} mutations of this session are waiting for their outcome; send more as they settle"),
                1000,
            )
        } else if self.ctx.hub.try_send(cmd).is_err() {
            UpdateRollback::unavailable(
                mutation_id,
                "the server is overloaded; retry shortly",
                Some(1000),
            )
        } else {
            return;
        };
        self.outbox.push_envelope(stamp::rollback(refused));
        self.outbox.wake();
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
            self.ctx.quotas.bench(&self.user);
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
        let message = stamped(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::shard::ShardState;

    #[test]
    fn a_panicking_session_still_leaves_its_shard_and_its_graph() {
        let metrics = Arc::new(Metrics::new(1));
        let shard = ShardState::new(0, metrics.clone(), Limits::default());
        let (hub, commands) = crossbeam::channel::unbounded();
        let outbox = Outbox::new(
            Codec::Json,
            "g".into(),
            "u".into(),
            "s".into(),
            0,
            1 << 20,
            metrics.clone(),
        );
        shard.borrow_mut().add(7, Rc::new(outbox));
        let open = metrics.session_opened(0);
        let registration = Registration {
            shard: shard.clone(),
            hub,
            session: 7,
            graph: "g".into(),
            left: false,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = (registration, open);
            panic!("a bug in the session");
        }));
        assert!(result.is_err());
        assert!(!shard.borrow().has(7), "gone from its shard");
        assert!(matches!(
            commands.try_recv(),
            Ok(HubCmd::Leave { session: 7, .. })
        ));
        assert_eq!(metrics.connections(), 0, "counted out");
    }
}
