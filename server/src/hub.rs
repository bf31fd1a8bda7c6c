//! The hub: the thread where every graph's owner lives (docs/architecture.md,
//! "Threads").
//!
//! Shards send it commands through one bounded crossbeam channel; the git
//! persistence thread reports commits through another. The hub never blocks
//! on I/O: it validates and orders mutations through each graph's
//! [`Owner`], hands ordered changes to persistence in groups, and when a
//! group is committed encodes each event once per codec in use and pushes
//! it to every shard that has a session in that graph. Ordering guarantees
//! come from there being one hub and one FIFO ring per shard: a session's
//! `graph.sync` is queued at the exact point of the event stream it
//! describes.
//!
//! Graphs are held open only while they are used ([`crate::graphs`]): a
//! graph with no session and nothing on its way to git is released after
//! `graph_idle_unload_ms`, or sooner when `max_open_graphs` are open and
//! another is asked for. A graph in git that is not open is read by the
//! persistence thread, never here: what its sessions ask meanwhile waits,
//! in order, and is served once it arrives ([`Loaded`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use gitmind_owner::{Origin, Owner, OwnerConfig, SessionKey, Submit, SyncData};
use gitmind_schema::message::{
    ChaosTrigger, ErrorCode, GonzaiSuggestion, RollbackReason, Suggestion, SystemError,
};
use gitmind_schema::{Body, Codec, Envelope};

use crate::auth::Access;
use crate::config::Config;
use crate::fanout::{self, Member, Refusal, Released, ShardLink, ShardMsg};
use crate::gonzai::suggest::SplitMix;
use crate::gonzai::{self, AskError, Gonzai, Watcher};
use crate::graphs::{Graph, Graphs, Place};
use crate::metrics::Metrics;
use crate::persist::{Loaded, PersistEvent, Persister};
use crate::stamp::{now_ms, stamped};
use crate::view::View;

mod clustered;

/// What shards ask of the hub.
pub enum HubCmd {
    /// A session opened on a graph; answer with its `graph.sync`.
    Join {
        /// The session.
        member: Member,
        /// Resume point from the handshake (`since`, `epoch`).
        since: Option<(u64, String)>,
    },
    /// A session closed.
    Leave {
        /// The graph.
        graph: Arc<str>,
        /// The session.
        session: SessionKey,
    },
    /// A session asked for a sync again (`graph.sync` with `since`).
    Resync {
        /// The graph.
        graph: Arc<str>,
        /// The session.
        session: SessionKey,
        /// Where to resume from.
        since: Option<(u64, String)>,
    },
    /// A graph mutation.
    Mutate {
        /// The graph.
        graph: Arc<str>,
        /// Who sent it.
        origin: Origin,
        /// The envelope id: the idempotency key.
        mutation_id: String,
        /// The mutation.
        body: Body,
    },
    /// A mutation whose data did not decode: settled with a rollback
    /// (docs/protocol.md 4.1), remembered like any other (4.4).
    Refuse {
        /// The graph.
        graph: Arc<str>,
        /// Who sent it.
        origin: Origin,
        /// The envelope id: the idempotency key.
        mutation_id: String,
        /// `invalid` or `too_large`.
        reason: RollbackReason,
        /// What was wrong, for a person.
        message: String,
    },
    /// A session's `region.subscribe`, `region.unsubscribe`,
    /// `query.subscribe` or `query.unsubscribe`, already validated.
    Subscribe {
        /// The graph.
        graph: Arc<str>,
        /// The session.
        session: SessionKey,
        /// The message.
        body: Body,
    },
    /// Ephemeral: presence, cursor or selection, already validated.
    Presence {
        /// The graph.
        graph: Arc<str>,
        /// The sender.
        session: SessionKey,
        /// The message (`user.presence`, `cursor.move`, `selection.change`).
        body: Body,
    },
    /// `GET /v1/graphs/{graph}`: the committed snapshot as JSON.
    Snapshot {
        /// The graph.
        graph: String,
        /// Where to send it.
        reply: tokio::sync::oneshot::Sender<SnapshotReply>,
    },
    /// `gonzai.suggestion {for, limit}` (docs/protocol.md 9), already
    /// checked by the session (`for` given, `limit` in range, rate).
    Suggest {
        /// The graph.
        graph: Arc<str>,
        /// Who asks.
        session: SessionKey,
        /// The ask's envelope id.
        id: String,
        /// The node.
        for_node: String,
        /// At most this many.
        limit: u32,
        /// What the session may read: other nodes are not suggested.
        access: Box<Access>,
    },
    /// `gonzai.suggestion {suggestions}` shared by a session, already
    /// checked (no `for` or `limit`, at most [`gonzai::MAX_LIMIT`], rate):
    /// relayed to the sessions focused within two links of its focus.
    Share {
        /// The graph.
        graph: Arc<str>,
        /// Who shares.
        session: SessionKey,
        /// The share's envelope id.
        id: String,
        /// The suggestions.
        suggestions: Vec<Suggestion>,
    },
    /// `chaos.trigger` from a session, already checked (intensity, rate).
    Chaos {
        /// The graph.
        graph: Arc<str>,
        /// Who starts it.
        session: SessionKey,
        /// How much chaos, 0 to 1.
        intensity: f64,
    },
    /// Commit what is queued and stop.
    Shutdown,
}

