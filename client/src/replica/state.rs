//! The replica's state machine: a `graph.sync` replaces or advances the
//! server state, an event advances it by one `seq`, an outcome settles one
//! of this client's changes, and a local change joins the pending ones.

use gitmind_schema::message::{BatchOp, GraphSync, SyncMode, UpdateRollback};
use gitmind_schema::ot::TextOp;
use gitmind_schema::{Body, Envelope};

use super::store::{apply_own, apply_resolution, edge_id, ops_of, Graph, Op};
use super::text::{replacement, text_edited_nodes};
use super::{Pending, Replica, ReplicaError};

impl Replica {
    /// Takes a `graph.sync` from the server: a snapshot replaces the server
    /// state; a delta applies its events in order. Pending changes stay and
    /// are shown on top. Returns the changes that may be sent now (see
    /// [`Replica::local_mutation`]); send [`Replica::pending`] too after a
    /// reconnect.
    ///
    /// # Errors
    /// A delta for another epoch, or whose events do not follow the
    /// replica's `seq`: the connection layer asks for a snapshot.
    pub fn apply_sync(&mut self, sync: &GraphSync) -> Result<Vec<Envelope>, ReplicaError> {
        let seq = sync.seq.unwrap_or(0);
        match sync.mode {
            Some(SyncMode::Delta) => {
                let epoch = sync.epoch.clone().unwrap_or_default();
                if self.epoch.as_deref() != Some(epoch.as_str()) {
                    return Err(ReplicaError::EpochMismatch {
                        expected: self.epoch.clone(),
                        got: epoch,
                    });
                }
                for event in sync.events.iter().flatten() {
                    if event.seq.is_some_and(|s| s <= self.seq) {
                        continue;
                    }
                    self.apply_event(event)?;
                }
                // A delta in several chunks reaches `seq` with its last.
                if sync.is_last_chunk() && self.seq < seq {
                    return Err(ReplicaError::Gap {
                        expected: self.seq + 1,
                        got: seq,
                    });
                }
            }
            _ => {
                if sync.chunk.is_none_or(|c| c.index == 0) {
                    self.server = Graph::default();
                    for p in &mut self.pending {
                        if p.base != seq || self.epoch != sync.epoch {
                            p.broken = true;
                        }
                    }
                }
                for node in sync.nodes.iter().flatten() {
                    self.server.nodes.insert(node.id.clone(), node.clone());
                }
                for edge in sync.edges.iter().flatten() {
                    self.server.insert_edge(edge.clone());
                }
                self.epoch = sync.epoch.clone();
                self.seq = seq;
            }
        }
        self.view.take();
        Ok(self.release())
    }

    /// Applies one graph event from another session (or one of this
    /// client's own, replayed by a delta sync, which settles it). Returns
    /// the changes that may be sent now.
    ///
    /// # Errors
    /// A gap or a duplicate `seq`, or an event the server state cannot take:
    /// the connection layer resyncs.
    pub fn apply_event(&mut self, event: &Envelope) -> Result<Vec<Envelope>, ReplicaError> {
        let seq = event.seq.ok_or(ReplicaError::NoSeq)?;
        if seq <= self.seq {
            return Err(ReplicaError::Duplicate(seq));
        }
        if seq != self.seq + 1 && !self.partial {
            return Err(ReplicaError::Gap {
                expected: self.seq + 1,
                got: seq,
            });
        }
        let own = self.user_id.is_some()
            && event.user_id == self.user_id
            && self.pending.iter().any(|p| p.id == event.id);
        let ops: Vec<BatchOp> = match &event.body {
            Body::BatchUpdate(b) => b.ops.clone(),
            Body::NodeCreate(o) => vec![BatchOp::NodeCreate(o.clone())],
            Body::NodeUpdate(o) => vec![BatchOp::NodeUpdate(o.clone())],
            Body::NodeDelete(o) => vec![BatchOp::NodeDelete(o.clone())],
            Body::EdgeCreate(o) => vec![BatchOp::EdgeCreate(o.clone())],
            Body::EdgeUpdate(o) => vec![BatchOp::EdgeUpdate(o.clone())],
            Body::EdgeDelete(o) => vec![BatchOp::EdgeDelete(o.clone())],
            other => return Err(ReplicaError::Unexpected(other.message_type().name())),
        };
        if own {
            // Our own change, as the server applied it: the pending copy
            // goes, and nothing pending is rebased over it (later pending
            // changes were made on top of it).
            self.pending.retain(|p| p.id != event.id);
            for op in &ops {
                self.apply_event_op(op, false)?;
            }
        } else {
            for op in &ops {
                self.apply_event_op(op, true)?;
            }
        }
        self.seq = seq;
        for p in &mut self.pending {
            if !p.broken {
                p.base = seq;
            }
        }
        self.view.take();
        Ok(self.release())
    }

