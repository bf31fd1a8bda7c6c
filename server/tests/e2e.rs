//! End-to-end tests: a real server on port 0, real sockets, both codecs.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{http_get, Client, TestServer};
use gitmind_schema::message::*;
use gitmind_schema::{Body, Envelope, ErrorCode};
use tokio_tungstenite::tungstenite::Message;

const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

#[tokio::test]
async fn two_clients_see_each_others_changes_in_order() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        assert_eq!(alice.user_id, "alice");
        assert_ne!(alice.session_id, bob.session_id);
        let mut mids = Vec::new();
        for i in 0..20 {
            mids.push(alice.create_node(&format!("concept:n{i}"), "x", 0).await);
        }
        let mut last_seq = 0;
        for mid in &mids {
            let outcome = alice.outcome(mid).await;
            let Body::UpdateConfirmed(c) = outcome.body else {
                panic!("{outcome:?}")
            };
            assert!(c.seq > last_seq, "outcomes in seq order");
            assert_eq!(c.commit.len(), 40);
            last_seq = c.seq;
        }
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let event = bob
                .recv_until("node.create", |e| matches!(e.body, Body::NodeCreate(_)))
                .await;
            assert_eq!(
                event.user_id.as_deref(),
                Some("alice"),
                "events name their author"
            );
            assert_eq!(event.session_id.as_deref(), Some(alice.session_id.as_str()));
            seen.push(event.seq.unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "{codec}: events in seq order, each once: {seen:?}"
        );
    }
}

#[tokio::test]
async fn json_and_binary_clients_interoperate_in_one_graph() {
    let server = TestServer::start();
    let mut json = server.connect("mixed", "j", "gitmind.v1.json").await;
    let mut bin = server.connect("mixed", "b", "gitmind.v1.bin").await;
    assert!(!json.binary && bin.binary);
    let mid = json.create_node("doc:from-json", "hello ✓", 0).await;
    json.outcome(&mid).await;
    let event = bin
        .recv_until("node.create", |e| matches!(e.body, Body::NodeCreate(_)))
        .await;
    let Body::NodeCreate(c) = event.body else {
        unreachable!()
    };
    assert_eq!(c.node.label.as_deref(), Some("hello ✓"));
    assert_eq!(c.node.created_by.as_deref(), Some("j"));
    let mid = bin
        .create_node("doc:from-bin", "bonjour", event.seq.unwrap())
        .await;
    bin.outcome(&mid).await;
    let event = json
        .recv_until("node.create", |e| matches!(e.body, Body::NodeCreate(_)))
        .await;
    let Body::NodeCreate(c) = event.body else {
        unreachable!()
    };
    assert_eq!(c.node.id, "doc:from-bin");
}

