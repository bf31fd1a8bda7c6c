//! The hub's side of the cluster (docs/scale-out.md): which graphs it owns
//! and which it follows, mutations forwarded both ways, groups published
//! and followed. Nothing here runs without `--cluster`.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitmind_owner::{Origin, Owner, Release, SessionKey};
use gitmind_schema::message::{PresenceState, PresenceStatus, UpdateRollback, UserPresence};
use gitmind_schema::{Body, Envelope};

use super::{Hub, HubCmd};
use crate::cluster::wire::{self, Change, Forward, Group, Lease, News, Presence, Reply, WireWrite};
use crate::cluster::{Cluster, ClusterCmd, ClusterEvent};
use crate::fanout::{Encoded, Refusal, ShardMsg};
use crate::persist::Loaded;
use crate::stamp::now_ms;

/// The first key given to a session of another node: far above the keys
/// this server gives its own sessions.
const FIRST_REMOTE_KEY: SessionKey = 1 << 62;

/// How long the sessions of another node stay listed on a graph after its
/// last word about them (it tells every second while it has some).
const PRESENCE_TTL: Duration = Duration::from_secs(3);

/// What the hub keeps of the cluster.
pub(super) struct Membership {
    pub link: Cluster,
    pub events: crossbeam::channel::Receiver<ClusterEvent>,
    /// The role of each graph open or being opened here.
    roles: HashMap<Arc<str>, Role>,
    /// Sessions of other nodes whose mutations this node ordered, by the
    /// key the owner knows them by, and back.
    remote: HashMap<SessionKey, (Arc<str>, SessionKey)>,
    keys: HashMap<(Arc<str>, SessionKey), SessionKey>,
    next_remote: SessionKey,
    /// Mutations of this node's sessions forwarded to their graph's owner
    /// and not answered yet, by session and mutation id: sent again to
    /// the next owner when the owner changes (its idempotency answers one
    /// already committed with its outcome).
    pending: HashMap<Arc<str>, HashMap<(SessionKey, String), Forwarded>>,
    /// Graphs loaded again from git because their owner changed, with
    /// what waits for it: their mutations and the groups followed.
    reloading: HashMap<Arc<str>, Vec<Waiting>>,
    /// When each other node last told of its sessions on each graph.
    heard: HashMap<Arc<str>, HashMap<Arc<str>, Instant>>,
}

/// A mutation forwarded and not answered yet.
struct Forwarded {
    forward: Forward,
    /// When it was first forwarded.
    at: Instant,
}

/// What waits for a graph being loaded again.
enum Waiting {
    Cmd(Box<HubCmd>),
    Group(Box<Group>),
}

/// A graph's role on this node.
#[derive(Debug, Clone)]
enum Role {
    /// This node holds the lease: it orders, commits and publishes.
    Owner {
        /// The epoch for a graph git has nothing of.
        epoch: String,
    },
    /// Another node holds it: this node keeps a replica from its stream.
    Follower {
        /// The owner's node.
        owner: String,
        /// The epoch for a graph git has nothing of.
        epoch: String,
    },
    /// This node held the lease and could not renew it: it orders nothing
    /// more of the graph.
    Lost,
}

impl Role {
    /// The role a lease gives this node.
    fn of(lease: Lease, mine: bool) -> Role {
        if mine {
            Role::Owner { epoch: lease.epoch }
        } else {
            Role::Follower {
                owner: lease.node,
                epoch: lease.epoch,
            }
        }
    }
}

impl Membership {
    pub fn new(link: Cluster, events: crossbeam::channel::Receiver<ClusterEvent>) -> Self {
        Membership {
            link,
            events,
            roles: HashMap::new(),
            remote: HashMap::new(),
            keys: HashMap::new(),
            next_remote: FIRST_REMOTE_KEY,
            pending: HashMap::new(),
            reloading: HashMap::new(),
            heard: HashMap::new(),
        }
    }

    /// The key this node gives a session of another node.
    fn remote_key(&mut self, node: &str, session: SessionKey) -> SessionKey {
        let node: Arc<str> = node.into();
        if let Some(&key) = self.keys.get(&(node.clone(), session)) {
            return key;
        }
        let key = self.next_remote;
        self.next_remote += 1;
        self.keys.insert((node.clone(), session), key);
        self.remote.insert(key, (node, session));
        key
    }

