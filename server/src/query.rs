//! Live queries (docs/protocol.md 7): a session's standing question about
//! its graph's nodes, answered at once and again whenever the answer
//! changes.
//!
//! A query is evaluated over the whole graph once, when it is subscribed;
//! after that only the nodes a committed group touched are tested again
//! (a node written, or an end of an edge written, for `edgeType`). The set
//! of every match is kept; the results are its first `limit` ids in id
//! order, so a result that leaves is replaced without a new scan.

use std::collections::BTreeSet;
use std::sync::Arc;

use gitmind_owner::Entities;
use gitmind_schema::message::Query;
use gitmind_schema::model::Node;
use gitmind_schema::DecodeError;

use crate::region::{self, Index};
use crate::view::View;

/// The most results a query gives (its `limit`, and the default).
pub const MAX_RESULTS: u32 = 10_000;

/// Checks a query's id and fields against the limits.
///
/// # Errors
///
/// `invalid` for an empty id, `too_large` for a long id or a `limit` over
/// [`MAX_RESULTS`].
pub fn validate(query_id: &str, query: &Query) -> Result<(), DecodeError> {
    region::validate_id(query_id)?;
    if query.limit.is_some_and(|l| l > MAX_RESULTS) {
        return Err(DecodeError::too_large(format!(
            "a query's limit is at most {MAX_RESULTS}"
        )));
    }
    Ok(())
}

/// A subscribed query and its answer.
#[derive(Debug)]
pub struct LiveQuery {
    /// The client's name for it.
    pub id: String,
    query: Query,
    /// Every node that matches now.
    matches: BTreeSet<Arc<str>>,
    /// The results last sent.
    sent: Vec<Arc<str>>,
}

impl LiveQuery {
    /// Evaluates `query` over the committed graph, as `view` sees it.
    pub fn new(
        id: String,
        query: Query,
        nodes: &Entities<Node>,
        index: &Index,
        view: Option<&View>,
    ) -> Self {
        let mut live = LiveQuery {
            id,
            query,
            matches: BTreeSet::new(),
            sent: Vec::new(),
        };
        for node in nodes {
            if live.test(node, index, view) {
                live.matches.insert(Arc::from(node.id.as_str()));
            }
        }
        live
    }

    /// Whether the node matches every field given.
    fn test(&self, node: &Node, index: &Index, view: Option<&View>) -> bool {
        let q = &self.query;
        if view.is_some_and(|v| !v.sees(&node.id)) {
            return false;
        }
        if q.kind
            .as_ref()
            .is_some_and(|k| node.kind.as_ref() != Some(k))
        {
            return false;
        }
        if q.prefix
            .as_ref()
            .is_some_and(|p| !node.id.starts_with(p.as_str()))
        {
            return false;
        }
        if q.label_contains.as_ref().is_some_and(|s| {
            !node
                .label
                .as_deref()
                .is_some_and(|label| label.contains(s.as_str()))
        }) {
            return false;
        }
        if let Some(props) = &q.props {
            let have = node.props.as_ref();
            if !props
                .iter()
                .all(|(k, v)| have.and_then(|p| p.get(k)) == Some(v))
            {
                return false;
            }
        }
        if let Some(ty) = &q.edge_type {
            if !index
                .edges_of(&node.id)
                .any(|e| &*e.edge_type == ty.as_str())
            {
                return false;
            }
        }
        true
    }

    /// Tests a node the committed group touched again (`None`: it is gone).
    pub fn retest(
        &mut self,
        id: &Arc<str>,
        node: Option<&Node>,
        index: &Index,
        view: Option<&View>,
    ) {
        if node.is_some_and(|n| self.test(n, index, view)) {
            self.matches.insert(id.clone());
        } else {
            self.matches.remove(id);
        }
    }

    /// The results now, and those added and removed since the last call;
    /// `None` when nothing changed since then (except on the first call).
    pub fn results(&mut self, first: bool) -> Option<(Vec<String>, Vec<String>, Vec<String>)> {
        let limit = self.query.limit.unwrap_or(MAX_RESULTS) as usize;
        let now: Vec<Arc<str>> = self.matches.iter().take(limit).cloned().collect();
        if !first && now == self.sent {
            return None;
        }
        let old: BTreeSet<&Arc<str>> = self.sent.iter().collect();
        let new: BTreeSet<&Arc<str>> = now.iter().collect();
        let added = new.difference(&old).map(|s| s.to_string()).collect();
        let removed = old.difference(&new).map(|s| s.to_string()).collect();
        let results = now.iter().map(|s| s.to_string()).collect();
        self.sent = now;
        Some((results, added, removed))
    }
}
