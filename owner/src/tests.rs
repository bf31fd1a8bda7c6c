//! Tests of the graph owner: one per rule of docs/protocol.md 3 and per case of
//! 4.2, plus ordering, idempotency (4.4), commit, sync (6) and restore.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::change::{Restored, Write};
use gitmind_schema::message::{
    BatchOp, BatchUpdate, EdgeCreate, EdgeDelete, EdgeUpdate, NodeCreate, NodeDelete, NodeUpdate,
    RollbackReason, UpdateConfirmed, UpdateConflictResolved, UpdateRollback,
};
use gitmind_schema::model::{EdgeSet, Entity, NodeSet, PropValue, Props, PropsPatch, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::Body;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const A: u64 = 1;
const B: u64 = 2;

fn owner() -> Owner {
    Owner::new("g", "e1".into(), OwnerConfig::default())
}

fn origin(n: u64) -> Origin {
    Origin {
        session: n,
        session_id: format!("s{n}"),
        user_id: format!("u{n}"),
    }
}

fn submit(o: &mut Owner, who: u64, id: &str, body: Body) -> Submit {
    o.submit(origin(who), id, body, 1000 + o.ordered_seq())
}

/// Submits, expects it ordered, commits everything, returns its release.
fn ok(o: &mut Owner, who: u64, id: &str, body: Body) -> Release {
    let Submit::Ordered(seq) = submit(o, who, id, body) else {
        panic!("{id} was not ordered")
    };
    commit_all(o)
        .into_iter()
        .find(|r| r.seq == seq)
        .expect("released")
}

fn commit_all(o: &mut Owner) -> Vec<Release> {
    o.take_group();
    let upto = o.ordered_seq();
    o.committed(upto, COMMIT)
}

/// Submits, expects a rollback.
fn refused(o: &mut Owner, who: u64, id: &str, body: Body) -> UpdateRollback {
    match submit(o, who, id, body) {
        Submit::Reply(Envelope {
            body: Body::UpdateRollback(r),
            ..
        }) => r,
        other => panic!("{id} was not refused: {other:?}"),
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        ..Node::default()
    }
}

fn create(base: u64, n: Node) -> Body {
    Body::NodeCreate(NodeCreate {
        base_seq: Some(base),
        node: n,
        commit: None,
    })
}

fn update(base: u64, id: &str, set: NodeSet) -> Body {
    Body::NodeUpdate(NodeUpdate {
        base_seq: Some(base),
        id: id.into(),
        set: Some(set),
        ..NodeUpdate::default()
    })
}

fn label(base: u64, id: &str, l: &str) -> Body {
    update(
        base,
        id,
        NodeSet {
            label: Some(l.into()),
            ..NodeSet::default()
        },
    )
}

fn text(base: u64, id: &str, op: TextOp) -> Body {
    Body::NodeUpdate(NodeUpdate {
        base_seq: Some(base),
        id: id.into(),
        text: Some(TextEdits { content: Some(op) }),
        ..NodeUpdate::default()
    })
}

fn delete(base: u64, id: &str) -> Body {
    Body::NodeDelete(NodeDelete {
        base_seq: Some(base),
        id: id.into(),
        ..NodeDelete::default()
    })
}

fn edge(s: &str, t: &str, ty: &str) -> Edge {
    Edge {
        source: s.into(),
        target: t.into(),
        edge_type: ty.into(),
        ..Edge::default()
    }
}

fn create_edge(base: u64, e: Edge) -> Body {
    Body::EdgeCreate(EdgeCreate {
        base_seq: Some(base),
        edge: e,
        commit: None,
    })
}

fn edge_set(base: u64, id: &str, set: EdgeSet) -> Body {
    Body::EdgeUpdate(EdgeUpdate {
        base_seq: Some(base),
        id: Some(id.into()),
        set: Some(set),
        ..EdgeUpdate::default()
    })
}

fn batch(base: u64, ops: Vec<BatchOp>) -> Body {
    Body::BatchUpdate(BatchUpdate {
        base_seq: Some(base),
        ops,
        commit: None,
    })
}

fn op_of(body: Body) -> BatchOp {
    match body {
        Body::NodeCreate(o) => BatchOp::NodeCreate(o),
        Body::NodeUpdate(o) => BatchOp::NodeUpdate(o),
        Body::NodeDelete(o) => BatchOp::NodeDelete(o),
        Body::EdgeCreate(o) => BatchOp::EdgeCreate(o),
        Body::EdgeUpdate(o) => BatchOp::EdgeUpdate(o),
        Body::EdgeDelete(o) => BatchOp::EdgeDelete(o),
        _ => panic!("not an op"),
    }
}

fn ins(retain_before: u64, s: &str, retain_after: u64) -> TextOp {
    let mut op = TextOp::new();
    op.retain(retain_before).insert(s).retain(retain_after);
    op
}

fn committed_node(o: &Owner, id: &str) -> Option<Arc<Node>> {
    o.committed_nodes.get(id).cloned()
}

fn conflicted(r: &Release) -> &UpdateConflictResolved {
    match &r.outcome().body {
        Body::UpdateConflictResolved(c) => c,
        other => panic!("not conflict_resolved: {other:?}"),
    }
}

fn confirmed(r: &Release) -> &UpdateConfirmed {
    match &r.outcome().body {
        Body::UpdateConfirmed(c) => c,
        other => panic!("not confirmed: {other:?}"),
    }
}

/// A graph with node `c:a` (seq 1), as user A.
fn with_a() -> Owner {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                label: Some("a".into()),
                ..node("c:a")
            },
        ),
    );
    o
}

// ---- ordering and the server's fields ----

#[test]
fn create_fills_defaults_and_server_fields() {
    let mut o = owner();
    let r = ok(&mut o, A, "m1", create(0, node("c:a")));
    let n = committed_node(&o, "c:a").unwrap();
    assert_eq!(n.kind.as_deref(), Some("concept"));
    assert_eq!(
        (n.label.as_deref(), n.content.as_deref(), n.x, n.y),
        (Some(""), Some(""), Some(0.0), Some(0.0))
    );
    assert_eq!(n.props, Some(Props::new()));
    assert_eq!(
        (n.rev, n.created_at, n.updated_at),
        (Some(1), Some(1000), Some(1000))
    );
    assert_eq!(
        (n.created_by.as_deref(), n.updated_by.as_deref()),
        (Some("u1"), Some("u1"))
    );
    let Body::NodeCreate(ev) = &r.event().body else {
        panic!()
    };
    assert_eq!(&ev.node, &*n, "the create event carries the whole node");
}

#[test]
fn seq_is_zero_when_empty_and_counts_each_change() {
    let mut o = owner();
    assert_eq!((o.ordered_seq(), o.committed_seq()), (0, 0));
    assert_eq!(
        submit(&mut o, A, "m1", create(0, node("c:a"))),
        Submit::Ordered(1)
    );
    assert_eq!(
        submit(&mut o, A, "m2", create(0, node("c:b"))),
        Submit::Ordered(2)
    );
    assert_eq!((o.ordered_seq(), o.committed_seq()), (2, 0));
    commit_all(&mut o);
    assert_eq!(o.committed_seq(), 2);
}

#[test]
fn missing_base_seq_is_invalid() {
    let mut o = owner();
    let body = Body::NodeCreate(NodeCreate {
        base_seq: None,
        node: node("c:a"),
        commit: None,
    });
    let r = refused(&mut o, A, "m1", body);
    assert_eq!(r.reason, RollbackReason::Invalid);
    assert!(r.message.contains("baseSeq"));
}

#[test]
fn base_seq_ahead_of_the_graph_is_invalid() {
    let mut o = with_a();
    let r = refused(&mut o, A, "m1", label(5, "c:a", "x"));
    assert_eq!(r.reason, RollbackReason::Invalid);
    assert_eq!(o.ordered_seq(), 1);
}

