//! The network between the clients and the server, with faults: a TCP
//! proxy whose connections can be cut (as a dropped network does) or
//! stalled (the client stops reading, as a frozen tab or a slow phone does,
//! so the server's send buffer and queue fill up).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

struct Link {
    task: AbortHandle,
    stalled: watch::Sender<bool>,
}

/// A proxy to the server; the server may restart behind it on the same port.
pub struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    ///
    /// # Errors
    /// No port to listen on.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let registry = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (stalled, stall) = watch::channel(false);
                let task = tokio::spawn(forward(inbound, target, stall)).abort_handle();
                let mut links = registry.lock().unwrap_or_else(PoisonError::into_inner);
                links.retain(|l| !l.task.is_finished());
                links.push(Link { task, stalled });
            }
        })
        .abort_handle();
        Ok(Proxy {
            addr,
            links,
            accept,
        })
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Cuts one connection at random; false when there is none.
    pub fn cut_one(&self, rng: &mut impl Rng) -> bool {
        let links = self.lock();
        let live: Vec<&Link> = links.iter().filter(|l| !l.task.is_finished()).collect();
        if live.is_empty() {
            return false;
        }
        live[rng.random_range(0..live.len())].task.abort();
        true
    }

    /// Stops reading from the server on one connection at random for
    /// `time`; false when there is none.
    pub fn stall_one(&self, rng: &mut impl Rng, time: Duration) -> bool {
        let links = self.lock();
        let live: Vec<&Link> = links.iter().filter(|l| !l.task.is_finished()).collect();
        if live.is_empty() {
            return false;
        }
        let stalled = live[rng.random_range(0..live.len())].stalled.clone();
        stalled.send_replace(true);
        tokio::spawn(async move {
            tokio::time::sleep(time).await;
            stalled.send_replace(false);
        });
        true
    }

    /// Ends every stall now.
    pub fn unstall_all(&self) {
        for link in self.lock().iter() {
            link.stalled.send_replace(false);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.lock().drain(..) {
            link.task.abort();
        }
    }
}

/// Forwards one connection until either side closes; server to client
/// pauses while stalled.
async fn forward(inbound: TcpStream, target: SocketAddr, mut stall: watch::Receiver<bool>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_server, mut to_server) = outbound.into_split();
    let up = tokio::io::copy(&mut from_client, &mut to_server);
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if stall.wait_for(|s| !*s).await.is_err() {
                return;
            }
            match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}
