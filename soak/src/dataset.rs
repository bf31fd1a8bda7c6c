//! The starting graph: Debian's package index from `../shared/datasets/`,
//! all of it or a connected slice of it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context as _};
use gitmind_schema::model::{Edge, Node};

/// Nodes and edges, each with the size of its JSON line (for batching).
pub struct Slice {
    /// The nodes, in the file's order.
    pub nodes: Vec<(Node, usize)>,
    /// The edges between them, in the file's order.
    pub edges: Vec<(Edge, usize)>,
}

/// Reads the dataset (JSON Lines, zstd-compressed when it ends in `.zst`).
/// With `max_nodes` 0 it is all of it; otherwise the edges are walked in
/// order, taking each one whose nodes still fit, so the slice keeps the
/// real graph's shape (hubs like `libc6` and their dependants) rather than
/// a run of unconnected names.
///
/// # Errors
/// The file cannot be read or a line is not a node or an edge.
pub fn read(path: &Path, max_nodes: usize) -> anyhow::Result<Slice> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(BufReader::new(zstd::stream::read::Decoder::new(file)?))
    } else {
        Box::new(BufReader::new(file))
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        node: Option<Node>,
        edge: Option<Edge>,
    }
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", path.display(), number + 1))?;
        match (parsed.node, parsed.edge) {
            (Some(node), None) => nodes.push((node, line.len())),
            (None, Some(edge)) => edges.push((edge, line.len())),
            _ => bail!(
                "{} line {}: not a node or an edge",
                path.display(),
                number + 1
            ),
        }
    }
    if max_nodes == 0 || nodes.len() <= max_nodes {
        return Ok(Slice { nodes, edges });
    }
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.id.as_str(), i))
        .collect();
    let mut chosen = vec![false; nodes.len()];
    let mut count = 0;
    let mut kept = Vec::new();
    for (i, (edge, _)) in edges.iter().enumerate() {
        let (Some(&s), Some(&t)) = (
            index.get(edge.source.as_str()),
            index.get(edge.target.as_str()),
        ) else {
            continue;
        };
        let new = usize::from(!chosen[s]) + usize::from(!chosen[t] && s != t);
        if count + new <= max_nodes {
            count += new;
            chosen[s] = true;
            chosen[t] = true;
            kept.push(i);
        }
    }
    // Too few edges to fill the slice: the next nodes, unconnected.
    for c in chosen.iter_mut() {
        if count == max_nodes {
            break;
        }
        if !*c {
            *c = true;
            count += 1;
        }
    }
    let edges = {
        let mut keep = kept.into_iter().peekable();
        edges
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.next_if_eq(i).is_some())
            .map(|(_, e)| e)
            .collect()
    };
    let nodes = nodes
        .into_iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(n, _)| n)
        .collect();
    Ok(Slice { nodes, edges })
}