#[test]
fn non_mutation_body_is_invalid() {
    let mut o = owner();
    let r = refused(&mut o, A, "m1", Body::GraphSync(Default::default()));
    assert_eq!(r.reason, RollbackReason::Invalid);
}

#[test]
fn events_and_outcomes_carry_ids_seq_and_time() {
    let mut o = owner();
    let r = ok(&mut o, A, "m1", create(0, node("c:a")));
    assert_eq!(r.recipients, vec![A]);
    assert_eq!(
        (r.event().id.as_str(), r.event().seq, r.event().timestamp),
        ("m1", Some(1), Some(1000))
    );
    assert_eq!(
        (
            r.event().user_id.as_deref(),
            r.event().session_id.as_deref()
        ),
        (Some("u1"), Some("s1"))
    );
    assert_eq!(
        (
            r.outcome().seq,
            r.outcome().user_id.as_deref(),
            r.outcome().session_id.as_deref()
        ),
        (Some(1), Some("u1"), Some("s1"))
    );
    let c = confirmed(&r);
    assert_eq!(
        (c.reference.as_str(), c.seq, c.rev, c.commit.as_str()),
        ("m1", 1, 1, COMMIT)
    );
    let Body::NodeCreate(ev) = &r.event().body else {
        panic!()
    };
    assert_eq!(ev.commit.as_deref(), Some(COMMIT));
}

#[test]
fn update_event_carries_only_changed_fields() {
    let mut o = with_a();
    let set = NodeSet {
        label: Some("a".into()),
        x: Some(3.0),
        ..NodeSet::default()
    };
    let r = ok(&mut o, A, "m1", update(1, "c:a", set));
    let Body::NodeUpdate(ev) = &r.event().body else {
        panic!()
    };
    assert_eq!(
        ev.set,
        Some(NodeSet {
            x: Some(3.0),
            ..NodeSet::default()
        })
    );
    assert_eq!(
        (ev.rev, ev.updated_at, ev.updated_by.as_deref()),
        (Some(2), Some(1001), Some("u1"))
    );
    assert_eq!(committed_node(&o, "c:a").unwrap().rev, Some(2));
}

#[test]
fn update_with_nothing_to_change_is_invalid() {
    let mut o = with_a();
    assert_eq!(
        refused(&mut o, A, "m1", update(1, "c:a", NodeSet::default())).reason,
        RollbackReason::Invalid
    );
}

#[test]
fn props_null_removes_a_key() {
    let mut o = owner();
    let mut props = Props::new();
    props.insert("k".into(), PropValue::Number(1.0));
    props.insert("j".into(), PropValue::Bool(true));
    ok(
        &mut o,
        A,
        "m1",
        create(
            0,
            Node {
                props: Some(props),
                ..node("c:a")
            },
        ),
    );
    let mut patch = PropsPatch::new();
    patch.insert("k".into(), None);
    patch.insert("absent".into(), None);
    let r = ok(
        &mut o,
        A,
        "m2",
        update(
            1,
            "c:a",
            NodeSet {
                props: Some(patch),
                ..NodeSet::default()
            },
        ),
    );
    let n = committed_node(&o, "c:a").unwrap();
    assert_eq!(n.props.as_ref().unwrap().len(), 1);
    let Body::NodeUpdate(ev) = &r.event().body else {
        panic!()
    };
    let delta = ev.set.as_ref().unwrap().props.as_ref().unwrap();
    assert_eq!(delta.len(), 1, "only the key that existed changed");
}

// ---- validation (docs/protocol.md 3) ----

#[test]
fn node_id_must_be_prefix_colon_identifier() {
    let mut o = owner();
    for bad in ["", "nocolon", "Up:x", "c:", "c:a\u{7}b", "9a:x"] {
        assert_eq!(
            refused(&mut o, A, "m", create(0, node(bad))).reason,
            RollbackReason::Invalid,
            "{bad:?}"
        );
    }
    let long = format!("c:{}", "x".repeat(300));
    assert_eq!(
        refused(&mut o, A, "m-2", create(0, node(&long))).reason,
        RollbackReason::TooLarge
    );
}

#[test]
fn kind_over_32_bytes_is_too_large() {
    let mut o = owner();
    let r = refused(
        &mut o,
        A,
        "m",
        create(
            0,
            Node {
                kind: Some("k".repeat(33)),
                ..node("c:a")
            },
        ),
    );
    assert_eq!(r.reason, RollbackReason::TooLarge);
    assert_eq!(r.message, "node.kind is 33 bytes; the limit is 32");
}

#[test]
fn label_over_1024_bytes_is_too_large_and_names_the_field() {
    let mut o = with_a();
    let r = refused(&mut o, A, "m", label(1, "c:a", &"x".repeat(1500)));
    assert_eq!(r.reason, RollbackReason::TooLarge);
    assert_eq!(r.message, "set.label is 1500 bytes; the limit is 1024");
    let r = refused(
        &mut o,
        A,
        "m-2",
        create(
            0,
            Node {
                label: Some("x".repeat(1500)),
                ..node("c:b")
            },
        ),
    );
    assert_eq!(r.message, "node.label is 1500 bytes; the limit is 1024");
}

#[test]
fn content_over_65536_bytes_is_too_large() {
    let mut o = owner();
    let r = refused(
        &mut o,
        A,
        "m",
        create(
            0,
            Node {
                content: Some("x".repeat(65_537)),
                ..node("c:a")
            },
        ),
    );
    assert_eq!(r.reason, RollbackReason::TooLarge);
}

#[test]
fn content_over_the_limit_after_a_text_op_is_too_large() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m1",
        create(
            0,
            Node {
                content: Some("x".repeat(65_530)),
                ..node("c:a")
            },
        ),
    );
    let r = refused(
        &mut o,
        A,
        "m2",
        text(1, "c:a", ins(65_530, "0123456789", 0)),
    );
    assert_eq!(r.reason, RollbackReason::TooLarge);
    assert!(r.current.is_some());
    assert_eq!(
        committed_node(&o, "c:a")
            .unwrap()
            .content
            .as_ref()
            .unwrap()
            .len(),
        65_530
    );
}

#[test]
fn position_must_be_finite() {
    let mut o = owner();
    let r = refused(
        &mut o,
        A,
        "m",
        create(
            0,
            Node {
                x: Some(f64::INFINITY),
                ..node("c:a")
            },
        ),
    );
    assert_eq!(r.reason, RollbackReason::Invalid);
    assert!(r.message.contains("node.x"));
}

#[test]
fn props_keys_values_and_count_are_checked() {
    let mut o = with_a();
    let p = |k: &str, v: PropValue| {
        let mut m = PropsPatch::new();
        m.insert(k.into(), Some(v));
        update(
            1,
            "c:a",
            NodeSet {
                props: Some(m),
                ..NodeSet::default()
            },
        )
    };
    assert_eq!(
        refused(&mut o, A, "m", p("bad key", PropValue::Bool(true))).reason,
        RollbackReason::Invalid
    );
    assert_eq!(
        refused(
            &mut o,
            A,
            "m-2",
            p("k", PropValue::String("s".repeat(1025)))
        )
        .reason,
        RollbackReason::TooLarge
    );
    assert_eq!(
        refused(&mut o, A, "m-3", p("k", PropValue::Number(f64::NAN))).reason,
        RollbackReason::Invalid
    );
    let many: PropsPatch = (0..65)
        .map(|i| (format!("k{i}"), Some(PropValue::Bool(true))))
        .collect();
    let r = refused(
        &mut o,
        A,
        "m-4",
        update(
            1,
            "c:a",
            NodeSet {
                props: Some(many),
                ..NodeSet::default()
            },
        ),
    );
    assert_eq!(r.reason, RollbackReason::TooLarge);
    assert!(
        r.current.is_some(),
        "the node exists, so the rollback carries it"
    );
}

