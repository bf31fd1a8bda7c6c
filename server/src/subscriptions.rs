//! Selective subscriptions (docs/protocol.md 7): each session's regions and
//! live queries on one graph, kept by the hub beside the graph's owner.
//!
//! A session that never subscribes costs nothing here: it has the region
//! `"all"` and takes the ordinary path of [`crate::view`] and
//! [`crate::fanout`]. Once a session of a graph subscribes, the graph gets
//! a [`crate::region::Index`] (dropped again when no session holds a subscription)
//! and each committed group is looked at once, in [`Subscriptions::committed`],
//! change by change, from the state after each change that the owner
//! recorded (its writes):
//!
//! 1. the nodes and edges the change touched are read off its writes;
//! 2. for each subscribed session, whether each touched node was in each of
//!    its regions before the change; then the index is brought up to date
//!    and the `around`s the change reached are walked again;
//! 3. a node that was in a region and is no longer, or the other way round,
//!    gives `region.leave` or `region.enter` (the node as of that change; a
//!    node created or deleted arrives as its event instead);
//! 4. each session whose regions do not hold everything notes which ops of
//!    the change it sees; over the group, sessions with the same read view
//!    and the same ops seen form one group, and each distinct cut of each
//!    change is encoded once, as a view's is;
//! 5. once per group, each live query tests the touched nodes again and
//!    sends `query.results` if its results changed.
//!
//! Ids never change, so an id prefix never gains or loses a node but by its
//! creation or deletion; a relabel changes no region, only queries
//! (`labelContains`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gitmind_owner::change::Write;
use gitmind_owner::{Entities, Owner, Release, SessionKey, SyncData};
use gitmind_schema::message::{
    BatchOp, BatchUpdate, QueryResults, RegionEnter, RegionLeave, RegionSync,
};
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::{Body, Codec, Envelope, PerCodec};

use crate::fanout::{self, Encoded, Member};
use crate::query::LiveQuery;
use crate::region::{Filter, Index};
use crate::stamp::stamped;
use crate::view::View;

/// The regions and queries of the sessions of one graph that subscribed.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Built when the first session subscribes.
    index: Option<Index>,
    sessions: HashMap<SessionKey, Subs>,
}

/// One session's subscriptions.
#[derive(Debug)]
struct Subs {
    codec: Codec,
    view: Option<Arc<View>>,
    /// Its regions, by id, in the order subscribed.
    regions: Vec<(String, Filter)>,
    queries: Vec<LiveQuery>,
}

impl Subs {
    fn sees_all(&self) -> bool {
        self.regions.iter().any(|(_, f)| f.is_all())
    }

    fn may_read(&self, id: &str) -> bool {
        self.view.as_ref().is_none_or(|v| v.sees(id))
    }

    /// Whether the node is in any of its regions (and in its read view).
    fn sees(&self, id: &str, index: &Index) -> bool {
        self.may_read(id) && self.regions.iter().any(|(_, f)| f.holds(id, index))
    }

    /// Whether it holds nothing but the default region.
    fn is_default(&self) -> bool {
        self.queries.is_empty()
            && self.regions.len() == 1
            && self.regions[0].0 == "all"
            && self.regions[0].1.is_all()
    }
}

/// What [`Subscriptions::committed`] gives the fan-out.
#[derive(Debug, Default)]
pub struct Cuts {
    /// The group of each session whose regions cut the changes.
    pub groups: Arc<HashMap<SessionKey, usize>>,
    /// For each change, its event as each group sees it, encoded once.
    pub cuts: Vec<Vec<Option<Encoded>>>,
    /// For each change, the region enters and leaves it made, for each
    /// session, to send after it; query results come after the last.
    pub extras: Vec<HashMap<SessionKey, Vec<Envelope>>>,
    /// Sessions per codec that see nothing of the graph through the
    /// ordinary path (no read view, regions that cut).
    pub regional: PerCodec<usize>,
    /// Distinct cuts encoded (each once per codec in use).
    pub encoded: u64,
}

