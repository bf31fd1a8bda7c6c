//! Git objects as bytes: ids, hashing, tree entries and commits.
//!
//! The write path builds its objects here, in memory, without libgit2: a
//! commit is a few hundred small objects that go straight into one pack
//! (see `pack`), so asking libgit2 to store, re-read and re-hash each of
//! them would only cost time.

use std::fmt;

use sha1::{Digest, Sha1};

/// A git object id (SHA-1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 20]);

impl ObjectId {
    /// The id of the object of this kind with this content.
    pub fn hash(kind: ObjectKind, data: &[u8]) -> ObjectId {
        let mut h = Sha1::new();
        h.update(kind.name().as_bytes());
        h.update(b" ");
        h.update(data.len().to_string().as_bytes());
        h.update([0]);
        h.update(data);
        ObjectId(h.finalize().into())
    }

    /// Parses 40 hex digits.
    pub fn from_hex(hex: &str) -> Option<ObjectId> {
        let bytes = hex.as_bytes();
        if bytes.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            // Two hex digits make one byte.
            out[i] = u8::try_from(hi << 4 | lo).ok()?;
        }
        Some(ObjectId(out))
    }

    /// The same id as libgit2 spells it.
    pub fn to_oid(self) -> git2::Oid {
        // 20 bytes is the one length `from_bytes` accepts for SHA-1.
        git2::Oid::from_bytes(&self.0).unwrap_or(git2::Oid::ZERO_SHA1)
    }

    /// A libgit2 id; `None` if it is not a SHA-1.
    pub fn from_oid(oid: git2::Oid) -> Option<ObjectId> {
        oid.as_bytes().try_into().ok().map(ObjectId)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The kinds of object this module writes (their numbers are the pack's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A commit.
    Commit = 1,
    /// A tree.
    Tree = 2,
    /// A blob.
    Blob = 3,
}

impl ObjectKind {
    /// The name in the object header.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Commit => "commit",
            ObjectKind::Tree => "tree",
            ObjectKind::Blob => "blob",
        }
    }
}

/// The mode of a sub-tree entry.
pub const MODE_TREE: &[u8] = b"40000";
/// The mode of a plain file entry.
pub const MODE_FILE: &[u8] = b"100644";

/// Appends one tree entry. Entries must be appended in git's order; every
/// tree this crate writes holds only files or only folders, so that is
/// plain byte order of the names.
pub fn push_tree_entry(out: &mut Vec<u8>, is_tree: bool, name: &[u8], id: &ObjectId) {
    out.extend_from_slice(if is_tree { MODE_TREE } else { MODE_FILE });
    out.push(b' ');
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(&id.0);
}

/// One entry of a tree, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeEntry<'a> {
    /// Whether it is a sub-tree (mode `40000`).
    pub is_tree: bool,
    /// Whether it is a regular file (mode `100644` or `100755`).
    pub is_file: bool,
    /// Its name.
    pub name: &'a [u8],
    /// Its object id.
    pub id: ObjectId,
}

/// Reads the entries of a tree object.
///
/// # Errors
/// A message naming the problem when the bytes are not a well-formed tree.
pub fn parse_tree(mut data: &[u8]) -> Result<Vec<TreeEntry<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("tree entry without a mode")?;
        let mode = &data[..space];
        let rest = &data[space + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("tree entry without a name end")?;
        let name = &rest[..nul];
        let id: [u8; 20] = rest
            .get(nul + 1..nul + 21)
            .and_then(|s| s.try_into().ok())
            .ok_or("tree entry cut short")?;
        out.push(TreeEntry {
            is_tree: mode == MODE_TREE,
            is_file: mode == MODE_FILE || mode == b"100755",
            name,
            id: ObjectId(id),
        });
        data = &rest[nul + 21..];
    }
    Ok(out)
}

/// The bytes of a commit object.
pub fn commit_bytes(
    tree: &ObjectId,
    parent: Option<&ObjectId>,
    author: &str,
    time_s: u64,
    message: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 256);
    out.extend_from_slice(format!("tree {tree}\n").as_bytes());
    if let Some(p) = parent {
        out.extend_from_slice(format!("parent {p}\n").as_bytes());
    }
    let who = sanitize_person(author);
    out.extend_from_slice(
        format!("author {who} <{who}@gitmind.invalid> {time_s} +0000\n").as_bytes(),
    );
    out.extend_from_slice(
        format!("committer gitmind <gitmind@gitmind.invalid> {time_s} +0000\n\n").as_bytes(),
    );
    out.extend_from_slice(message.as_bytes());
    if !message.ends_with('\n') {
        out.push(b'\n');
    }
    out
}

/// A name that is safe in a commit's author line.
fn sanitize_person(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '<' | '>'))
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .take(64)
        .collect();
    if clean.is_empty() {
        "gitmind".to_owned()
    } else {
        clean
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_git() {
        // The empty tree and the empty blob every git user has met.
        assert_eq!(
            ObjectId::hash(ObjectKind::Tree, b"").to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            ObjectId::hash(ObjectKind::Blob, b"").to_string(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        let id = ObjectId::hash(ObjectKind::Blob, b"hello\n");
        assert_eq!(ObjectId::from_hex(&id.to_string()), Some(id));
        assert_eq!(ObjectId::from_oid(id.to_oid()), Some(id));
        assert_eq!(ObjectId::from_hex("zz"), None);
    }

    #[test]
    fn tree_entries_round_trip() {
        let a = ObjectId::hash(ObjectKind::Blob, b"a");
        let mut bytes = Vec::new();
        push_tree_entry(&mut bytes, false, b"a.json", &a);
        push_tree_entry(&mut bytes, true, b"b", &a);
        let entries = parse_tree(&bytes).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].is_file && !entries[0].is_tree && entries[0].name == b"a.json");
        assert!(entries[1].is_tree && entries[1].id == a);
        assert!(parse_tree(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn author_lines_cannot_be_forged() {
        let c = String::from_utf8(commit_bytes(
            &ObjectId([0; 20]),
            None,
            "eve <x>\nparent 1",
            5,
            "m",
        ))
        .unwrap();
        assert!(
            c.contains("author eve-xparent-1 <eve-xparent-1@gitmind.invalid> 5 +0000\n"),
            "{c}"
        );
    }
}
