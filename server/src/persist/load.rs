//! Loading every graph back from git on start.
//!
//! For each ref `refs/gitmind/graphs/{graph}`: the newest commit's trailers
//! give `seq` and epoch; its tree gives every node and edge (and the
//! in-memory tree later commits build on); the journals of the newest
//! commits, walking first parents back, give the replay window.
//!
//! The tree must have exactly the layout `layout` describes: a stray entry
//! or a file that does not parse is damage, reported with its path, and the
//! server does not start on a damaged graph. A damaged journal only shortens
//! the replay window (the changes are in the tree): loading warns and keeps
//! the newer, intact part.

use std::sync::Arc;

use git2::{Odb, OdbObject, Oid, Repository};
use gitmind_schema::model::{Edge, Node};

use super::commit::{GraphState, REF_PREFIX};
use super::journal;
use super::layout::{is_entity_name, Kind, FANOUT_LEVELS};
use super::object::{parse_tree, ObjectId};
use super::tree::{Dir, GraphTree};
use super::{LoadError, PersistConfig};
use gitmind_owner::change::{ChangeRecord, Restored};

/// Loads every graph of the repository.
///
/// # Errors
/// A graph that cannot be read or is damaged.
pub fn load_all(
    repo: &Repository,
    config: &PersistConfig,
) -> Result<Vec<(Restored, GraphState)>, LoadError> {
    let mut out = Vec::new();
    for (name, tip) in graph_refs(repo)? {
        out.push(load_graph(repo, &name, tip, config)?);
    }
    Ok(out)
}

/// Every graph's name and tip commit, sorted by name.
///
/// # Errors
/// The refs cannot be read.
pub fn graph_refs(repo: &Repository) -> Result<Vec<(String, Oid)>, LoadError> {
    let mut out = Vec::new();
    for r in repo.references_glob(&format!("{REF_PREFIX}*"))? {
        let r = r?;
        let Some(name) = r.name().ok().and_then(|n| n.strip_prefix(REF_PREFIX)) else {
            continue;
        };
        let name = name.to_owned();
        let tip = r
            .resolve()?
            .target()
            .ok_or_else(|| LoadError::corrupt(&name, "ref has no target"))?;
        out.push((name, tip));
    }
    out.sort();
    Ok(out)
}

/// Loads one graph from its tip commit.
///
/// # Errors
/// The graph cannot be read or is damaged.
pub fn load_graph(
    repo: &Repository,
    graph: &str,
    tip: Oid,
    config: &PersistConfig,
) -> Result<(Restored, GraphState), LoadError> {
    let started = std::time::Instant::now();
    let commit = repo.find_commit(tip)?;
    let message = std::str::from_utf8(commit.message_raw_bytes())
        .map_err(|_| LoadError::corrupt(graph, format!("commit {tip} message is not UTF-8")))?;
    let parsed = journal::parse_message(message)
        .map_err(|e| LoadError::corrupt(graph, format!("commit {tip}: {e}")))?;
    let (seq, epoch) = (parsed.seq_to, parsed.epoch.to_owned());
    // The tree (every blob) and the journal (the newest commits' messages)
    // are independent: read them on two cores, each with its own handle.
    let path = repo.path().to_owned();
    let epoch_ref = epoch.as_str();
    let (tree, journal) = std::thread::scope(|s| {
        let journal = s.spawn(move || {
            let t = std::time::Instant::now();
            let second = Repository::open_bare(&path)?;
            load_journal(&second, graph, tip, epoch_ref, config).map(|j| (j, t.elapsed()))
        });
        let t = std::time::Instant::now();
        let tree = repo
            .odb()
            .map_err(LoadError::from)
            .and_then(|odb| load_tree(&odb, graph, commit.tree_id()))
            .map(|tree| (tree, t.elapsed()));
        (tree, journal.join())
    });
    let ((tree, nodes, edges), tree_time) = tree?;
    let (journal, journal_time) =
        journal.map_err(|_| LoadError::corrupt(graph, "reading the journal panicked"))??;
    tracing::info!(
        graph,
        seq,
        nodes = nodes.len(),
        edges = edges.len(),
        journal = journal.len(),
        tree_ms = tree_time.as_millis() as u64,
        journal_ms = journal_time.as_millis() as u64,
        ms = started.elapsed().as_millis() as u64,
        "graph loaded"
    );
    let state = GraphState {
        tree,
        seq,
        tip: ObjectId::from_oid(tip),
        epoch: epoch.clone(),
        ..GraphState::new(graph, &epoch)
    };
    Ok((
        Restored {
            graph: graph.to_owned(),
            epoch,
            seq,
            nodes,
            edges,
            journal,
        },
        state,
    ))
}