/// The committed graph.
fn committed(owner: &Owner) -> (Entities<Node>, Entities<Edge>) {
    match owner.sync(None) {
        SyncData::Snapshot { nodes, edges, .. } => (nodes, edges),
        SyncData::Delta { .. } => (Entities::default(), Entities::default()),
    }
}

impl Subscriptions {
    /// Whether no session subscribed anything.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Handles a (validated) `region.*` or `query.*` message of `member`;
    /// returns what to send the session (`region.sync`, `query.results`).
    pub fn subscribe(&mut self, member: &Member, body: Body, owner: &Owner) -> Vec<Envelope> {
        let (nodes, edges) = committed(owner);
        let index = self
            .index
            .get_or_insert_with(|| Index::build(&nodes, &edges));
        let subs = self.sessions.entry(member.session).or_insert_with(|| Subs {
            codec: member.codec,
            view: member.view.clone(),
            regions: vec![("all".into(), Filter::all())],
            queries: Vec::new(),
        });
        let seq = owner.committed_seq();
        let mut out = Vec::new();
        match body {
            Body::RegionSubscribe(m) => {
                let filter = Filter::new(&m.filter, index);
                let members = filter.members(index, subs.view.as_deref());
                let mut edge_ids = HashSet::new();
                let mut sync_edges = Vec::new();
                for id in &members {
                    for e in index.edges_of(id) {
                        let key = Edge::make_id(&e.source, &e.edge_type, &e.target);
                        if subs
                            .view
                            .as_ref()
                            .is_some_and(|v| !v.sees_edge(&e.source, &e.target))
                        {
                            continue;
                        }
                        if edge_ids.insert(key.clone()) {
                            if let Some(edge) = edges.get(&key) {
                                sync_edges.push((**edge).clone());
                            }
                        }
                    }
                }
                let sync_nodes = members
                    .iter()
                    .filter_map(|id| nodes.get(id).map(|n| (**n).clone()))
                    .collect();
                subs.regions.retain(|(id, _)| *id != m.region_id);
                subs.regions.push((m.region_id.clone(), filter));
                out.extend(region_syncs(&m.region_id, seq, sync_nodes, sync_edges));
            }
            Body::RegionUnsubscribe(m) => subs.regions.retain(|(id, _)| *id != m.region_id),
            Body::QuerySubscribe(m) => {
                subs.queries.retain(|q| q.id != m.query_id);
                let mut live =
                    LiveQuery::new(m.query_id, m.query, &nodes, index, subs.view.as_deref());
                if let Some(results) = live.results(true) {
                    out.push(query_results(&live.id, seq, results));
                }
                subs.queries.push(live);
            }
            Body::QueryUnsubscribe(m) => subs.queries.retain(|q| q.id != m.query_id),
            _ => {}
        }
        if subs.is_default() {
            self.leave(member.session);
        }
        out
    }

    /// Forgets a session.
    pub fn leave(&mut self, session: SessionKey) {
        self.sessions.remove(&session);
        if self.sessions.is_empty() {
            self.index = None;
        }
    }

    /// A `graph.sync` for `session` as its regions see it: a snapshot of
    /// the nodes in its regions and the edges with an end among them. A
    /// delta asked by a session whose regions cut is answered with that
    /// snapshot instead (docs/protocol.md 7, "Resuming with regions").
    pub fn sync(&self, session: SessionKey, sync: SyncData, owner: &Owner) -> SyncData {
        let (Some(subs), Some(index)) = (self.sessions.get(&session), &self.index) else {
            return sync;
        };
        if subs.sees_all() {
            return sync;
        }
        let (nodes, edges) = committed(owner);
        let seq = owner.committed_seq();
        let nodes: Vec<Arc<Node>> = nodes
            .into_iter()
            .filter(|n| subs.sees(&n.id, index))
            .collect();
        let seen: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        let edges: Vec<Arc<Edge>> = edges
            .into_iter()
            .filter(|e| {
                subs.view
                    .as_ref()
                    .is_none_or(|v| v.sees_edge(&e.source, &e.target))
                    && (seen.contains(e.source.as_str()) || seen.contains(e.target.as_str()))
            })
            .collect();
        SyncData::Snapshot {
            epoch: owner.epoch().to_owned(),
            seq,
            nodes: nodes.into(),
            edges: edges.into(),
        }
    }