    /// The node and session behind a key: this node's own for a local one.
    fn recipient(&self, key: SessionKey) -> (String, SessionKey) {
        match self.remote.get(&key) {
            Some((node, session)) => (node.to_string(), *session),
            None => (self.link.node().to_string(), key),
        }
    }

    /// Counts the graphs owned and followed into the metrics.
    fn count_roles(&self, metrics: &crate::metrics::Metrics) {
        let owned = self
            .roles
            .values()
            .filter(|r| matches!(r, Role::Owner { .. }))
            .count();
        let followed = self
            .roles
            .values()
            .filter(|r| matches!(r, Role::Follower { .. }))
            .count();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics.cluster.graphs_owned.store(gauge(owned), Relaxed);
        metrics
            .cluster
            .graphs_followed
            .store(gauge(followed), Relaxed);
    }

    /// Whether a key is a session of another node.
    pub fn is_remote(&self, key: SessionKey) -> bool {
        self.remote.contains_key(&key)
    }

    /// Relays the joins, leaves and presence changes of this node's
    /// sessions in a digest to the other nodes.
    pub fn relay_notices(&self, graph: &str, notices: &[(SessionKey, Envelope)]) {
        let ours: Vec<(SessionKey, String)> = notices
            .iter()
            .filter(|(key, _)| !self.is_remote(*key))
            .map(|(key, notice)| (*key, wire::json_text(notice)))
            .collect();
        if !ours.is_empty() {
            self.tell(graph, News::Notices(ours));
        }
    }

    /// Tells the other nodes of this node's sessions on `graph`.
    fn tell(&self, graph: &str, news: News) {
        self.link.send(ClusterCmd::Presence(Box::new(Presence {
            graph: graph.to_owned(),
            node: self.link.node().to_string(),
            news,
        })));
    }
}

impl Hub {
    /// In a cluster, a graph not open here is opened through its lease:
    /// the command waits while the lease is asked for, then the graph is
    /// loaded from git as owner or follower. `false` without a cluster.
    pub(super) fn open_clustered(&mut self, graph: &Arc<str>, cmd: HubCmd) -> Option<HubCmd> {
        let Some(member) = self.cluster.as_ref() else {
            return Some(cmd);
        };
        member.link.send(ClusterCmd::Acquire {
            graph: graph.clone(),
            epoch: super::new_epoch(),
        });
        self.graphs.start_loading(graph.clone(), cmd);
        None
    }

    /// The epoch of a graph git has nothing of: in a cluster, the lease's.
    pub(super) fn epoch_for_new(&self, graph: &str) -> String {
        match self.cluster.as_ref().and_then(|m| m.roles.get(graph)) {
            Some(Role::Owner { epoch } | Role::Follower { epoch, .. }) => epoch.clone(),
            _ => super::new_epoch(),
        }
    }

    /// A graph was loaded: an owned one stays open while the lease is
    /// held, a followed one follows its owner's stream.
    pub(super) fn opened_clustered(&mut self, graph: &Arc<str>) {
        let Some(member) = self.cluster.as_ref() else {
            return;
        };
        match member.roles.get(graph) {
            Some(Role::Owner { .. }) => {
                if let Some(entry) = self.graphs.get_mut(graph) {
                    entry.pinned = true;
                }
            }
            Some(Role::Follower { owner, epoch }) => member.link.send(ClusterCmd::Follow {
                graph: graph.clone(),
                lease: Lease {
                    node: owner.clone(),
                    epoch: epoch.clone(),
                },
            }),
            _ => {}
        }
    }

    /// A graph was released here.
    pub(super) fn unloaded_clustered(&mut self, graph: &str) {
        if let Some(member) = self.cluster.as_mut() {
            member.roles.remove(graph);
            member.count_roles(&self.metrics);
            member.pending.remove(graph);
            member.reloading.remove(graph);
            member.heard.remove(graph);
            member.link.send(ClusterCmd::Unfollow {
                graph: graph.into(),
            });
            member.link.send(ClusterCmd::Disown {
                graph: graph.into(),
            });
        }
    }

