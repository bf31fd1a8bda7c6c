//! Turning a graph's ordered changes into git objects: blobs for the
//! entities they wrote, the folders on their paths, and one commit.
//!
//! Nothing here touches the disk: the objects go into a [`PackWriter`], and
//! the graph's committed state is only replaced once the pack is durable and
//! the ref moved (see the thread in `mod.rs`).

use std::sync::Arc;

use gitmind_schema::model::{Edge, Node};

use super::journal::{self, JournalWrite};
use super::layout::{EntityPath, Kind};
use super::object::{commit_bytes, ObjectId, ObjectKind};
use super::pack::PackWriter;
use super::tree::GraphTree;
use gitmind_owner::change::{ChangeRecord, Write};

/// The prefix of every graph's ref.
pub const REF_PREFIX: &str = "refs/gitmind/graphs/";

/// What persistence knows of one graph: its committed state.
#[derive(Debug, Clone)]
pub struct GraphState {
    /// The graph's name.
    pub name: String,
    /// `refs/gitmind/graphs/{name}`.
    pub refname: String,
    /// The epoch of its last commit.
    pub epoch: String,
    /// The last committed `seq` (0: none).
    pub seq: u64,
    /// The commit the ref points at.
    pub tip: Option<ObjectId>,
    /// The committed tree.
    pub tree: GraphTree,
    /// Set when changes from this `seq` on failed: groups that were handed
    /// over before the owner rolled them back are dropped until one starts
    /// at `seq + 1` again.
    pub failed_from: Option<u64>,
}

impl GraphState {
    /// A graph with nothing committed yet.
    pub fn new(name: &str, epoch: &str) -> GraphState {
        GraphState {
            name: name.to_owned(),
            refname: format!("{REF_PREFIX}{name}"),
            epoch: epoch.to_owned(),
            seq: 0,
            tip: None,
            tree: GraphTree::default(),
            failed_from: None,
        }
    }
}

/// Consecutive changes of one epoch that go into one commit.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The epoch they belong to.
    pub epoch: String,
    /// The changes, oldest first, consecutive `seq`.
    pub changes: Vec<Arc<ChangeRecord>>,
}

/// The commits built for one graph in one round, not yet durable.
#[derive(Debug)]
pub struct Built {
    /// Per commit: the last `seq` it holds and its id, oldest first.
    pub commits: Vec<(u64, ObjectId)>,
    /// The tree after the last commit.
    pub tree: GraphTree,
    /// The epoch of the last commit.
    pub epoch: String,
    /// How many changes the commits hold.
    pub changes: u64,
}

/// Builds one commit per chunk, chained on the graph's tip, into `pack`.
///
/// # Errors
/// A message when a change cannot be written (an empty id, an entity that
/// does not serialize); nothing of the graph's state has changed then.
pub fn build(state: &GraphState, chunks: &[Chunk], pack: &mut PackWriter) -> Result<Built, String> {
    let mut tree = state.tree.clone();
    let mut parent = state.tip;
    let mut commits = Vec::with_capacity(chunks.len());
    let mut changes = 0u64;
    let mut scratch = Vec::with_capacity(4096);
    let mut epoch = state.epoch.clone();
    for chunk in chunks {
        let (Some(first), Some(last)) = (chunk.changes.first(), chunk.changes.last()) else {
            continue;
        };
        let mut journal_text = String::with_capacity(chunk.changes.len() * 512);
        let mut writes = Vec::new();
        for change in &chunk.changes {
            writes.clear();
            for w in &change.writes {
                writes.push(apply_write(w, &mut tree, pack, &mut scratch)?);
            }
            journal::push_line(&mut journal_text, change, &writes);
            journal_text.push('\n');
        }
        let root = tree.write(&mut |kind, data| pack.add(kind, data));
        let message = journal::message(
            &journal::summary(&chunk.changes),
            &journal_text,
            first.seq,
            last.seq,
            &chunk.epoch,
        );
        let bytes = commit_bytes(
            &root,
            parent.as_ref(),
            &first.user_id,
            last.at_ms / 1000,
            &message,
        );
        let id = pack.add(ObjectKind::Commit, &bytes);
        commits.push((last.seq, id));
        parent = Some(id);
        changes += chunk.changes.len() as u64;
        epoch.clone_from(&chunk.epoch);
    }
    Ok(Built {
        commits,
        tree,
        epoch,
        changes,
    })
}

/// Writes one entity's new state (or its removal) into the tree.
fn apply_write(
    w: &Write,
    tree: &mut GraphTree,
    pack: &mut PackWriter,
    scratch: &mut Vec<u8>,
) -> Result<JournalWrite, String> {
    let (kind, id, blob) = match w {
        Write::Node(node) => {
            check_id(&node.id)?;
            let blob = pack.add(ObjectKind::Blob, node_json(node, scratch)?);
            (Kind::Node, node.id.clone(), Some(blob))
        }
        Write::NodeDeleted(id) => (Kind::Node, id.clone(), None),
        Write::Edge(edge) => {
            let id = edge
                .id
                .clone()
                .unwrap_or_else(|| Edge::make_id(&edge.source, &edge.edge_type, &edge.target));
            check_id(&id)?;
            let blob = pack.add(ObjectKind::Blob, edge_json(edge, &id, scratch)?);
            (Kind::Edge, id, Some(blob))
        }
        Write::EdgeDeleted(id) => (Kind::Edge, id.clone(), None),
    };
    check_id(&id)?;
    tree.set(&EntityPath::of(kind, &id), blob);
    Ok(JournalWrite { kind, id, blob })
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("an entity with an empty id cannot be stored".to_owned());
    }
    Ok(())
}

/// The canonical file content of a node: pretty JSON, fields in a fixed
/// order, props sorted, a final newline (so `git diff` shows one changed
/// field as one changed line).
pub fn node_json<'a>(node: &Node, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
    scratch.clear();
    serde_json::to_writer_pretty(&mut *scratch, node)
        .map_err(|e| format!("node {} does not serialize: {e}", node.id))?;
    scratch.push(b'\n');
    Ok(scratch)
}

/// The canonical file content of an edge, its `id` always set.
pub fn edge_json<'a>(edge: &Edge, id: &str, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
    scratch.clear();
    let result = if edge.id.is_some() {
        serde_json::to_writer_pretty(&mut *scratch, edge)
    } else {
        let with_id = Edge {
            id: Some(id.to_owned()),
            ..edge.clone()
        };
        serde_json::to_writer_pretty(&mut *scratch, &with_id)
    };
    result.map_err(|e| format!("edge {id} does not serialize: {e}"))?;
    scratch.push(b'\n');
    Ok(scratch)
}
