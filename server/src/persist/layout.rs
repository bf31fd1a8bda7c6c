//! Where a node or an edge lives in a graph's git tree (docs/protocol.md 12).
//!
//! ```text
//! nodes/3/f/a/1/pkg+libc6.json
//! edges/0/9/c/e/pkg+a%20-%5Bdepends-on%5D-%3E%20pkg+b.json
//! ```
//!
//! - **Fan-out**: four folders of one hex digit each, the first four hex
//!   digits of the git blob hash of the id, which a person computes with
//!   `printf %s "$id" | git hash-object --stdin`. Sixteen entries per folder
//!   and 65,536 leaf folders per kind keep every tree object small, so a
//!   commit rewrites a few hundred bytes per touched entity whatever the
//!   graph's size (a graph of 275,000 edges has about four per leaf).
//! - **File names**: the id escaped reversibly, then `.json`. Bytes in
//!   `[A-Za-z0-9_-]` stay as they are, `.` too except in first place, `:`
//!   becomes `+` (so `pkg:libc6` reads `pkg+libc6`), every other byte is
//!   `%XX` (upper-case hex), `+`, `%` and `~` included. The result never holds
//!   `/`, never starts with `.`, is never `.` or `..`, and has no control
//!   characters.
//! - **Long ids**: an escaped id over [`MAX_PLAIN_NAME`] bytes is cut to at
//!   most [`HASHED_PREFIX`] bytes (never inside a `%XX`) and followed by `~`
//!   and the id's full 40-hex hash; `~` never occurs in a plain name, so the
//!   two forms cannot meet. Such a name is not reversible on its own: the full
//!   id is always inside the JSON file, which is what loading reads.
//!
//! Names stay under 210 bytes, well within the 255 of common file systems.

use sha1::{Digest, Sha1};

/// Escaped names longer than this take the hashed form.
pub const MAX_PLAIN_NAME: usize = 200;
/// The most bytes of the escaped id kept before `~hash` in the hashed form.
pub const HASHED_PREFIX: usize = 150;
/// Fan-out folder levels under `nodes/` and `edges/`.
pub const FANOUT_LEVELS: usize = 4;
/// The file name suffix of every entity.
pub const SUFFIX: &str = ".json";

/// Which kind of entity a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A node, under `nodes/`.
    Node,
    /// An edge, under `edges/`.
    Edge,
}

impl Kind {
    /// The top folder of this kind.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Edge => "edges",
        }
    }
}

/// The place of one entity in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityPath {
    /// Node or edge.
    pub kind: Kind,
    /// The fan-out digits, each `0..16`.
    pub fanout: [u8; FANOUT_LEVELS],
    /// The file name, `.json` included.
    pub name: String,
}

impl EntityPath {
    /// The place of the entity with this id.
    pub fn of(kind: Kind, id: &str) -> EntityPath {
        let hash = id_hash(id);
        let fanout = [hash[0] >> 4, hash[0] & 0x0f, hash[1] >> 4, hash[1] & 0x0f];
        EntityPath {
            kind,
            fanout,
            name: file_name(id, &hash),
        }
    }

    /// The path from the root of the tree, `/`-separated.
    pub fn to_path(&self) -> String {
        let mut out = String::with_capacity(self.name.len() + 16);
        out.push_str(self.kind.folder());
        for d in self.fanout {
            out.push('/');
            out.push(char::from(HEX[usize::from(d)]));
        }
        out.push('/');
        out.push_str(&self.name);
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The git blob hash of the id's bytes (what `git hash-object` prints).
pub fn id_hash(id: &str) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", id.len()).as_bytes());
    h.update(id.as_bytes());
    h.finalize().into()
}

/// The file name of an id (with `.json`), given its [`id_hash`].
fn file_name(id: &str, hash: &[u8; 20]) -> String {
    let escaped = escape(id);
    if escaped.len() <= MAX_PLAIN_NAME {
        return escaped + SUFFIX;
    }
    let mut cut = HASHED_PREFIX.min(escaped.len());
    // Never cut inside a `%XX`: back off to the start of the escape.
    let bytes = escaped.as_bytes();
    for back in 1..=2 {
        if cut >= back && bytes[cut - back] == b'%' {
            cut -= back;
            break;
        }
    }
    // Nor inside a character: while what would be cut off starts with a
    // UTF-8 continuation byte (`%80` to `%BF`), back off one escape.
    while cut >= 3 && bytes[cut] == b'%' && matches!(bytes[cut + 1], b'8' | b'9' | b'A' | b'B') {
        cut -= 3;
    }
    let mut out = String::with_capacity(cut + 1 + 40 + SUFFIX.len());
    out.push_str(&escaped[..cut]);
    out.push('~');
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out.push_str(SUFFIX);
    out
}

/// Escapes an id into a plain file name stem (see the module docs).
pub fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 8);
    for (i, &b) in id.as_bytes().iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => out.push(char::from(b)),
            b'.' if i > 0 => out.push('.'),
            b':' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
            }
        }
    }
    out
}

