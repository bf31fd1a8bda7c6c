//! The rules of docs/protocol.md section 3, checked on every mutation before
//! anything is applied.
//!
//! A value of the wrong type or pattern is refused as `invalid`; a value over
//! a size or count limit as `too_large`. Every message names the field and
//! says why, so a person can fix the request from the message alone.

use std::fmt;

use gitmind_schema::message::RollbackReason;
use gitmind_schema::model::{Edge, EdgeSet, Entity, Node, NodeSet, PropValue, Props, PropsPatch};

/// The longest node id, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 256;
/// The longest node kind, in bytes.
pub const MAX_KIND_BYTES: usize = 32;
/// The longest node label, in bytes.
pub const MAX_LABEL_BYTES: usize = 1024;
/// The longest node content, in bytes (also after a text operation).
pub const MAX_CONTENT_BYTES: usize = 65_536;
/// The most properties a node or an edge may have.
pub const MAX_PROPS: usize = 64;
/// The longest property key, in bytes.
pub const MAX_PROP_KEY_BYTES: usize = 64;
/// The longest string property value, in bytes.
pub const MAX_PROP_STRING_BYTES: usize = 1024;
/// The longest edge rationale, in bytes.
pub const MAX_RATIONALE_BYTES: usize = 1024;
/// The longest prefix of a node id and the longest edge type, in characters.
pub const MAX_PREFIX_CHARS: usize = 32;

/// The edge types of docs/protocol.md section 3, the default configuration.
pub const DEFAULT_EDGE_TYPES: [&str; 12] = [
    "implements",
    "augments",
    "relates-to",
    "blocks",
    "belongs-to",
    "consumed-by",
    "depends-on",
    "documents",
    "references",
    "semantic",
    "temporal",
    "causal",
];

/// Why a mutation (or one op of a batch) is not applied: what becomes an
/// `update.rollback`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    /// The protocol reason.
    pub reason: RollbackReason,
    /// Which field and why, for a person.
    pub message: String,
    /// The entity as the server holds it, when there is one (boxed: a
    /// refusal travels through every `Result` of the apply path).
    pub current: Option<Box<Entity>>,
}

impl Refusal {
    /// A refusal with this reason and message.
    pub fn new(reason: RollbackReason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
            current: None,
        }
    }

    /// `invalid`: wrong type or pattern.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(RollbackReason::Invalid, message)
    }

    /// `too_large`: over a size or count limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(RollbackReason::TooLarge, message)
    }

    /// The same refusal, with the entity as the server holds it.
    pub fn with_current(mut self, current: Option<Entity>) -> Self {
        self.current = current.map(Box::new);
        self
    }
}

/// Checks `^[a-z][a-z0-9-]{0,31}$`, the pattern of id prefixes and edge types.
pub fn is_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PREFIX_CHARS
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks `^[A-Za-z0-9_.-]{1,64}$`, the pattern of property keys.
fn is_prop_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PROP_KEY_BYTES
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// A node id: 1 to 256 bytes, `prefix:identifier`, no control characters.
pub(crate) fn node_id(id: &str, field: &str) -> Result<(), Refusal> {
    if id.is_empty() {
        return Err(Refusal::invalid(format!(
            "{field} is empty; a node id is `prefix:identifier`"
        )));
    }
    if id.len() > MAX_NODE_ID_BYTES {
        return Err(Refusal::too_large(format!(
            "{field} is {} bytes; the limit is {MAX_NODE_ID_BYTES}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Refusal::invalid(format!(
            "{field} contains a control character"
        )));
    }
    let Some((prefix, identifier)) = id.split_once(':') else {
        return Err(Refusal::invalid(format!(
            "{field} `{id}` has no `:`; a node id is `prefix:identifier`"
        )));
    };
    if !is_prefix(prefix) {
        return Err(Refusal::invalid(format!(
            "{field} `{id}` has prefix `{prefix}`, which does not match ^[a-z][a-z0-9-]{{0,31}}$"
        )));
    }
    if identifier.is_empty() {
        return Err(Refusal::invalid(format!(
            "{field} `{id}` has an empty identifier after `:`"
        )));
    }
    Ok(())
}

/// A string field with a byte limit. The field's name is formatted only
/// for a refusal: these checks run on every change.
fn max_bytes(value: &str, limit: usize, field: fmt::Arguments<'_>) -> Result<(), Refusal> {
    if value.len() > limit {
        return Err(Refusal::too_large(format!(
            "{field} is {} bytes; the limit is {limit}",
            value.len()
        )));
    }
    Ok(())
}

/// A number that must be finite.
fn finite(value: f64, field: fmt::Arguments<'_>) -> Result<(), Refusal> {
    if !value.is_finite() {
        return Err(Refusal::invalid(format!(
            "{field} is {value}; it must be a finite number"
        )));
    }
    Ok(())
}

