//! One op applied to the live graph (docs/protocol.md 3 and 4.2): checked,
//! merged with what happened since its `baseSeq`, applied, with its undo
//! steps and its writes for persistence; or refused, the graph untouched.

use std::collections::BTreeSet;
use std::sync::Arc;

use gitmind_schema::message::{
    BatchOp, EdgeCreate, EdgeDelete, EdgeUpdate, NodeCreate, NodeDelete, NodeUpdate, RollbackReason,
};
use gitmind_schema::model::{Edge, EdgeSet, Entity, NodeSet, PropsPatch, TextEdits};
use gitmind_schema::ot::TextOp;

use super::*;
use crate::change::Write;
use crate::history::TextHistory;
use crate::validate::{self, Refusal, MAX_CONTENT_BYTES};

impl Live {
    /// Applies one op of the change in `cx`, or refuses it. On refusal the
    /// live graph may hold part of the change: the caller undoes `cx.undo`.
    pub fn apply(&mut self, cx: &mut Cx<'_>, op: OpRef<'_>) -> Result<Applied, Refusal> {
        match op {
            OpRef::NodeCreate(o) => self.node_create(cx, o),
            OpRef::NodeUpdate(o) => self.node_update(cx, o),
            OpRef::NodeDelete(o) => self.node_delete(cx, o),
            OpRef::EdgeCreate(o) => self.edge_create(cx, o),
            OpRef::EdgeUpdate(o) => self.edge_update(cx, o),
            OpRef::EdgeDelete(o) => self.edge_delete(cx, o),
        }
    }

    /// Why an op on a node that does not exist fails: `deleted` when it was
    /// deleted after `baseSeq`, else `not_found`.
    fn missing_node(&self, id: &str, base: u64, what: &str) -> Refusal {
        match self.node_tombs.get(id) {
            Some(t) if t.seq > base => Refusal::new(
                RollbackReason::Deleted,
                format!(
                    "{what} `{id}` was deleted at seq {} by {}",
                    t.seq, t.actor.user_id
                ),
            ),
            _ => Refusal::new(
                RollbackReason::NotFound,
                format!("{what} `{id}` does not exist"),
            ),
        }
    }

    /// As [`Live::missing_node`], for an edge.
    fn missing_edge(&self, id: &str, base: u64) -> Refusal {
        match self.edge_tombs.get(id) {
            Some(t) if t.seq > base => Refusal::new(
                RollbackReason::Deleted,
                format!(
                    "edge `{id}` was deleted at seq {} by {}",
                    t.seq, t.actor.user_id
                ),
            ),
            _ => Refusal::new(
                RollbackReason::NotFound,
                format!("edge `{id}` does not exist"),
            ),
        }
    }

    fn node_create(&mut self, cx: &mut Cx<'_>, op: &NodeCreate) -> Result<Applied, Refusal> {
        validate::node(&op.node)?;
        let id = &op.node.id;
        if let Some(entry) = self.nodes.get(id) {
            let created = entry.meta.created.clone();
            if entry.meta.created_seq() <= cx.base {
                return Err(Refusal::new(
                    RollbackReason::AlreadyExists,
                    format!("node `{id}` already existed at baseSeq {}", cx.base),
                )
                .with_current(self.current_node(id)));
            }
            // Created after baseSeq: the first create stands, this one is
            // merged into it as an update of the fields it sets.
            let set = op.node.as_set();
            let mut applied = self.update_node_fields(cx, id, Some(&set), None)?;
            if let Some(created) = created.filter(|c| !same_session(&c.actor, cx.actor)) {
                if applied.conflicts.is_empty() {
                    applied.conflicts.push(cx.conflict("id".into(), &created));
                    applied.concerned = Some(Concerned::Node(id.clone(), vec![FieldRef::Id]));
                }
            }
            return Ok(applied);
        }
        let mut node = op.node.clone();
        node.fill_defaults();
        node.rev = Some(cx.seq);
        node.created_at = Some(cx.at_ms);
        node.updated_at = Some(cx.at_ms);
        node.created_by = Some(cx.actor.user_id.clone());
        node.updated_by = Some(cx.actor.user_id.clone());
        let stamp = cx.stamp();
        let mut meta = Meta {
            created: Some(stamp.clone()),
            ..Meta::default()
        };
        for slot in &mut meta.fields {
            slot.record(stamp.clone());
        }
        for key in node.props.iter().flat_map(|p| p.keys()) {
            let mut s = Stamps::default();
            s.record(stamp.clone());
            meta.props.insert(key.clone(), s);
        }
        let node = Arc::new(node);
        let entry = NodeEntry {
            node: Arc::clone(&node),
            meta,
            text: TextHistory::starting_at(cx.seq),
            edges: BTreeSet::new(),
        };
        self.nodes.insert(id.clone(), entry);
        cx.undo.push(Undo::RemoveNode(id.clone()));
        cx.text.insert(id.clone(), Vec::new());
        cx.writes.push(Write::Node(Arc::clone(&node)));
        let event = NodeCreate {
            base_seq: None,
            node: (*node).clone(),
            commit: None,
        };
        Ok(Applied::new(BatchOp::NodeCreate(event)))
    }

