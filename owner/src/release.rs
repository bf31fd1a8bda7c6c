//! After ordering: handing changes to persistence in groups, releasing
//! them once committed (each outcome to its sender, each event to the
//! others), trimming the replay window, and undoing every uncommitted
//! change when a commit fails.

use std::sync::Arc;

use gitmind_schema::message::UpdateRollback;
use gitmind_schema::{Body, Envelope};

use crate::change::{ChangeRecord, Group, Write};
use crate::{Committed, FollowGap, Owner, Release, SessionKey};

impl Owner {
    /// The changes ordered since the last call, for the persistence thread.
    pub fn take_group(&mut self) -> Option<Group> {
        if self.taken >= self.pending.len() {
            return None;
        }
        let changes = self
            .pending
            .iter()
            .skip(self.taken)
            .map(|p| Arc::clone(&p.record))
            .collect();
        self.taken = self.pending.len();
        Some(Group {
            graph: self.graph.clone(),
            epoch: self.epoch.clone(),
            changes,
        })
    }

    /// Persistence wrote every change up to `upto` in git commit `commit`:
    /// releases their outcomes and events, in `seq` order.
    pub fn committed(&mut self, upto: u64, commit: &str) -> Vec<Release> {
        let mut releases = Vec::new();
        self.committed_into(upto, commit, &mut releases);
        releases
    }

