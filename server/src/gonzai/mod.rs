//! Gonzai, the graph's companion (docs/protocol.md 9): link suggestions
//! (`gonzai.suggestion`) from a model of the committed graph, discoveries
//! (`gonzai.discover`: a committed change relevant to a session's focus) and
//! contagious chaos (`chaos.trigger`).
//!
//! The hub keeps one [`Gonzai`] per open graph, made from the committed
//! snapshot the first time a session asks for suggestions, and updated from
//! each committed event after that (nodes and edges created and deleted; the
//! text of an updated node is read again at the next build). See
//! [`suggest`] for the model.

pub mod ranker;
pub mod suggest;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gitmind_owner::{SessionKey, SyncData};
use gitmind_schema::message::{BatchOp, DiscoverEvent, GonzaiDiscover, Suggestion};
use gitmind_schema::model::{Node, PropValue};
use gitmind_schema::Body;

use self::suggest::{Model, NodeText, Scratch, SplitMix};
use crate::view::View;

/// What Gonzai is told by the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Whether committed changes are weighed against sessions' focus at
    /// all (`false`: no discoveries, and a focus does not start a build).
    pub discoveries: bool,
    /// A change is a discovery for a session above this relevance.
    pub threshold: f64,
    /// At most this many discoveries per session per second.
    pub per_second: u32,
}

/// The animation hint of every discovery.
pub const ANIMATION: &str = "bounce-excitedly";

/// A session looking at a node.
#[derive(Debug, Clone)]
pub struct Watcher<'a> {
    /// The session.
    pub session: SessionKey,
    /// The node it looks at (its presence's `focus`).
    pub focus: &'a str,
    /// How readily chaos spreads to it (0 to 1; 0.5 when not given).
    pub chaos_affinity: f64,
    /// What it may read, when its token limits that (`None` too for
    /// another node's session, whose own node filters what reaches it).
    pub view: Option<&'a View>,
}

/// The most suggestions one ask may want.
pub const MAX_LIMIT: u32 = 100;
/// Suggestions when the ask gives no `limit`.
pub const DEFAULT_LIMIT: u32 = 10;

/// Why an ask is not answered.
#[derive(Debug, Clone, PartialEq)]
pub enum AskError {
    /// No `for`, or `limit` out of 1 to [`MAX_LIMIT`].
    Invalid(String),
    /// The node does not exist.
    UnknownNode(String),
}

/// A graph's Gonzai: the suggestion model and its working memory.
#[derive(Debug)]
pub struct Gonzai {
    model: Model,
    scratch: Scratch,
    /// Discoveries sent to each session in the current second: its start
    /// and count.
    sent: HashMap<SessionKey, (Instant, u32)>,
}

fn prop<'a>(node: &'a Node, key: &str) -> &'a str {
    match node.props.as_ref().and_then(|p| p.get(key)) {
        Some(PropValue::String(s)) => s,
        _ => "",
    }
}

/// What the model reads of a node.
pub fn text_of(node: &Node) -> NodeText<'_> {
    let section = prop(node, "section");
    NodeText {
        id: &node.id,
        label: node.label.as_deref().unwrap_or(""),
        content: node.content.as_deref().unwrap_or(""),
        section: if section.is_empty() {
            node.kind.as_deref().unwrap_or("")
        } else {
            section
        },
        release: prop(node, "version"),
    }
}

/// Splits an edge id `"{source} -[{type}]-> {target}"`.
fn split_edge_id(id: &str) -> Option<(&str, &str, &str)> {
    let (source, rest) = id.split_once(" -[")?;
    let (ty, target) = rest.split_once("]-> ")?;
    Some((source, ty, target))
}