#[test]
fn edge_type_must_be_configured() {
    let mut o = owner();
    ok(&mut o, A, "m1", create(0, node("c:a")));
    ok(&mut o, A, "m2", create(0, node("c:b")));
    let r = refused(&mut o, A, "m3", create_edge(2, edge("c:a", "c:b", "likes")));
    assert_eq!(r.reason, RollbackReason::Invalid);
    let mut config = OwnerConfig::default();
    config.edge_types.push("likes".into());
    let mut o = Owner::new("g", "e".into(), config);
    ok(&mut o, A, "m1", create(0, node("c:a")));
    ok(&mut o, A, "m2", create(0, node("c:b")));
    ok(&mut o, A, "m3", create_edge(2, edge("c:a", "c:b", "likes")));
}

#[test]
fn blocks_and_depends_on_may_not_loop() {
    let mut o = with_a();
    for ty in ["blocks", "depends-on"] {
        assert_eq!(
            refused(&mut o, A, "m", create_edge(1, edge("c:a", "c:a", ty))).reason,
            RollbackReason::Invalid
        );
    }
    ok(
        &mut o,
        A,
        "m2",
        create_edge(1, edge("c:a", "c:a", "relates-to")),
    );
}

#[test]
fn confidence_outside_0_to_1_is_invalid_and_rationale_is_bounded() {
    let mut o = owner();
    ok(&mut o, A, "m1", create(0, node("c:a")));
    ok(&mut o, A, "m2", create(0, node("c:b")));
    let e = Edge {
        confidence: Some(1.5),
        ..edge("c:a", "c:b", "blocks")
    };
    assert_eq!(
        refused(&mut o, A, "m", create_edge(2, e)).reason,
        RollbackReason::Invalid
    );
    let e = Edge {
        rationale: Some("r".repeat(1025)),
        ..edge("c:a", "c:b", "blocks")
    };
    assert_eq!(
        refused(&mut o, A, "m-2", create_edge(2, e)).reason,
        RollbackReason::TooLarge
    );
}

#[test]
fn edge_gets_its_id_and_defaults() {
    let mut o = owner();
    ok(&mut o, A, "m1", create(0, node("c:a")));
    ok(&mut o, A, "m2", create(0, node("c:b")));
    ok(
        &mut o,
        A,
        "m3",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    let e = o.committed_edges.get("c:a -[blocks]-> c:b").unwrap();
    assert_eq!(
        (e.confidence, e.bidirectional, e.rationale.as_deref()),
        (Some(1.0), Some(false), Some(""))
    );
    assert_eq!((e.rev, e.created_by.as_deref()), (Some(3), Some("u1")));
}

// ---- concurrency (docs/protocol.md 4.2) ----

#[test]
fn field_changed_by_another_session_after_base_seq_is_conflict_resolved() {
    let mut o = with_a();
    ok(&mut o, A, "m1", label(1, "c:a", "from A"));
    let r = ok(&mut o, B, "m2", label(1, "c:a", "from B"));
    let c = conflicted(&r);
    assert_eq!(c.conflicts.len(), 1);
    assert_eq!(
        (
            c.conflicts[0].field.as_str(),
            c.conflicts[0].seq,
            c.conflicts[0].user_id.as_str()
        ),
        ("label", 2, "u1")
    );
    assert_eq!(
        c.resolution.label.as_deref(),
        Some("from B"),
        "last writer wins"
    );
    assert_eq!((c.seq, c.rev, c.commit.as_str()), (3, Some(3), COMMIT));
    assert_eq!(
        committed_node(&o, "c:a").unwrap().label.as_deref(),
        Some("from B")
    );
}

#[test]
fn own_earlier_change_is_not_a_conflict() {
    let mut o = with_a();
    ok(&mut o, A, "m1", label(1, "c:a", "one"));
    confirmed(&ok(&mut o, A, "m2", label(1, "c:a", "two")));
}

#[test]
fn change_before_base_seq_is_not_a_conflict() {
    let mut o = with_a();
    ok(&mut o, B, "m1", label(1, "c:a", "one"));
    confirmed(&ok(&mut o, A, "m2", label(2, "c:a", "two")));
}

#[test]
fn other_session_hidden_behind_own_later_change_is_still_a_conflict() {
    let mut o = with_a();
    ok(&mut o, B, "m1", label(1, "c:a", "b"));
    ok(&mut o, A, "m2", label(2, "c:a", "a1"));
    let r = ok(&mut o, A, "m3", label(1, "c:a", "a2"));
    assert_eq!(conflicted(&r).conflicts[0].seq, 2);
}

#[test]
fn different_fields_do_not_conflict() {
    let mut o = with_a();
    ok(&mut o, A, "m1", label(1, "c:a", "x"));
    confirmed(&ok(
        &mut o,
        B,
        "m2",
        update(
            1,
            "c:a",
            NodeSet {
                x: Some(5.0),
                ..NodeSet::default()
            },
        ),
    ));
    let n = committed_node(&o, "c:a").unwrap();
    assert_eq!((n.label.as_deref(), n.x), (Some("x"), Some(5.0)));
}

#[test]
fn props_conflict_per_key() {
    let mut o = with_a();
    let set = |k: &str, v: f64| {
        let mut m = PropsPatch::new();
        m.insert(k.into(), Some(PropValue::Number(v)));
        NodeSet {
            props: Some(m),
            ..NodeSet::default()
        }
    };
    ok(&mut o, A, "m1", update(1, "c:a", set("a", 1.0)));
    confirmed(&ok(&mut o, B, "m2", update(1, "c:a", set("b", 2.0))));
    let r = ok(&mut o, B, "m3", update(1, "c:a", set("a", 3.0)));
    let c = conflicted(&r);
    assert_eq!(c.conflicts[0].field, "props.a");
    let mut expect = PropsPatch::new();
    expect.insert("a".into(), Some(PropValue::Number(3.0)));
    assert_eq!(c.resolution.props, Some(expect));
}

#[test]
fn update_of_node_deleted_after_base_seq_rolls_back_deleted() {
    let mut o = with_a();
    ok(&mut o, A, "m1", delete(1, "c:a"));
    let r = refused(&mut o, B, "m2", label(1, "c:a", "late"));
    assert_eq!(r.reason, RollbackReason::Deleted);
    assert!(r.current.is_none());
}

#[test]
fn delete_of_node_deleted_after_base_seq_rolls_back_deleted() {
    let mut o = with_a();
    ok(&mut o, A, "m1", delete(1, "c:a"));
    assert_eq!(
        refused(&mut o, B, "m2", delete(1, "c:a")).reason,
        RollbackReason::Deleted
    );
}

#[test]
fn update_of_node_deleted_at_or_before_base_seq_is_not_found() {
    let mut o = with_a();
    ok(&mut o, A, "m1", delete(1, "c:a"));
    assert_eq!(
        refused(&mut o, B, "m2", label(2, "c:a", "late")).reason,
        RollbackReason::NotFound
    );
}

#[test]
fn update_of_node_that_never_existed_is_not_found() {
    let mut o = with_a();
    assert_eq!(
        refused(&mut o, B, "m2", label(1, "c:zzz", "x")).reason,
        RollbackReason::NotFound
    );
}

#[test]
fn concurrent_create_merges_as_update() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m1",
        create(
            0,
            Node {
                label: Some("first".into()),
                x: Some(1.0),
                ..node("c:a")
            },
        ),
    );
    let r = ok(
        &mut o,
        B,
        "m2",
        create(
            0,
            Node {
                label: Some("second".into()),
                y: Some(2.0),
                ..node("c:a")
            },
        ),
    );
    let c = conflicted(&r);
    let fields: Vec<&str> = c.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, vec!["label", "y"]);
    assert_eq!(c.resolution.label.as_deref(), Some("second"));
    let Body::NodeUpdate(ev) = &r.event().body else {
        panic!("others see an update: {:?}", r.event().body)
    };
    assert_eq!(
        ev.set,
        Some(NodeSet {
            label: Some("second".into()),
            y: Some(2.0),
            ..NodeSet::default()
        })
    );
    let n = committed_node(&o, "c:a").unwrap();
    assert_eq!(
        (n.x, n.y, n.created_by.as_deref(), n.updated_by.as_deref()),
        (Some(1.0), Some(2.0), Some("u1"), Some("u2"))
    );
}

