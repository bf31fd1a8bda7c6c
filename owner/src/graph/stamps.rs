//! Stamps: who last changed each field of an entity and at which `seq`,
//! so a mutation made at an older `baseSeq` learns what it missed
//! (docs/protocol.md 4.2).

use std::collections::BTreeMap;
use std::sync::Arc;

use gitmind_schema::message::Conflict;
use gitmind_schema::model::{EdgeSet, NodeSet, PropsPatch};

use super::*;

/// Who made a change: its session and user, shared by every stamp it leaves.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ActorInfo {
    /// The session's id.
    pub session_id: String,
    /// The user's id.
    pub user_id: String,
}

/// A shared [`ActorInfo`].
pub(crate) type Actor = Arc<ActorInfo>;

/// Whether two actors are the same session.
pub(crate) fn same_session(a: &Actor, b: &Actor) -> bool {
    Arc::ptr_eq(a, b) || a.session_id == b.session_id
}

/// One change to a field: its `seq` and who made it.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    /// The change's `seq`.
    pub seq: u64,
    /// Who made it.
    pub actor: Actor,
}

/// The latest change of a field, and the latest one by any other session:
/// enough to answer "did a session other than S change it after baseSeq?"
/// exactly, in constant space.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamps {
    last: Option<Stamp>,
    other: Option<Stamp>,
}

impl Stamps {
    /// Records a change of the field.
    pub fn record(&mut self, stamp: Stamp) {
        if let Some(last) = &self.last {
            if !same_session(&last.actor, &stamp.actor) {
                self.other = self.last.take();
            }
        }
        self.last = Some(stamp);
    }

    /// The latest change after `base` by a session other than `actor`'s.
    pub fn conflict(&self, base: u64, actor: &Actor) -> Option<&Stamp> {
        let last = self.last.as_ref()?;
        let candidate = if same_session(&last.actor, actor) {
            self.other.as_ref()?
        } else {
            last
        };
        (candidate.seq > base).then_some(candidate)
    }
}

/// Field slots of [`Meta::fields`] for a node.
pub(crate) const NODE_FIELDS: [&str; 5] = ["kind", "label", "content", "x", "y"];
/// Field slots of [`Meta::fields`] for an edge.
pub(crate) const EDGE_FIELDS: [&str; 3] = ["confidence", "rationale", "bidirectional"];
pub(crate) const KIND: usize = 0;
pub(crate) const LABEL: usize = 1;
pub(crate) const CONTENT: usize = 2;
pub(crate) const X: usize = 3;
pub(crate) const Y: usize = 4;
pub(crate) const CONFIDENCE: usize = 0;
pub(crate) const RATIONALE: usize = 1;
pub(crate) const BIDIRECTIONAL: usize = 2;

/// A field of an entity, where stamps are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    /// A plain field, by slot.
    Field(usize),
    /// A property, by key.
    Prop(String),
    /// The entity's existence (a create merged into another's create).
    Id,
}

/// Concurrency metadata of one entity.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    /// The create of this incarnation (`None`: before the known history).
    pub created: Option<Stamp>,
    /// Plain fields, by slot ([`NODE_FIELDS`] or [`EDGE_FIELDS`]).
    pub fields: [Stamps; 5],
    /// Properties, by key (removed keys included).
    pub props: BTreeMap<String, Stamps>,
}

/// Which of a node's plain fields (by slot, [`NODE_FIELDS`]) a set gives.
pub(crate) fn node_fields_given(set: &NodeSet) -> [bool; 5] {
    [
        set.kind.is_some(),
        set.label.is_some(),
        set.content.is_some(),
        set.x.is_some(),
        set.y.is_some(),
    ]
}

/// Which of an edge's plain fields (by slot, [`EDGE_FIELDS`]) a set gives.
pub(crate) fn edge_fields_given(set: &EdgeSet) -> [bool; 3] {
    [
        set.confidence.is_some(),
        set.rationale.is_some(),
        set.bidirectional.is_some(),
    ]
}

impl Meta {
    /// Stamps every field among `given` and every `props` key with `stamp`
    /// (rebuilding field history from the journal).
    pub fn stamp_set(&mut self, given: &[bool], props: Option<&PropsPatch>, stamp: &Stamp) {
        for (slot, _) in given.iter().enumerate().filter(|(_, g)| **g) {
            self.fields[slot].record(stamp.clone());
        }
        for key in props.iter().flat_map(|p| p.keys()) {
            self.props
                .entry(key.clone())
                .or_default()
                .record(stamp.clone());
        }
    }

