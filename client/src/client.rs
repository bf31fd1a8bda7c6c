//! The connected client: one background task owns the connection and the
//! [`Replica`]; the program talks to it through a [`Client`] handle.
//!
//! The task connects, takes the `graph.sync`, resends every change still
//! waiting for an outcome (the server answers a repeated id with its
//! original outcome, so nothing applies twice), and then applies events
//! and outcomes as they come. When the connection is lost (closed, broken,
//! silent past two heartbeats, or sending garbage), it waits a full-jitter
//! backoff on top of any delay the server asked for and resumes with
//! `since`/`epoch`, so no event is missed or seen twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gitmind_schema::message::{
    BatchOp, BatchUpdate, CursorMove, EdgeCreate, EdgeDelete, EdgeUpdate, NodeCreate, NodeDelete,
    NodeUpdate, Query, QueryResults, QuerySubscribe, QueryUnsubscribe, RegionFilter,
    RegionSubscribe, RegionUnsubscribe, SelectionChange, UserPresence,
};
use gitmind_schema::message::{ChaosTrigger, GonzaiSuggestion, Suggestion};
use gitmind_schema::message::{
    GraphSync, RollbackReason, SyncMode, SystemError, SystemHeartbeat, UpdateConfirmed,
    UpdateConflictResolved, UpdateRollback,
};
use gitmind_schema::model::{Edge, EdgeSet, Node, NodeSet, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::{Body, Codec, Envelope, MessageType};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::replica::{Replica, ReplicaError};
use crate::transport::{Transport, TransportError};

/// Where the client's bearer token comes from. It is asked again before
/// every connection attempt, so when the server closes a session whose
/// token expired (4001) a callback can hand over a fresh one, and the
/// client resumes with its pending changes as after any reconnect.
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl TokenSource {
    /// A callback asked for the token before each connection attempt.
    pub fn new(fetch: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        TokenSource(Arc::new(fetch))
    }

    /// The same token every time.
    pub fn fixed(token: impl Into<String>) -> Self {
        let token = token.into();
        TokenSource::new(move || Some(token.clone()))
    }

    /// The token to use now.
    pub fn get(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str("TokenSource(..)")
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://HOST:PORT`.
    pub server: String,
    /// The graph.
    pub graph: String,
    /// The user to act as (local mode); `None`: the server names one.
    pub user: Option<String>,
    /// Where the bearer token comes from when the server authenticates.
    pub token: Option<TokenSource>,
    /// The codec.
    pub codec: Codec,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Give up reconnecting after this many attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    /// Attempts allowed before the first sync (`None`: keep trying), so a
    /// one-shot command fails fast when the server is not there.
    pub connect_attempts: Option<u32>,
    /// Time allowed for the first `graph.sync` after connecting.
    pub sync_timeout: Duration,
    /// A change refused `unavailable` or `rate_limited` (transient: the
    /// server does not remember those, 4.4) is sent again with its id after
    /// the server's `retryAfterMs` plus the backoff's jitter, up to this
    /// many times, before the refusal reaches the program.
    pub transient_retries: u32,
}

impl ClientConfig {
    /// Defaults for a graph on a server.
    pub fn new(server: impl Into<String>, graph: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            graph: graph.into(),
            user: None,
            token: None,
            codec: Codec::Binary,
            backoff: Backoff::default(),
            max_attempts: None,
            connect_attempts: None,
            sync_timeout: Duration::from_secs(30),
            transient_retries: 5,
        }
    }
}

/// The connection's state, for a program to show.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Opening the first connection.
    Connecting,
    /// Connected and in sync as of `seq`.
    Connected {
        /// The graph's `seq` at the last sync.
        seq: u64,
    },
    /// Connected, asking the server for a sync (after a gap in events).
    Resyncing,
    /// Lost; the next attempt is at `next_attempt`.
    Reconnecting {
        /// Attempts so far in a row.
        attempt: u32,
        /// When the next one starts.
        next_attempt: Instant,
        /// Why the connection was lost.
        reason: String,
    },
    /// Closed for good.
    Closed {
        /// Why.
        reason: String,
    },
}

/// Something a program may want to react to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sync was applied (the first one, or after a reconnect).
    Synced {
        /// Snapshot or delta.
        mode: SyncMode,
        /// The graph's `seq`.
        seq: u64,
    },
    /// A change by another session, already applied to the replica.
    Change(Envelope),
    /// Presence, cursor or selection of another session.
    Presence(Envelope),
    /// A `region.sync`, `region.enter` or `region.leave` (docs/protocol.md
    /// 7), already applied to the replica.
    Region(Envelope),
    /// A live query's results changed (or were just subscribed).
    Query(QueryResults),
    /// The server could not take one of this client's messages.
    Error(SystemError),
    /// Gonzai (protocol 9): a `gonzai.discover` (a change near this
    /// session's focus), a `chaos.trigger` that reached this session, or
    /// suggestions shared by another session.
    Gonzai(Envelope),
    /// The connection was lost; the client reconnects after `delay`. A
    /// frame from the server that this client cannot read (over its frame
    /// limit, or not decodable) ends up here with the reason, so it is
    /// seen instead of retried in silence.
    Reconnecting {
        /// Attempts so far in a row.
        attempt: u32,
        /// The wait before the next one.
        delay: Duration,
        /// Why the connection was lost.
        reason: String,
    },
}