impl HubCmd {
    /// The graph the command is about.
    fn graph(&self) -> Option<&str> {
        match self {
            HubCmd::Join { member, .. } => Some(&member.graph),
            HubCmd::Leave { graph, .. }
            | HubCmd::Resync { graph, .. }
            | HubCmd::Mutate { graph, .. }
            | HubCmd::Refuse { graph, .. }
            | HubCmd::Subscribe { graph, .. }
            | HubCmd::Presence { graph, .. }
            | HubCmd::Suggest { graph, .. }
            | HubCmd::Share { graph, .. }
            | HubCmd::Chaos { graph, .. } => Some(graph),
            HubCmd::Snapshot { graph, .. } => Some(graph),
            HubCmd::Shutdown => None,
        }
    }
}

/// The answer to [`HubCmd::Snapshot`].
#[derive(Debug)]
pub enum SnapshotReply {
    /// The graph as committed.
    Graph(Box<SyncData>),
    /// No such graph: nothing of it in git, and not open.
    NotFound,
    /// It is in git, but no more graphs can be opened now.
    Busy,
    /// It could not be read from git.
    Failed,
}

/// Presence messages that may wait for one graph being loaded; past it
/// they are dropped, as when the hub's queue is full (docs/protocol.md 8).
/// Everything else a session sends is bounded by the session itself (its
/// mutations in flight, one sync at a time, one join, one leave).
const MAX_WAITING: usize = 4096;

/// Gonzai asks, shares and chaos that may wait for one graph's Gonzai being
/// built; past it an ask is answered `rate_limited` with `retryAfterMs`
/// and shares and chaos are dropped.
const MAX_WAITING_GONZAI: usize = 1024;

/// A graph's Gonzai being built on its own thread.
struct Building {
    /// Which build (a graph unloaded and opened again builds anew).
    token: u64,
    /// The changes committed since the snapshot it is built from, to apply
    /// when it is ready.
    changes: Vec<Body>,
    /// The asks, shares and chaos that wait for it, in order.
    waiting: Vec<HubCmd>,
    /// When it started.
    since: Instant,
}

/// A graph's Gonzai, built.
struct Built {
    graph: Arc<str>,
    token: u64,
    gonzai: Box<Gonzai>,
}

/// The hub's state; [`Hub::run`] is its thread's body.
pub struct Hub {
    graphs: Graphs<HubCmd>,
    /// Where persistence answers the hub's loads.
    loaded_tx: Sender<Loaded>,
    loaded_rx: Receiver<Loaded>,
    shards: Vec<ShardLink>,
    persister: Persister,
    owner_config: OwnerConfig,
    metrics: Arc<Metrics>,
    heartbeat_ms: u64,
    /// How often presence notices go out.
    presence_tick: Duration,
    /// Graphs with changes not yet handed to persistence.
    dirty: Vec<Arc<str>>,
    /// Graphs with presence notices not yet sent, and when they are due.
    noticed: Vec<Arc<str>>,
    digest_due: Option<Instant>,
    /// What Gonzai's discoveries follow.
    gonzai: gonzai::Settings,
    /// Chaos's draws.
    chaos_rng: SplitMix,
    /// Graphs whose Gonzai is being built.
    builds: HashMap<Arc<str>, Building>,
    /// Where builds answer.
    built_tx: Sender<Built>,
    built_rx: Receiver<Built>,
    next_build: u64,
    /// Tests: each build waits this long first.
    build_delay: Duration,
    /// The cluster, with `--cluster` (docs/scale-out.md).
    cluster: Option<clustered::Membership>,
    /// The changes of the group being released: one vector for every
    /// group, empty between them.
    releases: Vec<gitmind_owner::Release>,
}

/// What a session reached by chaos is told.
pub const CHAOS_MESSAGE: &str = "Chaos is contagious! 🐵";

impl Hub {
    /// A hub with no graph open; `stored` are the graphs in git
    /// ([`Persister::open`]).
    pub fn new(
        stored: Vec<String>,
        shards: Vec<ShardLink>,
        persister: Persister,
        owner_config: OwnerConfig,
        metrics: Arc<Metrics>,
        config: &Config,
    ) -> Self {
        let (loaded_tx, loaded_rx) = crossbeam::channel::unbounded();
        let (built_tx, built_rx) = crossbeam::channel::unbounded();
        Hub {
            graphs: Graphs::new(stored, config.max_open_graphs, config.graph_idle_unload()),
            loaded_tx,
            loaded_rx,
            shards,
            persister,
            owner_config,
            metrics,
            heartbeat_ms: config.heartbeat_ms,
            presence_tick: Duration::from_millis(config.presence_tick_ms),
            dirty: Vec::new(),
            noticed: Vec::new(),
            digest_due: None,
            gonzai: gonzai::Settings {
                discoveries: config.gonzai_discoveries,
                threshold: config.gonzai_discover_threshold,
                per_second: config.gonzai_discoveries_per_second,
            },
            chaos_rng: SplitMix(config.gonzai_seed.unwrap_or_else(now_ms)),
            builds: HashMap::new(),
            built_tx,
            built_rx,
            next_build: 0,
            build_delay: Duration::from_millis(config.gonzai_build_delay_ms),
            cluster: None,
            releases: Vec::new(),
        }
    }

