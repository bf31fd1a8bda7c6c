//! The starting graph: Debian's package index from `../shared/datasets/`,
//! all of it or a connected slice of it.

use std::collections::HashMap;
use std::path::Path;

use gitmind_client::dataset::{DatasetError, Item, Reader};
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
pub fn read(path: &Path, max_nodes: usize) -> Result<Slice, DatasetError> {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for line in Reader::open(path)? {
        let line = line?;
        match line.item {
            Item::Node(node) => nodes.push((node, line.len)),
            Item::Edge(edge) => edges.push((edge, line.len)),
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
