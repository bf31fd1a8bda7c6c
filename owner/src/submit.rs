//! Taking a mutation (docs/protocol.md 4): answering a resent id with its
//! first outcome (4.4), checking, merging and applying the mutation, and
//! recording it as the next change; or refusing it, by one path, with
//! `update.rollback`.

use std::collections::HashMap;
use std::sync::Arc;

use gitmind_schema::message::PROTOCOL_VERSION;
use gitmind_schema::message::{
    BatchUpdate, RollbackReason, UpdateConfirmed, UpdateConflictResolved, UpdateRollback,
};
use gitmind_schema::model::{OpResolution, Resolution};
use gitmind_schema::{Body, Envelope};

use crate::change::{ChangeRecord, Write};
use crate::graph::{self, Actor, ActorInfo, Cx, OpRef};
use crate::validate::Refusal;
use crate::{Origin, Owner, Pending, Submit, MAX_CACHED_ACTORS};

impl Owner {
    /// Takes one mutation from `origin`: `body` is one of the seven mutation
    /// types (anything else is refused as `invalid`), `mutation_id` its
    /// envelope id, `now_ms` the server's clock (stored as the change's time).
    pub fn submit(
        &mut self,
        mut origin: Origin,
        mutation_id: &str,
        body: Body,
        now_ms: u64,
    ) -> Submit {
        let idem_key = self.idempotency.key(&origin.user_id, mutation_id);
        if let Some(answer) = self.settled_before(&origin, mutation_id, idem_key, now_ms) {
            return answer;
        }
        match self.order(&mut origin, mutation_id, &body, now_ms) {
            Ok(pending) => {
                let seq = pending.record.seq;
                self.idempotency.insert_by_key(idem_key, seq);
                self.pending.push_back(pending);
                self.ordered_seq = seq;
                Submit::Ordered(seq)
            }
            Err((refusal, index)) => self.rollback(&origin, mutation_id, now_ms, refusal, index),
        }
    }

    /// Checks a mutation, applies it to the live graph and records it as
    /// the next change; or says why not (and which op of a batch), with the
    /// live graph as it was. The change's record takes the origin's strings
    /// (they are left empty) when the change is ordered.
    fn order(
        &mut self,
        origin: &mut Origin,
        mutation_id: &str,
        body: &Body,
        now_ms: u64,
    ) -> Result<Pending, (Refusal, Option<u32>)> {
        let whole = |refusal| (refusal, None);
        let (base, batch) = match body {
            Body::NodeCreate(m) => (m.base_seq, None),
            Body::NodeUpdate(m) => (m.base_seq, None),
            Body::NodeDelete(m) => (m.base_seq, None),
            Body::EdgeCreate(m) => (m.base_seq, None),
            Body::EdgeUpdate(m) => (m.base_seq, None),
            Body::EdgeDelete(m) => (m.base_seq, None),
            Body::BatchUpdate(b) => (b.base_seq, Some(b)),
            other => {
                let message = format!("`{}` is not a mutation", other.message_type().name());
                return Err(whole(Refusal::invalid(message)));
            }
        };
        let base = base.ok_or_else(|| whole(Refusal::invalid("data.baseSeq is missing")))?;
        if base > self.ordered_seq {
            return Err(whole(Refusal::invalid(format!(
                "data.baseSeq {base} is ahead of the graph's seq {}",
                self.ordered_seq
            ))));
        }
        if let Some(b) = batch {
            if b.ops.is_empty() {
                return Err(whole(Refusal::invalid("batch.update has no ops")));
            }
            if b.ops.len() > self.config.max_batch_ops {
                return Err(whole(Refusal::too_large(format!(
                    "batch.update has {} ops; the limit is {}",
                    b.ops.len(),
                    self.config.max_batch_ops
                ))));
            }
        }
        let actor = self.actor(origin);
        let seq = self.ordered_seq + 1;
        let edge_types = std::mem::take(&mut self.config.edge_types);
        let mut cx = Cx {
            seq,
            at_ms: now_ms,
            base,
            actor: &actor,
            edge_types: &edge_types,
            index: None,
            undo: Vec::new(),
            writes: Vec::new(),
            text: HashMap::new(),
        };
        let result = match batch {
            None => op_of_body(body)
                .ok_or_else(|| whole(Refusal::invalid("not a mutation")))
                .and_then(|op| self.live.apply(&mut cx, op).map(Ops::One).map_err(whole)),
            Some(b) => self.apply_batch(&mut cx, b).map(Ops::Batch),
        };
        let Cx { undo, writes, .. } = cx;
        self.config.edge_types = edge_types;
        let applied = match result {
            Ok(applied) => applied,
            Err(refused) => {
                self.live.revert(undo);
                return Err(refused);
            }
        };
        let writes = if batch.is_some() {
            dedupe_writes(writes)
        } else {
            writes
        };
        let record = self.build_record(origin, mutation_id, seq, now_ms, applied, writes);
        if may_outgrow_a_frame(body) {
            if let Err(refusal) = self.fits_in_a_frame(&record) {
                self.live.revert(undo);
                // The record was just made: it is the only holder.
                if let Some(record) = Arc::into_inner(record) {
                    origin.user_id = record.user_id;
                    origin.session_id = record.session_id;
                }
                return Err(whole(refusal));
            }
        }
        Ok(Pending {
            record,
            undo,
            recipients: vec![origin.session],
        })
    }