/// The nodes an event touched (at most a few) and the id it names.
fn touched(body: &Body) -> (Vec<String>, Option<String>) {
    fn op(body: &BatchOp, nodes: &mut Vec<String>) -> Option<String> {
        match body {
            BatchOp::NodeCreate(c) => {
                nodes.push(c.node.id.clone());
                Some(c.node.id.clone())
            }
            BatchOp::NodeUpdate(u) => {
                nodes.push(u.id.clone());
                Some(u.id.clone())
            }
            BatchOp::EdgeCreate(c) => {
                edge(&c.edge.source, &c.edge.edge_type, &c.edge.target, nodes)
            }
            BatchOp::EdgeUpdate(u) => {
                let id = u.edge_id()?;
                let (s, t, d) = split_edge_id(&id)?;
                edge(s, t, d, nodes)
            }
            _ => None,
        }
    }
    fn edge(source: &str, ty: &str, target: &str, nodes: &mut Vec<String>) -> Option<String> {
        nodes.push(source.to_string());
        nodes.push(target.to_string());
        Some(gitmind_schema::model::Edge::make_id(source, ty, target))
    }
    let mut nodes = Vec::new();
    let id = match body {
        Body::NodeCreate(c) => op(&BatchOp::NodeCreate(c.clone()), &mut nodes),
        Body::NodeUpdate(u) => {
            nodes.push(u.id.clone());
            Some(u.id.clone())
        }
        Body::EdgeCreate(c) => edge(
            &c.edge.source,
            &c.edge.edge_type,
            &c.edge.target,
            &mut nodes,
        ),
        Body::EdgeUpdate(u) => op(&BatchOp::EdgeUpdate(u.clone()), &mut nodes),
        Body::BatchUpdate(b) => {
            let mut first = None;
            for o in b.ops.iter().take(8) {
                let id = op(o, &mut nodes);
                first = first.or(id);
            }
            first
        }
        _ => None,
    };
    (nodes, id)
}

impl Gonzai {
    /// Gonzai of a committed snapshot (a delta gives an empty model).
    pub fn of(sync: &SyncData) -> Self {
        let model = match sync {
            SyncData::Snapshot { nodes, edges, .. } => Model::build(
                nodes.iter().map(|n| text_of(n)),
                edges
                    .iter()
                    .map(|e| (e.source.as_str(), e.edge_type.as_str(), e.target.as_str())),
                0,
                0,
            ),
            SyncData::Delta { .. } => Model::new(),
        };
        Gonzai {
            model,
            scratch: Scratch::default(),
            sent: HashMap::new(),
        }
    }