    fn node_update(&mut self, cx: &mut Cx<'_>, op: &NodeUpdate) -> Result<Applied, Refusal> {
        validate::node_id(&op.id, "id")?;
        let set = op.set.as_ref().filter(|s| !s.is_empty());
        let text = op.text.as_ref().and_then(|t| t.content.as_ref());
        if set.is_none() && text.is_none() {
            return Err(Refusal::invalid(
                "node.update changes nothing: give `set` or `text`",
            ));
        }
        if let Some(set) = set {
            validate::node_set(set)?;
            if set.content.is_some() && text.is_some() {
                return Err(Refusal::invalid(
                    "node.update both replaces content (set.content) and edits it (text.content); send one",
                ));
            }
        }
        self.update_node_fields(cx, &op.id, set, text)
    }

    /// Applies `set` and a text operation to an existing node: conflicts,
    /// stamps, text history, undo, write and event.
    fn update_node_fields(
        &mut self,
        cx: &mut Cx<'_>,
        id: &str,
        set: Option<&NodeSet>,
        text: Option<&TextOp>,
    ) -> Result<Applied, Refusal> {
        let Some(entry) = self.nodes.get_mut(id) else {
            return Err(self.missing_node(id, cx.base, "node"));
        };
        let current = || Some(Entity::Node((*entry.node).clone()));
        if let Some(patch) = set.and_then(|s| s.props.as_ref()) {
            validate::props_count_after(&entry.node.props, patch, "node")
                .map_err(|r| r.with_current(current()))?;
        }
        // Text: transform against every op applied after baseSeq.
        let mut applied_text: Option<(TextOp, String)> = None;
        if let Some(op) = text {
            let concurrent = match cx.text.get_mut(id) {
                Some(v) => v,
                None => {
                    let Some(ops) = entry.text.since(cx.base) else {
                        return Err(Refusal::new(
                            RollbackReason::Stale,
                            format!(
                                "text.content of node `{id}` is based on seq {}, older than the text history kept (from seq {})",
                                cx.base, entry.text.floor
                            ),
                        )
                        .with_current(current()));
                    };
                    cx.text.entry(id.to_owned()).or_insert(ops)
                }
            };
            let mut op = op.clone();
            for c in concurrent.iter_mut() {
                let (c2, o2) = TextOp::transform_pair(c, &op).map_err(|_| {
                    Refusal::invalid(format!(
                        "text.content is for a text of {} characters; node `{id}` had {} at baseSeq {}",
                        op.base_len(),
                        c.base_len(),
                        cx.base
                    ))
                })?;
                *c = c2;
                op = o2;
            }
            let old = entry.node.content.as_deref().unwrap_or("");
            let new = op.apply(old).map_err(|_| {
                Refusal::invalid(format!(
                    "text.content is for a text of {} characters; node `{id}` has {}",
                    op.base_len(),
                    chars(old)
                ))
                .with_current(current())
            })?;
            if new.len() > MAX_CONTENT_BYTES {
                return Err(Refusal::too_large(format!(
                    "node.content would be {} bytes; the limit is {MAX_CONTENT_BYTES}",
                    new.len()
                ))
                .with_current(current()));
            }
            applied_text = Some((op, new));
        }
        // Conflicts: fields this op sets that another session changed after baseSeq.
        let (conflicts, concerned) = match set {
            Some(set) => entry.meta.conflicts(
                &node_fields_given(set),
                &NODE_FIELDS,
                set.props.as_ref(),
                cx,
            ),
            None => (Vec::new(), Vec::new()),
        };
        // Apply.
        let prev = Arc::clone(&entry.node);
        let node = Arc::make_mut(&mut entry.node);
        let old_content = set
            .filter(|s| s.content.is_some())
            .and_then(|_| node.content.clone());
        let mut changed = set.map(|s| node.apply_set(s)).unwrap_or_default();
        let mut text_pushed = false;
        let mut out_text = None;
        if let Some((op, new)) = applied_text {
            if !op.is_noop() {
                node.content = Some(new);
                entry.text.ops.push_back((cx.seq, op.clone()));
                text_pushed = true;
            }
            out_text = Some(TextEdits { content: Some(op) });
        }
        if let Some(new) = &changed.content {
            let old = old_content.unwrap_or_default();
            entry.text.ops.push_back((cx.seq, replacement(&old, new)));
            text_pushed = true;
            cx.text.insert(id.to_owned(), Vec::new());
        }
        node.touch(cx.seq, cx.at_ms, &cx.actor.user_id);
        // Stamps of what really changed.
        let stamp = cx.stamp();
        let mut stamps = Vec::new();
        let changed_slots = [
            changed.kind.is_some(),
            changed.label.is_some(),
            text_pushed,
            changed.x.is_some(),
            changed.y.is_some(),
        ];
        for (slot, _) in changed_slots.iter().enumerate().filter(|(_, c)| **c) {
            stamps.push(entry.meta.record(FieldRef::Field(slot), stamp.clone()));
        }
        for key in changed.props.iter().flat_map(|p| p.keys()) {
            stamps.push(
                entry
                    .meta
                    .record(FieldRef::Prop(key.clone()), stamp.clone()),
            );
        }
        if entry.meta.props.len() > 2 * validate::MAX_PROPS {
            let props = entry.node.props.clone().unwrap_or_default();
            entry.meta.prune_props(|k| props.contains_key(k), cx.base);
        }
        cx.undo.push(Undo::Node {
            node: prev,
            stamps,
            text_pushed,
        });
        cx.writes.push(Write::Node(Arc::clone(&entry.node)));
        let node = &entry.node;
        if changed.props.as_ref().is_some_and(PropsPatch::is_empty) {
            changed.props = None;
        }
        let event = NodeUpdate {
            base_seq: None,
            id: id.to_owned(),
            set: (!changed.is_empty()).then_some(changed),
            text: out_text.clone(),
            rev: node.rev,
            updated_at: node.updated_at,
            updated_by: node.updated_by.clone(),
            commit: None,
        };
        Ok(Applied {
            event: BatchOp::NodeUpdate(event),
            concerned: (!conflicts.is_empty()).then(|| Concerned::Node(id.to_owned(), concerned)),
            conflicts,
            text: out_text,
        })
    }

