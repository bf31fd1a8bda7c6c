//! Property tests of the two codecs: random messages of the main types
//! come back identical through JSON and through binary, and no input makes
//! either decoder panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gitmind_schema::binary::{self, Compression};
use gitmind_schema::message::*;
use gitmind_schema::model::{
    Edge, EdgeSet, Entity, Node, NodeSet, PropValue, Resolution, TextEdits,
};
use gitmind_schema::ot::TextOp;
use gitmind_schema::{json, Limits};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;

/// Finite numbers that JSON writes and reads back exactly (up to two
/// decimals, as layouts and scores use), negative zero included.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1_000_000i64..1_000_000, 0u32..100).prop_map(|(w, f)| w as f64 + f64::from(f) / 100.0),
        Just(0.0),
        Just(-0.0),
        Just(1e300),
        Just(9_007_199_254_740_993.0),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z]{1,8}:[A-Za-z0-9._ -]{1,24}"
}

fn message_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn prop_value() -> impl Strategy<Value = PropValue> {
    prop_oneof![
        text().prop_map(PropValue::String),
        number().prop_map(PropValue::Number),
        any::<bool>().prop_map(PropValue::Bool)
    ]
}

fn props() -> impl Strategy<Value = std::collections::BTreeMap<String, PropValue>> {
    btree_map("[A-Za-z0-9_.-]{1,12}", prop_value(), 0..5)
}

fn patch() -> impl Strategy<Value = std::collections::BTreeMap<String, Option<PropValue>>> {
    btree_map("[A-Za-z0-9_.-]{1,12}", of(prop_value()), 0..5)
}

fn text_op() -> impl Strategy<Value = TextOp> {
    vec(
        prop_oneof![
            (1u64..1_000_000).prop_map(|n| (0u8, n, String::new())),
            "\\PC{1,8}".prop_map(|s| (1u8, 0, s)),
            (1u64..1_000_000).prop_map(|n| (2u8, n, String::new())),
            Just((0u8, (1u64 << 60) + 3, String::new())),
        ],
        0..8,
    )
    .prop_map(|parts| {
        let mut op = TextOp::new();
        for (kind, n, s) in parts {
            match kind {
                0 => op.retain(n),
                1 => op.insert(&s),
                _ => op.delete(n),
            };
        }
        op
    })
}

fn node() -> impl Strategy<Value = Node> {
    (
        ident(),
        of(text()),
        of(text()),
        of(text()),
        of(number()),
        of(number()),
        of(props()),
        (
            of(any::<u64>()),
            of(any::<u64>()),
            of(any::<u64>()),
            of(text()),
            of(text()),
        ),
    )
        .prop_map(
            |(
                id,
                kind,
                label,
                content,
                x,
                y,
                props,
                (rev, created_at, updated_at, created_by, updated_by),
            )| Node {
                id,
                kind,
                label,
                content,
                x,
                y,
                props,
                rev,
                created_at,
                updated_at,
                created_by,
                updated_by,
            },
        )
}

fn edge() -> impl Strategy<Value = Edge> {
    (
        of(text()),
        ident(),
        "[a-z][a-z0-9-]{0,12}",
        ident(),
        of(number()),
        of(text()),
        of(any::<bool>()),
        of(props()),
        (of(any::<u64>()), of(any::<u64>()), of(text())),
    )
        .prop_map(
            |(
                id,
                source,
                edge_type,
                target,
                confidence,
                rationale,
                bidirectional,
                props,
                (rev, updated_at, updated_by),
            )| {
                Edge {
                    id,
                    source,
                    edge_type,
                    target,
                    confidence,
                    rationale,
                    bidirectional,
                    props,
                    rev,
                    created_at: None,
                    updated_at,
                    created_by: None,
                    updated_by,
                }
            },
        )
}

fn node_set() -> impl Strategy<Value = NodeSet> {
    (
        of(text()),
        of(text()),
        of(text()),
        of(number()),
        of(number()),
        of(patch()),
    )
        .prop_map(|(kind, label, content, x, y, props)| NodeSet {
            kind,
            label,
            content,
            x,
            y,
            props,
        })
}

fn node_update() -> impl Strategy<Value = NodeUpdate> {
    (
        of(any::<u64>()),
        ident(),
        of(node_set()),
        of(of(text_op()).prop_map(|content| TextEdits { content })),
        of(any::<u64>()),
        of(any::<u64>()),
        of(text()),
        of("[0-9a-f]{40}"),
    )
        .prop_map(
            |(base_seq, id, set, text, rev, updated_at, updated_by, commit)| NodeUpdate {
                base_seq,
                id,
                set,
                text,
                rev,
                updated_at,
                updated_by,
                commit,
            },
        )
}