/// The outcome of a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied as sent.
    Confirmed(UpdateConfirmed),
    /// Applied, merged with concurrent changes.
    Resolved(UpdateConflictResolved),
    /// Not applied.
    RolledBack(UpdateRollback),
}

/// Why the client could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The first connection failed for good (bad URL, refused).
    #[error(transparent)]
    Connect(#[from] TransportError),
    /// The client is closed.
    #[error("the client is closed: {0}")]
    Closed(String),
    /// The message is not something a client can send.
    #[error("`{0}` cannot be sent by a client this way")]
    NotSendable(&'static str),
    /// The server refused an ask (`system.error`).
    #[error("refused ({code}): {message}", code = .0.code.name(), message = .0.message)]
    Refused(SystemError),
}

/// Builds a mutation from the replica as it is when the client applies it.
type Build = Box<dyn FnOnce(&Replica) -> Body + Send>;

enum Command {
    Mutate {
        body: Body,
        reply: oneshot::Sender<Outcome>,
    },
    MutateWith {
        build: Build,
        reply: oneshot::Sender<Outcome>,
    },
    Send {
        body: Body,
    },
    /// A region or query subscription, kept and sent again after each
    /// reconnect.
    Subscribe {
        body: Body,
    },
    Ask {
        body: Body,
        reply: oneshot::Sender<Result<Envelope, SystemError>>,
    },
    Close,
}

/// A handle to a connected client. Cloning shares the connection.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<State>,
    replica: Arc<Mutex<Replica>>,
    identity: Arc<Mutex<(String, String)>>,
}

/// The stream of [`Event`]s of a client.
pub struct Events {
    events: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Client {
    /// Connects and waits for the first sync. Reconnects by itself later.
    ///
    /// # Errors
    /// The first connection failed in a way retrying cannot fix (bad URL,
    /// a 4xx refusal), or `max_attempts` ran out.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let (commands, inbox) = mpsc::channel(1024);
        let (events_tx, events) = mpsc::channel(4096);
        let (state_tx, state) = watch::channel(State::Connecting);
        let replica = Arc::new(Mutex::new(Replica::new()));
        let identity = Arc::new(Mutex::new((String::new(), String::new())));
        let (ready_tx, ready) = oneshot::channel();
        let worker = Worker {
            config,
            inbox,
            events: events_tx,
            state: state_tx,
            replica: replica.clone(),
            identity: identity.clone(),
            replies: HashMap::new(),
            asks: HashMap::new(),
            sent: HashMap::new(),
            next_id: 0,
            ready: Some(ready_tx),
            snapshot_next: false,
            subscriptions: Subscriptions::default(),
            retried: HashMap::new(),
            due: Vec::new(),
            tag: format!("{:016x}", rand::random::<u64>()),
        };
        tokio::spawn(worker.run());
        match ready.await {
            Ok(Ok(())) => Ok((
                Client {
                    commands,
                    state,
                    replica,
                    identity,
                },
                Events { events },
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Closed("the connection task ended".into())),
        }
    }

    /// Applies a mutation optimistically and sends it; resolves with its
    /// outcome (after a reconnect, if one happens in between).
    ///
    /// # Errors
    /// The client is closed, or `body` is not a mutation.
    pub async fn mutate(&self, body: Body) -> Result<Outcome, ClientError> {
        if !body.message_type().is_mutation() {
            return Err(ClientError::NotSendable(body.message_type().name()));
        }
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(Command::Mutate { body, reply })
            .await
            .map_err(|_| self.closed())?;
        outcome.await.map_err(|_| self.closed())
    }

    /// Like [`Client::mutate`], with the mutation built from the replica as
    /// it is at the moment the change is applied: the way to make a text
    /// operation, which must fit the text as this client sees it, while
    /// events keep arriving.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn mutate_with(
        &self,
        build: impl FnOnce(&Replica) -> Body + Send + 'static,
    ) -> Result<Outcome, ClientError> {
        let (reply, outcome) = oneshot::channel();
        let build = Box::new(build);
        self.commands
            .send(Command::MutateWith { build, reply })
            .await
            .map_err(|_| self.closed())?;
        outcome.await.map_err(|_| self.closed())
    }

