//! TLS on the server's port (docs/protocol.md 1.1): the certificate chain
//! and private key loaded into a rustls configuration, swapped whole when
//! they are reloaded (SIGHUP), and [`Stream`], a connection's bytes as the
//! rest of the server sees them, plain TCP or TLS.
//!
//! With TLS on, the port speaks nothing else: a client that opens with a
//! plain HTTP request is answered 400 and closed (server::connection).
//! Loading is all or nothing: a reload that fails (a missing file, a key
//! that does not match the certificate) logs why and keeps the certificate
//! in use. Sessions already open keep the certificate they started with;
//! each new connection takes the configuration current when it arrives.
//! Neither the key nor the certificate's contents ever reach a log or an
//! error message: only the files' paths and what is wrong with them.

use std::io::{self, IoSlice, Read as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::backend::Tcp;

/// The protocol offered by ALPN: WebSocket upgrades and the plain
/// endpoints are HTTP/1.1 (RFC 6455 has no HTTP/2 form here).
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The largest certificate or key file read. A chain is a few KiB; this
/// bounds what a wrong path (a log file, a device) can make us read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why the certificate or key could not be loaded. Messages name the file
/// and the problem, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is larger than [`MAX_PEM_BYTES`].
    #[error("{} is over {MAX_PEM_BYTES} bytes: not a PEM certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no usable PEM block of the kind needed.
    #[error("{}: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong, in a few words.
        problem: &'static str,
    },
    /// The key is not the certificate's: its public half differs from the
    /// one in the server's certificate (the first of the chain).
    #[error("{} is not the key of the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the pair otherwise: a key it cannot use, a
    /// certificate it cannot parse.
    #[error("{} with {}: {source}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason (it names no key material).
        source: rustls::Error,
    },
}

/// The TLS side of the port: where the certificate and key come from, and
/// the acceptor made from them, replaced whole by [`Tls::reload`].
///
/// A lock rather than a lock-free swap: it is read once per connection, for
/// the time of cloning an `Arc`, next to a handshake that costs a thousand
/// times more; it is written once per reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain and the private key (PEM files).
    ///
    /// # Errors
    /// [`TlsError`] says which file is wrong and how.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let config = server_config(cert, key)?;
        tracing::info!(cert = %cert.display(), key = %key.display(), "TLS certificate loaded");
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            acceptor: RwLock::new(TlsAcceptor::from(config)),
        })
    }

    /// Reads the files again and, if they are usable, serves new
    /// connections with them; otherwise logs why and keeps the
    /// certificate in use. Open connections are not touched.
    ///
    /// # Errors
    /// [`TlsError`]: the files were not usable (already logged).
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self
                    .acceptor
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = TlsAcceptor::from(config);
                tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "TLS reload failed; still serving the previous certificate");
                Err(error)
            }
        }
    }

    /// The acceptor for a connection arriving now.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A rustls configuration from a certificate chain and a key, in PEM.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_pem(cert)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            problem: "no CERTIFICATE block",
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read_pem(key)?).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            path: key.to_owned(),
            problem: "no private key block (PKCS#8, PKCS#1 or SEC1)",
        },
        e => pem_error(key, &e),
    })?;
    let rejected = |source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }
        }
        source => TlsError::Rejected {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        },
    };
    // The provider is named, not taken from the process default, so that
    // no other crate's choice of provider can change or break ours. *ring*
    // rather than aws-lc-rs keeps the build free of aws-lc's C library; the
    // price, and why rustls marks this deprecated, is no post-quantum key
    // exchange (X25519MLKEM768): TLS 1.3 with X25519 and the usual suites.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(rejected)?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Reads a whole PEM file, up to [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// A PEM parsing error as a few words: the parser's own messages may quote
/// the file (a line, a byte of base64), which must not reach a log.
fn pem_error(path: &Path, error: &pem::Error) -> TlsError {
    let problem = match error {
        pem::Error::NoItemsFound => "no PEM block of the right kind",
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        _ => "not a valid PEM file",
    };
    TlsError::Pem {
        path: path.to_owned(),
        problem,
    }
}

