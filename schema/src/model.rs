//! The graph's entities as they travel on the wire (docs/protocol.md section 3).
//!
//! One type serves both directions: a client fills in what it sets, the
//! server fills in everything (its own fields included). Optional fields are
//! `None` when absent on the wire, so every message round-trips losslessly
//! between the JSON and the binary form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ot::TextOp;

/// A property value: a string, a finite number or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// A string, up to 1,024 bytes.
    String(String),
    /// A finite number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// The properties of a node or an edge, in key order (canonical).
pub type Props = BTreeMap<String, PropValue>;

/// A change to properties: a key mapped to `None` (JSON `null`) is removed.
pub type PropsPatch = BTreeMap<String, Option<PropValue>>;

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// `prefix:identifier`, 1 to 256 bytes.
    pub id: String,
    /// What the node is (document, concept, person, project); `"concept"` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A short title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The collaboratively edited text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Layout position.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub x: Option<f64>,
    /// Layout position.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub y: Option<f64>,
    /// Free-form properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Props>,
    /// Server: the `seq` of the last change to this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// Server: creation time, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// Server: last change time, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Server: the user who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Server: the user who changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// A directed, typed edge between two nodes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Edge {
    /// Server: `"{source} -[{type}]-> {target}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The node the edge leaves.
    pub source: String,
    /// The edge type, e.g. `depends-on`.
    #[serde(rename = "type")]
    pub edge_type: String,
    /// The node the edge enters.
    pub target: String,
    /// 0 to 1; 1 by default.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub confidence: Option<f64>,
    /// Why the edge exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// Whether the relation holds both ways; false by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional: Option<bool>,
    /// Free-form properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Props>,
    /// Server: the `seq` of the last change to this edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// Server: creation time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// Server: last change time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Server: the user who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Server: the user who changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

impl Edge {
    /// The id the server gives an edge: `"{source} -[{type}]-> {target}"`.
    pub fn make_id(source: &str, edge_type: &str, target: &str) -> String {
        format!("{source} -[{edge_type}]-> {target}")
    }
}

/// The kind a node gets when its creator names none.
pub const DEFAULT_KIND: &str = "concept";

/// Sets `slot` to `value` when they differ; says whether it changed.
fn set_if_changed<T: PartialEq + Clone>(slot: &mut Option<T>, value: &T) -> bool {
    if slot.as_ref() == Some(value) {
        return false;
    }
    *slot = Some(value.clone());
    true
}

/// Applies a properties patch (`None` removes a key) and returns the part of
/// it that changed something, so an event carries only real changes.
pub fn apply_props_patch(props: &mut Option<Props>, patch: &PropsPatch) -> PropsPatch {
    let mut changed = PropsPatch::new();
    let props = props.get_or_insert_with(Props::new);
    for (key, value) in patch {
        match value {
            Some(v) => {
                if props.get(key) != Some(v) {
                    props.insert(key.clone(), v.clone());
                    changed.insert(key.clone(), Some(v.clone()));
                }
            }
            None => {
                if props.remove(key).is_some() {
                    changed.insert(key.clone(), None);
                }
            }
        }
    }
    changed
}

/// The properties of a create, as a patch that sets each of them (how a
/// create merges into an entity that already exists, docs/protocol.md 4.2).
fn props_as_patch(props: &Option<Props>) -> Option<PropsPatch> {
    props.as_ref().map(|p| {
        p.iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect()
    })
}

impl Node {
    /// Fills in every field its creator left out with its default
    /// (docs/protocol.md 3: kind `concept`, position 0; empty label, content and
    /// properties), so a stored node is complete.
    pub fn fill_defaults(&mut self) {
        self.kind.get_or_insert_with(|| DEFAULT_KIND.to_owned());
        self.label.get_or_insert_with(String::new);
        self.content.get_or_insert_with(String::new);
        self.x.get_or_insert(0.0);
        self.y.get_or_insert(0.0);
        self.props.get_or_insert_with(Props::new);
    }

    /// Sets the fields `set` names and returns those that really changed
    /// (the delta an event carries). Does not touch the server fields.
    pub fn apply_set(&mut self, set: &NodeSet) -> NodeSet {
        let mut changed = NodeSet::default();
        if let Some(v) = &set.kind {
            if set_if_changed(&mut self.kind, v) {
                changed.kind = Some(v.clone());
            }
        }
        if let Some(v) = &set.label {
            if set_if_changed(&mut self.label, v) {
                changed.label = Some(v.clone());
            }
        }
        if let Some(v) = &set.content {
            if set_if_changed(&mut self.content, v) {
                changed.content = Some(v.clone());
            }
        }
        if let Some(v) = set.x {
            if set_if_changed(&mut self.x, &v) {
                changed.x = Some(v);
            }
        }
        if let Some(v) = set.y {
            if set_if_changed(&mut self.y, &v) {
                changed.y = Some(v);
            }
        }
        if let Some(patch) = &set.props {
            let delta = apply_props_patch(&mut self.props, patch);
            if !delta.is_empty() {
                changed.props = Some(delta);
            }
        }
        changed
    }

    /// The fields a create sets, as an update (a create merged into a node
    /// that exists already sets only these).
    pub fn as_set(&self) -> NodeSet {
        NodeSet {
            kind: self.kind.clone(),
            label: self.label.clone(),
            content: self.content.clone(),
            x: self.x,
            y: self.y,
            props: props_as_patch(&self.props),
        }
    }