#[tokio::test]
async fn a_late_joiner_gets_a_snapshot_and_a_resumer_gets_the_delta() {
    let server = TestServer::start();
    let mut alice = server.connect("resume", "alice", "gitmind.v1.json").await;
    for i in 0..3 {
        let mid = alice.create_node(&format!("concept:{i}"), "x", 0).await;
        alice.outcome(&mid).await;
    }
    let bob = server.connect("resume", "bob", "gitmind.v1.bin").await;
    let sync = bob.sync.clone().unwrap();
    assert_eq!(sync.mode, Some(SyncMode::Snapshot));
    assert_eq!(sync.seq, Some(3));
    assert_eq!(sync.nodes.unwrap().len(), 3);
    let epoch = sync.epoch.unwrap();
    let mid = alice.create_node("concept:later", "x", 3).await;
    alice.outcome(&mid).await;
    let path = format!("/v1/graphs/resume?user=bob&since=1&epoch={epoch}");
    let carol = Client::connect(server.addr, &path, Some("gitmind.v1.json"))
        .await
        .unwrap();
    let sync = carol.sync.unwrap();
    assert_eq!(sync.mode, Some(SyncMode::Delta));
    let seqs: Vec<u64> = sync
        .events
        .unwrap()
        .iter()
        .map(|e| e.seq.unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
}

#[tokio::test]
async fn presence_join_leave_cursor_and_selection() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("p", "alice", codec).await;
        let mut bob = server.connect("p", "bob", codec).await;
        let joined = alice
            .recv_until("bob joined", |e| matches!(e.body, Body::UserPresence(_)))
            .await;
        let Body::UserPresence(p) = &joined.body else {
            unreachable!()
        };
        assert_eq!(
            (p.status, joined.user_id.as_deref()),
            (PresenceStatus::Joined, Some("bob"))
        );
        assert_eq!(
            bob.sync.as_ref().unwrap().presence.as_ref().unwrap().len(),
            1,
            "sync lists alice"
        );

        bob.send(&Envelope::new(
            "c1",
            Body::CursorMove(CursorMove {
                x: 1.5,
                y: -2.0,
                node_id: Some("concept:a".into()),
            }),
        ))
        .await;
        let cursor = alice
            .recv_until("cursor", |e| matches!(e.body, Body::CursorMove(_)))
            .await;
        assert_eq!(cursor.session_id.as_deref(), Some(bob.session_id.as_str()));
        let selection = SelectionChange {
            nodes: vec!["concept:a".into()],
            edges: vec![],
        };
        bob.send(&Envelope::new(
            "s1",
            Body::SelectionChange(selection.clone()),
        ))
        .await;
        let got = alice
            .recv_until("selection", |e| matches!(e.body, Body::SelectionChange(_)))
            .await;
        assert_eq!(got.body, Body::SelectionChange(selection.clone()));

        // A third session sees bob's selection in its sync.
        let carol = server.connect("p", "carol", codec).await;
        let presence = carol.sync.unwrap().presence.unwrap();
        let bobs = presence.iter().find(|p| p.user_id == "bob").unwrap();
        assert_eq!(bobs.selection.as_ref(), Some(&selection));

        drop(bob);
        let left = alice
            .recv_until(
                "bob left",
                |e| matches!(&e.body, Body::UserPresence(p) if p.status == PresenceStatus::Left),
            )
            .await;
        assert_eq!(left.user_id.as_deref(), Some("bob"));
    }
}

#[tokio::test]
async fn cursor_moves_faster_than_the_rate_are_coalesced_to_the_latest() {
    let server = TestServer::start_with(|c| c.cursor_rate = 5);
    let mut alice = server.connect("c", "alice", "gitmind.v1.json").await;
    let mut bob = server.connect("c", "bob", "gitmind.v1.json").await;
    for i in 0..50 {
        bob.send(&Envelope::new(
            format!("c{i}"),
            Body::CursorMove(CursorMove {
                x: f64::from(i),
                y: 0.0,
                node_id: None,
            }),
        ))
        .await;
    }
    let mut xs = Vec::new();
    while xs.last() != Some(&49.0) {
        let e = alice
            .recv_until("cursor", |e| matches!(e.body, Body::CursorMove(_)))
            .await;
        let Body::CursorMove(c) = e.body else {
            unreachable!()
        };
        xs.push(c.x);
    }
    assert!(
        xs.len() < 10,
        "50 moves in a burst at 5/s arrive coalesced, got {xs:?}"
    );
}

