//! Starting and stopping the whole server: listeners, shards, the hub and
//! persistence, and the shutdown sequence (docs/architecture.md, "Shutdown").
//!
//! Threads: one per shard (pinned, single-threaded tokio runtime), one hub
//! (graph owners), one git persistence thread, and in handoff mode one
//! acceptor. Shutdown is one cancellation token shared by every task: the
//! acceptors stop, every session is sent `system.reconnect` and a 1001
//! close, the shards wait for their sessions (bounded), then the hub hands
//! what is ordered to persistence and waits for the last commit.
//!
//! A connection, from its first byte: its place under the caps, then (with
//! TLS on) its TLS handshake, then its HTTP request head, all within
//! `handshake_timeout_ms`; then a plain answer or a WebSocket session.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, Authenticator, Credentials, OriginPolicy};
use crate::backend::{Listener, Tcp};
use crate::config::{AcceptMode, Config, IoBackend};
use crate::fanout::{Member, ShardLink};
use crate::http::{self, Request, Response};
use crate::hub::{self, Hub, HubCmd, SnapshotReply};
use crate::metrics::Metrics;
use crate::persist::{PersistConfig, Persister};
use crate::quota::{self, Quotas, Slot};
use crate::session::{self, SessionCtx};
use crate::shard::{self, Shard, ShardState};
use crate::tls::{Stream, Tls, TlsError};
use crate::web;
use gitmind_owner::OwnerConfig;
use gitmind_schema::Codec;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable; the message says how to fix it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be opened or loaded.
    #[error("cannot open the data directory: {0}")]
    Persist(#[from] crate::persist::OpenError),
    /// NATS or JetStream could not be had (`--cluster`).
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::cluster::StartError),
    /// A thread or runtime could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// `--io uring`, and this kernel will not set up an io_uring (too old,
    /// or io_uring disabled: `kernel.io_uring_disabled`, seccomp). There is
    /// no silent fallback: start with `--io epoll`.
    #[error("--io uring: this system refuses io_uring ({0}); start with --io epoll")]
    Uring(std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load the TLS certificate: {0}")]
    Tls(#[from] TlsError),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    hub_thread: Option<JoinHandle<()>>,
    hub: crossbeam::channel::Sender<HubCmd>,
    metrics: Arc<Metrics>,
    /// The certificate in use, when TLS is on.
    tls: Option<Arc<Tls>>,
}

/// What every shard shares.
struct Shared {
    config: Arc<Config>,
    hub: crossbeam::channel::Sender<HubCmd>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    auth: Arc<dyn Authenticator>,
    origins: OriginPolicy,
    /// One permit per connection the server may hold (`max_connections`).
    capacity: Arc<Semaphore>,
    /// Rates and connection counts per user and per address.
    quotas: Arc<Quotas>,
    sessions: Arc<AtomicU64>,
    persist_stats: Arc<crate::persist::PersistStats>,
    /// The TLS acceptor, when TLS is on: then the port speaks only TLS.
    tls: Option<Arc<Tls>>,
}

impl Server {
    /// Opens the data directory (graphs are read from it when first asked
    /// for), binds, and starts serving.
    ///
    /// # Errors
    /// [`StartError`] says what could not be done.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        #[cfg(all(feature = "uring", target_os = "linux"))]
        if config.io == IoBackend::Uring {
            crate::uring::probe().map_err(StartError::Uring)?;
        }
        let auth = crate::auth::authenticator(&config.auth).map_err(StartError::Config)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key)?)),
            _ => None,
        };
        let config = Arc::new(config);
        let shards = config.shard_count();
        let metrics = Arc::new(Metrics::new(shards));
        let (persist_tx, persist_rx) = crossbeam::channel::unbounded();
        let (persister, stored) = Persister::open(
            PersistConfig {
                fsync: config.fsync,
                replay_changes: config.replay_changes,
                replay_ms: config.replay_ms,
                // Several processes share the repository in a cluster: none
                // may delete packs another may be reading
                // (docs/scale-out.md).
                max_packs: if config.cluster.is_some() {
                    usize::MAX
                } else {
                    PersistConfig::new(config.data_dir.clone()).max_packs
                },
                shared: config.cluster.is_some(),
                ..PersistConfig::new(config.data_dir.clone())
            },
            persist_tx,
        )?;
        let persist_stats = persister.stats();
        let listeners = bind(
            &config,
            if config.accept == AcceptMode::Reuseport {
                shards
            } else {
                1
            },
        )?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.socket_addr(),
                source,
            })?;

        let (hub_tx, hub_rx) = hub::channel(1 << 16);
        let links: Vec<ShardLink> = (0..shards).map(|_| ShardLink::new()).collect();
        let owner_config = owner_config(&config);
        let hub = Hub::new(
            stored,
            links.clone(),
            persister,
            owner_config,
            metrics.clone(),
            &config,
        );
        let hub = match (&config.cluster, &config.node) {
            (Some(url), Some(node)) => {
                let (link, events) = crate::cluster::Cluster::start(url, node, metrics.clone())?;
                metrics
                    .cluster
                    .enabled
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(url, node, "joined the cluster");
                hub.with_cluster(link, events)
            }
            _ => hub,
        };
        let hub_thread = std::thread::Builder::new()
            .name("gitmind-hub".into())
            .spawn(move || hub.run(hub_rx, persist_rx))
            .map_err(StartError::Thread)?;

        let shared = Arc::new(Shared {
            config: config.clone(),
            hub: hub_tx.clone(),
            metrics: metrics.clone(),
            shutdown: CancellationToken::new(),
            draining: Arc::new(AtomicBool::new(false)),
            auth,
            origins: OriginPolicy::new(&config.auth, addr),
            capacity: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            quotas: Arc::new(Quotas::new(&config)),
            sessions: Arc::new(AtomicU64::new(0)),
            persist_stats,
            tls: tls.clone(),
        });
        crate::trim::spawn(metrics.clone(), shared.shutdown.clone()).map_err(StartError::Thread)?;
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut threads = Vec::new();
        let mut handoff = Vec::new();
        let mut listeners = listeners.into_iter();
        for (index, link) in links.into_iter().enumerate() {
            let source = match config.accept {
                AcceptMode::Reuseport => Source::Listener(listeners.next()),
                AcceptMode::Handoff => {
                    let (tx, rx) = tokio::sync::mpsc::channel(1024);
                    handoff.push(tx);
                    Source::Handoff(rx)
                }
            };
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gitmind-shard-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    run_shard(index, link, source, &shared);
                })
                .map_err(StartError::Thread)?;
            threads.push(thread);
        }
        if config.accept == AcceptMode::Handoff {
            let listener = listeners.next();
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name("gitmind-accept".into())
                .spawn(move || run_acceptor(listener, handoff, &shared))
                .map_err(StartError::Thread)?;
            threads.push(thread);
        }
        tracing::info!(%addr, shards, accept = ?config.accept, io = ?config.io, tls = tls.is_some(), data_dir = %config.data_dir.display(), "serving");
        Ok(Server {
            addr,
            shutdown: shared.shutdown.clone(),
            draining: shared.draining.clone(),
            threads,
            hub_thread: Some(hub_thread),
            hub: hub_tx,
            metrics,
            tls,
        })
    }

    /// The address the server listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the TLS certificate and key files again (what SIGHUP does):
    /// new connections get the new certificate, open sessions keep theirs.
    /// If the files are not usable, the error is logged and the certificate
    /// in use stays. Does nothing when TLS is off.
    ///
    /// # Errors
    /// [`TlsError`]: the files were not usable; nothing changed.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let Some(tls) = &self.tls else {
            tracing::info!("TLS is off: no certificate to reload");
            return Ok(());
        };
        let result = tls.reload();
        if result.is_err() {
            self.metrics.tls_reload_failures.fetch_add(1, Relaxed);
        }
        result
    }

    /// Stops the server: no new connections, every session told to
    /// reconnect and closed with 1001, everything ordered committed. Returns
    /// when all threads have ended (bounded by the shutdown timeout).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.draining.store(true, Relaxed);
        self.shutdown.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = self.hub.send(HubCmd::Shutdown);
        if let Some(hub) = self.hub_thread.take() {
            let _ = hub.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The owner settings from the server configuration: the protocol's edge
/// types plus the configured ones.
fn owner_config(config: &Config) -> OwnerConfig {
    let mut owner = OwnerConfig::default();
    owner
        .edge_types
        .extend(config.extra_edge_types.iter().cloned());
    OwnerConfig {
        replay_changes: config.replay_changes,
        replay_ms: config.replay_ms,
        max_batch_ops: config.max_envelopes,
        max_event_bytes: config.max_frame_bytes,
        hash_seed: rand::random(),
        ..owner
    }
}

/// Binds `count` listening sockets on the configured address (several only
/// with SO_REUSEPORT), with a backlog large enough for connect bursts.
fn bind(config: &Config, count: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let mut addr = config.socket_addr();
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let bind_error = |source| StartError::Bind { addr, source };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(bind_error)?;
        socket.set_reuse_address(true).map_err(bind_error)?;
        if count > 1 {
            socket.set_reuse_port(true).map_err(bind_error)?;
        }
        socket.set_nonblocking(true).map_err(bind_error)?;
        socket.bind(&addr.into()).map_err(bind_error)?;
        socket
            .listen(i32::try_from(config.backlog).unwrap_or(i32::MAX))
            .map_err(bind_error)?;
        let listener: std::net::TcpListener = socket.into();
        // Later sockets share the port the first one got (port 0).
        addr = listener.local_addr().map_err(bind_error)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Where a shard's connections come from.
enum Source {
    /// Its own SO_REUSEPORT socket.
    Listener(Option<std::net::TcpListener>),
    /// The acceptor thread.
    Handoff(tokio::sync::mpsc::Receiver<std::net::TcpStream>),
}

/// A shard thread's body: its runtime, on the configured backend, serving
/// until shutdown.
fn run_shard(index: usize, link: ShardLink, source: Source, shared: &Arc<Shared>) {
    // TLS connections stay on epoll (server::uring).
    let uring = shared.config.io == IoBackend::Uring && shared.tls.is_none();
    let serve = serve_shard(index, link, source, uring, shared);
    #[cfg(all(feature = "uring", target_os = "linux"))]
    if shared.config.io == IoBackend::Uring {
        match crate::uring::runtime() {
            Ok(runtime) => runtime.block_on(serve),
            Err(e) => {
                tracing::error!(error = %e, "shard {index} could not start its io_uring runtime")
            }
        }
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return tracing::error!(error = %e, "shard {index} could not start its runtime"),
    };
    tokio::task::LocalSet::new().block_on(&runtime, serve);
}

/// A shard's work, on a current-thread runtime with a `LocalSet`: its
/// dispatcher, and its connections (through io_uring when `uring`) until
/// shutdown, then their end.
async fn serve_shard(
    index: usize,
    link: ShardLink,
    source: Source,
    uring: bool,
    shared: &Arc<Shared>,
) {
    let shard = ShardState::new(index, shared.metrics.clone(), shared.config.limits());
    tokio::task::spawn_local(shard::dispatch_loop(shard.clone(), link));
    let tracker = TaskTracker::new();
    let token = shared.shutdown.clone();
    match source {
        Source::Listener(listener) => {
            let Some(listener) = listener.and_then(|l| Listener::new(l, uring).ok()) else {
                return;
            };
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(tcp) => {
                            tracker.spawn_local(connection(tcp, index, shard.clone(), shared.clone()));
                        }
                        Err(e) => accept_error(&e).await,
                    },
                }
            }
        }
        Source::Handoff(mut rx) => loop {
            tokio::select! {
                () = token.cancelled() => break,
                stream = rx.recv() => {
                    let Some(stream) = stream else { break };
                    if let Ok(tcp) = Tcp::adopt(stream, uring) {
                        tracker.spawn_local(connection(tcp, index, shard.clone(), shared.clone()));
                    }
                }
            }
        },
    }
    // Sessions see the shutdown when they wake; a session registered
    // after this sees it before it first waits.
    shard.borrow().wake_all();
    tracker.close();
    let grace = Duration::from_millis(shared.config.shutdown_timeout_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            shard = index,
            "sessions still open after the shutdown timeout; dropping them"
        );
    }
}