#[test]
fn concurrent_create_setting_no_field_still_reports_the_create() {
    let mut o = owner();
    ok(&mut o, A, "m1", create(0, node("c:a")));
    let r = ok(&mut o, B, "m2", create(0, node("c:a")));
    assert_eq!(conflicted(&r).conflicts[0].field, "id");
}

#[test]
fn create_of_node_that_existed_at_base_seq_rolls_back_already_exists() {
    let mut o = with_a();
    let r = refused(&mut o, B, "m1", create(1, node("c:a")));
    assert_eq!(r.reason, RollbackReason::AlreadyExists);
    assert!(matches!(r.current, Some(Entity::Node(n)) if n.label.as_deref() == Some("a")));
}

#[test]
fn concurrent_edge_create_merges_as_update() {
    let mut o = owner();
    ok(&mut o, A, "m1", create(0, node("c:a")));
    ok(&mut o, A, "m2", create(0, node("c:b")));
    ok(
        &mut o,
        A,
        "m3",
        create_edge(
            2,
            Edge {
                confidence: Some(0.5),
                ..edge("c:a", "c:b", "blocks")
            },
        ),
    );
    let r = ok(
        &mut o,
        B,
        "m4",
        create_edge(
            2,
            Edge {
                confidence: Some(0.9),
                ..edge("c:a", "c:b", "blocks")
            },
        ),
    );
    assert_eq!(conflicted(&r).conflicts[0].field, "confidence");
    assert!(matches!(&r.event().body, Body::EdgeUpdate(_)));
    assert_eq!(
        o.committed_edges
            .get("c:a -[blocks]-> c:b")
            .unwrap()
            .confidence,
        Some(0.9)
    );
    let r = refused(
        &mut o,
        B,
        "m5",
        create_edge(3, edge("c:a", "c:b", "blocks")),
    );
    assert_eq!(r.reason, RollbackReason::AlreadyExists);
    assert!(matches!(r.current, Some(Entity::Edge(_))));
}

#[test]
fn edge_create_with_missing_endpoint_is_not_found() {
    let mut o = with_a();
    let r = refused(
        &mut o,
        A,
        "m",
        create_edge(1, edge("c:a", "c:nope", "blocks")),
    );
    assert_eq!(r.reason, RollbackReason::NotFound);
    assert!(r.message.contains("edge.target"));
}

#[test]
fn edge_create_with_endpoint_deleted_after_base_seq_is_deleted() {
    let mut o = with_a();
    ok(&mut o, A, "m1", create(1, node("c:b")));
    ok(&mut o, A, "m2", delete(2, "c:b"));
    assert_eq!(
        refused(&mut o, B, "m", create_edge(2, edge("c:a", "c:b", "blocks"))).reason,
        RollbackReason::Deleted
    );
    assert_eq!(
        refused(
            &mut o,
            B,
            "m-2",
            create_edge(3, edge("c:a", "c:b", "blocks"))
        )
        .reason,
        RollbackReason::NotFound
    );
}

#[test]
fn node_delete_deletes_every_touching_edge_in_the_same_change() {
    let mut o = with_a();
    ok(&mut o, A, "m1", create(1, node("c:b")));
    ok(&mut o, A, "m2", create(1, node("c:c")));
    ok(
        &mut o,
        A,
        "m3",
        create_edge(3, edge("c:a", "c:b", "blocks")),
    );
    ok(
        &mut o,
        A,
        "m4",
        create_edge(3, edge("c:c", "c:a", "relates-to")),
    );
    ok(
        &mut o,
        A,
        "m5",
        create_edge(3, edge("c:b", "c:c", "relates-to")),
    );
    let r = ok(&mut o, B, "m6", delete(6, "c:a"));
    let Body::NodeDelete(ev) = &r.event().body else {
        panic!()
    };
    // The event names the node alone; every client drops its edges itself.
    assert_eq!(
        serde_json::to_value(ev).unwrap(),
        serde_json::json!({"id": "c:a", "commit": COMMIT})
    );
    assert_eq!(r.seq, 7);
    assert_eq!(o.committed_edges.len(), 1);
    assert!(o.live.nodes["c:b"].edges.len() == 1 && o.live.nodes["c:c"].edges.len() == 1);
    let Submit::Ordered(_) = submit(
        &mut o,
        A,
        "m7",
        Body::EdgeDelete(EdgeDelete {
            base_seq: Some(7),
            id: Some("c:b -[relates-to]-> c:c".into()),
            ..EdgeDelete::default()
        }),
    ) else {
        panic!()
    };
}

