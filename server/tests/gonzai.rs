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

async fn focus(c: &mut Client, node: &str, chaos_affinity: Option<f64>) {
    let id = c.id();
    c.send(&Envelope::new(
        id,
        Body::UserPresence(UserPresence {
            status: PresenceStatus::Active,
            focus: Some(node.into()),
            display_name: None,
            color: None,
            chaos_affinity,
        }),
    ))
    .await;
}

/// Everything `c` receives until the answer to a suggestion ask made now.
async fn drain(c: &mut Client) -> Vec<Envelope> {
    c.gonzai_drain("pkg:libx").await
}

fn discoveries(seen: &[Envelope]) -> Vec<GonzaiDiscover> {
    seen.iter()
        .filter_map(|e| match &e.body {
            Body::GonzaiDiscover(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn discoveries_reach_the_sessions_focused_near_a_change_above_the_threshold() {
    for codec in CODECS {
        for (threshold, expect_near) in [(0.7, true), (0.8, false)] {
            let server = TestServer::start_with(|c| c.gonzai_discover_threshold = threshold);
            let mut alice = server.connect("g", "alice", codec).await;
            seed(&mut alice).await;
            let mut on_app6 = server.connect("g", "bob", codec).await;
            let mut on_libx = server.connect("g", "carol", codec).await;
            let mut on_libz = server.connect("g", "dave", codec).await;
            focus(&mut on_app6, "pkg:app6", None).await;
            focus(&mut on_libx, "pkg:libx", None).await;
            focus(&mut on_libz, "pkg:libz", None).await;
            for c in [&mut on_app6, &mut on_libx, &mut on_libz] {
                drain(c).await;
            }
            drain(&mut alice).await;
            edge(&mut alice, "pkg:app6", "pkg:liby").await;
            // The node itself: relevance 1.
            let got = discoveries(&drain(&mut on_app6).await);
            assert_eq!(got.len(), 1, "{codec}: {got:?}");
            assert_eq!(got[0].event.event_type, "edge.create");
            assert_eq!(got[0].event.id, "pkg:app6 -[depends-on]-> pkg:liby");
            assert!(got[0].relevance > threshold && got[0].relevance <= 1.0);
            assert_eq!(got[0].animation, "bounce-excitedly");
            assert!(!got[0].suggestion.is_empty());
            // One link away, nothing shared: 0.75.
            let near = discoveries(&drain(&mut on_libx).await);
            assert_eq!(
                near.len(),
                usize::from(expect_near),
                "{codec} {threshold}: {near:?}"
            );
            if let Some(d) = near.first() {
                assert!((d.relevance - 0.75).abs() < 0.01, "{d:?}");
            }
            // Not connected: nothing; nor to the author.
            assert!(discoveries(&drain(&mut on_libz).await).is_empty());
            assert!(discoveries(&drain(&mut alice).await).is_empty());
        }
    }
}

#[tokio::test]
async fn discoveries_switched_off_reach_nobody_and_asks_are_still_answered() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.gonzai_discoveries = false);
        let mut alice = server.connect("g", "alice", codec).await;
        seed(&mut alice).await;
        let mut bob = server.connect("g", "bob", codec).await;
        focus(&mut bob, "pkg:app6", None).await;
        drain(&mut bob).await;
        edge(&mut alice, "pkg:app6", "pkg:liby").await;
        let seen = drain(&mut bob).await;
        assert!(discoveries(&seen).is_empty(), "{codec}: {seen:?}");
        let answer = ask(&mut bob, "pkg:app6", Some(5)).await;
        assert!(
            suggestions(&answer).iter().all(|s| s.target != "pkg:liby"),
            "{codec}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn discoveries_are_rate_limited_per_session() {
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.gonzai_discoveries_per_second = 2);
        let mut alice = server.connect("g", "alice", codec).await;
        seed(&mut alice).await;
        let mut bob = server.connect("g", "bob", codec).await;
        focus(&mut bob, "pkg:app6", None).await;
        drain(&mut bob).await;
        let started = std::time::Instant::now();
        for i in 0..6 {
            let id = format!("pkg:new{i}");
            node(&mut alice, &id).await;
            edge(&mut alice, "pkg:app6", &id).await;
        }
        let got = discoveries(&drain(&mut bob).await);
        if started.elapsed() < std::time::Duration::from_millis(900) {
            assert_eq!(got.len(), 2, "{codec}: {got:?}");
        } else {
            assert!(got.len() >= 2 && got.len() < 6, "{codec}: {got:?}");
        }
    }
}

async fn chaos(c: &mut Client, intensity: Option<f64>) -> String {
    let id = c.id();
    c.send(&Envelope::new(
        id.clone(),
        Body::ChaosTrigger(ChaosTrigger {
            intensity,
            initiator: None,
            message: None,
        }),
    ))
    .await;
    id
}

fn chaos_seen(seen: &[Envelope]) -> Vec<ChaosTrigger> {
    seen.iter()
        .filter_map(|e| match &e.body {
            Body::ChaosTrigger(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn chaos_spreads_within_two_hops_by_affinity_with_a_fixed_seed() {
    for codec in CODECS {
        let mut reached_by_seed = Vec::new();
        for _ in 0..2 {
            let server = TestServer::start_with(|c| c.gonzai_seed = Some(7));
            let mut alice = server.connect("g", "alice", codec).await;
            seed(&mut alice).await;
            focus(&mut alice, "pkg:app1", None).await;
            // app2 is two links from app1 (both depend on libx).
            let mut sure = server.connect("g", "sure", codec).await;
            focus(&mut sure, "pkg:app2", Some(1.0)).await;
            let mut never = server.connect("g", "never", codec).await;
            focus(&mut never, "pkg:app3", Some(0.0)).await;
            let mut far = server.connect("g", "far", codec).await;
            focus(&mut far, "pkg:libz", Some(1.0)).await;
            let mut halves = Vec::new();
            for i in 0..8 {
                let mut c = server.connect("g", &format!("half{i}"), codec).await;
                focus(&mut c, "pkg:libx", None).await;
                halves.push(c);
            }
            for c in [&mut alice, &mut sure, &mut never, &mut far] {
                drain(c).await;
            }
            for c in &mut halves {
                drain(c).await;
            }
            chaos(&mut alice, Some(0.7)).await;
            // Alice's ask after it is handled after it.
            assert!(
                chaos_seen(&drain(&mut alice).await).is_empty(),
                "not to the initiator"
            );
            let got = chaos_seen(&drain(&mut sure).await);
            assert_eq!(got.len(), 1, "{codec}: {got:?}");
            assert_eq!(got[0].initiator.as_deref(), Some("alice"));
            assert_eq!(got[0].intensity, Some(0.7));
            assert_eq!(got[0].message.as_deref(), Some("Chaos is contagious! 🐵"));
            assert!(chaos_seen(&drain(&mut never).await).is_empty());
            assert!(chaos_seen(&drain(&mut far).await).is_empty());
            let mut reached = Vec::new();
            for (i, c) in halves.iter_mut().enumerate() {
                if !chaos_seen(&drain(c).await).is_empty() {
                    reached.push(i);
                }
            }
            // Rate: a second trigger at once is refused; bad intensity too.
            let again = chaos(&mut alice, None).await;
            let e = alice
                .recv_until("the refusal", |e| matches!(&e.body, Body::SystemError(err) if err.reference.as_deref() == Some(again.as_str())))
                .await;
            let Body::SystemError(err) = e.body else {
                unreachable!()
            };
            assert_eq!(err.code, ErrorCode::RateLimited);
            let bad = chaos(&mut alice, Some(2.0)).await;
            let e = alice
                .recv_until("the refusal", |e| matches!(&e.body, Body::SystemError(err) if err.reference.as_deref() == Some(bad.as_str())))
                .await;
            let Body::SystemError(err) = e.body else {
                unreachable!()
            };
            assert_eq!(err.code, ErrorCode::Invalid);
            reached_by_seed.push(reached);
        }
        assert_eq!(
            reached_by_seed[0], reached_by_seed[1],
            "{codec}: the same seed spreads the same way"
        );
        assert!(
            !reached_by_seed[0].is_empty() && reached_by_seed[0].len() < 8,
            "{codec}: about half of 8 at affinity 0.5: {:?}",
            reached_by_seed[0]
        );
    }
}

#[tokio::test]
async fn the_client_library_asks_for_suggestions_and_hears_of_chaos() {
    use gitmind_client::client::ClientError;
    use gitmind_client::{ClientConfig, Codec, Event};
    for codec in [Codec::Json, Codec::Binary] {
        let server = TestServer::start_with(|c| c.gonzai_seed = Some(1));
        let mut alice = server.connect("g", "alice", "gitmind.v1.json").await;
        seed(&mut alice).await;
        let mut config = ClientConfig::new(format!("ws://{}", server.addr), "g");
        config.user = Some("bob".into());
        config.codec = codec;
        let (bob, mut events) = gitmind_client::Client::connect(config).await.unwrap();
        let found = bob.suggest("pkg:app6", Some(3)).await.unwrap();
        assert_eq!(found[0].target, "pkg:liby", "{codec:?}: {found:?}");
        assert!(found.len() <= 3);
        let refused = bob.suggest("pkg:nowhere", None).await;
        assert!(
            matches!(&refused, Err(ClientError::Refused(e)) if e.code == ErrorCode::Invalid),
            "{codec:?}: {refused:?}"
        );
        // Chaos from alice reaches bob, focused two links away with
        // affinity 1.
        bob.presence(UserPresence {
            status: PresenceStatus::Active,
            focus: Some("pkg:app2".into()),
            display_name: None,
            color: None,
            chaos_affinity: Some(1.0),
        })
        .await
        .unwrap();
        // Bob's presence is in the hub once his next ask is answered.
        bob.suggest("pkg:app6", Some(1)).await.unwrap();
        focus(&mut alice, "pkg:app1", None).await;
        drain(&mut alice).await;
        chaos(&mut alice, Some(0.9)).await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match events.next().await {
                    Some(Event::Gonzai(e)) => return e,
                    Some(_) => {}
                    None => panic!("closed"),
                }
            }
        })
        .await
        .unwrap();
        let Body::ChaosTrigger(t) = got.body else {
            panic!("{got:?}")
        };
        assert_eq!(t.initiator.as_deref(), Some("alice"));
        bob.close().await;
    }
}

/// The first ask starts the graph's build on a thread of its own: the hub
/// takes edits meanwhile, the ask waits and is answered when the model is
/// ready, with the edits committed during the build in it.
#[tokio::test]
async fn the_first_build_is_off_the_hub_and_misses_no_change_made_meanwhile() {
    const DELAY_MS: u64 = 1500;
    for codec in CODECS {
        let server = TestServer::start_with(|c| c.gonzai_build_delay_ms = DELAY_MS);
        let mut alice = server.connect("g", "alice", codec).await;
        let mut bob = server.connect("g", "bob", codec).await;
        seed(&mut alice).await;
        let started = std::time::Instant::now();
        let id = alice.id();
        alice
            .send(&Envelope::new(
                id.clone(),
                Body::GonzaiSuggestion(GonzaiSuggestion {
                    for_node: Some("pkg:app6".into()),
                    limit: Some(5),
                    suggestions: None,
                }),
            ))
            .await;
        // During the build: app6 now depends on liby, and a new app7 on
        // libx. The hub confirms them at once.
        edge(&mut bob, "pkg:app6", "pkg:liby").await;
        node(&mut bob, "pkg:app7").await;
        edge(&mut bob, "pkg:app7", "pkg:libx").await;
        assert!(
            started.elapsed().as_millis() < u128::from(DELAY_MS) - 300,
            "{codec}: edits wait for the build: {:?}",
            started.elapsed()
        );
        let answer = alice
            .recv_until("the answer", |e| e.id == format!("g-{id}"))
            .await;
        assert!(
            started.elapsed().as_millis() >= u128::from(DELAY_MS),
            "{codec}: answered before the build was done"
        );
        let first = suggestions(&answer);
        assert!(
            first.iter().all(|s| s.target != "pkg:liby"),
            "{codec}: the edge committed during the build is in the model: {first:?}"
        );
        // The node made during the build is known, with its edge.
        let later = suggestions(&ask(&mut alice, "pkg:app7", Some(3)).await);
        assert_eq!(later[0].target, "pkg:liby", "{codec}: {later:?}");
        // And the model goes on following changes.
        edge(&mut bob, "pkg:app7", "pkg:liby").await;
        let last = suggestions(&ask(&mut alice, "pkg:app7", Some(3)).await);
        assert!(
            last.iter().all(|s| s.target != "pkg:liby"),
            "{codec}: {last:?}"
        );
    }
}

async fn share(c: &mut Client, suggestions: Vec<Suggestion>, limit: Option<u32>) -> String {
    let id = c.id();
    c.send(&Envelope::new(
        id.clone(),
        Body::GonzaiSuggestion(GonzaiSuggestion {
            for_node: None,
            limit,
            suggestions: Some(suggestions),
        }),
    ))
    .await;
    id
}

fn shared(seen: &[Envelope]) -> Vec<(Option<String>, Vec<Suggestion>)> {
    seen.iter()
        .filter_map(|e| match &e.body {
            Body::GonzaiSuggestion(g) if g.for_node.is_none() => {
                Some((e.user_id.clone(), g.suggestions.clone().unwrap_or_default()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn shared_suggestions_reach_the_sessions_focused_within_two_hops() {
    for codec in CODECS {
        let server = TestServer::start();
        let mut alice = server.connect("g", "alice", codec).await;
        seed(&mut alice).await;
        focus(&mut alice, "pkg:app1", None).await;
        // app2 is two links from app1 (both depend on libx); libz is
        // linked to nothing.
        let mut near = server.connect("g", "near", codec).await;
        focus(&mut near, "pkg:app2", None).await;
        let mut far = server.connect("g", "far", codec).await;
        focus(&mut far, "pkg:libz", None).await;
        for c in [&mut alice, &mut near, &mut far] {
            drain(c).await;
        }
        let offered = vec![Suggestion {
            target: "pkg:libz".into(),
            edge_type: "depends-on".into(),
            confidence: 0.6,
            reason: "alice thinks so".into(),
        }];
        share(&mut alice, offered.clone(), None).await;
        assert!(
            shared(&drain(&mut alice).await).is_empty(),
            "{codec}: not back to the sharer"
        );
        let got = shared(&drain(&mut near).await);
        assert_eq!(got.len(), 1, "{codec}: {got:?}");
        // Like every message to a session, it carries the recipient's ids.
        assert_eq!(got[0].0.as_deref(), Some("near"), "{codec}");
        assert_eq!(got[0].1, offered, "{codec}");
        assert!(
            shared(&drain(&mut far).await).is_empty(),
            "{codec}: too far"
        );

        // Refused: a share with `limit`, a confidence out of range.
        let bad = share(&mut alice, offered.clone(), Some(3)).await;
        let e = alice
            .recv_until("the refusal", |e| matches!(&e.body, Body::SystemError(err) if err.reference.as_deref() == Some(bad.as_str())))
            .await;
        assert_eq!(error(&e), ErrorCode::Invalid, "{codec}");
        let mut wild = offered.clone();
        wild[0].confidence = 2.0;
        let bad = share(&mut alice, wild, None).await;
        let e = alice
            .recv_until("the refusal", |e| matches!(&e.body, Body::SystemError(err) if err.reference.as_deref() == Some(bad.as_str())))
            .await;
        assert_eq!(error(&e), ErrorCode::Invalid, "{codec}");
        assert!(shared(&drain(&mut near).await).is_empty(), "{codec}");
    }
}