    /// Applies one op of an event to the server state; `rebase`: transform
    /// the pending text operations over its effect on text.
    fn apply_event_op(&mut self, op: &BatchOp, rebase: bool) -> Result<(), ReplicaError> {
        match op {
            BatchOp::NodeCreate(c) => {
                let content = c.node.content.clone().unwrap_or_default();
                self.server.nodes.insert(c.node.id.clone(), c.node.clone());
                if rebase && !content.is_empty() {
                    let mut r = TextOp::new();
                    r.insert(&content);
                    self.rebase_pending(&c.node.id, r, 0);
                }
            }
            BatchOp::NodeUpdate(u) => {
                let node = self.server.node_mut(&u.id)?;
                let before = node.content.clone().unwrap_or_default();
                if let Some(set) = &u.set {
                    node.apply_set(set);
                }
                let mut remote = None;
                if let Some(op) = u.text.as_ref().and_then(|t| t.content.as_ref()) {
                    let after = op.apply(&before).map_err(|e| {
                        ReplicaError::Diverged(format!("text of node `{}`: {e}", u.id))
                    })?;
                    node.content = Some(after);
                    remote = Some(op.clone());
                } else if let Some(new) = u.set.as_ref().and_then(|s| s.content.as_ref()) {
                    remote = Some(replacement(&before, new));
                }
                if let Some(rev) = u.rev {
                    node.rev = Some(rev);
                }
                if u.updated_at.is_some() {
                    node.updated_at = u.updated_at;
                }
                if u.updated_by.is_some() {
                    node.updated_by.clone_from(&u.updated_by);
                }
                if let (true, Some(r)) = (rebase, remote) {
                    self.rebase_pending(&u.id, r, 0);
                }
            }
            BatchOp::NodeDelete(d) => {
                // Its edges go with it (docs/protocol.md section 5).
                self.server.remove_node(&d.id);
                self.orphan_text(&d.id, 0);
            }
            BatchOp::EdgeCreate(c) => {
                let mut edge = c.edge.clone();
                edge.id = Some(edge_id(&edge));
                self.server.insert_edge(edge);
            }
            BatchOp::EdgeUpdate(u) => {
                let id = u
                    .edge_id()
                    .ok_or_else(|| ReplicaError::Diverged("edge.update without id".into()))?;
                let edge = self.server.edge_mut(&id)?;
                if let Some(set) = &u.set {
                    edge.apply_set(set);
                }
                if let Some(rev) = u.rev {
                    edge.rev = Some(rev);
                }
                if u.updated_at.is_some() {
                    edge.updated_at = u.updated_at;
                }
                if u.updated_by.is_some() {
                    edge.updated_by.clone_from(&u.updated_by);
                }
            }
            BatchOp::EdgeDelete(d) => {
                if let Some(id) = d.edge_id() {
                    self.server.remove_edge(&id);
                }
            }
        }
        Ok(())
    }