/// The acceptor thread (handoff mode): accepts and hands each connection to
/// the shard with the fewest sessions.
fn run_acceptor(
    listener: Option<std::net::TcpListener>,
    shards: Vec<tokio::sync::mpsc::Sender<std::net::TcpStream>>,
    shared: &Arc<Shared>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let Some(listener) = listener.and_then(|l| TcpListener::from_std(l).ok()) else {
            return;
        };
        loop {
            tokio::select! {
                () = shared.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let index = (0..shards.len())
                            .min_by_key(|i| shared.metrics.shards[*i].connections.load(Relaxed))
                            .unwrap_or(0);
                        let Ok(stream) = stream.into_std() else { continue };
                        if shards[index].send(stream).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => accept_error(&e).await,
                },
            }
        }
    });
}

/// Out of file descriptors or a similar failure: log, wait a little, go on.
async fn accept_error(error: &std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// One connection, from its first byte: HTTP request or WebSocket session.
async fn connection(tcp: Tcp, shard_index: usize, shard: Shard, shared: Arc<Shared>) {
    // The TLS handshake and the request head share one deadline.
    let deadline = Instant::now() + Duration::from_millis(shared.config.handshake_timeout_ms);
    // Its place is taken before its first byte: a connection still in its
    // handshake counts toward the caps, so slow handshakes cannot pile up.
    let admission = match admit(&tcp, &shared) {
        Ok(admission) => admission,
        Err(response) => return refusal(tcp, &shared, response).await,
    };
    // In a block: what the opening returned is not kept beside the session.
    let (serving, _open) = {
        let Some(accepted) = opening(tcp, shard_index, &shared, deadline).await else {
            return;
        };
        let open = (
            admission,
            accepted.session.slot,
            shared.metrics.session_opened(shard_index),
        );
        let ctx = SessionCtx {
            config: shared.config.clone(),
            shard: Rc::clone(&shard),
            hub: shared.hub.clone(),
            metrics: shared.metrics.clone(),
            quotas: shared.quotas.clone(),
            shutdown: shared.shutdown.clone(),
        };
        let Admitted {
            member,
            access,
            since,
            ..
        } = accepted.session;
        (session_task(accepted.ws, member, access, since, ctx), open)
    };
    if let Some(serving) = serving {
        serving.await;
    }
}

/// The session's future, boxed and built outside [`connection`]'s: the
/// connection's future then holds a pointer, not a second copy of what
/// the session starts from (and the session's own future holds a pointer
/// to its state, [`session::Running`]).
fn session_task(
    ws: WebSocketStream<Stream>,
    member: Member,
    access: Access,
    since: Option<(u64, String)>,
    ctx: SessionCtx,
) -> Option<Pin<Box<impl Future<Output = ()>>>> {
    session::start(ws, member, access, since, ctx).map(|running| Box::pin(session::run(running)))
}

/// A connection refused before its handshake: its request is read first
/// (closing on unread bytes would reset the connection and lose the
/// answer), then answered with `response`.
///
/// Boxed, and built outside [`connection`]'s future: that future then
/// holds a pointer to this state, not the state itself (a read chunk,
/// TLS's handshake), for the whole life of every connection.
fn refusal(
    tcp: Tcp,
    shared: &Shared,
    response: Response,
) -> Pin<Box<impl Future<Output = ()> + '_>> {
    Box::pin(async move {
        let deadline = Instant::now() + REFUSAL_READ;
        let Some(mut stream) = open(tcp, shared, deadline).await else {
            return;
        };
        let _ = tokio::time::timeout_at(deadline, http::read_head(&mut stream)).await;
        refuse(shared, &mut stream, response).await;
    })
}