#[test]
fn edge_update_and_delete_by_triple() {
    let mut o = with_a();
    ok(&mut o, A, "m1", create(1, node("c:b")));
    ok(
        &mut o,
        A,
        "m2",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    let triple = |base| EdgeUpdate {
        base_seq: Some(base),
        source: Some("c:a".into()),
        edge_type: Some("blocks".into()),
        target: Some("c:b".into()),
        set: Some(EdgeSet {
            rationale: Some("why".into()),
            ..EdgeSet::default()
        }),
        ..EdgeUpdate::default()
    };
    let r = ok(&mut o, A, "m3", Body::EdgeUpdate(triple(3)));
    let Body::EdgeUpdate(ev) = &r.event().body else {
        panic!()
    };
    assert_eq!(ev.id.as_deref(), Some("c:a -[blocks]-> c:b"));
    ok(
        &mut o,
        A,
        "m4",
        Body::EdgeDelete(EdgeDelete {
            base_seq: Some(4),
            source: Some("c:a".into()),
            edge_type: Some("blocks".into()),
            target: Some("c:b".into()),
            ..EdgeDelete::default()
        }),
    );
    assert!(o.committed_edges.is_empty());
    assert_eq!(
        refused(&mut o, B, "m5", Body::EdgeUpdate(triple(3))).reason,
        RollbackReason::Deleted
    );
    assert_eq!(
        refused(&mut o, B, "m6", Body::EdgeUpdate(triple(5))).reason,
        RollbackReason::NotFound
    );
}

#[test]
fn edge_field_conflict_is_resolved_last_writer_wins() {
    let mut o = with_a();
    ok(&mut o, A, "m1", create(1, node("c:b")));
    ok(
        &mut o,
        A,
        "m2",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    let id = "c:a -[blocks]-> c:b";
    ok(
        &mut o,
        A,
        "m3",
        edge_set(
            3,
            id,
            EdgeSet {
                bidirectional: Some(true),
                ..EdgeSet::default()
            },
        ),
    );
    let r = ok(
        &mut o,
        B,
        "m4",
        edge_set(
            3,
            id,
            EdgeSet {
                bidirectional: Some(false),
                ..EdgeSet::default()
            },
        ),
    );
    let c = conflicted(&r);
    assert_eq!(
        (c.conflicts[0].field.as_str(), c.resolution.bidirectional),
        ("bidirectional", Some(false))
    );
}

// ---- batches ----

#[test]
fn batch_is_one_change_and_ops_see_earlier_ops() {
    let mut o = owner();
    let ops = vec![
        op_of(create(0, node("c:a"))),
        op_of(create(0, node("c:b"))),
        op_of(create_edge(0, edge("c:a", "c:b", "blocks"))),
        op_of(label(0, "c:a", "x")),
        op_of(text(0, "c:a", ins(0, "hi", 0))),
    ];
    let r = ok(&mut o, A, "m1", batch(0, ops));
    assert_eq!((r.seq, o.committed_seq()), (1, 1));
    let Body::BatchUpdate(ev) = &r.event().body else {
        panic!()
    };
    assert_eq!(ev.ops.len(), 5);
    assert_eq!(ev.commit.as_deref(), Some(COMMIT));
    let n = committed_node(&o, "c:a").unwrap();
    assert_eq!(
        (n.label.as_deref(), n.content.as_deref()),
        (Some("x"), Some("hi"))
    );
    assert_eq!(o.committed_edges.len(), 1);
    o.take_group();
}

#[test]
fn batch_with_one_bad_op_applies_nothing() {
    let mut o = with_a();
    ok(&mut o, A, "m1", create(1, node("c:b")));
    ok(
        &mut o,
        A,
        "m2",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    let before_live: Vec<(String, Arc<Node>)> = {
        let mut v: Vec<_> = o
            .live
            .nodes
            .iter()
            .map(|(k, e)| (k.clone(), e.node.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let ops = vec![
        op_of(label(3, "c:a", "changed")),
        op_of(delete(3, "c:b")),
        op_of(create(3, node("c:new"))),
        op_of(label(3, "c:missing", "x")),
    ];
    let r = refused(&mut o, A, "m3", batch(3, ops));
    assert_eq!((r.reason, r.index), (RollbackReason::NotFound, Some(3)));
    assert!(r.message.starts_with("op 3 (node.update)"), "{}", r.message);
    assert_eq!(o.ordered_seq(), 3);
    let mut after: Vec<_> = o
        .live
        .nodes
        .iter()
        .map(|(k, e)| (k.clone(), e.node.clone()))
        .collect();
    after.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(before_live, after);
    assert_eq!(o.live.edges.len(), 1);
    assert_eq!(o.live.nodes["c:a"].edges.len(), 1);
    assert!(o.live.node_tombs.is_empty());
    assert!(o.take_group().is_none());
    // Nothing was stamped either: a later change by B is no conflict.
    confirmed(&ok(&mut o, B, "m4", label(3, "c:a", "b")));
}

#[test]
fn batch_over_the_op_limit_is_too_large() {
    let mut o = owner();
    let ops = (0..1001)
        .map(|i| op_of(create(0, node(&format!("c:{i}")))))
        .collect();
    assert_eq!(
        refused(&mut o, A, "m", batch(0, ops)).reason,
        RollbackReason::TooLarge
    );
    assert_eq!(
        refused(&mut o, A, "m-2", batch(0, vec![])).reason,
        RollbackReason::Invalid
    );
    let ops = (0..1000)
        .map(|i| op_of(create(0, node(&format!("c:{i}")))))
        .collect();
    assert_eq!(submit(&mut o, A, "m-3", batch(0, ops)), Submit::Ordered(1));
}

#[test]
fn batch_conflicts_carry_the_op_index() {
    let mut o = with_a();
    ok(&mut o, A, "m1", label(1, "c:a", "a2"));
    let r = ok(
        &mut o,
        B,
        "m2",
        batch(
            1,
            vec![op_of(create(1, node("c:b"))), op_of(label(1, "c:a", "b"))],
        ),
    );
    let c = conflicted(&r);
    assert_eq!(c.conflicts[0].index, Some(1));
    let ops = c.resolution.ops.as_ref().unwrap();
    assert_eq!(
        (ops[0].index, ops[0].resolution.label.as_deref()),
        (1, Some("b"))
    );
}

// ---- text ----

#[test]
fn text_ops_merge_without_conflict() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("hello world".into()),
                ..node("c:a")
            },
        ),
    );
    let ra = ok(&mut o, A, "m1", text(1, "c:a", ins(5, ",", 6)));
    confirmed(&ra);
    let rb = ok(&mut o, B, "m2", text(1, "c:a", ins(11, "!", 0)));
    let c = confirmed(&rb);
    let applied = c.text.as_ref().unwrap().content.as_ref().unwrap();
    assert_eq!(applied, &ins(12, "!", 0), "transformed past A's insert");
    let Body::NodeUpdate(ev) = &rb.event().body else {
        panic!()
    };
    assert_eq!(ev.text.as_ref().unwrap().content.as_ref(), Some(applied));
    assert_eq!(
        committed_node(&o, "c:a").unwrap().content.as_deref(),
        Some("hello, world!")
    );
}

#[test]
fn text_inserts_at_the_same_place_keep_server_order() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("ab".into()),
                ..node("c:a")
            },
        ),
    );
    ok(&mut o, A, "m1", text(1, "c:a", ins(1, "X", 1)));
    ok(&mut o, B, "m2", text(1, "c:a", ins(1, "Y", 1)));
    assert_eq!(
        committed_node(&o, "c:a").unwrap().content.as_deref(),
        Some("aXYb")
    );
}

#[test]
fn text_op_is_transformed_over_a_set_content() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("abc".into()),
                ..node("c:a")
            },
        ),
    );
    ok(
        &mut o,
        A,
        "m1",
        update(
            1,
            "c:a",
            NodeSet {
                content: Some("new".into()),
                ..NodeSet::default()
            },
        ),
    );
    let r = ok(&mut o, B, "m2", text(1, "c:a", ins(3, "!", 0)));
    confirmed(&r);
    assert_eq!(
        committed_node(&o, "c:a").unwrap().content.as_deref(),
        Some("new!")
    );
}

#[test]
fn set_content_conflicts_like_any_field() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("abc".into()),
                ..node("c:a")
            },
        ),
    );
    ok(&mut o, A, "m1", text(1, "c:a", ins(3, "d", 0)));
    let r = ok(
        &mut o,
        B,
        "m2",
        update(
            1,
            "c:a",
            NodeSet {
                content: Some("xyz".into()),
                ..NodeSet::default()
            },
        ),
    );
    let c = conflicted(&r);
    assert_eq!(
        (
            c.conflicts[0].field.as_str(),
            c.resolution.content.as_deref()
        ),
        ("content", Some("xyz"))
    );
}

#[test]
fn text_op_of_the_wrong_length_is_invalid() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("abc".into()),
                ..node("c:a")
            },
        ),
    );
    let r = refused(&mut o, A, "m1", text(1, "c:a", ins(5, "x", 0)));
    assert_eq!(r.reason, RollbackReason::Invalid);
    assert!(r.message.contains("text.content"), "{}", r.message);
}

#[test]
fn set_content_and_text_in_one_update_is_invalid() {
    let mut o = with_a();
    let body = Body::NodeUpdate(NodeUpdate {
        base_seq: Some(1),
        id: "c:a".into(),
        set: Some(NodeSet {
            content: Some("x".into()),
            ..NodeSet::default()
        }),
        text: Some(TextEdits {
            content: Some(ins(0, "y", 0)),
        }),
        ..NodeUpdate::default()
    });
    assert_eq!(
        refused(&mut o, A, "m", body).reason,
        RollbackReason::Invalid
    );
}

#[test]
fn text_ops_of_one_batch_see_each_other() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("ab".into()),
                ..node("c:a")
            },
        ),
    );
    ok(&mut o, A, "m1", text(1, "c:a", ins(0, "<", 2)));
    // B, at base 1, types "X" after "a" then "Y" after "aX".
    let r = ok(
        &mut o,
        B,
        "m2",
        batch(
            1,
            vec![
                op_of(text(1, "c:a", ins(1, "X", 1))),
                op_of(text(1, "c:a", ins(2, "Y", 1))),
            ],
        ),
    );
    confirmed(&r);
    assert_eq!(
        committed_node(&o, "c:a").unwrap().content.as_deref(),
        Some("<aXYb")
    );
}

