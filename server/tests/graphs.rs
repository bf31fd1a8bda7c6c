//! Graphs held open only while used (#13): a graph with no session and
//! nothing on its way to git is unloaded after `graph_idle_unload_ms` and
//! loads again, whole, when asked for; `max_open_graphs` bounds what is
//! held, idle graphs giving way first and a new graph refused with 1013
//! when none can. Each against a real server, both codecs where the codec
//! matters.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::{http_get, Client, TestServer, WAIT};
use gitmind_schema::message::*;
use gitmind_schema::model::Node;
use gitmind_schema::{binary, json, Body, Envelope};
use gitmind_server::metrics::Metrics;
use tokio_tungstenite::tungstenite::Message;

const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

fn metrics(server: &TestServer) -> Arc<Metrics> {
    server.server.as_ref().unwrap().metrics().clone()
}

/// Waits until `done` holds, or fails naming `what` after [`WAIT`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closes a client's connection from its side and waits for the server's
/// answer, so its session has ended.
async fn leave(mut client: Client) {
    let _ = client.ws.close(None).await;
    let _ = tokio::time::timeout(WAIT, client.closed()).await;
}

/// One unlabelled metric's value, as `GET /metrics` shows it.
async fn scrape(server: &TestServer, name: &str) -> i64 {
    let (status, text) = http_get(server.addr, "/metrics", "").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

fn create(id: &str, node: &str) -> Envelope {
    Envelope::new(
        id,
        Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node: Node {
                id: node.into(),
                label: Some(format!("label of {node}")),
                ..Node::default()
            },
            commit: None,
        }),
    )
}

/// Sends envelopes as one frame.
async fn send_frame(client: &mut Client, envelopes: &[Envelope]) {
    let message = if client.binary {
        Message::Binary(binary::encode_batch(envelopes))
    } else {
        let text = String::from_utf8(json::encode_batch(envelopes).to_vec()).unwrap();
        Message::Text(text.into())
    };
    client.send_raw(message).await;
}

/// Creates `n` nodes and waits until each is confirmed.
async fn create_nodes(client: &mut Client, prefix: &str, n: usize) {
    for i in 0..n {
        let mid = client
            .create_node(&format!("concept:{prefix}{i}"), "x", 0)
            .await;
        let outcome = client.outcome(&mid).await;
        assert!(
            matches!(outcome.body, Body::UpdateConfirmed(_)),
            "{outcome:?}"
        );
    }
}

