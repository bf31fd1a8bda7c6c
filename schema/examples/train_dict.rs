//! Trains the zstd dictionary of the binary codec (`schema/dict/gitmind-v1.dict`).
//!
//! ```text
//! cargo run --release -p gitmind-schema --example train_dict -- \
//!     [DATASET.jsonl.zst] [OUT.dict] [--sizes 16384,32768,49152,65536] [--seed N] [--samples N]
//! ```
//!
//! The dataset defaults to `../shared/datasets/debian-bookworm.jsonl.zst`
//! relative to the repository root, the output to `schema/dict/gitmind-v1.dict`.
//! Samples are frames of realistic traffic over the real graph
//! (`gitmind_testkit::traffic::Traffic`, fixed seed), encoded in the binary
//! form without compression. Every candidate size is trained on the same
//! samples and measured on frames made from another seed; the one that
//! compresses them smallest is written. The run is reproducible: the same
//! dataset, seed and sizes give the same file.
//!
//! Once a dictionary ships, changing it breaks protocol version 1: see
//! `schema/dict/README.md`.

use std::path::PathBuf;
use std::time::Instant;

use gitmind_schema::binary::{self, Compression, COMPRESS_MIN_BYTES, ZSTD_LEVEL};
use gitmind_testkit::traffic::{Dataset, Traffic};

/// Seed of the training frames.
const TRAIN_SEED: u64 = 0x6769_746d_696e_6401;
/// Seed of the frames the candidates are measured on.
const EVAL_SEED: u64 = 0x6769_746d_696e_6402;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut positional = Vec::new();
    let mut sizes = vec![16 * 1024, 32 * 1024, 48 * 1024, 64 * 1024];
    let mut seed = TRAIN_SEED;
    let mut count = 40_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sizes" => {
                let list = args.next().ok_or("--sizes needs a list")?;
                sizes = list.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--seed" => seed = args.next().ok_or("--seed needs a number")?.parse()?,
            "--samples" => count = args.next().ok_or("--samples needs a number")?.parse()?,
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let dataset_path = positional
        .first()
        .cloned()
        .unwrap_or_else(gitmind_testkit::default_dataset);
    let out_path = positional
        .get(1)
        .cloned()
        .unwrap_or_else(|| root.join("schema/dict/gitmind-v1.dict"));

    let started = Instant::now();
    let data = Dataset::read(&dataset_path)?;
    eprintln!(
        "read {} nodes and {} edges from {} in {:.1?}",
        data.nodes.len(),
        data.edges.len(),
        dataset_path.display(),
        started.elapsed()
    );

    let train = frames(&data, seed, count);
    let eval = frames(&data, EVAL_SEED, count / 4);
    let total: usize = train.iter().map(Vec::len).sum();
    eprintln!(
        "{} training frames, {} bytes (mean {} bytes)",
        train.len(),
        total,
        total / train.len().max(1)
    );

    let baseline = measure(&eval, &[]);
    eprintln!(
        "no dictionary: {baseline} bytes for {} evaluation frames",
        eval.len()
    );
    let mut best: Option<(usize, Vec<u8>)> = None;
    for size in sizes {
        let started = Instant::now();
        let dict = zstd::dict::from_samples(&train, size)?;
        let bytes = measure(&eval, &dict);
        eprintln!(
            "dictionary of {size} bytes: {bytes} bytes ({:.1}% of no dictionary), trained in {:.1?}",
            100.0 * bytes as f64 / baseline as f64,
            started.elapsed()
        );
        if best.as_ref().is_none_or(|(b, _)| bytes < *b) {
            best = Some((bytes, dict));
        }
    }
    let (_, dict) = best.ok_or("no candidate size")?;
    std::fs::write(&out_path, &dict)?;
    eprintln!("wrote {} ({} bytes)", out_path.display(), dict.len());
    Ok(())
}

/// Frames of traffic, encoded as uncompressed FlatBuffers (header byte dropped).
fn frames(data: &Dataset, seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut traffic = Traffic::new(data, seed);
    (0..count)
        .map(|_| binary::encode_with(&traffic.frame(), Compression::Never)[1..].to_vec())
        .collect()
}

/// The bytes the frames take as the codec would send them with this
/// dictionary: compressed when at least `COMPRESS_MIN_BYTES` and smaller.
fn measure(frames: &[Vec<u8>], dict: &[u8]) -> usize {
    let Ok(mut c) = zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, dict) else {
        return usize::MAX;
    };
    let _ = c.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false));
    frames
        .iter()
        .map(|f| {
            let compressed = if f.len() >= COMPRESS_MIN_BYTES {
                c.compress(f).map_or(f.len(), |z| z.len())
            } else {
                f.len()
            };
            1 + compressed.min(f.len())
        })
        .sum()
}