#[test]
fn stale_base_seq_for_text_rolls_back_stale() {
    let config = OwnerConfig {
        replay_changes: 2,
        replay_ms: 0,
        ..OwnerConfig::default()
    };
    let mut o = Owner::new("g", "e".into(), config);
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("ab".into()),
                ..node("c:a")
            },
        ),
    );
    for i in 1..=4 {
        ok(
            &mut o,
            A,
            &format!("m{i}"),
            text(i, "c:a", ins(0, "x", 1 + i)),
        );
    }
    let r = refused(&mut o, B, "late", text(1, "c:a", ins(0, "y", 2)));
    assert_eq!(r.reason, RollbackReason::Stale);
    assert!(r.current.is_some());
    // A base inside the history still merges.
    confirmed(&ok(&mut o, B, "ok", text(4, "c:a", ins(0, "y", 5))));
}

#[test]
fn text_op_on_a_node_created_after_base_seq_is_stale() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m0",
        create(
            0,
            Node {
                content: Some("ab".into()),
                ..node("c:a")
            },
        ),
    );
    assert_eq!(
        refused(&mut o, B, "m1", text(0, "c:a", ins(0, "y", 2))).reason,
        RollbackReason::Stale
    );
}

// ---- idempotency (4.4) ----

#[test]
fn repeated_mutation_id_returns_original_outcome() {
    let mut o = with_a();
    let first = ok(&mut o, B, "m1", label(1, "c:a", "b"));
    let again = submit(&mut o, B, "m1", label(1, "c:a", "something else"));
    let Submit::Reply(env) = again else {
        panic!("not a reply")
    };
    assert_eq!(env.body, first.outcome().body);
    assert_eq!(o.ordered_seq(), 2, "not applied twice");
    assert_eq!(
        committed_node(&o, "c:a").unwrap().label.as_deref(),
        Some("b")
    );
}

#[test]
fn repeated_mutation_id_while_pending_adds_the_session_to_recipients() {
    let mut o = with_a();
    assert_eq!(
        submit(&mut o, B, "m1", label(1, "c:a", "b")),
        Submit::Ordered(2)
    );
    let reconnected = Origin {
        session: 77,
        session_id: "s77".into(),
        user_id: "u2".into(),
    };
    assert_eq!(
        o.submit(reconnected, "m1", label(1, "c:a", "b"), 5),
        Submit::Ordered(2)
    );
    let releases = commit_all(&mut o);
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].recipients, vec![B, 77]);
}

#[test]
fn same_mutation_id_from_another_user_is_a_new_change() {
    let mut o = with_a();
    ok(&mut o, A, "m1", label(1, "c:a", "a"));
    assert_eq!(
        submit(&mut o, B, "m1", label(1, "c:a", "b")),
        Submit::Ordered(3)
    );
}

#[test]
fn rolled_back_mutation_id_gets_the_same_rollback_again() {
    let mut o = with_a();
    let first = refused(&mut o, B, "m1", label(1, "c:nope", "b"));
    assert_eq!(first.reason, RollbackReason::NotFound);
    // The world changed (the node exists now), and the resend is even
    // another body: the first answer stands (docs/protocol.md 4.4).
    ok(&mut o, A, "m2", create(1, node("c:nope")));
    let again = refused(&mut o, B, "m1", label(2, "c:nope", "b"));
    assert_eq!(again, first);
    // Another user's id is their own.
    confirmed(&ok(&mut o, A, "m1", label(2, "c:nope", "a")));
    // A mutation refused before it reached the owner is remembered too.
    let Submit::Reply(e) = o.refuse(origin(B), "m3", RollbackReason::Invalid, "bad".into(), 5)
    else {
        panic!()
    };
    assert!(matches!(e.body, Body::UpdateRollback(ref r) if r.reason == RollbackReason::Invalid));
    assert_eq!(
        refused(&mut o, B, "m3", label(3, "c:a", "b")).message,
        "bad"
    );
    // Refusing an id that was applied answers with its outcome.
    assert!(matches!(
        o.refuse(origin(A), "m2", RollbackReason::Invalid, "bad".into(), 5),
        Submit::Reply(Envelope {
            body: Body::UpdateConfirmed(_),
            ..
        })
    ));
}

#[test]
fn unavailable_is_not_remembered() {
    let mut o = with_a();
    submit(&mut o, B, "m1", label(1, "c:a", "b"));
    o.take_group();
    let failed = o.commit_failed();
    assert!(
        matches!(&failed[0].1.body, Body::UpdateRollback(r) if r.reason == RollbackReason::Unavailable)
    );
    assert_eq!(o.remembered_rollbacks(), 0);
    assert_eq!(
        submit(&mut o, B, "m1", label(1, "c:a", "b")),
        Submit::Ordered(2)
    );
}

// ---- commit, failure, sync ----

