//! The io_uring backend of the shards (`--io uring`, the `uring` cargo
//! feature, Linux only; docs/architecture.md, "I/O backends").
//!
//! A uring shard runs on a [`tokio_uring::Runtime`]: a current-thread tokio
//! runtime (timers, channels, `spawn_local`, and tokio's own reactor) with
//! an io_uring driver beside it. Its plain TCP connections are accepted and
//! served through io_uring; with TLS on, connections stay on tokio's
//! reactor (epoll) on the same thread, since rustls wants a readiness
//! stream (`AsyncRead`/`AsyncWrite`) and peeks at the first byte.
//!
//! io_uring takes owned buffers: a read or write hands its buffer to the
//! kernel until the completion comes back, and a future dropped meanwhile
//! leaves the buffer with the driver. [`UringStream`] turns that into the
//! `AsyncRead`/`AsyncWrite` the HTTP handshake, tungstenite, the frame
//! writer and the closing handshake already take (as a variant of
//! `tls::Stream`), so a session has one code path on both backends:
//!
//! - a read hands the kernel a [`READ_CHUNK`] buffer and gives it back
//!   filled ([`UringStream::poll_read_owned`]); what the caller has no room
//!   for waits in `tls::Stream`'s spill, as on epoll, freed once taken;
//! - a write copies the caller's slices into one owned buffer, submits it
//!   and reports them written; the next write, a flush or the shutdown
//!   waits for it to complete, and its error, if any, is reported there.
//!   The frame writer's batches end with a flush, so a batch is on the
//!   wire (in the kernel) when `FrameWriter::drive` returns, as with epoll.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

/// Bytes one read hands the kernel (as `tls::READ_CHUNK` on epoll): an
/// idle session holds this much, in flight.
pub const READ_CHUNK: usize = 4096;

/// The most bytes one write copies and submits: a large response is
/// written in pieces of this size rather than copied whole.
const MAX_WRITE: usize = 256 << 10;

/// Whether this kernel lets us set up a ring: checked once at start-up, so
/// that `--io uring` where io_uring is missing or forbidden (old kernels,
/// seccomp, `kernel.io_uring_disabled`) is a clear error rather than shards
/// that never start.
///
/// # Errors
/// The system's reason (`io_uring_setup`'s errno).
pub fn probe() -> io::Result<()> {
    tokio_uring::uring_builder().build(8).map(drop)
}

/// A shard's runtime: tokio's current-thread runtime with an io_uring
/// driver.
///
/// # Errors
/// The ring or the runtime could not be set up.
pub fn runtime() -> io::Result<tokio_uring::Runtime> {
    tokio_uring::Runtime::new(&tokio_uring::builder())
}

/// A listening socket served through io_uring.
pub struct Listener(tokio_uring::net::TcpListener);

impl Listener {
    /// Takes over a bound, listening socket.
    pub fn from_std(listener: std::net::TcpListener) -> Self {
        Listener(tokio_uring::net::TcpListener::from_std(listener))
    }

    /// The next connection.
    ///
    /// # Errors
    /// As `accept(2)`.
    ///
    /// # Cancel safety
    /// A connection accepted by the kernel after the future is dropped is
    /// closed by the driver.
    pub async fn accept(&self) -> io::Result<Tcp> {
        let (stream, peer) = self.0.accept().await?;
        Ok(Tcp { stream, peer })
    }
}

/// An accepted connection, before it becomes a [`UringStream`].
pub struct Tcp {
    stream: tokio_uring::net::TcpStream,
    peer: SocketAddr,
}

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Tcp {
    /// Takes over a connection accepted elsewhere (the acceptor thread).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<Self> {
        let peer = stream.peer_addr()?;
        Ok(Tcp {
            stream: tokio_uring::net::TcpStream::from_std(stream),
            peer,
        })
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// An owned-buffer read in flight: the buffer comes back with the result.
type Reading = Pin<Box<dyn Future<Output = tokio_uring::BufResult<usize, Vec<u8>>>>>;
/// An owned-buffer write in flight, written whole or failed.
type Writing = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// A TCP connection served through io_uring, as an `AsyncRead` and
/// `AsyncWrite` (see the module's documentation).
pub struct UringStream {
    /// Shared with the operation in flight, which outlives a dropped future.
    tcp: Rc<tokio_uring::net::TcpStream>,
    reading: Option<Reading>,
    writing: Option<Writing>,
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream")
            .field("reading", &self.reading.is_some())
            .field("writing", &self.writing.is_some())
            .finish_non_exhaustive()
    }
}

impl UringStream {
    /// Serves `tcp`, with Nagle's algorithm off as on the epoll side.
    pub fn new(tcp: Tcp) -> Self {
        let _ = tcp.stream.set_nodelay(true);
        UringStream {
            tcp: Rc::new(tcp.stream),
            reading: None,
            writing: None,
        }
    }

