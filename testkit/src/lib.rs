//! What the tests, benchmarks, examples and the soak test of Gitmind live
//! share to make their inputs and their faults (issue #14: one of each):
//!
//! - [`rng`]: the one seeded random number generator (SplitMix64), so that
//!   a seed gives the same run everywhere: the server's simulation, the
//!   traffic generator, the soak test's choices of load and faults.
//! - [`traffic`]: realistic protocol messages made from a real graph, for
//!   the dictionary trainer, codec benchmarks and size reports.
//! - [`proxy`]: a TCP proxy that cuts, stalls or refuses connections, for
//!   the client's end-to-end tests and the soak test.
//! - [`nats`]: a `nats-server` with JetStream on loopback, for the
//!   cluster's tests and the soak test's `--cluster` mode.
//! - [`default_dataset`] and [`bench_dataset`]: where the real graph is.
//!
//! Datasets are read by the client library's one reader,
//! [`gitmind_client::dataset`], which `gitmind import` uses too.
//!
//! # Layout
//!
//! This crate depends on `gitmind-client` (for the dataset reader) and
//! `gitmind-schema`. The soak test takes it as a normal dependency;
//! `gitmind-bench` (benchmarks), `gitmind-server` (the simulation) and
//! `gitmind-client` and `gitmind-schema` themselves take it as a
//! dev-dependency. For the last two that is a cycle, which Cargo allows,
//! and it is sound because there only integration tests and examples use
//! this crate: they link the same library of `gitmind-client` and
//! `gitmind-schema` as this crate does, so the types match. A unit test
//! inside `gitmind-client` or `gitmind-schema` must not use it: there the
//! crate under test is a second copy, whose types are not this crate's.
//! The proxy mentions no client or schema type at all.

use std::path::{Path, PathBuf};

pub mod nats;
pub mod proxy;
pub mod rng;
pub mod traffic;

pub use nats::Nats;
pub use proxy::Proxy;
pub use rng::Rng;

/// The environment variable that points the benchmarks at another dataset.
pub const DATASET_ENV: &str = "GITMIND_BENCH_DATASET";

/// The real graph, Debian 12's package index, beside the workspace:
/// `../shared/datasets/debian-bookworm.jsonl.zst` from the workspace root
/// (an absolute path, so it does not depend on the working directory).
pub fn default_dataset() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The folder that holds the workspace (this crate's grandparent), where
    // there is one; `..` otherwise, which names the same folder.
    let beside = testkit
        .ancestors()
        .nth(2)
        .map_or_else(|| testkit.join("../.."), Path::to_path_buf);
    beside.join("shared/datasets/debian-bookworm.jsonl.zst")
}

/// The dataset of the benchmarks: the file named by `GITMIND_BENCH_DATASET`
/// ([`DATASET_ENV`]) when it is set, else [`default_dataset`].
pub fn bench_dataset() -> PathBuf {
    std::env::var_os(DATASET_ENV).map_or_else(default_dataset, PathBuf::from)
}
