//! The client against a server that authenticates: the token comes from a
//! callback, and when the server closes a session whose token expired
//! (4001), the client gets a fresh one and resumes with its pending changes.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{until, until_state, TestServer, WAIT};
use gitmind_client::{Client, ClientConfig, Codec, Outcome, State, TokenSource};
use gitmind_schema::model::Node;
use gitmind_server::auth::AuthConfig;
use jsonwebtoken::{EncodingKey, Header};

const SECRET: &str = "the client tests' shared secret, of at least 32 bytes";

fn mint(seconds: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = now.saturating_add_signed(seconds);
    let claims = serde_json::json!({"sub": "alice", "exp": exp, "graphs": {"g": "write"}});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        ..Node::default()
    }
}

#[tokio::test]
async fn an_expired_token_is_replaced_through_the_callback_and_nothing_pending_is_lost() {
    let server = TestServer::start_with(|config| {
        let secret = config.data_dir.with_file_name("secret");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, SECRET).unwrap();
        config.auth = AuthConfig {
            jwt_secret_file: Some(secret),
            ..AuthConfig::default()
        };
    });
    for codec in [Codec::Json, Codec::Binary] {
        // Tokens last two seconds; while `valid` is off the callback hands
        // out an expired one, which the server refuses (401).
        let (valid, minted) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
        let (v, m) = (valid.clone(), minted.clone());
        let mut config = ClientConfig::new(server.url(), "g");
        config.codec = codec;
        config.token = Some(TokenSource::new(move || {
            m.fetch_add(1, SeqCst);
            Some(mint(if v.load(SeqCst) { 2 } else { -120 }))
        }));
        let (client, _events) = tokio::time::timeout(WAIT, Client::connect(config))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(client.identity().0, "alice");
        let a = format!("concept:a-{codec}");
        assert!(matches!(
            client.create_node(node(&a)).await.unwrap(),
            Outcome::Confirmed(_)
        ));

        valid.store(false, SeqCst);
        until_state(&client, "the close of the expired session", |s| {
            matches!(s, State::Reconnecting { .. })
        })
        .await;
        // Made while the client cannot get back in: pending, applied locally.
        let b = format!("concept:b-{codec}");
        let pending = {
            let client = client.clone();
            let b = b.clone();
            tokio::spawn(async move { client.create_node(node(&b)).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        valid.store(true, SeqCst);
        let outcome = tokio::time::timeout(WAIT, pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(outcome, Outcome::Confirmed(_)), "{outcome:?}");
        until(&client, "both nodes, confirmed", |r| {
            r.node(&a).is_some() && r.node(&b).is_some() && r.pending_count() == 0
        })
        .await;
        assert!(minted.load(SeqCst) >= 2, "the callback was asked again");
        client.close().await;
    }
}