    /// A mutation of a graph another node owns goes there; `Some` gives it
    /// back to be ordered here.
    pub(super) fn forward(&mut self, cmd: HubCmd) -> Option<HubCmd> {
        let Some(member) = self.cluster.as_mut() else {
            return Some(cmd);
        };
        let (HubCmd::Mutate { graph, origin, .. } | HubCmd::Refuse { graph, origin, .. }) = &cmd
        else {
            return Some(cmd);
        };
        if let Some(waiting) = member.reloading.get_mut(graph) {
            waiting.push(Waiting::Cmd(Box::new(cmd)));
            return None;
        }
        let owner = match member.roles.get(graph) {
            Some(Role::Follower { owner, .. }) => owner.clone(),
            Some(Role::Lost) => {
                let (graph, origin) = (graph.clone(), origin.clone());
                let id = match cmd {
                    HubCmd::Mutate { mutation_id, .. } | HubCmd::Refuse { mutation_id, .. } => {
                        mutation_id
                    }
                    _ => return None,
                };
                self.answer_local(&graph, origin.session, unavailable(&id, &origin));
                return None;
            }
            _ => return Some(cmd),
        };
        let in_roster = self
            .graphs
            .get(graph)
            .is_some_and(|e| e.roster.member(origin.session).is_some());
        if !in_roster {
            return None;
        }
        let node = member.link.node().to_string();
        let (graph, origin, mutation_id, envelope, refused) = match cmd {
            HubCmd::Mutate {
                graph,
                origin,
                mutation_id,
                body,
            } => {
                let envelope = wire::json_text(&Envelope::new(mutation_id.clone(), body));
                (graph, origin, mutation_id, Some(envelope), None)
            }
            HubCmd::Refuse {
                graph,
                origin,
                mutation_id,
                reason,
                message,
            } => (graph, origin, mutation_id, None, Some((reason, message))),
            _ => return None,
        };
        let forward = Forward {
            graph: graph.to_string(),
            node,
            session: origin.session,
            session_id: origin.session_id,
            user_id: origin.user_id,
            mutation_id,
            envelope,
            refused,
        };
        let at = Instant::now();
        member
            .pending
            .entry(forward.graph.as_str().into())
            .or_default()
            .entry((forward.session, forward.mutation_id.clone()))
            .or_insert_with(|| Forwarded {
                forward: forward.clone(),
                at,
            });
        self.metrics.cluster.forwarded.fetch_add(1, Relaxed);
        member.link.send(ClusterCmd::Forward {
            to: owner,
            forward: Box::new(forward),
        });
        None
    }

    /// Sends an answer to a session of this node. Shared suggestions come
    /// with every target: the session sees only those it may read, and
    /// nothing when it may read none of them.
    pub(super) fn answer_local(&self, graph: &str, session: SessionKey, mut outcome: Envelope) {
        let Some(member) = self
            .graphs
            .get(graph)
            .and_then(|e| e.roster.member(session))
        else {
            return;
        };
        if let (Body::GonzaiSuggestion(g), Some(view)) = (&mut outcome.body, &member.view) {
            if let Some(suggestions) = &mut g.suggestions {
                suggestions.retain(|s| view.sees(&s.target));
                if suggestions.is_empty() && g.for_node.is_none() {
                    return;
                }
            }
        }
        self.shards[member.shard].send(ShardMsg::Outcome { session, outcome });
    }

    /// An immediate answer (a rollback, a repeat's outcome) to a session
    /// of another node.
    pub(super) fn answer_remote(&self, graph: &str, key: SessionKey, outcome: &Envelope) {
        let Some(member) = self.cluster.as_ref() else {
            return;
        };
        let (node, session) = member.recipient(key);
        member.link.send(ClusterCmd::Reply {
            to: node,
            reply: Reply {
                graph: graph.to_owned(),
                session,
                envelope: wire::json_text(outcome),
            },
        });
    }

    /// Relays a cursor or a selection of a session of this node to the
    /// other nodes (one from another node is not relayed again).
    pub(super) fn relay_ephemeral(&self, graph: &str, from: SessionKey, envelope: &Envelope) {
        let Some(member) = self.cluster.as_ref() else {
            return;
        };
        if member.is_remote(from) {
            return;
        }
        member.tell(graph, News::Ephemeral(from, wire::json_text(envelope)));
    }