    /// Makes a change here: applies it at once on top of the server state
    /// and keeps it pending. Returns the envelope to send now, or `None`
    /// when it must wait (behind an in-flight text edit of the same node, or
    /// behind a change that waits); it then comes out of
    /// [`Replica::settle`]. `body`'s `baseSeq` is set by the replica.
    ///
    /// Text operations in `body` are relative to the text as
    /// [`Replica::node`] shows it.
    ///
    /// # Errors
    /// `body` is not one of the seven mutation types.
    pub fn local_mutation(
        &mut self,
        id: &str,
        body: Body,
    ) -> Result<Option<Envelope>, ReplicaError> {
        if !body.message_type().is_mutation() {
            return Err(ReplicaError::NotAMutation(body.message_type().name()));
        }
        // The first text operation on each node must fit the text as shown
        // (later ones in a batch apply to the text the earlier ones made).
        let mut seen: Vec<&str> = Vec::new();
        for op in ops_of(&body) {
            let Op::NodeUpdate(u) = op.op() else { continue };
            let Some(t) = u.text.as_ref().and_then(|t| t.content.as_ref()) else {
                continue;
            };
            if seen.contains(&u.id.as_str()) {
                continue;
            }
            seen.push(&u.id);
            if let Some(node) = self.node(&u.id) {
                let text = node.content.as_deref().unwrap_or("").chars().count() as u64;
                if t.base_len() != text {
                    return Err(ReplicaError::TextMismatch {
                        id: u.id.clone(),
                        op: t.base_len(),
                        text,
                    });
                }
            }
        }
        self.pending.push_back(Pending {
            id: id.to_owned(),
            body,
            base: self.seq,
            sent: false,
            broken: false,
        });
        self.view.take();
        Ok(self.release().pop())
    }

