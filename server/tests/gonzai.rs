//! Gonzai end to end (docs/protocol.md 9): link suggestions, their
//! exclusions, incremental updates, and refusals, on both codecs.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Client, TestServer};
use gitmind_schema::message::*;
use gitmind_schema::model::{Edge, Node};
use gitmind_schema::{Body, Envelope, ErrorCode};

const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

async fn node(c: &mut Client, id: &str) {
    let mid = c.id();
    let node = Node {
        id: id.into(),
        label: Some(format!("the package {id}")),
        ..Node::default()
    };
    c.send(&Envelope::new(
        mid.clone(),
        Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node,
            commit: None,
        }),
    ))
    .await;
    assert!(matches!(
        c.outcome(&mid).await.body,
        Body::UpdateConfirmed(_)
    ));
}

async fn edge(c: &mut Client, source: &str, target: &str) {
    let mid = c.id();
    c.send(&Envelope::new(
        mid.clone(),
        Body::EdgeCreate(EdgeCreate {
            base_seq: Some(0),
            edge: Edge {
                source: source.into(),
                edge_type: "depends-on".into(),
                target: target.into(),
                ..Edge::default()
            },
            commit: None,
        }),
    ))
    .await;
    assert!(matches!(
        c.outcome(&mid).await.body,
        Body::UpdateConfirmed(_)
    ));
}

async fn ask(c: &mut Client, for_node: &str, limit: Option<u32>) -> Envelope {
    let id = c.id();
    c.send(&Envelope::new(
        id.clone(),
        Body::GonzaiSuggestion(GonzaiSuggestion {
            for_node: Some(for_node.into()),
            limit,
            suggestions: None,
        }),
    ))
    .await;
    c.recv_until("the answer", |e| match &e.body {
        Body::GonzaiSuggestion(_) => true,
        Body::SystemError(err) => err.reference.as_deref() == Some(id.as_str()),
        _ => false,
    })
    .await
}

fn suggestions(e: &Envelope) -> Vec<Suggestion> {
    let Body::GonzaiSuggestion(g) = &e.body else {
        panic!("not suggestions: {e:?}")
    };
    g.suggestions.clone().unwrap()
}

fn error(e: &Envelope) -> ErrorCode {
    let Body::SystemError(err) = &e.body else {
        panic!("not an error: {e:?}")
    };
    err.code
}

/// Five apps depend on `libx` and `liby`; `app6` only on `libx`.
async fn seed(c: &mut Client) {
    for id in ["pkg:libx", "pkg:liby", "pkg:libz", "pkg:app6"] {
        node(c, id).await;
    }
    for i in 1..=5 {
        let app = format!("pkg:app{i}");
        node(c, &app).await;
        edge(c, &app, "pkg:libx").await;
        edge(c, &app, "pkg:liby").await;
    }
    edge(c, "pkg:app6", "pkg:libx").await;
}

#[tokio::test]
async fn suggestions_exclude_the_node_and_its_links_and_follow_new_edges() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        seed(&mut alice).await;
        let answer = ask(&mut alice, "pkg:app6", Some(5)).await;
        let Body::GonzaiSuggestion(g) = &answer.body else {
            panic!("{answer:?}")
        };
        assert_eq!(g.for_node.as_deref(), Some("pkg:app6"));
        let first = suggestions(&answer);
        assert!(!first.is_empty() && first.len() <= 5, "{codec}: {first:?}");
        assert_eq!(first[0].target, "pkg:liby", "{codec}: {first:?}");
        assert_eq!(first[0].edge_type, "depends-on");
        assert!(
            first[0]
                .reason
                .contains("link to pkg:libx also link to pkg:liby"),
            "{codec}: a reason a person reads: {}",
            first[0].reason
        );
        assert!(first.windows(2).all(|w| w[0].confidence >= w[1].confidence));
        assert!(first.iter().all(|s| (0.0..=1.0).contains(&s.confidence)));
        assert!(first
            .iter()
            .all(|s| s.target != "pkg:app6" && s.target != "pkg:libx"));
        // A committed edge changes the next answer: liby is linked now.
        edge(&mut alice, "pkg:app6", "pkg:liby").await;
        let second = suggestions(&ask(&mut alice, "pkg:app6", Some(5)).await);
        assert!(
            second.iter().all(|s| s.target != "pkg:liby"),
            "{codec}: {second:?}"
        );
        // And a new pattern is learnt: apps that link to libx and liby now
        // also link to libz.
        for i in 1..=5 {
            edge(&mut alice, &format!("pkg:app{i}"), "pkg:libz").await;
        }
        let third = suggestions(&ask(&mut alice, "pkg:app6", Some(5)).await);
        assert_eq!(third[0].target, "pkg:libz", "{codec}: {third:?}");
        assert_eq!(
            suggestions(&ask(&mut alice, "pkg:app6", Some(1)).await).len(),
            1,
            "{codec}: limit"
        );
    }
}

#[tokio::test]
async fn bad_asks_get_system_error_and_the_session_goes_on() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        seed(&mut alice).await;
        let e = ask(&mut alice, "pkg:nowhere", Some(5)).await;
        assert_eq!(error(&e), ErrorCode::Invalid, "{codec}: unknown node");
        for limit in [0, 101, u32::MAX] {
            let e = ask(&mut alice, "pkg:app6", Some(limit)).await;
            assert_eq!(error(&e), ErrorCode::Invalid, "{codec}: limit {limit}");
        }
        let id = alice.id();
        alice
            .send(&Envelope::new(
                id.clone(),
                Body::GonzaiSuggestion(GonzaiSuggestion::default()),
            ))
            .await;
        let e = alice
            .recv_until("an error", |e| matches!(e.body, Body::SystemError(_)))
            .await;
        assert_eq!(error(&e), ErrorCode::Invalid, "{codec}: no `for`");
        // Still usable.
        assert!(!suggestions(&ask(&mut alice, "pkg:app6", None).await).is_empty());
    }
}

#[tokio::test]
async fn asks_are_rate_limited_per_session() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        seed(&mut alice).await;
        let mut ids = Vec::new();
        for _ in 0..30 {
            let id = alice.id();
            alice
                .send(&Envelope::new(
                    id.clone(),
                    Body::GonzaiSuggestion(GonzaiSuggestion {
                        for_node: Some("pkg:app6".into()),
                        limit: Some(3),
                        suggestions: None,
                    }),
                ))
                .await;
            ids.push(id);
        }
        let (mut answered, mut limited) = (0, 0);
        while answered + limited < 30 {
            let e = alice.recv().await;
            match &e.body {
                Body::GonzaiSuggestion(_) => answered += 1,
                Body::SystemError(err) if err.code == ErrorCode::RateLimited => {
                    assert!(err.retry_after_ms.is_some());
                    limited += 1;
                }
                _ => {}
            }
        }
        assert!(
            answered >= 1 && limited >= 1,
            "{codec}: {answered} answered, {limited} limited"
        );
        assert!(answered <= 20, "{codec}: at most 20 a second: {answered}");
    }
}
