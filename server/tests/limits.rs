//! Limits that keep one client from starving the others: mutations in
//! flight, sync requests, presence rates, the connection caps and the
//! handshake timeout. Each against a real server, both codecs where the
//! codec matters.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_get, Client, TestServer};
use futures_util::StreamExt;
use gitmind_schema::message::*;
use gitmind_schema::model::Node;
use gitmind_schema::{binary, json, Body, Envelope, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

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

fn create(id: &str, node: &str) -> Envelope {
    Envelope::new(
        id,
        Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node: Node {
                id: node.into(),
                ..Node::default()
            },
            commit: None,
        }),
    )
}

/// The messages that arrive within `time`.
async fn gather(client: &mut Client, time: Duration) -> Vec<Envelope> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + time;
    while let Ok(Some(envelope)) = tokio::time::timeout_at(deadline, client.try_recv()).await {
        seen.push(envelope);
    }
    seen
}

#[tokio::test]
async fn mutations_past_the_in_flight_bound_are_rolled_back_rate_limited() {
    let server = TestServer::start_with(|c| c.max_mutations_in_flight = 3);
    for codec in CODECS {
        let graph = format!("flight-{}", codec.len());
        let mut c = server.connect(&graph, "alice", codec).await;
        let frame: Vec<Envelope> = (0..10)
            .map(|i| create(&format!("m{i}"), &format!("concept:n{i}")))
            .collect();
        send_frame(&mut c, &frame).await;
        let (mut confirmed, mut limited) = (Vec::new(), Vec::new());
        while confirmed.len() + limited.len() < 10 {
            match c.recv().await.body {
                Body::UpdateConfirmed(o) => confirmed.push(o.reference),
                Body::UpdateRollback(r) => {
                    assert_eq!(r.reason, RollbackReason::RateLimited, "{codec}");
                    assert_eq!(r.retry_after_ms, Some(1000));
                    limited.push(r.reference);
                }
                _ => {}
            }
        }
        confirmed.sort();
        limited.sort();
        assert_eq!(confirmed, ["m0", "m1", "m2"], "{codec}");
        assert_eq!(
            limited,
            ["m3", "m4", "m5", "m6", "m7", "m8", "m9"],
            "{codec}"
        );
        // Settled ones free their place.
        let mid = c.create_node("concept:extra", "again", 3).await;
        assert!(
            matches!(c.outcome(&mid).await.body, Body::UpdateConfirmed(_)),
            "{codec}"
        );
    }
}

#[tokio::test]
async fn sync_requests_go_one_at_a_time() {
    let server = TestServer::start();
    for codec in CODECS {
        let graph = format!("syncs-{}", codec.len());
        let mut c = server.connect(&graph, "alice", codec).await;
        let asks: Vec<Envelope> = (0..5)
            .map(|i| Envelope::new(format!("s{i}"), Body::GraphSync(GraphSync::default())))
            .collect();
        send_frame(&mut c, &asks).await;
        let seen = gather(&mut c, Duration::from_millis(500)).await;
        let syncs = seen
            .iter()
            .filter(|e| matches!(e.body, Body::GraphSync(_)))
            .count();
        let limited: Vec<&str> = seen
            .iter()
            .filter_map(|e| match &e.body {
                Body::SystemError(err) if err.code == ErrorCode::RateLimited => {
                    assert_eq!(err.retry_after_ms, Some(1000));
                    err.reference.as_deref()
                }
                _ => None,
            })
            .collect();
        assert_eq!(syncs, 1, "{codec}: one sync for five asks");
        assert_eq!(limited, ["s1", "s2", "s3", "s4"], "{codec}");
        // Once it has arrived, the next ask is taken.
        c.send(&Envelope::new("s5", Body::GraphSync(GraphSync::default())))
            .await;
        c.recv_until("the next sync", |e| matches!(e.body, Body::GraphSync(_)))
            .await;
    }
}