    /// Takes a committed event into the model.
    pub fn apply(&mut self, body: &Body) {
        match body {
            Body::NodeCreate(c) => {
                self.model.add_node(text_of(&c.node));
            }
            Body::NodeDelete(d) => self.model.remove_node(&d.id),
            Body::EdgeCreate(c) => {
                let e = &c.edge;
                self.model.add_edge(&e.source, &e.edge_type, &e.target);
            }
            Body::EdgeDelete(d) => self.delete_edge(
                d.id.as_deref(),
                d.source.as_deref(),
                d.edge_type.as_deref(),
                d.target.as_deref(),
            ),
            Body::BatchUpdate(b) => {
                for op in &b.ops {
                    match op {
                        BatchOp::NodeCreate(c) => {
                            self.model.add_node(text_of(&c.node));
                        }
                        BatchOp::NodeDelete(d) => self.model.remove_node(&d.id),
                        BatchOp::EdgeCreate(c) => {
                            let e = &c.edge;
                            self.model.add_edge(&e.source, &e.edge_type, &e.target);
                        }
                        BatchOp::EdgeDelete(d) => self.delete_edge(
                            d.id.as_deref(),
                            d.source.as_deref(),
                            d.edge_type.as_deref(),
                            d.target.as_deref(),
                        ),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn delete_edge(
        &mut self,
        id: Option<&str>,
        source: Option<&str>,
        ty: Option<&str>,
        target: Option<&str>,
    ) {
        let named = match (source, ty, target) {
            (Some(s), Some(t), Some(d)) => Some((s, t, d)),
            _ => id.and_then(split_edge_id),
        };
        if let Some((s, t, d)) = named {
            self.model.remove_edge(s, t, d);
        }
    }

    /// The answer to `gonzai.suggestion {for, limit}`: suggestions by
    /// confidence, never the node itself or a node it links to.
    pub fn ask(
        &mut self,
        for_node: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<Suggestion>, AskError> {
        let Some(for_node) = for_node else {
            return Err(AskError::Invalid("`for` is missing".into()));
        };
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AskError::Invalid(format!(
                "`limit` must be 1 to {MAX_LIMIT}, not {limit}"
            )));
        }
        let Some(ix) = self.model.node(for_node) else {
            return Err(AskError::UnknownNode(for_node.to_string()));
        };
        let found = self.model.suggest(&mut self.scratch, ix, limit as usize);
        Ok(found
            .into_iter()
            .map(|s| Suggestion {
                target: self.model.id(s.target).to_string(),
                edge_type: self.model.type_name(s.edge_type).to_string(),
                confidence: (s.confidence * 1000.0).round() / 1000.0,
                reason: s.reason,
            })
            .collect())
    }

    /// The discoveries of one committed event: for each watcher (not
    /// `author`, the sessions that made it) whose focus is relevant enough
    /// to a node the event touched, and who has not had its share this
    /// second, a `gonzai.discover`.
    pub fn discover(
        &mut self,
        settings: &Settings,
        seq: u64,
        event: &gitmind_schema::Envelope,
        authors: &[SessionKey],
        watchers: &[Watcher<'_>],
        now: Instant,
    ) -> Vec<(SessionKey, gitmind_schema::Envelope)> {
        let mut out = Vec::new();
        if watchers.is_empty() {
            return out;
        }
        let (nodes, Some(id)) = touched(&event.body) else {
            return out;
        };
        let nears: Vec<(u32, HashMap<u32, u8>)> = nodes
            .iter()
            .filter_map(|n| self.model.node(n))
            .map(|b| {
                let mut near = HashMap::new();
                self.model.near(b, &mut near);
                (b, near)
            })
            .collect();
        for w in watchers {
            // A session that may not read every node the change touched
            // does not hear of it: a discovery names the change.
            if authors.contains(&w.session)
                || w.view.is_some_and(|v| !nodes.iter().all(|n| v.sees(n)))
            {
                continue;
            }
            let Some(f) = self.model.node(w.focus) else {
                continue;
            };
            let Some((best, relevance)) = nears
                .iter()
                .filter_map(|(b, near)| Some((*b, self.model.relevance(f, *b, *near.get(&f)?))))
                .max_by(|a, b| a.1.total_cmp(&b.1))
            else {
                continue;
            };
            if relevance <= settings.threshold {
                continue;
            }
            let slot = self.sent.entry(w.session).or_insert((now, 0));
            if now.duration_since(slot.0) >= Duration::from_secs(1) {
                *slot = (now, 0);
            }
            if slot.1 >= settings.per_second {
                continue;
            }
            slot.1 += 1;
            let what = self.model.id(best).to_string();
            let suggestion = if what == w.focus {
                format!("{} changed: have a look", w.focus)
            } else {
                format!("{what} changed, near {}: link them?", w.focus)
            };
            out.push((
                w.session,
                crate::stamp::stamped(
                    format!("d-{seq}"),
                    Body::GonzaiDiscover(GonzaiDiscover {
                        event: DiscoverEvent {
                            event_type: event.body.message_type().name().to_string(),
                            seq,
                            id: id.clone(),
                        },
                        relevance: (relevance * 1000.0).round() / 1000.0,
                        suggestion,
                        animation: ANIMATION.into(),
                    }),
                ),
            ));
        }
        if self.sent.len() > 4 * watchers.len() + 64 {
            self.sent
                .retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(1));
        }
        out
    }

    /// The sessions chaos spreads to from a session looking at `focus`:
    /// each other watcher whose focus is within two links of it, with
    /// probability its `chaos_affinity`, drawn from `rng` in session order.
    pub fn chaos(
        &mut self,
        focus: &str,
        initiator: SessionKey,
        watchers: &mut [Watcher<'_>],
        rng: &mut SplitMix,
    ) -> Vec<SessionKey> {
        self.near_watchers(focus, initiator, watchers)
            .into_iter()
            .filter(|w| {
                let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                draw < w.chaos_affinity.clamp(0.0, 1.0)
            })
            .map(|w| w.session)
            .collect()
    }

    /// The other watchers (not `from`) whose focus is within two links of
    /// `focus`, in session order.
    pub fn near_sessions(
        &mut self,
        focus: &str,
        from: SessionKey,
        watchers: &mut [Watcher<'_>],
    ) -> Vec<SessionKey> {
        self.near_watchers(focus, from, watchers)
            .into_iter()
            .map(|w| w.session)
            .collect()
    }

    /// The watchers of [`Gonzai::near_sessions`] themselves.
    fn near_watchers<'a, 'w>(
        &mut self,
        focus: &str,
        from: SessionKey,
        watchers: &'a mut [Watcher<'w>],
    ) -> Vec<&'a Watcher<'w>> {
        let Some(f) = self.model.node(focus) else {
            return Vec::new();
        };
        let mut near = HashMap::new();
        self.model.near(f, &mut near);
        watchers.sort_unstable_by_key(|w| w.session);
        watchers
            .iter()
            .filter(|w| w.session != from)
            .filter(|w| {
                self.model
                    .node(w.focus)
                    .is_some_and(|ix| near.contains_key(&ix))
            })
            .collect()
    }

    /// The model (for tools and tests).
    pub fn model(&self) -> &Model {
        &self.model
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gitmind_schema::message::NodeUpdate;
    use gitmind_schema::model::NodeSet;
    use gitmind_schema::Envelope;

    /// The hub's cost of discoveries on the fan-out benchmark's shape: ten
    /// nodes updated in turn, 1,000 sessions each looking at one of them.
    /// `cargo test --release -p gitmind-server --lib discover_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement; run in release"]
    fn discover_cost() {
        let mut g = Gonzai {
            model: Model::new(),
            scratch: Scratch::default(),
            sent: HashMap::new(),
        };
        let ids: Vec<String> = (0..10).map(|w| format!("load:writer-{w}")).collect();
        for id in &ids {
            g.model.add_node(NodeText {
                id,
                label: "writer",
                content: "",
                section: "",
                release: "",
            });
        }
        let watchers: Vec<Watcher<'_>> = (0..1000)
            .map(|i| Watcher {
                session: i as u64,
                focus: &ids[i % 10],
                chaos_affinity: 0.5,
                view: None,
            })
            .collect();
        let settings = Settings {
            discoveries: true,
            threshold: 0.7,
            per_second: 2,
        };
        let events: Vec<Envelope> = ids
            .iter()
            .map(|id| {
                Envelope::new(
                    "u",
                    Body::NodeUpdate(NodeUpdate {
                        id: id.clone(),
                        set: Some(NodeSet {
                            x: Some(1.0),
                            ..NodeSet::default()
                        }),
                        ..NodeUpdate::default()
                    }),
                )
            })
            .collect();
        let n = 20_000;
        let mut sent = 0;
        let start = Instant::now();
        for i in 0..n {
            let e = &events[i % 10];
            g.apply(&e.body);
            sent += g
                .discover(&settings, i as u64, e, &[], &watchers, Instant::now())
                .len();
        }
        let per = start.elapsed() / n as u32;
        println!("discover: {per:?} per event with 1,000 sessions focused; {sent} discoveries");
        assert!(sent >= 2000);
    }
}
