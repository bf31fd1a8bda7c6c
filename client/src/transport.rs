//! One WebSocket connection to a graph, in either codec: connecting (with
//! the handshake's refusals turned into errors a program can act on),
//! sending and receiving envelopes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gitmind_schema::{binary, json, Codec, Envelope, Limits};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// Why a connection attempt or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The server URL is not `ws://HOST:PORT`.
    #[error("bad server url {0:?}: expected ws://HOST:PORT")]
    BadUrl(String),
    /// The token cannot go in an HTTP header.
    #[error("the token is not a valid HTTP header value")]
    BadToken,
    /// The server could not be reached.
    #[error("cannot reach {addr}")]
    Unreachable {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused the handshake.
    #[error("the server refused the connection ({status}): {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body, which says why.
        body: String,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The connection broke.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server sent something that does not decode.
    #[error("the server sent an undecodable frame: {0}")]
    Garbage(String),
}

impl TransportError {
    /// Whether trying again later can help (a refusal for bad input cannot).
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::BadUrl(_) | TransportError::BadToken => false,
            TransportError::Refused { status, .. } => matches!(status, 429 | 500..=599),
            _ => true,
        }
    }
}

/// An open connection.
pub struct Transport {
    ws: WebSocketStream<TcpStream>,
    codec: Codec,
    limits: Limits,
}

impl Transport {
    /// Connects to `{server}/v1/graphs/{graph}` with `query` appended, with
    /// `token` as its bearer token when there is one.
    ///
    /// # Errors
    /// See [`TransportError`].
    pub async fn connect(
        server: &str,
        graph: &str,
        query: &str,
        codec: Codec,
        token: Option<&str>,
    ) -> Result<Transport, TransportError> {
        let base = server.trim_end_matches('/');
        let Some(host) = base.strip_prefix("ws://") else {
            return Err(TransportError::BadUrl(server.to_owned()));
        };
        let url = format!(
            "{base}/v1/graphs/{graph}{}{query}",
            if query.is_empty() { "" } else { "?" }
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|_| TransportError::BadUrl(server.to_owned()))?;
        let protocol = codec
            .subprotocol()
            .parse()
            .map_err(|_| TransportError::BadUrl(server.to_owned()))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol);
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| TransportError::BadToken)?;
            request.headers_mut().insert("Authorization", value);
        }
        let stream =
            TcpStream::connect(host)
                .await
                .map_err(|source| TransportError::Unreachable {
                    addr: host.to_owned(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default()
            .read_buffer_size(64 * 1024)
            .max_message_size(Some(1 << 20));
        let (ws, _) = match tokio_tungstenite::client_async_with_config(
            request,
            stream,
            Some(config),
        )
        .await
        {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .trim()
                    .to_owned();
                return Err(TransportError::Refused {
                    status: response.status().as_u16(),
                    body,
                    retry_after,
                });
            }
            Err(e) => return Err(TransportError::Lost(e.to_string())),
        };
        Ok(Transport {
            ws,
            codec,
            limits: Limits::default(),
        })
    }

    /// Sends envelopes as one frame.
    ///
    /// # Errors
    /// [`TransportError::Lost`].
    pub async fn send(&mut self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        let bytes = match envelopes {
            [one] => self.codec.encode(one),
            many => self.codec.encode_batch(many),
        };
        let message = match self.codec {
            Codec::Binary => Message::Binary(bytes),
            Codec::Json => Message::Text(utf8(bytes)?),
        };
        self.ws
            .send(message)
            .await
            .map_err(|e| TransportError::Lost(e.to_string()))
    }

    /// The envelopes of the next data frame; `Ok(None)` when the server
    /// closed the connection.
    ///
    /// # Errors
    /// [`TransportError::Lost`], or [`TransportError::Garbage`] for a frame
    /// that does not decode (the caller reconnects).
    ///
    /// # Cancel safety
    /// Cancel safe: a frame is either returned whole or left unread.
    pub async fn recv(&mut self) -> Result<Option<Vec<Envelope>>, TransportError> {
        loop {
            let Some(message) = self.ws.next().await else {
                return Ok(None);
            };
            let decoded = match message.map_err(|e| TransportError::Lost(e.to_string()))? {
                Message::Text(text) => json::decode(text.as_str(), &self.limits),
                Message::Binary(bytes) => binary::decode(&bytes, &self.limits),
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let envelopes = decoded.map_err(|e| TransportError::Garbage(e.message))?;

            return envelopes
                .into_iter()
                .map(|e| e.map_err(|e| TransportError::Garbage(e.message)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some);
        }
    }

    /// Closes politely (1000).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

fn utf8(bytes: bytes::Bytes) -> Result<tungstenite::Utf8Bytes, TransportError> {
    tungstenite::Utf8Bytes::try_from(bytes)
        .map_err(|_| TransportError::Garbage("encoder produced invalid utf-8".into()))
}
