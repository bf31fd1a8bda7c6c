//! End-to-end tests of the rules every client relies on to settle its
//! changes and to know why it was closed (docs/protocol.md sections 2.1,
//! 4.1, 4.4, 5 and 10): a real server on port 0, real sockets, both codecs.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Client, TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use gitmind_schema::message::*;
use gitmind_schema::model::{Edge, Node, NodeSet};
use gitmind_schema::{binary, Body, Envelope};
use tokio_tungstenite::tungstenite::{Error, Message};

const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

fn rollback(e: &Envelope) -> &UpdateRollback {
    match &e.body {
        Body::UpdateRollback(r) => r,
        other => panic!("expected update.rollback, got {other:?}"),
    }
}

fn label(base: u64, id: &str, label: &str) -> Body {
    Body::NodeUpdate(NodeUpdate {
        base_seq: Some(base),
        id: id.into(),
        set: Some(NodeSet {
            label: Some(label.into()),
            ..NodeSet::default()
        }),
        ..NodeUpdate::default()
    })
}

fn create(base: u64, id: &str) -> BatchOp {
    BatchOp::NodeCreate(NodeCreate {
        base_seq: Some(base),
        node: Node {
            id: id.into(),
            ..Node::default()
        },
        commit: None,
    })
}

fn batch(ops: Vec<BatchOp>) -> Body {
    Body::BatchUpdate(BatchUpdate {
        base_seq: Some(0),
        ops,
        commit: None,
    })
}

#[tokio::test]
async fn a_mutation_whose_data_does_not_decode_is_rolled_back_not_an_error() {
    let server = TestServer::start();
    let mut c = server
        .connect("undecodable", "alice", "gitmind.v1.json")
        .await;
    let cases = [
        (
            "m-label",
            r#"{"id":"m-label","type":"node.create","data":{"baseSeq":0,"node":{"id":"c:a","label":7}}}"#,
            RollbackReason::Invalid,
        ),
        (
            "m-prop",
            r#"{"id":"m-prop","type":"node.update","data":{"baseSeq":0,"id":"c:a","set":{"props":{"k":{"deep":1}}}}}"#,
            RollbackReason::Invalid,
        ),
        (
            "m-conf",
            r#"{"id":"m-conf","type":"edge.create","data":{"baseSeq":0,"edge":{"source":"c:a","type":"blocks","target":"c:b","confidence":"high"}}}"#,
            RollbackReason::Invalid,
        ),
        (
            "m-stamp",
            r#"{"id":"m-stamp","type":"node.delete","timestamp":"noon","data":{"baseSeq":0,"id":"c:a"}}"#,
            RollbackReason::Invalid,
        ),
        (
            "m-field",
            r#"{"id":"m-field","type":"node.delete","data":{"baseSeq":0,"idd":"c:a"}}"#,
            RollbackReason::Invalid,
        ),
    ];
    for (id, text, reason) in cases {
        c.send_raw(Message::Text(text.into())).await;
        let outcome = c.outcome(id).await;
        assert_eq!(rollback(&outcome).reason, reason, "{id}: {outcome:?}");
        assert!(outcome.timestamp.is_some());
        assert_eq!(outcome.session_id.as_deref(), Some(c.session_id.as_str()));
    }
    // A batch over the op limit, in one frame of a client that batches too.
    let ops: Vec<_> = (0..1001).map(|i| create(0, &format!("c:{i}"))).collect();
    c.send(&Envelope::new("m-big", batch(ops))).await;
    assert_eq!(
        rollback(&c.outcome("m-big").await).reason,
        RollbackReason::TooLarge
    );
    // What cannot be read as a mutation still is a system.error.
    c.send_raw(Message::Text(r#"{"type":"node.create","data":{}}"#.into()))
        .await;
    let e = c
        .recv_until("system.error", |e| matches!(e.body, Body::SystemError(_)))
        .await;
    assert!(e.timestamp.is_some(), "system.error carries timestamp");
    // The same id with good data now: the first answer stands (4.4).
    c.create_node("c:a", "fine", 0).await; // m1
    assert!(matches!(
        c.outcome("m1").await.body,
        Body::UpdateConfirmed(_)
    ));
    c.send(&Envelope::new(
        "m-label",
        Body::NodeCreate(NodeCreate {
            base_seq: Some(1),
            node: Node {
                id: "c:b".into(),
                ..Node::default()
            },
            commit: None,
        }),
    ))
    .await;
    assert_eq!(
        rollback(&c.outcome("m-label").await).reason,
        RollbackReason::Invalid
    );
}

#[tokio::test]
async fn a_binary_mutation_whose_data_does_not_decode_is_rolled_back() {
    let server = TestServer::start();
    let mut c = server
        .connect("undecodable", "alice", "gitmind.v1.bin")
        .await;
    // NaN cannot be written in JSON; the binary form can carry it.
    let node = Node {
        id: "c:a".into(),
        x: Some(f64::NAN),
        ..Node::default()
    };
    c.send(&Envelope::new(
        "m-nan",
        Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node,
            commit: None,
        }),
    ))
    .await;
    assert_eq!(
        rollback(&c.outcome("m-nan").await).reason,
        RollbackReason::Invalid
    );
    let ops: Vec<_> = (0..1001).map(|i| create(0, &format!("c:{i}"))).collect();
    c.send(&Envelope::new("m-big", batch(ops))).await;
    assert_eq!(
        rollback(&c.outcome("m-big").await).reason,
        RollbackReason::TooLarge
    );
    // Still usable.
    let mid = c.create_node("c:ok", "fine", 0).await;
    assert!(matches!(
        c.outcome(&mid).await.body,
        Body::UpdateConfirmed(_)
    ));
}