/// One property: key pattern, value type and size.
fn prop(key: &str, value: &PropValue, ctx: &str) -> Result<(), Refusal> {
    if !is_prop_key(key) {
        if key.len() > MAX_PROP_KEY_BYTES {
            return Err(Refusal::too_large(format!(
                "{ctx}.props key `{}…` is {} bytes; the limit is {MAX_PROP_KEY_BYTES}",
                key.chars().take(16).collect::<String>(),
                key.len()
            )));
        }
        return Err(Refusal::invalid(format!(
            "{ctx}.props key `{key}` does not match ^[A-Za-z0-9_.-]{{1,64}}$"
        )));
    }
    match value {
        PropValue::String(s) => {
            max_bytes(s, MAX_PROP_STRING_BYTES, format_args!("{ctx}.props.{key}"))
        }
        PropValue::Number(n) => finite(*n, format_args!("{ctx}.props.{key}")),
        PropValue::Bool(_) => Ok(()),
    }
}

/// Whole properties (a create): count, keys and values.
fn props(props: &Props, ctx: &str) -> Result<(), Refusal> {
    if props.len() > MAX_PROPS {
        return Err(Refusal::too_large(format!(
            "{ctx}.props has {} entries; the limit is {MAX_PROPS}",
            props.len()
        )));
    }
    props.iter().try_for_each(|(k, v)| prop(k, v, ctx))
}

/// A properties patch: keys and values (the count is checked on the result,
/// by [`props_count_after`]).
fn props_patch(patch: &PropsPatch, ctx: &str) -> Result<(), Refusal> {
    for (key, value) in patch {
        match value {
            Some(v) => prop(key, v, ctx)?,
            None if !is_prop_key(key) => {
                return Err(Refusal::invalid(format!(
                    "{ctx}.props key `{key}` does not match ^[A-Za-z0-9_.-]{{1,64}}$"
                )))
            }
            None => {}
        }
    }
    Ok(())
}

/// Refuses a patch that would leave more than [`MAX_PROPS`] properties.
pub(crate) fn props_count_after(
    props: &Option<Props>,
    patch: &PropsPatch,
    ctx: &str,
) -> Result<(), Refusal> {
    let mut count = props.as_ref().map_or(0, Props::len);
    for (key, value) in patch {
        let present = props.as_ref().is_some_and(|p| p.contains_key(key));
        match (value, present) {
            (Some(_), false) => count += 1,
            (None, true) => count -= 1,
            _ => {}
        }
    }
    if count > MAX_PROPS {
        return Err(Refusal::too_large(format!(
            "{ctx}.props would have {count} entries; the limit is {MAX_PROPS}"
        )));
    }
    Ok(())
}

/// The node of a `node.create`.
pub(crate) fn node(node: &Node) -> Result<(), Refusal> {
    node_id(&node.id, "node.id")?;
    node_fields(
        &node.kind,
        &node.label,
        &node.content,
        node.x,
        node.y,
        "node",
    )?;
    if let Some(p) = &node.props {
        props(p, "node")?;
    }
    Ok(())
}

/// The `set` of a `node.update`.
pub(crate) fn node_set(set: &NodeSet) -> Result<(), Refusal> {
    node_fields(&set.kind, &set.label, &set.content, set.x, set.y, "set")?;
    if let Some(p) = &set.props {
        props_patch(p, "set")?;
    }
    Ok(())
}

/// The plain fields of a node, in a create or a `set`.
fn node_fields(
    kind: &Option<String>,
    label: &Option<String>,
    content: &Option<String>,
    x: Option<f64>,
    y: Option<f64>,
    ctx: &str,
) -> Result<(), Refusal> {
    if let Some(v) = kind {
        max_bytes(v, MAX_KIND_BYTES, format_args!("{ctx}.kind"))?;
    }
    if let Some(v) = label {
        max_bytes(v, MAX_LABEL_BYTES, format_args!("{ctx}.label"))?;
    }
    if let Some(v) = content {
        max_bytes(v, MAX_CONTENT_BYTES, format_args!("{ctx}.content"))?;
    }
    if let Some(v) = x {
        finite(v, format_args!("{ctx}.x"))?;
    }
    if let Some(v) = y {
        finite(v, format_args!("{ctx}.y"))?;
    }
    Ok(())
}

