//! The graph owner's throughput (perf-reports/owner.md): simple node field
//! updates (submit alone, and submit + take_group + committed amortized),
//! text operations transformed against 100 concurrent ones, and batches of
//! 1,000 ops.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gitmind_schema::message::{BatchOp, BatchUpdate, NodeCreate, NodeUpdate};
use gitmind_schema::model::{Node, NodeSet, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::Body;
use gitmind_server::owner::{Origin, Owner, OwnerConfig, Submit};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const NODES: usize = 1000;

fn origin(n: u64) -> Origin {
    Origin {
        session: n,
        session_id: format!("s{n}"),
        user_id: format!("u{n}"),
    }
}

/// The configuration of every bench: the window bounded by its 100,000
/// changes alone (the clock here does not advance 10 minutes, and at a
/// million changes a second a 10-minute window would not be bounded memory).
fn config() -> OwnerConfig {
    OwnerConfig {
        replay_ms: 0,
        ..OwnerConfig::default()
    }
}

/// An owner with `NODES` committed nodes.
fn owner_with_nodes() -> Owner {
    let mut o = Owner::new("bench", "e".into(), config());
    for i in 0..NODES {
        let body = Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node: Node {
                id: format!("n:{i}"),
                label: Some("start".into()),
                ..Node::default()
            },
            commit: None,
        });
        o.submit(origin(1), &format!("c{i}"), body, 1);
    }
    commit(&mut o);
    o
}

fn commit(o: &mut Owner) {
    o.take_group();
    let upto = o.ordered_seq();
    black_box(o.committed(upto, COMMIT));
}

fn label_update(base: u64, i: u64) -> Body {
    Body::NodeUpdate(NodeUpdate {
        base_seq: Some(base),
        id: format!("n:{}", i % NODES as u64),
        set: Some(NodeSet {
            label: Some(if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            }),
            ..NodeSet::default()
        }),
        ..NodeUpdate::default()
    })
}

fn field_updates(c: &mut Criterion) {
    let mut g = c.benchmark_group("field_update");
    g.throughput(Throughput::Elements(1));
    // Mutation ids and bodies are made outside the timed region.
    // Timed in chunks of 1,000 submits, with an untimed group commit after
    // each chunk, so pending changes stay bounded as they are in service.
    g.bench_function("submit", |b| {
        let mut o = owner_with_nodes();
        let mut n = 0u64;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(1000);
                left -= chunk;
                let mut work: Vec<(String, Body)> = (0..chunk)
                    .map(|k| {
                        let i = n + k;
                        (format!("m{i}"), label_update(o.ordered_seq(), i))
                    })
                    .collect();
                let start = Instant::now();
                for (id, body) in work.drain(..) {
                    black_box(o.submit(origin(2), &id, body, n));
                }
                total += start.elapsed();
                n += chunk;
                commit(&mut o);
            }
            total
        });
    });
    g.bench_function("submit_take_group_committed", |b| {
        let mut o = owner_with_nodes();
        let mut n = 0u64;
        b.iter_custom(|iters| {
            let mut work: Vec<(String, Body)> = (0..iters)
                .map(|k| {
                    let i = n + k;
                    (format!("m{i}"), label_update(o.ordered_seq(), i))
                })
                .collect();
            let start = Instant::now();
            for (k, (id, body)) in work.drain(..).enumerate() {
                black_box(o.submit(origin(2), &id, body, n));
                // A group commit every 100 changes.
                if k % 100 == 99 {
                    commit(&mut o);
                }
            }
            commit(&mut o);
            let elapsed = start.elapsed();
            n += iters;
            elapsed
        });
    });
    g.finish();
}

fn text_against_history(c: &mut Criterion) {
    let mut g = c.benchmark_group("text");
    g.throughput(Throughput::Elements(1));
    g.bench_function("transform_against_100_concurrent", |b| {
        let mut o = Owner::new("bench", "e".into(), config());
        let content = "lorem ipsum dolor sit amet ".repeat(20);
        let len = content.chars().count() as u64;
        let body = Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node: Node {
                id: "n:text".into(),
                content: Some(content),
                ..Node::default()
            },
            commit: None,
        });
        o.submit(origin(1), "create", body, 1);
        commit(&mut o);
        let base = o.ordered_seq();
        // 100 concurrent edits by another session, each after the last.
        for i in 0..100u64 {
            let mut op = TextOp::new();
            op.retain((i * 5) % (len + i))
                .insert("x")
                .retain(len + i - (i * 5) % (len + i));
            let body = text_body(o.ordered_seq(), op);
            o.submit(origin(1), &format!("t{i}"), body, 1);
        }
        commit(&mut o);
        let mut op = TextOp::new();
        op.retain(len / 2).insert("typed").retain(len - len / 2);
        let mut n = 0u64;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = format!("m{n}");
                let body = text_body(base, op.clone());
                let start = Instant::now();
                let r = o.submit(origin(2), &id, body, 2);
                total += start.elapsed();
                assert!(matches!(r, Submit::Ordered(_)));
                // Undo it, so every iteration meets exactly 100 operations.
                black_box(o.commit_failed(o.committed_seq() + 1, "bench"));
            }
            total
        });
    });
    g.finish();
}

fn text_body(base: u64, op: TextOp) -> Body {
    Body::NodeUpdate(NodeUpdate {
        base_seq: Some(base),
        id: "n:text".into(),
        text: Some(TextEdits { content: Some(op) }),
        ..NodeUpdate::default()
    })
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000_ops_submit_committed", |b| {
        let mut o = owner_with_nodes();
        let mut n = 0u64;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let ops = (0..1000u64)
                    .map(|i| match label_update(0, n * 1000 + i) {
                        Body::NodeUpdate(u) => BatchOp::NodeUpdate(u),
                        _ => unreachable!(),
                    })
                    .collect();
                let body = Body::BatchUpdate(BatchUpdate {
                    base_seq: Some(o.ordered_seq()),
                    ops,
                    commit: None,
                });
                let id = format!("b{n}");
                let start = Instant::now();
                black_box(o.submit(origin(2), &id, body, 2));
                commit(&mut o);
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, field_updates, text_against_history, batches);
criterion_main!(benches);