    /// Every second: tells the other nodes of this node's sessions on each
    /// graph open here, and drops the sessions of nodes not heard from
    /// for [`PRESENCE_TTL`] (dead, or cut off).
    fn beat(&mut self) {
        let Some(member) = self.cluster.as_mut() else {
            return;
        };
        let now = Instant::now();
        for graph in member.roles.keys() {
            let Some(entry) = self.graphs.get(graph) else {
                continue;
            };
            let local = entry.roster.local();
            if !local.is_empty() {
                member.tell(graph, News::Roster(local));
            }
        }
        let mut gone: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for (graph, nodes) in &mut member.heard {
            nodes.retain(|node, at| {
                let alive = now.duration_since(*at) < PRESENCE_TTL;
                if !alive {
                    gone.push((graph.clone(), node.clone()));
                }
                alive
            });
        }
        for (graph, node) in gone {
            tracing::debug!(
                graph = &*graph,
                node = &*node,
                "a node's sessions are dropped"
            );
            self.roster_of(&graph, &node, &[]);
        }
    }

    /// News from another node of its sessions on a graph open here.
    fn presence_from(&mut self, p: Presence) {
        let graph: Arc<str> = p.graph.as_str().into();
        let Some(member) = self.cluster.as_mut() else {
            return;
        };
        let Some(entry) = self.graphs.get_mut(&graph) else {
            return;
        };
        let node: Arc<str> = p.node.as_str().into();
        member
            .heard
            .entry(graph.clone())
            .or_default()
            .insert(node.clone(), Instant::now());
        match p.news {
            News::Ephemeral(session, text) => {
                let from = member.remote_key(&node, session);
                match wire::envelope(&text) {
                    Ok(envelope) => {
                        entry.roster.update(from, envelope.body.clone());
                        self.broadcast_ephemeral(&graph, from, envelope);
                    }
                    Err(e) => tracing::warn!(error = %e, "malformed presence from another node"),
                }
                return;
            }
            News::Notices(notices) => {
                for (session, text) in notices {
                    let key = member.remote_key(&node, session);
                    let notice = match wire::envelope(&text) {
                        Ok(notice) => notice,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed presence from another node");
                            continue;
                        }
                    };
                    let Body::UserPresence(presence) = notice.body else {
                        continue;
                    };
                    match presence.status {
                        PresenceStatus::Joined => {
                            let session_id = notice.session_id.unwrap_or_default();
                            match entry.roster.remote(key) {
                                // Told already by the node's roster.
                                Some(had) if had.session_id == session_id => continue,
                                // A key reused by a node restarted under
                                // the same name: another session.
                                Some(_) => {
                                    entry.roster.depart(key);
                                }
                                None => {}
                            }
                            entry.roster.arrive(
                                key,
                                PresenceState {
                                    user_id: notice.user_id.unwrap_or_default(),
                                    session_id,
                                    presence: UserPresence {
                                        status: PresenceStatus::Active,
                                        ..presence
                                    },
                                    cursor: None,
                                    selection: None,
                                },
                            );
                        }
                        PresenceStatus::Left => {
                            entry.roster.depart(key);
                        }
                        _ => {
                            entry.roster.update(key, Body::UserPresence(presence));
                        }
                    }
                }
            }
            News::Roster(sessions) => {
                let sessions: Vec<(SessionKey, PresenceState)> = sessions
                    .into_iter()
                    .map(|(session, state)| (member.remote_key(&node, session), state))
                    .collect();
                self.roster_of(&graph, &node, &sessions);
                return;
            }
        }
        if entry.roster.has_notices() {
            self.noticed(&graph);
        }
    }

    /// Makes the sessions of `node` listed on `graph` those it told of:
    /// the others leave, the new ones arrive, a presence that differs (a
    /// notice lost on the way) is changed.
    fn roster_of(
        &mut self,
        graph: &Arc<str>,
        node: &str,
        sessions: &[(SessionKey, PresenceState)],
    ) {
        let Some(member) = self.cluster.as_ref() else {
            return;
        };
        let Some(entry) = self.graphs.get_mut(graph) else {
            return;
        };
        let told: HashMap<SessionKey, &PresenceState> =
            sessions.iter().map(|(key, state)| (*key, state)).collect();
        let listed: Vec<SessionKey> = entry
            .roster
            .remote_sessions()
            .filter(|key| member.remote.get(key).is_some_and(|(n, _)| &**n == node))
            .collect();
        for key in listed {
            let same = match (entry.roster.remote(key), told.get(&key)) {
                (Some(had), Some(now)) => had.session_id == now.session_id,
                _ => false,
            };
            if !same {
                entry.roster.depart(key);
            }
        }
        for (key, state) in sessions {
            match entry.roster.remote(*key) {
                None => {
                    entry.roster.arrive(*key, state.clone());
                }
                Some(had) if had.presence != state.presence => {
                    entry
                        .roster
                        .update(*key, Body::UserPresence(state.presence.clone()));
                }
                Some(_) => {}
            }
        }
        if entry.roster.has_notices() {
            self.noticed(graph);
        }
    }

    /// Publishes a committed group of an owned graph, each event encoded
    /// once per codec; gives back the encodings for this node's own
    /// fan-out. `None` when not in a cluster.
    pub(super) fn publish(
        &self,
        owner: &Owner,
        commit: &str,
        releases: &[Release],
    ) -> Option<Vec<Encoded>> {
        let member = self.cluster.as_ref()?;
        if !matches!(member.roles.get(owner.graph()), Some(Role::Owner { .. })) {
            return None;
        }
        let changes: Vec<Change> = releases
            .iter()
            .map(|r| Change {
                seq: r.seq,
                at_ms: r.record.at_ms,
                user_id: r.record.user_id.clone(),
                session_id: r.record.session_id.clone(),
                mutation_id: r.record.mutation_id.clone(),
                outcome: wire::json_text(r.outcome()),
                writes: r.record.writes.iter().map(WireWrite::from).collect(),
                recipients: r.recipients.iter().map(|&k| member.recipient(k)).collect(),
                event: wire::encode_both(r.event()),
            })
            .collect();
        let encoded = changes.iter().map(|c| c.event.clone()).collect();
        member.link.send(ClusterCmd::Publish {
            group: Box::new(Group {
                graph: owner.graph().to_owned(),
                epoch: owner.epoch().to_owned(),
                commit: commit.to_owned(),
                changes,
            }),
        });
        Some(encoded)
    }

    /// What the cluster thread tells.
    pub(super) fn clustered(&mut self, event: ClusterEvent) {
        let roles_change = matches!(
            event,
            ClusterEvent::Lease { .. }
                | ClusterEvent::LeaseLost { .. }
                | ClusterEvent::LeaseMoved { .. }
        );
        self.on_cluster_event(event);
        if let Some(member) = self.cluster.as_ref().filter(|_| roles_change) {
            member.count_roles(&self.metrics);
        }
    }

    fn on_cluster_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Lease { graph, lease, mine } => {
                let Some(member) = self.cluster.as_mut() else {
                    return;
                };
                if !self.graphs.is_loading(&graph) {
                    return;
                }
                let role = Role::of(lease, mine);
                tracing::info!(graph = &*graph, ?role, "graph opened in the cluster");
                member.roles.insert(graph.clone(), role);
                if mine {
                    self.persister.take_over(&graph, &self.loaded_tx);
                } else {
                    self.persister.load(&graph, &self.loaded_tx);
                }
            }
            ClusterEvent::NoLease { graph } => {
                tracing::error!(
                    graph = &*graph,
                    "no lease to be had; its sessions are closed"
                );
                if let Some((_, waiting)) = self.graphs.loaded(&graph) {
                    for cmd in waiting {
                        self.refuse(cmd, Refusal::LoadFailed);
                    }
                }
            }
            ClusterEvent::LeaseLost { graph } => {
                if let Some(member) = self.cluster.as_mut() {
                    member.roles.insert(graph, Role::Lost);
                }
            }
            ClusterEvent::LeaseMoved { graph, lease, mine } => self.lease_moved(graph, lease, mine),
            ClusterEvent::Forwarded(forward) => self.forwarded(*forward),
            ClusterEvent::Reply(reply) => match wire::envelope(&reply.envelope) {
                Ok(outcome) => {
                    if let (Some(member), Some(id)) = (self.cluster.as_mut(), reference(&outcome)) {
                        if let Some(p) = member.pending.get_mut(reply.graph.as_str()) {
                            if let Some(f) = p.remove(&(reply.session, id.to_owned())) {
                                self.metrics.cluster.forward_latency.record(f.at.elapsed());
                            }
                        }
                    }
                    if matches!(outcome.body, Body::UpdateRollback(_)) {
                        self.metrics.rollbacks.fetch_add(1, Relaxed);
                    }
                    self.answer_local(&reply.graph, reply.session, outcome);
                }
                Err(e) => tracing::warn!(error = %e, "malformed reply from another node"),
            },
            ClusterEvent::Presence(p) => self.presence_from(*p),
            ClusterEvent::Beat => self.beat(),
            ClusterEvent::Group(group) => {
                if let Some(waiting) = self
                    .cluster
                    .as_mut()
                    .and_then(|m| m.reloading.get_mut(group.graph.as_str()))
                {
                    waiting.push(Waiting::Group(group));
                    return;
                }
                self.followed(*group);
            }
        }
    }

    /// A followed graph's owner changed (it died, and this node or
    /// another took the lease over): the graph is loaded again from git,
    /// which holds everything the old owner committed, published or not;
    /// its mutations wait meanwhile ([`Hub::reloaded`]).
    fn lease_moved(&mut self, graph: Arc<str>, lease: Lease, mine: bool) {
        let Some(member) = self.cluster.as_mut() else {
            return;
        };
        if !member.roles.contains_key(&graph) || self.graphs.get(&graph).is_none() {
            return;
        }
        let role = Role::of(lease, mine);
        tracing::info!(
            graph = &*graph,
            ?role,
            "the graph's owner changed; loading it again"
        );
        member.roles.insert(graph.clone(), role);
        member.reloading.entry(graph.clone()).or_default();
        if mine {
            self.persister.take_over(&graph, &self.loaded_tx);
        } else {
            self.persister.load(&graph, &self.loaded_tx);
        }
    }

    /// A graph loaded again after its owner changed: the sessions kept here
    /// get what git holds beyond what they saw (the outcome to the senders
    /// waiting for one), then what waited is handled and the unanswered
    /// mutations go to the new owner. Gives back an answer that is not
    /// for such a graph.
    pub(super) fn reloaded(&mut self, answer: Loaded) -> Option<Loaded> {
        let Some(member) = self.cluster.as_mut() else {
            return Some(answer);
        };
        let Some(waiting) = member.reloading.remove(answer.graph.as_str()) else {
            return Some(answer);
        };
        let graph: Arc<str> = answer.graph.as_str().into();
        let owned = matches!(member.roles.get(&graph), Some(Role::Owner { .. }));
        let pending = member.pending.entry(graph.clone()).or_default();
        match (answer.result, self.graphs.get_mut(&graph)) {
            (Ok(Some(restored)), Some(entry)) => {
                let owner = Owner::restore(restored, self.owner_config.clone());
                if owner.epoch() != entry.owner.epoch() {
                    tracing::error!(graph = &*graph, "git holds another epoch than the replica");
                }
                let since = entry.owner.committed_seq();
                let before = super::nodes_before(entry);
                entry.owner = owner;
                entry.pinned = owned;
                let mut releases = entry.owner.releases_after(since);
                for r in &mut releases {
                    let senders: Vec<(SessionKey, String)> = pending
                        .iter()
                        .filter(|(_, f)| {
                            f.forward.mutation_id == r.record.mutation_id
                                && f.forward.user_id == r.record.user_id
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in senders {
                        if let Some(f) = pending.remove(&key) {
                            self.metrics.cluster.forward_latency.record(f.at.elapsed());
                        }
                        r.recipients.push(key.0);
                    }
                }
                tracing::info!(
                    graph = &*graph,
                    from = since,
                    to = entry.owner.committed_seq(),
                    owned,
                    "graph loaded again"
                );
                if !releases.is_empty() {
                    self.release(&graph, before, &mut releases, None);
                }
            }
            (Ok(_), Some(entry)) => entry.pinned = owned,
            (Ok(_), None) => {}
            (Err(error), _) => {
                tracing::error!(graph = &*graph, %error, "graph cannot be loaded again");
            }
        }
        for w in waiting {
            match w {
                Waiting::Cmd(cmd) => self.handle(*cmd),
                Waiting::Group(group) => self.followed(*group),
            }
        }
        self.resend(&graph);
        None
    }

    /// Sends the graph's unanswered forwarded mutations again: to this
    /// node's owner, or to the new owner's node.
    fn resend(&mut self, graph: &Arc<str>) {
        let Some(pending) = self.cluster.as_mut().and_then(|m| m.pending.remove(graph)) else {
            return;
        };
        for (_, Forwarded { forward: f, .. }) in pending {
            let origin = Origin {
                session: f.session,
                session_id: f.session_id.clone(),
                user_id: f.user_id.clone(),
            };
            if let Some(cmd) = command_of(f, origin) {
                self.handle(cmd);
            }
        }
    }

    /// A mutation a follower forwarded: ordered here if this node owns the
    /// graph, else answered `unavailable` (the client resends).
    fn forwarded(&mut self, f: Forward) {
        let graph: Arc<str> = f.graph.as_str().into();
        let owned = self
            .cluster
            .as_ref()
            .is_some_and(|m| matches!(m.roles.get(&graph), Some(Role::Owner { .. })))
            && self.graphs.get(&graph).is_some();
        let Some(member) = self.cluster.as_mut() else {
            return;
        };
        let key = member.remote_key(&f.node, f.session);
        let origin = Origin {
            session: key,
            session_id: f.session_id.clone(),
            user_id: f.user_id.clone(),
        };
        if !owned {
            let answer = unavailable(&f.mutation_id, &origin);
            return self.answer_remote(&graph, key, &answer);
        }
        let Some(cmd) = command_of(f, origin) else {
            return;
        };
        self.handle(cmd);
    }

    /// A committed group of a followed graph: the replica takes it, and
    /// this node's sessions get the published bytes.
    fn followed(&mut self, group: Group) {
        let Some(member) = self.cluster.as_ref() else {
            return;
        };
        if !matches!(
            member.roles.get(group.graph.as_str()),
            Some(Role::Follower { .. })
        ) {
            return;
        }
        let me = member.link.node().to_string();
        let mut pending = self
            .cluster
            .as_mut()
            .and_then(|m| m.pending.get_mut(group.graph.as_str()));
        let Some(entry) = self.graphs.get_mut(group.graph.as_str()) else {
            return;
        };
        if group.epoch != entry.owner.epoch() {
            tracing::error!(
                graph = group.graph,
                "a group of another epoch; the replica stops here"
            );
            return;
        }
        let before = super::nodes_before(entry);
        let mut releases = Vec::new();
        let mut encoded = Vec::new();
        for change in group.changes {
            let record = match change.record() {
                Ok(record) => Arc::new(record),
                Err(e) => return tracing::error!(error = %e, "malformed change in the stream"),
            };
            match entry.owner.follow(record, &group.commit, now_ms()) {
                Ok(Some(mut release)) => {
                    release.recipients = change
                        .recipients
                        .iter()
                        .filter(|(node, _)| *node == me)
                        .map(|&(_, session)| session)
                        .collect();
                    if let Some(p) = pending.as_mut() {
                        for &session in &release.recipients {
                            if let Some(f) = p.remove(&(session, change.mutation_id.clone())) {
                                self.metrics.cluster.forward_latency.record(f.at.elapsed());
                            }
                        }
                    }
                    releases.push(release);
                    encoded.push(change.event);
                }
                Ok(None) => {}
                Err(gap) => {
                    tracing::error!(graph = group.graph, %gap, "changes missed; the replica stops here");
                    break;
                }
            }
        }
        if releases.is_empty() {
            return;
        }
        let graph: Arc<str> = group.graph.into();
        self.release(&graph, before, &mut releases, Some(encoded));
    }
}

/// The command a forwarded mutation makes, from `origin`.
fn command_of(f: Forward, origin: Origin) -> Option<HubCmd> {
    let graph: Arc<str> = f.graph.as_str().into();
    match (f.envelope, f.refused) {
        (_, Some((reason, message))) => Some(HubCmd::Refuse {
            graph,
            origin,
            mutation_id: f.mutation_id,
            reason,
            message,
        }),
        (Some(text), None) => match wire::envelope(&text) {
            Ok(envelope) => Some(HubCmd::Mutate {
                graph,
                origin,
                mutation_id: f.mutation_id,
                body: envelope.body,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "malformed forwarded mutation");
                None
            }
        },
        (None, None) => None,
    }
}

/// The mutation an outcome answers.
fn reference(outcome: &Envelope) -> Option<&str> {
    match &outcome.body {
        Body::UpdateConfirmed(b) => Some(&b.reference),
        Body::UpdateConflictResolved(b) => Some(&b.reference),
        Body::UpdateRollback(b) => Some(&b.reference),
        _ => None,
    }
}

/// `update.rollback` `unavailable` for a mutation this node cannot order.
fn unavailable(mutation_id: &str, origin: &Origin) -> Envelope {
    let body = UpdateRollback::unavailable(
        mutation_id.to_owned(),
        "the graph's owner is changing; nothing was applied, retry",
        None,
    );
    let mut env = Envelope::new(format!("r-{mutation_id}"), Body::UpdateRollback(body));
    env.timestamp = Some(now_ms());
    env.user_id = Some(origin.user_id.clone());
    env.session_id = Some(origin.session_id.clone());
    env
}
