//! Operational transformation (OT) of text, the merge rule for the `content` field.
//!
//! # Operations
//!
//! A text operation ([`TextOp`]) is a list of [`Component`]s walked from the
//! start of the text. On the wire (docs/protocol.md section 4.2) it is a JSON array:
//!
//! * a positive integer `n` retains (keeps) the next `n` characters,
//! * a string inserts that string at the current position,
//! * a negative integer `-n` deletes the next `n` characters.
//!
//! For example `[5, "abc", -3]` keeps five characters, inserts `abc` and
//! deletes the three characters that followed the first five. Characters are
//! Unicode scalar values (Rust [`char`]), so an emoji counts as one character
//! and a combining accent counts as a character of its own. The retained and
//! deleted counts of an operation add up to the length of the text it was made
//! for (its [`base_len`](TextOp::base_len)), which is the text at the client's
//! `baseSeq`; the trailing retain is therefore never omitted.
//!
//! # Concurrency
//!
//! Two clients may edit the same version of the text at once. The server puts
//! the operations in one order (server order). When an operation arrives whose
//! `baseSeq` is older than the field's current sequence number, the server
//! [`transform`](TextOp::transform)s it against every operation applied to the
//! field after `baseSeq`, one by one and in server order, applies the result,
//! broadcasts it, and returns it in the outcome. Transformation shifts
//! positions over text that others inserted and drops deletions of text that
//! others already deleted, so no keystroke is lost. When two inserts land at
//! the same position, the one that came first in server order stays first.
//!
//! A client keeps its own not yet acknowledged operations and rebases them on
//! each broadcast with [`TextOp::transform_pair`], which transforms both sides
//! at once; [`TextOp::compose`] squashes pending operations into one, and
//! [`TextOp::transform_index`] moves cursors and selections across an
//! operation.
//!
//! # Canonical form
//!
//! Every [`TextOp`] is kept normalized: no empty components, adjacent
//! components of the same kind merged, and an insert that meets a delete is
//! placed before it. Two operations with the same components in that form
//! compare equal, whichever way they were built.
//!
//! # Example
//!
//! ```
//! # use gitmind_schema::ot::TextOp;
//! let mut a = TextOp::new();
//! a.retain(5).insert(" there").retain(6); // "hello world" -> "hello there world"
//! let mut b = TextOp::new();
//! b.retain(5).delete(6); //                  "hello world" -> "hello"
//! let b2 = b.transform(&a).unwrap(); // b came second in server order
//! let text = b2.apply(&a.apply("hello world").unwrap()).unwrap();
//! assert_eq!(text, "hello there");
//! ```

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most components a text operation may have on the wire; a longer JSON
/// array is refused while it is read, so memory stays bounded.
pub const MAX_COMPONENTS: usize = 100_000;

/// The largest delete count that one JSON number can carry (`-2^63`); a longer
/// delete is written as several numbers, which read back as one delete.
const MAX_DELETE_CHUNK: u64 = 1 << 63;

/// One step of a [`TextOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// Keeps the next `n` characters (a positive integer on the wire).
    Retain(u64),
    /// Inserts this text at the current position (a string on the wire).
    Insert(String),
    /// Removes the next `n` characters (a negative integer on the wire).
    Delete(u64),
}

/// A text operation: components applied from the start of the text, kept in
/// canonical form (see the [module documentation](self)).
///
/// Serializes to and from the JSON array form, e.g. `[5, "abc", -3]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextOp {
    components: Vec<Component>,
}

/// An error from building, applying, composing or transforming text operations.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OtError {
    /// A component was `Retain(0)`, `Delete(0)` or an empty insert.
    #[error("text operation has an empty component: retain 0, delete 0 and empty inserts are not allowed")]
    EmptyComponent,
    /// Lengths do not line up: the text (or the other operation) does not have
    /// the length this operation needs.
    #[error("text operation length mismatch: expected {expected} characters, found {actual}")]
    LengthMismatch {
        /// The length in characters that was expected: the operation's base
        /// length for `apply`, the second operation's base length for
        /// `compose`, the first (earlier) operation's base length for
        /// transforms.
        expected: u64,
        /// The length in characters that was found instead.
        actual: u64,
    },
    /// The character counts of the operation add up past `u64::MAX`.
    #[error("text operation is too long: its character counts add up past 64 bits")]
    Overflow,
}

/// Length of `s` in Unicode scalar values.
#[inline]
fn char_len(s: &str) -> u64 {
    s.chars().count() as u64
}

/// Byte offset reached by moving `n` characters forward from byte offset
/// `from` (a char boundary) in `text`, or `None` if the text is too short.
#[inline]
fn advance(text: &str, from: usize, n: u64, ascii: bool) -> Option<usize> {
    if ascii {
        let n = usize::try_from(n).ok()?;
        let end = from.checked_add(n)?;
        return (end <= text.len()).then_some(end);
    }
    if n == 0 {
        return Some(from);
    }
    let rest = text.get(from..)?;
    let mut left = n;
    for (i, c) in rest.char_indices() {
        left -= 1;
        if left == 0 {
            return Some(from + i + c.len_utf8());
        }
    }
    None
}

/// Splits `s` after its first `k` characters (`k` at most its length).
#[inline]
fn split_chars(s: &str, k: u64) -> (&str, &str) {
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    let at = s.char_indices().nth(k).map_or(s.len(), |(i, _)| i);
    s.split_at(at)
}

/// A component borrowed from an operation, possibly partly consumed.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Retain(u64),
    /// The text and its length in characters.
    Insert(&'a str, u64),
    Delete(u64),
}

/// Walks an operation piece by piece without copying inserted text.
struct Pieces<'a> {
    iter: std::slice::Iter<'a, Component>,
}

