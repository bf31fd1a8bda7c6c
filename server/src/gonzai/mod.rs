//! Gonzai, the graph's companion (docs/protocol.md 9): link suggestions
//! (`gonzai.suggestion`) from a model of the committed graph.
//!
//! The hub keeps one [`Gonzai`] per open graph, made from the committed
//! snapshot the first time a session asks for suggestions, and updated from
//! each committed event after that (nodes and edges created and deleted; the
//! text of an updated node is read again at the next build). See
//! [`suggest`] for the model.

pub mod suggest;

use gitmind_owner::SyncData;
use gitmind_schema::message::{BatchOp, Suggestion};
use gitmind_schema::model::{Node, PropValue};
use gitmind_schema::Body;

use self::suggest::{Model, NodeText, Scratch};

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
}

fn prop<'a>(node: &'a Node, key: &str) -> &'a str {
    match node.props.as_ref().and_then(|p| p.get(key)) {
        Some(PropValue::String(s)) => s,
        _ => "",
    }
}

fn text_of(node: &Node) -> NodeText<'_> {
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

    /// The model (for tools and tests).
    pub fn model(&self) -> &Model {
        &self.model
    }
}