/// A connection's opening: TLS, then the request head and its answer; a
/// WebSocket upgrade comes out. Boxed and built outside [`connection`]'s
/// future like [`refusal`]: the opening's state (the request head, a read
/// chunk, TLS's handshake) is freed before the session starts, and an idle
/// session holds none of it.
fn opening(
    tcp: Tcp,
    shard_index: usize,
    shared: &Shared,
    deadline: Instant,
) -> Pin<Box<impl Future<Output = Option<Accepted>> + '_>> {
    Box::pin(async move {
        let stream = open(tcp, shared, deadline).await?;
        handshake(stream, shard_index, shared, deadline).await
    })
}

/// The connection's byte stream: the TCP stream as it is, or with TLS on,
/// after a TLS handshake that must end by `deadline`. `None` when the
/// handshake failed, timed out, or the client spoke plain HTTP to the TLS
/// port (answered 400 here); the connection is then closed.
async fn open(tcp: Tcp, shared: &Shared, deadline: Instant) -> Option<Stream> {
    let Some(tls) = &shared.tls else {
        return Some(Stream::plain(tcp));
    };
    // With TLS on, shards accept on epoll whatever the backend.
    let Some(tcp) = tcp.into_epoll() else {
        tracing::error!("a TLS connection accepted through io_uring; closing it");
        return None;
    };
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let failed = |reason: &dyn std::fmt::Display| {
        shared.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
        tracing::debug!(?peer, %reason, "TLS handshake failed");
    };
    // A request line starts with a method's capital letter; a TLS record
    // with 0x16. Told apart on the first byte, a plain client learns what
    // it did wrong instead of reading a TLS alert as garbage.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1..)) => {}
        Ok(Ok(0) | Err(_)) => return None,
        Err(_) => {
            failed(&"timed out");
            return None;
        }
    }
    if first[0].is_ascii_uppercase() {
        failed(&"plain HTTP on the TLS port");
        let mut tcp = tcp;
        let _ = tokio::time::timeout_at(deadline, http::read_head(&mut tcp)).await;
        let response = Response::text(400, "this port speaks TLS: use https:// or wss://");
        refuse(shared, &mut tcp, response).await;
        return None;
    }
    match tokio::time::timeout_at(deadline, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => Some(Stream::tls(stream)),
        Ok(Err(error)) => {
            failed(&error);
            None
        }
        Err(_) => {
            failed(&"timed out");
            None
        }
    }
}