#[tokio::test]
async fn a_resent_rolled_back_id_gets_the_same_rollback_even_after_the_world_changed() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("resend", "alice", codec).await;
        alice
            .send(&Envelope::new("u1", label(0, "c:later", "x")))
            .await;
        let first = alice.outcome("u1").await;
        assert_eq!(rollback(&first).reason, RollbackReason::NotFound);
        let mid = alice.create_node("c:later", "now here", 0).await;
        assert!(matches!(
            alice.outcome(&mid).await.body,
            Body::UpdateConfirmed(_)
        ));
        // Resent, as a client does after a reconnect: the same answer.
        let mut again = server.connect("resend", "alice", codec).await;
        again
            .send(&Envelope::new("u1", label(1, "c:later", "x")))
            .await;
        let second = again.outcome("u1").await;
        assert_eq!(rollback(&second), rollback(&first), "{codec}");
        // The node was not changed by the resend.
        let snapshot = server.connect("resend", "carol", codec).await;
        let nodes = snapshot.sync.unwrap().nodes.unwrap();
        assert_eq!(nodes[0].label.as_deref(), Some("now here"));
    }
}

#[tokio::test]
async fn everything_the_server_sends_carries_a_timestamp() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.heartbeat_ms = 200);
        let mut alice = server.connect("stamps", "alice", codec).await;
        let mut bob = server.connect("stamps", "bob", codec).await;
        let mut seen = Vec::new();
        // graph.sync (re-requested), outcome, event, presence, error, heartbeat.
        bob.send(&Envelope::new(
            "s1",
            Body::GraphSync(GraphSync {
                since: Some(0),
                epoch: Some("nope".into()),
                ..GraphSync::default()
            }),
        ))
        .await;
        seen.push(
            bob.recv_until("graph.sync", |e| matches!(e.body, Body::GraphSync(_)))
                .await,
        );
        let mid = alice.create_node("c:a", "A", 0).await;
        seen.push(alice.outcome(&mid).await);
        seen.push(
            bob.recv_until("event", |e| matches!(e.body, Body::NodeCreate(_)))
                .await,
        );
        alice
            .send(&Envelope::new(
                "p1",
                Body::CursorMove(CursorMove {
                    x: 1.0,
                    y: 2.0,
                    node_id: None,
                }),
            ))
            .await;
        seen.push(
            bob.recv_until("cursor", |e| matches!(e.body, Body::CursorMove(_)))
                .await,
        );
        alice
            .send(&Envelope::new(
                "x1",
                Body::UpdateConfirmed(UpdateConfirmed::default()),
            ))
            .await;
        seen.push(
            alice
                .recv_until("error", |e| matches!(e.body, Body::SystemError(_)))
                .await,
        );
        seen.push(
            alice
                .recv_until("heartbeat", |e| matches!(e.body, Body::SystemHeartbeat(_)))
                .await,
        );
        for e in &seen {
            assert!(
                e.timestamp.is_some_and(|t| t > 1_700_000_000_000),
                "{codec}: {e:?}"
            );
        }
    }
}