impl<'a> Pieces<'a> {
    fn new(op: &'a TextOp) -> Self {
        Pieces {
            iter: op.components.iter(),
        }
    }

    #[inline]
    fn next(&mut self) -> Option<Piece<'a>> {
        self.iter.next().map(|c| match c {
            Component::Retain(n) => Piece::Retain(*n),
            Component::Insert(s) => Piece::Insert(s, char_len(s)),
            Component::Delete(n) => Piece::Delete(*n),
        })
    }

    /// What is left of `piece` after `m` of its characters are consumed
    /// (`m` at most its length); the next piece if nothing is left.
    #[inline]
    fn consume(&mut self, piece: Piece<'a>, m: u64) -> Option<Piece<'a>> {
        match piece {
            Piece::Retain(n) if n > m => Some(Piece::Retain(n - m)),
            Piece::Delete(n) if n > m => Some(Piece::Delete(n - m)),
            Piece::Insert(s, n) if n > m => Some(Piece::Insert(split_chars(s, m).1, n - m)),
            _ => self.next(),
        }
    }
}

impl TextOp {
    /// An empty operation (base length 0); extend it with the builders.
    pub fn new() -> Self {
        TextOp::default()
    }

    /// Builds an operation from components, refusing `Retain(0)`,
    /// `Delete(0)` and empty inserts with [`OtError::EmptyComponent`] and
    /// counts that add up past 64 bits with [`OtError::Overflow`], then
    /// normalizes it to canonical form.
    pub fn from_components(components: Vec<Component>) -> Result<Self, OtError> {
        let empty = components.iter().any(|c| match c {
            Component::Retain(n) | Component::Delete(n) => *n == 0,
            Component::Insert(s) => s.is_empty(),
        });
        if empty {
            return Err(OtError::EmptyComponent);
        }
        let mut op = TextOp {
            components: Vec::with_capacity(components.len()),
        };
        let mut lens = Lens::default();
        for c in components {
            match c {
                Component::Retain(n) => {
                    lens.retain(n).ok_or(OtError::Overflow)?;
                    op.retain(n);
                }
                Component::Insert(s) => {
                    lens.insert(char_len(&s)).ok_or(OtError::Overflow)?;
                    op.insert_owned(s);
                }
                Component::Delete(n) => {
                    lens.delete(n).ok_or(OtError::Overflow)?;
                    op.delete(n);
                }
            }
        }
        Ok(op)
    }

    /// The components, in canonical form.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Appends a retain of `n` characters; 0 does nothing, and it merges into
    /// a retain just before it.
    pub fn retain(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        if let Some(Component::Retain(last)) = self.components.last_mut() {
            *last = last.saturating_add(n);
        } else {
            self.components.push(Component::Retain(n));
        }
        self
    }