    /// Looks at a committed group, change by change (step by step in the
    /// module documentation); `before` is the committed graph's nodes as
    /// they were before the group. `None` when no session subscribed.
    pub fn committed(
        &mut self,
        releases: &[Release],
        before: &Entities<Node>,
        owner: &Owner,
    ) -> Option<Cuts> {
        let index = self.index.as_mut()?;
        let mut cuts = Cuts {
            cuts: vec![Vec::new(); releases.len()],
            extras: vec![HashMap::new(); releases.len()],
            ..Cuts::default()
        };
        // Each node as of the change being looked at: its latest write in
        // the group so far, else as it was before the group.
        let mut latest: HashMap<Arc<str>, Option<Arc<Node>>> = HashMap::new();
        let mut signs: HashMap<SessionKey, Vec<bool>> = HashMap::new();
        let mut ops_per_change = Vec::with_capacity(releases.len());
        let mut touched_in_group: Vec<Arc<str>> = Vec::new();
        for (r, release) in releases.iter().enumerate() {
            // 1. What the change touched, from its writes.
            let mut touched: Vec<Arc<str>> = Vec::new();
            let mut at: HashMap<Arc<str>, usize> = HashMap::new();
            let mut touch = |id: &str, touched: &mut Vec<Arc<str>>| {
                if !at.contains_key(id) {
                    let id: Arc<str> = id.into();
                    at.insert(id.clone(), touched.len());
                    touched.push(id);
                }
            };
            let mut edge_ends: HashMap<&str, (Arc<str>, Arc<str>)> = HashMap::new();
            for w in &release.record.writes {
                match w {
                    Write::Node(n) => touch(&n.id, &mut touched),
                    Write::NodeDeleted(id) => touch(id, &mut touched),
                    Write::Edge(e) => {
                        let id = e.id.as_deref().unwrap_or_default();
                        edge_ends.insert(id, (e.source.as_str().into(), e.target.as_str().into()));
                        touch(&e.source, &mut touched);
                        touch(&e.target, &mut touched);
                    }
                    Write::EdgeDeleted(id) => {
                        if let Some(e) = index.edge(id) {
                            edge_ends.insert(id, (e.source.clone(), e.target.clone()));
                            let (s, t) = (e.source.clone(), e.target.clone());
                            touch(&s, &mut touched);
                            touch(&t, &mut touched);
                        }
                    }
                }
            }
            let mut ops = Vec::new();
            for_each_op(&release.event().body, |op| ops.push(op));
            for op in &mut ops {
                if let Op::Edge(id, ends) = op {
                    if let Some(e) = edge_ends.get(&**id) {
                        *ends = Some(e.clone());
                    } else if let Some(e) = index.edge(id) {
                        *ends = Some((e.source.clone(), e.target.clone()));
                    }
                }
            }
            let touched_set: HashSet<Arc<str>> = touched.iter().cloned().collect();
            let existed: Vec<bool> = touched.iter().map(|id| index.has(id)).collect();
            // 2. Before the change, per session, touched node and region.
            let before_rows: HashMap<SessionKey, Vec<Vec<bool>>> = self
                .sessions
                .iter()
                .map(|(key, subs)| {
                    let rows = touched
                        .iter()
                        .map(|id| region_row(subs, id, index))
                        .collect();
                    (*key, rows)
                })
                .collect();
            for w in &release.record.writes {
                match w {
                    Write::Node(n) => {
                        let id: Arc<str> = n.id.as_str().into();
                        index.update_node(&id, Some(n));
                        latest.insert(id, Some(n.clone()));
                    }
                    Write::NodeDeleted(id) => {
                        let id: Arc<str> = id.as_str().into();
                        index.update_node(&id, None);
                        latest.insert(id, None);
                    }
                    Write::Edge(e) => {
                        let id: Arc<str> = e.id.as_deref().unwrap_or_default().into();
                        index.update_edge(&id, Some(e));
                    }
                    Write::EdgeDeleted(id) => index.update_edge(&id.as_str().into(), None),
                }
            }
            let index = &*index;
            let state = |id: &str| -> Option<Arc<Node>> {
                match latest.get(id) {
                    Some(n) => n.clone(),
                    None => before.get(id).cloned(),
                }
            };
            for (key, subs) in &mut self.sessions {
                let mut extras = Vec::new();
                // The arounds the change reached, walked again.
                let mut reached: Vec<(usize, Filter, Vec<Arc<str>>)> = Vec::new();
                for (i, (_, filter)) in subs.regions.iter_mut().enumerate() {
                    if filter.reach_touched(&touched_set) {
                        let old = filter.clone();
                        let changed = filter.walk(index);
                        reached.push((i, old, changed));
                    }
                }
                let subs = &*subs;
                let before_rows = before_rows.get(key).map(Vec::as_slice).unwrap_or_default();
                let after_rows: Vec<Vec<bool>> = touched
                    .iter()
                    .map(|id| region_row(subs, id, index))
                    .collect();
                // 3. Enters and leaves of the touched nodes that lived
                // through the change, then of the nodes a walk reached or
                // dropped.
                for (i, id) in touched.iter().enumerate() {
                    if existed[i] && index.has(id) {
                        crossings(
                            subs,
                            id,
                            &before_rows[i],
                            &after_rows[i],
                            &state,
                            &mut extras,
                        );
                    }
                }
                for (i, old, changed) in &reached {
                    for id in changed {
                        if touched_set.contains(id) || !index.has(id) || !subs.may_read(id) {
                            continue;
                        }
                        let was = old.holds(id, index);
                        let is = subs.regions[*i].1.holds(id, index);
                        if was != is {
                            extras.push(crossing(&subs.regions[*i].0, id, is, &state));
                        }
                    }
                }
                if !subs.sees_all() {
                    // 4. Which ops it sees.
                    let union = |rows: &[Vec<bool>], i: usize| rows[i].iter().any(|b| *b);
                    let node_seen = |i: usize| {
                        let (b, a) = (union(before_rows, i), union(&after_rows, i));
                        // Created: seen if it ends up inside; deleted: if
                        // it was; else only inside throughout (a crossing
                        // is an enter or a leave instead).
                        if !existed[i] {
                            a
                        } else if !index.has(&touched[i]) {
                            b
                        } else {
                            b && a
                        }
                    };
                    let end_seen = |i: usize| union(before_rows, i) || union(&after_rows, i);
                    let sign = signs.entry(*key).or_default();
                    for op in &ops {
                        sign.push(match op {
                            Op::Node(id) => at.get(id).is_some_and(|&i| node_seen(i)),
                            Op::Edge(_, Some((s, t))) => {
                                subs.view.as_ref().is_none_or(|v| v.sees_edge(s, t))
                                    && (at.get(s).is_some_and(|&i| end_seen(i))
                                        || at.get(t).is_some_and(|&i| end_seen(i)))
                            }
                            Op::Edge(_, None) => false,
                        });
                    }
                }
                if !extras.is_empty() {
                    cuts.extras[r].insert(*key, extras);
                }
            }
            touched_in_group.extend(touched);
            ops_per_change.push(ops.len());
        }
        let index = &*index;
        let (nodes, _) = committed(owner);
        let seq = releases.last().map_or(0, |r| r.seq);
        // 5. Queries, once for the group.
        let touched_in_group: HashSet<Arc<str>> = touched_in_group.into_iter().collect();
        let last = releases.len().saturating_sub(1);
        for (key, subs) in &mut self.sessions {
            for q in &mut subs.queries {
                for id in &touched_in_group {
                    q.retest(id, nodes.get(id).map(|n| &**n), index, subs.view.as_deref());
                }
                if let Some(results) = q.results(false) {
                    if let Some(extras) = cuts.extras.get_mut(last) {
                        extras
                            .entry(*key)
                            .or_default()
                            .push(query_results(&q.id, seq, results));
                    }
                }
            }
        }
        // 4b. Sessions grouped by read view and signature; each distinct
        // cut of each change encoded once for every group that sees the
        // change so (a single change has one cut).
        let mut groups: HashMap<GroupKey, (usize, PerCodec<usize>)> = HashMap::new();
        let mut members: HashMap<SessionKey, usize> = HashMap::new();
        for (key, sign) in signs {
            let Some(subs) = self.sessions.get(&key) else {
                continue;
            };
            let next = groups.len();
            let group = groups
                .entry((subs.view.clone(), sign))
                .or_insert((next, PerCodec::default()));
            group.1[subs.codec] += 1;
            members.insert(key, group.0);
            if subs.view.is_none() {
                cuts.regional[subs.codec] += 1;
            }
        }
        let mut ordered: Vec<(&GroupKey, &(usize, PerCodec<usize>))> = groups.iter().collect();
        ordered.sort_unstable_by_key(|(_, (g, _))| *g);
        let mut offset = 0;
        for (r, release) in releases.iter().enumerate() {
            let n = ops_per_change[r];
            let mut distinct: HashMap<&[bool], (PerCodec<usize>, Vec<usize>)> = HashMap::new();
            for ((_, sign), (g, codecs)) in &ordered {
                let entry = distinct.entry(&sign[offset..offset + n]).or_default();
                for codec in [Codec::Json, Codec::Binary] {
                    entry.0[codec] += codecs[codec];
                }
                entry.1.push(*g);
            }
            let mut row = vec![None; ordered.len()];
            for (bits, (codecs, in_groups)) in distinct {
                let Some(event) = cut(release.event(), bits) else {
                    continue;
                };
                cuts.encoded += 1;
                let encoded = fanout::encode(&event, codecs);
                for g in in_groups {
                    row[g] = Some(encoded.clone());
                }
            }
            cuts.cuts[r] = row;
            offset += n;
        }
        cuts.groups = Arc::new(members);
        Some(cuts)
    }
}

