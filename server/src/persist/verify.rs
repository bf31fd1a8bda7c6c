//! Checking a data directory offline: every graph loads, every file is
//! where and what this version writes, and each commit's journal agrees
//! with its tree.
//!
//! For every commit on a graph's history: it has one parent at most (the
//! history is one chain); the message parses;
//! `seq` continues from the parent's within an epoch; every journal line
//! decodes; and the tree changed exactly as the journal says: the final
//! write of each entity in the journal is the blob at its path in the
//! commit's tree (or its absence), and no other file changed from the
//! parent's tree.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use git2::{Delta, Oid, Repository, Tree};

use super::commit::{edge_json, node_json};
use super::journal;
use super::layout::{EntityPath, Kind};
use super::load::{graph_refs, load_graph};
use super::object::{ObjectId, ObjectKind};
use super::{LoadError, PersistConfig, VerifyError};

/// What `verify` found in a sound repository.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// One entry per graph, by name.
    pub graphs: Vec<GraphReport>,
}

/// One graph, as verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphReport {
    /// Its name.
    pub graph: String,
    /// Its epoch.
    pub epoch: String,
    /// Its last `seq`.
    pub seq: u64,
    /// Nodes in its tree.
    pub nodes: usize,
    /// Edges in its tree.
    pub edges: usize,
    /// Commits checked.
    pub commits: usize,
    /// Journal lines checked.
    pub changes: u64,
}

/// Verifies the repository in `data_dir` (read only).
///
/// # Errors
/// [`VerifyError::Open`] when there is no repository;
/// [`VerifyError::Inconsistent`] with every problem found otherwise.
pub fn verify(data_dir: &Path) -> Result<VerifyReport, VerifyError> {
    // Every object read is hashed again (see `Persister::start`).
    git2::opts::strict_hash_verification(true);
    let (repo, config) = super::open_for_reading(data_dir)?;
    let mut problems = Vec::new();
    let mut report = VerifyReport::default();
    for (graph, tip) in graph_refs(&repo)? {
        let mut p = Vec::new();
        match check_graph(&repo, &graph, tip, &config, &mut p) {
            Ok(r) => report.graphs.push(r),
            Err(e) => p.push(e.to_string()),
        }
        problems.extend(p.into_iter().map(|m| format!("{graph}: {m}")));
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(VerifyError::Inconsistent { problems })
    }
}