/// The id a plain file name stem (without `.json`) stands for; `None` for a
/// hashed name (the id is then only in the file) or a name this module
/// never writes.
pub fn unescape(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b':'),
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b @ (b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-') => out.push(b),
            b'.' if i > 0 => out.push(b'.'),
            _ => return None,
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether a file name is one this module could have written: used by
/// loading and `verify` to refuse stray entries.
pub fn is_entity_name(name: &[u8]) -> bool {
    let Some(stem) = name.strip_suffix(SUFFIX.as_bytes()) else {
        return false;
    };
    !stem.is_empty()
        && stem[0] != b'.'
        && stem.len() <= MAX_PLAIN_NAME + 1 + 40
        && stem.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'%' | b'~')
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn path(id: &str) -> String {
        EntityPath::of(Kind::Node, id).to_path()
    }

    #[test]
    fn plain_ids_read_well_and_reverse() {
        assert_eq!(escape("pkg:libc6"), "pkg+libc6");
        assert_eq!(escape("pkg:python3.11"), "pkg+python3.11");
        assert_eq!(escape("pkg:g++"), "pkg+g%2B%2B");
        assert_eq!(escape("a b/c"), "a%20b%2Fc");
        for id in [
            "pkg:libc6",
            "x:a/b",
            "x:..",
            "..",
            ".",
            ".hidden",
            "x:é✓",
            "x:%41",
            "x:~+:",
            "x:\u{7f}",
        ] {
            let e = escape(id);
            assert!(!e.contains('/') && !e.starts_with('.') && e != "." && e != "..");
            assert!(e.bytes().all(|b| b.is_ascii_graphic()), "{e}");
            assert_eq!(unescape(&e).as_deref(), Some(id), "{id} -> {e}");
        }
    }

    #[test]
    fn fanout_matches_git_hash_object() {
        // printf %s 'pkg:libc6' | git hash-object --stdin
        let h = id_hash("pkg:libc6");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        let out = std::process::Command::new("git")
            .args(["hash-object", "--stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().map(|mut s| s.write_all(b"pkg:libc6"));
                c.wait_with_output()
            });
        if let Ok(out) = out {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex);
        }
        let p = path("pkg:libc6");
        assert_eq!(
            p,
            format!(
                "nodes/{}/{}/{}/{}/pkg+libc6.json",
                &hex[0..1],
                &hex[1..2],
                &hex[2..3],
                &hex[3..4]
            )
        );
    }

    #[test]
    fn long_ids_take_the_hashed_form_and_stay_distinct() {
        let a = format!("x:{}", "é".repeat(127)); // 256 bytes, escapes to 764
        let b = format!("x:{}è", "é".repeat(126));
        let (pa, pb) = (
            EntityPath::of(Kind::Edge, &a),
            EntityPath::of(Kind::Edge, &b),
        );
        assert_ne!(pa.name, pb.name);
        for p in [&pa, &pb] {
            assert!(p.name.len() <= 255 && p.name.contains('~'));
            assert!(is_entity_name(p.name.as_bytes()));
            let stem = &p.name[..p.name.len() - SUFFIX.len()];
            assert_eq!(unescape(stem), None);
            // The prefix is never cut inside an escape.
            let prefix = &stem[..stem.find('~').unwrap_or(0)];
            assert!(unescape(prefix).is_some(), "{prefix}");
        }
        // Every cut position of the escape is handled.
        for n in 40..60 {
            let id = format!("x:{}{}", "a".repeat(n), "%".repeat(100));
            let name = EntityPath::of(Kind::Node, &id).name;
            let prefix = &name[..name.find('~').unwrap_or(0)];
            assert!(unescape(prefix).is_some(), "{prefix}");
        }
    }

    #[test]
    fn names_never_leave_their_folder() {
        for id in ["../../etc/passwd", "x:/", "/", "x:\\..", "..\\x", "x:\0"] {
            let p = path(id);
            assert_eq!(p.split('/').count(), 6, "{p}");
            let name = p.rsplit('/').next().unwrap_or_default();
            assert!(is_entity_name(name.as_bytes()), "{name}");
        }
    }
}