    /// As [`Owner::committed`], appending to `releases`: a server that
    /// releases group after group keeps one vector for all of them.
    pub fn committed_into(&mut self, upto: u64, commit: &str, releases: &mut Vec<Release>) {
        let upto = upto.min(self.ordered_seq);
        if upto <= self.committed_seq {
            return;
        }
        releases.reserve(usize::try_from(upto - self.committed_seq).unwrap_or(0));
        while self.pending.front().is_some_and(|p| p.record.seq <= upto) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.taken = self.taken.saturating_sub(1);
            self.commit_writes(&p.record.writes);
            let record = with_commit(p.record, commit);
            self.committed_seq = record.seq;
            releases.push(Release {
                seq: record.seq,
                recipients: p.recipients,
                record: Arc::clone(&record),
            });
            self.window.changes.push_back(record);
        }
        self.trim_window();
    }

    /// A change ordered and committed by this graph's owner on another
    /// server (docs/scale-out.md): a follower's replica takes it into its
    /// committed graph and its replay window, so that its `graph.sync`
    /// answers as the owner's would. `None` for a change it already has;
    /// the release has no recipients (the caller knows who sent it).
    ///
    /// A replica never orders changes itself: its live graph is left as it
    /// was loaded, and a server that takes the graph over loads it anew.
    ///
    /// # Errors
    ///
    /// [`FollowGap`] when the change is not the next `seq`: changes were
    /// missed, and the replica must be loaded again.
    pub fn follow(
        &mut self,
        record: Arc<ChangeRecord>,
        commit: &str,
        now_ms: u64,
    ) -> Result<Option<Release>, FollowGap> {
        if record.seq <= self.committed_seq {
            return Ok(None);
        }
        if record.seq != self.committed_seq + 1 {
            return Err(FollowGap {
                have: self.committed_seq,
                got: record.seq,
            });
        }
        self.now_ms = self.now_ms.max(now_ms);
        self.commit_writes(&record.writes);
        self.committed_seq = record.seq;
        self.ordered_seq = record.seq;
        let record = with_commit(record, commit);
        let release = Release {
            seq: record.seq,
            recipients: Vec::new(),
            record: Arc::clone(&record),
        };
        self.idempotency
            .insert(&record.user_id, &record.mutation_id, record.seq);
        self.window.changes.push_back(record);
        self.trim_window();
        Ok(Some(release))
    }

    /// The committed changes after `since` that the replay window holds,
    /// as releases with no recipients: what a server that loaded the graph
    /// anew (a cluster's owner changed) sends the sessions it kept, which
    /// had seen the graph up to `since` (docs/scale-out.md, "Failover").
    /// Empty when the window does not reach back to `since`.
    pub fn releases_after(&self, since: u64) -> Vec<Release> {
        let Some(changes) = self.window.after(since) else {
            return Vec::new();
        };
        changes
            .map(|record| Release {
                seq: record.seq,
                recipients: Vec::new(),
                record: Arc::clone(record),
            })
            .collect()
    }

    /// Takes a change's writes into the committed graph.
    fn commit_writes(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Node(n) => put(&mut self.committed_nodes, &n.id, n),
                Write::NodeDeleted(id) => {
                    self.committed_nodes.remove(id.as_str());
                }
                Write::Edge(e) => {
                    put(
                        &mut self.committed_edges,
                        e.id.as_deref().unwrap_or_default(),
                        e,
                    );
                }
                Write::EdgeDeleted(id) => {
                    self.committed_edges.remove(id.as_str());
                }
            }
        }
    }

    /// Drops what the replay window no longer needs to hold.
    fn trim_window(&mut self) {
        let horizon = self.now_ms.saturating_sub(self.config.replay_ms);
        while self.window.changes.len() > self.config.replay_changes
            && self
                .window
                .changes
                .front()
                .is_some_and(|c| c.at_ms < horizon)
        {
            let Some(r) = self.window.changes.pop_front() else {
                break;
            };
            self.window.floor = r.seq;
            self.idempotency.remove(&r.user_id, &r.mutation_id, r.seq);
            for w in &r.writes {
                match w {
                    Write::Node(n) => {
                        if let Some(e) = self.live.nodes.get_mut(&n.id) {
                            e.text.trim(r.seq);
                        }
                    }
                    Write::NodeDeleted(id) => {
                        if self.live.node_tombs.get(id).is_some_and(|t| t.seq <= r.seq) {
                            self.live.node_tombs.remove(id);
                        }
                    }
                    Write::EdgeDeleted(id) => {
                        if self.live.edge_tombs.get(id).is_some_and(|t| t.seq <= r.seq) {
                            self.live.edge_tombs.remove(id);
                        }
                    }
                    Write::Edge(_) => {}
                }
            }
        }
    }

    /// Persistence could not write a group: undoes every uncommitted change
    /// (those of earlier groups not yet committed too, since later changes
    /// may build on them), so the live graph is the committed graph again
    /// and `seq` goes back to the committed `seq`. Returns an
    /// `update.rollback` with reason `unavailable` for each recipient of
    /// each undone change, oldest first. Why the commit failed is for the
    /// server's log, not for clients: the message says only what to do.
    pub fn commit_failed(&mut self) -> Vec<(SessionKey, Envelope)> {
        let mut out = Vec::new();
        while let Some(p) = self.pending.pop_back() {
            self.live.revert(p.undo);
            let r = &p.record;
            self.idempotency.remove(&r.user_id, &r.mutation_id, r.seq);
            for session in p.recipients.iter().rev() {
                self.rollbacks += 1;
                let body = UpdateRollback::unavailable(
                    r.mutation_id.clone(),
                    "the change could not be stored; nothing was applied, retry",
                    None,
                );
                let mut env =
                    Envelope::new(format!("r-{}", self.rollbacks), Body::UpdateRollback(body));
                env.timestamp = Some(self.now_ms);
                env.user_id = Some(r.user_id.clone());
                env.session_id = Some(r.session_id.clone());
                out.push((*session, env));
            }
        }
        out.reverse();
        self.taken = 0;
        self.ordered_seq = self.committed_seq;
        out
    }
}

/// Puts an entity into the committed graph; a new key is made only for an
/// entity that is not there yet (most changes update one that is).
fn put<T>(map: &mut Committed<T>, id: &str, entity: &Arc<T>) {
    match map.get_mut(id) {
        Some(slot) => *slot = Arc::clone(entity),
        None => {
            map.insert(Arc::from(id), Arc::clone(entity));
        }
    }
}

/// The record with its commit filled in: in place when the owner holds it
/// alone (persistence has let go of its group by the time it reports the
/// commit), else in a copy, so that no holder sees it change.
fn with_commit(mut record: Arc<ChangeRecord>, commit: &str) -> Arc<ChangeRecord> {
    if record.commit() != commit {
        Arc::make_mut(&mut record).fill_commit(commit);
    }
    record
}