fn node_ids(sync: &GraphSync) -> Vec<String> {
    let mut ids: Vec<String> = sync.nodes.iter().flatten().map(|n| n.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_idle_graph_is_unloaded_and_comes_back_whole() {
    let server = TestServer::start_with(|c| c.graph_idle_unload_ms = 200);
    let m = metrics(&server);
    for codec in CODECS {
        let graph = format!("idle-{}", codec.len());
        let unloads = m.graph_unloads.load(Relaxed);
        let loads = m.graph_loads.load(Relaxed);
        let mut alice = server.connect(&graph, "alice", codec).await;
        create_nodes(&mut alice, "a", 3).await;
        leave(alice).await;
        until("the idle graph to be unloaded", || {
            m.graph_unloads.load(Relaxed) == unloads + 1
        })
        .await;
        until("the gauge to show it", || m.graphs_open.load(Relaxed) == 0).await;

        // Back from git: the same epoch, seq and nodes.
        let bob = server.connect(&graph, "bob", codec).await;
        assert_eq!(m.graph_loads.load(Relaxed), loads + 1, "{codec}");
        let sync = bob.sync.clone().unwrap();
        assert_eq!(sync.mode, Some(SyncMode::Snapshot), "{codec}");
        assert_eq!(sync.seq, Some(3), "{codec}");
        assert_eq!(node_ids(&sync), ["concept:a0", "concept:a1", "concept:a2"]);
        let epoch = sync.epoch.clone().unwrap();
        leave(bob).await;
        until("the graph to be unloaded again", || {
            m.graph_unloads.load(Relaxed) == unloads + 2
        })
        .await;

        // A resume from git's replay window is a delta.
        let path = format!("/v1/graphs/{graph}?user=carol&since=1&epoch={epoch}");
        let mut carol = Client::connect(server.addr, &path, Some(codec))
            .await
            .unwrap();
        let sync = carol.sync.clone().unwrap();
        assert_eq!(sync.mode, Some(SyncMode::Delta), "{codec}");
        assert_eq!(sync.epoch.as_deref(), Some(epoch.as_str()));
        let seqs: Vec<u64> = sync
            .events
            .iter()
            .flatten()
            .map(|e| e.seq.unwrap())
            .collect();
        assert_eq!(seqs, [2, 3], "{codec}");
        // And it goes on from there.
        let mid = carol.create_node("concept:c", "x", 3).await;
        let Body::UpdateConfirmed(confirmed) = carol.outcome(&mid).await.body else {
            panic!("not confirmed")
        };
        assert_eq!(confirmed.seq, 4, "{codec}");
        leave(carol).await;
        until("the graph to be unloaded once more", || {
            m.graph_unloads.load(Relaxed) == unloads + 3
        })
        .await;

        // Another epoch: a snapshot, as the protocol says.
        let path = format!("/v1/graphs/{graph}?user=dave&since=1&epoch=not-{epoch}");
        let dave = Client::connect(server.addr, &path, Some(codec))
            .await
            .unwrap();
        let sync = dave.sync.clone().unwrap();
        assert_eq!(sync.mode, Some(SyncMode::Snapshot), "{codec}");
        assert_eq!(sync.seq, Some(4), "{codec}");
        assert_eq!(node_ids(&sync).len(), 4, "{codec}");
        leave(dave).await;
        until("every graph to be unloaded", || {
            m.graphs_open.load(Relaxed) == 0
        })
        .await;
    }
}

#[tokio::test]
async fn the_snapshot_endpoint_loads_an_unloaded_graph_and_lets_it_go_again() {
    let server = TestServer::start_with(|c| c.graph_idle_unload_ms = 100);
    let m = metrics(&server);
    let mut alice = server.connect("read", "alice", "gitmind.v1.json").await;
    create_nodes(&mut alice, "r", 2).await;
    leave(alice).await;
    until("the graph to be unloaded", || {
        m.graph_unloads.load(Relaxed) == 1
    })
    .await;
    let (status, body) = http_get(server.addr, "/v1/graphs/read", "").await;
    assert_eq!(status, 200, "{body}");
    let snapshot: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snapshot["seq"], 2);
    assert_eq!(snapshot["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(m.graph_loads.load(Relaxed), 1);
    until("the read graph to be unloaded", || {
        m.graph_unloads.load(Relaxed) == 2
    })
    .await;
    // A graph never written to is not created by a read.
    let (status, _) = http_get(server.addr, "/v1/graphs/never-written", "").await;
    assert_eq!(status, 404);
    assert_eq!(scrape(&server, "gitmind_graphs_open").await, 0);
    assert_eq!(scrape(&server, "gitmind_graph_loads_total").await, 1);
    assert_eq!(scrape(&server, "gitmind_graph_unloads_total").await, 2);
    assert_eq!(scrape(&server, "gitmind_graph_refusals_total").await, 0);
}

#[tokio::test]
async fn a_graph_with_a_session_is_never_unloaded() {
    let server = TestServer::start_with(|c| c.graph_idle_unload_ms = 50);
    let m = metrics(&server);
    let mut alice = server.connect("held", "alice", "gitmind.v1.json").await;
    create_nodes(&mut alice, "h", 1).await;
    // A graph left alone meanwhile goes: the sweep runs.
    let bob = server.connect("left", "bob", "gitmind.v1.bin").await;
    leave(bob).await;
    until("the other graph to be unloaded", || {
        m.graph_unloads.load(Relaxed) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(m.graph_unloads.load(Relaxed), 1);
    assert_eq!(m.graphs_open.load(Relaxed), 1);
    // Still served from memory.
    let mid = alice.create_node("concept:h-later", "x", 1).await;
    assert!(matches!(
        alice.outcome(&mid).await.body,
        Body::UpdateConfirmed(_)
    ));
    assert_eq!(m.graph_loads.load(Relaxed), 0);
}

#[tokio::test]
async fn a_graph_with_a_commit_in_flight_is_unloaded_only_once_it_is_in_git() {
    // fsync on: commits take long enough for the session to be gone first.
    let server = TestServer::start_with(|c| {
        c.graph_idle_unload_ms = 0;
        c.fsync = true;
    });
    let m = metrics(&server);
    for (round, codec) in CODECS.into_iter().enumerate() {
        let graph = format!("flight-{round}");
        let mut alice = server.connect(&graph, "alice", codec).await;
        let frame: Vec<Envelope> = (0..300)
            .map(|i| create(&format!("m{i}"), &format!("concept:f{i}")))
            .collect();
        let committed = m.changes_committed.load(Relaxed);
        let unloads = m.graph_unloads.load(Relaxed);
        send_frame(&mut alice, &frame).await;
        // Gone without waiting for a single outcome.
        leave(alice).await;
        until("the graph to be unloaded", || {
            m.graph_unloads.load(Relaxed) == unloads + 1
        })
        .await;
        // Released only after every change was committed and released.
        assert_eq!(
            m.changes_committed.load(Relaxed),
            committed + 300,
            "{codec}"
        );
        let bob = server.connect(&graph, "bob", codec).await;
        let sync = bob.sync.clone().unwrap();
        assert_eq!(sync.seq, Some(300), "{codec}");
        assert_eq!(node_ids(&sync).len(), 300, "{codec}");
        leave(bob).await;
        until("every graph to be unloaded", || {
            m.graphs_open.load(Relaxed) == 0
        })
        .await;
    }
}

#[tokio::test]
async fn sessions_joining_a_graph_being_loaded_wait_for_one_load_and_their_messages_too() {
    let server = TestServer::start_with(|c| c.graph_idle_unload_ms = 100);
    let m = metrics(&server);
    let mut alice = server.connect("wait", "alice", "gitmind.v1.json").await;
    create_nodes(&mut alice, "w", 50).await;
    leave(alice).await;
    until("the graph to be unloaded", || {
        m.graph_unloads.load(Relaxed) == 1
    })
    .await;
    // Several sessions at once, each sending a mutation before its sync
    // has arrived: one load, and every mutation taken after it.
    let mut clients = Vec::new();
    for (i, codec) in CODECS.iter().cycle().take(6).enumerate() {
        let path = format!("/v1/graphs/wait?user=u{i}");
        let mut c = Client::open(server.addr, &path, Some(codec)).await.unwrap();
        send_frame(
            &mut c,
            &[create(&format!("early{i}"), &format!("concept:e{i}"))],
        )
        .await;
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.read_sync().await;
        let sync = c.sync.clone().unwrap();
        assert!(sync.seq.unwrap() >= 50, "{sync:?}");
        assert!(node_ids(&sync).contains(&"concept:w49".to_owned()));
        let outcome = c.outcome(&format!("early{i}")).await;
        assert!(
            matches!(outcome.body, Body::UpdateConfirmed(_)),
            "{outcome:?}"
        );
    }
    assert_eq!(m.graph_loads.load(Relaxed), 1, "one load for all of them");
    for c in clients {
        leave(c).await;
    }
}

/// Opens a session that the server must refuse for the graph cap: a
/// `system.reconnect` (`too_many_graphs`) and close code 1013.
async fn assert_refused(server: &TestServer, graph: &str, codec: &str) {
    let path = format!("/v1/graphs/{graph}?user=late");
    let mut c = Client::open(server.addr, &path, Some(codec)).await.unwrap();
    let (code, seen) = c.closed().await;
    assert_eq!(code, Some(1013), "{codec}: {seen:?}");
    let reconnect = seen.iter().find_map(|e| match &e.body {
        Body::SystemReconnect(r) => Some(r),
        _ => None,
    });
    let reconnect = reconnect.unwrap_or_else(|| panic!("{codec}: no system.reconnect in {seen:?}"));
    assert_eq!(reconnect.reason, "too_many_graphs", "{codec}");
    assert!((500..=2000).contains(&reconnect.retry_after_ms), "{codec}");
    assert!(
        !seen.iter().any(|e| matches!(e.body, Body::GraphSync(_))),
        "{codec}: a refused session gets no sync"
    );
}

#[tokio::test]
async fn past_the_cap_a_new_graph_is_refused_until_one_is_idle() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.max_open_graphs = 2);
        let m = metrics(&server);
        let mut alice = server.connect("one", "alice", codec).await;
        let mut bob = server.connect("two", "bob", codec).await;
        create_nodes(&mut bob, "b", 1).await;
        assert_refused(&server, "three", codec).await;
        assert_eq!(m.graph_refusals.load(Relaxed), 1);
        assert_eq!(m.graphs_open.load(Relaxed), 2);
        // The others go on as before.
        create_nodes(&mut alice, "a", 1).await;
        let mid = bob.create_node("concept:b1", "x", 1).await;
        assert!(matches!(
            bob.outcome(&mid).await.body,
            Body::UpdateConfirmed(_)
        ));

        // bob leaves: his graph is idle and gives way at once, long
        // before its idle time.
        leave(bob).await;
        let mut carol = Client::connect(server.addr, "/v1/graphs/three?user=carol", Some(codec))
            .await
            .unwrap();
        assert_eq!(m.graph_unloads.load(Relaxed), 1, "{codec}");
        assert_eq!(m.graphs_open.load(Relaxed), 2, "{codec}");
        create_nodes(&mut carol, "c", 1).await;

        // Held again by alice and carol: bob's graph, in git, cannot be
        // read back now; over HTTP that is a 503.
        let (status, _) = http_get(server.addr, "/v1/graphs/two", "").await;
        assert_eq!(status, 503, "{codec}");
        assert_refused(&server, "two", codec).await;
        leave(alice).await;
        let bob = server.connect("two", "bob", codec).await;
        assert_eq!(
            node_ids(bob.sync.as_ref().unwrap()),
            ["concept:b0", "concept:b1"]
        );
        assert_eq!(m.graph_loads.load(Relaxed), 1, "{codec}");
    }
}

#[tokio::test]
async fn a_flood_of_graph_names_keeps_the_open_graphs_bounded() {
    // The user's handshake rate is another limit (tests/auth.rs): off here.
    let server = TestServer::start_with(|c| {
        c.max_open_graphs = 4;
        c.handshake_rate_per_user = 100_000;
    });
    let m = metrics(&server);
    let mut most = 0;
    for i in 0..200 {
        let codec = CODECS[i % 2];
        let path = format!("/v1/graphs/flood-{i}?user=mallory");
        let mut c = Client::connect(server.addr, &path, Some(codec))
            .await
            .unwrap_or_else(|e| panic!("flood-{i} refused: {} {}", e.status, e.body));
        if i % 10 == 0 {
            create_nodes(&mut c, "f", 1).await;
        }
        most = most.max(m.graphs_open.load(Relaxed));
        leave(c).await;
    }
    assert!(most <= 4, "held up to {most} graphs");
    assert!(m.graphs_open.load(Relaxed) <= 4);
    assert!(m.graph_unloads.load(Relaxed) >= 196);
    assert_eq!(m.graph_refusals.load(Relaxed), 0);
    // What was written comes back.
    let c = server.connect("flood-0", "alice", "gitmind.v1.json").await;
    assert_eq!(node_ids(c.sync.as_ref().unwrap()), ["concept:f0"]);
}

#[tokio::test]
async fn a_graph_that_cannot_be_read_closes_its_sessions_with_1011_and_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = TestServer::start_with(|c| c.data_dir = data.clone());
    for graph in ["broken", "sound"] {
        let mut c = first.connect(graph, "alice", "gitmind.v1.json").await;
        create_nodes(&mut c, graph, 1).await;
        leave(c).await;
    }
    first.shutdown().await;
    // The ref now names a commit that is not there.
    let refpath = data.join("graphs.git/refs/gitmind/graphs/broken");
    std::fs::write(&refpath, "0123456789abcdef0123456789abcdef01234567\n").unwrap();

    // The server starts all the same: it reads a graph when asked for it.
    let server = TestServer::start_with(|c| c.data_dir = data.clone());
    let m = metrics(&server);
    for codec in CODECS {
        let mut c = Client::open(server.addr, "/v1/graphs/broken?user=bob", Some(codec))
            .await
            .unwrap();
        let (code, seen) = c.closed().await;
        assert_eq!(code, Some(1011), "{codec}: {seen:?}");
        assert!(seen.iter().all(|e| !matches!(e.body, Body::GraphSync(_))));
    }
    let (status, _) = http_get(server.addr, "/v1/graphs/broken", "").await;
    assert_eq!(status, 500);
    let sound = server.connect("sound", "bob", "gitmind.v1.bin").await;
    assert_eq!(node_ids(sound.sync.as_ref().unwrap()), ["concept:sound0"]);
    assert_eq!(m.graph_loads.load(Relaxed), 1);
    assert_eq!(
        m.graphs_open.load(Relaxed),
        1,
        "nothing held for the broken one"
    );
}
