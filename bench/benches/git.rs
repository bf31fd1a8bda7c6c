//! Group commit throughput and start-up load of the git persistence layer
//! (docs/architecture.md, "Threads"; report in `perf-reports/git.md`).
//!
//! Graphs: the first 1,000 nodes of the Debian dataset, and the whole
//! dataset (63,666 nodes, 274,686 edges). One iteration submits a group of
//! N `node.update` changes (random nodes, a new label each) and waits for
//! `Committed`: the latency the owner sees. Throughput is in changes.
//!
//! One-shot figures printed before criterion runs: importing the full graph
//! (batches of 1,000 creates per change, 10 changes per commit) and loading
//! it at start (`Persister::start`, three runs).
//!
//! Set `GITMIND_BENCH_DATASET` to use another dataset file.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossbeam::channel::{unbounded, Receiver};
use gitmind_client::dataset::{Dataset, DatasetError};
use gitmind_owner::change::{ChangeRecord, Group, Write};
use gitmind_schema::message::{
    BatchOp, BatchUpdate, Body, EdgeCreate, NodeCreate, NodeUpdate, UpdateConfirmed,
};
use gitmind_schema::model::{Edge, Node, NodeSet};
use gitmind_schema::Envelope;
use gitmind_server::persist::{PersistConfig, PersistEvent, Persister};

const GROUP_SIZES: [usize; 4] = [1, 10, 100, 1_000];

/// Reads the dataset: nodes, then edges (ids set), at revision 1.
fn read_dataset() -> Result<(Vec<Node>, Vec<Edge>), DatasetError> {
    let Dataset {
        mut nodes,
        mut edges,
    } = Dataset::read(gitmind_testkit::bench_dataset())?;
    for n in &mut nodes {
        n.rev = Some(1);
    }
    for e in &mut edges {
        e.id = Some(Edge::make_id(&e.source, &e.edge_type, &e.target));
        e.rev = Some(1);
    }
    Ok((nodes, edges))
}

fn record(seq: u64, body: Body, writes: Vec<Write>) -> Arc<ChangeRecord> {
    let mut event = Envelope::new(format!("m{seq}"), body);
    event.seq = Some(seq);
    event.user_id = Some("bench".into());
    event.session_id = Some("s-1".into());
    let outcome = Envelope::new(
        format!("o{seq}"),
        Body::UpdateConfirmed(UpdateConfirmed {
            reference: format!("m{seq}"),
            seq,
            commit: String::new(),
            rev: seq,
            text: None,
        }),
    );
    Arc::new(ChangeRecord {
        seq,
        at_ms: 1_764_158_000_000 + seq,
        user_id: "bench".into(),
        session_id: "s-1".into(),
        mutation_id: format!("m{seq}"),
        event,
        outcome,
        writes,
    })
}

/// A running persister on a graph, and the owner-side state the bench needs.
struct Bench {
    persister: Option<Persister>,
    events: Receiver<PersistEvent>,
    graph: String,
    seq: u64,
    nodes: Vec<Node>,
    rng: u64,
}

impl Bench {
    fn start(dir: &Path, graph: &str, fsync: bool) -> anyhow::Result<Bench> {
        let (tx, events) = unbounded();
        let max_packs = std::env::var("GITMIND_BENCH_MAX_PACKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let (persister, restored) = Persister::start(
            PersistConfig {
                fsync,
                max_packs,
                ..PersistConfig::new(dir)
            },
            tx,
        )?;
        let r = restored
            .into_iter()
            .find(|r| r.graph == graph)
            .ok_or_else(|| anyhow::anyhow!("graph {graph} not found"))?;
        Ok(Bench {
            persister: Some(persister),
            events,
            graph: graph.into(),
            seq: r.seq,
            nodes: r.nodes,
            rng: 0x9e37_79b9_7f4a_7c15,
        })
    }

    /// Commits `changes` and waits for them.
    fn commit(&mut self, changes: Vec<Arc<ChangeRecord>>) {
        let upto = changes.last().map_or(0, |c| c.seq);
        let Some(p) = &self.persister else { return };
        p.submit(Group {
            graph: self.graph.clone(),
            epoch: "bench".into(),
            changes,
        });
        loop {
            match self.events.recv_timeout(Duration::from_secs(120)) {
                Ok(PersistEvent::Committed { upto: u, .. }) if u >= upto => return,
                Ok(PersistEvent::Committed { .. }) => {}
                Ok(PersistEvent::Failed { error, .. }) => panic!("commit failed: {error}"),
                Err(e) => panic!("no answer from persistence: {e}"),
            }
        }
    }

    /// N label updates of random nodes, with the next seqs.
    fn updates(&mut self, n: usize) -> Vec<Arc<ChangeRecord>> {
        (0..n)
            .map(|_| {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let i = (self.rng % self.nodes.len() as u64) as usize;
                self.seq += 1;
                let label = format!("label {}", self.seq);
                let node = &mut self.nodes[i];
                node.label = Some(label.clone());
                node.rev = Some(self.seq);
                node.updated_at = Some(1_764_158_000_000 + self.seq);
                let body = Body::NodeUpdate(NodeUpdate {
                    id: node.id.clone(),
                    set: Some(NodeSet {
                        label: Some(label),
                        ..NodeSet::default()
                    }),
                    rev: node.rev,
                    updated_at: node.updated_at,
                    updated_by: Some("bench".into()),
                    ..NodeUpdate::default()
                });
                record(self.seq, body, vec![Write::Node(Arc::new(node.clone()))])
            })
            .collect()
    }
}

