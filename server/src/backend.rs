//! The shards' I/O backends (docs/architecture.md, "I/O backends"): where
//! a shard accepts connections and what an accepted connection is before
//! it becomes a stream (`tls::Stream`), on epoll (tokio's reactor) or
//! io_uring (`--io uring`, `uring`).
//!
//! The rest of the server sees one stream type whatever the backend, so a
//! connection's opening and its session have one code path.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

#[cfg(all(feature = "uring", target_os = "linux"))]
use crate::uring;

/// A connection just accepted, on the backend it will be served with.
#[derive(Debug)]
pub enum Tcp {
    /// Through tokio's reactor (epoll).
    Epoll(TcpStream),
    /// Through io_uring.
    #[cfg(all(feature = "uring", target_os = "linux"))]
    Uring(uring::Tcp),
}

impl Tcp {
    /// Takes over a connection accepted by the acceptor thread, for a shard
    /// that serves it through io_uring when `uring`.
    ///
    /// # Errors
    /// The socket could not be registered or has no peer any more.
    pub fn adopt(stream: std::net::TcpStream, uring: bool) -> io::Result<Tcp> {
        #[cfg(all(feature = "uring", target_os = "linux"))]
        if uring {
            return uring::Tcp::from_std(stream).map(Tcp::Uring);
        }
        let _ = uring;
        TcpStream::from_std(stream).map(Tcp::Epoll)
    }

    /// The connection on tokio's reactor, if it was accepted there (with
    /// TLS on, every connection is).
    pub fn into_epoll(self) -> Option<TcpStream> {
        match self {
            Tcp::Epoll(tcp) => Some(tcp),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Tcp::Uring(_) => None,
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Tcp::Epoll(tcp) => tcp.peer_addr().ok(),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Tcp::Uring(tcp) => Some(tcp.peer_addr()),
        }
    }
}

/// A shard's listening socket (SO_REUSEPORT mode).
pub enum Listener {
    /// Accepts through tokio's reactor.
    Epoll(TcpListener),
    /// Accepts through io_uring.
    #[cfg(all(feature = "uring", target_os = "linux"))]
    Uring(uring::Listener),
}

impl Listener {
    /// Takes over a bound, listening socket; its connections are served
    /// through io_uring when `uring`.
    ///
    /// # Errors
    /// The socket could not be registered with tokio's reactor.
    pub fn new(listener: std::net::TcpListener, uring: bool) -> io::Result<Listener> {
        #[cfg(all(feature = "uring", target_os = "linux"))]
        if uring {
            return Ok(Listener::Uring(uring::Listener::from_std(listener)));
        }
        let _ = uring;
        TcpListener::from_std(listener).map(Listener::Epoll)
    }

    /// The next connection.
    ///
    /// # Errors
    /// As `accept(2)`.
    ///
    /// # Cancel safety
    /// On epoll, cancel safe. On io_uring, a connection the kernel accepts
    /// after the future is dropped is lost (only at shutdown here).
    pub async fn accept(&self) -> io::Result<Tcp> {
        match self {
            Listener::Epoll(listener) => Ok(Tcp::Epoll(listener.accept().await?.0)),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Listener::Uring(listener) => Ok(Tcp::Uring(listener.accept().await?)),
        }
    }
}