    /// The ids of waiting changes dropped without being sent since the last
    /// call (text edits of a node deleted under them): tell the user, as for
    /// a rollback.
    pub fn take_dropped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dropped)
    }

    /// The envelope of a pending change, with its current `baseSeq`.
    pub(super) fn envelope(&self, p: &Pending) -> Envelope {
        let mut body = p.body.clone();
        let base = Some(p.base);
        match &mut body {
            Body::NodeCreate(b) => b.base_seq = base,
            Body::NodeUpdate(b) => b.base_seq = base,
            Body::NodeDelete(b) => b.base_seq = base,
            Body::EdgeCreate(b) => b.base_seq = base,
            Body::EdgeUpdate(b) => b.base_seq = base,
            Body::EdgeDelete(b) => b.base_seq = base,
            Body::BatchUpdate(b) => b.base_seq = base,
            _ => {}
        }
        Envelope::new(p.id.clone(), body)
    }

    /// The changes sent and not yet settled, to send again after a
    /// reconnect (and after the sync that follows it): the server answers a
    /// repeat with its original outcome, so nothing is applied twice.
    pub fn pending(&self) -> Vec<Envelope> {
        self.pending
            .iter()
            .filter(|p| p.sent)
            .map(|p| self.envelope(p))
            .collect()
    }

    /// Takes the outcome of one of this client's changes: confirmed (keep
    /// it, with the text as the server applied it), conflict resolved (keep
    /// it, with the server's final values) or rolled back (undo it). Returns
    /// the changes that may be sent now.
    ///
    /// An outcome for a change the replica no longer holds (answered twice
    /// after a resend, or already seen in a sync) is ignored.
    ///
    /// # Errors
    /// The outcome's `seq` does not follow the replica's, or the change
    /// cannot be reproduced on the server state: resync.
    pub fn settle(&mut self, outcome: &Envelope) -> Result<Vec<Envelope>, ReplicaError> {
        let (reference, seq, text, resolution) = match &outcome.body {
            Body::UpdateConfirmed(c) => (&c.reference, Some(c.seq), c.text.as_ref(), None),
            Body::UpdateConflictResolved(c) => (
                &c.reference,
                Some(c.seq),
                c.text.as_ref(),
                Some(&c.resolution),
            ),
            Body::UpdateRollback(r) => (&r.reference, None, None, None),
            other => return Err(ReplicaError::Unexpected(other.message_type().name())),
        };
        let Some(index) = self.pending.iter().position(|p| p.id == *reference) else {
            return Ok(self.release());
        };
        match seq {
            None => {
                if let Body::UpdateRollback(r) = &outcome.body {
                    self.rolled_back(index, r);
                }
            }
            Some(seq) if seq <= self.seq => {
                // Already part of the server state (a sync brought it).
                self.pending.remove(index);
            }
            Some(seq) if seq != self.seq + 1 && !self.partial => {
                return Err(ReplicaError::Gap {
                    expected: self.seq + 1,
                    got: seq,
                });
            }
            Some(seq) => {
                let Some(p) = self.pending.remove(index) else {
                    return Ok(Vec::new());
                };
                let at = outcome.timestamp.unwrap_or(0);
                let user = outcome
                    .user_id
                    .clone()
                    .or_else(|| self.user_id.clone())
                    .unwrap_or_default();
                let server_text = text.and_then(|t| t.content.as_ref());
                let is_batch = matches!(p.body, Body::BatchUpdate(_));
                if p.broken && is_batch && !text_edited_nodes(&p.body).is_empty() {
                    self.view.take();
                    return Err(ReplicaError::Unreproducible(p.id));
                }
                let scratch = &mut self.server;
                for (i, op) in ops_of(&p.body).into_iter().enumerate() {
                    let text = if is_batch { None } else { server_text };
                    apply_own(scratch, op, seq, at, &user, text)?;
                    if let Some(r) = resolution {
                        let r = if is_batch {
                            r.ops
                                .iter()
                                .flatten()
                                .find(|o| o.index as usize == i)
                                .map(|o| &o.resolution)
                        } else {
                            Some(r)
                        };
                        if let Some(r) = r {
                            apply_resolution(scratch, op, r);
                        }
                    }
                }
                self.seq = seq;
                for p in &mut self.pending {
                    if !p.broken {
                        p.base = seq;
                    }
                }
                for op in ops_of(&p.body) {
                    if let Op::NodeDelete(d) = op.op() {
                        self.orphan_text(&d.id, 0);
                    }
                }
            }
        }
        self.view.take();
        Ok(self.release())
    }

    /// Undoes a rolled-back change: it leaves pending, and the text edits
    /// waiting behind it on the same nodes are transformed over its undoing.
    fn rolled_back(&mut self, index: usize, _rollback: &UpdateRollback) {
        let Some(p) = self.pending.remove(index) else {
            return;
        };
        self.undo_under(&p.body, index);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use gitmind_schema::message::{Chunk, NodeDelete, UpdateConflictResolved};
    use gitmind_schema::model::Resolution;

    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn local_change_shows_at_once_and_is_sent_with_base_seq() {
        let mut r = synced();
        let env = r
            .local_mutation("m1", label("c:a", "mine"))
            .unwrap()
            .unwrap();
        assert!(matches!(&env.body, Body::NodeUpdate(u) if u.base_seq == Some(1)));
        assert_eq!(r.node("c:a").unwrap().label.as_deref(), Some("mine"));
        assert_eq!(r.server_nodes().next().unwrap().label.as_deref(), Some("a"));
        assert_eq!(r.pending().len(), 1);
    }

    #[test]
    fn confirmed_change_joins_the_server_state_with_server_fields() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        r.settle(&confirmed("m1", 2, None)).unwrap();
        let n = r.server_nodes().next().unwrap();
        assert_eq!(
            (
                n.label.as_deref(),
                n.rev,
                n.updated_at,
                n.updated_by.as_deref()
            ),
            (Some("mine"), Some(2), Some(500), Some("me"))
        );
        assert_eq!((r.server_seq(), r.pending_count()), (2, 0));
    }

    #[test]
    fn rollback_leaves_exactly_the_server_state() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        r.local_mutation(
            "m2",
            Body::NodeDelete(NodeDelete {
                id: "c:a".into(),
                ..NodeDelete::default()
            }),
        )
        .unwrap();
        assert!(r.node("c:a").is_none());
        r.settle(&rollback("m2")).unwrap();
        r.settle(&rollback("m1")).unwrap();
        assert_eq!(r.node("c:a"), r.server_nodes().next());
        assert_eq!(r.pending_count(), 0);
    }

    #[test]
    fn conflict_resolved_takes_the_resolution() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        let mut e = Envelope::new(
            "o-2",
            Body::UpdateConflictResolved(UpdateConflictResolved {
                reference: "m1".into(),
                seq: 2,
                commit: "c".into(),
                rev: Some(2),
                conflicts: vec![],
                resolution: Resolution {
                    label: Some("final".into()),
                    ..Resolution::default()
                },
                text: None,
            }),
        );
        e.seq = Some(2);
        r.settle(&e).unwrap();
        assert_eq!(r.node("c:a").unwrap().label.as_deref(), Some("final"));
    }

    #[test]
    fn events_out_of_order_are_errors() {
        let mut r = synced();
        let ev = |seq| event("x", "other", seq, label("c:a", "o"));
        assert_eq!(
            r.apply_event(&ev(3)),
            Err(ReplicaError::Gap {
                expected: 2,
                got: 3
            })
        );
        r.apply_event(&ev(2)).unwrap();
        assert_eq!(r.apply_event(&ev(2)), Err(ReplicaError::Duplicate(2)));
    }

    #[test]
    fn own_event_replayed_by_a_delta_settles_the_change() {
        let mut r = synced();
        r.local_mutation("m1", label("c:a", "mine")).unwrap();
        let ev = event("m1", "me", 2, label("c:a", "mine"));
        r.apply_sync(&GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some("e".into()),
            seq: Some(2),
            events: Some(vec![ev]),
            ..GraphSync::default()
        })
        .unwrap();
        assert_eq!(r.pending_count(), 0);
        // The idempotent answer to the resend changes nothing.
        r.settle(&confirmed("m1", 2, None)).unwrap();
        assert_eq!(r.server_seq(), 2);
    }

    #[test]
    fn a_delta_in_chunks_reaches_its_seq_with_the_last_and_a_short_one_is_a_gap() {
        let chunk = |index, events: Vec<Envelope>| GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some("e".into()),
            seq: Some(3),
            events: Some(events),
            chunk: Some(Chunk { index, count: 2 }),
            ..GraphSync::default()
        };
        let mut r = synced();
        r.apply_sync(&chunk(0, vec![event("x", "you", 2, label("c:a", "two"))]))
            .unwrap();
        assert_eq!(r.server_seq(), 2);
        r.apply_sync(&chunk(1, vec![event("y", "you", 3, label("c:a", "three"))]))
            .unwrap();
        assert_eq!(r.server_seq(), 3);
        assert_eq!(
            r.node("c:a").and_then(|n| n.label.clone()).as_deref(),
            Some("three")
        );

        // A last chunk that stops short of `seq` leaves a gap.
        let mut r = synced();
        r.apply_sync(&chunk(0, vec![])).unwrap();
        assert!(matches!(
            r.apply_sync(&chunk(1, vec![event("x", "you", 2, label("c:a", "two"))])),
            Err(ReplicaError::Gap {
                expected: 3,
                got: 3
            })
        ));
    }

    #[test]
    fn delta_for_another_epoch_is_refused() {
        let mut r = synced();
        let sync = GraphSync {
            mode: Some(SyncMode::Delta),
            epoch: Some("other".into()),
            seq: Some(1),
            ..GraphSync::default()
        };
        assert!(matches!(
            r.apply_sync(&sync),
            Err(ReplicaError::EpochMismatch { .. })
        ));
    }

    #[test]
    fn only_mutations_are_local_changes() {
        let mut r = synced();
        assert_eq!(
            r.local_mutation("m", Body::GraphSync(GraphSync::default())),
            Err(ReplicaError::NotAMutation("graph.sync"))
        );
    }
}
