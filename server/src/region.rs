//! Graph regions (docs/protocol.md 7): what a region filter holds, checked
//! against the graph's [`Index`], and the limits a filter must keep.
//!
//! The index is what makes a region cheap to keep current: node positions
//! in a uniform grid (a bbox reads the cells it covers, never every node),
//! and each node's edges (an `around` walks its neighbourhood, an
//! `edgeType` query asks a node's edges). The hub keeps one per graph,
//! built the first time a session of the graph subscribes, and brings it up
//! to date with each committed group from the entities the group touched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use gitmind_owner::Entities;
use gitmind_schema::message::RegionFilter;
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::{Body, DecodeError};

use crate::view::View;

/// The most regions, and the most queries, a session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// The most node ids a `nodes` filter may list.
pub const MAX_FILTER_NODES: usize = 10_000;
/// The deepest `around`.
pub const MAX_DEPTH: u32 = 3;
/// The most nodes an `around` holds: its walk stops there, so an edge added
/// near a hub node costs a bounded walk, not the whole graph.
pub const MAX_AROUND_NODES: usize = 10_000;
/// The longest region or query id, in bytes.
pub const MAX_SUBSCRIPTION_ID: usize = 256;
/// The side of a grid cell, in the plane's units.
const CELL: f64 = 64.0;

/// Checks a region's id and filter against the limits (docs/protocol.md 7).
///
/// # Errors
///
/// `invalid` for a non-finite or inverted bbox, a depth out of 1 to 3, an
/// empty id; `too_large` past the limits on ids and node lists.
pub fn validate(region_id: &str, filter: &RegionFilter) -> Result<(), DecodeError> {
    validate_id(region_id)?;
    if let Some([x0, y0, x1, y1]) = filter.bbox {
        if ![x0, y0, x1, y1].iter().all(|v| v.is_finite()) {
            return Err(DecodeError::invalid("bbox numbers must be finite"));
        }
        if x0 > x1 || y0 > y1 {
            return Err(DecodeError::invalid(
                "bbox must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1",
            ));
        }
    }
    if let Some(nodes) = &filter.nodes {
        if nodes.len() > MAX_FILTER_NODES {
            return Err(DecodeError::too_large(format!(
                "a nodes filter lists at most {MAX_FILTER_NODES} ids"
            )));
        }
    }
    if let Some(around) = &filter.around {
        if !(1..=MAX_DEPTH).contains(&around.depth) {
            return Err(DecodeError::invalid("around.depth is 1 to 3"));
        }
    }
    Ok(())
}

/// Checks a region or query id.
///
/// # Errors
///
/// `invalid` when empty, `too_large` past [`MAX_SUBSCRIPTION_ID`].
pub fn validate_id(id: &str) -> Result<(), DecodeError> {
    if id.is_empty() {
        return Err(DecodeError::invalid(
            "a region or query id must not be empty",
        ));
    }
    if id.len() > MAX_SUBSCRIPTION_ID {
        return Err(DecodeError::too_large(format!(
            "a region or query id is at most {MAX_SUBSCRIPTION_ID} bytes"
        )));
    }
    Ok(())
}

/// A session's region and query ids, counted against
/// [`MAX_SUBSCRIPTIONS`] before anything reaches the hub.
///
/// Nothing is allocated while the session holds only the region it
/// started with, `"all"` (most sessions never subscribe: memory per idle
/// connection).
#[derive(Debug, Default)]
pub struct Counted {
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    regions: HashSet<String>,
    queries: HashSet<String>,
}

impl Default for Held {
    /// A session's start: the region `"all"`.
    fn default() -> Self {
        Held {
            regions: HashSet::from(["all".to_owned()]),
            queries: HashSet::new(),
        }
    }
}

impl Counted {
    /// Whether one more region of this id fits.
    ///
    /// # Errors
    ///
    /// `too_large` when the session holds [`MAX_SUBSCRIPTIONS`] others.
    pub fn check_region(&self, id: &str) -> Result<(), DecodeError> {
        match &self.held {
            Some(held) => fits(&held.regions, id, "regions"),
            None => Ok(()),
        }
    }

    /// Whether one more query of this id fits.
    ///
    /// # Errors
    ///
    /// `too_large` when the session holds [`MAX_SUBSCRIPTIONS`] others.
    pub fn check_query(&self, id: &str) -> Result<(), DecodeError> {
        match &self.held {
            Some(held) => fits(&held.queries, id, "queries"),
            None => Ok(()),
        }
    }

