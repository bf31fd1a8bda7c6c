//! Several servers as one service (docs/scale-out.md): a real `nats-server`
//! with JetStream and `gitmind-server` processes on loopback, clients on
//! every node writing to one graph in both codecs. Every client sees every
//! change once, in `seq` order; every node's replica and git's history end
//! the same.
//!
//! Without the `nats-server` binary the test is skipped with a message,
//! unless `CI` is set: then it fails (`.ci/run` installs it).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{env, Client};
use futures_util::SinkExt as _;
use gitmind_schema::message::{
    CursorMove, GonzaiSuggestion, NodeCreate, PresenceState, PresenceStatus, RollbackReason,
    SelectionChange, UserPresence,
};
use gitmind_schema::model::Node;
use gitmind_schema::{Body, Envelope};
use gitmind_testkit::Nats;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long anything the test waits for may take: generous, the machine
/// is shared.
const DEADLINE: Duration = Duration::from_secs(60);

/// The graph every client writes to.
const GRAPH: &str = "shared";

/// A `nats-server -js` on a free loopback port and the data directory
/// the nodes share, both in a temporary directory.
struct Cluster {
    nats: Nats,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (with a message) when `nats-server` is missing outside CI.
    async fn start() -> Option<Cluster> {
        let Some(binary) = gitmind_testkit::nats::binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is missing: .ci/run installs it (apt-get install nats-server)"
            );
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let nats = Nats::start(&binary, dir.path()).await.unwrap();
        Some(Cluster {
            nats,
            data: dir.path().join("data"),
            _dir: dir,
        })
    }

    /// Starts node `name`.
    async fn node(&self, name: &str) -> Server {
        start_node(&self.nats, &self.data, name).await
    }
}

/// A `gitmind-server` node of the cluster, on a free port.
struct Server {
    child: Child,
    addr: SocketAddr,
}

