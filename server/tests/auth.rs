//! Authentication, access control, origin checks and rate limits
//! (docs/security.md), end to end: a real server on port 0, real sockets,
//! both codecs, tokens signed here with the keys in `tests/fixtures/`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http_get, Client, TestServer, WAIT};
use gitmind_schema::message::*;
use gitmind_schema::{Body, Envelope, ErrorCode};
use gitmind_server::auth::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "a shared secret of more than thirty-two bytes, for tests";
const CODECS: [&str; 2] = ["gitmind.v1.json", "gitmind.v1.bin"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server that verifies HS256 (the secret), RS256 and EdDSA (the
/// fixtures' public keys) tokens for audience `gitmind` from issuer `tests`.
fn jwt_server(tweak: impl FnOnce(&mut gitmind_server::Config)) -> TestServer {
    TestServer::start_with(|config| {
        let secret = config.data_dir.with_file_name("secret");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        config.auth = AuthConfig {
            jwt_secret_file: Some(secret),
            jwt_public_key_files: vec![fixture("rsa-public.pem"), fixture("ed25519-public.pem")],
            audience: Some("gitmind".into()),
            issuer: Some("tests".into()),
            ..AuthConfig::default()
        };
        tweak(config);
    })
}

/// Standard claims for `sub` with `graphs`, valid for an hour.
fn claims(sub: &str, graphs: Value) -> Value {
    json!({"sub": sub, "aud": "gitmind", "iss": "tests", "exp": now() + 3600, "graphs": graphs})
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, key_file: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => unreachable!(),
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

/// A token whose header says `alg` and whose signature is `signature`.
fn forged(alg: &str, claims: &Value, signature: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = b64.encode(claims.to_string());
    format!("{header}.{payload}.{}", b64.encode(signature))
}

async fn connect_as(server: &TestServer, graph: &str, token: &str, codec: &str) -> Client {
    let auth = format!("Bearer {token}");
    Client::connect_with(
        server.addr,
        &format!("/v1/graphs/{graph}"),
        Some(codec),
        &[("Authorization", &auth)],
    )
    .await
    .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body))
}

async fn refused_with(
    server: &TestServer,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (u16, String) {
    match Client::connect_with(server.addr, path, None, headers).await {
        Ok(_) => panic!("{path} was accepted"),
        Err(r) => (r.status, r.body),
    }
}

/// A raw upgrade request; returns the response head.
async fn raw_upgrade(server: &TestServer, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .unwrap()
        {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn node_create(client: &mut Client, id: &str) -> (String, Envelope) {
    let mid = client.id();
    let envelope = Envelope::new(
        mid.clone(),
        Body::NodeCreate(NodeCreate {
            base_seq: Some(0),
            node: gitmind_schema::model::Node {
                id: id.into(),
                ..Default::default()
            },
            commit: None,
        }),
    );
    (mid, envelope)
}

async fn create(client: &mut Client, id: &str) -> Envelope {
    let (mid, envelope) = node_create(client, id);
    client.send(&envelope).await;
    client.outcome(&mid).await
}

fn rollback_reason(outcome: &Envelope) -> Option<RollbackReason> {
    match &outcome.body {
        Body::UpdateRollback(r) => Some(r.reason),
        _ => None,
    }
}

#[tokio::test]
async fn a_cross_origin_page_is_refused_before_the_upgrade_and_programs_are_not() {
    let server = TestServer::start();
    let path = "/v1/graphs/g?user=alice";
    for origin in ["http://evil.example", "null", "http://localhost:1"] {
        let (status, body) = refused_with(&server, path, &[("Origin", origin)]).await;
        assert_eq!(status, 403, "{origin}: {body}");
        assert!(body.contains("origin"), "{body}");
    }
    let own = format!("http://localhost:{}", server.addr.port());
    let ip = format!("http://{}", server.addr);
    for origin in [own.as_str(), ip.as_str()] {
        Client::connect_with(server.addr, path, None, &[("Origin", origin)])
            .await
            .unwrap_or_else(|r| panic!("{origin}: {} {}", r.status, r.body));
    }
    // No Origin at all: a program, not a browser.
    Client::connect(server.addr, path, None).await.unwrap();
    // The snapshot and the metrics follow the same rule.
    let (status, _) = http_get(
        server.addr,
        "/v1/graphs/g",
        "Origin: http://evil.example\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http_get(server.addr, "/metrics", "Origin: http://evil.example\r\n").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_in_local_mode() {
    let server = TestServer::start();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/graphs/g HTTP/1.1\r\nHost: attacker.example:7432\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
}

#[tokio::test]
async fn a_valid_token_names_the_user_over_both_codecs_and_either_way_of_sending_it() {
    let server = jwt_server(|_| {});
    let token = hs256(&claims("alice", json!({"g": "write"})));
    for codec in CODECS {
        let mut alice = connect_as(&server, "g", &token, codec).await;
        assert_eq!(alice.user_id, "alice");
        let outcome = create(&mut alice, &format!("concept:{}", &codec[11..])).await;
        assert!(
            matches!(outcome.body, Body::UpdateConfirmed(_)),
            "{outcome:?}"
        );
    }
    let by_query = Client::connect(
        server.addr,
        &format!("/v1/graphs/g?access_token={token}&user=mallory"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        by_query.user_id, "alice",
        "`user` is ignored with authentication on"
    );
    for (alg, key) in [
        (Algorithm::RS256, "rsa-private.pem"),
        (Algorithm::EdDSA, "ed25519-private.pem"),
    ] {
        let token = signed(alg, key, &claims("bob", json!({"*": "read"})));
        let bob = connect_as(&server, "g", &token, "gitmind.v1.bin").await;
        assert_eq!(bob.user_id, "bob", "{alg:?}");
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_other_sessions_go_on() {
    let server = jwt_server(|_| {});
    let good = hs256(&claims("alice", json!({"g": "write"})));
    let mut alice = connect_as(&server, "g", &good, "gitmind.v1.json").await;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("mallory", json!({"g": "admin"}));
        f(&mut c);
        c
    };
    let public_pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("missing", String::new()),
        ("garbage", "not.a.token".into()),
        ("expired", hs256(&with(&|c| c["exp"] = json!(now() - 120)))),
        (
            "not yet valid",
            hs256(&with(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "wrong audience",
            hs256(&with(&|c| c["aud"] = json!("other"))),
        ),
        ("wrong issuer", hs256(&with(&|c| c["iss"] = json!("other")))),
        (
            "no exp",
            hs256(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
        ),
        (
            "forged",
            signed(Algorithm::RS256, "other-rsa-private.pem", &with(&|_| {})),
        ),
        ("alg none", forged("none", &with(&|_| {}), b"")),
        (
            "HS256 keyed with the RSA public key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &with(&|_| {}),
                &EncodingKey::from_secret(&public_pem),
            )
            .unwrap(),
        ),
        ("unsupported alg", forged("HS512", &with(&|_| {}), b"x")),
    ];
    for (what, token) in cases {
        let auth = format!("Bearer {token}");
        let headers: &[(&'static str, &str)] = if token.is_empty() {
            &[]
        } else {
            &[("Authorization", &auth)]
        };
        let (status, body) = refused_with(&server, "/v1/graphs/g", headers).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            !body.contains(&token) || token.is_empty(),
            "{what}: the token is echoed"
        );
    }
    // The refusals cost the connected session nothing.
    let outcome = create(&mut alice, "concept:still-here").await;
    assert!(
        matches!(outcome.body, Body::UpdateConfirmed(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_hs256_secret_never_verifies_an_rs256_token_and_back() {
    // A server with only the RSA public key: an HS256 token made with that
    // public key as its secret is the classic algorithm confusion.
    let server = TestServer::start_with(|config| {
        config.auth = AuthConfig {
            jwt_public_key_files: vec![fixture("rsa-public.pem")],
            ..AuthConfig::default()
        };
    });
    let public_pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let c = json!({"sub": "mallory", "exp": now() + 60, "graphs": {"*": "admin"}});
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let auth = format!("Bearer {confused}");
    let (status, _) = refused_with(&server, "/v1/graphs/g", &[("Authorization", &auth)]).await;
    assert_eq!(status, 401);
    let good = signed(Algorithm::RS256, "rsa-private.pem", &c);
    connect_as(&server, "g", &good, "gitmind.v1.json").await;
}

#[tokio::test]
async fn a_jwks_file_verifies_by_kid() {
    let server = TestServer::start_with(|config| {
        config.auth = AuthConfig {
            jwks_file: Some(fixture("jwks.json")),
            ..AuthConfig::default()
        };
    });
    let c = json!({"sub": "carol", "exp": now() + 60, "graphs": {"g": "read"}});
    for (alg, key, kid) in [
        (Algorithm::RS256, "rsa-private.pem", "rsa-1"),
        (Algorithm::EdDSA, "ed25519-private.pem", "ed-1"),
    ] {
        let pem = std::fs::read(fixture(key)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let token = jsonwebtoken::encode(&header, &c, &key).unwrap();
        let carol = connect_as(&server, "g", &token, "gitmind.v1.bin").await;
        assert_eq!(carol.user_id, "carol");
    }
}

#[tokio::test]
async fn roles_decide_what_a_session_may_do() {
    let server = jwt_server(|_| {});
    let writer = hs256(&claims("w", json!({"g-*": "write"})));
    let reader = hs256(&claims("r", json!({"g-*": "read", "other": "write"})));
    let (status, body) = refused_with(
        &server,
        "/v1/graphs/secret",
        &[("Authorization", &format!("Bearer {reader}"))],
    )
    .await;
    assert_eq!(status, 403, "no role on the graph: {body}");
    for codec in CODECS {
        // A graph per codec: the same mutation ids again would be answered
        // from the first graph's memory (4.4).
        let graph = format!("g-{}", &codec[11..]);
        let mut w = connect_as(&server, &graph, &writer, codec).await;
        let mut r = connect_as(&server, &graph, &reader, codec).await;
        // read: presence and sync are fine, a mutation is forbidden.
        r.send(&Envelope::new(
            "p1",
            Body::UserPresence(UserPresence {
                status: PresenceStatus::Away,
                focus: None,
                display_name: None,
                color: None,
                chaos_affinity: None,
            }),
        ))
        .await;
        let (mid, envelope) = node_create(&mut r, "concept:from-reader");
        r.send(&envelope).await;
        let outcome = r.outcome(&mid).await;
        assert_eq!(
            rollback_reason(&outcome),
            Some(RollbackReason::Forbidden),
            "{codec}"
        );
        // The same id again gets the same answer (remembered, 4.4).
        r.send(&envelope).await;
        assert_eq!(
            rollback_reason(&r.outcome(&mid).await),
            Some(RollbackReason::Forbidden)
        );
        // write: confirmed, and the reader sees it.
        let id = format!("concept:from-writer-{}", &codec[11..]);
        let outcome = create(&mut w, &id).await;
        assert!(
            matches!(outcome.body, Body::UpdateConfirmed(_)),
            "{outcome:?}"
        );
        r.recv_until(
            "the writer's node",
            |e| matches!(&e.body, Body::NodeCreate(c) if c.node.id == id),
        )
        .await;
    }
}

#[tokio::test]
async fn write_prefixes_bound_which_nodes_a_user_may_change() {
    let server = jwt_server(|_| {});
    let admin = hs256(&claims("admin", json!({"g": "admin"})));
    let mut a = connect_as(&server, "g", &admin, "gitmind.v1.json").await;
    create(&mut a, "concept:shared").await;
    let token = hs256(&json!({
        "sub": "p", "aud": "gitmind", "iss": "tests", "exp": now() + 60,
        "graphs": {"g": "write"}, "write": ["concept:p/"]
    }));
    let mut p = connect_as(&server, "g", &token, "gitmind.v1.bin").await;
    assert!(matches!(
        create(&mut p, "concept:p/mine").await.body,
        Body::UpdateConfirmed(_)
    ));
    let outcome = create(&mut p, "concept:not-mine").await;
    assert_eq!(rollback_reason(&outcome), Some(RollbackReason::Forbidden));
    // An edge from its own node to one it may read is fine; the other way
    // round is not.
    for (source, target, ok) in [
        ("concept:p/mine", "concept:shared", true),
        ("concept:shared", "concept:p/mine", false),
    ] {
        let mid = say(&mut p, edge(source, "relates-to", target)).await;
        let outcome = p.outcome(&mid).await;
        let reason = rollback_reason(&outcome);
        assert_eq!(reason.is_none(), ok, "{source} -> {target}: {outcome:?}");
    }
}

#[tokio::test]
async fn read_prefixes_filter_the_snapshot_endpoint() {
    let server = jwt_server(|_| {});
    let admin = hs256(&claims("admin", json!({"g": "admin"})));
    let mut a = connect_as(&server, "g", &admin, "gitmind.v1.json").await;
    create(&mut a, "concept:open").await;
    create(&mut a, "person:private").await;
    let reader = hs256(&json!({
        "sub": "r", "aud": "gitmind", "iss": "tests", "exp": now() + 60,
        "graphs": {"g": "read"}, "read": ["concept:"]
    }));
    let (status, body) = http_get(
        server.addr,
        "/v1/graphs/g",
        &format!("Authorization: Bearer {reader}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("concept:open"), "{body}");
    assert!(!body.contains("person:private"), "{body}");
    let (status, _) = http_get(server.addr, "/v1/graphs/g", "").await;
    assert_eq!(status, 401, "the snapshot needs credentials");
}

#[tokio::test]
async fn the_metrics_need_admin_on_every_graph() {
    let server = jwt_server(|_| {});
    let (status, _) = http_get(server.addr, "/metrics", "").await;
    assert_eq!(status, 401);
    let writer = hs256(&claims("w", json!({"*": "write"})));
    let (status, _) = http_get(
        server.addr,
        "/metrics",
        &format!("Authorization: Bearer {writer}\r\n"),
    )
    .await;
    assert_eq!(status, 403);
    let admin = hs256(&claims("a", json!({"*": "admin"})));
    let (status, body) = http_get(
        server.addr,
        "/metrics",
        &format!("Authorization: Bearer {admin}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("gitmind_connections"));
    assert!(!body.contains(&admin), "no token in the metrics");
    let (status, _) = http_get(server.addr, "/healthz", "").await;
    assert_eq!(status, 200, "health needs nothing");
}

#[tokio::test]
async fn a_session_whose_token_expires_is_told_to_reconnect_and_closed_with_4001() {
    let server = jwt_server(|_| {});
    for codec in CODECS {
        let mut c = claims("alice", json!({"g": "write"}));
        c["exp"] = json!(now() + 2);
        let mut alice = connect_as(&server, "g", &hs256(&c), codec).await;
        let (code, seen) = alice.closed().await;
        assert_eq!(code, Some(4001), "{codec}");
        let reconnect = seen.iter().find_map(|e| match &e.body {
            Body::SystemReconnect(r) => Some(r.reason.clone()),
            _ => None,
        });
        assert_eq!(reconnect.as_deref(), Some("credentials_expired"), "{codec}");
    }
}

#[tokio::test]
async fn envelope_user_ids_and_another_users_mutation_ids_change_nothing() {
    let server = jwt_server(|_| {});
    let alice_token = hs256(&claims("alice", json!({"g": "write"})));
    let bob_token = hs256(&claims("bob", json!({"g": "write"})));
    let mut alice = connect_as(&server, "g", &alice_token, "gitmind.v1.json").await;
    let mut bob = connect_as(&server, "g", &bob_token, "gitmind.v1.bin").await;
    // Alice claims to be bob in the envelope: she is still alice.
    let (mid, mut envelope) = node_create(&mut alice, "concept:by-alice");
    envelope.user_id = Some("bob".into());
    alice.send(&envelope).await;
    alice.outcome(&mid).await;
    let event = bob
        .recv_until(
            "alice's node",
            |e| matches!(&e.body, Body::NodeCreate(c) if c.node.id == "concept:by-alice"),
        )
        .await;
    assert_eq!(event.user_id.as_deref(), Some("alice"));
    // Bob replays alice's mutation id: it is his own mutation, evaluated
    // anew, not alice's stored outcome.
    let replay = Envelope::new(
        mid.clone(),
        Body::NodeCreate(NodeCreate {
            base_seq: Some(1),
            node: gitmind_schema::model::Node {
                id: "concept:by-bob".into(),
                ..Default::default()
            },
            commit: None,
        }),
    );
    bob.send(&replay).await;
    let outcome = bob.outcome(&mid).await;
    assert!(
        matches!(outcome.body, Body::UpdateConfirmed(_)),
        "{outcome:?}"
    );
    // A baseSeq from the future is invalid.
    let (_, mut future) = node_create(&mut bob, "concept:future");
    let mid = "future-1".to_owned();
    future.id = mid.clone();
    if let Body::NodeCreate(c) = &mut future.body {
        c.base_seq = Some(1_000_000);
    }
    bob.send(&future).await;
    assert_eq!(
        rollback_reason(&bob.outcome(&mid).await),
        Some(RollbackReason::Invalid)
    );
}

#[tokio::test]
async fn mutations_over_a_users_rate_are_rolled_back_rate_limited_and_the_session_goes_on() {
    let server = TestServer::start_with(|config| config.mutation_rate_per_user = 5);
    for codec in CODECS {
        // A user per codec: the bucket is the user's.
        let mut alice = server
            .connect("g", &format!("alice-{}", &codec[11..]), codec)
            .await;
        let mut mids = Vec::new();
        for i in 0..20 {
            let (mid, envelope) = node_create(&mut alice, &format!("concept:{codec}-{i}"));
            alice.send(&envelope).await;
            mids.push(mid);
        }
        // Refusals come at once, confirmations after the commit: take the
        // outcomes in whatever order they come.
        let mut limited = 0;
        let mut pending = mids.clone();
        while !pending.is_empty() {
            let outcome = alice
                .recv_until("an outcome", |e| {
                    matches!(e.body, Body::UpdateRollback(_) | Body::UpdateConfirmed(_))
                })
                .await;
            let reference = match &outcome.body {
                Body::UpdateRollback(r) => {
                    assert_eq!(r.reason, RollbackReason::RateLimited);
                    assert!(
                        r.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000),
                        "{r:?}"
                    );
                    limited += 1;
                    &r.reference
                }
                Body::UpdateConfirmed(c) => &c.reference,
                _ => unreachable!(),
            };
            pending.retain(|m| m != reference);
        }
        assert!(
            (10..=15).contains(&limited),
            "{codec}: {limited} of 20 limited"
        );
        // Not remembered (4.4): after the wait, the same id is taken.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let last = mids.last().unwrap().clone();
        alice
            .send(&Envelope::new(
                last.clone(),
                Body::NodeCreate(NodeCreate {
                    base_seq: Some(0),
                    node: gitmind_schema::model::Node {
                        id: format!("concept:{codec}-19"),
                        ..Default::default()
                    },
                    commit: None,
                }),
            ))
            .await;
        let outcome = alice.outcome(&last).await;
        assert!(
            rollback_reason(&outcome) != Some(RollbackReason::RateLimited),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_presence_storm_gets_rate_limited_errors_then_the_close() {
    let server = TestServer::start_with(|config| config.ephemeral_rate_per_user = 10);
    let mut storm = server.connect("g", "storm", "gitmind.v1.json").await;
    let mut calm = server.connect("g", "calm", "gitmind.v1.bin").await;
    for i in 0..30 {
        storm
            .send(&Envelope::new(
                format!("c{i}"),
                Body::CursorMove(CursorMove {
                    x: f64::from(i),
                    y: 0.0,
                    node_id: None,
                }),
            ))
            .await;
    }
    let error = storm
        .recv_until(
            "rate_limited",
            |e| matches!(&e.body, Body::SystemError(s) if s.code == ErrorCode::RateLimited),
        )
        .await;
    let Body::SystemError(error) = error.body else {
        unreachable!()
    };
    assert!(error.retry_after_ms.is_some());
    // The other user is not limited by the storm.
    calm.send(&Envelope::new(
        "c1",
        Body::CursorMove(CursorMove {
            x: 1.0,
            y: 1.0,
            node_id: None,
        }),
    ))
    .await;
    let outcome = create(&mut calm, "concept:calm").await;
    assert!(matches!(outcome.body, Body::UpdateConfirmed(_)));
    // Past the error budget (100 a minute) the storm is closed with 1008.
    for i in 0..200 {
        storm
            .send(&Envelope::new(
                format!("d{i}"),
                Body::CursorMove(CursorMove {
                    x: 0.0,
                    y: f64::from(i),
                    node_id: None,
                }),
            ))
            .await;
    }
    let (code, _) = storm.closed().await;
    assert_eq!(code, Some(1008));
    // Coming straight back does not start the storm again with a fresh
    // budget: the user is refused for a while (policy_close_cooldown_ms).
    let head = raw_upgrade(&server, "/v1/graphs/g?user=storm", "").await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    server.connect("g", "calm2", "gitmind.v1.json").await;
}

#[tokio::test]
async fn handshakes_and_connections_per_user_are_capped_with_429_and_retry_after() {
    let server = TestServer::start_with(|config| {
        config.handshake_rate_per_user = 3;
        config.max_connections_per_user = 2;
    });
    let path = "/v1/graphs/g?user=alice";
    let _one = Client::connect(server.addr, path, None).await.unwrap();
    let _two = Client::connect(server.addr, path, None).await.unwrap();
    let head = raw_upgrade(&server, path, "").await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(head.contains("connections of this user") || head.contains("429"));
    // The handshake bucket (3 a second) is empty now: 429 too.
    let head = raw_upgrade(&server, path, "").await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // Another user is not affected.
    Client::connect(server.addr, "/v1/graphs/g?user=bob", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn read_prefixes_filter_syncs_and_live_events_over_both_codecs() {
    let server = jwt_server(|_| {});
    let admin = hs256(&claims("admin", json!({"g": "admin"})));
    let mut a = connect_as(&server, "g", &admin, "gitmind.v1.json").await;
    create(&mut a, "concept:before").await;
    create(&mut a, "person:before").await;
    let reader = hs256(&json!({
        "sub": "r", "aud": "gitmind", "iss": "tests", "exp": now() + 600,
        "graphs": {"g": "read"}, "read": ["concept:"]
    }));
    for codec in CODECS {
        let mut r = connect_as(&server, "g", &reader, codec).await;
        let sync = r.sync.clone().unwrap();
        let ids: Vec<_> = sync
            .nodes
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.id)
            .collect();
        assert!(
            ids.contains(&"concept:before".to_owned()),
            "{codec}: {ids:?}"
        );
        assert!(
            ids.iter().all(|id| id.starts_with("concept:")),
            "{codec}: {ids:?}"
        );
        let epoch = sync.epoch.clone().unwrap();
        // Live: a hidden node, then a batch with one op of each kind, then a
        // visible node; the reader gets the batch cut and the visible node.
        create(&mut a, &format!("person:{codec}")).await;
        let mid = a.id();
        a.send(&Envelope::new(
            mid.clone(),
            Body::BatchUpdate(BatchUpdate {
                base_seq: Some(0),
                ops: vec![
                    BatchOp::NodeCreate(NodeCreate {
                        base_seq: None,
                        node: gitmind_schema::model::Node {
                            id: format!("person:batch-{codec}"),
                            ..Default::default()
                        },
                        commit: None,
                    }),
                    BatchOp::NodeCreate(NodeCreate {
                        base_seq: None,
                        node: gitmind_schema::model::Node {
                            id: format!("concept:batch-{codec}"),
                            ..Default::default()
                        },
                        commit: None,
                    }),
                ],
                commit: None,
            }),
        ))
        .await;
        a.outcome(&mid).await;
        create(&mut a, &format!("concept:{codec}")).await;
        let mut seen = Vec::new();
        let last = format!("concept:{codec}");
        loop {
            let e = r.recv().await;
            match &e.body {
                Body::NodeCreate(c) => {
                    seen.push(c.node.id.clone());
                    if c.node.id == last {
                        break;
                    }
                }
                Body::BatchUpdate(b) => {
                    assert_eq!(b.ops.len(), 1, "{codec}: the batch is cut");
                    seen.push(format!("batch of {}", b.ops.len()));
                }
                _ => {}
            }
        }
        assert_eq!(seen, ["batch of 1".to_owned(), last.clone()], "{codec}");
        // A resync from the start: a delta without the hidden changes.
        r.send(&Envelope::new(
            "s1",
            Body::GraphSync(GraphSync {
                since: Some(0),
                epoch: Some(epoch),
                ..GraphSync::default()
            }),
        ))
        .await;
        let delta = r
            .recv_until("the delta", |e| matches!(e.body, Body::GraphSync(_)))
            .await;
        let Body::GraphSync(delta) = delta.body else {
            unreachable!()
        };
        let text = format!("{:?}", delta.events);
        assert!(text.contains("concept:before"), "{codec}: {text}");
        assert!(!text.contains("person:"), "{codec}: {text}");
    }
}

/// Sends `body` from `c` under a new id, which it returns.
async fn say(c: &mut Client, body: Body) -> String {
    let id = c.id();
    c.send(&Envelope::new(id.clone(), body)).await;
    id
}

/// Sends `body` from `c` and waits for it to be applied.
async fn mutate(c: &mut Client, body: Body) {
    let mid = say(c, body).await;
    assert!(rollback_reason(&c.outcome(&mid).await).is_none(), "{mid}");
}

fn edge(source: &str, edge_type: &str, target: &str) -> Body {
    Body::EdgeCreate(EdgeCreate {
        base_seq: Some(0),
        edge: gitmind_schema::model::Edge {
            source: source.into(),
            edge_type: edge_type.into(),
            target: target.into(),
            ..Default::default()
        },
        commit: None,
    })
}

fn relabel(id: &str, label: &str) -> Body {
    Body::NodeUpdate(NodeUpdate {
        base_seq: Some(0),
        id: id.into(),
        set: Some(gitmind_schema::model::NodeSet {
            label: Some(label.into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn read_prefixes_keep_gonzai_from_naming_hidden_nodes() {
    let admin = hs256(&claims("admin", json!({"g": "admin"})));
    let reader = hs256(&json!({
        "sub": "r", "aud": "gitmind", "iss": "tests", "exp": now() + 600,
        "graphs": {"g": "read"}, "read": ["concept:"]
    }));
    let focus = |node: &str| {
        Body::UserPresence(UserPresence {
            status: PresenceStatus::Active,
            focus: Some(node.into()),
            display_name: None,
            color: None,
            chaos_affinity: None,
        })
    };
    let share = |targets: &[&str]| {
        Body::GonzaiSuggestion(GonzaiSuggestion {
            for_node: None,
            limit: None,
            suggestions: Some(
                targets
                    .iter()
                    .map(|t| Suggestion {
                        target: (*t).into(),
                        edge_type: "depends-on".into(),
                        confidence: 0.5,
                        reason: "the admin thinks so".into(),
                    })
                    .collect(),
            ),
        })
    };
    for codec in CODECS {
        let server = jwt_server(|_| {});
        let mut a = connect_as(&server, "g", &admin, "gitmind.v1.json").await;
        for id in ["concept:a", "concept:b", "person:p"] {
            create(&mut a, id).await;
        }
        mutate(&mut a, edge("concept:a", "depends-on", "concept:b")).await;
        mutate(&mut a, edge("person:p", "depends-on", "concept:b")).await;
        let mut r = connect_as(&server, "g", &reader, codec).await;
        say(&mut r, focus("concept:b")).await;
        say(&mut a, focus("concept:a")).await;
        r.gonzai_drain("concept:b").await;
        a.gonzai_drain("concept:b").await;

        // A change to a hidden node one link from the reader's focus,
        // then one to a node it sees: it hears of the second only.
        mutate(&mut a, relabel("person:p", "Pat")).await;
        mutate(&mut a, relabel("concept:a", "A")).await;
        let seen = r.gonzai_drain("concept:b").await;
        let heard: Vec<_> = seen
            .iter()
            .filter_map(|e| match &e.body {
                Body::GonzaiDiscover(d) => Some(d.event.id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(heard, ["concept:a"], "{codec}: {seen:?}");

        // Shared suggestions reach it cut to the targets it may read, and
        // not at all when it may read none.
        say(&mut a, share(&["person:p", "concept:z"])).await;
        say(&mut a, share(&["person:q"])).await;
        a.gonzai_drain("concept:b").await;
        let seen = r.gonzai_drain("concept:b").await;
        let shared: Vec<Vec<String>> = seen
            .iter()
            .filter_map(|e| match &e.body {
                Body::GonzaiSuggestion(g) if g.for_node.is_none() => Some(
                    g.suggestions
                        .iter()
                        .flatten()
                        .map(|s| s.target.clone())
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(shared, [["concept:z"]], "{codec}: {seen:?}");
    }
}