#[tokio::test]
async fn selections_and_presence_are_throttled_like_cursors() {
    let server = TestServer::start_with(|c| c.presence_rate = 5);
    for codec in CODECS {
        let graph = format!("rates-{}", codec.len());
        let mut alice = server.connect(&graph, "alice", codec).await;
        let mut bob = server.connect(&graph, "bob", codec).await;
        let _ = gather(&mut alice, Duration::from_millis(100)).await;
        let selections: Vec<Envelope> = (0..20)
            .map(|i| {
                Envelope::new(
                    format!("sel{i}"),
                    Body::SelectionChange(SelectionChange {
                        nodes: vec![format!("concept:n{i}")],
                        edges: Vec::new(),
                    }),
                )
            })
            .collect();
        let statuses: Vec<Envelope> = (0..20)
            .map(|i| {
                Envelope::new(
                    format!("st{i}"),
                    Body::UserPresence(UserPresence {
                        status: PresenceStatus::Active,
                        focus: Some(format!("concept:n{i}")),
                        display_name: None,
                        color: None,
                        chaos_affinity: None,
                    }),
                )
            })
            .collect();
        send_frame(&mut alice, &selections).await;
        send_frame(&mut alice, &statuses).await;
        let seen = gather(&mut bob, Duration::from_millis(700)).await;
        let selected: Vec<String> = seen
            .iter()
            .filter_map(|e| match &e.body {
                Body::SelectionChange(s) => Some(s.nodes[0].clone()),
                _ => None,
            })
            .collect();
        let focus: Vec<String> = seen
            .iter()
            .filter_map(|e| match &e.body {
                Body::UserPresence(p) => p.focus.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(
            selected,
            ["concept:n0", "concept:n19"],
            "{codec}: the first, then the latest"
        );
        assert_eq!(focus, ["concept:n0", "concept:n19"], "{codec}");
    }
}

#[tokio::test]
async fn connections_still_in_their_handshake_count_toward_the_cap() {
    let server = TestServer::start_with(|c| c.max_connections = 2);
    let silent: Vec<TcpStream> = vec![
        TcpStream::connect(server.addr).await.unwrap(),
        TcpStream::connect(server.addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = Client::connect(server.addr, "/v1/graphs/cap", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 429);
    drop(silent);
    Client::connect_when_free(server.addr, "/v1/graphs/cap").await;
}

/// A plain GET from another loopback address.
async fn get_from(source: [u8; 4], addr: SocketAddr, path: &str) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_client_address_has_a_cap_of_its_own() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 2);
    let _a = server.connect("ip", "a", "gitmind.v1.json").await;
    let _b = server.connect("ip", "b", "gitmind.v1.json").await;
    let refused = Client::connect(server.addr, "/v1/graphs/ip", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.contains("from this address"),
        "{}",
        refused.body
    );
    assert_eq!(http_get(server.addr, "/healthz", "").await.0, 429);
    assert_eq!(get_from([127, 0, 0, 2], server.addr, "/healthz").await, 200);
}

#[tokio::test]
async fn a_request_head_dribbled_in_is_cut_at_the_handshake_timeout() {
    let server = TestServer::start_with(|c| c.handshake_timeout_ms = 300);
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let dribble = async {
        for byte in b"GET /v1/graphs/slow HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), dribble)
        .await
        .expect("the server kept a dribbling handshake open");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(250), "cut after {held:?}");
}

#[tokio::test]
async fn a_crowd_arriving_reaches_each_member_as_a_few_digests() {
    let server = TestServer::start_with(|c| c.presence_tick_ms = 500);
    let mut alice = server.connect("crowd", "alice", "gitmind.v1.json").await;
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let crowd: Vec<Client> = futures_util::future::join_all(
        users
            .iter()
            .map(|user| server.connect("crowd", user, "gitmind.v1.json")),
    )
    .await;
    // Read raw frames: each digest is one text frame of many notices.
    let (mut joined, mut frames) = (Vec::new(), 0);
    while joined.len() < 20 {
        let message = tokio::time::timeout(Duration::from_secs(5), alice.ws.next())
            .await
            .expect("the joins arrive")
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let notices: Vec<Envelope> = json::decode(
            text.as_str(),
            &gitmind_schema::Limits::default(),
        )
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| matches!(&e.body, Body::UserPresence(p) if p.status == PresenceStatus::Joined))
        .collect();
        if !notices.is_empty() {
            frames += 1;
        }
        joined.extend(notices.into_iter().map(|e| e.user_id.unwrap()));
    }
    joined.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    expected.sort();
    assert_eq!(joined, expected, "every arrival, once, and not alice's own");
    assert!(frames <= 3, "20 arrivals in {frames} frames");
    drop(crowd);
}