/// A connection's bytes: plain TCP, or TLS over TCP once its handshake is
/// done. One type, so the HTTP handshake, the session and its vectored
/// writes (`frames`) have one code path for both.
///
/// Reads hold no buffer while a connection is idle: each read takes up to
/// [`READ_CHUNK`] bytes in one system call into a buffer on the stack, and
/// what the caller had no room for waits in a spill allocated for it and
/// freed once taken. So the WebSocket layer can be given no read buffer of
/// its own (`Config::read_buffer_bytes` 0) and still read a frame in few
/// system calls.
#[derive(Debug)]
pub struct Stream {
    transport: Transport,
    /// Bytes read and not yet taken (empty: nothing allocated).
    spill: Bytes,
}

/// Bytes read per system call at most, when the caller asks for fewer.
pub const READ_CHUNK: usize = 4096;

#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    /// Boxed: rustls's connection state is large and the plain variant
    /// should not pay for it.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Plain TCP through io_uring (`--io uring`).
    #[cfg(all(feature = "uring", target_os = "linux"))]
    Uring(crate::uring::UringStream),
}

impl Stream {
    /// Plain TCP (TLS off), with Nagle's algorithm off, on the backend it
    /// was accepted on.
    pub fn plain(tcp: Tcp) -> Self {
        let transport = match tcp {
            Tcp::Epoll(tcp) => {
                let _ = tcp.set_nodelay(true);
                Transport::Plain(tcp)
            }
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Tcp::Uring(tcp) => Transport::Uring(crate::uring::UringStream::new(tcp)),
        };
        Stream {
            transport,
            spill: Bytes::new(),
        }
    }

    /// TLS, after its handshake.
    pub fn tls(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Stream {
            transport: Transport::Tls(Box::new(tls)),
            spill: Bytes::new(),
        }
    }

    fn poll_transport_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            // Read through the spill ([`Stream::poll_read`]); empty: the end.
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Transport::Uring(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // io_uring reads into a buffer of its own: what the caller has no
        // room for waits in the spill.
        #[cfg(all(feature = "uring", target_os = "linux"))]
        if let (Transport::Uring(s), true) = (&mut this.transport, this.spill.is_empty()) {
            this.spill = ready!(s.poll_read_owned(cx))?;
        }
        if !this.spill.is_empty() {
            let n = this.spill.len().min(buf.remaining());
            buf.put_slice(&this.spill.split_to(n));
            if this.spill.is_empty() {
                // Free it: an idle connection holds no read buffer.
                this.spill = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK {
            return this.poll_transport_read(cx, buf);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = ReadBuf::new(&mut chunk);
        ready!(this.poll_transport_read(cx, &mut read))?;
        let read = read.filled();
        let n = read.len().min(buf.remaining());
        buf.put_slice(&read[..n]);
        if n < read.len() {
            this.spill = Bytes::copy_from_slice(&read[n..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Transport::Uring(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Transport::Uring(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Transport::Uring(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Transport::Uring(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// For TLS, sends close_notify, then ends the TCP stream's write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Transport::Uring(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn errors_name_the_file_and_never_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA";
        let cert = write(dir.path(), "cert.pem", "not a certificate");
        let key = write(
            dir.path(),
            "key.pem",
            &format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"),
        );
        let error = server_config(&cert, &key).unwrap_err().to_string();
        assert!(error.contains("cert.pem: no CERTIFICATE block"), "{error}");

        let missing = dir.path().join("missing.pem");
        let error = server_config(&missing, &key).unwrap_err().to_string();
        assert!(
            error.contains("cannot read") && error.contains("missing.pem"),
            "{error}"
        );

        let parsed = PrivateKeyDer::from_pem_slice(&read_pem(&key).unwrap()).unwrap_err();
        let error = pem_error(&key, &parsed).to_string();
        assert!(
            !error.contains(secret) && error.contains("key.pem"),
            "{error}"
        );
    }

    #[test]
    fn oversized_files_are_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big = write(
            dir.path(),
            "big.pem",
            &"x".repeat(MAX_PEM_BYTES as usize + 10),
        );
        assert!(matches!(read_pem(&big), Err(TlsError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn small_reads_take_every_byte_in_order_through_the_spill() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = Stream::plain(Tcp::Epoll(tcp));
        let sent: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 14];
        loop {
            let n = stream.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent);
    }
}
