//! The server's modules depend on each other one way only (no cycles), and
//! `docs/architecture.md` shows the graph as it is.
//!
//! A module's dependencies are the `crate::name` paths in its files
//! (`src/name.rs` or `src/name/`), tests and comments included: a cycle
//! anywhere is one a reader has to untangle.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules of `src/` and the modules each one names.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "main"].contains(&name.as_str()) {
            continue;
        }
        let mut text = String::new();
        if path.is_dir() {
            for file in std::fs::read_dir(&path).unwrap() {
                text += &std::fs::read_to_string(file.unwrap().path()).unwrap();
            }
        } else {
            text = std::fs::read_to_string(&path).unwrap();
        }
        let uses = graph.entry(name.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let used: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !used.is_empty() && used != name {
                uses.insert(used);
            }
        }
        // `use crate::{a, b}` groups.
        for (at, _) in text.match_indices("crate::{") {
            let rest = &text[at + "crate::{".len()..];
            let group = &rest[..rest.find('}').unwrap_or(0)];
            for item in group.split(',') {
                let used = item.trim().split("::").next().unwrap_or("").trim();
                if !used.is_empty()
                    && used != name
                    && used.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    uses.insert(used.to_owned());
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The graph as `docs/architecture.md` lists it: one line per module,
/// `module -> dependency, dependency`.
fn render(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(module, uses)| {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            if uses.is_empty() {
                format!("{module}\n")
            } else {
                format!("{module} -> {}\n", uses.join(", "))
            }
        })
        .collect()
}

#[test]
fn the_server_modules_have_no_cycle_and_the_docs_show_their_graph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = module_graph(&root.join("src"));
    assert!(graph.len() > 10, "found the modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
    let docs = std::fs::read_to_string(root.join("../docs/architecture.md")).unwrap();
    let listed = docs
        .split("<!-- module graph -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/architecture.md has the module graph block");
    assert_eq!(
        listed,
        render(&graph),
        "docs/architecture.md's module graph is out of date; the graph is:\n{}",
        render(&graph)
    );
}

#[test]
fn a_cycle_is_found() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&graph).unwrap().len(), 4);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}
