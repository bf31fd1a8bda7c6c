//! Conformance: drives a real server only through the examples of
//! `docs/protocol.md`. Every fenced block whose info string is `exchange`
//! runs in both codecs (`exchange json`: the JSON codec only), each on a
//! fresh graph; section 13 of that document defines the format:
//!
//! - `NAME> {json}` the client NAME sends this frame (`NAME> raw: TEXT`
//!   sends TEXT verbatim, JSON blocks only);
//! - `NAME< {json}` the next message NAME receives, presence and heartbeats
//!   aside, matches it (keys written must be equal; `"*"` is any value);
//! - `NAME< nothing` NAME receives nothing else for a moment;
//! - `NAME! CODE` the server closes NAME's connection with CODE.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use gitmind_schema::{binary, json, Envelope, Limits};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long `NAME< nothing` listens.
const QUIET: Duration = Duration::from_millis(300);

/// One example: its line in the document, whether it is JSON-only, its steps.
struct Exchange {
    line: usize,
    json_only: bool,
    steps: Vec<(usize, String, Step)>,
}

enum Step {
    Send(Value),
    SendRaw(String),
    Expect(Value),
    Nothing,
    Closed(u16),
}

/// The `exchange` blocks of the document.
fn exchanges(doc: &str) -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut current: Option<Exchange> = None;
    for (i, line) in doc.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim();
        if let Some(ex) = current.as_mut() {
            if trimmed == "```" {
                out.extend(current.take());
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            ex.steps.push(parse_step(number, trimmed));
        } else if let Some(info) = trimmed.strip_prefix("```exchange") {
            current = Some(Exchange {
                line: number,
                json_only: info.trim() == "json",
                steps: Vec::new(),
            });
        }
    }
    assert!(current.is_none(), "an exchange block is not closed");
    out
}

fn parse_step(number: usize, line: &str) -> (usize, String, Step) {
    let at = line
        .find(['>', '<', '!'])
        .unwrap_or_else(|| panic!("line {number}: no `>`, `<` or `!`: {line}"));
    let (name, rest) = (line[..at].trim().to_owned(), line[at + 1..].trim());
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase()),
        "line {number}: the client's name is lowercase letters: {line}"
    );
    let json = |text: &str| -> Value {
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("line {number}: not JSON ({e}): {text}"))
    };
    let step = match &line[at..=at] {
        ">" => match rest.strip_prefix("raw:") {
            Some(raw) => Step::SendRaw(raw.trim().to_owned()),
            None => Step::Send(json(rest)),
        },
        "<" if rest == "nothing" => Step::Nothing,
        "<" => Step::Expect(json(rest)),
        _ => Step::Closed(
            rest.parse()
                .unwrap_or_else(|_| panic!("line {number}: a close code: {line}")),
        ),
    };
    (number, name, step)
}

/// One connection of an exchange.
struct Peer {
    ws: WebSocketStream<TcpStream>,
    binary: bool,
    inbox: Vec<Value>,
    /// Whether its first message (the graph.sync) was matched or skipped.
    greeted: bool,
}

impl Peer {
    async fn connect(server: &TestServer, graph: &str, user: &str, codec: &str) -> Peer {
        let addr = server.addr;
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("ws://{addr}/v1/graphs/{graph}?user={user}")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", codec.parse().unwrap());
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        Peer {
            ws,
            binary: codec.ends_with("bin"),
            inbox: Vec::new(),
            greeted: false,
        }
    }

    async fn send(&mut self, frame: &Value, at: usize) {
        let message = if self.binary {
            let envelopes = as_envelopes(frame, at);
            Message::Binary(binary::encode_batch(&envelopes))
        } else {
            Message::Text(frame.to_string().into())
        };
        self.ws.send(message).await.unwrap();
    }

    /// The next message, as the JSON codec writes it, or `Err(close code)`.
    async fn next(&mut self, wait: Duration) -> Option<Result<Value, Option<u16>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.inbox.is_empty() {
                return Some(Ok(self.inbox.remove(0)));
            }
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_))) => return Some(Err(None)),
                Ok(Some(Ok(m))) => m,
            };
            let decoded = match message {
                Message::Text(t) => json::decode(t.as_str(), &Limits::default()).unwrap(),
                Message::Binary(b) => binary::decode(&b, &Limits::default()).unwrap(),
                Message::Close(f) => return Some(Err(f.map(|f| u16::from(f.code)))),
                _ => continue,
            };
            for envelope in decoded {
                let text = json::encode(&envelope.unwrap());
                self.inbox.push(serde_json::from_slice(&text).unwrap());
            }
        }
    }

    /// The next message that is not presence or a heartbeat (unless that
    /// is what is expected).
    async fn next_relevant(
        &mut self,
        expected: Option<&str>,
        wait: Duration,
    ) -> Option<Result<Value, Option<u16>>> {
        loop {
            let got = self.next(wait).await?;
            let Ok(message) = &got else { return Some(got) };
            let ty = message["type"].as_str().unwrap_or_default();
            let ignorable = matches!(ty, "system.heartbeat" | "user.presence");
            if !ignorable || expected == Some(ty) {
                return Some(got);
            }
        }
    }
}