/// What makes sessions share a cut: their read view, and which ops of the
/// group they see.
type GroupKey = (Option<Arc<View>>, Vec<bool>);

/// An op of a committed change, as far as regions care.
#[derive(Debug, Clone)]
enum Op {
    /// On a node.
    Node(Arc<str>),
    /// On an edge, with its ends once known.
    Edge(Arc<str>, Option<(Arc<str>, Arc<str>)>),
}

/// The ops of an event, in order (a batch's, or the one).
fn for_each_op(body: &Body, mut f: impl FnMut(Op)) {
    let mut one = |body: &Body| match body {
        Body::NodeCreate(m) => f(Op::Node(m.node.id.as_str().into())),
        Body::NodeUpdate(m) => f(Op::Node(m.id.as_str().into())),
        Body::NodeDelete(m) => f(Op::Node(m.id.as_str().into())),
        Body::EdgeCreate(m) => {
            let id = m.edge.id.clone().unwrap_or_else(|| {
                Edge::make_id(&m.edge.source, &m.edge.edge_type, &m.edge.target)
            });
            let ends = Some((m.edge.source.as_str().into(), m.edge.target.as_str().into()));
            f(Op::Edge(id.into(), ends));
        }
        Body::EdgeUpdate(m) => f(Op::Edge(m.edge_id().unwrap_or_default().into(), None)),
        Body::EdgeDelete(m) => f(Op::Edge(m.edge_id().unwrap_or_default().into(), None)),
        _ => {}
    };
    match body {
        Body::BatchUpdate(batch) => {
            for op in &batch.ops {
                one(&Body::from(op.clone()));
            }
        }
        other => one(other),
    }
}

