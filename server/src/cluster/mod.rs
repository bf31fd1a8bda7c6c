//! The cluster layer (docs/scale-out.md): several servers as one service
//! on NATS JetStream, started only by `--cluster`.
//!
//! One thread with its own tokio runtime holds the NATS connection. The
//! hub sends it [`ClusterCmd`]s (take a graph's lease, publish a committed
//! group, follow a graph's stream, forward a mutation to its owner) and
//! hears back [`ClusterEvent`]s on a bounded channel it selects on, as it
//! does persistence's answers. Leases live in the JetStream key-value
//! bucket [`LEASE_BUCKET`] (one key per graph, expiring [`LEASE_TTL`]
//! after the owner's last renewal); committed groups in the stream
//! [`STREAM`], on the subject `gitmind.changes.{graph}`; node-to-node
//! messages on core NATS subjects `gitmind.node.{node}.mutate` and
//! `.reply`.

pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use crossbeam::channel::Sender;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use self::wire::{Forward, Group, Lease, Presence, Reply};
use crate::metrics::Metrics;

/// The key-value bucket of the leases.
pub const LEASE_BUCKET: &str = "gitmind-leases";
/// The stream of committed groups.
pub const STREAM: &str = "GITMIND_CHANGES";
/// How long a lease outlives its owner's last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often an owner renews its leases.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long the stream keeps a group: far longer than a failover.
const STREAM_MAX_AGE: Duration = Duration::from_secs(3600);
/// Events waiting for the hub; past it the cluster thread waits.
const EVENTS_CAPACITY: usize = 1 << 16;

/// What the hub asks of the cluster thread.
pub enum ClusterCmd {
    /// Take the graph's lease, or learn who holds it
    /// ([`ClusterEvent::Lease`]); `epoch` is for a graph git has nothing of.
    Acquire {
        /// The graph.
        graph: Arc<str>,
        /// The epoch to put in the lease.
        epoch: String,
    },
    /// Publish a committed group on its graph's subject.
    Publish {
        /// The group.
        group: Box<Group>,
    },
    /// Deliver the graph's groups from the start of the stream
    /// ([`ClusterEvent::Group`]) until [`ClusterCmd::Unfollow`], and watch
    /// its lease: when it expires, try to take it
    /// ([`ClusterEvent::LeaseMoved`]).
    Follow {
        /// The graph.
        graph: Arc<str>,
        /// Its lease as last known.
        lease: Lease,
    },
    /// Stop following the graph.
    Unfollow {
        /// The graph.
        graph: Arc<str>,
    },
    /// Stop renewing the graph's lease (it was released here).
    Disown {
        /// The graph.
        graph: Arc<str>,
    },
    /// Forward a mutation to the graph's owner.
    Forward {
        /// The owner's node.
        to: String,
        /// The mutation.
        forward: Box<Forward>,
    },
    /// Tell the other nodes of this node's sessions on a graph.
    Presence(Box<Presence>),
    /// Send an answer back to a forwarded mutation's node.
    Reply {
        /// The node.
        to: String,
        /// The answer.
        reply: Reply,
    },
}

/// What the cluster thread tells the hub.
pub enum ClusterEvent {
    /// Who holds a graph's lease now.
    Lease {
        /// The graph.
        graph: Arc<str>,
        /// The lease.
        lease: Lease,
        /// Whether this node holds it.
        mine: bool,
    },
    /// The lease could not be taken nor read (NATS is unreachable).
    NoLease {
        /// The graph.
        graph: Arc<str>,
    },
    /// This node's lease of a graph could not be renewed: another node may
    /// own it by now.
    LeaseLost {
        /// The graph.
        graph: Arc<str>,
    },
    /// A followed graph's lease went to another node, or to this one.
    LeaseMoved {
        /// The graph.
        graph: Arc<str>,
        /// The lease now.
        lease: Lease,
        /// Whether this node holds it.
        mine: bool,
    },
    /// A mutation forwarded by a follower.
    Forwarded(Box<Forward>),
    /// An answer from an owner to a mutation this node forwarded.
    Reply(Reply),
    /// A committed group of a followed graph.
    Group(Box<Group>),
    /// News of the sessions of another node.
    Presence(Box<Presence>),
    /// A second has passed: time to tell the other nodes who is here, and
    /// to drop the sessions of nodes not heard from.
    Beat,
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL given.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// JetStream's bucket or stream could not be had.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// No thread could be started.
    #[error("cannot start the cluster thread: {0}")]
    Thread(std::io::Error),
}

/// The hub's handle of the cluster thread; dropping it ends the thread.
pub struct Cluster {
    node: Arc<str>,
    commands: mpsc::UnboundedSender<ClusterCmd>,
}

