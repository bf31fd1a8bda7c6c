//! STAND-IN until the real graph owner lands (branch `owner`): the API the
//! server drives, with just enough behaviour to carry node changes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use gitmind_schema::message::*;
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::{Body, Envelope};

use crate::change::{ChangeRecord, Group, Restored, Write};

#[derive(Debug, Clone, Default)]
pub struct OwnerConfig {
    pub edge_types: Vec<String>,
    pub replay_changes: usize,
    pub replay_ms: u64,
    pub max_batch_ops: usize,
}

pub type SessionKey = u64;

#[derive(Debug, Clone)]
pub struct Origin {
    pub session: SessionKey,
    pub session_id: String,
    pub user_id: String,
}

pub enum Submit {
    Ordered(u64),
    Reply(Envelope),
}

pub struct Release {
    pub seq: u64,
    pub recipients: Vec<SessionKey>,
    pub outcome: Envelope,
    pub event: Envelope,
}

pub enum SyncData {
    Snapshot {
        epoch: String,
        seq: u64,
        nodes: Vec<Arc<Node>>,
        edges: Vec<Arc<Edge>>,
    },
    Delta {
        epoch: String,
        seq: u64,
        events: Vec<Envelope>,
    },
}

pub struct Owner {
    graph: String,
    epoch: String,
    nodes: BTreeMap<String, Arc<Node>>,
    seq: u64,
    committed: u64,
    pending: Vec<(Origin, Arc<ChangeRecord>)>,
    ungrouped: Vec<Arc<ChangeRecord>>,
    window: Vec<Envelope>,
}

impl Owner {
    pub fn new(graph: &str, epoch: String, _config: OwnerConfig) -> Owner {
        Owner {
            graph: graph.into(),
            epoch,
            nodes: BTreeMap::new(),
            seq: 0,
            committed: 0,
            pending: vec![],
            ungrouped: vec![],
            window: vec![],
        }
    }
    pub fn restore(r: Restored, config: OwnerConfig) -> Owner {
        let mut o = Owner::new(&r.graph, r.epoch, config);
        o.seq = r.seq;
        o.committed = r.seq;
        o.nodes = r
            .nodes
            .into_iter()
            .map(|n| (n.id.clone(), Arc::new(n)))
            .collect();
        o
    }
    pub fn graph(&self) -> &str {
        &self.graph
    }
    pub fn epoch(&self) -> &str {
        &self.epoch
    }
    pub fn committed_seq(&self) -> u64 {
        self.committed
    }
    pub fn ordered_seq(&self) -> u64 {
        self.seq
    }