    /// The hub of one node of a cluster (docs/scale-out.md): graphs are
    /// owned or followed through `link`, whose events come on `events`.
    pub fn with_cluster(
        mut self,
        link: crate::cluster::Cluster,
        events: Receiver<crate::cluster::ClusterEvent>,
    ) -> Self {
        self.cluster = Some(clustered::Membership::new(link, events));
        self
    }

    /// Runs until [`HubCmd::Shutdown`] or until every shard has hung up,
    /// then commits what is queued and stops persistence.
    pub fn run(mut self, commands: Receiver<HubCmd>, persisted: Receiver<PersistEvent>) {
        let loaded = self.loaded_rx.clone();
        let built = self.built_rx.clone();
        let cluster = self
            .cluster
            .as_ref()
            .map_or_else(crossbeam::channel::never, |m| m.events.clone());
        loop {
            let digest = match self.digest_due {
                Some(at) => crossbeam::channel::at(at),
                None => crossbeam::channel::never(),
            };
            let sweep = match self.graphs.next_expiry() {
                Some(at) => crossbeam::channel::at(at),
                None => crossbeam::channel::never(),
            };
            crossbeam::select! {
                recv(commands) -> cmd => match cmd {
                    Ok(HubCmd::Shutdown) | Err(_) => break,
                    Ok(cmd) => self.handle(cmd),
                },
                recv(persisted) -> event => {
                    if let Ok(event) = event {
                        self.persisted(event);
                    }
                }
                recv(loaded) -> answer => {
                    if let Ok(answer) = answer {
                        self.loaded(answer);
                    }
                }
                recv(built) -> answer => {
                    if let Ok(answer) = answer {
                        self.built(answer);
                    }
                }
                recv(cluster) -> event => {
                    if let Ok(event) = event {
                        self.clustered(event);
                    }
                }
                recv(digest) -> _ => self.send_digests(),
                recv(sweep) -> _ => self.sweep(),
            }
            // Take everything else that is already waiting before handing a
            // group to persistence: that is what makes commits grouped.
            while let Ok(cmd) = commands.try_recv() {
                if matches!(cmd, HubCmd::Shutdown) {
                    return self.stop();
                }
                self.handle(cmd);
            }
            while let Ok(event) = persisted.try_recv() {
                self.persisted(event);
            }
            self.flush_groups();
            let now = Instant::now();
            if self.digest_due.is_some_and(|at| now >= at) {
                self.send_digests();
            }
            if self.graphs.next_expiry().is_some_and(|at| now >= at) {
                self.sweep();
            }
            let held = i64::try_from(self.graphs.held()).unwrap_or(i64::MAX);
            self.metrics.graphs_open.store(held, Relaxed);
        }
        self.stop();
    }

    /// Releases every graph idle for its time.
    fn sweep(&mut self) {
        while let Some((name, graph)) = self.graphs.take_expired(Instant::now()) {
            self.unloaded(&name, graph);
        }
    }

    /// A graph was released: persistence forgets it too.
    fn unloaded(&mut self, name: &str, graph: Graph) {
        tracing::debug!(
            graph = name,
            seq = graph.owner.committed_seq(),
            "graph unloaded"
        );
        drop(graph);
        self.unloaded_clustered(name);
        // A build still under way is for a graph no longer here.
        self.builds.remove(name);
        self.persister.unload(name);
        self.metrics.graph_unloads.fetch_add(1, Relaxed);
    }

    /// Makes room under `max_open_graphs` for one more graph, releasing
    /// the graphs idle the longest if need be; `false` when none can go.
    fn make_room(&mut self) -> bool {
        while self.graphs.is_full() {
            let Some((name, graph)) = self.graphs.take_oldest_idle() else {
                return false;
            };
            self.unloaded(&name, graph);
        }
        true
    }

    /// Gets `graph` open for `cmd` (a join, or a snapshot request) and
    /// gives the command back to serve now; or queues it behind the
    /// graph's load from git (starting it if need be); or refuses it when
    /// no more graphs can be opened. A graph nowhere is created when
    /// `create`, else given back for the caller to find missing.
    fn open(&mut self, graph: &Arc<str>, cmd: HubCmd, create: bool) -> Option<HubCmd> {
        let place = self.graphs.place(graph);
        match place {
            Place::Open => return Some(cmd),
            Place::Unknown if !create => return Some(cmd),
            Place::Loading => {
                let _ = self.graphs.wait(graph, cmd);
                return None;
            }
            Place::Stored | Place::Unknown => {}
        }
        if !self.make_room() {
            self.refuse(cmd, Refusal::TooManyGraphs);
            return None;
        }
        if self.cluster.is_some() {
            return self.open_clustered(graph, cmd);
        }
        if place == Place::Stored {
            self.persister.load(graph, &self.loaded_tx);
            self.graphs.start_loading(graph.clone(), cmd);
            return None;
        }
        let owner = Owner::new(graph, new_epoch(), self.owner_config.clone());
        self.graphs
            .insert(graph.clone(), Graph::new(owner, self.shards.len()));
        Some(cmd)
    }

