//! Hostile frames: each is refused with the exact protocol error code, with
//! bounded memory, and never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use flatbuffers::FlatBufferBuilder;
use gitmind_schema::binary::{self, Compression, HEADER_ZSTD};
use gitmind_schema::generated as fb;
use gitmind_schema::message::*;
use gitmind_schema::model::{Edge, Node, NodeSet, PropValue};
use gitmind_schema::{json, DecodeError, Limits};

// ---------------------------------------------------------------- allocation tracking

/// The system allocator, remembering the largest single allocation made by
/// a thread while it is tracking.
struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the thread may be tearing down its locals.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f`, returning its result and the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------- helpers

const MIB: usize = 1 << 20;

fn limits() -> Limits {
    Limits::default()
}

/// The code that refuses the whole frame.
fn frame_error(frame: &[u8]) -> ErrorCode {
    binary::decode(frame, &limits())
        .expect_err("frame should be refused")
        .code
}

/// The error of the frame's only message.
fn message_error(frame: &[u8]) -> DecodeError {
    let mut all = binary::decode(frame, &limits()).expect("frame should decode");
    assert_eq!(all.len(), 1);
    all.pop().unwrap().expect_err("message should be refused")
}

fn node_update() -> Envelope {
    let mut props = BTreeMap::new();
    props.insert(
        "section".to_owned(),
        Some(PropValue::String("games".into())),
    );
    Envelope::new(
        "01JDZ8Q5K3V7",
        Body::NodeUpdate(NodeUpdate {
            base_seq: Some(41),
            id: "pkg:0ad".into(),
            set: Some(NodeSet {
                label: Some("Real-time strategy game of ancient warfare".into()),
                x: Some(12.5),
                y: Some(-3.0),
                props: Some(props),
                ..NodeSet::default()
            }),
            ..NodeUpdate::default()
        }),
    )
}

fn cursor(x: f64, y: f64) -> Envelope {
    Envelope::new(
        "c-1",
        Body::CursorMove(CursorMove {
            x,
            y,
            node_id: None,
        }),
    )
}

/// A FlatBuffer frame of one envelope built by hand.
fn handmade(id: Option<&str>, version: Option<&str>, tag: fb::Payload, with_data: bool) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let id = id.map(|s| b.create_string(s));
    let version = version.map(|s| b.create_string(s));
    let data = with_data.then(|| {
        fb::SystemHeartbeat::create(
            &mut b,
            &fb::SystemHeartbeatArgs {
                seq: Some(1),
                server_time: None,
            },
        )
        .as_union_value()
    });
    let env = fb::Envelope::create(
        &mut b,
        &fb::EnvelopeArgs {
            id,
            version,
            data_type: tag,
            data,
            ..fb::EnvelopeArgs::default()
        },
    );
    let list = b.create_vector(&[env]);
    let root = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            envelopes: Some(list),
        },
    );
    b.finish(root, None);
    let mut frame = vec![0u8];
    frame.extend_from_slice(b.finished_data());
    frame
}

/// Raw zstd (no dictionary) of `data`, optionally without its content size.
fn zstd_frame(data: &[u8], content_size: bool, window_log: u32) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(content_size))
        .unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log))
        .unwrap();
    let mut frame = vec![HEADER_ZSTD];
    frame.extend(c.compress(data).unwrap());
    frame
}

// ---------------------------------------------------------------- framing

#[test]
fn empty_frame_is_bad_frame() {
    assert_eq!(frame_error(&[]), ErrorCode::BadFrame);
}

#[test]
fn header_alone_is_bad_frame() {
    assert_eq!(frame_error(&[0]), ErrorCode::BadFrame);
    assert_eq!(frame_error(&[HEADER_ZSTD]), ErrorCode::BadFrame);
}

#[test]
fn reserved_header_bits_are_bad_frame() {
    let good = binary::encode_with(&[node_update()], Compression::Never);
    for bit in 1..8 {
        let mut frame = good.to_vec();
        frame[0] |= 1 << bit;
        assert_eq!(frame_error(&frame), ErrorCode::BadFrame, "bit {bit}");
    }
}

#[test]
fn truncated_flatbuffer_is_bad_frame() {
    let good = binary::encode_with(&[node_update()], Compression::Never);
    // The last bytes may be alignment padding, which nothing reads.
    for cut in 1..good.len() - 3 {
        assert_eq!(
            frame_error(&good[..cut]),
            ErrorCode::BadFrame,
            "cut at {cut} of {}",
            good.len()
        );
    }
}

#[test]
fn truncated_zstd_is_bad_frame() {
    let good = binary::encode_with(&[node_update(), node_update()], Compression::Always);
    assert_eq!(good[0], HEADER_ZSTD);
    for cut in [2, 6, good.len() / 2, good.len() - 1] {
        assert_eq!(
            frame_error(&good[..cut]),
            ErrorCode::BadFrame,
            "cut at {cut} of {}",
            good.len()
        );
    }
}

#[test]
fn bytes_after_the_zstd_frame_are_bad_frame() {
    let mut frame =
        binary::encode_with(&[node_update(), node_update()], Compression::Always).to_vec();
    let payload = frame[1..].to_vec();
    frame.extend_from_slice(&payload);
    assert_eq!(frame_error(&frame), ErrorCode::BadFrame);
}

#[test]
fn uncompressed_payload_with_zstd_bit_is_bad_frame() {
    let mut frame = binary::encode_with(&[node_update()], Compression::Never).to_vec();
    frame[0] = HEADER_ZSTD;
    assert_eq!(frame_error(&frame), ErrorCode::BadFrame);
}

#[test]
fn oversized_frame_is_too_large() {
    let mut frame = vec![0u8; MIB + 2];
    frame[0] = 0;
    assert_eq!(frame_error(&frame), ErrorCode::TooLarge);
    let small = Limits {
        max_frame_bytes: 64,
        ..limits()
    };
    let frame = binary::encode_with(&[node_update()], Compression::Never);
    assert_eq!(
        binary::decode(&frame, &small).unwrap_err().code,
        ErrorCode::TooLarge
    );
}

// ---------------------------------------------------------------- zstd bombs

#[test]
fn zstd_bomb_with_declared_size_is_refused_without_allocating() {
    let bomb = zstd_frame(&vec![0u8; 64 * MIB], true, 20);
    assert!(bomb.len() < 4096, "bomb is {} bytes", bomb.len());
    let (result, largest) = largest_allocation(|| binary::decode(&bomb, &limits()));
    assert_eq!(result.unwrap_err().code, ErrorCode::TooLarge);
    assert!(
        largest < 64 * 1024,
        "allocated {largest} bytes for a refused bomb"
    );
}

#[test]
fn zstd_bomb_with_unknown_size_stops_at_the_limit() {
    let bomb = zstd_frame(&vec![0u8; 4 * MIB], false, 20);
    assert!(bomb.len() < 4096, "bomb is {} bytes", bomb.len());
    let (result, largest) = largest_allocation(|| binary::decode(&bomb, &limits()));
    assert_eq!(result.unwrap_err().code, ErrorCode::TooLarge);
    assert!(
        largest <= MIB,
        "allocated {largest} bytes, over the 1 MiB limit"
    );
}

#[test]
fn zstd_frame_with_a_huge_window_is_too_large() {
    let bomb = zstd_frame(&vec![7u8; 3 * MIB], false, 24);
    let (result, largest) = largest_allocation(|| binary::decode(&bomb, &limits()));
    assert_eq!(result.unwrap_err().code, ErrorCode::TooLarge);
    assert!(largest <= MIB, "allocated {largest} bytes");
}

#[test]
fn zstd_frame_of_unknown_size_within_the_limit_decodes() {
    let flat = binary::encode_with(&[node_update(), node_update()], Compression::Never);
    let frame = zstd_frame(&flat[1..], false, 20);
    let all = binary::decode(&frame, &limits()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].as_ref().unwrap(), &node_update());
}

#[test]
fn zstd_frame_lying_about_its_size_is_bad_frame() {
    let flat = binary::encode_with(&[node_update(), node_update()], Compression::Never);
    let mut frame = zstd_frame(&flat[1..], true, 20);
    // The frame header: magic (4 bytes), descriptor, then a one- or
    // two-byte content size for a payload this small. Shrink it.
    let descriptor = frame[5];
    assert_eq!(descriptor & 0x20, 0x20, "single segment");
    frame[6] = frame[6].wrapping_sub(8);
    assert_eq!(frame_error(&frame), ErrorCode::BadFrame);
}

// ---------------------------------------------------------------- FlatBuffer contents

#[test]
fn unknown_union_tag_is_unknown_type() {
    let err = message_error(&handmade(Some("m-1"), None, fb::Payload(200), true));
    assert_eq!(
        (err.code, err.reference.as_deref()),
        (ErrorCode::UnknownType, Some("m-1"))
    );
}

#[test]
fn union_tag_none_is_unknown_type() {
    let err = message_error(&handmade(Some("m-2"), None, fb::Payload::NONE, false));
    assert_eq!(
        (err.code, err.reference.as_deref()),
        (ErrorCode::UnknownType, Some("m-2"))
    );
}

#[test]
fn union_tag_without_data_is_bad_frame() {
    assert_eq!(
        frame_error(&handmade(
            Some("m-3"),
            None,
            fb::Payload::SystemHeartbeat,
            false
        )),
        ErrorCode::BadFrame
    );
}

#[test]
fn missing_or_bad_id_is_invalid() {
    let err = message_error(&handmade(None, None, fb::Payload::SystemHeartbeat, true));
    assert_eq!((err.code, err.reference), (ErrorCode::Invalid, None));
    let err = message_error(&handmade(
        Some(""),
        None,
        fb::Payload::SystemHeartbeat,
        true,
    ));
    assert_eq!(err.code, ErrorCode::Invalid);
    let long = "x".repeat(65);
    let err = message_error(&handmade(
        Some(&long),
        None,
        fb::Payload::SystemHeartbeat,
        true,
    ));
    assert_eq!(
        (err.code, err.reference.as_deref()),
        (ErrorCode::Invalid, Some(long.as_str()))
    );
    assert!(binary::decode_one(
        &handmade(
            Some(&"x".repeat(64)),
            None,
            fb::Payload::SystemHeartbeat,
            true
        ),
        &limits()
    )
    .is_ok());
}

#[test]
fn other_protocol_version_is_invalid() {
    let err = message_error(&handmade(
        Some("v"),
        Some("2"),
        fb::Payload::SystemHeartbeat,
        true,
    ));
    assert_eq!(
        (err.code, err.reference.as_deref()),
        (ErrorCode::Invalid, Some("v"))
    );
}

#[test]
fn missing_required_field_is_invalid() {
    // A node.create without its node, and a node without its id.
    let mut b = FlatBufferBuilder::new();
    let data = fb::NodeCreate::create(
        &mut b,
        &fb::NodeCreateArgs {
            base_seq: Some(1),
            ..Default::default()
        },
    );
    let id = b.create_string("n-1");
    let env = fb::Envelope::create(
        &mut b,
        &fb::EnvelopeArgs {
            id: Some(id),
            data_type: fb::Payload::NodeCreate,
            data: Some(data.as_union_value()),
            ..Default::default()
        },
    );
    let node = fb::Node::create(&mut b, &fb::NodeArgs::default());
    let data = fb::NodeCreate::create(
        &mut b,
        &fb::NodeCreateArgs {
            node: Some(node),
            ..Default::default()
        },
    );
    let id = b.create_string("n-2");
    let env2 = fb::Envelope::create(
        &mut b,
        &fb::EnvelopeArgs {
            id: Some(id),
            data_type: fb::Payload::NodeCreate,
            data: Some(data.as_union_value()),
            ..Default::default()
        },
    );
    let list = b.create_vector(&[env, env2]);
    let root = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            envelopes: Some(list),
        },
    );
    b.finish(root, None);
    let mut frame = vec![0u8];
    frame.extend_from_slice(b.finished_data());
    let all = binary::decode(&frame, &limits()).unwrap();
    for (r, id) in all.iter().zip(["n-1", "n-2"]) {
        let err = r.as_ref().unwrap_err();
        assert_eq!(
            (err.code, err.reference.as_deref()),
            (ErrorCode::Invalid, Some(id)),
            "{}",
            err.message
        );
    }
}

#[test]
fn invalid_utf8_in_a_string_is_bad_frame() {
    let frame = binary::encode_with(
        &[Envelope::new(
            "ZZZZ",
            Body::SystemHeartbeat(SystemHeartbeat::default()),
        )],
        Compression::Never,
    );
    let mut frame = frame.to_vec();
    let at = frame.windows(4).position(|w| w == b"ZZZZ").unwrap();
    frame[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    assert_eq!(frame_error(&frame), ErrorCode::BadFrame);
}

#[test]
fn nan_and_infinity_are_invalid() {
    let mut node = Node {
        id: "a:b".into(),
        x: Some(f64::NAN),
        ..Node::default()
    };
    let mut cases = vec![
        cursor(f64::NAN, 0.0),
        cursor(0.0, f64::INFINITY),
        Envelope::new(
            "n",
            Body::NodeCreate(NodeCreate {
                base_seq: None,
                node: node.clone(),
                commit: None,
            }),
        ),
    ];
    node.x = None;
    node.props = Some(
        [("k".to_owned(), PropValue::Number(f64::NEG_INFINITY))]
            .into_iter()
            .collect(),
    );
    cases.push(Envelope::new(
        "p",
        Body::NodeCreate(NodeCreate {
            base_seq: None,
            node,
            commit: None,
        }),
    ));
    let edge = Edge {
        source: "a:b".into(),
        edge_type: "blocks".into(),
        target: "a:c".into(),
        confidence: Some(f64::NAN),
        ..Edge::default()
    };
    cases.push(Envelope::new(
        "e",
        Body::EdgeCreate(EdgeCreate {
            base_seq: None,
            edge,
            commit: None,
        }),
    ));
    cases.push(Envelope::new(
        "s",
        Body::NodeUpdate(NodeUpdate {
            id: "a:b".into(),
            set: Some(NodeSet {
                y: Some(f64::INFINITY),
                ..NodeSet::default()
            }),
            ..NodeUpdate::default()
        }),
    ));
    cases.push(Envelope::new(
        "u",
        Body::UserPresence(UserPresence {
            status: PresenceStatus::Active,
            focus: None,
            display_name: None,
            color: None,
            chaos_affinity: Some(f64::NAN),
        }),
    ));
    cases.push(Envelope::new(
        "r",
        Body::RegionSubscribe(RegionSubscribe {
            region_id: "v".into(),
            filter: RegionFilter {
                bbox: Some([0.0, 0.0, f64::INFINITY, 1.0]),
                ..RegionFilter::default()
            },
        }),
    ));
    for env in cases {
        for c in [Compression::Never, Compression::Always] {
            let err = message_error(&binary::encode_with(std::slice::from_ref(&env), c));
            assert_eq!(
                (err.code, err.reference.as_deref()),
                (ErrorCode::Invalid, Some(env.id.as_str())),
                "{}",
                err.message
            );
        }
    }
}

#[test]
fn a_bad_message_does_not_spoil_its_neighbours() {
    let frame = binary::encode_batch(&[node_update(), cursor(f64::NAN, 1.0), node_update()]);
    let all = binary::decode(&frame, &limits()).unwrap();
    assert!(all[0].is_ok() && all[2].is_ok());
    assert_eq!(all[1].as_ref().unwrap_err().code, ErrorCode::Invalid);
}

#[test]
fn too_many_envelopes_is_too_large() {
    let many: Vec<_> = (0..1001)
        .map(|i| {
            Envelope::new(
                format!("h{i}"),
                Body::SystemHeartbeat(SystemHeartbeat::default()),
            )
        })
        .collect();
    assert_eq!(
        frame_error(&binary::encode_batch(&many)),
        ErrorCode::TooLarge
    );
    assert!(binary::decode(&binary::encode_batch(&many[..1000]), &limits()).is_ok());
    let text = json::encode_batch(&many);
    assert_eq!(
        json::decode(std::str::from_utf8(&text).unwrap(), &limits())
            .unwrap_err()
            .code,
        ErrorCode::TooLarge
    );
}

#[test]
fn too_many_batch_ops_is_too_large_in_both_codecs() {
    let op = BatchOp::NodeDelete(NodeDelete {
        id: "a:b".into(),
        ..NodeDelete::default()
    });
    let env = Envelope::new(
        "b-1",
        Body::BatchUpdate(BatchUpdate {
            base_seq: Some(1),
            ops: vec![op; 1001],
            commit: None,
        }),
    );
    let err = message_error(&binary::encode(&env));
    assert_eq!(
        (err.code, err.reference.as_deref()),
        (ErrorCode::TooLarge, Some("b-1"))
    );
    let text = json::encode(&env);
    let err = json::decode_one(std::str::from_utf8(&text).unwrap(), &limits()).unwrap_err();
    assert_eq!(
        (err.code, err.reference.as_deref()),
        (ErrorCode::TooLarge, Some("b-1"))
    );
}

#[test]
fn deep_nesting_in_binary_is_too_large() {
    let mut env = Envelope::new("d", Body::SystemHeartbeat(SystemHeartbeat::default()));
    for _ in 0..40 {
        env = Envelope::new(
            "d",
            Body::GraphSync(GraphSync {
                events: Some(vec![env]),
                ..GraphSync::default()
            }),
        );
    }
    assert_eq!(frame_error(&binary::encode(&env)), ErrorCode::TooLarge);
}

#[test]
fn shared_tables_cannot_amplify_a_frame() {
    // 1,000 envelopes that are one 200 KiB envelope, pointed at 1,000
    // times: 200 KB on the wire, 200 MB if decoded naively.
    let mut b = FlatBufferBuilder::new();
    let id = b.create_string("amp");
    let message = b.create_string(&"x".repeat(200 * 1024));
    let data = fb::SystemError::create(
        &mut b,
        &fb::SystemErrorArgs {
            code: Some(fb::ErrorCode::Internal),
            message: Some(message),
            ..Default::default()
        },
    );
    let env = fb::Envelope::create(
        &mut b,
        &fb::EnvelopeArgs {
            id: Some(id),
            data_type: fb::Payload::SystemError,
            data: Some(data.as_union_value()),
            ..Default::default()
        },
    );
    let list = b.create_vector(&vec![env; 1000]);
    let root = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            envelopes: Some(list),
        },
    );
    b.finish(root, None);
    let mut frame = vec![0u8];
    frame.extend_from_slice(b.finished_data());
    assert!(frame.len() < 300 * 1024);
    let (result, largest) = largest_allocation(|| binary::decode(&frame, &limits()));
    assert_eq!(result.unwrap_err().code, ErrorCode::TooLarge);
    assert!(largest < MIB, "allocated {largest} bytes");
}

#[test]
fn random_garbage_is_bad_frame() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 2, 3, 7, 8, 16, 64, 300, 4096] {
        for round in 0..50 {
            let mut frame: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            frame[0] = u8::from(round % 2 == 1);
            let Err(e) = binary::decode(&frame, &limits()) else {
                continue;
            };
            assert!(
                matches!(e.code, ErrorCode::BadFrame | ErrorCode::TooLarge),
                "{len}: {e}"
            );
        }
    }
}

// ---------------------------------------------------------------- JSON

#[test]
fn deep_nesting_in_json_is_too_large() {
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(
        json::decode(&deep, &limits()).unwrap_err().code,
        ErrorCode::TooLarge
    );
    let deep = format!(
        r#"{{"id":"d","type":"node.create","data":{}1{}}}"#,
        "{\"a\":".repeat(40),
        "}".repeat(40)
    );
    assert_eq!(
        json::decode(&deep, &limits()).unwrap_err().code,
        ErrorCode::TooLarge
    );
}

#[test]
fn json_numbers_out_of_range_are_invalid() {
    for text in [
        r#"{"id":"1","type":"cursor.move","data":{"x":1e400,"y":0}}"#,
        r#"{"id":"1","type":"cursor.move","data":{"x":0,"y":-1e400}}"#,
        r#"{"id":"1","type":"node.create","data":{"node":{"id":"a:b","props":{"k":1e400}}}}"#,
        r#"{"id":"1","type":"edge.update","data":{"id":"e","set":{"confidence":-1e999}}}"#,
    ] {
        let err = json::decode_one(text, &limits()).unwrap_err();
        assert_eq!(
            (err.code, err.reference.as_deref()),
            (ErrorCode::Invalid, Some("1")),
            "{text}: {}",
            err.message
        );
    }
}

#[test]
fn json_nan_literals_are_refused() {
    for text in [
        r#"{"id":"1","type":"cursor.move","data":{"x":NaN,"y":0}}"#,
        r#"{"id":"1","type":"cursor.move","data":{"x":Infinity,"y":0}}"#,
    ] {
        assert_eq!(
            json::decode_one(text, &limits()).unwrap_err().code,
            ErrorCode::BadFrame,
            "{text}"
        );
    }
}