/// Floods the server with bad frames from one task while another reads:
/// the reader must get the close frame with `code`, not a reset.
async fn closed_while_sending(client: Client, bad: Message) -> Option<u16> {
    let (mut sink, mut stream) = client.ws.split();
    let flood = tokio::spawn(async move {
        // Stops when the send fails: after the close frame was read, or on
        // a reset if the server dropped the socket under the client.
        for _ in 0..1_000_000 {
            if let Err(e) = sink.send(bad.clone()).await {
                return Some(e);
            }
        }
        None
    });
    // A client busy sending reads late: the close frame must still be
    // there (a socket dropped with unread input resets the connection,
    // and a reset discards what the client had not read yet).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let code = tokio::time::timeout(WAIT, async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("the connection ended without a close frame: {e}"),
            }
        }
        panic!("the stream ended without a close frame")
    })
    .await
    .expect("no close within the wait");
    // Every send before the close frame was read went through: no reset.
    match tokio::time::timeout(WAIT, flood).await {
        Ok(Ok(Some(Error::Io(e)))) => panic!("the sender saw a reset, not the close: {e}"),
        Ok(Ok(_)) => {}
        other => panic!("the flood did not end: {other:?}"),
    }
    code
}

#[tokio::test]
async fn a_client_still_sending_bad_frames_reads_1008() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.max_errors_per_minute = 20);
        let client = server.connect("flood", "mallory", codec).await;
        let bad = if client.binary {
            Message::Binary(vec![0xfe, 1, 2, 3].into())
        } else {
            Message::Text("nope".into())
        };
        assert_eq!(
            closed_while_sending(client, bad).await,
            Some(1008),
            "{codec}"
        );
        // The server is unharmed.
        let mut other = server.connect("flood", "alice", codec).await;
        let mid = other.create_node("c:a", "A", 0).await;
        assert!(matches!(
            other.outcome(&mid).await.body,
            Body::UpdateConfirmed(_)
        ));
    }
}

#[tokio::test]
async fn a_client_still_sending_oversized_frames_reads_1009() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.max_frame_bytes = 4096);
        let client = server.connect("big", "mallory", codec).await;
        let big = if client.binary {
            Message::Binary(vec![0u8; 10_000].into())
        } else {
            Message::Text("x".repeat(10_000).into())
        };
        assert_eq!(
            closed_while_sending(client, big).await,
            Some(1009),
            "{codec}"
        );
    }
}