/// Reads a tree: the in-memory tree, every node and every edge.
///
/// # Errors
/// An object is missing, or the tree does not have the expected layout.
pub fn load_tree(
    odb: &Odb<'_>,
    graph: &str,
    root: Oid,
) -> Result<(GraphTree, Vec<Node>, Vec<Edge>), LoadError> {
    let mut loader = Loader {
        odb,
        graph,
        nodes: Vec::new(),
        edges: Vec::new(),
        path: String::new(),
    };
    let data = loader.read(root, git2::ObjectType::Tree)?;
    let entries = parse_tree(data.data()).map_err(|e| loader.damage(&e))?;
    let (mut nodes, mut edges) = (None, None);
    for e in entries {
        let kind = match e.name {
            b"nodes" if e.is_tree => Kind::Node,
            b"edges" if e.is_tree => Kind::Edge,
            other => {
                return Err(loader.damage(&format!(
                    "unexpected entry `{}` at the root",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        loader.path = kind.folder().to_owned();
        let dir = loader.dir(e.id.to_oid(), kind, FANOUT_LEVELS)?;
        match kind {
            Kind::Node => nodes = Some(dir),
            Kind::Edge => edges = Some(dir),
        }
    }
    let root_id =
        ObjectId::from_oid(root).ok_or_else(|| loader.damage("root is not a SHA-1 id"))?;
    Ok((
        GraphTree::from_parts(root_id, nodes, edges),
        loader.nodes,
        loader.edges,
    ))
}

/// Walks a tree, collecting entities.
struct Loader<'a, 'r> {
    odb: &'a Odb<'r>,
    graph: &'a str,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    /// The folder being read, for messages.
    path: String,
}

impl<'a> Loader<'a, '_> {
    fn damage(&self, detail: &str) -> LoadError {
        LoadError::corrupt(
            self.graph,
            format!(
                "{}: {detail}",
                if self.path.is_empty() {
                    "/"
                } else {
                    &self.path
                }
            ),
        )
    }

    fn read(&self, id: Oid, kind: git2::ObjectType) -> Result<OdbObject<'a>, LoadError> {
        let obj = self
            .odb
            .read(id)
            .map_err(|e| self.damage(&format!("object {id}: {}", e.message())))?;
        if obj.kind() != kind {
            return Err(self.damage(&format!("object {id} is a {}, not a {kind}", obj.kind())));
        }
        Ok(obj)
    }

    /// Reads a folder with `levels` fan-out levels left above its leaves.
    fn dir(&mut self, id: Oid, kind: Kind, levels: usize) -> Result<Arc<Dir>, LoadError> {
        let data = self.read(id, git2::ObjectType::Tree)?;
        let entries = parse_tree(data.data()).map_err(|e| self.damage(&e))?;
        let own = ObjectId::from_oid(id);
        if levels == 0 {
            let mut files = Vec::with_capacity(entries.len());
            for e in entries {
                let name = std::str::from_utf8(e.name)
                    .ok()
                    .filter(|n| e.is_file && is_entity_name(n.as_bytes()));
                let Some(name) = name else {
                    return Err(self.damage(&format!(
                        "unexpected entry `{}`",
                        String::from_utf8_lossy(e.name)
                    )));
                };
                let blob = self.read(e.id.to_oid(), git2::ObjectType::Blob)?;
                match kind {
                    Kind::Node => {
                        let node: Node = serde_json::from_slice(blob.data())
                            .map_err(|err| self.damage(&format!("{name}: not a node: {err}")))?;
                        self.nodes.push(node);
                    }
                    Kind::Edge => {
                        let mut edge: Edge = serde_json::from_slice(blob.data())
                            .map_err(|err| self.damage(&format!("{name}: not an edge: {err}")))?;
                        if edge.id.is_none() {
                            edge.id =
                                Some(Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
                        }
                        self.edges.push(edge);
                    }
                }
                files.push((Box::<str>::from(name), e.id));
            }
            if !files.is_sorted_by(|a, b| a.0 < b.0) {
                return Err(self.damage("entries are not in git order"));
            }
            return Ok(Arc::new(Dir::Leaf {
                id: own,
                entries: files,
            }));
        }
        let mut kids: [Option<Arc<Dir>>; 16] = Default::default();
        let depth = self.path.len();
        for e in entries {
            let digit = match e.name {
                [c] if e.is_tree => char::from(*c)
                    .to_digit(16)
                    .filter(|_| !c.is_ascii_uppercase()),
                _ => None,
            };
            let Some(digit) = digit else {
                return Err(self.damage(&format!(
                    "unexpected entry `{}`",
                    String::from_utf8_lossy(e.name)
                )));
            };
            self.path.push('/');
            self.path.push(char::from(e.name[0]));
            kids[digit as usize] = Some(self.dir(e.id.to_oid(), kind, levels - 1)?);
            self.path.truncate(depth);
        }
        Ok(Arc::new(Dir::Fan { id: own, kids }))
    }
}

/// Reads the replay window: the journals of the newest commits of the
/// same epoch, until both `replay_changes` changes and `replay_ms`
/// milliseconds before the newest change are covered (docs/protocol.md 6:
/// "whichever is more"). Time is measured from the newest change, not
/// from now, so a server that was down keeps its last window.
///
/// # Errors
/// A commit cannot be read at all.
pub fn load_journal(
    repo: &Repository,
    graph: &str,
    tip: Oid,
    epoch: &str,
    config: &PersistConfig,
) -> Result<Vec<ChangeRecord>, LoadError> {
    let mut newest_first: Vec<Vec<ChangeRecord>> = Vec::new();
    let mut count = 0usize;
    let mut newest_at: Option<u64> = None;
    let mut cursor = Some(tip);
    'walk: while let Some(id) = cursor {
        let commit = repo.find_commit(id)?;
        let Ok(message) = std::str::from_utf8(commit.message_raw_bytes()) else {
            tracing::warn!(graph, commit = %id, "journal message is not UTF-8; replay window ends here");
            break;
        };
        let parsed = match journal::parse_message(message) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(graph, commit = %id, error = %e, "journal unreadable; replay window ends here");
                break;
            }
        };
        if parsed.epoch != epoch {
            break;
        }
        let hex = id.to_string();
        let mut records = Vec::with_capacity(parsed.lines.len());
        for (i, line) in parsed.lines.iter().enumerate() {
            match journal::decode_line(line) {
                Ok(entry) if entry.record.seq == parsed.seq_from + i as u64 => {
                    let mut record = entry.record;
                    record.fill_commit(&hex);
                    records.push(record);
                }
                Ok(entry) => {
                    tracing::warn!(graph, commit = %id, seq = entry.record.seq, "journal out of order; replay window ends here");
                    break 'walk;
                }
                Err(e) => {
                    tracing::warn!(graph, commit = %id, error = %e, "journal line unreadable; replay window ends here");
                    break 'walk;
                }
            }
        }
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            break;
        };
        let newest = *newest_at.get_or_insert(last.at_ms);
        let oldest = first.at_ms;
        count += records.len();
        newest_first.push(records);
        if count >= config.replay_changes && newest.saturating_sub(oldest) > config.replay_ms {
            break;
        }
        cursor = commit.parent_id(0).ok();
    }
    let mut all: Vec<ChangeRecord> = newest_first.into_iter().rev().flatten().collect();
    // Trim the oldest commit's extra changes: keep the last `replay_changes`
    // and everything within `replay_ms` of the newest.
    let newest = newest_at.unwrap_or(0);
    let keep_from = all.len().saturating_sub(config.replay_changes);
    let first_kept = all
        .iter()
        .position(|r| newest.saturating_sub(r.at_ms) <= config.replay_ms)
        .map_or(keep_from, |p| p.min(keep_from));
    all.drain(..first_kept);
    Ok(all)
}