    /// Creates a node.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn create_node(&self, node: Node) -> Result<Outcome, ClientError> {
        self.mutate(Body::NodeCreate(NodeCreate {
            base_seq: None,
            node,
            commit: None,
        }))
        .await
    }

    /// Sets fields of a node (`props` keys mapped to `None` are removed).
    ///
    /// # Errors
    /// The client is closed.
    pub async fn update_node(&self, id: &str, set: NodeSet) -> Result<Outcome, ClientError> {
        let update = NodeUpdate {
            id: id.to_owned(),
            set: Some(set),
            ..NodeUpdate::default()
        };
        self.mutate(Body::NodeUpdate(update)).await
    }

    /// Edits a node's text: `edit` gets the text as this client sees it at
    /// that moment and returns the operation to apply to it.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn edit_text(
        &self,
        id: &str,
        edit: impl FnOnce(&str) -> TextOp + Send + 'static,
    ) -> Result<Outcome, ClientError> {
        let id = id.to_owned();
        self.mutate_with(move |replica| {
            let text = replica
                .node(&id)
                .and_then(|n| n.content.as_deref())
                .unwrap_or("");
            let op = edit(text);
            Body::NodeUpdate(NodeUpdate {
                id,
                text: Some(TextEdits { content: Some(op) }),
                ..NodeUpdate::default()
            })
        })
        .await
    }

    /// Deletes a node and every edge that touches it.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn delete_node(&self, id: &str) -> Result<Outcome, ClientError> {
        self.mutate(Body::NodeDelete(NodeDelete {
            id: id.to_owned(),
            ..NodeDelete::default()
        }))
        .await
    }

    /// Creates an edge.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn create_edge(&self, edge: Edge) -> Result<Outcome, ClientError> {
        self.mutate(Body::EdgeCreate(EdgeCreate {
            base_seq: None,
            edge,
            commit: None,
        }))
        .await
    }

    /// Sets fields of the edge with this id.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn update_edge(&self, id: &str, set: EdgeSet) -> Result<Outcome, ClientError> {
        let update = EdgeUpdate {
            id: Some(id.to_owned()),
            set: Some(set),
            ..EdgeUpdate::default()
        };
        self.mutate(Body::EdgeUpdate(update)).await
    }

    /// Deletes the edge with this id.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn delete_edge(&self, id: &str) -> Result<Outcome, ClientError> {
        self.mutate(Body::EdgeDelete(EdgeDelete {
            id: Some(id.to_owned()),
            ..EdgeDelete::default()
        }))
        .await
    }

    /// Applies up to 1,000 mutations atomically, as one change.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Outcome, ClientError> {
        self.mutate(Body::BatchUpdate(BatchUpdate {
            base_seq: None,
            ops,
            commit: None,
        }))
        .await
    }

    /// Shares this client's presence.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn presence(&self, presence: UserPresence) -> Result<(), ClientError> {
        self.send(Body::UserPresence(presence)).await
    }

    /// Shares this client's cursor (the server relays at most 30 a second).
    ///
    /// # Errors
    /// The client is closed.
    pub async fn cursor(&self, x: f64, y: f64, node_id: Option<String>) -> Result<(), ClientError> {
        self.send(Body::CursorMove(CursorMove { x, y, node_id }))
            .await
    }

    /// Shares this client's selection.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn selection(
        &self,
        nodes: Vec<String>,
        edges: Vec<String>,
    ) -> Result<(), ClientError> {
        self.send(Body::SelectionChange(SelectionChange { nodes, edges }))
            .await
    }

    /// Sends presence, a cursor move or a selection (ephemeral; not
    /// resent after a reconnect).
    ///
    /// # Errors
    /// The client is closed, or `body` is not ephemeral.
    pub async fn send(&self, body: Body) -> Result<(), ClientError> {
        let ty = body.message_type();
        if !matches!(
            ty,
            MessageType::UserPresence | MessageType::CursorMove | MessageType::SelectionChange
        ) {
            return Err(ClientError::NotSendable(ty.name()));
        }
        self.commands
            .send(Command::Send { body })
            .await
            .map_err(|_| self.closed())
    }

    /// Subscribes a region (docs/protocol.md 7): the server answers with
    /// [`Event::Region`] `region.sync`, then enters and leaves. Kept, and
    /// sent again after each reconnect. Give up the region `"all"`
    /// ([`Client::unsubscribe_region`]) to see only your regions: the
    /// replica then holds only what they hold.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn subscribe_region(
        &self,
        region_id: impl Into<String>,
        filter: RegionFilter,
    ) -> Result<(), ClientError> {
        let body = Body::RegionSubscribe(RegionSubscribe {
            region_id: region_id.into(),
            filter,
        });
        self.subscribe(body).await
    }

    /// Gives up a region (`"all"` included).
    ///
    /// # Errors
    /// The client is closed.
    pub async fn unsubscribe_region(
        &self,
        region_id: impl Into<String>,
    ) -> Result<(), ClientError> {
        let body = Body::RegionUnsubscribe(RegionUnsubscribe {
            region_id: region_id.into(),
        });
        self.subscribe(body).await
    }

    /// Subscribes a live query: [`Event::Query`] at once and whenever its
    /// results change. Kept, and sent again after each reconnect.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn subscribe_query(
        &self,
        query_id: impl Into<String>,
        query: Query,
    ) -> Result<(), ClientError> {
        let body = Body::QuerySubscribe(QuerySubscribe {
            query_id: query_id.into(),
            query,
        });
        self.subscribe(body).await
    }

    /// Gives up a live query.
    ///
    /// # Errors
    /// The client is closed.
    pub async fn unsubscribe_query(&self, query_id: impl Into<String>) -> Result<(), ClientError> {
        let body = Body::QueryUnsubscribe(QueryUnsubscribe {
            query_id: query_id.into(),
        });
        self.subscribe(body).await
    }

    async fn subscribe(&self, body: Body) -> Result<(), ClientError> {
        self.commands
            .send(Command::Subscribe { body })
            .await
            .map_err(|_| self.closed())
    }

    /// Link suggestions for `for_node` (protocol 9): at most `limit` (1 to
    /// 100; the server's default, 10, when `None`), by confidence.
    ///
    /// # Errors
    /// The client is closed or the connection was lost before the answer
    /// (ask again), or the server refused the ask ([`ClientError::Refused`]:
    /// an unknown node, `limit` out of range, too many asks).
    pub async fn suggest(
        &self,
        for_node: &str,
        limit: Option<u32>,
    ) -> Result<Vec<Suggestion>, ClientError> {
        let (reply, answer) = oneshot::channel();
        let body = Body::GonzaiSuggestion(GonzaiSuggestion {
            for_node: Some(for_node.to_string()),
            limit,
            suggestions: None,
        });
        self.commands
            .send(Command::Ask { body, reply })
            .await
            .map_err(|_| self.closed())?;
        match answer.await.map_err(|_| self.closed())? {
            Ok(envelope) => match envelope.body {
                Body::GonzaiSuggestion(g) => Ok(g.suggestions.unwrap_or_default()),
                _ => Err(self.closed()),
            },
            Err(error) => Err(ClientError::Refused(error)),
        }
    }

    /// Starts chaos (protocol 9): it spreads to the sessions focused near
    /// this session's focus. `intensity` 0 to 1. Refusals (too soon, bad
    /// intensity) arrive as [`Event::Error`]; the sessions it reaches get
    /// [`Event::Gonzai`].
    ///
    /// # Errors
    /// The client is closed.
    pub async fn chaos(&self, intensity: Option<f64>) -> Result<(), ClientError> {
        let body = Body::ChaosTrigger(ChaosTrigger {
            intensity,
            initiator: None,
            message: None,
        });
        self.commands
            .send(Command::Send { body })
            .await
            .map_err(|_| self.closed())
    }

    /// The connection state, to watch.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// The local graph: server state plus this client's pending changes.
    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        // A panic while holding the lock cannot leave the replica half
        // changed in a way that matters more than losing it: recover.
        self.replica
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `userId` and `sessionId` the server gave this client.
    pub fn identity(&self) -> (String, String) {
        self.identity.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Closes the connection; pending outcomes resolve as closed.
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close).await;
    }

    fn closed(&self) -> ClientError {
        match &*self.state.borrow() {
            State::Closed { reason } => ClientError::Closed(reason.clone()),
            _ => ClientError::Closed("the connection task ended".into()),
        }
    }
}

