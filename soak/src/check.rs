//! The end of a run: every client's replica equals the server's graph, the
//! server's graph equals what git holds, and every change the server
//! confirmed is in the git history, in the commit and at the `seq` it was
//! confirmed with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use gitmind_client::{Client, State};
use gitmind_schema::model::{Edge, Node, PropValue};
use gitmind_server::persist::{self, journal};
use serde::Deserialize;
use tokio::time::Instant;

use crate::load::{counter_id, WriterReport};

/// Problems past this many are counted, not listed.
const LIST: usize = 20;

/// The server's committed graph (`GET /v1/graphs/{graph}`).
#[derive(Debug, Deserialize)]
pub struct Snapshot {
    /// Its epoch.
    pub epoch: String,
    /// Its last `seq`.
    pub seq: u64,
    /// Every node, sorted by id.
    pub nodes: Vec<Node>,
    /// Every edge, sorted by id.
    pub edges: Vec<Edge>,
}

/// What the checks found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Findings {
    /// Each problem, in words (the first few of each kind).
    pub problems: Vec<String>,
    /// Applied changes not found in git where their outcome said.
    pub lost: u64,
    /// Clients whose replica differs from the server's graph.
    pub diverged: u64,
    /// Commits in the graph's history.
    pub commits: u64,
}

impl Findings {
    fn problem(&mut self, text: String) {
        if self.problems.len() < LIST {
            self.problems.push(text);
        } else if self.problems.len() == LIST {
            self.problems.push("(more problems not listed)".into());
        }
    }
}

/// Fetches the server's committed graph.
///
/// # Errors
/// The request failed or the answer is not a snapshot.
pub async fn snapshot(addr: SocketAddr, graph: &str) -> anyhow::Result<Snapshot> {
    let body = gitmind_bench::metrics::get(addr, &format!("/v1/graphs/{graph}")).await?;
    let mut snapshot: Snapshot =
        serde_json::from_str(&body).context("the snapshot is not {epoch, seq, nodes, edges}")?;
    snapshot.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    snapshot.edges.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(snapshot)
}

/// Waits (up to `wait`) for every client to be connected, in sync with
/// `snapshot` and with nothing pending, then compares its replica with it.
pub async fn replicas(clients: &[Client], snapshot: &Snapshot, wait: Duration, out: &mut Findings) {
    let deadline = Instant::now() + wait;
    for (i, client) in clients.iter().enumerate() {
        let settled = || {
            let connected = matches!(*client.state().borrow(), State::Connected { .. });
            let replica = client.replica();
            connected && replica.server_seq() >= snapshot.seq && replica.pending_count() == 0
        };
        while !settled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let replica = client.replica();
        let (user, _) = client.identity();
        if replica.server_seq() != snapshot.seq || replica.pending_count() != 0 {
            out.diverged += 1;
            out.problem(format!(
                "client {i} ({user}) did not settle: at seq {} of {}, {} pending, {:?}",
                replica.server_seq(),
                snapshot.seq,
                replica.pending_count(),
                *client.state().borrow()
            ));
            continue;
        }
        let mut seen: Vec<&Node> = replica.nodes().collect();
        seen.sort_by(|a, b| a.id.cmp(&b.id));
        let shown = difference("shown node", &seen, &snapshot.nodes, |n| &n.id);
        let differences =
            graph_differences(replica.server_nodes(), replica.server_edges(), snapshot);
        if let Some(d) = differences.into_iter().chain([shown]).flatten().next() {
            out.diverged += 1;
            out.problem(format!("client {i} ({user}): {d}"));
        }
    }
}

/// The first difference in the nodes and the first in the edges between
/// `nodes` and `edges` (in any order) and `snapshot`.
fn graph_differences<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    edges: impl Iterator<Item = &'a Edge>,
    snapshot: &Snapshot,
) -> [Option<String>; 2] {
    let mut nodes: Vec<&Node> = nodes.collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let mut edges: Vec<&Edge> = edges.collect();
    edges.sort_by(|a, b| a.id.cmp(&b.id));
    [
        difference("node", &nodes, &snapshot.nodes, |n| &n.id),
        difference("edge", &edges, &snapshot.edges, |e| {
            e.id.as_deref().unwrap_or("")
        }),
    ]
}

/// The first difference between a replica's entities and the server's, both
/// sorted by id.
fn difference<T: PartialEq + serde::Serialize>(
    what: &str,
    ours: &[&T],
    theirs: &[T],
    id: impl Fn(&T) -> &str,
) -> Option<String> {
    if ours.len() != theirs.len() {
        return Some(format!(
            "{} {what}s, the server has {}",
            ours.len(),
            theirs.len()
        ));
    }
    let (a, b) = ours.iter().zip(theirs).find(|(a, b)| **a != *b)?;
    // Name the fields that differ, each value cut short.
    let fields = |x: &T| match serde_json::to_value(x) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (fa, fb) = (fields(a), fields(b));
    let short = |v: Option<&serde_json::Value>| {
        let text = v.map_or("(none)".to_owned(), ToString::to_string);
        text.chars().take(160).collect::<String>()
    };
    let differing: Vec<String> = fa
        .keys()
        .chain(fb.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| format!("{k}: {} vs {}", short(fa.get(k)), short(fb.get(k))))
        .collect();
    Some(format!(
        "{what} {} differs ({})",
        id(a),
        differing.join("; ")
    ))
}