#[tokio::test]
async fn silent_session_is_closed_after_the_heartbeat_timeout_and_others_see_it_leave() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_ms = 150;
        c.heartbeat_grace_ms = 100;
    });
    let mut alice = server.connect("hb", "alice", "gitmind.v1.json").await;
    // Alice answers heartbeats; bob never says anything.
    let mut bob = server.connect("hb", "bob", "gitmind.v1.bin").await;
    let heartbeat = alice
        .recv_until("heartbeat", |e| matches!(e.body, Body::SystemHeartbeat(_)))
        .await;
    let Body::SystemHeartbeat(h) = heartbeat.body else {
        unreachable!()
    };
    assert!(h.server_time.is_some() && h.seq.is_some());
    alice
        .send(&Envelope::new(
            "hb",
            Body::SystemHeartbeat(SystemHeartbeat::default()),
        ))
        .await;
    let alice_task = tokio::spawn(async move {
        let left = loop {
            let e = alice.recv().await;
            match &e.body {
                Body::SystemHeartbeat(_) => {
                    alice
                        .send(&Envelope::new(
                            "hb",
                            Body::SystemHeartbeat(SystemHeartbeat::default()),
                        ))
                        .await;
                }
                Body::UserPresence(p) if p.status == PresenceStatus::Left => break e,
                _ => {}
            }
        };
        left.user_id
    });
    let (code, messages) = bob.closed().await;
    assert_eq!(code, Some(1001));
    assert!(
        messages
            .iter()
            .any(|e| matches!(e.body, Body::SystemReconnect(_))),
        "reconnect before the close"
    );
    assert_eq!(alice_task.await.unwrap().as_deref(), Some("bob"));
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4008_while_others_keep_up() {
    let server = TestServer::start_with(|c| c.max_queue_bytes = 256 * 1024);
    let mut writer = server.connect("slow", "w", "gitmind.v1.json").await;
    let mut fast = server.connect("slow", "f", "gitmind.v1.bin").await;
    // The slow reader never reads: its socket buffers fill, then its queue.
    let mut slow = server.connect("slow", "s", "gitmind.v1.json").await;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let e = fast
                .recv_until("event", |e| matches!(e.body, Body::NodeCreate(_)))
                .await;
            seqs.push(e.seq.unwrap());
            if matches!(&e.body, Body::NodeCreate(c) if c.node.id == "concept:after") {
                return seqs;
            }
        }
    });
    let content = "x".repeat(50_000);
    let metrics = server.server.as_ref().unwrap().metrics().clone();
    let mut rounds = 0;
    while metrics
        .slow_consumer_closes
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        rounds += 1;
        assert!(rounds < 2000, "the slow session was never closed");
        let mid = writer.id();
        let node = gitmind_schema::model::Node {
            id: format!("concept:{rounds}"),
            content: Some(content.clone()),
            ..Default::default()
        };
        writer
            .send(&Envelope::new(
                mid.clone(),
                Body::NodeCreate(NodeCreate {
                    base_seq: Some(0),
                    node,
                    commit: None,
                }),
            ))
            .await;
        writer.outcome(&mid).await;
    }
    let (code, messages) = slow.closed().await;
    assert_eq!(code, Some(4008));
    assert!(messages
        .iter()
        .any(|e| matches!(&e.body, Body::SystemReconnect(r) if r.reason == "slow_consumer")));
    // The other reader got every event, in order, and is still served.
    let mid = writer.create_node("concept:after", "x", 0).await;
    writer.outcome(&mid).await;
    let seqs = reader.await.unwrap();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

async fn expect_error(client: &mut Client, code: ErrorCode) -> SystemError {
    let e = client
        .recv_until("system.error", |e| matches!(e.body, Body::SystemError(_)))
        .await;
    let Body::SystemError(error) = e.body else {
        unreachable!()
    };
    assert_eq!(error.code, code, "{error:?}");
    error
}

#[tokio::test]
async fn bad_messages_get_system_errors_and_the_connection_stays_usable() {
    let server = TestServer::start();
    let mut c = server.connect("bad", "alice", "gitmind.v1.json").await;
    c.send_raw(Message::Text("{not json".into())).await;
    expect_error(&mut c, ErrorCode::BadFrame).await;
    c.send_raw(Message::Text(
        r#"{"id":"u1","type":"no.such.type","data":{}}"#.into(),
    ))
    .await;
    let e = expect_error(&mut c, ErrorCode::UnknownType).await;
    assert_eq!(e.reference.as_deref(), Some("u1"));
    c.send_raw(Message::Text(
        r#"{"id":"i1","type":"cursor.move","data":{"x":"left"}}"#.into(),
    ))
    .await;
    expect_error(&mut c, ErrorCode::Invalid).await;
    c.send_raw(Message::Text(
        format!("{}{}", "[".repeat(100), "]".repeat(100)).into(),
    ))
    .await;
    expect_error(&mut c, ErrorCode::TooLarge).await;
    c.send_raw(Message::Binary(vec![0xfe, 1, 2, 3].into()))
        .await;
    expect_error(&mut c, ErrorCode::BadFrame).await;
    c.send_raw(Message::Text(
        r#"{"id":"o1","type":"update.confirmed","data":{"ref":"x","seq":1,"commit":"c","rev":1}}"#
            .into(),
    ))
    .await;
    expect_error(&mut c, ErrorCode::Invalid).await;
    let selection = SelectionChange {
        nodes: (0..1001).map(|i| format!("n:{i}")).collect(),
        edges: vec![],
    };
    c.send(&Envelope::new("s", Body::SelectionChange(selection)))
        .await;
    expect_error(&mut c, ErrorCode::TooLarge).await;
    // Still usable.
    let mid = c.create_node("concept:ok", "fine", 0).await;
    let outcome = c.outcome(&mid).await;
    assert!(matches!(outcome.body, Body::UpdateConfirmed(_)));
}