fn edge_update() -> impl Strategy<Value = EdgeUpdate> {
    (
        of(any::<u64>()),
        of(text()),
        (of(ident()), of("[a-z-]{1,10}"), of(ident())),
        of((of(number()), of(text()), of(any::<bool>()), of(patch()))),
        of(any::<u64>()),
    )
        .prop_map(
            |(base_seq, id, (source, edge_type, target), set, rev)| EdgeUpdate {
                base_seq,
                id,
                source,
                edge_type,
                target,
                set: set.map(|(confidence, rationale, bidirectional, props)| EdgeSet {
                    confidence,
                    rationale,
                    bidirectional,
                    props,
                }),
                rev,
                updated_at: None,
                updated_by: None,
                commit: None,
            },
        )
}

fn edge_delete() -> impl Strategy<Value = EdgeDelete> {
    (
        of(any::<u64>()),
        of(text()),
        of(ident()),
        of("[a-z-]{1,10}"),
        of(ident()),
        of("[0-9a-f]{40}"),
    )
        .prop_map(
            |(base_seq, id, source, edge_type, target, commit)| EdgeDelete {
                base_seq,
                id,
                source,
                edge_type,
                target,
                commit,
            },
        )
}

fn mutation() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        (of(any::<u64>()), node()).prop_map(|(base_seq, node)| BatchOp::NodeCreate(NodeCreate {
            base_seq,
            node,
            commit: None
        })),
        node_update().prop_map(BatchOp::NodeUpdate),
        ident().prop_map(|id| BatchOp::NodeDelete(NodeDelete {
            base_seq: None,
            id,
            commit: None
        })),
        edge().prop_map(|edge| BatchOp::EdgeCreate(EdgeCreate {
            base_seq: None,
            edge,
            commit: None
        })),
        edge_update().prop_map(BatchOp::EdgeUpdate),
        edge_delete().prop_map(BatchOp::EdgeDelete),
    ]
}