#[test]
fn take_group_hands_out_each_change_once() {
    let mut o = owner();
    assert!(o.take_group().is_none());
    submit(&mut o, A, "m1", create(0, node("c:a")));
    submit(&mut o, A, "m2", create(0, node("c:b")));
    let g = o.take_group().unwrap();
    assert_eq!((g.graph.as_str(), g.epoch.as_str()), ("g", "e1"));
    assert_eq!(
        g.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(o.take_group().is_none());
    submit(&mut o, A, "m3", create(0, node("c:c")));
    assert_eq!(o.committed(1, COMMIT).len(), 1);
    assert_eq!(
        o.take_group()
            .unwrap()
            .changes
            .iter()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(
        o.committed(3, COMMIT)
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(o.committed(3, COMMIT).is_empty());
}

#[test]
fn change_record_holds_writes_event_and_outcome() {
    let mut o = with_a();
    ok(&mut o, A, "m1", create(1, node("c:b")));
    ok(
        &mut o,
        A,
        "m2",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    submit(&mut o, B, "m3", delete(3, "c:a"));
    let g = o.take_group().unwrap();
    let rec = &g.changes[0];
    assert_eq!(
        (
            rec.seq,
            rec.user_id.as_str(),
            rec.session_id.as_str(),
            rec.mutation_id.as_str()
        ),
        (4, "u2", "s2", "m3")
    );
    assert!(
        matches!(&rec.writes[..], [Write::EdgeDeleted(_), Write::NodeDeleted(id)] if id == "c:a")
    );
    assert!(matches!(&rec.event.body, Body::NodeDelete(d) if d.commit.is_none()));
    assert!(matches!(&rec.outcome.body, Body::UpdateConfirmed(c) if c.commit.is_empty()));
}

/// The commit is filled into the record the replay window and the release
/// share; a record persistence still holds is copied, not changed.
#[test]
fn a_release_shares_its_record_and_a_held_group_is_left_as_it_was() {
    let mut o = with_a();
    submit(&mut o, B, "m1", label(1, "c:a", "b"));
    let group = o.take_group().expect("a group");
    let released = o.committed(2, COMMIT);
    let [r] = &released[..] else {
        panic!("one release: {released:?}")
    };
    let held = &group.changes[0];
    assert!(!Arc::ptr_eq(held, &r.record), "the held record was copied");
    assert!(matches!(&held.event.body, Body::NodeUpdate(u) if u.commit.is_none()));
    assert_eq!(held.commit(), "");
    assert!(matches!(&r.event().body, Body::NodeUpdate(u) if u.commit.as_deref() == Some(COMMIT)));
    assert_eq!(
        (r.record.commit(), confirmed(r).commit.as_str()),
        (COMMIT, COMMIT)
    );
    assert!(Arc::ptr_eq(
        &r.record,
        o.window.get(2).expect("in the window")
    ));

    submit(&mut o, B, "m2", label(2, "c:a", "c"));
    drop(o.take_group());
    let released = o.committed(3, COMMIT);
    assert_eq!(released[0].record.commit(), COMMIT);
    assert_eq!(
        Arc::strong_count(&released[0].record),
        2,
        "the release and the window"
    );
}

#[test]
fn commit_failure_undoes_uncommitted_changes() {
    let mut o = with_a();
    ok(
        &mut o,
        A,
        "m1",
        create(
            1,
            Node {
                content: Some("abc".into()),
                ..node("c:b")
            },
        ),
    );
    ok(
        &mut o,
        A,
        "m2",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    let snapshot = |o: &Owner| {
        let mut nodes: Vec<Node> = o.live.nodes.values().map(|e| (*e.node).clone()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<Edge> = o.live.edges.values().map(|e| (*e.edge).clone()).collect();
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        let adj: Vec<_> = nodes
            .iter()
            .map(|n| o.live.nodes[&n.id].edges.clone())
            .collect();
        let text: Vec<_> = nodes
            .iter()
            .map(|n| o.live.nodes[&n.id].text.ops.len())
            .collect();
        (
            nodes,
            edges,
            adj,
            text,
            o.live.node_tombs.len(),
            o.live.edge_tombs.len(),
        )
    };
    let before = snapshot(&o);
    submit(&mut o, B, "f1", label(3, "c:a", "gone"));
    submit(&mut o, B, "f2", text(3, "c:b", ins(3, "!", 0)));
    o.take_group();
    submit(&mut o, B, "f3", delete(3, "c:a"));
    submit(
        &mut o,
        A,
        "f4",
        batch(
            3,
            vec![
                op_of(create(3, node("c:n"))),
                op_of(create_edge(3, edge("c:n", "c:b", "blocks"))),
            ],
        ),
    );
    submit(&mut o, A, "f5", create(3, node("c:a2")));
    // A repeat while pending: its session is answered too.
    let again = Origin {
        session: 99,
        session_id: "s99".into(),
        user_id: "u1".into(),
    };
    o.submit(again, "f5", create(3, node("c:a2")), 7);
    assert_eq!(o.ordered_seq(), 8);
    let answers = o.commit_failed();
    let refs: Vec<(u64, String)> = answers
        .iter()
        .map(|(s, e)| match &e.body {
            Body::UpdateRollback(r) => {
                assert_eq!(r.reason, RollbackReason::Unavailable);
                (*s, r.reference.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            (B, "f1".into()),
            (B, "f2".into()),
            (B, "f3".into()),
            (A, "f4".into()),
            (A, "f5".into()),
            (99, "f5".into())
        ]
    );
    assert_eq!((o.ordered_seq(), o.committed_seq()), (3, 3));
    assert_eq!(
        snapshot(&o),
        before,
        "the live graph is the committed graph again"
    );
    assert!(o.take_group().is_none());
    // Nothing of the undone changes is remembered: no conflict, no tombstone,
    // and a resend of a failed id is applied anew with the next seq.
    let r = ok(&mut o, A, "f1", label(3, "c:a", "again"));
    assert_eq!(r.seq, 4);
    confirmed(&r);
    assert_eq!(
        submit(&mut o, B, "f1", label(3, "c:a", "b")),
        Submit::Ordered(5)
    );
}

#[test]
fn sync_never_shows_uncommitted_changes() {
    let mut o = with_a();
    submit(&mut o, A, "m1", label(1, "c:a", "uncommitted"));
    submit(&mut o, A, "m2", create(1, node("c:b")));
    o.take_group();
    match o.sync(None) {
        SyncData::Snapshot { seq, nodes, .. } => {
            assert_eq!(seq, 1);
            assert_eq!(nodes.len(), 1);
            assert_eq!(nodes.get("c:a").unwrap().label.as_deref(), Some("a"));
        }
        other => panic!("{other:?}"),
    }
    match o.sync(Some((0, "e1"))) {
        SyncData::Delta { seq, events, .. } => {
            assert_eq!(seq, 1);
            assert_eq!(events.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    o.committed(2, COMMIT);
    let SyncData::Delta { seq: 2, events, .. } = o.sync(Some((1, "e1"))) else {
        panic!()
    };
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0].body, Body::NodeUpdate(u) if u.commit.as_deref() == Some(COMMIT)));
}

#[test]
fn sync_gives_delta_inside_the_window_and_snapshot_outside() {
    let config = OwnerConfig {
        replay_changes: 3,
        replay_ms: 0,
        ..OwnerConfig::default()
    };
    let mut o = Owner::new("g", "e1".into(), config);
    for i in 0..6 {
        ok(
            &mut o,
            A,
            &format!("m{i}"),
            create(i, node(&format!("c:{i}"))),
        );
    }
    let SyncData::Delta { events, .. } = o.sync(Some((6, "e1"))) else {
        panic!("since == seq is an empty delta")
    };
    assert!(events.is_empty());
    let SyncData::Delta { events, .. } = o.sync(Some((3, "e1"))) else {
        panic!("inside the window")
    };
    assert_eq!(
        events.iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert!(
        matches!(o.sync(Some((2, "e1"))), SyncData::Snapshot { .. }),
        "outside the window"
    );
    assert!(
        matches!(o.sync(Some((6, "other"))), SyncData::Snapshot { .. }),
        "another epoch"
    );
    assert!(
        matches!(o.sync(Some((9, "e1"))), SyncData::Snapshot { .. }),
        "ahead of the graph"
    );
    let SyncData::Snapshot {
        nodes,
        edges,
        seq,
        epoch,
    } = o.sync(None)
    else {
        panic!()
    };
    assert_eq!(
        (nodes.len(), edges.len(), seq, epoch.as_str()),
        (6, 0, 6, "e1")
    );
    assert_eq!(nodes.into_iter().count(), 6);
}

#[test]
fn window_history_and_idempotency_are_bounded() {
    let config = OwnerConfig {
        replay_changes: 10,
        replay_ms: 0,
        ..OwnerConfig::default()
    };
    let mut o = Owner::new("g", "e".into(), config);
    ok(
        &mut o,
        A,
        "c",
        create(
            0,
            Node {
                content: Some("x".into()),
                ..node("c:a")
            },
        ),
    );
    for i in 0..100u64 {
        let base = o.ordered_seq();
        ok(
            &mut o,
            A,
            &format!("t{i}"),
            text(base, "c:a", ins(0, "y", 1 + i)),
        );
        ok(
            &mut o,
            A,
            &format!("n{i}"),
            create(0, node(&format!("c:n{i}"))),
        );
        ok(&mut o, A, &format!("d{i}"), delete(0, &format!("c:n{i}")));
    }
    assert_eq!(o.window.changes.len(), 10);
    assert!(o.live.nodes["c:a"].text.ops.len() <= 10);
    assert!(o.live.node_tombs.len() <= 10);
    assert_eq!(o.idempotency.len(), 10);
    // Past the window, a repeated id is a new change.
    assert_eq!(
        submit(&mut o, A, "c", create(0, node("c:zz"))),
        Submit::Ordered(302)
    );
}

#[test]
fn window_keeps_changes_younger_than_replay_ms() {
    let config = OwnerConfig {
        replay_changes: 2,
        replay_ms: 1_000_000,
        ..OwnerConfig::default()
    };
    let mut o = Owner::new("g", "e".into(), config);
    for i in 0..20 {
        ok(
            &mut o,
            A,
            &format!("n{i}"),
            create(0, node(&format!("c:n{i}"))),
        );
    }
    assert_eq!(o.window.changes.len(), 20);
}

#[test]
fn snapshot_json_lists_the_committed_graph() {
    let mut o = with_a();
    submit(&mut o, A, "m1", create(1, node("c:b")));
    let v: serde_json::Value =
        serde_json::from_slice(&o.sync(None).snapshot_json().unwrap()).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(v["nodes"][0]["id"], "c:a");
}

#[test]
fn the_same_seed_and_input_give_the_same_snapshot_order() {
    let run = |seed: u64| {
        let config = OwnerConfig {
            hash_seed: seed,
            ..OwnerConfig::default()
        };
        let mut o = Owner::new("g", "e1".into(), config);
        for i in 0..200 {
            ok(
                &mut o,
                A,
                &format!("m{i}"),
                create(0, node(&format!("c:n{i}"))),
            );
        }
        let SyncData::Snapshot { nodes, .. } = o.sync(None) else {
            panic!("a snapshot")
        };
        nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "the seed changes the order (200 ids)");
}

// ---- restore ----

/// What persistence would find in git for this owner.
fn restored_of(o: &Owner) -> Restored {
    let mut nodes: Vec<Node> = o.committed_nodes.values().map(|n| (**n).clone()).collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Restored {
        graph: o.graph.clone(),
        epoch: o.epoch.clone(),
        seq: o.committed_seq(),
        nodes,
        edges: o.committed_edges.values().map(|e| (**e).clone()).collect(),
        journal: o
            .window
            .changes
            .iter()
            .map(|c| {
                let mut r = (**c).clone();
                // As persistence gives them: the deletions only.
                r.writes
                    .retain(|w| matches!(w, Write::NodeDeleted(_) | Write::EdgeDeleted(_)));
                r
            })
            .collect(),
    }
}

#[test]
fn restore_rebuilds_seq_window_and_idempotency() {
    let mut o = owner();
    ok(
        &mut o,
        A,
        "m1",
        create(
            0,
            Node {
                content: Some("abc".into()),
                ..node("c:a")
            },
        ),
    );
    ok(&mut o, A, "m2", create(1, node("c:b")));
    ok(
        &mut o,
        A,
        "m3",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    ok(&mut o, A, "m4", label(3, "c:a", "by A"));
    ok(&mut o, A, "m5", text(4, "c:a", ins(3, "d", 0)));
    ok(
        &mut o,
        B,
        "m6",
        update(
            5,
            "c:a",
            NodeSet {
                content: Some("new".into()),
                ..NodeSet::default()
            },
        ),
    );
    ok(&mut o, A, "m7", create(6, node("c:gone")));
    ok(&mut o, A, "m8", delete(7, "c:gone"));
    let original = match submit(&mut o, A, "m4", label(3, "c:a", "x")) {
        Submit::Reply(e) => e,
        other => panic!("{other:?}"),
    };
    let mut r = Owner::restore(restored_of(&o), OwnerConfig::default());
    assert_eq!(
        (r.committed_seq(), r.ordered_seq(), r.epoch()),
        (8, 8, "e1")
    );
    // Delta sync from inside the journal.
    let SyncData::Delta { events, .. } = r.sync(Some((5, "e1"))) else {
        panic!()
    };
    assert_eq!(events.len(), 3);
    // Idempotency: the original outcome.
    let Submit::Reply(again) = submit(&mut r, A, "m4", label(3, "c:a", "x")) else {
        panic!()
    };
    assert_eq!(again.body, original.body);
    // Stamps: A's label at 4 conflicts with B's update at base 3.
    let rel = ok(&mut r, B, "n1", label(3, "c:a", "by B"));
    assert_eq!(conflicted(&rel).conflicts[0].seq, 4);
    // Text history: a text op at base 5 ("abcd") is transformed over the set.content at 6.
    let rel = ok(&mut r, A, "n2", text(5, "c:a", ins(4, "!", 0)));
    confirmed(&rel);
    assert_eq!(
        committed_node(&r, "c:a").unwrap().content.as_deref(),
        Some("new!")
    );
    // Tombstones: deleted after base 7 -> deleted.
    assert_eq!(
        refused(&mut r, B, "n3", label(7, "c:gone", "x")).reason,
        RollbackReason::Deleted
    );
    // Creation stamps: c:b existed at base 2 -> already_exists; a create at base 1 merges.
    assert_eq!(
        refused(&mut r, B, "n4", create(2, node("c:b"))).reason,
        RollbackReason::AlreadyExists
    );
    conflicted(&ok(&mut r, B, "n5", create(1, node("c:b"))));
    // Adjacency: deleting c:a deletes its edge.
    let edges_before = r.committed_edges.len();
    ok(&mut r, B, "n6", delete(11, "c:a"));
    assert_eq!(r.committed_edges.len(), edges_before - 1);
}

#[test]
fn restore_keeps_the_tombstones_of_edges_deleted_with_their_node() {
    let mut o = owner();
    ok(&mut o, A, "m1", create(0, node("c:a")));
    ok(&mut o, A, "m2", create(1, node("c:b")));
    ok(
        &mut o,
        A,
        "m3",
        create_edge(2, edge("c:a", "c:b", "blocks")),
    );
    ok(&mut o, A, "m4", delete(3, "c:a"));
    let mut r = Owner::restore(restored_of(&o), OwnerConfig::default());
    let id = Edge::make_id("c:a", "blocks", "c:b");
    // Deleted after base 3: `deleted`, not `not_found`, after the restart too.
    let set = EdgeSet {
        confidence: Some(0.5),
        ..EdgeSet::default()
    };
    assert_eq!(
        refused(&mut r, B, "n1", edge_set(3, &id, set)).reason,
        RollbackReason::Deleted
    );
}

#[test]
fn restore_without_journal_starts_at_the_committed_seq() {
    let mut o = with_a();
    ok(&mut o, A, "m1", text(1, "c:a", ins(0, "x", 0)));
    let mut restored = restored_of(&o);
    restored.journal.clear();
    let mut r = Owner::restore(restored, OwnerConfig::default());
    assert!(matches!(r.sync(Some((1, "e1"))), SyncData::Snapshot { .. }));
    assert!(matches!(r.sync(Some((2, "e1"))), SyncData::Delta { .. }));
    assert_eq!(
        refused(&mut r, B, "m", text(1, "c:a", ins(0, "y", 0))).reason,
        RollbackReason::Stale
    );
    assert_eq!(
        refused(&mut r, B, "m-2", create(0, node("c:a"))).reason,
        RollbackReason::AlreadyExists
    );
    confirmed(&ok(&mut r, B, "m-3", text(2, "c:a", ins(0, "y", 1))));
}

/// A follower's replica takes the owner's committed changes in order and
/// answers a sync as the owner does; a repeat is ignored, a gap refused.
#[test]
fn a_replica_follows_the_owners_committed_changes() {
    let mut o = owner();
    let mut replica = owner();
    let a = ok(&mut o, A, "m1", create(0, node("c:n1")));
    let b = ok(&mut o, B, "m2", label(1, "c:n1", "renamed"));
    let c = ok(&mut o, A, "m3", create(2, node("c:n2")));
    let first = replica
        .follow(a.record.clone(), COMMIT, 1000)
        .expect("next")
        .expect("new");
    assert_eq!((first.seq, first.event()), (1, a.event()));
    assert_eq!(replica.follow(a.record.clone(), COMMIT, 1000), Ok(None));
    assert_eq!(
        replica.follow(c.record.clone(), COMMIT, 1000),
        Err(FollowGap { have: 1, got: 3 })
    );
    assert!(replica
        .follow(b.record, COMMIT, 1000)
        .expect("next")
        .is_some());
    assert!(replica
        .follow(c.record.clone(), COMMIT, 1000)
        .expect("next")
        .is_some());
    assert_eq!(replica.committed_seq(), 3);
    assert_eq!(
        committed_node(&replica, "c:n1").map(|n| n.label.clone()),
        committed_node(&o, "c:n1").map(|n| n.label.clone())
    );
    assert!(committed_node(&replica, "c:n2").is_some());
    let SyncData::Delta { events, seq, .. } = replica.sync(Some((1, "e1"))) else {
        panic!("the replica's window holds the followed changes")
    };
    assert_eq!((seq, events.len()), (3, 2));
    let after: Vec<u64> = replica.releases_after(1).iter().map(|r| r.seq).collect();
    assert_eq!(after, [2, 3]);
    assert_eq!(replica.releases_after(1)[1].event(), c.event());
}