    /// Stamps the server fields of a change: `rev`, `updatedAt`, `updatedBy`.
    pub fn touch(&mut self, seq: u64, at_ms: u64, user: &str) {
        self.rev = Some(seq);
        self.updated_at = Some(at_ms);
        if self.updated_by.as_deref() != Some(user) {
            self.updated_by = Some(user.to_owned());
        }
    }
}

impl Edge {
    /// Fills in every field its creator left out with its default
    /// (docs/protocol.md 3: confidence 1, not bidirectional; empty rationale and
    /// properties) and sets its `id`.
    pub fn fill_defaults(&mut self) {
        if self.id.is_none() {
            self.id = Some(Edge::make_id(&self.source, &self.edge_type, &self.target));
        }
        self.confidence.get_or_insert(1.0);
        self.rationale.get_or_insert_with(String::new);
        self.bidirectional.get_or_insert(false);
        self.props.get_or_insert_with(Props::new);
    }

    /// Sets the fields `set` names and returns those that really changed.
    pub fn apply_set(&mut self, set: &EdgeSet) -> EdgeSet {
        let mut changed = EdgeSet::default();
        if let Some(v) = set.confidence {
            if set_if_changed(&mut self.confidence, &v) {
                changed.confidence = Some(v);
            }
        }
        if let Some(v) = &set.rationale {
            if set_if_changed(&mut self.rationale, v) {
                changed.rationale = Some(v.clone());
            }
        }
        if let Some(v) = set.bidirectional {
            if set_if_changed(&mut self.bidirectional, &v) {
                changed.bidirectional = Some(v);
            }
        }
        if let Some(patch) = &set.props {
            let delta = apply_props_patch(&mut self.props, patch);
            if !delta.is_empty() {
                changed.props = Some(delta);
            }
        }
        changed
    }

    /// The fields a create sets, as an update.
    pub fn as_set(&self) -> EdgeSet {
        EdgeSet {
            confidence: self.confidence,
            rationale: self.rationale.clone(),
            bidirectional: self.bidirectional,
            props: props_as_patch(&self.props),
        }
    }

    /// Stamps the server fields of a change: `rev`, `updatedAt`, `updatedBy`.
    pub fn touch(&mut self, seq: u64, at_ms: u64, user: &str) {
        self.rev = Some(seq);
        self.updated_at = Some(at_ms);
        if self.updated_by.as_deref() != Some(user) {
            self.updated_by = Some(user.to_owned());
        }
    }
}

impl NodeSet {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == NodeSet::default()
    }
}

impl EdgeSet {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == EdgeSet::default()
    }
}

/// Either entity, where a message may carry one or the other
/// (`update.rollback`'s `current`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entity {
    /// An edge (tried first: its `source` field tells it apart).
    Edge(Edge),
    /// A node.
    Node(Node),
}

/// The fields a `node.update` may set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSet {
    /// New kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// New content, replacing the whole text (conflicts like any field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New position.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub x: Option<f64>,
    /// New position.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub y: Option<f64>,
    /// Properties to set; `null` removes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<PropsPatch>,
}

/// The fields an `edge.update` may set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeSet {
    /// New confidence.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub confidence: Option<f64>,
    /// New rationale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// New direction flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional: Option<bool>,
    /// Properties to set; `null` removes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<PropsPatch>,
}

/// Text operations of a change, per text field (only `content` today).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextEdits {
    /// The operation on the node's `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<TextOp>,
}

/// Final values of the fields a conflict concerned (`update.conflict_resolved`).
///
/// For a node or an edge the fields are set directly; for a `batch.update`,
/// `ops` holds one entry per op that had a conflict.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resolution {
    /// Final kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Final label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Final content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Final position.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub x: Option<f64>,
    /// Final position.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub y: Option<f64>,
    /// Final confidence.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num::opt")]
    pub confidence: Option<f64>,
    /// Final rationale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// Final direction flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bidirectional: Option<bool>,
    /// Final values of the conflicting properties (`null`: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<PropsPatch>,
    /// Batches: the resolution of each op that had a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<OpResolution>>,
}

/// The resolution of one op of a batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpResolution {
    /// The 0-based index of the op in the batch.
    pub index: u32,
    /// The final values of its conflicting fields.
    pub resolution: Resolution,
}

/// Serde helpers for numbers: integral values are written without a
/// fraction (`1`, not `1.0`) so JSON stays as a person wrote it.
pub(crate) mod num {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a number, integral values as integers.
    pub(crate) fn write<S: Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
        // 2^53: every integer below it is exact in an f64.
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            // Exact: the value is integral and in i64 range.
            #[allow(clippy::cast_possible_truncation)]
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }

    /// `Option<f64>` fields.
    pub(crate) mod opt {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::write(*v, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<f64>, D::Error> {
            Option::<f64>::deserialize(d)
        }
    }

    /// Plain `f64` fields.
    pub(crate) mod req {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
            super::write(*v, s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            f64::deserialize(d)
        }
    }
}

impl Serialize for PropValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PropValue::String(v) => s.serialize_str(v),
            PropValue::Number(v) => num::write(*v, s),
            PropValue::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<'de> Deserialize<'de> for PropValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PropValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a finite number or a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<PropValue, E> {
                Ok(PropValue::Bool(v))
            }
            // Integers beyond 2^53 lose precision as f64; props are not for ids.
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E>(self, v: i64) -> Result<PropValue, E> {
                Ok(PropValue::Number(v as f64))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E>(self, v: u64) -> Result<PropValue, E> {
                Ok(PropValue::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<PropValue, E> {
                Ok(PropValue::Number(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<PropValue, E> {
                Ok(PropValue::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<PropValue, E> {
                Ok(PropValue::String(v))
            }
        }
        d.deserialize_any(V)
    }
}