/// How long a refused connection is given to send its request head.
const REFUSAL_READ: Duration = Duration::from_secs(1);

/// A connection's place under the server's cap and its address's cap,
/// given back when dropped.
struct Admission {
    _permit: OwnedSemaphorePermit,
    _ip: Slot<IpAddr>,
}

/// Takes a place for a new connection, or says why there is none (429).
fn admit(stream: &Tcp, shared: &Arc<Shared>) -> Result<Admission, Response> {
    let full =
        |what: &str| Response::text(429, format!("too many connections{what}")).retry_after(5);
    let ip = stream
        .peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let permit = shared
        .capacity
        .clone()
        .try_acquire_owned()
        .map_err(|_| full(""))?;
    let ip = shared
        .quotas
        .per_ip
        .take(ip, shared.config.max_connections_per_ip)
        .ok_or_else(|| full(" from this address"))?;
    Ok(Admission {
        _permit: permit,
        _ip: ip,
    })
}

/// A WebSocket handshake that succeeded.
struct Accepted {
    ws: WebSocketStream<Stream>,
    session: Admitted,
}

/// Reads a connection's request head (by `deadline`) and answers it:
/// plain endpoints and refusals are answered here (`None`); a WebSocket
/// upgrade is accepted and returned.
async fn handshake(
    mut stream: Stream,
    shard_index: usize,
    shared: &Shared,
    deadline: Instant,
) -> Option<Accepted> {
    let config = &shared.config;
    let head = tokio::time::timeout_at(deadline, http::read_head(&mut stream));
    let request = match head.await {
        Ok(Ok(request)) => request,
        Ok(Err(http::HeadError::Bad(message))) => {
            refuse(shared, &mut stream, Response::text(400, message)).await;
            return None;
        }
        Ok(Err(http::HeadError::Closed)) | Err(_) => return None,
    };
    match answer(&request, shard_index, shared) {
        Answer::Refuse(response) => refuse(shared, &mut stream, response).await,
        Answer::Plain(response) => response.send(&mut stream).await,
        Answer::Snapshot(graph, access) => snapshot(shared, &mut stream, graph, &access).await,
        Answer::Upgrade(accept, session) => {
            // Flushed: over TLS the answer could otherwise wait in the TLS
            // layer for the session's first write.
            let answer = async {
                stream.write_all(&accept).await?;
                stream.flush().await
            };
            tokio::time::timeout(http::write_timeout(accept.len()), answer)
                .await
                .ok()?
                .ok()?;
            let ws_config = WebSocketConfig::default()
                .read_buffer_size(config.read_buffer_bytes)
                .write_buffer_size(64 * 1024)
                .max_write_buffer_size(config.max_frame_bytes + (128 << 10))
                .max_message_size(Some(config.max_frame_bytes))
                .max_frame_size(Some(config.max_frame_bytes));
            let ws = WebSocketStream::from_partially_read(
                stream,
                request.rest,
                Role::Server,
                Some(ws_config),
            )
            .await;
            return Some(Accepted {
                ws,
                session: *session,
            });
        }
    }
    None
}