async fn start_node(nats: &Nats, data: &Path, name: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gitmind-server"))
        .args(["--port", "0", "--print-addr", "--shards", "1"])
        .args(["--cluster", &nats.url, "--node", name, "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the node started")
        .unwrap()
        .expect("the node printed its address");
    Server {
        child,
        addr: line.trim().parse().unwrap(),
    }
}

fn path(user: &str) -> String {
    path_in(GRAPH, user)
}

fn path_in(graph: &str, user: &str) -> String {
    format!("/v1/graphs/{graph}?user={user}")
}

/// What one client saw: each `seq` once, with the node it created.
#[derive(Default)]
struct Seen {
    by_seq: BTreeMap<u64, String>,
    confirmed: BTreeSet<String>,
}

impl Seen {
    /// A change seen; seen again (an event, then the outcome of the same
    /// mutation resent after a reconnect) it must be the same change.
    fn record(&mut self, seq: u64, node: String) {
        if let Some(before) = self.by_seq.insert(seq, node.clone()) {
            assert_eq!(before, node, "seq {seq} is two changes");
        }
    }
}

/// One writing client: its name, where it is, and where it goes when its
/// node dies.
struct Writer {
    me: String,
    codec: Option<&'static str>,
    client: Client,
    fallback: Option<SocketAddr>,
}

/// Creates `count` nodes (at most 8 in flight), then reads until it has
/// seen `total` changes: its own as outcomes, the others' as events. A
/// rollback `unavailable` (the graph's owner changing) is resent; when
/// its connection drops it resumes on its fallback node with `since` and
/// resends what was not confirmed, with the same ids. `confirmed` counts
/// every client's confirmations.
async fn write_and_watch(
    w: Writer,
    count: usize,
    total: usize,
    confirmed: Arc<AtomicUsize>,
) -> Seen {
    let Writer {
        me,
        codec,
        mut client,
        mut fallback,
    } = w;
    let epoch = client.sync.as_ref().unwrap().epoch.clone().unwrap();
    let mut seen = Seen::default();
    let mut sent: BTreeMap<String, (String, Envelope)> = BTreeMap::new();
    let mut in_flight = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sent.len() < count || seen.confirmed.len() < count || seen.by_seq.len() < total {
        let mut lost = false;
        if sent.len() < count && in_flight < 8 {
            // Ids of this writer's own: they outlive its connections.
            let id = format!("{me}-{}", sent.len());
            let node = format!("n:{me}-{}", sent.len());
            let body = Body::NodeCreate(NodeCreate {
                base_seq: Some(0),
                node: Node {
                    id: node.clone(),
                    ..Node::default()
                },
                commit: None,
            });
            let envelope = Envelope::new(id.clone(), body);
            sent.insert(id, (node, envelope.clone()));
            in_flight += 1;
            lost = !try_send(&mut client, &envelope).await;
        } else {
            let next = tokio::time::timeout_at(deadline, client.try_recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{me}: saw {} of {total} changes ({} confirmed)",
                        seen.by_seq.len(),
                        seen.confirmed.len()
                    )
                });
            match next {
                Some(envelope) => match envelope.body {
                    Body::UpdateConfirmed(c) => {
                        let node = sent[&c.reference].0.clone();
                        seen.record(c.seq, node.clone());
                        if seen.confirmed.insert(node) {
                            in_flight -= 1;
                            confirmed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Body::NodeCreate(event) => seen.record(envelope.seq.unwrap(), event.node.id),
                    Body::UpdateRollback(r) if r.reason == RollbackReason::Unavailable => {
                        let again = sent[&r.reference].1.clone();
                        lost = !try_send(&mut client, &again).await;
                    }
                    Body::UpdateRollback(r) => panic!("{me}: rolled back: {r:?}"),
                    _ => {}
                },
                None => lost = true,
            }
        }
        if !lost {
            continue;
        }
        // The node died: resume on another with `since`.
        let addr = fallback
            .take()
            .unwrap_or_else(|| panic!("{me} lost a second node"));
        let since = seen.by_seq.keys().next_back().copied().unwrap_or(0);
        let resume = format!("{}&since={since}&epoch={epoch}", path(&me));
        client = Client::connect(addr, &resume, codec).await.unwrap();
        let sync = client.sync.take().unwrap();
        assert_eq!(
            sync.epoch.as_deref(),
            Some(epoch.as_str()),
            "{me}: the same epoch"
        );
        for event in sync.events.unwrap_or_default() {
            if let Body::NodeCreate(e) = event.body {
                seen.record(event.seq.unwrap(), e.node.id);
            }
        }
        in_flight = 0;
        for (node, envelope) in sent.values() {
            if !seen.confirmed.contains(node) {
                in_flight += 1;
                if !try_send(&mut client, envelope).await {
                    panic!("{me}: the fallback node closed at once");
                }
            }
        }
    }
    seen
}

/// Sends; `false` when the connection is gone.
async fn try_send(client: &mut Client, envelope: &Envelope) -> bool {
    let message = client.message(envelope);
    client.ws.send(message).await.is_ok()
}

/// Checks what every writer saw: every change once, in one history
/// shared by all, with no change applied twice; returns the nodes made.
fn check_histories(seen: Vec<(String, Seen)>, count: usize, total: usize) -> BTreeSet<String> {
    let mut histories = Vec::new();
    for (me, seen) in seen {
        assert_eq!(seen.confirmed.len(), count, "{me}: every change confirmed");
        assert_eq!(
            seen.by_seq.keys().copied().collect::<Vec<_>>(),
            (1..=total as u64).collect::<Vec<_>>(),
            "{me}: every seq once, no gap"
        );
        histories.push(seen.by_seq);
    }
    for h in &histories[1..] {
        assert_eq!(h, &histories[0], "every client saw the same history");
    }
    let all: BTreeSet<String> = histories[0].values().cloned().collect();
    assert_eq!(all.len(), total, "no change applied twice");
    all
}

/// Starts every writer and waits for them.
async fn run_writers(
    writers: Vec<Writer>,
    count: usize,
    confirmed: &Arc<AtomicUsize>,
) -> BTreeSet<String> {
    let total = count * writers.len();
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|w| {
            let confirmed = confirmed.clone();
            tokio::spawn(async move {
                let me = w.me.clone();
                (me, write_and_watch(w, count, total, confirmed).await)
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    check_histories(seen, count, total)
}

/// Two writers on each node, one per codec; `fallback` says where a
/// node's writers go when it dies.
async fn writers(
    nodes: &[Server],
    fallback: impl Fn(usize, usize) -> Option<SocketAddr>,
) -> Vec<Writer> {
    let codecs = [None, Some("gitmind.v1.bin")];
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (c, codec) in codecs.into_iter().enumerate() {
            let me = format!("u{n}{c}");
            let client = Client::connect(node.addr, &path(&me), codec).await.unwrap();
            writers.push(Writer {
                me,
                codec,
                client,
                fallback: fallback(n, c),
            });
        }
    }
    writers
}

/// The nodes of a fresh `graph.sync` from `addr`, and its `seq`.
async fn snapshot(addr: SocketAddr) -> (BTreeSet<String>, u64) {
    let client = Client::connect(addr, &path("reader"), None).await.unwrap();
    let sync = client.sync.unwrap();
    let nodes = sync.nodes.iter().flatten().map(|n| n.id.clone()).collect();
    (nodes, sync.seq.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_write_one_graph_and_end_with_one_history() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let nodes = [cluster.node("a").await, cluster.node("b").await];
    // The first join takes the lease: node a owns the graph, b follows.
    let writers = writers(&nodes, |_, _| None).await;
    const PER_CLIENT: usize = 40;
    let total = PER_CLIENT * writers.len();
    let all = run_writers(writers, PER_CLIENT, &Arc::default()).await;
    for node in &nodes {
        assert_eq!(snapshot(node.addr).await, (all.clone(), total as u64));
    }
    // Cursors and selections cross nodes, both ways, both codecs.
    let mut alice = Client::connect(nodes[0].addr, &path("alice"), None)
        .await
        .unwrap();
    let mut bob = Client::connect(nodes[1].addr, &path("bob"), Some("gitmind.v1.bin"))
        .await
        .unwrap();
    let cursor = CursorMove {
        x: 1.5,
        y: -2.0,
        node_id: None,
    };
    bob.send(&Envelope::new("c1", Body::CursorMove(cursor.clone())))
        .await;
    let got = alice
        .recv_until("bob's cursor", |e| matches!(e.body, Body::CursorMove(_)))
        .await;
    assert_eq!(got.session_id.as_deref(), Some(bob.session_id.as_str()));
    assert_eq!(got.body, Body::CursorMove(cursor));
    let selection = SelectionChange {
        nodes: vec![all.first().unwrap().clone()],
        edges: vec![],
    };
    alice
        .send(&Envelope::new(
            "s1",
            Body::SelectionChange(selection.clone()),
        ))
        .await;
    let got = bob
        .recv_until("alice's selection", |e| {
            matches!(e.body, Body::SelectionChange(_))
        })
        .await;
    assert_eq!(got.session_id.as_deref(), Some(alice.session_id.as_str()));
    assert_eq!(got.body, Body::SelectionChange(selection));
    // Each node's /metrics tells its part: a owns, b follows and forwarded
    // its writers' changes (every one confirmed, so timed).
    let (a, b) = (metrics(nodes[0].addr).await, metrics(nodes[1].addr).await);
    assert_eq!(metric(&a, "gitmind_cluster_graphs_owned"), 1.0);
    assert_eq!(metric(&b, "gitmind_cluster_graphs_followed"), 1.0);
    let forwarded = (PER_CLIENT * 2) as f64;
    assert_eq!(metric(&b, "gitmind_cluster_forwarded_total"), forwarded);
    assert_eq!(
        metric(&b, "gitmind_cluster_forward_latency_seconds_count"),
        forwarded
    );
    assert!(metric(&b, "gitmind_cluster_stream_lag_seconds_count") >= 1.0);
    for mut node in nodes {
        node.child.kill().await.unwrap();
    }
    check_git(&cluster.data, total);
}

/// `GET /metrics` of a node.
async fn metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Git holds the graph as one history, readable, every change once: one
/// chain of commits (`verify` fails on a merge, a gap or a repeat in
/// `seq`, an object that does not hash to its id, a tree its journals do
/// not explain), with one journal line per change, nothing more.
fn check_git(data: &Path, total: usize) {
    let report = gitmind_server::persist::verify(data).unwrap();
    let graph = report.graphs.iter().find(|g| g.graph == GRAPH).unwrap();
    assert_eq!((graph.seq, graph.nodes), (total as u64, total));
    assert_eq!(
        graph.changes, total as u64,
        "each change once in the history"
    );
    assert!(graph.commits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_mid_load_loses_and_doubles_nothing() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let mut nodes = vec![
        cluster.node("a").await,
        cluster.node("b").await,
        cluster.node("c").await,
    ];
    let (b, c) = (nodes[1].addr, nodes[2].addr);
    // Node a owns the graph; its writers resume on b and c.
    let writers = writers(&nodes, |n, codec| {
        (n == 0).then_some(if codec == 0 { b } else { c })
    })
    .await;
    const PER_CLIENT: usize = 40;
    let total = PER_CLIENT * writers.len();
    let confirmed: Arc<AtomicUsize> = Arc::default();
    let mut owner = nodes.remove(0);
    let killer = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while confirmed.load(Ordering::Relaxed) < total / 4 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no load to kill under"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            owner.child.start_kill().unwrap(); // SIGKILL
            let killed = std::time::Instant::now();
            let at = confirmed.load(Ordering::Relaxed);
            owner.child.wait().await.unwrap();
            // Failover, measured: from the kill until confirmations pass
            // all that could have been in flight then (8 per writer), so
            // the new owner is ordering (polled, not a synchronisation).
            let in_flight = total / PER_CLIENT * 8;
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while confirmed.load(Ordering::Relaxed) <= at + in_flight
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            eprintln!(
                "owner killed after {at} of {total} confirmations; confirmations again after {:?}",
                killed.elapsed()
            );
        })
    };
    let all = run_writers(writers, PER_CLIENT, &confirmed).await;
    killer.await.unwrap();
    for node in &nodes {
        assert_eq!(snapshot(node.addr).await, (all.clone(), total as u64));
    }
    for mut node in nodes {
        node.child.kill().await.unwrap();
    }
    check_git(&cluster.data, total);
}

/// Waits for a `user.presence` of `status` about `session`.
async fn presence_of(client: &mut Client, session: &str, status: PresenceStatus) -> UserPresence {
    let what = format!("{status:?} of {session}");
    let got = client
        .recv_until(&what, |e| {
            e.session_id.as_deref() == Some(session)
                && matches!(&e.body, Body::UserPresence(p) if p.status == status)
        })
        .await;
    match got.body {
        Body::UserPresence(p) => p,
        _ => unreachable!(),
    }
}

/// Whether a session's sync lists `session`.
fn lists(client: &Client, session: &str) -> Option<PresenceState> {
    let sync = client.sync.as_ref()?;
    sync.presence
        .iter()
        .flatten()
        .find(|p| p.session_id == session)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes_and_a_dead_nodes_sessions_leave() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let mut a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let bin = Some("gitmind.v1.bin");
    let mut alice = Client::connect(a.addr, &path("alice"), None).await.unwrap();
    // Bob, on the other node, is told of alice: in his sync if node b
    // heard of her before he came, else as she joins.
    let mut bob = Client::connect(b.addr, &path("bob"), bin).await.unwrap();
    if lists(&bob, &alice.session_id).is_none() {
        presence_of(&mut bob, &alice.session_id, PresenceStatus::Joined).await;
    }
    presence_of(&mut alice, &bob.session_id, PresenceStatus::Joined).await;
    // A status change crosses, coalesced in the other node's digest.
    let away = UserPresence {
        status: PresenceStatus::Away,
        focus: Some("n:somewhere".into()),
        display_name: Some("Alice".into()),
        color: None,
        chaos_affinity: None,
    };
    alice
        .send(&Envelope::new("p1", Body::UserPresence(away.clone())))
        .await;
    let got = presence_of(&mut bob, &alice.session_id, PresenceStatus::Away).await;
    assert_eq!(got, away);
    // A session that comes to node b now finds alice, away, and bob in
    // its sync.
    let mut carol = Client::connect(b.addr, &path("carol"), None).await.unwrap();
    let listed = lists(&carol, &alice.session_id).expect("alice in carol's sync");
    assert_eq!(listed.presence, away);
    assert!(lists(&carol, &bob.session_id).is_some());
    // Dave's sync, on node a, shows the sessions of node b.
    let mut dave = Client::connect(a.addr, &path("dave"), bin).await.unwrap();
    if lists(&dave, &carol.session_id).is_none() {
        // Node a had not heard of carol yet: she comes as a join.
        presence_of(&mut dave, &carol.session_id, PresenceStatus::Joined).await;
    }
    assert!(
        lists(&dave, &bob.session_id).is_some(),
        "bob in dave's sync"
    );
    // Alice leaves: node b's sessions see her go.
    alice.ws.close(None).await.unwrap();
    presence_of(&mut carol, &alice.session_id, PresenceStatus::Left).await;
    // Node a dies with dave on it: within seconds node b's sessions see
    // him leave (node a's word about him stops).
    a.child.start_kill().unwrap(); // SIGKILL
    let killed = std::time::Instant::now();
    a.child.wait().await.unwrap();
    presence_of(&mut bob, &dave.session_id, PresenceStatus::Left).await;
    presence_of(&mut carol, &dave.session_id, PresenceStatus::Left).await;
    eprintln!("a dead node's session left after {:?}", killed.elapsed());
    let erin = Client::connect(b.addr, &path("erin"), None).await.unwrap();
    assert!(lists(&erin, &dave.session_id).is_none(), "dave is gone");
    assert!(lists(&erin, &carol.session_id).is_some());
}

/// Creates a node at `(x, y)` and waits for its confirmation.
async fn node_at(c: &mut Client, id: &str, x: f64, y: f64) {
    let data = format!(r#"{{"baseSeq":0,"node":{{"id":"{id}","label":"{id}","x":{x},"y":{y}}}}}"#);
    confirmed(c, "node.create", &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_regions_queries_and_suggestions() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let nodes = [cluster.node("a").await, cluster.node("b").await];
    for (graph, codec) in [
        ("regions-json", None),
        ("regions-bin", Some("gitmind.v1.bin")),
    ] {
        // Alice's join on node a makes it the owner; bob is on node b.
        let mut alice = Client::connect(nodes[0].addr, &path_in(graph, "alice"), codec)
            .await
            .unwrap();
        let mut bob = Client::connect(nodes[1].addr, &path_in(graph, "bob"), codec)
            .await
            .unwrap();
        node_at(&mut alice, "c:in", 10.0, 10.0).await;
        node_at(&mut alice, "c:out", 500.0, 500.0).await;
        let id = bob.id();
        bob.send(&env(
            &id,
            "region.subscribe",
            r#"{"regionId":"view","filter":{"bbox":[0,0,100,100]}}"#,
        ))
        .await;
        let sync = bob
            .recv_until("region.sync", |e| matches!(e.body, Body::RegionSync(_)))
            .await;
        let Body::RegionSync(sync) = sync.body else {
            unreachable!()
        };
        let ids: Vec<&str> = sync.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["c:in"], "{graph}: the region as the replica holds it");
        let id = bob.id();
        bob.send(&env(&id, "region.unsubscribe", r#"{"regionId":"all"}"#))
            .await;
        let id = bob.id();
        bob.send(&env(
            &id,
            "query.subscribe",
            r#"{"queryId":"far","query":{"labelContains":"far"}}"#,
        ))
        .await;
        // The first results say the hub of node b took bob's messages.
        assert!(bob.query_results().await.results.is_empty());
        // Written on the owner: bob hears of what is in his box, and of
        // his query's new result, nothing else.
        node_at(&mut alice, "c:far", 1000.0, 1000.0).await;
        node_at(&mut alice, "c:out2", 600.0, 600.0).await;
        node_at(&mut alice, "c:sentinel", 1.0, 1.0).await;
        let mut seen = Vec::new();
        loop {
            let e = bob.recv().await;
            let done = matches!(&e.body, Body::NodeCreate(m) if m.node.id == "c:sentinel");
            match &e.body {
                Body::NodeCreate(m) => seen.push(format!("node.create {}", m.node.id)),
                Body::QueryResults(r) => seen.push(format!("query.results {:?}", r.added)),
                _ => {}
            }
            if done {
                break;
            }
        }
        assert_eq!(
            seen,
            ["query.results [\"c:far\"]", "node.create c:sentinel"],
            "{graph}"
        );
        // Gonzai answers on the follower, from its replica.
        let id = bob.id();
        bob.send(&Envelope::new(
            id.clone(),
            Body::GonzaiSuggestion(GonzaiSuggestion {
                for_node: Some("c:in".into()),
                limit: Some(3),
                suggestions: None,
            }),
        ))
        .await;
        let answer = bob
            .recv_until("suggestions", |e| match &e.body {
                Body::GonzaiSuggestion(_) => true,
                Body::SystemError(err) => err.reference.as_deref() == Some(id.as_str()),
                _ => false,
            })
            .await;
        let Body::GonzaiSuggestion(g) = answer.body else {
            panic!("{graph}: {answer:?}")
        };
        assert_eq!(g.for_node.as_deref(), Some("c:in"));
        assert!(g.suggestions.unwrap().iter().all(|s| s.target != "c:in"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_started_again_at_once_under_its_name_loses_no_forwarded_change() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let mut a = cluster.node("a").await;
    let b = cluster.node("b").await;
    // Alice's join makes node a the owner; bob writes through node b.
    let mut alice = Client::connect(a.addr, &path("alice"), None).await.unwrap();
    node_at(&mut alice, "c:first", 0.0, 0.0).await;
    let mut bob = Client::connect(b.addr, &path("bob"), Some("gitmind.v1.bin"))
        .await
        .unwrap();
    node_at(&mut bob, "c:before", 1.0, 1.0).await;
    // Node a dies; bob's change is forwarded to it and lost with it.
    a.child.start_kill().unwrap(); // SIGKILL
    a.child.wait().await.unwrap();
    let mid = bob.id();
    let data = r#"{"baseSeq":0,"node":{"id":"c:meanwhile","label":"meanwhile"}}"#;
    bob.send(&env(&mid, "node.create", data)).await;
    // Node a comes back under its name at once, well within its old
    // lease's 3 s, and a session asks it for the graph: it must not take
    // the lease back as its own (node b would never learn that the owner
    // changed, nor send bob's change again).
    let a = cluster.node("a").await;
    let carol = Client::connect(a.addr, &path("carol"), None).await.unwrap();
    let outcome = bob.outcome(&mid).await;
    assert!(
        matches!(outcome.body, Body::UpdateConfirmed(_)),
        "{outcome:?}"
    );
    // And the graph goes on from both nodes.
    drop(carol);
    let mut carol = Client::connect(a.addr, &path("carol"), None).await.unwrap();
    node_at(&mut carol, "c:after", 2.0, 2.0).await;
    node_at(&mut bob, "c:after-bob", 3.0, 3.0).await;
}

/// Sends `ty` with `data` and waits for its confirmation.
async fn confirmed(c: &mut Client, ty: &str, data: &str) {
    let mid = c.id();
    c.send(&env(&mid, ty, data)).await;
    let outcome = c.outcome(&mid).await;
    assert!(
        matches!(outcome.body, Body::UpdateConfirmed(_)),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_and_shared_suggestions_reach_sessions_on_other_nodes() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (a, b) = (cluster.node("a").await, cluster.node("b").await);
    let mut alice = Client::connect(a.addr, &path("alice"), None).await.unwrap();
    // app1 and app2 are two links apart: both depend on lib.
    for id in ["pkg:lib", "pkg:app1", "pkg:app2"] {
        node_at(&mut alice, id, 0.0, 0.0).await;
    }
    for app in ["pkg:app1", "pkg:app2"] {
        let data = format!(
            r#"{{"baseSeq":0,"edge":{{"source":"{app}","type":"depends-on","target":"pkg:lib"}}}}"#
        );
        confirmed(&mut alice, "edge.create", &data).await;
    }
    // Bob, on node b, looks at app2 and catches every chaos.
    let mut bob = Client::connect(b.addr, &path("bob"), Some("gitmind.v1.bin"))
        .await
        .unwrap();
    let id = bob.id();
    bob.send(&env(
        &id,
        "user.presence",
        r#"{"status":"active","focus":"pkg:app2","chaosAffinity":1.0}"#,
    ))
    .await;
    let id = alice.id();
    alice
        .send(&env(
            &id,
            "user.presence",
            r#"{"status":"active","focus":"pkg:app1"}"#,
        ))
        .await;
    // Node a knows bob's focus once alice hears of it.
    let bob_session = bob.session_id.clone();
    alice
        .recv_until("bob's focus", |e| {
            e.session_id.as_deref() == Some(bob_session.as_str())
                && matches!(&e.body, Body::UserPresence(p) if p.focus.as_deref() == Some("pkg:app2"))
        })
        .await;
    // Chaos from alice, on node a, reaches bob on node b.
    let id = alice.id();
    alice
        .send(&env(&id, "chaos.trigger", r#"{"intensity":0.5}"#))
        .await;
    let got = bob
        .recv_until("chaos", |e| matches!(e.body, Body::ChaosTrigger(_)))
        .await;
    let Body::ChaosTrigger(chaos) = got.body else {
        unreachable!()
    };
    assert_eq!(chaos.initiator.as_deref(), Some("alice"));
    // So do the suggestions she shares.
    let id = alice.id();
    alice
        .send(&env(
            &id,
            "gonzai.suggestion",
            r#"{"suggestions":[{"target":"pkg:lib","type":"depends-on","confidence":0.9,"reason":"app1 needs it too"}]}"#,
        ))
        .await;
    let got = bob
        .recv_until(
            "shared suggestions",
            |e| matches!(&e.body, Body::GonzaiSuggestion(g) if g.suggestions.is_some()),
        )
        .await;
    let Body::GonzaiSuggestion(shared) = got.body else {
        unreachable!()
    };
    let targets: Vec<String> = shared
        .suggestions
        .unwrap()
        .into_iter()
        .map(|s| s.target)
        .collect();
    assert_eq!(targets, ["pkg:lib"]);
}
