//! The client library against a real server on port 0, both codecs.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, until, until_state, TestServer, WAIT};
use gitmind_client::{Client, ClientConfig, Codec, Event, Outcome, State};
use gitmind_schema::message::{NodeCreate, NodeUpdate, RollbackReason, SyncMode};
use gitmind_schema::model::{Node, TextEdits};
use gitmind_schema::ot::TextOp;
use gitmind_schema::Body;
use gitmind_testkit::Proxy;

fn create(id: &str, content: &str) -> Body {
    Body::NodeCreate(NodeCreate {
        base_seq: None,
        node: Node {
            id: id.into(),
            content: Some(content.into()),
            ..Node::default()
        },
        commit: None,
    })
}

fn edit(id: &str, op: TextOp) -> Body {
    Body::NodeUpdate(NodeUpdate {
        id: id.into(),
        text: Some(TextEdits { content: Some(op) }),
        ..NodeUpdate::default()
    })
}

/// `[at, text, rest]`: insert `text` at char `at` of a text of `len` chars.
fn insert(len: u64, at: u64, text: &str) -> TextOp {
    let mut op = TextOp::new();
    op.retain(at).insert(text).retain(len - at);
    op
}

/// The length in chars of `doc:shared`'s text as the replica shows it.
fn len(replica: &gitmind_client::replica::Replica) -> u64 {
    replica
        .node("doc:shared")
        .and_then(|n| n.content.as_deref())
        .unwrap_or("")
        .chars()
        .count() as u64
}

/// The length in chars of `doc:log`'s text as the replica shows it.
fn log_len(replica: &gitmind_client::replica::Replica) -> u64 {
    replica
        .node("doc:log")
        .and_then(|n| n.content.as_deref())
        .unwrap_or("")
        .chars()
        .count() as u64
}