    /// Applies every op of a batch, stopping at the first refusal.
    fn apply_batch(
        &mut self,
        cx: &mut Cx<'_>,
        batch: &BatchUpdate,
    ) -> Result<Vec<graph::Applied>, (Refusal, Option<u32>)> {
        let mut out = Vec::with_capacity(batch.ops.len());
        for (i, op) in batch.ops.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            cx.index = Some(index);
            let op = OpRef::of(op);
            match self.live.apply(cx, op) {
                Ok(a) => out.push(a),
                Err(mut r) => {
                    r.message = format!("op {i} ({}): {}", op.type_name(), r.message);
                    return Err((r, Some(index)));
                }
            }
        }
        Ok(out)
    }

    /// The original outcome of a repeated `(user, mutation id)`, if any.
    fn repeated(&mut self, origin: &Origin, mutation_id: &str, key: u64) -> Option<Submit> {
        let seq = self.idempotency.candidates_by_key(key).find(|seq| {
            self.record(*seq)
                .is_some_and(|r| r.user_id == origin.user_id && r.mutation_id == mutation_id)
        })?;
        if seq > self.committed_seq {
            let index = usize::try_from(seq - self.committed_seq - 1).ok()?;
            let pending = self.pending.get_mut(index)?;
            if !pending.recipients.contains(&origin.session) {
                pending.recipients.push(origin.session);
            }
            return Some(Submit::Ordered(seq));
        }
        let mut outcome = self.window.get(seq)?.outcome.clone();
        outcome.user_id = Some(origin.user_id.clone());
        outcome.session_id = Some(origin.session_id.clone());
        Some(Submit::Reply(outcome))
    }

    /// A mutation the server refused before it reached the owner (its data
    /// did not decode): answered like any refusal, and remembered, unless
    /// the id was settled already, in which case that first outcome is the
    /// answer (4.4). `reason` should not be transient (`unavailable`,
    /// `rate_limited`): those are not remembered.
    pub fn refuse(
        &mut self,
        origin: Origin,
        mutation_id: &str,
        reason: RollbackReason,
        message: String,
        now_ms: u64,
    ) -> Submit {
        let idem_key = self.idempotency.key(&origin.user_id, mutation_id);
        if let Some(answer) = self.settled_before(&origin, mutation_id, idem_key, now_ms) {
            return answer;
        }
        self.rollback(
            &origin,
            mutation_id,
            now_ms,
            Refusal::new(reason, message),
            None,
        )
    }

    /// Advances the clock and answers a `(user, mutation id)` (whose
    /// [`Idempotency::key`] is `key`) settled before, applied or refused,
    /// with its first outcome (4.4).
    fn settled_before(
        &mut self,
        origin: &Origin,
        mutation_id: &str,
        key: u64,
        now_ms: u64,
    ) -> Option<Submit> {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(applied) = self.repeated(origin, mutation_id, key) {
            return Some(applied);
        }
        let body = UpdateRollback::clone(self.refused.get(key, &origin.user_id, mutation_id)?);
        Some(self.rollback_envelope(origin, now_ms, body))
    }

    /// The record of change `seq`, pending or in the window.
    fn record(&self, seq: u64) -> Option<&Arc<ChangeRecord>> {
        if seq > self.committed_seq {
            let index = usize::try_from(seq - self.committed_seq - 1).ok()?;
            return self.pending.get(index).map(|p| &p.record);
        }
        self.window.get(seq)
    }

    /// The shared actor of a session.
    fn actor(&mut self, origin: &Origin) -> Actor {
        if let Some(a) = self.actors.get(&origin.session) {
            if a.session_id == origin.session_id && a.user_id == origin.user_id {
                return Arc::clone(a);
            }
        }
        if self.actors.len() >= MAX_CACHED_ACTORS {
            self.actors.clear();
        }
        let actor = Arc::new(ActorInfo {
            session_id: origin.session_id.clone(),
            user_id: origin.user_id.clone(),
        });
        self.actors.insert(origin.session, Arc::clone(&actor));
        actor
    }

    /// An `update.rollback` for the origin.
    fn rollback(
        &mut self,
        origin: &Origin,
        mutation_id: &str,
        now_ms: u64,
        refusal: Refusal,
        index: Option<u32>,
    ) -> Submit {
        let body = UpdateRollback {
            reference: mutation_id.to_owned(),
            reason: refusal.reason,
            message: refusal.message,
            current: refusal.current.map(|c| *c),
            index,
            retry_after_ms: None,
        };
        // Settled for good, so a resend gets the same answer (4.4); only the
        // transient reasons are evaluated again.
        if !matches!(
            body.reason,
            RollbackReason::Unavailable | RollbackReason::RateLimited
        ) {
            let key = self.idempotency.key(&origin.user_id, mutation_id);
            self.refused
                .insert(key, &origin.user_id, mutation_id, body.clone(), now_ms);
            let horizon = self.now_ms.saturating_sub(self.config.replay_ms);
            self.refused.trim(self.config.replay_changes, horizon);
        }
        self.rollback_envelope(origin, now_ms, body)
    }

    /// The `update.rollback` envelope of `body`, addressed to `origin`.
    fn rollback_envelope(&mut self, origin: &Origin, now_ms: u64, body: UpdateRollback) -> Submit {
        self.rollbacks += 1;
        let mut env = Envelope::new(format!("r-{}", self.rollbacks), Body::UpdateRollback(body));
        env.timestamp = Some(now_ms);
        env.user_id = Some(origin.user_id.clone());
        env.session_id = Some(origin.session_id.clone());
        Submit::Reply(env)
    }

    /// Builds the change record of an applied mutation; the record takes
    /// the origin's user and session ids.
    fn build_record(
        &self,
        origin: &mut Origin,
        mutation_id: &str,
        seq: u64,
        at_ms: u64,
        applied: Ops,
        writes: Vec<Write>,
    ) -> Arc<ChangeRecord> {
        let (event_body, conflicts, resolution, text) = match applied {
            Ops::One(a) => {
                let resolution = a
                    .concerned
                    .as_ref()
                    .map(|c| self.live.resolution(c))
                    .unwrap_or_default();
                (Body::from(a.event), a.conflicts, resolution, a.text)
            }
            Ops::Batch(all) => {
                let mut conflicts = Vec::new();
                let mut resolution = Resolution::default();
                let mut events = Vec::with_capacity(all.len());
                for (i, a) in all.into_iter().enumerate() {
                    if let Some(concerned) = &a.concerned {
                        resolution
                            .ops
                            .get_or_insert_with(Vec::new)
                            .push(OpResolution {
                                index: u32::try_from(i).unwrap_or(u32::MAX),
                                resolution: self.live.resolution(concerned),
                            });
                    }
                    conflicts.extend(a.conflicts);
                    events.push(a.event);
                }
                let body = Body::BatchUpdate(BatchUpdate {
                    base_seq: None,
                    ops: events,
                    commit: None,
                });
                (body, conflicts, resolution, None)
            }
        };
        let outcome_body = if conflicts.is_empty() {
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: mutation_id.to_owned(),
                seq,
                commit: String::new(),
                rev: seq,
                text,
            })
        } else {
            Body::UpdateConflictResolved(UpdateConflictResolved {
                reference: mutation_id.to_owned(),
                seq,
                commit: String::new(),
                rev: Some(seq),
                conflicts,
                resolution,
                text,
            })
        };
        // Each envelope is made whole in place: the record is large, and
        // every move of it (or of an envelope) is a copy of its bytes.
        let envelope = |id: String, body: Body| Envelope {
            id,
            timestamp: Some(at_ms),
            version: Some(PROTOCOL_VERSION.to_owned()),
            user_id: Some(origin.user_id.clone()),
            session_id: Some(origin.session_id.clone()),
            seq: Some(seq),
            metadata: None,
            body,
        };
        let event = envelope(mutation_id.to_owned(), event_body);
        let outcome = envelope(outcome_id(seq), outcome_body);
        Arc::new(ChangeRecord {
            seq,
            at_ms,
            user_id: std::mem::take(&mut origin.user_id),
            session_id: std::mem::take(&mut origin.session_id),
            mutation_id: mutation_id.to_owned(),
            event,
            outcome,
            writes,
        })
    }

    /// Refuses (`too_large`) a change whose event or outcome would not fit
    /// in one frame in either codec once its commit id is filled in, or in
    /// the `graph.sync` chunk that replays it on a resume: no client could
    /// read it (docs/protocol.md section 5).
    fn fits_in_a_frame(&self, record: &ChangeRecord) -> Result<(), Refusal> {
        /// Room for the commit id, filled in after the check, and for the
        /// envelope of a `graph.sync` chunk holding the event alone.
        const WRAPPING: usize = 1024;
        let limit = self.config.max_event_bytes.saturating_sub(WRAPPING);
        for (what, envelope) in [("event", &record.event), ("outcome", &record.outcome)] {
            let json = gitmind_schema::json::encode(envelope).len();
            let flat = gitmind_schema::binary::encode_with(
                std::slice::from_ref(envelope),
                gitmind_schema::binary::Compression::Never,
            )
            .len();
            let size = json.max(flat);
            if size > limit {
                return Err(Refusal::too_large(format!(
                    "the change's {what} would be {size} bytes; the frame limit is {} bytes: split it",
                    self.config.max_event_bytes
                )));
            }
        }
        Ok(())
    }
}

