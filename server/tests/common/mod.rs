//! Shared helpers of the end-to-end tests: a real server on port 0 with its
//! own data directory, and a minimal WebSocket client speaking either codec.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gitmind_schema::message::*;
use gitmind_schema::model::Node;
use gitmind_schema::{binary, json, Body, Envelope, Limits};
use gitmind_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a test waits for any one thing before failing.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            port: 0,
            shards: 2,
            fsync: false,
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        let server = Server::start(config).unwrap();
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            dir,
            addr,
        }
    }

    pub async fn connect(&self, graph: &str, user: &str, codec: &str) -> Client {
        Client::connect(
            self.addr,
            &format!("/v1/graphs/{graph}?user={user}"),
            Some(codec),
        )
        .await
        .unwrap()
    }

    /// Shuts the server down on a blocking thread (it joins threads).
    pub async fn shutdown(&mut self) {
        let server = self.server.take().unwrap();
        tokio::task::spawn_blocking(move || server.shutdown())
            .await
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
    pub binary: bool,
    pub inbox: VecDeque<Envelope>,
    pub user_id: String,
    pub session_id: String,
    pub sync: Option<GraphSync>,
    pub next_id: u64,
}

/// What the upgrade answered when it was refused.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Client {
    /// Connects and reads the first `graph.sync` (all its chunks).
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        codec: Option<&str>,
    ) -> Result<Client, Refused> {
        Self::connect_with(addr, path, codec, &[]).await
    }

    /// [`Client::connect`] with extra request headers (`Origin`,
    /// `Authorization`, ...).
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        codec: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, Refused> {
        let mut client = Client::open_with(addr, path, codec, headers).await?;
        client.read_sync().await;
        Ok(client)
    }

    /// Connects, and reads nothing yet.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        codec: Option<&str>,
    ) -> Result<Client, Refused> {
        Self::open_with(addr, path, codec, &[]).await
    }

    /// [`Client::open`] with extra request headers.
    pub async fn open_with(
        addr: SocketAddr,
        path: &str,
        codec: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, Refused> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(codec) = codec {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", codec.parse().unwrap());
        }
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let (ws, response) = match tokio_tungstenite::client_async(request, stream).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                return Err(Refused { status, body });
            }
            Err(e) => panic!("handshake failed: {e}"),
        };
        let binary = response
            .headers()
            .get("sec-websocket-protocol")
            .is_some_and(|v| v == "gitmind.v1.bin");
        Ok(Client {
            ws,
            binary,
            inbox: VecDeque::new(),
            user_id: String::new(),
            session_id: String::new(),
            sync: None,
            next_id: 0,
        })
    }

    /// Reads the first `graph.sync` (all its chunks) into `sync`, and the
    /// session's ids from it.
    pub async fn read_sync(&mut self) {
        let client = self;
        let first = client.recv().await;
        let Body::GraphSync(mut sync) = first.body else {
            panic!("first message is not graph.sync: {first:?}")
        };
        client.user_id = first.user_id.clone().unwrap_or_default();
        client.session_id = first.session_id.clone().unwrap_or_default();
        while let Some(chunk) = sync.chunk {
            if chunk.index + 1 == chunk.count {
                break;
            }
            let next = client.recv().await;
            let Body::GraphSync(more) = next.body else {
                panic!("expected a sync chunk: {next:?}")
            };
            sync.nodes
                .get_or_insert_with(Vec::new)
                .extend(more.nodes.unwrap_or_default());
            sync.edges
                .get_or_insert_with(Vec::new)
                .extend(more.edges.unwrap_or_default());
            sync.events
                .get_or_insert_with(Vec::new)
                .extend(more.events.unwrap_or_default());
            sync.chunk = more.chunk;
        }
        client.sync = Some(sync);
    }

    /// Connects once a place under the caps is free (429 meanwhile), or
    /// panics after [`WAIT`].
    pub async fn connect_when_free(addr: SocketAddr, path: &str) -> Client {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match Client::connect(addr, path, None).await {
                Ok(client) => return client,
                Err(e) if e.status == 429 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("refused: {} {}", e.status, e.body),
            }
        }
    }

    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("m{}", self.next_id)
    }

    pub async fn send(&mut self, envelope: &Envelope) {
        let message = if self.binary {
            Message::Binary(binary::encode(envelope))
        } else {
            Message::Text(
                String::from_utf8(json::encode(envelope).to_vec())
                    .unwrap()
                    .into(),
            )
        };
        self.ws.send(message).await.unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next message, or a panic after [`WAIT`].
    pub async fn recv(&mut self) -> Envelope {
        match tokio::time::timeout(WAIT, self.try_recv()).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => panic!("connection closed while waiting for a message"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next message, or `None` when the connection closed.
    pub async fn try_recv(&mut self) -> Option<Envelope> {
        loop {
            if let Some(envelope) = self.inbox.pop_front() {
                return Some(envelope);
            }
            let message = self.ws.next().await?.ok()?;
            let decoded = match message {
                Message::Text(text) => json::decode(text.as_str(), &Limits::default()).unwrap(),
                Message::Binary(bytes) => binary::decode(&bytes, &Limits::default()).unwrap(),
                Message::Close(_) => return None,
                _ => continue,
            };
            for envelope in decoded {
                self.inbox.push_back(envelope.unwrap());
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn recv_until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Envelope {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let Ok(envelope) = tokio::time::timeout_at(deadline, self.recv()).await else {
                panic!("waited {WAIT:?} for {what}")
            };
            if pred(&envelope) {
                return envelope;
            }
        }
    }

    /// Reads until the server closes; returns the close code and every
    /// message received before it.
    pub async fn closed(&mut self) -> (Option<u16>, Vec<Envelope>) {
        let mut seen: Vec<Envelope> = self.inbox.drain(..).collect();
        let result = tokio::time::timeout(WAIT, async {
            while let Some(message) = self.ws.next().await {
                match message {
                    Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                    Ok(Message::Text(text)) => {
                        seen.extend(
                            json::decode(text.as_str(), &Limits::default())
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap),
                        );
                    }
                    Ok(Message::Binary(bytes)) => {
                        seen.extend(
                            binary::decode(&bytes, &Limits::default())
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap),
                        );
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await
        .expect("the server did not close the connection");
        (result, seen)
    }

    pub async fn create_node(&mut self, id: &str, label: &str, base_seq: u64) -> String {
        let mid = self.id();
        let node = Node {
            id: id.into(),
            label: Some(label.into()),
            ..Node::default()
        };
        self.send(&Envelope::new(
            mid.clone(),
            Body::NodeCreate(NodeCreate {
                base_seq: Some(base_seq),
                node,
                commit: None,
            }),
        ))
        .await;
        mid
    }

    /// Waits for the outcome of mutation `mid`.
    pub async fn outcome(&mut self, mid: &str) -> Envelope {
        let mid = mid.to_owned();
        self.recv_until("an outcome", |e| match &e.body {
            Body::UpdateConfirmed(c) => c.reference == mid,
            Body::UpdateConflictResolved(c) => c.reference == mid,
            Body::UpdateRollback(r) => r.reference == mid,
            _ => false,
        })
        .await
    }
}

/// A plain HTTP GET; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str, extra_headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