#[tokio::test]
async fn a_session_over_the_error_budget_is_closed_with_1008() {
    let server = TestServer::start_with(|c| c.max_errors_per_minute = 10);
    let mut c = server.connect("bad", "mallory", "gitmind.v1.json").await;
    for _ in 0..11 {
        c.send_raw(Message::Text("nope".into())).await;
    }
    let (code, messages) = c.closed().await;
    assert_eq!(code, Some(1008));
    assert_eq!(
        messages
            .iter()
            .filter(|e| matches!(e.body, Body::SystemError(_)))
            .count(),
        10
    );
}

#[tokio::test]
async fn an_oversized_frame_is_refused_with_1009() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 4096);
    let mut c = server.connect("big", "alice", "gitmind.v1.bin").await;
    c.send_raw(Message::Binary(vec![0u8; 10_000].into())).await;
    let (code, _) = c.closed().await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn handshake_refusals_are_plain_http() {
    let server = TestServer::start();
    let refused = |path: &str, codec: Option<&str>| {
        let (addr, path, codec) = (server.addr, path.to_owned(), codec.map(str::to_owned));
        async move {
            Client::connect(addr, &path, codec.as_deref())
                .await
                .err()
                .map(|r| (r.status, r.body))
        }
    };
    assert_eq!(refused("/v1/graphs/Bad_Name", None).await.unwrap().0, 400);
    assert_eq!(
        refused("/v1/graphs/ok?user=not%20ok", None)
            .await
            .unwrap()
            .0,
        400
    );
    assert_eq!(refused("/v1/graphs/ok?since=x", None).await.unwrap().0, 400);
    let (status, body) = refused("/v1/graphs/ok", Some("x.v9, y.v2")).await.unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("gitmind.v1.bin") && body.contains("gitmind.v1.json"),
        "{body}"
    );
    assert_eq!(refused("/nowhere", None).await.unwrap().0, 404);
    // No subprotocol offered: JSON.
    let c = Client::connect(server.addr, "/v1/graphs/ok", None)
        .await
        .unwrap();
    assert!(!c.binary);
    assert!(c.user_id.starts_with("anon-"));
    // Preference order is the client's.
    let c = Client::connect(
        server.addr,
        "/v1/graphs/ok",
        Some("gitmind.v1.json, gitmind.v1.bin"),
    )
    .await
    .unwrap();
    assert!(!c.binary);
}

#[tokio::test]
async fn connections_past_the_cap_get_429_until_one_closes() {
    let server = TestServer::start_with(|c| c.max_connections = 2);
    let a = server.connect("cap", "a", "gitmind.v1.json").await;
    let _b = server.connect("cap", "b", "gitmind.v1.json").await;
    let refused = Client::connect(server.addr, "/v1/graphs/cap", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 429);
    // A session that ends gives its place back.
    drop(a);
    Client::connect_when_free(server.addr, "/v1/graphs/cap").await;
}

