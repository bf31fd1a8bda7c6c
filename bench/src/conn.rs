//! A lean protocol connection for load generation: connect with a codec
//! from a chosen source address, send envelopes, receive decoded ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitmind_schema::{binary, json, DecodeError, Envelope, Limits};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use gitmind_client::Codec;

/// One connection.
pub struct Conn {
    /// The socket.
    pub ws: WebSocketStream<TcpStream>,
    /// Its codec.
    pub codec: Codec,
    /// Bytes received (frame payloads).
    pub bytes_in: u64,
    /// The code of the server's close frame, once [`Conn::recv`] saw it.
    pub close_code: Option<u16>,
    /// Envelopes given back with [`Conn::unread`], returned first.
    unread: Vec<Arc<Envelope>>,
}

impl Conn {
    /// Connects to `ws://{server}{path}` from `source` (any port).
    ///
    /// # Errors
    /// Connect or handshake failure.
    pub async fn connect(
        server: SocketAddr,
        source: Option<IpAddr>,
        path: &str,
        codec: Codec,
    ) -> anyhow::Result<Conn> {
        let ws = open(server, source, path, Some(codec.subprotocol())).await?;
        Ok(Conn {
            ws,
            codec,
            bytes_in: 0,
            close_code: None,
            unread: Vec::new(),
        })
    }

    /// Sends one envelope in the connection's codec.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn send(&mut self, envelope: &Envelope) -> anyhow::Result<()> {
        let message = message_of(self.codec, envelope)?;
        self.ws.send(message).await?;
        Ok(())
    }

    /// The envelopes of the next data frame; `Ok(None)` when closed.
    ///
    /// A message whose bytes this thread decoded a moment ago is not
    /// decoded again: the server encodes each event once, so a thousand
    /// subscribers receive the same bytes (a binary frame, or an element
    /// of a JSON array), and decoding them a thousand times made the
    /// generator, not the server, the bottleneck
    /// (perf-reports/profiles.md). The first decode still
    /// checks every message in full.
    ///
    /// # Errors
    /// The connection failed or sent something that does not decode.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Vec<Arc<Envelope>>>> {
        if !self.unread.is_empty() {
            return Ok(Some(std::mem::take(&mut self.unread)));
        }
        loop {
            let Some(message) = self.ws.next().await else {
                return Ok(None);
            };
            let (bytes, text) = match message? {
                Message::Text(text) => (Bytes::from(text), true),
                Message::Binary(bytes) => (bytes, false),
                Message::Close(frame) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(None);
                }
                _ => continue,
            };
            self.bytes_in += bytes.len() as u64;
            let decode = if text { decode_json } else { decode_binary };
            return decode_cached(bytes, decode).map(Some);
        }
    }
}

impl Conn {
    /// Gives back envelopes that were received but not used (those after
    /// a `graph.sync` in the same frame): the next [`Conn::recv`] returns
    /// them.
    pub fn unread(&mut self, envelopes: &[Arc<Envelope>]) {
        self.unread.extend_from_slice(envelopes);
    }
}

/// One envelope as a WebSocket message in `codec`: a binary frame, or a
/// text frame of JSON.
///
/// # Errors
/// Never for envelopes the codec encodes (JSON is always UTF-8).
pub fn message_of(codec: Codec, envelope: &Envelope) -> anyhow::Result<Message> {
    frame_of(codec, codec.encode(envelope))
}

/// One WebSocket message of several envelopes (a JSON array, or one
/// binary frame).
///
/// # Errors
/// When the JSON encoder produced invalid UTF-8 (never).
pub fn batch_message_of(codec: Codec, envelopes: &[Envelope]) -> anyhow::Result<Message> {
    frame_of(codec, codec.encode_batch(envelopes))
}

fn frame_of(codec: Codec, bytes: Bytes) -> anyhow::Result<Message> {
    Ok(match codec {
        Codec::Binary => Message::Binary(bytes),
        Codec::Json => Message::Text(bytes.try_into()?),
    })
}

/// Opens a WebSocket to `ws://{server}{path}` from `source` (any port),
/// asking for `subprotocol` if any: the socket under a [`Conn`], and the
/// whole connection of the peers' protocols (`gitmind-load peers`), which
/// ask for none.
///
/// # Errors
/// Connect or handshake failure.
pub async fn open(
    server: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    subprotocol: Option<&str>,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding {source}"))?;
    }
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{server}{path}").into_client_request()?;
    if let Some(subprotocol) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", subprotocol.parse()?);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// Messages up to this size are remembered by a [`Memo`]: a whole
