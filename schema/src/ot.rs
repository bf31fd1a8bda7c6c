//! Placeholder until the OT module lands: the type only.
#![allow(missing_docs)]
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component { Retain(u64), Insert(String), Delete(u64) }

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextOp { components: Vec<Component> }

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OtError { #[error("empty component")] EmptyComponent }

impl TextOp {
    pub fn from_components(c: Vec<Component>) -> Result<Self, OtError> { Ok(TextOp { components: c }) }
    pub fn components(&self) -> &[Component] { &self.components }
}

impl Serialize for TextOp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut q = s.serialize_seq(Some(self.components.len()))?;
        for c in &self.components {
            match c {
                Component::Retain(n) => q.serialize_element(&(*n as i64))?,
                Component::Delete(n) => q.serialize_element(&-(*n as i64))?,
                Component::Insert(t) => q.serialize_element(t)?,
            }
        }
        q.end()
    }
}

impl<'de> Deserialize<'de> for TextOp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum C { N(i64), S(String) }
        let v = Vec::<C>::deserialize(d)?;
        Ok(TextOp { components: v.into_iter().map(|c| match c {
            C::N(n) if n >= 0 => Component::Retain(n as u64),
            C::N(n) => Component::Delete(n.unsigned_abs()),
            C::S(s) => Component::Insert(s),
        }).collect() })
    }
}