    /// Appends an insert of `s`; an empty string does nothing, it merges into
    /// an insert just before it, and an insert that follows a delete is
    /// placed before the delete (the two orders mean the same).
    pub fn insert(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self;
        }
        if let Some(prev) = self.insert_slot() {
            prev.push_str(s);
        } else {
            self.push_insert(s.to_owned());
        }
        self
    }

    /// [`TextOp::insert`] for an owned string, reusing its buffer.
    fn insert_owned(&mut self, s: String) {
        if s.is_empty() {
            return;
        }
        if let Some(prev) = self.insert_slot() {
            prev.push_str(&s);
        } else {
            self.push_insert(s);
        }
    }

    /// The insert that text inserted now merges into, if there is one.
    #[inline]
    fn insert_slot(&mut self) -> Option<&mut String> {
        match self.components.as_mut_slice() {
            [.., Component::Insert(prev)] | [.., Component::Insert(prev), Component::Delete(_)] => {
                Some(prev)
            }
            _ => None,
        }
    }

    /// Adds a new insert component, before a trailing delete if there is one.
    #[inline]
    fn push_insert(&mut self, s: String) {
        match self.components.last() {
            Some(Component::Delete(_)) => {
                let at = self.components.len() - 1;
                self.components.insert(at, Component::Insert(s));
            }
            _ => self.components.push(Component::Insert(s)),
        }
    }

    /// Appends a delete of `n` characters; 0 does nothing, and it merges into
    /// a delete just before it.
    pub fn delete(&mut self, n: u64) -> &mut Self {
        if n == 0 {
            return self;
        }
        if let Some(Component::Delete(last)) = self.components.last_mut() {
            *last = last.saturating_add(n);
        } else {
            self.components.push(Component::Delete(n));
        }
        self
    }

    /// The length in characters of the text this operation applies to
    /// (retained plus deleted characters).
    pub fn base_len(&self) -> u64 {
        self.components.iter().fold(0u64, |acc, c| match c {
            Component::Retain(n) | Component::Delete(n) => acc.saturating_add(*n),
            Component::Insert(_) => acc,
        })
    }

    /// The length in characters of the text after this operation (retained
    /// plus inserted characters).
    pub fn target_len(&self) -> u64 {
        self.components.iter().fold(0u64, |acc, c| match c {
            Component::Retain(n) => acc.saturating_add(*n),
            Component::Insert(s) => acc.saturating_add(char_len(s)),
            Component::Delete(_) => acc,
        })
    }

    /// Whether the operation leaves every text unchanged (only retains, or
    /// no components at all).
    pub fn is_noop(&self) -> bool {
        self.components
            .iter()
            .all(|c| matches!(c, Component::Retain(_)))
    }

    /// Applies the operation to `text`, giving the new text; fails with
    /// [`OtError::LengthMismatch`] unless `text` has exactly
    /// [`base_len`](TextOp::base_len) characters.
    pub fn apply(&self, text: &str) -> Result<String, OtError> {
        let mismatch = || OtError::LengthMismatch {
            expected: self.base_len(),
            actual: char_len(text),
        };
        let ascii = text.is_ascii();
        let inserted: usize = self
            .components
            .iter()
            .map(|c| match c {
                Component::Insert(s) => s.len(),
                _ => 0,
            })
            .sum();
        let mut out = String::with_capacity(text.len().saturating_add(inserted));
        let mut pos = 0usize;
        for c in &self.components {
            match c {
                Component::Retain(n) => {
                    let end = advance(text, pos, *n, ascii).ok_or_else(mismatch)?;
                    out.push_str(text.get(pos..end).ok_or_else(mismatch)?);
                    pos = end;
                }
                Component::Insert(s) => out.push_str(s),
                Component::Delete(n) => {
                    pos = advance(text, pos, *n, ascii).ok_or_else(mismatch)?;
                }
            }
        }
        if pos != text.len() {
            return Err(mismatch());
        }
        Ok(out)
    }

    /// Squashes `self` then `next` into one operation, so that applying the
    /// result equals applying `self` and then `next`. Fails with
    /// [`OtError::LengthMismatch`] unless `self.target_len() ==
    /// next.base_len()`.
    pub fn compose(&self, next: &TextOp) -> Result<TextOp, OtError> {
        let mismatch = || OtError::LengthMismatch {
            expected: next.base_len(),
            actual: self.target_len(),
        };
        if self.target_len() != next.base_len() {
            return Err(mismatch());
        }
        let mut out = TextOp {
            components: Vec::with_capacity(self.components.len() + next.components.len()),
        };
        let mut ia = Pieces::new(self);
        let mut ib = Pieces::new(next);
        let mut pa = ia.next();
        let mut pb = ib.next();
        loop {
            match (pa, pb) {
                (None, None) => break,
                (Some(Piece::Delete(n)), _) => {
                    out.delete(n);
                    pa = ia.next();
                }
                (_, Some(Piece::Insert(s, _))) => {
                    out.insert(s);
                    pb = ib.next();
                }
                (None, _) | (_, None) => return Err(mismatch()),
                (Some(a), Some(b)) => {
                    let m = piece_len(a).min(piece_len(b));
                    match (a, b) {
                        (Piece::Retain(_), Piece::Retain(_)) => {
                            out.retain(m);
                        }
                        (Piece::Retain(_), Piece::Delete(_)) => {
                            out.delete(m);
                        }
                        (Piece::Insert(s, n), Piece::Retain(_)) => {
                            if m == n {
                                out.insert(s);
                            } else {
                                out.insert(split_chars(s, m).0);
                            }
                        }
                        // An insert that the next operation deletes vanishes.
                        (Piece::Insert(..), Piece::Delete(_)) => {}
                        // Handled by the outer arms.
                        (Piece::Delete(_), _) | (_, Piece::Insert(..)) => {}
                    }
                    pa = ia.consume(a, m);
                    pb = ib.consume(b, m);
                }
            }
        }
        Ok(out)
    }

    /// Transforms `self` (applied later in server order) against `earlier`
    /// (already applied, same base). Returns self' to apply after `earlier`.
    /// At equal positions, `earlier`'s insert stays first.
    ///
    /// Equals `TextOp::transform_pair(earlier, self).1`. Fails with
    /// [`OtError::LengthMismatch`] unless both have the same base length.
    pub fn transform(&self, earlier: &TextOp) -> Result<TextOp, OtError> {
        transform_impl::<false>(earlier, self).map(|(_, b)| b)
    }

    /// Both sides at once, for the client state machine: returns (a', b')
    /// with apply(apply(t,a),b') == apply(apply(t,b),a'), where `a` has
    /// priority (its inserts go first at equal positions).
    ///
    /// Fails with [`OtError::LengthMismatch`] unless `a` and `b` have the
    /// same base length.
    pub fn transform_pair(a: &TextOp, b: &TextOp) -> Result<(TextOp, TextOp), OtError> {
        transform_impl::<true>(a, b)
    }

    /// Maps a cursor position (in chars) through this op; `after_inserts`
    /// says whether an insert exactly at the cursor pushes it right.
    ///
    /// A cursor inside a deleted range moves to where the range was (after
    /// any text inserted there). Positions past the base length are shifted
    /// by the net change in length.
    pub fn transform_index(&self, index: u64, after_inserts: bool) -> u64 {
        let mut pos = 0u64;
        let mut result = index;
        for c in &self.components {
            if pos > index {
                break;
            }
            match c {
                Component::Retain(n) => pos = pos.saturating_add(*n),
                Component::Insert(s) => {
                    if pos < index || after_inserts {
                        result = result.saturating_add(char_len(s));
                    }
                }
                Component::Delete(n) => {
                    result = result.saturating_sub((*n).min(index - pos));
                    pos = pos.saturating_add(*n);
                }
            }
        }
        result
    }
}

/// Length of a piece in characters (inserted ones for an insert).
#[inline]
fn piece_len(p: Piece<'_>) -> u64 {
    match p {
        Piece::Retain(n) | Piece::Delete(n) | Piece::Insert(_, n) => n,
    }
}

