//! Rebuilding an owner after a restart, from what persistence found in
//! git: the committed graph and the journal of the replay window.

use std::collections::HashMap;
use std::sync::Arc;

use gitmind_schema::model::Edge;
use gitmind_schema::Body;

use crate::change::{Restored, Write};
use crate::graph::{self, Actor, ActorInfo, EdgeEntry, Meta, NodeEntry, OpRef, Stamp, Tomb};
use crate::history::TextHistory;
use crate::submit::op_of_body;
use crate::{Owner, OwnerConfig};

impl Owner {
    /// Rebuilds an owner from what persistence found in git: the graph as
    /// committed, its `seq` and epoch, and from the journal the replay
    /// window, the concurrency metadata (who changed which field when), the
    /// text histories, the tombstones and the mutation ids.
    ///
    /// What happened before the journal is not known: entities older than
    /// it count as existing since `seq` 0, and their text history starts at
    /// the journal's start.
    pub fn restore(restored: Restored, config: OwnerConfig) -> Owner {
        let Restored {
            graph,
            epoch,
            seq,
            nodes,
            edges,
            journal,
        } = restored;
        let mut owner = Owner::new(&graph, epoch, config);
        let journal_floor = journal.first().map_or(seq, |r| r.seq.saturating_sub(1));
        for node in nodes {
            let id = node.id.clone();
            let node = Arc::new(node);
            owner
                .committed_nodes
                .insert(Arc::from(id.as_str()), Arc::clone(&node));
            let entry = NodeEntry {
                node,
                meta: Meta::default(),
                text: TextHistory::starting_at(journal_floor),
                edges: Default::default(),
            };
            owner.live.nodes.insert(id, entry);
        }
        for mut edge in edges {
            let id = edge
                .id
                .clone()
                .unwrap_or_else(|| Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
            edge.id = Some(id.clone());
            for end in [&edge.source, &edge.target] {
                if let Some(n) = owner.live.nodes.get_mut(end) {
                    n.edges.insert(id.clone());
                }
            }
            let edge = Arc::new(edge);
            owner
                .committed_edges
                .insert(Arc::from(id.as_str()), Arc::clone(&edge));
            owner.live.edges.insert(
                id,
                EdgeEntry {
                    edge,
                    meta: Meta::default(),
                },
            );
        }
        owner.ordered_seq = seq;
        owner.committed_seq = seq;
        owner.window.floor = journal_floor;
        let mut actors: HashMap<(String, String), Actor> = HashMap::new();
        // The length of each node's content as the journal goes, where known.
        let mut lengths: HashMap<String, u64> = HashMap::new();
        for record in journal {
            let actor = actors
                .entry((record.session_id.clone(), record.user_id.clone()))
                .or_insert_with(|| {
                    Arc::new(ActorInfo {
                        session_id: record.session_id.clone(),
                        user_id: record.user_id.clone(),
                    })
                })
                .clone();
            let stamp = Stamp {
                seq: record.seq,
                actor,
            };
            match &record.event.body {
                Body::BatchUpdate(b) => {
                    for op in &b.ops {
                        owner.replay_op(OpRef::of(op), &stamp, &mut lengths);
                    }
                }
                body => {
                    if let Some(op) = op_of_body(body) {
                        owner.replay_op(op, &stamp, &mut lengths);
                    }
                }
            }
            // The edges deleted with a node are named only by the writes.
            for write in &record.writes {
                if let Write::EdgeDeleted(id) = write {
                    let tomb = Tomb {
                        seq: record.seq,
                        actor: Arc::clone(&stamp.actor),
                    };
                    owner.live.edge_tombs.insert(id.clone(), tomb);
                }
            }
            owner
                .idempotency
                .insert(&record.user_id, &record.mutation_id, record.seq);
            owner.now_ms = owner.now_ms.max(record.at_ms);
            owner.window.changes.push_back(Arc::new(record));
        }
        owner
    }

    /// Rebuilds the metadata one journaled event op implies.
    fn replay_op(&mut self, op: OpRef<'_>, stamp: &Stamp, lengths: &mut HashMap<String, u64>) {
        let seq = stamp.seq;
        match op {
            OpRef::NodeCreate(c) => {
                let id = &c.node.id;
                lengths.insert(
                    id.clone(),
                    c.node
                        .content
                        .as_deref()
                        .map_or(0, |s| s.chars().count() as u64),
                );
                if let Some(e) = self.live.nodes.get_mut(id) {
                    e.meta = Meta {
                        created: Some(stamp.clone()),
                        ..Meta::default()
                    };
                    for slot in &mut e.meta.fields {
                        slot.record(stamp.clone());
                    }
                    for key in c.node.props.iter().flat_map(|p| p.keys()) {
                        e.meta
                            .props
                            .entry(key.clone())
                            .or_default()
                            .record(stamp.clone());
                    }
                    e.text = TextHistory::starting_at(seq);
                }
            }
            OpRef::NodeUpdate(u) => {
                let Some(e) = self.live.nodes.get_mut(&u.id) else {
                    return;
                };
                if let Some(set) = &u.set {
                    e.meta
                        .stamp_set(&graph::node_fields_given(set), set.props.as_ref(), stamp);
                    if let Some(new) = &set.content {
                        let new_len = new.chars().count() as u64;
                        match lengths.get(&u.id) {
                            Some(old) => {
                                let mut op = gitmind_schema::ot::TextOp::new();
                                op.delete(*old).insert(new);
                                e.text.ops.push_back((seq, op));
                            }
                            None => e.text = TextHistory::starting_at(seq),
                        }
                        lengths.insert(u.id.clone(), new_len);
                    }
                }
                if let Some(op) = u.text.as_ref().and_then(|t| t.content.as_ref()) {
                    e.meta.fields[2].record(stamp.clone());
                    if !op.is_noop() {
                        e.text.ops.push_back((seq, op.clone()));
                    }
                    lengths.insert(u.id.clone(), op.target_len());
                }
            }
            OpRef::NodeDelete(d) => {
                lengths.remove(&d.id);
                let tomb = Tomb {
                    seq,
                    actor: Arc::clone(&stamp.actor),
                };
                self.live.node_tombs.insert(d.id.clone(), tomb);
            }
            OpRef::EdgeCreate(c) => {
                let id = c.edge.id.clone().unwrap_or_else(|| {
                    Edge::make_id(&c.edge.source, &c.edge.edge_type, &c.edge.target)
                });
                if let Some(e) = self.live.edges.get_mut(&id) {
                    e.meta = Meta {
                        created: Some(stamp.clone()),
                        ..Meta::default()
                    };
                    for slot in e.meta.fields.iter_mut().take(graph::EDGE_FIELDS.len()) {
                        slot.record(stamp.clone());
                    }
                    for key in c.edge.props.iter().flat_map(|p| p.keys()) {
                        e.meta
                            .props
                            .entry(key.clone())
                            .or_default()
                            .record(stamp.clone());
                    }
                }
            }
            OpRef::EdgeUpdate(u) => {
                let Some(id) = u.edge_id() else { return };
                let Some(e) = self.live.edges.get_mut(&id) else {
                    return;
                };
                if let Some(set) = &u.set {
                    e.meta
                        .stamp_set(&graph::edge_fields_given(set), set.props.as_ref(), stamp);
                }
            }
            OpRef::EdgeDelete(d) => {
                if let Some(id) = d.edge_id() {
                    self.live.edge_tombs.insert(
                        id,
                        Tomb {
                            seq,
                            actor: Arc::clone(&stamp.actor),
                        },
                    );
                }
            }
        }
    }
}