    /// The next bytes the kernel has for us, in the buffer they were read
    /// into (at most [`READ_CHUNK`]); empty at the end of the stream. The
    /// caller keeps what it cannot take at once (`tls::Stream`'s spill).
    ///
    /// # Errors
    /// As `recv(2)`.
    pub fn poll_read_owned(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let tcp = Rc::clone(&self.tcp);
        let reading = self.reading.get_or_insert_with(|| {
            Box::pin(async move { tcp.read(Vec::with_capacity(READ_CHUNK)).await })
        });
        let (result, data) = ready!(reading.as_mut().poll(cx));
        self.reading = None;
        result?;
        // The driver set the vector's length to what was read.
        Poll::Ready(Ok(Bytes::from(data)))
    }

    /// Waits for the write in flight, if any, and gives its result.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writing) = &mut self.writing else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(writing.as_mut().poll(cx));
        self.writing = None;
        Poll::Ready(result)
    }
}

impl Drop for UringStream {
    /// An operation in flight holds the socket open until it completes, and
    /// a read on an idle client never would: shutting the socket down ends
    /// it, and the descriptor is closed when the last operation lets go.
    fn drop(&mut self) {
        if self.reading.is_some() || self.writing.is_some() {
            let _ = self.tcp.shutdown(Shutdown::Both);
        }
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_written(cx))?;
        let len = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut owned = Vec::with_capacity(len);
        for buf in bufs {
            let room = len - owned.len();
            if room == 0 {
                break;
            }
            owned.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        let tcp = Rc::clone(&this.tcp);
        let mut writing: Writing = Box::pin(async move { tcp.write_all(owned).await.0 });
        // Polled once now, so the write is submitted before we return.
        match writing.as_mut().poll(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
            Poll::Pending => this.writing = Some(writing),
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_written(cx)
    }

    /// Waits for the write in flight, then ends the write side (FIN).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_written(cx))?;
        Poll::Ready(this.tcp.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A client on a plain thread, the server's side through io_uring.
    fn pair(
        client: impl FnOnce(std::net::TcpStream) + Send + 'static,
    ) -> (UringStream, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread =
            std::thread::spawn(move || client(std::net::TcpStream::connect(addr).unwrap()));
        let (tcp, _) = listener.accept().unwrap();
        (UringStream::new(Tcp::from_std(tcp).unwrap()), thread)
    }

    #[test]
    fn owned_reads_give_every_byte_in_order_then_the_end() {
        use std::io::Write as _;
        let sent: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let expected = sent.clone();
        runtime().unwrap().block_on(async move {
            let (mut stream, client) = pair(move |mut tcp| tcp.write_all(&sent).unwrap());
            let mut got = Vec::new();
            loop {
                let bytes = std::future::poll_fn(|cx| stream.poll_read_owned(cx))
                    .await
                    .unwrap();
                if bytes.is_empty() {
                    break;
                }
                assert!(bytes.len() <= READ_CHUNK);
                got.extend_from_slice(&bytes);
            }
            assert_eq!(got, expected);
            client.join().unwrap();
        });
    }

    #[test]
    fn vectored_writes_arrive_whole_and_in_order_once_flushed() {
        use std::io::Read as _;
        runtime().unwrap().block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let (mut stream, client) = pair(move |mut tcp| {
                let mut all = Vec::new();
                tcp.read_to_end(&mut all).unwrap();
                tx.send(all).unwrap();
            });
            // Two slices taken whole, then a write larger than one
            // submission, taken in pieces.
            let slices = [io::IoSlice::new(b"head"), io::IoSlice::new(b"er")];
            assert_eq!(stream.write_vectored(&slices).await.unwrap(), 6);
            let big: Vec<u8> = (0..3 * MAX_WRITE + 1000).map(|i| (i % 251) as u8).collect();
            stream.write_all(&big).await.unwrap();
            let mut expected = b"header".to_vec();
            expected.extend_from_slice(&big);
            stream.flush().await.unwrap();
            stream.shutdown().await.unwrap();
            client.join().unwrap();
            assert_eq!(rx.recv().unwrap(), expected);
        });
    }

    #[test]
    fn dropping_a_stream_with_a_read_in_flight_closes_the_connection() {
        use std::io::Read as _;
        runtime().unwrap().block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let (mut stream, client) = pair(move |mut tcp| {
                // Ends only when the server's side is closed.
                let mut all = Vec::new();
                let _ = tcp.read_to_end(&mut all);
                tx.send(()).unwrap();
            });
            // Starts a read the client never answers.
            std::future::poll_fn(|cx| {
                assert!(stream.poll_read_owned(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            drop(stream);
            // Polls the driver until the client sees the end.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if rx.try_recv().is_ok() {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "never closed");
                tokio::task::yield_now().await;
            }
            client.join().unwrap();
        });
    }
}