/// What a request head gets.
enum Answer {
    /// A refusal (counted).
    Refuse(Response),
    /// A plain endpoint's answer.
    Plain(Response),
    /// The snapshot of a graph, as this access may see it.
    Snapshot(String, Access),
    /// The WebSocket upgrade: the 101 answer and the session it starts.
    Upgrade(Vec<u8>, Box<Admitted>),
}

/// A session whose upgrade passed every check.
struct Admitted {
    member: Member,
    /// What the session may do.
    access: Access,
    /// Its place under the user's connection cap.
    slot: Slot<Arc<str>>,
    /// The resume point the client asked for.
    since: Option<(u64, String)>,
}

/// Decides what a request gets, in the order of docs/security.md: the
/// endpoint, then origin and host, then credentials, then the rates and
/// caps of the user, then the WebSocket headers.
fn answer(request: &Request, shard_index: usize, shared: &Shared) -> Answer {
    let path = request.path.as_str();
    let graph = match http::graph_of(path) {
        Some(Ok(graph)) => Some(graph),
        Some(Err(response)) => return Answer::Refuse(response),
        None if path == "/metrics" => None,
        None if path == "/healthz" => {
            return Answer::Plain(if shared.draining.load(Relaxed) {
                Response::text(503, "draining").retry_after(1)
            } else {
                Response::text(200, "ok")
            });
        }
        None => {
            let Some(page) = web::file(path) else {
                return Answer::Plain(Response::text(404, "no such endpoint"));
            };
            // The page holds no data, but a foreign site may not frame or
            // fetch it either: the origin and host rules are the same.
            return match shared.origins.check(request) {
                Ok(()) => Answer::Plain(page),
                Err(response) => Answer::Refuse(response),
            };
        }
    };
    if let Err(response) = shared.origins.check(request) {
        return Answer::Refuse(response);
    }
    let credentials = match shared.auth.authenticate(request) {
        Ok(credentials) => credentials,
        Err(response) => return Answer::Refuse(response),
    };
    let Some(graph) = graph else {
        if !credentials.may_read_metrics() {
            return Answer::Refuse(Response::text(
                403,
                "the metrics need `admin` on every graph (`\"*\": \"admin\"`)",
            ));
        }
        let mut text = shared.metrics.render();
        text.push_str(&shared.persist_stats.snapshot().to_prometheus());
        let mut response = Response::text(200, text);
        response.content_type = "text/plain; version=0.0.4";
        return Answer::Plain(response);
    };
    let access = match credentials.access(graph) {
        Ok(access) => access,
        Err(response) => return Answer::Refuse(response),
    };
    if !request.is_upgrade() {
        return Answer::Snapshot(graph.to_owned(), access);
    }
    if shared.draining.load(Relaxed) {
        return Answer::Refuse(Response::text(503, "the server is shutting down").retry_after(1));
    }
    match upgrade(request, shard_index, shared, graph, &credentials, access) {
        Ok((accept, session)) => Answer::Upgrade(accept, Box::new(session)),
        Err(response) => Answer::Refuse(response),
    }
}