    fn node_delete(&mut self, cx: &mut Cx<'_>, op: &NodeDelete) -> Result<Applied, Refusal> {
        validate::node_id(&op.id, "id")?;
        let Some(entry) = self.nodes.remove(&op.id) else {
            return Err(self.missing_node(&op.id, cx.base, "node"));
        };
        let id = op.id.clone();
        for edge_id in &entry.edges {
            let Some(edge) = self.edges.remove(edge_id) else {
                continue;
            };
            // The node itself is already gone: only the other end is unlinked.
            self.bury_edge(cx, edge_id, edge);
        }
        cx.undo.push(Undo::PutNode(id.clone(), Box::new(entry)));
        let prev = self.node_tombs.insert(
            id.clone(),
            Tomb {
                seq: cx.seq,
                actor: Arc::clone(cx.actor),
            },
        );
        cx.undo.push(Undo::NodeTomb {
            id: id.clone(),
            prev,
        });
        cx.text.remove(&id);
        cx.writes.push(Write::NodeDeleted(id.clone()));
        // The event names the node alone: its edges go with it on every
        // client, however many there are (docs/protocol.md section 5).
        let event = NodeDelete {
            base_seq: None,
            id,
            commit: None,
        };
        Ok(Applied::new(BatchOp::NodeDelete(event)))
    }

