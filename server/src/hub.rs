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

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use gitmind_owner::change::Restored;
use gitmind_owner::{Origin, Owner, OwnerConfig, SessionKey, Submit, SyncData};
use gitmind_schema::message::RollbackReason;
use gitmind_schema::{Body, Envelope};

use crate::config::Config;
use crate::fanout::{self, Member, Released, ShardLink, ShardMsg};
use crate::metrics::Metrics;
use crate::persist::{PersistEvent, Persister};
use crate::presence::Roster;
use crate::stamp::now_ms;

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
        /// Where to send it; `None` when there is no such graph.
        reply: tokio::sync::oneshot::Sender<Option<SyncData>>,
    },
    /// Commit what is queued and stop.
    Shutdown,
}

/// A graph: its owner and the sessions on it.
struct GraphEntry {
    owner: Owner,
    roster: Roster,
}

/// The hub's state; [`Hub::run`] is its thread's body.
pub struct Hub {
    graphs: HashMap<Arc<str>, GraphEntry>,
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
}

impl Hub {
    /// A hub over the graphs persistence restored.
    pub fn new(
        restored: Vec<Restored>,
        shards: Vec<ShardLink>,
        persister: Persister,
        owner_config: OwnerConfig,
        metrics: Arc<Metrics>,
        config: &Config,
    ) -> Self {
        let shard_count = shards.len();
        let graphs = restored
            .into_iter()
            .map(|r| {
                let name: Arc<str> = r.graph.as_str().into();
                let owner = Owner::restore(r, owner_config.clone());
                (name, GraphEntry::new(owner, shard_count))
            })
            .collect();
        Hub {
            graphs,
            shards,
            persister,
            owner_config,
            metrics,
            heartbeat_ms: config.heartbeat_ms,
            presence_tick: Duration::from_millis(config.presence_tick_ms),
            dirty: Vec::new(),
            noticed: Vec::new(),
            digest_due: None,
        }
    }

    /// Runs until [`HubCmd::Shutdown`] or until every shard has hung up,
    /// then commits what is queued and stops persistence.
    pub fn run(mut self, commands: Receiver<HubCmd>, persisted: Receiver<PersistEvent>) {
        loop {
            let digest = match self.digest_due {
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
                recv(digest) -> _ => self.send_digests(),
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
            if self.digest_due.is_some_and(|at| Instant::now() >= at) {
                self.send_digests();
            }
        }
        self.stop();
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
        match cmd {
            HubCmd::Join { member, since } => self.join(member, since),
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
                let msg = ShardMsg::Sync {
                    session,
                    sync: sync_of(&entry.owner, since.as_ref()),
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
            HubCmd::Snapshot { graph, reply } => {
                let sync = self.graphs.get(graph.as_str()).map(|e| e.owner.sync(None));
                let _ = reply.send(sync);
            }
            HubCmd::Shutdown => {}
        }
    }

    fn join(&mut self, member: Member, since: Option<(u64, String)>) {
        let shard_count = self.shards.len();
        let graph = member.graph.clone();
        let entry = self.graphs.entry(graph.clone()).or_insert_with(|| {
            GraphEntry::new(
                Owner::new(&graph, new_epoch(), self.owner_config.clone()),
                shard_count,
            )
        });
        let sync = sync_of(&entry.owner, since.as_ref());
        let presence = entry.roster.others(member.session);
        let (session, shard) = (member.session, member.shard);
        entry.roster.join(member);
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
        if entry.roster.leave(session) {
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
        let Some(entry) = self.graphs.get_mut(graph) else {
            // A session always joins before it mutates; this is a race with
            // its own close.
            return;
        };
        let session = origin.session;
        let Some(shard) = entry.roster.member(session).map(|m| m.shard) else {
            return;
        };
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
                self.shards[shard].send(ShardMsg::Outcome { session, outcome });
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
                let releases = entry.owner.committed(upto, &commit);
                if releases.is_empty() {
                    return;
                }
                self.metrics
                    .changes_committed
                    .fetch_add(releases.len() as u64, Relaxed);
                let codecs = entry.roster.codecs();
                let items: Vec<_> = releases
                    .into_iter()
                    .map(|r| Released {
                        seq: r.seq,
                        recipients: r.recipients,
                        outcome: r.outcome,
                        event: fanout::encode(&r.event, codecs),
                    })
                    .collect();
                let items = Arc::new(items);
                let name: Arc<str> = graph.as_str().into();
                let at = Instant::now();
                for shard in entry.roster.shards() {
                    self.shards[shard].send(ShardMsg::Committed {
                        graph: name.clone(),
                        items: items.clone(),
                        at,
                    });
                }
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
            }
        }
    }
}

impl GraphEntry {
    fn new(owner: Owner, shards: usize) -> Self {
        GraphEntry {
            owner,
            roster: Roster::new(shards),
        }
    }
}

/// The sync for a session, from its resume point.
fn sync_of(owner: &Owner, since: Option<&(u64, String)>) -> SyncData {
    owner.sync(since.map(|(seq, epoch)| (*seq, epoch.as_str())))
}

/// A fresh epoch: 128 random bits in hex.
pub fn new_epoch() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The hub's command channel: bounded so a flood cannot grow memory.
pub fn channel(capacity: usize) -> (Sender<HubCmd>, Receiver<HubCmd>) {
    crossbeam::channel::bounded(capacity)
}