/// The transform: `a` has priority. When `BUILD_A` is false only b' is built
/// and the returned a' is empty.
fn transform_impl<const BUILD_A: bool>(
    a: &TextOp,
    b: &TextOp,
) -> Result<(TextOp, TextOp), OtError> {
    let mismatch = || OtError::LengthMismatch {
        expected: a.base_len(),
        actual: b.base_len(),
    };
    if a.base_len() != b.base_len() {
        return Err(mismatch());
    }
    let cap = a.components.len() + b.components.len();
    let mut a2 = TextOp {
        components: Vec::with_capacity(if BUILD_A { cap } else { 0 }),
    };
    let mut b2 = TextOp {
        components: Vec::with_capacity(cap),
    };
    let mut ia = Pieces::new(a);
    let mut ib = Pieces::new(b);
    let mut pa = ia.next();
    let mut pb = ib.next();
    loop {
        match (pa, pb) {
            (None, None) => break,
            (Some(Piece::Insert(s, n)), _) => {
                if BUILD_A {
                    a2.insert(s);
                }
                b2.retain(n);
                pa = ia.next();
            }
            (_, Some(Piece::Insert(s, n))) => {
                if BUILD_A {
                    a2.retain(n);
                }
                b2.insert(s);
                pb = ib.next();
            }
            (None, _) | (_, None) => return Err(mismatch()),
            (Some(x), Some(y)) => {
                let m = piece_len(x).min(piece_len(y));
                match (x, y) {
                    (Piece::Retain(_), Piece::Retain(_)) => {
                        if BUILD_A {
                            a2.retain(m);
                        }
                        b2.retain(m);
                    }
                    (Piece::Delete(_), Piece::Retain(_)) => {
                        if BUILD_A {
                            a2.delete(m);
                        }
                    }
                    (Piece::Retain(_), Piece::Delete(_)) => {
                        b2.delete(m);
                    }
                    // Both deleted the same text: nothing left to do.
                    (Piece::Delete(_), Piece::Delete(_)) => {}
                    // Handled by the outer arms.
                    (Piece::Insert(..), _) | (_, Piece::Insert(..)) => {}
                }
                pa = ia.consume(x, m);
                pb = ib.consume(y, m);
            }
        }
    }
    Ok((a2, b2))
}

/// Running base and target lengths, checked for overflow.
#[derive(Default)]
struct Lens {
    base: u64,
    target: u64,
}

impl Lens {
    fn retain(&mut self, n: u64) -> Option<()> {
        self.base = self.base.checked_add(n)?;
        self.target = self.target.checked_add(n)?;
        Some(())
    }

    fn insert(&mut self, n: u64) -> Option<()> {
        self.target = self.target.checked_add(n)?;
        Some(())
    }

    fn delete(&mut self, n: u64) -> Option<()> {
        self.base = self.base.checked_add(n)?;
        Some(())
    }
}

impl Serialize for TextOp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self
            .components
            .iter()
            .map(|c| match c {
                Component::Delete(n) => n.div_ceil(MAX_DELETE_CHUNK) as usize,
                _ => 1,
            })
            .sum();
        let mut seq = serializer.serialize_seq(Some(len))?;
        for c in &self.components {
            match c {
                Component::Retain(n) => seq.serialize_element(n)?,
                Component::Insert(s) => seq.serialize_element(s.as_str())?,
                Component::Delete(n) => {
                    let mut left = *n;
                    while left > 0 {
                        let chunk = left.min(MAX_DELETE_CHUNK);
                        let value = 0i64.checked_sub_unsigned(chunk).unwrap_or(i64::MIN);
                        seq.serialize_element(&value)?;
                        left -= chunk;
                    }
                }
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for TextOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(OpVisitor)
    }
}

/// Reads the JSON array form of a [`TextOp`].
struct OpVisitor;

impl<'de> Visitor<'de> for OpVisitor {
    type Value = TextOp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a text operation: an array of positive integers (retain), \
             non-empty strings (insert) and negative integers (delete)",
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextOp, A::Error> {
        let hint = seq.size_hint().unwrap_or(0).min(64);
        let mut op = TextOp {
            components: Vec::with_capacity(hint),
        };
        let mut lens = Lens::default();
        let mut index = 0usize;
        while let Some(c) = seq.next_element_seed(ComponentSeed { index })? {
            if index >= MAX_COMPONENTS {
                return Err(de::Error::custom(format_args!(
                    "text operation has more than {MAX_COMPONENTS} components"
                )));
            }
            let fits = match c {
                Component::Retain(n) => {
                    op.retain(n);
                    lens.retain(n)
                }
                Component::Insert(s) => {
                    let fits = lens.insert(char_len(&s));
                    op.insert_owned(s);
                    fits
                }
                Component::Delete(n) => {
                    op.delete(n);
                    lens.delete(n)
                }
            };
            if fits.is_none() {
                return Err(de::Error::custom(OtError::Overflow));
            }
            index += 1;
        }
        Ok(op)
    }
}

/// Reads one component; `index` (0-based position in the array) is used in
/// error messages.
struct ComponentSeed {
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ComponentSeed {
    type Value = Component;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Component, D::Error> {
        deserializer.deserialize_any(ComponentVisitor { index: self.index })
    }
}

/// Visitor behind [`ComponentSeed`].
struct ComponentVisitor {
    index: usize,
}

impl ComponentVisitor {
    fn wrong_type<E: de::Error>(&self, what: &str) -> E {
        E::custom(format_args!(
            "text operation component {} is {what}; use a positive integer (retain), \
             a non-empty string (insert) or a negative integer (delete)",
            self.index
        ))
    }

    fn zero<E: de::Error>(&self) -> E {
        E::custom(format_args!(
            "text operation component {} is 0; use a positive retain or a negative delete",
            self.index
        ))
    }