/// The checks of a WebSocket upgrade once the client is known.
fn upgrade(
    request: &Request,
    shard_index: usize,
    shared: &Shared,
    graph: &str,
    credentials: &Credentials,
    access: Access,
) -> Result<(Vec<u8>, Admitted), Response> {
    let user: Arc<str> = credentials.user_id().into();
    shared.quotas.handshake(&user).map_err(|wait| {
        Response::text(
            429,
            "too many handshakes of this user, or a session of it was just closed for bad input; retry later",
        )
        .retry_after(quota::retry_after_s(wait))
    })?;
    let slot = shared
        .quotas
        .per_user
        .take(user, shared.config.max_connections_per_user)
        .ok_or_else(|| Response::text(429, "too many connections of this user").retry_after(5))?;
    let codec = http::negotiate(request)?;
    let since = http::resume_point(request)?;
    let accept = http::accept(request, codec)?;
    let key = shared.sessions.fetch_add(1, Relaxed) + 1;
    let member = Member {
        session: key,
        shard: shard_index,
        codec: codec.unwrap_or(Codec::Json),
        graph: graph.into(),
        user_id: access.user_id.clone(),
        session_id: format!("s-{key:x}-{:04x}", rand::random::<u16>()),
        view: access.read.clone(),
    };
    Ok((
        accept,
        Admitted {
            member,
            access,
            slot,
            since,
        },
    ))
}

