//! The graph's entities as they travel on the wire (PROTOCOL.md section 3).
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