/// Imports nodes and edges as batch changes of 1,000 creates, 10 changes
/// per group; returns the seconds it took.
fn import(
    dir: &Path,
    graph: &str,
    nodes: &[Node],
    edges: &[Edge],
    fsync: bool,
) -> anyhow::Result<f64> {
    let (tx, events) = unbounded();
    let (persister, _) = Persister::start(
        PersistConfig {
            fsync,
            ..PersistConfig::new(dir)
        },
        tx,
    )?;
    let started = Instant::now();
    let mut seq = 0u64;
    let mut group = Vec::new();
    let flush = |group: &mut Vec<Arc<ChangeRecord>>, last: bool| {
        if group.len() == 10 || (last && !group.is_empty()) {
            persister.submit(Group {
                graph: graph.into(),
                epoch: "bench".into(),
                changes: std::mem::take(group),
            });
        }
    };
    for chunk in nodes.chunks(1000) {
        seq += 1;
        let ops = chunk
            .iter()
            .map(|n| {
                BatchOp::NodeCreate(NodeCreate {
                    base_seq: None,
                    node: n.clone(),
                    commit: None,
                })
            })
            .collect();
        let writes = chunk
            .iter()
            .map(|n| Write::Node(Arc::new(n.clone())))
            .collect();
        group.push(record(
            seq,
            Body::BatchUpdate(BatchUpdate {
                base_seq: None,
                ops,
                commit: None,
            }),
            writes,
        ));
        flush(&mut group, false);
    }
    for chunk in edges.chunks(1000) {
        seq += 1;
        let ops = chunk
            .iter()
            .map(|e| {
                BatchOp::EdgeCreate(EdgeCreate {
                    base_seq: None,
                    edge: e.clone(),
                    commit: None,
                })
            })
            .collect();
        let writes = chunk
            .iter()
            .map(|e| Write::Edge(Arc::new(e.clone())))
            .collect();
        group.push(record(
            seq,
            Body::BatchUpdate(BatchUpdate {
                base_seq: None,
                ops,
                commit: None,
            }),
            writes,
        ));
        flush(&mut group, false);
    }
    flush(&mut group, true);
    loop {
        match events.recv_timeout(Duration::from_secs(600))? {
            PersistEvent::Committed { upto, .. } if upto == seq => break,
            PersistEvent::Committed { .. } => {}
            PersistEvent::Failed { error, .. } => anyhow::bail!("import failed: {error}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    persister.shutdown()?;
    Ok(secs)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_size(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

fn bench_git(c: &mut Criterion) {
    let (nodes, edges) = read_dataset().expect("the dataset (see GITMIND_BENCH_DATASET)");
    let tmp = tempfile::tempdir().expect("a temporary folder");
    // GITMIND_BENCH_KEEP=DIR: import into DIR once and reuse it (profiling).
    let base =
        std::env::var_os("GITMIND_BENCH_KEEP").map_or_else(|| tmp.path().to_owned(), PathBuf::from);
    let small_dir = base.join("small");
    let full_dir = base.join("full");
    let reuse = full_dir.exists();
    if !reuse {
        import(&small_dir, "small", &nodes[..1000], &[], true).expect("small import");
    }
    let secs = if reuse {
        0.0
    } else {
        import(&full_dir, "debian", &nodes, &edges, true).expect("full import")
    };
    println!(
        "import: {} nodes + {} edges in {secs:.2} s (fsync on); repository {:.1} MiB",
        nodes.len(),
        edges.len(),
        dir_size(&full_dir) as f64 / (1 << 20) as f64
    );
    // Write the import out now, so the fsyncs measured below do not wait
    // for its dirty pages.
    let _ = std::process::Command::new("sync").status();
    let mut loads = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let b = Bench::start(&full_dir, "debian", true).expect("load");
        loads.push(started.elapsed().as_secs_f64());
        assert_eq!(b.nodes.len(), nodes.len());
    }
    println!("load at start (full graph): {loads:.3?} s");
    drop(nodes);
    drop(edges);

    for (graph, dir) in [("small", &small_dir), ("debian", &full_dir)] {
        for fsync in [true, false] {
            let mut group = c.benchmark_group(format!(
                "git/{graph}/fsync-{}",
                if fsync { "on" } else { "off" }
            ));
            group.sample_size(20).warm_up_time(Duration::from_secs(1));
            let bench = RefCell::new(Bench::start(dir, graph, fsync).expect("start"));
            for n in GROUP_SIZES {
                group.throughput(Throughput::Elements(n as u64));
                group.bench_function(format!("{n}-changes-per-commit"), |b| {
                    b.iter_batched(
                        || bench.borrow_mut().updates(n),
                        |changes| bench.borrow_mut().commit(changes),
                        BatchSize::PerIteration,
                    );
                });
            }
            group.finish();
            let persister = bench.borrow_mut().persister.take();
            if let Some(p) = persister {
                let stats = p.stats().snapshot();
                println!(
                    "{graph} fsync {fsync}: {} commits, {} changes, {} packs merged, mean round {:.3} ms",
                    stats.commits,
                    stats.changes,
                    stats.packs_merged,
                    stats.duration_us_sum as f64 / stats.rounds.max(1) as f64 / 1000.0
                );
                p.shutdown().expect("shutdown");
            }
        }
    }
}

criterion_group!(benches, bench_git);
criterion_main!(benches);