async fn refuse<S: AsyncWrite + Unpin>(shared: &Shared, stream: &mut S, response: Response) {
    shared.metrics.handshakes_refused.fetch_add(1, Relaxed);
    response.send(stream).await;
}

/// `GET /v1/graphs/{graph}`: the committed snapshot, `{epoch, seq, nodes, edges}`.
async fn snapshot(shared: &Shared, stream: &mut Stream, graph: String, access: &Access) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if shared.hub.send(HubCmd::Snapshot { graph, reply }).is_err() {
        return Response::text(503, "shutting down")
            .retry_after(1)
            .send(stream)
            .await;
    }
    match answer.await {
        Ok(SnapshotReply::Graph(sync)) => match sync.snapshot_json_of(|id| access.may_read(id)) {
            Some(body) => Response::json(body).send(stream).await,
            None => {
                Response::text(500, "could not encode the snapshot")
                    .send(stream)
                    .await
            }
        },
        Ok(SnapshotReply::NotFound) => Response::text(404, "no such graph").send(stream).await,
        Ok(SnapshotReply::Busy) => {
            Response::text(503, "too many graphs open; try again shortly")
                .retry_after(1)
                .send(stream)
                .await
        }
        Ok(SnapshotReply::Failed) => {
            Response::text(500, "the graph cannot be read")
                .send(stream)
                .await
        }
        Err(_) => {
            Response::text(503, "shutting down")
                .retry_after(1)
                .send(stream)
                .await
        }
    }
}