    /// Answers a join or a snapshot request whose graph cannot be had.
    fn refuse(&mut self, cmd: HubCmd, refusal: Refusal) {
        match cmd {
            HubCmd::Join { member, .. } => {
                if refusal == Refusal::TooManyGraphs {
                    self.metrics.graph_refusals.fetch_add(1, Relaxed);
                }
                self.shards[member.shard].send(ShardMsg::Refused {
                    session: member.session,
                    refusal,
                });
            }
            HubCmd::Snapshot { reply, .. } => {
                let _ = reply.send(match refusal {
                    Refusal::TooManyGraphs => SnapshotReply::Busy,
                    Refusal::LoadFailed => SnapshotReply::Failed,
                });
            }
            // The rest came from sessions that are refused (and closed):
            // they resend after reconnecting.
            _ => {}
        }
    }

    /// Persistence read a graph back: it opens, and what waited for it
    /// is served in order.
    fn loaded(&mut self, answer: Loaded) {
        let Some(answer) = self.reloaded(answer) else {
            return;
        };
        let Loaded { graph, result } = answer;
        let Some((name, waiting)) = self.graphs.loaded(&graph) else {
            // Never asked for: let persistence forget it again.
            self.persister.unload(&graph);
            return;
        };
        match result {
            Ok(restored) => {
                let owner = match restored {
                    Some(restored) => {
                        self.metrics.graph_loads.fetch_add(1, Relaxed);
                        Owner::restore(restored, self.owner_config.clone())
                    }
                    // Listed, but gone from git: a new graph.
                    None => Owner::new(&name, self.epoch_for_new(&name), self.owner_config.clone()),
                };
                self.graphs
                    .insert(name.clone(), Graph::new(owner, self.shards.len()));
                self.opened_clustered(&name);
                for cmd in waiting {
                    self.handle(cmd);
                }
                self.graphs.settle(&name, Instant::now());
            }
            Err(error) => {
                tracing::error!(graph = %name, %error, "graph cannot be loaded; its sessions are closed");
                for cmd in waiting {
                    self.refuse(cmd, Refusal::LoadFailed);
                }
            }
        }
    }

    /// Notes that `graph` has presence notices for the next digest.
    fn noticed(&mut self, graph: &Arc<str>) {
        if !self.noticed.contains(graph) {
            self.noticed.push(graph.clone());
        }
        self.digest_due
            .get_or_insert_with(|| Instant::now() + self.presence_tick);
    }

    /// Sends each graph's presence notices since the last digest to every
    /// shard with sessions on it, encoded once.
    fn send_digests(&mut self) {
        self.digest_due = None;
        for graph in std::mem::take(&mut self.noticed) {
            let Some(entry) = self.graphs.get_mut(&graph) else {
                continue;
            };
            let notices = entry.roster.take_notices();
            if notices.is_empty() {
                continue;
            }
            if let Some(member) = &self.cluster {
                member.relay_notices(&graph, &notices);
            }
            let notices = Arc::new(fanout::encode_digest(notices, entry.roster.codecs()));
            for shard in entry.roster.shards() {
                self.shards[shard].send(ShardMsg::Digest {
                    graph: graph.clone(),
                    notices: notices.clone(),
                });
            }
        }
    }

    /// Hands remaining changes to persistence and waits until it has
    /// committed them (the sessions are closed by then; they resume from
    /// git after the restart).
    fn stop(mut self) {
        self.flush_groups();
        if let Err(e) = self.persister.shutdown() {
            tracing::error!(error = %e, "persistence did not shut down cleanly");
        }
    }