/// The envelopes of a sent line, for the binary codec.
fn as_envelopes(frame: &Value, at: usize) -> Vec<Envelope> {
    let text = frame.to_string();
    json::decode(&text, &Limits::default())
        .unwrap_or_else(|e| {
            panic!("line {at}: not a frame ({e:?}); put it in an `exchange json` block")
        })
        .into_iter()
        .map(|e| {
            e.unwrap_or_else(|e| {
                panic!("line {at}: not a valid message ({e:?}); put it in an `exchange json` block")
            })
        })
        .collect()
}

/// Whether `actual` has every key of `expected` with an equal value.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "*" => !actual.is_null(),
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|got| matches(v, got))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

async fn run(server: &TestServer, ex: &Exchange, codec: &str, graph: &str) {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    for (at, name, step) in &ex.steps {
        let where_ = format!("docs/protocol.md line {at} ({codec})");
        if !peers.contains_key(name) {
            let peer = Peer::connect(server, graph, name, codec).await;
            peers.insert(name.clone(), peer);
        }
        let peer = peers.get_mut(name).unwrap();
        if !peer.greeted {
            peer.greeted = true;
            // The first message is the graph.sync: matched by an expectation
            // written first, else taken silently.
            if !matches!(step, Step::Expect(_)) {
                let first = peer.next(WAIT).await;
                assert!(
                    matches!(&first, Some(Ok(v)) if v["type"] == "graph.sync"),
                    "{where_}: the first message is not graph.sync: {first:?}"
                );
            }
        }
        match step {
            Step::Send(frame) => peer.send(frame, *at).await,
            Step::SendRaw(text) => {
                assert!(
                    !peer.binary,
                    "{where_}: `raw:` belongs in an `exchange json` block"
                );
                peer.ws
                    .send(Message::Text(text.clone().into()))
                    .await
                    .unwrap();
            }
            Step::Expect(expected) => {
                let ty = expected["type"].as_str();
                match peer.next_relevant(ty, WAIT).await {
                    Some(Ok(actual)) => assert!(
                        matches(expected, &actual),
                        "{where_}: expected\n  {expected}\ngot\n  {actual}"
                    ),
                    other => panic!("{where_}: expected {expected}, got {other:?}"),
                }
            }
            Step::Nothing => {
                if let Some(got) = peer.next_relevant(None, QUIET).await {
                    panic!("{where_}: expected nothing, got {got:?}");
                }
            }
            Step::Closed(code) => match peer.next_relevant(None, WAIT).await {
                Some(Err(got)) => assert_eq!(got, Some(*code), "{where_}"),
                other => panic!("{where_}: expected close {code}, got {other:?}"),
            },
        }
    }
}

#[tokio::test]
async fn every_example_of_the_protocol_document_holds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let all = exchanges(&doc);
    assert!(
        all.len() >= 15,
        "docs/protocol.md has {} exchange blocks",
        all.len()
    );
    let server = TestServer::start();
    let mut runs = 0;
    for (n, ex) in all.iter().enumerate() {
        for codec in ["gitmind.v1.json", "gitmind.v1.bin"] {
            if ex.json_only && codec.ends_with("bin") {
                continue;
            }
            let graph = format!("ex{n}-{}", if codec.ends_with("bin") { "b" } else { "j" });
            let at = ex.line;
            tokio::time::timeout(WAIT * 3, run(&server, ex, codec, &graph))
                .await
                .unwrap_or_else(|_| panic!("docs/protocol.md line {at} ({codec}) timed out"));
            runs += 1;
        }
    }
    println!("{runs} example runs from {} exchange blocks", all.len());
}

#[test]
fn the_matcher_is_strict_where_it_must_be() {
    let actual: Value =
        serde_json::json!({"type": "a", "data": {"ref": "m1", "seq": 3, "list": [1, 2]}});
    assert!(matches(&serde_json::json!({"data": {"seq": 3}}), &actual));
    assert!(matches(&serde_json::json!({"data": {"ref": "*"}}), &actual));
    assert!(!matches(&serde_json::json!({"data": {"seq": 4}}), &actual));
    assert!(!matches(
        &serde_json::json!({"data": {"missing": "*"}}),
        &actual
    ));
    assert!(!matches(
        &serde_json::json!({"data": {"list": [1]}}),
        &actual
    ));
}
