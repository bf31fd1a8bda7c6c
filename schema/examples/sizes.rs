//! Bytes per message of the two codecs, and the measurements behind the
//! binary codec's compression threshold and level.
//!
//! ```text
//! cargo run --release -p gitmind-schema --example sizes -- [DATASET.jsonl.zst]
//! ```
//!
//! Uses the Debian dataset (default `../shared/datasets/debian-bookworm.jsonl.zst`
//! relative to the repository root, `gitmind_testkit::default_dataset`) when
//! it is there, else a few built-in real nodes. Deterministic: the same dataset gives the same byte counts.

use std::path::PathBuf;
use std::time::Instant;

use gitmind_schema::binary::{self, Compression, DICTIONARY};
use gitmind_schema::json;
use gitmind_schema::message::Envelope;
use gitmind_testkit::traffic::{
    builtin_dataset, read_dataset, Dataset, DatasetError, Kind, Traffic,
};

const KINDS: &[Kind] = &[
    Kind::NodeUpdate,
    Kind::TextEdit,
    Kind::NodeCreate,
    Kind::NodeDelete,
    Kind::EdgeCreate,
    Kind::EdgeUpdate,
    Kind::EdgeDelete,
    Kind::Cursor,
    Kind::Presence,
    Kind::Selection,
    Kind::Outcome,
    Kind::Heartbeat,
    Kind::Batch,
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map_or_else(gitmind_testkit::default_dataset, PathBuf::from);
    let data = match read_dataset(&path, 20_000, 20_000) {
        Ok(data) => {
            println!("dataset: {}", path.display());
            data
        }
        Err(DatasetError::Open { .. }) => {
            println!("dataset: built-in nodes ({} not found)", path.display());
            builtin_dataset()
        }
        Err(e) => return Err(e.into()),
    };

    println!("\n## Bytes per message (mean of 2,000 single-message frames)\n");
    println!("| message | JSON | binary | binary+zstd (auto) | auto/JSON |");
    println!("|---|---:|---:|---:|---:|");
    for &kind in KINDS {
        let mut t = Traffic::new(&data, 11);
        let msgs: Vec<Envelope> = (0..2000).map(|_| t.message_of(kind)).collect();
        let (j, b, z) = sizes(msgs.iter().map(std::slice::from_ref));
        println!(
            "| {kind:?} | {j:.1} | {b:.1} | {z:.1} | {:.0}% |",
            100.0 * z / j
        );
    }

    println!("\n## Batches of node updates (bytes per message)\n");
    println!("| batch | form | JSON | binary | binary+zstd | zstd/JSON |");
    println!("|---|---|---:|---:|---:|---:|");
    for n in [1usize, 10, 100] {
        for (form, event) in [("mutation", false), ("event", true)] {
            let batches = node_update_batches(&data, n, event, 200);
            let (j, b, z) = sizes(batches.iter().map(Vec::as_slice));
            let per = n as f64;
            println!(
                "| {n} | {form} | {:.1} | {:.1} | {:.1} | {:.1}% |",
                j / per,
                b / per,
                z / per,
                100.0 * z / j
            );
        }
    }

    threshold(&data);
    levels(&data);
    Ok(())
}

/// Batches of `n` typical node updates, as a client sends them or as the server broadcasts them.
pub fn node_update_batches(
    data: &Dataset,
    n: usize,
    event: bool,
    count: usize,
) -> Vec<Vec<Envelope>> {
    let mut t = Traffic::new(data, 5);
    (0..count)
        .map(|_| {
            (0..n)
                .map(|_| {
                    if event {
                        t.node_update_event()
                    } else {
                        t.node_update_mutation()
                    }
                })
                .collect()
        })
        .collect()
}

/// Mean frame sizes: JSON, binary uncompressed, binary with the codec's policy.
fn sizes<'a>(frames: impl Iterator<Item = &'a [Envelope]>) -> (f64, f64, f64) {
    let (mut j, mut b, mut z, mut n) = (0usize, 0usize, 0usize, 0usize);
    for f in frames {
        j += if f.len() == 1 {
            json::encode(&f[0]).len()
        } else {
            json::encode_batch(f).len()
        };
        b += binary::encode_with(f, Compression::Never).len();
        z += binary::encode_with(f, Compression::Auto).len();
        n += 1;
    }
    let n = n.max(1) as f64;
    (j as f64 / n, b as f64 / n, z as f64 / n)
}

/// How much zstd with the dictionary saves by FlatBuffer size: where the
/// threshold below which frames go uncompressed should be.
fn threshold(data: &Dataset) {
    println!("\n## Compression by uncompressed size (single messages of the traffic mix)\n");
    println!("| FlatBuffer bytes | frames | mean uncompressed | mean compressed | saved |");
    println!("|---|---:|---:|---:|---:|");
    let bounds = [
        0usize,
        48,
        64,
        72,
        80,
        88,
        96,
        112,
        128,
        160,
        192,
        256,
        384,
        512,
        1 << 20,
    ];
    let mut buckets = vec![(0usize, 0usize, 0usize); bounds.len() - 1];
    let mut t = Traffic::new(data, 3);
    for i in 0..40_000 {
        let mut m = t.message();
        if i % 2 == 1 {
            // Minimal envelopes too (short id, no optional fields), so that
            // small frames are measured as well.
            m = Envelope {
                id: format!("{}", i % 1000),
                ..Envelope::new("", m.body)
            };
            m.version = None;
        }
        let never = binary::encode_with(std::slice::from_ref(&m), Compression::Never).len() - 1;
        let always = binary::encode_with(std::slice::from_ref(&m), Compression::Always).len() - 1;
        if let Some(i) = bounds
            .windows(2)
            .position(|w| never >= w[0] && never < w[1])
        {
            buckets[i].0 += 1;
            buckets[i].1 += never;
            buckets[i].2 += always;
        }
    }
    for (w, (n, u, c)) in bounds.windows(2).zip(buckets) {
        if n == 0 {
            continue;
        }
        println!(
            "| {}..{} | {n} | {:.1} | {:.1} | {:.1}% |",
            w[0],
            if w[1] == 1 << 20 {
                "".to_owned()
            } else {
                w[1].to_string()
            },
            u as f64 / n as f64,
            c as f64 / n as f64,
            100.0 * (1.0 - c as f64 / u as f64)
        );
    }
}

/// Bytes and time of each zstd level on frames of the traffic mix.
fn levels(data: &Dataset) {
    println!("\n## zstd level (frames of the traffic mix, with the dictionary)\n");
    println!("| level | bytes | ns per frame |");
    println!("|---:|---:|---:|");
    let mut t = Traffic::new(data, 9);
    let frames: Vec<Vec<u8>> = (0..5000)
        .map(|_| binary::encode_with(&t.frame(), Compression::Never)[1..].to_vec())
        .collect();
    for level in [1, 2, 3, 4, 5, 7, 9] {
        let dict = zstd::dict::EncoderDictionary::copy(DICTIONARY, level);
        let Ok(mut c) = zstd::bulk::Compressor::with_prepared_dictionary(&dict) else {
            continue;
        };
        let _ = c.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false));
        let mut out = Vec::with_capacity(1 << 21);
        let mut bytes = 0usize;
        let started = Instant::now();
        for _ in 0..3 {
            bytes = 0;
            for f in &frames {
                out.clear();
                out.reserve(zstd::zstd_safe::compress_bound(f.len()));
                bytes += c
                    .compress_to_buffer(f, &mut out)
                    .map_or(f.len(), |n| n.min(f.len()));
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / (3.0 * frames.len() as f64);
        println!("| {level} | {bytes} | {ns:.0} |");
    }
}
