//! A lean protocol connection for load generation: connect with a codec
//! from a chosen source address, send envelopes, receive decoded ones.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use gitmind_schema::{binary, json, Envelope, Limits};
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
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", codec.subprotocol().parse()?);
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        Ok(Conn {
            ws,
            codec,
            bytes_in: 0,
        })
    }

    /// Sends one envelope in the connection's codec.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn send(&mut self, envelope: &Envelope) -> anyhow::Result<()> {
        let message = match self.codec {
            Codec::Bin => Message::Binary(binary::encode(envelope)),
            Codec::Json => Message::Text(json::encode(envelope).try_into()?),
        };
        self.ws.send(message).await?;
        Ok(())
    }

    /// The envelopes of the next data frame; `Ok(None)` when closed.
    ///
    /// # Errors
    /// The connection failed or sent something that does not decode.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Vec<Envelope>>> {
        loop {
            let Some(message) = self.ws.next().await else {
                return Ok(None);
            };
            let decoded = match message? {
                Message::Text(text) => {
                    self.bytes_in += text.len() as u64;
                    json::decode(text.as_str(), &Limits::default())
                }
                Message::Binary(bytes) => {
                    self.bytes_in += bytes.len() as u64;
                    binary::decode(&bytes, &Limits::default())
                }
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let envelopes =
                decoded.map_err(|e| anyhow::anyhow!("undecodable frame: {}", e.message))?;
            let mut out = Vec::with_capacity(envelopes.len());
            for envelope in envelopes {
                match envelope {
                    Ok(envelope) => out.push(envelope),
                    Err(e) => bail!("undecodable message: {}", e.message),
                }
            }
            return Ok(Some(out));
        }
    }
}

/// The i-th source address of a spread over 127.0.0.2 to 127.0.0.251, so
/// that many connections do not exhaust one address's ephemeral ports.
pub fn source_addr(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 2 + (i % 250) as u8])
}