/// Checks the repository of a stopped server: it verifies (unless
/// `verify` is false); the graph at the
/// tip equals `snapshot`; its history holds every seq from 1 to the last
/// exactly once, and each mutation (user and id) once; and every change a writer saw applied is in it, at its
/// seq, in its commit, under its mutation id; each writer's counter holds
/// its last confirmed value.
///
/// # Errors
/// The repository cannot be opened or read.
pub fn git(
    data_dir: &Path,
    graph: &str,
    snapshot: &Snapshot,
    writers: &[WriterReport],
    verify: bool,
    out: &mut Findings,
) -> anyhow::Result<()> {
    if let Err(e) = verify.then(|| persist::verify(data_dir)).transpose() {
        out.problem(format!("the repository does not verify: {e}"));
    }
    let stored = persist::read_graph(data_dir, graph)?
        .with_context(|| format!("git has no graph {graph}"))?;
    if stored.seq != snapshot.seq || stored.epoch != snapshot.epoch {
        out.problem(format!(
            "git is at seq {} epoch {}, the server at seq {} epoch {}",
            stored.seq, stored.epoch, snapshot.seq, snapshot.epoch
        ));
    }
    for d in graph_differences(stored.nodes.iter(), stored.edges.iter(), snapshot)
        .into_iter()
        .flatten()
    {
        out.problem(format!("git against the server: {d}"));
    }

    // The history: seq -> (commit, mutation id).
    let repo = git2::Repository::open_bare(persist::repo_path(data_dir))?;
    let tip = repo
        .find_reference(&format!("{}{graph}", persist::REF_PREFIX))?
        .peel_to_commit()?
        .id();
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    let mut history: HashMap<u64, (String, String)> = HashMap::new();
    // Each mutation once: none applied twice (a resend after a failover).
    let mut applied: HashMap<(String, String), u64> = HashMap::new();
    for oid in walk {
        let oid = oid?;
        out.commits += 1;
        let commit = repo.find_commit(oid)?;
        let message = String::from_utf8_lossy(commit.message_raw_bytes()).into_owned();
        let parsed = match journal::parse_message(&message) {
            Ok(p) => p,
            Err(e) => {
                out.problem(format!("commit {oid}: {e}"));
                continue;
            }
        };
        for line in parsed.lines {
            match journal::decode_line(line) {
                Ok(entry) => {
                    let r = entry.record;
                    let mutation = (r.user_id.clone(), r.mutation_id.clone());
                    if let Some(first) = applied.insert(mutation, r.seq) {
                        out.problem(format!(
                            "mutation {} of {} is in the history twice: seq {first} and {}",
                            r.mutation_id, r.user_id, r.seq
                        ));
                    }
                    if history
                        .insert(r.seq, (oid.to_string(), r.mutation_id))
                        .is_some()
                    {
                        out.problem(format!("seq {} is in the history twice", r.seq));
                    }
                }
                Err(e) => out.problem(format!("commit {oid}: {e}")),
            }
        }
    }
    if let Some(missing) = (1..=snapshot.seq).find(|s| !history.contains_key(s)) {
        out.problem(format!(
            "the history has {} changes for seq 1..={}; seq {missing} is missing",
            history.len(),
            snapshot.seq
        ));
    }

    for w in writers {
        for applied in &w.applied {
            match history.get(&applied.seq) {
                Some((commit, id)) if *commit == applied.commit && *id == applied.reference => {}
                found => {
                    out.lost += 1;
                    out.problem(format!(
                        "writer {}: change {} confirmed at seq {} in commit {} is not in git there (found {found:?})",
                        w.index, applied.reference, applied.seq, applied.commit
                    ));
                }
            }
        }
        let Some(&(seq, n)) = w.counter.iter().max_by_key(|(seq, _)| *seq) else {
            continue;
        };
        let id = counter_id(w.index);
        let value = snapshot
            .nodes
            .iter()
            .find(|node| node.id == id)
            .and_then(|node| node.props.as_ref()?.get("n").cloned());
        if value != Some(PropValue::Number(n as f64)) {
            out.lost += 1;
            out.problem(format!(
                "{id}: n is {value:?}, but {n} was confirmed last (seq {seq})"
            ));
        }
    }
    Ok(())
}

/// Waits (up to `wait`) for node `n` of a cluster to hold the graph at
/// `snapshot`'s seq, then compares its graph with it.
pub async fn node(
    n: usize,
    addr: SocketAddr,
    graph: &str,
    snapshot: &Snapshot,
    wait: Duration,
    out: &mut Findings,
) {
    let deadline = Instant::now() + wait;
    let theirs = loop {
        match self::snapshot(addr, graph).await {
            Ok(s) if s.seq >= snapshot.seq || Instant::now() >= deadline => break Ok(s),
            Err(e) if Instant::now() >= deadline => break Err(e),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let theirs = match theirs {
        Ok(theirs) => theirs,
        Err(e) => {
            out.diverged += 1;
            return out.problem(format!("node n{n}: no snapshot: {e:#}"));
        }
    };
    if (theirs.seq, &theirs.epoch) != (snapshot.seq, &snapshot.epoch) {
        out.diverged += 1;
        return out.problem(format!(
            "node n{n} is at seq {} epoch {}, node n0 at seq {} epoch {}",
            theirs.seq, theirs.epoch, snapshot.seq, snapshot.epoch
        ));
    }
    let differences = graph_differences(theirs.nodes.iter(), theirs.edges.iter(), snapshot);
    if let Some(d) = differences.into_iter().flatten().next() {
        out.diverged += 1;
        out.problem(format!("node n{n} against node n0: {d}"));
    }
}