    /// Notes a message sent on to the hub.
    pub fn sent(&mut self, body: &Body) {
        match body {
            Body::RegionSubscribe(m) => {
                self.held().regions.insert(m.region_id.clone());
            }
            Body::RegionUnsubscribe(m) => {
                self.held().regions.remove(&m.region_id);
            }
            Body::QuerySubscribe(m) => {
                self.held().queries.insert(m.query_id.clone());
            }
            Body::QueryUnsubscribe(m) => {
                self.held().queries.remove(&m.query_id);
            }
            _ => {}
        }
    }

    fn held(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Box::default)
    }
}

fn fits(held: &HashSet<String>, id: &str, what: &str) -> Result<(), DecodeError> {
    if held.len() >= MAX_SUBSCRIPTIONS && !held.contains(id) {
        return Err(DecodeError::too_large(format!(
            "a session holds at most {MAX_SUBSCRIPTIONS} {what}"
        )));
    }
    Ok(())
}

/// A region filter as the hub keeps it. Every criterion given must hold
/// (they are ANDed); `all: true` alone holds everything.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `all: true` and nothing else.
    all: bool,
    bbox: Option<[f64; 4]>,
    nodes: Option<HashSet<Arc<str>>>,
    /// The centre and depth, and the nodes within reach now.
    around: Option<(Arc<str>, u32, HashSet<Arc<str>>)>,
    prefix: Option<String>,
}

impl Filter {
    /// The filter of a (validated) `region.subscribe`, its `around` walked
    /// on `index`.
    pub fn new(filter: &RegionFilter, index: &Index) -> Self {
        let all = filter.all == Some(true)
            && filter.bbox.is_none()
            && filter.nodes.is_none()
            && filter.around.is_none()
            && filter.prefix.is_none();
        let mut made = Filter {
            all,
            bbox: filter.bbox,
            nodes: filter
                .nodes
                .as_ref()
                .map(|ids| ids.iter().map(|id| Arc::from(id.as_str())).collect()),
            around: filter
                .around
                .as_ref()
                .map(|a| (Arc::from(a.id.as_str()), a.depth, HashSet::new())),
            prefix: filter.prefix.clone(),
        };
        made.walk(index);
        made
    }

    /// The region every session starts with.
    pub fn all() -> Self {
        Filter {
            all: true,
            bbox: None,
            nodes: None,
            around: None,
            prefix: None,
        }
    }

    /// Whether it holds everything.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether the node `id` is in the region now (it must exist).
    pub fn holds(&self, id: &str, index: &Index) -> bool {
        let Some(at) = index.nodes.get(id) else {
            return false;
        };
        if self.all {
            return true;
        }
        if let Some([x0, y0, x1, y1]) = self.bbox {
            match at {
                Some((x, y)) if *x >= x0 && *x <= x1 && *y >= y0 && *y <= y1 => {}
                _ => return false,
            }
        }
        if self.nodes.as_ref().is_some_and(|n| !n.contains(id)) {
            return false;
        }
        if self
            .around
            .as_ref()
            .is_some_and(|(_, _, near)| !near.contains(id))
        {
            return false;
        }
        if self
            .prefix
            .as_ref()
            .is_some_and(|p| !id.starts_with(p.as_str()))
        {
            return false;
        }
        // No criterion at all (`{}` or `all: false`): nothing.
        self.bbox.is_some()
            || self.nodes.is_some()
            || self.around.is_some()
            || self.prefix.is_some()
    }

    /// Walks an `around` again on the index as it is now; returns the nodes
    /// that came into reach or went out of it.
    pub fn walk(&mut self, index: &Index) -> Vec<Arc<str>> {
        let Some((centre, depth, near)) = &mut self.around else {
            return Vec::new();
        };
        let now = index.within(centre, *depth);
        let changed = now.symmetric_difference(near).cloned().collect();
        *near = now;
        changed
    }

    /// Whether a change to these nodes may change what the `around` reaches.
    pub fn reach_touched(&self, touched: &HashSet<Arc<str>>) -> bool {
        self.around.as_ref().is_some_and(|(centre, _, near)| {
            touched.contains(centre) || touched.iter().any(|t| near.contains(t))
        })
    }

    /// The nodes of the region now, as seen by `view`, found through the
    /// index (the most selective criterion first) and tested on the rest.
    pub fn members(&self, index: &Index, view: Option<&View>) -> Vec<Arc<str>> {
        let candidates: Vec<Arc<str>> = if let Some(nodes) = &self.nodes {
            nodes.iter().cloned().collect()
        } else if let Some((_, _, near)) = &self.around {
            near.iter().cloned().collect()
        } else if let Some(bbox) = self.bbox {
            index.in_bbox(bbox)
        } else {
            index.nodes.keys().cloned().collect()
        };
        candidates
            .into_iter()
            .filter(|id| view.is_none_or(|v| v.sees(id)) && self.holds(id, index))
            .collect()
    }
}

