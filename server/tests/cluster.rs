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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::Client;
use gitmind_schema::message::NodeCreate;
use gitmind_schema::model::Node;
use gitmind_schema::{Body, Envelope};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long anything the test waits for may take: generous, the machine
/// is shared.
const DEADLINE: Duration = Duration::from_secs(60);

/// The graph every client writes to.
const GRAPH: &str = "shared";

/// `nats-server` on the `PATH` (or where Debian puts it).
fn nats_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// A `nats-server -js` on a free loopback port, its store in `dir`.
struct Nats {
    _child: Child,
    url: String,
}

impl Nats {
    /// `None` (with a message) when the binary is missing outside CI.
    async fn start(dir: &Path) -> Option<Nats> {
        let Some(binary) = nats_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is missing: .ci/run installs it (apt-get install nats-server)"
            );
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Nats {
            _child: child,
            url: format!("nats://127.0.0.1:{port}"),
        })
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
    format!("/v1/graphs/{GRAPH}?user={user}")
}

/// What one client saw: each `seq` once, with the node it created.
#[derive(Default)]
struct Seen {
    by_seq: BTreeMap<u64, String>,
    confirmed: BTreeSet<String>,
}

impl Seen {
    fn record(&mut self, seq: u64, node: String) {
        let before = self.by_seq.insert(seq, node.clone());
        assert!(before.is_none(), "seq {seq} seen twice ({node})");
    }
}

/// Creates `count` nodes (at most 8 in flight), then reads until it has
/// seen `total` changes: its own as outcomes, the others' as events.
async fn write_and_watch(mut client: Client, me: &str, count: usize, total: usize) -> Seen {
    let mut seen = Seen::default();
    let mut sent: HashMap<String, String> = HashMap::new();
    let mut in_flight = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sent.len() < count || seen.by_seq.len() < total {
        if sent.len() < count && in_flight < 8 {
            let id = client.id();
            let node = format!("n:{me}-{}", sent.len());
            let body = Body::NodeCreate(NodeCreate {
                base_seq: Some(0),
                node: Node {
                    id: node.clone(),
                    ..Node::default()
                },
                commit: None,
            });
            client.send(&Envelope::new(id.clone(), body)).await;
            sent.insert(id, node);
            in_flight += 1;
            continue;
        }
        let envelope = tokio::time::timeout_at(deadline, client.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{me}: saw {} of {total} changes ({} confirmed)",
                    seen.by_seq.len(),
                    seen.confirmed.len()
                )
            });
        match envelope.body {
            Body::UpdateConfirmed(c) => {
                let node = sent[&c.reference].clone();
                assert!(
                    seen.confirmed.insert(node.clone()),
                    "{node} confirmed twice"
                );
                seen.record(c.seq, node);
                in_flight -= 1;
            }
            Body::NodeCreate(event) => seen.record(envelope.seq.unwrap(), event.node.id),
            Body::UpdateRollback(r) => panic!("{me}: rolled back: {r:?}"),
            _ => {}
        }
    }
    seen
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
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path()).await else {
        return;
    };
    let data = dir.path().join("data");
    let nodes = [
        start_node(&nats, &data, "a").await,
        start_node(&nats, &data, "b").await,
    ];
    // The first join takes the lease: node a owns the graph, b follows.
    let codecs = [None, Some("gitmind.v1.bin")];
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (c, codec) in codecs.iter().enumerate() {
            let me = format!("u{n}{c}");
            let client = Client::connect(node.addr, &path(&me), *codec)
                .await
                .unwrap();
            clients.push((me, client));
        }
    }
    const PER_CLIENT: usize = 40;
    let total = PER_CLIENT * clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(me, client)| {
            tokio::spawn(async move {
                let seen = write_and_watch(client, &me, PER_CLIENT, total).await;
                (me, seen)
            })
        })
        .collect();
    let mut histories = Vec::new();
    for task in tasks {
        let (me, seen) = task.await.unwrap();
        assert_eq!(
            seen.confirmed.len(),
            PER_CLIENT,
            "{me}: every change confirmed"
        );
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
    assert_eq!(all.len(), total);
    for node in &nodes {
        assert_eq!(snapshot(node.addr).await, (all.clone(), total as u64));
    }
    for mut node in nodes {
        node.child.kill().await.unwrap();
    }
    let report = gitmind_server::persist::verify(&data).unwrap();
    let graph = report.graphs.iter().find(|g| g.graph == GRAPH).unwrap();
    assert_eq!((graph.seq, graph.nodes), (total as u64, total));
}
