//! Shared helpers of the end-to-end tests: a real server on port 0 with its
//! own data directory, and a minimal WebSocket client speaking either codec,
//! over plain TCP or TLS ([`tls`]).
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gitmind_schema::message::*;
use gitmind_schema::model::Node;
use gitmind_schema::{binary, json, Body, Envelope, Limits};
use gitmind_server::config::IoBackend;
use gitmind_server::{Config, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// An envelope from its JSON text.
pub fn env(id: &str, ty: &str, data: &str) -> Envelope {
    let text = format!(r#"{{"id":"{id}","type":"{ty}","data":{data}}}"#);
    json::decode(&text, &Limits::default())
        .unwrap()
        .remove(0)
        .unwrap()
}

/// How long a test waits for any one thing before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The I/O backend the test servers use: `GITMIND_TEST_IO=uring` (a build
/// with the `uring` feature) or `epoll` (the default), so that CI runs the
/// same tests on both.
pub fn io_backend() -> IoBackend {
    match std::env::var("GITMIND_TEST_IO").as_deref() {
        Ok("uring") => IoBackend::Uring,
        Ok("epoll" | "") | Err(_) => IoBackend::Epoll,
        Ok(other) => panic!("GITMIND_TEST_IO={other}: expected epoll or uring"),
    }
}

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Set when the server speaks TLS: [`TestServer::connect`] and
    /// [`TestServer::get`] then use it.
    pub tls: Option<tls::TestTls>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), None, tweak)
    }

    /// A server speaking only TLS, with a certificate from a fresh test CA.
    pub fn start_tls(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls::TestTls::new(dir.path());
        Self::start_in(dir, Some(tls), tweak)
    }

    fn start_in(
        dir: tempfile::TempDir,
        tls: Option<tls::TestTls>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config {
            port: 0,
            shards: 2,
            fsync: false,
            data_dir: dir.path().join("data"),
            tls_cert: tls.as_ref().map(|t| t.cert_path.clone()),
            tls_key: tls.as_ref().map(|t| t.key_path.clone()),
            io: io_backend(),
            ..Config::default()
        };
        tweak(&mut config);
        let server = Server::start(config).unwrap();
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            dir,
            addr,
            tls,
        }
    }

    pub async fn connect(&self, graph: &str, user: &str, codec: &str) -> Client {
        self.try_connect(&format!("/v1/graphs/{graph}?user={user}"), Some(codec))
            .await
            .unwrap()
    }

    /// Connects to `path` over the server's transport (TLS when it has
    /// it) and reads the first `graph.sync`.
    pub async fn try_connect(&self, path: &str, codec: Option<&str>) -> Result<Client, Refused> {
        self.connect_with(path, codec, &[]).await
    }

    /// [`TestServer::try_connect`] with extra request headers (`Origin`,
    /// `Authorization`, ...).
    pub async fn connect_with(
        &self,
        path: &str,
        codec: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, Refused> {
        let mut client = self.open_with(path, codec, headers).await?;
        client.read_sync().await;
        Ok(client)
    }

    /// Connects to `path` over the server's transport, and reads nothing yet.
    pub async fn open_with(
        &self,
        path: &str,
        codec: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, Refused> {
        match &self.tls {
            Some(tls) => {
                let stream = tls.connect(self.addr).await;
                let url = format!("wss://{}:{}{path}", tls::SERVER_NAME, self.addr.port());
                Client::open_over(Box::new(stream), &url, codec, headers).await
            }
            None => Client::open_with(self.addr, path, codec, headers).await,
        }
    }

    /// A plain GET over the server's transport; the status and body.
    pub async fn get(&self, path: &str, extra_headers: &str) -> (u16, String) {
        match &self.tls {
            Some(tls) => {
                let stream = tls.connect(self.addr).await;
                http_get_over(stream, self.addr, path, extra_headers).await
            }
            None => http_get(self.addr, path, extra_headers).await,
        }
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

/// A client's byte stream: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Client {
    pub ws: WebSocketStream<Box<dyn Io>>,
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
        let url = format!("ws://{addr}{path}");
        Client::open_over(Box::new(stream), &url, codec, headers).await
    }

    /// [`Client::connect_with`] on a connection already open (TCP or TLS),
    /// to `url` (`ws://` or `wss://`).
    pub async fn connect_over(
        stream: Box<dyn Io>,
        url: &str,
        codec: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, Refused> {
        let mut client = Client::open_over(stream, url, codec, headers).await?;
        client.read_sync().await;
        Ok(client)
    }

    /// [`Client::open_with`] on a connection already open (TCP or TLS).
    pub async fn open_over(
        stream: Box<dyn Io>,
        url: &str,
        codec: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, Refused> {
        let mut request = url.into_client_request().unwrap();
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
        let message = self.message(envelope);
        self.ws.send(message).await.unwrap();
    }

    /// The frame `send` sends: binary or text, as the session's codec.
    pub fn message(&self, envelope: &Envelope) -> Message {
        if self.binary {
            Message::Binary(binary::encode(envelope))
        } else {
            Message::Text(
                String::from_utf8(json::encode(envelope).to_vec())
                    .unwrap()
                    .into(),
            )
        }
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

    /// The next `query.results`, of any query.
    pub async fn query_results(&mut self) -> QueryResults {
        let got = self
            .recv_until("query.results", |e| matches!(e.body, Body::QueryResults(_)))
            .await;
        match got.body {
            Body::QueryResults(results) => results,
            _ => unreachable!(),
        }
    }

    /// Everything received until the answer to an ask for `node`'s link
    /// suggestions made now: the hub handles it after everything this
    /// session sent before, so what those caused has arrived by then.
    pub async fn gonzai_drain(&mut self, node: &str) -> Vec<Envelope> {
        let id = self.id();
        let ask = Body::GonzaiSuggestion(GonzaiSuggestion {
            for_node: Some(node.into()),
            limit: Some(1),
            suggestions: None,
        });
        self.send(&Envelope::new(id.clone(), ask)).await;
        let answer = format!("g-{id}");
        let mut seen = Vec::new();
        loop {
            let e = self.recv().await;
            if e.id == answer {
                return seen;
            }
            seen.push(e);
        }
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
    let stream = TcpStream::connect(addr).await.unwrap();
    http_get_over(stream, addr, path, extra_headers).await
}

/// A GET on a connection already open (TCP or TLS); the status and body.
pub async fn http_get_over(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
) -> (u16, String) {
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