/// The background task.
struct Worker {
    config: ClientConfig,
    inbox: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<State>,
    replica: Arc<Mutex<Replica>>,
    identity: Arc<Mutex<(String, String)>>,
    replies: HashMap<String, oneshot::Sender<Outcome>>,
    /// Asks (`gonzai.suggestion`) waiting for their answer, by id; dropped
    /// (the program sees the client closed) when the connection is lost.
    asks: HashMap<String, oneshot::Sender<Result<Envelope, SystemError>>>,
    /// Mutations sent whose outcome the program still waits for, as last
    /// sent: a sync may settle one in the replica (its own event replayed)
    /// without an outcome; resending it gets the original outcome.
    sent: HashMap<String, Envelope>,
    next_id: u64,
    /// Answers `Client::connect` once the first sync is in (or it failed).
    ready: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// Connect without a resume point: the last delta did not apply.
    snapshot_next: bool,
    /// Random per client, so mutation ids are unique per sender even
    /// across restarts and among clients of one user.
    tag: String,
    /// The program's region and query subscriptions, in order, to send
    /// again on each new connection (a new session starts with the region
    /// `"all"` only).
    subscriptions: Subscriptions,
    /// Transient refusals retried, by mutation id: how many times so far.
    retried: HashMap<String, u32>,
    /// Mutations to send again once their time comes (`transient_retries`).
    due: Vec<(Instant, String)>,
}

/// How a connection ended.
enum Lost {
    /// Reconnect, after at least this long if the server said so.
    Retry {
        reason: String,
        server_asked: Option<Duration>,
    },
    /// The program closed the client.
    Closed,
}

