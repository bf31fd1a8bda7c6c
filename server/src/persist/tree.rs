//! A graph's git tree, kept in memory so that a commit rewrites only the
//! folders on the paths it touched.
//!
//! Every folder remembers its object id while it is unchanged. Folders are
//! shared through `Arc`, and a change copies only the folders on its path
//! (`Arc::make_mut`): the committed tree stays intact until the commit is
//! durable, so a failed commit is dropped without undoing anything.

use std::sync::Arc;

use super::layout::{EntityPath, Kind, FANOUT_LEVELS};
use super::object::{push_tree_entry, ObjectId, ObjectKind};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The whole tree of one graph: `nodes/` and `edges/`.
#[derive(Debug, Clone, Default)]
pub struct GraphTree {
    nodes: Option<Arc<Dir>>,
    edges: Option<Arc<Dir>>,
    /// The root tree's id while unchanged.
    root: Option<ObjectId>,
}

/// A folder: a fan-out level or a leaf folder of entity files.
#[derive(Debug, Clone)]
pub enum Dir {
    /// A fan-out level: up to sixteen sub-folders named `0` to `f`.
    Fan {
        /// Its id while unchanged.
        id: Option<ObjectId>,
        /// The sub-folders by hex digit.
        kids: [Option<Arc<Dir>>; 16],
    },
    /// A leaf folder: entity files, sorted by name.
    Leaf {
        /// Its id while unchanged.
        id: Option<ObjectId>,
        /// File name and blob id, sorted by name.
        entries: Vec<(Box<str>, ObjectId)>,
    },
}

impl Dir {
    fn id(&self) -> Option<ObjectId> {
        match self {
            Dir::Fan { id, .. } | Dir::Leaf { id, .. } => *id,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Dir::Fan { kids, .. } => kids.iter().all(Option::is_none),
            Dir::Leaf { entries, .. } => entries.is_empty(),
        }
    }

    fn empty(levels_below: usize) -> Dir {
        if levels_below == 0 {
            Dir::Leaf {
                id: None,
                entries: Vec::new(),
            }
        } else {
            Dir::Fan {
                id: None,
                kids: Default::default(),
            }
        }
    }
}

impl GraphTree {
    /// A tree built by loading: the root's id and its two top folders.
    pub fn from_parts(
        root: ObjectId,
        nodes: Option<Arc<Dir>>,
        edges: Option<Arc<Dir>>,
    ) -> GraphTree {
        GraphTree {
            nodes,
            edges,
            root: Some(root),
        }
    }

    /// Sets the file at `path` to `blob`, or removes it (`None`). Folders
    /// left empty are removed.
    pub fn set(&mut self, path: &EntityPath, blob: Option<ObjectId>) {
        let slot = match path.kind {
            Kind::Node => &mut self.nodes,
            Kind::Edge => &mut self.edges,
        };
        set_in(slot, &path.fanout, &path.name, blob);
        self.root = None;
    }

    /// The blob at `path`, if any.
    pub fn get(&self, path: &EntityPath) -> Option<ObjectId> {
        let mut dir = match path.kind {
            Kind::Node => self.nodes.as_deref()?,
            Kind::Edge => self.edges.as_deref()?,
        };
        for d in path.fanout {
            let Dir::Fan { kids, .. } = dir else {
                return None;
            };
            dir = kids[usize::from(d)].as_deref()?;
        }
        let Dir::Leaf { entries, .. } = dir else {
            return None;
        };
        let i = entries
            .binary_search_by(|(n, _)| (**n).cmp(path.name.as_str()))
            .ok()?;
        Some(entries[i].1)
    }

    /// Writes every changed folder through `add` (which stores an object
    /// and returns its id) and returns the root tree's id.
    pub fn write(&mut self, add: &mut dyn FnMut(ObjectKind, &[u8]) -> ObjectId) -> ObjectId {
        if let Some(id) = self.root {
            return id;
        }
        let mut bytes = Vec::with_capacity(64);
        // git orders `edges` before `nodes`.
        if let Some(edges) = &mut self.edges {
            let id = write_dir(edges, add);
            push_tree_entry(&mut bytes, true, b"edges", &id);
        }
        if let Some(nodes) = &mut self.nodes {
            let id = write_dir(nodes, add);
            push_tree_entry(&mut bytes, true, b"nodes", &id);
        }
        let id = add(ObjectKind::Tree, &bytes);
        self.root = Some(id);
        id
    }
}

fn set_in(slot: &mut Option<Arc<Dir>>, digits: &[u8], name: &str, blob: Option<ObjectId>) {
    let Some(dir) = slot else {
        if blob.is_none() {
            return;
        }
        let mut fresh = Arc::new(Dir::empty(digits.len()));
        set_in_dir(&mut fresh, digits, name, blob);
        *slot = Some(fresh);
        return;
    };
    set_in_dir(dir, digits, name, blob);
    if dir.is_empty() {
        *slot = None;
    }
}