    fn handle(&mut self, cmd: HubCmd) {
        if let Some(graph) = cmd.graph().filter(|g| self.graphs.is_loading(g)) {
            let graph: Arc<str> = graph.into();
            if matches!(cmd, HubCmd::Presence { .. }) && self.graphs.waiting(&graph) >= MAX_WAITING
            {
                return;
            }
            let _ = self.graphs.wait(&graph, cmd);
            return;
        }
        let Some(cmd) = self.forward(cmd) else {
            return;
        };
        match cmd {
            HubCmd::Join { member, since } => {
                let graph = member.graph.clone();
                if let Some(HubCmd::Join { member, since }) =
                    self.open(&graph, HubCmd::Join { member, since }, true)
                {
                    self.join(member, since);
                }
            }
            HubCmd::Leave { graph, session } => self.leave(&graph, session),
            HubCmd::Resync {
                graph,
                session,
                since,
            } => {
                let Some(entry) = self.graphs.get(&graph) else {
                    return;
                };
                let Some(member) = entry.roster.member(session) else {
                    return;
                };
                let sync = sync_of(&entry.owner, since.as_ref(), member.view.as_deref());
                let msg = ShardMsg::Sync {
                    session,
                    sync: entry.subs.sync(session, sync, &entry.owner),
                    presence: entry.roster.others(session),
                    heartbeat_ms: self.heartbeat_ms,
                };
                self.shards[member.shard].send(msg);
            }
            HubCmd::Mutate {
                graph,
                origin,
                mutation_id,
                body,
            } => self.mutate(&graph, origin, |owner, origin| {
                owner.submit(origin, &mutation_id, body, now_ms())
            }),
            HubCmd::Refuse {
                graph,
                origin,
                mutation_id,
                reason,
                message,
            } => self.mutate(&graph, origin, |owner, origin| {
                owner.refuse(origin, &mutation_id, reason, message, now_ms())
            }),
            HubCmd::Presence {
                graph,
                session,
                body,
            } => self.presence(&graph, session, body),
            HubCmd::Subscribe {
                graph,
                session,
                body,
            } => {
                let Some(entry) = self.graphs.get_mut(&graph) else {
                    return;
                };
                let Some(member) = entry.roster.member(session) else {
                    return;
                };
                let shard = member.shard;
                for outcome in entry.subs.subscribe(member, body, &entry.owner) {
                    self.shards[shard].send(ShardMsg::Outcome { session, outcome });
                }
            }
            HubCmd::Snapshot { graph, reply } => {
                let name: Arc<str> = graph.as_str().into();
                if let Some(HubCmd::Snapshot { reply, .. }) =
                    self.open(&name, HubCmd::Snapshot { graph, reply }, false)
                {
                    let answer = match self.graphs.get(&name) {
                        Some(entry) => SnapshotReply::Graph(Box::new(entry.owner.sync(None))),
                        None => SnapshotReply::NotFound,
                    };
                    self.graphs.touch(&name, Instant::now());
                    let _ = reply.send(answer);
                }
            }
            cmd @ (HubCmd::Suggest { .. } | HubCmd::Share { .. } | HubCmd::Chaos { .. }) => {
                match self.when_built(cmd) {
                    Some(HubCmd::Suggest {
                        graph,
                        session,
                        id,
                        for_node,
                        limit,
                        access,
                    }) => self.suggest(&graph, session, id, &for_node, limit, &access),
                    Some(HubCmd::Share {
                        graph,
                        session,
                        id,
                        suggestions,
                    }) => self.share(&graph, session, id, suggestions),
                    Some(HubCmd::Chaos {
                        graph,
                        session,
                        intensity,
                    }) => self.chaos(&graph, session, intensity),
                    _ => {}
                }
            }
            HubCmd::Shutdown => {}
        }
    }

    /// A session joins its graph, which is open.
    fn join(&mut self, member: Member, since: Option<(u64, String)>) {
        let graph = member.graph.clone();
        let Some(entry) = self.graphs.get_mut(&graph) else {
            return;
        };
        let sync = sync_of(&entry.owner, since.as_ref(), member.view.as_deref());
        let presence = entry.roster.others(member.session);
        let (session, shard) = (member.session, member.shard);
        entry.roster.join(member);
        self.graphs.settle(&graph, Instant::now());
        self.shards[shard].send(ShardMsg::Sync {
            session,
            sync,
            presence,
            heartbeat_ms: self.heartbeat_ms,
        });
        self.noticed(&graph);
    }

    fn leave(&mut self, graph: &Arc<str>, session: SessionKey) {
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        entry.subs.leave(session);
        if entry.roster.leave(session) {
            self.graphs.settle(graph, Instant::now());
            self.noticed(graph);
        }
    }

    /// Hands a session's mutation to its graph's owner (`submit`) and
    /// routes what comes back: an ordered change waits for its commit, a
    /// reply goes straight to the session.
    fn mutate(
        &mut self,
        graph: &Arc<str>,
        origin: Origin,
        submit: impl FnOnce(&mut Owner, Origin) -> Submit,
    ) {
        let session = origin.session;
        let remote = self.cluster.as_ref().is_some_and(|m| m.is_remote(session));
        let Some(entry) = self.graphs.get_mut(graph) else {
            // A session always joins before it mutates; this is a race with
            // its own close.
            return;
        };
        let shard = entry.roster.member(session).map(|m| m.shard);
        if shard.is_none() && !remote {
            return;
        }
        match submit(&mut entry.owner, origin) {
            Submit::Ordered(_) => {
                if !self.dirty.contains(graph) {
                    self.dirty.push(graph.clone());
                }
            }
            Submit::Reply(outcome) => {
                if matches!(outcome.body, Body::UpdateRollback(_)) {
                    self.metrics.rollbacks.fetch_add(1, Relaxed);
                }
                match shard {
                    Some(shard) => self.shards[shard].send(ShardMsg::Outcome { session, outcome }),
                    None => self.answer_remote(graph, session, &outcome),
                }
            }
        }
    }