fn check_graph(
    repo: &Repository,
    graph: &str,
    tip: Oid,
    config: &PersistConfig,
    problems: &mut Vec<String>,
) -> Result<GraphReport, LoadError> {
    let (restored, _) = load_graph(repo, graph, tip, config)?;
    let mut report = GraphReport {
        graph: graph.to_owned(),
        epoch: restored.epoch.clone(),
        seq: restored.seq,
        nodes: restored.nodes.len(),
        edges: restored.edges.len(),
        ..GraphReport::default()
    };

    // Every entity is at its own path with its canonical content, once.
    let mut expected: BTreeMap<String, ObjectId> = BTreeMap::new();
    let mut scratch = Vec::new();
    let mut node_ids = HashSet::new();
    for node in &restored.nodes {
        let bytes = node_json(node, &mut scratch).map_err(|e| LoadError::corrupt(graph, e))?;
        expected.insert(
            EntityPath::of(Kind::Node, &node.id).to_path(),
            ObjectId::hash(ObjectKind::Blob, bytes),
        );
        node_ids.insert(node.id.as_str());
    }
    for edge in &restored.edges {
        let id = edge.id.clone().unwrap_or_default();
        let bytes = edge_json(edge, &id, &mut scratch).map_err(|e| LoadError::corrupt(graph, e))?;
        expected.insert(
            EntityPath::of(Kind::Edge, &id).to_path(),
            ObjectId::hash(ObjectKind::Blob, bytes),
        );
        for end in [&edge.source, &edge.target] {
            if !node_ids.contains(end.as_str()) {
                problems.push(format!("edge `{id}` points at missing node `{end}`"));
            }
        }
    }
    let commit = repo.find_commit(tip)?;
    let actual = files_of(&commit.tree()?)?;
    for (path, blob) in &actual {
        match expected.get(path) {
            Some(e) if e == blob => {}
            Some(_) => problems.push(format!("{path} is not in canonical form")),
            None => problems.push(format!(
                "{path} is not where its id puts it (or duplicates another file)"
            )),
        }
    }
    if actual.len() != expected.len() {
        problems.push(format!(
            "{} files for {} entities",
            actual.len(),
            expected.len()
        ));
    }

    // History: the journal explains every change of the tree.
    let mut cursor = Some(tip);
    let mut newer: Option<(u64, String)> = None;
    while let Some(id) = cursor {
        let commit = repo.find_commit(id)?;
        let parent = commit.parent_id(0).ok();
        if commit.parent_count() > 1 {
            // The server never merges: a graph's history is one chain.
            problems.push(format!(
                "commit {id} has {} parents: the history is not one chain",
                commit.parent_count()
            ));
        }
        let message = String::from_utf8_lossy(commit.message_raw_bytes()).into_owned();
        let parsed = match journal::parse_message(&message) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("commit {id}: {e}"));
                cursor = parent;
                continue;
            }
        };
        if let Some((from, epoch)) = &newer {
            if epoch == parsed.epoch && parsed.seq_to + 1 != *from {
                problems.push(format!(
                    "commit {id} ends at seq {} but the next starts at {from}",
                    parsed.seq_to
                ));
            }
        }
        newer = Some((parsed.seq_from, parsed.epoch.to_owned()));
        let mut last_write: BTreeMap<String, Option<ObjectId>> = BTreeMap::new();
        for (i, line) in parsed.lines.iter().enumerate() {
            match journal::decode_line(line) {
                Ok(entry) => {
                    if entry.record.seq != parsed.seq_from + i as u64 {
                        problems.push(format!(
                            "commit {id}: journal line {i} has seq {}",
                            entry.record.seq
                        ));
                    }
                    for w in entry.writes {
                        last_write.insert(EntityPath::of(w.kind, &w.id).to_path(), w.blob);
                    }
                }
                Err(e) => problems.push(format!("commit {id}: {e}")),
            }
            report.changes += 1;
        }
        let new_tree = commit.tree()?;
        let old_tree = match parent {
            Some(p) => Some(repo.find_commit(p)?.tree()?),
            None => None,
        };
        let diff = repo.diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)?;
        let mut changed: BTreeMap<String, Option<ObjectId>> = BTreeMap::new();
        for delta in diff.deltas() {
            let Some(path) = delta.new_file().path().or(delta.old_file().path()) else {
                continue;
            };
            let path = path.to_string_lossy().into_owned();
            let now = match delta.status() {
                Delta::Deleted => None,
                _ => ObjectId::from_oid(delta.new_file().id()),
            };
            changed.insert(path, now);
        }
        for (path, now) in &changed {
            if last_write.get(path) != Some(now) {
                problems.push(format!(
                    "commit {id} changed {path} but its journal does not say so"
                ));
            }
        }
        for (path, wrote) in &last_write {
            if changed.contains_key(path) {
                continue;
            }
            let before = match &old_tree {
                Some(t) => t
                    .get_path(Path::new(path))
                    .ok()
                    .and_then(|e| ObjectId::from_oid(e.id())),
                None => None,
            };
            if before != *wrote {
                problems.push(format!(
                    "commit {id}: the journal writes {path} but the tree does not hold it"
                ));
            }
        }
        report.commits += 1;
        cursor = parent;
    }
    Ok(report)
}

/// Every file of a tree: path and blob id.
fn files_of(tree: &Tree<'_>) -> Result<BTreeMap<String, ObjectId>, LoadError> {
    let mut out = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            if let (Some(name), Some(id)) = (entry.name().ok(), ObjectId::from_oid(entry.id())) {
                out.insert(format!("{root}{name}"), id);
            }
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(out)
}