/// Node positions in a grid and each node's edges, kept current with the
/// committed graph.
#[derive(Debug, Default)]
pub struct Index {
    /// Every node, with its position if it has one.
    nodes: HashMap<Arc<str>, Option<(f64, f64)>>,
    /// The nodes in each cell.
    grid: HashMap<(i64, i64), HashSet<Arc<str>>>,
    /// Every edge: source, type, target.
    edges: HashMap<Arc<str>, EdgeEnds>,
    /// Each node's edges (by id), both directions.
    adjacent: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

/// An edge's ends and type, as the index holds them.
#[derive(Debug, Clone)]
pub struct EdgeEnds {
    /// The source node.
    pub source: Arc<str>,
    /// The edge's type.
    pub edge_type: Arc<str>,
    /// The target node.
    pub target: Arc<str>,
}

fn cell(x: f64, y: f64) -> (i64, i64) {
    // Saturating casts: any finite or infinite number lands in some cell.
    ((x / CELL).floor() as i64, (y / CELL).floor() as i64)
}

fn position(node: &Node) -> Option<(f64, f64)> {
    match (node.x, node.y) {
        (Some(x), Some(y)) if x.is_finite() && y.is_finite() => Some((x, y)),
        _ => None,
    }
}

fn edge_key(edge: &Edge) -> Arc<str> {
    match &edge.id {
        Some(id) => Arc::from(id.as_str()),
        None => Edge::make_id(&edge.source, &edge.edge_type, &edge.target).into(),
    }
}

impl Index {
    /// The index of a committed graph.
    pub fn build(nodes: &Entities<Node>, edges: &Entities<Edge>) -> Self {
        let mut index = Index::default();
        for node in nodes {
            index.put_node(Arc::from(node.id.as_str()), position(node));
        }
        for edge in edges {
            index.put_edge(edge_key(edge), edge);
        }
        index
    }

    /// Whether the node exists.
    pub fn has(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }

