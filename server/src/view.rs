//! What a session with read prefixes sees of its graph (docs/security.md,
//! "What a user may read"): the nodes whose ids start with one of its
//! prefixes, and the edges whose two ends it sees. Everything else is left
//! out of its syncs and its events; the hub filters an event once per
//! distinct view on the graph and encodes the result once, as it does for
//! everyone else.

use std::borrow::Cow;
use std::sync::Arc;

use gitmind_owner::SyncData;
use gitmind_schema::message::BatchUpdate;
use gitmind_schema::{Body, Envelope};

/// A set of node-id prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    prefixes: Vec<String>,
}

impl View {
    /// The view of these prefixes.
    pub fn new(mut prefixes: Vec<String>) -> Self {
        prefixes.sort_unstable();
        prefixes.dedup();
        View { prefixes }
    }

    /// Whether the node `id` is in view.
    pub fn sees(&self, id: &str) -> bool {
        self.prefixes.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// Whether the edge between `source` and `target` is in view.
    pub fn sees_edge(&self, source: &str, target: &str) -> bool {
        self.sees(source) && self.sees(target)
    }

    /// Whether the edge of this id is in view, however the id is read.
    pub fn sees_edge_id(&self, id: &str) -> bool {
        let mut splits = edge_splits(id).peekable();
        splits.peek().is_some() && splits.all(|(s, t)| self.sees_edge(s, t))
    }

    /// Whether a mutation's change (an event's body, or a batch op) is
    /// entirely in view; `None` for a batch, which is cut instead.
    fn sees_change(&self, body: &Body) -> Option<bool> {
        Some(match body {
            Body::NodeCreate(m) => self.sees(&m.node.id),
            Body::NodeUpdate(m) => self.sees(&m.id),
            Body::NodeDelete(m) => self.sees(&m.id),
            Body::EdgeCreate(m) => self.sees_edge(&m.edge.source, &m.edge.target),
            Body::EdgeUpdate(m) => m.edge_id().is_some_and(|id| self.sees_edge_id(&id)),
            Body::EdgeDelete(m) => m.edge_id().is_some_and(|id| self.sees_edge_id(&id)),
            Body::BatchUpdate(_) => return None,
            _ => true,
        })
    }

    /// An event as this view sees it: the same, a batch cut to the ops in
    /// view, or nothing.
    pub fn event<'a>(&self, event: &'a Envelope) -> Option<Cow<'a, Envelope>> {
        match self.sees_change(&event.body) {
            Some(true) => Some(Cow::Borrowed(event)),
            Some(false) => None,
            None => {
                let Body::BatchUpdate(batch) = &event.body else {
                    return None;
                };
                let ops: Vec<_> = batch
                    .ops
                    .iter()
                    .filter(|op| self.sees_change(&Body::from((*op).clone())) == Some(true))
                    .cloned()
                    .collect();
                if ops.is_empty() {
                    return None;
                }
                if ops.len() == batch.ops.len() {
                    return Some(Cow::Borrowed(event));
                }
                let mut cut = event.clone();
                cut.body = Body::BatchUpdate(BatchUpdate {
                    ops,
                    ..batch.clone()
                });
                Some(Cow::Owned(cut))
            }
        }
    }

    /// A sync as this view sees it.
    pub fn sync(&self, sync: SyncData) -> SyncData {
        match sync {
            SyncData::Snapshot {
                epoch,
                seq,
                nodes,
                edges,
            } => SyncData::Snapshot {
                epoch,
                seq,
                nodes: nodes
                    .into_iter()
                    .filter(|n| self.sees(&n.id))
                    .collect::<Vec<_>>()
                    .into(),
                edges: edges
                    .into_iter()
                    .filter(|e| self.sees_edge(&e.source, &e.target))
                    .collect::<Vec<_>>()
                    .into(),
            },
            SyncData::Delta { epoch, seq, events } => SyncData::Delta {
                epoch,
                seq,
                events: events
                    .iter()
                    .filter_map(|e| self.event(e).map(Cow::into_owned))
                    .collect(),
            },
        }
    }
}

/// The view of a session: `None` when it sees everything.
pub type SessionView = Option<Arc<View>>;

/// Every (source, target) an edge id `"{source} -[{type}]-> {target}"`
/// can be read as (a node id may itself contain ` -[`).
pub fn edge_splits(id: &str) -> impl Iterator<Item = (&str, &str)> {
    id.match_indices(" -[").filter_map(move |(at, _)| {
        let rest = &id[at + 3..];
        let end = rest.find("]-> ")?;
        Some((&id[..at], &rest[end + 4..]))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::{json, Limits};

    fn event(text: &str) -> Envelope {
        json::decode(text, &Limits::default())
            .unwrap()
            .remove(0)
            .unwrap()
    }

    #[test]
    fn events_out_of_view_are_dropped_and_batches_cut() {
        let view = View::new(vec!["concept:".into()]);
        let seen = event(r#"{"id":"1","type":"node.delete","seq":3,"data":{"id":"concept:a"}}"#);
        assert!(matches!(view.event(&seen), Some(Cow::Borrowed(_))));
        let hidden = event(r#"{"id":"2","type":"node.delete","seq":4,"data":{"id":"person:a"}}"#);
        assert!(view.event(&hidden).is_none());
        let edge = event(
            r#"{"id":"3","type":"edge.delete","seq":5,"data":{"id":"concept:a -[blocks]-> person:b"}}"#,
        );
        assert!(view.event(&edge).is_none(), "one end out of view");
        let batch = event(
            r#"{"id":"4","type":"batch.update","seq":6,"data":{"ops":[
                {"type":"node.delete","data":{"id":"person:x"}},
                {"type":"node.delete","data":{"id":"concept:y"}}]}}"#,
        );
        let cut = view.event(&batch).unwrap();
        let Body::BatchUpdate(b) = &cut.body else {
            panic!()
        };
        assert_eq!(b.ops.len(), 1);
        assert_eq!(cut.seq, Some(6));
    }

    #[test]
    fn an_edge_id_is_in_view_only_if_every_reading_of_it_is() {
        let view = View::new(vec!["a:".into()]);
        assert!(view.sees_edge_id("a:x -[t]-> a:y"));
        assert!(!view.sees_edge_id("a:x -[t]-> b:y"));
        // `a:x -[t]-> b:y` as a node id: two readings, one out of view.
        assert!(!view.sees_edge_id("a:x -[t]-> b:y -[u]-> a:z"));
        assert!(!view.sees_edge_id("no edge here"));
    }
}
