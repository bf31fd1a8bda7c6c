//! What the owner remembers of the past, all of it bounded by the replay
//! window (docs/protocol.md 6): the committed changes themselves (for delta syncs
//! and idempotent answers), each node's recent text operations (for OT), and
//! the index of mutation ids (docs/protocol.md 4.4).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher as _};
use std::sync::Arc;

use gitmind_schema::message::UpdateRollback;
use gitmind_schema::ot::TextOp;

use crate::change::ChangeRecord;
use crate::{Hasher, Map};

/// The operations applied to one node's `content`, for transforming text
/// operations made at an older `baseSeq` (docs/protocol.md 4.2).
///
/// Complete after `floor`: every change to the content with a `seq` greater
/// than `floor` is in `ops`, in server order. A `set.content` is kept as the
/// operation that replaces the whole text.
#[derive(Debug, Clone, Default)]
pub(crate) struct TextHistory {
    /// The `seq` after which the history is complete.
    pub floor: u64,
    /// `(seq, op)`, oldest first; one change may hold several (a batch).
    pub ops: VecDeque<(u64, TextOp)>,
}

impl TextHistory {
    /// A history that starts at `seq` (the node's creation).
    pub fn starting_at(seq: u64) -> Self {
        TextHistory {
            floor: seq,
            ops: VecDeque::new(),
        }
    }

    /// The operations applied after `base`, in order; `None` when the
    /// history does not reach back that far (the mutation is `stale`).
    pub fn since(&self, base: u64) -> Option<Vec<TextOp>> {
        if base < self.floor {
            return None;
        }
        let start = self.ops.partition_point(|(seq, _)| *seq <= base);
        Some(self.ops.range(start..).map(|(_, op)| op.clone()).collect())
    }

    /// Forgets the operations of changes up to `upto`.
    pub fn trim(&mut self, upto: u64) {
        while self.ops.front().is_some_and(|(seq, _)| *seq <= upto) {
            self.ops.pop_front();
        }
        self.floor = self.floor.max(upto);
    }
}

/// The replay window: the most recent committed changes, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// The changes, consecutive in `seq`, their commit filled in.
    pub changes: VecDeque<Arc<ChangeRecord>>,
    /// The `seq` of the last change dropped from the window (0: none yet).
    pub floor: u64,
}

impl Window {
    /// The committed change with this `seq`, if it is in the window.
    pub fn get(&self, seq: u64) -> Option<&Arc<ChangeRecord>> {
        let first = self.changes.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.changes.get(index)
    }

    /// The changes after `since`, if the window reaches back to it.
    pub fn after(&self, since: u64) -> Option<impl Iterator<Item = &Arc<ChangeRecord>>> {
        if since < self.floor {
            return None;
        }
        let first = self.changes.front().map_or(since + 1, |c| c.seq);
        if since + 1 < first {
            return None;
        }
        let skip = usize::try_from(since + 1 - first).ok()?;
        Some(self.changes.iter().skip(skip))
    }
}

/// The seqs of the changes made by each `(user, mutation id)` within the
/// window, keyed by a 64-bit hash of the pair; the owner checks the record
/// itself, so a hash collision can never return another user's outcome.
#[derive(Debug, Default)]
pub(crate) struct Idempotency {
    map: Map<u64, Slot>,
    hasher: Hasher,
}

/// The seqs under one hash: almost always one.
#[derive(Debug)]
enum Slot {
    One(u64),
    Many(Vec<u64>),
}

impl Idempotency {
    /// An empty index whose keys and map hash with `hasher`.
    pub fn with_hasher(hasher: Hasher) -> Self {
        Idempotency {
            map: Map::with_hasher(hasher.clone()),
            hasher,
        }
    }

    /// The hash of `(user, id)`: compute it once per mutation.
    pub fn key(&self, user: &str, id: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        user.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    }

