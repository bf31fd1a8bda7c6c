//! The binary codec's size goal: a batch of 10 typical node updates takes
//! at most 40% of its JSON bytes with zstd. Uses the built-in real nodes so
//! that it runs anywhere; `examples/sizes.rs` gives the full table over the
//! Debian dataset.
#![allow(clippy::unwrap_used)]

use gitmind_schema::binary::{self, Compression};
use gitmind_schema::json;
use gitmind_testkit::traffic::{builtin_dataset, Traffic};

#[test]
fn ten_node_updates_take_at_most_40_percent_of_json() {
    let data = builtin_dataset();
    for (form, event) in [("mutation", false), ("event", true)] {
        let mut t = Traffic::new(&data, 2024);
        let (mut j, mut z) = (0usize, 0usize);
        for _ in 0..50 {
            let batch: Vec<_> = (0..10)
                .map(|_| {
                    if event {
                        t.node_update_event()
                    } else {
                        t.node_update_mutation()
                    }
                })
                .collect();
            j += json::encode_batch(&batch).len();
            z += binary::encode_with(&batch, Compression::Auto).len();
        }
        let ratio = z as f64 / j as f64;
        println!(
            "{form}: JSON {:.1} bytes/message, binary+zstd {:.1} ({:.1}%)",
            j as f64 / 500.0,
            z as f64 / 500.0,
            100.0 * ratio
        );
        assert!(
            ratio <= 0.40,
            "{form}: binary+zstd is {:.1}% of JSON",
            100.0 * ratio
        );
    }
}