    /// The fields among `given` (by slot, named by `names`) and the `props`
    /// keys that another session changed after the change's `baseSeq`: the
    /// conflicts it meets, and which fields they concern.
    pub fn conflicts(
        &self,
        given: &[bool],
        names: &[&str],
        props: Option<&PropsPatch>,
        cx: &Cx<'_>,
    ) -> (Vec<Conflict>, Vec<FieldRef>) {
        let mut conflicts = Vec::new();
        let mut concerned = Vec::new();
        for (slot, _) in given.iter().enumerate().filter(|(_, g)| **g) {
            if let Some(s) = self.fields[slot].conflict(cx.base, cx.actor) {
                conflicts.push(cx.conflict(names[slot].to_owned(), s));
                concerned.push(FieldRef::Field(slot));
            }
        }
        for key in props.iter().flat_map(|p| p.keys()) {
            if let Some(s) = self
                .props
                .get(key)
                .and_then(|s| s.conflict(cx.base, cx.actor))
            {
                conflicts.push(cx.conflict(format!("props.{key}"), s));
                concerned.push(FieldRef::Prop(key.clone()));
            }
        }
        (conflicts, concerned)
    }

    /// The `seq` of the create (0 when it is older than the known history).
    pub fn created_seq(&self) -> u64 {
        self.created.as_ref().map_or(0, |s| s.seq)
    }

    /// Records a change of `field`, returning what to restore on undo.
    pub fn record(&mut self, field: FieldRef, stamp: Stamp) -> (FieldRef, Option<Stamps>) {
        let prev = match &field {
            FieldRef::Field(i) => {
                let slot = &mut self.fields[*i];
                let prev = slot.clone();
                slot.record(stamp);
                Some(prev)
            }
            FieldRef::Prop(k) => {
                if let Some(slot) = self.props.get_mut(k) {
                    let prev = slot.clone();
                    slot.record(stamp);
                    Some(prev)
                } else {
                    let mut slot = Stamps::default();
                    slot.record(stamp);
                    self.props.insert(k.clone(), slot);
                    None
                }
            }
            FieldRef::Id => None,
        };
        (field, prev)
    }

    /// Puts a field's stamps back as they were.
    pub fn restore(&mut self, field: FieldRef, prev: Option<Stamps>) {
        match (field, prev) {
            (FieldRef::Field(i), Some(p)) => self.fields[i] = p,
            (FieldRef::Prop(k), Some(p)) => {
                self.props.insert(k, p);
            }
            (FieldRef::Prop(k), None) => {
                self.props.remove(&k);
            }
            _ => {}
        }
    }

    /// Forgets the stamps of properties that no longer exist and are older
    /// than `floor`, so removed keys do not pile up.
    pub fn prune_props(&mut self, present: impl Fn(&str) -> bool, floor: u64) {
        self.props
            .retain(|k, s| present(k) || s.last.as_ref().is_some_and(|l| l.seq > floor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(session: &str) -> Actor {
        Arc::new(ActorInfo {
            session_id: session.into(),
            user_id: format!("user-{session}"),
        })
    }

    #[test]
    fn stamps_find_the_latest_change_by_another_session() {
        let (a, b, c) = (actor("a"), actor("b"), actor("c"));
        let mut s = Stamps::default();
        assert!(s.conflict(0, &a).is_none());
        s.record(Stamp {
            seq: 3,
            actor: b.clone(),
        });
        s.record(Stamp {
            seq: 5,
            actor: a.clone(),
        });
        // a asks with base 2: b changed it at 3.
        assert_eq!(s.conflict(2, &a).map(|s| s.seq), Some(3));
        assert!(s.conflict(3, &a).is_none());
        // b asks: a changed it at 5.
        assert_eq!(s.conflict(4, &b).map(|s| s.seq), Some(5));
        s.record(Stamp {
            seq: 6,
            actor: a.clone(),
        });
        assert_eq!(s.conflict(2, &a).map(|s| s.seq), Some(3));
        s.record(Stamp {
            seq: 7,
            actor: c.clone(),
        });
        assert_eq!(s.conflict(2, &a).map(|s| s.seq), Some(7));
        assert_eq!(s.conflict(2, &c).map(|s| s.seq), Some(6));
    }
}