    /// The seqs whose pair may be `(user, id)`; check each record.
    #[cfg(test)]
    pub fn candidates(&self, user: &str, id: &str) -> impl Iterator<Item = u64> + '_ {
        self.candidates_by_key(self.key(user, id))
    }

    /// The seqs whose pair has this [`Idempotency::key`].
    pub fn candidates_by_key(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let slot = self.map.get(&key);
        let (one, many) = match slot {
            Some(Slot::One(s)) => (Some(*s), &[][..]),
            Some(Slot::Many(v)) => (None, v.as_slice()),
            None => (None, &[][..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    /// Remembers that `(user, id)` made change `seq`.
    pub fn insert(&mut self, user: &str, id: &str, seq: u64) {
        let key = self.key(user, id);
        self.insert_by_key(key, seq);
    }

    /// [`Idempotency::insert`] with the key already computed.
    pub fn insert_by_key(&mut self, key: u64, seq: u64) {
        match self.map.get_mut(&key) {
            None => {
                self.map.insert(key, Slot::One(seq));
            }
            Some(slot) => match slot {
                Slot::One(s) => *slot = Slot::Many(vec![*s, seq]),
                Slot::Many(v) => v.push(seq),
            },
        }
    }

    /// Forgets change `seq` of `(user, id)`.
    pub fn remove(&mut self, user: &str, id: &str, seq: u64) {
        let key = self.key(user, id);
        let Some(slot) = self.map.get_mut(&key) else {
            return;
        };
        match slot {
            Slot::One(s) if *s == seq => {
                self.map.remove(&key);
            }
            Slot::One(_) => {}
            Slot::Many(v) => {
                v.retain(|s| *s != seq);
                if v.is_empty() {
                    self.map.remove(&key);
                }
            }
        }
    }

    /// How many changes it remembers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map
            .values()
            .map(|s| match s {
                Slot::One(_) => 1,
                Slot::Many(v) => v.len(),
            })
            .sum()
    }
}

/// The rollbacks the owner remembers (docs/protocol.md 4.4): a resent
/// mutation id gets its first answer again, even if the graph changed since.
/// Transient refusals (`unavailable`, `rate_limited`) are never put here.
///
/// Bounded like the replay window: an entry is dropped once there are more
/// than `keep` and it is older than the time bound, and in any case once
/// there are more than [`Refused::HARD_CAP_FACTOR`] times `keep`, so a
/// flood of refused mutations cannot grow memory without bound. Held in
/// memory only: after a restart a resent id is evaluated again.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    /// Under each [`Idempotency::key`], the refusals with that hash, oldest first.
    by_key: Map<u64, Vec<RefusedEntry>>,
    /// `(at_ms, key)` of every entry, oldest first.
    order: VecDeque<(u64, u64)>,
}

/// One remembered rollback.
#[derive(Debug)]
struct RefusedEntry {
    user: String,
    id: String,
    rollback: Arc<UpdateRollback>,
}

impl Refused {
    /// Past this many times the count bound, entries go whatever their age.
    pub const HARD_CAP_FACTOR: usize = 4;

    /// Remembers nothing yet; its map hashes with `hasher`.
    pub fn with_hasher(hasher: Hasher) -> Self {
        Refused {
            by_key: Map::with_hasher(hasher),
            order: VecDeque::new(),
        }
    }

    /// The rollback given to `(user, id)`, whose hash is `key`.
    pub fn get(&self, key: u64, user: &str, id: &str) -> Option<&Arc<UpdateRollback>> {
        self.by_key
            .get(&key)?
            .iter()
            .find(|e| e.user == user && e.id == id)
            .map(|e| &e.rollback)
    }

    /// Remembers the rollback of `(user, id)`, given at `at_ms`.
    pub fn insert(&mut self, key: u64, user: &str, id: &str, rollback: UpdateRollback, at_ms: u64) {
        self.by_key.entry(key).or_default().push(RefusedEntry {
            user: user.to_owned(),
            id: id.to_owned(),
            rollback: Arc::new(rollback),
        });
        self.order.push_back((at_ms, key));
    }

    /// Drops entries past the bounds: more than `keep` and older than
    /// `horizon_ms`, or more than the hard cap.
    pub fn trim(&mut self, keep: usize, horizon_ms: u64) {
        let cap = keep.saturating_mul(Self::HARD_CAP_FACTOR);
        while let Some(&(at, key)) = self.order.front() {
            if self.order.len() <= keep || (at >= horizon_ms && self.order.len() <= cap) {
                break;
            }
            self.order.pop_front();
            if let Some(list) = self.by_key.get_mut(&key) {
                list.remove(0);
                if list.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    /// How many rollbacks it remembers.
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(parts: &[i64]) -> TextOp {
        let mut o = TextOp::new();
        for p in parts {
            if *p > 0 {
                o.retain(p.unsigned_abs());
            } else {
                o.delete(p.unsigned_abs());
            }
        }
        o
    }

    #[test]
    fn text_history_since_and_trim() {
        let mut h = TextHistory::starting_at(3);
        h.ops.push_back((5, op(&[1])));
        h.ops.push_back((7, op(&[2])));
        h.ops.push_back((7, op(&[3])));
        assert_eq!(h.since(2), None);
        assert_eq!(h.since(3).map(|v| v.len()), Some(3));
        assert_eq!(h.since(5).map(|v| v.len()), Some(2));
        assert_eq!(h.since(7).map(|v| v.len()), Some(0));
        h.trim(5);
        assert_eq!(h.floor, 5);
        assert_eq!(h.since(4), None);
        assert_eq!(h.since(5).map(|v| v.len()), Some(2));
    }

    #[test]
    fn idempotency_insert_find_remove() {
        let mut idem = Idempotency::default();
        idem.insert("alice", "m1", 4);
        idem.insert("alice", "m1", 9);
        assert_eq!(
            idem.candidates("alice", "m1").collect::<Vec<_>>(),
            vec![4, 9]
        );
        assert_eq!(idem.candidates("bob", "m1").count(), 0);
        idem.remove("alice", "m1", 4);
        assert_eq!(idem.candidates("alice", "m1").collect::<Vec<_>>(), vec![9]);
        idem.remove("alice", "m1", 9);
        assert_eq!(idem.len(), 0);
    }

    #[test]
    fn refused_keeps_the_newest_within_its_bounds() {
        let idem = Idempotency::default();
        let mut refused = Refused::default();
        let rollback = |m: &str| UpdateRollback {
            reference: m.to_owned(),
            reason: gitmind_schema::message::RollbackReason::NotFound,
            message: m.to_owned(),
            current: None,
            index: None,
            retry_after_ms: None,
        };
        for (i, id) in ["m1", "m2", "m3"].into_iter().enumerate() {
            let at = i as u64 * 100;
            refused.insert(idem.key("alice", id), "alice", id, rollback(id), at);
        }
        let get = |r: &Refused, id: &str| r.get(idem.key("alice", id), "alice", id).is_some();
        assert!(get(&refused, "m1") && !get(&refused, "m4"));
        assert!(refused.get(idem.key("bob", "m1"), "bob", "m1").is_none());
        // Over the count bound, but only what is older than the horizon goes.
        refused.trim(1, 50);
        assert!(!get(&refused, "m1") && get(&refused, "m2") && get(&refused, "m3"));
        // The hard cap drops entries whatever their age.
        refused.trim(0, 0);
        assert_eq!(refused.len(), 0);
    }
}
