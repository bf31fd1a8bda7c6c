//! The graph owner's benchmark workload, shared by the criterion bench
//! (`benches/owner.rs`) and the instruction counter
//! (`examples/owner_instructions.rs`, run under callgrind): an owner with
//! [`NODES`] committed nodes, and label updates on them.

use std::hint::black_box;

use gitmind_owner::{Origin, Owner, OwnerConfig};
use gitmind_schema::message::{NodeCreate, NodeUpdate};
use gitmind_schema::model::{Node, NodeSet};
use gitmind_schema::Body;

/// The commit id every group gets.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// How many nodes the owner holds.
pub const NODES: usize = 1000;

/// Session `n`: `s{n}`, user `u{n}`.
pub fn origin(n: u64) -> Origin {
    Origin {
        session: n,
        session_id: format!("s{n}"),
        user_id: format!("u{n}"),
    }
}

/// The configuration of every bench: the window bounded by its 100,000
/// changes alone (the clock here does not advance 10 minutes, and at a
/// million changes a second a 10-minute window would not be bounded memory).
pub fn config() -> OwnerConfig {
    OwnerConfig {
        replay_ms: 0,
        ..OwnerConfig::default()
    }
}

/// An owner with [`NODES`] committed nodes.
pub fn owner_with_nodes() -> Owner {
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

/// Hands the ordered changes to "persistence" and commits them at once.
pub fn commit(o: &mut Owner) {
    o.take_group();
    let upto = o.ordered_seq();
    black_box(o.committed(upto, COMMIT));
}

/// Update `i`: the label of node `i % NODES`, `even` or `odd`, made at `base`.
pub fn label_update(base: u64, i: u64) -> Body {
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
