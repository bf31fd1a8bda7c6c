//! The graph owner's throughput (perf-reports/owner.md): simple node field
//! updates (submit alone, and submit + take_group + committed amortized),
//! text operations transformed against 100 concurrent ones, and batches of
//! 1,000 ops.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
// One call to clock_gettime(CLOCK_THREAD_CPUTIME_ID), in `cpu` below.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use gitmind_bench::owner_work::{commit, config, label_update, origin, owner_with_nodes};
use gitmind_owner::{Origin, Owner, Submit};
use gitmind_schema::message::{BatchOp, BatchUpdate, NodeCreate, NodeUpdate};
use gitmind_schema::model::{Node, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::Body;

/// The server's allocator (`server/src/main.rs`), so that the owner is
/// measured as the server runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A clock: wall time (what criterion measures by default) or this
/// thread's CPU time (what one core spends, whatever else runs on the
/// machine: the machine these run on is shared and busy).
type Clock = fn() -> Duration;

fn wall() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
fn cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU-time groups take samples of equal size (about 30 ms each), so a
/// sample spans many scheduler slices of this busy machine.
fn flat_if_cpu<M: Measurement>(g: &mut BenchmarkGroup<'_, M>, tag: &str) {
    if !tag.is_empty() {
        g.sampling_mode(SamplingMode::Flat);
    }
}

/// Criterion's measurement for [`cpu`]: the benches time themselves with
/// `iter_custom`, so only the formatting matters here.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        cpu()
    }
    fn end(&self, i: Duration) -> Duration {
        cpu() - i
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats CPU nanoseconds like criterion formats wall time.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let n = match throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            _ => 1.0,
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "elem/s (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn field_updates<M: Measurement<Value = Duration>>(c: &mut Criterion<M>, now: Clock, tag: &str) {
    let mut g = c.benchmark_group(format!("field_update{tag}"));
    flat_if_cpu(&mut g, tag);
    g.throughput(Throughput::Elements(1));
    // Origins, mutation ids and bodies are made outside the timed region,
    // as in the server, where the sessions' shards make them and the
    // owner's thread only takes them.
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
                let mut work = work(&o, n, chunk);
                let start = now();
                for (origin, id, body) in work.drain(..) {
                    black_box(o.submit(origin, &id, body, n));
                }
                total += now() - start;
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
            let mut work = work(&o, n, iters);
            let start = now();
            for (k, (origin, id, body)) in work.drain(..).enumerate() {
                black_box(o.submit(origin, &id, body, n));
                // A group commit every 100 changes.
                if k % 100 == 99 {
                    commit(&mut o);
                }
            }
            commit(&mut o);
            let elapsed = now() - start;
            n += iters;
            elapsed
        });
    });
    g.finish();
}

/// Updates `n..n + count`, made at the owner's current `seq`: each with
/// its origin (session 2) and mutation id.
fn work(o: &Owner, n: u64, count: u64) -> Vec<(Origin, String, Body)> {
    (n..n + count)
        .map(|i| (origin(2), format!("m{i}"), label_update(o.ordered_seq(), i)))
        .collect()
}

fn text_against_history<M: Measurement<Value = Duration>>(
    c: &mut Criterion<M>,
    now: Clock,
    tag: &str,
) {
    let mut g = c.benchmark_group(format!("text{tag}"));
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
                let start = now();
                let r = o.submit(origin(2), &id, body, 2);
                total += now() - start;
                assert!(matches!(r, Submit::Ordered(_)));
                // Undo it, so every iteration meets exactly 100 operations.
                black_box(o.commit_failed());
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

fn batches<M: Measurement<Value = Duration>>(c: &mut Criterion<M>, now: Clock, tag: &str) {
    let mut g = c.benchmark_group(format!("batch{tag}"));
    flat_if_cpu(&mut g, tag);
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
                let start = now();
                black_box(o.submit(origin(2), &id, body, 2));
                commit(&mut o);
                total += now() - start;
            }
            total
        });
    });
    g.finish();
}

fn wall_clock(c: &mut Criterion) {
    field_updates(c, wall, "");
    text_against_history(c, wall, "");
    batches(c, wall, "");
}

fn cpu_time(c: &mut Criterion<ThreadCpu>) {
    field_updates(c, cpu, "_cpu");
    batches(c, cpu, "_cpu");
}

criterion_group!(benches, wall_clock);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = cpu_time
}
criterion_main!(benches, cpu_benches);