/// An event cut to the ops marked seen; `None` if none is.
fn cut(event: &Envelope, seen: &[bool]) -> Option<Envelope> {
    if !seen.iter().any(|b| *b) {
        return None;
    }
    let Body::BatchUpdate(batch) = &event.body else {
        return Some(event.clone());
    };
    if seen.iter().all(|b| *b) {
        return Some(event.clone());
    }
    let ops: Vec<BatchOp> = batch
        .ops
        .iter()
        .zip(seen)
        .filter(|(_, s)| **s)
        .map(|(op, _)| op.clone())
        .collect();
    let mut cut = event.clone();
    cut.body = Body::BatchUpdate(BatchUpdate {
        ops,
        ..batch.clone()
    });
    Some(cut)
}

/// Whether the node is in each of the session's regions.
fn region_row(subs: &Subs, id: &str, index: &Index) -> Vec<bool> {
    let readable = subs.may_read(id);
    subs.regions
        .iter()
        .map(|(_, f)| readable && f.holds(id, index))
        .collect()
}

/// The enters and leaves of a node between two rows.
fn crossings(
    subs: &Subs,
    id: &Arc<str>,
    before: &[bool],
    after: &[bool],
    state: &dyn Fn(&str) -> Option<Arc<Node>>,
    out: &mut Vec<Envelope>,
) {
    for (r, (region_id, filter)) in subs.regions.iter().enumerate() {
        if filter.is_all() {
            continue;
        }
        let (was, is) = (before.get(r).copied().unwrap_or(false), after[r]);
        if was != is {
            out.push(crossing(region_id, id, is, state));
        }
    }
}