fn set_in_dir(dir: &mut Arc<Dir>, digits: &[u8], name: &str, blob: Option<ObjectId>) {
    match Arc::make_mut(dir) {
        Dir::Fan { id, kids } => {
            let (first, rest) = match digits.split_first() {
                Some((d, rest)) => (usize::from(*d & 0x0f), rest),
                // A path that ends on a fan-out level: never built by
                // `EntityPath`, ignored rather than written wrongly.
                None => return,
            };
            set_in(&mut kids[first], rest, name, blob);
            *id = None;
        }
        Dir::Leaf { id, entries } => {
            let at = entries.binary_search_by(|(n, _)| (**n).cmp(name));
            match (at, blob) {
                (Ok(i), Some(b)) => entries[i].1 = b,
                (Ok(i), None) => {
                    entries.remove(i);
                }
                (Err(i), Some(b)) => entries.insert(i, (name.into(), b)),
                (Err(_), None) => return,
            }
            *id = None;
        }
    }
}

fn write_dir(dir: &mut Arc<Dir>, add: &mut dyn FnMut(ObjectKind, &[u8]) -> ObjectId) -> ObjectId {
    if let Some(id) = dir.id() {
        return id;
    }
    // A folder without an id was copied by `set`, so this does not copy.
    match Arc::make_mut(dir) {
        Dir::Fan { id, kids } => {
            let mut bytes = Vec::with_capacity(16 * 28);
            for (i, kid) in kids.iter_mut().enumerate() {
                if let Some(kid) = kid {
                    let kid_id = write_dir(kid, add);
                    push_tree_entry(&mut bytes, true, &[HEX[i]], &kid_id);
                }
            }
            let new = add(ObjectKind::Tree, &bytes);
            *id = Some(new);
            new
        }
        Dir::Leaf { id, entries } => {
            let mut bytes = Vec::with_capacity(entries.len() * 80);
            for (name, blob) in entries.iter() {
                push_tree_entry(&mut bytes, false, name.as_bytes(), blob);
            }
            let new = add(ObjectKind::Tree, &bytes);
            *id = Some(new);
            new
        }
    }
}

/// The number of folder levels under `nodes/` and `edges/` before the leaf.
pub const FAN_LEVELS: usize = FANOUT_LEVELS;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn blob(s: &str) -> ObjectId {
        ObjectId::hash(ObjectKind::Blob, s.as_bytes())
    }

    /// Stands in for the pack: hashes only.
    fn store() -> impl FnMut(ObjectKind, &[u8]) -> ObjectId {
        |k: ObjectKind, d: &[u8]| ObjectId::hash(k, d)
    }

    #[test]
    fn same_content_same_root_whatever_the_order() {
        let mut add = store();
        let ids: Vec<String> = (0..200).map(|i| format!("n:{i}")).collect();
        let mut a = GraphTree::default();
        for id in &ids {
            a.set(&EntityPath::of(Kind::Node, id), Some(blob(id)));
        }
        let mut b = GraphTree::default();
        for id in ids.iter().rev() {
            b.set(&EntityPath::of(Kind::Node, id), Some(blob(id)));
            b.set(&EntityPath::of(Kind::Edge, id), Some(blob(id)));
        }
        for id in &ids {
            b.set(&EntityPath::of(Kind::Edge, id), None);
        }
        assert_eq!(a.write(&mut add), b.write(&mut add));
        for id in &ids {
            a.set(&EntityPath::of(Kind::Node, id), None);
        }
        assert_eq!(a.write(&mut add), ObjectId::hash(ObjectKind::Tree, b""));
        assert!(a.nodes.is_none());
    }

    #[test]
    fn a_change_leaves_the_committed_copy_alone() {
        let mut add = store();
        let mut committed = GraphTree::default();
        let p = EntityPath::of(Kind::Node, "n:1");
        committed.set(&p, Some(blob("1")));
        let before = committed.write(&mut add);
        let mut next = committed.clone();
        next.set(&p, Some(blob("2")));
        next.set(&EntityPath::of(Kind::Edge, "e"), Some(blob("e")));
        let after = next.write(&mut add);
        assert_ne!(before, after);
        assert_eq!(committed.write(&mut add), before);
        assert_eq!(committed.get(&p), Some(blob("1")));
        assert_eq!(next.get(&p), Some(blob("2")));
    }

    #[test]
    fn only_touched_folders_are_written() {
        let mut tree = GraphTree::default();
        let mut all = |k: ObjectKind, d: &[u8]| ObjectId::hash(k, d);
        for i in 0..5000 {
            tree.set(
                &EntityPath::of(Kind::Edge, &format!("e:{i}")),
                Some(blob(&i.to_string())),
            );
        }
        tree.write(&mut all);
        let mut written = 0;
        let mut count = |k: ObjectKind, d: &[u8]| {
            written += 1;
            ObjectId::hash(k, d)
        };
        tree.set(&EntityPath::of(Kind::Edge, "e:17"), Some(blob("new")));
        tree.write(&mut count);
        // root, edges/, three fan-out levels and the leaf.
        assert_eq!(written, 1 + FAN_LEVELS + 1);
    }
}