    /// The edges of a node.
    pub fn edges_of<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a EdgeEnds> + 'a {
        self.adjacent
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|e| self.edges.get(e))
    }

    /// An edge's ends, if it exists.
    pub fn edge(&self, id: &str) -> Option<&EdgeEnds> {
        self.edges.get(id)
    }

    /// Brings a node up to date (`None`: deleted, and its edges, which a
    /// delete takes along, with it).
    pub fn update_node(&mut self, id: &Arc<str>, node: Option<&Node>) {
        self.remove_node(id);
        match node {
            Some(node) => self.put_node(id.clone(), position(node)),
            None => {
                let gone: Vec<Arc<str>> = self
                    .adjacent
                    .get(id)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                for e in gone {
                    self.remove_edge(&e);
                }
            }
        }
    }

    /// Brings an edge up to date with the committed graph (`None`: deleted).
    pub fn update_edge(&mut self, id: &Arc<str>, edge: Option<&Edge>) {
        self.remove_edge(id);
        if let Some(edge) = edge {
            self.put_edge(id.clone(), edge);
        }
    }

    fn put_node(&mut self, id: Arc<str>, at: Option<(f64, f64)>) {
        if let Some((x, y)) = at {
            self.grid.entry(cell(x, y)).or_default().insert(id.clone());
        }
        self.nodes.insert(id, at);
    }

    fn remove_node(&mut self, id: &str) {
        if let Some(Some((x, y))) = self.nodes.remove(id) {
            let c = cell(x, y);
            if let Some(set) = self.grid.get_mut(&c) {
                set.remove(id);
                if set.is_empty() {
                    self.grid.remove(&c);
                }
            }
        }
    }

    fn put_edge(&mut self, id: Arc<str>, edge: &Edge) {
        let ends = EdgeEnds {
            source: Arc::from(edge.source.as_str()),
            edge_type: Arc::from(edge.edge_type.as_str()),
            target: Arc::from(edge.target.as_str()),
        };
        for end in [&ends.source, &ends.target] {
            self.adjacent
                .entry(end.clone())
                .or_default()
                .insert(id.clone());
        }
        self.edges.insert(id, ends);
    }

    fn remove_edge(&mut self, id: &str) {
        let Some(ends) = self.edges.remove(id) else {
            return;
        };
        for end in [&ends.source, &ends.target] {
            if let Some(set) = self.adjacent.get_mut(end) {
                set.remove(id);
                if set.is_empty() {
                    self.adjacent.remove(end);
                }
            }
        }
    }

    /// The nodes inside a bbox: the grid's cells it covers, or every node
    /// when it covers more cells than there are nodes.
    pub fn in_bbox(&self, [x0, y0, x1, y1]: [f64; 4]) -> Vec<Arc<str>> {
        let inside = |at: &Option<(f64, f64)>| {
            at.is_some_and(|(x, y)| x >= x0 && x <= x1 && y >= y0 && y <= y1)
        };
        let (c0, c1) = (cell(x0, y0), cell(x1, y1));
        let cells =
            (c1.0.saturating_sub(c0.0) as u128 + 1) * (c1.1.saturating_sub(c0.1) as u128 + 1);
        if cells > self.grid.len() as u128 {
            return self
                .nodes
                .iter()
                .filter(|(_, at)| inside(at))
                .map(|(id, _)| id.clone())
                .collect();
        }
        let mut found = Vec::new();
        for cx in c0.0..=c1.0 {
            for cy in c0.1..=c1.1 {
                for id in self.grid.get(&(cx, cy)).into_iter().flatten() {
                    if self.nodes.get(id).is_some_and(inside) {
                        found.push(id.clone());
                    }
                }
            }
        }
        found
    }

    /// The node `centre` and the nodes up to `depth` edges away (either
    /// direction), at most [`MAX_AROUND_NODES`] of them.
    pub fn within(&self, centre: &Arc<str>, depth: u32) -> HashSet<Arc<str>> {
        let mut near = HashSet::new();
        if !self.has(centre) {
            return near;
        }
        near.insert(centre.clone());
        let mut queue = VecDeque::from([(centre.clone(), 0)]);
        while let Some((id, d)) = queue.pop_front() {
            if d == depth {
                continue;
            }
            for edge in self.edges_of(&id) {
                let other = if edge.source == id {
                    &edge.target
                } else {
                    &edge.source
                };
                if near.len() >= MAX_AROUND_NODES {
                    return near;
                }
                if self.has(other) && near.insert(other.clone()) {
                    queue.push_back((other.clone(), d + 1));
                }
            }
        }
        near
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::Around;

    fn node(id: &str, x: f64, y: f64) -> Arc<Node> {
        Arc::new(Node {
            id: id.into(),
            x: Some(x),
            y: Some(y),
            ..Node::default()
        })
    }

    fn edge(s: &str, t: &str) -> Arc<Edge> {
        Arc::new(Edge {
            id: Some(Edge::make_id(s, "to", t)),
            source: s.into(),
            edge_type: "to".into(),
            target: t.into(),
            ..Edge::default()
        })
    }

    #[test]
    fn bbox_around_and_prefix_read_the_index() {
        let nodes = Entities::from(vec![
            node("a:1", 0.0, 0.0),
            node("a:2", 100.0, 100.0),
            node("b:3", 1000.0, -5.0),
            node("b:4", -300.0, 2.0),
        ]);
        let edges = Entities::from(vec![edge("a:1", "a:2"), edge("a:2", "b:3")]);
        let index = Index::build(&nodes, &edges);
        let mut got = index.in_bbox([-10.0, -10.0, 150.0, 150.0]);
        got.sort();
        assert_eq!(got, vec![Arc::from("a:1"), Arc::from("a:2")]);
        let filter = RegionFilter {
            around: Some(Around {
                id: "a:1".into(),
                depth: 1,
            }),
            ..RegionFilter::default()
        };
        let f = Filter::new(&filter, &index);
        assert!(f.holds("a:2", &index) && !f.holds("b:3", &index));
        let filter = RegionFilter {
            prefix: Some("b:".into()),
            bbox: Some([0.0, -10.0, 2000.0, 10.0]),
            ..RegionFilter::default()
        };
        let f = Filter::new(&filter, &index);
        assert_eq!(f.members(&index, None), vec![Arc::from("b:3")]);
    }

    #[test]
    fn limits_are_checked() {
        let bad = RegionFilter {
            bbox: Some([0.0, f64::NAN, 1.0, 1.0]),
            ..RegionFilter::default()
        };
        assert!(validate("r", &bad).is_err());
        let deep = RegionFilter {
            around: Some(Around {
                id: "x".into(),
                depth: 4,
            }),
            ..RegionFilter::default()
        };
        assert!(validate("r", &deep).is_err());
        let many = RegionFilter {
            nodes: Some(vec!["x".into(); MAX_FILTER_NODES + 1]),
            ..RegionFilter::default()
        };
        assert_eq!(
            validate("r", &many).unwrap_err().code,
            gitmind_schema::ErrorCode::TooLarge
        );
    }
}