/// The edge of an `edge.create`, against the configured edge types.
pub(crate) fn edge(edge: &Edge, edge_types: &[String]) -> Result<(), Refusal> {
    node_id(&edge.source, "edge.source")?;
    node_id(&edge.target, "edge.target")?;
    if !edge_types.contains(&edge.edge_type) {
        return Err(Refusal::invalid(format!(
            "edge.type `{}` is not one of the configured types ({})",
            edge.edge_type,
            edge_types.join(", ")
        )));
    }
    if edge.source == edge.target && matches!(edge.edge_type.as_str(), "blocks" | "depends-on") {
        return Err(Refusal::invalid(format!(
            "edge.type `{}` may not point node `{}` at itself",
            edge.edge_type, edge.source
        )));
    }
    edge_fields(edge.confidence, &edge.rationale, "edge")?;
    if let Some(p) = &edge.props {
        props(p, "edge")?;
    }
    Ok(())
}

/// The `set` of an `edge.update`.
pub(crate) fn edge_set(set: &EdgeSet) -> Result<(), Refusal> {
    edge_fields(set.confidence, &set.rationale, "set")?;
    if let Some(p) = &set.props {
        props_patch(p, "set")?;
    }
    Ok(())
}

/// The plain fields of an edge.
fn edge_fields(
    confidence: Option<f64>,
    rationale: &Option<String>,
    ctx: &str,
) -> Result<(), Refusal> {
    if let Some(c) = confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(Refusal::invalid(format!(
                "{ctx}.confidence is {c}; it must be between 0 and 1"
            )));
        }
    }
    if let Some(r) = rationale {
        max_bytes(r, MAX_RATIONALE_BYTES, format_args!("{ctx}.rationale"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<(), Refusal>) -> RollbackReason {
        r.expect_err("should be refused").reason
    }

    #[test]
    fn node_id_pattern() {
        assert!(node_id("concept:x", "id").is_ok());
        assert!(node_id("a-1:ünïcode id", "id").is_ok());
        assert_eq!(reason(node_id("", "id")), RollbackReason::Invalid);
        assert_eq!(reason(node_id("nocolon", "id")), RollbackReason::Invalid);
        assert_eq!(reason(node_id("Concept:x", "id")), RollbackReason::Invalid);
        assert_eq!(reason(node_id("1abc:x", "id")), RollbackReason::Invalid);
        assert_eq!(reason(node_id("concept:", "id")), RollbackReason::Invalid);
        assert_eq!(
            reason(node_id("concept:a\nb", "id")),
            RollbackReason::Invalid
        );
        assert_eq!(
            reason(node_id(&format!("{}:x", "a".repeat(33)), "id")),
            RollbackReason::Invalid
        );
        assert!(node_id(&format!("{}:x", "a".repeat(32)), "id").is_ok());
        let long = format!("c:{}", "x".repeat(255));
        let r = node_id(&long, "node.id").expect_err("too long");
        assert_eq!(r.reason, RollbackReason::TooLarge);
        assert_eq!(r.message, "node.id is 257 bytes; the limit is 256");
    }

    #[test]
    fn prefix_and_prop_key_patterns() {
        assert!(is_prefix("a"));
        assert!(is_prefix("relates-to"));
        assert!(!is_prefix("-a"));
        assert!(!is_prefix("a_b"));
        assert!(is_prop_key("A.b_c-9"));
        assert!(!is_prop_key("a b"));
        assert!(!is_prop_key(""));
    }

    #[test]
    fn props_rules() {
        let mut p = Props::new();
        p.insert("ok".into(), PropValue::Number(1.0));
        assert!(props(&p, "node").is_ok());
        p.insert("bad key".into(), PropValue::Bool(true));
        assert_eq!(reason(props(&p, "node")), RollbackReason::Invalid);
        let mut p = Props::new();
        p.insert("s".into(), PropValue::String("x".repeat(1025)));
        assert_eq!(reason(props(&p, "node")), RollbackReason::TooLarge);
        let mut p = Props::new();
        p.insert("n".into(), PropValue::Number(f64::NAN));
        assert_eq!(reason(props(&p, "node")), RollbackReason::Invalid);
        let p: Props = (0..65)
            .map(|i| (format!("k{i}"), PropValue::Bool(true)))
            .collect();
        assert_eq!(reason(props(&p, "node")), RollbackReason::TooLarge);
    }

    #[test]
    fn props_count_after_patch() {
        let p: Props = (0..64)
            .map(|i| (format!("k{i}"), PropValue::Bool(true)))
            .collect();
        let p = Some(p);
        let mut patch = PropsPatch::new();
        patch.insert("k1".into(), Some(PropValue::Bool(false)));
        assert!(props_count_after(&p, &patch, "set").is_ok());
        patch.insert("new".into(), Some(PropValue::Bool(false)));
        assert_eq!(
            reason(props_count_after(&p, &patch, "set")),
            RollbackReason::TooLarge
        );
        patch.insert("k2".into(), None);
        assert!(props_count_after(&p, &patch, "set").is_ok());
    }
}