#[tokio::test]
async fn http_endpoints_health_metrics_and_snapshot() {
    let server = TestServer::start();
    assert_eq!(
        http_get(server.addr, "/healthz", "").await,
        (200, "ok\n".into())
    );
    let mut c = server.connect("snap", "alice", "gitmind.v1.json").await;
    let mid = c.create_node("concept:s", "snap", 0).await;
    c.outcome(&mid).await;
    let (status, body) = http_get(server.addr, "/v1/graphs/snap", "").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["seq"], 1);
    assert_eq!(json["nodes"][0]["id"], "concept:s");
    assert!(json["epoch"].is_string() && json["edges"].is_array());
    assert_eq!(http_get(server.addr, "/v1/graphs/missing", "").await.0, 404);
    assert_eq!(http_get(server.addr, "/v1/graphs/NOPE", "").await.0, 400);
    let (status, metrics) = http_get(server.addr, "/metrics", "").await;
    assert_eq!(status, 200);
    for name in [
        "gitmind_connections{shard=\"0\"}",
        "gitmind_messages_in_total{codec=\"json\"}",
        "gitmind_errors_total{code=\"bad_frame\"}",
        "gitmind_fanout_latency_seconds_count",
        "gitmind_changes_committed_total 1",
        "gitmind_persist_commits_total 1",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

#[tokio::test]
async fn shutdown_tells_every_session_to_reconnect_and_closes_with_1001() {
    let mut server = TestServer::start();
    let mut a = server.connect("bye", "a", "gitmind.v1.json").await;
    let mut b = server.connect("bye", "b", "gitmind.v1.bin").await;
    let shutdown = tokio::spawn(async move {
        server.shutdown().await;
        server
    });
    for c in [&mut a, &mut b] {
        let (code, messages) = c.closed().await;
        assert_eq!(code, Some(1001));
        assert!(messages
            .iter()
            .any(|e| matches!(&e.body, Body::SystemReconnect(r) if r.reason == "shutdown")));
    }
    let server = shutdown.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn reuseport_mode_serves_too() {
    // On io_uring too when the tests run on it: then the shards accept
    // through io_uring.
    let server =
        TestServer::start_with(|c| c.accept = gitmind_server::config::AcceptMode::Reuseport);
    let mut a = server.connect("rp", "a", "gitmind.v1.json").await;
    let mut b = server.connect("rp", "b", "gitmind.v1.bin").await;
    let mid = a.create_node("concept:rp", "x", 0).await;
    a.outcome(&mid).await;
    b.recv_until("event", |e| matches!(e.body, Body::NodeCreate(_)))
        .await;
}

/// The io_uring rings open in this process.
#[cfg(all(feature = "uring", target_os = "linux"))]
fn io_urings() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("io_uring"))
        .count()
}

/// With the `uring` feature the shards serve through io_uring (a ring
/// each); without it `--io uring` is refused at start-up with a message
/// that says what to do.
#[tokio::test]
async fn io_uring_serves_or_is_refused_clearly() {
    use gitmind_server::config::IoBackend;
    let dir = tempfile::tempdir().unwrap();
    let config = gitmind_server::Config {
        port: 0,
        shards: 2,
        fsync: false,
        data_dir: dir.path().join("data"),
        io: IoBackend::Uring,
        ..gitmind_server::Config::default()
    };
    #[cfg(not(all(feature = "uring", target_os = "linux")))]
    {
        let Err(error) = gitmind_server::Server::start(config) else {
            panic!("--io uring started without the uring feature");
        };
        let error = error.to_string();
        assert!(
            error.contains("--io uring") && error.contains("`uring` cargo feature"),
            "{error}"
        );
    }
    #[cfg(all(feature = "uring", target_os = "linux"))]
    {
        let server = gitmind_server::Server::start(config).unwrap();
        // The shards set up their rings as they start (other tests' servers
        // may hold rings too, under GITMIND_TEST_IO=uring).
        let deadline = std::time::Instant::now() + common::WAIT;
        while io_urings() < 2 {
            assert!(std::time::Instant::now() < deadline, "no io_uring opened");
            tokio::task::yield_now().await;
        }
        let test = TestServer {
            addr: server.local_addr(),
            server: Some(server),
            dir,
            tls: None,
        };
        for (i, codec) in CODECS.into_iter().enumerate() {
            let graph = format!("uring-{i}");
            let mut a = test.connect(&graph, "a", codec).await;
            let mut b = test.connect(&graph, "b", codec).await;
            let mid = a.create_node("concept:uring", "x", 0).await;
            a.outcome(&mid).await;
            b.recv_until("event", |e| matches!(e.body, Body::NodeCreate(_)))
                .await;
        }
    }
}