/// `region.enter` (the node, whole, as of the change) or `region.leave`.
fn crossing(
    region_id: &str,
    id: &Arc<str>,
    entered: bool,
    state: &dyn Fn(&str) -> Option<Arc<Node>>,
) -> Envelope {
    if entered {
        if let Some(node) = state(id) {
            return stamped(
                format!("re-{region_id}"),
                Body::RegionEnter(RegionEnter {
                    region_id: region_id.to_owned(),
                    node: (*node).clone(),
                }),
            );
        }
    }
    stamped(
        format!("rl-{region_id}"),
        Body::RegionLeave(RegionLeave {
            region_id: region_id.to_owned(),
            id: id.to_string(),
        }),
    )
}

/// About how many bytes of nodes and edges one `region.sync` carries: a
/// region of any size goes out in messages well inside the frame limit.
const REGION_SYNC_BYTES: usize = 256 * 1024;

/// A region's `region.sync`: one message, or several of the same
/// `regionId` and `seq` when its nodes and edges are larger than
/// [`REGION_SYNC_BYTES`] (docs/protocol.md 7: their union is the region).
fn region_syncs(region_id: &str, seq: u64, nodes: Vec<Node>, edges: Vec<Edge>) -> Vec<Envelope> {
    let part = |nodes, edges| {
        stamped(
            format!("rs-{region_id}"),
            Body::RegionSync(RegionSync {
                region_id: region_id.to_owned(),
                seq,
                nodes,
                edges,
            }),
        )
    };
    let mut out = Vec::new();
    let (mut these_nodes, mut these_edges, mut bytes) = (Vec::new(), Vec::new(), 0);
    for node in nodes {
        let add = serde_json::to_vec(&node).map_or(1024, |v| v.len());
        if bytes > 0 && bytes + add > REGION_SYNC_BYTES {
            out.push(part(std::mem::take(&mut these_nodes), Vec::new()));
            bytes = 0;
        }
        bytes += add;
        these_nodes.push(node);
    }
    for edge in edges {
        let add = serde_json::to_vec(&edge).map_or(256, |v| v.len());
        if bytes > 0 && bytes + add > REGION_SYNC_BYTES {
            out.push(part(
                std::mem::take(&mut these_nodes),
                std::mem::take(&mut these_edges),
            ));
            bytes = 0;
        }
        bytes += add;
        these_edges.push(edge);
    }
    out.push(part(these_nodes, these_edges));
    out
}

/// `query.results`.
fn query_results(
    query_id: &str,
    seq: u64,
    (results, added, removed): (Vec<String>, Vec<String>, Vec<String>),
) -> Envelope {
    stamped(
        format!("qr-{query_id}"),
        Body::QueryResults(QueryResults {
            query_id: query_id.to_owned(),
            seq,
            results,
            added,
            removed,
        }),
    )
}