fn content(client: &gitmind_client::Client, id: &str) -> String {
    client
        .replica()
        .node(id)
        .and_then(|n| n.content.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_editing_one_text_concurrently_end_identical_with_both_edits() {
    for codec in [Codec::Binary, Codec::Json] {
        let server = TestServer::start();
        let (alice, _a) = connect(&server.url(), "text", "alice", codec).await;
        let (bob, _b) = connect(&server.url(), "text", "bob", codec).await;
        let outcome = alice
            .mutate(create("doc:shared", "hello world"))
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Confirmed(_)));
        until(&bob, "bob sees the node", |r| {
            r.node("doc:shared").is_some()
        })
        .await;

        // Ten rounds of edits made at the same moment, at the same and at
        // different places, each on the text its author saw.
        for round in 0..10u64 {
            let a_mark = format!("<a{round}>");
            let b_mark = format!("<b{round}>");
            // Each edit is made on the text as its author's replica shows it
            // at that moment; the other's edit may be arriving meanwhile.
            let (a, b) = tokio::join!(
                tokio::time::timeout(
                    common::WAIT,
                    alice.mutate_with(move |r| edit("doc:shared", insert(len(r), 0, &a_mark))),
                ),
                tokio::time::timeout(
                    common::WAIT,
                    bob.mutate_with(move |r| {
                        let l = len(r);
                        edit(
                            "doc:shared",
                            insert(l, if round % 2 == 0 { 0 } else { l }, &b_mark),
                        )
                    }),
                ),
            );
            let (a, b) = (
                a.expect("alice's outcome in time").unwrap(),
                b.expect("bob's outcome in time").unwrap(),
            );
            assert!(
                matches!(a, Outcome::Confirmed(_)),
                "text merges are confirmed, not conflicts: {a:?}"
            );
            assert!(
                matches!(b, Outcome::Confirmed(_)),
                "text merges are confirmed, not conflicts: {b:?}"
            );
        }
        until(&alice, "both settled", |r| r.pending_count() == 0).await;
        until(&bob, "both settled", |r| r.pending_count() == 0).await;
        let deadline = Instant::now() + common::WAIT;
        while content(&alice, "doc:shared") != content(&bob, "doc:shared") {
            assert!(Instant::now() < deadline, "texts never converged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = content(&alice, "doc:shared");
        for round in 0..10 {
            assert_eq!(
                text.matches(&format!("<a{round}>")).count(),
                1,
                "{codec:?}: {text}"
            );
            assert_eq!(
                text.matches(&format!("<b{round}>")).count(),
                1,
                "{codec:?}: {text}"
            );
        }
        assert!(text.contains("hello world"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_bigger_than_one_sync_chunk_comes_as_a_delta_on_both_codecs() {
    let server = TestServer::start();
    for codec in [Codec::Binary, Codec::Json] {
        let graph = match codec {
            Codec::Binary => "long-away-bin",
            Codec::Json => "long-away-json",
        };
        let proxy = Proxy::start(server.addr).await.unwrap();
        let (alice, _a) = connect(&server.url(), graph, "alice", Codec::Binary).await;
        let (bob, mut bob_events) = connect(&proxy.url(), graph, "bob", codec).await;
        alice.mutate(create("doc:0", "")).await.unwrap();
        until(&bob, "bob sees the first node", |r| {
            r.node("doc:0").is_some()
        })
        .await;

        // Bob is away while more than one sync chunk (256 KiB) of changes
        // is made, then comes back.
        proxy.pause();
        let content = "x".repeat(10_000);
        for i in 1..=40 {
            let outcome = alice
                .mutate(create(&format!("doc:{i}"), &content))
                .await
                .unwrap();
            assert!(matches!(outcome, Outcome::Confirmed(_)), "{outcome:?}");
        }
        proxy.resume();
        until(&bob, "bob has every change", |r| r.server_seq() == 41).await;
        assert_eq!(bob.replica().nodes().count(), 41);

        let mut modes = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(100), bob_events.next()).await
        {
            if let Event::Synced { mode, .. } = event {
                modes.push(mode);
            }
        }
        assert_eq!(
            modes,
            [SyncMode::Snapshot, SyncMode::Delta],
            "{codec:?}: bob's first sync, then his resume with the 40 changes he missed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_with_every_event_once_and_the_pending_change_applied_once() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr).await.unwrap();
    let (alice, _a) = connect(&proxy.url(), "cut", "alice", Codec::Binary).await;
    let (bob, _b) = connect(&server.url(), "cut", "bob", Codec::Json).await;
    alice.mutate(create("doc:log", "")).await.unwrap();
    until(&bob, "bob sees the node", |r| r.node("doc:log").is_some()).await;

    for round in 0..5 {
        // Alice's change goes out, and the network fails under it: it may
        // or may not have reached the server.
        let pending = {
            let alice = alice.clone();
            tokio::spawn(async move {
                alice
                    .mutate_with(move |r| {
                        let len = log_len(r);
                        edit("doc:log", insert(len, len, &format!("[alice{round}]")))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        proxy.cut();
        // Others go on meanwhile.
        for i in 0..3 {
            let outcome = bob
                .mutate_with(move |r| {
                    edit(
                        "doc:log",
                        insert(log_len(r), 0, &format!("(bob{round}.{i})")),
                    )
                })
                .await
                .unwrap();
            assert!(
                matches!(outcome, Outcome::Confirmed(_)),
                "bob round {round}.{i}: {outcome:?}"
            );
        }
        let outcome = tokio::time::timeout(common::WAIT, pending)
            .await
            .expect("the pending change settles")
            .unwrap()
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Confirmed(_)),
            "alice round {round}: {outcome:?}"
        );
    }
    until_state(&alice, "alice connected", |s| {
        matches!(s, State::Connected { .. })
    })
    .await;
    until(&alice, "alice settled", |r| r.pending_count() == 0).await;
    let deadline = Instant::now() + common::WAIT;
    loop {
        let (a, b) = (alice.replica().server_seq(), bob.replica().server_seq());
        if a == b && content(&alice, "doc:log") == content(&bob, "doc:log") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice at seq {a} never caught up with bob at {b}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = content(&alice, "doc:log");
    for round in 0..5 {
        assert_eq!(
            text.matches(&format!("[alice{round}]")).count(),
            1,
            "applied exactly once: {text}"
        );
        for i in 0..3 {
            assert_eq!(
                text.matches(&format!("(bob{round}.{i})")).count(),
                1,
                "no event missed: {text}"
            );
        }
    }
    // 1 create + 5 of alice's + 15 of bob's changes, each one seq.
    assert_eq!(alice.replica().server_seq(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_reconnecting_after_a_restart_spread_their_retries() {
    let mut server = TestServer::start();
    let mut clients = Vec::new();
    for i in 0..500 {
        let codec = if i % 2 == 0 {
            Codec::Binary
        } else {
            Codec::Json
        };
        clients.push(connect(&server.url(), "herd", &format!("u{i}"), codec).await);
    }
    let restarted = Instant::now();
    server.restart().await;
    let mut waits = Vec::new();
    for (client, _) in &clients {
        let client = client.clone();
        waits.push(tokio::spawn(async move {
            let mut state = client.state();
            // First the loss, then the next connection.
            tokio::time::timeout(Duration::from_secs(60), async {
                while !matches!(*state.borrow_and_update(), State::Reconnecting { .. }) {
                    state.changed().await.unwrap();
                }
                while !matches!(*state.borrow_and_update(), State::Connected { .. }) {
                    state.changed().await.unwrap();
                }
            })
            .await
            .expect("reconnected within 60 s");
            Instant::now()
        }));
    }
    let mut times: Vec<u128> = Vec::new();
    for wait in waits {
        times.push(wait.await.unwrap().duration_since(restarted).as_millis());
    }
    times.sort_unstable();
    let busiest = times
        .iter()
        .map(|t| times.iter().filter(|u| **u >= *t && **u < *t + 100).count())
        .max()
        .unwrap();
    assert!(
        busiest < 250,
        "{busiest} of 500 clients reconnected within one 100 ms span: {:?}",
        &times[..20]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_rides_out_a_server_restart_and_its_pending_change_applies_once() {
    let mut server = TestServer::start();
    let (alice, _a) = connect(&server.url(), "restart", "alice", Codec::Binary).await;
    let (bob, mut bob_events) = connect(&server.url(), "restart", "bob", Codec::Json).await;
    for i in 0..5 {
        let outcome = alice
            .mutate(create(&format!("doc:before{i}"), "x"))
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Confirmed(_)));
    }
    until(&bob, "bob has the first changes", |r| r.server_seq() == 5).await;
    let epoch = bob.replica().epoch().map(str::to_owned);

    // The server goes away; alice changes something while it is down.
    let server_down = {
        let server = server.server.take().unwrap();
        tokio::task::spawn_blocking(move || server.shutdown())
    };
    server_down.await.unwrap();
    let pending = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .mutate(create("doc:offline", "made while the server was down"))
                .await
        })
    };
    until_state(&alice, "alice notices", |s| {
        matches!(s, State::Reconnecting { .. })
    })
    .await;
    server.server = None;
    server.restart_stopped().await;

    let outcome = tokio::time::timeout(common::WAIT, pending)
        .await
        .expect("settles after the restart")
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Confirmed(_)), "{outcome:?}");
    until(&bob, "bob resumed and has alice's offline change", |r| {
        r.node("doc:offline").is_some()
    })
    .await;
    assert_eq!(
        bob.replica().epoch().map(str::to_owned),
        epoch,
        "the history survived the restart: same epoch"
    );
    assert_eq!(
        bob.replica().server_seq(),
        6,
        "every change once: 5 before, 1 after"
    );
    // The window survived the restart too: after his first sync (the whole
    // graph), bob resumed with the changes he missed, not the whole graph.
    let mut modes = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), bob_events.next()).await
    {
        if let Event::Synced { mode, .. } = event {
            modes.push(mode);
        }
    }
    assert_eq!(modes, [SyncMode::Snapshot, SyncMode::Delta], "bob's syncs");
    for client in [&alice, &bob] {
        let replica = client.replica();
        let mut ids: Vec<&str> = replica.nodes().map(|n| n.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            [
                "doc:before0",
                "doc:before1",
                "doc:before2",
                "doc:before3",
                "doc:before4",
                "doc:offline"
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_api_covers_every_change_and_presence() {
    use gitmind_client::Event;
    use gitmind_schema::message::{BatchOp, PresenceStatus, UserPresence};
    use gitmind_schema::model::{Edge, EdgeSet, NodeSet};

    let server = TestServer::start();
    let (alice, _a) = connect(&server.url(), "typed", "alice", Codec::Binary).await;
    let (bob, mut bob_events) = connect(&server.url(), "typed", "bob", Codec::Json).await;
    let confirmed = |o: Outcome| assert!(matches!(o, Outcome::Confirmed(_)), "{o:?}");
    let node = |id: &str| Node {
        id: id.into(),
        label: Some(id.into()),
        ..Node::default()
    };
    confirmed(alice.create_node(node("doc:a")).await.unwrap());
    confirmed(alice.create_node(node("doc:b")).await.unwrap());
    confirmed(
        alice
            .update_node(
                "doc:a",
                NodeSet {
                    label: Some("A".into()),
                    ..NodeSet::default()
                },
            )
            .await
            .unwrap(),
    );
    confirmed(
        alice
            .edit_text("doc:a", |text| {
                insert(text.chars().count() as u64, 0, "hi ")
            })
            .await
            .unwrap(),
    );
    let edge = Edge {
        source: "doc:a".into(),
        edge_type: "references".into(),
        target: "doc:b".into(),
        ..Edge::default()
    };
    confirmed(alice.create_edge(edge).await.unwrap());
    let edge_id = Edge::make_id("doc:a", "references", "doc:b");
    confirmed(
        alice
            .update_edge(
                &edge_id,
                EdgeSet {
                    confidence: Some(0.5),
                    ..EdgeSet::default()
                },
            )
            .await
            .unwrap(),
    );
    let ops = vec![
        BatchOp::NodeCreate(NodeCreate {
            base_seq: None,
            node: node("doc:c"),
            commit: None,
        }),
        BatchOp::NodeCreate(NodeCreate {
            base_seq: None,
            node: node("doc:d"),
            commit: None,
        }),
    ];
    confirmed(alice.batch(ops).await.unwrap());
    confirmed(alice.delete_edge(&edge_id).await.unwrap());
    confirmed(alice.delete_node("doc:b").await.unwrap());
    until(&bob, "bob has every change", |r| r.server_seq() == 9).await;
    {
        let replica = bob.replica();
        let a = replica.node("doc:a").unwrap();
        assert_eq!(
            (a.label.as_deref(), a.content.as_deref()),
            (Some("A"), Some("hi "))
        );
        assert!(
            replica.node("doc:b").is_none()
                && replica.node("doc:c").is_some()
                && replica.node("doc:d").is_some()
        );
        assert_eq!(replica.edges().count(), 0);
    }
    let presence = UserPresence {
        status: PresenceStatus::Active,
        focus: Some("doc:a".into()),
        display_name: Some("Alice".into()),
        color: None,
        chaos_affinity: None,
    };
    alice.presence(presence).await.unwrap();
    alice.cursor(1.0, 2.0, Some("doc:a".into())).await.unwrap();
    alice.selection(vec!["doc:a".into()], vec![]).await.unwrap();
    let mut seen = (false, false, false);
    tokio::time::timeout(common::WAIT, async {
        while seen != (true, true, true) {
            if let Some(Event::Presence(e)) = bob_events.next().await {
                match e.body {
                    Body::UserPresence(p) if p.display_name.as_deref() == Some("Alice") => {
                        seen.0 = true
                    }
                    Body::CursorMove(_) => seen.1 = true,
                    Body::SelectionChange(_) => seen.2 = true,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("bob sees alice's presence, cursor and selection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_several_chunks_reaches_both_codecs_whole_with_the_events_after_it() {
    let server = TestServer::start();
    let (writer, _w) = connect(&server.url(), "big", "writer", Codec::Binary).await;
    // About 600 KB of text: the snapshot comes in several chunks, and the
    // server may put more than one in a frame (JSON arrays).
    let mut import = gitmind_client::import::Importer::new(writer.clone());
    let text = "gitmind ".repeat(250);
    for i in 0..300 {
        let node = Node {
            id: format!("doc:{i:03}"),
            content: Some(text.clone()),
            ..Node::default()
        };
        import.node(node, text.len()).await.unwrap();
    }
    assert_eq!(import.finish().await.unwrap(), (300, 0));
    for codec in [Codec::Json, Codec::Binary] {
        let (reader, _r) = connect(&server.url(), "big", "reader", codec).await;
        // A change right after the sync arrives in order, not lost.
        let Outcome::Confirmed(after) = writer.mutate(create("doc:after", "x")).await.unwrap()
        else {
            panic!("doc:after was not confirmed");
        };
        until(&reader, "the reader has the change after the sync", |r| {
            r.node("doc:after").is_some()
        })
        .await;
        {
            let replica = reader.replica();
            assert_eq!(replica.nodes().count(), 301, "{codec:?}");
            assert!(replica
                .nodes()
                .filter(|n| n.id != "doc:after")
                .all(|n| n.content.as_deref() == Some(text.as_str())));
            assert_eq!(replica.server_seq(), after.seq, "{codec:?}");
        }
        let Outcome::Confirmed(deleted) = writer
            .mutate(Body::NodeDelete(gitmind_schema::message::NodeDelete {
                id: "doc:after".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
        else {
            panic!("the delete was not confirmed");
        };
        until(&reader, "the reader sees the delete", |r| {
            r.server_seq() == deleted.seq
        })
        .await;
        reader.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_refused_rate_limited_are_sent_again_and_each_lands_once_on_both_codecs() {
    use futures_util::future::join_all;

    // Five changes a second per user: a burst of twelve is refused
    // `rate_limited` from the sixth on, with `retryAfterMs`.
    let server = TestServer::start_with(|config| config.mutation_rate_per_user = 5);
    let node = |id: String| Node {
        id,
        ..Node::default()
    };
    for (codec, graph) in [(Codec::Binary, "retry-bin"), (Codec::Json, "retry-json")] {
        let (client, _events) = connect(&server.url(), graph, graph, codec).await;
        let outcomes = join_all((0..12).map(|i| client.create_node(node(format!("n:{i}"))))).await;
        for outcome in outcomes {
            assert!(
                matches!(outcome.unwrap(), Outcome::Confirmed(_)),
                "{codec:?}: every change lands"
            );
        }
        // Each exactly once: a second application would have been refused
        // `already_exists`, and the graph would be past seq 12.
        let (watcher, _w) = connect(&server.url(), graph, "watcher", codec).await;
        until(&watcher, "the twelve nodes", |r| {
            r.server_nodes().count() == 12
        })
        .await;
        assert_eq!(watcher.replica().server_seq(), 12);
    }

    // Without retries the refusal reaches the program, as before.
    let mut config = ClientConfig::new(server.url(), "retry-off");
    config.user = Some("impatient".into());
    config.transient_retries = 0;
    let (client, _events) = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .unwrap()
        .unwrap();
    let outcomes = join_all((0..12).map(|i| client.create_node(node(format!("n:{i}"))))).await;
    let refused = outcomes
        .into_iter()
        .filter(
            |o| matches!(o, Ok(Outcome::RolledBack(r)) if r.reason == RollbackReason::RateLimited),
        )
        .count();
    assert!(refused > 0, "some changes are refused rate_limited");
}