fn status() -> impl Strategy<Value = PresenceStatus> {
    prop_oneof![
        Just(PresenceStatus::Active),
        Just(PresenceStatus::Idle),
        Just(PresenceStatus::Away),
        Just(PresenceStatus::Joined),
        Just(PresenceStatus::Left),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

fn reason() -> impl Strategy<Value = RollbackReason> {
    proptest::sample::select(vec![
        RollbackReason::Invalid,
        RollbackReason::NotFound,
        RollbackReason::AlreadyExists,
        RollbackReason::Deleted,
        RollbackReason::Forbidden,
        RollbackReason::RateLimited,
        RollbackReason::TooLarge,
        RollbackReason::Stale,
        RollbackReason::Unavailable,
    ])
}

fn resolution() -> impl Strategy<Value = Resolution> {
    (
        of(text()),
        of(number()),
        of(number()),
        of(any::<bool>()),
        of(patch()),
    )
        .prop_map(|(label, x, confidence, bidirectional, props)| Resolution {
            label,
            x,
            confidence,
            bidirectional,
            props,
            ..Resolution::default()
        })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (of(any::<u64>()), node(), of("[0-9a-f]{40}")).prop_map(|(base_seq, node, commit)| {
            Body::NodeCreate(NodeCreate {
                base_seq,
                node,
                commit,
            })
        }),
        node_update().prop_map(Body::NodeUpdate),
        (of(any::<u64>()), ident(), of("[0-9a-f]{40}")).prop_map(|(base_seq, id, commit)| {
            Body::NodeDelete(NodeDelete {
                base_seq,
                id,
                commit,
            })
        }),
        (of(any::<u64>()), edge(), of("[0-9a-f]{40}")).prop_map(|(base_seq, edge, commit)| {
            Body::EdgeCreate(EdgeCreate {
                base_seq,
                edge,
                commit,
            })
        }),
        edge_update().prop_map(Body::EdgeUpdate),
        edge_delete().prop_map(Body::EdgeDelete),
        (of(any::<u64>()), vec(mutation(), 0..6), of("[0-9a-f]{40}")).prop_map(
            |(base_seq, ops, commit)| Body::BatchUpdate(BatchUpdate {
                base_seq,
                ops,
                commit
            })
        ),
        (
            status(),
            of(ident()),
            of(text()),
            of("#[0-9a-f]{6}"),
            of(number())
        )
            .prop_map(|(status, focus, display_name, color, chaos_affinity)| {
                Body::UserPresence(UserPresence {
                    status,
                    focus,
                    display_name,
                    color,
                    chaos_affinity,
                })
            }),
        (number(), number(), of(ident()))
            .prop_map(|(x, y, node_id)| Body::CursorMove(CursorMove { x, y, node_id })),
        (vec(ident(), 0..4), vec(text(), 0..4))
            .prop_map(|(nodes, edges)| Body::SelectionChange(SelectionChange { nodes, edges })),
        (
            message_id(),
            any::<u64>(),
            "[0-9a-f]{40}",
            any::<u64>(),
            of(of(text_op()).prop_map(|content| TextEdits { content }))
        )
            .prop_map(|(reference, seq, commit, rev, text)| Body::UpdateConfirmed(
                UpdateConfirmed {
                    reference,
                    seq,
                    commit,
                    rev,
                    text
                }
            )),
        (
            message_id(),
            any::<u64>(),
            of(any::<u64>()),
            vec((text(), any::<u64>(), text(), of(any::<u32>())), 0..3),
            resolution()
        )
            .prop_map(|(reference, seq, rev, conflicts, resolution)| {
                Body::UpdateConflictResolved(UpdateConflictResolved {
                    reference,
                    seq,
                    commit: "c".repeat(40),
                    rev,
                    conflicts: conflicts
                        .into_iter()
                        .map(|(field, seq, user_id, index)| Conflict {
                            field,
                            seq,
                            user_id,
                            index,
                        })
                        .collect(),
                    resolution,
                    text: None,
                })
            }),
        (
            message_id(),
            reason(),
            text(),
            of(prop_oneof![
                node().prop_map(Entity::Node),
                edge().prop_map(Entity::Edge)
            ]),
            of(any::<u32>()),
            of(any::<u64>())
        )
            .prop_map(
                |(reference, reason, message, current, index, retry_after_ms)| Body::UpdateRollback(
                    UpdateRollback {
                        reference,
                        reason,
                        message,
                        current,
                        index,
                        retry_after_ms
                    }
                )
            ),
        (of(any::<u64>()), of(any::<u64>())).prop_map(|(seq, server_time)| Body::SystemHeartbeat(
            SystemHeartbeat { seq, server_time }
        )),
        (error_code(), text(), of(message_id()), of(any::<u64>())).prop_map(
            |(code, message, reference, retry_after_ms)| {
                Body::SystemError(SystemError {
                    code,
                    message,
                    reference,
                    retry_after_ms,
                })
            }
        ),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        message_id(),
        of(any::<u64>()),
        any::<bool>(),
        of(text()),
        of(text()),
        of(any::<u64>()),
        of((of(text()), of(text()), of(text()))),
        body(),
    )
        .prop_map(
            |(id, timestamp, version, user_id, session_id, seq, metadata, body)| Envelope {
                id,
                timestamp,
                version: version.then(|| PROTOCOL_VERSION.to_owned()),
                user_id,
                session_id,
                seq,
                metadata: metadata.map(|(client_version, gonzai_state, region)| Metadata {
                    client_version,
                    gonzai_state,
                    region,
                }),
                body,
            },
        )
}

fn through_json(envs: &[Envelope]) -> Vec<Envelope> {
    let text = json::encode_batch(envs);
    json::decode(std::str::from_utf8(&text).unwrap(), &Limits::default())
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn through_binary(envs: &[Envelope], compression: Compression) -> Vec<Envelope> {
    let frame = binary::encode_with(envs, compression);
    binary::decode(&frame, &Limits::default())
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn both_codecs_round_trip_identically(env in envelope()) {
        let one = std::slice::from_ref(&env);
        prop_assert_eq!(&through_json(one), one);
        prop_assert_eq!(&through_binary(one, Compression::Auto), one);
        prop_assert_eq!(&through_binary(one, Compression::Never), one);
        let text = json::encode(&env);
        prop_assert_eq!(json::decode_one(std::str::from_utf8(&text).unwrap(), &Limits::default()).unwrap(), env.clone());
        prop_assert_eq!(binary::decode_one(&binary::encode(&env), &Limits::default()).unwrap(), env);
    }

    #[test]
    fn batches_round_trip_in_order(envs in vec(envelope(), 0..6)) {
        prop_assert_eq!(&through_json(&envs), &envs);
        prop_assert_eq!(&through_binary(&envs, Compression::Auto), &envs);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), header in 0u8..4) {
        let mut frame = bytes.clone();
        if let Some(first) = frame.first_mut() {
            *first = header;
        }
        let _ = binary::decode(&frame, &Limits::default());
        let _ = binary::decode(&bytes, &Limits::default());
        let _ = json::decode(&String::from_utf8_lossy(&bytes), &Limits::default());
    }

    #[test]
    fn damaged_frames_never_panic(env in envelope(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), compress in any::<bool>()) {
        let compression = if compress { Compression::Always } else { Compression::Never };
        let mut frame = binary::encode_with(std::slice::from_ref(&env), compression).to_vec();
        for (at, value) in flips {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        if let Ok(all) = binary::decode(&frame, &Limits::default()) {
            // Whatever decodes must encode and decode to itself.
            let good: Vec<Envelope> = all.into_iter().filter_map(Result::ok).collect();
            prop_assert_eq!(&through_binary(&good, Compression::Never), &good);
        }
        let mut text = json::encode(&env).to_vec();
        let cut = text.len() / 2;
        text.truncate(cut);
        let _ = json::decode(&String::from_utf8_lossy(&text), &Limits::default());
    }
}
