//! The network between clients and a server, with faults: a TCP proxy
//! whose connections can be cut (as a dropped network does), stalled (the
//! client stops reading, as a frozen tab or a slow phone does, so the
//! server's send buffer and queue fill up), or refused for a while (the
//! server is unreachable). The client's end-to-end tests and the soak test
//! put it between their clients and the server; the server may restart
//! behind it on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::rng::Rng;

/// A TCP proxy on a loopback port in front of one server address.
///
/// Dropping it closes the port and cuts every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    /// While true, new connections are accepted and closed at once.
    refusing: Arc<AtomicBool>,
    accept: AbortHandle,
}

/// One client connection through the proxy.
#[derive(Debug)]
struct Link {
    /// The task forwarding both ways; aborting it cuts the connection.
    task: AbortHandle,
    /// True while the server-to-client direction is held.
    stalled: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `target`. Must be called inside a tokio runtime, which runs the
    /// proxy's tasks.
    ///
    /// # Errors
    /// No port to listen on.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn({
            let links = links.clone();
            let refusing = refusing.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if refusing.load(Ordering::Acquire) {
                        continue;
                    }
                    let (stalled, stall) = watch::channel(false);
                    let task = tokio::spawn(forward(inbound, target, stall)).abort_handle();
                    let mut links = lock(&links);
                    links.retain(|l| !l.task.is_finished());
                    links.push(Link { task, stalled });
                }
            }
        })
        .abort_handle();
        Ok(Proxy {
            addr,
            links,
            refusing,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Cuts every connection, as a network failure would.
    pub fn cut(&self) {
        for link in lock(&self.links).drain(..) {
            link.task.abort();
        }
    }

    /// Cuts one live connection chosen by `rng`; false when there is none.
    pub fn cut_one(&self, rng: &mut Rng) -> bool {
        let links = lock(&self.links);
        let live: Vec<&Link> = links.iter().filter(|l| !l.task.is_finished()).collect();
        let Some(link) = rng.pick(&live) else {
            return false;
        };
        link.task.abort();
        true
    }

    /// Stops passing what the server sends on one live connection chosen
    /// by `rng`, for `time`; false when there is none.
    pub fn stall_one(&self, rng: &mut Rng, time: Duration) -> bool {
        let links = lock(&self.links);
        let live: Vec<&Link> = links.iter().filter(|l| !l.task.is_finished()).collect();
        let Some(link) = rng.pick(&live) else {
            return false;
        };
        let stalled = link.stalled.clone();
        stalled.send_replace(true);
        tokio::spawn(async move {
            tokio::time::sleep(time).await;
            stalled.send_replace(false);
        });
        true
    }

    /// Ends every stall now.
    pub fn unstall_all(&self) {
        for link in lock(&self.links).iter() {
            link.stalled.send_replace(false);
        }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::resume`].
    pub fn pause(&self) {
        self.refusing.store(true, Ordering::Release);
        self.cut();
    }

    /// Accepts connections again after [`Proxy::pause`].
    pub fn resume(&self) {
        self.refusing.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The links, also after a panic elsewhere: a list of handles stays valid.
fn lock(links: &Mutex<Vec<Link>>) -> MutexGuard<'_, Vec<Link>> {
    links.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards one connection until either side closes; server to client
/// pauses while stalled (one read of at most 64 KiB is held in the proxy).
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
            let read = from_server.read(&mut buf).await;
            // Checked after the read, so that what was read as the stall
            // began is held too, and so is the server's close: a client that
            // does not read does not see it. Meanwhile the server's data
            // piles up behind the unread socket.
            if stall.wait_for(|s| !*s).await.is_err() {
                return;
            }
            let Ok(n @ 1..) = read else {
                return;
            };
            if to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An echo server, a proxy in front of it, and one round trip.
    async fn echo() -> (Proxy, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut client).await, Some(*b"ping"));
        (proxy, client)
    }

    /// Sends four bytes and reads them back; `None` when the connection
    /// ends or nothing comes back within 200 ms.
    async fn round_trip(client: &mut TcpStream) -> Option<[u8; 4]> {
        client.write_all(b"ping").await.ok()?;
        let mut back = [0u8; 4];
        let read = client.read_exact(&mut back);
        match tokio::time::timeout(Duration::from_millis(200), read).await {
            Ok(Ok(_)) => Some(back),
            _ => None,
        }
    }

    #[tokio::test]
    async fn cuts_one_connection() {
        let (proxy, mut client) = echo().await;
        assert!(proxy.cut_one(&mut Rng::new(1)));
        assert_eq!(round_trip(&mut client).await, None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!proxy.cut_one(&mut Rng::new(1)), "none left");
    }

    #[tokio::test]
    async fn stalls_and_unstalls() {
        let (proxy, mut client) = echo().await;
        assert!(proxy.stall_one(&mut Rng::new(1), Duration::from_secs(60)));
        assert_eq!(round_trip(&mut client).await, None, "held while stalled");
        proxy.unstall_all();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping", "delivered after the stall");
    }

    #[tokio::test]
    async fn refuses_while_paused() {
        let (proxy, _client) = echo().await;
        proxy.pause();
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut refused).await, None);
        proxy.resume();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again).await, Some(*b"ping"));
    }
}