    /// Answers a `gonzai.suggestion` ask, making the graph's Gonzai from
    /// the committed snapshot the first time.
    fn suggest(
        &mut self,
        graph: &Arc<str>,
        session: SessionKey,
        id: String,
        for_node: &str,
        limit: u32,
        access: &Access,
    ) {
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        let Some(shard) = entry.roster.member(session).map(|m| m.shard) else {
            return;
        };
        let Some(gonzai) = entry.gonzai.as_mut() else {
            return;
        };
        let answer = if access.may_read(for_node) {
            gonzai.ask(Some(for_node), Some(limit))
        } else {
            Err(AskError::UnknownNode(for_node.to_string()))
        };
        let outcome = match answer {
            Ok(mut suggestions) => {
                suggestions.retain(|s| access.may_read(&s.target));
                stamped(
                    format!("g-{id}"),
                    Body::GonzaiSuggestion(GonzaiSuggestion {
                        for_node: Some(for_node.to_string()),
                        limit: None,
                        suggestions: Some(suggestions),
                    }),
                )
            }
            Err(AskError::Invalid(message)) | Err(AskError::UnknownNode(message)) => stamped(
                format!("e-g-{id}"),
                Body::SystemError(SystemError {
                    code: ErrorCode::Invalid,
                    message: format!("no suggestions: {message}"),
                    reference: Some(id),
                    retry_after_ms: None,
                }),
            ),
        };
        self.shards[shard].send(ShardMsg::Outcome { session, outcome });
    }