impl Cluster {
    /// Connects to NATS at `url` as node `node`, makes the lease bucket and
    /// the stream if they are missing, and starts the thread; events go to
    /// the channel returned.
    ///
    /// # Errors
    /// [`StartError`] when NATS or JetStream cannot be had.
    pub fn start(
        url: &str,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<(Cluster, crossbeam::channel::Receiver<ClusterEvent>), StartError> {
        let (events_tx, events_rx) = crossbeam::channel::bounded(EVENTS_CAPACITY);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // This process's name in the cluster: the node's name and a number
        // drawn at start. A node started again under the same name is then
        // a new owner to the others: it waits for its old leases to expire
        // rather than taking them back, and the others send it again what
        // they had forwarded to the process that died (lost with it).
        let node = format!("{node}-{:08x}", rand::random::<u32>());
        let (url_owned, node_owned) = (url.to_owned(), node.clone());
        std::thread::Builder::new()
            .name("gitmind-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Thread(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Link::connect(&url_owned, &node_owned, events_tx, metrics).await {
                        Ok(link) => {
                            let _ = ready_tx.send(Ok(()));
                            link.run(commands_rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(StartError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                Cluster {
                    node: node.as_str().into(),
                    commands,
                },
                events_rx,
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::JetStream("the cluster thread ended".into())),
        }
    }

    /// This process's name in the cluster: the node's name and a number
    /// drawn at start.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// Hands a command to the cluster thread (it never waits).
    pub fn send(&self, cmd: ClusterCmd) {
        // The thread ends only when this handle is dropped, or when NATS
        // is gone for good; then commands have nowhere to go.
        let _ = self.commands.send(cmd);
    }
}

/// The subject of a graph's committed groups.
pub fn changes_subject(graph: &str) -> String {
    format!("gitmind.changes.{graph}")
}

/// The subject of the presence of a graph's sessions.
fn presence_subject(graph: &str) -> String {
    format!("gitmind.presence.{graph}")
}

fn node_subject(node: &str, kind: &str) -> String {
    format!("gitmind.node.{node}.{kind}")
}

/// The cluster thread's state.
struct Link {
    node: String,
    client: async_nats::Client,
    js: jetstream::Context,
    leases: kv::Store,
    stream: stream::Stream,
    events: Sender<ClusterEvent>,
    metrics: Arc<Metrics>,
    /// The leases this node holds: each key's last revision and value.
    owned: HashMap<Arc<str>, (u64, Bytes)>,
    /// The graphs followed, each by a task, with their lease as last known.
    followed: HashMap<Arc<str>, (tokio::task::JoinHandle<()>, Lease)>,
}

impl Link {
    async fn connect(
        url: &str,
        node: &str,
        events: Sender<ClusterEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<Link, StartError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("gitmind-{node}"))
            .connect(url)
            .await
            .map_err(|e| StartError::Connect {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let js_error = |e: &dyn std::fmt::Display| StartError::JetStream(e.to_string());
        // The bucket's stream is made here as `create_key_value` would
        // make it: that call first reads the account's information, whose
        // form from a 2.9 server this client does not parse.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{LEASE_BUCKET}"),
            subjects: vec![format!("$KV.{LEASE_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_age: LEASE_TTL,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(&e))?;
        let leases = js
            .get_key_value(LEASE_BUCKET)
            .await
            .map_err(|e| js_error(&e))?;
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![changes_subject(">")],
                max_age: STREAM_MAX_AGE,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| js_error(&e))?;
        Ok(Link {
            node: node.to_owned(),
            client,
            js,
            leases,
            stream,
            events,
            metrics,
            owned: HashMap::new(),
            followed: HashMap::new(),
        })
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<ClusterCmd>) {
        let subscribe = |kind: &'static str| {
            let client = self.client.clone();
            let subject = node_subject(&self.node, kind);
            async move { client.subscribe(subject).await }
        };
        let presence = self.client.subscribe(presence_subject(">")).await;
        let (Ok(mut mutations), Ok(mut replies), Ok(mut presence)) = (
            subscribe("mutate").await,
            subscribe("reply").await,
            presence,
        ) else {
            tracing::error!("cannot subscribe to this node's subjects; the cluster thread stops");
            return;
        };
        let mut renew = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                Some(msg) = mutations.next() => match serde_json::from_slice::<Forward>(&msg.payload) {
                    Ok(f) => self.tell(ClusterEvent::Forwarded(Box::new(f))),
                    Err(e) => tracing::warn!(error = %e, "malformed forwarded mutation"),
                },
                Some(msg) = presence.next() => match serde_json::from_slice::<Presence>(&msg.payload) {
                    Ok(p) if p.node != self.node => self.tell(ClusterEvent::Presence(Box::new(p))),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "malformed presence"),
                },
                Some(msg) = replies.next() => match serde_json::from_slice::<Reply>(&msg.payload) {
                    Ok(r) => self.tell(ClusterEvent::Reply(r)),
                    Err(e) => tracing::warn!(error = %e, "malformed reply"),
                },
                _ = renew.tick() => {
                    self.renew().await;
                    self.watch().await;
                    self.tell(ClusterEvent::Beat);
                }
            }
        }
        for (_, (task, _)) in self.followed.drain() {
            task.abort();
        }
    }

    /// Hands an event to the hub, waiting while its channel is full.
    fn tell(&self, event: ClusterEvent) {
        let _ = self.events.send(event);
    }

    async fn command(&mut self, cmd: ClusterCmd) {
        match cmd {
            ClusterCmd::Acquire { graph, epoch } => self.acquire(graph, epoch).await,
            ClusterCmd::Publish { group } => {
                let subject = changes_subject(&group.graph);
                let upto = group.changes.last().map_or(0, |c| c.seq);
                let mut headers = async_nats::HeaderMap::new();
                let id = format!("{}/{}/{upto}", group.graph, group.epoch);
                headers.insert("Nats-Msg-Id", id.as_str());
                match self
                    .js
                    .publish_with_headers(subject, headers, group.encode())
                    .await
                {
                    Ok(ack) => {
                        tokio::spawn(async move {
                            if let Err(e) = ack.await {
                                tracing::error!(id, error = %e, "a committed group was not stored in the stream");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::error!(id, error = %e, "a committed group could not be published")
                    }
                }
            }
            ClusterCmd::Follow { graph, lease } => {
                let task = tokio::spawn(follow(
                    self.stream.clone(),
                    graph.clone(),
                    self.events.clone(),
                    self.metrics.clone(),
                ));
                if let Some((old, _)) = self.followed.insert(graph, (task, lease)) {
                    old.abort();
                }
            }
            ClusterCmd::Unfollow { graph } => {
                if let Some((task, _)) = self.followed.remove(&graph) {
                    task.abort();
                }
            }
            ClusterCmd::Disown { graph } => {
                self.owned.remove(&graph);
            }
            ClusterCmd::Forward { to, forward } => {
                // Plain data: serialising cannot fail.
                let payload = serde_json::to_vec(&forward).unwrap_or_default();
                self.direct(&to, "mutate", payload).await;
            }
            ClusterCmd::Presence(p) => {
                let payload = serde_json::to_vec(&p).unwrap_or_default();
                if let Err(e) = self
                    .client
                    .publish(presence_subject(&p.graph), payload.into())
                    .await
                {
                    tracing::debug!(error = %e, "presence not relayed");
                }
            }
            ClusterCmd::Reply { to, reply } => {
                let payload = serde_json::to_vec(&reply).unwrap_or_default();
                self.direct(&to, "reply", payload).await;
            }
        }
    }

    /// Core NATS, at most once: a lost mutation is resent by its client
    /// with the same id, and the owner answers a repeat with its outcome.
    async fn direct(&self, to: &str, kind: &str, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .publish(node_subject(to, kind), payload.into())
            .await
        {
            tracing::warn!(to, error = %e, "cannot send to another node");
        }
    }

    async fn acquire(&mut self, graph: Arc<str>, epoch: String) {
        let lease = Lease {
            node: self.node.clone(),
            epoch,
        };
        let value: Bytes = serde_json::to_vec(&lease).unwrap_or_default().into();
        for _ in 0..10 {
            match self.leases.create(&*graph, value.clone()).await {
                Ok(revision) => {
                    self.owned.insert(graph.clone(), (revision, value));
                    tracing::info!(graph = &*graph, "lease taken");
                    return self.tell(ClusterEvent::Lease {
                        graph,
                        lease,
                        mine: true,
                    });
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => {
                    tracing::warn!(graph = &*graph, error = %e, "cannot take a lease");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let entry = match self.leases.entry(&*graph).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
                // Gone meanwhile: try again.
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(graph = &*graph, error = %e, "cannot read a lease");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(held) = serde_json::from_slice::<Lease>(&entry.value) else {
                tracing::error!(graph = &*graph, "a lease that is not one");
                break;
            };
            let mine = held.node == self.node;
            if mine {
                // Ours already: taken by an earlier try whose answer was
                // lost (a process's name is its own, never a restarted
                // node's).
                self.owned
                    .insert(graph.clone(), (entry.revision, entry.value));
            }
            return self.tell(ClusterEvent::Lease {
                graph,
                lease: held,
                mine,
            });
        }
        self.tell(ClusterEvent::NoLease { graph });
    }

    /// Renews every lease held; one that cannot be renewed is lost.
    async fn renew(&mut self) {
        let mut lost = Vec::new();
        for (graph, (revision, value)) in &mut self.owned {
            match self.leases.update(&**graph, value.clone(), *revision).await {
                Ok(next) => *revision = next,
                Err(e) => {
                    tracing::error!(graph = &**graph, error = %e, "lease lost");
                    lost.push(graph.clone());
                }
            }
        }
        for graph in lost {
            self.metrics.cluster.leases_lost.fetch_add(1, Relaxed);
            self.owned.remove(&graph);
            self.tell(ClusterEvent::LeaseLost { graph });
        }
    }
}

impl Link {
    /// Reads the lease of every followed graph: one that expired (its
    /// owner stopped renewing it) is taken if this node is first; one that
    /// names another owner is told.
    async fn watch(&mut self) {
        let graphs: Vec<(Arc<str>, Lease)> = self
            .followed
            .iter()
            .map(|(g, (_, lease))| (g.clone(), lease.clone()))
            .collect();
        for (graph, known) in graphs {
            let entry = match self.leases.entry(&*graph).await {
                Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
                Err(e) => {
                    tracing::warn!(graph = &*graph, error = %e, "cannot read a lease");
                    continue;
                }
            };
            let (lease, mine) = match entry {
                Some(entry) => match serde_json::from_slice::<Lease>(&entry.value) {
                    Ok(lease) if lease.node == known.node => continue,
                    Ok(lease) => (lease, false),
                    Err(_) => continue,
                },
                None => {
                    let lease = Lease {
                        node: self.node.clone(),
                        epoch: known.epoch.clone(),
                    };
                    let value: Bytes = serde_json::to_vec(&lease).unwrap_or_default().into();
                    match self.leases.create(&*graph, value.clone()).await {
                        Ok(revision) => {
                            tracing::info!(graph = &*graph, from = known.node, "lease taken over");
                            self.metrics.cluster.takeovers.fetch_add(1, Relaxed);
                            self.owned.insert(graph.clone(), (revision, value));
                            (lease, true)
                        }
                        // Another node was first: its lease is read on
                        // the next round.
                        Err(_) => continue,
                    }
                }
            };
            if let Some((task, known)) = self.followed.get_mut(&graph) {
                *known = lease.clone();
                if mine {
                    task.abort();
                    self.followed.remove(&graph);
                }
            }
            self.tell(ClusterEvent::LeaseMoved { graph, lease, mine });
        }
    }
}

/// Delivers a graph's committed groups, from the start of the stream, in
/// order, until aborted.
async fn follow(
    stream: stream::Stream,
    graph: Arc<str>,
    events: Sender<ClusterEvent>,
    metrics: Arc<Metrics>,
) {
    let config = consumer::pull::OrderedConfig {
        filter_subject: changes_subject(&graph),
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let messages = match stream.create_consumer(config).await {
        Ok(consumer) => consumer.messages().await,
        Err(e) => {
            tracing::error!(graph = &*graph, error = %e, "cannot follow a graph");
            return;
        }
    };
    let mut messages = match messages {
        Ok(messages) => messages,
        Err(e) => {
            tracing::error!(graph = &*graph, error = %e, "cannot follow a graph");
            return;
        }
    };
    let mut pending = Pending {
        metrics: metrics.clone(),
        last: 0,
    };
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(graph = &*graph, error = %e, "following a graph");
                continue;
            }
        };
        if let Ok(info) = message.info() {
            pending.set(i64::try_from(info.pending).unwrap_or(i64::MAX));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let lag = i128::try_from(now).unwrap_or(0) - info.published.unix_timestamp_nanos();
            let lag = u64::try_from(lag.max(0)).unwrap_or(u64::MAX);
            metrics.cluster.stream_lag.record(Duration::from_nanos(lag));
        }
        match Group::decode(message.payload.clone()) {
            Ok(group) => {
                if events.send(ClusterEvent::Group(Box::new(group))).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(graph = &*graph, error = %e, "malformed group in the stream"),
        }
    }
}

/// A followed graph's share of
/// [`ClusterMetrics::stream_pending`](crate::metrics::ClusterMetrics::stream_pending),
/// taken back when its task ends (aborted or not).
struct Pending {
    metrics: Arc<Metrics>,
    last: i64,
}

impl Pending {
    fn set(&mut self, now: i64) {
        self.metrics
            .cluster
            .stream_pending
            .fetch_add(now - self.last, Relaxed);
        self.last = now;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.set(0);
    }
}