#[tokio::test]
async fn a_change_whose_event_would_pass_the_frame_limit_is_refused_too_large() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.max_frame_bytes = 8192);
        let mut alice = server.connect("limit", "alice", codec).await;
        let mut bob = server.connect("limit", "bob", codec).await;
        // Small in the request; the event adds every server field per node.
        let ops: Vec<_> = (0..40).map(|i| create(0, &format!("c:{i}"))).collect();
        let request = Envelope::new("m-big", batch(ops));
        assert!(binary::encode(&request).len() < 8192);
        alice.send(&request).await;
        let outcome = alice.outcome("m-big").await;
        let r = rollback(&outcome);
        assert_eq!(r.reason, RollbackReason::TooLarge, "{codec}: {r:?}");
        assert!(r.message.contains("frame limit"), "{}", r.message);
        // Nothing was applied: the next change is seq 1, and bob sees only it.
        let mid = alice.create_node("c:one", "1", 0).await;
        let Body::UpdateConfirmed(c) = alice.outcome(&mid).await.body else {
            panic!()
        };
        assert_eq!(c.seq, 1);
        let event = bob
            .recv_until("node.create", |e| matches!(e.body, Body::NodeCreate(_)))
            .await;
        assert_eq!(event.seq, Some(1));
    }
}

/// A node as connected as the Debian graph's most depended-on package
/// (`pkg:libc6`, 21,844 edges): its delete must reach every client, in
/// both codecs, small, and every replica drops the edges itself.
#[tokio::test]
async fn deleting_a_node_with_tens_of_thousands_of_edges_reaches_every_client() {
    const LEAVES: usize = 22_000;
    let server = TestServer::start();
    let mut writer = server.connect("hub", "importer", "gitmind.v1.bin").await;
    let mut ops = vec![create(0, "pkg:libc6")];
    ops.extend((0..999).map(|i| create(0, &format!("pkg:p{i}"))));
    let mut pending = vec![ops];
    for chunk in (999..LEAVES).collect::<Vec<_>>().chunks(1000) {
        pending.push(
            chunk
                .iter()
                .map(|i| create(0, &format!("pkg:p{i}")))
                .collect(),
        );
    }
    for chunk in (0..LEAVES).collect::<Vec<_>>().chunks(1000) {
        pending.push(
            chunk
                .iter()
                .map(|i| {
                    BatchOp::EdgeCreate(EdgeCreate {
                        base_seq: None,
                        edge: Edge {
                            source: format!("pkg:p{i}"),
                            edge_type: "depends-on".into(),
                            target: "pkg:libc6".into(),
                            ..Edge::default()
                        },
                        commit: None,
                    })
                })
                .collect(),
        );
    }
    let mut seq = 0;
    for ops in pending {
        let id = writer.id();
        writer
            .send(&Envelope::new(
                id.clone(),
                Body::BatchUpdate(BatchUpdate {
                    base_seq: Some(seq),
                    ops,
                    commit: None,
                }),
            ))
            .await;
        let outcome = writer.outcome(&id).await;
        let Body::UpdateConfirmed(c) = outcome.body else {
            panic!("{outcome:?}")
        };
        seq = c.seq;
    }
    let mut watchers = Vec::new();
    for codec in CODECS {
        let mut w = server.connect("hub", "watcher", codec).await;
        let sync = w.sync.take().unwrap();
        assert_eq!(sync.edges.map_or(0, |e| e.len()), LEAVES, "{codec}");
        watchers.push(w);
    }
    let id = writer.id();
    writer
        .send(&Envelope::new(
            id.clone(),
            Body::NodeDelete(NodeDelete {
                base_seq: Some(seq),
                id: "pkg:libc6".into(),
                commit: None,
            }),
        ))
        .await;
    assert!(matches!(
        writer.outcome(&id).await.body,
        Body::UpdateConfirmed(_)
    ));
    for w in &mut watchers {
        let event = w
            .recv_until("node.delete", |e| matches!(e.body, Body::NodeDelete(_)))
            .await;
        let Body::NodeDelete(d) = &event.body else {
            unreachable!()
        };
        assert_eq!(d.id, "pkg:libc6");
        assert_eq!(event.seq, Some(seq + 1));
    }
    // A later snapshot agrees: no edge is left.
    let late = server.connect("hub", "late", "gitmind.v1.json").await;
    assert_eq!(late.sync.unwrap().edges.map_or(0, |e| e.len()), 0);
}