    /// `cmd` (an ask, a share or chaos) when its graph's Gonzai is ready;
    /// otherwise it waits for the build (started now if need be), or past
    /// [`MAX_WAITING_GONZAI`] an ask is answered `rate_limited`.
    fn when_built(&mut self, cmd: HubCmd) -> Option<HubCmd> {
        let graph: Arc<str> = cmd.graph()?.into();
        let entry = self.graphs.get(&graph)?;
        if entry.gonzai.is_some() {
            return Some(cmd);
        }
        let Some(building) = self.builds.get_mut(&graph) else {
            self.start_build(&graph, vec![cmd]);
            return None;
        };
        if building.waiting.len() < MAX_WAITING_GONZAI {
            building.waiting.push(cmd);
            return None;
        }
        let waited = u64::try_from(building.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let HubCmd::Suggest { session, id, .. } = cmd {
            let shard = entry.roster.member(session)?.shard;
            let outcome = stamped(
                format!("e-g-{id}"),
                Body::SystemError(SystemError {
                    code: ErrorCode::RateLimited,
                    message:
                        "link suggestions for this graph are being prepared; ask again shortly"
                            .into(),
                    reference: Some(id),
                    retry_after_ms: Some(waited.clamp(500, 5000)),
                }),
            );
            self.shards[shard].send(ShardMsg::Outcome { session, outcome });
        }
        None
    }

    /// Builds the Gonzai of an open graph from its committed snapshot on a
    /// thread of its own, so that the hub goes on meanwhile; `waiting` is
    /// handled when it is ready ([`Hub::built`]).
    fn start_build(&mut self, graph: &Arc<str>, waiting: Vec<HubCmd>) {
        let Some(entry) = self.graphs.get(graph) else {
            return;
        };
        let snapshot = entry.owner.sync(None);
        self.next_build += 1;
        let token = self.next_build;
        let (tx, delay, name) = (self.built_tx.clone(), self.build_delay, graph.clone());
        let spawned = std::thread::Builder::new()
            .name("gonzai-build".into())
            .spawn(move || {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let gonzai = Box::new(Gonzai::of(&snapshot));
                let _ = tx.send(Built {
                    graph: name,
                    token,
                    gonzai,
                });
            });
        if let Err(error) = spawned {
            // No thread to be had: build here, as before.
            tracing::warn!(%error, "no thread for Gonzai's build; building on the hub");
            let gonzai = Box::new(Gonzai::of(&entry.owner.sync(None)));
            self.builds.insert(
                graph.clone(),
                Building {
                    token,
                    changes: Vec::new(),
                    waiting,
                    since: Instant::now(),
                },
            );
            self.built(Built {
                graph: graph.clone(),
                token,
                gonzai,
            });
            return;
        }
        tracing::debug!(graph = &**graph, "building Gonzai");
        self.builds.insert(
            graph.clone(),
            Building {
                token,
                changes: Vec::new(),
                waiting,
                since: Instant::now(),
            },
        );
    }

    /// A graph's Gonzai is ready: the changes committed during its build
    /// are applied, then what waited for it is handled, in order.
    fn built(&mut self, built: Built) {
        if self
            .builds
            .get(&built.graph)
            .is_none_or(|b| b.token != built.token)
        {
            return;
        }
        let Some(building) = self.builds.remove(&built.graph) else {
            return;
        };
        let Some(entry) = self.graphs.get_mut(&built.graph) else {
            return;
        };
        let mut gonzai = *built.gonzai;
        for change in &building.changes {
            gonzai.apply(change);
        }
        tracing::debug!(
            graph = &*built.graph,
            ms = building.since.elapsed().as_millis() as u64,
            changes = building.changes.len(),
            "Gonzai built"
        );
        entry.gonzai = Some(gonzai);
        for cmd in building.waiting {
            self.handle(cmd);
        }
    }

    /// Relays suggestions a session shares to each other session focused
    /// within two links of its focus (nothing when it shows none), in a
    /// cluster the sessions of other nodes too; each sees only the
    /// suggestions whose target it may read ([`Hub::answer_local`]).
    fn share(
        &mut self,
        graph: &Arc<str>,
        session: SessionKey,
        id: String,
        shared: Vec<Suggestion>,
    ) {
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        if entry.roster.member(session).is_none() {
            return;
        }
        let mut watchers = entry.roster.watchers_everywhere();
        let Some(focus) = focus_of(&watchers, session) else {
            return;
        };
        let Some(gonzai) = entry.gonzai.as_mut() else {
            return;
        };
        let near = gonzai.near_sessions(&focus, session, &mut watchers);
        self.deliver(graph, near, |_| {
            stamped(
                format!("s-{id}"),
                Body::GonzaiSuggestion(GonzaiSuggestion {
                    for_node: None,
                    limit: None,
                    suggestions: Some(shared.clone()),
                }),
            )
        });
    }

    /// Spreads chaos from a session to those focused within two links of
    /// its focus, each with its chaos affinity; in a cluster, the sessions
    /// of other nodes too.
    fn chaos(&mut self, graph: &Arc<str>, session: SessionKey, intensity: f64) {
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        let Some(initiator) = entry.roster.member(session).map(|m| m.user_id.clone()) else {
            return;
        };
        let mut watchers = entry.roster.watchers_everywhere();
        let Some(focus) = focus_of(&watchers, session) else {
            return;
        };
        let Some(gonzai) = entry.gonzai.as_mut() else {
            return;
        };
        let reached = gonzai.chaos(&focus, session, &mut watchers, &mut self.chaos_rng);
        self.deliver(graph, reached, |to| {
            stamped(
                format!("x-{session}-{to}"),
                Body::ChaosTrigger(ChaosTrigger {
                    intensity: Some(intensity),
                    initiator: Some(initiator.clone()),
                    message: Some(CHAOS_MESSAGE.into()),
                }),
            )
        });
    }

    /// Sends each session `to` its `answer`: to its node when it is another
    /// node's (in a cluster), else through its shard.
    fn deliver(&self, graph: &str, to: Vec<SessionKey>, answer: impl Fn(SessionKey) -> Envelope) {
        for to in to {
            let outcome = answer(to);
            if self.cluster.as_ref().is_some_and(|m| m.is_remote(to)) {
                self.answer_remote(graph, to, &outcome);
            } else {
                self.answer_local(graph, to, outcome);
            }
        }
    }

    fn presence(&mut self, graph: &Arc<str>, session: SessionKey, body: Body) {
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        match entry.roster.update(session, body) {
            Some(envelope) => self.broadcast_ephemeral(graph, session, envelope),
            None if entry.roster.has_notices() => self.noticed(graph),
            None => {}
        }
    }

    /// Sends an ephemeral message to every session of the graph but `from`.
    fn broadcast_ephemeral(&self, graph: &Arc<str>, from: SessionKey, envelope: Envelope) {
        let Some(entry) = self.graphs.get(graph) else {
            return;
        };
        let kind = envelope.body.message_type();
        self.relay_ephemeral(graph, from, &envelope);
        let encoded = Arc::new(fanout::encode(&envelope, entry.roster.codecs()));
        for shard in entry.roster.shards() {
            self.shards[shard].send(ShardMsg::Ephemeral {
                graph: graph.clone(),
                from,
                kind,
                encoded: encoded.clone(),
            });
        }
    }

    fn flush_groups(&mut self) {
        for graph in self.dirty.drain(..) {
            if let Some(group) = self
                .graphs
                .get_mut(&graph)
                .and_then(|e| e.owner.take_group())
            {
                self.persister.submit(group);
            }
        }
    }

    fn persisted(&mut self, event: PersistEvent) {
        match event {
            PersistEvent::Committed {
                graph,
                upto,
                commit,
            } => {
                let Some(entry) = self.graphs.get_mut(graph.as_str()) else {
                    return;
                };
                let before = nodes_before(entry);
                let mut releases = std::mem::take(&mut self.releases);
                entry.owner.committed_into(upto, &commit, &mut releases);
                let entry = self.graphs.get(graph.as_str());
                if let Some(entry) = entry.filter(|_| !releases.is_empty()) {
                    let encoded = self.publish(&entry.owner, &commit, &releases);
                    let name: Arc<str> = graph.as_str().into();
                    self.release(&name, before, &mut releases, encoded);
                }
                releases.clear();
                self.releases = releases;
            }
            PersistEvent::Failed {
                graph,
                from_seq,
                error,
            } => {
                tracing::error!(%graph, from_seq, %error, "commit failed; rolling back uncommitted changes");
                self.metrics.commit_failures.fetch_add(1, Relaxed);
                let Some(entry) = self.graphs.get_mut(graph.as_str()) else {
                    return;
                };
                for (session, outcome) in entry.owner.commit_failed() {
                    self.metrics.rollbacks.fetch_add(1, Relaxed);
                    if let Some(member) = entry.roster.member(session) {
                        self.shards[member.shard].send(ShardMsg::Outcome { session, outcome });
                    }
                }
                self.graphs.settle(&graph, Instant::now());
            }
        }
    }
    /// Sends a committed group's changes: each outcome to its senders,
    /// each event (encoded once per codec, or as `published` by the
    /// graph's owner) to every shard with sessions on the graph; the
    /// regions, Gonzai and idleness follow. Takes the releases out of
    /// `releases`.
    fn release(
        &mut self,
        graph: &Arc<str>,
        before: gitmind_owner::Entities<gitmind_schema::model::Node>,
        releases: &mut Vec<gitmind_owner::Release>,
        published: Option<Vec<fanout::Encoded>>,
    ) {
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        // Gonzai: the model follows each change, and the sessions
        // looking at something near it may hear of it (sent after
        // the change itself, below).
        let watchers = if self.gonzai.discoveries {
            entry.roster.watchers()
        } else {
            Vec::new()
        };
        let start =
            entry.gonzai.is_none() && !watchers.is_empty() && !self.builds.contains_key(&**graph);
        if let Some(building) = self.builds.get_mut(&**graph) {
            // Being built from an earlier snapshot: these changes
            // are applied when it is ready (no discoveries till
            // then).
            building
                .changes
                .extend(releases.iter().map(|r| r.event().body.clone()));
        }
        let mut discoveries = Vec::new();
        if let Some(gonzai) = entry.gonzai.as_mut() {
            let now = Instant::now();
            for r in releases.iter() {
                gonzai.apply(&r.event().body);
                if !watchers.is_empty() {
                    discoveries.extend(gonzai.discover(
                        &self.gonzai,
                        r.seq,
                        r.event(),
                        &r.recipients,
                        &watchers,
                        now,
                    ));
                }
            }
        }
        let discoveries: Vec<(usize, SessionKey, Envelope)> = discoveries
            .into_iter()
            .filter_map(|(s, e)| Some((entry.roster.member(s)?.shard, s, e)))
            .collect();
        drop(watchers);
        let idle = entry.is_idle();
        self.metrics
            .changes_committed
            .fetch_add(releases.len() as u64, Relaxed);
        let mut cuts = entry
            .subs
            .committed(releases, &before, &entry.owner)
            .inspect(|cuts| {
                self.metrics.region_groups.fetch_add(1, Relaxed);
                self.metrics
                    .region_cuts_encoded
                    .fetch_add(cuts.encoded, Relaxed);
            })
            .unwrap_or_default();
        let (mut all, views) = (entry.roster.seeing_all(), entry.roster.views());
        for codec in [Codec::Json, Codec::Binary] {
            all[codec] = all[codec].saturating_sub(cuts.regional[codec]);
        }
        let mut per_change = std::mem::take(&mut cuts.cuts).into_iter();
        let mut extras = std::mem::take(&mut cuts.extras).into_iter();
        let mut published = published.map(Vec::into_iter);
        let items: Vec<_> = releases
            .drain(..)
            .map(|r| Released {
                groups: cuts.groups.clone(),
                cuts: per_change.next().unwrap_or_default(),
                extras: extras.next().unwrap_or_default(),
                seq: r.seq,
                recipients: r.recipients,
                // Each distinct view's event is filtered and encoded
                // once, like everyone else's.
                views: views
                    .iter()
                    .map(|(view, codecs)| {
                        let event = view.event(&r.record.event);
                        (view.clone(), event.map(|e| fanout::encode(&e, *codecs)))
                    })
                    .collect(),
                event: published
                    .as_mut()
                    .and_then(Iterator::next)
                    .unwrap_or_else(|| fanout::encode(&r.record.event, all)),
                change: r.record,
            })
            .collect();
        let items = Arc::new(items);
        let name = graph.clone();
        let at = Instant::now();
        for shard in entry.roster.shards() {
            self.shards[shard].send(ShardMsg::Committed {
                graph: name.clone(),
                items: items.clone(),
                at,
            });
        }
        for (shard, session, outcome) in discoveries {
            self.shards[shard].send(ShardMsg::Outcome { session, outcome });
        }
        if idle {
            self.graphs.settle(&name, at);
        }
        if start {
            self.start_build(&name, Vec::new());
        }
    }
}

/// The nodes of a graph before a group, for the regions (an O(1) clone
/// of the owner's persistent map; none when no session has regions).
fn nodes_before(entry: &Graph) -> gitmind_owner::Entities<gitmind_schema::model::Node> {
    match entry.owner.sync(None) {
        SyncData::Snapshot { nodes, .. } if !entry.subs.is_empty() => nodes,
        _ => Default::default(),
    }
}

/// The sync for a session, from its resume point, as its view sees it.
fn sync_of(owner: &Owner, since: Option<&(u64, String)>, view: Option<&View>) -> SyncData {
    let sync = owner.sync(since.map(|(seq, epoch)| (*seq, epoch.as_str())));
    match view {
        Some(view) => view.sync(sync),
        None => sync,
    }
}

/// A fresh epoch: 128 random bits in hex.
pub fn new_epoch() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The hub's command channel: bounded so a flood cannot grow memory.
pub fn channel(capacity: usize) -> (Sender<HubCmd>, Receiver<HubCmd>) {
    crossbeam::channel::bounded(capacity)
}

/// The focus of `session` among the graph's watchers (the sessions that
/// show one).
fn focus_of(watchers: &[Watcher<'_>], session: SessionKey) -> Option<String> {
    watchers
        .iter()
        .find(|w| w.session == session)
        .map(|w| w.focus.to_string())
}