impl Worker {
    async fn run(mut self) {
        let mut attempt = 0u32;
        let reason = loop {
            let query = self.query();
            let token = self.config.token.as_ref().and_then(TokenSource::get);
            let connected = Transport::connect(
                &self.config.server,
                &self.config.graph,
                &query,
                self.config.codec,
                token.as_deref(),
            )
            .await;
            let lost = match connected {
                Ok(transport) => {
                    let lost = self.serve(transport, &mut attempt).await;
                    // Answers to asks on that connection will not come.
                    self.asks.clear();
                    let Lost::Retry {
                        reason,
                        server_asked,
                    } = lost
                    else {
                        break "closed by the program".to_owned();
                    };
                    (reason, server_asked)
                }
                Err(e)
                    if self.ready.is_some()
                        && (!e.is_retryable()
                            || self
                                .config
                                .connect_attempts
                                .is_some_and(|max| attempt + 1 >= max)) =>
                {
                    let reason = e.to_string();
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(ClientError::Connect(e)));
                    }
                    break reason;
                }
                Err(e) => {
                    let asked = match &e {
                        TransportError::Refused { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    (e.to_string(), asked)
                }
            };
            let (reason, server_asked) = lost;
            if self.config.max_attempts.is_some_and(|max| attempt >= max) {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(ClientError::Closed(reason.clone())));
                }
                break reason;
            }
            let delay = self.config.backoff.delay(attempt, server_asked);
            attempt += 1;
            let next_attempt = Instant::now() + delay;
            // Told without waiting: a program that reads no events must not
            // stall the reconnect.
            let _ = self.events.try_send(Event::Reconnecting {
                attempt,
                delay,
                reason: reason.clone(),
            });
            self.state.send_replace(State::Reconnecting {
                attempt,
                next_attempt,
                reason,
            });
            // Commands keep coming while we wait: mutations apply locally
            // and are sent after the next sync.
            let sleep = tokio::time::sleep_until(next_attempt);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    command = self.inbox.recv() => match command {
                        None | Some(Command::Close) => {
                            self.finish("closed by the program");
                            return;
                        }
                        Some(Command::Mutate { body, reply }) => { self.local(body, reply); }
                        Some(Command::MutateWith { build, reply }) => {
                            let body = build(&self.lock());
                            self.local(body, reply);
                        }
                        Some(Command::Send { .. } | Command::Ask { .. }) => {}
                        Some(Command::Subscribe { body }) => {
                            self.subscriptions.note(&body);
                            self.lock().set_partial(self.subscriptions.partial());
                        }
                    },
                }
            }
        };
        self.finish(&reason);
    }

    /// The query string: user and resume point.
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(user) = &self.config.user {
            query.append_pair("user", user);
        }
        let replica = self.lock();
        if let (Some(epoch), false) = (replica.epoch(), self.snapshot_next) {
            query.append_pair("since", &replica.server_seq().to_string());
            query.append_pair("epoch", epoch);
        }
        drop(replica);
        query.finish()
    }

    fn lock(&self) -> MutexGuard<'_, Replica> {
        self.replica
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a mutation locally; returns the envelope to send now, if any.
    fn local(&mut self, body: Body, reply: oneshot::Sender<Outcome>) -> Option<Envelope> {
        self.next_id += 1;
        let id = format!("{}-{}", self.tag, self.next_id);
        let result = self.lock().local_mutation(&id, body);
        match result {
            Ok(send) => {
                self.replies.insert(id, reply);
                send
            }
            Err(e) => {
                let _ = reply.send(Outcome::RolledBack(UpdateRollback {
                    reference: id,
                    reason: RollbackReason::Invalid,
                    message: e.to_string(),
                    current: None,
                    index: None,
                    retry_after_ms: None,
                }));
                None
            }
        }
    }

    /// Serves one connection until it is lost.
    async fn serve(&mut self, mut transport: Transport, attempt: &mut u32) -> Lost {
        let mut received = Received::default();
        let first = read_sync(&mut transport, &mut received);
        let sync = match tokio::time::timeout(self.config.sync_timeout, first).await {
            Ok(Ok(sync)) => sync,
            Ok(Err(reason)) => {
                return Lost::Retry {
                    reason,
                    server_asked: None,
                }
            }
            Err(_) => {
                return Lost::Retry {
                    reason: "no graph.sync in time".into(),
                    server_asked: None,
                }
            }
        };
        let heartbeat = Duration::from_millis(sync.1.heartbeat_ms.unwrap_or(25_000));
        if let Ok(mut identity) = self.identity.lock() {
            *identity = sync.0.clone();
        }
        self.lock().set_user(&sync.0 .0);
        if let Err(lost) = self.take_sync(&mut transport, &mut received, &sync.1).await {
            return lost;
        }
        self.snapshot_next = false;
        // Everything sent but not settled goes again, and so does every
        // change the sync settled without telling its outcome: the server
        // answers a repeated id with its original outcome.
        let mut resend = self.lock().pending();
        let again: std::collections::HashSet<&str> = resend.iter().map(|e| e.id.as_str()).collect();
        let orphans: Vec<Envelope> = self
            .sent
            .values()
            .filter(|e| !again.contains(e.id.as_str()))
            .cloned()
            .collect();
        resend.extend(orphans);
        // What waited for a retry goes now, with the rest.
        self.due.clear();
        self.remember(&resend);
        resend.extend(self.subscriptions.envelopes());
        if !resend.is_empty() {
            if let Err(e) = transport.send(&resend).await {
                return Lost::Retry {
                    reason: e.to_string(),
                    server_asked: None,
                };
            }
        }
        *attempt = 0;
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        let mut server_asked = None;
        let silence = heartbeat * 2 + Duration::from_secs(5);
        // The server closes a session it has not heard from in two
        // heartbeats: say something at least once per heartbeat.
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                command = self.inbox.recv() => {
                    let send = match command {
                        None | Some(Command::Close) => {
                            transport.close().await;
                            return Lost::Closed;
                        }
                        Some(Command::Mutate { body, reply }) => self.local(body, reply).into_iter().collect(),
                        Some(Command::MutateWith { build, reply }) => {
                            let body = build(&self.lock());
                            self.local(body, reply).into_iter().collect()
                        }
                        Some(Command::Send { body }) => vec![Envelope::new(format!("e-{}", rand::random::<u32>()), body)],
                        Some(Command::Ask { body, reply }) => {
                            let id = format!("a-{}", rand::random::<u32>());
                            self.asks.insert(id.clone(), reply);
                            vec![Envelope::new(id, body)]
                        }
                        Some(Command::Subscribe { body }) => {
                            self.subscriptions.note(&body);
                            self.lock().set_partial(self.subscriptions.partial());
                            vec![Envelope::new(format!("s-{}", rand::random::<u32>()), body)]
                        }
                    };
                    self.remember(&send);
                    if !send.is_empty() {
                        if let Err(e) = transport.send(&send).await {
                            return Lost::Retry { reason: e.to_string(), server_asked };
                        }
                        last_sent = Instant::now();
                    }
                }
                next = tokio::time::timeout(silence, received.next(&mut transport)) => {
                    let envelope = match next {
                        Err(_) => return Lost::Retry { reason: "the server stopped answering".into(), server_asked },
                        Ok(Err(e)) => return Lost::Retry { reason: e.to_string(), server_asked },
                        Ok(Ok(None)) => return Lost::Retry { reason: "the server closed the connection".into(), server_asked },
                        Ok(Ok(Some(envelope))) => envelope,
                    };
                    if let Body::SystemReconnect(r) = &envelope.body {
                        server_asked = Some(Duration::from_millis(r.retry_after_ms));
                    }
                    let mut send = Vec::new();
                    if self.take(envelope, &mut send).await.is_err() {
                        // Out of step with the server: ask for a sync from where we are.
                        self.state.send_replace(State::Resyncing);
                        send.push(self.resync_request());
                    }
                    self.remember(&send);
                    if !send.is_empty() {
                        if let Err(e) = transport.send(&send).await {
                            return Lost::Retry { reason: e.to_string(), server_asked };
                        }
                        last_sent = Instant::now();
                    }
                }
                () = tokio::time::sleep_until(self.due.iter().map(|(at, _)| *at).min().unwrap_or(last_sent)), if !self.due.is_empty() => {
                    let now = Instant::now();
                    let (ready, later): (Vec<_>, Vec<_>) = self.due.drain(..).partition(|(at, _)| *at <= now);
                    self.due = later;
                    let send: Vec<Envelope> = ready.iter().filter_map(|(_, id)| self.sent.get(id).cloned()).collect();
                    if !send.is_empty() {
                        if let Err(e) = transport.send(&send).await {
                            return Lost::Retry { reason: e.to_string(), server_asked };
                        }
                        last_sent = Instant::now();
                    }
                }
                () = tokio::time::sleep_until(last_sent + heartbeat / 2) => {
                    let beat = Envelope::new("hb", Body::SystemHeartbeat(SystemHeartbeat::default()));
                    if let Err(e) = transport.send(&[beat]).await {
                        return Lost::Retry { reason: e.to_string(), server_asked };
                    }
                    last_sent = Instant::now();
                }
            }
        }
    }

    /// Applies one message from the server; collects what to send.
    async fn take(
        &mut self,
        envelope: Envelope,
        send: &mut Vec<Envelope>,
    ) -> Result<(), ReplicaError> {
        let ty = envelope.body.message_type();
        match &envelope.body {
            Body::GraphSync(sync) => {
                let released = self.lock().apply_sync(sync)?;
                send.extend(released);
                if sync.is_last_chunk() {
                    let seq = self.lock().server_seq();
                    self.state.send_replace(State::Connected { seq });
                    let mode = sync.mode.unwrap_or(SyncMode::Snapshot);
                    let _ = self.events.send(Event::Synced { mode, seq }).await;
                }
            }
            Body::UpdateRollback(r) if self.retry_later(r) => {}
            Body::UpdateConfirmed(_)
            | Body::UpdateConflictResolved(_)
            | Body::UpdateRollback(_) => {
                let released = self.lock().settle(&envelope)?;
                send.extend(released);
                self.resolve(&envelope);
                self.resolve_dropped();
            }
            _ if ty.is_mutation() => {
                let applied = self.lock().apply_event(&envelope);
                let released = match applied {
                    Ok(released) => released,
                    // A partial replica cannot always apply what its
                    // regions let through (an edge to a node it does not
                    // hold, an event of the whole graph before its
                    // subscriptions are sent again): it goes on.
                    Err(_) if self.lock().is_partial() => Vec::new(),
                    Err(e) => return Err(e),
                };
                send.extend(released);
                self.resolve_dropped();
                let seq = self.lock().server_seq();
                self.state.send_if_modified(|s| match s {
                    State::Connected { seq: old } if *old != seq => {
                        *old = seq;
                        true
                    }
                    _ => false,
                });
                let _ = self.events.send(Event::Change(envelope)).await;
            }
            Body::UserPresence(_) | Body::CursorMove(_) | Body::SelectionChange(_) => {
                let _ = self.events.send(Event::Presence(envelope)).await;
            }
            Body::SystemError(error) => {
                let ask = error.reference.as_ref().and_then(|r| self.asks.remove(r));
                match ask {
                    Some(reply) => {
                        let _ = reply.send(Err(error.clone()));
                    }
                    None => {
                        let _ = self.events.send(Event::Error(error.clone())).await;
                    }
                }
            }
            Body::GonzaiSuggestion(_) | Body::GonzaiDiscover(_) | Body::ChaosTrigger(_) => {
                let ask = envelope
                    .id
                    .strip_prefix("g-")
                    .and_then(|id| self.asks.remove(id));
                match ask {
                    Some(reply) => {
                        let _ = reply.send(Ok(envelope));
                    }
                    None => {
                        let _ = self.events.send(Event::Gonzai(envelope)).await;
                    }
                }
            }
            Body::RegionSync(_) | Body::RegionEnter(_) | Body::RegionLeave(_) => {
                self.lock().apply_region(&envelope);
                let _ = self.events.send(Event::Region(envelope)).await;
            }
            Body::QueryResults(results) => {
                let _ = self.events.send(Event::Query(results.clone())).await;
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies the first sync's parts.
    async fn take_sync(
        &mut self,
        transport: &mut Transport,
        received: &mut Received,
        first: &GraphSync,
    ) -> Result<(), Lost> {
        let mut send = Vec::new();
        let mut part = Envelope::new("sync", Body::GraphSync(first.clone()));
        let mut later = Vec::new();
        loop {
            let last = matches!(&part.body, Body::GraphSync(s) if s.is_last_chunk());
            if let Err(e) = self.take(part, &mut send).await {
                // A delta that does not fit: start over from a snapshot.
                let reason = format!("sync did not apply ({e}); taking a snapshot");
                self.snapshot_next = true;
                return Err(Lost::Retry {
                    reason,
                    server_asked: None,
                });
            }
            if last {
                break;
            }
            part = loop {
                match received.next(transport).await {
                    Ok(Some(e)) if matches!(e.body, Body::GraphSync(_)) => break e,
                    // Taken once the sync is complete, in order.
                    Ok(Some(e)) => later.push(e),
                    Ok(None) => {
                        return Err(Lost::Retry {
                            reason: "closed during sync".into(),
                            server_asked: None,
                        })
                    }
                    Err(e) => {
                        return Err(Lost::Retry {
                            reason: e.to_string(),
                            server_asked: None,
                        })
                    }
                }
            };
        }
        for e in later.into_iter().rev() {
            received.0.push_front(e);
        }
        self.remember(&send);
        if !send.is_empty() {
            transport.send(&send).await.map_err(|e| Lost::Retry {
                reason: e.to_string(),
                server_asked: None,
            })?;
        }
        Ok(())
    }

    /// Keeps the mutations among `sent` whose outcome is still awaited.
    fn remember(&mut self, sent: &[Envelope]) {
        for envelope in sent {
            if self.replies.contains_key(&envelope.id) {
                self.sent.insert(envelope.id.clone(), envelope.clone());
            }
        }
    }

    fn resync_request(&self) -> Envelope {
        let replica = self.lock();
        Envelope::new(
            format!("sync-{}", rand::random::<u32>()),
            Body::GraphSync(GraphSync {
                since: replica.epoch().map(|_| replica.server_seq()),
                epoch: replica.epoch().map(str::to_owned),
                ..GraphSync::default()
            }),
        )
    }

    fn resolve(&mut self, outcome: &Envelope) {
        let (reference, outcome) = match &outcome.body {
            Body::UpdateConfirmed(c) => (&c.reference, Outcome::Confirmed(c.clone())),
            Body::UpdateConflictResolved(c) => (&c.reference, Outcome::Resolved(c.clone())),
            Body::UpdateRollback(r) => (&r.reference, Outcome::RolledBack(r.clone())),
            _ => return,
        };
        self.sent.remove(reference);
        self.retried.remove(reference);
        if let Some(reply) = self.replies.remove(reference) {
            let _ = reply.send(outcome);
        }
    }

    /// Whether a refusal is transient and the change goes again later
    /// (`ClientConfig::transient_retries`); it then stays pending.
    fn retry_later(&mut self, r: &UpdateRollback) -> bool {
        if !matches!(
            r.reason,
            RollbackReason::Unavailable | RollbackReason::RateLimited
        ) || !self.sent.contains_key(&r.reference)
        {
            return false;
        }
        let tries = self.retried.entry(r.reference.clone()).or_insert(0);
        if *tries >= self.config.transient_retries {
            return false;
        }
        let asked = r.retry_after_ms.map(Duration::from_millis);
        let delay = self.config.backoff.delay(*tries, asked);
        *tries += 1;
        self.due.push((Instant::now() + delay, r.reference.clone()));
        true
    }

    /// Changes the replica dropped unsent resolve as rolled back.
    fn resolve_dropped(&mut self) {
        let dropped = self.lock().take_dropped();
        for id in dropped {
            self.sent.remove(&id);
            if let Some(reply) = self.replies.remove(&id) {
                let _ = reply.send(Outcome::RolledBack(UpdateRollback {
                    reference: id,
                    reason: RollbackReason::Deleted,
                    message: "the text this edit was made on was deleted or replaced before it could be sent".into(),
                    current: None,
                    index: None,
                    retry_after_ms: None,
                }));
            }
        }
    }

    fn finish(&mut self, reason: &str) {
        self.state.send_replace(State::Closed {
            reason: reason.to_owned(),
        });
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ClientError::Closed(reason.to_owned())));
        }
        self.replies.clear();
        self.asks.clear();
    }
}

