//! The owner's work per simple field update, to count under callgrind
//! (perf-reports/owner-19.md): instruction counts do not depend on what
//! else runs on the machine. Run it twice, with `N` and `2N` updates, and
//! divide the difference in instructions (or allocation calls) by `N`:
//! what is left is the cost of one update, without the set-up. It runs on
//! the server's allocator, mimalloc, as the criterion bench does
//! (`perf-reports/owner-19/callgrind_per_update.py` counts its calls).
//!
//! ```sh
//! valgrind --tool=callgrind owner_instructions submit 100000
//! ```
//!
//! `submit` commits every 1,000 updates, as the criterion bench
//! `field_update/submit` does between its timed chunks; `whole` commits
//! every 100, as `field_update/submit_take_group_committed` does.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use gitmind_bench::owner_work::{commit, label_update, origin, owner_with_nodes};

/// The server's allocator (`server/src/main.rs`): its instructions count.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let group = match args.next().as_deref() {
        Some("submit") => 1000,
        Some("whole") => 100,
        _ => panic!("usage: owner_instructions submit|whole N"),
    };
    let n: u64 = args.next().and_then(|a| a.parse().ok()).expect("N");
    let mut o = owner_with_nodes();
    for i in 0..n {
        let body = label_update(o.ordered_seq(), i);
        black_box(o.submit(origin(2), &format!("m{i}"), body, i));
        if i % group == group - 1 {
            commit(&mut o);
        }
    }
    commit(&mut o);
}
