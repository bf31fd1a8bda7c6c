//! Crash test: the server process is killed with SIGKILL at random moments
//! while a client confirms changes at full speed; after every restart, each
//! change confirmed to the client is there, and nothing unconfirmed is half
//! applied.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::Client;
use gitmind_schema::message::{BatchOp, BatchUpdate, NodeCreate};
use gitmind_schema::model::Node;
use gitmind_schema::{Body, Envelope};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Nodes per change: a change is a batch, applied all or none.
const PER_CHANGE: usize = 3;

async fn start(data: &std::path::Path, port: u16) -> (Child, SocketAddr) {
    for _ in 0..50 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gitmind-server"))
            .args(["--port", &port.to_string(), "--print-addr", "--data-dir"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
        {
            return (child, line.trim().parse().unwrap());
        }
        // The port was not free yet.
        let _ = child.kill().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not start");
}

/// Every confirmed change is whole in the snapshot; every other change is
/// whole or absent. Returns how many changes the snapshot holds.
fn check(
    client: &Client,
    confirmed: &HashSet<String>,
    sent: &HashMap<String, Vec<String>>,
) -> usize {
    let sync = client.sync.as_ref().unwrap();
    let present: HashSet<&str> = sync.nodes.iter().flatten().map(|n| n.id.as_str()).collect();
    let mut whole = 0;
    for (change, ids) in sent {
        let have = ids
            .iter()
            .filter(|id| present.contains(id.as_str()))
            .count();
        assert!(
            have == 0 || have == ids.len(),
            "change {change} is half applied: {have} of {}",
            ids.len()
        );
        if confirmed.contains(change) {
            assert_eq!(have, ids.len(), "confirmed change {change} was lost");
        }
        if have == ids.len() {
            whole += 1;
        }
    }
    assert_eq!(
        present.len(),
        whole * PER_CHANGE,
        "nothing but whole changes is stored"
    );
    assert_eq!(sync.seq, Some(whole as u64), "one seq per change, no gap");
    whole
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_changes_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    let mut port = 0;
    for round in 0..8 {
        let (mut child, addr) = start(&data, port).await;
        port = addr.port();
        let mut client =
            Client::connect(addr, "/v1/graphs/crash?user=writer", Some("gitmind.v1.bin"))
                .await
                .unwrap();
        check(&client, &confirmed, &sent);
        let kill_after = Duration::from_millis(100 + rand::random::<u64>() % 400);
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
        });
        // Write at full speed, up to 32 changes in flight, until the server dies.
        let mut in_flight = 0;
        let mut k = 0;
        loop {
            while in_flight < 32 {
                let change = format!("c{round}-{k}");
                let ids: Vec<String> = (0..PER_CHANGE)
                    .map(|i| format!("n:{round}-{k}-{i}"))
                    .collect();
                let ops = ids
                    .iter()
                    .map(|id| {
                        BatchOp::NodeCreate(NodeCreate {
                            base_seq: None,
                            node: Node {
                                id: id.clone(),
                                ..Node::default()
                            },
                            commit: None,
                        })
                    })
                    .collect();
                sent.insert(change.clone(), ids);
                let batch = Body::BatchUpdate(BatchUpdate {
                    base_seq: Some(0),
                    ops,
                    commit: None,
                });
                if client
                    .ws
                    .send(to_message(&client, &Envelope::new(change, batch)))
                    .await
                    .is_err()
                {
                    break;
                }
                in_flight += 1;
                k += 1;
            }
            let Some(envelope) = client.try_recv().await else {
                break;
            };
            if let Body::UpdateConfirmed(c) = envelope.body {
                confirmed.insert(c.reference);
                in_flight -= 1;
            } else if matches!(envelope.body, Body::UpdateRollback(_)) {
                in_flight -= 1;
            }
        }
        killer.await.unwrap();
        assert!(
            !confirmed.is_empty() || round < 2,
            "the writer confirmed nothing at all"
        );
    }
    let (_child, addr) = start(&data, port).await;
    let client = Client::connect(addr, "/v1/graphs/crash?user=writer", Some("gitmind.v1.bin"))
        .await
        .unwrap();
    let whole = check(&client, &confirmed, &sent);
    assert!(whole >= confirmed.len());
    assert!(
        confirmed.len() > 50,
        "too few changes confirmed ({}) for the test to mean much",
        confirmed.len()
    );
}

fn to_message(client: &Client, envelope: &Envelope) -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::Message;
    if client.binary {
        Message::Binary(gitmind_schema::binary::encode(envelope))
    } else {
        Message::Text(
            String::from_utf8(gitmind_schema::json::encode(envelope).to_vec())
                .unwrap()
                .into(),
        )
    }
}

use futures_util::SinkExt as _;
