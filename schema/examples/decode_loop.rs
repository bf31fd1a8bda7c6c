//! Decodes one typical binary node update in a loop and prints the mean
//! time: a quick figure without criterion, and a target for a profiler.
//!
//! ```text
//! cargo run --release -p gitmind-schema --example decode_loop -- [plain|zstd] [ITERATIONS]
//! perf record -g target/release/examples/decode_loop plain
//! ```

use std::hint::black_box;
use std::time::Instant;

use gitmind_schema::binary::{self, Compression};
use gitmind_schema::Limits;
use gitmind_testkit::traffic::{builtin_dataset, Traffic};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = builtin_dataset();
    let env = Traffic::new(&data, 2024).node_update_mutation();
    let mut args = std::env::args().skip(1);
    let zstd = args.next().is_some_and(|a| a == "zstd");
    let iterations: u32 = args.next().map_or(Ok(3_000_000), |n| n.parse())?;
    let compression = if zstd {
        Compression::Always
    } else {
        Compression::Never
    };
    let frame = binary::encode_with(std::slice::from_ref(&env), compression);
    let limits = Limits::default();
    for _ in 0..iterations / 10 {
        black_box(binary::decode(black_box(&frame), &limits)?);
    }
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(binary::decode(black_box(&frame), &limits)?);
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!(
        "{} frame of {} bytes: {ns:.0} ns per decode (mean of {iterations})",
        if zstd { "zstd" } else { "plain" },
        frame.len()
    );
    Ok(())
}