/// What one connection has received and not yet taken: a frame may hold
/// several envelopes (a JSON array, or a sync chunk followed by events), and
/// each must be taken in order.
#[derive(Default)]
struct Received(std::collections::VecDeque<Envelope>);

impl Received {
    /// The next envelope, from the last frame or a new one; `Ok(None)` when
    /// the connection closed.
    async fn next(
        &mut self,
        transport: &mut Transport,
    ) -> Result<Option<Envelope>, TransportError> {
        loop {
            if let Some(envelope) = self.0.pop_front() {
                return Ok(Some(envelope));
            }
            match transport.recv().await? {
                Some(envelopes) => self.0.extend(envelopes),
                None => return Ok(None),
            }
        }
    }
}

/// Waits for the first `graph.sync`: the identity it names and the sync.
async fn read_sync(
    transport: &mut Transport,
    received: &mut Received,
) -> Result<((String, String), GraphSync), String> {
    loop {
        match received.next(transport).await {
            Ok(Some(envelope)) => {
                if let Body::GraphSync(sync) = envelope.body {
                    let identity = (
                        envelope.user_id.unwrap_or_default(),
                        envelope.session_id.unwrap_or_default(),
                    );
                    return Ok((identity, sync));
                }
            }
            Ok(None) => return Err("closed before graph.sync".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The program's subscriptions, as the worker keeps them to send again.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Each region and query by `r:{id}` or `q:{id}`, in the order taken;
    /// the region `"all"` given up is kept as its unsubscribe.
    held: Vec<(String, Body)>,
}

impl Subscriptions {
    /// Notes a subscribe or unsubscribe.
    fn note(&mut self, body: &Body) {
        let (key, keep) = match body {
            Body::RegionSubscribe(m) => (format!("r:{}", m.region_id), true),
            Body::RegionUnsubscribe(m) => (format!("r:{}", m.region_id), m.region_id == "all"),
            Body::QuerySubscribe(m) => (format!("q:{}", m.query_id), true),
            Body::QueryUnsubscribe(m) => (format!("q:{}", m.query_id), false),
            _ => return,
        };
        self.held.retain(|(k, _)| *k != key);
        if keep {
            self.held.push((key, body.clone()));
        }
    }

    /// Whether the session's regions cut the graph: it gave up `"all"`.
    fn partial(&self) -> bool {
        self.held
            .iter()
            .any(|(_, b)| matches!(b, Body::RegionUnsubscribe(_)))
    }

    /// The messages that make a new session's subscriptions these.
    fn envelopes(&self) -> Vec<Envelope> {
        self.held
            .iter()
            .enumerate()
            .map(|(i, (_, body))| Envelope::new(format!("s-again-{i}"), body.clone()))
            .collect()
    }
}
