//! Helpers of the client's end-to-end tests: a real server on port 0 (the
//! TCP proxy in front of it that a test can cut is `gitmind_testkit::Proxy`).
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use gitmind_client::{Client, ClientConfig, Codec, Events, State};
use gitmind_server::{Config, Server};

pub const WAIT: Duration = Duration::from_secs(15);

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A server whose configuration `tweak` changes first.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Self::config(dir.path(), 0);
        tweak(&mut config);
        let server = Server::start(config).unwrap();
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            dir,
            addr,
        }
    }

    fn config(dir: &std::path::Path, port: u16) -> Config {
        Config {
            port,
            shards: 2,
            fsync: false,
            data_dir: dir.join("data"),
            ..Config::default()
        }
    }

    /// Stops the server and starts it again on the same port and data.
    pub async fn restart(&mut self) {
        let server = self.server.take().unwrap();
        tokio::task::spawn_blocking(move || server.shutdown())
            .await
            .unwrap();
        self.restart_stopped().await;
    }

    /// Starts the stopped server again on the same port and data.
    pub async fn restart_stopped(&mut self) {
        let (dir, port) = (self.dir.path().to_owned(), self.addr.port());
        // The port may take a moment to be free again.
        for _ in 0..50 {
            let dir = dir.clone();
            match tokio::task::spawn_blocking(move || Server::start(Self::config(&dir, port)))
                .await
                .unwrap()
            {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("could not restart the server on port {port}");
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

pub async fn connect(url: &str, graph: &str, user: &str, codec: Codec) -> (Client, Events) {
    let mut config = ClientConfig::new(url, graph);
    config.user = Some(user.into());
    config.codec = codec;
    tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connect in time")
        .unwrap()
}

/// Waits until `pred` holds for the client's replica.
pub async fn until(
    client: &Client,
    what: &str,
    pred: impl Fn(&gitmind_client::replica::Replica) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pred(&client.replica()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for a connection state.
pub async fn until_state(client: &Client, what: &str, pred: impl Fn(&State) -> bool) {
    let mut state = client.state();
    tokio::time::timeout(WAIT, async {
        while !pred(&state.borrow_and_update()) {
            state.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"));
}