/// JSON frame of a commit group's events, which the server sends alike to
/// every session at the same point (perf-reports/perf-19.md).
const CACHED_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages remembered per thread before the memory is cleared.
const CACHED_MESSAGES: usize = 65_536;
/// Bytes of messages remembered per thread before the memory is cleared.
const CACHED_BYTES: usize = 64 << 20;

type Decoded = anyhow::Result<Vec<Arc<Envelope>>>;

/// What the messages a thread decoded lately decoded to, by their bytes:
/// a fan-out sends the same bytes to every subscriber, so each distinct
/// message is decoded once per thread, not once per delivery.
pub struct Memo<T> {
    decoded: HashMap<Bytes, T, foldhash::fast::RandomState>,
    /// The bytes of the messages in `decoded`.
    bytes: usize,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            decoded: HashMap::default(),
            bytes: 0,
        }
    }
}

impl<T: Clone> Memo<T> {
    /// Decodes `bytes` with `decode`, or takes what the same bytes decoded
    /// to before in `memo` (a thread-local of the caller's). `decode` may
    /// use the same memo again (a JSON array's elements).
    ///
    /// # Errors
    /// `decode`'s.
    pub fn decode(
        memo: &'static std::thread::LocalKey<RefCell<Memo<T>>>,
        bytes: Bytes,
        decode: impl FnOnce(&Bytes) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let cacheable = bytes.len() <= CACHED_MESSAGE_BYTES;
        if cacheable {
            if let Some(hit) = memo.with(|m| m.borrow().decoded.get(&bytes).cloned()) {
                return Ok(hit);
            }
        }
        let value = decode(&bytes)?;
        if cacheable {
            memo.with(|m| m.borrow_mut().insert(bytes, value.clone()));
        }
        Ok(value)
    }

    fn insert(&mut self, bytes: Bytes, value: T) {
        if self.decoded.len() >= CACHED_MESSAGES || self.bytes >= CACHED_BYTES {
            self.decoded.clear();
            self.bytes = 0;
        }
        self.bytes += bytes.len();
        self.decoded.insert(bytes, value);
    }
}

thread_local! {
    static DECODED: RefCell<Memo<Vec<Arc<Envelope>>>> = RefCell::default();
}

/// Decodes `bytes` with `decode`, or takes the envelopes that the same
/// bytes decoded to before on this thread.
fn decode_cached(bytes: Bytes, decode: fn(&Bytes) -> Decoded) -> Decoded {
    Memo::decode(&DECODED, bytes, decode)
}

fn decode_binary(bytes: &Bytes) -> Decoded {
    shared(binary::decode(bytes, &Limits::default()))
}

/// A JSON frame: one message, or an array whose elements are each looked
/// up apart (a batch differs between subscribers, its messages do not).
fn decode_json(bytes: &Bytes) -> Decoded {
    let text = std::str::from_utf8(bytes).context("text frame is not UTF-8")?;
    if !text.trim_start().starts_with('[') {
        return shared(json::decode(text, &Limits::default()));
    }
    let parts: Vec<&RawValue> = serde_json::from_str(text).context("text frame is not JSON")?;
    let mut envelopes = Vec::with_capacity(parts.len());
    for part in parts {
        envelopes.extend(decode_cached(
            bytes.slice_ref(part.get().as_bytes()),
            decode_json,
        )?);
    }
    Ok(envelopes)
}

fn shared(decoded: Result<Vec<Result<Envelope, DecodeError>>, DecodeError>) -> Decoded {
    decoded
        .map_err(|e| anyhow::anyhow!("undecodable frame: {}", e.message))?
        .into_iter()
        .map(|e| {
            e.map(Arc::new)
                .map_err(|e| anyhow::anyhow!("undecodable message: {}", e.message))
        })
        .collect()
}

/// The i-th source address of a spread over 127.0.0.2 to 127.0.0.251, so
/// that many connections do not exhaust one address's ephemeral ports.
pub fn source_addr(i: usize) -> IpAddr {
    source_addr_in(0, i)
}

/// The i-th source address of block `block`, a spread over 127.0.B.2 to
/// 127.0.B.251: clients in different blocks never share an address, so a
/// limit per address (the server's `max_connections_per_ip`) that one
/// group meets does not touch the other. Block 0 is [`source_addr`]'s.
pub fn source_addr_in(block: u8, i: usize) -> IpAddr {
    IpAddr::from([127, 0, block, 2 + (i % 250) as u8])
}

/// The HTTP status of a refused WebSocket handshake, when that is why
/// [`Conn::connect`] failed.
pub fn refused_status(error: &anyhow::Error) -> Option<u16> {
    match error.downcast_ref::<tokio_tungstenite::tungstenite::Error>()? {
        tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}