    fn edge_create(&mut self, cx: &mut Cx<'_>, op: &EdgeCreate) -> Result<Applied, Refusal> {
        validate::edge(&op.edge, cx.edge_types)?;
        let id = Edge::make_id(&op.edge.source, &op.edge.edge_type, &op.edge.target);
        if let Some(entry) = self.edges.get(&id) {
            let created = entry.meta.created.clone();
            if entry.meta.created_seq() <= cx.base {
                return Err(Refusal::new(
                    RollbackReason::AlreadyExists,
                    format!("edge `{id}` already existed at baseSeq {}", cx.base),
                )
                .with_current(self.current_edge(&id)));
            }
            let set = op.edge.as_set();
            let mut applied = self.update_edge_fields(cx, &id, &set)?;
            if let Some(created) = created.filter(|c| !same_session(&c.actor, cx.actor)) {
                if applied.conflicts.is_empty() {
                    applied.conflicts.push(cx.conflict("id".into(), &created));
                    applied.concerned = Some(Concerned::Edge(id.clone(), vec![FieldRef::Id]));
                }
            }
            return Ok(applied);
        }
        for (end, what) in [
            (&op.edge.source, "edge.source"),
            (&op.edge.target, "edge.target"),
        ] {
            if !self.nodes.contains_key(end) {
                return Err(self.missing_node(end, cx.base, what));
            }
        }
        let mut edge = op.edge.clone();
        edge.id = Some(id.clone());
        edge.fill_defaults();
        edge.rev = Some(cx.seq);
        edge.created_at = Some(cx.at_ms);
        edge.updated_at = Some(cx.at_ms);
        edge.created_by = Some(cx.actor.user_id.clone());
        edge.updated_by = Some(cx.actor.user_id.clone());
        let stamp = cx.stamp();
        let mut meta = Meta {
            created: Some(stamp.clone()),
            ..Meta::default()
        };
        for slot in meta.fields.iter_mut().take(EDGE_FIELDS.len()) {
            slot.record(stamp.clone());
        }
        for key in edge.props.iter().flat_map(|p| p.keys()) {
            let mut s = Stamps::default();
            s.record(stamp.clone());
            meta.props.insert(key.clone(), s);
        }
        let edge = Arc::new(edge);
        for end in [&edge.source, &edge.target] {
            if let Some(n) = self.nodes.get_mut(end) {
                if n.edges.insert(id.clone()) {
                    cx.undo.push(Undo::Unlink {
                        node: end.clone(),
                        edge: id.clone(),
                    });
                }
            }
        }
        self.edges.insert(
            id.clone(),
            EdgeEntry {
                edge: Arc::clone(&edge),
                meta,
            },
        );
        cx.undo.push(Undo::RemoveEdge(id));
        cx.writes.push(Write::Edge(Arc::clone(&edge)));
        let event = EdgeCreate {
            base_seq: None,
            edge: (*edge).clone(),
            commit: None,
        };
        Ok(Applied::new(BatchOp::EdgeCreate(event)))
    }

    fn edge_update(&mut self, cx: &mut Cx<'_>, op: &EdgeUpdate) -> Result<Applied, Refusal> {
        let Some(id) = op.edge_id() else {
            return Err(Refusal::invalid(
                "edge.update names no edge: give `id`, or `source`, `type` and `target`",
            ));
        };
        let Some(set) = op.set.as_ref().filter(|s| !s.is_empty()) else {
            return Err(Refusal::invalid("edge.update changes nothing: give `set`"));
        };
        validate::edge_set(set)?;
        self.update_edge_fields(cx, &id, set)
    }

