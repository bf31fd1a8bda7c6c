//! The codecs: encode and decode of typical node updates, one message and
//! batches of 10 and 100, as JSON, binary without zstd and binary with zstd
//! (the codec's own policy). Bytes per message are printed first.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-binary cargo bench -p gitmind-bench --bench codecs -- --measurement-time 3
//! ```
//!
//! The messages are `node.update` mutations of real nodes of the Debian
//! dataset (`../shared/datasets/debian-bookworm.jsonl.zst` beside the
//! repository), or of a few built-in real nodes when it is not there.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gitmind_schema::binary::{self, Compression};
use gitmind_schema::message::Envelope;
use gitmind_schema::{json, Limits};
use gitmind_testkit::traffic::{builtin_dataset, read_dataset, Dataset, Traffic};

/// The batch sizes measured.
const SIZES: &[usize] = &[1, 10, 100];

fn dataset() -> Dataset {
    read_dataset(gitmind_testkit::default_dataset(), 5_000, 5_000)
        .unwrap_or_else(|_| builtin_dataset())
}

/// A batch of `n` typical node updates (label, position or props of a real node).
fn updates(data: &Dataset, n: usize, event: bool) -> Vec<Envelope> {
    let mut t = Traffic::new(data, 2024);
    (0..n)
        .map(|_| {
            if event {
                t.node_update_event()
            } else {
                t.node_update_mutation()
            }
        })
        .collect()
}

fn json_frame(envs: &[Envelope]) -> bytes::Bytes {
    if let [one] = envs {
        json::encode(one)
    } else {
        json::encode_batch(envs)
    }
}

fn print_sizes(data: &Dataset) {
    println!("bytes per message (typical node updates)");
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>12} {:>10}",
        "batch", "form", "json", "binary", "binary+zstd", "zstd/json"
    );
    for &n in SIZES {
        for (form, event) in [("mutation", false), ("event", true)] {
            let envs = updates(data, n, event);
            let j = json_frame(&envs).len() as f64 / n as f64;
            let b = binary::encode_with(&envs, Compression::Never).len() as f64 / n as f64;
            let z = binary::encode_with(&envs, Compression::Auto).len() as f64 / n as f64;
            println!(
                "{n:>6} {form:>9} {j:>8.1} {b:>8.1} {z:>12.1} {:>9.1}%",
                100.0 * z / j
            );
        }
    }
}

fn codecs(c: &mut Criterion) {
    let data = dataset();
    print_sizes(&data);
    let limits = Limits::default();
    for &n in SIZES {
        let envs = updates(&data, n, false);
        let mut group = c.benchmark_group(format!("node_update_x{n}"));
        group.throughput(Throughput::Elements(n as u64));

        group.bench_function(BenchmarkId::new("encode", "json"), |b| {
            b.iter(|| json_frame(black_box(&envs)))
        });
        group.bench_function(BenchmarkId::new("encode", "binary"), |b| {
            b.iter(|| binary::encode_with(black_box(&envs), Compression::Never))
        });
        group.bench_function(BenchmarkId::new("encode", "binary_zstd"), |b| {
            b.iter(|| binary::encode_with(black_box(&envs), Compression::Auto))
        });

        let text = json_frame(&envs);
        let text = std::str::from_utf8(&text)
            .expect("JSON is UTF-8")
            .to_owned();
        let plain = binary::encode_with(&envs, Compression::Never);
        let packed = binary::encode_with(&envs, Compression::Auto);
        assert_eq!(packed[0], binary::HEADER_ZSTD, "node updates compress");
        group.bench_function(BenchmarkId::new("decode", "json"), |b| {
            b.iter(|| json::decode(black_box(&text), &limits).expect("decodes"))
        });
        group.bench_function(BenchmarkId::new("decode", "binary"), |b| {
            b.iter(|| binary::decode(black_box(&plain), &limits).expect("decodes"))
        });
        group.bench_function(BenchmarkId::new("decode", "binary_zstd"), |b| {
            b.iter(|| binary::decode(black_box(&packed), &limits).expect("decodes"))
        });
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