    fn too_large<E: de::Error>(&self, shown: &dyn fmt::Display) -> E {
        E::custom(format_args!(
            "text operation component {} is {shown}, which is too large; \
             retain and delete counts must fit in 64 bits",
            self.index
        ))
    }
}

impl<'de> Visitor<'de> for ComponentVisitor {
    type Value = Component;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "text operation component {} to be a positive integer (retain), \
             a non-empty string (insert) or a negative integer (delete)",
            self.index
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Component, E> {
        if v == 0 {
            Err(self.zero())
        } else {
            Ok(Component::Retain(v))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Component, E> {
        match v {
            0 => Err(self.zero()),
            v if v > 0 => Ok(Component::Retain(v.unsigned_abs())),
            v => Ok(Component::Delete(v.unsigned_abs())),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Component, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.too_large(&v)),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Component, E> {
        if v >= 0 {
            return self.visit_u128(v.unsigned_abs());
        }
        match u64::try_from(v.unsigned_abs()) {
            Ok(n) => Ok(Component::Delete(n)),
            Err(_) => Err(self.too_large(&v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Component, E> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() >= 9.0e18 {
            Err(self.too_large(&format_args!("{v:e}")))
        } else {
            Err(E::custom(format_args!(
                "text operation component {} is {v:?}, not an integer; \
                 retain and delete counts are whole numbers of characters",
                self.index
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Component, E> {
        if v.is_empty() {
            Err(self.empty_insert())
        } else {
            Ok(Component::Insert(v.to_owned()))
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Component, E> {
        if v.is_empty() {
            Err(self.empty_insert())
        } else {
            Ok(Component::Insert(v))
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Component, E> {
        Err(self.wrong_type("a boolean"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Component, E> {
        Err(self.wrong_type("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Component, E> {
        Err(self.wrong_type("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Component, A::Error> {
        Err(self.wrong_type("an array"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Component, A::Error> {
        Err(self.wrong_type("an object"))
    }
}

impl ComponentVisitor {
    fn empty_insert<E: de::Error>(&self) -> E {
        E::custom(format_args!(
            "text operation component {} is an empty string; an insert must contain text",
            self.index
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(c: Vec<Component>) -> TextOp {
        TextOp::from_components(c).unwrap()
    }

    use Component::{Delete as D, Insert, Retain as R};

    fn ins(s: &str) -> Component {
        Insert(s.to_owned())
    }

    fn from_json(s: &str) -> Result<TextOp, String> {
        serde_json::from_str::<TextOp>(s).map_err(|e| e.to_string())
    }

    /// Whether the op is in canonical form.
    fn is_canonical(op: &TextOp) -> bool {
        let c = op.components();
        let no_empty = c.iter().all(|c| match c {
            R(n) | D(n) => *n > 0,
            Insert(s) => !s.is_empty(),
        });
        let pairs_ok = c.windows(2).all(|w| {
            !matches!(
                (&w[0], &w[1]),
                (R(_), R(_)) | (Insert(_), Insert(_)) | (D(_), D(_)) | (D(_), Insert(_))
            )
        });
        no_empty && pairs_ok
    }

    #[test]
    fn apply_retain_keeps_text() {
        assert_eq!(op(vec![R(5)]).apply("hello").unwrap(), "hello");
        assert_eq!(TextOp::new().apply("").unwrap(), "");
    }

    #[test]
    fn apply_insert_adds_text() {
        assert_eq!(
            op(vec![R(5), ins(" world")]).apply("hello").unwrap(),
            "hello world"
        );
        assert_eq!(op(vec![ins("a")]).apply("").unwrap(), "a");
        assert_eq!(op(vec![ins(">"), R(2)]).apply("ab").unwrap(), ">ab");
    }

    #[test]
    fn apply_delete_removes_text() {
        assert_eq!(op(vec![R(1), D(3), R(1)]).apply("hello").unwrap(), "ho");
        assert_eq!(op(vec![D(5)]).apply("hello").unwrap(), "");
    }

    #[test]
    fn apply_mixed_from_the_protocol_example() {
        let o = from_json(r#"[5, "abc", -3]"#).unwrap();
        assert_eq!(o.apply("hello123").unwrap(), "helloabc");
    }

    #[test]
    fn apply_unicode_counts_scalar_values() {
        // emoji: one scalar each (4 bytes)
        assert_eq!(
            op(vec![R(1), D(1), ins("🎉"), R(1)]).apply("a😀b").unwrap(),
            "a🎉b"
        );
        // "e" + combining acute accent: two scalars
        let text = "e\u{301}x";
        assert_eq!(op(vec![R(1), D(1), R(1)]).apply(text).unwrap(), "ex");
        assert_eq!(op(vec![R(2), D(1)]).apply(text).unwrap(), "e\u{301}");
        // base length counts scalars, not bytes or graphemes
        assert!(op(vec![R(2)]).apply(text).is_err());
        // a family emoji is several scalars joined by ZWJ
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(family.chars().count(), 5);
        assert_eq!(
            op(vec![R(5), ins("中")]).apply(family).unwrap(),
            format!("{family}中")
        );
    }

    #[test]
    fn apply_length_mismatch_error() {
        let o = op(vec![R(3), D(2)]);
        assert_eq!(
            o.apply("abcd"),
            Err(OtError::LengthMismatch {
                expected: 5,
                actual: 4
            })
        );
        assert_eq!(
            o.apply("abcdef"),
            Err(OtError::LengthMismatch {
                expected: 5,
                actual: 6
            })
        );
        assert_eq!(
            o.apply("ééé"),
            Err(OtError::LengthMismatch {
                expected: 5,
                actual: 3
            })
        );
        assert_eq!(
            op(vec![R(u64::MAX)]).apply("ab"),
            Err(OtError::LengthMismatch {
                expected: u64::MAX,
                actual: 2
            })
        );
        let msg = o.apply("x").unwrap_err().to_string();
        assert_eq!(
            msg,
            "text operation length mismatch: expected 5 characters, found 1"
        );
    }

    #[test]
    fn from_components_refuses_empty_components() {
        for c in [R(0), D(0), ins("")] {
            assert_eq!(
                TextOp::from_components(vec![R(1), c]),
                Err(OtError::EmptyComponent)
            );
        }
        assert_eq!(
            TextOp::from_components(vec![R(u64::MAX), R(1)]),
            Err(OtError::Overflow)
        );
    }

    #[test]
    fn canonical_normalization() {
        // same kinds merge
        assert_eq!(
            op(vec![R(1), R(2), ins("a"), ins("b"), D(1), D(2)]).components(),
            &[R(3), ins("ab"), D(3)]
        );
        // insert after delete goes before it
        assert_eq!(op(vec![D(2), ins("x")]), op(vec![ins("x"), D(2)]));
        assert_eq!(
            op(vec![R(1), ins("a"), D(2), ins("b"), D(1), ins("c")]).components(),
            &[R(1), ins("abc"), D(3)]
        );
        // builders: zero and empty are no-ops
        let mut b = TextOp::new();
        b.retain(0).insert("").delete(0);
        assert_eq!(b, TextOp::new());
        let mut b = TextOp::new();
        b.retain(2)
            .delete(1)
            .insert("x")
            .insert("y")
            .retain(1)
            .retain(1);
        assert_eq!(b.components(), &[R(2), ins("xy"), D(1), R(2)]);
        assert!(is_canonical(&b));
    }

    #[test]
    fn lengths_and_noop() {
        let o = op(vec![R(2), ins("é😀"), D(3), R(1)]);
        assert_eq!(o.base_len(), 6);
        assert_eq!(o.target_len(), 5);
        assert!(!o.is_noop());
        assert!(op(vec![R(4)]).is_noop());
        assert!(TextOp::new().is_noop());
        assert!(!op(vec![ins("a")]).is_noop());
    }

    #[test]
    fn compose_squashes_two_ops() {
        let a = op(vec![R(5), ins(" world")]); // hello -> hello world
        let b = op(vec![D(1), ins("J"), R(4), D(6), ins("!")]); // -> Jello!
        let c = a.compose(&b).unwrap();
        assert_eq!(c.apply("hello").unwrap(), "Jello!");
        assert_eq!(c, op(vec![ins("J"), D(1), R(4), ins("!")]));
        // an insert deleted by the next op vanishes
        let a = op(vec![R(1), ins("xyz"), R(1)]);
        let b = op(vec![R(2), D(1), R(2)]);
        assert_eq!(a.compose(&b).unwrap(), op(vec![R(1), ins("xz"), R(1)]));
        // split inserts inside multibyte text
        let a = op(vec![ins("é😀中")]);
        let b = op(vec![R(1), D(1), R(1)]);
        assert_eq!(a.compose(&b).unwrap(), op(vec![ins("é中")]));
    }

    #[test]
    fn compose_length_mismatch() {
        let a = op(vec![R(2), ins("x")]);
        let b = op(vec![R(2)]);
        assert_eq!(
            a.compose(&b),
            Err(OtError::LengthMismatch {
                expected: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn transform_tie_break_earlier_insert_first() {
        let text = "ab";
        let earlier = op(vec![R(1), ins("X"), R(1)]);
        let later = op(vec![R(1), ins("Y"), R(1)]);
        let later2 = later.transform(&earlier).unwrap();
        let server = later2.apply(&earlier.apply(text).unwrap()).unwrap();
        assert_eq!(server, "aXYb");
        // the client that sent `later` converges on the same text
        let (earlier2, _) = TextOp::transform_pair(&earlier, &later).unwrap();
        let client = earlier2.apply(&later.apply(text).unwrap()).unwrap();
        assert_eq!(client, "aXYb");
        // at the very start and end too
        let e = op(vec![ins("1")]);
        let l = op(vec![ins("2")]);
        assert_eq!(l.transform(&e).unwrap().apply("1").unwrap(), "12");
        let e = op(vec![R(2), ins("1")]);
        let l = op(vec![R(2), ins("2")]);
        assert_eq!(l.transform(&e).unwrap().apply("ab1").unwrap(), "ab12");
    }

    #[test]
    fn transform_insert_inside_concurrently_deleted_range_survives() {
        let text = "abcdef";
        let del = op(vec![R(1), D(4), R(1)]); // -> "af"
        let ins_op = op(vec![R(3), ins("XY"), R(3)]); // -> "abcXYdef"
        assert_eq!(del.apply(text).unwrap(), "af");
        assert_eq!(ins_op.apply(text).unwrap(), "abcXYdef");
        // insert later than the delete
        let ins2 = ins_op.transform(&del).unwrap();
        assert_eq!(ins2.apply("af").unwrap(), "aXYf");
        // delete later than the insert: the inserted text is not deleted
        let del2 = del.transform(&ins_op).unwrap();
        assert_eq!(del2.apply("abcXYdef").unwrap(), "aXYf");
    }

    #[test]
    fn transform_delete_delete_overlap() {
        let text = "abcdefgh";
        let a = op(vec![R(1), D(4), R(3)]); // deletes bcde
        let b = op(vec![R(3), D(4), R(1)]); // deletes defg
        let (a2, b2) = TextOp::transform_pair(&a, &b).unwrap();
        let left = b2.apply(&a.apply(text).unwrap()).unwrap();
        let right = a2.apply(&b.apply(text).unwrap()).unwrap();
        assert_eq!(left, "ah");
        assert_eq!(right, "ah");
        assert_eq!(a2, op(vec![R(1), D(2), R(1)]));
        assert_eq!(b2, op(vec![R(1), D(2), R(1)]));
        // identical deletes cancel to a no-op
        let (x, y) = TextOp::transform_pair(&a, &a).unwrap();
        assert!(x.is_noop() && y.is_noop());
    }

    #[test]
    fn transform_length_mismatch() {
        let a = op(vec![R(2)]);
        let b = op(vec![R(3)]);
        assert_eq!(
            TextOp::transform_pair(&a, &b),
            Err(OtError::LengthMismatch {
                expected: 2,
                actual: 3
            })
        );
        assert_eq!(
            b.transform(&a),
            Err(OtError::LengthMismatch {
                expected: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn transform_index_moves_cursors() {
        let o = op(vec![R(2), ins("xyz"), R(3)]);
        assert_eq!(o.transform_index(0, true), 0);
        assert_eq!(o.transform_index(1, true), 1);
        assert_eq!(o.transform_index(2, false), 2);
        assert_eq!(o.transform_index(2, true), 5);
        assert_eq!(o.transform_index(3, false), 6);
        let d = op(vec![R(1), D(3), R(2)]);
        assert_eq!(d.transform_index(0, false), 0);
        assert_eq!(d.transform_index(1, false), 1);
        assert_eq!(d.transform_index(3, false), 1);
        assert_eq!(d.transform_index(4, false), 1);
        assert_eq!(d.transform_index(5, false), 2);
        let r = op(vec![R(1), ins("X"), D(3), R(2)]);
        assert_eq!(r.transform_index(3, false), 2);
        assert_eq!(r.transform_index(1, false), 1);
        assert_eq!(r.transform_index(1, true), 2);
    }

    #[test]
    fn serde_round_trip() {
        let o = op(vec![R(5), ins("a\"bc😀"), D(3), R(1)]);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#"[5,"a\"bc😀",-3,1]"#);
        assert_eq!(from_json(&json).unwrap(), o);
        assert_eq!(serde_json::to_string(&TextOp::new()).unwrap(), "[]");
        assert_eq!(from_json("[]").unwrap(), TextOp::new());
        // extremes
        let big = op(vec![R(u64::MAX)]);
        assert_eq!(
            from_json(&serde_json::to_string(&big).unwrap()).unwrap(),
            big
        );
        let del = op(vec![D(u64::MAX)]);
        let json = serde_json::to_string(&del).unwrap();
        assert_eq!(json, "[-9223372036854775808,-9223372036854775807]");
        assert_eq!(from_json(&json).unwrap(), del);
        assert_eq!(
            from_json("[-9223372036854775808]").unwrap(),
            op(vec![D(1 << 63)])
        );
    }

    #[test]
    fn serde_normalizes_on_read() {
        assert_eq!(
            from_json(r#"[1, 2, -1, "a", "b", -1]"#)
                .unwrap()
                .components(),
            &[R(3), ins("ab"), D(2)]
        );
    }

    #[test]
    fn serde_refuses_zero() {
        let e = from_json(r#"[1, "x", 0]"#).unwrap_err();
        assert!(
            e.starts_with(
                "text operation component 2 is 0; use a positive retain or a negative delete"
            ),
            "{e}"
        );
        assert!(from_json("[-0]").is_err());
    }

    #[test]
    fn serde_refuses_empty_string() {
        let e = from_json(r#"[1, ""]"#).unwrap_err();
        assert!(
            e.starts_with("text operation component 1 is an empty string"),
            "{e}"
        );
    }

    #[test]
    fn serde_refuses_floats() {
        let e = from_json("[1.5]").unwrap_err();
        assert!(
            e.starts_with("text operation component 0 is 1.5, not an integer"),
            "{e}"
        );
        let e = from_json("[2, 1.0]").unwrap_err();
        assert!(
            e.starts_with("text operation component 1 is 1.0, not an integer"),
            "{e}"
        );
        assert!(from_json("[1e2]").is_err());
    }

    #[test]
    fn serde_refuses_numbers_that_do_not_fit() {
        let e = from_json("[18446744073709551616]").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = from_json("[-9223372036854775809]").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = from_json("[1e300]").unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn serde_refuses_overflowing_totals() {
        let e = from_json("[18446744073709551615, 1]").unwrap_err();
        assert!(e.starts_with("text operation is too long"), "{e}");
    }

    #[test]
    fn serde_refuses_other_types() {
        for (json, what) in [
            ("[true]", "a boolean"),
            ("[null]", "null"),
            ("[[1]]", "an array"),
            (r#"[{"a":1}]"#, "an object"),
        ] {
            let e = from_json(json).unwrap_err();
            assert!(
                e.starts_with(&format!("text operation component 0 is {what};")),
                "{e}"
            );
        }
        let e = from_json(r#"{"ops": []}"#).unwrap_err();
        assert!(e.contains("expected a text operation"), "{e}");
        assert!(from_json(r#""abc""#).is_err());
        assert!(from_json("5").is_err());
    }

    #[test]
    fn serde_refuses_too_many_components() {
        let parts: Vec<String> = (0..MAX_COMPONENTS)
            .map(|i| {
                if i % 2 == 0 {
                    "1".into()
                } else {
                    "\"a\"".into()
                }
            })
            .collect();
        let ok = format!("[{}]", parts.join(","));
        assert_eq!(from_json(&ok).unwrap().components().len(), MAX_COMPONENTS);
        let too_many = format!("[{},1]", parts.join(","));
        let e = from_json(&too_many).unwrap_err();
        assert!(
            e.starts_with("text operation has more than 100000 components"),
            "{e}"
        );
    }

    #[test]
    fn error_messages_are_lowercase() {
        for e in [
            OtError::EmptyComponent,
            OtError::LengthMismatch {
                expected: 1,
                actual: 2,
            },
            OtError::Overflow,
        ] {
            let m = e.to_string();
            assert!(m.starts_with(|c: char| c.is_lowercase()), "{m}");
        }
    }

    // ---- property tests ----

    /// Characters for generated texts and inserts: ASCII, 2-, 3- and 4-byte
    /// UTF-8, and a combining mark.
    fn any_char() -> impl Strategy<Value = char> {
        prop::sample::select(vec![
            'a', 'b', 'c', ' ', '\n', 'é', 'ß', '\u{301}', '中', '文', '😀', '🎉', '\u{200d}',
        ])
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop::collection::vec(any_char(), 0..24).prop_map(|v| v.into_iter().collect())
    }

    /// Raw material for an op: (kind, count, insert text).
    type Seeds = Vec<(u8, u64, String)>;

    fn any_seeds() -> impl Strategy<Value = Seeds> {
        prop::collection::vec(
            (
                0u8..3,
                1u64..6,
                prop::collection::vec(any_char(), 1..5).prop_map(|v| v.into_iter().collect()),
            ),
            0..10,
        )
    }

    /// Builds a valid op for a text of `len` chars from seeds.
    fn build(len: u64, seeds: &Seeds) -> TextOp {
        let mut o = TextOp::new();
        let mut left = len;
        for (kind, n, s) in seeds {
            match kind {
                0 => {
                    let m = (*n).min(left);
                    o.retain(m);
                    left -= m;
                }
                1 => {
                    let m = (*n).min(left);
                    o.delete(m);
                    left -= m;
                }
                _ => {
                    o.insert(s);
                }
            }
        }
        o.retain(left);
        o
    }

    fn len(s: &str) -> u64 {
        s.chars().count() as u64
    }

    proptest! {
        #[test]
        fn prop_transform_pair_converges(t in any_text(), sa in any_seeds(), sb in any_seeds()) {
            let a = build(len(&t), &sa);
            let b = build(len(&t), &sb);
            let (a2, b2) = TextOp::transform_pair(&a, &b).unwrap();
            let left = b2.apply(&a.apply(&t).unwrap()).unwrap();
            let right = a2.apply(&b.apply(&t).unwrap()).unwrap();
            prop_assert_eq!(left, right);
            prop_assert!(is_canonical(&a2) && is_canonical(&b2));
        }

        #[test]
        fn prop_compose_matches_sequential_apply(t in any_text(), sa in any_seeds(), sb in any_seeds()) {
            let a = build(len(&t), &sa);
            let mid = a.apply(&t).unwrap();
            let b = build(len(&mid), &sb);
            let c = a.compose(&b).unwrap();
            prop_assert_eq!(c.apply(&t).unwrap(), b.apply(&mid).unwrap());
            prop_assert!(is_canonical(&c));
            prop_assert_eq!(c.base_len(), a.base_len());
            prop_assert_eq!(c.target_len(), b.target_len());
        }

        #[test]
        fn prop_transform_is_pair_with_earlier_priority(t in any_text(), sa in any_seeds(), sb in any_seeds()) {
            let earlier = build(len(&t), &sa);
            let later = build(len(&t), &sb);
            let one = later.transform(&earlier).unwrap();
            let (_, pair) = TextOp::transform_pair(&earlier, &later).unwrap();
            prop_assert_eq!(one, pair);
        }

        /// The server transforms each client's op against the history one
        /// by one; every client rebases with transform_pair; all converge.
        #[test]
        fn prop_history_sequence_converges(t in any_text(), seeds in prop::collection::vec(any_seeds(), 3..=5)) {
            let clients: Vec<TextOp> = seeds.iter().map(|s| build(len(&t), s)).collect();
            // server: all clients sent their op at baseSeq = the start
            let mut history: Vec<TextOp> = Vec::new();
            let mut server = t.clone();
            for c in &clients {
                let mut x = c.clone();
                for e in &history {
                    x = x.transform(e).unwrap();
                }
                server = x.apply(&server).unwrap();
                history.push(x);
            }
            // also: the last op against the whole list equals applying the list then it
            let mut replay = t.clone();
            for e in &history {
                replay = e.apply(&replay).unwrap();
            }
            prop_assert_eq!(&replay, &server);
            // each client applied its own op first, then receives the broadcasts
            for (i, own) in clients.iter().enumerate() {
                let mut doc = own.apply(&t).unwrap();
                let mut pending = Some(own.clone());
                for (j, e) in history.iter().enumerate() {
                    if j == i {
                        // the ack: the server's transformed op is the rebased pending op
                        let acked = pending.take();
                        prop_assert_eq!(acked.as_ref(), Some(e));
                        continue;
                    }
                    match pending.take() {
                        Some(p) => {
                            let (e2, p2) = TextOp::transform_pair(e, &p).unwrap();
                            doc = e2.apply(&doc).unwrap();
                            pending = Some(p2);
                        }
                        None => doc = e.apply(&doc).unwrap(),
                    }
                }
                prop_assert_eq!(&doc, &server);
            }
        }

        #[test]
        fn prop_json_round_trip(t in any_text(), sa in any_seeds()) {
            let a = build(len(&t), &sa);
            let json = serde_json::to_string(&a).unwrap();
            let back: TextOp = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, a);
        }

        #[test]
        fn prop_from_components_is_canonical_and_equivalent(t in any_text(), sa in any_seeds()) {
            // a non-canonical listing of the same op: every component split in two
            let a = build(len(&t), &sa);
            let mut raw = Vec::new();
            for c in a.components() {
                match c {
                    R(n) if *n > 1 => { raw.push(R(1)); raw.push(R(n - 1)); }
                    D(n) if *n > 1 => { raw.push(D(n - 1)); raw.push(D(1)); }
                    other => raw.push(other.clone()),
                }
            }
            let b = TextOp::from_components(raw).unwrap();
            prop_assert!(is_canonical(&a));
            prop_assert_eq!(&b, &a);
            prop_assert_eq!(b.apply(&t).unwrap(), a.apply(&t).unwrap());
        }

        #[test]
        fn prop_transform_index_stays_in_bounds(t in any_text(), sa in any_seeds(), idx in 0u64..30, after in any::<bool>()) {
            let a = build(len(&t), &sa);
            let i = idx.min(len(&t));
            let mapped = a.transform_index(i, after);
            prop_assert!(mapped <= a.target_len());
        }
    }
}
