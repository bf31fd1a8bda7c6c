//! End-to-end tests of selective subscriptions (docs/protocol.md 7):
//! regions of every filter, enters and leaves, unions, resuming with
//! regions, live queries, bad input; a real server, both codecs.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{env, Client, TestServer};
use gitmind_schema::message::*;
use gitmind_schema::{json, Body, Envelope, ErrorCode};

const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

/// Sends a mutation and waits for its confirmation.
async fn mutate(c: &mut Client, ty: &str, data: &str) {
    let mid = c.id();
    let data = format!(r#"{{"baseSeq":0,{}"#, &data[1..]);
    c.send(&env(&mid, ty, &data)).await;
    let outcome = c.outcome(&mid).await;
    assert!(
        matches!(
            outcome.body,
            Body::UpdateConfirmed(_) | Body::UpdateConflictResolved(_)
        ),
        "{ty} {data}: {outcome:?}"
    );
}

async fn node_at(c: &mut Client, id: &str, x: f64, y: f64) {
    let data = format!(r#"{{"node":{{"id":"{id}","label":"{id}","x":{x},"y":{y}}}}}"#);
    mutate(c, "node.create", &data).await;
}

async fn move_to(c: &mut Client, id: &str, x: f64, y: f64) {
    let data = format!(r#"{{"id":"{id}","set":{{"x":{x},"y":{y}}}}}"#);
    mutate(c, "node.update", &data).await;
}

async fn link(c: &mut Client, s: &str, t: &str) {
    let data = format!(r#"{{"edge":{{"source":"{s}","type":"relates-to","target":"{t}"}}}}"#);
    mutate(c, "edge.create", &data).await;
}

async fn unlink(c: &mut Client, s: &str, t: &str) {
    let data = format!(r#"{{"id":"{s} -[relates-to]-> {t}"}}"#);
    mutate(c, "edge.delete", &data).await;
}

/// Subscribes a region and returns its `region.sync`.
async fn subscribe(c: &mut Client, region: &str, filter: &str) -> RegionSync {
    let id = c.id();
    let data = format!(r#"{{"regionId":"{region}","filter":{filter}}}"#);
    c.send(&env(&id, "region.subscribe", &data)).await;
    let sync = c
        .recv_until(
            "region.sync",
            |e| matches!(&e.body, Body::RegionSync(s) if s.region_id == region),
        )
        .await;
    let Body::RegionSync(sync) = sync.body else {
        unreachable!()
    };
    sync
}

/// Unsubscribes a region, and waits until the hub has taken it: an
/// unsubscribe is not answered, so a region of nothing is subscribed
/// after it and its `region.sync` awaited (the hub takes a session's
/// messages in order).
async fn unsubscribe(c: &mut Client, region: &str) {
    let id = c.id();
    let data = format!(r#"{{"regionId":"{region}"}}"#);
    c.send(&env(&id, "region.unsubscribe", &data)).await;
    subscribe(c, "barrier", r#"{"nodes":["c:nothing"]}"#).await;
}

fn ids(nodes: &[gitmind_schema::model::Node]) -> Vec<String> {
    let mut ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    ids.sort();
    ids
}

/// What names a node in a message about the graph.
fn about(e: &Envelope) -> Vec<String> {
    let one = |body: &Body| -> Vec<String> {
        match body {
            Body::NodeCreate(m) => vec![m.node.id.clone()],
            Body::NodeUpdate(m) => vec![m.id.clone()],
            Body::NodeDelete(m) => vec![m.id.clone()],
            Body::EdgeCreate(m) => vec![m.edge.source.clone(), m.edge.target.clone()],
            Body::EdgeDelete(m) => vec![m.edge_id().unwrap_or_default()],
            Body::RegionEnter(m) => vec![m.node.id.clone()],
            Body::RegionLeave(m) => vec![m.id.clone()],
            _ => Vec::new(),
        }
    };
    match &e.body {
        Body::BatchUpdate(b) => b
            .ops
            .iter()
            .flat_map(|op| one(&Body::from(op.clone())))
            .collect(),
        other => one(other),
    }
}

/// Every message up to and including the `node.create` of `sentinel`
/// (which the writer sends last, inside the reader's regions).
async fn until_sentinel(c: &mut Client, sentinel: &str) -> Vec<Envelope> {
    let mut seen = Vec::new();
    loop {
        let e = c.recv().await;
        let done = matches!(&e.body, Body::NodeCreate(m) if m.node.id == sentinel);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn graph_messages(seen: &[Envelope]) -> Vec<String> {
    seen.iter()
        .filter(|e| !about(e).is_empty())
        .map(|e| format!("{} {:?}", e.body.message_type().name(), about(e)))
        .collect()
}

#[tokio::test]
async fn a_bbox_region_syncs_its_nodes_and_tells_enters_and_leaves() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        node_at(&mut alice, "c:in", 10.0, 10.0).await;
        node_at(&mut alice, "c:out", 500.0, 500.0).await;
        node_at(&mut alice, "c:also-in", 99.0, 0.0).await;
        link(&mut alice, "c:in", "c:out").await;
        let sync = subscribe(&mut bob, "view", r#"{"bbox":[0,0,100,100]}"#).await;
        assert_eq!(ids(&sync.nodes), ["c:also-in", "c:in"], "{codec}");
        assert_eq!(sync.edges.len(), 1, "an edge with one end inside is seen");
        unsubscribe(&mut bob, "all").await;
        // Out of view: nothing. Across the border: enter, then leave.
        move_to(&mut alice, "c:out", 600.0, 600.0).await;
        move_to(&mut alice, "c:out", 50.0, 50.0).await;
        move_to(&mut alice, "c:in", 200.0, 200.0).await;
        move_to(&mut alice, "c:also-in", 98.0, 1.0).await;
        node_at(&mut alice, "c:far", 1000.0, 1000.0).await;
        node_at(&mut alice, "c:sentinel", 1.0, 1.0).await;
        let seen = until_sentinel(&mut bob, "c:sentinel").await;
        let enter = seen
            .iter()
            .find_map(|e| match &e.body {
                Body::RegionEnter(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(enter.region_id, "view");
        assert_eq!(enter.node.id, "c:out");
        assert_eq!(enter.node.x, Some(50.0), "the node arrives whole");
        assert_eq!(enter.node.label.as_deref(), Some("c:out"));
        assert_eq!(
            graph_messages(&seen),
            [
                "region.enter [\"c:out\"]",
                "region.leave [\"c:in\"]",
                "node.update [\"c:also-in\"]",
                "node.create [\"c:sentinel\"]",
            ],
            "{codec}"
        );
    }
}

#[tokio::test]
async fn nodes_and_prefix_regions_make_a_union_and_edges_need_one_end() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        for id in ["n:1", "n:2", "p:1", "q:1", "q:2"] {
            node_at(&mut alice, id, 0.0, 0.0).await;
        }
        let sync = subscribe(&mut bob, "picked", r#"{"nodes":["n:1","nope"]}"#).await;
        assert_eq!(ids(&sync.nodes), ["n:1"]);
        let sync = subscribe(&mut bob, "ps", r#"{"prefix":"p:"}"#).await;
        assert_eq!(ids(&sync.nodes), ["p:1"]);
        unsubscribe(&mut bob, "all").await;
        mutate(
            &mut alice,
            "node.update",
            r#"{"id":"n:1","set":{"label":"one"}}"#,
        )
        .await;
        mutate(
            &mut alice,
            "node.update",
            r#"{"id":"n:2","set":{"label":"two"}}"#,
        )
        .await;
        node_at(&mut alice, "p:2", 0.0, 0.0).await;
        node_at(&mut alice, "q:3", 0.0, 0.0).await;
        link(&mut alice, "q:1", "p:1").await;
        link(&mut alice, "q:1", "q:2").await;
        mutate(&mut alice, "node.delete", r#"{"id":"q:3"}"#).await;
        mutate(&mut alice, "node.delete", r#"{"id":"p:2"}"#).await;
        node_at(&mut alice, "p:sentinel", 0.0, 0.0).await;
        let seen = until_sentinel(&mut bob, "p:sentinel").await;
        assert_eq!(
            graph_messages(&seen),
            [
                "node.update [\"n:1\"]",
                "node.create [\"p:2\"]",
                "edge.create [\"q:1\", \"p:1\"]",
                "node.delete [\"p:2\"]",
                "node.create [\"p:sentinel\"]",
            ],
            "{codec}"
        );
        // A batch is cut to the ops in the regions.
        let mid = alice.id();
        alice
            .send(&env(
                &mid,
                "batch.update",
                r#"{"baseSeq":0,"ops":[
                    {"type":"node.update","data":{"id":"q:1","set":{"label":"hidden"}}},
                    {"type":"node.update","data":{"id":"p:1","set":{"label":"seen"}}}]}"#,
            ))
            .await;
        alice.outcome(&mid).await;
        let batch = bob
            .recv_until("the batch", |e| matches!(e.body, Body::BatchUpdate(_)))
            .await;
        assert_eq!(about(&batch), ["p:1"], "{codec}");
    }
}

#[tokio::test]
async fn an_around_region_follows_edges_as_they_change() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        for id in ["c:a", "c:b", "c:c", "c:d", "c:e"] {
            node_at(&mut alice, id, 0.0, 0.0).await;
        }
        link(&mut alice, "c:a", "c:b").await;
        link(&mut alice, "c:b", "c:c").await;
        link(&mut alice, "c:c", "c:d").await;
        subscribe(&mut bob, "near", r#"{"around":{"id":"c:a","depth":2}}"#).await;
        unsubscribe(&mut bob, "all").await;
        link(&mut alice, "c:a", "c:d").await;
        unlink(&mut alice, "c:a", "c:b").await;
        mutate(
            &mut alice,
            "node.update",
            r#"{"id":"c:e","set":{"label":"c:far"}}"#,
        )
        .await;
        node_at(&mut alice, "c:sentinel", 0.0, 0.0).await;
        link(&mut alice, "c:sentinel", "c:a").await;
        let mut seen = Vec::new();
        loop {
            let e = bob.recv().await;
            let done = matches!(&e.body, Body::EdgeCreate(m) if m.edge.source == "c:sentinel");
            seen.push(e);
            if done {
                break;
            }
        }
        assert_eq!(
            graph_messages(&seen),
            [
                "edge.create [\"c:a\", \"c:d\"]",
                "region.enter [\"c:d\"]",
                "edge.delete [\"c:a -[relates-to]-> c:b\"]",
                "region.leave [\"c:b\"]",
                "edge.create [\"c:sentinel\", \"c:a\"]",
            ],
            "{codec}"
        );
        // sentinel came within reach by its edge: it enters after the edge.
        let enter = bob
            .recv_until("sentinel entering", |e| {
                matches!(&e.body, Body::RegionEnter(_))
            })
            .await;
        assert_eq!(about(&enter), ["c:sentinel"]);
    }
}

#[tokio::test]
async fn a_resync_after_subscribing_carries_only_the_regions() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        node_at(&mut alice, "c:in", 1.0, 1.0).await;
        node_at(&mut alice, "c:out", 900.0, 1.0).await;
        link(&mut alice, "c:in", "c:out").await;
        let first = bob.sync.clone().unwrap();
        let epoch = first.epoch.clone().unwrap();
        let since = first.seq.unwrap();
        subscribe(&mut bob, "view", r#"{"bbox":[0,0,10,10]}"#).await;
        unsubscribe(&mut bob, "all").await;
        move_to(&mut alice, "c:out", 800.0, 1.0).await;
        // Resume from before all this: a snapshot of the regions (the
        // conservative answer of docs/protocol.md 7), not the whole delta.
        let id = bob.id();
        bob.send(&env(
            &id,
            "graph.sync",
            &format!(r#"{{"since":{since},"epoch":"{epoch}"}}"#),
        ))
        .await;
        let sync = bob
            .recv_until("graph.sync", |e| matches!(e.body, Body::GraphSync(_)))
            .await;
        let Body::GraphSync(sync) = sync.body else {
            unreachable!()
        };
        assert_eq!(sync.mode, Some(SyncMode::Snapshot), "{codec}");
        assert_eq!(ids(sync.nodes.as_deref().unwrap_or_default()), ["c:in"]);
        assert_eq!(sync.edges.unwrap_or_default().len(), 1);
        assert_eq!(sync.seq, Some(since + 4));
        // A session back on "all" gets deltas again.
        subscribe(&mut bob, "all", r#"{"all":true}"#).await;
        let id = bob.id();
        bob.send(&env(
            &id,
            "graph.sync",
            &format!(r#"{{"since":{since},"epoch":"{epoch}"}}"#),
        ))
        .await;
        let sync = bob
            .recv_until("graph.sync", |e| matches!(e.body, Body::GraphSync(_)))
            .await;
        let Body::GraphSync(sync) = sync.body else {
            unreachable!()
        };
        assert_eq!(sync.mode, Some(SyncMode::Delta), "{codec}");
    }
}

#[tokio::test]
async fn a_live_query_gains_and_loses_results() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        mutate(
            &mut alice,
            "node.create",
            r#"{"node":{"id":"pkg:0ad","kind":"concept","label":"a game","props":{"section":"games"}}}"#,
        )
        .await;
        node_at(&mut alice, "pkg:git", 0.0, 0.0).await;
        node_at(&mut alice, "other:game", 0.0, 0.0).await;
        let id = bob.id();
        bob.send(&env(
            &id,
            "query.subscribe",
            r#"{"queryId":"games","query":{"prefix":"pkg:","labelContains":"game","props":{"section":"games"}}}"#,
        ))
        .await;
        let results = |e: &Envelope| match &e.body {
            Body::QueryResults(r) => Some(r.clone()),
            _ => None,
        };
        let first = bob.query_results().await;
        assert_eq!(first.results, ["pkg:0ad"], "{codec}");
        assert_eq!(first.added, ["pkg:0ad"]);
        // A change that does not change the answer sends nothing; one
        // that does sends what was added and removed.
        mutate(
            &mut alice,
            "node.update",
            r#"{"id":"pkg:git","set":{"label":"vcs"}}"#,
        )
        .await;
        mutate(
            &mut alice,
            "node.update",
            r#"{"id":"pkg:git","set":{"label":"the game of vcs","props":{"section":"games"}}}"#,
        )
        .await;
        let next = bob.query_results().await;
        assert_eq!(next.results, ["pkg:0ad", "pkg:git"], "{codec}");
        assert_eq!(next.added, ["pkg:git"]);
        assert!(next.removed.is_empty());
        mutate(&mut alice, "node.delete", r#"{"id":"pkg:0ad"}"#).await;
        let next = bob.query_results().await;
        assert_eq!(next.results, ["pkg:git"]);
        assert_eq!(next.removed, ["pkg:0ad"]);
        assert!(next.added.is_empty());
        // edgeType and limit.
        let id = bob.id();
        bob.send(&env(
            &id,
            "query.subscribe",
            r#"{"queryId":"linked","query":{"edgeType":"relates-to","limit":1}}"#,
        ))
        .await;
        assert!(bob.query_results().await.results.is_empty());
        link(&mut alice, "other:game", "pkg:git").await;
        let linked = bob.query_results().await;
        assert_eq!(linked.query_id, "linked");
        assert_eq!(linked.results, ["other:game"], "limit 1, in id order");
        // Unsubscribed: no more results.
        let id = bob.id();
        bob.send(&env(&id, "query.unsubscribe", r#"{"queryId":"linked"}"#))
            .await;
        let id = bob.id();
        bob.send(&env(&id, "query.unsubscribe", r#"{"queryId":"games"}"#))
            .await;
        // bob's messages and alice's reach the hub in no set order: a
        // query of bob's answered means the unsubscribes before it are done
        // (it matches nothing, so it says nothing more).
        let id = bob.id();
        bob.send(&env(
            &id,
            "query.subscribe",
            r#"{"queryId":"barrier","query":{"prefix":"none:"}}"#,
        ))
        .await;
        bob.recv_until("the barrier's results", |e| {
            results(e).is_some_and(|r| r.query_id == "barrier")
        })
        .await;
        unlink(&mut alice, "other:game", "pkg:git").await;
        node_at(&mut alice, "c:sentinel", 0.0, 0.0).await;
        let seen = until_sentinel(&mut bob, "c:sentinel").await;
        assert!(seen.iter().all(|e| results(e).is_none()), "{seen:?}");
    }
}

#[tokio::test]
async fn filters_over_the_limits_are_refused_and_the_session_goes_on() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut bob = server.connect("g", "bob", codec).await;
        let refused = |c: ErrorCode, r: &str| {
            let r = r.to_owned();
            move |e: &Envelope| matches!(&e.body, Body::SystemError(s) if s.code == c && s.reference.as_deref() == Some(r.as_str()))
        };
        bob.send(&env(
            "deep",
            "region.subscribe",
            r#"{"regionId":"r","filter":{"around":{"id":"c:a","depth":4}}}"#,
        ))
        .await;
        bob.recv_until("depth 4 refused", refused(ErrorCode::Invalid, "deep"))
            .await;
        bob.send(&env(
            "flat",
            "region.subscribe",
            r#"{"regionId":"r","filter":{"around":{"id":"c:a","depth":0}}}"#,
        ))
        .await;
        bob.recv_until("depth 0 refused", refused(ErrorCode::Invalid, "flat"))
            .await;
        // A non-finite bbox cannot be written in JSON; binary can carry it.
        let mut nan = env(
            "nan",
            "region.subscribe",
            r#"{"regionId":"r","filter":{"bbox":[0,0,1,1]}}"#,
        );
        if let Body::RegionSubscribe(m) = &mut nan.body {
            m.filter.bbox = Some([0.0, f64::INFINITY, 1.0, 1.0]);
        }
        if bob.binary {
            bob.send(&nan).await;
            bob.recv_until("inf refused", refused(ErrorCode::Invalid, "nan"))
                .await;
        }
        let many: Vec<String> = (0..10_001).map(|i| format!("\"{i}\"")).collect();
        bob.send(&env(
            "many",
            "region.subscribe",
            &format!(
                r#"{{"regionId":"r","filter":{{"nodes":[{}]}}}}"#,
                many.join(",")
            ),
        ))
        .await;
        bob.recv_until("10,001 ids refused", refused(ErrorCode::TooLarge, "many"))
            .await;
        // 100 regions in all ("all" is one of them), then one too many.
        for i in 0..99 {
            let id = format!("ok{i}");
            bob.send(&env(
                &id,
                "region.subscribe",
                &format!(r#"{{"regionId":"r{i}","filter":{{"prefix":"x{i}:"}}}}"#),
            ))
            .await;
        }
        bob.send(&env(
            "one-more",
            "region.subscribe",
            r#"{"regionId":"r100","filter":{"prefix":"y:"}}"#,
        ))
        .await;
        bob.recv_until(
            "the 101st region refused",
            refused(ErrorCode::TooLarge, "one-more"),
        )
        .await;
        for i in 0..100 {
            bob.send(&env(
                &format!("q{i}"),
                "query.subscribe",
                &format!(r#"{{"queryId":"q{i}","query":{{"prefix":"x{i}:"}}}}"#),
            ))
            .await;
        }
        bob.send(&env(
            "q-more",
            "query.subscribe",
            r#"{"queryId":"q100","query":{}}"#,
        ))
        .await;
        bob.recv_until(
            "the 101st query refused",
            refused(ErrorCode::TooLarge, "q-more"),
        )
        .await;
        // Still usable: a region replaced under an existing id is taken.
        let mid = bob.create_node("x5:n", "n", 0).await;
        bob.outcome(&mid).await;
        let sync = subscribe(&mut bob, "r5", r#"{"prefix":"x5:"}"#).await;
        assert_eq!(ids(&sync.nodes), ["x5:n"], "{codec}");
    }
}

#[tokio::test]
async fn a_large_region_comes_in_several_region_syncs_within_the_frame_limit() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let big = "x".repeat(60_000);
        for i in 0..6 {
            let data = format!(r#"{{"node":{{"id":"big:{i}","content":"{big}","x":{i},"y":0}}}}"#);
            mutate(&mut alice, "node.create", &data).await;
        }
        let id = alice.id();
        alice
            .send(&env(
                &id,
                "region.subscribe",
                r#"{"regionId":"wide","filter":{"prefix":"big:"}}"#,
            ))
            .await;
        let mut got = Vec::new();
        let mut parts = 0;
        while got.len() < 6 {
            let e = alice
                .recv_until("region.sync", |e| matches!(e.body, Body::RegionSync(_)))
                .await;
            let Body::RegionSync(s) = e.body else {
                unreachable!()
            };
            assert_eq!(s.region_id, "wide");
            assert_eq!(s.seq, 6, "every part as of the same seq");
            got.extend(ids(&s.nodes));
            parts += 1;
        }
        got.sort();
        assert_eq!(got.len(), 6, "{codec}");
        assert!(parts > 1, "{codec}: {parts} part");
    }
}

#[tokio::test]
async fn the_client_library_subscribes_and_keeps_a_partial_replica() {
    use gitmind_client::{Client as Lib, ClientConfig, Codec, Event};
    for codec in [Codec::Json, Codec::Binary] {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", "gitmind.v1.bin").await;
        node_at(&mut alice, "c:in", 1.0, 1.0).await;
        node_at(&mut alice, "c:out", 500.0, 1.0).await;
        let mut config = ClientConfig::new(format!("ws://{}", server.addr), "g");
        config.user = Some("bob".into());
        config.codec = codec;
        let (bob, mut events) = Lib::connect(config).await.unwrap();
        bob.subscribe_region(
            "view",
            RegionFilter {
                bbox: Some([0.0, 0.0, 10.0, 10.0]),
                ..RegionFilter::default()
            },
        )
        .await
        .unwrap();
        bob.unsubscribe_region("all").await.unwrap();
        bob.subscribe_query(
            "c",
            Query {
                prefix: Some("c:".into()),
                ..Query::default()
            },
        )
        .await
        .unwrap();
        // The query's first results come after the region's sync and the
        // unsubscribe have been taken (the hub takes them in order).
        let mut synced = false;
        let mut results = Vec::new();
        while results.is_empty() {
            match next_event(&mut events).await {
                Event::Region(e) => synced |= matches!(e.body, Body::RegionSync(_)),
                Event::Query(r) => results.push(r),
                _ => {}
            }
        }
        assert!(synced, "region.sync before the query's results");
        move_to(&mut alice, "c:out", 5.0, 5.0).await;
        move_to(&mut alice, "c:in", 800.0, 5.0).await;
        node_at(&mut alice, "c:new", 2.0, 2.0).await;
        loop {
            match next_event(&mut events).await {
                Event::Query(r) => results.push(r),
                Event::Change(e) if matches!(&e.body, Body::NodeCreate(c) if c.node.id == "c:new") => {
                    break
                }
                _ => {}
            }
        }
        assert_eq!(results[0].results, ["c:in", "c:out"]);
        let mut held: Vec<String> = bob.replica().nodes().map(|n| n.id.clone()).collect();
        held.sort();
        // The handshake brought the whole graph; the region's messages
        // since: c:out entered, c:in left, c:new was created inside.
        assert_eq!(held, ["c:new", "c:out"], "{codec:?}");
        assert!(bob.replica().is_partial());
        bob.close().await;
    }
}

async fn next_event(events: &mut gitmind_client::Events) -> gitmind_client::Event {
    tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn crossings_are_told_change_by_change_within_one_commit_group() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        node_at(&mut alice, "c:x", 5.0, 5.0).await;
        subscribe(&mut bob, "view", r#"{"bbox":[0,0,10,10]}"#).await;
        unsubscribe(&mut bob, "all").await;
        // Out and back in, sent together so they commit in one group
        // (one JSON frame; binary frames back to back).
        let moves = [(50.0, 50.0), (6.0, 6.0), (60.0, 60.0), (70.0, 70.0)];
        let envelopes: Vec<Envelope> = moves
            .iter()
            .enumerate()
            .map(|(i, (x, y))| {
                env(
                    &format!("mv{i}"),
                    "node.update",
                    &format!(r#"{{"baseSeq":0,"id":"c:x","set":{{"x":{x},"y":{y}}}}}"#),
                )
            })
            .collect();
        if alice.binary {
            for e in &envelopes {
                alice.send(e).await;
            }
        } else {
            let text: Vec<String> = envelopes
                .iter()
                .map(|e| String::from_utf8(json::encode(e).to_vec()).unwrap())
                .collect();
            alice
                .send_raw(tokio_tungstenite::tungstenite::Message::Text(
                    format!("[{}]", text.join(",")).into(),
                ))
                .await;
        }
        alice.outcome("mv3").await;
        node_at(&mut alice, "c:sentinel", 1.0, 1.0).await;
        let seen = until_sentinel(&mut bob, "c:sentinel").await;
        assert_eq!(
            graph_messages(&seen),
            [
                "region.leave [\"c:x\"]",
                "region.enter [\"c:x\"]",
                "region.leave [\"c:x\"]",
                "node.create [\"c:sentinel\"]",
            ],
            "{codec}"
        );
        let enter = seen
            .iter()
            .find_map(|e| match &e.body {
                Body::RegionEnter(m) => Some(m.node.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (enter.x, enter.y),
            (Some(6.0), Some(6.0)),
            "as of its change"
        );
    }
}