    pub fn submit(&mut self, origin: Origin, mutation_id: &str, body: Body, now_ms: u64) -> Submit {
        let rollback = |m: &str| {
            Submit::Reply(Envelope::new(
                "r",
                Body::UpdateRollback(UpdateRollback {
                    reference: mutation_id.into(),
                    reason: RollbackReason::Invalid,
                    message: m.into(),
                    current: None,
                    index: None,
                    retry_after_ms: None,
                }),
            ))
        };
        let seq = self.seq + 1;
        let (event_body, writes) = match body {
            Body::NodeCreate(mut c) => {
                if self.nodes.contains_key(&c.node.id) {
                    return rollback("exists");
                }
                c.node.rev = Some(seq);
                c.node.created_at = Some(now_ms);
                c.node.updated_at = Some(now_ms);
                c.node.created_by = Some(origin.user_id.clone());
                c.node.updated_by = Some(origin.user_id.clone());
                c.base_seq = None;
                let n = Arc::new(c.node.clone());
                self.nodes.insert(c.node.id.clone(), n.clone());
                (Body::NodeCreate(c), vec![Write::Node(n)])
            }
            Body::NodeUpdate(mut u) => {
                let Some(n) = self.nodes.get_mut(&u.id) else {
                    return rollback("not found");
                };
                let n = Arc::make_mut(n);
                if let Some(set) = &u.set {
                    if let Some(l) = &set.label {
                        n.label = Some(l.clone());
                    }
                    if let Some(x) = set.x {
                        n.x = Some(x);
                    }
                }
                n.rev = Some(seq);
                u.base_seq = None;
                u.rev = Some(seq);
                u.updated_at = Some(now_ms);
                u.updated_by = Some(origin.user_id.clone());
                (Body::NodeUpdate(u), vec![Write::Node(Arc::new(n.clone()))])
            }
            Body::NodeDelete(mut d) => {
                if self.nodes.remove(&d.id).is_none() {
                    return rollback("not found");
                }
                d.base_seq = None;
                d.edges = Some(vec![]);
                let id = d.id.clone();
                (Body::NodeDelete(d), vec![Write::NodeDeleted(id)])
            }
            _ => return rollback("the stand-in owner carries node changes only"),
        };
        self.seq = seq;
        let mut event = Envelope::new(mutation_id, event_body);
        event.seq = Some(seq);
        event.user_id = Some(origin.user_id.clone());
        event.session_id = Some(origin.session_id.clone());
        event.timestamp = Some(now_ms);
        let mut outcome = Envelope::new(
            format!("o-{seq}"),
            Body::UpdateConfirmed(UpdateConfirmed {
                reference: mutation_id.into(),
                seq,
                commit: String::new(),
                rev: seq,
                text: None,
            }),
        );
        outcome.seq = Some(seq);
        outcome.user_id = Some(origin.user_id.clone());
        outcome.session_id = Some(origin.session_id.clone());
        let rec = Arc::new(ChangeRecord {
            seq,
            at_ms: now_ms,
            user_id: origin.user_id.clone(),
            session_id: origin.session_id.clone(),
            mutation_id: mutation_id.into(),
            event,
            outcome,
            writes,
        });
        self.ungrouped.push(rec.clone());
        self.pending.push((origin, rec));
        Submit::Ordered(seq)
    }
    pub fn take_group(&mut self) -> Option<Group> {
        if self.ungrouped.is_empty() {
            return None;
        }
        Some(Group {
            graph: self.graph.clone(),
            epoch: self.epoch.clone(),
            changes: std::mem::take(&mut self.ungrouped),
        })
    }
    pub fn committed(&mut self, upto: u64, commit: &str) -> Vec<Release> {
        let mut out = vec![];
        self.pending.retain(|(o, rec)| {
            if rec.seq > upto {
                return true;
            }
            let mut event = rec.event.clone();
            set_commit(&mut event.body, commit);
            let mut outcome = rec.outcome.clone();
            if let Body::UpdateConfirmed(c) = &mut outcome.body {
                c.commit = commit.into();
            }
            self.window.push(event.clone());
            out.push(Release {
                seq: rec.seq,
                recipients: vec![o.session],
                outcome,
                event,
            });
            false
        });
        self.committed = upto;
        out
    }
    pub fn commit_failed(&mut self, _from_seq: u64, _reason: &str) -> Vec<(SessionKey, Envelope)> {
        vec![]
    }
    pub fn sync(&self, since: Option<(u64, &str)>) -> SyncData {
        if let Some((since, epoch)) = since {
            if epoch == self.epoch && since <= self.committed {
                let events = self
                    .window
                    .iter()
                    .filter(|e| e.seq.unwrap_or(0) > since)
                    .cloned()
                    .collect();
                return SyncData::Delta {
                    epoch: self.epoch.clone(),
                    seq: self.committed,
                    events,
                };
            }
        }
        SyncData::Snapshot {
            epoch: self.epoch.clone(),
            seq: self.committed,
            nodes: self.nodes.values().cloned().collect(),
            edges: vec![],
        }
    }
}

fn set_commit(body: &mut Body, commit: &str) {
    let c = Some(commit.to_owned());
    match body {
        Body::NodeCreate(b) => b.commit = c,
        Body::NodeUpdate(b) => b.commit = c,
        Body::NodeDelete(b) => b.commit = c,
        _ => {}
    }
}