/// What a mutation's ops yielded: a single op's, without a vector of one,
/// or each op of a batch's.
// Moved once, into the record: boxing `One` would be the allocation this saves.
#[allow(clippy::large_enum_variant)]
enum Ops {
    One(graph::Applied),
    Batch(Vec<graph::Applied>),
}

/// Whether a mutation's event and outcome can grow past the frame limit:
/// a batch, or a text edit (its transformed operation). Any other single
/// op's event is bounded by the entity limits (docs/protocol.md section 3)
/// well below it, in either codec, so it is not measured on the hot path.
fn may_outgrow_a_frame(body: &Body) -> bool {
    match body {
        Body::BatchUpdate(_) => true,
        Body::NodeUpdate(u) => u.text.is_some(),
        _ => false,
    }
}

/// `o-{seq}`, the id of a change's outcome, without the formatting
/// machinery (this is on the path of every change).
fn outcome_id(seq: u64) -> String {
    let mut digits = [0u8; 20];
    let mut n = seq;
    let mut i = digits.len();
    loop {
        i -= 1;
        // n % 10 < 10: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        {
            digits[i] = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(2 + digits.len() - i);
    id.push_str("o-");
    // ASCII digits: always UTF-8.
    id.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
    id
}

/// The op of a single (non-batch) mutation body.
pub(crate) fn op_of_body(body: &Body) -> Option<OpRef<'_>> {
    Some(match body {
        Body::NodeCreate(o) => OpRef::NodeCreate(o),
        Body::NodeUpdate(o) => OpRef::NodeUpdate(o),
        Body::NodeDelete(o) => OpRef::NodeDelete(o),
        Body::EdgeCreate(o) => OpRef::EdgeCreate(o),
        Body::EdgeUpdate(o) => OpRef::EdgeUpdate(o),
        Body::EdgeDelete(o) => OpRef::EdgeDelete(o),
        _ => return None,
    })
}

/// A batch's writes with each entity once, at its final state, in the order
/// entities were first touched.
fn dedupe_writes(writes: Vec<Write>) -> Vec<Write> {
    let mut at: HashMap<(bool, String), usize> = HashMap::with_capacity(writes.len());
    let mut out: Vec<Write> = Vec::with_capacity(writes.len());
    for w in writes {
        let key = match &w {
            Write::Node(n) => (true, n.id.clone()),
            Write::NodeDeleted(id) => (true, id.clone()),
            Write::Edge(e) => (false, e.id.clone().unwrap_or_default()),
            Write::EdgeDeleted(id) => (false, id.clone()),
        };
        match at.get(&key) {
            Some(i) => out[*i] = w,
            None => {
                at.insert(key, out.len());
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn outcome_id_is_o_dash_seq() {
        for seq in [0, 7, 10, 12_345, u64::MAX] {
            assert_eq!(super::outcome_id(seq), format!("o-{seq}"));
        }
    }
}