    /// Applies `set` to an existing edge: conflicts, stamps, undo, write, event.
    fn update_edge_fields(
        &mut self,
        cx: &mut Cx<'_>,
        id: &str,
        set: &EdgeSet,
    ) -> Result<Applied, Refusal> {
        let Some(entry) = self.edges.get_mut(id) else {
            return Err(self.missing_edge(id, cx.base));
        };
        if let Some(patch) = &set.props {
            validate::props_count_after(&entry.edge.props, patch, "edge")
                .map_err(|r| r.with_current(Some(Entity::Edge((*entry.edge).clone()))))?;
        }
        let (conflicts, concerned) = entry.meta.conflicts(
            &edge_fields_given(set),
            &EDGE_FIELDS,
            set.props.as_ref(),
            cx,
        );
        let prev = Arc::clone(&entry.edge);
        let edge = Arc::make_mut(&mut entry.edge);
        let changed = edge.apply_set(set);
        edge.touch(cx.seq, cx.at_ms, &cx.actor.user_id);
        let stamp = cx.stamp();
        let mut stamps = Vec::new();
        let changed_slots = [
            changed.confidence.is_some(),
            changed.rationale.is_some(),
            changed.bidirectional.is_some(),
        ];
        for (slot, _) in changed_slots.iter().enumerate().filter(|(_, c)| **c) {
            stamps.push(entry.meta.record(FieldRef::Field(slot), stamp.clone()));
        }
        for key in changed.props.iter().flat_map(|p| p.keys()) {
            stamps.push(
                entry
                    .meta
                    .record(FieldRef::Prop(key.clone()), stamp.clone()),
            );
        }
        if entry.meta.props.len() > 2 * validate::MAX_PROPS {
            let props = entry.edge.props.clone().unwrap_or_default();
            entry.meta.prune_props(|k| props.contains_key(k), cx.base);
        }
        cx.undo.push(Undo::Edge {
            id: id.to_owned(),
            edge: prev,
            stamps,
        });
        cx.writes.push(Write::Edge(Arc::clone(&entry.edge)));
        let edge = &entry.edge;
        let event = EdgeUpdate {
            base_seq: None,
            id: Some(id.to_owned()),
            source: None,
            edge_type: None,
            target: None,
            set: (!changed.is_empty()).then_some(changed),
            rev: edge.rev,
            updated_at: edge.updated_at,
            updated_by: edge.updated_by.clone(),
            commit: None,
        };
        Ok(Applied {
            event: BatchOp::EdgeUpdate(event),
            concerned: (!conflicts.is_empty()).then(|| Concerned::Edge(id.to_owned(), concerned)),
            conflicts,
            text: None,
        })
    }

    /// Finishes deleting an edge already taken out of `edges`: unlinks it
    /// from the endpoints still present, leaves a tombstone, writes the
    /// deletion, and records how to undo each step.
    fn bury_edge(&mut self, cx: &mut Cx<'_>, id: &str, entry: EdgeEntry) {
        for end in [&entry.edge.source, &entry.edge.target] {
            if let Some(n) = self.nodes.get_mut(end) {
                if n.edges.remove(id) {
                    cx.undo.push(Undo::Link {
                        node: end.clone(),
                        edge: id.to_owned(),
                    });
                }
            }
        }
        cx.undo.push(Undo::PutEdge(id.to_owned(), Box::new(entry)));
        let prev = self.edge_tombs.insert(
            id.to_owned(),
            Tomb {
                seq: cx.seq,
                actor: Arc::clone(cx.actor),
            },
        );
        cx.undo.push(Undo::EdgeTomb {
            id: id.to_owned(),
            prev,
        });
        cx.writes.push(Write::EdgeDeleted(id.to_owned()));
    }

    fn edge_delete(&mut self, cx: &mut Cx<'_>, op: &EdgeDelete) -> Result<Applied, Refusal> {
        let Some(id) = op.edge_id() else {
            return Err(Refusal::invalid(
                "edge.delete names no edge: give `id`, or `source`, `type` and `target`",
            ));
        };
        let Some(entry) = self.edges.remove(&id) else {
            return Err(self.missing_edge(&id, cx.base));
        };
        self.bury_edge(cx, &id, entry);
        let event = EdgeDelete {
            base_seq: None,
            id: Some(id),
            source: None,
            edge_type: None,
            target: None,
            commit: None,
        };
        Ok(Applied::new(BatchOp::EdgeDelete(event)))
    }
}
